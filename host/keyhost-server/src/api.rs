//! KES's routes: dispatch, authentication, and the handlers.

use std::convert::Infallible;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use keyhost_crypto::{Algorithm, DecryptError, KeyRecord};
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
    /// The only era whose configurations serve the route (`None`: both).
    pub era: Option<Era>,
    handler: Handler,
}

const MB: usize = 1_000_000;

/// A route that configurations of both eras serve.
const fn route(path: &'static str, method: Method, auth: Auth, max_body: usize, secs: u64, handler: Handler) -> Route {
    route_in(None, path, method, auth, max_body, secs, handler)
}

/// A route that only configurations of `era` serve.
const fn only(
    era: Era,
    path: &'static str,
    method: Method,
    auth: Auth,
    max_body: usize,
    secs: u64,
    handler: Handler,
) -> Route {
    route_in(Some(era), path, method, auth, max_body, secs, handler)
}

const fn route_in(
    era: Option<Era>,
    path: &'static str,
    method: Method,
    auth: Auth,
    max_body: usize,
    secs: u64,
    handler: Handler,
) -> Route {
    Route {
        path,
        method,
        auth,
        max_body,
        timeout: Duration::from_secs(secs),
        era,
        handler,
    }
}

use Auth::{Identify, Policy};
use Era::{Newest, V016};
use Handler as H;

/// Every route keyhost serves, with the era whose configurations serve it.
///
/// Each era serves exactly its own KES release's routes: a policy is written
/// against one release's API, and a route of the other release would widen it (a
/// newest-schema identity allowed `/v1/*` could rewrite its own policy through
/// v0.16's `/v1/policy/write/`; a v0.16 glob `/v1/key/*/app-*` would allow the
/// newest `hmac` and `describe`).
pub const ROUTES: &[Route] = &[
    route("/version", Method::GET, Auth::None, 0, 10, H::Version),
    route("/v1/status", Method::GET, Policy, 0, 15, H::Status),
    route("/v1/metrics", Method::GET, Policy, 0, 15, H::Metrics),
    route("/v1/key/create/", Method::PUT, Policy, 0, 15, H::KeyCreate),
    route("/v1/key/import/", Method::PUT, Policy, MB, 15, H::KeyImport),
    route("/v1/key/list/", Method::GET, Policy, 0, 15, H::KeyList),
    route("/v1/key/delete/", Method::DELETE, Policy, 0, 15, H::KeyDelete),
    route("/v1/key/generate/", Method::PUT, Policy, MB, 15, H::KeyGenerate),
    route("/v1/key/encrypt/", Method::PUT, Policy, MB, 15, H::KeyEncrypt),
    route("/v1/key/decrypt/", Method::PUT, Policy, MB, 15, H::KeyDecrypt),
    route("/v1/policy/read/", Method::GET, Policy, 0, 15, H::PolicyRead),
    route("/v1/policy/list/", Method::GET, Policy, 0, 15, H::PolicyList),
    route("/v1/identity/list/", Method::GET, Policy, 0, 15, H::IdentityList),
    // KES 2023 and later.
    only(Newest, "/v1/ready", Method::GET, Policy, 0, 15, H::Ready),
    only(Newest, "/v1/api", Method::GET, Policy, 0, 10, H::Api),
    only(Newest, "/v1/key/describe/", Method::GET, Policy, 0, 15, H::KeyDescribe),
    only(Newest, "/v1/key/hmac/", Method::PUT, Policy, MB, 15, H::KeyHmac),
    only(
        Newest,
        "/v1/policy/describe/",
        Method::GET,
        Policy,
        0,
        15,
        H::PolicyDescribe,
    ),
    only(
        Newest,
        "/v1/identity/describe/",
        Method::GET,
        Policy,
        0,
        15,
        H::IdentityDescribe,
    ),
    only(
        Newest,
        "/v1/identity/self/describe",
        Method::GET,
        Identify,
        0,
        15,
        H::IdentitySelf,
    ),
    only(Newest, "/v1/log/error", Method::GET, Policy, 0, 0, H::LogError),
    only(Newest, "/v1/log/audit", Method::GET, Policy, 0, 0, H::LogAudit),
    // KES 2022–2023: decrypt up to 1,000 ciphertexts of one key at once; the policy
    // must allow both this path and `/v1/key/decrypt/<name>`, the operation it is.
    only(
        Newest,
        "/v1/key/bulk/decrypt/",
        Method::PUT,
        Policy,
        MB,
        15,
        H::KeyBulkDecrypt,
    ),
    // KES v0.16: policies and assignments changed at run time (in memory, this
    // node), and the log streams' old names.
    only(
        V016,
        "/v1/policy/write/",
        Method::POST,
        Policy,
        1 << 20,
        10,
        H::PolicyWrite,
    ),
    only(
        V016,
        "/v1/policy/delete/",
        Method::DELETE,
        Policy,
        0,
        10,
        H::PolicyDelete,
    ),
    only(
        V016,
        "/v1/identity/assign/",
        Method::POST,
        Policy,
        1 << 20,
        10,
        H::IdentityAssign,
    ),
    only(
        V016,
        "/v1/identity/forget/",
        Method::DELETE,
        Policy,
        0,
        10,
        H::IdentityForget,
    ),
    only(V016, "/v1/log/error/trace", Method::GET, Policy, 0, 0, H::LogError),
    only(V016, "/v1/log/audit/trace", Method::GET, Policy, 0, 0, H::LogAudit),
];

impl Route {
    /// Whether configurations of `era` serve this route.
    pub fn served_in(&self, era: Era) -> bool {
        self.era.is_none_or(|e| e == era)
    }

