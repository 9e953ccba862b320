//! The KES-compatible HTTP API of keyhost, over mutual TLS.
//!
//! [`serve`] accepts TLS connections, derives the client's [`Identity`] once per
//! connection (from its certificate), and answers KES's routes ([`ROUTES`]) over
//! HTTP/1.1 or h2. Every request is checked against the admin identity and the
//! caller's policy; every failure goes through the one table in [`error`].
//! [`Configured`] builds a [`State`] and its TLS configuration from a configuration
//! file.
//!
//! # Why a route table on hyper, and not a router
//!
//! The API is a table, [`ROUTES`]: one entry per route with its method, the eras
//! that serve it, whether it needs an identity, its body limit and its timeout.
//! Being data, the table is also what the configuration's `api.<route>` overrides
//! are checked against, what `docs/openapi.yaml` is tested against, and what the
//! metrics label. Dispatch follows KES byte for byte where a general router has
//! opinions of its own: a resource is the rest of the path, whatever it holds
//! (KES's `/v1/key/create/a/b` is the key `a/b`, refused by name rules rather
//! than by a 404); paths are cleaned and redirected as Go's `ServeMux` does
//! (v0.16); the policy is checked before the body is read, and the body limit
//! before it is buffered; unknown routes, wrong methods and timeouts answer with
//! KES's texts in each era; and v0.16 listings end in HTTP/1.1 trailers, for which
//! the server drives hyper directly (with the one patch in `vendor/hyper`). axum
//! would sit on the same hyper with its own 404, 405, extractor and
//! path-parameter behaviour to turn off at each of these points; the benchmark
//! `bench/benches/server.rs` measures this server against a bare axum one.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod api;
pub mod audit;
mod cache;
mod configure;
mod era;
pub mod error;
mod health;
mod measured;
mod observe;
pub mod shares;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keyhost_crypto::{CiphertextFormat, RecordFormat};
use keyhost_keystore::Keystore;
use keyhost_policy::{Authorizer, Identity};
use shares::{Share, Shares};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

pub use api::{Auth, ROUTES, Route};
pub use cache::CacheExpiry;
pub use configure::{Configured, Fallbacks};
pub use era::Era;
pub use error::ApiError;
pub use observe::Observer;
pub use rustls::ServerConfig as TlsConfig;

/// Everything the API needs to answer requests.
#[derive(Debug)]
pub struct State {
    /// Where keys are stored.
    pub keystore: Arc<dyn Keystore>,
    /// The admin identity and the policies (changed at run time only by KES v0.16's
    /// policy and identity routes).
    authorizer: std::sync::RwLock<Authorizer>,
    /// Which KES release's texts to speak.
    pub era: Era,
    /// How new keys are written to the keystore.
    pub record_format: RecordFormat,
    /// How new ciphertexts are framed.
    pub ciphertext_format: CiphertextFormat,
    /// When the server started (policies report it as their creation time).
    pub started: Instant,
    /// `started` as wall-clock time.
    pub started_at: time::OffsetDateTime,
    /// How long cached keys live.
    pub cache_expiry: CacheExpiry,
    /// Metrics and the audit and error streams.
    pub observer: Observer,
    /// TLS-terminating proxies allowed to name the real client (`tls.proxy`).
    pub proxy: Option<Proxy>,
    /// Per-route settings (`api.<route>` of the configuration), by route path.
    pub overrides: std::collections::HashMap<String, RouteOverride>,
    /// Connection limits and timeouts (read when a connection is accepted).
    pub limits: Limits,
    /// The server certificate, as a v0.16 `/v1/status` reports it.
    pub certificate: Option<ServerCertificate>,
    cache: Arc<cache::KeyCache>,
    /// The shares of requests in flight and of request-body memory, sized by
    /// `limits` when first used.
    requests: std::sync::OnceLock<RequestPools>,
    /// The keystore's status as readiness probes see it.
    health: Arc<health::HealthCache>,
}

/// Who holds a share of what requests use: the client's identity, or its address
/// when the request has none (a route served without authentication).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Holder {
    /// An identity.
    Identity(Identity),
    /// An address, for requests without an identity.
    Address(std::net::IpAddr),
}

