//! The key routes: create, import, describe, list, delete, and the cryptography
//! (generate, encrypt, decrypt, bulk decrypt, HMAC).

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use keyhost_crypto::{Algorithm, DecryptError, KeyRecord};
use keyhost_keystore::{Error as StoreError, NameKind};
use serde::{Deserialize, Serialize};
use serde_json::json;
use zeroize::Zeroizing;

use super::names::{checked, glob_matches, listing_prefix, v016_glob};
use super::respond::{empty, ndjson_with_trailers, ok, rfc3339, secret_json};
use super::{Answer, Call};
use crate::State;
use crate::era::Era;
use crate::error::{ApiError, StoreOp};

/// The key a request names, and its body: the name checked by the era's rules,
/// then the body read by `parse`, then the key fetched through the cache — in
/// KES's order, so that each error wins over those after it.
async fn load_key<'a, T>(
    call: &Call<'a>,
    parse: impl FnOnce(&[u8]) -> Result<T, ApiError>,
) -> Result<(&'a str, T, Arc<KeyRecord>), ApiError> {
    let name = checked(NameKind::Key, call.resource, call.state.era)?;
    let body = parse(call.body)?;
    let key = call.state.cache.get(&*call.state.keystore, name).await?;
    Ok((name, body, key))
}

pub(super) async fn create(call: &Call<'_>) -> Answer {
    create_key(call.state, call.resource, call.caller()).await?;
    empty()
}

pub(super) async fn import(call: &Call<'_>) -> Answer {
    let Call {
        state, resource, body, ..
    } = *call;
    let name = checked(NameKind::Key, resource, state.era)?;
    let req: ImportRequest = serde_json::from_slice(body).map_err(|_| ApiError::InvalidImportBody)?;
    let cipher = match state.era {
        Era::V016 => String::new(),
        Era::Newest => req.cipher.clone().unwrap_or_default(),
    };
    let algorithm = match state.era {
        Era::V016 => Algorithm::Aes256,
        // The newest KES names the cipher or refuses the key (406).
        Era::Newest => Algorithm::from_name(&cipher).ok_or_else(|| ApiError::UnsupportedCipher(cipher.clone()))?,
    };
    // KES v0.16 read only `bytes` (and ignored other fields).
    let bytes = if req.key.is_empty() || state.era == Era::V016 {
        &req.bytes
    } else {
        &req.key
    };
    let key: [u8; 32] = bytes[..]
        .try_into()
        .map_err(|_| ApiError::InvalidKeySize(algorithm.name().to_owned()))?;
    let mut record = KeyRecord::generate(algorithm, call.caller(), time::OffsetDateTime::now_utc());
    record.key = keyhost_crypto::SecretKey::new(algorithm, key);
    create_record(state, name, &record).await?;
    empty()
}

pub(super) async fn describe(call: &Call<'_>) -> Answer {
    let (name, (), key) = load_key(call, |_| Ok(())).await?;
    let mut out = json!({
        "name": name,
        "algorithm": key.key.algorithm().name(),
        "created_at": rfc3339(key.created_at),
    });
    if let Some(by) = &key.created_by {
        out["created_by"] = json!(by);
    }
    ok(&out)
}

pub(super) async fn list(call: &Call<'_>) -> Answer {
    if call.accepts.ndjson {
        list_v016(call).await
    } else {
        list_newest(call).await
    }
}

