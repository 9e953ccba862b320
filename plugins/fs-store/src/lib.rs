//! A directory keystore: one file per record, named after the key.
//!
//! - **Atomic, all-or-nothing create**: the record is written to a temporary file
//!   (whose name starts with `.`, so it can never be a key), synced, and then
//!   hard-linked to its final name. `link` fails if the name exists, so of N
//!   concurrent creates exactly one wins, and a reader never sees a partial file.
//! - **Durable**: the file is synced before the link, and the directory after it,
//!   so the record and its directory entry survive a crash once create returns.
//! - **Names**: KES's rules for its fs keystore, minus its ban on inner dots: a name
//!   is refused when empty, longer than 255 bytes, starting with `.`, or containing
//!   `/`, `\` or NUL.
//! - **A removed directory is an unavailable backend**: the granted directory
//!   stays open in the sandbox when it is removed on the host, and then lists
//!   nothing and holds nothing; its link count (0) tells. Every call then fails
//!   with `unavailable`, never `not-found`, which would say that a key does not
//!   exist.
//! - **Permissions**: a write or read the file system refuses for permissions (a
//!   read-only directory or grant) is `access-denied`.
//! - **Case-sensitive**: on a file system that ignores case (macOS's default, FAT,
//!   some network mounts) `SECRET` and `secret` would be one file, so a policy
//!   naming one could be bypassed with the other. [`DirStore::open`] finds out with
//!   a probe file and refuses such a directory.

