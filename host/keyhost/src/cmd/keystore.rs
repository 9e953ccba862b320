//! Turns a configured keystore into a running one.

use std::sync::Arc;

use keyhost_config::{KeystoreConfig, SealConfig};
use keyhost_keystore::{Error, Keystore, MemStore};
use keyhost_plugin_host::{
    Grants, Limits, LoadError, Origin, OriginTls, PluginSource, PluginSpec, Runtime, RuntimeOptions,
};
use keyhost_seal::{SealedStore, Sealer, Sealing, Unsealed};

/// One line naming the keystore, for the start-up banner.
pub fn describe(config: &KeystoreConfig) -> String {
    match config {
        KeystoreConfig::Memory => "in memory (keys are lost when the server stops)".into(),
        KeystoreConfig::Fs { path } => format!("builtin:fs in {}", path.display()),
        KeystoreConfig::AwsSecretsManager(aws) => {
            format!("AWS Secrets Manager at {}", aws.endpoint)
        }
        KeystoreConfig::Plugin(p) => format!("plugin {}", p.path),
    }
}

/// One line on sealing, for the start-up banner.
pub fn describe_seal(store: &SealedStore) -> String {
    match store.sealer() {
        None => "off (the keystore receives records as they are)".into(),
        Some(s) => {
            let others = s.ids().count() - 1;
            format!(
                "on: sealed under key-encryption key {}{}",
                s.current(),
                match others {
                    0 => String::new(),
                    1 => " (1 more opens older records)".into(),
                    n => format!(" ({n} more open older records)"),
                }
            )
        }
    }
}

/// Opens the configured keystore, sealed as `keystore.seal` says; `file` names the
/// configuration in errors.
///
/// Start-up reads a few records and refuses to go on when they are sealed under a
/// KEK that is not configured (or sealing is off): a KEK left out of the file shows
/// at once, not at the first request for one of its keys.
pub async fn open(
    keystore: &KeystoreConfig,
    seal: Option<&SealConfig>,
    file: &str,
) -> Result<Arc<SealedStore>, String> {
    let inner = open_unsealed(keystore, file).await?;
    let sealer = match seal {
        None => None,
        Some(seal) => Some(Arc::new(
            keyhost_seal::kek::load(seal, file, &|name| std::env::var(name).ok()).await?,
        )),
    };
    check_sample(&*inner, sealer.as_deref(), file).await?;
    Ok(Arc::new(
        SealedStore::new(inner, sealer).with_unsealed(unsealed_rule(seal)),
    ))
}

/// What the configuration accepts of a record that is not sealed: the one rule
/// that the server and every tool reading records apply alike, so that no tool
/// accepts (and re-seals, copies or restores) a record that the server refuses.
pub fn unsealed_rule(seal: Option<&SealConfig>) -> Unsealed {
    match seal {
        Some(seal) if seal.refuse_unsealed => Unsealed::Refuse,
        _ => Unsealed::Serve,
    }
}

/// How many records start-up reads to check that their KEKs are configured.
const SAMPLE: u32 = 4;