/// KES v0.16: the resource is a glob; one `{"Name":…}` line per key, and the
/// outcome in the trailers `Status` and `Error`. Matching runs on the blocking
/// pool, a page at a time, never on the runtime's threads.
async fn list_v016(call: &Call<'_>) -> Answer {
    let state = call.state;
    let glob = Arc::new(v016_glob(call.resource)?);
    let _turn = LISTINGS.acquire().await.map_err(|_| ApiError::Timeout)?;
    let mut lines = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = state
            .keystore
            .list("", after.as_deref(), 1000)
            .await
            .map_err(ApiError::store(StoreOp::List))?;
        let glob = glob.clone();
        let names = page.names;
        let matched = tokio::task::spawn_blocking(move || {
            names
                .into_iter()
                .filter(|n| glob_matches(&glob, n))
                .map(|name| json!({ "Name": name }).to_string() + "\n")
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|_| ApiError::Timeout)?;
        lines.extend(matched);
        if lines.len() >= MAX_LISTED {
            lines.truncate(MAX_LISTED);
            break;
        }
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    ndjson_with_trailers(lines)
}

/// One answer holds every matching name, up to [`MAX_LISTED`]. A continuation
/// cannot work here: clients (kms-go's iterator, the kes CLI) ask for
/// `/v1/key/list/<continue_at>`, which names a prefix, so the next page would
/// hold only names that extend the continuation.
async fn list_newest(call: &Call<'_>) -> Answer {
    let state = call.state;
    let prefix = listing_prefix(call.resource)?;
    let _turn = LISTINGS.acquire().await.map_err(|_| ApiError::Timeout)?;
    let mut names = Vec::new();
    let mut after: Option<String> = None;
    let continue_at = loop {
        let page = state
            .keystore
            .list(prefix, after.as_deref(), 1000)
            .await
            .map_err(ApiError::store(StoreOp::List))?;
        names.extend(page.names);
        if names.len() > MAX_LISTED {
            break names.drain(MAX_LISTED..).next();
        }
        match page.next {
            Some(next) => after = Some(next),
            None => break None,
        }
    };
    ok(&Names {
        names: &names,
        continue_at: continue_at.as_deref(),
    })
}

pub(super) async fn delete(call: &Call<'_>) -> Answer {
    let state = call.state;
    let name = checked(NameKind::Key, call.resource, state.era)?;
    let result = state.keystore.delete(name).await;
    if matches!(result, Ok(()) | Err(StoreError::NotFound)) {
        state.cache.evict(name);
    }
    match result {
        Ok(()) => empty(),
        Err(StoreError::NotFound) if state.era == Era::V016 => empty(),
        Err(error) => Err(ApiError::store(StoreOp::Delete)(error)),
    }
}

pub(super) async fn generate(call: &Call<'_>) -> Answer {
    let state = call.state;
    let (_, req, key) = load_key(call, |body| crypto_request(body, state.era == Era::V016)).await?;
    let dek = keyhost_crypto::random_key();
    let ciphertext = key.key.seal(&dek[..], &req.context, state.ciphertext_format);
    let plaintext = Zeroizing::new(B64.encode(&dek[..]));
    let ciphertext = B64.encode(ciphertext);
    secret_json(&DataKey {
        ciphertext: &ciphertext,
        plaintext: &plaintext,
    })
}

pub(super) async fn encrypt(call: &Call<'_>) -> Answer {
    let (_, req, key) = load_key(call, |body| crypto_request(body, true)).await?;
    let ciphertext = key.key.seal(&req.plaintext, &req.context, call.state.ciphertext_format);
    ok(&json!({ "ciphertext": B64.encode(ciphertext) }))
}

pub(super) async fn decrypt(call: &Call<'_>) -> Answer {
    let (_, req, key) = load_key(call, |body| crypto_request(body, true)).await?;
    let plaintext = key.key.open(&req.ciphertext, &req.context).map_err(|e| match e {
        // KES v0.16 knew only JSON ciphertexts: anything else that does not open
        // is, to it, not a ciphertext at all.
        DecryptError::NotAuthentic
            if call.state.era == Era::V016
                && serde_json::from_slice::<serde::de::IgnoredAny>(&req.ciphertext).is_err() =>
        {
            ApiError::Decrypt(DecryptError::Malformed)
        }
        e => ApiError::Decrypt(e),
    })?;
    let encoded = Zeroizing::new(B64.encode(&plaintext[..]));
    secret_json(&Plaintext { plaintext: &encoded })
}

pub(super) async fn bulk_decrypt(call: &Call<'_>) -> Answer {
    let (_, requests, key) = load_key(call, |body| {
        let requests: Vec<CryptoRequest> = serde_json::from_slice(body).map_err(|_| ApiError::InvalidBody)?;
        if requests.len() > 1000 {
            return Err(ApiError::TooManyCiphertexts);
        }
        Ok(requests)
    })
    .await?;
    let mut plaintexts = Vec::with_capacity(requests.len());
    for req in &requests {
        let plaintext = key.key.open(&req.ciphertext, &req.context).map_err(ApiError::Decrypt)?;
        plaintexts.push(Zeroizing::new(B64.encode(&plaintext[..])));
    }
    let out: Vec<Plaintext<'_>> = plaintexts.iter().map(|p| Plaintext { plaintext: p }).collect();
    secret_json(&out)
}

pub(super) async fn hmac(call: &Call<'_>) -> Answer {
    let (_, req, key) = load_key(call, |body| crypto_request(body, true)).await?;
    let hmac = key.hmac.as_ref().ok_or(ApiError::NoHmac)?;
    ok(&json!({ "hmac": B64.encode(hmac.sign(&req.message)) }))
}

/// `{"plaintext"}`: a decrypted plaintext, base64.
#[derive(Serialize)]
struct Plaintext<'a> {
    plaintext: &'a str,
}

