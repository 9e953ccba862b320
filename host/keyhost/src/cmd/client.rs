//! The HTTP client of the `key` (and later) commands: mutual TLS to a KES-compatible
//! server, configured by the same variables as the `kes` CLI.

use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use keyhost_policy::ApiKey;
use keyhost_tls::client::ServerTrust;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The `Accept` header of a Prometheus scrape: the server then answers with every
/// metric family, its own included.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4";

/// Flags every client command takes.
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// The server, e.g. https://127.0.0.1:7373 [env: KES_SERVER, MINIO_KES_SERVER,
    /// MINIO_KMS_KES_ENDPOINT; default 127.0.0.1:7373].
    #[arg(long = "server", value_name = "HOST:PORT", global = true)]
    server: Option<String>,
    /// Skip verifying the server's certificate (self-signed test servers only).
    #[arg(short = 'k', long, global = true)]
    insecure: bool,
}

/// The first variable of `names` that is set and not empty.
fn first_env(names: &[&str]) -> Option<String> {
    names
        .iter()
        .find_map(|n| std::env::var(n).ok().filter(|v| !v.trim().is_empty()))
}

/// A connection to one or more key servers (`KES_SERVER=a:7373,b:7373`).
///
/// Endpoints are tried as kms-go tries them: a localhost endpoint first, otherwise
/// from a random start; a transport error or a 5xx answer (other than 501) moves on
/// to the next endpoint, a 4xx answer is returned at once, and with a single
/// endpoint a transport error or a 503 is retried twice after 200–1000 ms.
pub struct Client {
    endpoints: Vec<String>,
    http: HttpClient<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
}

/// Why a command failed; the exit code tells scripts which kind.
#[derive(Debug)]
pub enum CliError {
    /// The server answered with an error (exit code 1).
    Refused(String),
    /// The server could not be reached, or the local setup is wrong (exit code 3).
    Setup(String),
}

impl CliError {
    /// Prints the error and returns the exit code.
    pub fn exit(&self) -> std::process::ExitCode {
        match self {
            Self::Refused(m) => {
                eprintln!("error: {m}");
                std::process::ExitCode::from(1)
            }
            Self::Setup(m) => {
                eprintln!("error: {m}");
                std::process::ExitCode::from(3)
            }
        }
    }
}

impl From<String> for CliError {
    fn from(m: String) -> Self {
        Self::Setup(m)
    }
}

/// A server's answer.
pub struct Answer {
    /// The HTTP status.
    pub status: http::StatusCode,
    /// The body.
    pub body: Bytes,
}

impl Answer {
    /// The server's `{"message": …}` text, or the body as text.
    pub fn message(&self) -> String {
        serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&self.body).trim().to_owned())
    }
}

