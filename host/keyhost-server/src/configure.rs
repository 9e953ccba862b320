//! A server from a configuration file: everything [`State`] and the TLS
//! configuration need, read from a [`Config`] in two steps. [`Configured::new`]
//! checks and loads what the file names (policies, certificates, routes), so a
//! broken file fails before the keystore is opened; [`Configured::finish`] then
//! takes the opened keystore and creates the file's keys.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use keyhost_config::{Config, Schema};
use keyhost_keystore::Keystore;
use keyhost_policy::{Authorizer, Identity, PatternSyntax, Policy};

use crate::audit::AuditWriter;
use crate::{CacheExpiry, Era, Limits, Proxy, RouteOverride, ServerCertificate, State, TlsConfig};

/// KES v0.16's command-line flags, used where the file names nothing.
#[derive(Debug, Clone, Default)]
pub struct Fallbacks {
    /// `--key`: the server's private key.
    pub key: Option<PathBuf>,
    /// `--cert`: the server's certificate.
    pub cert: Option<PathBuf>,
    /// `--root`: the admin identity.
    pub root: Option<String>,
    /// `--auth`: verify client certificates (v0.16 files only; `None`: the
    /// default, on).
    pub auth: Option<bool>,
}

/// A configuration checked and loaded, waiting for its keystore.
#[derive(Debug)]
pub struct Configured {
    file: String,
    tls: TlsConfig,
    authorizer: Authorizer,
    creator: String,
    keys: Vec<String>,
    certificate: Option<ServerCertificate>,
    era: Era,
    cache_expiry: CacheExpiry,
    audit: bool,
    audit_required: bool,
    proxy: Option<Proxy>,
    json_ciphertexts: bool,
    v016_records: bool,
    limits: Limits,
    overrides: std::collections::HashMap<String, RouteOverride>,
}

