//! Write keyhost keystore plugins in Rust.
//!
//! A keystore plugin is a WebAssembly component that implements the
//! `keyhost:keystore` contract (`wit/keystore.wit` in the keyhost repository). This
//! crate hides the generated bindings: implement [`Keystore`] for a type and call
//! [`export_keystore!`] once.
//!
//! ```ignore
//! use keyhost_plugin_sdk::{export_keystore, Config, Error, Info, Keystore, Page, Status};
//!
//! struct MyStore { /* a client for the backend */ }
//!
//! impl Keystore for MyStore {
//!     fn info() -> Info { /* name, version, settings */ }
//!     fn open(config: Config) -> Result<Self, Error> { /* read settings, connect */ }
//!     // status, create, get, delete, list ...
//! }
//!
//! export_keystore!(MyStore);
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2` and a
//! `crate-type = ["cdylib"]` library; the `.wasm` file is the plugin.
//!
//! The SDK enforces the parts of the contract that need no backend: `open` is
//! refused, naming the setting, when a required setting is missing or an unknown one
//! is present, and every other call before a successful `open` fails cleanly.

#![warn(missing_docs)]

use std::any::Any;
use std::cell::RefCell;
use std::collections::BTreeMap;

#[doc(hidden)]
pub mod __bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "keyhost:keystore/keystore-plugin",
        pub_export_macro: true,
        export_macro_name: "__export_keystore_plugin",
        default_bindings_module: "keyhost_plugin_sdk::__bindings",
        generate_all,
    });
}

pub use __bindings::keyhost::keystore::types::{Error, Health as Status, Page, PluginInfo as Info, Setting};

/// The settings the operator gave this plugin (`keystore.plugin.config` in keyhost's
/// configuration), already checked against [`Keystore::info`]'s list.
#[derive(Clone, Default)]
pub struct Config {
    values: BTreeMap<String, String>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Values may be credentials: show the keys only.
        f.debug_set().entries(self.values.keys()).finish()
    }
}

impl Config {
    /// Settings from explicit pairs (for unit tests of a plugin's `open`).
    pub fn from_pairs<K: Into<String>, V: Into<String>>(pairs: impl IntoIterator<Item = (K, V)>) -> Self {
        Self {
            values: pairs.into_iter().map(|(k, v)| (k.into(), v.into())).collect(),
        }
    }

    fn from_host(settings: &[Setting]) -> Result<Self, Error> {
        let pairs = __bindings::wasi::config::store::get_all()
            .map_err(|e| Error::Other(format!("cannot read the plugin's settings: {e:?}")))?;
        let config = Self::from_pairs(pairs);
        for key in config.values.keys() {
            if !settings.iter().any(|s| &s.name == key) {
                let known: Vec<&str> = settings.iter().map(|s| s.name.as_str()).collect();
                return Err(Error::InvalidArgument(format!(
                    "unknown setting '{key}'; this plugin reads {}",
                    if known.is_empty() {
                        "no settings".to_owned()
                    } else {
                        known.join(", ")
                    }
                )));
            }
        }
        for setting in settings.iter().filter(|s| s.required) {
            if config.get(&setting.name).is_none() {
                return Err(Error::InvalidArgument(format!(
                    "missing required setting '{}': {}",
                    setting.name, setting.description
                )));
            }
        }
        Ok(config)
    }

    /// The value of `key`, if set and not empty.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str).filter(|v| !v.is_empty())
    }

    /// The value of `key`, or `invalid-argument` naming it.
    pub fn required(&self, key: &str) -> Result<&str, Error> {
        self.get(key)
            .ok_or_else(|| Error::InvalidArgument(format!("missing required setting '{key}'")))
    }

    /// The value of `key` parsed as `T`, `default` when unset, or `invalid-argument`
    /// naming the key and the value's problem.
    pub fn parse_or<T>(&self, key: &str, default: T) -> Result<T, Error>
    where
        T: std::str::FromStr,
        T::Err: std::fmt::Display,
    {
        match self.get(key) {
            None => Ok(default),
            Some(raw) => raw
                .parse()
                .map_err(|e| Error::InvalidArgument(format!("setting '{key}': {e}"))),
        }
    }
}

/// A keystore backend, implemented by a plugin. See `wit/keystore.wit` for the exact
/// rules of each function; `keyhost plugin test` checks them.
pub trait Keystore: Sized + 'static {
    /// Describes the plugin, including every setting it reads. Must not touch the
    /// backend.
    fn info() -> Info;
    /// Validates the settings and prepares the backend. Called once per instance.
    fn open(config: Config) -> Result<Self, Error>;
    /// Whether the backend can serve requests now.
    fn status(&self) -> Result<Status, Error>;
    /// Stores `value` under `name` if no record of that name exists: atomically,
    /// durably, all or nothing.
    fn create(&self, name: &str, value: &[u8]) -> Result<(), Error>;
    /// The record stored under `name`, or [`Error::NotFound`].
    fn get(&self, name: &str) -> Result<Vec<u8>, Error>;
    /// Removes the record stored under `name`, or [`Error::NotFound`].
    fn delete(&self, name: &str) -> Result<(), Error>;
    /// At most `limit` names starting with `prefix`, greater than `after`, sorted.
    /// [`page`] builds a correct page from an unsorted list of names.
    fn list(&self, prefix: &str, after: Option<&str>, limit: u32) -> Result<Page, Error>;
}

/// Builds a contract-conforming [`Page`] from any collection of names (unsorted,
/// unfiltered, with duplicates): sorted by bytes, deduplicated, filtered by `prefix`,
/// after `after`, at most `limit` long (at least one), with `next` set exactly when
/// more names follow.
pub fn page(names: impl IntoIterator<Item = String>, prefix: &str, after: Option<&str>, limit: u32) -> Page {
    let mut names: Vec<String> = names
        .into_iter()
        .filter(|n| n.starts_with(prefix) && after.is_none_or(|a| n.as_str() > a))
        .collect();
    names.sort_unstable();
    names.dedup();
    let limit = limit.max(1) as usize;
    let next = if names.len() > limit {
        names.truncate(limit);
        names.last().cloned()
    } else {
        None
    };
    Page { names, next }
}

/// For plugins that keep their records in the directory the operator grants.
pub mod dir {
    use std::path::Path;

    /// Whether the directory at `path` was removed under the plugin: its path no
    /// longer leads to a directory, or the granted directory that holds it, which
    /// the sandbox keeps open, has no link left. A removed directory lists nothing
    /// and holds nothing, so without this check a plugin would answer `not-found`
    /// for every key; the contract wants `unavailable` (`env.dir-removed`).
    pub fn removed(path: &Path) -> bool {
        if !std::fs::metadata(path).is_ok_and(|m| m.is_dir()) {
            return true;
        }
        wasip2::filesystem::preopens::get_directories()
            .into_iter()
            .filter(|(_, preopen)| path.starts_with(preopen))
            .filter_map(|(dir, _)| dir.stat().ok())
            .any(|stat| stat.link_count == 0)
    }
}

/// Maps an HTTP status that a backend answered onto the contract's errors, for
/// plugins of HTTP backends: 404 → `not-found`, 409 → `already-exists`, 401/403 →
/// `access-denied`, 429 → `throttled` (with `Retry-After` seconds, if given), 5xx and
/// anything else → `unavailable`. `message` (the backend's words) is kept for the log;
/// it must not contain a record or a credential.
pub fn error_from_status(status: u16, retry_after: Option<&str>, message: &str) -> Error {
    let detail = if message.is_empty() {
        format!("the backend answered HTTP {status}")
    } else {
        format!("the backend answered HTTP {status}: {message}")
    };
    match status {
        404 => Error::NotFound,
        409 => Error::AlreadyExists,
        401 | 403 => Error::AccessDenied(detail),
        429 => Error::Throttled(
            retry_after
                .and_then(|s| s.trim().parse::<u32>().ok())
                .map(|seconds| seconds.saturating_mul(1000)),
        ),
        _ => Error::Unavailable(detail),
    }
}

/// A blocking HTTP client for plugins of HTTP backends (feature `http`).
///
/// Requests go through `wasi:http`: keyhost does TLS for `https://` URLs, refuses
/// origins the operator did not grant, and pools connections. Exported functions are
/// synchronous, so every call here blocks until the answer is complete.
///
/// ```ignore
/// use keyhost_plugin_sdk::http;
///
/// let answer = http::send(http::Method::GET, "http://127.0.0.1:7001/v1/key/a", &[], None)?;
/// if answer.status != 200 {
///     return Err(answer.error());
/// }
/// ```
#[cfg(feature = "http")]
pub mod http {
    use super::Error;
    pub use wstd::http::Method;

