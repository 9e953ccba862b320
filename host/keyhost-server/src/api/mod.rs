//! KES's API: the route table, dispatch, and one handler module per resource.
//!
//! A request goes [`dispatch::handle`] → its route ([`routes::ROUTES`], the one
//! table of paths, methods, callers, body limits and deadlines) → the identity and
//! the policy → its body ([`body`]) → [`run`], which hands a [`Call`] to the route's
//! handler in [`key`], [`policy`], [`identity`], [`system`] or [`log`]. Handlers
//! answer through [`respond`] or with an [`ApiError`], which `crate::error` turns
//! into KES's status and text (the one mapping table). Names are checked by the
//! rules in [`names`].
//!
//! The routes are a table matched on hyper rather than an axum router because
//! KES's routing is itself part of the wire format: Go's redirects of unclean
//! paths, v0.16's `path.Match` patterns and resources taken as the last path
//! element, methods and body limits that differ by era, and a policy check on the
//! decoded path. A router that decides those for itself would have to be undone
//! route by route.

use std::time::Duration;

use http::Response;
use keyhost_policy::Identity;

use crate::State;
use crate::error::ApiError;

mod body;
mod dispatch;
mod identity;
mod key;
mod log;
mod names;
mod policy;
mod respond;
mod routes;
mod system;

pub(crate) use dispatch::handle;
pub(crate) use key::create_key;
use respond::Body;
use routes::Handler;
pub use routes::{Auth, ROUTES, Route};

/// What a handler answers.
type Answer = Result<Response<Body>, ApiError>;

/// How to answer: in the era's listing form, and what the `Accept` header asks.
#[derive(Debug, Clone, Copy)]
struct Accepts {
    /// NDJSON key listings with trailers (a v0.16 configuration, whatever the
    /// request accepts).
    ndjson: bool,
    /// keyhost's own metric families besides KES's (Prometheus scrapers).
    all_metrics: bool,
}

/// What a handler gets: the server, the route's resource (the path after the
/// route's prefix), the caller, the request body, and how to answer.
#[derive(Clone, Copy)]
struct Call<'a> {
    state: &'a State,
    resource: &'a str,
    identity: Option<&'a Identity>,
    body: &'a [u8],
    accepts: Accepts,
}

impl Call<'_> {
    /// The caller's identity as text (empty for routes without authentication).
    fn caller(&self) -> &str {
        self.identity.map(Identity::as_str).unwrap_or_default()
    }
}

impl State {
    /// The deadline of `route` here: the configuration's override, or the route's.
    fn timeout_of(&self, route: &Route) -> Duration {
        self.overrides
            .get(route.path)
            .and_then(|o| o.timeout)
            .unwrap_or(route.timeout)
    }

    /// Who may call `route` here: anyone, where the configuration skips its
    /// authentication (`api.<route>.skip_auth`).
    fn auth_of(&self, route: &Route) -> Auth {
        match self.overrides.get(route.path) {
            Some(o) if o.skip_auth => Auth::None,
            _ => route.auth,
        }
    }
}

/// Runs the handler of a route.
async fn run(handler: Handler, call: &Call<'_>) -> Answer {
    use Handler as H;
    match handler {
        H::Version => system::version(call),
        H::Ready => system::ready(call).await,
        H::Status => system::status(call).await,
        H::Metrics => system::metrics(call),
        H::Api => system::api(call),
        H::KeyCreate => key::create(call).await,
        H::KeyImport => key::import(call).await,
        H::KeyDescribe => key::describe(call).await,
        H::KeyList => key::list(call).await,
        H::KeyDelete => key::delete(call).await,
        H::KeyGenerate => key::generate(call).await,
        H::KeyEncrypt => key::encrypt(call).await,
        H::KeyDecrypt => key::decrypt(call).await,
        H::KeyBulkDecrypt => key::bulk_decrypt(call).await,
        H::KeyHmac => key::hmac(call).await,
        H::PolicyRead => policy::read(call),
        H::PolicyDescribe => policy::describe(call),
        H::PolicyList => policy::list(call),
        H::PolicyWrite => policy::write(call),
        H::PolicyDelete => policy::delete(call),
        H::IdentityDescribe => identity::describe(call),
        H::IdentitySelf => identity::own(call),
        H::IdentityList => identity::list(call),
        H::IdentityAssign => identity::assign(call),
        H::IdentityForget => identity::forget(call),
        H::LogAudit => log::audit(call),
        H::LogError => log::errors(call),
    }
}
