//! Host-side sealing of keystore records.
//!
//! With `keystore.seal` configured, every record keyhost hands to a keystore is first
//! sealed with AES-256-GCM under a key-encryption key (KEK) that stays in the host:
//! a plugin, and the backend behind it, only ever hold ciphertext. [`SealedStore`]
//! wraps any [`Keystore`] and does this on `create` and undoes it on `get`; the rest
//! of the server does not know it is there.
//!
//! # The sealed record
//!
//! ```text
//! keyhost-sealed:v1:<kek id>:<base64(name tag ‖ nonce ‖ ciphertext ‖ tag)>
//! ```
//!
//! - `<kek id>` is 16 hex digits, a fingerprint of the KEK ([`Kek::id`]), so that a
//!   reader knows which KEK opens the record, and start-up can refuse a KEK that is
//!   not the one the configuration names.
//! - the AES-256-GCM key and the id are derived from the KEK with HMAC-SHA256 under
//!   two fixed labels, so the KEK itself keys nothing directly.
//! - the associated data is the header (`keyhost-sealed:v1:<kek id>:`), the name tag
//!   and the key's name: a record copied or renamed to another name does not open.
//! - `name tag` is 4 bytes of SHA-256 of the name; it lets the error say "sealed for
//!   another name" rather than "altered".
//! - `nonce` is 12 random bytes per record.
//!
//! Every record that starts with `keyhost-sealed:` is treated as sealed (a version
//! this build does not know fails to open rather than passing through). Records
//! without it (written by KES, or before sealing was switched on) are passed through
//! unchanged unless the operator refuses them ([`Unsealed::Refuse`]): KES's records
//! are JSON or base64 text and never start with `keyhost-sealed:`.
//! `keyhost migrate --reseal` seals them, and moves records sealed under an older
//! KEK to the current one.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::fmt;
use std::sync::Arc;

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use keyhost_keystore::{Error, Keystore, MAX_RECORD_LEN, Page, Record, Result, RuntimeStats, Status};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

pub mod kek;

/// What every sealed record of this version starts with.
pub const PREFIX: &str = "keyhost-sealed:v1:";
/// What every sealed record of any version starts with.
const FAMILY: &str = "keyhost-sealed:";

/// The length of a KEK, in bytes.
pub const KEK_LEN: usize = 32;
const ID_HEX: usize = 16;
const NAME_TAG: usize = 4;
const NONCE: usize = 12;
const TAG: usize = 16;

/// A key-encryption key: 32 bytes and the id derived from them. The bytes are
/// wiped when it is dropped.
pub struct Kek {
    id: String,
    cipher: Aes256Gcm,
}

impl fmt::Debug for Kek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kek").field("id", &self.id).finish_non_exhaustive()
    }
}

impl Kek {
    /// The KEK with these bytes.
    pub fn new(bytes: &[u8; KEK_LEN]) -> Self {
        let derive = |label: &[u8]| {
            let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(bytes).expect("HMAC takes keys of any length");
            mac.update(label);
            Zeroizing::new(<[u8; 32]>::from(mac.finalize().into_bytes()))
        };
        let id = hex::encode(&derive(b"keyhost-seal kek id v1")[..ID_HEX / 2]);
        let aead_key = derive(b"keyhost-seal aes-256-gcm key v1");
        Self {
            id,
            cipher: Aes256Gcm::new((&*aead_key).into()),
        }
    }

    /// A new random KEK and its bytes.
    pub fn generate() -> (Self, Zeroizing<[u8; KEK_LEN]>) {
        let mut bytes = Zeroizing::new([0u8; KEK_LEN]);
        getrandom::fill(&mut bytes[..]).expect("the operating system's random number generator failed");
        (Self::new(&bytes), bytes)
    }

    /// Reads the base64 of 32 bytes (surrounding white space ignored).
    pub fn from_base64(text: &str) -> Option<Self> {
        let decoded = Zeroizing::new(STANDARD.decode(text.trim()).ok()?);
        if decoded.len() != KEK_LEN {
            return None;
        }
        let mut bytes = Zeroizing::new([0u8; KEK_LEN]);
        bytes.copy_from_slice(&decoded);
        Some(Self::new(&bytes))
    }

