//! The key cache: parsed key records by name, with single-flight loading (N
//! concurrent misses for one name cause one keystore read) and KES's expiry rules.
//!
//! - every `any`: forget everything;
//! - every `unused / 2`: forget keys not used since the previous sweep;
//! - every 10 s: probe the keystore; while it is unreachable the server is
//!   *offline*. With `offline > 0`, an offline server stops expiring keys (so cached
//!   keys keep working) until it has been offline for `offline`, then forgets them.
//!   With `offline = 0`, expiry goes on as usual.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::time::Instant;

use keyhost_crypto::KeyRecord;
use tokio::sync::OnceCell;

use keyhost_keystore::{Error as StoreError, Keystore};

/// How long cached keys live (KES's `cache.expiry`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheExpiry {
    /// Forget every key this often (0: never).
    pub any: Duration,
    /// Forget keys unused for this long (0: never).
    pub unused: Duration,
    /// While the keystore is unreachable, keep keys this long (0: no offline mode).
    pub offline: Duration,
    /// How often the keystore is probed.
    pub probe: Duration,
}

impl Default for CacheExpiry {
    fn default() -> Self {
        Self {
            any: Duration::from_secs(300),
            unused: Duration::from_secs(30),
            offline: Duration::ZERO,
            probe: Duration::from_secs(10),
        }
    }
}

/// Why a key could not be loaded into the cache.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum LoadError {
    /// The keystore's read failed (`NotFound` included).
    #[error(transparent)]
    Store(StoreError),
    /// The keystore returned a record that is not a key record.
    #[error("the stored key record is malformed")]
    Malformed,
}

type Loading = Arc<OnceCell<Result<Arc<KeyRecord>, LoadError>>>;

#[derive(Debug)]
struct Entry {
    key: Arc<KeyRecord>,
    used: AtomicBool,
}

#[derive(Debug, Default)]
pub(crate) struct KeyCache {
    keys: RwLock<HashMap<String, Entry>>,
    /// Loads under way. [`KeyCache::evict`] takes a name's load out of this map, and
    /// a load puts its key in the cache only while it is still the name's load: a
    /// load that read a key before it was deleted must not bring it back (and seal
    /// new data under it once the name is re-created).
    loading: Mutex<HashMap<String, Loading>>,
    offline: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Takes a load's cell out of the loading map when the load ends — also when the
/// request that started it is cancelled (a reset stream, a deadline), so that no
/// name stays in the map for good.
struct Unregister<'a> {
    cache: &'a KeyCache,
    name: &'a str,
    cell: Loading,
}

impl Drop for Unregister<'_> {
    fn drop(&mut self) {
        let mut loading = lock(&self.cache.loading);
        if loading.get(self.name).is_some_and(|c| Arc::ptr_eq(c, &self.cell)) {
            loading.remove(self.name);
        }
    }
}

impl KeyCache {
    /// The key called `name`, from the cache or the keystore.
    pub(crate) async fn get(&self, store: &dyn Keystore, name: &str) -> Result<Arc<KeyRecord>, LoadError> {
        if let Some(entry) = self.keys.read().unwrap_or_else(|p| p.into_inner()).get(name) {
            entry.used.store(true, Ordering::Relaxed);
            return Ok(entry.key.clone());
        }
        let cell = lock(&self.loading).entry(name.to_owned()).or_default().clone();
        let _unregister = Unregister {
            cache: self,
            name,
            cell: cell.clone(),
        };
        cell.get_or_init(|| async {
            let record = store.get(name).await.map_err(LoadError::Store)?;
            let key = Arc::new(KeyRecord::parse(&record).map_err(|_| LoadError::Malformed)?);
            let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
            // `evict` unregisters loads under this lock, so an eviction either came
            // before this check (and the key is not cached) or comes after the
            // insert (and removes it).
            let current = lock(&self.loading).get(name).is_some_and(|c| Arc::ptr_eq(c, &cell));
            if current {
                keys.insert(
                    name.to_owned(),
                    Entry {
                        key: key.clone(),
                        used: AtomicBool::new(true),
                    },
                );
            }
            Ok(key)
        })
        .await
        .clone()
    }

