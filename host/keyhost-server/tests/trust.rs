//! Attacks on identity, policy, routes, audit and connections, each played over real
//! mutual TLS against a server with certificates minted per run.

#![expect(clippy::unwrap_used, reason = "Tests fail loudly by design")]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use keyhost_policy::{ApiKey, PatternSyntax, Policy};
use keyhost_server::Era;
use keyhost_server::audit::AuditWriter;
use keyhost_tls::mint::client_certificate;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use keyhost_test_support::api::{message, start, start_with};

fn policy(allow: &[&str], deny: &[&str], syntax: PatternSyntax) -> Policy {
    Policy::parse(allow, deny, syntax).unwrap()
}

/// A self-signed CA certificate (`CA:TRUE`, as `openssl req -x509` makes) and its
/// private key, both PEM.
fn ca_certificate(name: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec![name.into()]).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    (params.self_signed(&key).unwrap().pem(), key.serialize_pem())
}

fn identity_of_pem(pem: &str) -> keyhost_policy::Identity {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
    keyhost_policy::identity_of_chain([der.as_ref()], keyhost_policy::ChainRule::V016).unwrap()
}

/// Item 1: a client that holds only the admin's *public* certificate sends "a CA
/// certificate of its own (whose key it holds) + the admin's certificate". The
/// handshake proves only the first; the second must never name the client.
#[tokio::test]
async fn a_copy_of_the_admin_certificate_behind_a_ca_of_ones_own_is_refused() {
    for (era, refused) in [
        (Era::Newest, "tls: received more than one client certificate"),
        (Era::V016, "too many identities: more than one certificate is present"),
    ] {
        let s = start(|state| state.era = era).await;
        let (ca_pem, ca_key) = ca_certificate("attacker");
        let forged = format!("{ca_pem}{}", s.creds.admin_cert_pem);
        let attacker = s.client_for(Some((&forged, &ca_key)));
        for (method, path) in [
            ("POST", "/v1/key/create/stolen"),
            ("GET", "/v1/status"),
            ("DELETE", "/v1/key/delete/stolen"),
        ] {
            let (status, body) = s.call(&attacker, method, path, None).await;
            assert_eq!((status, message(&body).as_str()), (400, refused), "{era:?} {path}");
        }
        if era == Era::Newest {
            let (status, body) = s.call(&attacker, "GET", "/v1/identity/self/describe", None).await;
            assert_eq!((status, message(&body).as_str()), (400, refused));
        }
        // Nothing was created on the attacker's behalf.
        let (status, _) = s.call(&s.admin(), "POST", "/v1/key/create/stolen", None).await;
        assert_eq!(status, 200, "{era:?}: the attacker created the key");
    }
}

