//! KES's routes: dispatch, authentication, and the handlers.

use std::convert::Infallible;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use keyhost_crypto::{Algorithm, KeyRecord};
use keyhost_keystore::Error as StoreError;
use keyhost_policy::{Decision, Identity};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::error::{ApiError, Era, StoreOp};
use crate::{Peer, State};

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// Anyone with a TLS connection.
    None,
    /// Anyone with a client certificate (no policy check).
    Identify,
    /// The admin, or an identity whose policy allows the path.
    Policy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Handler {
    Version,
    Ready,
    Status,
    Api,
    KeyCreate,
    KeyImport,
    KeyDescribe,
    KeyList,
    KeyDelete,
    KeyGenerate,
    KeyEncrypt,
    KeyDecrypt,
    KeyHmac,
    PolicyDescribe,
    PolicyRead,
    PolicyList,
    IdentityDescribe,
    IdentitySelf,
    IdentityList,
    Metrics,
    LogAudit,
    LogError,
    KeyBulkDecrypt,
    PolicyWrite,
    PolicyDelete,
    IdentityAssign,
    IdentityForget,
}

/// One route of the API.
#[derive(Debug, Clone)]
pub struct Route {
    /// The path, or path prefix when it ends with `/` (the rest is the resource).
    pub path: &'static str,
    /// The declared method (`PUT` routes also accept `POST`).
    pub method: Method,
    /// Who may call it.
    pub auth: Auth,
    /// The largest request body, in bytes.
    pub max_body: usize,
    /// The deadline of one request.
    pub timeout: Duration,
    handler: Handler,
}

const MB: usize = 1_000_000;

const fn route(path: &'static str, method: Method, auth: Auth, max_body: usize, secs: u64, handler: Handler) -> Route {
    Route {
        path,
        method,
        auth,
        max_body,
        timeout: Duration::from_secs(secs),
        handler,
    }
}

/// The routes of KES's newest API that keyhost serves.
pub const ROUTES: &[Route] = &[
    route("/version", Method::GET, Auth::None, 0, 10, Handler::Version),
    route("/v1/ready", Method::GET, Auth::Policy, 0, 15, Handler::Ready),
    route("/v1/status", Method::GET, Auth::Policy, 0, 15, Handler::Status),
    route("/v1/metrics", Method::GET, Auth::Policy, 0, 15, Handler::Metrics),
    route("/v1/api", Method::GET, Auth::Policy, 0, 10, Handler::Api),
    route("/v1/key/create/", Method::PUT, Auth::Policy, 0, 15, Handler::KeyCreate),
    route("/v1/key/import/", Method::PUT, Auth::Policy, MB, 15, Handler::KeyImport),
    route(
        "/v1/key/describe/",
        Method::GET,
        Auth::Policy,
        0,
        15,
        Handler::KeyDescribe,
    ),
    route("/v1/key/list/", Method::GET, Auth::Policy, 0, 15, Handler::KeyList),
    route(
        "/v1/key/delete/",
        Method::DELETE,
        Auth::Policy,
        0,
        15,
        Handler::KeyDelete,
    ),
    route(
        "/v1/key/generate/",
        Method::PUT,
        Auth::Policy,
        MB,
        15,
        Handler::KeyGenerate,
    ),
    route(
        "/v1/key/encrypt/",
        Method::PUT,
        Auth::Policy,
        MB,
        15,
        Handler::KeyEncrypt,
    ),
    route(
        "/v1/key/decrypt/",
        Method::PUT,
        Auth::Policy,
        MB,
        15,
        Handler::KeyDecrypt,
    ),
    route("/v1/key/hmac/", Method::PUT, Auth::Policy, MB, 15, Handler::KeyHmac),
    route(
        "/v1/policy/describe/",
        Method::GET,
        Auth::Policy,
        0,
        15,
        Handler::PolicyDescribe,
    ),
    route(
        "/v1/policy/read/",
        Method::GET,
        Auth::Policy,
        0,
        15,
        Handler::PolicyRead,
    ),
    route(
        "/v1/policy/list/",
        Method::GET,
        Auth::Policy,
        0,
        15,
        Handler::PolicyList,
    ),
    route(
        "/v1/identity/describe/",
        Method::GET,
        Auth::Policy,
        0,
        15,
        Handler::IdentityDescribe,
    ),
    route(
        "/v1/identity/self/describe",
        Method::GET,
        Auth::Identify,
        0,
        15,
        Handler::IdentitySelf,
    ),
    route(
        "/v1/identity/list/",
        Method::GET,
        Auth::Policy,
        0,
        15,
        Handler::IdentityList,
    ),
    route("/v1/log/error", Method::GET, Auth::Policy, 0, 0, Handler::LogError),
    route("/v1/log/audit", Method::GET, Auth::Policy, 0, 0, Handler::LogAudit),
    // KES 2022–2023: decrypt up to 1,000 ciphertexts of one key at once.
    route(
        "/v1/key/bulk/decrypt/",
        Method::PUT,
        Auth::Policy,
        MB,
        15,
        Handler::KeyBulkDecrypt,
    ),
    // KES v0.16's routes that change policies and assignments (in memory, this node).
    route(
        "/v1/policy/write/",
        Method::POST,
        Auth::Policy,
        1 << 20,
        10,
        Handler::PolicyWrite,
    ),
    route(
        "/v1/policy/delete/",
        Method::DELETE,
        Auth::Policy,
        0,
        10,
        Handler::PolicyDelete,
    ),
    route(
        "/v1/identity/assign/",
        Method::POST,
        Auth::Policy,
        1 << 20,
        10,
        Handler::IdentityAssign,
    ),
    route(
        "/v1/identity/forget/",
        Method::DELETE,
        Auth::Policy,
        0,
        10,
        Handler::IdentityForget,
    ),
    // KES v0.16's names of the log streams.
    route(
        "/v1/log/error/trace",
        Method::GET,
        Auth::Policy,
        0,
        0,
        Handler::LogError,
    ),
    route(
        "/v1/log/audit/trace",
        Method::GET,
        Auth::Policy,
        0,
        0,
        Handler::LogAudit,
    ),
];

