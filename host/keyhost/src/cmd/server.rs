//! `keyhost server`: run the key server.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use keyhost_config::{Config, Schema};
use keyhost_plugin_host::{Grants, PluginSource, PluginSpec};
use keyhost_policy::Authorizer;
use keyhost_server::{Configured, Fallbacks, State};
use keyhost_tls::mint::DevCredentials;

/// Run the KES-compatible key server (try `keyhost server --dev`).
///
/// With --config, keyhost reads a KES configuration file (the v0.16 schema or the
/// newest one) and serves it. With --dev, it needs no files: it makes a throw-away
/// server certificate and admin API key, keeps keys with the bundled fs plugin in a
/// temporary directory, prints how to connect, and deletes everything when it stops.
///
/// Examples:
///
///   keyhost server --dev
///   keyhost server --config server-config.yaml
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct ServerArgs {
    /// Run a throw-away development server (no configuration needed).
    #[arg(long)]
    dev: bool,
    /// The address to listen on [default: the configuration's `address`, else
    /// 0.0.0.0:7373; with --dev 127.0.0.1:7373].
    #[arg(long, value_name = "IP:PORT")]
    addr: Option<SocketAddr>,
    /// A configuration file (KES v0.16 or newest schema).
    #[arg(long, value_name = "FILE", conflicts_with = "dev")]
    config: Option<std::path::PathBuf>,
    /// The server's private key, when the configuration names none (KES v0.16 flag).
    #[arg(long, value_name = "FILE")]
    key: Option<std::path::PathBuf>,
    /// The server's certificate, when the configuration names none (KES v0.16 flag).
    #[arg(long, value_name = "FILE")]
    cert: Option<std::path::PathBuf>,
    /// The admin identity, when the configuration names none (KES v0.16 flag).
    #[arg(long, value_name = "IDENTITY")]
    root: Option<String>,
    /// For a KES v0.16 configuration: `on` (the default, as in KES v0.16) verifies
    /// client certificates against the system's CA certificates (SSL_CERT_FILE,
    /// SSL_CERT_DIR); `off` accepts any certificate, which self-signed client
    /// certificates (`keyhost identity new`, MinIO's guide) need. Newest-schema
    /// configurations use tls.auth and tls.ca instead.
    #[arg(long, value_name = "on|off", value_parser = ["on", "off"])]
    auth: Option<String>,
    /// Require locked memory: refuse to start unless every page of the process can
    /// be locked, so that keys never reach swap. Without this flag the server locks
    /// its memory when it may (CAP_IPC_LOCK, or an unlimited `ulimit -l`) and warns
    /// when it may not (Linux).
    #[arg(long, conflicts_with = "no_mlock")]
    mlock: bool,
    /// Do not lock memory, and do not warn about it (for machines without swap).
    #[arg(long)]
    no_mlock: bool,
}

impl ServerArgs {
    pub async fn run(self) -> ExitCode {
        no_core_dumps();
        let fds = keyhost_server::raise_fd_limit();
        tracing::debug!(fds, "open-file limit");
        if !self.no_mlock {
            match lock_memory() {
                Ok(()) => tracing::info!("memory locked: pages of this process will not be swapped"),
                Err(e) if self.mlock => {
                    eprintln!("error: --mlock: {e}");
                    return ExitCode::from(1);
                }
                Err(e) => tracing::warn!(
                    "memory is not locked, so keys may reach swap: {e} (--no-mlock on a machine without swap silences this)"
                ),
            }
        }
        if !self.dev {
            return match self.configured().await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(1)
                }
            };
        }
        match dev(self.addr.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 7373)))).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(1)
            }
        }
    }
}

/// The audit log writer on standard output: one for the life of the process, so
/// that a reload neither starts a second writer nor forgets a failing log.
fn audit_writer() -> Result<keyhost_server::audit::AuditWriter, String> {
    static WRITER: std::sync::OnceLock<keyhost_server::audit::AuditWriter> = std::sync::OnceLock::new();
    if let Some(writer) = WRITER.get() {
        return Ok(writer.clone());
    }
    let writer =
        keyhost_server::audit::AuditWriter::stdout().map_err(|e| format!("cannot start the audit log writer: {e}"))?;
    Ok(WRITER.get_or_init(|| writer).clone())
}

