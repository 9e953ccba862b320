//! Hostile input on the wire: oversized bodies, headers that never end, connections
//! that never finish their handshake, bytes that are not TLS, and client certificate
//! chains with CA certificates, expired or foreign certificates, with and without
//! `tls.auth: on`. The server answers with KES's errors or closes the connection,
//! and keeps serving everyone else meanwhile.

#![expect(clippy::unwrap_used, reason = "Tests fail loudly by design")]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use keyhost_policy::Identity;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData};

use keyhost_test_support::process::{curl, server_files, start, start_as_admin};

/// Waits until the server closes `stream` (a read returns 0 or fails), at most
/// `limit`; returns how long that took.
fn closed_within(stream: &mut impl Read, limit: Duration) -> Duration {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return started.elapsed(),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return started.elapsed(), // reset by the server
            Ok(_) => {}
        }
        assert!(started.elapsed() < limit, "the server kept the connection open");
    }
}

fn tcp(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    stream
}

#[test]
fn oversized_bodies_endless_headers_and_garbage_are_cut_off_while_others_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Short deadlines (the defaults are 10 s and 5 s), set as an operator would.
    let (creds, server) = start_as_admin(
        d,
        "keys:\n  - name: my-key\nconnections:\n  handshake_timeout: 2s\n  header_timeout: 3s\n",
    );
    let url = &server.url;
    let addr: SocketAddr = url.trim_start_matches("https://").parse().unwrap();
    let generate = || curl(d, "admin", &format!("-X PUT -d '{{}}' {url}/v1/key/generate/my-key"));

    // A body over the route's limit (1 MiB) is refused with KES's error, which the
    // client gets to read: over HTTP/1.1 with and without `Expect: 100-continue`
    // (then the body is never sent), and over HTTP/2.
    std::fs::write(d.join("big.json"), vec![b' '; 2 << 20]).unwrap();
    for flags in ["--http1.1", "--http1.1 -H Expect:", "--http2"] {
        let (status, body) = curl(
            d,
            "admin",
            &format!(
                "{flags} -X PUT --data-binary @{}/big.json {url}/v1/key/generate/my-key",
                d.display()
            ),
        );
        assert_eq!(
            (status, body.as_str()),
            (400, "{\"message\":\"invalid request body\"\n}"),
            "{flags}"
        );
    }
    // So is a body on a route that takes none, beyond what is drained.
    let (status, _) = curl(
        d,
        "admin",
        &format!(
            "-X PUT --data-binary @{}/big.json {url}/v1/key/create/other",
            d.display()
        ),
    );
    assert!(status == 200 || status == 400, "{status}");

    // Bytes that are not TLS, a plain-HTTP request, and connections that never start
    // their handshake: each is closed; meanwhile requests are served.
    let mut garbage: Vec<TcpStream> = (0..20)
        .map(|n| {
            let mut s = tcp(addr);
            let noise: Vec<u8> = (0..512u32)
                .map(|i| (i.wrapping_mul(2654435761).wrapping_add(n)) as u8)
                .collect();
            let _ = s.write_all(&noise);
            s
        })
        .collect();
    let mut plain = tcp(addr);
    plain.write_all(b"GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    for s in garbage.iter_mut().chain([&mut plain]) {
        closed_within(s, Duration::from_secs(5));
    }
    // Connections that never send a byte are closed at the handshake deadline
    // (2 s), not before, and not much after; requests are served meanwhile.
    let opened = Instant::now();
    let mut silent: Vec<TcpStream> = (0..20).map(|_| tcp(addr)).collect();
    assert_eq!(generate().0, 200, "served while 20 connections say nothing");
    for s in &mut silent {
        closed_within(s, Duration::from_secs(5));
    }
    let closed = opened.elapsed();
    assert!(
        closed >= Duration::from_millis(1900) && closed <= Duration::from_secs(5),
        "silent connections closed after {closed:?}, expected about 2 s"
    );

    // Headers that never end, over TLS: the server gives up at the header timeout
    // (3 s from the connection's start), and serves everyone else meanwhile.
    let connector = keyhost_test_support::load::connector(
        creds.server_cert_der.clone(),
        &creds.admin_cert_pem,
        creds.admin_key_pem.as_str(),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut streams = Vec::new();
        for _ in 0..20 {
            let connected = Instant::now();
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            let mut tls = connector.connect(name, tcp).await.unwrap();
            tls.write_all(b"GET /v1/status HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
                .await
                .unwrap();
            tls.flush().await.unwrap();
            streams.push((connected, tls));
        }
        let status = tokio::task::spawn_blocking({
            let d = d.to_owned();
            let url = url.clone();
            move || curl(&d, "admin", &format!("-X PUT -d '{{}}' {url}/v1/key/generate/my-key")).0
        })
        .await
        .unwrap();
        assert_eq!(status, 200);
        let first_connected = streams.first().map(|(at, _)| *at).unwrap();
        assert!(
            first_connected.elapsed() < Duration::from_millis(2900),
            "the request must be answered while the slow connections are still open"
        );
        for (connected, tls) in &mut streams {
            let mut buf = Vec::new();
            let read = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut buf)).await;
            assert!(read.is_ok(), "a connection with endless headers stayed open");
            let open = connected.elapsed();
            assert!(
                open >= Duration::from_millis(2900) && open <= Duration::from_secs(6),
                "a connection with endless headers was closed after {open:?}, expected about 3 s"
            );
        }
    });

    let (status, body) = generate();
    assert_eq!(status, 200, "still serving: {body}");
}

