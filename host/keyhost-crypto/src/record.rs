//! Key records: what a keystore holds for each key, in every KES era's format.
//!
//! | format | era | bytes |
//! |---|---|---|
//! | [`RecordFormat::V016`] | ≤ v0.19.1 (incl. v0.16) | `{"bytes":"<b64 32 bytes>"}` |
//! | (read only) | v0.19.2 – 2024-01 | the same plus `algorithm`, `created_at`, `created_by` (and `version`) |
//! | [`RecordFormat::Current`] | 2024-02 onwards | base64 of the protobuf `KeyVersion` |

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use zeroize::{Zeroize, Zeroizing};

use crate::{Algorithm, HmacKey, KEY_LEN, SecretKey};

/// How [`KeyRecord::encode`] writes a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecordFormat {
    /// Base64 of the protobuf `KeyVersion` (KES since 2024-02): algorithm, HMAC key,
    /// creation time and creator.
    #[default]
    Current,
    /// `{"bytes":…}` of KES v0.16, for keystores that old KES must still read. It
    /// has no algorithm (read as AES256) and no HMAC key.
    V016,
}

/// Why a record cannot be read or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Neither a legacy JSON record nor a base64 protobuf record.
    #[error("the stored key is malformed: {0}")]
    Malformed(&'static str),
    /// A record without an HMAC key cannot be written in the current format.
    #[error("the current record format requires an HMAC key")]
    MissingHmacKey,
}

/// One key as stored in a keystore.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyRecord {
    /// The master key.
    pub key: SecretKey,
    /// Its HMAC key; legacy records have none (the HMAC API then refuses the key).
    pub hmac: Option<HmacKey>,
    /// When it was created, if recorded.
    pub created_at: Option<OffsetDateTime>,
    /// Who created it (an identity), if recorded.
    pub created_by: Option<String>,
}

impl std::fmt::Debug for KeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRecord")
            .field("algorithm", &self.key.algorithm())
            .field("hmac", &self.hmac.is_some())
            .field("created_at", &self.created_at)
            .field("created_by", &self.created_by)
            .finish()
    }
}

