//! keyhost's etcd keystore plugin: each key record is one key of an etcd cluster
//! (v3 API, through etcd's HTTP/JSON gateway on the client port), under a key
//! prefix that keeps keyhost's records apart from other data.
//!
//! | operation | etcd request |
//! |---|---|
//! | `create` | `/v3/kv/txn`: put the key only if its `create_revision` is 0 (absent) |
//! | `get` | `/v3/kv/range` of the one key |
//! | `delete` | `/v3/kv/range` of the key's `mod_revision` (none is `not-found`), then `/v3/kv/txn`: delete the key only if that revision is still its own |
//! | `list` | `/v3/kv/range`, keys only, from the prefix (or just after `after`) to the prefix's end, `limit` keys, sorted by etcd |
//! | `status` | `/v3/maintenance/status` of the member that answers: its version, member id and leader |
//!
//! Settings:
//!
//! | setting | meaning |
//! |---|---|
//! | `endpoints` | the members' client URLs, comma-separated; a request goes to the member that answered last and, on a transport error or a member without a leader, to the next |
//! | `prefix` | the etcd key prefix of the records (default `keyhost/`) |
//! | `username`, `password` | etcd authentication: the plugin gets a token and gets a new one when etcd refuses it |
//! | `timeout_ms` | the budget of one call, its retries included (keyhost sets it below its call deadline: 8000 by default) |
//! | `attempt_timeout_ms` | how long one member may take to answer before the next is asked (default 2000; at most `timeout_ms` divided by the number of endpoints) |
//!
//! A member without a leader refuses a request at once (every request also asks
//! for a member with a leader, `hasleader`, as etcd's own client does), and the
//! plugin asks the next member; one that hangs (stopped, a stalled disk, a silent
//! partition) costs `attempt_timeout_ms`. A call that no member serves within
//! `timeout_ms` is `unavailable`, with each member's answer in the message.
//!
//! A write whose answer is lost (the member went away after receiving it) is
//! retried on the next member; the plugin then tells its own write from another's
//! by reading the record back, so a retried `create` does not report
//! `already-exists` for the record it stored itself.

#![warn(missing_docs)]

use std::cell::{Cell, RefCell};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use keyhost_plugin_sdk::http::{self, Method};
use keyhost_plugin_sdk::{Config, Error, Info, Keystore, Page, Setting, Status, export_keystore};
use serde_json::{Value, json};

/// The key prefix when the operator names none.
const DEFAULT_PREFIX: &str = "keyhost/";
/// How long a call keeps trying when no member can serve, when keyhost does not
/// say (it serves `timeout_ms`, 80% of its call deadline).
const DEFAULT_BUDGET_MS: u64 = 8_000;
/// How long one member may take to answer, by default. etcd answers in
/// milliseconds; an election takes about a second and is answered at once with
/// "no leader".
const DEFAULT_ATTEMPT_MS: u64 = 2_000;

/// The plugin's state in one instance. Its `Debug` leaves out the token.
pub struct Etcd {
    endpoints: Vec<String>,
    prefix: Vec<u8>,
    credentials: Option<Credentials>,
    /// The auth token, once one was issued.
    token: RefCell<Option<String>>,
    /// The member that answered last: the first one tried next time.
    current: Cell<usize>,
    /// The budget of one call.
    budget: Duration,
    /// The longest wait for one member's answer.
    attempt: Duration,
}

impl std::fmt::Debug for Etcd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Etcd")
            .field("endpoints", &self.endpoints)
            .field("prefix", &String::from_utf8_lossy(&self.prefix))
            .field("credentials", &self.credentials)
            .field("budget", &self.budget)
            .field("attempt", &self.attempt)
            .finish_non_exhaustive()
    }
}

