//! keyhost's API against a bare server doing the same work, over the same mutual TLS.
//!
//! The servers run one after another in child processes, pinned to core 0 when the
//! machine has two cores or more; the load client runs here, on one thread pinned to
//! core 1:
//!
//! - **bare**: axum over keyhost's rustls configuration and the same hyper connection
//!   code, doing only the JSON and crypto work of each operation on keys in a
//!   `HashMap` behind a lock, with responses of the same shape and size;
//! - **keyhost**: the `keyhost` release binary, started with a configuration file, in
//!   four set-ups: the in-memory keystore; the bundled fs plugin; the fs plugin with
//!   host-side sealing (`keystore.seal`); the in-memory keystore with audit logging
//!   on (to a file).
//!
//! The load client writes raw HTTP/1.1 over tokio-rustls (no HTTP library on the
//! client side, so that it is not the bottleneck): `KEYHOST_BENCH_CONNECTIONS`
//! (default 16) connections, one request at a time each, keep-alive, or a new TLS
//! connection per request. Each operation runs for a one-second warm-up and then
//! `KEYHOST_BENCH_SECONDS` (default 5) measured seconds. Printed per operation and
//! server: requests per second, p50/p99/max latency, server CPU µs per request,
//! server RSS, and the ratios keyhost/bare.
//!
//! Then, for keyhost alone: start-up to ready (in-memory; fs plugin with a cold and a
//! cached compiled artifact), and RSS after `KEYHOST_BENCH_REQUESTS` (default
//! 1,000,000) requests over `KEYHOST_BENCH_KEYS` (default 10,000) cached keys.
//!
//! Run with `scripts/bench server`, which builds the release binary first; or set
//! `KEYHOST_BIN` and run `cargo bench -p keyhost-bench --bench server`.

#![expect(clippy::unwrap_used, reason = "Benchmarks fail loudly by design")]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use keyhost_bench::percentile;
use keyhost_crypto::{Algorithm, CiphertextFormat, HmacKey, SecretKey};
use keyhost_test_support::load::{self, request};
use keyhost_tls::mint::DevCredentials;

const ROLE: &str = "KEYHOST_BENCH_ROLE";
const DIR: &str = "KEYHOST_BENCH_DIR";

fn main() {
    match std::env::var(ROLE).as_deref() {
        Ok(_) => serve_bare(),
        Err(_) => drive(),
    }
}

/// Tells the bare server to pin itself to core 0.
const PIN: &str = "KEYHOST_BENCH_PIN";

/// Whether server and client get a core each. Decided by the driver before it pins
/// itself: after that, the count of usable cores shrinks to the pinned one.
static PINNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn pinned() -> bool {
    PINNED.load(std::sync::atomic::Ordering::Relaxed)
}

/// Pins this thread, and the threads it starts after, to `core`.
fn pin(core: usize) {
    let mut set = rustix::thread::CpuSet::new();
    set.set(core);
    if let Err(e) = rustix::thread::sched_setaffinity(None, &set) {
        eprintln!("cannot pin to core {core}: {e}");
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

// ---------------------------------------------------------------- the bare server

struct BareKey {
    key: SecretKey,
    hmac: HmacKey,
    created_at: String,
    created_by: String,
}

type Keys = Arc<RwLock<HashMap<String, Arc<BareKey>>>>;

fn serve_bare() {
    if std::env::var_os(PIN).is_some() {
        pin(0);
    }
    let dir = PathBuf::from(std::env::var(DIR).unwrap());
    let chain = keyhost_tls::load_chain(&dir.join("server.cert")).unwrap();
    let key = keyhost_tls::load_key(&dir.join("server.key"), None).unwrap();
    let tls = Arc::new(keyhost_tls::server_config(chain, key, true).unwrap());
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
        bare(listener, tls).await;
    });
}