/// A CA, and certificates it signs or that sign themselves.
struct Pki {
    ca_params: CertificateParams,
    ca_key: KeyPair,
    ca_pem: String,
}

impl Pki {
    fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, "test client CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Self {
            ca_pem: cert.pem(),
            ca_params: params,
            ca_key: key,
        }
    }

    /// A client certificate and key, signed by the CA or by itself, valid from
    /// `days_from` to `days_to` days from now; and its identity.
    fn client(&self, signed: bool, days_from: i64, days_to: i64) -> (String, String, Identity) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, "client");
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now + time::Duration::days(days_from);
        params.not_after = now + time::Duration::days(days_to);
        let cert = if signed {
            let issuer = Issuer::from_params(&self.ca_params, &self.ca_key);
            params.signed_by(&key, &issuer).unwrap()
        } else {
            params.self_signed(&key).unwrap()
        };
        let identity = Identity::of_spki(&key.subject_public_key_info());
        (cert.pem(), key.serialize_pem(), identity)
    }
}

fn write_client(d: &Path, who: &str, chain: &[&str], key: &str) {
    std::fs::write(d.join(format!("{who}.cert")), chain.concat()).unwrap();
    std::fs::write(d.join(format!("{who}.key")), key).unwrap();
}

/// curl's exit status and the HTTP status it saw (0 when the handshake failed).
fn handshake(d: &Path, who: &str, url: &str) -> (i32, String) {
    let dd = d.display();
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "curl -sS --cacert {dd}/server.cert --cert {dd}/{who}.cert --key {dd}/{who}.key -w '\\n%{{http_code}}' {url}/v1/key/describe/my-key"
        ))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn client_chains_with_ca_certificates_expired_and_foreign_certificates() {
    let pki = Pki::new();
    let (leaf, leaf_key, leaf_id) = pki.client(true, -1, 30);
    let (other, _, _) = pki.client(true, -1, 30);
    let (expired, expired_key, expired_id) = pki.client(true, -30, -1);
    let (own, own_key, own_id) = pki.client(false, -1, 30);

    for auth in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        server_files(d);
        std::fs::write(d.join("ca.pem"), &pki.ca_pem).unwrap();
        let tls_auth = if auth {
            format!("  auth: on\n  ca: {}/ca.pem\n", d.display())
        } else {
            String::new()
        };
        let config = d.join("config.yaml");
        std::fs::write(
            &config,
            format!(
                "version: v1\nadmin:\n  identity: disabled\ntls:\n  key: {d}/server.key\n  cert: {d}/server.cert\n{tls_auth}\
                 policy:\n  readers:\n    allow: [/v1/key/describe/*]\n    identities: [{leaf_id}, {expired_id}, {own_id}]\n\
                 keys:\n  - name: my-key\n",
                d = d.display()
            ),
        )
        .unwrap();
        let server = start(&config, &[]).unwrap();
        let url = &server.url;
        write_client(d, "leaf", &[&leaf], &leaf_key);
        write_client(d, "leaf-and-ca", &[&leaf, &pki.ca_pem], &leaf_key);
        write_client(d, "two-leaves", &[&leaf, &other], &leaf_key);
        write_client(d, "expired", &[&expired], &expired_key);
        write_client(d, "own", &[&own], &own_key);

        let ok = |who: &str| {
            let (code, out) = handshake(d, who, url);
            assert!(
                code == 0 && out.ends_with("\n200"),
                "{who} (tls.auth {auth}): {code} {out}"
            );
        };
        let refused = |who: &str| {
            let (code, out) = handshake(d, who, url);
            assert!(code != 0, "{who} (tls.auth {auth}) was let in: {out}");
        };
        ok("leaf");
        // CA certificates in the chain are skipped: the identity is the leaf's.
        ok("leaf-and-ca");
        // Two certificates that are not CAs name no single client.
        let (code, out) = handshake(d, "two-leaves", url);
        assert!(code == 0 && out.ends_with("\n400"), "{out}");
        assert!(out.contains("tls: ") && out.contains("certificate"), "{out}");
        if auth {
            // With tls.auth: on, only current certificates of the configured CA.
            refused("expired");
            refused("own");
        } else {
            // Without it, as in KES, any certificate whose key the client holds is an
            // identity; the policy decides.
            ok("expired");
            ok("own");
        }
        drop(server);
    }
}