use std::fs::{self, File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use keyhost_plugin_sdk::{Error, Page, Status};

/// The largest record this store returns; the contract caps records at 1 MiB.
pub const MAX_RECORD: u64 = 1 << 20;

/// Prefix of temporary files; `.` makes them invalid key names.
const TMP_PREFIX: &str = ".tmp-";

/// A keystore in one directory.
#[derive(Debug)]
pub struct DirStore {
    root: PathBuf,
    instance: u64,
    counter: AtomicU64,
}

impl DirStore {
    /// Opens the store in `root`, which must be an existing directory, and removes
    /// temporary files that an interrupted create left behind more than an hour ago.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, Error> {
        let root = root.into();
        match fs::metadata(&root) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(Error::InvalidArgument(format!("{} is not a directory", root.display())));
            }
            Err(e) => {
                return Err(Error::InvalidArgument(format!(
                    "no directory at {}: {e} (grant one with `allow.dir`)",
                    root.display()
                )));
            }
        }
        let store = Self {
            root,
            instance: std::collections::hash_map::RandomState::new().build_hasher().finish(),
            counter: AtomicU64::new(0),
        };
        store.remove_stale_temporaries();
        store.refuse_case_folding()?;
        Ok(store)
    }

    /// Creates `.tmp-case-<n>` and looks for `.TMP-CASE-<N>`: found, the file
    /// system folds case and the directory is refused. A directory that cannot be
    /// written now (full, read-only) is not probed: it still serves reads.
    fn refuse_case_folding(&self) -> Result<(), Error> {
        let lower = self.root.join(format!("{TMP_PREFIX}case-{:016x}", self.instance));
        let upper = self.root.join(format!(
            "{}CASE-{:016X}",
            TMP_PREFIX.to_ascii_uppercase(),
            self.instance
        ));
        if write_synced(&lower, b"").is_err() {
            return Ok(());
        }
        let folded = fs::symlink_metadata(&upper).is_ok();
        let _ = fs::remove_file(&lower);
        if folded {
            return Err(Error::InvalidArgument(format!(
                "{} is on a file system that ignores case, where the keys `KEY` and `key` would be one file \
                 and a policy naming one could be bypassed with the other; use a case-sensitive file system \
                 (on macOS, a case-sensitive APFS volume)",
                self.root.display()
            )));
        }
        Ok(())
    }

    fn remove_stale_temporaries(&self) {
        let Ok(entries) = fs::read_dir(&self.root) else {
            return;
        };
        for entry in entries.flatten() {
            if !entry.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
                continue;
            }
            let stale = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .is_some_and(|age| age > Duration::from_secs(3600));
            if stale {
                let _ = fs::remove_file(entry.path());
            }
        }
    }

    /// Checks `name` and returns its path.
    pub fn path_of(&self, name: &str) -> Result<PathBuf, Error> {
        let reason = if name.is_empty() {
            Some("is empty")
        } else if name.len() > 255 {
            Some("is longer than 255 bytes")
        } else if name.starts_with('.') {
            Some("starts with '.'")
        } else if name.contains(['/', '\\', '\0']) {
            Some("contains '/', '\\' or NUL")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(Error::InvalidArgument(format!("key name {name:?} {reason}"))),
            None => Ok(self.root.join(name)),
        }
    }

    /// Atomic, durable create-if-absent.
    pub fn create(&self, name: &str, value: &[u8]) -> Result<(), Error> {
        let path = self.path_of(name)?;
        if value.len() as u64 > MAX_RECORD {
            return Err(Error::InvalidArgument(format!(
                "record of {} bytes is larger than {MAX_RECORD} bytes",
                value.len()
            )));
        }
        let tmp = self.root.join(format!(
            "{TMP_PREFIX}{:016x}-{}",
            self.instance,
            self.counter.fetch_add(1, Ordering::Relaxed)
        ));
        let result = write_synced(&tmp, value).and_then(|()| match fs::hard_link(&tmp, &path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Err(Error::AlreadyExists),
            Err(e) => Err(io_error("cannot link the record into place", &e)),
        });
        let result = result.map_err(|e| self.removed_or(e));
        let _ = fs::remove_file(&tmp);
        result?;
        self.sync_dir()
    }

    /// Like [`DirStore::create`] but without any atomicity: checks, then writes.
    /// Only for test plugins that must break the contract.
    pub fn create_racy(&self, name: &str, value: &[u8]) -> Result<(), Error> {
        let path = self.path_of(name)?;
        if path.exists() {
            return Err(Error::AlreadyExists);
        }
        // Widen the race window the way a slow backend would.
        std::thread::sleep(Duration::from_millis(20));
        write_synced(&path, value)
    }

    /// Reads a record.
    pub fn get(&self, name: &str) -> Result<Vec<u8>, Error> {
        let path = self.path_of(name)?;
        let file = File::open(&path).map_err(|e| match e.kind() {
            ErrorKind::NotFound => self.not_found(),
            _ => self.io_error("cannot open the record", &e),
        })?;
        // A directory (or anything else) under a record's name was not written by
        // the store: no record.
        if !file.metadata().is_ok_and(|m| m.is_file()) {
            return Err(self.not_found());
        }
        let mut value = Vec::new();
        file.take(MAX_RECORD + 1)
            .read_to_end(&mut value)
            .map_err(|e| io_error("cannot read the record", &e))?;
        if value.len() as u64 > MAX_RECORD {
            return Err(Error::Other(format!("the file of key {name:?} is larger than 1 MiB")));
        }
        Ok(value)
    }

    /// Removes a record durably.
    pub fn delete(&self, name: &str) -> Result<(), Error> {
        let path = self.path_of(name)?;
        fs::remove_file(&path).map_err(|e| match e.kind() {
            ErrorKind::NotFound => self.not_found(),
            _ => self.io_error("cannot remove the record", &e),
        })?;
        self.sync_dir()
    }

    /// Every stored name (unsorted).
    pub fn names(&self) -> Result<Vec<String>, Error> {
        let entries = fs::read_dir(&self.root).map_err(|e| self.io_error("cannot list the directory", &e))?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| io_error("cannot list the directory", &e))?;
            // Names that are not UTF-8 were not written by keyhost; skip them.
            if let Ok(name) = entry.file_name().into_string()
                && !name.starts_with('.')
                && entry.file_type().is_ok_and(|t| t.is_file())
            {
                names.push(name);
            }
        }
        // A removed directory lists nothing: tell that from an empty one.
        if names.is_empty() && self.removed() {
            return Err(self.removed_error());
        }
        Ok(names)
    }

    /// A page of names, as the contract requires.
    pub fn list(&self, prefix: &str, after: Option<&str>, limit: u32) -> Result<Page, Error> {
        Ok(keyhost_plugin_sdk::page(self.names()?, prefix, after, limit))
    }

    /// The directory is there and can be read.
    pub fn status(&self) -> Result<Status, Error> {
        let start = Instant::now();
        if self.removed() {
            return Err(self.removed_error());
        }
        fs::read_dir(&self.root).map_err(|e| match e.kind() {
            ErrorKind::PermissionDenied => Error::AccessDenied(format!("cannot read the directory: {e}")),
            _ => Error::Unavailable(format!("cannot read the directory: {e}")),
        })?;
        Ok(Status {
            latency_ms: Some(u32::try_from(start.elapsed().as_millis()).unwrap_or(u32::MAX)),
            detail: Some(format!("directory {}", self.root.display())),
        })
    }

    /// Whether the directory was removed under the store: its path no longer
    /// leads to a directory, or the granted directory that holds it, which the
    /// sandbox keeps open, has a link count of 0.
    fn removed(&self) -> bool {
        keyhost_plugin_sdk::dir::removed(&self.root)
    }

    fn removed_error(&self) -> Error {
        Error::Unavailable(format!(
            "the directory {} was removed; grant an existing one",
            self.root.display()
        ))
    }

    /// `not-found`, unless the directory itself is gone.
    fn not_found(&self) -> Error {
        if self.removed() {
            self.removed_error()
        } else {
            Error::NotFound
        }
    }

    /// `error`, unless the directory itself is gone.
    fn removed_or(&self, error: Error) -> Error {
        match error {
            Error::AlreadyExists => error,
            _ if self.removed() => self.removed_error(),
            _ => error,
        }
    }

    /// [`io_error`], unless the directory itself is gone.
    fn io_error(&self, what: &str, e: &std::io::Error) -> Error {
        self.removed_or(io_error(what, e))
    }

    fn sync_dir(&self) -> Result<(), Error> {
        File::open(&self.root)
            .and_then(|dir| dir.sync_all())
            .map_err(|e| io_error("cannot sync the directory", &e))
    }
}

fn write_synced(path: &Path, value: &[u8]) -> Result<(), Error> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| io_error("cannot create the record file", &e))?;
    file.write_all(value)
        .and_then(|()| file.sync_all())
        .map_err(|e| io_error("cannot write the record", &e))
}

fn io_error(what: &str, e: &std::io::Error) -> Error {
    match e.kind() {
        ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem => Error::AccessDenied(format!("{what}: {e}")),
        ErrorKind::StorageFull | ErrorKind::QuotaExceeded => Error::Unavailable(format!("{what}: {e}")),
        _ => Error::Other(format!("{what}: {e}")),
    }
}
