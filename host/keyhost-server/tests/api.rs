//! The API over real mutual TLS: certificates minted per run, a real HTTP client.

#![expect(clippy::unwrap_used, reason = "Tests fail loudly by design")]

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use keyhost_keystore::MemStore;
use keyhost_policy::{ApiKey, Identity};
use keyhost_server::dev::client_certificate;
use serde_json::{Value, json};

mod common;
use common::{Server, message, start};

#[tokio::test]
async fn key_lifecycle_as_admin() {
    let s = start(|_| {}).await;
    let admin = s.admin();
    assert_eq!(
        s.call(&admin, "POST", "/v1/key/create/my-key", None).await,
        (200, String::new())
    );
    let (status, body) = s.call(&admin, "PUT", "/v1/key/create/my-key", None).await;
    assert_eq!((status, body.as_str()), (400, "{\"message\":\"key already exists\"\n}"));

    let (status, body) = s
        .call(
            &admin,
            "POST",
            "/v1/key/generate/my-key",
            Some(json!({"context": B64.encode("{}")})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let dek: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(B64.decode(dek["plaintext"].as_str().unwrap()).unwrap().len(), 32);
    let (status, body) = s
        .call(
            &admin,
            "POST",
            "/v1/key/decrypt/my-key",
            Some(json!({"ciphertext": dek["ciphertext"], "context": B64.encode("{}")})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["plaintext"],
        dek["plaintext"]
    );

    let (status, body) = s
        .call(
            &admin,
            "POST",
            "/v1/key/decrypt/my-key",
            Some(json!({"ciphertext": dek["ciphertext"], "context": B64.encode("other")})),
        )
        .await;
    assert_eq!(
        (status, message(&body).as_str()),
        (400, "decryption failed: ciphertext is not authentic")
    );

    let (status, body) = s
        .call(
            &admin,
            "PUT",
            "/v1/key/encrypt/my-key",
            Some(json!({"plaintext": B64.encode("hello")})),
        )
        .await;
    assert_eq!(status, 200);
    let ct = serde_json::from_str::<Value>(&body).unwrap()["ciphertext"].clone();
    let (_, body) = s
        .call(&admin, "PUT", "/v1/key/decrypt/my-key", Some(json!({"ciphertext": ct})))
        .await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["plaintext"],
        B64.encode("hello")
    );

    let (status, body) = s
        .call(
            &admin,
            "PUT",
            "/v1/key/hmac/my-key",
            Some(json!({"message": B64.encode("m")})),
        )
        .await;
    assert_eq!(status, 200);
    let (_, again) = s
        .call(
            &admin,
            "PUT",
            "/v1/key/hmac/my-key",
            Some(json!({"message": B64.encode("m")})),
        )
        .await;
    assert_eq!(body, again, "HMAC is deterministic");

    let (status, body) = s.call(&admin, "GET", "/v1/key/describe/my-key", None).await;
    assert_eq!(status, 200);
    let d: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(d["name"], "my-key");
    assert_eq!(d["created_by"], s.creds.admin.identity().as_str());

    s.call(&admin, "POST", "/v1/key/create/my-key2", None).await;
    s.call(&admin, "POST", "/v1/key/create/other", None).await;
    let (_, body) = s.call(&admin, "GET", "/v1/key/list/my*", None).await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"names": ["my-key", "my-key2"]})
    );
    let (_, body) = s.call(&admin, "GET", "/v1/key/list", None).await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["names"]
            .as_array()
            .unwrap()
            .len(),
        3
    );

    assert_eq!(s.call(&admin, "DELETE", "/v1/key/delete/my-key", None).await.0, 200);
    let (status, body) = s.call(&admin, "DELETE", "/v1/key/delete/my-key", None).await;
    assert_eq!((status, message(&body).as_str()), (404, "key does not exist"));
    let (status, body) = s.call(&admin, "POST", "/v1/key/generate/my-key", None).await;
    assert_eq!((status, message(&body).as_str()), (404, "key does not exist"));
}

#[tokio::test]
async fn bad_requests_get_kes_errors() {
    let s = start(|_| {}).await;
    let admin = s.admin();
    let (status, body) = s.call(&admin, "POST", "/v1/key/create/my.key", None).await;
    assert_eq!(
        (status, message(&body).as_str()),
        (
            400,
            "key name 'my.key' is empty, too long or contains invalid characters"
        )
    );
    let (status, _) = s.call(&admin, "POST", "/v1/key/create/", None).await;
    assert_eq!(status, 400);
    s.call(&admin, "POST", "/v1/key/create/k", None).await;
    let (status, body) = s
        .call(
            &admin,
            "POST",
            "/v1/key/decrypt/k",
            Some(json!({"ciphertext": "not base64!"})),
        )
        .await;
    assert_eq!((status, message(&body).as_str()), (400, "invalid request body"));
    let (status, body) = s
        .call(
            &admin,
            "POST",
            "/v1/key/decrypt/k",
            Some(json!({"ciphertext": B64.encode([0u8; 60])})),
        )
        .await;
    assert_eq!(
        (status, message(&body).as_str()),
        (400, "decryption failed: ciphertext is not authentic")
    );
    let (status, body) = s.call(&admin, "GET", "/v1/key/create/k", None).await;
    assert_eq!(
        (status, message(&body).as_str()),
        (405, "received method 'GET' expected 'PUT'")
    );
    let (status, body) = s.call(&admin, "GET", "/v1/nothing", None).await;
    assert_eq!((status, body.as_str()), (404, "404 page not found\n"));
    let (status, body) = s
        .call(
            &admin,
            "PUT",
            "/v1/key/import/i",
            Some(json!({"key": B64.encode([1u8; 16]), "cipher": "AES256"})),
        )
        .await;
    assert_eq!(
        (status, message(&body).as_str()),
        (406, "invalid key size for 'AES256'")
    );
    let (status, body) = s
        .call(
            &admin,
            "PUT",
            "/v1/key/import/i",
            Some(json!({"key": B64.encode([1u8; 32]), "cipher": "DES"})),
        )
        .await;
    assert_eq!(
        (status, message(&body).as_str()),
        (406, "algorithm 'DES' is not supported")
    );
    let big = "A".repeat(1_000_001);
    let (status, _) = s
        .call(&admin, "PUT", "/v1/key/encrypt/k", Some(json!({ "plaintext": big })))
        .await;
    assert_eq!(status, 400);
}

