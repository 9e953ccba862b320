//! keyhost's configuration file.
//!
//! One parser reads both KES schemas — the 2021 one of KES v0.16 (`root`, `tls.proxy`,
//! `log`, `keys`, `keystore.*`) and the newest (`version: v1`, `admin.identity`,
//! `tls.{auth,ca,password}`, `api.<route>`, `cache.expiry.offline`) — plus keyhost's
//! `keystore.plugin` block, and the MinIO guide's `keystore.secretsmanager` as an
//! alias of `keystore.aws.secretsmanager`.
//!
//! Every error names the file and either the line (syntax, types, unknown fields) or
//! the field (values), and says what is expected.
//!
//! `${VAR}` in a scalar is replaced by the environment variable when it is the whole
//! value, as in KES. An unset variable is an error in newest-style files and the empty
//! string in v0.16-style files (that era's behaviour).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod duration;
mod network;
mod raw;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use duration::parse_duration;
pub use network::Network;

/// Which KES schema a file follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schema {
    /// KES v0.16 (2021): `root:` names the admin. Policies use glob patterns, errors
    /// use that release's texts.
    V016,
    /// KES 2022 and later (`admin.identity`, optionally `version: v1`): prefix
    /// patterns and the newest texts.
    Newest,
}

/// A configuration error, naming the file and where in it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// Where: a line (`line 12`) or a field (`tls.key`).
    pub at: Option<String>,
    /// What is wrong and what is expected.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.at {
            Some(at) => write!(f, "{}: {at}: {}", self.file.display(), self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

/// TLS settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tls {
    /// The server's private key (PEM).
    pub key: Option<PathBuf>,
    /// The server's certificate chain (PEM).
    pub cert: Option<PathBuf>,
    /// The password of an encrypted private key.
    pub password: Option<String>,
    /// Verify client certificate chains (`tls.auth: on`).
    pub verify_clients: bool,
    /// CA certificates for client verification (file or directory).
    pub ca: Option<PathBuf>,
    /// Identities of TLS-terminating proxies (`tls.proxy.identities`).
    pub proxy_identities: Vec<String>,
    /// The header such proxies put the client certificate in.
    pub proxy_header: String,
}

/// One policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyConfig {
    /// Its name.
    pub name: String,
    /// Allowed path patterns.
    pub allow: Vec<String>,
    /// Denied path patterns.
    pub deny: Vec<String>,
    /// Identities it applies to (as written; invalid ones can never match).
    pub identities: Vec<String>,
}

/// Key cache expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cache {
    /// Forget every cached key this often.
    pub any: Duration,
    /// Forget keys unused for this long.
    pub unused: Duration,
    /// While the keystore is unreachable, keep serving cached keys this long (0: off).
    pub offline: Duration,
}

impl Default for Cache {
    /// KES's intended defaults: any 5m, unused 30s, offline off.
    fn default() -> Self {
        Self {
            any: Duration::from_secs(300),
            unused: Duration::from_secs(30),
            offline: Duration::ZERO,
        }
    }
}

/// Logging switches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Log {
    /// Print errors.
    pub error: bool,
    /// Print an audit event per request.
    pub audit: bool,
    /// `log.audit: required` (keyhost's own): refuse requests while the audit log
    /// cannot be written.
    pub audit_required: bool,
}

/// AWS Secrets Manager settings (`keystore.aws.secretsmanager`).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct AwsSecretsManager {
    /// The Secrets Manager endpoint.
    pub endpoint: String,
    /// The region.
    pub region: String,
    /// The KMS key that encrypts the secrets, if any.
    pub kms_key: Option<String>,
    /// The KMS endpoint (keyhost extension; default derived from the region).
    pub kms_endpoint: Option<String>,
    /// Wrap each record with KMS Encrypt before storing it (keyhost extension).
    pub kms_envelope: bool,
    /// Static credentials, if configured.
    pub access_key: Option<String>,
    /// Static credentials, if configured.
    pub secret_key: Option<String>,
    /// Static credentials, if configured.
    pub session_token: Option<String>,
}

impl fmt::Debug for AwsSecretsManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsSecretsManager")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("kms_key", &self.kms_key)
            .field("kms_endpoint", &self.kms_endpoint)
            .field("kms_envelope", &self.kms_envelope)
            .field("access_key", &self.access_key.as_ref().map(|_| "…"))
            .finish_non_exhaustive()
    }
}

