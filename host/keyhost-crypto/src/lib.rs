//! KES-compatible cryptography: master keys, the key records stored in keystores,
//! ciphertexts of every KES era, and password-protected PEM private keys ([`pem`]).
//!
//! Pure functions over bytes: no I/O, no clock (callers pass the time), no logging.
//!
//! # The scheme (identical since KES v0.7; only the framing changed)
//!
//! A master key `K` is 32 bytes, of algorithm AES256 or ChaCha20. To seal a
//! plaintext `P` with associated data `A`, draw a 16-byte `iv` and a 12-byte `nonce`,
//! derive a one-off key `K'` — `HMAC-SHA256(K, iv)` for AES256, `HChaCha20(K, iv)` for
//! ChaCha20 — and seal with AES-256-GCM or ChaCha20-Poly1305 under `K'`.
//!
//! Framings, all of which [`SecretKey::open`] reads:
//!
//! | format | written by | layout |
//! |---|---|---|
//! | JSON | KES ≤ v0.19.1 (incl. v0.16) | `{"aead","id","iv","nonce","bytes"}` |
//! | msgp | KES v0.19.2 – 2024-01 | MessagePack array of 5 |
//! | raw | KES 2024-02 onwards | `C ‖ iv ‖ nonce` |
//!
//! A JSON or msgp ciphertext records its own algorithm, which is honoured (so a
//! v0.16 ciphertext sealed with ChaCha20 under a type-less v0.16 key opens); a raw
//! ciphertext uses the key's algorithm.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod ciphertext;
pub mod pem;
mod record;

use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

pub use ciphertext::{CiphertextFormat, DecryptError};
pub use record::{KeyRecord, RecordError, RecordFormat};

/// The length of every master key, data key and HMAC key, in bytes.
pub const KEY_LEN: usize = 32;
const IV_LEN: usize = 16;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// The AEAD of a master key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// AES-256-GCM with an HMAC-SHA256-derived per-message key.
    Aes256,
    /// ChaCha20-Poly1305 with an HChaCha20-derived per-message key.
    ChaCha20,
}

impl Algorithm {
    /// The name KES's newest API uses (`describe`, `import`).
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Aes256 => "AES256",
            Algorithm::ChaCha20 => "ChaCha20",
        }
    }

    /// Parses any name KES ever used for a key algorithm: `AES256`,
    /// `AES256-GCM_SHA256`, `ChaCha20`, `XCHACHA20-POLY1305`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "AES256" | "AES256-GCM_SHA256" => Some(Algorithm::Aes256),
            "ChaCha20" | "XCHACHA20-POLY1305" => Some(Algorithm::ChaCha20),
            _ => None,
        }
    }

    /// The algorithm a new key gets: AES256 where the CPU accelerates AES-GCM,
    /// ChaCha20 elsewhere — KES's rule.
    pub fn preferred() -> Self {
        #[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
        {
            if std::arch::is_x86_feature_detected!("aes") && std::arch::is_x86_feature_detected!("pclmulqdq") {
                return Algorithm::Aes256;
            }
            Algorithm::ChaCha20
        }
        #[cfg(target_arch = "aarch64")]
        {
            if std::arch::is_aarch64_feature_detected!("aes") {
                return Algorithm::Aes256;
            }
            Algorithm::ChaCha20
        }
        #[cfg(not(any(target_arch = "x86_64", target_arch = "x86", target_arch = "aarch64")))]
        {
            Algorithm::ChaCha20
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Fills a fresh 32-byte key (or data key) from the operating system's CSPRNG.
pub fn random_key() -> Zeroizing<[u8; KEY_LEN]> {
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    fill_random(&mut key[..]);
    key
}

/// Fills `buf` from the operating system's CSPRNG.
///
/// # Panics
///
/// If the operating system cannot provide randomness: continuing would risk
/// reusing keys or nonces, so there is no safe fallback.
fn fill_random(buf: &mut [u8]) {
    getrandom::fill(buf).expect("the operating system's random number generator failed");
}

/// A master key. The bytes are wiped when it is dropped and never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretKey {
    algorithm: Algorithm,
    bytes: Zeroizing<[u8; KEY_LEN]>,
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretKey")
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl SecretKey {
    /// A key of `algorithm` with the given bytes.
    pub fn new(algorithm: Algorithm, bytes: [u8; KEY_LEN]) -> Self {
        Self {
            algorithm,
            bytes: Zeroizing::new(bytes),
        }
    }

    /// A fresh random key.
    pub fn generate(algorithm: Algorithm) -> Self {
        Self {
            algorithm,
            bytes: random_key(),
        }
    }

    /// The key's algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The key bytes (for encoding records).
    pub fn expose_bytes(&self) -> &[u8; KEY_LEN] {
        &self.bytes
    }

    /// The key ID of legacy ciphertexts: hex of the first 16 bytes of SHA-256(K).
    pub fn key_id(&self) -> String {
        hex::encode(&Sha256::digest(&self.bytes[..])[..16])
    }

    /// Seals `plaintext` with `associated_data` in the given framing.
    pub fn seal(&self, plaintext: &[u8], associated_data: &[u8], format: CiphertextFormat) -> Vec<u8> {
        let mut iv = [0u8; IV_LEN];
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&mut iv);
        fill_random(&mut nonce);
        let sealed = seal_with(self.algorithm, &self.bytes, &iv, &nonce, plaintext, associated_data);
        ciphertext::frame(self, format, sealed, &iv, &nonce)
    }

    /// Opens a ciphertext of any era sealed under this key with `associated_data`.
    pub fn open(&self, ciphertext: &[u8], associated_data: &[u8]) -> Result<Zeroizing<Vec<u8>>, DecryptError> {
        let open = |parts: ciphertext::Parts<'_>| {
            open_with(
                parts.algorithm,
                &self.bytes,
                &parts.iv,
                &parts.nonce,
                &parts.sealed,
                associated_data,
            )
            .ok_or(DecryptError::NotAuthentic)
        };
        match ciphertext::parse(self, ciphertext) {
            Ok(parts) => open(parts),
            // One raw ciphertext in 256 starts with '{': when it is no JSON
            // ciphertext, try it as raw before reporting the JSON error.
            Err(error) if ciphertext.first() == Some(&b'{') => ciphertext::parse_raw(self, ciphertext)
                .and_then(open)
                .map_err(|_| error),
            Err(error) => Err(error),
        }
    }
}