/// A new data key (fields in the order keyhost has always written them).
#[derive(Serialize)]
struct DataKey<'a> {
    ciphertext: &'a str,
    plaintext: &'a str,
}

/// The most names one key listing returns. Beyond it, `continue_at` names the next
/// one (as KES does after a page); clients can then only go on with a narrower
/// prefix.
const MAX_LISTED: usize = 100_000;

/// Key listings built at once. A listing holds up to [`MAX_LISTED`] names (a few
/// MB) and makes up to a hundred keystore calls; more listings wait their turn.
static LISTINGS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(4);

/// A newest-era key listing.
#[derive(Serialize)]
struct Names<'a> {
    names: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    continue_at: Option<&'a str>,
}

/// A base64 `[]byte` field: absent or `null` is empty. The field may hold a
/// plaintext or a key: the text is read where it lies in the request buffer (or,
/// when it had JSON escapes, from a copy that is wiped), and decoded into a wiped
/// buffer.
mod b64_field {
    use super::*;
    use serde::Deserializer;
    use serde::de::{Error, Visitor};

    struct Base64;

    impl<'de> Visitor<'de> for Base64 {
        type Value = Zeroizing<Vec<u8>>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("base64 text or null")
        }

        fn visit_str<E: Error>(self, text: &str) -> Result<Self::Value, E> {
            B64.decode(text.as_bytes()).map(Zeroizing::new).map_err(E::custom)
        }

        fn visit_string<E: Error>(self, text: String) -> Result<Self::Value, E> {
            let text = Zeroizing::new(text);
            self.visit_str(&text)
        }

        fn visit_none<E: Error>(self) -> Result<Self::Value, E> {
            Ok(Zeroizing::new(Vec::new()))
        }

        fn visit_unit<E: Error>(self) -> Result<Self::Value, E> {
            Ok(Zeroizing::new(Vec::new()))
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_str(self)
        }
    }

    pub(super) fn de<'de, D: Deserializer<'de>>(d: D) -> Result<Zeroizing<Vec<u8>>, D::Error> {
        d.deserialize_option(Base64)
    }
}

#[derive(Deserialize, Default)]
struct CryptoRequest {
    #[serde(default, deserialize_with = "b64_field::de")]
    context: Zeroizing<Vec<u8>>,
    #[serde(default, deserialize_with = "b64_field::de")]
    plaintext: Zeroizing<Vec<u8>>,
    #[serde(default, deserialize_with = "b64_field::de")]
    ciphertext: Zeroizing<Vec<u8>>,
    #[serde(default, deserialize_with = "b64_field::de")]
    message: Zeroizing<Vec<u8>>,
}

fn crypto_request(body: &[u8], required: bool) -> Result<CryptoRequest, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) && !required {
        return Ok(CryptoRequest::default());
    }
    serde_json::from_slice(body).map_err(|_| ApiError::InvalidBody)
}

#[derive(Deserialize)]
struct ImportRequest {
    #[serde(default, deserialize_with = "b64_field::de")]
    key: Zeroizing<Vec<u8>>,
    #[serde(default, deserialize_with = "b64_field::de")]
    bytes: Zeroizing<Vec<u8>>,
    #[serde(default)]
    cipher: Option<String>,
}

/// Creates a new key called `name` on behalf of `creator`.
pub(crate) async fn create_key(state: &State, name: &str, creator: &str) -> Result<(), ApiError> {
    let name = checked(NameKind::Key, name, state.era)?;
    let record = KeyRecord::generate(Algorithm::preferred(), creator, time::OffsetDateTime::now_utc());
    create_record(state, name, &record).await
}

async fn create_record(state: &State, name: &str, record: &KeyRecord) -> Result<(), ApiError> {
    let encoded = record.encode(state.record_format).map_err(|_| ApiError::MalformedKey)?;
    state
        .keystore
        .create(name, &encoded)
        .await
        .map_err(ApiError::store(StoreOp::Create))
}
