//! Outbound HTTP for plugins: the grant check and the pooled host-side client.
//!
//! A plugin reaches the network only through `wasi:http/outgoing-handler`. Every
//! request's real target — the scheme, host and port of the URI the host connects
//! to, never a `Host` header — is checked against the plugin's granted origins
//! before any connection is made. A refused request gets `HTTP-request-denied` and a
//! warning in the log. Allowed requests share one pooled client (keep-alive,
//! `TCP_NODELAY`), instead of a connection and TLS handshake per request.

use std::fmt;
use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

/// One granted origin: `scheme://host:port`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

impl Origin {
    /// Parses a grant such as `https://secretsmanager.us-east-1.amazonaws.com` or
    /// `http://127.0.0.1:4566`. The port defaults to the scheme's. Paths, queries
    /// and credentials are refused: a grant names a whole origin.
    pub fn parse(grant: &str) -> Result<Self, String> {
        let url = keyhost_url::HttpUrl::parse(grant).map_err(|e| e.to_string())?;
        if url.has_path() {
            return Err(format!(
                "'{grant}' has a path or query; a grant names only scheme://host[:port]"
            ));
        }
        // IPv6 hosts as http::Uri writes them, so that requests match.
        let host = if url.host().contains(':') {
            format!("[{}]", url.host())
        } else {
            url.host().to_owned()
        };
        Ok(Self::from_parts(url.scheme().as_str(), &host, Some(url.port())))
    }

    fn from_parts(scheme: &str, host: &str, port: Option<u16>) -> Self {
        let scheme = scheme.to_ascii_lowercase();
        let port = port.unwrap_or(if scheme == "https" { 443 } else { 80 });
        Self {
            host: host.trim_end_matches('.').to_ascii_lowercase(),
            scheme,
            port,
        }
    }

    /// Whether the origin is `https`.
    pub fn is_https(&self) -> bool {
        self.scheme == "https"
    }

    /// The origin a request really goes to, or `None` when its URI lacks one.
    fn of(uri: &http::Uri) -> Option<Self> {
        let authority = uri.authority()?;
        if authority.as_str().contains('@') {
            return None;
        }
        Some(Self::from_parts(
            uri.scheme_str()?,
            authority.host(),
            authority.port_u16(),
        ))
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
    }
}

/// The largest request body a plugin may send (records are at most 1 MiB; the
/// rest is protocol overhead such as base64 and JSON).
const MAX_REQUEST_BODY: usize = 8 << 20;

type PooledClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, WasiBody>;

/// The host-side HTTP client shared by all plugins of a runtime.
#[derive(Clone)]
pub(crate) struct HttpClient(PooledClient);

impl fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HttpClient")
    }
}

impl HttpClient {
    pub(crate) fn new(extra_roots: &[rustls::pki_types::CertificateDer<'static>]) -> anyhow::Result<Self> {
        let tls = tls_builder()?
            .with_root_certificates(public_roots(extra_roots)?)
            .with_no_client_auth();
        Ok(Self::over(tls))
    }

    /// A client for one origin with its own trust (`ca_pem` instead of the public
    /// roots) and, if given, the client certificate the host presents for the plugin.
    pub(crate) fn for_origin(
        origin: &Origin,
        tls: &crate::OriginTls,
        extra_roots: &[rustls::pki_types::CertificateDer<'static>],
    ) -> Result<Self, String> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let roots = match &tls.ca_pem {
            None => public_roots(extra_roots).map_err(|e| format!("{origin}: {e}"))?,
            Some(pem) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(pem) {
                    let cert = cert.map_err(|e| format!("{origin}: the CA file is not PEM certificates: {e}"))?;
                    roots
                        .add(cert)
                        .map_err(|e| format!("{origin}: a CA certificate cannot be used: {e}"))?;
                }
                if roots.is_empty() {
                    return Err(format!("{origin}: the CA file holds no certificate"));
                }
                roots
            }
        };
        let builder = tls_builder()
            .map_err(|e| format!("{origin}: {e}"))?
            .with_root_certificates(roots);
        let config = match &tls.client {
            None => builder.with_no_client_auth(),
            Some((chain_pem, key_pem)) => {
                let chain = CertificateDer::pem_slice_iter(chain_pem)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| format!("{origin}: the client certificate file is not PEM: {e}"))?;
                if chain.is_empty() {
                    return Err(format!("{origin}: the client certificate file holds no certificate"));
                }
                // The error of a key file never quotes it.
                let key = PrivateKeyDer::from_pem_slice(key_pem)
                    .map_err(|_| format!("{origin}: the client key file holds no PEM private key"))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| format!("{origin}: the client certificate and key do not go together: {e}"))?
            }
        };
        Ok(Self::over(config))
    }

    fn over(tls: rustls::ClientConfig) -> Self {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_secs(10)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(32)
            .build(https);
        Self(client)
    }
}

