//! Load on a running keyhost server: a raw HTTP/1.1 client over mutual TLS, and a
//! generator that keeps many such clients busy and checks every answer.
//!
//! The client writes requests by hand and parses responses with `httparse`, so that
//! it costs little next to the server (the benchmarks need that) and so that it sees
//! exactly what the server sent (the soak and the fault tests need that).
//!
//! [`Load`] runs on its own thread and runtime, so that synchronous tests can start
//! it, break something, and look at what the clients saw: every failure with its
//! time, operation and answer.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One HTTP/1.1 connection over mutual TLS, one request at a time.
#[derive(Debug)]
pub struct Conn {
    tls: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    buf: Vec<u8>,
}

impl Conn {
    /// Connects to `addr` (as `localhost`) and completes the TLS handshake.
    pub async fn open(addr: SocketAddr, connector: &tokio_rustls::TlsConnector) -> std::io::Result<Self> {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let name = ServerName::try_from("localhost").expect("a valid name");
        let tls = connector.connect(name, tcp).await?;
        Ok(Self {
            tls,
            buf: Vec::with_capacity(16 * 1024),
        })
    }

    /// Whether the handshake resumed an earlier TLS session.
    pub fn resumed(&self) -> bool {
        self.tls.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed)
    }

    /// Sends one request (see [`request`]) and reads its response: the status and
    /// the body. Bodies must come with `Content-Length`.
    pub async fn send(&mut self, request: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
        self.tls.write_all(request).await?;
        self.tls.flush().await?;
        loop {
            if let Some((status, head, length)) = parse_head(&self.buf)? {
                while self.buf.len() < head + length {
                    self.fill().await?;
                }
                let body = self.buf[head..head + length].to_vec();
                self.buf.drain(..head + length);
                return Ok((status, body));
            }
            self.fill().await?;
        }
    }

    async fn fill(&mut self) -> std::io::Result<()> {
        self.buf.reserve(8 * 1024);
        if self.tls.read_buf(&mut self.buf).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok(())
    }
}

/// The status, head length and body length of a complete response head in `buf`.
fn parse_head(buf: &[u8]) -> std::io::Result<Option<(u16, usize, usize)>> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let invalid = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
    match response.parse(buf).map_err(|e| invalid(format!("bad response: {e}")))? {
        httparse::Status::Partial => Ok(None),
        httparse::Status::Complete(head) => {
            let mut length = None;
            for h in response.headers.iter() {
                if h.name.eq_ignore_ascii_case("content-length") {
                    length = std::str::from_utf8(h.value).ok().and_then(|v| v.parse().ok());
                } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                    return Err(invalid("this client reads Content-Length bodies only".into()));
                }
            }
            Ok(Some((response.code.unwrap_or(0), head, length.unwrap_or(0))))
        }
    }
}

/// A raw HTTP/1.1 request; `close` asks the server to close the connection after it.
pub fn request(method: &str, path: &str, body: &[u8], close: bool) -> Arc<[u8]> {
    let mut out = format!(
        "{method} {path} HTTP/1.1\r\nhost: localhost\r\ncontent-length: {}\r\n{}\r\n",
        body.len(),
        if close { "connection: close\r\n" } else { "" }
    )
    .into_bytes();
    out.extend_from_slice(body);
    out.into()
}

/// A TLS connector that trusts `server_cert` (DER) and presents the client
/// certificate and key (PEM). Sessions are resumed where the server allows it.
///
/// # Panics
///
/// If the PEM texts hold no certificate or key.
pub fn connector(
    server_cert: CertificateDer<'static>,
    client_cert: &str,
    client_key: &str,
) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(server_cert).expect("a server certificate");
    let cert = CertificateDer::from_pem_slice(client_cert.as_bytes()).expect("a client certificate");
    let key = PrivateKeyDer::from_pem_slice(client_key.as_bytes()).expect("a client key");
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_client_auth_cert(vec![cert], key)
        .expect("a client identity");
    tokio_rustls::TlsConnector::from(Arc::new(tls))
}