struct Credentials {
    user: String,
    password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// An answer of etcd, and whether an earlier attempt of the same request may have
/// reached a member that then failed to answer.
struct Reply {
    body: Value,
    uncertain: bool,
}

fn setting(name: &str, required: bool, secret: bool, description: &str) -> Setting {
    Setting {
        name: name.into(),
        required,
        secret,
        description: description.into(),
    }
}

impl Keystore for Etcd {
    fn info() -> Info {
        Info {
            name: "etcd".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            features: vec![],
            settings: vec![
                setting(
                    "endpoints",
                    true,
                    false,
                    "the etcd members' client URLs, comma-separated, e.g. https://10.0.0.1:2379,https://10.0.0.2:2379",
                ),
                setting(
                    "prefix",
                    false,
                    false,
                    "the etcd key prefix under which the records are kept (default keyhost/)",
                ),
                setting(
                    "username",
                    false,
                    false,
                    "the etcd user, with password, when etcd authentication is on",
                ),
                setting("password", false, true, "the etcd user's password"),
                setting(
                    "timeout_ms",
                    false,
                    false,
                    "the budget of one call in milliseconds, retries included (keyhost sets it: 80% of its call deadline)",
                ),
                setting(
                    "attempt_timeout_ms",
                    false,
                    false,
                    "how long one member may take to answer before the next is asked, in milliseconds (default 2000)",
                ),
            ],
        }
    }

    fn open(config: Config) -> Result<Self, Error> {
        let mut endpoints = Vec::new();
        for raw in config.required("endpoints")?.split(',') {
            endpoints.push(endpoint(raw.trim())?);
        }
        let prefix = config.get("prefix").unwrap_or(DEFAULT_PREFIX);
        if prefix.chars().any(char::is_control) {
            return Err(Error::InvalidArgument(
                "setting 'prefix' holds a control character; use letters, digits and / - _ .".into(),
            ));
        }
        let credentials = match (config.get("username"), config.get("password")) {
            (None, None) => None,
            (Some(user), Some(password)) => {
                if user.chars().any(char::is_control) {
                    return Err(Error::InvalidArgument(
                        "setting 'username' holds a control character".into(),
                    ));
                }
                Some(Credentials {
                    user: user.to_owned(),
                    password: password.to_owned(),
                })
            }
            (Some(_), None) => {
                return Err(Error::InvalidArgument(
                    "setting 'username' is set but 'password' is not: etcd authentication needs both".into(),
                ));
            }
            (None, Some(_)) => {
                return Err(Error::InvalidArgument(
                    "setting 'password' is set but 'username' is not: etcd authentication needs both".into(),
                ));
            }
        };
        let budget = config.parse_or("timeout_ms", DEFAULT_BUDGET_MS)?;
        let attempt = config.parse_or("attempt_timeout_ms", DEFAULT_ATTEMPT_MS)?;
        if budget == 0 || attempt == 0 {
            return Err(Error::InvalidArgument(
                "settings 'timeout_ms' and 'attempt_timeout_ms' must be at least 1 (milliseconds)".into(),
            ));
        }
        // Every member gets its attempt within one call's budget: a hung first
        // member must not use up the time of the healthy ones.
        let share = (budget / u64::try_from(endpoints.len()).unwrap_or(1).max(1)).max(1);
        Ok(Self {
            prefix: prefix.as_bytes().to_vec(),
            credentials,
            token: RefCell::new(None),
            current: Cell::new(0),
            budget: Duration::from_millis(budget),
            attempt: Duration::from_millis(attempt.min(share)),
            endpoints,
        })
    }

    fn status(&self) -> Result<Status, Error> {
        let started = Instant::now();
        let reply = self.call("/v3/maintenance/status", &json!({}), started + self.budget)?;
        let latency = started.elapsed();
        let body = &reply.body;
        if let Some(errors) = body["errors"].as_array().filter(|e| !e.is_empty()) {
            return Err(Error::Unavailable(format!("etcd reports {errors:?}")));
        }
        let member = body["header"]["member_id"].as_str().unwrap_or("?");
        let leader = body["leader"].as_str().unwrap_or("0");
        if leader == "0" {
            return Err(Error::Unavailable(format!("etcd member {member} has no leader")));
        }
        Ok(Status {
            latency_ms: Some(u32::try_from(latency.as_millis()).unwrap_or(u32::MAX)),
            detail: Some(format!(
                "etcd {} at {}: member {member}, leader {leader}; call budget {} ms, attempt {} ms",
                body["version"].as_str().unwrap_or("?"),
                self.endpoints[self.current.get()],
                self.budget.as_millis(),
                self.attempt.as_millis(),
            )),
        })
    }

