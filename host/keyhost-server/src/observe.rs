//! What the server tells about itself: Prometheus metrics with KES's names, and the
//! audit and error event streams (stdout and `/v1/log/{audit,error}` subscribers).

use std::time::Duration;

use bytes::Bytes;
use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use tokio::sync::broadcast;

use crate::era::Era;

/// Counters, gauges and event channels of one server.
#[derive(Debug, Clone)]
pub struct Observer {
    /// Every metric: KES's and keyhost's own.
    registry: Registry,
    /// KES's metrics only, as the newest KES exposes them (kms-go reads them).
    kes_newest: Registry,
    /// KES's metrics only, as KES v0.16 exposed them: one series per family, which
    /// its client requires.
    kes_v016: Registry,
    success: IntCounterVec,
    error: IntCounterVec,
    failure: IntCounterVec,
    /// The request counters without their `code` label (KES v0.16).
    v016_counts: [IntCounter; 3],
    active: IntGauge,
    response_time: Histogram,
    error_events: IntCounter,
    audit_events: IntCounter,
    audit_dropped: IntCounter,
    up_time: IntGauge,
    cached_keys: IntGauge,
    /// KES's system gauges besides `num_cpu`: CPUs used, threads, heap bytes and
    /// objects, stack bytes (set when metrics are read).
    system: [IntGauge; 5],
    plugin: [IntGauge; 5],
    audit: broadcast::Sender<Bytes>,
    errors: broadcast::Sender<Bytes>,
    /// Where audit events are written besides `/v1/log/audit` subscribers
    /// (`log.audit: on` writes them to stdout).
    pub audit_log: Option<crate::audit::AuditWriter>,
    /// Refuse requests while `audit_log` cannot be written (`log.audit: required`).
    pub audit_required: bool,
}

/// An audit event as KES writes it, fields in KES's order.
#[derive(serde::Serialize)]
struct AuditEvent<'a> {
    time: &'a str,
    request: AuditRequest<'a>,
    response: AuditResponse,
}

#[derive(serde::Serialize)]
struct AuditRequest<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    ip: Option<std::net::IpAddr>,
    path: &'a str,
    identity: &'a str,
    /// The trusted TLS proxy the request came through (keyhost's own field).
    #[serde(skip_serializing_if = "Option::is_none")]
    proxy: Option<&'a str>,
}

#[derive(serde::Serialize)]
struct AuditResponse {
    code: u16,
    /// Milliseconds (newest) or nanoseconds (v0.16).
    time: u64,
}

fn must<T>(r: prometheus::Result<T>) -> T {
    // Only a name clash or a malformed name fails, and both are fixed below.
    r.expect("metric definitions are valid and unique")
}

