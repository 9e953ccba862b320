//! keyhost's plugin for services that speak KES's "generic" keystore REST protocol,
//! which KES v0.16 to 2023 offered for any backend and then dropped:
//!
//! ```text
//! POST   /v1/key/<name>   {"bytes": "<base64 record>"}   201 created, 400 exists
//! GET    /v1/key/<name>   200 {"bytes": "<base64 record>"}, 404 missing
//! DELETE /v1/key/<name>   200 deleted, 404 missing
//! GET    /v1/key          NDJSON lines {"name": "<name>", "last": <bool>}
//! ```
//!
//! It is also the SDK's example of an HTTP backend: every exchange goes through
//! `keyhost_plugin_sdk::http`, and answers become contract errors through
//! `error_from_status`. The same plugin exists in Python (`plugins/python/generic`)
//! and JavaScript (`plugins/js/generic`).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use keyhost_plugin_sdk::http::{self, Method};
use keyhost_plugin_sdk::{Config, Error, Info, Keystore, Page, Setting, Status, export_keystore, page};

struct Generic {
    endpoint: String,
}

impl Keystore for Generic {
    fn info() -> Info {
        Info {
            name: "generic".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            features: vec![],
            settings: vec![Setting {
                name: "endpoint".into(),
                required: true,
                secret: false,
                description: "the generic keystore service's URL, e.g. http://127.0.0.1:7001".into(),
            }],
        }
    }

    fn open(config: Config) -> Result<Self, Error> {
        let endpoint = config.required("endpoint")?.trim_end_matches('/');
        if !endpoint.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::InvalidArgument(
                "setting 'endpoint' holds a space, a control or a non-ASCII character; it must be an http(s) URL"
                    .into(),
            ));
        }
        if !endpoint.starts_with("http://") && !endpoint.starts_with("https://") {
            return Err(Error::InvalidArgument(format!(
                "setting 'endpoint': {endpoint} is not an http(s) URL"
            )));
        }
        Ok(Self {
            endpoint: endpoint.to_owned(),
        })
    }

    fn status(&self) -> Result<Status, Error> {
        self.call(Method::GET, "/v1/key", None, &[200])?;
        Ok(Status {
            latency_ms: None,
            detail: None,
        })
    }

    fn create(&self, name: &str, value: &[u8]) -> Result<(), Error> {
        let body = serde_json::json!({ "bytes": B64.encode(value) }).to_string();
        match self.call(Method::POST, &key_path(name)?, Some(body.into_bytes()), &[200, 201]) {
            // The protocol says "exists" with a 400.
            Err(Error::Unavailable(m)) if m.contains("HTTP 400") && m.contains("exists") => Err(Error::AlreadyExists),
            other => other.map(|_| ()),
        }
    }

    fn get(&self, name: &str) -> Result<Vec<u8>, Error> {
        let body = self.call(Method::GET, &key_path(name)?, None, &[200])?;
        let value: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| Error::Other(format!("the service's answer is not JSON: {e}")))?;
        let text = value["bytes"]
            .as_str()
            .ok_or_else(|| Error::Other("the service's answer has no \"bytes\"".into()))?;
        B64.decode(text)
            .map_err(|e| Error::Other(format!("the service's \"bytes\" are not base64: {e}")))
    }

    fn delete(&self, name: &str) -> Result<(), Error> {
        self.call(Method::DELETE, &key_path(name)?, None, &[200, 204])
            .map(|_| ())
    }

    fn list(&self, prefix: &str, after: Option<&str>, limit: u32) -> Result<Page, Error> {
        let body = self.call(Method::GET, "/v1/key", None, &[200])?;
        let mut names = Vec::new();
        for line in body.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let entry: serde_json::Value =
                serde_json::from_slice(line).map_err(|e| Error::Other(format!("a listing line is not JSON: {e}")))?;
            if let Some(name) = entry["name"].as_str() {
                names.push(name.to_owned());
            }
        }
        Ok(page(names, prefix, after, limit))
    }
}

impl Generic {
    /// One exchange; an answer outside `ok` becomes the contract's error.
    fn call(&self, method: Method, path: &str, body: Option<Vec<u8>>, ok: &[u16]) -> Result<Vec<u8>, Error> {
        let headers: &[(&str, &str)] = if body.is_some() {
            &[("content-type", "application/json")]
        } else {
            &[]
        };
        let answer = http::send(method, &format!("{}{path}", self.endpoint), headers, body)?;
        if ok.contains(&answer.status) {
            Ok(answer.body)
        } else {
            Err(answer.error())
        }
    }
}

/// The path of a key. Names go into the URL: only those that need no escaping.
fn key_path(name: &str) -> Result<String, Error> {
    let portable = !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
    if portable {
        Ok(format!("/v1/key/{name}"))
    } else {
        Err(Error::InvalidArgument(format!("'{name}' is not a portable key name")))
    }
}

export_keystore!(Generic);