    /// Runs a future to completion inside a (synchronous) keystore call: for
    /// clients built on `wstd`, such as the AWS SDK with `aws-smithy-wasm`.
    pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
        wstd::runtime::block_on(future)
    }

    /// A complete answer.
    #[derive(Debug, Clone)]
    pub struct Answer {
        /// The HTTP status.
        pub status: u16,
        /// The `Retry-After` header, if any.
        pub retry_after: Option<String>,
        /// The body.
        pub body: Vec<u8>,
    }

    impl Answer {
        /// This answer as a contract error ([`super::error_from_status`]), with up to
        /// 200 bytes of its body as the message.
        pub fn error(&self) -> Error {
            let text = String::from_utf8_lossy(&self.body[..self.body.len().min(200)]).into_owned();
            super::error_from_status(self.status, self.retry_after.as_deref(), text.trim())
        }
    }

    /// Sends one request and reads the whole answer. A refused grant is
    /// `access-denied`; any other transport failure is `unavailable`.
    pub fn send(method: Method, url: &str, headers: &[(&str, &str)], body: Option<Vec<u8>>) -> Result<Answer, Error> {
        send_within(method, url, headers, body, None)
    }

    /// [`send`], with the connection and the answer's first byte each allowed at
    /// most `timeout` (when given): a backend that accepts and then hangs costs
    /// that long, not the whole call. A timeout is `unavailable`, and its message
    /// says `timed out`.
    pub fn send_within(
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
        timeout: Option<std::time::Duration>,
    ) -> Result<Answer, Error> {
        block_on(async {
            let mut request = wstd::http::Request::builder().method(method).uri(url);
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            let request = request
                .body(wstd::http::Body::from(body.unwrap_or_default()))
                .map_err(|e| Error::InvalidArgument(format!("bad request to {url}: {e}")))?;
            let mut client = wstd::http::Client::new();
            if let Some(timeout) = timeout {
                client.set_connect_timeout(timeout);
                client.set_first_byte_timeout(timeout);
                client.set_between_bytes_timeout(timeout);
            }
            let mut response = client.send(request).await.map_err(|e| {
                let text = format!("{e:#}");
                // The host's refusal (wasi:http's `HTTP-request-denied`), however
                // the error's text spells it.
                let folded: String = text
                    .chars()
                    .filter(char::is_ascii_alphanumeric)
                    .collect::<String>()
                    .to_ascii_lowercase();
                if folded.contains("httprequestdenied") {
                    Error::AccessDenied(format!("{url} is not granted to this plugin (allow.http)"))
                } else if text.contains("Timeout") {
                    Error::Unavailable(format!(
                        "{url} timed out: no answer within {} ms ({text})",
                        timeout.map_or(0, |t| t.as_millis())
                    ))
                } else {
                    Error::Unavailable(format!("cannot reach {url}: {text}"))
                }
            })?;
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body = response
                .body_mut()
                .contents()
                .await
                .map_err(|e| Error::Unavailable(format!("reading the answer of {url}: {e:#}")))?
                .to_vec();
            Ok(Answer {
                status,
                retry_after,
                body,
            })
        })
    }
}