impl Default for Observer {
    fn default() -> Self {
        let registry = Registry::new();
        let kes_newest = Registry::new();
        let kes_v016 = Registry::new();
        let counter_vec = |name: &str, help: &str| {
            let c = must(IntCounterVec::new(Opts::new(name, help), &["code"]));
            must(registry.register(Box::new(c.clone())));
            c
        };
        let counter = |name: &str, help: &str| {
            let c = must(IntCounter::new(name, help));
            must(registry.register(Box::new(c.clone())));
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = must(IntGauge::new(name, help));
            must(registry.register(Box::new(g.clone())));
            g
        };
        let response_time = must(Histogram::with_opts(
            HistogramOpts::new(
                "kes_http_response_time",
                "Histogram of request response times spawning from 10ms to 10s.",
            )
            .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 3.0, 5.0, 10.0]),
        ));
        must(registry.register(Box::new(response_time.clone())));
        let num_cpu = gauge("kes_system_num_cpu", "Number of available CPUs.");
        num_cpu.set(std::thread::available_parallelism().map_or(1, |n| n.get()) as i64);
        let this = Self {
            success: counter_vec(
                "kes_http_request_success",
                "Number of requests that have been served successfully.",
            ),
            error: counter_vec(
                "kes_http_request_error",
                "Number of request that failed due to some error. (HTTP 4xx status code)",
            ),
            failure: counter_vec(
                "kes_http_request_failure",
                "Number of request that failed due to some internal failure. (HTTP 5xx status code)",
            ),
            active: gauge(
                "kes_http_request_active",
                "Number of active requests that are not finished, yet.",
            ),
            response_time,
            error_events: counter(
                "kes_log_error_events",
                "Number of error log events written to error log targets.",
            ),
            audit_events: counter(
                "kes_log_audit_events",
                "Number of audit log events written to audit log targets.",
            ),
            audit_dropped: counter(
                "keyhost_log_audit_dropped",
                "Audit lines dropped because the audit log was not being read or could not be written.",
            ),
            up_time: gauge(
                "kes_system_up_time",
                "The time the server has been up and running in seconds.",
            ),
            cached_keys: gauge("keyhost_cache_keys", "Number of keys in the key cache."),
            system: [
                gauge(
                    "kes_system_num_cpu_used",
                    "The number of logical CPUs usable by the server. It may be smaller than the number of available CPUs.",
                ),
                gauge("kes_system_num_threads", "The number of threads of the server process."),
                gauge(
                    "kes_system_mem_heap_used",
                    "The resident memory of the server process in bytes (keyhost has no garbage-collected heap).",
                ),
                gauge(
                    "kes_system_mem_heap_objects",
                    "Always 0: keyhost has no garbage-collected heap to count objects on.",
                ),
                gauge(
                    "kes_system_mem_stack_used",
                    "Always 0: keyhost does not measure stack memory apart.",
                ),
            ],
            plugin: [
                gauge(
                    "keyhost_plugin_instances_started",
                    "Plugin instances started since the keystore was loaded.",
                ),
                gauge(
                    "keyhost_plugin_instances_discarded",
                    "Plugin instances discarded (trap, deadline, memory limit, recycle).",
                ),
                gauge("keyhost_plugin_traps", "Plugin calls that trapped."),
                gauge("keyhost_plugin_timeouts", "Plugin calls that missed their deadline."),
                gauge(
                    "keyhost_plugin_memory_exhausted",
                    "Plugin calls that hit the memory limit.",
                ),
            ],
            v016_counts: [
                IntCounter::new(
                    "kes_http_request_success",
                    "Number of requests that have been served successfully.",
                ),
                IntCounter::new(
                    "kes_http_request_error",
                    "Number of request that failed due to some error. (HTTP 4xx status code)",
                ),
                IntCounter::new(
                    "kes_http_request_failure",
                    "Number of request that failed due to some internal failure. (HTTP 5xx status code)",
                ),
            ]
            .map(must),
            registry,
            kes_newest,
            kes_v016,
            audit: broadcast::channel(1024).0,
            errors: broadcast::channel(1024).0,
            audit_log: None,
            audit_required: false,
        };
        // KES's families, per era.
        for c in [&this.success, &this.error, &this.failure] {
            must(this.kes_newest.register(Box::new(c.clone())));
        }
        for c in &this.v016_counts {
            must(this.kes_v016.register(Box::new(c.clone())));
        }
        for r in [&this.kes_newest, &this.kes_v016] {
            must(r.register(Box::new(this.active.clone())));
            must(r.register(Box::new(this.response_time.clone())));
            must(r.register(Box::new(this.error_events.clone())));
            must(r.register(Box::new(this.audit_events.clone())));
            must(r.register(Box::new(this.up_time.clone())));
        }
        must(this.kes_newest.register(Box::new(num_cpu)));
        for g in &this.system {
            must(this.kes_newest.register(Box::new(g.clone())));
        }
        this
    }
}

/// One finished request, for metrics and audit.
pub(crate) struct Finished<'a> {
    pub(crate) counted: bool,
    pub(crate) audited: bool,
    pub(crate) path: &'a str,
    pub(crate) identity: Option<&'a str>,
    pub(crate) proxy: Option<&'a str>,
    pub(crate) ip: std::net::IpAddr,
    pub(crate) status: u16,
    pub(crate) took: Duration,
}

impl Observer {
    /// Whether requests must be refused because the required audit log cannot be
    /// written (the last write failed; the next successful one lifts this).
    pub fn audit_failing(&self) -> bool {
        self.audit_required
            && self
                .audit_log
                .as_ref()
                .is_some_and(crate::audit::AuditWriter::is_failing)
    }

    pub(crate) fn start_request(&self) {
        self.active.inc();
    }