/// A keystore plugin (`keystore.plugin`).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct PluginConfig {
    /// A `.wasm` file, or `builtin:<name>`.
    pub path: String,
    /// Expected SHA-256 of the component.
    pub sha256: Option<String>,
    /// Settings served to the plugin.
    pub config: BTreeMap<String, String>,
    /// Origins it may reach over HTTP.
    pub allow_http: Vec<String>,
    /// The directory it may use.
    pub allow_dir: Option<PathBuf>,
    /// TLS settings of some granted origins (`allow.tls`).
    pub allow_tls: Vec<OriginTlsConfig>,
    /// Memory limit per instance, e.g. `64MiB`.
    pub memory: Option<String>,
    /// Deadline per call.
    pub timeout: Option<Duration>,
    /// Instances.
    pub instances: Option<usize>,
}

impl fmt::Debug for PluginConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PluginConfig")
            .field("path", &self.path)
            .field("sha256", &self.sha256)
            .field("config", &self.config.keys().collect::<Vec<_>>())
            .field("allow_http", &self.allow_http)
            .field("allow_dir", &self.allow_dir)
            .field("allow_tls", &self.allow_tls)
            .finish_non_exhaustive()
    }
}

/// How the host connects to some granted `https` origins of a plugin
/// (`keystore.plugin.allow.tls`): the CA that their certificates chain to, and a
/// client certificate and key that the host presents. The plugin never reads the
/// files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginTlsConfig {
    /// The origins, each also in `allow.http`.
    pub origins: Vec<String>,
    /// A PEM file of CA certificates, trusted for these origins instead of the
    /// public roots.
    pub ca: Option<PathBuf>,
    /// A PEM certificate chain and its PEM private key.
    pub client: Option<(PathBuf, PathBuf)>,
}

/// Where keys are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeystoreConfig {
    /// No keystore configured: in memory (nothing survives a restart).
    Memory,
    /// `keystore.fs.path`: the bundled fs plugin with that directory.
    Fs {
        /// The directory.
        path: PathBuf,
    },
    /// `keystore.aws.secretsmanager` (or the MinIO guide's `keystore.secretsmanager`).
    AwsSecretsManager(AwsSecretsManager),
    /// `keystore.plugin`.
    Plugin(PluginConfig),
}

/// Host-side sealing of keystore records (`keystore.seal`, keyhost's own): every
/// record is sealed under a key-encryption key (KEK) before the keystore receives
/// it. The first KEK seals; every listed KEK opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealConfig {
    /// The KEKs, in file order (`keystore.seal.keys`); never empty.
    pub keys: Vec<KekConfig>,
    /// `keystore.seal.unsealed: refuse`: records that are not sealed are refused
    /// rather than served (the default serves them: KES's, and those written before
    /// sealing was switched on).
    pub refuse_unsealed: bool,
}

/// One key-encryption key of `keystore.seal.keys`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KekConfig {
    /// Where it is in the file, e.g. `keystore.seal.keys[1]`, for error messages.
    pub field: String,
    /// The id the KEK must have (a fingerprint of it); `None` when the file gives
    /// none, which start-up refuses with the id to write.
    pub id: Option<String>,
    /// Where its 32 bytes come from.
    pub source: KekSource,
}

/// Where a key-encryption key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KekSource {
    /// A file holding the base64 of 32 bytes, readable by its owner alone.
    File(PathBuf),
    /// An environment variable holding the base64 of 32 bytes.
    Env(String),
    /// A data key encrypted by AWS KMS, decrypted by the host at start-up.
    AwsKms(AwsKmsKek),
}

/// A KEK kept encrypted under an AWS KMS key (`keystore.seal.keys[i].aws_kms`).
#[derive(Clone, PartialEq, Eq)]
pub struct AwsKmsKek {
    /// The base64 of KMS's ciphertext blob of the KEK.
    pub ciphertext: String,
    /// The KMS key it must have been encrypted under (id, ARN or alias), if given.
    pub key: Option<String>,
    /// The region.
    pub region: String,
    /// The KMS endpoint, when not the region's default.
    pub endpoint: Option<String>,
    /// Static credentials, if configured (else the host's environment).
    pub access_key: Option<String>,
    /// Static credentials, if configured.
    pub secret_key: Option<String>,
    /// Static credentials, if configured.
    pub session_token: Option<String>,
}

impl fmt::Debug for AwsKmsKek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsKmsKek")
            .field("key", &self.key)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("access_key", &self.access_key.as_ref().map(|_| "…"))
            .finish_non_exhaustive()
    }
}

