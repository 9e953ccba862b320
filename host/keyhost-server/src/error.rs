//! The one table that turns every failure into KES's status code and message.
//!
//! Go clients compare errors by status *and* text (`errors.Is(err, kes.ErrKeyExists)`),
//! so these texts are part of the wire contract. Where KES v0.16 used other texts,
//! configurations in the v0.16 style get those ([`Era::V016`]); kms-go maps both.

use std::borrow::Cow;

use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use http_body_util::Full;
use keyhost_crypto::DecryptError;
use keyhost_keystore::Error as StoreError;
use keyhost_keystore::NameKind;

use crate::era::Era;

/// What a keystore operation was doing, for its 502 message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOp {
    /// create or import
    Create,
    /// get
    Read,
    /// delete
    Delete,
    /// list
    List,
}

/// Every way a request can fail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// The policy does not allow the path.
    #[error("not authorized")]
    NotAllowed,
    /// No such key.
    #[error("key does not exist")]
    KeyNotFound,
    /// The key exists already.
    #[error("key already exists")]
    KeyExists,
    /// No such policy.
    #[error("policy does not exist")]
    PolicyNotFound,
    /// No such identity.
    #[error("identity does not exist")]
    IdentityNotFound,
    /// A ciphertext that does not open.
    #[error("decryption failed")]
    Decrypt(DecryptError),
    /// A key, policy or identity name outside the allowed syntax.
    #[error("invalid {kind} '{name}'")]
    InvalidName {
        /// What the name names.
        kind: NameKind,
        /// The name as sent.
        name: String,
    },
    /// A body that does not parse.
    #[error("invalid request body")]
    InvalidBody,
    /// An import body that does not parse.
    #[error("invalid import key request body")]
    InvalidImportBody,
    /// An import naming an unknown cipher.
    #[error("algorithm '{0}' is not supported")]
    UnsupportedCipher(String),
    /// An import key of the wrong size.
    #[error("invalid key size for '{0}'")]
    InvalidKeySize(String),
    /// HMAC with a legacy key that has no HMAC key.
    #[error("key does not support HMAC")]
    NoHmac,
    /// The keystore failed.
    #[error("keystore failure during {op:?}: {error}")]
    Store {
        /// What was being done.
        op: StoreOp,
        /// The keystore's answer.
        error: StoreError,
    },
    /// A stored key that does not parse.
    #[error("the stored key is malformed")]
    MalformedKey,
    /// `/v1/ready` while the keystore is unreachable.
    #[error("key store is not reachable")]
    StoreUnreachable,
    /// `/v1/ready` while the keystore fails otherwise.
    #[error("key store is unavailable")]
    StoreUnavailable,
    /// No client certificate on a route that needs one.
    #[error("tls: client certificate is required")]
    CertRequired,
    /// More than one end-entity certificate.
    #[error("tls: received more than one client certificate")]
    TooManyCerts,
    /// A client certificate that does not parse.
    #[error("tls: invalid client certificate")]
    InvalidCert,
    /// A route that exists with another method.
    #[error("received method '{got}' expected '{expected}'")]
    Method {
        /// The request's method.
        got: String,
        /// The route's method.
        expected: &'static str,
    },
    /// A bulk decrypt of more than 1,000 ciphertexts.
    #[error("too many ciphertexts")]
    TooManyCiphertexts,
    /// v0.16: the admin identity cannot be assigned a policy or forgotten.
    #[error("identity is root")]
    IdentityIsRoot,
    /// v0.16: not an identity.
    #[error("identity is unknown")]
    IdentityUnknown,
    /// v0.16: an identity cannot assign a policy to itself.
    #[error("identity cannot assign policy to itself")]
    AssignSelf,
    /// A trusted proxy forwarded no client certificate.
    #[error("no client certificate is present")]
    ProxyNoCert,
    /// A trusted proxy forwarded more than one certificate.
    #[error("too many client certificates are present")]
    ProxyTooManyCerts,
    /// A trusted proxy forwarded something that is not a certificate.
    #[error("invalid client certificate")]
    ProxyInvalidCert,
    /// Client verification is on, and the certificate a trusted proxy forwarded
    /// does not verify (KES v0.16.1: `403` with an empty message).
    #[error("")]
    ProxyUntrustedCert,
    /// No route.
    #[error("404 page not found")]
    NoRoute,
    /// KES v0.16's router sent the client to the route's own path (a prefix
    /// named without its trailing slash, or a path with `//`, `.` or `..`).
    #[error("Moved Permanently")]
    Redirect {
        /// Where to: the cleaned, decoded path.
        to: String,
        /// The request's query, kept as it came (Go kept `RawQuery`).
        query: Option<String>,
        /// Whether the answer has Go's small HTML body (GET and HEAD).
        with_body: bool,
    },
    /// KES v0.16: the path has more or fewer elements than the route's pattern.
    #[error("request URL path does not match API pattern: {0}")]
    PathMismatch(String),
    /// The route's deadline passed.
    #[error("timeout")]
    Timeout,
    /// The bodies of other requests fill the body budget (keyhost's own).
    #[error("server busy")]
    Busy,
    /// The client has its share of requests in flight (keyhost's own).
    #[error("client busy")]
    ClientBusy,
    /// The request body did not arrive within the body timeout (keyhost's own).
    #[error("request body timed out")]
    BodyTimeout,
    /// `log.audit: required` and the audit log cannot be written (keyhost's own).
    #[error("audit log is not writable")]
    AuditUnavailable,
}