/// Item 1: a lone self-signed `CA:TRUE` certificate (what plain `openssl req -x509`
/// makes) is the client's own: it names the client in both eras, as in KES v0.16.1.
/// A real intermediate sent after a client's own certificate is allowed (newest).
#[tokio::test]
async fn a_lone_ca_certificate_and_a_leaf_with_its_intermediate_name_the_client() {
    let (ca_pem, ca_key) = ca_certificate("tutorial");
    let ca_id = identity_of_pem(&ca_pem);
    for (era, syntax, allow) in [
        (Era::Newest, PatternSyntax::Prefix, "/v1/key/create/ca-*"),
        (Era::V016, PatternSyntax::Glob, "/v1/key/create/ca-*"),
    ] {
        let id = ca_id.clone();
        let s = start_with(
            move |_| vec![("ca", policy(&[allow], &[], syntax), vec![id])],
            |state| state.era = era,
        )
        .await;
        let client = s.client_for(Some((&ca_pem, &ca_key)));
        let (status, body) = s.call(&client, "POST", "/v1/key/create/ca-key", None).await;
        assert_eq!(status, 200, "{era:?}: {body}");
        let (status, _) = s.call(&client, "POST", "/v1/key/create/other", None).await;
        assert_eq!(status, 403, "{era:?}: the policy still applies");
    }

    // A leaf followed by the CA that issued it: the leaf names the client.
    let s = start(|_| {}).await;
    let issuer_key = rcgen::KeyPair::generate().unwrap();
    let mut issuer_params = rcgen::CertificateParams::new(vec!["issuer".into()]).unwrap();
    issuer_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let issuer = rcgen::CertifiedIssuer::self_signed(issuer_params, issuer_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["client".into()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let chain = format!("{}{}", leaf.pem(), issuer.pem());
    let client = s.client_for(Some((&chain, &leaf_key.serialize_pem())));
    let (status, body) = s.call(&client, "GET", "/v1/identity/self/describe", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["identity"],
        identity_of_pem(&leaf.pem()).as_str()
    );
}

/// Item 2: an identity allowed `/v1/*` except keys, on a newest-schema server,
/// tries KES v0.16's in-memory policy and identity routes to rewrite its own policy.
#[tokio::test]
async fn routes_of_the_other_era_are_not_served() {
    let s = start_with(
        |app| {
            vec![(
                "console",
                policy(&["/v1/*"], &["/v1/key/*"], PatternSyntax::Prefix),
                vec![app.identity()],
            )]
        },
        |_| {},
    )
    .await;
    let app = s.app();
    let me = s.app.identity();
    for (method, path, body) in [
        (
            "POST",
            "/v1/policy/write/console".to_owned(),
            Some(json!({"allow": ["/v1/*"]})),
        ),
        (
            "POST",
            "/v1/policy/write/open".to_owned(),
            Some(json!({"allow": ["/v1/*"]})),
        ),
        ("POST", format!("/v1/identity/assign/open/{me}"), None),
        ("DELETE", "/v1/policy/delete/console".to_owned(), None),
        ("DELETE", format!("/v1/identity/forget/{me}"), None),
        ("GET", "/v1/log/audit/trace".to_owned(), None),
        ("GET", "/v1/log/error/trace".to_owned(), None),
    ] {
        let (status, text) = s.call(&app, method, &path, body).await;
        assert_eq!((status, text.as_str()), (404, "404 page not found\n"), "{path}");
    }
    let (status, _) = s.call(&app, "POST", "/v1/key/create/escaped", None).await;
    assert_eq!(status, 403, "the deny still holds");

    // A v0.16 glob that names the operation with a star must not reach the newest
    // operations KES v0.16 never had.
    let s = start_with(
        |app| {
            vec![(
                "app",
                policy(&["/v1/key/*/app-*"], &[], PatternSyntax::Glob),
                vec![app.identity()],
            )]
        },
        |state| state.era = Era::V016,
    )
    .await;
    s.call(&s.admin(), "POST", "/v1/key/create/app-key", None).await;
    let app = s.app();
    assert_eq!(
        s.call(&app, "POST", "/v1/key/generate/app-key", Some(json!({})))
            .await
            .0,
        200
    );
    for (method, path) in [
        ("PUT", "/v1/key/hmac/app-key"),
        ("GET", "/v1/key/describe/app-key"),
        ("PUT", "/v1/key/bulk/decrypt/app-key"),
        ("GET", "/v1/identity/self/describe"),
        ("GET", "/v1/log/audit"),
    ] {
        let (status, _) = s.call(&app, method, path, Some(json!({"message": "eA=="}))).await;
        assert_eq!(status, 404, "{path}");
    }
}

/// Item 3: a policy allows `/v1/key/*` and denies `/v1/key/decrypt/*`; bulk decrypt
/// is a decryption and is refused like one. A deny on the bulk route itself (as a
/// KES-era policy writes it) holds too.
#[tokio::test]
async fn bulk_decrypt_is_authorized_as_decrypt() {
    let reader = ApiKey::from_seed([9; 32]);
    let reader_id = reader.identity();
    let no_bulk = ApiKey::from_seed([10; 32]);
    let no_bulk_id = no_bulk.identity();
    let s = start_with(
        move |app| {
            vec![
                (
                    "no-decrypt",
                    policy(&["/v1/key/*"], &["/v1/key/decrypt/*"], PatternSyntax::Prefix),
                    vec![app.identity()],
                ),
                (
                    "decrypt",
                    policy(
                        &["/v1/key/decrypt/k", "/v1/key/bulk/decrypt/k"],
                        &[],
                        PatternSyntax::Prefix,
                    ),
                    vec![reader_id],
                ),
                (
                    "no-bulk",
                    policy(&["/v1/key/*"], &["/v1/key/bulk/*"], PatternSyntax::Prefix),
                    vec![no_bulk_id],
                ),
            ]
        },
        |_| {},
    )
    .await;
    let admin = s.admin();
    s.call(&admin, "POST", "/v1/key/create/k", None).await;
    let (_, body) = s
        .call(
            &admin,
            "PUT",
            "/v1/key/encrypt/k",
            Some(json!({"plaintext": B64.encode("secret")})),
        )
        .await;
    let ct = serde_json::from_str::<Value>(&body).unwrap()["ciphertext"].clone();
    let app = s.app();
    let (status, body) = s
        .call(&app, "PUT", "/v1/key/decrypt/k", Some(json!({"ciphertext": ct})))
        .await;
    assert_eq!(
        (status, message(&body).as_str()),
        (403, "not authorized: insufficient permissions")
    );
    let (status, body) = s
        .call(&app, "PUT", "/v1/key/bulk/decrypt/k", Some(json!([{"ciphertext": ct}])))
        .await;
    assert_eq!(
        (status, message(&body).as_str()),
        (403, "not authorized: insufficient permissions"),
        "bulk decrypt returned plaintexts past the deny: {body}"
    );
    // The identity allowed to decrypt the key may do so in bulk.
    let (cert, key) = client_certificate(&reader).unwrap();
    let reader = s.client_for(Some((&cert, &key)));
    let (status, body) = s
        .call(
            &reader,
            "PUT",
            "/v1/key/bulk/decrypt/k",
            Some(json!([{"ciphertext": ct}])),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!([{"plaintext": B64.encode("secret")}])
    );
    let (cert, key) = client_certificate(&no_bulk).unwrap();
    let no_bulk = s.client_for(Some((&cert, &key)));
    let (status, _) = s
        .call(&no_bulk, "PUT", "/v1/key/decrypt/k", Some(json!({"ciphertext": ct})))
        .await;
    assert_eq!(status, 200);
    let (status, _) = s
        .call(
            &no_bulk,
            "PUT",
            "/v1/key/bulk/decrypt/k",
            Some(json!([{"ciphertext": ct}])),
        )
        .await;
    assert_eq!(status, 403, "a deny on the bulk route was ignored");
}

/// Audit lines written to memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines(&self, writer: &AuditWriter) -> Vec<Value> {
        writer.flush();
        String::from_utf8(self.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// Item 4: a proxy that appends the forwarded-certificate header instead of
/// replacing it would let its client pick an identity: two headers are refused.
/// Audit lines of proxied requests name the client and the proxy.
#[tokio::test]
async fn a_proxied_request_names_one_client_and_is_audited_as_it() {
    let proxy_key = ApiKey::from_seed([5; 32]);
    let proxy_id = proxy_key.identity();
    let captured = Captured::default();
    let writer = AuditWriter::spawn(captured.clone()).unwrap();
    let s = start({
        let (proxy_id, writer) = (proxy_id.clone(), writer.clone());
        move |state| {
            state.proxy = Some(keyhost_server::Proxy {
                identities: vec![proxy_id],
                header: http::HeaderName::from_static("x-tls-client-cert"),
                verify: None,
            });
            state.observer.audit_log = Some(writer);
        }
    })
    .await;
    let (proxy_cert, proxy_private) = client_certificate(&proxy_key).unwrap();
    let proxy = s.client_for(Some((&proxy_cert, &proxy_private)));
    let escape = |pem: &str| pem.bytes().map(|b| format!("%{b:02X}")).collect::<String>();
    let (app_cert, _) = client_certificate(&s.app).unwrap();
    let resp = proxy
        .get(format!("{}/v1/identity/self/describe", s.url))
        .header("X-Tls-Client-Cert", escape(&s.creds.admin_cert_pem))
        .header("X-Tls-Client-Cert", escape(&app_cert))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap();
    assert_eq!(
        (status, message(&body).as_str()),
        (400, "too many client certificates are present"),
        "two forwarded certificates: {body}"
    );

    let resp = proxy
        .get(format!("{}/v1/key/describe/app-key", s.url))
        .header("X-Tls-Client-Cert", escape(&app_cert))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        404,
        "the app's policy allows describe; the key is missing"
    );
    let lines = captured.lines(&writer);
    let line = lines
        .iter()
        .find(|l| l["request"]["path"] == "/v1/key/describe/app-key")
        .unwrap();
    assert_eq!(line["request"]["identity"], s.app.identity().as_str(), "{line}");
    assert_eq!(line["request"]["proxy"], proxy_id.as_str(), "{line}");
    // A direct request has no proxy field.
    s.call(&s.admin(), "GET", "/v1/status", None).await;
    let lines = captured.lines(&writer);
    let direct = lines.iter().find(|l| l["request"]["path"] == "/v1/status").unwrap();
    assert!(direct["request"].get("proxy").is_none(), "{direct}");
}

/// Round 3, item 1: with `tls.proxy`, a client of the proxy sends the admin's
/// *public* certificate in the header and the proxy appends (or an intermediary
/// merges) the client's real one onto the same line. Reading the first value would
/// make the client the admin. Every way of joining two values on one line is
/// refused, and none of them is ever served as the admin.
#[tokio::test]
async fn one_header_line_naming_two_certificates_never_names_the_first() {
    let proxy_key = ApiKey::from_seed([5; 32]);
    let proxy_id = proxy_key.identity();
    let s = start(move |state| {
        state.proxy = Some(keyhost_server::Proxy {
            identities: vec![proxy_id],
            header: http::HeaderName::from_static("x-tls-client-cert"),
            verify: None,
        });
    })
    .await;
    let (proxy_cert, proxy_private) = client_certificate(&proxy_key).unwrap();
    let proxy = s.client_for(Some((&proxy_cert, &proxy_private)));
    let (app_cert, _) = client_certificate(&s.app).unwrap();
    let admin = &s.creds.admin_cert_pem;
    // `GET /v1/identity/self/describe` through the proxy, forwarding `value`.
    let forward = |value: String| {
        let req = proxy
            .get(format!("{}/v1/identity/self/describe", s.url))
            .header("X-Tls-Client-Cert", value);
        async move {
            let resp = req.send().await.unwrap();
            (resp.status().as_u16(), resp.text().await.unwrap())
        }
    };
    // Escaped as Go's url.QueryEscape, as nginx's $ssl_client_escaped_cert, and
    // with only what Go would misread escaped (newlines, plus signs): proxies differ.
    type Escape = fn(&str) -> String;
    let escapes: [(&str, Escape); 3] = [
        ("every byte", |pem| pem.bytes().map(|b| format!("%{b:02X}")).collect()),
        ("query", |pem| {
            pem.replace('+', "%2B")
                .replace('/', "%2F")
                .replace('=', "%3D")
                .replace(' ', "+")
                .replace('\n', "%0A")
        }),
        ("newlines and plus signs", |pem| {
            pem.replace('+', "%2B").replace('\n', "%0A")
        }),
    ];
    let mut refused = 0;
    for (how, escape) in escapes {
        let (first, second) = (escape(admin), escape(&app_cert));
        for joiner in [
            ",", ", ", " ,", ",\t", "%2C", "%2c", "%2C%20", "%0A", "", "+", "%00", "\t",
        ] {
            let (status, body) = forward(format!("{first}{joiner}{second}")).await;
            assert_ne!(status, 200, "{how}, joined by {joiner:?}: served as {body}");
            assert_eq!(status, 400, "{how}, joined by {joiner:?}: {body}");
            assert!(
                ["too many client certificates are present", "invalid client certificate"]
                    .contains(&message(&body).as_str()),
                "{how}, joined by {joiner:?}: {body}"
            );
            refused += 1;
        }
        // One certificate alone, however escaped, is served as itself.
        let (_, body) = forward(escape(&app_cert)).await;
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap()["identity"],
            s.app.identity().as_str(),
            "{how}: {body}"
        );
    }
    assert_eq!(refused, 36);
    // One PEM block whose DER is the admin's certificate followed by the app's: a
    // parser that ignores what follows the first DER value would read the admin.
    let der = |pem: &str| {
        use rustls::pki_types::pem::PemObject;
        rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
            .unwrap()
            .to_vec()
    };
    let both = [der(admin), der(&app_cert)].concat();
    let block = format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        B64.encode(&both)
    );
    let escaped: String = block.bytes().map(|b| format!("%{b:02X}")).collect();
    let (status, body) = forward(escaped).await;
    assert_eq!(
        (status, message(&body).as_str()),
        (400, "invalid client certificate"),
        "two DER values in one block: {body}"
    );
}