/// Memory that request bodies are read into, all requests together: bodies are
/// read before a handler runs, and without a common budget a client sending many
/// 1 MB bodies slowly would hold that much memory per request.
pub const BODY_BUDGET: usize = 64 << 20;

/// The pools that requests take shares of.
#[derive(Debug)]
pub(crate) struct RequestPools {
    /// Requests in flight: one unit each.
    pub(crate) in_flight: Arc<Shares<Holder>>,
    /// Bytes of request bodies held: [`BODY_BUDGET`], a quarter of it per holder,
    /// and an eighth more for the admin.
    pub(crate) body: Arc<Shares<Holder>>,
}

/// An `Accept` header that asks `/v1/metrics` for every family, keyhost's own
/// included, as Prometheus's scrapes do (see [`Observer`]).
pub const PROMETHEUS_ACCEPT: &str = "text/plain; version=0.0.4";

/// What KES v0.16's `/v1/status` tells about the server's certificate.
#[derive(Debug, Clone)]
pub struct ServerCertificate {
    /// When it expires.
    pub not_after: time::OffsetDateTime,
    /// Its DNS names.
    pub dns: Vec<String>,
    /// Its IP addresses.
    pub ips: Vec<String>,
}

impl ServerCertificate {
    /// Reads the expiry and subject alternative names of a DER certificate.
    pub fn of_der(der: &[u8]) -> Option<Self> {
        use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        let mut dns = Vec::new();
        let mut ips = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(d) => dns.push((*d).to_owned()),
                    GeneralName::IPAddress(b) => match b.len() {
                        4 => ips.push(std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*b).ok()?).to_string()),
                        16 => ips.push(std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*b).ok()?).to_string()),
                        _ => {}
                    },
                    _ => {}
                }
            }
        }
        Some(Self {
            not_after: cert.validity().not_after.to_datetime(),
            dns,
            ips,
        })
    }
}

impl State {
    /// State with KES's defaults: newest texts, current record format, raw ciphertexts.
    pub fn new(keystore: Arc<dyn Keystore>, authorizer: Authorizer) -> Self {
        let observer = Observer::default();
        let keystore: Arc<dyn Keystore> = Arc::new(measured::Measured::new(keystore, observer.registry()));
        Self {
            keystore,
            authorizer: std::sync::RwLock::new(authorizer),
            era: Era::Newest,
            record_format: RecordFormat::Current,
            ciphertext_format: CiphertextFormat::Raw,
            started: Instant::now(),
            started_at: time::OffsetDateTime::now_utc(),
            cache_expiry: CacheExpiry::default(),
            observer,
            overrides: Default::default(),
            limits: Limits::default(),
            certificate: None,
            proxy: None,
            cache: Arc::default(),
            requests: std::sync::OnceLock::new(),
            health: Arc::default(),
        }
    }

    /// The pools requests take shares of, sized by [`State::limits`].
    pub(crate) fn request_pools(&self) -> &RequestPools {
        self.requests.get_or_init(|| {
            let per = self.limits.requests_per_identity;
            RequestPools {
                // Room for sixteen holders at their share, and the admin's reserve.
                in_flight: Shares::new(per.saturating_mul(16), per, per / 4 + 16),
                body: Shares::new(BODY_BUDGET, BODY_BUDGET / 4, BODY_BUDGET / 8),
            }
        })
    }

    /// Whether `holder` is the admin, whose reserve it may use.
    pub(crate) fn is_admin(&self, holder: &Holder) -> bool {
        match holder {
            Holder::Identity(id) => self.authorizer().admin() == Some(id),
            Holder::Address(_) => false,
        }
    }
}

/// TLS-terminating proxies (KES v0.16's `tls.proxy`): when a connection comes from
/// one of `identities`, the request's real client is the certificate in `header`
/// (URL-escaped PEM, exactly one), as the proxy verified it.
#[derive(Debug, Clone)]
pub struct Proxy {
    /// The proxies' identities.
    pub identities: Vec<Identity>,
    /// The header carrying the client certificate, e.g. `X-Tls-Client-Cert`.
    pub header: http::HeaderName,
    /// With client verification on (v0.16 `--auth on`, newest `tls.auth: on`), the
    /// forwarded certificate must verify too, as KES v0.16.1 checked it (`403`
    /// otherwise); `None` serves any certificate the proxy forwards.
    pub verify: Option<keyhost_tls::ForwardedVerifier>,
}

