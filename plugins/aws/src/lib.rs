//! keyhost's AWS keystore plugin: each key record is a secret in AWS Secrets Manager,
//! named after the key, as KES stores them — optionally encrypted by Secrets Manager
//! under a customer KMS key (`kmskey`), and optionally wrapped by KMS before it is
//! stored (`kms_envelope`, a keyhost extension).
//!
//! The plugin uses the official AWS SDK for Rust over `wasi:http`: keyhost does the
//! TLS and lets the plugin reach only the endpoints it was granted.
//!
//! Settings (keyhost derives them from `keystore.aws.secretsmanager`):
//!
//! | setting | meaning |
//! |---|---|
//! | `endpoint` | Secrets Manager URL, e.g. `https://secretsmanager.us-east-1.amazonaws.com` |
//! | `region` | AWS region, e.g. `us-east-1` |
//! | `kmskey` | KMS key (id, ARN or alias) that encrypts the secrets; also checked by `status` |
//! | `kms_endpoint` | KMS URL; default `https://kms.<region>.amazonaws.com` |
//! | `kms_envelope` | `true`: wrap each record with KMS Encrypt before storing it (records ≤ 4 KiB; unreadable by KES) |
//! | `accesskey`, `secretkey`, `token` | static credentials |
//! | `imds_endpoint` | without static credentials: the EC2 instance metadata service (IMDSv2) to get them from |
//! | `timeout_ms` | the whole-call budget, retries included (keyhost sets it below the call deadline) |

#![warn(missing_docs)]

mod imds;

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::Display;
use std::time::{Duration, Instant};

use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_sdk_kms::types::KeyState;
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_secretsmanager::types::{Filter, FilterNameStringType};
use aws_smithy_runtime_api::client::behavior_version::BehaviorVersion;
use aws_smithy_types::Blob;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;
use aws_smithy_wasm::wasi::{WasiHttpClientBuilder, WasiSleep};
use keyhost_plugin_sdk::{Config, Error, Info, Keystore, Page, Setting, Status, export_keystore, page};

/// The largest secret value Secrets Manager stores.
const MAX_SECRET: usize = 65_536;
/// The largest plaintext KMS Encrypt accepts.
const MAX_KMS_PLAINTEXT: usize = 4_096;
/// How long a successful KMS probe is trusted.
const PROBE_TTL: Duration = Duration::from_secs(60);
/// Marks a secret string that holds a KMS-wrapped record.
const ENVELOPE_PREFIX: &str = "keyhost:kms-envelope:v1:";
/// The encryption context entry that binds a wrapped record to its key name.
const CONTEXT_KEY: &str = "keyhost-key";

/// The plugin's state in one instance: two SDK clients, reused across calls.
#[derive(Debug)]
pub struct AwsStore {
    secrets: aws_sdk_secretsmanager::Client,
    kms: Option<Kms>,
    probe: RefCell<Option<(Instant, Result<(), Error>)>>,
}

#[derive(Debug)]
struct Kms {
    client: aws_sdk_kms::Client,
    key: String,
    envelope: bool,
}

fn setting(name: &str, required: bool, secret: bool, description: &str) -> Setting {
    Setting {
        name: name.into(),
        required,
        secret,
        description: description.into(),
    }
}

/// Runs an SDK future to completion inside an exported (synchronous) call.
fn run<F: Future>(future: F) -> F::Output {
    keyhost_plugin_sdk::http::block_on(future)
}

impl Keystore for AwsStore {
    fn info() -> Info {
        Info {
            name: "aws".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            features: vec![format!("record-size=1..{MAX_SECRET}")],
            settings: vec![
                setting(
                    "endpoint",
                    true,
                    false,
                    "the Secrets Manager URL, e.g. https://secretsmanager.us-east-1.amazonaws.com",
                ),
                setting("region", true, false, "the AWS region, e.g. us-east-1"),
                setting(
                    "kmskey",
                    false,
                    false,
                    "the KMS key that encrypts the secrets (id, ARN or alias)",
                ),
                setting(
                    "kms_endpoint",
                    false,
                    false,
                    "the KMS URL (default: https://kms.<region>.amazonaws.com)",
                ),
                setting(
                    "kms_envelope",
                    false,
                    false,
                    "true: wrap each record with KMS Encrypt under kmskey before storing it",
                ),
                setting("accesskey", false, true, "static credentials: the access key id"),
                setting("secretkey", false, true, "static credentials: the secret access key"),
                setting("token", false, true, "static credentials: the session token"),
                setting(
                    "imds_endpoint",
                    false,
                    false,
                    "without static credentials: the instance metadata service URL",
                ),
                setting(
                    "timeout_ms",
                    false,
                    false,
                    "the budget of one call, retries included, in milliseconds",
                ),
            ],
        }
    }

