//! `keyhost server`: run the key server.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use keyhost_plugin_host::{Grants, PluginSource, PluginSpec, Runtime, RuntimeOptions};
use keyhost_policy::Authorizer;
use keyhost_server::State;
use keyhost_server::dev::DevCredentials;

/// Run the KES-compatible key server.
///
/// With --dev, keyhost needs no files: it makes a throw-away server certificate
/// and admin API key, keeps keys with the bundled fs plugin in a temporary
/// directory, prints how to connect, and deletes everything when it stops.
///
/// Example:
///
///   keyhost server --dev
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct ServerArgs {
    /// Run a throw-away development server (no configuration needed).
    #[arg(long)]
    dev: bool,
    /// The address to listen on [default: 127.0.0.1:7373 with --dev].
    #[arg(long, value_name = "IP:PORT")]
    addr: Option<SocketAddr>,
    /// A configuration file (KES v0.16 or newest schema).
    #[arg(long, value_name = "FILE")]
    config: Option<std::path::PathBuf>,
}

impl ServerArgs {
    pub async fn run(self) -> ExitCode {
        if !self.dev {
            eprintln!(
                "error: this keyhost build serves only --dev; configuration files{} are not supported yet",
                self.config
                    .map(|c| format!(" ({})", c.display()))
                    .unwrap_or_default()
            );
            return ExitCode::from(2);
        }
        match dev(self
            .addr
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 7373))))
        .await
        {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(1)
            }
        }
    }
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents.as_bytes())
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
    write_private(&server_crt, &creds.server_cert_pem)
        .and_then(|()| write_private(&admin_crt, &creds.admin_cert_pem))
        .and_then(|()| write_private(&admin_key, &creds.admin_key_pem))
        .map_err(|e| format!("cannot write the dev credentials: {e}"))?;

    let runtime = Runtime::new(RuntimeOptions {
        cache_dir: super::plugin::default_cache_dir(),
        ..RuntimeOptions::default()
    })
    .map_err(|e| e.to_string())?;
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
    };
    let keystore = runtime.load(spec).await.map_err(|e| e.to_string())?;
    let state = State::new(
        Arc::new(keystore),
        Authorizer::new(Some(creds.admin.identity())),
    );
    let tls = creds.server_config().map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e} (choose another with --addr)"))?;
    let url = format!(
        "https://{}",
        listener.local_addr().map_err(|e| e.to_string())?
    );
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

With the kes CLI (or any KES client):

  export KES_SERVER={url} KES_API_KEY={api_key}
  kes key create my-key -k

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