/// Finds the route of `path` and the resource after its prefix. A prefix route is
/// also found without its trailing slash (KES's Go router redirected; we answer).
fn find(path: &str) -> Option<(&'static Route, &str)> {
    let mut best: Option<(&'static Route, &str)> = None;
    for route in ROUTES {
        let found = match route.path.strip_suffix('/') {
            Some(base) if path == base => Some(""),
            Some(_) => path.strip_prefix(route.path),
            None => (path == route.path).then_some(""),
        };
        if let Some(resource) = found
            && best.is_none_or(|(b, _)| route.path.len() > b.path.len())
        {
            best = Some((route, resource));
        }
    }
    best
}

pub(crate) type Body = BoxBody<Bytes, Infallible>;

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

/// A request body the API reads: hyper's, from a connection, or any other (an
/// in-process request, see [`crate::respond`]).
pub(crate) trait RequestBody:
    hyper::body::Body<Data = Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>> + Send + Unpin + 'static
{
}

impl<B> RequestBody for B where
    B: hyper::body::Body<Data = Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>> + Send + Unpin + 'static
{
}

/// Answers one request, and counts and audits it.
pub(crate) async fn handle<B: RequestBody>(state: &State, peer: &Peer, req: Request<B>) -> Response<Body> {
    let start = std::time::Instant::now();
    let path = req.uri().path().to_owned();
    state.observer.start_request();
    let outcome = if state.observer.audit_failing() {
        // Fail closed: no request is served that cannot be audited. (The writer
        // retries on its own; the refusal is audited like any answer.)
        drain(req.into_body()).await;
        Err(ApiError::AuditUnavailable)
    } else {
        dispatch(state, peer, req).await
    };
    let response = match outcome {
        Ok(response) => response,
        Err(error) => {
            if matches!(error, ApiError::Store { .. } | ApiError::MalformedKey) {
                state.observer.error(&format!("{} {path}: {error}", peer.addr));
            }
            error.response(state.era).map(BodyExt::boxed)
        }
    };
    let counted = ["/v1/key/", "/v1/policy/", "/v1/identity/"]
        .iter()
        .any(|p| path.starts_with(p));
    state.observer.finish_request(
        state.era,
        &crate::observe::Finished {
            counted,
            // A log stream's response outlives the request: it is not an event itself.
            audited: !path.starts_with("/v1/log/"),
            path: &path,
            identity: peer.identity.as_ref().ok().map(Identity::as_str),
            ip: peer.addr.ip(),
            status: response.status().as_u16(),
            took: start.elapsed(),
        },
    );
    response
}

/// How much of a body that will not be used is read and discarded before an error
/// answer, and for how long.
const DRAIN_LIMIT: usize = 4 << 20;
const DRAIN_TIME: Duration = Duration::from_secs(1);

/// Reads and discards what is left of a request body (at most [`DRAIN_LIMIT`] bytes
/// for at most [`DRAIN_TIME`]) before an early error answer, so that a client still
/// sending can finish and read the answer. Without it, HTTP/2 resets the stream and
/// HTTP/1.1 closes the connection under the client's feet: curl, for one, then
/// reports a framing error or a broken pipe instead of the answer.
async fn drain<B: RequestBody>(body: B) {
    let read = Limited::new(body, DRAIN_LIMIT).collect();
    let _ = tokio::time::timeout(DRAIN_TIME, read).await;
}

/// Reads a body of at most `max` bytes; a larger one is handed back, partly read.
async fn read_limited<B: RequestBody>(mut body: B, max: usize) -> Result<Bytes, Option<B>> {
    let mut data = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { return Err(None) };
        if let Ok(chunk) = frame.into_data() {
            if data.len() + chunk.len() > max {
                return Err(Some(body));
            }
            data.extend_from_slice(&chunk);
        }
    }
    Ok(data.freeze())
}

