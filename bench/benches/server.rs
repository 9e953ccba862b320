//! keyhost's API against a bare server doing the same work, over the same mutual TLS.
//!
//! Both servers run in a child process of this benchmark, pinned to core 0 when the
//! machine has two cores or more; the load client runs here, pinned to core 1:
//!
//! - **keyhost**: `keyhost-server` with the in-memory keystore, an admin identity,
//!   and everything a request goes through (routing, identity, policy, key cache,
//!   metrics, audit hooks, error mapping);
//! - **bare**: axum over the same rustls configuration and the same hyper connection
//!   code, doing only the JSON and crypto work of each operation with a fixed key.
//!
//! Each operation runs for `KEYHOST_BENCH_SECONDS` (default 5) after a one-second
//! warm-up, from `KEYHOST_BENCH_CONNECTIONS` (default 16) keep-alive connections,
//! one request at a time each. Printed per operation and server: requests per second,
//! p50/p99/max latency, server CPU µs per request, server RSS, and keyhost/bare.
//!
//! Run with `cargo bench -p keyhost-bench --bench server`.

#![allow(clippy::unwrap_used)] // Benchmarks fail loudly by design.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use keyhost_bench::percentile;
use keyhost_crypto::{Algorithm, CiphertextFormat, SecretKey};
use keyhost_server::dev::DevCredentials;

const ROLE: &str = "KEYHOST_BENCH_ROLE";
const DIR: &str = "KEYHOST_BENCH_DIR";

fn main() {
    match std::env::var(ROLE).as_deref() {
        Ok(role) => serve(role),
        Err(_) => drive(),
    }
}

/// Pins this process (all its threads started after) to one core, if there is one.
fn pin(core: usize) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cores < 2 {
        return;
    }
    let mut set = rustix::thread::CpuSet::new();
    set.set(core % cores);
    let _ = rustix::thread::sched_setaffinity(None, &set);
}

// ---------------------------------------------------------------- servers

fn serve(role: &str) {
    pin(0);
    let dir = std::path::PathBuf::from(std::env::var(DIR).unwrap());
    let chain = keyhost_server::tls::load_chain(&dir.join("server.cert")).unwrap();
    let key = keyhost_server::tls::load_key(&dir.join("server.key"), None).unwrap();
    let tls = Arc::new(keyhost_server::tls::server_config(chain, key, true).unwrap());
    let admin = keyhost_policy::Identity::parse(&std::fs::read_to_string(dir.join("admin.id")).unwrap()).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("{}", listener.local_addr().unwrap().port());
        // Stop when the driver closes our stdin.
        tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
            std::process::exit(0);
        });
        match role {
            "keyhost" => {
                let state = keyhost_server::State::new(
                    Arc::new(keyhost_keystore::MemStore::new()),
                    keyhost_policy::Authorizer::new(Some(admin)),
                );
                keyhost_server::serve(listener, tls, Arc::new(state)).await.unwrap();
            }
            _ => bare(listener, tls).await,
        }
    });
}