async fn check_sample(inner: &dyn Keystore, sealer: Option<&Sealer>, file: &str) -> Result<(), String> {
    let page = match inner.list("", None, SAMPLE).await {
        Ok(page) => page,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list the keystore at start-up to check the KEKs of its records");
            return Ok(());
        }
    };
    for name in page.names {
        let stored = match inner.get(&name).await {
            Ok(stored) => stored,
            Err(Error::NotFound) => continue,
            Err(e) => {
                tracing::warn!(key = %name, error = %e, "cannot read a record at start-up to check its KEK");
                return Ok(());
            }
        };
        let Sealing::Sealed(id) = Sealer::inspect(&stored) else {
            continue;
        };
        match sealer {
            None => {
                return Err(format!(
                    "{file}: keystore: the keystore holds sealed records (e.g. '{name}', sealed under the \
                     key-encryption key {id}), but keystore.seal is not configured; add keystore.seal with that key \
                     (or, to take the records out of sealing, `keyhost migrate` them to a keystore without it)"
                ));
            }
            Some(s) if !s.ids().any(|k| k == id) => {
                return Err(format!(
                    "{file}: keystore.seal.keys: the keystore holds records sealed under the key-encryption key \
                     {id} (e.g. '{name}'), which is not listed; add it (as a second entry, if another one seals), \
                     and remove it only after `keyhost migrate --reseal` has moved every record off it"
                ));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Opens the configured keystore as it is, without sealing; `file` names the
/// configuration in errors.
pub async fn open_unsealed(config: &KeystoreConfig, file: &str) -> Result<Arc<dyn Keystore>, String> {
    let spec = match config {
        KeystoreConfig::Memory => return Ok(Arc::new(MemStore::new())),
        KeystoreConfig::AwsSecretsManager(aws) => super::aws::spec(aws, file, &super::aws::ProcessEnv)?,
        KeystoreConfig::Fs { path } => {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(path)
                .map_err(|e| format!("{file}: keystore.fs.path: cannot create {}: {e}", path.display()))?;
            let mut spec = PluginSpec::new("fs", builtin("builtin:fs", file)?);
            spec.grants.dir = Some(path.clone());
            spec
        }
        KeystoreConfig::Plugin(p) => {
            let source = if p.path.starts_with("builtin:") {
                builtin(&p.path, file)?
            } else {
                PluginSource::File(p.path.clone().into())
            };
            let name = std::path::Path::new(&p.path)
                .file_stem()
                .map_or_else(|| "plugin".to_owned(), |s| s.to_string_lossy().replace("builtin:", ""));
            let mut spec = PluginSpec::new(name, source);
            spec.sha256 = p.sha256.clone();
            spec.config = p.config.clone();
            let http = p
                .allow_http
                .iter()
                .map(|o| Origin::parse(o).map_err(|e| format!("{file}: keystore.plugin.allow.http: {e}")))
                .collect::<Result<Vec<_>, _>>()?;
            let tls = origin_tls(file, &p.allow_tls, &http)?;
            spec.grants = Grants {
                http,
                dir: p.allow_dir.clone(),
                tls,
                ..Grants::default()
            };
            let defaults = Limits::default();
            spec.limits = Limits {
                memory: match &p.memory {
                    Some(m) => {
                        crate::units::size(m).map_err(|e| format!("{file}: keystore.plugin.limits.memory: {e}"))?
                    }
                    None => defaults.memory,
                },
                timeout: p.timeout.unwrap_or(defaults.timeout),
                instances: p.instances.unwrap_or(defaults.instances),
                ..defaults
            };
            spec
        }
    };
    let runtime = server_runtime()?;
    let plugin = runtime.load(spec).await.map_err(|e| format!("{file}: keystore: {e}"))?;
    Ok(Arc::new(plugin))
}

/// The server's plugin runtime, keeping compiled plugins in the user's cache
/// directory. A cache directory that cannot be used (a read-only file system, as a
/// container's root may be) costs a compile at each start, not the start.
pub(crate) fn server_runtime() -> Result<Runtime, String> {
    match Runtime::new(RuntimeOptions {
        cache_dir: super::plugin::default_cache_dir(),
        ..RuntimeOptions::default()
    }) {
        Ok(runtime) => Ok(runtime),
        Err(LoadError::CacheDir(reason)) => {
            // Nothing is read from a directory that failed the check, so this is
            // safe; it is said, since it may also mean someone else owns it.
            tracing::warn!(
                %reason,
                "the plugin cache directory is unusable, so plugins are compiled in memory at each start; \
                 point XDG_CACHE_HOME at a directory of this user's, writable by it alone, to keep them"
            );
            Runtime::new(RuntimeOptions::default()).map_err(|e| e.to_string())
        }
        Err(e) => Err(e.to_string()),
    }
}

fn builtin(path: &str, file: &str) -> Result<PluginSource, String> {
    let bundled = keyhost_bundled::find(path)
        .ok_or_else(|| format!("{file}: keystore.plugin.path: there is no bundled plugin '{path}'"))?;
    Ok(PluginSource::Embedded {
        label: format!("builtin:{}", bundled.name),
        bytes: bundled.wasm,
    })
}

/// `keystore.plugin.allow.tls`: reads the files, checks that each origin is granted.
fn origin_tls(
    file: &str,
    entries: &[keyhost_config::OriginTlsConfig],
    granted: &[Origin],
) -> Result<std::collections::HashMap<Origin, OriginTls>, String> {
    let mut out = std::collections::HashMap::new();
    let mut listed_at = std::collections::HashMap::new();
    for (i, entry) in entries.iter().enumerate() {
        let at = format!("{file}: keystore.plugin.allow.tls[{i}]");
        let read = |field: &str, path: &std::path::Path| {
            std::fs::read(path).map_err(|e| format!("{at}.{field}: cannot read {}: {e}", path.display()))
        };
        let tls = OriginTls {
            ca_pem: entry.ca.as_deref().map(|p| read("ca", p)).transpose()?,
            client: match &entry.client {
                None => None,
                Some((cert, key)) => Some((
                    read("cert", cert)?,
                    keyhost_files::read_secret(key, keyhost_tls::load::MAX_KEY_FILE, "private key file")
                        .map_err(|e| format!("{at}.key: {e}"))?,
                )),
            },
        };
        for raw in &entry.origins {
            let origin = Origin::parse(raw).map_err(|e| format!("{at}.origins: {e}"))?;
            if !granted.contains(&origin) {
                return Err(format!(
                    "{at}.origins: {origin} is not granted; add it to keystore.plugin.allow.http"
                ));
            }
            if !origin.is_https() {
                return Err(format!(
                    "{at}.origins: {origin} is plain http; TLS settings need https://"
                ));
            }
            if let Some(first) = listed_at.insert(origin.clone(), i) {
                return Err(format!(
                    "{at}.origins: {origin} is listed under allow.tls[{first}] too; give each origin one entry"
                ));
            }
            out.insert(origin, tls.clone());
        }
    }
    Ok(out)
}