/// Round 3, item 2: with client verification on, the certificate a proxy forwards
/// must verify as a connection's would: a self-signed copy of the admin's public
/// certificate is refused with KES v0.16.1's `403` and empty message, and a client
/// of the trusted CA is served.
#[tokio::test]
async fn with_verification_on_a_forwarded_certificate_must_chain_to_the_ca() {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(vec!["proxy CA".into()]).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    let roots = Arc::new(roots);
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["client".into()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    let leaf_id = identity_of_pem(&leaf.pem());
    let proxy_key = ApiKey::from_seed([5; 32]);
    let proxy_id = proxy_key.identity();
    let escape = |pem: &str| pem.bytes().map(|b| format!("%{b:02X}")).collect::<String>();
    for (usage, era) in [
        (keyhost_tls::ForwardedUsage::GoDefault, Era::V016),
        (keyhost_tls::ForwardedUsage::ClientAuth, Era::Newest),
    ] {
        let (proxy_id, roots, leaf_id) = (proxy_id.clone(), roots.clone(), leaf_id.clone());
        let s = start_with(
            move |_| {
                vec![(
                    "leaf",
                    policy(&["/v1/key/list/*"], &[], PatternSyntax::Glob),
                    vec![leaf_id],
                )]
            },
            move |state| {
                state.era = era;
                state.proxy = Some(keyhost_server::Proxy {
                    identities: vec![proxy_id],
                    header: http::HeaderName::from_static("x-tls-client-cert"),
                    verify: Some(keyhost_tls::ForwardedVerifier::new(roots, usage)),
                });
            },
        )
        .await;
        let (proxy_cert, proxy_private) = client_certificate(&proxy_key).unwrap();
        let proxy = s.client_for(Some((&proxy_cert, &proxy_private)));
        let send = |pem: String, path: &'static str| {
            let req = proxy
                .get(format!("{}{path}", s.url))
                .header("X-Tls-Client-Cert", escape(&pem));
            async move {
                let resp = req.send().await.unwrap();
                (resp.status().as_u16(), resp.text().await.unwrap())
            }
        };
        let (status, body) = send(s.creds.admin_cert_pem.clone(), "/v1/key/list/*").await;
        assert_eq!(
            status, 403,
            "{era:?}: the admin's self-signed certificate, forwarded: {body}"
        );
        assert_eq!(message(&body), "", "{era:?}: KES v0.16.1's empty message");
        let (status, body) = send(leaf.pem(), "/v1/key/list/*").await;
        assert_eq!(status, 200, "{era:?}: the CA's client: {body}");
    }
}