impl Configured {
    /// Checks `config` (read from `path`) and loads the files it names. Errors
    /// start with the file and name the field.
    pub fn new(config: &Config, path: &Path, flags: &Fallbacks) -> Result<Self, String> {
        let file = path.display().to_string();
        let admin_text = config.admin.clone().or(flags.root.clone());
        if config.schema == Schema::Newest && admin_text.is_none() {
            return Err(format!(
                "{file}: admin.identity: missing; set it to the admin's identity, or to `disabled`"
            ));
        }
        let admin = admin_text.as_deref().and_then(Identity::parse);
        let authorizer = authorizer(config, &file, admin.clone())?;
        let (tls, certificate, client_roots) = tls(config, &file, flags)?;
        let era = match config.schema {
            Schema::V016 => Era::V016,
            Schema::Newest => Era::Newest,
        };
        let limits = &config.connections;
        let defaults = Limits::default();
        let admin_networks = limits
            .admin_networks
            .iter()
            .enumerate()
            .map(|(i, n)| {
                keyhost_config::Network::parse(n)
                    .ok_or_else(|| format!("{file}: connections.admin_networks[{i}]: '{n}' is not ADDR/BITS"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let max_connections = limits.max.unwrap_or(defaults.max_connections);
        // Shares follow a configured maximum unless they are configured too.
        let scaled = Limits::for_max_connections(max_connections);
        let limits = Limits {
            max_connections,
            per_address: limits.per_address.unwrap_or(scaled.per_address),
            per_identity: limits.per_identity.unwrap_or(scaled.per_identity),
            unknown: limits.unknown.unwrap_or(scaled.unknown),
            handshakes: limits.handshakes.unwrap_or(scaled.handshakes),
            handshakes_per_ip: limits.handshakes_per_ip.unwrap_or(defaults.handshakes_per_ip),
            handshakes_per_network: limits.handshakes_per_network.unwrap_or(scaled.handshakes_per_network),
            admin_networks: admin_networks.into(),
            requests_per_identity: limits.requests_per_identity.unwrap_or(defaults.requests_per_identity),
            handshake_timeout: limits.handshake_timeout.unwrap_or(defaults.handshake_timeout),
            header_timeout: limits.header_timeout.unwrap_or(defaults.header_timeout),
            body_timeout: limits.body_timeout.unwrap_or(defaults.body_timeout),
            idle_timeout: limits.idle_timeout.unwrap_or(defaults.idle_timeout),
            ..defaults
        };
        let proxy = if config.tls.proxy_identities.is_empty() {
            None
        } else {
            let header = http::HeaderName::from_bytes(config.tls.proxy_header.as_bytes()).map_err(|_| {
                format!(
                    "{file}: tls.proxy.header.cert: '{}' is not a header name",
                    config.tls.proxy_header
                )
            })?;
            // With client verification on, a forwarded certificate is verified
            // against the same CAs: KES v0.16.1 did so with Go's defaults (a
            // server-auth usage), the newest era as a client certificate.
            let usage = match config.schema {
                Schema::V016 => keyhost_tls::ForwardedUsage::GoDefault,
                Schema::Newest => keyhost_tls::ForwardedUsage::ClientAuth,
            };
            Some(Proxy {
                identities: config
                    .tls
                    .proxy_identities
                    .iter()
                    .filter_map(|i| Identity::parse(i))
                    .collect(),
                header,
                verify: client_roots.map(|roots| keyhost_tls::ForwardedVerifier::new(Arc::new(roots), usage)),
            })
        };
        let served = || crate::ROUTES.iter().filter(move |r| r.served_in(era));
        let mut overrides = std::collections::HashMap::new();
        for (route, o) in &config.api {
            if !served().any(|r| r.path == route) {
                let known: Vec<&str> = served().map(|r| r.path).collect();
                return Err(format!(
                    "{file}: api.{route}: no such route; routes are {}",
                    known.join(", ")
                ));
            }
            overrides.insert(
                route.clone(),
                RouteOverride {
                    skip_auth: o.skip_auth,
                    timeout: o.timeout,
                },
            );
        }
        Ok(Self {
            file,
            tls,
            authorizer,
            creator: admin.as_ref().map(|a| a.as_str().to_owned()).unwrap_or_default(),
            keys: config.keys.clone(),
            certificate,
            era,
            cache_expiry: CacheExpiry {
                any: config.cache.any,
                unused: config.cache.unused,
                offline: config.cache.offline,
                ..CacheExpiry::default()
            },
            audit: config.log.audit,
            audit_required: config.log.audit_required,
            proxy,
            json_ciphertexts: config.compat.json_ciphertexts,
            v016_records: config.compat.v016_records,
            limits,
            overrides,
        })
    }

    /// Whether the configuration asks for an audit log (`log.audit`); then
    /// [`Configured::finish`] needs its writer.
    pub fn wants_audit_log(&self) -> bool {
        self.audit
    }

    /// The server's state over `keystore`, with the file's keys created (those
    /// that exist already are kept), and its TLS configuration.
    pub async fn finish(
        self,
        keystore: Arc<dyn Keystore>,
        audit_log: Option<AuditWriter>,
    ) -> Result<(Arc<TlsConfig>, Arc<State>), String> {
        let mut state = State::new(keystore, self.authorizer);
        state.certificate = self.certificate;
        state.cache_expiry = self.cache_expiry;
        state.observer.audit_required = self.audit_required;
        state.observer.audit_log = audit_log;
        state.proxy = self.proxy;
        if self.json_ciphertexts {
            state.ciphertext_format = keyhost_crypto::CiphertextFormat::Json;
        }
        if self.v016_records {
            state.record_format = keyhost_crypto::RecordFormat::V016;
        }
        state.era = self.era;
        state.limits = self.limits;
        state.overrides = self.overrides;
        for name in &self.keys {
            state
                .create_key_if_missing(name, &self.creator)
                .await
                .map_err(|e| format!("{}: keys: '{name}': {e}", self.file))?;
        }
        Ok((Arc::new(self.tls), Arc::new(state)))
    }
}

/// The admin and the policies of the file.
fn authorizer(config: &Config, file: &str, admin: Option<Identity>) -> Result<Authorizer, String> {
    let syntax = match config.schema {
        Schema::V016 => PatternSyntax::Glob,
        Schema::Newest => PatternSyntax::Prefix,
    };
    let mut authorizer = Authorizer::new(admin);
    for p in &config.policies {
        let policy = Policy::parse(&p.allow, &p.deny, syntax).map_err(|e| format!("{file}: policy.{}: {e}", p.name))?;
        let mut identities = Vec::new();
        for text in &p.identities {
            match Identity::parse(text) {
                Some(id) => identities.push(id),
                None => {
                    tracing::warn!(policy = %p.name, identity = %text, "not an identity (64 hex digits); it can never match")
                }
            }
        }
        authorizer
            .add(&p.name, policy, &identities)
            .map_err(|e| format!("{file}: policy.{}: {e}", p.name))?;
    }
    Ok(authorizer)
}

/// The TLS configuration of the file, the certificate as `/v1/status` shows it, and
/// the CAs that client certificates are verified against (none when they are not).
fn tls(
    config: &Config,
    file: &str,
    flags: &Fallbacks,
) -> Result<(TlsConfig, Option<ServerCertificate>, Option<rustls::RootCertStore>), String> {
    let key = config
        .tls
        .key
        .clone()
        .or(flags.key.clone())
        .ok_or_else(|| format!("{file}: tls.key: missing: the server's private key (PEM)"))?;
    let cert = config
        .tls
        .cert
        .clone()
        .or(flags.cert.clone())
        .ok_or_else(|| format!("{file}: tls.cert: missing: the server's certificate (PEM)"))?;
    let chain = keyhost_tls::load_chain(&cert).map_err(|e| e.to_string())?;
    let certificate = chain.first().and_then(|c| ServerCertificate::of_der(c));
    let private = keyhost_tls::load_key(&key, config.tls.password.as_deref()).map_err(|e| e.to_string())?;
    let require_cert = !config.api.values().any(|o| o.skip_auth);
    // KES v0.16's --auth defaults to on; the newest schema has tls.auth (default off).
    let verify = match config.schema {
        Schema::V016 => config.tls.verify_clients || flags.auth != Some(false),
        Schema::Newest => config.tls.verify_clients,
    };
    if !verify {
        let tls = keyhost_tls::server_config(chain, private, require_cert).map_err(|e| e.to_string())?;
        return Ok((tls, certificate, None));
    }
    let roots = match (&config.tls.ca, config.schema) {
        (Some(ca), _) => keyhost_tls::load_roots(ca).map_err(|e| e.to_string())?,
        // A v0.16 file names no CA: KES v0.16 verified against the system's.
        (None, Schema::V016) => {
            if flags.auth.is_none() {
                tracing::warn!(
                    "--auth defaults to on for a KES v0.16 configuration, as in KES v0.16: client certificates must chain to a CA the system trusts (SSL_CERT_FILE); self-signed ones, as in MinIO's guide, need --auth=off"
                );
            }
            keyhost_tls::system_roots().map_err(|e| format!("{file}: --auth=on: {e}"))?
        }
        (None, Schema::Newest) => {
            return Err(format!(
                "{file}: tls.ca: missing: verifying client certificates (tls.auth: on) needs the CA that signed them"
            ));
        }
    };
    let tls =
        keyhost_tls::server_config_verifying(chain, private, roots.clone(), require_cert).map_err(|e| e.to_string())?;
    Ok((tls, certificate, Some(roots)))
}