async fn dispatch<B: RequestBody>(state: &State, peer: &Peer, req: Request<B>) -> Result<Response<Body>, ApiError> {
    let (parts, body) = req.into_parts();
    match dispatch_parts(state, peer, &parts, body).await {
        Err((error, Some(body))) => {
            drain(body).await;
            Err(error)
        }
        Err((error, None)) => Err(error),
        Ok(response) => Ok(response),
    }
}

type Early<B> = (ApiError, Option<B>);

async fn dispatch_parts<B: RequestBody>(
    state: &State,
    peer: &Peer,
    req: &http::request::Parts,
    body: B,
) -> Result<Response<Body>, Early<B>> {
    let early = |e: ApiError, body| Err((e, Some(body)));
    let raw_path = req.uri.path().to_owned();
    let Ok(path) = percent_encoding::percent_decode_str(&raw_path).decode_utf8() else {
        return early(ApiError::NoRoute, body);
    };
    let path = path.into_owned();
    let Some((route, resource)) = find(&path) else {
        return early(ApiError::NoRoute, body);
    };
    let method_ok = req.method == route.method || (route.method == Method::PUT && req.method == Method::POST);
    if !method_ok {
        return early(
            ApiError::Method {
                got: req.method.to_string(),
                expected: route.method.as_str(),
            },
            body,
        );
    }
    let overridden = state.overrides.get(route.path);
    let auth = match overridden {
        Some(o) if o.skip_auth => Auth::None,
        _ => route.auth,
    };
    let timeout = overridden.and_then(|o| o.timeout).unwrap_or(route.timeout);
    let identity = match auth {
        Auth::None => None,
        Auth::Identify | Auth::Policy => match client_identity(state, peer, &req.headers) {
            Ok(identity) => Some(identity),
            Err(e) => return early(e, body),
        },
    };
    if auth == Auth::Policy
        && let Some(identity) = &identity
        && state.authorizer().authorize(identity, &path) == Decision::Denied
    {
        return early(ApiError::NotAllowed, body);
    }
    // KES v0.16 clients ask for listings as NDJSON.
    let ndjson = req
        .headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/x-ndjson"));
    let body = if route.max_body > 0 {
        let declared = req
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let expects_continue = req
            .headers
            .get(header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        if expects_continue && declared.is_some_and(|n| n > route.max_body as u64) {
            // The client waits for "100 Continue" before it sends: answer without
            // reading, so that it never sends the body at all.
            return Err((ApiError::InvalidBody, None));
        }
        read_limited(body, route.max_body)
            .await
            .map_err(|rest| (ApiError::InvalidBody, rest))?
    } else {
        drain(body).await;
        Bytes::new()
    };
    let resource = resource.to_owned();
    let call = run(state, route.handler, &resource, identity.as_ref(), body, ndjson);
    if timeout.is_zero() {
        return call.await.map_err(|e| (e, None));
    }
    match tokio::time::timeout(timeout, call).await {
        Ok(result) => result.map_err(|e| (e, None)),
        Err(_) => Err((ApiError::Timeout, None)),
    }
}

fn json_response(status: StatusCode, value: &impl Serialize) -> Response<Body> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn ok<T: Serialize>(value: &T) -> Result<Response<Body>, ApiError> {
    Ok(json_response(StatusCode::OK, value))
}

fn empty() -> Result<Response<Body>, ApiError> {
    Ok(Response::new(full(Bytes::new())))
}

/// A finished NDJSON listing as KES v0.16 sent it: lines, then the trailers
/// `Status: 200` and an empty `Error`.
fn ndjson_with_trailers(lines: Vec<String>) -> Result<Response<Body>, ApiError> {
    let mut trailers = http::HeaderMap::new();
    trailers.insert("status", HeaderValue::from_static("200"));
    trailers.insert("error", HeaderValue::from_static(""));
    let frames = lines
        .into_iter()
        .map(|line| Ok::<_, Infallible>(hyper::body::Frame::data(Bytes::from(line))))
        .chain(std::iter::once(Ok(hyper::body::Frame::trailers(trailers))));
    let mut response = Response::new(BodyExt::boxed(http_body_util::StreamBody::new(futures::stream::iter(
        frames,
    ))));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
    headers.insert(header::TRAILER, HeaderValue::from_static("Status,Error"));
    Ok(response)
}

/// An NDJSON stream of the events a channel carries, from now on, until the client
/// goes away.
fn event_stream(rx: tokio::sync::broadcast::Receiver<Bytes>) -> Result<Response<Body>, ApiError> {
    use tokio::sync::broadcast::error::RecvError;
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(line) => return Some((Ok::<_, Infallible>(hyper::body::Frame::data(line)), rx)),
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return None,
            }
        }
    });
    let mut response = Response::new(BodyExt::boxed(http_body_util::StreamBody::new(stream)));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
    Ok(response)
}