/// Keeps key material out of core dumps: no core file (`RLIMIT_CORE` 0), and the
/// process is not dumpable, which also keeps other processes of the same user from
/// attaching a debugger to it or reading its memory.
#[cfg(target_os = "linux")]
fn no_core_dumps() {
    use rustix::process::{DumpableBehavior, Resource, Rlimit, set_dumpable_behavior, setrlimit};
    let none = Rlimit {
        current: Some(0),
        maximum: Some(0),
    };
    if let Err(e) = setrlimit(Resource::Core, none) {
        tracing::warn!("cannot switch core dumps off: {e}");
    }
    if let Err(e) = set_dumpable_behavior(DumpableBehavior::NotDumpable) {
        tracing::warn!("cannot mark the process as not dumpable: {e}");
    }
}

#[cfg(not(target_os = "linux"))]
fn no_core_dumps() {}

/// Locks the pages of this process in memory, now and in future, so that key
/// material never reaches swap.
///
/// `MCL_ONFAULT` locks a page when it is first touched rather than at mapping time:
/// the plugin runtime reserves gigabytes of address space per instance that it never
/// touches, and populating those reservations would exhaust memory.
///
/// Locking is only tried when every future page can be locked too: with
/// `MCL_FUTURE` under a limited `RLIMIT_MEMLOCK` and without `CAP_IPC_LOCK`, the
/// lock would succeed now and make later allocations fail once the limit is reached.
#[cfg(target_os = "linux")]
fn lock_memory() -> Result<(), String> {
    use rustix::mm::{MlockAllFlags, mlockall};
    use rustix::process::{Resource, getrlimit};
    use rustix::thread::{CapabilitySet, capabilities};
    let capable = capabilities(None).is_ok_and(|c| c.effective.contains(CapabilitySet::IPC_LOCK));
    let unlimited = getrlimit(Resource::Memlock).current.is_none();
    if !capable && !unlimited {
        return Err("locking needs the CAP_IPC_LOCK capability or an unlimited `ulimit -l`".into());
    }
    mlockall(MlockAllFlags::CURRENT | MlockAllFlags::FUTURE | MlockAllFlags::ONFAULT)
        .map_err(|e| format!("mlockall failed: {e}"))
}

#[cfg(not(target_os = "linux"))]
fn lock_memory() -> Result<(), String> {
    Err("memory locking is implemented on Linux only".into())
}

impl ServerArgs {
    /// Reads the configuration file and builds everything the server runs with.
    /// Also returns the banner's line on sealing.
    async fn build(&self, path: &Path) -> Result<(Arc<keyhost_server::TlsConfig>, Arc<State>, Config, String), String> {
        let config = Config::load(path).map_err(|e| e.to_string())?;
        let flags = Fallbacks {
            key: self.key.clone(),
            cert: self.cert.clone(),
            root: self.root.clone(),
            auth: self.auth.as_deref().map(|a| a == "on"),
        };
        let configured = Configured::new(&config, path, &flags)?;
        let keystore =
            super::keystore::open(&config.keystore, config.seal.as_ref(), &path.display().to_string()).await?;
        let audit_log = if configured.wants_audit_log() {
            Some(audit_writer()?)
        } else {
            None
        };
        let sealing = super::keystore::describe_seal(&keystore);
        let (tls, state) = configured.finish(keystore, audit_log).await?;
        Ok((tls, state, config, sealing))
    }

    /// Runs the server a configuration file describes; SIGHUP re-reads the file.
    async fn configured(self) -> Result<(), String> {
        let Some(path) = self.config.clone() else {
            return Err("give a configuration file with --config FILE, or try --dev".into());
        };
        let (tls, state, config, sealing) = self.build(&path).await?;
        let file = path.display();
        let admin = state.authorizer().admin().cloned();
        let addr: SocketAddr = match (self.addr, &config.address) {
            (Some(addr), _) => addr,
            (None, Some(text)) => text
                .parse()
                .map_err(|_| format!("{file}: address: '{text}' is not IP:PORT, e.g. 0.0.0.0:7373"))?,
            (None, None) => SocketAddr::from(([0, 0, 0, 0], 7373)),
        };
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        let _ = writeln!(
            std::io::stdout(),
            "keyhost {} on https://{}\n  config    {file} ({} schema)\n  admin     {}\n  policies  {}\n  keystore  {}\n  sealing   {sealing}",
            env!("CARGO_PKG_VERSION"),
            listener.local_addr().map_err(|e| e.to_string())?,
            match config.schema {
                Schema::V016 => "KES v0.16",
                Schema::Newest => "newest KES",
            },
            admin
                .as_ref()
                .map_or_else(|| "<disabled>".to_owned(), |a| a.to_string()),
            config.policies.len(),
            super::keystore::describe(&config.keystore),
        );
        let live = keyhost_server::Live::new(tls, state);
        let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .map_err(|e| format!("cannot watch for SIGHUP: {e}"))?;
        let server = keyhost_server::serve_live(listener, live.clone());
        tokio::pin!(server);
        loop {
            tokio::select! {
                result = &mut server => return result.map_err(|e| e.to_string()),
                _ = tokio::signal::ctrl_c() => {
                    if let Some(log) = &live.state().observer.audit_log {
                        log.flush();
                    }
                    return Ok(());
                }
                _ = hangup.recv() => match self.build(&path).await {
                    Ok((tls, state, _, _)) => {
                        live.replace(tls, state);
                        tracing::info!(config = %file, "configuration reloaded");
                    }
                    Err(e) => tracing::error!("reloading failed, still serving the previous configuration: {e}"),
                },
            }
        }
    }
}

