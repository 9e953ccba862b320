//! The API over real mutual TLS: certificates minted per run, a real HTTP client.
//! One test binary, by theme: keys, policies and identities, identities from TLS,
//! the key cache, what the server tells about itself, and wire details of both eras.

#![expect(clippy::unwrap_used, reason = "Tests fail loudly by design")]

mod cache;
mod keys;
mod observe;
mod policy;
mod tls;
mod wire;

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use keyhost_keystore::MemStore;
use keyhost_policy::{ApiKey, Identity};
use keyhost_test_support::api::{Server, message, start};
use keyhost_tls::mint::client_certificate;
use serde_json::{Value, json};

/// A keystore that counts reads and can be switched off, like a backend outage.
#[derive(Debug, Default)]
struct Switch {
    inner: MemStore,
    down: std::sync::atomic::AtomicBool,
    gets: std::sync::atomic::AtomicUsize,
}

impl Switch {
    fn check(&self) -> Result<(), keyhost_keystore::Error> {
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            Err(keyhost_keystore::Error::Unavailable("switched off".into()))
        } else {
            Ok(())
        }
    }
}

#[async_trait::async_trait]
impl keyhost_keystore::Keystore for Switch {
    async fn create(&self, name: &str, value: &[u8]) -> keyhost_keystore::Result<()> {
        self.check()?;
        self.inner.create(name, value).await
    }
    async fn get(&self, name: &str) -> keyhost_keystore::Result<keyhost_keystore::Record> {
        self.gets.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        // Slow enough that concurrent misses overlap.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        self.check()?;
        self.inner.get(name).await
    }
    async fn delete(&self, name: &str) -> keyhost_keystore::Result<()> {
        self.check()?;
        self.inner.delete(name).await
    }
    async fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> keyhost_keystore::Result<keyhost_keystore::Page> {
        self.check()?;
        self.inner.list(prefix, after, limit).await
    }
    async fn status(&self) -> keyhost_keystore::Result<keyhost_keystore::Status> {
        self.check()?;
        self.inner.status().await
    }
}

fn ms(n: u64) -> std::time::Duration {
    std::time::Duration::from_millis(n)
}

async fn start_with(store: Arc<Switch>, expiry: keyhost_server::CacheExpiry) -> Server {
    start(move |state| {
        state.keystore = store;
        state.cache_expiry = expiry;
    })
    .await
}

/// Reads NDJSON lines from a streaming response until `want` lines arrived.
async fn lines(resp: reqwest::Response, want: usize) -> Vec<Value> {
    use futures::StreamExt;
    let mut stream = resp.bytes_stream();
    let mut buf = Vec::new();
    let mut out = Vec::new();
    while out.len() < want {
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(5), stream.next())
            .await
            .expect("an event within 5 s")
            .expect("the stream stays open")
            .unwrap();
        buf.extend_from_slice(&chunk);
        while let Some(end) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=end).collect();
            out.push(serde_json::from_slice(&line).unwrap());
        }
    }
    out
}