fn counter(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Item 5: a percent-encoded path is served as the route it decodes to, so it is
/// audited and counted as that route.
#[tokio::test]
async fn an_encoded_path_is_audited_and_counted_as_routed() {
    let captured = Captured::default();
    let writer = AuditWriter::spawn(captured.clone()).unwrap();
    let s = start({
        let writer = writer.clone();
        move |state| state.observer.audit_log = Some(writer)
    })
    .await;
    let admin = s.admin();
    s.call(&admin, "POST", "/v1/key/create/app-key", None).await;
    let before = s.metrics(&admin).await;
    let (status, _) = s.call(&admin, "DELETE", "/v1/%6Bey/%64elete/app-key", None).await;
    assert_eq!(status, 200);
    let after = s.metrics(&admin).await;
    assert_eq!(
        counter(&after, "kes_http_request_success") - counter(&before, "kes_http_request_success"),
        1,
        "the deletion was not counted"
    );
    let lines = captured.lines(&writer);
    assert!(
        lines.iter().any(|l| l["request"]["path"] == "/v1/key/delete/app-key"),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .all(|l| !l["request"]["path"].as_str().unwrap().contains('%')),
        "{lines:?}"
    );
}

/// Reads until the server closes the connection; returns what it sent and how long
/// it took, or fails after `limit`.
async fn closed_within<S: tokio::io::AsyncRead + Unpin>(stream: &mut S, limit: Duration) -> (Vec<u8>, Duration) {
    let start = Instant::now();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at((start + limit).into(), stream.read(&mut buf)).await {
            Err(_) => panic!("the connection was still open after {limit:?}; it sent {seen:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return (seen, start.elapsed()),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

fn short_limits(state: &mut keyhost_server::State) {
    state.limits.handshake_timeout = Duration::from_secs(1);
    state.limits.header_timeout = Duration::from_secs(1);
    state.limits.body_timeout = Duration::from_secs(1);
    state.limits.idle_timeout = Duration::from_secs(2);
}

/// Item 6: connections that hold a slot without making progress are closed: silent
/// before or after the handshake, part of an HTTP/2 preface, a preface with no
/// stream, a body that stops arriving (HTTP/1.1 and h2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_make_no_progress_are_closed() {
    let s = start(short_limits).await;
    let (cert, key) = client_certificate(&s.app).unwrap();
    let id = Some((cert.as_str(), key.as_str()));
    let limit = Duration::from_secs(4);
    s.call(&s.admin(), "POST", "/v1/key/create/app-key", None).await;
    let s = &s;
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    const H1: &[&[u8]] = &[b"http/1.1"];
    const H2: &[&[u8]] = &[b"h2"];
    const NO_ALPN: &[&[u8]] = &[];

    // Every stall at once (each is a connection of its own, and each must be closed
    // within `limit` of its own start): the test takes one deadline, not ten.
    let mut checks: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>>> = Vec::new();
    // Silent TCP: the handshake deadline.
    checks.push(Box::pin(async move {
        let mut tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
        closed_within(&mut tcp, limit).await;
    }));
    // Silent after the handshake, for each protocol, and with no ALPN at all
    // (HTTP/1.1).
    for alpn in [H1, H2, NO_ALPN] {
        checks.push(Box::pin(async move {
            let mut conn = s.tls(alpn, id).await;
            closed_within(&mut conn, limit).await;
        }));
    }
    // 16 bytes of the preface, with and without h2 negotiated.
    for alpn in [H2, NO_ALPN] {
        checks.push(Box::pin(async move {
            let mut conn = s.tls(alpn, id).await;
            conn.write_all(&PREFACE[..16]).await.unwrap();
            closed_within(&mut conn, limit).await;
        }));
    }
    // A whole preface and an empty SETTINGS frame, then no stream.
    checks.push(Box::pin(async move {
        let mut conn = s.tls(H2, id).await;
        conn.write_all(PREFACE).await.unwrap();
        conn.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap();
        closed_within(&mut conn, limit).await;
    }));
    // HTTP/1.1: a body that stops arriving is answered 408 and the connection goes.
    checks.push(Box::pin(async move {
        let mut conn = s.tls(H1, id).await;
        conn.write_all(
            b"PUT /v1/key/decrypt/app-key HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\n\r\n{\"cip",
        )
        .await
        .unwrap();
        let (answer, _) = closed_within(&mut conn, limit).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    }));
    // h2: the same with a stream whose body stalls.
    checks.push(Box::pin(async move {
        let mut config = s.client_config(id);
        config.alpn_protocols = vec![b"h2".to_vec()];
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(config)
            .http2_prior_knowledge()
            .build()
            .unwrap();
        let stalled = futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"{\"cip"))])
            .chain(futures::stream::pending());
        let started = Instant::now();
        let result = tokio::time::timeout(
            limit,
            client
                .put(format!("{}/v1/key/decrypt/app-key", s.url))
                .body(reqwest::Body::wrap_stream(stalled))
                .send(),
        )
        .await
        .expect("the stalled h2 body was never answered");
        let resp = result.unwrap();
        assert_eq!(resp.status(), 408, "after {:?}", started.elapsed());
    }));
    futures::future::join_all(checks).await;
}

