//! The server's own routes: version, readiness, status, metrics and the route list.

use std::time::Duration;

use http::{HeaderValue, Response, header};
use serde_json::{Value, json};

use super::respond::{GO_TEXT, empty, full, ok, typed};
use super::routes::ROUTES;
use super::{Answer, Call};
use crate::era::Era;
use crate::error::ApiError;
use crate::health::Readiness;

pub(super) fn version(call: &Call<'_>) -> Answer {
    if call.state.era == Era::V016 {
        // KES v0.16 printed `{"version":"…"}` as text, without a content type of its own.
        return Ok(typed(
            format!("{{\"version\":\"{}\"}}", env!("CARGO_PKG_VERSION")).into_bytes(),
            GO_TEXT,
        ));
    }
    ok(&json!({ "version": env!("CARGO_PKG_VERSION"), "commit": "" }))
}

pub(super) async fn ready(call: &Call<'_>) -> Answer {
    let state = call.state;
    if state.cache.is_offline() {
        return Err(ApiError::StoreUnreachable);
    }
    // The last known status, never a wait behind key reads (see `health`).
    match state.health.readiness(&state.keystore).await {
        Readiness::Ready => empty(),
        Readiness::Unreachable => Err(ApiError::StoreUnreachable),
        Readiness::Unavailable => Err(ApiError::StoreUnavailable),
    }
}

pub(super) async fn status(call: &Call<'_>) -> Answer {
    let state = call.state;
    if state.era == Era::V016 {
        // KES v0.16: durations in nanoseconds (whole seconds), and the server
        // certificate's expiry and names.
        let secs = |d: Duration| d.as_secs().saturating_mul(1_000_000_000);
        let mut certificate = json!({ "expiry": 0 });
        if let Some(cert) = &state.certificate {
            let left = (cert.not_after - time::OffsetDateTime::now_utc()).max(time::Duration::ZERO);
            certificate["expiry"] = json!(secs(left.try_into().unwrap_or_default()));
            if !cert.dns.is_empty() {
                certificate["dns"] = json!(cert.dns);
            }
            if !cert.ips.is_empty() {
                certificate["ip"] = json!(cert.ips);
            }
        }
        let status = json!({
            "version": env!("CARGO_PKG_VERSION"),
            "uptime": secs(state.started.elapsed()),
            "certificate": certificate,
        });
        let mut body = serde_json::to_vec(&status).unwrap_or_default();
        body.push(b'\n');
        return Ok(typed(body, "application/json"));
    }
    let health = if state.cache.is_offline() {
        Err(keyhost_keystore::Error::Unavailable("offline".into()))
    } else {
        state.keystore.status().await
    };
    let mut status = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "os": std::env::consts::OS,
        "arch": go_arch(),
        "uptime": state.started.elapsed().as_secs(),
        "num_cpu": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "num_cpu_used": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "mem_heap_used": 0,
        "mem_stack_used": 0,
    });
    match health {
        Ok(h) => status["keystore_latency"] = json!(h.latency.as_millis().max(1) as u64),
        Err(_) => {
            // kms-go refuses `keystore_unreachable` without `keystore_unavailable`.
            status["keystore_unreachable"] = json!(true);
            status["keystore_unavailable"] = json!(true);
        }
    }
    ok(&status)
}

pub(super) fn metrics(call: &Call<'_>) -> Answer {
    let state = call.state;
    let text = state.observer.render(
        state.era,
        call.accepts.all_metrics,
        state.started.elapsed(),
        state.cache.len(),
        state.keystore.runtime_stats(),
    );
    let mut response = Response::new(full(text));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(response)
}

/// The routes this configuration serves, with their limits and deadlines.
pub(super) fn api(call: &Call<'_>) -> Answer {
    let state = call.state;
    let routes: Vec<Value> = ROUTES
        .iter()
        .filter(|r| r.served_in(state.era))
        .map(|r| {
            json!({ "method": r.method.as_str(), "path": r.path, "max_body": r.max_body, "timeout": state.timeout_of(r).as_secs() })
        })
        .collect();
    ok(&routes)
}

/// The machine's architecture as Go names it (`GOARCH`), which KES reports.
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "loongarch64" => "loong64",
        other => other,
    }
}