/// [`connector`] with the server certificate in PEM too, as test directories hold it.
///
/// # Panics
///
/// If `server_cert` holds no certificate.
pub fn connector_from_pem(server_cert: &str, client_cert: &str, client_key: &str) -> tokio_rustls::TlsConnector {
    let server = CertificateDer::from_pem_slice(server_cert.as_bytes()).expect("a server certificate");
    connector(server, client_cert, client_key)
}

/// Sends one request on a new connection and waits for the answer: for set-up
/// steps of synchronous tests, such as creating the keys a [`Load`] uses.
///
/// # Errors
///
/// When the connection fails.
pub fn send_once(
    addr: SocketAddr,
    connector: &tokio_rustls::TlsConnector,
    method: &str,
    path: &str,
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let mut conn = Conn::open(addr, connector).await?;
        let (status, body) = conn.send(&request(method, path, body, true)).await?;
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    })
}

/// What a [`Load`] does.
#[derive(Clone)]
pub struct Spec {
    /// The server.
    pub addr: SocketAddr,
    /// More servers of the same deployment. A client whose connection fails (it
    /// cannot connect, or the connection breaks before the answer) sends the request
    /// again to the next server, as kms-go's client does with its endpoint list;
    /// clients start at different servers. Empty: `addr` alone.
    pub failover: Vec<SocketAddr>,
    /// How to connect (see [`connector`]); the identity must be allowed every
    /// operation on `keys`.
    pub connector: tokio_rustls::TlsConnector,
    /// Clients that keep one connection open for all their requests.
    pub keep_alive: usize,
    /// Clients that open a new TLS connection for every request.
    pub reconnecting: usize,
    /// Existing keys with an HMAC key; each client works on them in turn.
    pub keys: Vec<String>,
}

impl std::fmt::Debug for Spec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spec")
            .field("addr", &self.addr)
            .field("failover", &self.failover)
            .field("keep_alive", &self.keep_alive)
            .field("reconnecting", &self.reconnecting)
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

/// The operations a load client runs in turn on each key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    /// `PUT /v1/key/generate/KEY` with a context.
    Generate,
    /// `PUT /v1/key/decrypt/KEY` of the data key just generated; the plaintext must
    /// come back.
    Decrypt,
    /// `PUT /v1/key/hmac/KEY`; the same message must give the same HMAC each time.
    Hmac,
    /// `GET /v1/key/describe/KEY`.
    Describe,
}

impl Op {
    /// Every operation, in the order a client runs them.
    pub const ALL: [Op; 4] = [Op::Generate, Op::Decrypt, Op::Hmac, Op::Describe];
}

/// How long a load client waits for an answer before it counts a failure.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// One request that did not get the expected answer.
#[derive(Debug, Clone)]
pub struct Failure {
    /// When, since the load started.
    pub at: Duration,
    /// What was asked.
    pub op: Op,
    /// The key it was asked of.
    pub key: String,
    /// The status, or 0 when the connection failed.
    pub status: u16,
    /// The body, or the connection error.
    pub detail: String,
    /// How long the request took.
    pub took: Duration,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:>8.3}s {:?} {}: {} {} (after {} ms)",
            self.at.as_secs_f64(),
            self.op,
            self.key,
            self.status,
            self.detail,
            self.took.as_millis()
        )
    }
}

#[derive(Debug, Default)]
struct Shared {
    stop: AtomicBool,
    ok: AtomicU64,
    connections: AtomicU64,
    resumed: AtomicU64,
    slowest_us: AtomicU64,
    failures: Mutex<Vec<Failure>>,
    failed: AtomicU64,
}

/// Load running in the background until [`Load::stop`].
#[derive(Debug)]
pub struct Load {
    shared: Arc<Shared>,
    started: Instant,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// What the clients of a [`Load`] saw.
#[derive(Debug, Clone)]
pub struct Report {
    /// How long the load ran.
    pub elapsed: Duration,
    /// Requests answered as expected.
    pub ok: u64,
    /// Requests that failed (the first 1,000 are in `failures`).
    pub failed: u64,
    /// The failures, in the order they happened.
    pub failures: Vec<Failure>,
    /// TLS connections opened.
    pub connections: u64,
    /// Of those, how many resumed a session.
    pub resumed: u64,
    /// The longest any request took.
    pub slowest: Duration,
}

impl Report {
    /// The failures, one per line, for assertion messages.
    pub fn failures_text(&self) -> String {
        let mut text: String = self.failures.iter().take(20).map(|f| format!("  {f}\n")).collect();
        if self.failed > 20 {
            text.push_str(&format!("  … {} more\n", self.failed - 20));
        }
        text
    }
}

/// Requests answered so far, as seen live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Answered as expected.
    pub ok: u64,
    /// Failed.
    pub failed: u64,
}