    fn create(&self, name: &str, value: &[u8]) -> Result<(), Error> {
        let key = B64.encode(self.key(name));
        let request = json!({
            "compare": [{ "target": "CREATE", "key": key, "create_revision": "0" }],
            "success": [{ "request_put": { "key": key, "value": B64.encode(value) } }],
        });
        let deadline = Instant::now() + self.budget;
        let reply = self.call("/v3/kv/txn", &request, deadline)?;
        if reply.body["succeeded"].as_bool() == Some(true) {
            return Ok(());
        }
        // After a lost answer, the record may be the one this call stored: records
        // hold fresh key material, so the same bytes mean the same write.
        if reply.uncertain {
            // The read-back gets what is left of the budget, and at least one
            // attempt of up to an eighth of it: keyhost's deadline is a quarter
            // above the budget it serves.
            let grace = self.attempt.min(self.budget / 8);
            return match self.read(name, deadline.max(Instant::now() + grace)) {
                Ok(stored) if stored == value => Ok(()),
                Ok(_) => Err(Error::AlreadyExists),
                // The outcome is unknown: not "exists".
                Err(Error::NotFound) => Err(Error::Unavailable(format!(
                    "the create of {name} was lost and the record is not there"
                ))),
                Err(Error::Unavailable(why)) => Err(Error::Unavailable(format!(
                    "the create of {name} may or may not have been stored (its answer was lost, and reading it \
                     back failed: {why})"
                ))),
                Err(other) => Err(other),
            };
        }
        Err(Error::AlreadyExists)
    }

    fn get(&self, name: &str) -> Result<Vec<u8>, Error> {
        self.read(name, Instant::now() + self.budget)
    }

    fn delete(&self, name: &str) -> Result<(), Error> {
        // Deletes the version of the record read first, not whatever the key holds
        // when the request is applied: a delete that a stalled member applies late
        // cannot remove a record created again meanwhile.
        let deadline = Instant::now() + self.budget;
        let key = B64.encode(self.key(name));
        let read = self.call("/v3/kv/range", &json!({ "key": key, "keys_only": true }), deadline)?;
        let Some(revision) = read.body["kvs"]
            .as_array()
            .and_then(|kvs| kvs.first())
            .and_then(|kv| kv["mod_revision"].as_str())
            .map(str::to_owned)
        else {
            return Err(Error::NotFound);
        };
        let request = json!({
            "compare": [{ "target": "MOD", "key": key, "mod_revision": revision }],
            "success": [{ "request_delete_range": { "key": key } }],
        });
        let reply = self.call("/v3/kv/txn", &request, deadline)?;
        if reply.body["succeeded"].as_bool() == Some(true) || reply.uncertain {
            // After a lost answer, a failed comparison means the lost attempt
            // deleted this version.
            Ok(())
        } else {
            // The record changed between the read and the delete: it was deleted
            // (or deleted and created again) by another client.
            Err(Error::NotFound)
        }
    }

    fn list(&self, prefix: &str, after: Option<&str>, limit: u32) -> Result<Page, Error> {
        let from = self.key(prefix);
        let start = match after {
            // The first key after `after` is `after` followed by a zero byte.
            Some(after) => {
                let mut next = self.key(after);
                next.push(0);
                next.max(from.clone())
            }
            None => from.clone(),
        };
        let request = json!({
            "key": B64.encode(&start),
            "range_end": B64.encode(range_end(&from)),
            "limit": limit.max(1).to_string(),
            "keys_only": true,
        });
        let reply = self.call("/v3/kv/range", &request, Instant::now() + self.budget)?;
        let mut names = Vec::new();
        for kv in reply.body["kvs"].as_array().map(Vec::as_slice).unwrap_or_default() {
            let key = kv["key"]
                .as_str()
                .and_then(|k| B64.decode(k).ok())
                .ok_or_else(|| Error::Other("etcd listed a key that is not base64".into()))?;
            let name = key
                .strip_prefix(self.prefix.as_slice())
                .and_then(|n| String::from_utf8(n.to_vec()).ok())
                .ok_or_else(|| Error::Other("etcd listed a key under the prefix that is not UTF-8 text".into()))?;
            names.push(name);
        }
        let next = if reply.body["more"].as_bool() == Some(true) {
            names.last().cloned()
        } else {
            None
        };
        Ok(Page { names, next })
    }
}

impl Etcd {
    /// The record of `name`, asked for until `deadline`.
    fn read(&self, name: &str, deadline: Instant) -> Result<Vec<u8>, Error> {
        let reply = self.call("/v3/kv/range", &json!({ "key": B64.encode(self.key(name)) }), deadline)?;
        let Some(kv) = reply.body["kvs"].as_array().and_then(|kvs| kvs.first()) else {
            return Err(Error::NotFound);
        };
        // etcd leaves out an empty value.
        match kv["value"].as_str() {
            None => Ok(Vec::new()),
            Some(text) => B64
                .decode(text)
                .map_err(|e| Error::Other(format!("etcd's value of {name} is not base64: {e}"))),
        }
    }

