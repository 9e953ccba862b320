//! The keystore's status as readiness probes see it: answered from the last known
//! status, refreshed in the background, one refresh at a time.
//!
//! `/v1/ready` is often served without authentication (Kubernetes' probes), so
//! anyone may call it as often as they like. A probe that asked the keystore each
//! time would queue behind key reads for the plugin's instances (and let anyone
//! fill that queue); so probes share one status call at a time:
//!
//! - a status younger than [`FRESH`] is answered as it is;
//! - an older one starts a refresh (unless one is under way) and waits for it at
//!   most [`WAIT`];
//! - a refresh that does not end within that answers the last status while it is
//!   younger than [`STALE`], and "unreachable" after that: a keystore that does not
//!   answer is not ready.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use keyhost_keystore::Keystore;

/// How long a known status is answered without starting a refresh.
pub(crate) const FRESH: Duration = Duration::from_secs(2);

/// How long a probe waits for a refresh.
pub(crate) const WAIT: Duration = Duration::from_secs(1);

/// How long a status is answered while its refresh does not end.
pub(crate) const STALE: Duration = Duration::from_secs(5);

/// What a readiness probe answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Readiness {
    /// The keystore answered its status call.
    Ready,
    /// The keystore could not be reached.
    Unreachable,
    /// The keystore answered with an error.
    Unavailable,
}

/// The last known status and whether a refresh is under way.
#[derive(Debug, Default)]
pub(crate) struct HealthCache {
    last: std::sync::Mutex<Option<(Instant, Readiness)>>,
    refreshing: AtomicBool,
    refreshed: tokio::sync::Notify,
}

impl HealthCache {
    fn last(&self) -> Option<(Instant, Readiness)> {
        *self.last.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The status to answer now: see the [module](self) for the rules. A probe
    /// waits at most [`WAIT`], and never behind key reads once a status is fresh.
    pub(crate) async fn readiness(self: &Arc<Self>, keystore: &Arc<dyn Keystore>) -> Readiness {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let refreshed = self.refreshed.notified();
            let last = self.last();
            if let Some((at, readiness)) = last
                && at.elapsed() < FRESH
            {
                return readiness;
            }
            self.refresh(keystore);
            if tokio::time::timeout_at(deadline, refreshed).await.is_err() {
                return match self.last() {
                    Some((at, readiness)) if at.elapsed() < STALE => readiness,
                    _ => Readiness::Unreachable,
                };
            }
        }
    }

    /// Starts a refresh, unless one is under way.
    fn refresh(self: &Arc<Self>, keystore: &Arc<dyn Keystore>) {
        if self.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let (this, keystore) = (self.clone(), keystore.clone());
        tokio::spawn(async move {
            // Whatever ends the refresh (an answer, the timeout, a panic), the next
            // probe may start another.
            let _done = Done(this.clone());
            let readiness = match tokio::time::timeout(STATUS_TIMEOUT, keystore.status()).await {
                Ok(Ok(_)) => Readiness::Ready,
                Ok(Err(e)) if !e.is_unreachable() => Readiness::Unavailable,
                Ok(Err(_)) | Err(_) => Readiness::Unreachable,
            };
            *this.last.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), readiness));
        });
    }
}

/// The longest a status call of a refresh may take; then the keystore counts as
/// unreachable.
const STATUS_TIMEOUT: Duration = Duration::from_secs(10);

/// Marks a refresh as ended when dropped, and wakes the probes waiting for it.
struct Done(Arc<HealthCache>);

impl Drop for Done {
    fn drop(&mut self) {
        self.0.refreshing.store(false, Ordering::Release);
        self.0.refreshed.notify_waiters();
    }
}