/// The bare server: the same TLS and HTTP stack, the same JSON and crypto work.
async fn bare(listener: tokio::net::TcpListener, tls: Arc<rustls::ServerConfig>) {
    use axum::routing::{delete, get, put};
    let keys: Keys = Arc::default();
    let app = axum::Router::new()
        .route("/v1/ready", get(|| async { "" }))
        .route("/v1/key/create/{name}", put(create))
        .route("/v1/key/delete/{name}", delete(remove))
        .route("/v1/key/describe/{name}", get(describe))
        .route("/v1/key/list/{prefix}", get(list))
        .route("/v1/key/generate/{name}", put(generate))
        .route("/v1/key/encrypt/{name}", put(encrypt))
        .route("/v1/key/decrypt/{name}", put(decrypt))
        .route("/v1/key/hmac/{name}", put(hmac))
        .with_state(keys);
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
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
    plaintext: Option<String>,
    #[serde(default)]
    ciphertext: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

type Answer = (axum::http::StatusCode, axum::Json<serde_json::Value>);

fn answer(value: serde_json::Value) -> Answer {
    (axum::http::StatusCode::OK, axum::Json(value))
}

fn missing() -> Answer {
    (
        axum::http::StatusCode::NOT_FOUND,
        axum::Json(serde_json::json!({ "message": "key does not exist" })),
    )
}

fn decode(field: Option<String>) -> Vec<u8> {
    field.map(|c| B64.decode(c).unwrap_or_default()).unwrap_or_default()
}

fn lookup(keys: &Keys, name: &str) -> Option<Arc<BareKey>> {
    keys.read().unwrap().get(name).cloned()
}

/// The key `name` and the JSON request in `body`, or the 404 answer.
fn key_and_request(keys: &Keys, name: &str, body: &[u8]) -> Result<(Arc<BareKey>, Body), Answer> {
    let key = lookup(keys, name).ok_or_else(missing)?;
    Ok((key, serde_json::from_slice(body).unwrap_or_default()))
}

type Name = axum::extract::Path<String>;
type Shared = axum::extract::State<Keys>;

async fn create(axum::extract::State(keys): Shared, axum::extract::Path(name): Name) -> Answer {
    let key = BareKey {
        key: SecretKey::generate(Algorithm::Aes256),
        hmac: HmacKey::generate(),
        created_at: "2026-01-01T00:00:00Z".into(),
        created_by: "0".repeat(64),
    };
    match keys.write().unwrap().entry(name) {
        std::collections::hash_map::Entry::Occupied(_) => (
            axum::http::StatusCode::BAD_REQUEST,
            axum::Json(serde_json::json!({ "message": "key already exists" })),
        ),
        std::collections::hash_map::Entry::Vacant(v) => {
            v.insert(Arc::new(key));
            answer(serde_json::Value::Null)
        }
    }
}

async fn remove(axum::extract::State(keys): Shared, axum::extract::Path(name): Name) -> Answer {
    match keys.write().unwrap().remove(&name) {
        Some(_) => answer(serde_json::Value::Null),
        None => missing(),
    }
}

async fn describe(axum::extract::State(keys): Shared, axum::extract::Path(name): Name) -> Answer {
    let Some(key) = lookup(&keys, &name) else {
        return missing();
    };
    answer(serde_json::json!({
        "name": name,
        "algorithm": key.key.algorithm().name(),
        "created_at": key.created_at,
        "created_by": key.created_by,
    }))
}

async fn list(axum::extract::State(keys): Shared, axum::extract::Path(prefix): Name) -> Answer {
    let prefix = prefix.trim_end_matches('*');
    let mut names: Vec<String> = keys
        .read()
        .unwrap()
        .keys()
        .filter(|n| n.starts_with(prefix))
        .cloned()
        .collect();
    names.sort();
    answer(serde_json::json!({ "names": names }))
}

async fn generate(
    axum::extract::State(keys): Shared,
    axum::extract::Path(name): Name,
    body: Bytes,
) -> Result<Answer, Answer> {
    let (key, request) = key_and_request(&keys, &name, &body)?;
    let context = decode(request.context);
    let dek = keyhost_crypto::random_key();
    let sealed = key.key.seal(&dek[..], &context, CiphertextFormat::Raw);
    Ok(answer(
        serde_json::json!({ "plaintext": B64.encode(&dek[..]), "ciphertext": B64.encode(sealed) }),
    ))
}

async fn encrypt(
    axum::extract::State(keys): Shared,
    axum::extract::Path(name): Name,
    body: Bytes,
) -> Result<Answer, Answer> {
    let (key, request) = key_and_request(&keys, &name, &body)?;
    let context = decode(request.context);
    let sealed = key
        .key
        .seal(&decode(request.plaintext), &context, CiphertextFormat::Raw);
    Ok(answer(serde_json::json!({ "ciphertext": B64.encode(sealed) })))
}

async fn decrypt(
    axum::extract::State(keys): Shared,
    axum::extract::Path(name): Name,
    body: Bytes,
) -> Result<Answer, Answer> {
    let (key, request) = key_and_request(&keys, &name, &body)?;
    let context = decode(request.context);
    let plain = key
        .key
        .open(&decode(request.ciphertext), &context)
        .map(|p| B64.encode(&p[..]))
        .unwrap_or_default();
    Ok(answer(serde_json::json!({ "plaintext": plain })))
}

async fn hmac(
    axum::extract::State(keys): Shared,
    axum::extract::Path(name): Name,
    body: Bytes,
) -> Result<Answer, Answer> {
    let (key, request) = key_and_request(&keys, &name, &body)?;
    Ok(answer(
        serde_json::json!({ "hmac": B64.encode(key.hmac.sign(&decode(request.message))) }),
    ))
}

// ---------------------------------------------------------------- the load client

/// TLS handshakes of the load client, and how many resumed a session.
static HANDSHAKES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static RESUMED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The raw HTTP/1.1-over-mTLS client of the test support crate, counting handshakes.
struct Conn;

impl Conn {
    async fn open(addr: SocketAddr, connector: &tokio_rustls::TlsConnector) -> std::io::Result<load::Conn> {
        let conn = load::Conn::open(addr, connector).await?;
        if conn.resumed() {
            RESUMED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        HANDSHAKES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(conn)
    }
}

fn connector(creds: &DevCredentials) -> tokio_rustls::TlsConnector {
    load::connector(
        creds.server_cert_der.clone(),
        &creds.admin_cert_pem,
        creds.admin_key_pem.as_str(),
    )
}

// ---------------------------------------------------------------- servers under test

struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    /// The bare server, in a child process of this benchmark.
    fn bare(dir: &Path) -> Self {
        let mut command = Command::new(std::env::current_exe().unwrap());
        if pinned() {
            command.env(PIN, "0");
        }
        let mut child = command
            .env(ROLE, "bare")
            .env(DIR, dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port: u16 = line.trim().parse().unwrap();
        Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }

    /// The keyhost binary with `config`, pinned to core 0; audit lines (stdout) go
    /// to `stdout`. Returns once it is ready, with the time that took.
    async fn keyhost(
        bin: &Path,
        config: &Path,
        cache: &Path,
        stdout: &Path,
        connector: &tokio_rustls::TlsConnector,
    ) -> (Self, Duration) {
        let port = keyhost_test_support::free_port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut command = if pinned() {
            let mut c = Command::new("taskset");
            c.arg("-c").arg("0").arg(bin);
            c
        } else {
            Command::new(bin)
        };
        let start = Instant::now();
        let child = command
            .arg("server")
            .arg("--config")
            .arg(config)
            .arg("--addr")
            .arg(addr.to_string())
            .env("XDG_CACHE_HOME", cache)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(stdout).unwrap())
            .spawn()
            .unwrap();
        let mut server = Self { child, addr };
        let ready = request("GET", "/v1/ready", b"", false);
        loop {
            if let Ok(mut conn) = Conn::open(addr, connector).await
                && let Ok((200, _)) = conn.send(&ready).await
            {
                break;
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("keyhost exited before it was ready: {status}");
            }
            assert!(start.elapsed() < Duration::from_secs(60), "keyhost not ready in 60 s");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let took = start.elapsed();
        (server, took)
    }

    /// CPU time (user + system) the server has used so far.
    fn cpu(&self) -> Duration {
        cpu_of(self.child.id())
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

/// CPU time (user + system) process `pid` has used so far.
fn cpu_of(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks: u64 = fields.get(11).and_then(|u| u.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|s| s.parse().ok()).unwrap_or(0);
    // Linux reports CPU time in clock ticks of 1/100 s.
    Duration::from_millis(ticks * 10)
}

// ---------------------------------------------------------------- operations and load

/// What one iteration of an operation sends.
#[derive(Clone)]
enum Steps {
    /// The same request each time.
    Fixed(Arc<[u8]>),
    /// Create a key, then delete it (two requests).
    CreateDelete,
    /// The same request on a new TLS connection each time.
    FreshConnection(Arc<[u8]>),
    /// Generate with key `prefix{n % count}`, n running over iterations.
    Spread { prefix: &'static str, count: usize },
}

struct Measured {
    ops: usize,
    rps: f64,
    p50: Duration,
    p99: Duration,
    max: Duration,
    cpu_us: f64,
    client_cpu_us: f64,
    /// The share of TLS handshakes that resumed a session, when there were any.
    resumed: Option<f64>,
    rss: f64,
}

/// Runs `steps` from `connections` connections for `warmup` and then `seconds`, or
/// until `total` iterations when given.
async fn load(
    server: &Server,
    connector: &tokio_rustls::TlsConnector,
    connections: usize,
    steps: &Steps,
    warmup: Duration,
    seconds: f64,
    total: Option<u64>,
) -> Measured {
    let t0 = Instant::now();
    let measure_from = t0 + warmup;
    let until = measure_from + Duration::from_secs_f64(seconds);
    let tasks: Vec<_> = (0..connections)
        .map(|c| {
            let (connector, steps, addr) = (connector.clone(), steps.clone(), server.addr);
            let share = total.map(|t| t / connections as u64 + u64::from((c as u64) < t % connections as u64));
            tokio::task::spawn_local(async move {
                let mut times = Vec::with_capacity(1 << 16);
                let mut conn = match steps {
                    Steps::FreshConnection(_) => None,
                    _ => Some(Conn::open(addr, &connector).await.unwrap()),
                };
                let mut i: u64 = 0;
                loop {
                    let start = Instant::now();
                    match share {
                        Some(n) if i >= n => break,
                        None if start >= until => break,
                        _ => {}
                    }
                    match &steps {
                        Steps::Fixed(r) => check(conn.as_mut().unwrap().send(r).await, "request"),
                        Steps::FreshConnection(r) => {
                            let mut fresh = Conn::open(addr, &connector).await.unwrap();
                            check(fresh.send(r).await, "request on a new connection");
                        }
                        Steps::CreateDelete => {
                            let name = format!("cd-{c}-{i}");
                            let conn = conn.as_mut().unwrap();
                            check(
                                conn.send(&request("PUT", &format!("/v1/key/create/{name}"), b"", false))
                                    .await,
                                "create",
                            );
                            check(
                                conn.send(&request("DELETE", &format!("/v1/key/delete/{name}"), b"", false))
                                    .await,
                                "delete",
                            );
                        }
                        Steps::Spread { prefix, count } => {
                            let n = (c as u64 * 7919 + i) % *count as u64;
                            let path = format!("/v1/key/generate/{prefix}{n}");
                            check(
                                conn.as_mut().unwrap().send(&request("PUT", &path, b"{}", false)).await,
                                "generate",
                            );
                        }
                    }
                    if total.is_some() || start >= measure_from {
                        times.push(start.elapsed());
                    }
                    i += 1;
                }
                times
            })
        })
        .collect();
    if total.is_none() {
        tokio::time::sleep_until(measure_from.into()).await;
    }
    let cpu_before = server.cpu();
    let client_before = cpu_of(std::process::id());
    let handshakes_before = HANDSHAKES.load(std::sync::atomic::Ordering::Relaxed);
    let resumed_before = RESUMED.load(std::sync::atomic::Ordering::Relaxed);
    let start = Instant::now();
    let mut times = Vec::new();
    for t in tasks {
        times.extend(t.await.unwrap());
    }
    let elapsed = start.elapsed();
    let cpu = server.cpu().saturating_sub(cpu_before);
    let client_cpu = cpu_of(std::process::id()).saturating_sub(client_before);
    let handshakes = HANDSHAKES.load(std::sync::atomic::Ordering::Relaxed) - handshakes_before;
    let resumed = RESUMED.load(std::sync::atomic::Ordering::Relaxed) - resumed_before;
    times.sort_unstable();
    Measured {
        ops: times.len(),
        rps: times.len() as f64 / elapsed.as_secs_f64(),
        p50: percentile(&times, 0.5),
        p99: percentile(&times, 0.99),
        max: times.last().copied().unwrap_or_default(),
        cpu_us: cpu.as_secs_f64() * 1e6 / times.len().max(1) as f64,
        client_cpu_us: client_cpu.as_secs_f64() * 1e6 / times.len().max(1) as f64,
        resumed: (handshakes > 0).then(|| resumed as f64 / handshakes as f64),
        rss: server.rss_mib(),
    }
}

fn check(result: std::io::Result<(u16, Vec<u8>)>, what: &str) {
    match result {
        Ok((status, _)) if (200..300).contains(&status) => {}
        Ok((status, body)) => panic!("{what}: {status} {}", String::from_utf8_lossy(&body)),
        Err(e) => panic!("{what}: {e}"),
    }
}

/// Sends one request on a new connection and returns the body; panics unless 2xx.
async fn once(
    server: &Server,
    connector: &tokio_rustls::TlsConnector,
    method: &str,
    path: &str,
    body: &[u8],
) -> Vec<u8> {
    let mut conn = Conn::open(server.addr, connector).await.unwrap();
    let (status, body) = conn.send(&request(method, path, body, false)).await.unwrap();
    assert!(
        (200..300).contains(&status),
        "{path}: {status} {}",
        String::from_utf8_lossy(&body)
    );
    body
}

/// Creates `prefix0..prefix{count}` from `connections` connections at once.
async fn create_keys(
    server: &Server,
    connector: &tokio_rustls::TlsConnector,
    connections: usize,
    prefix: &str,
    count: usize,
) {
    let tasks: Vec<_> = (0..connections)
        .map(|c| {
            let (connector, addr, prefix) = (connector.clone(), server.addr, prefix.to_owned());
            tokio::task::spawn_local(async move {
                let mut conn = Conn::open(addr, &connector).await.unwrap();
                for n in (c..count).step_by(connections) {
                    let path = format!("/v1/key/create/{prefix}{n}");
                    check(conn.send(&request("PUT", &path, b"", false)).await, "create");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

/// The operations of the comparison, in order: name, what an iteration sends, and
/// the response size (checked equal between servers).
async fn operations(server: &Server, connector: &tokio_rustls::TlsConnector) -> Vec<(&'static str, Steps, usize)> {
    let context = B64.encode(b"{\"bucket\":\"bench\"}");
    let generated = once(
        server,
        connector,
        "PUT",
        "/v1/key/generate/bench",
        format!("{{\"context\":\"{context}\"}}").as_bytes(),
    )
    .await;
    let generated: serde_json::Value = serde_json::from_slice(&generated).unwrap();
    let bodies = [
        (
            "generate",
            "PUT",
            "/v1/key/generate/bench",
            format!("{{\"context\":\"{context}\"}}"),
        ),
        (
            "encrypt",
            "PUT",
            "/v1/key/encrypt/bench",
            format!(
                "{{\"plaintext\":\"{}\",\"context\":\"{context}\"}}",
                B64.encode([9u8; 32])
            ),
        ),
        (
            "decrypt",
            "PUT",
            "/v1/key/decrypt/bench",
            format!(
                "{{\"ciphertext\":{},\"context\":\"{context}\"}}",
                generated["ciphertext"]
            ),
        ),
        (
            "hmac",
            "PUT",
            "/v1/key/hmac/bench",
            format!("{{\"message\":\"{}\"}}", B64.encode([3u8; 32])),
        ),
        ("describe", "GET", "/v1/key/describe/bench", String::new()),
        ("list 1,000 keys", "GET", "/v1/key/list/list-*", String::new()),
    ];
    let mut ops = Vec::new();
    for (name, method, path, body) in bodies {
        let size = once(server, connector, method, path, body.as_bytes()).await.len();
        ops.push((name, Steps::Fixed(request(method, path, body.as_bytes(), false)), size));
        if name == "generate" {
            ops.push((
                "generate, new connection each",
                Steps::FreshConnection(request(method, path, body.as_bytes(), true)),
                size,
            ));
        }
    }
    ops.push(("create + delete", Steps::CreateDelete, 0));
    ops
}

// ---------------------------------------------------------------- the driver

fn config(dir: &Path, name: &str, admin: &str, keystore: &str, audit: bool) -> PathBuf {
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &path,
        format!(
            "version: v1\nadmin:\n  identity: {admin}\ntls:\n  key: {d}/server.key\n  cert: {d}/server.cert\n\
             log:\n  error: on\n  audit: {audit}\n{keystore}",
            d = dir.display(),
            audit = if audit { "on" } else { "off" },
        ),
    )
    .unwrap();
    path
}

/// The keyhost binary: `KEYHOST_BIN`, or the one next to this benchmark's directory.
fn keyhost_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("KEYHOST_BIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().and_then(Path::parent).unwrap().join("keyhost");
    assert!(
        bin.exists(),
        "{} is missing: run scripts/bench, or build it (cargo build --release -p keyhost) or set KEYHOST_BIN",
        bin.display()
    );
    bin
}

/// Whether `name` is selected by the comma-separated list of substrings in the
/// environment variable `filter` (everything when unset).
fn wanted(filter: &str, name: &str) -> bool {
    std::env::var(filter).map_or(true, |list| list.split(',').any(|part| name.contains(part.trim())))
}

fn row(op: &str, server: &str, m: &Measured, bare: Option<&Measured>) {
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let (rps_ratio, p99_ratio) = match bare {
        Some(b) => (
            format!("{:.2}×", m.rps / b.rps),
            format!("{:.2}×", m.p99.as_secs_f64() / b.p99.as_secs_f64()),
        ),
        None => (String::new(), String::new()),
    };
    let server = match m.resumed {
        Some(share) => format!("{server} ({:.0} % resumed)", share * 100.0),
        None => server.to_owned(),
    };
    println!(
        "| {op} | {server} | {:.0} | {:.0} | {:.0} | {:.0} | {:.1} | {:.1} | {:.1} | {rps_ratio} | {p99_ratio} |",
        m.rps,
        us(m.p50),
        us(m.p99),
        us(m.max),
        m.cpu_us,
        m.client_cpu_us,
        m.rss
    );
}

fn drive() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cores >= 2 {
        PINNED.store(true, std::sync::atomic::Ordering::Relaxed);
        pin(1);
    }
    let seconds: f64 = env_or("KEYHOST_BENCH_SECONDS", 3.0);
    let connections: usize = env_or("KEYHOST_BENCH_CONNECTIONS", 16);
    let requests: u64 = env_or("KEYHOST_BENCH_REQUESTS", 1_000_000);
    let soak_keys: usize = env_or("KEYHOST_BENCH_KEYS", 10_000);
    let rounds_wanted: usize = env_or("KEYHOST_BENCH_ROUNDS", 3);
    let warmup = Duration::from_secs_f64(seconds.min(1.0));
    let bin = keyhost_bin();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let creds = DevCredentials::generate(&["localhost".into(), "127.0.0.1".into()]).unwrap();
    std::fs::write(d.join("server.cert"), &creds.server_cert_pem).unwrap();
    keyhost_test_support::write_private(d.join("server.key"), creds.server_key_pem.as_str());
    let admin = creds.admin.identity().to_string();
    let connector = connector(&creds);
    let cache = d.join("cache");
    let (kek_file, kek_id) = {
        use std::os::unix::fs::PermissionsExt;
        let (kek, bytes) = keyhost_seal::Kek::generate();
        let path = d.join("kek");
        std::fs::write(&path, B64.encode(*bytes)).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        (path, kek.id().to_owned())
    };

    let configs = [
        ("keyhost, memory", config(d, "memory", &admin, "", false)),
        (
            "keyhost, fs plugin",
            config(
                d,
                "fs",
                &admin,
                &format!("keystore:\n  fs:\n    path: {}/keys\n", d.display()),
                false,
            ),
        ),
        (
            "keyhost, fs plugin, sealed",
            config(
                d,
                "sealed",
                &admin,
                &format!(
                    "keystore:\n  fs:\n    path: {}/sealed-keys\n  seal:\n    keys:\n      - id: {}\n        file: {}\n",
                    d.display(),
                    kek_id,
                    kek_file.display()
                ),
                false,
            ),
        ),
        ("keyhost, memory, audit on", config(d, "audit", &admin, "", true)),
    ];

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async {
        println!(
            "keyhost {} · {connections} connections · {:.1} s per operation after {:.1} s warm-up, median of {rounds_wanted} rounds · {}",
            bin.display(),
            seconds,
            warmup.as_secs_f64(),
            if pinned() { "server on core 0, client on core 1" } else { "one core: server and client share it" }
        );
        println!();
        println!(
            "| operation | server | req/s | p50 µs | p99 µs | max µs | server CPU µs/req | client CPU µs/req | RSS MiB | req/s vs bare | p99 vs bare |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|---|");

        // Every server runs at once (idle ones cost nothing); each operation is
        // measured on each server in turn, `rounds` times, so that drift of the
        // machine affects all alike. The round with the median rate is reported.
        let mut servers = Vec::new();
        for (role, config) in std::iter::once(("bare", None)).chain(configs.iter().map(|(r, c)| (*r, Some(c)))) {
            if !wanted("KEYHOST_BENCH_SERVERS", role) {
                continue;
            }
            let server = match config {
                None => Server::bare(d),
                Some(config) => {
                    Server::keyhost(&bin, config, &cache, &d.join(format!("{}.out", servers.len())), &connector)
                        .await
                        .0
                }
            };
            once(&server, &connector, "PUT", "/v1/key/create/bench", b"").await;
            let audit = role.contains("audit");
            if !audit {
                create_keys(&server, &connector, connections, "list-", 1000).await;
            }
            let ops: Vec<_> = operations(&server, &connector)
                .await
                .into_iter()
                .filter(|(op, _, _)| (!audit || matches!(*op, "generate" | "decrypt")) && wanted("KEYHOST_BENCH_OPS", op))
                .collect();
            servers.push((role, server, ops));
        }
        let names: Vec<&str> = servers
            .iter()
            .flat_map(|(_, _, ops)| ops.iter().map(|(op, _, _)| *op))
            .fold(Vec::new(), |mut names, op| {
                if !names.contains(&op) {
                    names.push(op);
                }
                names
            });
        for op in names {
            let mut rounds: Vec<Vec<Measured>> = servers.iter().map(|_| Vec::new()).collect();
            for _ in 0..rounds_wanted {
                for (i, (_, server, ops)) in servers.iter().enumerate() {
                    if let Some((_, steps, _)) = ops.iter().find(|(o, _, _)| *o == op) {
                        let m = load(server, &connector, connections, steps, warmup, seconds, None).await;
                        rounds[i].push(m);
                    }
                }
            }
            let medians: Vec<Option<Measured>> = rounds
                .into_iter()
                .map(|mut r| {
                    r.sort_by(|a, b| a.rps.total_cmp(&b.rps));
                    let mid = r.len() / 2;
                    (!r.is_empty()).then(|| r.swap_remove(mid))
                })
                .collect();
            let bare = servers
                .iter()
                .position(|(role, _, _)| *role == "bare")
                .and_then(|i| medians[i].as_ref());
            let bare_size = servers
                .iter()
                .find(|(role, _, _)| *role == "bare")
                .and_then(|(_, _, ops)| ops.iter().find(|(o, _, _)| *o == op))
                .map(|(_, _, size)| *size);
            for ((role, _, ops), m) in servers.iter().zip(&medians) {
                let Some(m) = m else { continue };
                let size = ops.iter().find(|(o, _, _)| *o == op).map(|(_, _, size)| *size);
                if let (Some(a), Some(b)) = (size, bare_size)
                    && a != b
                {
                    println!("<!-- {op}: the response of {role} has {a} bytes, the bare server's {b} -->");
                }
                row(op, role, m, bare.filter(|_| *role != "bare"));
            }
        }
        drop(servers);

        // Start-up to ready.
        println!();
        println!("| start-up to ready (median of 5) | ms |");
        println!("|---|---|");
        let startup = |label: &'static str, config: PathBuf, cold: bool| {
            let (connector, bin, d) = (connector.clone(), bin.clone(), d.to_owned());
            async move {
                let mut times = Vec::new();
                for run in 0..5 {
                    let cache = if cold { d.join(format!("cold-{label}-{run}")) } else { d.join("cache") };
                    let (server, took) = Server::keyhost(&bin, &config, &cache, &d.join("startup.out"), &connector).await;
                    drop(server);
                    times.push(took);
                }
                times.sort();
                println!("| {label} | {:.1} |", times[2].as_secs_f64() * 1e3);
            }
        };
        startup("in-memory keystore", configs[0].1.clone(), false).await;
        startup("fs plugin, no compiled artifact (cold)", configs[1].1.clone(), true).await;
        startup("fs plugin, cached compiled artifact", configs[1].1.clone(), false).await;

        // Memory after many requests over many cached keys.
        let soak_config = config(
            d,
            "soak",
            &admin,
            &format!("keystore:\n  fs:\n    path: {}/soak-keys\n", d.display()),
            false,
        );
        let (server, _) = Server::keyhost(&bin, &soak_config, &cache, &d.join("soak.out"), &connector).await;
        let fresh = server.rss_mib();
        create_keys(&server, &connector, connections, "soak-", soak_keys).await;
        let after_create = server.rss_mib();
        let spread = Steps::Spread {
            prefix: "soak-",
            count: soak_keys,
        };
        let m = load(&server, &connector, connections, &spread, Duration::ZERO, 0.0, Some(requests)).await;
        println!();
        println!("| keyhost, fs plugin, {soak_keys} keys | RSS MiB |");
        println!("|---|---|");
        println!("| ready | {fresh:.1} |");
        println!("| after creating the keys | {after_create:.1} |");
        println!(
            "| after {} generate requests over all keys ({:.0} req/s, p99 {:.0} µs) | {:.1} |",
            m.ops,
            m.rps,
            m.p99.as_secs_f64() * 1e6,
            m.rss
        );
    });
}
