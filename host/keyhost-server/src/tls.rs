//! TLS: the server configuration and KES's client-certificate modes.
//!
//! KES (and so keyhost) requires a client certificate on every connection. By
//! default any certificate is accepted — the client must still prove possession of
//! its key in the handshake — because identity, not the chain, is what policies
//! name, and API-key clients present self-signed certificates. With `tls.auth: on`
//! chains are verified against the configured CA.

use std::sync::Arc;

use rustls::DistinguishedName;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// The crypto provider of every TLS endpoint of keyhost: aws-lc-rs, whose key
/// exchange groups are, in order of preference, the hybrid post-quantum
/// X25519MLKEM768 (data keys cross these connections, so traffic recorded today must
/// not open once quantum computers can break X25519), then X25519, P-256 and P-384
/// for clients without ML-KEM.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Accepts any client certificate, but checks that the client holds its key.
#[derive(Debug)]
pub struct AnyClientCert {
    algorithms: WebPkiSupportedAlgorithms,
    mandatory: bool,
}

impl AnyClientCert {
    /// `mandatory`: refuse the handshake without a certificate (the default unless
    /// some route skips authentication).
    pub fn new(mandatory: bool) -> Self {
        Self {
            algorithms: provider().signature_verification_algorithms,
            mandatory,
        }
    }
}

impl ClientCertVerifier for AnyClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A server configuration: TLS 1.2 and 1.3, h2 and HTTP/1.1, any client certificate.
/// `require_client_cert: false` lets clients without one connect (when some route
/// skips authentication); routes that need an identity then refuse them.
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    require_client_cert: bool,
) -> Result<rustls::ServerConfig, rustls::Error> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_client_cert_verifier(Arc::new(AnyClientCert::new(require_client_cert)))
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Why TLS material could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {error}")]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// A file holds no usable PEM item of the expected kind.
    #[error("{path}: {what}")]
    Pem {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        what: String,
    },
    /// rustls refused the material.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

fn read(path: &std::path::Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| TlsError::Read {
        path: path.to_owned(),
        error,
    })
}

/// Reads a PEM certificate chain (leaf first).
pub fn load_chain(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    use rustls::pki_types::pem::PemObject;
    let bytes = read(path)?;
    let chain: Vec<_> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_owned(),
            what: format!("not a PEM certificate file ({e})"),
        })?;
    if chain.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_owned(),
            what: "no CERTIFICATE block found".into(),
        });
    }
    Ok(chain)
}

/// Reads a PEM private key (PKCS#8, PKCS#1 or SEC1), decrypting it with `password`
/// when it is encrypted (OpenSSL's traditional encryption or PKCS#8 PBES2).
pub fn load_key(path: &std::path::Path, password: Option<&str>) -> Result<PrivateKeyDer<'static>, TlsError> {
    use rustls::pki_types::pem::PemObject;
    let bytes = zeroize::Zeroizing::new(read(path)?);
    let text = String::from_utf8_lossy(&bytes);
    if crate::pem_key::is_encrypted(&text) {
        let Some(password) = password else {
            return Err(TlsError::Pem {
                path: path.to_owned(),
                what: "the private key is encrypted; give its password as tls.password".into(),
            });
        };
        return crate::pem_key::decrypt(&text, password).map_err(|what| TlsError::Pem {
            path: path.to_owned(),
            what: format!("cannot decrypt the private key: {what}"),
        });
    }
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| TlsError::Pem {
        path: path.to_owned(),
        what: format!("no usable PRIVATE KEY block ({e})"),
    })
}

/// Reads CA certificates from a PEM file or from every file of a directory.
pub fn load_roots(path: &std::path::Path) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    let files: Vec<std::path::PathBuf> = if path.is_dir() {
        std::fs::read_dir(path)
            .map_err(|error| TlsError::Read {
                path: path.to_owned(),
                error,
            })?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect()
    } else {
        vec![path.to_owned()]
    };
    for file in files {
        for cert in load_chain(&file)? {
            roots.add(cert)?;
        }
    }
    Ok(roots)
}

/// The system's trusted CA certificates, as KES v0.16 verified clients against
/// them (`--auth on` without a CA of its own): `SSL_CERT_FILE` and `SSL_CERT_DIR`
/// when set, else the platform's store.
pub fn system_roots() -> Result<rustls::RootCertStore, TlsError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = rustls::RootCertStore::empty();
    let (_added, _unparsable) = roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        let why = found.errors.first().map(|e| format!(" ({e})")).unwrap_or_default();
        return Err(TlsError::Pem {
            path: std::path::PathBuf::from("system trust store"),
            what: format!(
                "no CA certificates to verify clients with{why}: set SSL_CERT_FILE to the CA that signed the client certificates, or start with --auth=off"
            ),
        });
    }
    Ok(roots)
}

/// A server configuration that verifies client chains against `roots`
/// (`tls.auth: on`).
pub fn server_config_verifying(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    roots: rustls::RootCertStore,
    require_client_cert: bool,
) -> Result<rustls::ServerConfig, TlsError> {
    let builder = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
    let builder = if require_client_cert {
        builder
    } else {
        builder.allow_unauthenticated()
    };
    let verifier = builder.build().map_err(|e| TlsError::Pem {
        path: Default::default(),
        what: format!("client verification: {e}"),
    })?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}
