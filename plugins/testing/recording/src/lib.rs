//! A keystore that keeps a copy of everything it is given: the fs keystore in the
//! granted directory, plus `/data/.received`, one line per `create` call with the
//! name and the record exactly as the plugin received them (both hex-encoded).
//!
//! It is what a curious plugin, or the operator of its backend, could keep. The
//! tests read the file to show what reaches a plugin with and without sealing.

use std::io::Write;

use keyhost_fs_store::DirStore;
use keyhost_plugin_sdk::{Config, Error, Info, Keystore, Page, Status, export_keystore};

const ROOT: &str = "/data";
/// A name no key can have (it starts with `.`), so the fs keystore never lists it.
const LOG: &str = "/data/.received";

struct Recording(DirStore);

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Keystore for Recording {
    fn info() -> Info {
        Info {
            name: "recording".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            features: vec![],
            settings: vec![],
        }
    }

    fn open(_config: Config) -> Result<Self, Error> {
        DirStore::open(ROOT).map(Self)
    }

    fn status(&self) -> Result<Status, Error> {
        self.0.status()
    }

    fn create(&self, name: &str, value: &[u8]) -> Result<(), Error> {
        // One write per line, to a file opened for appending: concurrent instances
        // do not interleave their lines.
        let line = format!("{} {}\n", hex(name.as_bytes()), hex(value));
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(LOG)
            .and_then(|mut f| f.write_all(line.as_bytes()))
            .map_err(|e| Error::Other(format!("cannot record: {e}")))?;
        self.0.create(name, value)
    }

    fn get(&self, name: &str) -> Result<Vec<u8>, Error> {
        self.0.get(name)
    }

    fn delete(&self, name: &str) -> Result<(), Error> {
        self.0.delete(name)
    }

    fn list(&self, prefix: &str, after: Option<&str>, limit: u32) -> Result<Page, Error> {
        self.0.list(prefix, after, limit)
    }
}

export_keystore!(Recording);