fn tls_builder() -> Result<rustls::ConfigBuilder<rustls::ClientConfig, rustls::WantsVerifier>, rustls::Error> {
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
}

/// The web PKI's roots and the runtime's extra ones.
fn public_roots(extra: &[rustls::pki_types::CertificateDer<'static>]) -> Result<rustls::RootCertStore, rustls::Error> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for cert in extra {
        roots.add(cert.clone())?;
    }
    Ok(roots)
}

/// The `wasi:http` hooks of one plugin instance: its grants and the shared client.
pub(crate) struct Egress {
    pub(crate) plugin: Arc<str>,
    pub(crate) allowed: Arc<[Origin]>,
    pub(crate) client: HttpClient,
    /// The clients of origins with TLS settings of their own.
    pub(crate) per_origin: Arc<std::collections::HashMap<Origin, HttpClient>>,
    /// The instance's memory: request bodies are held in it until sent.
    pub(crate) budget: Arc<crate::host_state::InstanceBudget>,
    /// Requests of the instance under way, from the call until their answer's body
    /// is dropped (at most [`MAX_IN_FLIGHT`]).
    pub(crate) in_flight: Arc<std::sync::atomic::AtomicUsize>,
}

/// How many outgoing requests one instance may have under way at once: each holds
/// host-side buffers (its body, the connection's read buffer) for as long.
pub(crate) const MAX_IN_FLIGHT: usize = 8;

/// A request under way, counted until dropped.
struct InFlight(Arc<std::sync::atomic::AtomicUsize>);

impl InFlight {
    fn start(count: &Arc<std::sync::atomic::AtomicUsize>) -> Option<Self> {
        use std::sync::atomic::Ordering::AcqRel;
        count
            .fetch_update(AcqRel, std::sync::atomic::Ordering::Acquire, |n| {
                (n < MAX_IN_FLIGHT).then_some(n + 1)
            })
            .ok()
            .map(|_| Self(count.clone()))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Bytes of the instance's budget held by a request body, given back when dropped.
struct Held(Arc<crate::host_state::InstanceBudget>, usize);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.give_back(self.1);
    }
}

type SendFuture = Box<
    dyn Future<
            Output = wasmtime_wasi_http::Result<(
                http::Response<WasiBody>,
                Box<dyn Future<Output = Result<(), HttpError>> + Send>,
            )>,
        > + Send,
>;

