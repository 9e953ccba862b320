//! Wire details of both KES eras, found side by side with the real KES: v0.16's
//! listings, texts, redirects and escaping, and the newest release's checks.

use super::*;

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