    /// Its id: 16 hex digits of HMAC-SHA256 of a fixed label under the KEK. It tells
    /// KEKs apart and reveals nothing of the key.
    pub fn id(&self) -> &str {
        &self.id
    }
}

/// Why a sealed record did not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// It names a KEK that is not configured.
    #[error(
        "it is sealed under the key-encryption key {0}, which keystore.seal.keys does not list; \
         add that key (the records need it until `keyhost migrate --reseal` has moved them)"
    )]
    UnknownKek(String),
    /// It was sealed for another key name.
    #[error(
        "it was sealed for another key name: it was copied or renamed in the keystore, and a sealed \
         record opens only under the name it was sealed for"
    )]
    OtherName,
    /// It does not authenticate, or is not framed as a sealed record.
    #[error("it is corrupt or was altered ({0})")]
    Corrupt(&'static str),
    /// It is not sealed, and the operator refuses unsealed records.
    #[error(
        "it is not sealed, and keystore.seal.unsealed is refuse: a record that is not sealed was \
         not written by this deployment since sealing was switched on (run `keyhost migrate --reseal` \
         before refusing them)"
    )]
    NotSealed,
}

/// What a keystore with sealing does with a record that is not sealed
/// (`keystore.seal.unsealed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Unsealed {
    /// Serve it as it is: written by KES, or before sealing was switched on (the
    /// default, so that switching sealing on loses no key).
    #[default]
    Serve,
    /// Refuse it: once every record is sealed, a record that is not can only have
    /// been planted in the backend (a key its writer knows).
    Refuse,
}

/// What a stored record is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sealing {
    /// Not sealed: written by KES, or before sealing was switched on.
    Plain,
    /// Sealed under the KEK of this id (16 hex digits).
    Sealed(String),
    /// It starts like a sealed record but its header is not one this build reads.
    Malformed,
}

/// The KEKs of a keystore: the first seals, every one opens.
#[derive(Debug)]
pub struct Sealer {
    keks: Vec<Kek>,
}

impl Sealer {
    /// The sealer of these KEKs; the first seals.
    ///
    /// # Errors
    ///
    /// When `keks` is empty, or lists one KEK twice (the message names it).
    pub fn new(keks: Vec<Kek>) -> Result<Self, String> {
        if keks.is_empty() {
            return Err("no key-encryption key".into());
        }
        for (i, kek) in keks.iter().enumerate() {
            if let Some(j) = keks[..i].iter().position(|k| k.id == kek.id) {
                return Err(format!(
                    "keys[{j}] and keys[{i}] are the same key-encryption key ({}); list each once",
                    kek.id
                ));
            }
        }
        Ok(Self { keks })
    }

    /// The id of the KEK that seals.
    pub fn current(&self) -> &str {
        &self.keks[0].id
    }