impl WasiHttpHooks for Egress {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> SendFuture {
        let target = Origin::of(request.uri());
        let granted = target.as_ref().is_some_and(|t| self.allowed.contains(t));
        let plugin = self.plugin.clone();
        let in_flight = InFlight::start(&self.in_flight);
        let budget = self.budget.clone();
        let client = target
            .as_ref()
            .and_then(|t| self.per_origin.get(t))
            .unwrap_or(&self.client)
            .0
            .clone();
        Box::new(async move {
            if !granted {
                let shown = target.map_or_else(|| request.uri().to_string(), |t| t.to_string());
                tracing::warn!(plugin = %plugin, target = %shown, "refused outbound HTTP: target not granted");
                // Drain what the guest is writing, so that it sees the denial rather
                // than a broken body stream.
                // Read and dropped frame by frame, never gathered.
                let mut body = request.into_body();
                let drain = async { while let Some(Ok(_)) = body.frame().await {} };
                let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
                return Err(HttpError::HttpRequestDenied);
            }
            // One timer covers the connection and the wait for the first byte:
            // the longer of the two, when both are given.
            let first_byte = options
                .and_then(|o| match (o.connect_timeout, o.first_byte_timeout) {
                    (Some(c), Some(f)) => Some(c.max(f)),
                    (c, f) => f.or(c),
                })
                .unwrap_or(Duration::from_secs(60));
            let between_bytes = options
                .and_then(|o| o.between_bytes_timeout)
                .unwrap_or(Duration::from_secs(60));
            let Some(in_flight) = in_flight else {
                tracing::debug!(plugin = %plugin, "outbound HTTP refused: {MAX_IN_FLIGHT} requests under way");
                return Err(HttpError::ConnectionLimitReached);
            };
            // Take the whole body before sending: the request then goes out with a
            // Content-Length (which signing backends expect), and the guest's body
            // stream is finished before the response can arrive and drop it. The
            // body is held in the instance's memory budget until it is sent.
            let (parts, body) = request.into_parts();
            let mut held = Held(budget.clone(), 0);
            let gather = async {
                let mut body = Limited::new(body, MAX_REQUEST_BODY);
                let mut gathered = bytes::BytesMut::new();
                while let Some(frame) = body.frame().await {
                    let frame = frame.map_err(|_| HttpError::HttpRequestBodySize(None))?;
                    if let Ok(data) = frame.into_data() {
                        if !budget.try_take(data.len()) {
                            tracing::warn!(plugin = %plugin, "outbound HTTP refused: the body exceeds the plugin's memory limit");
                            return Err(HttpError::HttpRequestBodySize(None));
                        }
                        held.1 += data.len();
                        gathered.extend_from_slice(&data);
                    }
                }
                Ok(gathered.freeze())
            };
            let body = match tokio::time::timeout(first_byte, gather).await {
                Ok(Ok(body)) => body,
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(HttpError::ConnectionWriteTimeout),
            };
            let body = Full::new(body).map_err(|never| match never {}).boxed_unsync();
            let request = http::Request::from_parts(parts, body);
            let response = tokio::time::timeout(first_byte, client.request(request)).await;
            // Sent (or failed): the body's bytes are the instance's again.
            drop(held);
            let response = match response {
                Err(_) => return Err(HttpError::ConnectionReadTimeout),
                Ok(Err(e)) => {
                    // A failed handshake is the operator's to fix (a CA, a client
                    // certificate): say so, rather than "connection refused". With
                    // TLS 1.3 a server refuses a client certificate only after the
                    // handshake, with an alert in place of the answer: look for TLS
                    // errors in every failure.
                    if let Some(tls) = tls_error(&e) {
                        tracing::warn!(plugin = %plugin, error = %tls, "outbound TLS failed");
                        return Err(match tls {
                            rustls::Error::InvalidCertificate(_) => HttpError::TlsCertificateError,
                            _ => HttpError::TlsProtocolError,
                        });
                    }
                    if e.is_connect() {
                        return Err(HttpError::ConnectionRefused);
                    }
                    tracing::debug!(plugin = %plugin, error = %e, "outbound HTTP failed");
                    return Err(HttpError::HttpProtocolError);
                }
                Ok(Ok(response)) => response,
            };
            // The request stays under way until its answer's body is done with: an
            // answer left unread holds a connection and its read buffer.
            let response = response.map(|body| {
                Gapped {
                    inner: body.map_err(HttpError::from).boxed_unsync(),
                    gap: between_bytes,
                    timer: Box::pin(tokio::time::sleep(between_bytes)),
                    _in_flight: in_flight,
                }
                .boxed_unsync()
            });
            let io: Box<dyn Future<Output = Result<(), HttpError>> + Send> = Box::new(async { Ok(()) });
            Ok((response, io))
        })
    }
}