/// The bare server: the same TLS and HTTP stack, the same JSON and crypto work.
async fn bare(listener: tokio::net::TcpListener, tls: Arc<rustls::ServerConfig>) {
    use axum::routing::put;
    let key = Arc::new(SecretKey::new(Algorithm::Aes256, [7; 32]));
    let app = axum::Router::new()
        .route("/v1/key/create/{name}", put(|| async { "" }).post(|| async { "" }))
        .route(
            "/v1/key/generate/{name}",
            put(generate).post(generate).with_state(key.clone()),
        )
        .route("/v1/key/decrypt/{name}", put(decrypt).post(decrypt).with_state(key));
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let (tcp, _) = listener.accept().await.unwrap();
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let Ok(stream) = acceptor.accept(tcp).await else { return };
            let service = hyper_util::service::TowerToHyperService::new(app);
            let _ = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

#[derive(serde::Deserialize, Default)]
struct Body {
    #[serde(default)]
    context: Option<String>,
    #[serde(default)]
    ciphertext: Option<String>,
}

async fn generate(
    axum::extract::State(key): axum::extract::State<Arc<SecretKey>>,
    body: Bytes,
) -> axum::Json<serde_json::Value> {
    let request: Body = serde_json::from_slice(&body).unwrap_or_default();
    let context = request
        .context
        .map(|c| B64.decode(c).unwrap_or_default())
        .unwrap_or_default();
    let dek = keyhost_crypto::random_key();
    let sealed = key.seal(&dek[..], &context, CiphertextFormat::Raw);
    axum::Json(serde_json::json!({ "plaintext": B64.encode(&dek[..]), "ciphertext": B64.encode(sealed) }))
}

async fn decrypt(
    axum::extract::State(key): axum::extract::State<Arc<SecretKey>>,
    body: Bytes,
) -> axum::Json<serde_json::Value> {
    let request: Body = serde_json::from_slice(&body).unwrap_or_default();
    let context = request
        .context
        .map(|c| B64.decode(c).unwrap_or_default())
        .unwrap_or_default();
    let sealed = B64.decode(request.ciphertext.unwrap_or_default()).unwrap_or_default();
    let plain = key
        .open(&sealed, &context)
        .map(|p| B64.encode(&p[..]))
        .unwrap_or_default();
    axum::Json(serde_json::json!({ "plaintext": plain }))
}

// ---------------------------------------------------------------- driver

struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(role: &str, dir: &std::path::Path) -> Self {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .env(ROLE, role)
            .env(DIR, dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        Self {
            child,
            port: line.trim().parse().unwrap(),
        }
    }

    /// CPU time (user + system) the server has used so far.
    fn cpu(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
        let ticks: u64 = fields.get(11).and_then(|u| u.parse().ok()).unwrap_or(0)
            + fields.get(12).and_then(|s| s.parse().ok()).unwrap_or(0);
        // Linux reports CPU time in clock ticks of 1/100 s.
        Duration::from_millis(ticks * 10)
    }

    fn rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kib| kib / 1024.0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

type Client = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<Bytes>,
>;

fn client(creds: &DevCredentials, connections: usize) -> Client {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    roots.add(creds.server_cert_der.clone()).unwrap();
    let cert = CertificateDer::from_pem_slice(creds.admin_cert_pem.as_bytes()).unwrap();
    let key = PrivateKeyDer::from_pem_slice(creds.admin_key_pem.as_bytes()).unwrap();
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(vec![cert], key)
        .unwrap();
    let mut tcp = hyper_util::client::legacy::connect::HttpConnector::new();
    tcp.set_nodelay(true);
    tcp.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .wrap_connector(tcp);
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_max_idle_per_host(connections)
        .build(https)
}

async fn call(client: &Client, url: &str, body: &Bytes) -> Bytes {
    let request = http::Request::post(url).body(Full::new(body.clone())).unwrap();
    let response = client.request(request).await.unwrap();
    assert!(response.status().is_success(), "{url}: {}", response.status());
    response.into_body().collect().await.unwrap().to_bytes()
}

struct Measured {
    rps: f64,
    p50: Duration,
    p99: Duration,
    max: Duration,
    cpu_us: f64,
    rss: f64,
}

async fn load(
    server: &Server,
    client: &Client,
    connections: usize,
    url: String,
    body: Bytes,
    seconds: u64,
) -> Measured {
    let run = |until: Instant| {
        let handles: Vec<_> = (0..connections)
            .map(|_| {
                let (client, url, body) = (client.clone(), url.clone(), body.clone());
                tokio::spawn(async move {
                    let mut times = Vec::new();
                    while Instant::now() < until {
                        let start = Instant::now();
                        call(&client, &url, &body).await;
                        times.push(start.elapsed());
                    }
                    times
                })
            })
            .collect();
        async move {
            let mut all = Vec::new();
            for h in handles {
                all.extend(h.await.unwrap());
            }
            all
        }
    };
    run(Instant::now() + Duration::from_secs(1)).await;
    let cpu_before = server.cpu();
    let start = Instant::now();
    let mut times = run(start + Duration::from_secs(seconds)).await;
    let elapsed = start.elapsed();
    let cpu = server.cpu().saturating_sub(cpu_before);
    times.sort();
    Measured {
        rps: times.len() as f64 / elapsed.as_secs_f64(),
        p50: percentile(&times, 0.5),
        p99: percentile(&times, 0.99),
        max: times.last().copied().unwrap_or_default(),
        cpu_us: cpu.as_secs_f64() * 1e6 / times.len().max(1) as f64,
        rss: server.rss_mib(),
    }
}

fn drive() {
    pin(1);
    let seconds: u64 = std::env::var("KEYHOST_BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let connections: usize = std::env::var("KEYHOST_BENCH_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16);
    let dir = tempfile::tempdir().unwrap();
    let creds = DevCredentials::generate(&["localhost".into(), "127.0.0.1".into()]).unwrap();
    std::fs::write(dir.path().join("server.cert"), &creds.server_cert_pem).unwrap();
    std::fs::write(dir.path().join("server.key"), creds.server_key_pem.as_str()).unwrap();
    std::fs::write(dir.path().join("admin.id"), creds.admin.identity().as_str()).unwrap();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        println!("{connections} keep-alive connections, {seconds} s per operation; server on core 0, client on core 1");
        println!(
            "| operation | server | req/s | p50 µs | p99 µs | max µs | server CPU µs/req | RSS MiB | keyhost/bare |"
        );
        println!("|---|---|---|---|---|---|---|---|---|");
        let mut results = Vec::new();
        for role in ["bare", "keyhost"] {
            let server = Server::start(role, dir.path());
            let client = client(&creds, connections);
            let base = format!("https://localhost:{}", server.port);
            call(&client, &format!("{base}/v1/key/create/bench"), &Bytes::new()).await;
            let generated = call(
                &client,
                &format!("{base}/v1/key/generate/bench"),
                &Bytes::from_static(b"{}"),
            )
            .await;
            let ciphertext: serde_json::Value = serde_json::from_slice(&generated).unwrap();
            let decrypt_body = Bytes::from(serde_json::json!({ "ciphertext": ciphertext["ciphertext"] }).to_string());
            for (op, path, body) in [
                ("generate", "generate", Bytes::from_static(b"{\"context\":\"e30=\"}")),
                ("decrypt", "decrypt", decrypt_body),
            ] {
                let m = load(
                    &server,
                    &client,
                    connections,
                    format!("{base}/v1/key/{path}/bench"),
                    body,
                    seconds,
                )
                .await;
                results.push((op, role, m));
            }
        }
        for op in ["generate", "decrypt"] {
            let bare = results
                .iter()
                .find(|(o, r, _)| *o == op && *r == "bare")
                .map(|(_, _, m)| m.rps);
            for (o, role, m) in results.iter().filter(|(o, _, _)| *o == op) {
                let ratio = match (role, bare) {
                    (&"keyhost", Some(b)) => format!("{:.2}×", m.rps / b),
                    _ => String::new(),
                };
                println!(
                    "| {o} | {role} | {:.0} | {:.0} | {:.0} | {:.0} | {:.1} | {:.1} | {ratio} |",
                    m.rps,
                    m.p50.as_secs_f64() * 1e6,
                    m.p99.as_secs_f64() * 1e6,
                    m.max.as_secs_f64() * 1e6,
                    m.cpu_us,
                    m.rss
                );
            }
        }
    });
}