/// Per-route overrides (`api.<route>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ApiOverride {
    /// Serve the route without a client certificate.
    pub skip_auth: bool,
    /// Its deadline.
    pub timeout: Option<Duration>,
}

/// keyhost's own compatibility switches (`compat:`), for fleets where old KES
/// servers must still read what keyhost writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Compat {
    /// Write ciphertexts in KES's JSON framing (readable by KES ≤ v0.19.1) instead of
    /// the raw framing of KES 2024+ (`compat.ciphertext: json`; the default for a
    /// v0.16 file, `raw` for a newest one).
    pub json_ciphertexts: bool,
    /// Store new keys as KES v0.16's `{"bytes"}` records, readable by KES v0.16,
    /// without an HMAC key (`compat.key_format: v0.16`; the default for a v0.16
    /// file, `current` for a newest one).
    pub v016_records: bool,
}

/// Connection limits and timeouts (`connections:`, keyhost's own); `None` leaves
/// the server's default.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnectionLimits {
    /// The most client connections open at once (`connections.max`); the admin
    /// identity has a reserve beyond it.
    pub max: Option<usize>,
    /// The most connections open at once from one IP address
    /// (`connections.per_address`).
    pub per_address: Option<usize>,
    /// The most connections open at once of one identity that has a policy
    /// (`connections.per_identity`).
    pub per_identity: Option<usize>,
    /// The most connections open at once of identities that have no policy, all
    /// together (`connections.unknown`): anyone can make such an identity.
    pub unknown: Option<usize>,
    /// The most TLS handshakes under way at once, from all addresses
    /// (`connections.handshakes`).
    pub handshakes: Option<usize>,
    /// The most TLS handshakes under way at once from one IP address
    /// (`connections.handshakes_per_ip`).
    pub handshakes_per_ip: Option<usize>,
    /// The most TLS handshakes under way at once from one network, a /24 of IPv4
    /// or a /56 of IPv6 (`connections.handshakes_per_network`).
    pub handshakes_per_network: Option<usize>,
    /// Networks (`ADDR/BITS`) whose connections may use the admin's reserve of
    /// handshake slots (`connections.admin_networks`): the admin can then reach a
    /// server whose handshake slots others fill from many networks.
    pub admin_networks: Vec<String>,
    /// The most requests in flight at once of one identity
    /// (`connections.requests_per_identity`).
    pub requests_per_identity: Option<usize>,
    /// How long a TLS handshake may take.
    pub handshake_timeout: Option<Duration>,
    /// How long a request's headers (or an HTTP/2 connection's first request) may
    /// take to arrive.
    pub header_timeout: Option<Duration>,
    /// How long a request's body may take to arrive.
    pub body_timeout: Option<Duration>,
    /// How long a connection may stay open without a request in flight.
    pub idle_timeout: Option<Duration>,
}

/// A parsed configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The file it came from.
    pub file: PathBuf,
    /// Which schema it follows.
    pub schema: Schema,
    /// The listen address, if set.
    pub address: Option<String>,
    /// The admin identity as written (`disabled`, or any non-hex value, disables it);
    /// `None` when the file names none (the `--root` flag of v0.16 may supply it).
    pub admin: Option<String>,
    /// TLS.
    pub tls: Tls,
    /// Policies, in file order.
    pub policies: Vec<PolicyConfig>,
    /// Key cache.
    pub cache: Cache,
    /// Logging.
    pub log: Log,
    /// Keys created at start-up if missing.
    pub keys: Vec<String>,
    /// The keystore.
    pub keystore: KeystoreConfig,
    /// Host-side sealing of its records (`keystore.seal`), if switched on.
    pub seal: Option<SealConfig>,
    /// Per-route overrides, by exact route path.
    pub api: BTreeMap<String, ApiOverride>,
    /// Compatibility switches.
    pub compat: Compat,
    /// Connection limits and timeouts.
    pub connections: ConnectionLimits,
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_owned(),
            at: None,
            message: format!("cannot read the configuration file: {e}"),
        })?;
        Self::parse(path, &text)
    }

    /// Parses and validates configuration text; `file` names it in errors.
    pub fn parse(file: &Path, text: &str) -> Result<Self, ConfigError> {
        raw::parse(file, text, &|name| std::env::var(name).ok())
    }

    /// Like [`Config::parse`], with `${VAR}` values looked up by `env`.
    pub fn parse_with_env(file: &Path, text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        raw::parse(file, text, env)
    }
}