/// Per-route settings from the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RouteOverride {
    /// Serve the route to clients without a certificate, without a policy check.
    pub skip_auth: bool,
    /// The route's deadline, instead of its default.
    pub timeout: Option<Duration>,
}

/// What the server knows about one TLS connection.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The remote address.
    pub addr: SocketAddr,
    /// The client's identity, or why it has none.
    pub identity: Result<Identity, ApiError>,
}

/// The configuration a running server uses: TLS and state, replaceable while it
/// runs (SIGHUP). Connections accepted after [`Live::replace`] use the new TLS
/// configuration, requests started after it the new state; requests in flight
/// finish with the old one.
#[derive(Debug)]
pub struct Live {
    tls: arc_swap::ArcSwap<rustls::ServerConfig>,
    state: arc_swap::ArcSwap<State>,
    maintenance: std::sync::Mutex<Option<AbortOnDrop>>,
}

impl Live {
    /// A live configuration; call from within a tokio runtime.
    pub fn new(tls: Arc<rustls::ServerConfig>, state: Arc<State>) -> Arc<Self> {
        let live = Arc::new(Self {
            tls: arc_swap::ArcSwap::new(tls),
            state: arc_swap::ArcSwap::new(state.clone()),
            maintenance: std::sync::Mutex::new(None),
        });
        live.start_maintenance(&state);
        live
    }

    fn start_maintenance(&self, state: &State) {
        let task = cache::spawn_maintenance(state.cache.clone(), state.keystore.clone(), state.cache_expiry);
        *self.maintenance.lock().unwrap_or_else(|p| p.into_inner()) = Some(AbortOnDrop(task));
    }

    /// Switches to a new TLS configuration and state.
    pub fn replace(&self, tls: Arc<rustls::ServerConfig>, state: Arc<State>) {
        self.tls.store(tls);
        self.start_maintenance(&state);
        self.state.store(state);
    }

    /// The state requests use now.
    pub fn state(&self) -> Arc<State> {
        self.state.load_full()
    }
}

/// Serves the API on `listener` with a fixed configuration until the task is dropped.
pub async fn serve(listener: TcpListener, tls: Arc<rustls::ServerConfig>, state: Arc<State>) -> std::io::Result<()> {
    serve_live(listener, Live::new(tls, state)).await
}

/// Connection limits and timeouts: what one client can hold of the server, as
/// shares of what all hold together (see [`shares`] and `docs/reliability.md`,
/// "Fair shares").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// The most client connections open at once. Beyond it, connections are
    /// closed as soon as they are accepted, before the TLS handshake costs
    /// anything, except for [`Limits::admin_reserve`] more that the admin may use.
    pub max_connections: usize,
    /// Connections beyond `max_connections` kept for the admin identity, so that
    /// the admin can still reach a server that others have filled; as many
    /// handshake slots are kept for the [`Limits::admin_networks`].
    pub admin_reserve: usize,
    /// The most connections open at once from one IP address.
    pub per_address: usize,
    /// The most connections open at once of one identity that has a policy.
    pub per_identity: usize,
    /// The most connections open at once of all identities without a policy, and
    /// of clients without a certificate, together (anyone can make one, so together
    /// they get the smallest share); one network (a /24 of IPv4, a /48 of IPv6) may
    /// hold a quarter of it, and a newcomer to the full pool takes a connection
    /// from the network holding the most.
    pub unknown: usize,
    /// The most TLS handshakes under way at once, from all addresses.
    pub handshakes: usize,
    /// The most TLS handshakes under way at once from one IP address.
    pub handshakes_per_ip: usize,
    /// The most TLS handshakes under way at once from one network (a /24 of IPv4,
    /// a /48 of IPv6).
    pub handshakes_per_network: usize,
    /// Networks whose connections may use the admin's reserve of handshake slots.
    pub admin_networks: Arc<[shares::Network]>,
    /// The most requests in flight at once of one identity (of one address, for
    /// requests without an identity).
    pub requests_per_identity: usize,
    /// How long a TLS handshake may take.
    pub handshake_timeout: Duration,
    /// How long the headers of a request may take to arrive (HTTP/1.1, including
    /// the wait for the next request on a kept-alive connection), and how long an
    /// HTTP/2 connection may go without its first request.
    pub header_timeout: Duration,
    /// How long the body of a request may take to arrive.
    pub body_timeout: Duration,
    /// How long a connection may stay open without a request in flight (an
    /// HTTP/1.1 connection waits at most `header_timeout` for its next request).
    /// A connection whose responses make no progress for twice this long is
    /// closed too (log streams aside).
    pub idle_timeout: Duration,
}

