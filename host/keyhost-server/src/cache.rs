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
use std::time::{Duration, Instant};

use keyhost_crypto::KeyRecord;
use tokio::sync::OnceCell;

use crate::error::{ApiError, StoreOp};
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

type Loading = Arc<OnceCell<Result<Arc<KeyRecord>, ApiError>>>;

#[derive(Debug)]
struct Entry {
    key: Arc<KeyRecord>,
    used: AtomicBool,
}

#[derive(Debug, Default)]
pub(crate) struct KeyCache {
    keys: RwLock<HashMap<String, Entry>>,
    loading: Mutex<HashMap<String, Loading>>,
    offline: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl KeyCache {
    /// The key called `name`, from the cache or the keystore.
    pub(crate) async fn get(&self, store: &dyn Keystore, name: &str) -> Result<Arc<KeyRecord>, ApiError> {
        if let Some(entry) = self.keys.read().unwrap_or_else(|p| p.into_inner()).get(name) {
            entry.used.store(true, Ordering::Relaxed);
            return Ok(entry.key.clone());
        }
        let cell = lock(&self.loading).entry(name.to_owned()).or_default().clone();
        let result = cell
            .get_or_init(|| async {
                let record = store.get(name).await.map_err(|error| match error {
                    StoreError::NotFound => ApiError::KeyNotFound,
                    error => ApiError::Store {
                        op: StoreOp::Read,
                        error,
                    },
                })?;
                let key = Arc::new(KeyRecord::parse(&record).map_err(|_| ApiError::MalformedKey)?);
                self.keys.write().unwrap_or_else(|p| p.into_inner()).insert(
                    name.to_owned(),
                    Entry {
                        key: key.clone(),
                        used: AtomicBool::new(true),
                    },
                );
                Ok(key)
            })
            .await
            .clone();
        let mut loading = lock(&self.loading);
        if loading.get(name).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
            loading.remove(name);
        }
        result
    }

    /// Forgets `name` (after a delete).
    pub(crate) fn evict(&self, name: &str) {
        self.keys.write().unwrap_or_else(|p| p.into_inner()).remove(name);
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