    /// The ids of every KEK, the current one first.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.keks.iter().map(|k| k.id.as_str())
    }

    /// What `stored` is.
    pub fn inspect(stored: &[u8]) -> Sealing {
        if !stored.starts_with(FAMILY.as_bytes()) {
            return Sealing::Plain;
        }
        match stored.strip_prefix(PREFIX.as_bytes()).and_then(header_id) {
            Some(id) => Sealing::Sealed(id.to_owned()),
            None => Sealing::Malformed,
        }
    }

    /// The length of `len` bytes once sealed.
    pub fn sealed_len(len: usize) -> usize {
        // The header, then the base64 (with padding) of name tag, nonce, ciphertext
        // and tag.
        PREFIX.len() + ID_HEX + 1 + (NAME_TAG + NONCE + len + TAG).div_ceil(3) * 4
    }

    /// The largest record whose sealed form is at most `max` bytes.
    pub fn max_plain(max: usize) -> usize {
        let body = (max.saturating_sub(PREFIX.len() + ID_HEX + 1)) / 4 * 3;
        body.saturating_sub(NAME_TAG + NONCE + TAG)
    }

    /// Seals `record` for the key `name` under the current KEK.
    pub fn seal(&self, name: &str, record: &[u8]) -> Vec<u8> {
        let kek = &self.keks[0];
        let header = format!("{PREFIX}{}:", kek.id);
        let tag_of_name = name_tag(name);
        let aad = aad(&header, &tag_of_name, name);
        let mut nonce = [0u8; NONCE];
        getrandom::fill(&mut nonce).expect("the operating system's random number generator failed");
        // Encrypted in place: the only copy of the plaintext made here becomes the
        // ciphertext before anything else happens to it.
        let mut body = Vec::with_capacity(NAME_TAG + NONCE + record.len() + TAG);
        body.extend_from_slice(&tag_of_name);
        body.extend_from_slice(&nonce);
        body.extend_from_slice(record);
        let tag = kek
            .cipher
            .encrypt_in_place_detached(Nonce::from_slice(&nonce), &aad, &mut body[NAME_TAG + NONCE..])
            .expect("AES-GCM seals records of up to 64 GiB");
        body.extend_from_slice(&tag);
        let mut out = header;
        STANDARD.encode_string(&body, &mut out);
        out.into_bytes()
    }

    /// Opens `stored`, which must be sealed ([`Sealer::inspect`]), for the key `name`.
    ///
    /// # Errors
    ///
    /// When its KEK is not configured, it was sealed for another name, or it is
    /// corrupt.
    pub fn open(&self, name: &str, stored: &[u8]) -> Result<Record, SealError> {
        if !stored.starts_with(FAMILY.as_bytes()) {
            return Err(SealError::Corrupt("no keyhost-sealed prefix"));
        }
        let rest = stored.strip_prefix(PREFIX.as_bytes()).ok_or(SealError::Corrupt(
            "a version of the sealed format this build does not read",
        ))?;
        let id = header_id(rest).ok_or(SealError::Corrupt("no key-encryption key id after the prefix"))?;
        let kek = self
            .keks
            .iter()
            .find(|k| k.id == id)
            .ok_or_else(|| SealError::UnknownKek(id.to_owned()))?;
        let mut body = Zeroizing::new(
            STANDARD
                .decode(&rest[ID_HEX + 1..])
                .map_err(|_| SealError::Corrupt("the body is not base64"))?,
        );
        if body.len() < NAME_TAG + NONCE + TAG {
            return Err(SealError::Corrupt("the body is too short"));
        }
        let header = format!("{PREFIX}{id}:");
        let tag_at = body.len() - TAG;
        let tag = aes_gcm::Tag::clone_from_slice(&body[tag_at..]);
        let nonce = Nonce::clone_from_slice(&body[NAME_TAG..NAME_TAG + NONCE]);
        let mut stored_tag = [0u8; NAME_TAG];
        stored_tag.copy_from_slice(&body[..NAME_TAG]);
        let names_match = stored_tag == name_tag(name);
        // The stored tag is authenticated with the name asked for: a record whose
        // tag was altered does not open either.
        let aad = aad(&header, &stored_tag, name);
        let mut plain = Zeroizing::new(body[NAME_TAG + NONCE..tag_at].to_vec());
        body.clear();
        match kek.cipher.decrypt_in_place_detached(&nonce, &aad, &mut plain, &tag) {
            Ok(()) => Ok(plain),
            Err(_) if !names_match => Err(SealError::OtherName),
            Err(_) => Err(SealError::Corrupt("it does not authenticate")),
        }
    }
}

fn aad(header: &str, name_tag: &[u8; NAME_TAG], name: &str) -> Vec<u8> {
    [header.as_bytes(), name_tag, name.as_bytes()].concat()
}

/// The KEK id at the start of `rest` (what follows the prefix), when it is 16
/// lowercase hex digits followed by `:`.
fn header_id(rest: &[u8]) -> Option<&str> {
    let id = rest.get(..ID_HEX)?;
    let valid = id.iter().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b)) && rest.get(ID_HEX) == Some(&b':');
    valid.then(|| std::str::from_utf8(id).ok()).flatten()
}