    fn open(config: Config) -> Result<Self, Error> {
        let endpoint = url_setting(&config, "endpoint")?;
        let region = config.required("region")?.to_owned();
        if !region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(Error::InvalidArgument(format!(
                "setting 'region': {region:?} is no AWS region; use one such as us-east-1"
            )));
        }
        let timeout = Duration::from_millis(config.parse_or("timeout_ms", 8_000u64)?);
        let credentials = credentials(&config)?;
        let retry = RetryConfig::standard()
            .with_max_attempts(3)
            .with_initial_backoff(Duration::from_millis(50))
            .with_max_backoff(Duration::from_secs(1));
        let timeouts = TimeoutConfig::builder()
            .operation_timeout(timeout)
            .connect_timeout(Duration::from_secs(3))
            .build();

        let secrets = aws_sdk_secretsmanager::Client::from_conf(
            aws_sdk_secretsmanager::Config::builder()
                .behavior_version(BehaviorVersion::latest())
                .region(aws_sdk_secretsmanager::config::Region::new(region.clone()))
                .endpoint_url(endpoint)
                .credentials_provider(credentials.clone())
                .http_client(WasiHttpClientBuilder::new().build())
                .sleep_impl(aws_smithy_async::rt::sleep::SharedAsyncSleep::new(WasiSleep))
                .retry_config(retry.clone())
                .timeout_config(timeouts.clone())
                .build(),
        );