thread_local! {
    static INSTANCE: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
}

/// The code behind [`export_keystore!`]; not part of the API.
#[doc(hidden)]
pub mod __glue {
    use super::*;

    pub fn open<T: Keystore>() -> Result<(), Error> {
        let config = Config::from_host(&T::info().settings)?;
        let store = T::open(config)?;
        INSTANCE.with(|slot| *slot.borrow_mut() = Some(Box::new(store)));
        Ok(())
    }

    pub fn with<T: Keystore, R>(f: impl FnOnce(&T) -> Result<R, Error>) -> Result<R, Error> {
        INSTANCE.with(
            |slot| match slot.borrow().as_ref().and_then(|s| s.downcast_ref::<T>()) {
                Some(store) => f(store),
                None => Err(Error::Other("the plugin was called before a successful open".into())),
            },
        )
    }
}

/// Exports a [`Keystore`] implementation as the plugin's `keyhost:keystore/store`.
/// Call it once, at the top level of the plugin crate.
#[macro_export]
macro_rules! export_keystore {
    ($ty:ty) => {
        struct __KeyhostKeystoreExport;

        impl $crate::__bindings::exports::keyhost::keystore::store::Guest for __KeyhostKeystoreExport {
            fn info() -> $crate::Info {
                <$ty as $crate::Keystore>::info()
            }
            fn open() -> ::core::result::Result<(), $crate::Error> {
                $crate::__glue::open::<$ty>()
            }
            fn status() -> ::core::result::Result<$crate::Status, $crate::Error> {
                $crate::__glue::with::<$ty, _>(|s| s.status())
            }
            fn create(name: String, value: Vec<u8>) -> ::core::result::Result<(), $crate::Error> {
                $crate::__glue::with::<$ty, _>(|s| s.create(&name, &value))
            }
            fn get(name: String) -> ::core::result::Result<Vec<u8>, $crate::Error> {
                $crate::__glue::with::<$ty, _>(|s| s.get(&name))
            }
            fn delete(name: String) -> ::core::result::Result<(), $crate::Error> {
                $crate::__glue::with::<$ty, _>(|s| s.delete(&name))
            }
            fn list(
                prefix: String,
                after: Option<String>,
                limit: u32,
            ) -> ::core::result::Result<$crate::Page, $crate::Error> {
                $crate::__glue::with::<$ty, _>(|s| s.list(&prefix, after.as_deref(), limit))
            }
        }

        $crate::__bindings::__export_keystore_plugin!(__KeyhostKeystoreExport with_types_in $crate::__bindings);
    };
}