/// Connections beyond the limit kept for the admin.
pub const ADMIN_RESERVE: usize = 16;

/// Requests one HTTP/2 connection may have under way at once. A connection is one
/// task of the runtime, which reads, decrypts, encodes and encrypts for all of its
/// streams in one turn: the more streams one client keeps busy on it, the longer
/// another client's request waits behind each such turn. With 128 streams, one
/// identity flooding one connection put another client's p99 at 8 to 10 times its
/// unloaded value; with 8, within 2 times (`scripts/bench fairness`, in
/// `docs/reliability.md`). A client that wants more at once opens more connections,
/// as Go's HTTP/2 client does (MinIO's, the `kes` CLI's); each is a task of its own,
/// within the connection shares.
pub const H2_STREAMS: u32 = 8;

/// File descriptors left for everything but client connections (listener, logs,
/// plugin files — up to 256 per instance between calls — and keystore connections).
const OTHER_FDS: usize = 256;

impl Limits {
    /// The defaults for a process whose open-file limit is `fd_limit`: as many
    /// connections as the limit leaves room for (at most 16,384), with the admin's
    /// reserve and [`OTHER_FDS`] descriptors for everything else kept free.
    pub fn for_fd_limit(fd_limit: u64) -> Self {
        let fds = usize::try_from(fd_limit).unwrap_or(usize::MAX);
        Self::for_max_connections(fds.saturating_sub(OTHER_FDS + ADMIN_RESERVE).clamp(16, 16_384))
    }

    /// The defaults for a server of `max_connections`: the shares scale with it.
    pub fn for_max_connections(max_connections: usize) -> Self {
        Self {
            max_connections,
            admin_reserve: ADMIN_RESERVE,
            per_address: (max_connections / 4).max(16),
            per_identity: (max_connections / 2).max(16),
            unknown: (max_connections / 64).max(16),
            handshakes: max_connections,
            handshakes_per_ip: 256,
            handshakes_per_network: (max_connections / 16).max(256),
            admin_networks: Arc::new([]),
            requests_per_identity: 256,
            handshake_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(5),
            body_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
        }
    }
}

impl Default for Limits {
    /// [`Limits::for_fd_limit`] of this process's open-file limit now.
    fn default() -> Self {
        let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .unwrap_or(u64::MAX);
        Self::for_fd_limit(soft)
    }
}

/// Raises this process's soft open-file limit to its hard limit (each client
/// connection is a descriptor), and returns the limit in force.
pub fn raise_fd_limit() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        limit.current = limit.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            tracing::warn!(error = %e, "cannot raise the open-file limit");
        }
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The connections of each stage, as shares of pools sized by one [`Limits`]:
/// handshakes by address and by network, established connections by address and
/// by identity (identities without a policy as one holder).
#[derive(Debug)]
struct Counts {
    /// The limits the pools are sized by (changed by a reload).
    limits: arc_swap::ArcSwap<Limits>,
    handshakes_by_ip: Arc<Shares<std::net::IpAddr>>,
    handshakes_by_network: Arc<Shares<std::net::IpAddr>>,
    by_address: Arc<Shares<std::net::IpAddr>>,
    by_identity: Arc<Shares<Identity>>,
    /// Identities without a policy, by address: anyone can make such an identity,
    /// so together they have one small pool, and one network a quarter of it (by
    /// network, so that the many addresses of one IPv6 network are one holder).
    unknown: Arc<Shares<std::net::IpAddr>>,
}

