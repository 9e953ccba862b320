//! The KES-compatible HTTP API of keyhost, over mutual TLS.
//!
//! [`serve`] accepts TLS connections, derives the client's [`Identity`] once per
//! connection (from its certificate), and answers KES's routes ([`ROUTES`]) over
//! HTTP/1.1 or h2. Every request is checked against the admin identity and the
//! caller's policy; every failure goes through the one table in [`error`].

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod api;
pub mod audit;
mod cache;
pub mod dev;
pub mod error;
mod measured;
mod observe;
mod pem_key;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keyhost_crypto::{CiphertextFormat, RecordFormat};
use keyhost_keystore::Keystore;
use keyhost_policy::{Authorizer, Identity};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

pub use api::{Auth, ROUTES, Route};
pub use cache::CacheExpiry;
pub use error::{ApiError, Era};
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
    cache: Arc<cache::KeyCache>,
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
            proxy: None,
            cache: Arc::default(),
        }
    }
}

/// TLS-terminating proxies (KES v0.16's `tls.proxy`): when a connection comes from
/// one of `identities`, the request's real client is the certificate in `header`
/// (URL-escaped PEM), as the proxy verified it.
#[derive(Debug, Clone)]
pub struct Proxy {
    /// The proxies' identities.
    pub identities: Vec<Identity>,
    /// The header carrying the client certificate, e.g. `X-Tls-Client-Cert`.
    pub header: http::HeaderName,
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

/// Serves the API on `listener` with a replaceable configuration.
pub async fn serve_live(listener: TcpListener, live: Arc<Live>) -> std::io::Result<()> {
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
        let _ = tcp.set_nodelay(true);
        let acceptor = TlsAcceptor::from(live.tls.load_full());
        let live = live.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%addr, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%addr, "TLS handshake timed out");
                    return;
                }
            };
            let identity = {
                let (_, conn) = tls.get_ref();
                match conn.peer_certificates() {
                    None => Err(ApiError::CertRequired),
                    Some(chain) => {
                        keyhost_policy::identity_of_chain(chain.iter().map(|c| c.as_ref())).map_err(|e| match e {
                            keyhost_policy::CertError::TooMany => ApiError::TooManyCerts,
                            _ => ApiError::CertRequired,
                        })
                    }
                }
            };
            let peer = Arc::new(Peer { addr, identity });
            let service = hyper::service::service_fn(move |req| {
                let state = live.state();
                let peer = peer.clone();
                async move { Ok::<_, std::convert::Infallible>(api::handle(&state, &peer, req).await) }
            });
            let mut builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            builder
                .http1()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(5));
            if let Err(e) = builder
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                .await
            {
                tracing::debug!(%addr, error = %e, "connection ended with an error");
            }
        });
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