    fn key(&self, name: &str) -> Vec<u8> {
        let mut key = self.prefix.clone();
        key.extend_from_slice(name.as_bytes());
        key
    }

    /// Sends `request` to `path`, starting with the member that answered last. A
    /// member that cannot be reached, has no leader or lost it meanwhile, is
    /// skipped; any other answer is final. When no member could serve, the round
    /// is tried again after a pause, until `deadline`: an election takes about a
    /// second.
    fn call(&self, path: &str, request: &Value, deadline: Instant) -> Result<Reply, Error> {
        let mut pause = Duration::from_millis(50);
        let mut uncertain = false;
        loop {
            match self.round(path, request, deadline) {
                Ok(mut reply) => {
                    reply.uncertain |= uncertain;
                    return Ok(reply);
                }
                Err(Unserved {
                    error,
                    uncertain: lost,
                    again,
                }) => {
                    uncertain |= lost;
                    if !again || Instant::now() + pause > deadline {
                        return Err(error);
                    }
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(400));
                }
            }
        }
    }

    /// How long the next member may take: the attempt timeout, or what is left
    /// until `deadline` if less; `None` once the deadline has passed.
    fn wait_for(&self, deadline: Instant) -> Option<Duration> {
        let left = deadline.checked_duration_since(Instant::now())?;
        (!left.is_zero()).then(|| left.min(self.attempt))
    }

    /// One try of each member, or the error to give when none could serve.
    fn round(&self, path: &str, request: &Value, deadline: Instant) -> Result<Reply, Unserved> {
        let body = request.to_string().into_bytes();
        let count = self.endpoints.len();
        // The rotation starts where the last answer came from, whatever the token
        // request below finds.
        let first = self.current.get();
        let mut failures = Vec::new();
        let mut uncertain = false;
        let mut renewed = false;
        let mut only_handshakes = true;
        let mut attempt = 0;
        while attempt < count {
            let index = (first + attempt) % count;
            let url = format!("{}{path}", self.endpoints[index]);
            let token = self
                .token_for_call(index, deadline)
                .map_err(|error| Unserved::retry(error, uncertain))?;
            let Some(wait) = self.wait_for(deadline) else {
                only_handshakes = false;
                failures.push(format!("{url}: not tried, the call's budget is spent"));
                break;
            };
            // Only a member with a leader may serve (etcd's clients ask the same).
            let mut headers = vec![
                ("content-type", "application/json"),
                ("grpc-metadata-hasleader", "true"),
            ];
            if let Some(token) = &token {
                headers.push(("authorization", token.as_str()));
            }
            let answer = match http::send_within(Method::POST, &url, &headers, Some(body.clone()), Some(wait)) {
                Ok(answer) => answer,
                Err(Error::Unavailable(reason)) => {
                    // A refused connection or a certificate refused in the handshake
                    // carried nothing; any other failure (a TLS alert included: it may
                    // come on a connection that carried requests) may have come after
                    // the member read the request.
                    uncertain |= !refused(&reason) && !reason.contains("TlsCertificateError");
                    only_handshakes &= handshake_failed(&reason);
                    failures.push(reason);
                    attempt += 1;
                    continue;
                }
                Err(other) => return Err(Unserved::last(other)),
            };
            if answer.status == 200 {
                self.current.set(index);
                let body = serde_json::from_slice(&answer.body).map_err(|e| {
                    Unserved::last(Error::Other(format!(
                        "etcd at {url} answered something that is not JSON: {e}"
                    )))
                })?;
                return Ok(Reply { body, uncertain });
            }
            let fault = Fault::of(answer.status, &answer.body);
            match fault.kind() {
                FaultKind::BadToken if self.credentials.is_some() && !renewed => {
                    // Tokens expire (etcd's simple tokens after five minutes idle):
                    // get a new one and ask the same member again.
                    *self.token.borrow_mut() = None;
                    renewed = true;
                }
                FaultKind::Member => {
                    only_handshakes = false;
                    failures.push(format!("{url}: {}", fault.message));
                    // A member without a leader may still have taken the write.
                    uncertain = true;
                    attempt += 1;
                }
                kind => return Err(Unserved::last(kind.error(&url, fault.message))),
            }
        }
        if only_handshakes {
            // Certificates do not fix themselves: no point in another round.
            return Err(Unserved::last(Error::Unavailable(format!(
                "the TLS handshake failed with every etcd member (check the CA and the client certificate \
                 that keyhost presents, under allow.tls): {}",
                failures.join("; ")
            ))));
        }
        Err(Unserved::retry(
            Error::Unavailable(format!("no etcd member could serve: {}", failures.join("; "))),
            uncertain,
        ))
    }

