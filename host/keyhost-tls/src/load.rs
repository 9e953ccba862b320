//! Certificates, CA bundles and private keys from PEM files. Every error names the
//! file and says what is wrong with it.

use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer};
use zeroize::Zeroizing;

use keyhost_crypto::pem::{self, KeyFormat};

/// Why TLS material could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// A file holds no usable PEM item of the expected kind.
    #[error("{path}: {what}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// The private key is encrypted, and no password was given.
    #[error("{path}: the private key is encrypted; give its password as tls.password")]
    NeedsPassword {
        /// The file.
        path: PathBuf,
    },
    /// rustls refused the material.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// A private key file that other users may read, or that is not a file.
    #[error("{0}")]
    Secret(#[from] keyhost_files::FileError),
}

/// The largest private key file read: an RSA key of 16,384 bits is about 13 KB.
pub const MAX_KEY_FILE: u64 = 64 << 10;

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| TlsError::Read {
        path: path.to_owned(),
        error,
    })
}

/// Reads a PEM certificate chain (leaf first).
pub fn load_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
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
/// when it is encrypted (OpenSSL's traditional encryption or PKCS#8 PBES2). An
/// encrypted key without a password is [`TlsError::NeedsPassword`].
///
/// The file must be closed to other users, as every file holding a secret
/// ([`keyhost_files::read_secret`]): `0600` and keyhost's own, or root's and at
/// most `0640`.
pub fn load_key(path: &Path, password: Option<&str>) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = keyhost_files::read_secret(path, MAX_KEY_FILE, "private key file")?;
    parse_key(path, &bytes, password)
}

/// [`load_key`] without the owner and mode check, for a client's own key
/// (`KES_CLIENT_KEY`): whom a user lets read their key is theirs to decide, as with
/// curl and the `kes` CLI. A server's keys are always checked.
pub fn load_client_key(path: &Path, password: Option<&str>) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = Zeroizing::new(read(path)?);
    parse_key(path, &bytes, password)
}

fn parse_key(path: &Path, bytes: &[u8], password: Option<&str>) -> Result<PrivateKeyDer<'static>, TlsError> {
    // PEM is ASCII, so this borrows `bytes` rather than copying the key.
    let text = String::from_utf8_lossy(bytes);
    if pem::is_encrypted(&text) {
        let Some(password) = password else {
            return Err(TlsError::NeedsPassword { path: path.to_owned() });
        };
        let cannot = |what: &dyn std::fmt::Display| TlsError::Pem {
            path: path.to_owned(),
            what: format!("cannot decrypt the private key: {what}"),
        };
        let decrypted = pem::decrypt(&text, password).map_err(|e| cannot(&e))?;
        let der = decrypted.der.to_vec();
        let key = match decrypted.format {
            KeyFormat::Pkcs8 => PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der)),
            KeyFormat::Pkcs1 => PrivateKeyDer::Pkcs1(PrivatePkcs1KeyDer::from(der)),
            KeyFormat::Sec1 => PrivateKeyDer::Sec1(PrivateSec1KeyDer::from(der)),
        };
        // OpenSSL's traditional encryption is CBC with no check of its own, and a
        // wrong password can still leave valid padding: make sure it is a key.
        // (PKCS#8's decryption parses the result as a key already.)
        if !pem::is_pkcs8_encrypted(&text) {
            crate::provider()
                .key_provider
                .load_private_key(key.clone_key())
                .map_err(|_| cannot(&"wrong password"))?;
        }
        return Ok(key);
    }
    PrivateKeyDer::from_pem_slice(bytes).map_err(|e| TlsError::Pem {
        path: path.to_owned(),
        what: format!("no usable PRIVATE KEY block ({e})"),
    })
}

/// Reads CA certificates from a PEM file or from every file of a directory.
pub fn load_roots(path: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    let files: Vec<PathBuf> = if path.is_dir() {
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
            path: PathBuf::from("system trust store"),
            what: format!(
                "no CA certificates to verify clients with{why}: set SSL_CERT_FILE to the CA that signed the client certificates, or start with --auth=off"
            ),
        });
    }
    Ok(roots)
}