    /// The paths a policy must all allow for a request to this route: its own, and
    /// that of the operation it performs when another route is that operation's,
    /// so a deny on either applies (bulk decrypt is a decryption of its key).
    fn authorized_paths(&self, path: &str, resource: &str) -> Vec<String> {
        match self.handler {
            H::KeyBulkDecrypt => vec![format!("/v1/key/decrypt/{resource}"), path.to_owned()],
            _ => vec![path.to_owned()],
        }
    }
}

impl Route {
    /// The method KES v0.16 took: POST where the newest declares PUT.
    fn v016_method(&self) -> &'static str {
        if self.method == Method::PUT || self.method == Method::POST {
            "POST"
        } else if self.method == Method::DELETE {
            "DELETE"
        } else {
            "GET"
        }
    }

    /// KES v0.16's body limits: 1 MiB (not the newest 1 MB), 512 KiB to encrypt.
    fn v016_max_body(&self) -> usize {
        match (self.handler, self.max_body) {
            (_, 0) => 0,
            (H::KeyEncrypt, _) => 1 << 19,
            _ => 1 << 20,
        }
    }

    /// The `path.Match` pattern KES v0.16 checked a request's path against.
    fn v016_pattern(&self) -> String {
        match self.handler {
            H::IdentityAssign => format!("{}*/*", self.path),
            _ if self.path.ends_with('/') => format!("{}*", self.path),
            _ => self.path.to_owned(),
        }
    }
}

/// Whether `path` matches a route pattern of [`Route::v016_pattern`]: each `*`
/// stands for one non-empty-or-empty path element without `/`.
fn v016_path_matches(pattern: &str, path: &str) -> bool {
    let (mut p, mut s) = (pattern.split('/'), path.split('/'));
    loop {
        match (p.next(), s.next()) {
            (None, None) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            _ => return false,
        }
    }
}

/// Where Go's router (KES of both eras) redirected a path: a route prefix named
/// without its trailing slash (`/v1/key/create` → `/v1/key/create/`), and paths
/// that are not clean (`//`, `.`, `..` elements) to their cleaned form.
fn go_redirect(path: &str, era: Era) -> Option<String> {
    let mut clean: Vec<&str> = Vec::new();
    for element in path.split('/').skip(1) {
        match element {
            "" | "." => {}
            ".." => {
                clean.pop();
            }
            e => clean.push(e),
        }
    }
    let mut cleaned = format!("/{}", clean.join("/"));
    // Go's cleanPath keeps a trailing slash only where the path has one.
    if path.ends_with('/') && cleaned != "/" {
        cleaned.push('/');
    }
    if cleaned != path {
        return Some(cleaned);
    }
    ROUTES
        .iter()
        .filter(|r| r.served_in(era))
        .find(|r| r.path.strip_suffix('/') == Some(path))
        .map(|r| r.path.to_owned())
}

