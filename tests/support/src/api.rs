//! A keyhost server in the test's own process, over real mutual TLS with
//! certificates minted per run, and real HTTP clients (reqwest) to talk to it.

#![expect(clippy::unwrap_used, reason = "Fixtures fail loudly by design")]

use std::sync::Arc;

use keyhost_keystore::MemStore;
use keyhost_policy::{ApiKey, Authorizer, PatternSyntax, Policy};
use keyhost_server::{State, serve};
use keyhost_tls::mint::{DevCredentials, client_certificate};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::Value;

/// A server running on a loopback port of this process.
#[derive(Debug)]
pub struct Server {
    /// `https://localhost:PORT`.
    pub url: String,
    /// Where it listens.
    pub addr: std::net::SocketAddr,
    /// Its certificate, and the admin's API key and client certificate.
    pub creds: DevCredentials,
    /// The API key of `app`, an identity with the policy of [`start`].
    pub app: ApiKey,
}

/// A server on an in-memory keystore whose `app` identity may generate and decrypt
/// with `app-*` keys and describe every key but `app-secret`, with `configure`
/// applied to its state.
pub async fn start(configure: impl FnOnce(&mut State)) -> Server {
    start_with(
        |app| {
            let policy = Policy::parse(
                &["/v1/key/generate/app-*", "/v1/key/decrypt/app-*", "/v1/key/describe/*"],
                &["/v1/key/describe/app-secret"],
                PatternSyntax::Prefix,
            )
            .unwrap();
            vec![("app", policy, vec![app.identity()])]
        },
        configure,
    )
    .await
}

/// A server whose policies `policies` makes (given the `app` key), on an in-memory
/// keystore, with `configure` applied to its state.
pub async fn start_with(
    policies: impl FnOnce(&ApiKey) -> Vec<(&'static str, Policy, Vec<keyhost_policy::Identity>)>,
    configure: impl FnOnce(&mut State),
) -> Server {
    let creds = DevCredentials::generate(&["localhost".into(), "127.0.0.1".into()]).unwrap();
    let app = ApiKey::from_seed([7; 32]);
    let mut authorizer = Authorizer::new(Some(creds.admin.identity()));
    for (name, policy, identities) in policies(&app) {
        authorizer.add(name, policy, &identities).unwrap();
    }
    let mut state = State::new(Arc::new(MemStore::new()), authorizer);
    configure(&mut state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let url = format!("https://localhost:{}", addr.port());
    let tls = Arc::new(creds.server_config().unwrap());
    tokio::spawn(serve(listener, tls, Arc::new(state)));
    Server { url, addr, creds, app }
}

impl Server {
    /// A client configuration trusting the server, presenting `cert_pem`
    /// (certificate and key, PEM) or no certificate.
    pub fn client_config(&self, cert_pem: Option<(&str, &str)>) -> rustls::ClientConfig {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.creds.server_cert_der.clone()).unwrap();
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        match cert_pem {
            Some((cert, key)) => {
                let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert.as_bytes())
                    .map(|c| c.unwrap())
                    .collect();
                let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
                builder.with_client_auth_cert(chain, key).unwrap()
            }
            None => builder.with_no_client_auth(),
        }
    }

    /// An HTTP client presenting `cert_pem`, or no certificate.
    pub fn client_for(&self, cert_pem: Option<(&str, &str)>) -> reqwest::Client {
        reqwest::Client::builder()
            .use_preconfigured_tls(self.client_config(cert_pem))
            .build()
            .unwrap()
    }

    /// A raw TLS connection offering `alpn`, with the client certificate (PEM) given.
    pub async fn tls(
        &self,
        alpn: &[&[u8]],
        cert_pem: Option<(&str, &str)>,
    ) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        self.tls_from([127, 0, 0, 1].into(), alpn, cert_pem).await
    }

    /// [`Server::tls_from`] that says why it failed instead of panicking: the server
    /// may close a connection before or during the handshake.
    pub async fn try_tls_from(
        &self,
        from: std::net::IpAddr,
        alpn: &[&[u8]],
        cert_pem: Option<(&str, &str)>,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        let mut config = self.client_config(cert_pem);
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind((from, 0).into())?;
        let tcp = socket.connect(self.addr).await?;
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(rustls::pki_types::ServerName::try_from("localhost").unwrap(), tcp)
            .await
    }

    /// [`Server::tls`] from the loopback address `from` (any of 127.0.0.0/8).
    pub async fn tls_from(
        &self,
        from: std::net::IpAddr,
        alpn: &[&[u8]],
        cert_pem: Option<(&str, &str)>,
    ) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        let mut config = self.client_config(cert_pem);
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind((from, 0).into()).unwrap();
        let tcp = socket.connect(self.addr).await.unwrap();
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(rustls::pki_types::ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap()
    }

    /// An HTTP/2 client presenting `cert_pem`: one connection, a stream per request.
    pub fn client_h2(&self, cert_pem: Option<(&str, &str)>) -> reqwest::Client {
        let mut config = self.client_config(cert_pem);
        config.alpn_protocols = vec![b"h2".to_vec()];
        reqwest::Client::builder()
            .use_preconfigured_tls(config)
            .http2_prior_knowledge()
            .build()
            .unwrap()
    }

    /// An HTTP client of the admin.
    pub fn admin(&self) -> reqwest::Client {
        self.client_for(Some((&self.creds.admin_cert_pem, &self.creds.admin_key_pem)))
    }

    /// An HTTP client of `app`.
    pub fn app(&self) -> reqwest::Client {
        let (cert, key) = client_certificate(&self.app).unwrap();
        self.client_for(Some((&cert, &key)))
    }

    /// Sends `method path` with `body` as `client`; the status and the body.
    pub async fn call(&self, client: &reqwest::Client, method: &str, path: &str, body: Option<Value>) -> (u16, String) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = client.request(method, format!("{}{path}", self.url));
        if let Some(body) = body {
            req = req.body(body.to_string());
        }
        let resp = req.send().await.unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }
}

impl Server {
    /// `/v1/metrics` as Prometheus asks for it: every family, keyhost's own too.
    pub async fn metrics(&self, client: &reqwest::Client) -> String {
        let resp = client
            .get(format!("{}/v1/metrics", self.url))
            .header("accept", keyhost_server::PROMETHEUS_ACCEPT)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.text().await.unwrap()
    }
}

/// The `message` of a KES error body.
pub fn message(body: &str) -> String {
    serde_json::from_str::<Value>(body).unwrap()["message"]
        .as_str()
        .unwrap()
        .to_owned()
}