/// An answer's body that fails with `ConnectionReadTimeout` when nothing arrives
/// for `gap`: a backend that sends its headers and then stalls costs the plugin
/// that long, not the whole call.
struct Gapped {
    inner: WasiBody,
    gap: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
    _in_flight: InFlight,
}

impl Body for Gapped {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                let next = tokio::time::Instant::now() + this.gap;
                this.timer.as_mut().reset(next);
                Poll::Ready(frame)
            }
            Poll::Pending => match this.timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(HttpError::ConnectionReadTimeout))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The TLS error under a connection failure, if it was one.
fn tls_error(error: &(dyn std::error::Error + 'static)) -> Option<rustls::Error> {
    let mut source = Some(error);
    while let Some(e) = source {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls.clone());
        }
        // `io::Error::source` skips the error it wraps (and the connector wraps
        // the TLS stream's `io::Error` in another one): step into it instead.
        source = match e.downcast_ref::<std::io::Error>().and_then(std::io::Error::get_ref) {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body that never yields, as a backend that sent its headers and stalls.
    struct Stalled;

    impl Body for Stalled {
        type Data = Bytes;
        type Error = HttpError;

        fn poll_frame(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
            Poll::Pending
        }
    }

    #[tokio::test]
    async fn a_stalled_answer_body_fails_after_the_gap() {
        let gap = Duration::from_millis(100);
        let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let gapped = |inner: WasiBody| Gapped {
            inner,
            gap,
            timer: Box::pin(tokio::time::sleep(gap)),
            _in_flight: InFlight::start(&count).unwrap(),
        };
        let started = std::time::Instant::now();
        let outcome = gapped(Stalled.boxed_unsync()).collect().await;
        assert!(
            matches!(outcome, Err(HttpError::ConnectionReadTimeout)),
            "{:?}",
            outcome.err()
        );
        assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
        // A body that arrives is passed through whole.
        let whole = Full::new(Bytes::from_static(b"answer"))
            .map_err(|never| match never {})
            .boxed_unsync();
        let collected = gapped(whole).collect().await.unwrap().to_bytes();
        assert_eq!(&collected[..], b"answer");
    }

    #[test]
    fn tls_errors_are_found_inside_nested_io_errors() {
        // As the connector reports a server it cannot verify.
        let tls = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let inner = std::io::Error::new(std::io::ErrorKind::InvalidData, tls.clone());
        let outer = std::io::Error::other(inner);
        assert_eq!(tls_error(&outer), Some(tls));
        let plain = std::io::Error::other(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(tls_error(&plain), None);
    }

    #[test]
    fn grants_are_origins() {
        let o = Origin::parse("https://Secretsmanager.us-east-1.amazonaws.com").unwrap();
        assert_eq!(o.to_string(), "https://secretsmanager.us-east-1.amazonaws.com:443");
        assert_eq!(
            Origin::parse("http://127.0.0.1:4566/").unwrap().to_string(),
            "http://127.0.0.1:4566"
        );
        for bad in [
            "127.0.0.1:80",
            "ftp://x",
            "https://x/path",
            "https://u:p@x",
            "https://x?q=1",
            "x",
        ] {
            assert!(Origin::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_request_matches_only_its_exact_origin() {
        let granted = Origin::parse("http://127.0.0.1:4566").unwrap();
        let of = |u: &str| Origin::of(&u.parse().unwrap());
        assert_eq!(of("http://127.0.0.1:4566/x?y"), Some(granted.clone()));
        assert_ne!(of("http://127.0.0.1:4567/"), Some(granted.clone()));
        assert_ne!(of("https://127.0.0.1:4566/"), Some(granted.clone()));
        assert_ne!(of("http://localhost:4566/"), Some(granted.clone()));
        assert_eq!(of("http://user@127.0.0.1:4566/"), None);
    }
}
