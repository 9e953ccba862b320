//! Identities from TLS: handshakes without a certificate, identities of every key
//! type, and trusted TLS-terminating proxies.

use super::*;

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
            verify: None,
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
