//! Where key-encryption keys come from: a key file, an environment variable, or a
//! data key that AWS KMS decrypts for the host at start-up.
//!
//! Every error names the configuration file, the field, and what to do.

use std::path::Path;
use std::time::Duration;

use aws_sdk_kms::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_kms::primitives::Blob;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use keyhost_config::{AwsKmsKek, KekConfig, KekSource, SealConfig};
use zeroize::Zeroizing;

use crate::{KEK_LEN, Kek, Sealer};

/// Reads every KEK of `config` and checks it against its `id`; `file` names the
/// configuration in errors and `env` looks up environment variables.
///
/// # Errors
///
/// A message naming the file, the field and the fix: a key file that is missing,
/// readable by others or malformed; an environment variable that is unset or
/// malformed; a KMS call that fails; a KEK whose id is not the configured one, or
/// that has no id configured.
pub async fn load(
    config: &SealConfig,
    file: &str,
    env: &(dyn Fn(&str) -> Option<String> + Sync),
) -> Result<Sealer, String> {
    let mut keks = Vec::with_capacity(config.keys.len());
    for entry in &config.keys {
        let at = format!("{file}: {}", entry.field);
        let (kek, from) = match &entry.source {
            KekSource::File(path) => (from_file(&at, path)?, path.display().to_string()),
            KekSource::Env(name) => (from_env(&at, name, env)?, format!("${name}")),
            KekSource::AwsKms(kms) => (from_kms(&at, kms, env).await?, "AWS KMS".to_owned()),
        };
        check_id(&at, entry, &kek, &from)?;
        keks.push(kek);
    }
    Sealer::new(keks).map_err(|e| format!("{file}: keystore.seal.{e}"))
}

fn check_id(at: &str, entry: &KekConfig, kek: &Kek, from: &str) -> Result<(), String> {
    match &entry.id {
        Some(id) if id == kek.id() => Ok(()),
        Some(id) => Err(format!(
            "{at}: the key from {from} is not the key-encryption key {id} (its id is {}); \
             point this entry at the key with id {id}, or, for a new key, write `id: {}`",
            kek.id(),
            kek.id()
        )),
        None => Err(format!(
            "{at}.id: missing; the key from {from} has the id {}: add `id: {}` so that a different key \
             in its place is refused at start-up",
            kek.id(),
            kek.id()
        )),
    }
}

const MALFORMED: &str = "the base64 of 32 bytes, as `keyhost seal new` writes";

/// The most a key file may hold: the base64 of 32 bytes is 44 characters.
const MAX_FILE: u64 = 1024;

fn from_file(at: &str, path: &Path) -> Result<Kek, String> {
    // Opened once; every check is of the file opened (fstat), then read from it.
    let text = keyhost_files::read_secret(path, MAX_FILE, "key file").map_err(|e| format!("{at}.file: {e}"))?;
    let shown = path.display();
    std::str::from_utf8(&text)
        .ok()
        .and_then(Kek::from_base64)
        .ok_or_else(|| format!("{at}.file: {shown} does not hold a key-encryption key: expected {MALFORMED}"))
}

fn from_env(at: &str, name: &str, env: &(dyn Fn(&str) -> Option<String> + Sync)) -> Result<Kek, String> {
    let value = Zeroizing::new(
        env(name)
            .ok_or_else(|| format!("{at}.env: the environment variable {name} is not set; set it to {MALFORMED}"))?,
    );
    Kek::from_base64(&value)
        .ok_or_else(|| format!("{at}.env: the environment variable {name} does not hold {MALFORMED}"))
}

/// A KMS client with the credentials of `kms`, or the host's `AWS_*` variables.
///
/// # Errors
///
/// When no credentials are configured or set.
pub fn kms_client(
    at: &str,
    kms: &AwsKmsKek,
    env: &(dyn Fn(&str) -> Option<String> + Sync),
) -> Result<aws_sdk_kms::Client, String> {
    let (access, secret, token) = match (&kms.access_key, &kms.secret_key) {
        (Some(a), Some(s)) => (a.clone(), s.clone(), kms.session_token.clone()),
        (None, None) => match (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
            (Some(a), Some(s)) => (a, s, env("AWS_SESSION_TOKEN")),
            _ => {
                return Err(format!(
                    "{at}.aws_kms: no AWS credentials: set credentials.accesskey and credentials.secretkey, \
                     or the environment variables AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
                ));
            }
        },
        _ => {
            return Err(format!(
                "{at}.aws_kms.credentials: give both accesskey and secretkey, or neither"
            ));
        }
    };
    // Parsed once: the host checked is the host the client calls, since the client
    // is handed the canonical form of the URL that was checked.
    let endpoint = kms.endpoint.as_deref().map(|e| secure_endpoint(e, at)).transpose()?;
    let mut config = aws_sdk_kms::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(kms.region.clone()))
        .credentials_provider(Credentials::new(access, secret, token, None, "keyhost"))
        .timeout_config(
            aws_sdk_kms::config::timeout::TimeoutConfig::builder()
                .operation_attempt_timeout(Duration::from_secs(10))
                .operation_timeout(Duration::from_secs(30))
                .build(),
        );
    if let Some(endpoint) = &endpoint {
        config = config.endpoint_url(endpoint.endpoint());
    }
    Ok(aws_sdk_kms::Client::from_conf(config.build()))
}

