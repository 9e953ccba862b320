//! The file as written (the union of both KES schemas), and its validation.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use keyhost_keystore::names::is_v016_name;
use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::{
    ApiOverride, AwsKmsKek, AwsSecretsManager, Cache, Compat, Config, ConfigError, ConnectionLimits, KekConfig,
    KekSource, KeystoreConfig, Log, OriginTlsConfig, PluginConfig, PolicyConfig, Schema, SealConfig, Tls,
    parse_duration,
};

/// A scalar as written: strings, numbers and booleans all read as text, so that
/// `${VAR}` works in every field.
#[derive(Debug, Clone, Default)]
struct Val(String);

impl<'de> Deserialize<'de> for Val {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Val;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a single value (text, number or boolean), not a list or a map")
            }
            fn visit_str<E>(self, v: &str) -> Result<Val, E> {
                Ok(Val(v.to_owned()))
            }
            fn visit_bool<E>(self, v: bool) -> Result<Val, E> {
                Ok(Val(if v { "on" } else { "off" }.to_owned()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Val, E> {
                Ok(Val(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Val, E> {
                Ok(Val(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Val, E> {
                Ok(Val(v.to_string()))
            }
            fn visit_unit<E>(self) -> Result<Val, E> {
                Ok(Val(String::new()))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    version: Option<Val>,
    address: Option<Val>,
    root: Option<Val>,
    admin: Option<RawAdmin>,
    tls: Option<RawTls>,
    policy: Option<BTreeMap<String, RawPolicy>>,
    cache: Option<RawCache>,
    log: Option<RawLog>,
    keys: Option<Vec<RawKey>>,
    keystore: Option<RawKeystore>,
    api: Option<BTreeMap<String, RawApi>>,
    compat: Option<RawCompat>,
    connections: Option<RawConnectionLimits>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConnectionLimits {
    max: Option<Val>,
    per_address: Option<Val>,
    per_identity: Option<Val>,
    unknown: Option<Val>,
    handshakes: Option<Val>,
    handshakes_per_ip: Option<Val>,
    handshakes_per_network: Option<Val>,
    admin_networks: Option<Vec<Val>>,
    requests_per_identity: Option<Val>,
    handshake_timeout: Option<Val>,
    header_timeout: Option<Val>,
    body_timeout: Option<Val>,
    idle_timeout: Option<Val>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCompat {
    ciphertext: Option<Val>,
    key_format: Option<Val>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    identity: Option<Val>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTls {
    key: Option<Val>,
    cert: Option<Val>,
    password: Option<Val>,
    auth: Option<Val>,
    ca: Option<Val>,
    proxy: Option<RawProxy>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawProxy {
    identities: Option<Vec<Val>>,
    header: Option<RawProxyHeader>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawProxyHeader {
    cert: Option<Val>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    allow: Option<Vec<String>>,
    deny: Option<Vec<String>>,
    /// Before KES v0.14 `allow` was called `paths`.
    paths: Option<Vec<String>>,
    identities: Option<Vec<Val>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCache {
    expiry: Option<RawExpiry>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawExpiry {
    any: Option<Val>,
    unused: Option<Val>,
    offline: Option<Val>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLog {
    error: Option<Val>,
    audit: Option<Val>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    name: Val,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawApi {
    skip_auth: Option<Val>,
    timeout: Option<Val>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawKeystore {
    fs: Option<RawFs>,
    plugin: Option<RawPlugin>,
    aws: Option<RawAws>,
    /// The MinIO guide's spelling of `aws.secretsmanager`.
    secretsmanager: Option<RawSecretsManager>,
    /// keyhost's own: host-side sealing of the records.
    seal: Option<RawSeal>,
    vault: Option<IgnoredAny>,
    fortanix: Option<IgnoredAny>,
    gemalto: Option<IgnoredAny>,
    gcp: Option<IgnoredAny>,
    azure: Option<IgnoredAny>,
    entrust: Option<IgnoredAny>,
    generic: Option<IgnoredAny>,
    kes: Option<IgnoredAny>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSeal {
    keys: Option<Vec<RawKek>>,
    unsealed: Option<Val>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawKek {
    id: Option<Val>,
    file: Option<Val>,
    env: Option<Val>,
    aws_kms: Option<RawKmsKek>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawKmsKek {
    ciphertext: Option<Val>,
    key: Option<Val>,
    region: Option<Val>,
    endpoint: Option<Val>,
    credentials: Option<RawAwsCredentials>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawFs {
    path: Option<Val>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAws {
    secretsmanager: Option<RawSecretsManager>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSecretsManager {
    endpoint: Option<Val>,
    region: Option<Val>,
    kmskey: Option<Val>,
    kms_endpoint: Option<Val>,
    kms_envelope: Option<Val>,
    credentials: Option<RawAwsCredentials>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAwsCredentials {
    accesskey: Option<Val>,
    secretkey: Option<Val>,
    token: Option<Val>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPlugin {
    path: Option<Val>,
    sha256: Option<Val>,
    config: Option<BTreeMap<String, Val>>,
    allow: Option<RawAllow>,
    limits: Option<RawLimits>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAllow {
    http: Option<Vec<Val>>,
    dir: Option<Val>,
    tls: Option<Vec<RawOriginTls>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawOriginTls {
    origins: Option<Vec<Val>>,
    ca: Option<Val>,
    cert: Option<Val>,
    key: Option<Val>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    memory: Option<Val>,
    timeout: Option<Val>,
    instances: Option<Val>,
}

/// `keystore.plugin.allow.tls`: for some granted origins, a CA to trust and a client
/// certificate for the host to present.
fn origin_tls(ctx: &Ctx<'_>, entries: Vec<RawOriginTls>) -> Result<Vec<OriginTlsConfig>, ConfigError> {
    let mut out = Vec::new();
    for (i, entry) in entries.into_iter().enumerate() {
        let at = |field: &str| format!("keystore.plugin.allow.tls[{i}].{field}");
        let origins = ctx.list(&at("origins"), &entry.origins)?;
        if origins.is_empty() {
            return Err(ctx.err(
                &at("origins"),
                "missing: the granted https origins these settings are for, e.g. [https://etcd-1:2379]",
            ));
        }
        let ca = ctx.opt(&at("ca"), &entry.ca)?.map(PathBuf::from);
        let cert = ctx.opt(&at("cert"), &entry.cert)?.map(PathBuf::from);
        let key = ctx.opt(&at("key"), &entry.key)?.map(PathBuf::from);
        let client = match (cert, key) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some((cert, key)),
            (Some(_), None) => return Err(ctx.err(&at("key"), "missing: `cert` needs the file of its private key")),
            (None, Some(_)) => return Err(ctx.err(&at("cert"), "missing: `key` needs the file of its certificate")),
        };
        if ca.is_none() && client.is_none() {
            return Err(ctx.err(&at("ca"), "missing: name a `ca`, a `cert` and `key`, or both"));
        }
        out.push(OriginTlsConfig { origins, ca, client });
    }
    Ok(out)
}

/// Values after `${VAR}` expansion, with errors that name the field.
struct Ctx<'a> {
    file: &'a Path,
    schema: Schema,
    env: &'a dyn Fn(&str) -> Option<String>,
}

impl Ctx<'_> {
    fn err(&self, field: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.to_owned(),
            at: Some(field.to_owned()),
            message: message.into(),
        }
    }

    fn text(&self, field: &str, v: &Val) -> Result<String, ConfigError> {
        let trimmed = v.0.trim();
        let Some(name) = trimmed.strip_prefix("${").and_then(|r| r.strip_suffix('}')) else {
            return Ok(v.0.clone());
        };
        let name = name.trim();
        match (self.env)(name) {
            Some(value) => Ok(value),
            None if self.schema == Schema::V016 => Ok(String::new()),
            None => Err(self.err(
                field,
                format!("references the environment variable '{name}', which is not set; set it or write the value"),
            )),
        }
    }

    fn opt(&self, field: &str, v: &Option<Val>) -> Result<Option<String>, ConfigError> {
        match v {
            None => Ok(None),
            Some(v) => Ok(Some(self.text(field, v)?).filter(|s| !s.trim().is_empty())),
        }
    }

    fn list(&self, field: &str, v: &Option<Vec<Val>>) -> Result<Vec<String>, ConfigError> {
        v.iter()
            .flatten()
            .map(|v| self.text(field, v))
            .filter(|r| r.as_ref().map_or(true, |s| !s.trim().is_empty()))
            .collect()
    }

    fn switch(&self, field: &str, v: &Option<Val>, default: bool) -> Result<bool, ConfigError> {
        match self.opt(field, v)?.as_deref().map(str::trim) {
            None => Ok(default),
            Some("on" | "true") => Ok(true),
            Some("off" | "false") => Ok(false),
            // The newest schema also takes log levels; any level means "on". Nothing
            // else does: a misspelt `required` must not turn into plain `on`.
            Some(level)
                if self.schema == Schema::Newest
                    && field.starts_with("log.")
                    && ["debug", "info", "warn", "warning", "error"]
                        .iter()
                        .any(|l| level.eq_ignore_ascii_case(l)) =>
            {
                Ok(true)
            }
            Some(other) if field == "log.audit" => {
                Err(self.err(field, format!("'{other}' is not on, off or required")))
            }
            Some(other) => Err(self.err(field, format!("'{other}' is not on or off"))),
        }
    }

    fn duration(&self, field: &str, v: &Option<Val>) -> Result<Option<std::time::Duration>, ConfigError> {
        self.opt(field, v)?
            .map(|s| parse_duration(&s).map_err(|e| self.err(field, e)))
            .transpose()
    }
}

pub(crate) fn parse(file: &Path, text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
    let raw: RawConfig = if text.trim().is_empty() {
        RawConfig::default()
    } else {
        serde_saphyr::from_str(text).map_err(|e| {
            let message = e.to_string();
            ConfigError {
                file: file.to_owned(),
                at: None,
                message: hint_for(&message).map_or(message.clone(), |hint| format!("{message}\nhint: {hint}")),
            }
        })?
    };
    let schema = if raw.root.is_some() {
        Schema::V016
    } else {
        Schema::Newest
    };
    let ctx = Ctx { file, schema, env };

    if let Some(version) = ctx.opt("version", &raw.version)?
        && version != "v1"
    {
        return Err(ctx.err(
            "version",
            format!("'{version}' is not supported; the only version is v1"),
        ));
    }
    if raw.root.is_some() && raw.admin.is_some() {
        return Err(ctx.err(
            "root",
            "both `root` (KES v0.16) and `admin.identity` (newer KES) are set; keep one",
        ));
    }
    let admin = match (&raw.root, &raw.admin) {
        (Some(root), _) => ctx.opt("root", &Some(root.clone()))?,
        (None, Some(admin)) => ctx.opt("admin.identity", &admin.identity)?,
        (None, None) => None,
    };

    let raw_tls = raw.tls.unwrap_or_default();
    let proxy = raw_tls.proxy.unwrap_or_default();
    let tls = Tls {
        key: ctx.opt("tls.key", &raw_tls.key)?.map(PathBuf::from),
        cert: ctx.opt("tls.cert", &raw_tls.cert)?.map(PathBuf::from),
        password: ctx.opt("tls.password", &raw_tls.password)?,
        verify_clients: ctx.switch("tls.auth", &raw_tls.auth, false)?,
        ca: ctx.opt("tls.ca", &raw_tls.ca)?.map(PathBuf::from),
        proxy_identities: ctx.list("tls.proxy.identities", &proxy.identities)?,
        proxy_header: ctx
            .opt("tls.proxy.header.cert", &proxy.header.unwrap_or_default().cert)?
            .unwrap_or_else(|| "X-Tls-Client-Cert".to_owned()),
    };

    let mut policies = Vec::new();
    let mut assigned: BTreeMap<String, String> = BTreeMap::new();
    for (name, p) in raw.policy.unwrap_or_default() {
        let field = format!("policy.{name}");
        if !is_v016_name(&name) {
            return Err(ctx.err(
                &field,
                "a policy name is 1 to 80 characters of 0-9 A-Z a-z _ - . that neither starts with - or . nor ends with -",
            ));
        }
        if p.allow.is_some() && p.paths.is_some() {
            return Err(ctx.err(&field, "`paths` is the old name of `allow`; keep only `allow`"));
        }
        let identities = ctx.list(&format!("{field}.identities"), &p.identities)?;
        for identity in &identities {
            let id = identity.trim().to_ascii_lowercase();
            if admin.as_deref().map(|a| a.trim().to_ascii_lowercase()) == Some(id.clone()) {
                return Err(ctx.err(
                    &format!("{field}.identities"),
                    format!("'{identity}' is the admin identity, which needs no policy"),
                ));
            }
            if let Some(other) = assigned.insert(id, name.clone()) {
                return Err(ctx.err(
                    &format!("{field}.identities"),
                    format!("cannot assign policy '{name}' to '{identity}': identity already has a policy ('{other}')"),
                ));
            }
        }
        policies.push(PolicyConfig {
            name,
            allow: p.allow.or(p.paths).unwrap_or_default(),
            deny: p.deny.unwrap_or_default(),
            identities,
        });
    }

    let expiry = raw.cache.unwrap_or_default().expiry.unwrap_or_default();
    let defaults = Cache::default();
    let cache = Cache {
        any: ctx.duration("cache.expiry.any", &expiry.any)?.unwrap_or(defaults.any),
        unused: ctx
            .duration("cache.expiry.unused", &expiry.unused)?
            .unwrap_or(defaults.unused),
        offline: ctx
            .duration("cache.expiry.offline", &expiry.offline)?
            .unwrap_or(defaults.offline),
    };

    let raw_log = raw.log.unwrap_or_default();
    // keyhost's own `required`: audit, and refuse requests while the log cannot be
    // written.
    let audit_required = ctx
        .opt("log.audit", &raw_log.audit)?
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("required"));
    let log = Log {
        error: ctx.switch("log.error", &raw_log.error, true)?,
        audit: audit_required || ctx.switch("log.audit", &raw_log.audit, false)?,
        audit_required,
    };

    let mut keys: Vec<String> = Vec::new();
    for (i, key) in raw.keys.unwrap_or_default().iter().enumerate() {
        let field = format!("keys[{i}].name");
        let name = ctx.text(&field, &key.name)?;
        if !is_v016_name(&name) {
            return Err(ctx.err(&field, format!("'{name}' is not a valid key name")));
        }
        if keys.contains(&name) {
            return Err(ctx.err(&field, format!("key '{name}' is listed twice")));
        }
        keys.push(name);
    }

    let mut raw_keystore = raw.keystore.unwrap_or_default();
    let seal = raw_keystore.seal.take().map(|s| seal(&ctx, s)).transpose()?;
    let keystore = keystore(&ctx, raw_keystore)?;
    if seal.is_some() && keystore == KeystoreConfig::Memory {
        return Err(ctx.err(
            "keystore.seal",
            "sealing needs a keystore to seal for; name one (keystore.fs, keystore.aws or keystore.plugin)",
        ));
    }

    let mut api = BTreeMap::new();
    for (route, o) in raw.api.unwrap_or_default() {
        let field = format!("api.{route}");
        if !route.starts_with('/') {
            return Err(ctx.err(
                &field,
                "an API route starts with /, e.g. /v1/status or /v1/key/decrypt/",
            ));
        }
        api.insert(
            route,
            ApiOverride {
                skip_auth: ctx.switch(&format!("{field}.skip_auth"), &o.skip_auth, false)?,
                timeout: ctx.duration(&format!("{field}.timeout"), &o.timeout)?,
            },
        );
    }

    let raw_compat = raw.compat.unwrap_or_default();
    let compat = Compat {
        json_ciphertexts: match ctx.opt("compat.ciphertext", &raw_compat.ciphertext)?.as_deref() {
            // A v0.16 file keeps v0.16's formats unless told otherwise, so that the
            // fleet can go back to KES v0.16.1 with every key and ciphertext.
            None => schema == Schema::V016,
            Some("raw") => false,
            Some("json") => true,
            Some(other) => return Err(ctx.err("compat.ciphertext", format!("'{other}' is not raw or json"))),
        },
        v016_records: match ctx.opt("compat.key_format", &raw_compat.key_format)?.as_deref() {
            None => schema == Schema::V016,
            Some("current") => false,
            Some("v0.16") => true,
            Some(other) => return Err(ctx.err("compat.key_format", format!("'{other}' is not current or v0.16"))),
        },
    };

    let raw_limits = raw.connections.unwrap_or_default();
    let count = |field: &str, v: &Option<Val>| -> Result<Option<usize>, ConfigError> {
        match ctx.opt(field, v)? {
            None => Ok(None),
            Some(n) => match n.parse::<usize>() {
                Ok(n) if n > 0 => Ok(Some(n)),
                _ => Err(ctx.err(field, format!("'{n}' is not a positive number of connections"))),
            },
        }
    };
    let max = count("connections.max", &raw_limits.max)?;
    let handshakes_per_ip = count("connections.handshakes_per_ip", &raw_limits.handshakes_per_ip)?;
    let timeout = |field: &str, v: &Option<Val>| -> Result<Option<std::time::Duration>, ConfigError> {
        match ctx.duration(field, v)? {
            Some(d) if d.is_zero() => {
                Err(ctx.err(field, "a timeout of 0 would never let a client finish; give e.g. 10s"))
            }
            d => Ok(d),
        }
    };
    let admin_networks = ctx.list("connections.admin_networks", &raw_limits.admin_networks)?;
    for (i, net) in admin_networks.iter().enumerate() {
        if crate::Network::parse(net).is_none() {
            return Err(ctx.err(
                &format!("connections.admin_networks[{i}]"),
                format!("'{net}' is not a network; write ADDR/BITS, e.g. 10.0.0.0/24 or fd00::/64"),
            ));
        }
    }
    let limits = ConnectionLimits {
        max,
        per_address: count("connections.per_address", &raw_limits.per_address)?,
        per_identity: count("connections.per_identity", &raw_limits.per_identity)?,
        unknown: count("connections.unknown", &raw_limits.unknown)?,
        handshakes: count("connections.handshakes", &raw_limits.handshakes)?,
        handshakes_per_ip,
        handshakes_per_network: count("connections.handshakes_per_network", &raw_limits.handshakes_per_network)?,
        admin_networks,
        requests_per_identity: count("connections.requests_per_identity", &raw_limits.requests_per_identity)?,
        handshake_timeout: timeout("connections.handshake_timeout", &raw_limits.handshake_timeout)?,
        header_timeout: timeout("connections.header_timeout", &raw_limits.header_timeout)?,
        body_timeout: timeout("connections.body_timeout", &raw_limits.body_timeout)?,
        idle_timeout: timeout("connections.idle_timeout", &raw_limits.idle_timeout)?,
    };

    Ok(Config {
        file: file.to_owned(),
        schema,
        address: ctx.opt("address", &raw.address)?,
        admin,
        tls,
        policies,
        cache,
        log,
        keys,
        keystore,
        seal,
        api,
        compat,
        connections: limits,
    })
}

fn keystore(ctx: &Ctx<'_>, raw: RawKeystore) -> Result<KeystoreConfig, ConfigError> {
    for (name, present) in [
        ("vault", raw.vault.is_some()),
        ("fortanix", raw.fortanix.is_some()),
        ("gemalto", raw.gemalto.is_some()),
        ("gcp", raw.gcp.is_some()),
        ("azure", raw.azure.is_some()),
        ("entrust", raw.entrust.is_some()),
        ("generic", raw.generic.is_some()),
        ("kes", raw.kes.is_some()),
    ] {
        if present {
            return Err(ctx.err(
                &format!("keystore.{name}"),
                "this keystore has no keyhost plugin yet; use keystore.fs, keystore.aws.secretsmanager or keystore.plugin",
            ));
        }
    }
    let aws = match (raw.aws.and_then(|a| a.secretsmanager), raw.secretsmanager) {
        (Some(_), Some(_)) => {
            return Err(ctx.err(
                "keystore.secretsmanager",
                "both keystore.aws.secretsmanager and keystore.secretsmanager are set; keep keystore.aws.secretsmanager",
            ));
        }
        (Some(sm), None) => Some(("keystore.aws.secretsmanager", sm)),
        (None, Some(sm)) => Some(("keystore.secretsmanager", sm)),
        (None, None) => None,
    };
    let configured = [raw.fs.is_some(), raw.plugin.is_some(), aws.is_some()]
        .iter()
        .filter(|b| **b)
        .count();
    if configured > 1 {
        return Err(ctx.err("keystore", "more than one keystore is configured; keep exactly one"));
    }
    if let Some(fs) = raw.fs {
        let path = ctx
            .opt("keystore.fs.path", &fs.path)?
            .ok_or_else(|| ctx.err("keystore.fs.path", "missing: the directory that holds the keys"))?;
        return Ok(KeystoreConfig::Fs { path: path.into() });
    }
    if let Some((field, sm)) = aws {
        let endpoint = ctx.opt(&format!("{field}.endpoint"), &sm.endpoint)?.ok_or_else(|| {
            ctx.err(
                &format!("{field}.endpoint"),
                "missing, e.g. secretsmanager.us-east-1.amazonaws.com",
            )
        })?;
        let region = ctx
            .opt(&format!("{field}.region"), &sm.region)?
            .ok_or_else(|| ctx.err(&format!("{field}.region"), "missing, e.g. us-east-1"))?;
        let creds = sm.credentials.unwrap_or_default();
        return Ok(KeystoreConfig::AwsSecretsManager(AwsSecretsManager {
            endpoint,
            region,
            kms_key: ctx.opt(&format!("{field}.kmskey"), &sm.kmskey)?,
            kms_endpoint: ctx.opt(&format!("{field}.kms_endpoint"), &sm.kms_endpoint)?,
            kms_envelope: ctx.switch(&format!("{field}.kms_envelope"), &sm.kms_envelope, false)?,
            access_key: ctx.opt(&format!("{field}.credentials.accesskey"), &creds.accesskey)?,
            secret_key: ctx.opt(&format!("{field}.credentials.secretkey"), &creds.secretkey)?,
            session_token: ctx.opt(&format!("{field}.credentials.token"), &creds.token)?,
        }));
    }
    if let Some(p) = raw.plugin {
        let path = ctx
            .opt("keystore.plugin.path", &p.path)?
            .ok_or_else(|| ctx.err("keystore.plugin.path", "missing: a .wasm file or builtin:<name>"))?;
        let mut config = BTreeMap::new();
        for (key, value) in p.config.unwrap_or_default() {
            let v = ctx.text(&format!("keystore.plugin.config.{key}"), &value)?;
            config.insert(key, v);
        }
        let allow = p.allow.unwrap_or_default();
        let limits = p.limits.unwrap_or_default();
        let instances = match ctx.opt("keystore.plugin.limits.instances", &limits.instances)? {
            None => None,
            Some(n) => Some(n.trim().parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| {
                ctx.err(
                    "keystore.plugin.limits.instances",
                    format!("'{n}' is not a positive number"),
                )
            })?),
        };
        return Ok(KeystoreConfig::Plugin(PluginConfig {
            path,
            sha256: ctx.opt("keystore.plugin.sha256", &p.sha256)?,
            config,
            allow_http: ctx.list("keystore.plugin.allow.http", &allow.http)?,
            allow_dir: ctx.opt("keystore.plugin.allow.dir", &allow.dir)?.map(PathBuf::from),
            allow_tls: origin_tls(ctx, allow.tls.unwrap_or_default())?,
            memory: ctx.opt("keystore.plugin.limits.memory", &limits.memory)?,
            timeout: ctx.duration("keystore.plugin.limits.timeout", &limits.timeout)?,
            instances,
        }));
    }
    Ok(KeystoreConfig::Memory)
}

/// `keystore.seal`: the KEKs, each from exactly one source.
fn seal(ctx: &Ctx<'_>, raw: RawSeal) -> Result<SealConfig, ConfigError> {
    let entries = raw.keys.unwrap_or_default();
    if entries.is_empty() {
        return Err(ctx.err(
            "keystore.seal.keys",
            "missing: list at least one key-encryption key (file, env or aws_kms); `keyhost seal new` makes one",
        ));
    }
    let mut keys = Vec::with_capacity(entries.len());
    for (i, entry) in entries.into_iter().enumerate() {
        let field = format!("keystore.seal.keys[{i}]");
        let at = |sub: &str| format!("{field}.{sub}");
        let file = ctx.opt(&at("file"), &entry.file)?;
        // The name of a variable, never expanded: `env: ${KEK}` would make the key
        // itself the name, and print it in the error that it is not set.
        let env = match &entry.env {
            None => None,
            Some(Val(name)) => {
                let name = name.trim();
                let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !valid {
                    return Err(ctx.err(
                        &at("env"),
                        "not the name of an environment variable (letters, digits and _, e.g. KEYHOST_KEK); \
                         write the variable's name here, not ${NAME} or its value",
                    ));
                }
                Some(name.to_owned())
            }
        };
        let sources = [file.is_some(), env.is_some(), entry.aws_kms.is_some()];
        let source = match (file, env, entry.aws_kms) {
            _ if sources.iter().filter(|b| **b).count() > 1 => {
                return Err(ctx.err(&field, "give one source of the key: file, env or aws_kms, not several"));
            }
            (Some(file), _, _) => KekSource::File(PathBuf::from(file)),
            (_, Some(env), _) => KekSource::Env(env),
            (_, _, Some(kms)) => {
                let creds = kms.credentials.unwrap_or_default();
                KekSource::AwsKms(AwsKmsKek {
                    ciphertext: ctx.opt(&at("aws_kms.ciphertext"), &kms.ciphertext)?.ok_or_else(|| {
                        ctx.err(
                            &at("aws_kms.ciphertext"),
                            "missing: the base64 ciphertext of the key, as `keyhost seal new --aws-kms-key KEY` prints it",
                        )
                    })?,
                    key: ctx.opt(&at("aws_kms.key"), &kms.key)?,
                    region: ctx
                        .opt(&at("aws_kms.region"), &kms.region)?
                        .ok_or_else(|| ctx.err(&at("aws_kms.region"), "missing, e.g. us-east-1"))?,
                    endpoint: ctx.opt(&at("aws_kms.endpoint"), &kms.endpoint)?,
                    access_key: ctx.opt(&at("aws_kms.credentials.accesskey"), &creds.accesskey)?,
                    secret_key: ctx.opt(&at("aws_kms.credentials.secretkey"), &creds.secretkey)?,
                    session_token: ctx.opt(&at("aws_kms.credentials.token"), &creds.token)?,
                })
            }
            (None, None, None) => {
                return Err(ctx.err(
                    &field,
                    "no source of the key: give file (a key file), env (an environment variable) or aws_kms",
                ));
            }
        };
        keys.push(KekConfig {
            id: ctx.opt(&at("id"), &entry.id)?.map(|id| id.trim().to_owned()),
            field,
            source,
        });
    }
    let refuse_unsealed = match ctx
        .opt("keystore.seal.unsealed", &raw.unsealed)?
        .as_deref()
        .map(str::trim)
    {
        None | Some("serve") => false,
        Some("refuse") => true,
        Some(other) => {
            return Err(ctx.err("keystore.seal.unsealed", format!("'{other}' is not serve or refuse")));
        }
    };
    Ok(SealConfig { keys, refuse_unsealed })
}

/// A sentence for common mistakes that the YAML error alone does not explain.
fn hint_for(message: &str) -> Option<&'static str> {
    if message.contains("unknown field") {
        Some(
            "check the spelling against the KES configuration reference; keyhost reads both the v0.16 and the newest schema",
        )
    } else {
        None
    }
}