/// The identity of the request's client: the connection's, or — when the connection
/// comes from a trusted TLS proxy — that of the certificate the proxy forwarded.
fn client_identity(state: &State, peer: &Peer, headers: &http::HeaderMap) -> Result<Identity, ApiError> {
    let direct = peer.identity.clone()?;
    let Some(proxy) = state.proxy.as_ref().filter(|p| p.identities.contains(&direct)) else {
        return Ok(direct);
    };
    let value = headers
        .get(&proxy.header)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .ok_or(ApiError::ProxyNoCert)?;
    // Go's url.QueryUnescape: '+' is a space.
    let pem = percent_encoding::percent_decode_str(&value.replace('+', " "))
        .decode_utf8()
        .map_err(|_| ApiError::ProxyInvalidCert)?
        .into_owned();
    use rustls::pki_types::pem::PemObject;
    let certs: Vec<_> = rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|_| ApiError::ProxyInvalidCert)?;
    match certs.as_slice() {
        [] => Err(ApiError::ProxyNoCert),
        [cert] => keyhost_policy::identity_of_chain([cert.as_ref()]).map_err(|_| ApiError::ProxyInvalidCert),
        _ => Err(ApiError::ProxyTooManyCerts),
    }
}

/// A v0.16 listing glob (`*` when empty).
fn v016_glob(resource: &str) -> Result<keyhost_policy::Pattern, ApiError> {
    let pattern = if resource.is_empty() { "*" } else { resource };
    keyhost_policy::Pattern::parse(pattern, keyhost_policy::PatternSyntax::Glob).map_err(|_| ApiError::InvalidName {
        kind: "listing pattern",
        name: resource.to_owned(),
    })
}

/// KES's `validName`: 1–80 bytes of `0-9 A-Z a-z _ -`, not starting or ending with
/// `-`, and not `_` alone. Configurations in the v0.16 style also allow inner dots,
/// which that release accepted (`minio.key`).
fn valid_name(name: &str, era: Era) -> bool {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (era == Era::V016 && b == b'.');
    !name.is_empty()
        && name.len() <= 80
        && name != "_"
        && !name.starts_with(['-', '.'])
        && !name.ends_with('-')
        && name.bytes().all(allowed)
}

/// KES's `validPattern`: the name alphabet, at most 80 bytes, possibly empty, `*`,
/// or ending in one `*`. Returns the prefix to list.
fn list_prefix(pattern: &str) -> Option<&str> {
    let prefix = pattern.strip_suffix('*').unwrap_or(pattern);
    let ok = pattern.len() <= 80
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
    ok.then_some(prefix)
}

fn key_name(name: &str, era: Era) -> Result<&str, ApiError> {
    if valid_name(name, era) {
        Ok(name)
    } else {
        Err(ApiError::InvalidName {
            kind: "key name",
            name: name.to_owned(),
        })
    }
}

/// A base64 `[]byte` field: absent or `null` is empty.
mod b64_field {
    use super::*;
    use serde::Deserializer;

    pub(super) fn de<'de, D: Deserializer<'de>>(d: D) -> Result<Zeroizing<Vec<u8>>, D::Error> {
        let text: Option<String> = Option::deserialize(d)?;
        match text {
            None => Ok(Zeroizing::new(Vec::new())),
            Some(text) => B64
                .decode(text.as_bytes())
                .map(Zeroizing::new)
                .map_err(serde::de::Error::custom),
        }
    }
}

