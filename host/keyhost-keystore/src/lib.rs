//! The keystore abstraction of keyhost.
//!
//! A [`Keystore`] stores opaque, already-sealed key records by name. The server talks
//! to every backend — the native [`MemStore`], or a WebAssembly plugin run by
//! `keyhost-plugin-host` — only through this trait and only ever matches on [`Error`],
//! never on backend details.
//!
//! The semantics are those of the `keyhost:keystore` WIT contract (`wit/keystore.wit`):
//! atomic create-if-absent, byte-exact records, `NotFound` on a missing name (also for
//! delete), and sorted, prefix-filtered, name-continued listing.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Bound;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::RwLock;
use zeroize::Zeroizing;

pub mod names;
pub use names::{MAX_NAME_LEN, NameError, NameKind, validate_name};

/// The largest record a keystore must accept, in bytes (1 MiB).
pub const MAX_RECORD_LEN: usize = 1 << 20;

/// A record as read from a keystore. Records carry (sealed) key material, so the
/// buffer is wiped when dropped.
pub type Record = Zeroizing<Vec<u8>>;

/// Why a keystore operation failed.
///
/// The cases mirror the `error` variant of the WIT contract one to one, so that a
/// plugin's answer reaches the HTTP layer without being reinterpreted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The named record does not exist.
    #[error("key does not exist")]
    NotFound,
    /// `create` found a record of that name already in place.
    #[error("key already exists")]
    AlreadyExists,
    /// The request cannot be served as given (bad name, bad setting, too large).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The backend refused our credentials or permissions.
    #[error("access denied: {0}")]
    AccessDenied(String),
    /// The backend is unreachable or failed transiently; also a missed deadline.
    #[error("keystore unavailable: {0}")]
    Unavailable(String),
    /// The backend asked us to slow down.
    #[error("keystore throttled{}", .retry_after.map(|d| format!(" (retry after {} ms)", d.as_millis())).unwrap_or_default())]
    Throttled {
        /// How long the backend asked us to wait, if it said.
        retry_after: Option<Duration>,
    },
    /// The operation is not supported by this keystore.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// Anything else, including a plugin that trapped or broke the contract.
    #[error("keystore failure: {0}")]
    Other(String),
}

impl Error {
    /// Whether the failure means "the backend could not be reached" (as opposed to
    /// "the backend answered with an error"). KES reports the former as 504 on
    /// `/v1/ready` and switches to its offline cache.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Error::Unavailable(_) | Error::Throttled { .. })
    }
}

/// A result of a keystore operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One page of a listing: names in ascending byte order, and where to continue.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    /// The names of this page, sorted, each once.
    pub names: Vec<String>,
    /// `None` when the listing is complete; otherwise the `after` value for the next
    /// page (the last name of this page).
    pub next: Option<String>,
}

/// The health of a keystore's backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The round trip to the backend.
    pub latency: Duration,
    /// A short human-readable note.
    pub detail: Option<String>,
}

/// A store of opaque records by name. See the crate documentation for the rules.
#[async_trait]
pub trait Keystore: Send + Sync + fmt::Debug + 'static {
    /// Stores `value` under `name` if no record of that name exists, atomically and
    /// durably; [`Error::AlreadyExists`] otherwise, leaving the existing record as it is.
    async fn create(&self, name: &str, value: &[u8]) -> Result<()>;
    /// Returns the record stored under `name`, or [`Error::NotFound`].
    async fn get(&self, name: &str) -> Result<Record>;
    /// Removes the record stored under `name`, or returns [`Error::NotFound`].
    async fn delete(&self, name: &str) -> Result<()>;
    /// Lists at most `limit` names starting with `prefix` that sort after `after`.
    async fn list(&self, prefix: &str, after: Option<&str>, limit: u32) -> Result<Page>;
    /// Checks that the backend can serve requests.
    async fn status(&self) -> Result<Status>;
    /// Counters of the machinery behind the keystore (plugin instances), if any.
    fn runtime_stats(&self) -> Option<RuntimeStats> {
        None
    }
}