    /// The token to send, getting one first (from member `first` on, until
    /// `deadline`) when authentication is on.
    fn token_for_call(&self, first: usize, deadline: Instant) -> Result<Option<String>, Error> {
        let Some(credentials) = &self.credentials else {
            return Ok(None);
        };
        if let Some(token) = self.token.borrow().clone() {
            return Ok(Some(token));
        }
        let request = json!({ "name": credentials.user, "password": credentials.password }).to_string();
        let count = self.endpoints.len();
        let mut failures = Vec::new();
        for attempt in 0..count {
            let index = (first + attempt) % count;
            let url = format!("{}/v3/auth/authenticate", self.endpoints[index]);
            let Some(wait) = self.wait_for(deadline) else {
                failures.push(format!("{url}: not tried, the call's budget is spent"));
                break;
            };
            let answer = match http::send_within(
                Method::POST,
                &url,
                &[
                    ("content-type", "application/json"),
                    ("grpc-metadata-hasleader", "true"),
                ],
                Some(request.clone().into_bytes()),
                Some(wait),
            ) {
                Ok(answer) => answer,
                Err(Error::Unavailable(reason)) => {
                    failures.push(reason);
                    continue;
                }
                Err(other) => return Err(other),
            };
            if answer.status == 200 {
                let body: Value = serde_json::from_slice(&answer.body)
                    .map_err(|e| Error::Other(format!("etcd at {url} answered something that is not JSON: {e}")))?;
                let token = body["token"]
                    .as_str()
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| Error::Other(format!("etcd at {url} issued no token")))?
                    .to_owned();
                self.current.set(index);
                *self.token.borrow_mut() = Some(token.clone());
                return Ok(Some(token));
            }
            let fault = Fault::of(answer.status, &answer.body);
            match fault.kind() {
                FaultKind::Member => failures.push(format!("{url}: {}", fault.message)),
                // Wrong user or password: the message never holds the password.
                FaultKind::BadToken | FaultKind::Denied => {
                    return Err(Error::AccessDenied(format!(
                        "etcd refused user '{}': {}",
                        credentials.user, fault.message
                    )));
                }
                kind => return Err(kind.error(&url, fault.message)),
            }
        }
        Err(Error::Unavailable(format!(
            "no etcd member answered the authentication: {}",
            failures.join("; ")
        )))
    }
}

/// Why a round of [`Etcd::round`] ended without an answer.
struct Unserved {
    error: Error,
    /// Whether a member may have received the request.
    uncertain: bool,
    /// Whether another round may succeed (no member could serve now).
    again: bool,
}

impl Unserved {
    /// No member could serve now: worth another round.
    fn retry(error: Error, uncertain: bool) -> Self {
        let again = matches!(error, Error::Unavailable(_));
        Self {
            error,
            uncertain,
            again,
        }
    }

    /// An answer that another round would not change.
    fn last(error: Error) -> Self {
        Self {
            error,
            uncertain: false,
            again: false,
        }
    }
}

