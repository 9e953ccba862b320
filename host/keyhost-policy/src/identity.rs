//! Identities from certificates and API keys.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use sha2::{Digest, Sha256};
use x509_parser::prelude::{FromDer, X509Certificate};
use zeroize::Zeroizing;

/// A KES identity: 64 lowercase hex digits, SHA-256 of a public key's DER
/// SubjectPublicKeyInfo.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Identity(String);

impl Identity {
    /// The identity of a DER SubjectPublicKeyInfo.
    pub fn of_spki(spki_der: &[u8]) -> Self {
        Self(hex::encode(Sha256::digest(spki_der)))
    }

    /// Parses a configured identity. Anything that is not 64 hex digits (KES
    /// configs use `disabled`) yields `None`: it can never match a client.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        (text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())).then(|| Self(text.to_ascii_lowercase()))
    }

    /// The hex string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a client's certificates do not give one identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    /// No certificate at all (KES: 400 `tls: client certificate is required`).
    #[error("tls: client certificate is required")]
    Missing,
    /// A second end-entity certificate after the client's own (newest rule), or any
    /// second certificate (v0.16 rule).
    #[error("tls: received more than one client certificate")]
    TooMany,
    /// A certificate that does not parse.
    #[error("tls: invalid client certificate")]
    Invalid,
}

/// Which certificates of a client's chain a server accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChainRule {
    /// The first certificate is the client's; every later one must be a CA
    /// certificate (an intermediate sent along), or the chain is refused.
    #[default]
    Newest,
    /// KES v0.16.1: exactly one certificate, whatever its CA flag (a plain
    /// `openssl req -x509` certificate is `CA:TRUE`).
    V016,
}

/// The identity of a client that presented `chain` (DER certificates, first the
/// one whose key the client proved in the TLS handshake).
///
/// The identity always comes from the **first** certificate: it is the only one
/// whose private key the handshake proves, so it is the only one a client is known
/// to own. Anyone can send a copy of somebody else's certificate after their own;
/// newest KES skips CA certificates wherever they stand and takes the remaining one,
/// so a client holding only the admin's public certificate could prepend a CA
/// certificate of its own and be the admin. keyhost never does that: under
/// [`ChainRule::Newest`] the later certificates may only be CA certificates and never
/// name the client; under [`ChainRule::V016`] there may be no later certificate.
pub fn identity_of_chain<'a>(
    chain: impl IntoIterator<Item = &'a [u8]>,
    rule: ChainRule,
) -> Result<Identity, CertError> {
    let mut chain = chain.into_iter();
    let first = chain.next().ok_or(CertError::Missing)?;
    // A certificate is exactly one DER value: bytes after it (a second certificate
    // hidden in the same block) make it invalid, as Go's parser has it.
    let whole = |der: &'a [u8]| match X509Certificate::from_der(der) {
        Ok(([], cert)) => Ok(cert),
        _ => Err(CertError::Invalid),
    };
    let leaf = whole(first)?;
    for der in chain {
        if rule == ChainRule::V016 {
            return Err(CertError::TooMany);
        }
        let cert = whole(der)?;
        if !cert.is_ca() {
            return Err(CertError::TooMany);
        }
    }
    Ok(Identity::of_spki(leaf.public_key().raw))
}

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410), before the 32-byte key.
const ED25519_SPKI_PREFIX: [u8; 12] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];

/// A KES API key: `kes:v1:` + base64(`0x00` ‖ 32-byte Ed25519 seed). The seed is
/// wiped when dropped and never printed.
#[derive(Clone)]
pub struct ApiKey {
    seed: Zeroizing<[u8; 32]>,
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKey({})", self.identity())
    }
}

/// Why text is not an API key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiKeyError {
    /// Not `kes:v1:` followed by base64.
    #[error("invalid API key: expected kes:v1:<base64>")]
    Format,
    /// A key type other than Ed25519 (0).
    #[error("invalid API key: unsupported key type {0}")]
    UnsupportedType(u8),
}

impl ApiKey {
    /// A key from a seed.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self {
            seed: Zeroizing::new(seed),
        }
    }

    /// Parses `kes:v1:<base64>` (the prefix is optional, as in KES's parser).
    pub fn parse(text: &str) -> Result<Self, ApiKeyError> {
        let text = text.trim();
        let body = text.strip_prefix("kes:v1:").unwrap_or(text);
        if body.starts_with("kes:") || body.starts_with("v1:") {
            return Err(ApiKeyError::Format);
        }
        let raw = Zeroizing::new(B64.decode(body).map_err(|_| ApiKeyError::Format)?);
        if raw.len() != 33 {
            return Err(ApiKeyError::Format);
        }
        if raw[0] != 0 {
            return Err(ApiKeyError::UnsupportedType(raw[0]));
        }
        let mut seed = Zeroizing::new([0u8; 32]);
        seed.copy_from_slice(&raw[1..]);
        Ok(Self { seed })
    }

    /// The seed (to derive the client certificate's key).
    pub fn expose_seed(&self) -> &[u8; 32] {
        &self.seed
    }

    /// The Ed25519 public key.
    pub fn public_key(&self) -> [u8; 32] {
        ed25519_dalek::SigningKey::from_bytes(&self.seed)
            .verifying_key()
            .to_bytes()
    }

    /// The DER SubjectPublicKeyInfo of the public key.
    pub fn spki_der(&self) -> Vec<u8> {
        let mut spki = ED25519_SPKI_PREFIX.to_vec();
        spki.extend_from_slice(&self.public_key());
        spki
    }

    /// The identity a server computes for this key's certificate.
    pub fn identity(&self) -> Identity {
        Identity::of_spki(&self.spki_der())
    }

    /// The text form, `kes:v1:…`.
    pub fn to_text(&self) -> Zeroizing<String> {
        let mut raw = Zeroizing::new([0u8; 33]);
        raw[1..].copy_from_slice(&self.seed[..]);
        Zeroizing::new(format!("kes:v1:{}", B64.encode(&raw[..])))
    }
}