/// What one connection holds of the pools while it is open.
#[derive(Debug)]
#[expect(dead_code, reason = "held for their drop")]
enum Held {
    Handshaking(Share<std::net::IpAddr>, Share<std::net::IpAddr>),
    Established(
        Share<std::net::IpAddr>,
        Option<Share<Identity>>,
        Option<Share<std::net::IpAddr>>,
    ),
}

impl Counts {
    fn new(limits: &Limits) -> Self {
        let all = limits.max_connections;
        let reserve = limits.admin_reserve;
        Self {
            limits: arc_swap::ArcSwap::from_pointee(limits.clone()),
            handshakes_by_ip: Shares::new(limits.handshakes, limits.handshakes_per_ip, reserve),
            handshakes_by_network: Shares::new(limits.handshakes, limits.handshakes_per_network, reserve),
            by_address: Shares::new(all, limits.per_address, reserve),
            by_identity: Shares::new(all, limits.per_identity, reserve),
            unknown: Shares::new(limits.unknown, (limits.unknown / 4).max(1), 0),
        }
    }

    /// Sizes the pools by `limits` (a reload changed them): the connections and
    /// handshakes open now count against the new sizes, so a reload never lets
    /// more in than the new limits allow, nor the old and new pools together.
    fn resize(&self, limits: &Limits) {
        let all = limits.max_connections;
        let reserve = limits.admin_reserve;
        self.handshakes_by_ip
            .resize(limits.handshakes, limits.handshakes_per_ip, reserve);
        self.handshakes_by_network
            .resize(limits.handshakes, limits.handshakes_per_network, reserve);
        self.by_address.resize(all, limits.per_address, reserve);
        self.by_identity.resize(all, limits.per_identity, reserve);
        self.unknown.resize(limits.unknown, (limits.unknown / 4).max(1), 0);
        self.limits.store(Arc::new(limits.clone()));
    }

    /// Takes a handshake slot for `ip`, unless the address, its network or all
    /// addresses have their share under way (the admin's networks may use the
    /// reserve), or the address already holds its share of connections.
    fn start_handshake(&self, ip: std::net::IpAddr) -> Option<(Held, Arc<tokio::sync::Notify>)> {
        let limits = self.limits.load();
        let admin = limits.admin_networks.iter().any(|n| n.contains(ip));
        // The admin's identity is not known yet: an address at its share may still
        // shake hands into the reserve, and only the admin's connection is kept.
        if !admin && self.by_address.holds(&ip) >= limits.per_address + limits.admin_reserve {
            return None;
        }
        let network = shares::network_of(ip);
        if let Some(by_ip) = self.handshakes_by_ip.try_take(&ip, 1, admin)
            && let Some(mut by_network) = self.handshakes_by_network.try_take(&network, 1, admin)
        {
            // The admin's networks' handshakes are never asked back.
            let evict = if admin {
                Arc::new(tokio::sync::Notify::new())
            } else {
                self.handshakes_by_network.make_evictable(&mut by_network)
            };
            return Some((Held::Handshaking(by_ip, by_network), evict));
        }
        // Every slot is taken: a network under its share asks the network holding
        // the most for one of its handshakes. Its slot by network is free at once;
        // its slot by address when the handshake has ended, so the address's one
        // is taken past the total meanwhile.
        if self.handshakes_by_ip.holds(&ip) >= self.handshakes_by_ip.per_holder() {
            return None;
        }
        let (by_network, evict) = self.handshakes_by_network.try_take_evicting(&network)?;
        let by_ip = self.handshakes_by_ip.force_take(&ip);
        Some((Held::Handshaking(by_ip, by_network), evict))
    }