/// `endpoint`, when it protects what KMS answers: https, or plain http to this
/// machine's loopback address.
fn secure_endpoint(endpoint: &str, at: &str) -> Result<keyhost_url::HttpUrl, String> {
    let url = keyhost_url::HttpUrl::parse(endpoint).map_err(|e| format!("{at}.aws_kms.endpoint: {e}"))?;
    if url.is_https() || url.is_loopback() {
        return Ok(url);
    }
    Err(format!(
        "{at}.aws_kms.endpoint: {endpoint} is not https; KMS's answer carries the key-encryption key, \
         so only https (or plain http to a loopback address, written as an address) is accepted"
    ))
}

/// The endpoint a KMS client of `kms` calls, for messages.
pub fn kms_endpoint(kms: &AwsKmsKek) -> String {
    kms.endpoint
        .clone()
        .unwrap_or_else(|| format!("https://kms.{}.amazonaws.com", kms.region))
}

/// A KMS error as one line: its code and message, or the failure underneath.
pub fn kms_error<E, R>(error: &aws_sdk_kms::error::SdkError<E, R>) -> String
where
    E: aws_sdk_kms::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    use aws_sdk_kms::error::SdkError;
    match error {
        SdkError::ServiceError(e) => {
            let e = e.err();
            match (e.code(), e.message()) {
                (Some(code), Some(message)) => format!("{code}: {message}"),
                (Some(code), None) => code.to_owned(),
                _ => e.to_string(),
            }
        }
        SdkError::TimeoutError(_) => "no answer in time".to_owned(),
        other => {
            let mut text = other.to_string();
            let mut source = std::error::Error::source(other);
            while let Some(s) = source {
                text.push_str(": ");
                text.push_str(&s.to_string());
                source = s.source();
            }
            text
        }
    }
}

/// Encrypts `plaintext` under the KMS key `kms.key`; `at` names the setting in errors.
///
/// # Errors
///
/// When there are no credentials, or KMS refuses or cannot be reached.
pub async fn kms_encrypt(
    at: &str,
    kms: &AwsKmsKek,
    plaintext: &[u8],
    env: &(dyn Fn(&str) -> Option<String> + Sync),
) -> Result<Vec<u8>, String> {
    let key = kms.key.clone().unwrap_or_default();
    let answer = kms_client(at, kms, env)?
        .encrypt()
        .key_id(&key)
        .plaintext(Blob::new(plaintext.to_vec()))
        .send()
        .await
        .map_err(|e| {
            format!(
                "{at}: KMS cannot encrypt with {key} at {}: {}",
                kms_endpoint(kms),
                kms_error(&e)
            )
        })?;
    Ok(answer.ciphertext_blob.map(Blob::into_inner).unwrap_or_default())
}

async fn from_kms(at: &str, kms: &AwsKmsKek, env: &(dyn Fn(&str) -> Option<String> + Sync)) -> Result<Kek, String> {
    let blob = STANDARD.decode(kms.ciphertext.trim()).map_err(|_| {
        format!("{at}.aws_kms.ciphertext: not base64; paste it as `keyhost seal new --aws-kms-key KEY` prints it")
    })?;
    let client = kms_client(at, kms, env)?;
    let answer = client
        .decrypt()
        .ciphertext_blob(Blob::new(blob))
        .set_key_id(kms.key.clone())
        .send()
        .await
        .map_err(|e| {
            format!(
                "{at}.aws_kms: KMS cannot decrypt the key-encryption key ({}, at {}): {}",
                kms.key.as_deref().unwrap_or("the key the ciphertext names"),
                kms_endpoint(kms),
                kms_error(&e)
            )
        })?;
    let plain = Zeroizing::new(answer.plaintext.map(Blob::into_inner).unwrap_or_default());
    if plain.len() != KEK_LEN {
        return Err(format!(
            "{at}.aws_kms.ciphertext: KMS decrypted it to {} bytes, not the 32 of a key-encryption key; \
             is it the ciphertext `keyhost seal new --aws-kms-key` printed?",
            plain.len()
        ));
    }
    let mut bytes = Zeroizing::new([0u8; KEK_LEN]);
    bytes.copy_from_slice(&plain);
    Ok(Kek::new(&bytes))
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_https_or_loopback_http_reaches_kms() {
        for ok in [
            "https://kms.us-east-1.amazonaws.com",
            "http://127.0.0.1:4566",
            "http://[::1]:4566",
        ] {
            assert!(super::secure_endpoint(ok, "k").is_ok(), "{ok}");
        }
        for bad in [
            "http://kms.example.com",
            "http://10.0.0.1:4566",
            "http://127.0.0.1.example.com",
            "kms.us-east-1.amazonaws.com",
            "ftp://127.0.0.1",
            // A name the resolver may send elsewhere.
            "http://localhost:4566/",
            "http://localhost.:4566/",
            // A loopback address as the user name, the attacker's host as the host.
            "http://[::1]@kms.attacker.example",
            "http://127.0.0.1@kms.attacker.example:4566",
            "http://localhost:4566@kms.attacker.example",
            "http://127.0.0.1\\@kms.attacker.example",
        ] {
            assert!(super::secure_endpoint(bad, "k").is_err(), "{bad}");
        }
    }
}