/// TLS 1.2 and 1.3 only, and only forward-secret AEAD suites: what OpenSSL's client
/// offers beyond that is refused in the handshake.
#[test]
fn only_tls_1_2_and_1_3_with_strong_suites() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_, server) = start_as_admin(d, "");
    let addr = server.url.trim_start_matches("https://").to_owned();
    let handshake = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(["s_client", "-connect", &addr, "-cert"])
            .arg(d.join("admin.cert"))
            .arg("-key")
            .arg(d.join("admin.key"))
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        // A completed handshake prints the negotiated protocol and a real cipher.
        let done = text.contains("Cipher is ") && !text.contains("Cipher is (NONE)");
        (done, text)
    };
    for ok in [
        vec!["-tls1_3"],
        vec![
            "-tls1_2",
            "-cipher",
            "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305",
        ],
    ] {
        let (done, text) = handshake(&ok);
        assert!(done, "{ok:?} was refused:\n{text}");
    }
    for refused in [
        vec!["-tls1_1", "-cipher", "ALL:@SECLEVEL=0"],
        vec!["-tls1", "-cipher", "ALL:@SECLEVEL=0"],
        vec!["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA384"],
        vec![
            "-tls1_2",
            "-cipher",
            "AES128-GCM-SHA256:AES256-SHA256:DHE-RSA-AES128-GCM-SHA256",
        ],
        vec![
            "-tls1_2",
            "-cipher",
            "ECDHE-ECDSA-DES-CBC3-SHA:ECDHE-ECDSA-RC4-SHA:@SECLEVEL=0",
        ],
    ] {
        let (done, text) = handshake(&refused);
        assert!(!done, "{refused:?} was accepted:\n{text}");
    }
}