impl From<crate::cache::LoadError> for ApiError {
    fn from(error: crate::cache::LoadError) -> Self {
        match error {
            crate::cache::LoadError::Store(error) => Self::store(StoreOp::Read)(error),
            crate::cache::LoadError::Malformed => Self::MalformedKey,
        }
    }
}

impl From<keyhost_policy::CertError> for ApiError {
    fn from(error: keyhost_policy::CertError) -> Self {
        match error {
            keyhost_policy::CertError::Missing => ApiError::CertRequired,
            keyhost_policy::CertError::TooMany => ApiError::TooManyCerts,
            keyhost_policy::CertError::Invalid => ApiError::InvalidCert,
        }
    }
}

impl ApiError {
    /// The error of a keystore operation that failed, for `map_err`: a missing name
    /// of a read or delete is [`ApiError::KeyNotFound`], an existing one of a create
    /// [`ApiError::KeyExists`], and anything else the keystore's 502.
    pub(crate) fn store(op: StoreOp) -> impl FnOnce(StoreError) -> Self {
        move |error| match (op, error) {
            (StoreOp::Read | StoreOp::Delete, StoreError::NotFound) => Self::KeyNotFound,
            (StoreOp::Create, StoreError::AlreadyExists) => Self::KeyExists,
            (op, error) => Self::Store { op, error },
        }
    }

