//! The cost of a full TLS handshake with keyhost's server configuration (client
//! certificate, no resumption), by key exchange group: the hybrid post-quantum
//! X25519MLKEM768 that keyhost prefers, against classic X25519 on the same provider
//! in the same run. In memory, one thread: it measures the cryptography, not the
//! network.
//!
//! `cargo bench -p keyhost-bench --bench handshake` (or `scripts/bench handshake`).

#![expect(clippy::unwrap_used, reason = "Benchmarks fail loudly by design")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, NamedGroup, ServerConnection};

fn pump(client: &mut ClientConnection, server: &mut ServerConnection) {
    let mut buf = Vec::new();
    while client.is_handshaking() || server.is_handshaking() {
        buf.clear();
        while client.wants_write() {
            client.write_tls(&mut buf).unwrap();
        }
        if !buf.is_empty() {
            server.read_tls(&mut buf.as_slice()).unwrap();
            server.process_new_packets().unwrap();
        }
        buf.clear();
        while server.wants_write() {
            server.write_tls(&mut buf).unwrap();
        }
        if !buf.is_empty() {
            client.read_tls(&mut buf.as_slice()).unwrap();
            client.process_new_packets().unwrap();
        }
    }
}

fn main() {
    let seconds: f64 = std::env::var("KEYHOST_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let creds = keyhost_tls::mint::DevCredentials::generate(&["localhost".into()]).unwrap();
    let mut server_config = creds.server_config().unwrap();
    // Full handshakes only.
    server_config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    server_config.send_tls13_tickets = 0;
    let server_config = Arc::new(server_config);
    let (cert, key) = keyhost_tls::mint::client_certificate(&creds.admin).unwrap();
    let client = |group: NamedGroup| {
        let mut provider = rustls::crypto::aws_lc_rs::default_provider();
        provider.kx_groups.retain(|g| g.name() == group);
        let mut roots = rustls::RootCertStore::empty();
        roots.add(creds.server_cert_der.clone()).unwrap();
        let mut config = ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap();
        config.resumption = rustls::client::Resumption::disabled();
        Arc::new(config)
    };
    println!("| key exchange | handshakes/s | µs per handshake | vs X25519 |");
    println!("|---|---|---|---|");
    let mut baseline = None;
    for group in [NamedGroup::X25519, NamedGroup::X25519MLKEM768] {
        let config = client(group);
        let run = |budget: Duration| {
            let start = Instant::now();
            let mut n = 0u64;
            while start.elapsed() < budget {
                let mut c = ClientConnection::new(config.clone(), ServerName::try_from("localhost").unwrap()).unwrap();
                let mut s = ServerConnection::new(server_config.clone()).unwrap();
                pump(&mut c, &mut s);
                assert_eq!(c.negotiated_key_exchange_group().unwrap().name(), group);
                n += 1;
            }
            n as f64 / start.elapsed().as_secs_f64()
        };
        run(Duration::from_secs_f64(seconds / 10.0)); // warm-up
        let rate = run(Duration::from_secs_f64(seconds));
        let ratio = baseline.map_or(1.0, |b: f64| rate / b);
        baseline.get_or_insert(rate);
        println!("| {group:?} | {rate:.0} | {:.0} | {ratio:.2}× |", 1e6 / rate);
    }
}