async fn dev(addr: SocketAddr) -> Result<(), String> {
    let dir = tempfile::Builder::new()
        .prefix("keyhost-dev-")
        .tempdir()
        .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
    let hosts = vec![
        "localhost".to_owned(),
        addr.ip().to_string(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    let creds = DevCredentials::generate(&hosts).map_err(|e| e.to_string())?;
    let (server_crt, admin_crt, admin_key, keys) = (
        dir.path().join("server.crt"),
        dir.path().join("admin.crt"),
        dir.path().join("admin.key"),
        dir.path().join("keys"),
    );
    std::fs::create_dir(&keys).map_err(|e| e.to_string())?;
    use crate::files::{Mode, write_atomic};
    write_atomic(&server_crt, creds.server_cert_pem.as_bytes(), Mode::Private, false)
        .and_then(|()| write_atomic(&admin_crt, creds.admin_cert_pem.as_bytes(), Mode::Private, false))
        .and_then(|()| write_atomic(&admin_key, creds.admin_key_pem.as_bytes(), Mode::Private, false))
        .map_err(|e| format!("cannot write the dev credentials: {e}"))?;

    let runtime = super::keystore::server_runtime()?;
    let mut spec = PluginSpec::new(
        "fs",
        PluginSource::Embedded {
            label: "builtin:fs".into(),
            bytes: keyhost_bundled::FS.wasm,
        },
    );
    spec.grants = Grants {
        http: vec![],
        dir: Some(keys.clone()),
        ..Grants::default()
    };
    let keystore = runtime.load(spec).await.map_err(|e| e.to_string())?;
    let state = State::new(Arc::new(keystore), Authorizer::new(Some(creds.admin.identity())));
    let tls = creds.server_config().map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e} (choose another with --addr)"))?;
    let mut local = listener.local_addr().map_err(|e| e.to_string())?;
    if local.ip().is_unspecified() {
        // Listening on every interface (as in a container): show the loopback one.
        local.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let url = format!("https://{local}");
    let curl = format!(
        "curl --cacert {} --cert {} --key {}",
        server_crt.display(),
        admin_crt.display(),
        admin_key.display()
    );
    // Write without panicking: stdout may be a closed pipe.
    let _ = writeln!(
        std::io::stdout(),
        "keyhost {version} development server on {url}
Everything below lives in {dir} and is deleted when the server stops.

  admin API key   {api_key}
  admin identity  {identity}
  keystore        builtin:fs in {keys}

Create a key, then generate a data key with it:

  {curl} -X POST {url}/v1/key/create/my-key
  {curl} -X POST -d '{{}}' {url}/v1/key/generate/my-key

With the keyhost CLI (the kes CLI takes the same commands and variables):

  export KES_SERVER={url} KES_API_KEY={api_key}
  keyhost key create -k my-cli-key
  keyhost key dek -k my-cli-key

Stop with Ctrl-C.",
        version = env!("CARGO_PKG_VERSION"),
        dir = dir.path().display(),
        api_key = creds.admin.to_text().as_str(),
        identity = creds.admin.identity(),
        keys = keys.display(),
    );
    tokio::select! {
        result = keyhost_server::serve(listener, Arc::new(tls), Arc::new(state)) => {
            result.map_err(|e| e.to_string())
        }
        _ = tokio::signal::ctrl_c() => {
            let _ = writeln!(std::io::stdout(), "\nstopped; removing {}", dir.path().display());
            Ok(())
        }
    }
}