impl Load {
    /// Starts the clients of `spec` on a thread of their own.
    ///
    /// # Panics
    ///
    /// If `spec.keys` is empty.
    pub fn start(spec: Spec) -> Self {
        assert!(!spec.keys.is_empty(), "the load needs keys");
        let shared = Arc::new(Shared::default());
        let started = Instant::now();
        let thread = std::thread::spawn({
            let shared = shared.clone();
            move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("load runtime");
                rt.block_on(run(spec, shared, started));
            }
        });
        Self {
            shared,
            started,
            thread: Some(thread),
        }
    }

    /// The counts so far.
    pub fn progress(&self) -> Progress {
        Progress {
            ok: self.shared.ok.load(Ordering::Relaxed),
            failed: self.shared.failed.load(Ordering::Relaxed),
        }
    }

    /// Time since the load started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Stops the clients (each finishes its request in flight) and reports.
    pub fn stop(mut self) -> Report {
        self.finish()
    }

    fn finish(&mut self) -> Report {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let s = &self.shared;
        Report {
            elapsed: self.started.elapsed(),
            ok: s.ok.load(Ordering::Relaxed),
            failed: s.failed.load(Ordering::Relaxed),
            failures: s.failures.lock().map(|f| f.clone()).unwrap_or_default(),
            connections: s.connections.load(Ordering::Relaxed),
            resumed: s.resumed.load(Ordering::Relaxed),
            slowest: Duration::from_micros(s.slowest_us.load(Ordering::Relaxed)),
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.finish();
        }
    }
}

async fn run(spec: Spec, shared: Arc<Shared>, started: Instant) {
    let spec = Arc::new(spec);
    let mut clients = tokio::task::JoinSet::new();
    for n in 0..spec.keep_alive + spec.reconnecting {
        let reconnect = n >= spec.keep_alive;
        clients.spawn(client(spec.clone(), shared.clone(), started, n, reconnect));
    }
    while clients.join_next().await.is_some() {}
}

