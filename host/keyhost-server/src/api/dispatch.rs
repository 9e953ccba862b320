//! Dispatch: one request from its path to its answer — routing, the method,
//! the client's identity (through a trusted proxy too), the policy, the body, the
//! deadline — and its metrics and audit line.

use http::{Method, Request, Response, header};
use http_body_util::BodyExt;
use keyhost_policy::{Decision, Identity};
use zeroize::Zeroizing;

use super::body::{RequestBody, Reserved, drain, read_limited};
use super::respond::{Body, v016_json};
use super::routes::{Auth, Handler, find, go_redirect, v016_path_matches};
use super::{Accepts, Call, run};
use crate::era::Era;
use crate::error::ApiError;
use crate::{Holder, Peer, State};

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
    let auth = state.auth_of(route);
    let timeout = state.timeout_of(route);
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
    // Shares of what requests hold (see `crate::shares`): requests in flight, and
    // the memory their bodies are read into; by identity, or by address for a
    // request without one.
    let holder = match &identity {
        Some(id) => Holder::Identity(id.clone()),
        None => Holder::Address(peer.addr.ip()),
    };
    let privileged = state.is_admin(&holder);
    let pools = state.request_pools();
    let Some(_in_flight) = pools.in_flight.try_take(&holder, 1, privileged) else {
        return early(ApiError::ClientBusy, body);
    };
    let accept = req.headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    // KES v0.16 answered every key listing as NDJSON, whatever the request
    // accepted (its client reads the trailers); the newest KES answers JSON,
    // whatever the request accepts.
    let ndjson = state.era == Era::V016;
    let all_metrics = crate::observe::Observer::wants_all(accept);
    let mut reserved = Reserved::new(pools.body.clone(), holder, privileged);
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
        let call = Call {
            state,
            resource: &resource,
            identity: identity.as_ref(),
            body: &body,
            accepts: Accepts { ndjson, all_metrics },
        };
        let response = run(handler, &call).await?;
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

/// The identity of the request's client, and the proxy it came through: the
/// connection's identity, or — when the connection comes from a trusted TLS proxy —
/// that of the certificate the proxy forwarded.
///
/// A proxy must *replace* the header: a request that carries it twice, or one line
/// naming two certificates however they are joined, is refused, since a proxy that
/// appends would otherwise let its client choose the identity
/// ([`keyhost_tls::forwarded`]).
fn client_identity(
    state: &State,
    peer: &Peer,
    headers: &http::HeaderMap,
) -> Result<(Identity, Option<Identity>), ApiError> {
    use keyhost_tls::Forwarded;
    let direct = peer.identity.clone()?;
    let Some(proxy) = state.proxy.as_ref().filter(|p| p.identities.contains(&direct)) else {
        return Ok((direct, None));
    };
    let mut values = headers.get_all(&proxy.header).iter();
    let value = values.next().ok_or(ApiError::ProxyNoCert)?;
    if values.next().is_some() {
        return Err(ApiError::ProxyTooManyCerts);
    }
    let refused = |e: Forwarded| match e {
        Forwarded::Missing => ApiError::ProxyNoCert,
        Forwarded::TooMany => ApiError::ProxyTooManyCerts,
        Forwarded::Invalid => ApiError::ProxyInvalidCert,
        Forwarded::Untrusted => ApiError::ProxyUntrustedCert,
    };
    let cert = keyhost_tls::forwarded::parse_header_value(value.as_bytes()).map_err(refused)?;
    let client = keyhost_policy::identity_of_chain([cert.as_ref()], keyhost_policy::ChainRule::V016)
        .map_err(|_| ApiError::ProxyInvalidCert)?;
    if let Some(verifier) = &proxy.verify {
        verifier.verify(&cert).map_err(refused)?;
    }
    Ok((client, Some(direct)))
}