    /// Takes the shares of an established connection from `ip` of `identity`:
    /// the admin may use the reserve, identities with a policy (and trusted
    /// proxies) have a share each, and all others one share together, from which
    /// the biggest holder gives a connection back to a newcomer when it is full
    /// (the returned `Notify` is how it is asked; see [`Shares::try_take_evicting`]).
    fn establish(
        &self,
        ip: std::net::IpAddr,
        identity: Option<&Identity>,
        state: &State,
    ) -> Option<(Held, Option<Arc<tokio::sync::Notify>>)> {
        let authorizer = state.authorizer();
        let admin = identity.is_some() && identity == authorizer.admin();
        let known = identity.filter(|id| {
            authorizer.policy_of(id).is_some() || state.proxy.as_ref().is_some_and(|p| p.identities.contains(id))
        });
        let address = self.by_address.try_take(&ip, 1, admin)?;
        let (by_identity, unknown, evict) = match (admin, known) {
            (true, _) => (Some(self.by_identity.try_take(identity?, 1, true)?), None, None),
            (false, Some(id)) => (Some(self.by_identity.try_take(id, 1, false)?), None, None),
            (false, None) => {
                let (share, evict) = self.unknown.try_take_evicting(&shares::network_of(ip))?;
                (None, Some(share), Some(evict))
            }
        };
        Some((Held::Established(address, by_identity, unknown), evict))
    }
}

/// Requests in flight on one connection, and when anything last happened on it.
#[derive(Debug)]
struct Activity {
    in_flight: std::sync::atomic::AtomicUsize,
    /// Requests in flight whose responses may rightly wait for ever (log streams).
    streams: std::sync::atomic::AtomicUsize,
    /// Whether the connection has served a request.
    served: std::sync::atomic::AtomicBool,
    /// When the last request ended, began, or a response body moved.
    since: std::sync::Mutex<Instant>,
}

impl Activity {
    fn begin(self: &Arc<Self>, stream: bool) -> InFlight {
        use std::sync::atomic::Ordering::SeqCst;
        self.in_flight.fetch_add(1, SeqCst);
        if stream {
            self.streams.fetch_add(1, SeqCst);
        }
        self.served.store(true, SeqCst);
        self.touch();
        InFlight(self.clone(), stream)
    }

    fn touch(&self) {
        *lock(&self.since) = Instant::now();
    }

    /// Whether the connection should be closed: it has had no request in flight
    /// for `idle` (`header` before its first request), or its requests (log
    /// streams aside) have made no progress for `stall`.
    fn expired(&self, header: Duration, idle: Duration, stall: Duration) -> bool {
        use std::sync::atomic::Ordering::SeqCst;
        let quiet = lock(&self.since).elapsed();
        let in_flight = self.in_flight.load(SeqCst);
        if in_flight == 0 {
            let allowed = if self.served.load(SeqCst) { idle } else { header };
            return quiet >= allowed;
        }
        in_flight > self.streams.load(SeqCst) && quiet >= stall
    }
}

/// One request in flight, until its response has been sent (or dropped).
#[derive(Debug)]
struct InFlight(Arc<Activity>, bool);

impl Drop for InFlight {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering::SeqCst;
        self.0.touch();
        if self.1 {
            self.0.streams.fetch_sub(1, SeqCst);
        }
        self.0.in_flight.fetch_sub(1, SeqCst);
    }
}

/// A response body that counts as a request in flight until it is sent, and marks
/// the connection active whenever the client takes some of it.
#[derive(Debug)]
struct Tracked {
    body: ResponseBody,
    in_flight: InFlight,
}