        let envelope = config.parse_or("kms_envelope", false)?;
        let kms = match plain_setting(&config, "kmskey", "a KMS key id, ARN or alias")? {
            None if envelope => {
                return Err(Error::InvalidArgument(
                    "setting 'kms_envelope' needs 'kmskey', the KMS key that wraps the records".into(),
                ));
            }
            None => None,
            Some(key) => {
                let endpoint = match config.get("kms_endpoint") {
                    Some(_) => url_setting(&config, "kms_endpoint")?,
                    None => format!("https://kms.{region}.amazonaws.com"),
                };
                let client = aws_sdk_kms::Client::from_conf(
                    aws_sdk_kms::Config::builder()
                        .behavior_version(BehaviorVersion::latest())
                        .region(aws_sdk_kms::config::Region::new(region))
                        .endpoint_url(endpoint)
                        .credentials_provider(credentials)
                        .http_client(WasiHttpClientBuilder::new().build())
                        .sleep_impl(aws_smithy_async::rt::sleep::SharedAsyncSleep::new(WasiSleep))
                        .retry_config(retry)
                        .timeout_config(timeouts)
                        .build(),
                );
                Some(Kms {
                    client,
                    key: key.to_owned(),
                    envelope,
                })
            }
        };
        Ok(Self {
            secrets,
            kms,
            probe: RefCell::new(None),
        })
    }

    fn status(&self) -> Result<Status, Error> {
        let start = Instant::now();
        run(async {
            self.secrets
                .list_secrets()
                .max_results(1)
                .send()
                .await
                .map_err(|e| classify(&e))
        })?;
        let mut detail = None;
        if let Some(kms) = &self.kms {
            self.check_kms(kms)?;
            detail = Some(format!("KMS key {} usable", kms.key));
        }
        Ok(Status {
            latency_ms: Some(u32::try_from(start.elapsed().as_millis()).unwrap_or(u32::MAX)),
            detail,
        })
    }

    fn create(&self, name: &str, value: &[u8]) -> Result<(), Error> {
        let request = self.secrets.create_secret().name(name);
        let request = match &self.kms {
            Some(kms) if kms.envelope => {
                if value.is_empty() || value.len() > MAX_KMS_PLAINTEXT {
                    return Err(Error::InvalidArgument(format!(
                        "kms_envelope wraps records of 1 to {MAX_KMS_PLAINTEXT} bytes, not {}",
                        value.len()
                    )));
                }
                let wrapped = run(async {
                    kms.client
                        .encrypt()
                        .key_id(&kms.key)
                        .plaintext(Blob::new(value))
                        .encryption_context(CONTEXT_KEY, name)
                        .send()
                        .await
                        .map_err(|e| classify(&e))
                })?;
                let blob = wrapped
                    .ciphertext_blob()
                    .ok_or_else(|| Error::Other("KMS Encrypt returned no ciphertext".into()))?;
                let text = format!("{ENVELOPE_PREFIX}{}", aws_smithy_types::base64::encode(blob.as_ref()));
                request.kms_key_id(&kms.key).secret_string(text)
            }
            kms => {
                if value.len() > MAX_SECRET {
                    return Err(Error::InvalidArgument(format!(
                        "a record of {} bytes exceeds Secrets Manager's {MAX_SECRET}-byte limit",
                        value.len()
                    )));
                }
                if value.is_empty() {
                    return Err(Error::InvalidArgument(
                        "Secrets Manager cannot store an empty record".into(),
                    ));
                }
                let request = match kms {
                    Some(kms) => request.kms_key_id(&kms.key),
                    None => request,
                };
                // KES stores text records as the secret string; anything else
                // (never written by keyhost's server, but allowed by the contract)
                // goes in the binary field, which reads back byte for byte.
                match std::str::from_utf8(value) {
                    Ok(text) => request.secret_string(text),
                    _ => request.secret_binary(Blob::new(value)),
                }
            }
        };
        run(request.send()).map(|_| ()).map_err(|e| match e.code() {
            Some("ResourceExistsException") => Error::AlreadyExists,
            _ => classify(&e),
        })
    }

    fn get(&self, name: &str) -> Result<Vec<u8>, Error> {
        let out = run(self.secrets.get_secret_value().secret_id(name).send()).map_err(|e| match e.code() {
            Some("ResourceNotFoundException") => Error::NotFound,
            // Secrets Manager could not decrypt the secret with its KMS key.
            Some("DecryptionFailure") => Error::AccessDenied(message(&e)),
            _ => classify(&e),
        })?;
        if let Some(text) = out.secret_string() {
            if let Some(wrapped) = text.strip_prefix(ENVELOPE_PREFIX) {
                return self.unwrap_record(name, wrapped);
            }
            return Ok(text.as_bytes().to_vec());
        }
        Ok(out.secret_binary().map(|b| b.as_ref().to_vec()).unwrap_or_default())
    }

    fn delete(&self, name: &str) -> Result<(), Error> {
        // A forced delete of a missing secret succeeds in Secrets Manager; the
        // contract wants not-found, so look first.
        run(self.secrets.describe_secret().secret_id(name).send()).map_err(|e| match e.code() {
            Some("ResourceNotFoundException") => Error::NotFound,
            _ => classify(&e),
        })?;
        run(self
            .secrets
            .delete_secret()
            .secret_id(name)
            .force_delete_without_recovery(true)
            .send())
        .map(|_| ())
        .map_err(|e| match e.code() {
            Some("ResourceNotFoundException") => Error::NotFound,
            _ => classify(&e),
        })
    }

    fn list(&self, prefix: &str, after: Option<&str>, limit: u32) -> Result<Page, Error> {
        // Secrets Manager neither sorts nor pages by name: collect the names the
        // server-side prefix filter lets through (it ignores case), then page them.
        let mut names = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut request = self
                .secrets
                .list_secrets()
                .max_results(100)
                .set_next_token(token.take());
            if !prefix.is_empty() {
                request = request.filters(Filter::builder().key(FilterNameStringType::Name).values(prefix).build());
            }
            let out = run(request.send()).map_err(|e| classify(&e))?;
            names.extend(out.secret_list().iter().filter_map(|s| s.name().map(str::to_owned)));
            match out.next_token() {
                Some(next) if !next.is_empty() => token = Some(next.to_owned()),
                _ => break,
            }
        }
        Ok(page(names, prefix, after, limit))
    }
}