    /// The status and message of this error in `era`.
    pub fn status_and_message(&self, era: Era) -> (StatusCode, Cow<'static, str>) {
        use ApiError::*;
        let v016 = era == Era::V016;
        match self {
            NotAllowed if v016 => (StatusCode::FORBIDDEN, "prohibited by policy".into()),
            NotAllowed => (StatusCode::FORBIDDEN, "not authorized: insufficient permissions".into()),
            KeyNotFound => (StatusCode::NOT_FOUND, "key does not exist".into()),
            KeyExists if v016 => (StatusCode::BAD_REQUEST, "key does already exist".into()),
            KeyExists => (StatusCode::BAD_REQUEST, "key already exists".into()),
            PolicyNotFound => (StatusCode::NOT_FOUND, "policy does not exist".into()),
            IdentityNotFound => (StatusCode::NOT_FOUND, "identity does not exist".into()),
            Decrypt(e) if v016 => match e {
                DecryptError::UnsupportedAlgorithm => (StatusCode::UNPROCESSABLE_ENTITY, e.to_string().into()),
                _ => (StatusCode::BAD_REQUEST, e.to_string().into()),
            },
            Decrypt(_) => (
                StatusCode::BAD_REQUEST,
                "decryption failed: ciphertext is not authentic".into(),
            ),
            InvalidName {
                kind: NameKind::ListingPattern,
                name,
            } => (
                StatusCode::BAD_REQUEST,
                format!("listing pattern '{name}' is empty, too long or is invalid").into(),
            ),
            InvalidName { kind, name } => (
                StatusCode::BAD_REQUEST,
                format!("{kind} '{name}' is empty, too long or contains invalid characters").into(),
            ),
            InvalidBody if v016 => (StatusCode::BAD_REQUEST, "invalid json".into()),
            InvalidBody => (StatusCode::BAD_REQUEST, "invalid request body".into()),
            InvalidImportBody if v016 => (StatusCode::BAD_REQUEST, "invalid json".into()),
            InvalidImportBody => (StatusCode::BAD_REQUEST, "invalid import key request body".into()),
            InvalidKeySize(_) if v016 => (StatusCode::BAD_REQUEST, "invalid key".into()),
            e @ (UnsupportedCipher(_) | InvalidKeySize(_)) => (StatusCode::NOT_ACCEPTABLE, e.to_string().into()),
            NoHmac => (StatusCode::CONFLICT, "key does not support HMAC".into()),
            Store { op, .. } => (
                StatusCode::BAD_GATEWAY,
                match (op, v016) {
                    (StoreOp::Create, false) => "failed to create key",
                    (StoreOp::Read, false) => "failed to read key",
                    (StoreOp::Delete, false) => "failed to delete key",
                    (StoreOp::List, false) => "failed to list keys",
                    (StoreOp::Create, true) => "bad gateway: failed to create key",
                    (StoreOp::Read, true) => "bad gateway: failed to access key",
                    (StoreOp::Delete, true) => "bad gateway: failed to delete key",
                    (StoreOp::List, true) => "bad gateway: failed to list keys",
                }
                .into(),
            ),
            MalformedKey => (StatusCode::INTERNAL_SERVER_ERROR, "secret is malformed".into()),
            StoreUnreachable => (StatusCode::GATEWAY_TIMEOUT, "key store is not reachable".into()),
            StoreUnavailable => (StatusCode::BAD_GATEWAY, "key store is unavailable".into()),
            CertRequired => (StatusCode::BAD_REQUEST, "tls: client certificate is required".into()),
            TooManyCerts if v016 => (
                StatusCode::BAD_REQUEST,
                "too many identities: more than one certificate is present".into(),
            ),
            TooManyCerts => (
                StatusCode::BAD_REQUEST,
                "tls: received more than one client certificate".into(),
            ),
            Method { .. } if v016 => (StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed".into()),
            e @ Method { .. } => (StatusCode::METHOD_NOT_ALLOWED, e.to_string().into()),
            e @ (InvalidCert | ProxyNoCert | ProxyTooManyCerts | ProxyInvalidCert | IdentityIsRoot
            | IdentityUnknown | TooManyCiphertexts) => (StatusCode::BAD_REQUEST, e.to_string().into()),
            e @ AssignSelf => (StatusCode::FORBIDDEN, e.to_string().into()),
            ProxyUntrustedCert => (StatusCode::FORBIDDEN, "".into()),
            NoRoute => (StatusCode::NOT_FOUND, "404 page not found".into()),
            Redirect { .. } => (StatusCode::MOVED_PERMANENTLY, "".into()),
            e @ PathMismatch(_) => (StatusCode::BAD_REQUEST, e.to_string().into()),
            Timeout => (StatusCode::SERVICE_UNAVAILABLE, "".into()),
            Busy => (
                StatusCode::SERVICE_UNAVAILABLE,
                "the server is busy reading other requests; try again".into(),
            ),
            ClientBusy => (
                StatusCode::SERVICE_UNAVAILABLE,
                "this client has its share of requests in flight; try again when one ends".into(),
            ),
            BodyTimeout => (
                StatusCode::REQUEST_TIMEOUT,
                "the request body did not arrive in time".into(),
            ),
            e @ AuditUnavailable => (StatusCode::SERVICE_UNAVAILABLE, e.to_string().into()),
        }
    }

    /// The HTTP response for this error.
    pub fn response(&self, era: Era) -> http::Response<Full<Bytes>> {
        let (status, message) = self.status_and_message(era);
        let mut response = match self {
            ApiError::NoRoute => {
                let mut r = http::Response::new(Full::new(Bytes::from_static(b"404 page not found\n")));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                );
                r
            }
            ApiError::Timeout => http::Response::new(Full::new(Bytes::new())),
            ApiError::Redirect { to, query, with_body } => {
                // Go's `url.URL.String`: the path escaped as `EscapedPath` does, then
                // the raw query.
                let mut location = percent_encoding::utf8_percent_encode(to, LOCATION).to_string();
                if let Some(q) = query {
                    location.push('?');
                    location.push_str(q);
                }
                let body = if *with_body {
                    format!("<a href=\"{}\">Moved Permanently</a>.\n\n", html_escape(&location))
                } else {
                    String::new()
                };
                let mut r = http::Response::new(Full::new(Bytes::from(body)));
                if *with_body {
                    r.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("text/html; charset=utf-8"),
                    );
                }
                if let Ok(location) = HeaderValue::from_str(&location) {
                    r.headers_mut().insert(header::LOCATION, location);
                }
                r
            }
            _ => {
                let quoted = serde_json::to_string(&message).unwrap_or_else(|_| "\"\"".into());
                let body = match era {
                    Era::Newest => format!("{{\"message\":{quoted}\n}}"),
                    Era::V016 => format!("{{\"message\":{quoted}}}"),
                };
                let mut r = http::Response::new(Full::new(Bytes::from(body)));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(match era {
                        Era::Newest => "application/json",
                        Era::V016 => "application/json; charset=utf-8",
                    }),
                );
                r
            }
        };
        if let ApiError::Method { expected, .. } = self {
            response
                .headers_mut()
                .insert(header::ACCEPT, HeaderValue::from_static(expected));
        }
        *response.status_mut() = status;
        response
    }
}

/// What a `Location` path escapes: everything but what Go's `url.URL.EscapedPath`
/// keeps (letters, digits, `-._~` and `$&+,/:;=@`), so that no `\` or other
/// character a browser might reinterpret reaches the header.
const LOCATION: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b',')
    .remove(b'/')
    .remove(b':')
    .remove(b';')
    .remove(b'=')
    .remove(b'@');

/// Go's `htmlReplacer`, for the redirect's HTML body.
fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&#34;")
        .replace('\'', "&#39;")
}