use futures::StreamExt;

/// Item 6: silent sockets that never start their handshake, from one address, take
/// only that address's share of handshake slots: the admin, elsewhere, gets in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_sockets_from_one_address_do_not_lock_others_out() {
    let s = start(|state| {
        state.limits.max_connections = 8;
        state.limits.admin_reserve = 2;
        state.limits.handshakes_per_ip = 4;
        state.limits.handshake_timeout = Duration::from_secs(30);
    })
    .await;
    let mut silent = Vec::new();
    for _ in 0..20 {
        silent.push(tokio::net::TcpStream::connect(s.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Past its share, the address's sockets are closed at once.
    let mut closed = 0;
    for socket in &mut silent {
        let mut byte = [0u8; 1];
        if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_millis(100), socket.read(&mut byte)).await {
            closed += 1;
        }
    }
    assert_eq!(closed, 16, "sockets past the address's 4 handshakes were not closed");
    // The admin, from another address, connects and is served at once.
    let mut admin = tokio::time::timeout(
        Duration::from_secs(5),
        s.tls_from(
            [127, 0, 0, 2].into(),
            &[b"http/1.1"],
            Some((&s.creds.admin_cert_pem, &s.creds.admin_key_pem)),
        ),
    )
    .await
    .expect("the admin's handshake waited behind silent sockets");
    admin
        .write_all(b"GET /v1/status HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let (answer, _) = closed_within(&mut admin, Duration::from_secs(5)).await;
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
    drop(silent);
}

/// Item 6: a response the client never takes (an HTTP/2 stream window of zero)
/// does not keep its connection for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_the_client_never_takes_does_not_hold_the_connection() {
    let s = start(short_limits).await;
    let (cert, key) = client_certificate(&s.app).unwrap();
    let mut config = s.client_config(Some((&cert, &key)));
    config.alpn_protocols = vec![b"h2".to_vec()];
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .http2_prior_knowledge()
        .http2_initial_stream_window_size(Some(0))
        .http2_initial_connection_window_size(Some(0))
        .build()
        .unwrap();
    let started = Instant::now();
    let outcome = tokio::time::timeout(Duration::from_secs(15), async {
        let resp = client.get(format!("{}/version", s.url)).send().await?;
        resp.bytes().await
    })
    .await
    .expect("the stalled response held its connection past the deadline");
    assert!(
        outcome.is_err(),
        "the body arrived through a closed window after {:?}: {outcome:?}",
        started.elapsed()
    );
}

/// Item 6: with every connection slot taken by others, the admin still gets in (its
/// reserve), and others are turned away at once instead of waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_server_keeps_room_for_the_admin() {
    let s = start(|state| {
        state.limits.max_connections = 4;
        state.limits.admin_reserve = 2;
        state.limits.header_timeout = Duration::from_secs(30);
        state.limits.idle_timeout = Duration::from_secs(30);
    })
    .await;
    let (cert, key) = client_certificate(&s.app).unwrap();
    let id = Some((cert.as_str(), key.as_str()));
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(s.tls(&[b"http/1.1"], id).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A fifth connection of a non-admin is closed after its handshake.
    let mut extra = s.tls(&[b"http/1.1"], id).await;
    extra
        .write_all(b"GET /version HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .ok();
    let (answer, _) = closed_within(&mut extra, Duration::from_secs(3)).await;
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    // The admin is served.
    let (status, body) = tokio::time::timeout(Duration::from_secs(5), s.call(&s.admin(), "GET", "/v1/status", None))
        .await
        .expect("the admin's request timed out on a full server");
    assert_eq!(status, 200, "{body}");
    drop(held);
}

/// Item 8: a long glob in a v0.16 NDJSON listing is refused, and listings never
/// hold the runtime's threads: the unauthenticated `/version` answers meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_listing_globs_are_refused_and_listings_do_not_stall_the_server() {
    let s = start_with(
        |app| {
            vec![(
                "lister",
                policy(&["/v1/key/list/*"], &[], PatternSyntax::Glob),
                vec![app.identity()],
            )]
        },
        |state| state.era = Era::V016,
    )
    .await;
    let admin = s.admin();
    let creates = (0..2300).map(|i| {
        let (admin, url) = (admin.clone(), s.url.clone());
        async move {
            admin
                .post(format!("{url}/v1/key/create/key-{i:05}"))
                .send()
                .await
                .unwrap()
                .status()
        }
    });
    for status in futures::stream::iter(creates)
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await
    {
        assert_eq!(status, 200);
    }
    let app = s.app();
    let list = |pattern: String| {
        let (app, url) = (app.clone(), s.url.clone());
        async move {
            let started = Instant::now();
            let resp = app
                .get(format!("{url}/v1/key/list/{pattern}"))
                .header("accept", "application/x-ndjson")
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let body = resp.text().await.unwrap();
            (status, body, started.elapsed())
        }
    };
    let long = "*a".repeat(30_000) + "*";
    let (status, body, took) = list(long).await;
    assert_eq!(status, 400, "a 60 kB glob was run ({took:?})");
    assert!(message(&body).starts_with("listing pattern"), "{body}");

    // The longest allowed glob, as costly as a glob of that length can be, runs off
    // the runtime's threads while /version is asked for.
    let costly = "*[a-z0-9]".repeat(28) + "*";
    assert!(costly.len() <= 256);
    let listings: Vec<_> = (0..4).map(|_| tokio::spawn(list(costly.clone()))).collect();
    let anyone = s.app();
    for _ in 0..5 {
        let started = Instant::now();
        let (status, _) = s.call(&anyone, "GET", "/version", None).await;
        assert_eq!(status, 200);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "/version took {:?} during listings",
            started.elapsed()
        );
    }
    for listing in listings {
        let (status, body, _) = listing.await.unwrap();
        assert_eq!(status, 200, "{body}");
    }
}

