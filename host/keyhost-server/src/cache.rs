//! The key cache: parsed key records by name, with single-flight loading (N
//! concurrent misses for one name cause one keystore read).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use keyhost_crypto::KeyRecord;
use tokio::sync::OnceCell;

use crate::error::{ApiError, StoreOp};
use keyhost_keystore::{Error as StoreError, Keystore};

type Loading = Arc<OnceCell<Result<Arc<KeyRecord>, ApiError>>>;

#[derive(Debug, Default)]
pub(crate) struct KeyCache {
    keys: RwLock<HashMap<String, Arc<KeyRecord>>>,
    loading: Mutex<HashMap<String, Loading>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl KeyCache {
    /// The key called `name`, from the cache or the keystore.
    pub(crate) async fn get(
        &self,
        store: &dyn Keystore,
        name: &str,
    ) -> Result<Arc<KeyRecord>, ApiError> {
        if let Some(key) = self
            .keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
        {
            return Ok(key.clone());
        }
        let cell = lock(&self.loading)
            .entry(name.to_owned())
            .or_default()
            .clone();
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
                self.keys
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(name.to_owned(), key.clone());
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
        self.keys
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
    }
}