/// The key that seals one message: `HMAC-SHA256(K, iv)` or `HChaCha20(K, iv)`.
fn derive(algorithm: Algorithm, key: &[u8; KEY_LEN], iv: &[u8; IV_LEN]) -> Zeroizing<[u8; KEY_LEN]> {
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    match algorithm {
        Algorithm::Aes256 => {
            let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
            mac.update(iv);
            out.copy_from_slice(&mac.finalize().into_bytes());
        }
        Algorithm::ChaCha20 => {
            let mut derived = chacha20::hchacha::<chacha20::cipher::consts::U10>(key.into(), iv.into());
            out.copy_from_slice(&derived);
            derived.as_mut_slice().zeroize();
        }
    }
    out
}

fn seal_with(
    algorithm: Algorithm,
    key: &[u8; KEY_LEN],
    iv: &[u8; IV_LEN],
    nonce: &[u8; NONCE_LEN],
    plaintext: &[u8],
    aad: &[u8],
) -> Vec<u8> {
    let derived = derive(algorithm, key, iv);
    let payload = Payload { msg: plaintext, aad };
    let sealed = match algorithm {
        Algorithm::Aes256 => aes_gcm::Aes256Gcm::new(derived.as_ref().into()).encrypt(nonce.into(), payload),
        Algorithm::ChaCha20 => {
            chacha20poly1305::ChaCha20Poly1305::new(derived.as_ref().into()).encrypt(nonce.into(), payload)
        }
    };
    // Encryption fails only for inputs longer than the AEAD's limit (64 GiB).
    sealed.expect("AEAD input within limits")
}

fn open_with(
    algorithm: Algorithm,
    key: &[u8; KEY_LEN],
    iv: &[u8; IV_LEN],
    nonce: &[u8; NONCE_LEN],
    sealed: &[u8],
    aad: &[u8],
) -> Option<Zeroizing<Vec<u8>>> {
    if sealed.len() < TAG_LEN {
        return None;
    }
    let derived = derive(algorithm, key, iv);
    let payload = Payload { msg: sealed, aad };
    let opened = match algorithm {
        Algorithm::Aes256 => aes_gcm::Aes256Gcm::new(derived.as_ref().into()).decrypt(nonce.into(), payload),
        Algorithm::ChaCha20 => {
            chacha20poly1305::ChaCha20Poly1305::new(derived.as_ref().into()).decrypt(nonce.into(), payload)
        }
    };
    opened.ok().map(Zeroizing::new)
}

/// A key's HMAC-SHA256 key (newest KES records carry one per master key).
#[derive(Clone, PartialEq, Eq)]
pub struct HmacKey(Zeroizing<[u8; KEY_LEN]>);

impl fmt::Debug for HmacKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HmacKey(..)")
    }
}

impl HmacKey {
    /// An HMAC key with the given bytes.
    pub fn new(bytes: [u8; KEY_LEN]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// A fresh random HMAC key.
    pub fn generate() -> Self {
        Self(random_key())
    }

    /// The key bytes (for encoding records).
    pub fn expose_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// HMAC-SHA256 of `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0[..]).expect("HMAC takes any key length");
        mac.update(message);
        mac.finalize().into_bytes().into()
    }
}

#[cfg(test)]
mod tests;