/// §11.4: a key imported the v0.16 way decrypts what KES v0.16 encrypted.
#[tokio::test]
async fn v016_imported_keys_decrypt_v016_ciphertexts() {
    let s = start(|state| state.era = keyhost_server::Era::V016).await;
    let admin = s.admin();
    let (status, body) = s
        .call(
            &admin,
            "POST",
            "/v1/key/import/legacy",
            Some(json!({"bytes": "Ocxv4Vf3eur17x6R0mO6P15KPj+L7h2qpe6ZxRy5eiE="})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let ct = "eyJhZWFkIjoiQUVTLTI1Ni1HQ00tSE1BQy1TSEEtMjU2IiwiaXYiOiJGd043WU04ZlVzU1loUFdzZVBmRUt3PT0iLCJub25jZSI6ImFoeG9GYmh1V0IzVHZma1oiLCJieXRlcyI6Im9rY241MUZwNUJsZEoxbGN3ZThLREJXZUhzZEhVQllaaUNkUWxrQXREak9rV1R6TlZvWW05ZEswRXRPZmw3MG1zNVZWSmxqdnZWNTF0VFFhSWFDK2NZTndUSjl5VXNYdHpkUUR2L0lKdHFvPSJ9";
    let (status, body) = s
        .call(
            &admin,
            "POST",
            "/v1/key/decrypt/legacy",
            Some(json!({"ciphertext": ct, "context": "Eb2sb9zyRPKXbgu5"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["plaintext"],
        "WKDdYkXJ21/HD9lNNBdbUJ3UuwoND/a7eC5bh+0Tbn2DeFSp5IzDe8bOgqK+7F7ortyViprO7Zwt5GF67/ooXQ=="
    );
}

#[tokio::test]
async fn policies_decide_what_an_identity_may_do() {
    let s = start(|_| {}).await;
    let (admin, app) = (s.admin(), s.app());
    s.call(&admin, "POST", "/v1/key/create/app-key", None).await;
    s.call(&admin, "POST", "/v1/key/create/app-secret", None).await;

    let (status, body) = s.call(&app, "POST", "/v1/key/create/app-new", None).await;
    assert_eq!(
        (status, message(&body).as_str()),
        (403, "not authorized: insufficient permissions")
    );
    assert_eq!(s.call(&app, "POST", "/v1/key/generate/app-key", None).await.0, 200);
    assert_eq!(s.call(&app, "GET", "/v1/key/describe/app-key", None).await.0, 200);
    assert_eq!(
        s.call(&app, "GET", "/v1/key/describe/app-secret", None).await.0,
        403,
        "deny wins"
    );
    // Denied before existence is checked.
    assert_eq!(s.call(&app, "DELETE", "/v1/key/delete/missing", None).await.0, 403);
    assert_eq!(s.call(&app, "GET", "/v1/status", None).await.0, 403);

    let (status, body) = s.call(&app, "GET", "/v1/identity/self/describe", None).await;
    assert_eq!(status, 200);
    let me: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(me["identity"], s.app.identity().as_str());
    assert_eq!(me["policy"], "app");
    assert!(me["allow"].get("/v1/key/generate/app-*").is_some());

    let (status, body) = s.call(&admin, "GET", "/v1/policy/read/app", None).await;
    assert_eq!(status, 200);
    assert!(
        serde_json::from_str::<Value>(&body).unwrap()["deny"]
            .get("/v1/key/describe/app-secret")
            .is_some()
    );
    let (_, body) = s.call(&admin, "GET", "/v1/identity/list", None).await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["identities"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let (status, _) = s
        .call(
            &admin,
            "GET",
            &format!("/v1/identity/describe/{}", s.app.identity()),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let stranger = Identity::parse(&"c".repeat(64)).unwrap();
    let (status, _) = s
        .call(&admin, "GET", &format!("/v1/identity/describe/{stranger}"), None)
        .await;
    assert_eq!(status, 404);
}

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

#[tokio::test]
async fn a_client_without_a_certificate_is_refused_in_the_handshake() {
    let s = start(|_| {}).await;
    let anonymous = s.client_for(None);
    let result = anonymous.get(format!("{}/version", s.url)).send().await;
    assert!(result.is_err(), "{result:?}");
}

/// Runs a shell command and returns its stdout.
fn sh(command: &str) -> Vec<u8> {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{command}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Client certificates made by OpenSSL with RSA, ECDSA and Ed25519 keys connect, and
/// the identity the server computes equals OpenSSL's own
/// `x509 -pubkey | pkey -pubin -outform DER | sha256sum`, as the KES docs compute it.
#[tokio::test]
async fn identities_of_openssl_certificates_of_every_key_type() {
    let s = start(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    for (name, algorithm) in [
        ("rsa", "RSA -pkeyopt rsa_keygen_bits:2048"),
        ("ec", "EC -pkeyopt ec_paramgen_curve:P-256"),
        ("ed", "ED25519"),
    ] {
        // An end-entity certificate (version 3, CA:FALSE).
        sh(&format!(
            "openssl genpkey -algorithm {algorithm} -out {d}/{name}.key 2>/dev/null && \
             openssl req -new -key {d}/{name}.key -subj /CN={name} -out {d}/{name}.csr && \
             echo basicConstraints=CA:FALSE > {d}/ext && \
             openssl x509 -req -in {d}/{name}.csr -signkey {d}/{name}.key -extfile {d}/ext -days 1 -out {d}/{name}.crt 2>/dev/null"
        ));
        let expected = String::from_utf8(sh(&format!(
            "openssl x509 -in {d}/{name}.crt -pubkey -noout | openssl pkey -pubin -outform DER | sha256sum | cut -d' ' -f1"
        )))
        .unwrap();
        let cert = std::fs::read_to_string(format!("{d}/{name}.crt")).unwrap();
        let key = std::fs::read_to_string(format!("{d}/{name}.key")).unwrap();
        let client = s.client_for(Some((&cert, &key)));
        let (status, body) = s.call(&client, "GET", "/v1/identity/self/describe", None).await;
        assert_eq!(status, 200, "{name}: {body}");
        let me: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(me["identity"].as_str().unwrap(), expected.trim(), "{name}");
        assert_eq!(me["admin"], false);
    }
    // `req -x509` marks the certificate as a CA. It is still the client's own (its
    // key signed the handshake), so it names the client, as in KES v0.16.1.
    sh(&format!(
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout {d}/ca.key -out {d}/ca.crt -subj /CN=ca -days 1 2>/dev/null"
    ));
    let expected = String::from_utf8(sh(&format!(
        "openssl x509 -in {d}/ca.crt -pubkey -noout | openssl pkey -pubin -outform DER | sha256sum | cut -d' ' -f1"
    )))
    .unwrap();
    let cert = std::fs::read_to_string(format!("{d}/ca.crt")).unwrap();
    let key = std::fs::read_to_string(format!("{d}/ca.key")).unwrap();
    let (status, body) = s
        .call(
            &s.client_for(Some((&cert, &key))),
            "GET",
            "/v1/identity/self/describe",
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["identity"]
            .as_str()
            .unwrap(),
        expected.trim()
    );
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_keys_expire() {
    let store = Arc::new(Switch::default());
    let expiry = keyhost_server::CacheExpiry {
        any: ms(300),
        unused: std::time::Duration::ZERO,
        offline: std::time::Duration::ZERO,
        probe: ms(3_600_000),
    };
    let s = start_with(store.clone(), expiry).await;
    let admin = s.admin();
    s.call(&admin, "POST", "/v1/key/create/k", None).await;
    assert_eq!(s.call(&admin, "POST", "/v1/key/generate/k", None).await.0, 200);
    // Deleted behind the server's back (another node): still served from the cache ...
    keyhost_keystore::Keystore::delete(&store.inner, "k").await.unwrap();
    assert_eq!(s.call(&admin, "POST", "/v1/key/generate/k", None).await.0, 200);
    // ... until `any` expires it.
    tokio::time::sleep(ms(700)).await;
    assert_eq!(s.call(&admin, "POST", "/v1/key/generate/k", None).await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_mode_serves_cached_keys_and_recovers() {
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
    tokio::time::sleep(ms(200)).await;
    // Long past `any` and `unused`: the cached key keeps working while offline.
    for _ in 0..3 {
        tokio::time::sleep(ms(150)).await;
        let (status, body) = s.call(&admin, "POST", "/v1/key/generate/cached", None).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = s.call(&admin, "POST", "/v1/key/generate/cold", None).await;
    assert_eq!((status, message(&body).as_str()), (502, "failed to read key"));
    let (status, body) = s.call(&admin, "GET", "/v1/ready", None).await;
    assert_eq!((status, message(&body).as_str()), (504, "key store is not reachable"));
    let (_, body) = s.call(&admin, "GET", "/v1/status", None).await;
    let st: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (st["keystore_unreachable"].clone(), st["keystore_unavailable"].clone()),
        (json!(true), json!(true))
    );

    store.down.store(false, std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(ms(200)).await;
    assert_eq!(s.call(&admin, "GET", "/v1/ready", None).await.0, 200);
    assert_eq!(s.call(&admin, "POST", "/v1/key/generate/cold", None).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_offline_mode_keys_expire_during_an_outage() {
    let store = Arc::new(Switch::default());
    let expiry = keyhost_server::CacheExpiry {
        any: ms(200),
        unused: std::time::Duration::ZERO,
        offline: std::time::Duration::ZERO,
        probe: ms(50),
    };
    let s = start_with(store.clone(), expiry).await;
    let admin = s.admin();
    s.call(&admin, "POST", "/v1/key/create/k", None).await;
    assert_eq!(s.call(&admin, "POST", "/v1/key/generate/k", None).await.0, 200);
    store.down.store(true, std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(ms(500)).await;
    assert_eq!(s.call(&admin, "POST", "/v1/key/generate/k", None).await.0, 502);
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

/// KES v0.16 clients list keys as NDJSON, with a glob, and read the result from
/// trailers.
#[tokio::test]
async fn v016_clients_get_ndjson_listings() {
    let s = start(|state| state.era = keyhost_server::Era::V016).await;
    let admin = s.admin();
    for name in ["my-key", "my-key2", "other"] {
        s.call(&admin, "POST", &format!("/v1/key/create/{name}"), None).await;
    }
    // Whatever the request accepts, as KES v0.16.1 answered.
    let resp = admin
        .get(format!("{}/v1/key/list/my-*", s.url))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/x-ndjson");
    assert_eq!(resp.headers()["trailer"], "Status,Error");
    let body = resp.text().await.unwrap();
    assert_eq!(body, "{\"Name\":\"my-key\"}\n{\"Name\":\"my-key2\"}\n");
    // The v0.16 CLI escapes the star.
    let resp = admin
        .get(format!("{}/v1/key/list/%2A", s.url))
        .header("accept", "application/x-ndjson")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.text().await.unwrap().lines().count(), 3);
}

/// KES v0.16's `tls.proxy`: a trusted TLS-terminating proxy names the real client in
/// a header; anyone else's header is ignored.
#[tokio::test]
async fn a_trusted_proxy_forwards_the_client_certificate() {
    let proxy_key = ApiKey::from_seed([5; 32]);
    let proxy_identity = proxy_key.identity();
    let s = start(move |state| {
        state.proxy = Some(keyhost_server::Proxy {
            identities: vec![proxy_identity],
            header: http::HeaderName::from_static("x-tls-client-cert"),
        });
    })
    .await;
    let (proxy_cert, proxy_private) = client_certificate(&proxy_key).unwrap();
    let proxy = s.client_for(Some((&proxy_cert, &proxy_private)));
    let escaped: String = s.creds.admin_cert_pem.bytes().map(|b| format!("%{b:02X}")).collect();
    let who = |client: &reqwest::Client, header: Option<&str>| {
        let mut req = client.get(format!("{}/v1/identity/self/describe", s.url));
        if let Some(h) = header {
            req = req.header("X-Tls-Client-Cert", h);
        }
        async move {
            let resp = req.send().await.unwrap();
            (resp.status().as_u16(), resp.text().await.unwrap())
        }
    };
    let (status, body) = who(&proxy, Some(&escaped)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["identity"],
        s.creds.admin.identity().as_str()
    );
    let (status, body) = who(&proxy, None).await;
    assert_eq!(
        (status, message(&body).as_str()),
        (400, "no client certificate is present")
    );
    let (status, body) = who(&proxy, Some("garbage")).await;
    assert_eq!(status, 400, "{body}");
    let twice = format!("{escaped}{escaped}");
    let (status, body) = who(&proxy, Some(&twice)).await;
    assert_eq!(
        (status, message(&body).as_str()),
        (400, "too many client certificates are present")
    );
    // A client that is not a trusted proxy cannot borrow an identity.
    let (status, body) = who(&s.app(), Some(&escaped)).await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["identity"],
        s.app.identity().as_str()
    );
}

/// KES v0.16's policy and identity routes, as its `kes policy add` and
/// `kes identity assign|forget` use them.
#[tokio::test]
async fn v016_clients_change_policies_and_assignments() {
    let s = start(|state| state.era = keyhost_server::Era::V016).await;
    let (admin, app) = (s.admin(), s.app());
    let app_id = s.app.identity();
    s.call(&admin, "POST", "/v1/key/create/shared", None).await;
    let (status, body) = s.call(&app, "POST", "/v1/key/generate/shared", Some(json!({}))).await;
    assert_eq!((status, message(&body).as_str()), (403, "prohibited by policy"));

    let written = json!({"allow": ["/v1/key/generate/*"], "deny": []});
    assert_eq!(
        s.call(&admin, "POST", "/v1/policy/write/gen", Some(written)).await.0,
        200
    );
    let (status, body) = s.call(&admin, "GET", "/v1/policy/read/gen", None).await;
    assert_eq!(
        (status, serde_json::from_str::<Value>(&body).unwrap()),
        (200, json!({"allow": ["/v1/key/generate/*"], "deny": []}))
    );
    let (_, body) = s.call(&admin, "GET", "/v1/policy/list/*", None).await;
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap(), json!(["app", "gen"]));

    assert_eq!(
        s.call(&admin, "POST", &format!("/v1/identity/assign/gen/{app_id}"), None)
            .await
            .0,
        200
    );
    assert_eq!(
        s.call(&app, "POST", "/v1/key/generate/shared", Some(json!({}))).await.0,
        200
    );
    let resp = admin.get(format!("{}/v1/identity/list/*", s.url)).send().await.unwrap();
    assert_eq!(
        resp.text().await.unwrap(),
        format!("{{\"identity\":\"{app_id}\",\"policy\":\"gen\"}}\n")
    );

    let admin_id = s.creds.admin.identity();
    let (status, body) = s
        .call(&admin, "POST", &format!("/v1/identity/assign/gen/{admin_id}"), None)
        .await;
    // KES v0.16's order: the admin is refused as the admin first.
    assert_eq!((status, message(&body).as_str()), (400, "identity is root"));
    let (status, body) = s
        .call(&admin, "DELETE", &format!("/v1/identity/forget/{admin_id}"), None)
        .await;
    assert_eq!((status, message(&body).as_str()), (400, "identity is root"));
    let (status, _) = s
        .call(&admin, "POST", &format!("/v1/identity/assign/nope/{app_id}"), None)
        .await;
    assert_eq!(status, 404);

    assert_eq!(
        s.call(&admin, "DELETE", &format!("/v1/identity/forget/{app_id}"), None)
            .await
            .0,
        200
    );
    assert_eq!(
        s.call(&app, "POST", "/v1/key/generate/shared", Some(json!({}))).await.0,
        403
    );
    assert_eq!(s.call(&admin, "DELETE", "/v1/policy/delete/gen", None).await.0, 200);
    assert_eq!(s.call(&admin, "GET", "/v1/policy/read/gen", None).await.0, 404);
    let (status, _) = s
        .call(&admin, "POST", "/v1/policy/write/bad", Some(json!({"allow": ["[a-"]})))
        .await;
    assert_eq!(status, 400, "malformed globs are refused");
}

/// 2022–2023 MinIO decrypts many object keys at once (§11.5 vectors).
#[tokio::test]
async fn bulk_decrypt() {
    let s = start(|_| {}).await;
    let admin = s.admin();
    let key = json!({"key": "pQLPe6/f87AMSItvZzEbrxYdRUzmM81ziXF95HOFE4Y=", "cipher": "AES256"});
    assert_eq!(s.call(&admin, "PUT", "/v1/key/import/gw", Some(key)).await.0, 200);
    let hello = "eyJhZWFkIjoiQUVTLTI1Ni1HQ00tSE1BQy1TSEEtMjU2IiwiaWQiOiI2MmNmMjEzMDY2OTI3MmYzOWY3ZGU2MDU4Y2YzNzEyMyIsIml2IjoiQkpDU2FRZ1MrMUovZ3ZhcWZNaXJYUT09Iiwibm9uY2UiOiJHZkllRHdSdjByRDBIYncrIiwiYnl0ZXMiOiIvNndhelRQbnREMHhra0w5RWFGWjduK0s5SEJhem5YaDlKYjcifQ==";
    let with_context = "eyJhZWFkIjoiQUVTLTI1Ni1HQ00tSE1BQy1TSEEtMjU2IiwiaWQiOiI2MmNmMjEzMDY2OTI3MmYzOWY3ZGU2MDU4Y2YzNzEyMyIsIml2IjoiR3pFcFI0am1JMWRWTzJsdXZvdG9xQT09Iiwibm9uY2UiOiJCV2c1eE54eU4yck9sLzV3IiwiYnl0ZXMiOiJmVXlycTI1Q3VDeEp4TW5XOXVZSSsrSjVsVzdGbVFtcmZpdEoifQ==";
    let ctx = B64.encode("Hello World Context");
    let body = json!([{"ciphertext": hello}, {"ciphertext": with_context, "context": ctx}]);
    let (status, out) = s.call(&admin, "POST", "/v1/key/bulk/decrypt/gw", Some(body)).await;
    assert_eq!(status, 200, "{out}");
    let hello_b64 = B64.encode("Hello World");
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap(),
        json!([{"plaintext": hello_b64}, {"plaintext": hello_b64}])
    );
    // Without its context the second one fails, and so does the whole request.
    let body = json!([{"ciphertext": hello}, {"ciphertext": with_context}]);
    let (status, out) = s.call(&admin, "POST", "/v1/key/bulk/decrypt/gw", Some(body)).await;
    assert_eq!(
        (status, message(&out).as_str()),
        (400, "decryption failed: ciphertext is not authentic")
    );
    let many: Vec<Value> = (0..1001).map(|_| json!({"ciphertext": hello})).collect();
    let (status, out) = s
        .call(&admin, "POST", "/v1/key/bulk/decrypt/gw", Some(Value::Array(many)))
        .await;
    assert_eq!((status, message(&out).as_str()), (400, "too many ciphertexts"));
}

/// Every key route answers a missing key with 404, and a key stored without an HMAC
/// key (by KES v0.16) with 409 on hmac (newest texts).
#[tokio::test]
async fn missing_keys_and_keys_without_hmac() {
    // A key as KES v0.16 stored it: no HMAC key.
    let s = start(|state| {
        let legacy = br#"{"bytes":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}"#;
        futures::executor::block_on(state.keystore.create("legacy", legacy)).unwrap();
    })
    .await;
    let admin = s.admin();
    let body = json!({"plaintext": "AAAA", "ciphertext": "AAAA", "message": "AAAA"});
    for (method, route) in [
        ("GET", "describe"),
        ("PUT", "encrypt"),
        ("PUT", "decrypt"),
        ("PUT", "hmac"),
        ("PUT", "generate"),
        ("DELETE", "delete"),
    ] {
        let (status, text) = s
            .call(&admin, method, &format!("/v1/key/{route}/missing"), Some(body.clone()))
            .await;
        assert_eq!(
            (status, text.as_str()),
            (404, "{\"message\":\"key does not exist\"\n}"),
            "{route}"
        );
    }
    let (status, text) = s
        .call(&admin, "PUT", "/v1/key/hmac/legacy", Some(json!({"message": "AAAA"})))
        .await;
    assert_eq!((status, message(&text).as_str()), (409, "key does not support HMAC"));
}

/// The newest shapes of the policy and identity routes, and listing patterns.
#[tokio::test]
async fn policy_and_identity_shapes() {
    let s = start(|_| {}).await;
    let admin = s.admin();
    let admin_id = s.creds.admin.identity();
    let (status, body) = s.call(&admin, "GET", "/v1/policy/describe/app", None).await;
    assert_eq!(status, 200, "{body}");
    let d: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (d["name"].as_str(), d["created_by"].as_str()),
        (Some("app"), Some(admin_id.as_str()))
    );
    assert!(d["created_at"].as_str().unwrap().ends_with('Z'));
    assert!(d.get("allow").is_none(), "describe has no rules: {body}");
    let (status, body) = s.call(&admin, "GET", "/v1/policy/describe/nope", None).await;
    assert_eq!((status, message(&body).as_str()), (404, "policy does not exist"));
    let (_, body) = s.call(&admin, "GET", "/v1/policy/list/a*", None).await;
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["names"], json!(["app"]));
    let (_, body) = s.call(&admin, "GET", "/v1/policy/list/x", None).await;
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["names"], json!([]));

    let (status, body) = s
        .call(&admin, "GET", &format!("/v1/identity/describe/{admin_id}"), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["admin"], true);
    let (status, body) = s.call(&admin, "GET", "/v1/identity/self/describe", None).await;
    assert_eq!(status, 200);
    let me: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (me["identity"].as_str(), me["admin"].as_bool()),
        (Some(admin_id.as_str()), Some(true))
    );
    let (status, body) = s.call(&admin, "GET", "/v1/identity/describe/not-hex", None).await;
    assert_eq!((status, message(&body).as_str()), (404, "identity does not exist"));

    // Listing patterns: `*` only at the end.
    let (status, body) = s.call(&admin, "GET", "/v1/key/list/a*b", None).await;
    assert_eq!(status, 400, "{body}");
}

/// A v0.16-style deployment gets v0.16's texts: 200 for deleting a missing key,
/// "invalid json", "invalid key", 405 "Method Not Allowed", and the decrypt errors
/// of KES v0.16's own test vectors.
#[tokio::test]
async fn v016_texts() {
    let s = start(|state| state.era = keyhost_server::Era::V016).await;
    let admin = s.admin();
    assert_eq!(s.call(&admin, "DELETE", "/v1/key/delete/missing", None).await.0, 200);
    let (status, body) = s.call(&admin, "GET", "/v1/key/create/k", None).await;
    assert_eq!((status, message(&body).as_str()), (405, "Method Not Allowed"));
    s.call(&admin, "POST", "/v1/key/create/k", None).await;
    let resp = admin
        .post(format!("{}/v1/key/encrypt/k", s.url))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "application/json; charset=utf-8");
    assert_eq!(
        (resp.status().as_u16(), resp.text().await.unwrap().as_str()),
        (400, "{\"message\":\"invalid json\"}")
    );
    let (status, body) = s
        .call(
            &admin,
            "POST",
            "/v1/key/import/short",
            Some(json!({"bytes": B64.encode([0u8; 16])})),
        )
        .await;
    assert_eq!((status, message(&body).as_str()), (400, "invalid key"));

    let zero = json!({"bytes": B64.encode([0u8; 32])});
    assert_eq!(s.call(&admin, "POST", "/v1/key/import/zero", Some(zero)).await.0, 200);
    for (ciphertext, status, text) in [
        (
            r#"{"aead":"AES-256-GCM-HMAC-SHA-256","iv":"xLxIN3tSCkg2xMafuvwUwg==","nonce":"gu0mGwUkwcvMEoi5","bytes":"WVgRjeIJm3w50C/l+y7y2i6mbNg5NCAqN1zvOYWZKmc="}"#,
            200,
            "",
        ),
        (
            r#"{"aead":"AES-256-GCM","iv":"xLxIN3tSCkg2xMafuvwUwg==","nonce":"gu0mGwUkwcvMEoi5","bytes":"WVgRjeIJm3w50C/l+y7y2i6mbNg5NCAqN1zvOYWZKmc="}"#,
            422,
            "unsupported cryptographic algorithm",
        ),
        (
            r#"{"aead":"AES-256-GCM-HMAC-SHA-256","iv":"EjOY4JKqjIrPmQ5z1KSR8zlhggY=","nonce":"gu0mGwUkwcvMEoi5","bytes":"WVgRjeIJm3w50C/l+y7y2i6mbNg5NCAqN1zvOYWZKmc="}"#,
            400,
            "invalid iv size",
        ),
        (
            r#"{"aead":"ChaCha20Poly1305","iv":"s3fSZ6vk5m+DfQA8yZWeUg==","nonce":"SXAbms731/c=","bytes":"cw22HjLq/4cx8507SW4hhSrYbDiMuRao4b5+GE+XfbE="}"#,
            400,
            "invalid nonce size",
        ),
        (
            r#"{"aead":"AES-256-GCM-HMAC-SHA-256","iv":"xLxIN3tSCkg2xMafuvwUwg==","nonce":"gu0mGwUkwcvMEoi5","bytes":"QTza1g5oX3f9cGJMbY1xJwWPj1F7R2VnNl6XpFKYQy0="}"#,
            400,
            "decryption failed: ciphertext is not authentic",
        ),
        (
            r#"{"aead":"AES-256-GCM-HMAC-SHA-256" "iv":"xLxIN3tSCkg2xMafuvwUwg==","nonce":"gu0mGwUkwcvMEoi5","bytes":"WVgRjeIJm3w50C/l+y7y2i6mbNg5NCAqN1zvOYWZKmc="}"#,
            400,
            "invalid ciphertext",
        ),
        (
            r#"{"aead":"AES-256-GCM-HMAC-SHA-256", "id":"00010203040506070809101112131415", "iv":"xLxIN3tSCkg2xMafuvwUwg==","nonce":"gu0mGwUkwcvMEoi5","bytes":"WVgRjeIJm3w50C/l+y7y2i6mbNg5NCAqN1zvOYWZKmc="}"#,
            400,
            "invalid ciphertext: key ID mismatch",
        ),
    ] {
        let (got, body) = s
            .call(
                &admin,
                "POST",
                "/v1/key/decrypt/zero",
                Some(json!({"ciphertext": B64.encode(ciphertext)})),
            )
            .await;
        if status == 200 {
            assert_eq!(got, 200, "{body}");
            assert_eq!(
                serde_json::from_str::<Value>(&body).unwrap()["plaintext"],
                B64.encode([0u8; 16])
            );
        } else {
            assert_eq!((got, message(&body).as_str()), (status, text), "{ciphertext}");
        }
    }
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

/// A v0.16 path whose last element is empty acts, as in KES v0.16, on the key named
/// after the route (`DELETE /v1/key/delete/` deletes the key `delete`). The policy
/// is asked about that key's path, so a deny of it holds: the attack is a request
/// that a `*` allow matches while the deny names the key it reaches.
#[tokio::test]
async fn a_v016_route_without_a_name_is_authorized_as_the_key_it_acts_on() {
    let s = start(|state| state.era = keyhost_server::Era::V016).await;
    let (admin, app) = (s.admin(), s.app());
    let app_id = s.app.identity();
    assert_eq!(s.call(&admin, "POST", "/v1/key/create/delete", None).await.0, 200);
    let written = json!({"allow": ["/v1/key/delete/*"], "deny": ["/v1/key/delete/delete"]});
    assert_eq!(s.call(&admin, "POST", "/v1/policy/write/p", Some(written)).await.0, 200);
    assert_eq!(
        s.call(&admin, "POST", &format!("/v1/identity/assign/p/{app_id}"), None)
            .await
            .0,
        200
    );
    let (status, body) = s.call(&app, "DELETE", "/v1/key/delete/", None).await;
    assert_eq!((status, message(&body).as_str()), (403, "prohibited by policy"));
    let (status, _) = s.call(&admin, "POST", "/v1/key/generate/delete", Some(json!({}))).await;
    assert_eq!(status, 200, "the key is still there");
    // The admin may: the key named after the route is deleted, as by KES v0.16.
    assert_eq!(s.call(&admin, "DELETE", "/v1/key/delete/", None).await.0, 200);
    let (status, _) = s.call(&admin, "POST", "/v1/key/generate/delete", Some(json!({}))).await;
    assert_eq!(status, 404);
}

/// The wire details of KES v0.16.1 that the compatibility harness found
/// (tests/compat), for a v0.16 configuration: POST only, path patterns, Go's
/// redirects and their escaping, JSON answers as Go wrote them, v0.16's status and
/// version, body limits, malformed globs, import shapes, decrypt errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v016_wire_details_are_kes_v016s() {
    let s = start(|state| state.era = keyhost_server::Era::V016).await;
    let admin = s.admin();
    assert_eq!(s.call(&admin, "POST", "/v1/key/create/k", None).await.0, 200);

    let resp = admin.put(format!("{}/v1/key/create/k2", s.url)).send().await.unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(resp.headers()["accept"], "POST");

    let (status, body) = s.call(&admin, "POST", "/v1/key/create/a/b", None).await;
    assert_eq!(
        (status, body.as_str()),
        (
            400,
            r#"{"message":"request URL path does not match API pattern: /v1/key/create/*"}"#
        )
    );

    let resp = admin.get(format!("{}/v1/key/list", s.url)).send().await.unwrap();
    // reqwest follows the 301 to /v1/key/list/, which lists the glob `list`.
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.url().path(), "/v1/key/list/");
    for (path, location) in [
        ("/v1/key/create", "/v1/key/create/"),
        ("/./%5Cevil.example?x=1", "/%5Cevil.example?x=1"),
    ] {
        let raw = tokio::task::block_in_place(|| raw_get(&s, path));
        assert!(raw.starts_with("HTTP/1.1 301"), "{path}: {raw}");
        assert!(
            raw.to_ascii_lowercase()
                .contains(&format!("location: {location}\r\n").to_ascii_lowercase()),
            "{path}: {raw}"
        );
        assert!(raw.contains("Moved Permanently</a>."), "{raw}");
    }

    let resp = admin
        .post(format!("{}/v1/key/generate/k", s.url))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "text/plain; charset=utf-8");
    let length: usize = resp.headers()["content-length"].to_str().unwrap().parse().unwrap();
    let body = resp.text().await.unwrap();
    assert!(body.ends_with("}\n") && body.len() == length, "{body:?}");

    let (_, version) = s.call(&admin, "GET", "/version", None).await;
    assert_eq!(
        serde_json::from_str::<Value>(&version)
            .unwrap()
            .as_object()
            .unwrap()
            .len(),
        1,
        "{version}"
    );
    let (_, status) = s.call(&admin, "GET", "/v1/status", None).await;
    let status: Value = serde_json::from_str(&status).unwrap();
    assert!(
        status["certificate"]["expiry"].is_u64() && status["uptime"].is_u64(),
        "{status}"
    );
    assert!(status.get("os").is_none(), "v0.16's shape: {status}");

    let big = json!({"plaintext": B64.encode(vec![0u8; 400 << 10])});
    let (status, body) = s.call(&admin, "POST", "/v1/key/encrypt/k", Some(big)).await;
    assert_eq!(
        (status, message(&body).as_str()),
        (400, "invalid json"),
        "512 KiB to encrypt"
    );

    let resp = admin.get(format!("{}/v1/key/list/[", s.url)).send().await.unwrap();
    assert_eq!(resp.status(), 200, "a malformed glob matches nothing");
    assert_eq!(resp.text().await.unwrap(), "");

    let newest_shape = json!({"key": B64.encode([0u8; 32]), "cipher": "AES256"});
    let (status, body) = s.call(&admin, "POST", "/v1/key/import/i", Some(newest_shape)).await;
    assert_eq!(
        (status, message(&body).as_str()),
        (400, "invalid key"),
        "v0.16 reads only bytes"
    );

    for ct in [B64.encode("not-a-ciphertext"), B64.encode([0u8; 60])] {
        let (status, body) = s
            .call(&admin, "POST", "/v1/key/decrypt/k", Some(json!({"ciphertext": ct})))
            .await;
        assert_eq!((status, message(&body).as_str()), (400, "invalid ciphertext"));
    }
}

/// The newest KES's checks, found side by side with it: listing patterns, policy
/// names and identities; listings' `continue_at`; import without a cipher; arch.
#[tokio::test]
async fn newest_wire_details_are_the_newest_kess() {
    let s = start(|_| {}).await;
    let admin = s.admin();
    for (path, message_text) in [
        (
            "/v1/key/list/app-",
            "listing pattern 'app-' is empty, too long or is invalid",
        ),
        (
            "/v1/identity/list/a.b",
            "listing pattern 'a.b' is empty, too long or is invalid",
        ),
        (
            "/v1/policy/describe/a.b",
            "policy name 'a.b' is empty, too long or contains invalid characters",
        ),
        (
            "/v1/identity/describe/not.hex",
            "identity 'not.hex' is empty, too long or contains invalid characters",
        ),
    ] {
        let (status, body) = s.call(&admin, "GET", path, None).await;
        assert_eq!((status, message(&body).as_str()), (400, message_text), "{path}");
    }
    for path in ["/v1/policy/list/", "/v1/identity/list/"] {
        let (_, body) = s.call(&admin, "GET", path, None).await;
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap()["continue_at"],
            "",
            "{path}"
        );
    }
    let (status, body) = s
        .call(
            &admin,
            "POST",
            "/v1/key/import/i",
            Some(json!({"key": B64.encode([0u8; 32])})),
        )
        .await;
    assert_eq!(
        (status, message(&body).as_str()),
        (406, "algorithm '' is not supported")
    );
    let (_, body) = s.call(&admin, "GET", "/v1/status", None).await;
    let arch = serde_json::from_str::<Value>(&body).unwrap()["arch"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!["x86_64", "aarch64"].contains(&arch.as_str()), "Go's name: {arch}");
    let resp = admin
        .get(format!("{}/v1/key/list/", s.url))
        .header("accept", "application/x-ndjson")
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.headers()["content-type"],
        "application/json",
        "the newest KES answers JSON"
    );
}

/// A GET over a fresh HTTP/1.1 mTLS connection with the path exactly as given.
fn raw_get(s: &Server, path: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = client_certificate(&s.creds.admin).unwrap();
    std::fs::write(dir.path().join("admin.cert"), cert).unwrap();
    std::fs::write(dir.path().join("admin.key"), key.as_str()).unwrap();
    let out = std::process::Command::new("curl")
        .args(["-sS", "-i", "--http1.1", "--path-as-is", "-k", "--cert"])
        .arg(dir.path().join("admin.cert"))
        .arg("--key")
        .arg(dir.path().join("admin.key"))
        .arg(format!("{}{path}", s.url))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}