/// One client: generate, decrypt what was generated, HMAC, describe, on each key in
/// turn (starting at a different key per client), checking every answer.
async fn client(spec: Arc<Spec>, shared: Arc<Shared>, started: Instant, n: usize, reconnect: bool) {
    let mut conn: Option<Conn> = None;
    let mut at = n;
    let mut turn = n;
    let mut hmacs = std::collections::HashMap::<String, String>::new();
    let context = B64.encode(format!("client {n}"));
    while !shared.stop.load(Ordering::Relaxed) {
        let key = &spec.keys[turn % spec.keys.len()];
        turn += 1;
        let mut sealed: Option<(String, String)> = None; // plaintext, ciphertext
        for op in Op::ALL {
            if shared.stop.load(Ordering::Relaxed) {
                break;
            }
            let (method, path, body) = match op {
                Op::Generate => (
                    "PUT",
                    format!("/v1/key/generate/{key}"),
                    format!(r#"{{"context":"{context}"}}"#),
                ),
                Op::Decrypt => {
                    let Some((_, ciphertext)) = &sealed else { continue };
                    (
                        "PUT",
                        format!("/v1/key/decrypt/{key}"),
                        format!(r#"{{"ciphertext":"{ciphertext}","context":"{context}"}}"#),
                    )
                }
                Op::Hmac => (
                    "PUT",
                    format!("/v1/key/hmac/{key}"),
                    r#"{"message":"c29haw=="}"#.to_owned(),
                ),
                Op::Describe => ("GET", format!("/v1/key/describe/{key}"), String::new()),
            };
            let request = request(method, &path, body.as_bytes(), reconnect);
            let begun = Instant::now();
            let answer =
                match tokio::time::timeout(REQUEST_TIMEOUT, send(&spec, &shared, &mut conn, &mut at, &request)).await {
                    Ok(answer) => answer,
                    Err(_) => Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no answer in {REQUEST_TIMEOUT:?}"),
                    )),
                };
            let took = begun.elapsed();
            shared
                .slowest_us
                .fetch_max(u64::try_from(took.as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
            if reconnect {
                conn = None;
            }
            let verdict = match answer {
                Err(e) => {
                    conn = None;
                    Err((0, e.to_string()))
                }
                Ok((200, body)) => check(op, key, &body, &mut sealed, &mut hmacs).map_err(|e| (200, e)),
                Ok((status, body)) => Err((status, String::from_utf8_lossy(&body).into_owned())),
            };
            match verdict {
                Ok(()) => {
                    shared.ok.fetch_add(1, Ordering::Relaxed);
                }
                Err((status, detail)) => {
                    shared.failed.fetch_add(1, Ordering::Relaxed);
                    if let Ok(mut failures) = shared.failures.lock()
                        && failures.len() < 1000
                    {
                        failures.push(Failure {
                            at: started.elapsed(),
                            op,
                            key: key.clone(),
                            status,
                            detail,
                            took,
                        });
                    }
                    if op == Op::Generate {
                        break; // nothing to decrypt
                    }
                }
            }
        }
    }
}

/// Sends `request` to the server at `*at` (an index into `addr` and `failover`),
/// moving on to the next one when the connection fails, once around at most.
async fn send(
    spec: &Spec,
    shared: &Shared,
    conn: &mut Option<Conn>,
    at: &mut usize,
    request: &[u8],
) -> std::io::Result<(u16, Vec<u8>)> {
    let servers: Vec<SocketAddr> = std::iter::once(spec.addr)
        .chain(spec.failover.iter().copied())
        .collect();
    let mut last = None;
    for _ in 0..servers.len() {
        let addr = servers[*at % servers.len()];
        match send_to(addr, spec, shared, conn, request).await {
            Ok(answer) => return Ok(answer),
            Err(e) => {
                *conn = None;
                *at += 1;
                last = Some(e);
            }
        }
    }
    Err(last.unwrap_or_else(|| std::io::ErrorKind::NotConnected.into()))
}

async fn send_to(
    addr: SocketAddr,
    spec: &Spec,
    shared: &Shared,
    conn: &mut Option<Conn>,
    request: &[u8],
) -> std::io::Result<(u16, Vec<u8>)> {
    if conn.is_none() {
        let c = Conn::open(addr, &spec.connector).await?;
        shared.connections.fetch_add(1, Ordering::Relaxed);
        if c.resumed() {
            shared.resumed.fetch_add(1, Ordering::Relaxed);
        }
        *conn = Some(c);
    }
    match conn {
        Some(c) => c.send(request).await,
        None => Err(std::io::ErrorKind::NotConnected.into()),
    }
}

/// Checks a 200 answer's body.
fn check(
    op: Op,
    key: &str,
    body: &[u8],
    sealed: &mut Option<(String, String)>,
    hmacs: &mut std::collections::HashMap<String, String>,
) -> Result<(), String> {
    let json: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("not JSON ({e}): {}", String::from_utf8_lossy(body)))?;
    let field = |name: &str| {
        json.get(name)
            .and_then(|v| v.as_str())
            .map(str::to_owned)
            .ok_or_else(|| format!("no {name} in {json}"))
    };
    match op {
        Op::Generate => {
            let plaintext = field("plaintext")?;
            if B64.decode(&plaintext).map(|p| p.len()) != Ok(32) {
                return Err(format!("a data key of the wrong size: {json}"));
            }
            *sealed = Some((plaintext, field("ciphertext")?));
        }
        Op::Decrypt => {
            let plaintext = field("plaintext")?;
            if sealed.as_ref().map(|(p, _)| p) != Some(&plaintext) {
                return Err("decrypt returned another plaintext than generate".into());
            }
        }
        Op::Hmac => {
            let hmac = field("hmac")?;
            let first = hmacs.entry(key.to_owned()).or_insert_with(|| hmac.clone());
            if *first != hmac {
                return Err("the HMAC of the same message changed".into());
            }
        }
        Op::Describe => {
            if field("name")? != key {
                return Err(format!("describe named another key: {json}"));
            }
        }
    }
    Ok(())
}
