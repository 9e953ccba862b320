//! Keys: create, import, generate, encrypt, decrypt, bulk decrypt, describe, delete
//! and list, and what every key route answers for a missing or malformed key.

use super::*;

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