/// A sink that never takes a byte: the audit log's reader has stopped reading.
struct Stalled;

impl std::io::Write for Stalled {
    fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
        loop {
            std::thread::park();
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Item 9: with `log.audit: on` and an audit reader that has stopped, requests (and
/// TLS handshakes) go on; the lines that do not fit are dropped and counted. With
/// `log.audit: required` the server refuses requests with 503 instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_audit_reader_never_stalls_the_server() {
    for required in [false, true] {
        let writer = AuditWriter::spawn(Stalled).unwrap();
        // Fill the backlog, as ~16k requests would.
        let filler = writer.clone();
        let filled = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::task::spawn_blocking(move || {
                let line = vec![b'x'; 255].into_iter().chain(*b"\n").collect::<Vec<_>>();
                // Until the writer holds one batch in its stuck write and the
                // backlog behind it is full too.
                loop {
                    while filler.push(&line) {}
                    std::thread::sleep(Duration::from_millis(50));
                    if !filler.push(&line) {
                        break;
                    }
                }
            }),
        )
        .await;
        assert!(filled.is_ok(), "pushing an audit line waited for the stalled reader");
        let s = start({
            let writer = writer.clone();
            move |state| {
                state.observer.audit_log = Some(writer);
                state.observer.audit_required = required;
            }
        })
        .await;
        let started = Instant::now();
        let calls = (0..200).map(|i| {
            let client = if i % 2 == 0 { s.app() } else { s.admin() }; // new TLS connections
            let url = s.url.clone();
            async move { client.get(format!("{url}/v1/status")).send().await.unwrap() }
        });
        let answers = tokio::time::timeout(
            Duration::from_secs(20),
            futures::stream::iter(calls).buffer_unordered(16).collect::<Vec<_>>(),
        )
        .await
        .expect("requests stalled behind the audit log");
        for resp in answers {
            let status = resp.status().as_u16();
            match (required, status) {
                (false, 200 | 403) => {}
                (true, 503) => assert_eq!(message(&resp.text().await.unwrap()), "audit log is not writable"),
                _ => panic!("required={required}: status {status}"),
            }
        }
        assert!(writer.dropped_total() > 0);
        assert!(started.elapsed() < Duration::from_secs(20));
        if !required {
            let metrics = s.metrics(&s.admin()).await;
            assert!(counter(&metrics, "keyhost_log_audit_dropped") >= 200, "{metrics}");
        }
    }
}

/// Item 19: a client that offers the hybrid post-quantum key exchange gets it; a
/// client that offers only classic groups still connects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_exchange_is_post_quantum_when_the_client_offers_it() {
    let s = start(|_| {}).await;
    let (cert, key) = client_certificate(&s.app).unwrap();
    let id = Some((cert.as_str(), key.as_str()));
    let conn = s.tls(&[b"http/1.1"], id).await;
    let group = conn.get_ref().1.negotiated_key_exchange_group().unwrap().name();
    assert_eq!(group, rustls::NamedGroup::X25519MLKEM768);