impl AwsStore {
    /// The key must be enabled and allow Encrypt and Decrypt, or MinIO's first
    /// read of a secret under it would fail. Successful probes are trusted for a
    /// minute.
    fn check_kms(&self, kms: &Kms) -> Result<(), Error> {
        if let Some((at, Ok(()))) = self.probe.borrow().as_ref()
            && at.elapsed() < PROBE_TTL
        {
            return Ok(());
        }
        let result = run(async {
            let described = kms
                .client
                .describe_key()
                .key_id(&kms.key)
                .send()
                .await
                .map_err(|e| classify(&e))?;
            let state = described.key_metadata().and_then(|m| m.key_state());
            if state != Some(&KeyState::Enabled) {
                return Err(Error::Unavailable(format!(
                    "KMS key {} is not enabled (state {})",
                    kms.key,
                    state.map_or("unknown", |s| s.as_str())
                )));
            }
            let probe = b"keyhost status probe";
            let wrapped = kms
                .client
                .encrypt()
                .key_id(&kms.key)
                .plaintext(Blob::new(&probe[..]))
                .send()
                .await
                .map_err(|e| classify(&e))?;
            let blob = wrapped
                .ciphertext_blob()
                .ok_or_else(|| Error::Other("KMS Encrypt returned no ciphertext".into()))?;
            let plain = kms
                .client
                .decrypt()
                .key_id(&kms.key)
                .ciphertext_blob(blob.clone())
                .send()
                .await
                .map_err(|e| classify(&e))?;
            if plain.plaintext().map(|p| p.as_ref()) != Some(&probe[..]) {
                return Err(Error::Other(
                    "KMS Decrypt returned other bytes than were encrypted".into(),
                ));
            }
            Ok(())
        });
        *self.probe.borrow_mut() = Some((Instant::now(), result.clone()));
        result
    }

    fn unwrap_record(&self, name: &str, wrapped: &str) -> Result<Vec<u8>, Error> {
        let Some(kms) = &self.kms else {
            return Err(Error::InvalidArgument(format!(
                "secret '{name}' was wrapped with kms_envelope; set kmskey to read it"
            )));
        };
        let blob = aws_smithy_types::base64::decode(wrapped)
            .map_err(|_| Error::Other(format!("secret '{name}': the KMS envelope is not valid base64")))?;
        let mut context = HashMap::new();
        context.insert(CONTEXT_KEY.to_owned(), name.to_owned());
        let plain = run(kms
            .client
            .decrypt()
            .key_id(&kms.key)
            .ciphertext_blob(Blob::new(blob))
            .set_encryption_context(Some(context))
            .send())
        .map_err(|e| match e.code() {
            Some("InvalidCiphertextException") => Error::AccessDenied(format!(
                "secret '{name}': KMS refused its envelope (wrapped for another name or key)"
            )),
            _ => classify(&e),
        })?;
        Ok(plain.plaintext().map(|p| p.as_ref().to_vec()).unwrap_or_default())
    }
}

/// The value of `key` if it is made of visible ASCII only (no space, no control
/// character): what AWS takes for credentials, key ids and URLs. `what` says what
/// the value is, for the refusal; the value itself is never repeated.
fn plain_setting<'a>(config: &'a Config, key: &str, what: &str) -> Result<Option<&'a str>, Error> {
    match config.get(key) {
        Some(value) if !value.bytes().all(|b| b.is_ascii_graphic()) => Err(Error::InvalidArgument(format!(
            "setting '{key}' holds a space, a control or a non-ASCII character; it must be {what}"
        ))),
        other => Ok(other),
    }
}