/// An error answer of etcd's gateway: `{"error", "message", "code"}` with a gRPC code.
struct Fault {
    status: u16,
    code: i64,
    message: String,
}

enum FaultKind {
    /// This member cannot serve now (no leader, leader changed, stopping, timed out):
    /// another may.
    Member,
    /// The token is missing, expired or revoked.
    BadToken,
    /// The user may not do this.
    Denied,
    Throttled,
    Invalid,
    Other,
}

impl Fault {
    fn of(status: u16, body: &[u8]) -> Self {
        let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let message = parsed["message"]
            .as_str()
            .or_else(|| parsed["error"].as_str())
            .map_or_else(
                || String::from_utf8_lossy(&body[..body.len().min(200)]).trim().to_owned(),
                str::to_owned,
            );
        Self {
            status,
            code: parsed["code"].as_i64().unwrap_or(-1),
            message,
        }
    }

    fn kind(&self) -> FaultKind {
        let m = self.message.as_str();
        // gRPC codes: 3 invalid argument, 4 deadline, 7 permission denied, 8 resource
        // exhausted, 14 unavailable, 16 unauthenticated.
        // A token issued before a change of users or roles is refused as "revision
        // of auth store is old" (code 3): a new token is the cure, as for an expired
        // one.
        if m.contains("invalid auth token")
            || m.contains("user name is empty")
            || m.contains("auth store is old")
            || self.code == 16
        {
            FaultKind::BadToken
        } else if self.code == 14
            || self.code == 4
            || self.status == 503
            || m.contains("no leader")
            || m.contains("leader changed")
            || m.contains("stopped")
            || m.contains("timed out")
        {
            FaultKind::Member
        } else if self.code == 7 || self.status == 403 || m.contains("authentication failed") {
            FaultKind::Denied
        } else if m.contains("space exceeded") {
            // A full database needs its operator (compaction, a larger quota), not
            // a slower client.
            FaultKind::Other
        } else if self.code == 8 || self.status == 429 {
            FaultKind::Throttled
        } else if self.code == 3 {
            FaultKind::Invalid
        } else {
            FaultKind::Other
        }
    }
}

impl FaultKind {
    fn error(self, url: &str, message: String) -> Error {
        match self {
            Self::Member => Error::Unavailable(format!("etcd at {url}: {message}")),
            Self::BadToken | Self::Denied => Error::AccessDenied(format!("etcd at {url}: {message}")),
            Self::Throttled => Error::Throttled(None),
            Self::Invalid => Error::InvalidArgument(format!("etcd at {url}: {message}")),
            Self::Other => Error::Other(format!("etcd at {url}: {message}")),
        }
    }
}

/// Whether a transport failure was a failed TLS handshake (keyhost reports a
/// certificate it cannot verify, or a peer that refused ours).
fn handshake_failed(reason: &str) -> bool {
    reason.contains("TlsCertificateError") || reason.contains("TlsProtocolError") || reason.contains("TlsAlert")
}

/// Whether a transport failure was a refused connection.
fn refused(reason: &str) -> bool {
    reason.contains("ConnectionRefused") || reason.contains("onnection refused")
}

/// A member's client URL: `http(s)://host[:port]`, without a path.
fn endpoint(raw: &str) -> Result<String, Error> {
    if raw.contains('@') {
        // Not quoted: what precedes the @ may be a password.
        return Err(Error::InvalidArgument(
            "setting 'endpoints': a URL holds a user (user@host); write scheme://host[:port], without a user, \
             and put the credentials in 'username' and 'password'"
                .into(),
        ));
    }
    let url = raw.trim_end_matches('/');
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| {
            Error::InvalidArgument(format!(
                "setting 'endpoints': '{raw}' is not an http(s) URL, e.g. https://10.0.0.1:2379"
            ))
        })?;
    if rest.is_empty() || rest.contains(['/', '?', '#']) || !rest.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::InvalidArgument(format!(
            "setting 'endpoints': '{raw}' must be scheme://host[:port], without a path, query or spaces"
        )));
    }
    Ok(url.to_owned())
}

/// The end of the range of every key that starts with `prefix`: `prefix` with its
/// last byte below 0xff incremented and what follows it dropped (etcd's "\0" means
/// the end of the key space).
fn range_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

export_keystore!(Etcd);
