//! Ciphertext framings: JSON (≤ v0.19.1), MessagePack (v0.19.2 – 2024-01) and raw.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

use crate::{Algorithm, IV_LEN, NONCE_LEN, SecretKey, TAG_LEN};

/// How [`SecretKey::seal`] frames a ciphertext.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CiphertextFormat {
    /// `C ‖ iv ‖ nonce`: what KES writes since 2024-02 (the smallest).
    #[default]
    Raw,
    /// The JSON object of KES ≤ v0.19.1, for fleets that old KES must still read.
    Json,
}

/// Why a ciphertext does not open. KES of 2024 and later answer every case with
/// 400 `decryption failed: ciphertext is not authentic`; v0.16 told them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecryptError {
    /// Wrong key, wrong associated data, or altered bytes.
    #[error("decryption failed: ciphertext is not authentic")]
    NotAuthentic,
    /// A JSON ciphertext that does not parse (v0.16: 400 `invalid ciphertext`).
    #[error("invalid ciphertext")]
    Malformed,
    /// A legacy ciphertext naming an unknown algorithm (v0.16: 422).
    #[error("unsupported cryptographic algorithm")]
    UnsupportedAlgorithm,
    /// A legacy ciphertext whose IV is not 16 bytes (v0.16: 400 `invalid iv size`).
    #[error("invalid iv size")]
    InvalidIvSize,
    /// A legacy ciphertext whose nonce is not 12 bytes (v0.16: 400 `invalid nonce size`).
    #[error("invalid nonce size")]
    InvalidNonceSize,
    /// A legacy ciphertext whose key ID names another key (v0.16: 400).
    #[error("invalid ciphertext: key ID mismatch")]
    KeyIdMismatch,
}

/// The pieces of a ciphertext, whatever its framing.
pub(crate) struct Parts<'a> {
    pub(crate) algorithm: Algorithm,
    pub(crate) iv: [u8; IV_LEN],
    pub(crate) nonce: [u8; NONCE_LEN],
    pub(crate) sealed: std::borrow::Cow<'a, [u8]>,
}

/// KES ≤ v0.19.1's JSON ciphertext. Read as KES read it (Go's `json.Unmarshal`):
/// unknown fields are ignored, and a missing or `null` field is empty.
#[derive(Serialize, Deserialize)]
struct JsonCiphertext {
    #[serde(default)]
    aead: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(default)]
    iv: Option<String>,
    #[serde(default)]
    nonce: Option<String>,
    #[serde(default)]
    bytes: Option<String>,
}

const JSON_AES: &str = "AES-256-GCM-HMAC-SHA-256";
const JSON_CHACHA: &str = "ChaCha20Poly1305";
const MSGP_AES: &str = "AES256-GCM_SHA256";
const MSGP_CHACHA: &str = "XCHACHA20-POLY1305";

pub(crate) fn frame(
    key: &SecretKey,
    format: CiphertextFormat,
    mut sealed: Vec<u8>,
    iv: &[u8; 16],
    nonce: &[u8; 12],
) -> Vec<u8> {
    match format {
        CiphertextFormat::Raw => {
            sealed.extend_from_slice(iv);
            sealed.extend_from_slice(nonce);
            sealed
        }
        CiphertextFormat::Json => {
            let json = JsonCiphertext {
                aead: Some(
                    match key.algorithm() {
                        Algorithm::Aes256 => JSON_AES,
                        Algorithm::ChaCha20 => JSON_CHACHA,
                    }
                    .to_owned(),
                ),
                id: Some(key.key_id()),
                iv: Some(B64.encode(iv)),
                nonce: Some(B64.encode(nonce)),
                bytes: Some(B64.encode(&sealed)),
            };
            serde_json::to_vec(&json).expect("a struct of strings serialises")
        }
    }
}