    // A client without ML-KEM (classic groups only).
    let mut classic = rustls::crypto::aws_lc_rs::default_provider();
    classic
        .kx_groups
        .retain(|g| g.name() != rustls::NamedGroup::X25519MLKEM768);
    let roots = {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(s.creds.server_cert_der.clone()).unwrap();
        roots
    };
    let chain: Vec<rustls::pki_types::CertificateDer<'static>> =
        vec![rustls::pki_types::pem::PemObject::from_pem_slice(cert.as_bytes()).unwrap()];
    let private: rustls::pki_types::PrivateKeyDer<'static> =
        rustls::pki_types::pem::PemObject::from_pem_slice(key.as_bytes()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(classic))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, private)
        .unwrap();
    let tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let conn = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(rustls::pki_types::ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let group = conn.get_ref().1.negotiated_key_exchange_group().unwrap().name();
    assert_eq!(group, rustls::NamedGroup::X25519);

    // OpenSSL 3.0 (no ML-KEM) connects and negotiates X25519.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("client.crt"), &cert).unwrap();
    std::fs::write(d.join("client.key"), key.as_str()).unwrap();
    std::fs::write(d.join("server.crt"), &s.creds.server_cert_pem).unwrap();
    let out = tokio::task::spawn_blocking({
        let (d, port) = (d.to_owned(), s.addr.port());
        move || {
            std::process::Command::new("openssl")
                .args([
                    "s_client",
                    "-connect",
                    &format!("127.0.0.1:{port}"),
                    "-servername",
                    "localhost",
                ])
                .arg("-CAfile")
                .arg(d.join("server.crt"))
                .arg("-cert")
                .arg(d.join("client.crt"))
                .arg("-key")
                .arg(d.join("client.key"))
                .stdin(std::process::Stdio::null())
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Verify return code: 0 (ok)"), "{text}");
    assert!(
        text.contains("Server Temp Key: X25519") || text.contains("Negotiated TLS1.3 group: X25519"),
        "{text}"
    );
}