    /// Counts a finished request and emits its audit event.
    pub(crate) fn finish_request(&self, era: Era, done: &Finished<'_>) {
        if done.counted {
            self.active.dec();
            let code = done.status.to_string();
            let (by_code, total) = match done.status {
                200..=299 => (&self.success, &self.v016_counts[0]),
                400..=499 => (&self.error, &self.v016_counts[1]),
                _ => (&self.failure, &self.v016_counts[2]),
            };
            by_code.with_label_values(&[&code]).inc();
            total.inc();
            self.response_time.observe(done.took.as_secs_f64());
        }
        if !done.audited {
            return;
        }
        if self.audit_log.is_none() && self.audit.receiver_count() == 0 {
            // KES v0.16 counted every audit event, written anywhere or not.
            if era == Era::V016 {
                self.audit_events.inc();
            }
            return;
        }
        let now = time::OffsetDateTime::now_utc();
        let (now, ip, took) = match era {
            Era::Newest => (now, Some(done.ip), done.took.as_millis() as u64),
            Era::V016 => (
                now.replace_nanosecond(0).unwrap_or(now),
                None,
                done.took.as_nanos() as u64,
            ),
        };
        let time = now
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let event = AuditEvent {
            time: &time,
            request: AuditRequest {
                ip,
                path: done.path,
                identity: done.identity.unwrap_or_default(),
                proxy: done.proxy,
            },
            response: AuditResponse {
                code: done.status,
                time: took,
            },
        };
        let mut line = Vec::with_capacity(256);
        if serde_json::to_writer(&mut line, &event).is_err() {
            return; // a struct of strings and numbers always serializes
        }
        line.push(b'\n');
        if let Some(log) = &self.audit_log {
            if self.audit_required {
                log.push_kept(&line);
            } else if !log.push(&line) {
                self.audit_dropped.inc();
            }
        }
        if self.audit.receiver_count() > 0 {
            let _ = self.audit.send(Bytes::from(line));
        }
        self.audit_events.inc();
    }

    /// Reports an error event: to the log and to `/v1/log/error` subscribers.
    pub(crate) fn error(&self, message: &str) {
        tracing::warn!("{message}");
        let mut line = serde_json::json!({ "message": message }).to_string();
        line.push('\n');
        let _ = self.errors.send(Bytes::from(line));
        self.error_events.inc();
    }

    pub(crate) fn subscribe_audit(&self) -> broadcast::Receiver<Bytes> {
        self.audit.subscribe()
    }

    pub(crate) fn subscribe_errors(&self) -> broadcast::Receiver<Bytes> {
        self.errors.subscribe()
    }

    pub(crate) fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The Prometheus text exposition (format 0.0.4). `all` gives keyhost's own
    /// families too (Prometheus asks for them, see [`Observer::wants_all`]); else
    /// only KES's, in the shape of `era`'s release, which KES clients parse
    /// strictly (KES v0.16's client refuses any family with more than one series).
    pub(crate) fn render(
        &self,
        era: Era,
        all: bool,
        uptime: Duration,
        cached_keys: usize,
        runtime: Option<keyhost_keystore::RuntimeStats>,
    ) -> Vec<u8> {
        self.up_time.set(uptime.as_secs() as i64);
        let (threads, resident) = process_usage();
        self.system[0].set(std::thread::available_parallelism().map_or(1, |n| n.get()) as i64);
        self.system[1].set(threads);
        self.system[2].set(resident);
        self.cached_keys.set(cached_keys as i64);
        if let Some(r) = runtime {
            let values = [
                r.instances_started,
                r.instances_discarded,
                r.traps,
                r.timeouts,
                r.memory_exhausted,
            ];
            for (gauge, value) in self.plugin.iter().zip(values) {
                gauge.set(i64::try_from(value).unwrap_or(i64::MAX));
            }
        }
        let mut out = Vec::new();
        let registry = match (all, era) {
            (true, _) => &self.registry,
            (false, Era::Newest) => &self.kes_newest,
            (false, Era::V016) => &self.kes_v016,
        };
        let _ = prometheus::Encoder::encode(&prometheus::TextEncoder::new(), &registry.gather(), &mut out);
        out
    }

    /// Whether a metrics request comes from a Prometheus scraper, which names the
    /// exposition formats it takes in `Accept` (KES clients send none).
    pub(crate) fn wants_all(accept: Option<&str>) -> bool {
        accept.is_some_and(|a| {
            a.contains("application/openmetrics-text")
                || a.contains("version=0.0.4")
                || a.contains("application/vnd.google.protobuf")
        })
    }
}

/// The process's thread count and resident bytes, from `/proc/self` (0 where
/// there is none).
fn process_usage() -> (i64, i64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(0)
    };
    (field("Threads:"), field("VmRSS:").saturating_mul(1024))
}