/// Finds the route of `path` among the routes `era` serves, and the resource after
/// its prefix. (A prefix route named without its trailing slash is redirected by
/// [`go_redirect`] before routing, as Go's router did.)
fn find(path: &str, era: Era) -> Option<(&'static Route, &str)> {
    let mut best: Option<(&'static Route, &str)> = None;
    for route in ROUTES.iter().filter(|r| r.served_in(era)) {
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

/// What dispatching learned about a request, for its metrics and its audit line.
#[derive(Debug, Default)]
struct Routed {
    /// The percent-decoded path the request was routed by, once it was.
    path: Option<String>,
    /// Who the request was made for: the connection's identity, or the client a
    /// trusted proxy named.
    client: Option<Identity>,
    /// The trusted proxy the request came through.
    proxy: Option<Identity>,
}

/// Whether KES counted a request for `raw_path` in its request metrics (see
/// [`handle`]); decided by the route the path reaches, however it is spelt.
fn counted(era: Era, raw_path: &str) -> bool {
    let Ok(path) = percent_encoding::percent_decode_str(raw_path).decode_utf8() else {
        return false;
    };
    if go_redirect(&path, era).is_some() {
        return false;
    }
    match (era, find(&path, era)) {
        (_, None) => false,
        (Era::V016, Some((route, _))) => route.handler != Handler::Metrics,
        (Era::Newest, Some((route, _))) => ["/v1/key/", "/v1/policy/", "/v1/identity/"]
            .iter()
            .any(|p| route.path.starts_with(p)),
    }
}

/// Answers one request, and counts and audits it.
pub(crate) async fn handle<B: RequestBody>(state: &State, peer: &Peer, req: Request<B>) -> Response<Body> {
    let start = std::time::Instant::now();
    let raw_path = req.uri().path().to_owned();
    let mut routed = Routed::default();
    // Counted (and active) are the requests KES counted: in the newest KES the key,
    // policy and identity routes; in KES v0.16 every route but `/v1/metrics`.
    let counted = counted(state.era, &raw_path);
    if counted {
        state.observer.start_request();
    }
    let outcome = if state.observer.audit_failing() {
        // Fail closed: no request is served that cannot be audited. (The writer
        // retries on its own; the refusal is audited like any answer.)
        drain(req.into_body()).await;
        Err(ApiError::AuditUnavailable)
    } else {
        dispatch(state, peer, req, &mut routed).await
    };
    // Audit and count the request as it was routed, not as it was spelt:
    // `/v1/%6Bey/delete/k` is a key deletion.
    let path = routed.path.as_deref().unwrap_or(&raw_path);
    let response = match outcome {
        Ok(response) => response,
        Err(error) => {
            if matches!(error, ApiError::Store { .. } | ApiError::MalformedKey) {
                state.observer.error(&format!("{} {path}: {error}", peer.addr));
            }
            error.response(state.era).map(BodyExt::boxed)
        }
    };
    let identity = routed.client.as_ref().or(peer.identity.as_ref().ok());
    state.observer.finish_request(
        state.era,
        &crate::observe::Finished {
            counted,
            // A log stream's response outlives the request: it is not an event of
            // its own. KES v0.16 audited it when its answer started (so that a
            // subscriber saw its own subscription), and so does a v0.16
            // configuration.
            audited: state.era == Era::V016 || !path.starts_with("/v1/log/"),
            path,
            identity: identity.map(Identity::as_str),
            proxy: routed.proxy.as_ref().map(Identity::as_str),
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
/// reports a framing error or a broken pipe instead of the answer. What is read is
/// dropped at once, never gathered.
async fn drain<B: RequestBody>(mut body: B) {
    let discard = async {
        let mut read = 0;
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(chunk) = frame.into_data() {
                read += chunk.len();
                if read > DRAIN_LIMIT {
                    break;
                }
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME, discard).await;
}

/// How many bytes of request bodies all requests together may hold at once.
/// Bodies are read into memory before a handler runs; without a common budget, a
/// client sending many 1 MB bodies slowly would hold that much memory per request.
/// A request whose next chunk does not fit waits (within its body timeout) for
/// others to finish.
const BODY_BUDGET: usize = 64 << 20;

static BODY_PERMITS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(BODY_BUDGET);

/// Bytes of [`BODY_BUDGET`] held by one request, given back when dropped.
#[derive(Debug, Default)]
struct Reserved(usize);

/// How long a request waits for room in [`BODY_BUDGET`] before it is refused.
const BODY_WAIT: Duration = Duration::from_secs(1);

impl Reserved {
    /// Takes `bytes` more of the budget, waiting at most [`BODY_WAIT`] for room.
    async fn take(&mut self, bytes: usize) -> Result<(), ApiError> {
        if bytes == 0 {
            return Ok(());
        }
        let n = u32::try_from(bytes).map_err(|_| ApiError::InvalidBody)?;
        match tokio::time::timeout(BODY_WAIT, BODY_PERMITS.acquire_many(n)).await {
            Ok(Ok(permit)) => {
                permit.forget();
                self.0 += bytes;
                Ok(())
            }
            _ => Err(ApiError::Busy),
        }
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        BODY_PERMITS.add_permits(self.0);
    }
}

/// Reads a body of at most `max` bytes, holding the bytes that arrived in
/// `reserved` (never more: a declared length alone holds nothing); a larger body
/// is handed back, partly read. The body may carry plaintexts and keys: it is
/// gathered in a [`Wiping`] buffer.
async fn read_limited<B: RequestBody>(
    mut body: B,
    max: usize,
    declared: Option<u64>,
    reserved: &mut Reserved,
) -> Result<Zeroizing<Vec<u8>>, (ApiError, Option<B>)> {
    let expected = declared.and_then(|n| usize::try_from(n).ok()).unwrap_or(0).min(max);
    let mut data = Wiping(Zeroizing::new(Vec::new()));
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return Err((ApiError::InvalidBody, None));
        };
        if let Ok(chunk) = frame.into_data() {
            let needed = data.0.len() + chunk.len();
            if needed > max {
                return Err((ApiError::InvalidBody, Some(body)));
            }
            if let Err(e) = reserved.take(needed.saturating_sub(reserved.0)).await {
                return Err((e, None));
            }
            data.append(&chunk, expected);
        }
    }
    Ok(data.0)
}

/// A buffer that never leaves a copy of its bytes behind: when it must grow, it
/// moves to a larger allocation and wipes the old one (a `Vec` would free it as it
/// is).
struct Wiping(Zeroizing<Vec<u8>>);

impl Wiping {
    /// Appends `bytes`; `expected` is the size the whole is expected to reach (0:
    /// unknown), to grow there at once.
    fn append(&mut self, bytes: &[u8], expected: usize) {
        let needed = self.0.len() + bytes.len();
        if needed > self.0.capacity() {
            let size = if expected >= needed {
                expected
            } else {
                needed.max(2 * self.0.capacity())
            };
            let mut larger = Zeroizing::new(Vec::with_capacity(size));
            larger.extend_from_slice(&self.0);
            self.0 = larger; // the old buffer is wiped as it is dropped
        }
        self.0.extend_from_slice(bytes);
    }
}

impl std::io::Write for Wiping {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.append(bytes, 0);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The bytes of a response body that are wiped when hyper drops the body.
struct Wiped(Zeroizing<Vec<u8>>);

impl AsRef<[u8]> for Wiped {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// A JSON answer that carries secrets (data keys, plaintexts): serialized without
/// an intermediate `serde_json::Value`, into a [`Wiping`] buffer that is wiped when
/// the response body is dropped.
fn secret_json(value: &impl Serialize) -> Result<Response<Body>, ApiError> {
    let mut buf = Wiping(Zeroizing::new(Vec::with_capacity(256)));
    serde_json::to_writer(&mut buf, value).map_err(|_| ApiError::MalformedKey)?;
    let mut response = Response::new(full(Bytes::from_owner(Wiped(buf.0))));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(response)
}

/// `{"plaintext"}`: a decrypted plaintext, base64.
#[derive(Serialize)]
struct Plaintext<'a> {
    plaintext: &'a str,
}

/// A new data key (fields in the order keyhost has always written them).
#[derive(Serialize)]
struct DataKey<'a> {
    ciphertext: &'a str,
    plaintext: &'a str,
}

async fn dispatch<B: RequestBody>(
    state: &State,
    peer: &Peer,
    req: Request<B>,
    routed: &mut Routed,
) -> Result<Response<Body>, ApiError> {
    let (parts, body) = req.into_parts();
    match dispatch_parts(state, peer, &parts, body, routed).await {
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
    routed: &mut Routed,
) -> Result<Response<Body>, Early<B>> {
    let early = |e: ApiError, body| Err((e, Some(body)));
    let Ok(path) = percent_encoding::percent_decode_str(req.uri.path()).decode_utf8() else {
        return early(ApiError::NoRoute, body);
    };
    let path = path.into_owned();
    if let Some(to) = go_redirect(&path, state.era) {
        return early(
            ApiError::Redirect {
                to,
                query: req.uri.query().map(str::to_owned),
                with_body: req.method == Method::GET || req.method == Method::HEAD,
            },
            body,
        );
    }
    let Some((route, resource)) = find(&path, state.era) else {
        return early(ApiError::NoRoute, body);
    };
    let mut resource = resource.to_owned();
    routed.path = Some(path);
    let path = routed.path.as_deref().unwrap_or_default();
    let method_ok = match state.era {
        // KES v0.16 took POST where the newest declares PUT, and nothing else.
        Era::V016 => req.method == route.v016_method(),
        Era::Newest => req.method == route.method || (route.method == Method::PUT && req.method == Method::POST),
    };
    if !method_ok {
        return early(
            ApiError::Method {
                got: req.method.to_string(),
                expected: match state.era {
                    Era::V016 => route.v016_method(),
                    Era::Newest => route.method.as_str(),
                },
            },
            body,
        );
    }
    if state.era == Era::V016 {
        // KES v0.16 matched the whole path against the route's pattern
        // (`/v1/key/create/*`), then took the resource as the path's last element
        // (`path.Base`): `/v1/key/list/` lists the pattern `list`.
        let pattern = route.v016_pattern();
        if !v016_path_matches(&pattern, path) {
            return early(ApiError::PathMismatch(pattern), body);
        }
        if resource.is_empty()
            && let Some(base) = route.path.strip_suffix('/')
        {
            resource = base.rsplit('/').next().unwrap_or_default().to_owned();
            // The policy, the audit line and the metrics see the path of what is
            // done (`/v1/key/delete/delete`), so that a deny of that key holds.
            routed.path = Some(format!("{}{resource}", route.path));
        }
    }
    let path = routed.path.as_deref().unwrap_or_default();
    let overridden = state.overrides.get(route.path);
    let auth = match overridden {
        Some(o) if o.skip_auth => Auth::None,
        _ => route.auth,
    };
    let timeout = overridden.and_then(|o| o.timeout).unwrap_or(route.timeout);
    let identity = match auth {
        Auth::None => None,
        Auth::Identify | Auth::Policy => match client_identity(state, peer, &req.headers) {
            Ok((client, proxy)) => {
                routed.client = Some(client.clone());
                routed.proxy = proxy;
                Some(client)
            }
            Err(e) => return early(e, body),
        },
    };
    if auth == Auth::Policy
        && let Some(identity) = &identity
        && route
            .authorized_paths(path, &resource)
            .iter()
            .any(|p| state.authorizer().authorize(identity, p) == Decision::Denied)
    {
        return early(ApiError::NotAllowed, body);
    }
    let accept = req.headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    // KES v0.16 answered every key listing as NDJSON, whatever the request
    // accepted (its client reads the trailers); the newest KES answers JSON,
    // whatever the request accepts.
    let ndjson = state.era == Era::V016;
    let all_metrics = crate::observe::Observer::wants_all(accept);
    let mut reserved = Reserved::default();
    let max_body = match state.era {
        Era::V016 => route.v016_max_body(),
        Era::Newest => route.max_body,
    };
    let body: Zeroizing<Vec<u8>> = if max_body > 0 {
        let declared = req
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let expects_continue = req
            .headers
            .get(header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        if expects_continue && declared.is_some_and(|n| n > max_body as u64) {
            // The client waits for "100 Continue" before it sends: answer without
            // reading, so that it never sends the body at all.
            return Err((ApiError::InvalidBody, None));
        }
        let read = read_limited(body, max_body, declared, &mut reserved);
        match tokio::time::timeout(state.limits.body_timeout, read).await {
            Ok(Ok(bytes)) => bytes,
            // The newest KES names the import body in its message, whatever is wrong.
            Ok(Err((ApiError::InvalidBody, body))) if route.handler == Handler::KeyImport => {
                return Err((ApiError::InvalidImportBody, body));
            }
            Ok(Err(refused)) => return Err(refused),
            // A body that stops arriving is not drained: the connection goes.
            Err(_) => return Err((ApiError::BodyTimeout, None)),
        }
    } else {
        drain(body).await;
        Zeroizing::new(Vec::new())
    };
    let handler = route.handler;
    let era = state.era;
    let call = async move {
        let accepts = Accepts { ndjson, all_metrics };
        let response = run(state, handler, &resource, identity.as_ref(), &body, accepts).await?;
        Ok(match (era, handler) {
            (Era::V016, Handler::Status) => response,
            (Era::V016, _) => v016_json(response),
            (Era::Newest, _) => response,
        })
    };
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

/// The machine's architecture as Go names it (`GOARCH`), which KES reports.
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "loongarch64" => "loong64",
        other => other,
    }
}

/// The content type Go gives a body it was not told the type of (KES v0.16's
/// JSON answers).
const GO_TEXT: &str = "text/plain; charset=utf-8";

/// A response of `bytes` typed `content_type`.
fn typed(bytes: Vec<u8>, content_type: &'static str) -> Response<Body> {
    let mut response = Response::new(full(bytes));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// A JSON answer as KES v0.16 wrote it (`json.NewEncoder(w).Encode`): a trailing
/// newline, and Go's sniffed content type. Bodies that carry secrets stay in
/// wiped buffers.
fn v016_json(response: Response<Body>) -> Response<Body> {
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == b"application/json");
    if !is_json || response.status() != StatusCode::OK {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(GO_TEXT));
    Response::from_parts(
        parts,
        BodyExt::boxed(WithNewline {
            inner: body,
            done: false,
        }),
    )
}

/// A body, then `\n`, with an exact size when the body's is known (so that the
/// answer keeps its `Content-Length`). The inner bytes pass through as they are:
/// a secret in a wiped buffer stays in it.
struct WithNewline {
    inner: Body,
    done: bool,
}

impl hyper::body::Body for WithNewline {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        use std::task::Poll;
        if !self.done {
            match std::pin::Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Ready(None) => {}
                other => return other,
            }
            self.done = true;
            return Poll::Ready(Some(Ok(hyper::body::Frame::data(Bytes::from_static(b"\n")))));
        }
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        let inner = self.inner.size_hint();
        let mut hint = hyper::body::SizeHint::new();
        hint.set_lower(inner.lower().saturating_add(u64::from(!self.done)));
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper.saturating_add(u64::from(!self.done)));
        }
        hint
    }
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

/// The identity of the request's client, and the proxy it came through: the
/// connection's identity, or — when the connection comes from a trusted TLS proxy —
/// that of the certificate the proxy forwarded.
///
/// A proxy must *replace* the header: a request that carries it twice is refused,
/// since a proxy that appends would otherwise let its client choose the identity.
fn client_identity(
    state: &State,
    peer: &Peer,
    headers: &http::HeaderMap,
) -> Result<(Identity, Option<Identity>), ApiError> {
    let direct = peer.identity.clone()?;
    let Some(proxy) = state.proxy.as_ref().filter(|p| p.identities.contains(&direct)) else {
        return Ok((direct, None));
    };
    let mut values = headers.get_all(&proxy.header).iter();
    let value = values
        .next()
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .ok_or(ApiError::ProxyNoCert)?;
    if values.next().is_some() {
        return Err(ApiError::ProxyTooManyCerts);
    }
    // Go's url.QueryUnescape: '+' is a space.
    let pem = percent_encoding::percent_decode_str(&value.replace('+', " "))
        .decode_utf8()
        .map_err(|_| ApiError::ProxyInvalidCert)?
        .into_owned();
    use rustls::pki_types::pem::PemObject;
    let certs: Vec<_> = rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|_| ApiError::ProxyInvalidCert)?;
    let client = match certs.as_slice() {
        [] => Err(ApiError::ProxyNoCert),
        [cert] => keyhost_policy::identity_of_chain([cert.as_ref()], keyhost_policy::ChainRule::V016)
            .map_err(|_| ApiError::ProxyInvalidCert),
        _ => Err(ApiError::ProxyTooManyCerts),
    }?;
    Ok((client, Some(direct)))
}

/// The most names one key listing returns. Beyond it, `continue_at` names the next
/// one (as KES does after a page); clients can then only go on with a narrower
/// prefix.
const MAX_LISTED: usize = 100_000;

/// Key listings built at once. A listing holds up to [`MAX_LISTED`] names (a few
/// MB) and makes up to a hundred keystore calls; more listings wait their turn.
static LISTINGS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(4);

/// A newest-era key listing.
#[derive(Serialize)]
struct Names<'a> {
    names: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    continue_at: Option<&'a str>,
}

/// The longest listing glob a v0.16 listing accepts. Go's `path.Match` walks the
/// whole pattern at every position of a name, so a pattern's cost grows with its
/// length times the names'; names are at most 80 bytes, and 256 bytes leave room
/// for a class per character of a long name.
const MAX_GLOB: usize = 256;

/// A v0.16 listing's glob (`*` when empty); `None` for a malformed one, which (as in KES v0.16,
/// where `path.Match` fails) matches nothing. Longer globs than [`MAX_GLOB`] are
/// refused: matching them costs more than any name is worth.
fn v016_glob(resource: &str) -> Result<Option<keyhost_policy::Pattern>, ApiError> {
    let pattern = if resource.is_empty() { "*" } else { resource };
    if pattern.len() > MAX_GLOB {
        return Err(ApiError::InvalidName {
            kind: "listing pattern",
            name: resource.to_owned(),
        });
    }
    Ok(keyhost_policy::Pattern::parse(pattern, keyhost_policy::PatternSyntax::Glob).ok())
}

/// Whether a v0.16 listing's glob (see [`v016_glob`]) matches `name`.
fn glob_matches(glob: &Option<keyhost_policy::Pattern>, name: &str) -> bool {
    glob.as_ref().is_some_and(|g| g.matches(name))
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

/// KES's `validPattern`: empty, `*`, or up to 80 bytes of `0-9 A-Z a-z _ -`
/// (`-` neither first nor last, not `_` alone) optionally ending in one `*`; the
/// prefix it lists.
fn list_prefix(pattern: &str) -> Option<&str> {
    if pattern == "*" {
        return Some("");
    }
    let last = pattern.len().saturating_sub(1);
    let ok = pattern != "_"
        && pattern.len() <= 80
        && pattern.bytes().enumerate().all(|(i, b)| {
            b.is_ascii_alphanumeric() || b == b'_' || (b == b'-' && i > 0 && i < last) || (b == b'*' && i == last)
        });
    ok.then(|| pattern.strip_suffix('*').unwrap_or(pattern))
}

/// A listing's pattern as a prefix, or KES's 400.
fn listing_prefix(pattern: &str) -> Result<&str, ApiError> {
    list_prefix(pattern).ok_or_else(|| ApiError::InvalidName {
        kind: "listing pattern",
        name: pattern.to_owned(),
    })
}

/// A policy name or identity of a newest route, checked with KES's `validName`.
fn valid_newest(kind: &'static str, name: &str) -> Result<(), ApiError> {
    if valid_name(name, Era::Newest) {
        Ok(())
    } else {
        Err(ApiError::InvalidName {
            kind,
            name: name.to_owned(),
        })
    }
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

/// A base64 `[]byte` field: absent or `null` is empty. The field may hold a
/// plaintext or a key: the text is read where it lies in the request buffer (or,
/// when it had JSON escapes, from a copy that is wiped), and decoded into a wiped
/// buffer.
mod b64_field {
    use super::*;
    use serde::Deserializer;
    use serde::de::{Error, Visitor};

    struct Base64;

    impl<'de> Visitor<'de> for Base64 {
        type Value = Zeroizing<Vec<u8>>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("base64 text or null")
        }

        fn visit_str<E: Error>(self, text: &str) -> Result<Self::Value, E> {
            B64.decode(text.as_bytes()).map(Zeroizing::new).map_err(E::custom)
        }

        fn visit_string<E: Error>(self, text: String) -> Result<Self::Value, E> {
            let text = Zeroizing::new(text);
            self.visit_str(&text)
        }

        fn visit_none<E: Error>(self) -> Result<Self::Value, E> {
            Ok(Zeroizing::new(Vec::new()))
        }

        fn visit_unit<E: Error>(self) -> Result<Self::Value, E> {
            Ok(Zeroizing::new(Vec::new()))
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_str(self)
        }
    }

    pub(super) fn de<'de, D: Deserializer<'de>>(d: D) -> Result<Zeroizing<Vec<u8>>, D::Error> {
        d.deserialize_option(Base64)
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

/// How to answer: in the era's listing form, and what the `Accept` header asks.
#[derive(Debug, Clone, Copy)]
struct Accepts {
    /// NDJSON key listings with trailers (a v0.16 configuration, whatever the
    /// request accepts).
    ndjson: bool,
    /// keyhost's own metric families besides KES's (Prometheus scrapers).
    all_metrics: bool,
}

async fn run(
    state: &State,
    handler: Handler,
    resource: &str,
    identity: Option<&Identity>,
    body: &[u8],
    accepts: Accepts,
) -> Result<Response<Body>, ApiError> {
    let ndjson = accepts.ndjson;
    let caller = identity.map(Identity::as_str).unwrap_or_default();
    match handler {
        // KES v0.16 printed `{"version":"…"}` as text, without a content type of its own.
        Handler::Version if state.era == Era::V016 => Ok(typed(
            format!("{{\"version\":\"{}\"}}", env!("CARGO_PKG_VERSION")).into_bytes(),
            GO_TEXT,
        )),
        Handler::Version => ok(&json!({ "version": env!("CARGO_PKG_VERSION"), "commit": "" })),
        Handler::Ready if state.cache.is_offline() => Err(ApiError::StoreUnreachable),
        Handler::Ready => match state.keystore.status().await {
            Ok(_) => empty(),
            Err(e) if e.is_unreachable() => Err(ApiError::StoreUnreachable),
            Err(_) => Err(ApiError::StoreUnavailable),
        },
        Handler::Status if state.era == Era::V016 => {
            // KES v0.16: durations in nanoseconds (whole seconds), and the server
            // certificate's expiry and names.
            let secs = |d: Duration| d.as_secs().saturating_mul(1_000_000_000);
            let mut certificate = json!({ "expiry": 0 });
            if let Some(cert) = &state.certificate {
                let left = (cert.not_after - time::OffsetDateTime::now_utc()).max(time::Duration::ZERO);
                certificate["expiry"] = json!(secs(left.try_into().unwrap_or_default()));
                if !cert.dns.is_empty() {
                    certificate["dns"] = json!(cert.dns);
                }
                if !cert.ips.is_empty() {
                    certificate["ip"] = json!(cert.ips);
                }
            }
            let status = json!({
                "version": env!("CARGO_PKG_VERSION"),
                "uptime": secs(state.started.elapsed()),
                "certificate": certificate,
            });
            let mut body = serde_json::to_vec(&status).unwrap_or_default();
            body.push(b'\n');
            Ok(typed(body, "application/json"))
        }
        Handler::Status => {
            let health = if state.cache.is_offline() {
                Err(keyhost_keystore::Error::Unavailable("offline".into()))
            } else {
                state.keystore.status().await
            };
            let mut status = json!({
                "version": env!("CARGO_PKG_VERSION"),
                "os": std::env::consts::OS,
                "arch": go_arch(),
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
            let requests: Vec<CryptoRequest> = serde_json::from_slice(body).map_err(|_| ApiError::InvalidBody)?;
            if requests.len() > 1000 {
                return Err(ApiError::TooManyCiphertexts);
            }
            let key = state.cache.get(&*state.keystore, name).await?;
            let mut plaintexts = Vec::with_capacity(requests.len());
            for req in &requests {
                let plaintext = key.key.open(&req.ciphertext, &req.context).map_err(ApiError::Decrypt)?;
                plaintexts.push(Zeroizing::new(B64.encode(&plaintext[..])));
            }
            let out: Vec<Plaintext<'_>> = plaintexts.iter().map(|p| Plaintext { plaintext: p }).collect();
            secret_json(&out)
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
            let written: Written = serde_json::from_slice(body).map_err(|_| ApiError::InvalidBody)?;
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
            // KES v0.16's order: the admin first, then the caller itself.
            if Some(&id) == state.authorizer().admin() {
                return Err(ApiError::IdentityIsRoot);
            }
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
                state.era,
                accepts.all_metrics,
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
                .filter(|r| r.served_in(state.era))
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
            let req: ImportRequest = serde_json::from_slice(body).map_err(|_| ApiError::InvalidImportBody)?;
            let cipher = match state.era {
                Era::V016 => String::new(),
                Era::Newest => req.cipher.clone().unwrap_or_default(),
            };
            let algorithm = match state.era {
                Era::V016 => Algorithm::Aes256,
                // The newest KES names the cipher or refuses the key (406).
                Era::Newest => {
                    Algorithm::from_name(&cipher).ok_or_else(|| ApiError::UnsupportedCipher(cipher.clone()))?
                }
            };
            // KES v0.16 read only `bytes` (and ignored other fields).
            let bytes = if req.key.is_empty() || state.era == Era::V016 {
                &req.bytes
            } else {
                &req.key
            };
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
            // outcome in the trailers `Status` and `Error`. Matching runs on the
            // blocking pool, a page at a time, never on the runtime's threads.
            let glob = std::sync::Arc::new(v016_glob(resource)?);
            let _turn = LISTINGS.acquire().await.map_err(|_| ApiError::Timeout)?;
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
                let glob = glob.clone();
                let names = page.names;
                let matched = tokio::task::spawn_blocking(move || {
                    names
                        .into_iter()
                        .filter(|n| glob_matches(&glob, n))
                        .map(|name| json!({ "Name": name }).to_string() + "\n")
                        .collect::<Vec<_>>()
                })
                .await
                .map_err(|_| ApiError::Timeout)?;
                lines.extend(matched);
                if lines.len() >= MAX_LISTED {
                    lines.truncate(MAX_LISTED);
                    break;
                }
                match page.next {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
            ndjson_with_trailers(lines)
        }
        Handler::KeyList => {
            // One answer holds every matching name, up to MAX_LISTED. A
            // continuation cannot work here: clients (kms-go's iterator, the kes
            // CLI) ask for `/v1/key/list/<continue_at>`, which names a prefix, so
            // the next page would hold only names that extend the continuation.
            let prefix = listing_prefix(resource)?;
            let _turn = LISTINGS.acquire().await.map_err(|_| ApiError::Timeout)?;
            let mut names = Vec::new();
            let mut after: Option<String> = None;
            let continue_at = loop {
                let page = state
                    .keystore
                    .list(prefix, after.as_deref(), 1000)
                    .await
                    .map_err(|error| ApiError::Store {
                        op: StoreOp::List,
                        error,
                    })?;
                names.extend(page.names);
                if names.len() > MAX_LISTED {
                    break names.drain(MAX_LISTED..).next();
                }
                match page.next {
                    Some(next) => after = Some(next),
                    None => break None,
                }
            };
            ok(&Names {
                names: &names,
                continue_at: continue_at.as_deref(),
            })
        }
        Handler::KeyDelete => {
            let name = key_name(resource, state.era)?;
            let result = state.keystore.delete(name).await;
            if matches!(result, Ok(()) | Err(StoreError::NotFound)) {
                state.cache.evict(name);
            }
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
            let req = crypto_request(body, state.era == Era::V016)?;
            let key = state.cache.get(&*state.keystore, name).await?;
            let dek = keyhost_crypto::random_key();
            let ciphertext = key.key.seal(&dek[..], &req.context, state.ciphertext_format);
            let plaintext = Zeroizing::new(B64.encode(&dek[..]));
            let ciphertext = B64.encode(ciphertext);
            secret_json(&DataKey {
                ciphertext: &ciphertext,
                plaintext: &plaintext,
            })
        }
        Handler::KeyEncrypt => {
            let name = key_name(resource, state.era)?;
            let req = crypto_request(body, true)?;
            let key = state.cache.get(&*state.keystore, name).await?;
            let ciphertext = key.key.seal(&req.plaintext, &req.context, state.ciphertext_format);
            ok(&json!({ "ciphertext": B64.encode(ciphertext) }))
        }
        Handler::KeyDecrypt => {
            let name = key_name(resource, state.era)?;
            let req = crypto_request(body, true)?;
            let key = state.cache.get(&*state.keystore, name).await?;
            let plaintext = key.key.open(&req.ciphertext, &req.context).map_err(|e| match e {
                // KES v0.16 knew only JSON ciphertexts: anything else that does not
                // open is, to it, not a ciphertext at all.
                DecryptError::NotAuthentic
                    if state.era == Era::V016
                        && serde_json::from_slice::<serde::de::IgnoredAny>(&req.ciphertext).is_err() =>
                {
                    ApiError::Decrypt(DecryptError::Malformed)
                }
                e => ApiError::Decrypt(e),
            })?;
            let encoded = Zeroizing::new(B64.encode(&plaintext[..]));
            secret_json(&Plaintext { plaintext: &encoded })
        }
        Handler::KeyHmac => {
            let name = key_name(resource, state.era)?;
            let req = crypto_request(body, true)?;
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
            let names: Vec<&str> = auth.policy_names().filter(|n| glob_matches(&glob, n)).collect();
            ok(&names)
        }
        Handler::IdentityList if state.era == Era::V016 => {
            let lines: Vec<String> = {
                let auth = state.authorizer();
                let glob = v016_glob(resource)?;
                auth.identities()
                    .filter(|(i, _)| glob_matches(&glob, i.as_str()))
                    .map(|(i, p)| json!({ "identity": i.as_str(), "policy": p }).to_string() + "\n")
                    .collect()
            };
            ndjson_with_trailers(lines)
        }
        Handler::PolicyDescribe | Handler::PolicyRead => {
            valid_newest("policy name", resource)?;
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
            let prefix = listing_prefix(resource)?;
            let names: Vec<&str> = auth.policy_names().filter(|n| n.starts_with(prefix)).collect();
            ok(&json!({ "names": names, "continue_at": "" }))
        }
        Handler::IdentityDescribe => {
            valid_newest("identity", resource)?;
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
            let prefix = listing_prefix(resource)?;
            let mut ids: Vec<&str> = auth
                .identities()
                .map(|(i, _)| i.as_str())
                .chain(auth.admin().map(Identity::as_str))
                .filter(|i| i.starts_with(prefix))
                .collect();
            ids.sort_unstable();
            ok(&json!({ "identities": ids, "continue_at": "" }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_resolve_like_kes() {
        for era in [Era::Newest, Era::V016] {
            assert_eq!(
                find("/v1/key/create/my-key", era).map(|(r, n)| (r.path, n)),
                Some(("/v1/key/create/", "my-key"))
            );
            assert_eq!(
                find("/v1/key/list", era).map(|(r, n)| (r.path, n)),
                Some(("/v1/key/list/", ""))
            );
            assert_eq!(find("/version", era).map(|(r, _)| r.path), Some("/version"));
            assert!(find("/v1/nope", era).is_none());
            assert!(find("/version/x", era).is_none());
        }
        assert_eq!(
            find("/v1/identity/self/describe", Era::Newest).map(|(r, _)| r.path),
            Some("/v1/identity/self/describe")
        );
        // Each era serves its own release's routes only.
        for path in ["/v1/policy/write/p", "/v1/identity/assign/p/x", "/v1/log/audit/trace"] {
            assert!(find(path, Era::Newest).is_none(), "{path}");
            assert!(find(path, Era::V016).is_some(), "{path}");
        }
        for path in [
            "/v1/key/describe/k",
            "/v1/key/hmac/k",
            "/v1/key/bulk/decrypt/k",
            "/v1/ready",
        ] {
            assert!(find(path, Era::V016).is_none(), "{path}");
            assert!(find(path, Era::Newest).is_some(), "{path}");
        }
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
        // What the newest KES refused (seen side by side in tests/compat).
        for bad in ["app-", "a.b", "_", "a*b", "**", &"a".repeat(81)] {
            assert!(list_prefix(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn go_routers_redirect_like_kes() {
        for era in [Era::Newest, Era::V016] {
            assert_eq!(go_redirect("/v1/key/create", era).as_deref(), Some("/v1/key/create/"));
            assert_eq!(go_redirect("/v1/key/create/", era), None);
            assert_eq!(go_redirect("/v1/key/create/k", era), None);
            assert_eq!(
                go_redirect("/v1//key/create/k", era).as_deref(),
                Some("/v1/key/create/k")
            );
            assert_eq!(
                go_redirect("/v1/key/./create/k", era).as_deref(),
                Some("/v1/key/create/k")
            );
            assert_eq!(
                go_redirect("/v1/key/x/../create/", era).as_deref(),
                Some("/v1/key/create/")
            );
            assert_eq!(go_redirect("/version", era), None);
            assert_eq!(go_redirect("/", era), None);
        }
        assert_eq!(
            go_redirect("/v1/key/hmac", Era::Newest).as_deref(),
            Some("/v1/key/hmac/")
        );
        assert_eq!(go_redirect("/v1/key/hmac", Era::V016), None, "not a v0.16 route");
        assert_eq!(
            go_redirect("/v1/policy/write", Era::V016).as_deref(),
            Some("/v1/policy/write/")
        );
    }

    #[test]
    fn v016_paths_match_their_route_patterns() {
        assert!(v016_path_matches("/v1/key/create/*", "/v1/key/create/k"));
        assert!(v016_path_matches("/v1/key/create/*", "/v1/key/create/"));
        assert!(!v016_path_matches("/v1/key/create/*", "/v1/key/create/a/b"));
        assert!(v016_path_matches("/v1/identity/assign/*/*", "/v1/identity/assign/p/id"));
        assert!(!v016_path_matches("/v1/identity/assign/*/*", "/v1/identity/assign/p"));
        assert!(!v016_path_matches(
            "/v1/identity/assign/*/*",
            "/v1/identity/assign/p/id/x"
        ));
        assert!(v016_path_matches("/v1/status", "/v1/status"));
        let create = ROUTES.iter().find(|r| r.path == "/v1/key/create/").unwrap();
        assert_eq!(create.v016_pattern(), "/v1/key/create/*");
        assert_eq!(create.v016_method(), "POST");
        let encrypt = ROUTES.iter().find(|r| r.path == "/v1/key/encrypt/").unwrap();
        assert_eq!(encrypt.v016_max_body(), 512 << 10);
    }
}
