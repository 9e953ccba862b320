//! The route table: every route of both KES eras, one line each, with its method,
//! who may call it, its body limit and its deadline; and how a path finds its route
//! (Go's redirects and v0.16's path patterns included).

use std::time::Duration;

use http::Method;

use crate::era::Era;

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
pub(super) enum Handler {
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
    pub(super) handler: Handler,
}

/// The newest KES's body limit of the routes that take a body: 1 MB (10^6 bytes).
const MB: usize = 1_000_000;
/// KES v0.16's body limit of the routes that take a body: 1 MiB (2^20 bytes).
const MIB: usize = 1 << 20;
/// No body.
const NONE: usize = 0;
/// The deadline of the API's requests, in seconds.
const SECS: u64 = 15;
/// The deadline of the routes KES gave 10 s.
const SHORT: u64 = 10;
/// No deadline: a log stream lasts as long as its client.
const STREAM: u64 = 0;

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
use Method as M;

/// Every route keyhost serves, with the era whose configurations serve it.
///
/// Each era serves exactly its own KES release's routes: a policy is written
/// against one release's API, and a route of the other release would widen it (a
/// newest-schema identity allowed `/v1/*` could rewrite its own policy through
/// v0.16's `/v1/policy/write/`; a v0.16 glob `/v1/key/*/app-*` would allow the
/// newest `hmac` and `describe`).
#[rustfmt::skip]
pub const ROUTES: &[Route] = &[
    route(        "/version",                    M::GET,    Auth::None, NONE, SHORT,  H::Version),
    route(        "/v1/status",                  M::GET,    Policy,     NONE, SECS,   H::Status),
    route(        "/v1/metrics",                 M::GET,    Policy,     NONE, SECS,   H::Metrics),
    route(        "/v1/key/create/",             M::PUT,    Policy,     NONE, SECS,   H::KeyCreate),
    route(        "/v1/key/import/",             M::PUT,    Policy,     MB,   SECS,   H::KeyImport),
    route(        "/v1/key/list/",               M::GET,    Policy,     NONE, SECS,   H::KeyList),
    route(        "/v1/key/delete/",             M::DELETE, Policy,     NONE, SECS,   H::KeyDelete),
    route(        "/v1/key/generate/",           M::PUT,    Policy,     MB,   SECS,   H::KeyGenerate),
    route(        "/v1/key/encrypt/",            M::PUT,    Policy,     MB,   SECS,   H::KeyEncrypt),
    route(        "/v1/key/decrypt/",            M::PUT,    Policy,     MB,   SECS,   H::KeyDecrypt),
    route(        "/v1/policy/read/",            M::GET,    Policy,     NONE, SECS,   H::PolicyRead),
    route(        "/v1/policy/list/",            M::GET,    Policy,     NONE, SECS,   H::PolicyList),
    route(        "/v1/identity/list/",          M::GET,    Policy,     NONE, SECS,   H::IdentityList),
    // KES 2023 and later.
    only(Newest,  "/v1/ready",                   M::GET,    Policy,     NONE, SECS,   H::Ready),
    only(Newest,  "/v1/api",                     M::GET,    Policy,     NONE, SHORT,  H::Api),
    only(Newest,  "/v1/key/describe/",           M::GET,    Policy,     NONE, SECS,   H::KeyDescribe),
    only(Newest,  "/v1/key/hmac/",               M::PUT,    Policy,     MB,   SECS,   H::KeyHmac),
    only(Newest,  "/v1/policy/describe/",        M::GET,    Policy,     NONE, SECS,   H::PolicyDescribe),
    only(Newest,  "/v1/identity/describe/",      M::GET,    Policy,     NONE, SECS,   H::IdentityDescribe),
    only(Newest,  "/v1/identity/self/describe",  M::GET,    Identify,   NONE, SECS,   H::IdentitySelf),
    only(Newest,  "/v1/log/error",               M::GET,    Policy,     NONE, STREAM, H::LogError),
    only(Newest,  "/v1/log/audit",               M::GET,    Policy,     NONE, STREAM, H::LogAudit),
    // KES 2022–2023: decrypt up to 1,000 ciphertexts of one key at once; the policy
    // must allow both this path and `/v1/key/decrypt/<name>`, the operation it is.
    only(Newest,  "/v1/key/bulk/decrypt/",       M::PUT,    Policy,     MB,   SECS,   H::KeyBulkDecrypt),
    // KES v0.16: policies and assignments changed at run time (in memory, this
    // node), and the log streams' old names.
    only(V016,    "/v1/policy/write/",           M::POST,   Policy,     MIB,  SHORT,  H::PolicyWrite),
    only(V016,    "/v1/policy/delete/",          M::DELETE, Policy,     NONE, SHORT,  H::PolicyDelete),
    only(V016,    "/v1/identity/assign/",        M::POST,   Policy,     MIB,  SHORT,  H::IdentityAssign),
    only(V016,    "/v1/identity/forget/",        M::DELETE, Policy,     NONE, SHORT,  H::IdentityForget),
    only(V016,    "/v1/log/error/trace",         M::GET,    Policy,     NONE, STREAM, H::LogError),
    only(V016,    "/v1/log/audit/trace",         M::GET,    Policy,     NONE, STREAM, H::LogAudit),
];

impl Route {
    /// Whether configurations of `era` serve this route.
    pub fn served_in(&self, era: Era) -> bool {
        self.era.is_none_or(|e| e == era)
    }

    /// The paths a policy must all allow for a request to this route: its own, and
    /// that of the operation it performs when another route is that operation's,
    /// so a deny on either applies (bulk decrypt is a decryption of its key).
    pub(super) fn authorized_paths(&self, path: &str, resource: &str) -> Vec<String> {
        match self.handler {
            H::KeyBulkDecrypt => vec![format!("/v1/key/decrypt/{resource}"), path.to_owned()],
            _ => vec![path.to_owned()],
        }
    }
}

impl Route {
    /// The method KES v0.16 took: POST where the newest declares PUT.
    pub(super) fn v016_method(&self) -> &'static str {
        if self.method == Method::PUT || self.method == Method::POST {
            "POST"
        } else if self.method == Method::DELETE {
            "DELETE"
        } else {
            "GET"
        }
    }

    /// KES v0.16's body limits: 1 MiB (not the newest 1 MB), 512 KiB to encrypt.
    pub(super) fn v016_max_body(&self) -> usize {
        match (self.handler, self.max_body) {
            (_, NONE) => NONE,
            (H::KeyEncrypt, _) => MIB / 2,
            _ => MIB,
        }
    }

    /// The `path.Match` pattern KES v0.16 checked a request's path against.
    pub(super) fn v016_pattern(&self) -> String {
        match self.handler {
            H::IdentityAssign => format!("{}*/*", self.path),
            _ if self.path.ends_with('/') => format!("{}*", self.path),
            _ => self.path.to_owned(),
        }
    }
}

/// Whether `path` matches a route pattern of [`Route::v016_pattern`]: each `*`
/// stands for one non-empty-or-empty path element without `/`.
pub(super) fn v016_path_matches(pattern: &str, path: &str) -> bool {
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
pub(super) fn go_redirect(path: &str, era: Era) -> Option<String> {
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
pub(super) fn find(path: &str, era: Era) -> Option<(&'static Route, &str)> {
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