#[derive(Deserialize, Default)]
struct CryptoRequest {
    #[serde(default, deserialize_with = "b64_field::de")]
    context: Zeroizing<Vec<u8>>,
    #[serde(default, deserialize_with = "b64_field::de")]
    plaintext: Zeroizing<Vec<u8>>,
    #[serde(default, deserialize_with = "b64_field::de")]
    ciphertext: Zeroizing<Vec<u8>>,
    #[serde(default, deserialize_with = "b64_field::de")]
    message: Zeroizing<Vec<u8>>,
}

fn crypto_request(body: &[u8], required: bool) -> Result<CryptoRequest, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) && !required {
        return Ok(CryptoRequest::default());
    }
    serde_json::from_slice(body).map_err(|_| ApiError::InvalidBody)
}

#[derive(Deserialize)]
struct ImportRequest {
    #[serde(default, deserialize_with = "b64_field::de")]
    key: Zeroizing<Vec<u8>>,
    #[serde(default, deserialize_with = "b64_field::de")]
    bytes: Zeroizing<Vec<u8>>,
    #[serde(default)]
    cipher: Option<String>,
}

/// Policy rules as the newest KES writes them: an object keyed by pattern.
fn rules(list: &[keyhost_policy::Pattern]) -> Value {
    Value::Object(list.iter().map(|p| (p.as_str().to_owned(), json!({}))).collect())
}

/// A time as Go's JSON encoding writes it; the zero time for "unknown", as KES.
fn rfc3339(t: Option<time::OffsetDateTime>) -> String {
    t.and_then(|t| {
        t.to_offset(time::UtcOffset::UTC)
            .format(&time::format_description::well_known::Rfc3339)
            .ok()
    })
    .unwrap_or_else(|| "0001-01-01T00:00:00Z".to_owned())
}

/// Creates a new key called `name` on behalf of `creator`.
pub(crate) async fn create_key(state: &State, name: &str, creator: &str) -> Result<(), ApiError> {
    let name = key_name(name, state.era)?;
    let record = KeyRecord::generate(Algorithm::preferred(), creator, time::OffsetDateTime::now_utc());
    create_record(state, name, &record).await
}

async fn create_record(state: &State, name: &str, record: &KeyRecord) -> Result<(), ApiError> {
    let encoded = record.encode(state.record_format).map_err(|_| ApiError::MalformedKey)?;
    state
        .keystore
        .create(name, &encoded)
        .await
        .map_err(|error| match error {
            StoreError::AlreadyExists => ApiError::KeyExists,
            error => ApiError::Store {
                op: StoreOp::Create,
                error,
            },
        })
}

