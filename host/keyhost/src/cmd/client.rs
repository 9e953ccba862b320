//! The HTTP client of the `key` (and later) commands: mutual TLS to a KES-compatible
//! server, configured by the same variables as the `kes` CLI.

use std::sync::Arc;

use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use keyhost_policy::ApiKey;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// Flags every client command takes.
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// The server, e.g. https://127.0.0.1:7373 [env: KES_SERVER, MINIO_KES_SERVER,
    /// MINIO_KMS_KES_ENDPOINT; default 127.0.0.1:7373].
    #[arg(short = 's', long = "server", value_name = "HOST:PORT", global = true)]
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

/// A connection to a key server.
pub struct Client {
    base: String,
    http: HttpClient<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
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
        // Several endpoints may be listed; the first one is used.
        let server = server.split(',').next().unwrap_or_default().trim();
        let host = server
            .strip_prefix("https://")
            .or_else(|| server.strip_prefix("http://"))
            .unwrap_or(server)
            .trim_end_matches('/');
        let base = format!("https://{host}");

        let (chain, key) = credentials()?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let builder = if args.insecure {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyServer(provider)))
        } else {
            let mut roots = rustls::RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            builder.with_root_certificates(roots)
        };
        let tls = builder
            .with_client_auth_cert(chain, key)
            .map_err(|e| format!("the client key does not fit its certificate: {e}"))?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .build();
        Ok(Self {
            base,
            http: HttpClient::builder(TokioExecutor::new()).build(connector),
        })
    }

    /// Sends a request; `path` starts with `/`.
    pub async fn send(&self, method: http::Method, path: &str, body: Option<Vec<u8>>) -> Result<Answer, String> {
        let request = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| format!("bad request: {e}"))?;
        let response = self.http.request(request).await.map_err(|e| {
            let mut text = format!("cannot reach {}: {e}", self.base);
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                text.push_str(&format!(": {s}"));
                source = s.source();
            }
            if text.contains("UnknownIssuer") || text.contains("invalid peer certificate") {
                text.push_str(" (a self-signed server? add -k/--insecure for tests)");
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
            let (cert_pem, key_pem) = keyhost_server::dev::client_certificate(&key).map_err(|e| e.to_string())?;
            use rustls::pki_types::pem::PemObject;
            let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|e| e.to_string())?;
            let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| e.to_string())?;
            Ok((vec![cert], key))
        }
        (None, Some(key), Some(cert)) => {
            let chain = keyhost_server::tls::load_chain(std::path::Path::new(&cert)).map_err(|e| e.to_string())?;
            let key = keyhost_server::tls::load_key(std::path::Path::new(&key), None).map_err(|e| e.to_string())?;
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

/// Accepts any server certificate (`--insecure`), still checking that the server
/// holds its key.
#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
