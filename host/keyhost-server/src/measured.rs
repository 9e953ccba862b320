//! A keystore wrapper that measures every operation for `/v1/metrics`.

use std::time::Instant;

use async_trait::async_trait;
use keyhost_keystore::{Keystore, Page, Record, Result, RuntimeStats, Status};
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

/// Counts and times keystore operations: `keyhost_keystore_operations{op,result}`
/// and `keyhost_keystore_latency_seconds{op}`.
#[derive(Debug)]
pub(crate) struct Measured<K: ?Sized> {
    operations: IntCounterVec,
    latency: HistogramVec,
    pub(crate) inner: std::sync::Arc<K>,
}

impl<K: ?Sized + Keystore> Measured<K> {
    pub(crate) fn new(inner: std::sync::Arc<K>, registry: &Registry) -> Self {
        let operations = IntCounterVec::new(
            Opts::new("keyhost_keystore_operations", "Keystore operations by kind and result."),
            &["op", "result"],
        )
        .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new("keyhost_keystore_latency_seconds", "Keystore operation latency.")
                .buckets(vec![0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0]),
            &["op"],
        )
        .expect("valid metric");
        // A second registration (a reloaded configuration) keeps the first series.
        let _ = registry.register(Box::new(operations.clone()));
        let _ = registry.register(Box::new(latency.clone()));
        Self {
            operations,
            latency,
            inner,
        }
    }

    fn record<T>(&self, op: &str, start: Instant, result: &Result<T>) {
        self.latency
            .with_label_values(&[op])
            .observe(start.elapsed().as_secs_f64());
        let outcome = match result {
            Ok(_) => "ok",
            Err(keyhost_keystore::Error::NotFound) => "not_found",
            Err(keyhost_keystore::Error::AlreadyExists) => "exists",
            Err(_) => "error",
        };
        self.operations.with_label_values(&[op, outcome]).inc();
    }
}

#[async_trait]
impl<K: ?Sized + Keystore> Keystore for Measured<K> {
    async fn create(&self, name: &str, value: &[u8]) -> Result<()> {
        let start = Instant::now();
        let r = self.inner.create(name, value).await;
        self.record("create", start, &r);
        r
    }

    async fn get(&self, name: &str) -> Result<Record> {
        let start = Instant::now();
        let r = self.inner.get(name).await;
        self.record("get", start, &r);
        r
    }

    async fn delete(&self, name: &str) -> Result<()> {
        let start = Instant::now();
        let r = self.inner.delete(name).await;
        self.record("delete", start, &r);
        r
    }

    async fn list(&self, prefix: &str, after: Option<&str>, limit: u32) -> Result<Page> {
        let start = Instant::now();
        let r = self.inner.list(prefix, after, limit).await;
        self.record("list", start, &r);
        r
    }

    async fn status(&self) -> Result<Status> {
        let start = Instant::now();
        let r = self.inner.status().await;
        self.record("status", start, &r);
        r
    }

    fn runtime_stats(&self) -> Option<RuntimeStats> {
        self.inner.runtime_stats()
    }
}