async fn run(
    state: &State,
    handler: Handler,
    resource: &str,
    identity: Option<&Identity>,
    body: Bytes,
    ndjson: bool,
) -> Result<Response<Body>, ApiError> {
    let caller = identity.map(Identity::as_str).unwrap_or_default();
    match handler {
        Handler::Version => ok(&json!({ "version": env!("CARGO_PKG_VERSION"), "commit": "" })),
        Handler::Ready if state.cache.is_offline() => Err(ApiError::StoreUnreachable),
        Handler::Ready => match state.keystore.status().await {
            Ok(_) => empty(),
            Err(e) if e.is_unreachable() => Err(ApiError::StoreUnreachable),
            Err(_) => Err(ApiError::StoreUnavailable),
        },
        Handler::Status => {
            let health = if state.cache.is_offline() {
                Err(keyhost_keystore::Error::Unavailable("offline".into()))
            } else {
                state.keystore.status().await
            };
            let mut status = json!({
                "version": env!("CARGO_PKG_VERSION"),
                "os": std::env::consts::OS,
                "arch": std::env::consts::ARCH,
                "uptime": state.started.elapsed().as_secs(),
                "num_cpu": std::thread::available_parallelism().map_or(1, |n| n.get()),
                "num_cpu_used": std::thread::available_parallelism().map_or(1, |n| n.get()),
                "mem_heap_used": 0,
                "mem_stack_used": 0,
            });
            match health {
                Ok(h) => status["keystore_latency"] = json!(h.latency.as_millis().max(1) as u64),
                Err(_) => {
                    // kms-go refuses `keystore_unreachable` without `keystore_unavailable`.
                    status["keystore_unreachable"] = json!(true);
                    status["keystore_unavailable"] = json!(true);
                }
            }
            ok(&status)
        }
        Handler::KeyBulkDecrypt => {
            let name = key_name(resource, state.era)?;
            let requests: Vec<CryptoRequest> = serde_json::from_slice(&body).map_err(|_| ApiError::InvalidBody)?;
            if requests.len() > 1000 {
                return Err(ApiError::TooManyCiphertexts);
            }
            let key = state.cache.get(&*state.keystore, name).await?;
            let mut out = Vec::with_capacity(requests.len());
            for req in &requests {
                let plaintext = key.key.open(&req.ciphertext, &req.context).map_err(ApiError::Decrypt)?;
                out.push(json!({ "plaintext": Zeroizing::new(B64.encode(&plaintext[..])).as_str() }));
            }
            ok(&out)
        }
        Handler::PolicyWrite => {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Written {
                #[serde(default)]
                allow: Vec<String>,
                #[serde(default)]
                deny: Vec<String>,
            }
            if !valid_name(resource, Era::V016) {
                return Err(ApiError::InvalidName {
                    kind: "policy name",
                    name: resource.to_owned(),
                });
            }
            let written: Written = serde_json::from_slice(&body).map_err(|_| ApiError::InvalidBody)?;
            let syntax = match state.era {
                Era::V016 => keyhost_policy::PatternSyntax::Glob,
                Era::Newest => keyhost_policy::PatternSyntax::Prefix,
            };
            let policy = keyhost_policy::Policy::parse(&written.allow, &written.deny, syntax)
                .map_err(|_| ApiError::InvalidBody)?;
            state.authorizer_mut().set_policy(resource, policy);
            empty()
        }
        Handler::PolicyDelete => {
            state.authorizer_mut().remove_policy(resource);
            empty()
        }
        Handler::IdentityAssign => {
            let (policy, id) = resource.split_once('/').ok_or(ApiError::IdentityUnknown)?;
            let id = Identity::parse(id).ok_or(ApiError::IdentityUnknown)?;
            if Some(&id) == identity {
                return Err(ApiError::AssignSelf);
            }
            state.authorizer_mut().assign(policy, id).map_err(|e| match e {
                keyhost_policy::AssignError::UnknownPolicy(_) => ApiError::PolicyNotFound,
                _ => ApiError::IdentityIsRoot,
            })?;
            empty()
        }
        Handler::IdentityForget => {
            let id = Identity::parse(resource).ok_or(ApiError::IdentityUnknown)?;
            let mut auth = state.authorizer_mut();
            if Some(&id) == auth.admin() {
                return Err(ApiError::IdentityIsRoot);
            }
            auth.forget(&id);
            empty()
        }
        Handler::Metrics => {
            let text = state.observer.render(
                state.started.elapsed(),
                state.cache.len(),
                state.keystore.runtime_stats(),
            );
            let mut response = Response::new(full(text));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            Ok(response)
        }
        Handler::LogAudit => event_stream(state.observer.subscribe_audit()),
        Handler::LogError => event_stream(state.observer.subscribe_errors()),
        Handler::Api => {
            let routes: Vec<Value> = ROUTES
                .iter()
                .map(|r| {
                    let timeout = state.overrides.get(r.path).and_then(|o| o.timeout).unwrap_or(r.timeout);
                    json!({ "method": r.method.as_str(), "path": r.path, "max_body": r.max_body, "timeout": timeout.as_secs() })
                })
                .collect();
            ok(&routes)
        }
        Handler::KeyCreate => {
            create_key(state, resource, caller).await?;
            empty()
        }
        Handler::KeyImport => {
            let name = key_name(resource, state.era)?;
            let req: ImportRequest = serde_json::from_slice(&body).map_err(|_| ApiError::InvalidImportBody)?;
            let cipher = req.cipher.clone().unwrap_or_default();
            let algorithm = if cipher.is_empty() {
                Algorithm::Aes256
            } else {
                Algorithm::from_name(&cipher).ok_or_else(|| ApiError::UnsupportedCipher(cipher.clone()))?
            };
            let bytes = if req.key.is_empty() { &req.bytes } else { &req.key };
            let key: [u8; 32] = bytes[..]
                .try_into()
                .map_err(|_| ApiError::InvalidKeySize(algorithm.name().to_owned()))?;
            let mut record = KeyRecord::generate(algorithm, caller, time::OffsetDateTime::now_utc());
            record.key = keyhost_crypto::SecretKey::new(algorithm, key);
            create_record(state, name, &record).await?;
            empty()
        }
        Handler::KeyDescribe => {
            let name = key_name(resource, state.era)?;
            let key = state.cache.get(&*state.keystore, name).await?;
            let mut out = json!({
                "name": name,
                "algorithm": key.key.algorithm().name(),
                "created_at": rfc3339(key.created_at),
            });
            if let Some(by) = &key.created_by {
                out["created_by"] = json!(by);
            }
            ok(&out)
        }
        Handler::KeyList if ndjson => {
            // KES v0.16: the resource is a glob; one `{"Name":…}` line per key, and the
            // outcome in the trailers `Status` and `Error`.
            let pattern = if resource.is_empty() { "*" } else { resource };
            let glob = keyhost_policy::Pattern::parse(pattern, keyhost_policy::PatternSyntax::Glob).map_err(|_| {
                ApiError::InvalidName {
                    kind: "listing pattern",
                    name: resource.to_owned(),
                }
            })?;
            let mut lines = Vec::new();
            let mut after: Option<String> = None;
            loop {
                let page = state
                    .keystore
                    .list("", after.as_deref(), 1000)
                    .await
                    .map_err(|error| ApiError::Store {
                        op: StoreOp::List,
                        error,
                    })?;
                for name in page.names.iter().filter(|n| glob.matches(n)) {
                    lines.push(json!({ "Name": name }).to_string() + "\n");
                }
                match page.next {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
            ndjson_with_trailers(lines)
        }
        Handler::KeyList => {
            let prefix = list_prefix(resource).ok_or_else(|| ApiError::InvalidName {
                kind: "listing pattern",
                name: resource.to_owned(),
            })?;
            const PAGE: u32 = 1000;
            let page = state
                .keystore
                .list(prefix, None, PAGE + 1)
                .await
                .map_err(|error| ApiError::Store {
                    op: StoreOp::List,
                    error,
                })?;
            let mut names = page.names;
            let continue_at = (names.len() > PAGE as usize).then(|| names.split_off(PAGE as usize).remove(0));
            let mut out = json!({ "names": names });
            if let Some(next) = continue_at {
                out["continue_at"] = json!(next);
            }
            ok(&out)
        }
        Handler::KeyDelete => {
            let name = key_name(resource, state.era)?;
            let result = state.keystore.delete(name).await;
            state.cache.evict(name);
            match result {
                Ok(()) => empty(),
                Err(StoreError::NotFound) if state.era == Era::V016 => empty(),
                Err(StoreError::NotFound) => Err(ApiError::KeyNotFound),
                Err(error) => Err(ApiError::Store {
                    op: StoreOp::Delete,
                    error,
                }),
            }
        }
        Handler::KeyGenerate => {
            let name = key_name(resource, state.era)?;
            let req = crypto_request(&body, state.era == Era::V016)?;
            let key = state.cache.get(&*state.keystore, name).await?;
            let dek = keyhost_crypto::random_key();
            let ciphertext = key.key.seal(&dek[..], &req.context, state.ciphertext_format);
            let plaintext = Zeroizing::new(B64.encode(&dek[..]));
            ok(&json!({ "plaintext": plaintext.as_str(), "ciphertext": B64.encode(ciphertext) }))
        }
        Handler::KeyEncrypt => {
            let name = key_name(resource, state.era)?;
            let req = crypto_request(&body, true)?;
            let key = state.cache.get(&*state.keystore, name).await?;
            let ciphertext = key.key.seal(&req.plaintext, &req.context, state.ciphertext_format);
            ok(&json!({ "ciphertext": B64.encode(ciphertext) }))
        }
        Handler::KeyDecrypt => {
            let name = key_name(resource, state.era)?;
            let req = crypto_request(&body, true)?;
            let key = state.cache.get(&*state.keystore, name).await?;
            let plaintext = key.key.open(&req.ciphertext, &req.context).map_err(ApiError::Decrypt)?;
            let encoded = Zeroizing::new(B64.encode(&plaintext[..]));
            ok(&json!({ "plaintext": encoded.as_str() }))
        }
        Handler::KeyHmac => {
            let name = key_name(resource, state.era)?;
            let req = crypto_request(&body, true)?;
            let key = state.cache.get(&*state.keystore, name).await?;
            let hmac = key.hmac.as_ref().ok_or(ApiError::NoHmac)?;
            ok(&json!({ "hmac": B64.encode(hmac.sign(&req.message)) }))
        }
        Handler::PolicyRead if state.era == Era::V016 => {
            let auth = state.authorizer();
            let policy = auth.policy(resource).ok_or(ApiError::PolicyNotFound)?;
            let list = |l: &[keyhost_policy::Pattern]| l.iter().map(|p| p.as_str().to_owned()).collect::<Vec<_>>();
            ok(&json!({ "allow": list(&policy.allow), "deny": list(&policy.deny) }))
        }
        Handler::PolicyList if state.era == Era::V016 => {
            let auth = state.authorizer();
            let glob = v016_glob(resource)?;
            let names: Vec<&str> = auth.policy_names().filter(|n| glob.matches(n)).collect();
            ok(&names)
        }
        Handler::IdentityList if state.era == Era::V016 => {
            let lines: Vec<String> = {
                let auth = state.authorizer();
                let glob = v016_glob(resource)?;
                auth.identities()
                    .filter(|(i, _)| glob.matches(i.as_str()))
                    .map(|(i, p)| json!({ "identity": i.as_str(), "policy": p }).to_string() + "\n")
                    .collect()
            };
            ndjson_with_trailers(lines)
        }
        Handler::PolicyDescribe | Handler::PolicyRead => {
            let auth = state.authorizer();
            let policy = auth.policy(resource).ok_or(ApiError::PolicyNotFound)?;
            let admin = auth.admin().map(Identity::as_str).unwrap_or_default();
            let mut out =
                json!({ "name": resource, "created_at": rfc3339(Some(state.started_at)), "created_by": admin });
            if handler == Handler::PolicyRead {
                out["allow"] = rules(&policy.allow);
                out["deny"] = rules(&policy.deny);
            }
            ok(&out)
        }
        Handler::PolicyList => {
            let auth = state.authorizer();
            let prefix = list_prefix(resource).ok_or_else(|| ApiError::InvalidName {
                kind: "listing pattern",
                name: resource.to_owned(),
            })?;
            let names: Vec<&str> = auth.policy_names().filter(|n| n.starts_with(prefix)).collect();
            ok(&json!({ "names": names }))
        }
        Handler::IdentityDescribe => {
            let auth = state.authorizer();
            let id = Identity::parse(resource).ok_or(ApiError::IdentityNotFound)?;
            let admin = auth.admin();
            if Some(&id) == admin {
                return ok(&json!({ "admin": true, "created_at": rfc3339(Some(state.started_at)) }));
            }
            let (policy, _) = auth.policy_of(&id).ok_or(ApiError::IdentityNotFound)?;
            ok(&json!({
                "policy": policy,
                "created_at": rfc3339(Some(state.started_at)),
                "created_by": admin.map(Identity::as_str).unwrap_or_default(),
            }))
        }
        Handler::IdentitySelf => {
            let auth = state.authorizer();
            let id = identity.ok_or(ApiError::CertRequired)?;
            let created_at = rfc3339(Some(state.started_at));
            if Some(id) == auth.admin() {
                return ok(&json!({ "identity": id.as_str(), "admin": true, "created_at": created_at }));
            }
            let mut out = json!({ "identity": id.as_str(), "admin": false, "created_at": created_at });
            if let Some((name, policy)) = auth.policy_of(id) {
                out["policy"] = json!(name);
                out["allow"] = rules(&policy.allow);
                out["deny"] = rules(&policy.deny);
            }
            ok(&out)
        }
        Handler::IdentityList => {
            let auth = state.authorizer();
            let prefix = resource.strip_suffix('*').unwrap_or(resource);
            let mut ids: Vec<&str> = auth
                .identities()
                .map(|(i, _)| i.as_str())
                .chain(auth.admin().map(Identity::as_str))
                .filter(|i| i.starts_with(prefix))
                .collect();
            ids.sort_unstable();
            ok(&json!({ "identities": ids }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_resolve_like_kes() {
        assert_eq!(
            find("/v1/key/create/my-key").map(|(r, n)| (r.path, n)),
            Some(("/v1/key/create/", "my-key"))
        );
        assert_eq!(
            find("/v1/key/list").map(|(r, n)| (r.path, n)),
            Some(("/v1/key/list/", ""))
        );
        assert_eq!(
            find("/v1/identity/self/describe").map(|(r, _)| r.path),
            Some("/v1/identity/self/describe")
        );
        assert_eq!(find("/version").map(|(r, _)| r.path), Some("/version"));
        assert!(find("/v1/nope").is_none());
        assert!(find("/version/x").is_none());
    }

    #[test]
    fn names_and_patterns() {
        for ok in ["my-key", "abc123", "0", "_-___---_", "_0", "0-Z", "my_key-0"] {
            assert!(valid_name(ok, Era::Newest), "{ok}");
        }
        for bad in [
            "",
            "my.key",
            "key/",
            "☰",
            "hel<lo",
            "Εmacs",
            &"a".repeat(81),
            "_",
            "-a",
            "a-",
        ] {
            assert!(!valid_name(bad, Era::Newest), "{bad}");
        }
        assert!(valid_name("minio.key", Era::V016));
        for ok in ["", "*", "my*", "_-*"] {
            assert!(list_prefix(ok).is_some(), "{ok}");
        }
        assert!(list_prefix("*-*").is_none());
        assert_eq!(list_prefix("my-key*"), Some("my-key"));
    }
}