fn name_tag(name: &str) -> [u8; NAME_TAG] {
    let digest = Sha256::digest(name.as_bytes());
    [digest[0], digest[1], digest[2], digest[3]]
}

/// A keystore as the host uses it: with a [`Sealer`], `create` seals and `get`
/// opens sealed records; records that are not sealed pass through either way. Without
/// one, a sealed record is refused with a message saying sealing is off. Everything
/// else goes to `inner` as it is.
pub struct SealedStore {
    inner: Arc<dyn Keystore>,
    sealer: Option<Arc<Sealer>>,
    unsealed: Unsealed,
}

impl fmt::Debug for SealedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedStore")
            .field("inner", &self.inner)
            .field("current", &self.sealer.as_ref().map(|s| s.current()))
            .finish()
    }
}

impl SealedStore {
    /// `inner`, sealed by `sealer` when there is one.
    pub fn new(inner: Arc<dyn Keystore>, sealer: Option<Arc<Sealer>>) -> Self {
        Self {
            inner,
            sealer,
            unsealed: Unsealed::Serve,
        }
    }

    /// What to do with records that are not sealed, when sealing is on.
    #[must_use]
    pub fn with_unsealed(mut self, unsealed: Unsealed) -> Self {
        self.unsealed = unsealed;
        self
    }

    /// The keystore underneath, which holds the records as stored.
    pub fn inner(&self) -> &Arc<dyn Keystore> {
        &self.inner
    }

    /// The KEKs, when sealing is on.
    pub fn sealer(&self) -> Option<&Arc<Sealer>> {
        self.sealer.as_ref()
    }

    /// Opens a record as read from [`SealedStore::inner`] for the key `name`.
    ///
    /// # Errors
    ///
    /// [`Error::Other`] naming the key and the reason, when it is sealed and does not
    /// open (or sealing is off).
    pub fn open(&self, name: &str, stored: Record) -> Result<Record> {
        match (Sealer::inspect(&stored), &self.sealer) {
            (Sealing::Plain, Some(_)) if self.unsealed == Unsealed::Refuse => Err(Error::Other(format!(
                "the record of '{name}' does not open: {}",
                SealError::NotSealed
            ))),
            (Sealing::Plain, _) => Ok(stored),
            (_, Some(sealer)) => sealer
                .open(name, &stored)
                .map_err(|e| Error::Other(format!("the sealed record of '{name}' does not open: {e}"))),
            (Sealing::Sealed(id), None) => Err(Error::Other(format!(
                "the record of '{name}' is sealed under the key-encryption key {id}, but keystore.seal \
                 is not configured; add keystore.seal with that key"
            ))),
            (Sealing::Malformed, None) => Err(Error::Other(format!(
                "the record of '{name}' looks sealed (it starts with keyhost-sealed:) but its header is not one \
                 this build reads, and keystore.seal is not configured"
            ))),
        }
    }
}

#[async_trait]
impl Keystore for SealedStore {
    async fn create(&self, name: &str, value: &[u8]) -> Result<()> {
        let Some(sealer) = &self.sealer else {
            return self.inner.create(name, value).await;
        };
        let sealed_len = Sealer::sealed_len(value.len());
        if sealed_len > MAX_RECORD_LEN {
            return Err(Error::InvalidArgument(format!(
                "a record of {} bytes is {sealed_len} bytes once sealed, more than the {MAX_RECORD_LEN} bytes a keystore takes",
                value.len()
            )));
        }
        self.inner.create(name, &sealer.seal(name, value)).await
    }

    async fn get(&self, name: &str) -> Result<Record> {
        let stored = self.inner.get(name).await?;
        self.open(name, stored)
    }

    async fn delete(&self, name: &str) -> Result<()> {
        self.inner.delete(name).await
    }

    async fn list(&self, prefix: &str, after: Option<&str>, limit: u32) -> Result<Page> {
        self.inner.list(prefix, after, limit).await
    }

    async fn status(&self) -> Result<Status> {
        self.inner.status().await
    }

    fn runtime_stats(&self) -> Option<RuntimeStats> {
        self.inner.runtime_stats()
    }
}

#[cfg(test)]
mod tests;
