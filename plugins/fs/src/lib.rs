//! keyhost's filesystem keystore plugin.
//!
//! Stores one file per key in the one directory the operator grants (`allow.dir`,
//! or `keystore.fs.path` in a KES configuration), which the plugin sees as `/data`.
//! It reads no settings. See `keyhost_fs_store` for the on-disk rules.

use keyhost_fs_store::DirStore;
use keyhost_plugin_sdk::{Config, Error, Info, Keystore, Page, Status, export_keystore};

/// Where the granted directory appears inside the sandbox.
const ROOT: &str = "/data";

struct FsKeystore(DirStore);

impl Keystore for FsKeystore {
    fn info() -> Info {
        Info {
            name: "fs".into(),
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

export_keystore!(FsKeystore);