impl Client {
    /// A client for the server and credentials that the flags and the environment
    /// name: an API key (KES_API_KEY) or a certificate and key (KES_CLIENT_CERT,
    /// KES_CLIENT_KEY).
    pub fn new(args: &ClientArgs) -> Result<Self, String> {
        let server = args
            .server
            .clone()
            .or_else(|| first_env(&["MINIO_KES_SERVER", "KES_SERVER", "MINIO_KMS_KES_ENDPOINT"]))
            .unwrap_or_else(|| "127.0.0.1:7373".into());
        // Every endpoint is spoken to over https, as kms-go does; each is parsed
        // once (keyhost_url), and the canonical form is what the client calls.
        let mut endpoints: Vec<keyhost_url::HttpUrl> = server
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                let host = s
                    .strip_prefix("https://")
                    .or_else(|| s.strip_prefix("http://"))
                    .unwrap_or(s)
                    .trim_end_matches('/');
                keyhost_url::HttpUrl::parse(&format!("https://{host}"))
                    .map_err(|e| format!("KES_SERVER (or --server): {e}"))
            })
            .collect::<Result<_, _>>()?;
        if endpoints.is_empty() {
            return Err("KES_SERVER names no endpoint".into());
        }
        // kms-go's order: a localhost endpoint first, else a random start.
        if let Some(local) = endpoints.iter().position(keyhost_url::HttpUrl::is_local) {
            endpoints.rotate_left(local);
        } else {
            let start = usize::from(rand::random::<u16>()) % endpoints.len();
            endpoints.rotate_left(start);
        }

        let (chain, key) = credentials()?;
        let trust = if args.insecure {
            ServerTrust::Any
        } else {
            ServerTrust::WebPki
        };
        let tls = keyhost_tls::client::client_config(chain, key, trust)?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .build();
        Ok(Self {
            endpoints: endpoints.iter().map(|e| e.endpoint().to_owned()).collect(),
            http: HttpClient::builder(TokioExecutor::new()).build(connector),
        })
    }

    /// The endpoint tried first.
    pub fn endpoint(&self) -> &str {
        &self.endpoints[0]
    }

    /// Sends a request to the first endpoint that answers; `path` starts with `/`.
    /// Errors are transport errors of every endpoint, not HTTP error answers.
    pub async fn send(&self, method: http::Method, path: &str, body: Option<Vec<u8>>) -> Result<Answer, String> {
        let body = Bytes::from(body.unwrap_or_default());
        let attempts = if self.endpoints.len() == 1 {
            3
        } else {
            self.endpoints.len()
        };
        let mut last: Result<Answer, String> = Err("no endpoint".into());
        for attempt in 0..attempts {
            let base = &self.endpoints[attempt % self.endpoints.len()];
            if attempt > 0 && self.endpoints.len() == 1 {
                let wait = 200 + u64::from(rand::random::<u16>()) % 800;
                tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
            }
            last = self.send_to(base, &method, path, body.clone()).await;
            match &last {
                Ok(a) if a.status.is_server_error() && a.status != http::StatusCode::NOT_IMPLEMENTED => {
                    if self.endpoints.len() == 1 && a.status != http::StatusCode::SERVICE_UNAVAILABLE {
                        break;
                    }
                }
                Ok(_) => break,
                Err(_) => {}
            }
        }
        last
    }

    async fn send_to(&self, base: &str, method: &http::Method, path: &str, body: Bytes) -> Result<Answer, String> {
        let mut request = http::Request::builder()
            .method(method.clone())
            .uri(format!("{base}{path}"));
        if path == "/v1/metrics" {
            // Ask for keyhost's own families too, as Prometheus does; a bare request
            // gets only KES's (what KES clients parse).
            request = request.header(http::header::ACCEPT, PROMETHEUS_TEXT);
        }
        let request = request.body(Full::new(body)).map_err(|e| format!("bad request: {e}"))?;
        let response = self.http.request(request).await.map_err(|e| {
            let mut text = format!("cannot reach {base}: {e}");
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                text.push_str(&format!(": {s}"));
                source = s.source();
            }
            if text.contains("UnknownIssuer") || text.contains("invalid peer certificate") {
                text.push_str(" (a self-signed server? add -k/--insecure for tests)");
            } else if text.contains("Connection refused") {
                text.push_str(" (is the server running there? set KES_SERVER or --server)");
            } else if text.contains("CertificateRequired") || text.contains("certificate") {
                text.push_str(" (does the server accept this client certificate? see KES_CLIENT_CERT)");
            }
            text
        })?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
            .to_bytes();
        Ok(Answer { status, body })
    }

    /// Sends a request and returns the answer of a successful one; an error answer
    /// becomes [`CliError::Refused`] with the server's message and what to do.
    pub async fn call(&self, method: http::Method, path: &str, body: Option<Vec<u8>>) -> Result<Answer, CliError> {
        let answer = self.send(method, path, body).await.map_err(CliError::Setup)?;
        if answer.status.is_success() {
            return Ok(answer);
        }
        let message = answer.message();
        let hint = match answer.status.as_u16() {
            403 => format!(
                " — this identity's policy does not allow {path}; ask the admin for a policy that does \
                 (`keyhost identity self` shows yours)"
            ),
            502 | 504 => " — the server cannot reach its keystore".into(),
            _ => String::new(),
        };
        Err(CliError::Refused(format!("{message} ({}){hint}", answer.status)))
    }

    /// Opens a streaming request (`/v1/log/…`) and returns the response to read
    /// incrementally.
    pub async fn stream(&self, path: &str) -> Result<hyper::Response<hyper::body::Incoming>, CliError> {
        let mut last = String::new();
        for base in &self.endpoints {
            let request = http::Request::builder()
                .uri(format!("{base}{path}"))
                .body(Full::new(Bytes::new()))
                .map_err(|e| CliError::Setup(format!("bad request: {e}")))?;
            match self.http.request(request).await {
                Ok(r) if r.status().is_success() => return Ok(r),
                Ok(r) => {
                    let status = r.status();
                    let body = r.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                    let message = Answer { status, body }.message();
                    return Err(CliError::Refused(format!("{message} ({status})")));
                }
                Err(e) => last = format!("cannot reach {base}: {e}"),
            }
        }
        Err(CliError::Setup(last))
    }
}

/// The client's certificate chain and key, from an API key or from files.
fn credentials() -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    let api_key = first_env(&["MINIO_KES_API_KEY", "KES_API_KEY", "MINIO_KMS_KES_API_KEY"]);
    let key_file = first_env(&["MINIO_KES_KEY_FILE", "KES_CLIENT_KEY", "MINIO_KES_CLIENT_KEY"]);
    let cert_file = first_env(&["MINIO_KES_CERT_FILE", "KES_CLIENT_CERT", "MINIO_KES_CLIENT_CERT"]);
    match (api_key, key_file, cert_file) {
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => Err(
            "both an API key (KES_API_KEY) and a client certificate (KES_CLIENT_CERT/KES_CLIENT_KEY) are set; keep one"
                .into(),
        ),
        (Some(text), None, None) => {
            let key = ApiKey::parse(&text).map_err(|e| format!("KES_API_KEY: {e}"))?;
            let (cert_pem, key_pem) = keyhost_tls::mint::client_certificate(&key).map_err(|e| e.to_string())?;
            use rustls::pki_types::pem::PemObject;
            let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|e| e.to_string())?;
            let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| e.to_string())?;
            Ok((vec![cert], key))
        }
        (None, Some(key), Some(cert)) => {
            let chain = keyhost_tls::load_chain(std::path::Path::new(&cert)).map_err(|e| e.to_string())?;
            let path = std::path::Path::new(&key);
            let key = match keyhost_tls::load_client_key(path, None) {
                Err(keyhost_tls::TlsError::NeedsPassword { .. }) => {
                    let password = super::password::read(&format!("Password for {}: ", path.display()))?;
                    keyhost_tls::load_client_key(path, Some(&password)).map_err(|e| e.to_string())?
                }
                other => other.map_err(|e| e.to_string())?,
            };
            Ok((chain, key))
        }
        (None, Some(_), None) => Err("KES_CLIENT_KEY is set but KES_CLIENT_CERT is not; set both".into()),
        (None, None, Some(_)) => Err("KES_CLIENT_CERT is set but KES_CLIENT_KEY is not; set both".into()),
        (None, None, None) => Err(
            "no credentials: set KES_API_KEY, or KES_CLIENT_CERT and KES_CLIENT_KEY (see `keyhost identity new`)"
                .into(),
        ),
    }
}