    /// Forgets `name` (after a delete), and any load of it under way: a request
    /// that comes after this reads the keystore anew.
    pub(crate) fn evict(&self, name: &str) {
        let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
        keys.remove(name);
        lock(&self.loading).remove(name);
    }

    /// How many loads are under way (for tests).
    #[cfg(test)]
    fn loading(&self) -> usize {
        lock(&self.loading).len()
    }

    /// Whether the last probe found the keystore unreachable.
    pub(crate) fn is_offline(&self) -> bool {
        self.offline.load(Ordering::Relaxed)
    }

    /// How many keys are cached.
    pub(crate) fn len(&self) -> usize {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    fn clear(&self) {
        self.keys.write().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Forgets keys not used since the last sweep and marks the rest unused.
    fn sweep_unused(&self) {
        self.keys
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, e| e.used.swap(false, Ordering::Relaxed));
    }
}

/// Runs the expiry rules until the returned task is aborted.
pub(crate) fn spawn_maintenance(
    cache: Arc<KeyCache>,
    store: Arc<dyn Keystore>,
    expiry: CacheExpiry,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let tick = [expiry.any, expiry.unused / 2, expiry.offline, expiry.probe]
            .into_iter()
            .filter(|d| !d.is_zero())
            .min()
            .unwrap_or(Duration::from_secs(1))
            .clamp(Duration::from_millis(10), Duration::from_secs(1));
        let start = Instant::now();
        let (mut last_any, mut last_unused, mut last_probe) = (start, start, start);
        let mut offline_since: Option<Instant> = None;
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            let now = Instant::now();
            if now.duration_since(last_probe) >= expiry.probe {
                last_probe = now;
                let reachable =
                    match tokio::time::timeout(expiry.probe.max(Duration::from_secs(1)), store.status()).await {
                        Ok(Ok(_)) => true,
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, "keystore probe failed");
                            false
                        }
                        Err(_) => false,
                    };
                if reachable {
                    if offline_since.take().is_some() {
                        tracing::info!("keystore reachable again");
                    }
                } else if offline_since.is_none() {
                    tracing::warn!("keystore unreachable; serving cached keys");
                    offline_since = Some(now);
                }
                cache.offline.store(!reachable, Ordering::Relaxed);
            }
            let holding = offline_since.is_some() && !expiry.offline.is_zero();
            if let Some(since) = offline_since
                && holding
                && now.duration_since(since) >= expiry.offline
            {
                cache.clear();
                offline_since = Some(now);
            }
            if !expiry.any.is_zero() && now.duration_since(last_any) >= expiry.any {
                last_any = now;
                if !holding {
                    cache.clear();
                }
            }
            if !expiry.unused.is_zero() && now.duration_since(last_unused) >= expiry.unused / 2 {
                last_unused = now;
                if !holding {
                    cache.sweep_unused();
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyhost_crypto::{Algorithm, RecordFormat};
    use keyhost_keystore::{MemStore, Page, Record, Status};

    /// A keystore whose reads wait until the test lets them go, one at a time:
    /// the test decides exactly where a read stands when something else happens.
    #[derive(Debug)]
    struct Gated {
        inner: MemStore,
        /// Told when a read has started.
        started: tokio::sync::mpsc::UnboundedSender<()>,
        /// A read finishes when it gets a permit.
        gate: tokio::sync::Semaphore,
    }

    #[async_trait::async_trait]
    impl Keystore for Gated {
        async fn create(&self, name: &str, value: &[u8]) -> keyhost_keystore::Result<()> {
            self.inner.create(name, value).await
        }
        async fn get(&self, name: &str) -> keyhost_keystore::Result<Record> {
            let record = self.inner.get(name).await;
            let _ = self.started.send(());
            self.gate.acquire().await.map(|p| p.forget()).ok();
            record
        }
        async fn delete(&self, name: &str) -> keyhost_keystore::Result<()> {
            self.inner.delete(name).await
        }
        async fn list(&self, prefix: &str, after: Option<&str>, limit: u32) -> keyhost_keystore::Result<Page> {
            self.inner.list(prefix, after, limit).await
        }
        async fn status(&self) -> keyhost_keystore::Result<Status> {
            self.inner.status().await
        }
    }

    fn gated() -> (Arc<Gated>, tokio::sync::mpsc::UnboundedReceiver<()>) {
        let (started, rx) = tokio::sync::mpsc::unbounded_channel();
        let store = Gated {
            inner: MemStore::new(),
            started,
            gate: tokio::sync::Semaphore::new(0),
        };
        (Arc::new(store), rx)
    }

    fn record() -> Vec<u8> {
        let key = KeyRecord::generate(Algorithm::preferred(), "test", time::OffsetDateTime::now_utc());
        key.encode(RecordFormat::Current)
            .unwrap_or_else(|e| panic!("{e}"))
            .to_vec()
    }

    /// A read that started before a delete and ends after it does not put the
    /// deleted key back; once the name is re-created, the new key is served.
    #[tokio::test]
    async fn a_read_racing_a_delete_does_not_bring_the_key_back() {
        let (store, mut started) = gated();
        let old = record();
        store.create("k", &old).await.unwrap_or_else(|e| panic!("{e}"));
        let cache = Arc::new(KeyCache::default());

        // A read of the old key is under way…
        let reading = tokio::spawn({
            let (cache, store) = (cache.clone(), store.clone());
            async move { cache.get(&*store, "k").await }
        });
        started.recv().await;
        // …when the key is deleted and created anew.
        store.delete("k").await.unwrap_or_else(|e| panic!("{e}"));
        cache.evict("k");
        let new = record();
        store.create("k", &new).await.unwrap_or_else(|e| panic!("{e}"));
        store.gate.add_permits(1);
        let stale = reading.await.unwrap_or_else(|e| panic!("{e}"));
        assert!(stale.is_ok(), "the read that began first may finish with what it read");
        assert_eq!(cache.len(), 0, "the deleted key was put back in the cache");

        // A request after the re-creation gets the new key, not the old one.
        store.gate.add_permits(1);
        let fresh = cache.get(&*store, "k").await.unwrap_or_else(|e| panic!("{e}"));
        let expected = KeyRecord::parse(&new).unwrap_or_else(|e| panic!("{e}"));
        let old = KeyRecord::parse(&old).unwrap_or_else(|e| panic!("{e}"));
        let ct = fresh.key.seal(b"x", b"", keyhost_crypto::CiphertextFormat::Raw);
        assert!(expected.key.open(&ct, b"").is_ok(), "sealed under the new key");
        assert!(old.key.open(&ct, b"").is_err(), "not under the deleted one");
    }

    /// A request that joins a load begun before a delete does not get the deleted
    /// key: the delete ends that load for newcomers.
    #[tokio::test]
    async fn a_delete_ends_a_load_for_later_requests() {
        let (store, mut started) = gated();
        store.create("k", &record()).await.unwrap_or_else(|e| panic!("{e}"));
        let cache = Arc::new(KeyCache::default());
        let first = tokio::spawn({
            let (cache, store) = (cache.clone(), store.clone());
            async move { cache.get(&*store, "k").await.map(|_| ()) }
        });
        started.recv().await;
        store.delete("k").await.unwrap_or_else(|e| panic!("{e}"));
        cache.evict("k");
        let later = tokio::spawn({
            let (cache, store) = (cache.clone(), store.clone());
            async move { cache.get(&*store, "k").await.map(|_| ()) }
        });
        started.recv().await; // the later request reads the keystore itself
        store.gate.add_permits(2);
        let _ = first.await;
        assert_eq!(
            later.await.unwrap_or_else(|e| panic!("{e}")),
            Err(LoadError::Store(StoreError::NotFound))
        );
    }

    /// Deleting one name leaves loads of other names alone: they are cached.
    #[tokio::test]
    async fn a_delete_of_another_name_does_not_stop_caching() {
        let (store, mut started) = gated();
        store.create("k", &record()).await.unwrap_or_else(|e| panic!("{e}"));
        let cache = Arc::new(KeyCache::default());
        let load = tokio::spawn({
            let (cache, store) = (cache.clone(), store.clone());
            async move { cache.get(&*store, "k").await.map(|_| ()) }
        });
        started.recv().await;
        cache.evict("other");
        store.gate.add_permits(1);
        assert_eq!(load.await.unwrap_or_else(|e| panic!("{e}")), Ok(()));
        assert_eq!(cache.len(), 1, "a delete of another name kept k out of the cache");
    }

    /// A load whose request is cancelled (a reset stream, a deadline) leaves
    /// nothing behind in the loading map.
    #[tokio::test]
    async fn a_cancelled_load_leaves_nothing_behind() {
        let (store, mut started) = gated();
        let cache = Arc::new(KeyCache::default());
        for i in 0..100 {
            let name = format!("never-{i}");
            let load = tokio::spawn({
                let (cache, store) = (cache.clone(), store.clone());
                async move { cache.get(&*store, &name).await.map(|_| ()) }
            });
            started.recv().await;
            assert_eq!(cache.loading(), 1);
            load.abort();
            let _ = load.await;
            assert_eq!(cache.loading(), 0, "a cancelled load stayed in the loading map");
        }
    }

    /// A keystore that can be switched off, like a backend in an outage.
    #[derive(Debug, Default)]
    struct Switch {
        inner: MemStore,
        down: AtomicBool,
    }

    impl Switch {
        fn check(&self) -> keyhost_keystore::Result<()> {
            if self.down.load(Ordering::SeqCst) {
                Err(StoreError::Unavailable("switched off".into()))
            } else {
                Ok(())
            }
        }
        fn set_down(&self, down: bool) {
            self.down.store(down, Ordering::SeqCst);
        }
    }

    #[async_trait::async_trait]
    impl Keystore for Switch {
        async fn create(&self, name: &str, value: &[u8]) -> keyhost_keystore::Result<()> {
            self.inner.create(name, value).await
        }
        async fn get(&self, name: &str) -> keyhost_keystore::Result<Record> {
            self.check()?;
            self.inner.get(name).await
        }
        async fn delete(&self, name: &str) -> keyhost_keystore::Result<()> {
            self.inner.delete(name).await
        }
        async fn list(&self, prefix: &str, after: Option<&str>, limit: u32) -> keyhost_keystore::Result<Page> {
            self.inner.list(prefix, after, limit).await
        }
        async fn status(&self) -> keyhost_keystore::Result<Status> {
            self.check()?;
            self.inner.status().await
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A cache with its maintenance running under `expiry`, over a store that
    /// holds the keys `names`.
    async fn expiring(
        expiry: CacheExpiry,
        names: &[&str],
    ) -> (Arc<KeyCache>, Arc<Switch>, tokio::task::JoinHandle<()>) {
        let store = Arc::new(Switch::default());
        for name in names {
            store.create(name, &record()).await.unwrap_or_else(|e| panic!("{e}"));
        }
        let cache = Arc::new(KeyCache::default());
        let task = spawn_maintenance(cache.clone(), store.clone(), expiry);
        (cache, store, task)
    }

    async fn cached(cache: &KeyCache, store: &Switch, name: &str) -> bool {
        cache.get(store, name).await.is_ok()
    }

    /// `any`: every key is forgotten that often, used or not; until then a key
    /// deleted behind the server's back (by another node) is still served.
    #[tokio::test(start_paused = true)]
    async fn every_key_is_forgotten_after_any() {
        let expiry = CacheExpiry {
            any: ms(300),
            unused: Duration::ZERO,
            offline: Duration::ZERO,
            probe: ms(3_600_000),
        };
        let (cache, store, task) = expiring(expiry, &["k"]).await;
        assert!(cached(&cache, &store, "k").await);
        store.inner.delete("k").await.unwrap_or_else(|e| panic!("{e}"));
        tokio::time::sleep(ms(250)).await;
        assert!(cached(&cache, &store, "k").await, "served from the cache before `any`");
        tokio::time::sleep(ms(100)).await;
        assert_eq!(
            cache.get(&*store, "k").await.map(drop),
            Err(LoadError::Store(StoreError::NotFound))
        );
        task.abort();
    }

    /// `unused`: a key not used for that long is forgotten; one in use is kept.
    #[tokio::test(start_paused = true)]
    async fn unused_keys_are_forgotten_and_used_ones_kept() {
        let expiry = CacheExpiry {
            any: Duration::ZERO,
            unused: ms(100),
            offline: Duration::ZERO,
            probe: ms(3_600_000),
        };
        let (cache, store, task) = expiring(expiry, &["hot", "cold"]).await;
        assert!(cached(&cache, &store, "hot").await && cached(&cache, &store, "cold").await);
        assert_eq!(cache.len(), 2);
        // From now on a key is served only from the cache.
        for name in ["hot", "cold"] {
            store.inner.delete(name).await.unwrap_or_else(|e| panic!("{e}"));
        }
        for _ in 0..20 {
            tokio::time::sleep(ms(20)).await;
            assert!(cached(&cache, &store, "hot").await, "the key in use is kept");
        }
        assert_eq!(cache.len(), 1, "only the key in use is left");
        assert!(!cached(&cache, &store, "cold").await, "the unused key is forgotten");
        task.abort();
    }

    /// Offline mode: while the keystore is unreachable, cached keys are kept past
    /// `any` and `unused` until `offline` has passed; a key not cached cannot be
    /// read; once the keystore is back, expiry goes on.
    #[tokio::test(start_paused = true)]
    async fn offline_mode_keeps_cached_keys_for_offline() {
        let expiry = CacheExpiry {
            any: ms(200),
            unused: ms(200),
            offline: ms(1_000),
            probe: ms(50),
        };
        let (cache, store, task) = expiring(expiry, &["cached", "cold"]).await;
        assert!(cached(&cache, &store, "cached").await);
        store.set_down(true);
        tokio::time::sleep(ms(100)).await;
        assert!(cache.is_offline(), "the probe noticed the outage");
        tokio::time::sleep(ms(700)).await;
        assert_eq!(cache.len(), 1, "long past `any` and `unused`, the key is kept");
        assert!(cached(&cache, &store, "cached").await);
        assert!(!cached(&cache, &store, "cold").await);
        tokio::time::sleep(ms(400)).await;
        assert_eq!(cache.len(), 0, "forgotten once `offline` has passed");

        store.set_down(false);
        tokio::time::sleep(ms(100)).await;
        assert!(!cache.is_offline(), "the probe noticed the recovery");
        assert!(cached(&cache, &store, "cold").await);
        tokio::time::sleep(ms(450)).await;
        assert_eq!(cache.len(), 0, "expiry goes on once the keystore is back");
        task.abort();
    }

    /// Without offline mode, keys expire as usual during an outage.
    #[tokio::test(start_paused = true)]
    async fn without_offline_mode_keys_expire_during_an_outage() {
        let expiry = CacheExpiry {
            any: ms(200),
            unused: Duration::ZERO,
            offline: Duration::ZERO,
            probe: ms(50),
        };
        let (cache, store, task) = expiring(expiry, &["k"]).await;
        assert!(cached(&cache, &store, "k").await);
        store.set_down(true);
        tokio::time::sleep(ms(250)).await;
        assert!(cache.is_offline());
        assert_eq!(cache.len(), 0);
        assert_eq!(
            cache.get(&*store, "k").await.map(drop),
            Err(LoadError::Store(StoreError::Unavailable("switched off".into())))
        );
        task.abort();
    }
}
