//! The key cache seen through the API: concurrent misses and an outage. The expiry
//! rules themselves are unit tests of `src/cache.rs`, on paused time.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_read_the_keystore_once() {
    let store = Arc::new(Switch::default());
    let s = start_with(store.clone(), keyhost_server::CacheExpiry::default()).await;
    let admin = s.admin();
    s.call(&admin, "POST", "/v1/key/create/hot", None).await;
    let calls = (0..16).map(|_| s.call(&admin, "POST", "/v1/key/generate/hot", None));
    for (status, body) in futures::future::join_all(calls).await {
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(store.gets.load(std::sync::atomic::Ordering::SeqCst), 1);
}

/// Polls `GET path` until `done` holds for its status and body, for at most 10 s.
async fn until(s: &Server, client: &reqwest::Client, path: &str, done: impl Fn(u16, &str) -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (status, body) = s.call(client, "GET", path, None).await;
        if done(status, &body) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{path} stayed {status} {body}");
        tokio::time::sleep(ms(20)).await;
    }
}

/// In an outage with offline mode on, the API serves cached keys past their
/// expiry, refuses the others with KES's 502, and reports the outage in `/v1/ready` and `/v1/status`;
/// when the keystore is back, so is everything else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_serves_cached_keys_and_is_reported() {
    let store = Arc::new(Switch::default());
    let expiry = keyhost_server::CacheExpiry {
        any: ms(200),
        unused: ms(200),
        offline: ms(60_000),
        probe: ms(50),
    };
    let s = start_with(store.clone(), expiry).await;
    let admin = s.admin();
    s.call(&admin, "POST", "/v1/key/create/cached", None).await;
    s.call(&admin, "POST", "/v1/key/create/cold", None).await;
    assert_eq!(s.call(&admin, "POST", "/v1/key/generate/cached", None).await.0, 200);

    store.down.store(true, std::sync::atomic::Ordering::SeqCst);
    // The probe (every 50 ms) notices the outage.
    until(&s, &admin, "/v1/status", |_, body| {
        body.contains(r#""keystore_unreachable":true"#)
    })
    .await;
    let (status, body) = s.call(&admin, "GET", "/v1/ready", None).await;
    assert_eq!((status, message(&body).as_str()), (504, "key store is not reachable"));
    // Long past `any` and `unused`, the cached key is still served while offline.
    tokio::time::sleep(ms(500)).await;
    let (status, body) = s.call(&admin, "POST", "/v1/key/generate/cached", None).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = s.call(&admin, "POST", "/v1/key/generate/cold", None).await;
    assert_eq!((status, message(&body).as_str()), (502, "failed to read key"));
    let (_, body) = s.call(&admin, "GET", "/v1/status", None).await;
    let st: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (st["keystore_unreachable"].clone(), st["keystore_unavailable"].clone()),
        (json!(true), json!(true))
    );

    store.down.store(false, std::sync::atomic::Ordering::SeqCst);
    until(&s, &admin, "/v1/ready", |status, _| status == 200).await;
    assert_eq!(s.call(&admin, "POST", "/v1/key/generate/cold", None).await.0, 200);
}