/// Counters of a keystore's runtime, for metrics: a plugin's instance pool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RuntimeStats {
    /// Instances started.
    pub instances_started: u64,
    /// Instances discarded (after a trap, a missed deadline, the memory limit, or a recycle).
    pub instances_discarded: u64,
    /// Calls that trapped.
    pub traps: u64,
    /// Calls that missed their deadline.
    pub timeouts: u64,
    /// Calls that hit the memory limit.
    pub memory_exhausted: u64,
}

/// A native, in-memory keystore for tests and `server --dev`. Nothing survives a
/// restart.
#[derive(Default)]
pub struct MemStore {
    records: RwLock<BTreeMap<String, Record>>,
}

impl fmt::Debug for MemStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemStore").finish_non_exhaustive()
    }
}

impl MemStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl Keystore for MemStore {
    async fn create(&self, name: &str, value: &[u8]) -> Result<()> {
        validate_name(name).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        if value.len() > MAX_RECORD_LEN {
            return Err(Error::InvalidArgument(format!(
                "record of {} bytes is larger than {MAX_RECORD_LEN} bytes",
                value.len()
            )));
        }
        let mut records = self.records.write().await;
        if records.contains_key(name) {
            return Err(Error::AlreadyExists);
        }
        records.insert(name.to_owned(), Zeroizing::new(value.to_vec()));
        Ok(())
    }

    async fn get(&self, name: &str) -> Result<Record> {
        self.records.read().await.get(name).cloned().ok_or(Error::NotFound)
    }

    async fn delete(&self, name: &str) -> Result<()> {
        self.records.write().await.remove(name).map(drop).ok_or(Error::NotFound)
    }

    async fn list(&self, prefix: &str, after: Option<&str>, limit: u32) -> Result<Page> {
        let records = self.records.read().await;
        let lower = match after {
            Some(after) if after >= prefix => Bound::Excluded(after),
            _ => Bound::Included(prefix),
        };
        Ok(page_of(
            records
                .range::<str, _>((lower, Bound::Unbounded))
                .map(|(name, _)| name.as_str())
                .take_while(|name| name.starts_with(prefix)),
            limit,
        ))
    }

    async fn status(&self) -> Result<Status> {
        let start = Instant::now();
        drop(self.records.read().await);
        Ok(Status {
            latency: start.elapsed(),
            detail: Some("in memory".into()),
        })
    }
}

/// Builds a [`Page`] of at most `limit` names (at least one) from an iterator of
/// sorted, already filtered names.
pub fn page_of<'a>(names: impl Iterator<Item = &'a str>, limit: u32) -> Page {
    let limit = limit.max(1) as usize;
    let mut names = names.peekable();
    let page: Vec<String> = names.by_ref().take(limit).map(str::to_owned).collect();
    let next = match names.peek() {
        Some(_) => page.last().cloned(),
        None => None,
    };
    Page { names: page, next }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn mem_store_follows_the_contract() {
        let store = MemStore::new();
        for name in ["my-key", "my-key2", "0-key", "1-key"] {
            store.create(name, name.as_bytes()).await.unwrap();
        }
        assert_eq!(store.create("my-key", b"x").await, Err(Error::AlreadyExists));
        assert_eq!(&**store.get("my-key").await.unwrap(), b"my-key");

        let all = store.list("", None, 100).await.unwrap();
        assert_eq!(all.names, ["0-key", "1-key", "my-key", "my-key2"]);
        assert_eq!(all.next, None);

        let first = store.list("my", None, 1).await.unwrap();
        assert_eq!(first.names, ["my-key"]);
        assert_eq!(first.next.as_deref(), Some("my-key"));
        let second = store.list("my", first.next.as_deref(), 1).await.unwrap();
        assert_eq!(second.names, ["my-key2"]);
        assert_eq!(second.next, None);

        // `after` below the prefix does not widen the listing.
        let below = store.list("my", Some("0"), 10).await.unwrap();
        assert_eq!(below.names, ["my-key", "my-key2"]);

        assert_eq!(store.delete("my-key").await, Ok(()));
        assert_eq!(store.delete("my-key").await, Err(Error::NotFound));
        assert_eq!(store.get("my-key").await, Err(Error::NotFound));
    }
}
