//! What the server tells about itself: status, version, api, metrics, and the
//! audit and error streams.

use super::*;

#[tokio::test]
async fn status_version_and_api() {
    let s = start(|_| {}).await;
    let admin = s.admin();
    let (status, body) = s.call(&admin, "GET", "/v1/status", None).await;
    assert_eq!(status, 200);
    let st: Value = serde_json::from_str(&body).unwrap();
    assert!(st["keystore_latency"].as_u64().unwrap() >= 1);
    assert!(st.get("keystore_unreachable").is_none());
    let (status, body) = s.call(&s.app(), "GET", "/version", None).await;
    assert_eq!(status, 200, "no policy needed for /version");
    assert!(serde_json::from_str::<Value>(&body).unwrap()["version"].is_string());
    let (_, body) = s.call(&admin, "GET", "/v1/api", None).await;
    let routes: Vec<Value> = serde_json::from_str(&body).unwrap();
    assert!(
        routes
            .iter()
            .any(|r| r["path"] == "/v1/key/decrypt/" && r["method"] == "PUT" && r["max_body"] == 1_000_000)
    );
    assert_eq!(s.call(&admin, "GET", "/v1/ready", None).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_with_kes_names() {
    let s = start(|_| {}).await;
    let admin = s.admin();
    for path in ["/v1/key/create/a", "/v1/key/create/b", "/v1/key/generate/a"] {
        assert_eq!(s.call(&admin, "POST", path, None).await.0, 200);
    }
    assert_eq!(s.call(&admin, "POST", "/v1/key/generate/missing", None).await.0, 404);
    assert_eq!(
        s.call(&admin, "GET", "/v1/status", None).await.0,
        200,
        "not counted, like KES"
    );
    let text = s.metrics(&admin).await;
    for line in [
        "kes_http_request_success{code=\"200\"} 3",
        "kes_http_request_error{code=\"404\"} 1",
        "kes_http_response_time_count 4",
        "# TYPE kes_http_request_success counter",
        "# TYPE kes_http_response_time histogram",
        "kes_system_num_cpu ",
        "kes_system_up_time ",
        // Like KES, the metrics request itself is not an active request.
        "kes_http_request_active 0",
        "keyhost_keystore_operations{op=\"create\",result=\"ok\"} 2",
        "keyhost_keystore_operations{op=\"get\",result=\"not_found\"} 1",
        "# TYPE keyhost_keystore_latency_seconds histogram",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
}

/// A KES client (no Prometheus `Accept`) gets KES's families only, in its era's
/// shape: KES v0.16's client and kms-go refuse a family of more than one series
/// (`kes: server response contains more than one metric`), which keyhost's own
/// labelled families and, in v0.16, labelled request counters would be.
#[tokio::test]
async fn kes_clients_get_only_kes_metric_families() {
    for era in [keyhost_server::Era::Newest, keyhost_server::Era::V016] {
        let s = start(|state| state.era = era).await;
        let admin = s.admin();
        assert_eq!(s.call(&admin, "POST", "/v1/key/create/a", None).await.0, 200);
        assert_eq!(s.call(&admin, "POST", "/v1/key/create/a", None).await.0, 400);
        let (status, text) = s.call(&admin, "GET", "/v1/metrics", None).await;
        assert_eq!(status, 200);
        assert!(
            !text.contains("keyhost_"),
            "{era:?}: keyhost's families reached a KES client:\n{text}"
        );
        let mut series: std::collections::BTreeMap<&str, usize> = Default::default();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            if !line.contains("le=\"") {
                *series.entry(family).or_default() += usize::from(!name.ends_with("_sum") && !name.ends_with("_count"));
            }
        }
        match era {
            keyhost_server::Era::V016 => {
                assert!(text.contains("kes_http_request_success 1\n"), "{text}");
                assert!(text.contains("kes_http_request_error 1\n"), "{text}");
                assert!(text.contains("kes_http_request_failure 0\n"), "{text}");
                assert!(!text.contains("kes_system_num_cpu"), "not in v0.16.1:\n{text}");
                for (family, n) in &series {
                    assert!(*n <= 1, "{family} has {n} series:\n{text}");
                }
            }
            keyhost_server::Era::Newest => {
                assert!(text.contains("kes_http_request_error{code=\"400\"} 1"), "{text}");
                for family in [
                    "kes_system_num_threads",
                    "kes_system_mem_heap_used",
                    "kes_system_num_cpu_used",
                ] {
                    assert!(
                        text.contains(&format!("# TYPE {family} gauge")),
                        "{family} missing:\n{text}"
                    );
                }
            }
        }
        let all = s.metrics(&admin).await;
        assert!(
            all.contains("keyhost_keystore_operations"),
            "Prometheus gets everything:\n{all}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_subscribers_see_every_request_as_it_happens() {
    let s = start(|_| {}).await;
    let admin = s.admin();
    let resp = admin.get(format!("{}/v1/log/audit", s.url)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/x-ndjson");
    s.call(&admin, "POST", "/v1/key/create/audited", None).await;
    s.call(&s.app(), "POST", "/v1/key/create/app-x", None).await;
    let events = lines(resp, 2).await;
    assert_eq!(events[0]["request"]["path"], "/v1/key/create/audited");
    assert_eq!(events[0]["request"]["identity"], s.creds.admin.identity().as_str());
    assert_eq!(events[0]["response"]["code"], 200);
    assert_eq!(events[1]["request"]["identity"], s.app.identity().as_str());
    assert_eq!(events[1]["response"]["code"], 403);
    assert!(events[0]["time"].as_str().unwrap().ends_with('Z'));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_subscribers_see_keystore_failures() {
    let store = Arc::new(Switch::default());
    let s = start_with(store.clone(), keyhost_server::CacheExpiry::default()).await;
    let admin = s.admin();
    let resp = admin.get(format!("{}/v1/log/error", s.url)).send().await.unwrap();
    store.down.store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(s.call(&admin, "POST", "/v1/key/create/k", None).await.0, 502);
    let events = lines(resp, 1).await;
    let message = events[0]["message"].as_str().unwrap();
    assert!(
        message.contains("/v1/key/create/k") && message.contains("switched off"),
        "{message}"
    );
}

/// KES v0.16's `/v1/log/*/trace` names stream the same events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v016_trace_routes_stream_events() {
    let s = start(|state| state.era = keyhost_server::Era::V016).await;
    let admin = s.admin();
    let audit = admin.get(format!("{}/v1/log/audit/trace", s.url)).send().await.unwrap();
    assert_eq!(audit.status(), 200);
    let errors = admin.get(format!("{}/v1/log/error/trace", s.url)).send().await.unwrap();
    assert_eq!(errors.status(), 200);
    s.call(&admin, "POST", "/v1/key/create/traced", None).await;
    // As in KES v0.16, a stream is audited when its answer starts: the subscriber
    // sees its own subscription first.
    let events = lines(audit, 3).await;
    let paths: Vec<_> = events.iter().map(|e| e["request"]["path"].as_str().unwrap()).collect();
    assert_eq!(
        paths,
        ["/v1/log/audit/trace", "/v1/log/error/trace", "/v1/key/create/traced"]
    );
    // The app identity may not subscribe.
    let (status, _) = s.call(&s.app(), "GET", "/v1/log/audit/trace", None).await;
    assert_eq!(status, 403);
    drop(errors);
}