impl hyper::body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        self.in_flight.0.touch();
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// Serves the API on `listener` with a replaceable configuration.
pub async fn serve_live(listener: TcpListener, live: Arc<Live>) -> std::io::Result<()> {
    let counts = Arc::new(Counts::new(&live.state().limits));
    loop {
        let (tcp, addr) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let limits = live.state().limits.clone();
        if **counts.limits.load() != limits {
            // A reload changed the limits: the pools take their new sizes, and
            // what open connections hold counts against them.
            counts.resize(&limits);
        }
        // Refused before the handshake costs memory or time: an address that holds
        // its share of connections, or an address, a network or all that have
        // their share of handshakes under way (so that silent sockets from a few
        // places cannot take every slot).
        let Some((handshaking, evict)) = counts.start_handshake(addr.ip()) else {
            tracing::debug!(%addr, "this address or its network has its share of connections or handshakes; closing");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = TlsAcceptor::from(live.tls.load_full());
        let live = live.clone();
        let counts = counts.clone();
        tokio::spawn(async move {
            let accept = tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp));
            let tls = tokio::select! {
                accepted = accept => match accepted {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::debug!(%addr, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%addr, "TLS handshake timed out");
                        return;
                    }
                },
                () = evict.notified() => {
                    tracing::debug!(%addr, "ending a handshake of the network that holds the most, for a newcomer");
                    return;
                }
            };
            drop(handshaking);
            let (identity, h2) = {
                let (_, conn) = tls.get_ref();
                let rule = match live.state().era {
                    Era::Newest => keyhost_policy::ChainRule::Newest,
                    Era::V016 => keyhost_policy::ChainRule::V016,
                };
                let identity = match conn.peer_certificates() {
                    None => Err(ApiError::CertRequired),
                    Some(chain) => keyhost_policy::identity_of_chain(chain.iter().map(|c| c.as_ref()), rule)
                        .map_err(ApiError::from),
                };
                (identity, conn.alpn_protocol() == Some(b"h2"))
            };
            let Some((established, evict)) = counts.establish(addr.ip(), identity.as_ref().ok(), &live.state()) else {
                tracing::debug!(%addr, "this address or identity has its share of connections; closing");
                return;
            };
            serve_connection(tls, addr, Arc::new(Peer { addr, identity }), h2, limits, live, evict).await;
            drop(established);
        });
    }
}

/// Serves one TLS connection with the protocol its ALPN chose, until it ends or
/// the watchdog finds it idle or stalled (see [`Activity::expired`]).
async fn serve_connection(
    tls: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    addr: SocketAddr,
    peer: Arc<Peer>,
    h2: bool,
    limits: Limits,
    live: Arc<Live>,
    evict: Option<Arc<tokio::sync::Notify>>,
) {
    let activity = Arc::new(Activity {
        in_flight: Default::default(),
        streams: Default::default(),
        served: Default::default(),
        since: std::sync::Mutex::new(Instant::now()),
    });
    let tracker = activity.clone();
    // Turns of the connection's task, and the turn the last request started in:
    // hyper serves the pipelined requests it has read one after the other within
    // one turn (up to 16), so a client writing requests ahead of their answers on
    // many connections would put that many at a time ahead of everyone else's.
    let polls = Arc::new(std::sync::atomic::AtomicUsize::new(1));
    let last_started = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = polls.clone();
    let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let (polls, last_started) = (polls.clone(), last_started.clone());
        let state = live.state();
        let peer = peer.clone();
        // A log stream's response waits for events for as long as its client wants.
        let in_flight = tracker.begin(req.uri().path().starts_with("/v1/log/"));
        // One request per turn of the connection's task: a request that starts in
        // the same turn as the one before it (pipelined HTTP/1.1, read from one
        // buffer) first lets every other ready task run.
        let turn = polls.load(std::sync::atomic::Ordering::Relaxed);
        let wait = last_started.swap(turn, std::sync::atomic::Ordering::Relaxed) == turn;
        async move {
            if wait {
                yield_to_others().await;
            }
            let response = api::handle(&state, &peer, req).await;
            Ok::<_, std::convert::Infallible>(response.map(|body| Tracked { body, in_flight }))
        }
    });
    let io = hyper_util::rt::TokioIo::new(tls);
    // The protocol comes from ALPN (as with Go's server): no bytes are read to guess
    // it, so a client that sends nothing, or part of a preface, is under the
    // timeouts below from the start.
    let conn: std::pin::Pin<Box<dyn GracefulConnection>> = if h2 {
        let mut builder = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new());
        builder
            .timer(hyper_util::rt::TokioTimer::new())
            .max_concurrent_streams(H2_STREAMS)
            // What a client may send ahead of the handlers: bounded per stream and
            // per connection, so that bodies wait in the client, not in memory.
            .initial_stream_window_size(64 * 1024)
            .initial_connection_window_size(256 * 1024)
            .keep_alive_interval(limits.idle_timeout / 2)
            .keep_alive_timeout(limits.header_timeout);
        Box::pin(builder.serve_connection(io, service))
    } else {
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            // The most a connection reads ahead of its handler (and the largest
            // request head).
            .max_buf_size(128 * 1024);
        Box::pin(builder.serve_connection(io, service))
    };
    let mut conn = conn;
    // A response the client does not take (an HTTP/2 window held at zero, a socket
    // never read) may take this long; a handler never takes longer than its route's
    // deadline.
    let stall = (limits.idle_timeout * 2).max(Duration::from_secs(1));
    let tick = (limits.header_timeout.min(limits.idle_timeout) / 4)
        .clamp(Duration::from_millis(10), Duration::from_millis(250));
    let mut tick = tokio::time::interval(tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            result = std::future::poll_fn(|cx| {
                counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                conn.as_mut().poll(cx)
            }) => {
                if let Err(e) = result {
                    tracing::debug!(%addr, error = %e, "connection ended with an error");
                }
                return;
            }
            () = async {
                match &evict {
                    Some(evict) => evict.notified().await,
                    None => std::future::pending().await,
                }
            } => {
                tracing::debug!(%addr, "closing a connection of the network holding the most of the pool of unknown clients, for a newcomer");
                conn.as_mut().shutdown();
                let _ = tokio::time::timeout(Duration::from_secs(1), conn.as_mut()).await;
                return;
            }
            _ = tick.tick() => {
                if activity.expired(limits.header_timeout, limits.idle_timeout, stall) {
                    tracing::debug!(%addr, "closing an idle or stalled connection");
                    conn.as_mut().shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(1), conn.as_mut()).await;
                    return;
                }
            }
        }
    }
}