#[derive(Clone, PartialEq, prost::Message)]
struct PbKeyVersion {
    #[prost(message, optional, tag = "1")]
    key: Option<PbSecretKey>,
    #[prost(message, optional, tag = "2")]
    hmac_key: Option<PbHmacKey>,
    #[prost(message, optional, tag = "3")]
    created_at: Option<PbTimestamp>,
    #[prost(string, tag = "4")]
    created_by: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PbSecretKey {
    #[prost(bytes = "vec", tag = "1")]
    key: Vec<u8>,
    #[prost(uint32, tag = "2")]
    r#type: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PbHmacKey {
    #[prost(bytes = "vec", tag = "1")]
    key: Vec<u8>,
    #[prost(uint32, tag = "2")]
    hash: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PbTimestamp {
    #[prost(int64, tag = "1")]
    seconds: i64,
    #[prost(int32, tag = "2")]
    nanos: i32,
}

impl Drop for PbKeyVersion {
    fn drop(&mut self) {
        if let Some(k) = &mut self.key {
            k.key.zeroize();
        }
        if let Some(k) = &mut self.hmac_key {
            k.key.zeroize();
        }
    }
}

#[derive(Deserialize)]
struct JsonRecord {
    bytes: String,
    #[serde(default)]
    algorithm: String,
    #[serde(default)]
    created_at: Option<String>,
    #[serde(default)]
    created_by: Option<String>,
}

fn key_bytes(bytes: &[u8]) -> Result<[u8; KEY_LEN], RecordError> {
    bytes
        .try_into()
        .map_err(|_| RecordError::Malformed("the key is not 32 bytes"))
}

impl KeyRecord {
    /// A new key of `algorithm` with a fresh HMAC key, created by `created_by` at `now`.
    pub fn generate(algorithm: Algorithm, created_by: &str, now: OffsetDateTime) -> Self {
        Self {
            key: SecretKey::generate(algorithm),
            hmac: Some(HmacKey::generate()),
            created_at: Some(now),
            created_by: Some(created_by.to_owned()).filter(|s| !s.is_empty()),
        }
    }

    /// Reads a record of any era: JSON (legacy) if the bytes are a JSON value,
    /// base64 protobuf otherwise.
    pub fn parse(stored: &[u8]) -> Result<Self, RecordError> {
        if serde_json::from_slice::<serde::de::IgnoredAny>(stored).is_ok() {
            return Self::parse_json(stored);
        }
        Self::parse_protobuf(stored)
    }

    fn parse_json(stored: &[u8]) -> Result<Self, RecordError> {
        let mut json: JsonRecord =
            serde_json::from_slice(stored).map_err(|_| RecordError::Malformed("not a KES JSON key record"))?;
        let bytes = Zeroizing::new(
            B64.decode(&json.bytes)
                .map_err(|_| RecordError::Malformed("the key is not base64"))?,
        );
        json.bytes.zeroize();
        let algorithm = if json.algorithm.is_empty() {
            Algorithm::Aes256
        } else {
            Algorithm::from_name(&json.algorithm).ok_or(RecordError::Malformed("unknown key algorithm"))?
        };
        let created_at = match json.created_at.as_deref().filter(|s| !s.is_empty()) {
            None => None,
            Some(s) => Some(
                OffsetDateTime::parse(s, &Rfc3339).map_err(|_| RecordError::Malformed("created_at is not RFC 3339"))?,
            ),
        };
        Ok(Self {
            key: SecretKey::new(algorithm, key_bytes(&bytes)?),
            hmac: None,
            created_at,
            created_by: json.created_by.filter(|s| !s.is_empty()),
        })
    }

    fn parse_protobuf(stored: &[u8]) -> Result<Self, RecordError> {
        let raw = Zeroizing::new(
            B64.decode(stored.trim_ascii())
                .map_err(|_| RecordError::Malformed("neither JSON nor base64"))?,
        );
        let pb = <PbKeyVersion as prost::Message>::decode(&raw[..])
            .map_err(|_| RecordError::Malformed("not a protobuf key record"))?;
        let key = pb.key.as_ref().ok_or(RecordError::Malformed("no secret key"))?;
        let algorithm = match key.r#type {
            1 => Algorithm::Aes256,
            2 => Algorithm::ChaCha20,
            _ => return Err(RecordError::Malformed("unknown key type")),
        };
        let hmac = pb.hmac_key.as_ref().ok_or(RecordError::Malformed("no HMAC key"))?;
        if hmac.hash != 1 {
            return Err(RecordError::Malformed("unknown HMAC hash"));
        }
        let created_at = match &pb.created_at {
            None => None,
            Some(ts) => Some(
                OffsetDateTime::from_unix_timestamp(ts.seconds)
                    .ok()
                    .and_then(|t| t.replace_nanosecond(u32::try_from(ts.nanos).ok()?).ok())
                    .ok_or(RecordError::Malformed("created_at out of range"))?,
            ),
        };
        Ok(Self {
            key: SecretKey::new(algorithm, key_bytes(&key.key)?),
            hmac: Some(HmacKey::new(key_bytes(&hmac.key)?)),
            created_at,
            created_by: Some(pb.created_by.clone()).filter(|s| !s.is_empty()),
        })
    }

    /// Writes the record in `format`. The buffer is wiped when dropped.
    pub fn encode(&self, format: RecordFormat) -> Result<Zeroizing<Vec<u8>>, RecordError> {
        match format {
            RecordFormat::V016 => {
                let b64 = Zeroizing::new(B64.encode(self.key.expose_bytes()));
                Ok(Zeroizing::new(
                    format!("{{\"bytes\":\"{}\"}}", b64.as_str()).into_bytes(),
                ))
            }
            RecordFormat::Current => {
                let hmac = self.hmac.as_ref().ok_or(RecordError::MissingHmacKey)?;
                let pb = PbKeyVersion {
                    key: Some(PbSecretKey {
                        key: self.key.expose_bytes().to_vec(),
                        r#type: match self.key.algorithm() {
                            Algorithm::Aes256 => 1,
                            Algorithm::ChaCha20 => 2,
                        },
                    }),
                    hmac_key: Some(PbHmacKey {
                        key: hmac.expose_bytes().to_vec(),
                        hash: 1,
                    }),
                    created_at: self.created_at.map(|t| PbTimestamp {
                        seconds: t.unix_timestamp(),
                        nanos: t.nanosecond() as i32,
                    }),
                    created_by: self.created_by.clone().unwrap_or_default(),
                };
                let raw = Zeroizing::new(prost::Message::encode_to_vec(&pb));
                Ok(Zeroizing::new(B64.encode(&raw[..]).into_bytes()))
            }
        }
    }
}