pub(crate) fn parse<'a>(key: &SecretKey, ciphertext: &'a [u8]) -> Result<Parts<'a>, crate::DecryptError> {
    match ciphertext.first() {
        Some(b'{') => parse_json(key, ciphertext),
        // A raw ciphertext may start with 0x95 by chance: fall back to raw when the
        // MessagePack frame does not parse, as KES does.
        Some(0x95) => match parse_msgp(ciphertext) {
            Some(parts) => Ok(parts),
            None => parse_raw(key, ciphertext),
        },
        _ => parse_raw(key, ciphertext),
    }
}

pub(crate) fn parse_raw<'a>(key: &SecretKey, ciphertext: &'a [u8]) -> Result<Parts<'a>, DecryptError> {
    if ciphertext.len() < TAG_LEN + IV_LEN + NONCE_LEN {
        return Err(DecryptError::NotAuthentic);
    }
    let (rest, nonce) = ciphertext.split_at(ciphertext.len() - NONCE_LEN);
    let (sealed, iv) = rest.split_at(rest.len() - IV_LEN);
    Ok(Parts {
        algorithm: key.algorithm(),
        iv: iv.try_into().expect("split at 16"),
        nonce: nonce.try_into().expect("split at 12"),
        sealed: sealed.into(),
    })
}

fn parse_json<'a>(key: &SecretKey, ciphertext: &'a [u8]) -> Result<Parts<'a>, DecryptError> {
    let json: JsonCiphertext = serde_json::from_slice(ciphertext).map_err(|_| DecryptError::Malformed)?;
    let decode = |field: &Option<String>| {
        B64.decode(field.as_deref().unwrap_or_default())
            .map_err(|_| DecryptError::Malformed)
    };
    let (iv, nonce, sealed) = (decode(&json.iv)?, decode(&json.nonce)?, decode(&json.bytes)?);
    // KES v0.16's order of checks: key ID, IV, algorithm, nonce.
    if let Some(id) = &json.id
        && !id.is_empty()
        && *id != key.key_id()
    {
        return Err(DecryptError::KeyIdMismatch);
    }
    let iv: [u8; IV_LEN] = iv.try_into().map_err(|_| DecryptError::InvalidIvSize)?;
    let algorithm = match json.aead.as_deref().unwrap_or_default() {
        JSON_AES => Algorithm::Aes256,
        JSON_CHACHA => Algorithm::ChaCha20,
        _ => return Err(DecryptError::UnsupportedAlgorithm),
    };
    let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| DecryptError::InvalidNonceSize)?;
    Ok(Parts {
        algorithm,
        iv,
        nonce,
        sealed: sealed.into(),
    })
}

fn parse_msgp(ciphertext: &[u8]) -> Option<Parts<'_>> {
    let mut rd = ciphertext;
    if rmp::decode::read_array_len(&mut rd).ok()? != 5 {
        return None;
    }
    let read_str = |rd: &mut &[u8]| -> Option<String> {
        let len = rmp::decode::read_str_len(rd).ok()? as usize;
        let (s, rest) = rd.split_at_checked(len)?;
        *rd = rest;
        String::from_utf8(s.to_vec()).ok()
    };
    let algorithm = match read_str(&mut rd)?.as_str() {
        MSGP_AES => Algorithm::Aes256,
        MSGP_CHACHA => Algorithm::ChaCha20,
        _ => return None,
    };
    let _key_id = read_str(&mut rd)?;
    let read_bin = |rd: &mut &[u8]| -> Option<Vec<u8>> {
        let len = rmp::decode::read_bin_len(rd).ok()? as usize;
        let (b, rest) = rd.split_at_checked(len)?;
        *rd = rest;
        Some(b.to_vec())
    };
    let iv: [u8; IV_LEN] = read_bin(&mut rd)?.try_into().ok()?;
    let nonce: [u8; NONCE_LEN] = read_bin(&mut rd)?.try_into().ok()?;
    let sealed = read_bin(&mut rd)?;
    if !rd.is_empty() {
        return None;
    }
    Some(Parts {
        algorithm,
        iv,
        nonce,
        sealed: sealed.into(),
    })
}