/// Returns once the task has been to the back of the runtime's queue: the task
/// wakes itself while it runs, which the runtime takes as a yield (unlike
/// `tokio::task::yield_now`, which waits for the next look for I/O).
async fn yield_to_others() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            return std::task::Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    })
    .await;
}

/// A served connection of either protocol that can be asked to shut down.
trait GracefulConnection: std::future::Future<Output = Result<(), hyper::Error>> + Send {
    fn shutdown(self: std::pin::Pin<&mut Self>);
}

impl<I, S> GracefulConnection for hyper::server::conn::http1::Connection<I, S>
where
    Self: std::future::Future<Output = Result<(), hyper::Error>> + Send,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming>,
    S::ResBody: 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn shutdown(self: std::pin::Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, S, E> GracefulConnection for hyper::server::conn::http2::Connection<I, S, E>
where
    Self: std::future::Future<Output = Result<(), hyper::Error>> + Send,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming>,
    S::ResBody: 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, S::ResBody>,
{
    fn shutdown(self: std::pin::Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// A response of the API: a complete body, or an endless event stream for the
/// `/v1/log/` routes.
pub type ResponseBody = http_body_util::combinators::BoxBody<bytes::Bytes, std::convert::Infallible>;

/// Answers one request in-process, without TLS or a connection, exactly as
/// [`serve`] answers it once the connection is set up: `peer` is who asks, with the
/// identity the TLS layer would have derived. For fuzzing and embedding.
pub async fn respond(
    state: &State,
    peer: &Peer,
    request: http::Request<http_body_util::Full<bytes::Bytes>>,
) -> http::Response<ResponseBody> {
    api::handle(state, peer, request).await
}

/// Stops a background task when the server stops.
#[derive(Debug)]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl State {
    /// The admin identity and the policies, as they are now.
    pub fn authorizer(&self) -> std::sync::RwLockReadGuard<'_, Authorizer> {
        self.authorizer.read().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn authorizer_mut(&self) -> std::sync::RwLockWriteGuard<'_, Authorizer> {
        self.authorizer.write().unwrap_or_else(|p| p.into_inner())
    }

    /// How many keys are cached right now.
    pub fn cached_keys(&self) -> usize {
        self.cache.len()
    }

    /// Whether the last keystore probe failed.
    pub fn is_offline(&self) -> bool {
        self.cache.is_offline()
    }

    /// Creates the key `name` unless it exists (the `keys:` of a configuration).
    pub async fn create_key_if_missing(&self, name: &str, creator: &str) -> Result<(), ApiError> {
        api::create_key(self, name, creator).await.or_else(|e| match e {
            ApiError::KeyExists => Ok(()),
            e => Err(e),
        })
    }
}