/// A URL setting; `host[:port]` without a scheme means https.
fn url_setting(config: &Config, key: &str) -> Result<String, Error> {
    let raw = plain_setting(config, key, "a URL such as https://host:port")?
        .ok_or_else(|| Error::InvalidArgument(format!("missing required setting '{key}'")))?
        .trim_end_matches('/');
    let host = raw.split_once("://").map_or(raw, |(_, rest)| rest);
    if host.is_empty() || host.starts_with(['/', ':']) {
        Err(Error::InvalidArgument(format!("setting '{key}': {raw} names no host")))
    } else if raw.starts_with("https://") || raw.starts_with("http://") {
        Ok(raw.to_owned())
    } else if raw.contains("://") {
        Err(Error::InvalidArgument(format!(
            "setting '{key}': {raw} is neither http:// nor https://"
        )))
    } else {
        Ok(format!("https://{raw}"))
    }
}

fn credentials(config: &Config) -> Result<SharedCredentialsProvider, Error> {
    let access = plain_setting(config, "accesskey", "an AWS access key id")?;
    let secret = plain_setting(config, "secretkey", "an AWS secret access key")?;
    let token = plain_setting(config, "token", "an AWS session token")?;
    match (access, secret) {
        (Some(access), Some(secret)) => Ok(SharedCredentialsProvider::new(Credentials::new(
            access,
            secret,
            token.map(str::to_owned),
            None,
            "keyhost-config",
        ))),
        (Some(_), None) | (None, Some(_)) => Err(Error::InvalidArgument(
            "set both 'accesskey' and 'secretkey', or neither (then credentials come from the instance metadata service)"
                .into(),
        )),
        (None, None) => match config.get("imds_endpoint") {
            Some(_) => Ok(SharedCredentialsProvider::new(imds::Imds::new(url_setting(
                config,
                "imds_endpoint",
            )?))),
            None => Err(Error::InvalidArgument(
                "no credentials: set 'accesskey' and 'secretkey', or 'imds_endpoint' on EC2".into(),
            )),
        },
    }
}

/// The AWS error code or the SDK's description, for messages. Never contains
/// credentials: the SDK does not put them in errors.
fn message<E: ProvideErrorMetadata + std::error::Error + 'static, R: std::fmt::Debug>(e: &SdkError<E, R>) -> String {
    match (e.code(), e.message()) {
        (Some(code), Some(msg)) => format!("{code}: {msg}"),
        (Some(code), None) => code.to_owned(),
        _ => DisplayErrorContext(e).to_string(),
    }
}

/// Whether a transport failure is the host's refusal (wasi:http's
/// `HTTP-request-denied`), however the error's text spells it.
fn denied_by_host(text: &str) -> bool {
    let folded: String = text.chars().filter(char::is_ascii_alphanumeric).collect();
    folded.to_ascii_lowercase().contains("httprequestdenied")
}

/// Maps an SDK error that is not specific to one operation onto the contract.
fn classify<E, R>(e: &SdkError<E, R>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Display + 'static,
    R: std::fmt::Debug,
{
    match e {
        SdkError::DispatchFailure(_) if denied_by_host(&DisplayErrorContext(e).to_string()) => Error::AccessDenied(
            "keyhost denied the request: the AWS endpoint is not granted to this plugin (allow.http)".into(),
        ),
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
            Error::Unavailable(format!("AWS is unreachable: {}", DisplayErrorContext(e)))
        }
        _ => match e.code() {
            Some(
                "ThrottlingException" | "TooManyRequestsException" | "RequestLimitExceeded" | "LimitExceededException",
            ) => Error::Throttled(Some(1000)), // the SDK has retried already: ask for a second
            Some(
                "AccessDeniedException"
                | "UnrecognizedClientException"
                | "InvalidSignatureException"
                | "ExpiredTokenException"
                | "IncompleteSignature"
                | "DisabledException"
                | "KMSInvalidStateException",
            ) => Error::AccessDenied(message(e)),
            Some("InternalServiceError" | "InternalFailure" | "ServiceUnavailable" | "DependencyTimeoutException") => {
                Error::Unavailable(message(e))
            }
            Some("NotFoundException") => Error::Unavailable(format!("the KMS key is missing: {}", message(e))),
            _ => Error::Other(message(e)),
        },
    }
}

export_keystore!(AwsStore);
