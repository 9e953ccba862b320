//! `keyhost plugin …`: the conformance kit and plugin tooling.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use keyhost_conformance::KitOptions;
use keyhost_plugin_host::{Grants, Limits, Origin, OriginTls, PluginSource, PluginSpec, Runtime, RuntimeOptions};

use crate::units;

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Run the conformance kit against a keystore plugin.
    ///
    /// Loads the plugin in the same sandbox and limits as the server, checks every
    /// rule of the keyhost:keystore contract with a case of stable id, prints one
    /// line per case, and exits 0 only if no case failed (1 if one did, 2 if the
    /// plugin cannot be loaded at all). Records are created under a random prefix
    /// and deleted afterwards.
    ///
    /// Example (the bundled filesystem plugin, in a scratch directory):
    ///
    ///   mkdir -p /tmp/kit && keyhost plugin test builtin:fs --allow-dir /tmp/kit
    ///
    /// Example (your own plugin, talking to a local backend):
    ///
    ///   keyhost plugin test ./my_store.wasm --config endpoint=http://127.0.0.1:8200 \
    ///       --allow-http http://127.0.0.1:8200 --junit report.xml
    #[command(verbatim_doc_comment)]
    Test(Box<TestArgs>),
    /// Create a new keystore plugin project: a stand-alone Cargo project with the
    /// Rust SDK and the WIT contract, whose plugin keeps one file per key in its
    /// granted directory and passes `keyhost plugin test` as generated. Replace
    /// its functions with calls to your backend.
    ///
    /// Example:
    ///
    ///   keyhost plugin new my-store
    ///   cd my-store && cargo build --release
    ///   mkdir -p /tmp/kit && keyhost plugin test target/wasm32-wasip2/release/my_store.wasm --allow-dir /tmp/kit
    #[command(verbatim_doc_comment)]
    New {
        /// The plugin's name: lowercase letters, digits and dashes, e.g. my-store.
        name: String,
        /// Where to create the project [default: ./NAME].
        #[arg(long, value_name = "DIR")]
        path: Option<PathBuf>,
    },
    /// Describe a plugin: size, SHA-256 (the value to pin), its name, version,
    /// features and settings, what it imports and exports, and whether this keyhost
    /// can run it. Its info function runs in a sandbox with no grants; nothing is
    /// opened.
    ///
    /// Exit codes: 0 this keyhost can run it, 1 it cannot (the reason is printed),
    /// 2 it could not be read or compiled.
    ///
    /// Example:
    ///
    ///   keyhost plugin inspect builtin:aws
    ///   keyhost plugin inspect ./my_store.wasm --json
    #[command(verbatim_doc_comment)]
    Inspect {
        /// The plugin: a .wasm component file, or builtin:NAME.
        #[arg(value_name = "PLUGIN")]
        plugin: String,
        /// Print the description as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Where the plugin comes from and what it may do.
#[derive(Debug, Args)]
pub struct PluginArgs {
    /// The plugin: a .wasm component file, or builtin:fs for the bundled one.
    #[arg(value_name = "PLUGIN")]
    plugin: String,
    /// A setting for the plugin, served through wasi:config (repeatable).
    #[arg(long = "config", value_name = "KEY=VALUE", value_parser = parse_setting)]
    config: Vec<(String, String)>,
    /// Allow outbound HTTP to this origin, scheme://host[:port] (repeatable).
    #[arg(long = "allow-http", value_name = "URL", value_parser = parse_origin)]
    allow_http: Vec<Origin>,
    /// Grant this directory to the plugin (it sees it as /data).
    #[arg(long = "allow-dir", value_name = "DIR")]
    allow_dir: Option<PathBuf>,
    /// For every https origin of --allow-http: trust the CA certificates in this PEM
    /// file instead of the public roots.
    #[arg(long = "tls-ca", value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// For every https origin of --allow-http: present this PEM certificate chain (the
    /// host does; the plugin never sees the key). Needs --tls-key.
    #[arg(long = "tls-cert", value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long = "tls-key", value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Expected SHA-256 of the component; refuse to load it otherwise.
    #[arg(long, value_name = "HEX")]
    sha256: Option<String>,
    /// Deadline of one plugin call.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = units::duration)]
    timeout: Duration,
    /// Memory limit of one plugin instance.
    #[arg(long, value_name = "SIZE", default_value = "64MiB", value_parser = units::size)]
    memory: usize,
    /// How many plugin instances serve calls concurrently.
    #[arg(long, value_name = "N", default_value_t = 4)]
    instances: usize,
    /// Where compiled plugins are cached [default: $XDG_CACHE_HOME/keyhost or ~/.cache/keyhost].
    #[arg(long, value_name = "DIR", conflicts_with = "no_cache")]
    cache_dir: Option<PathBuf>,
    /// Do not cache compiled plugins on disk.
    #[arg(long)]
    no_cache: bool,
}

#[derive(Debug, Args)]
pub struct TestArgs {
    #[command(flatten)]
    plugin: PluginArgs,
    /// Run only the cases whose id matches (e.g. `list.*`; without `*`, a substring;
    /// several patterns separated by commas).
    #[arg(long, value_name = "PATTERN")]
    filter: Option<String>,
    /// Skip the cases whose id matches (same syntax as --filter).
    #[arg(long, value_name = "PATTERN")]
    skip: Option<String>,
    /// Also write the results as JUnit XML to this file.
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
    /// Also write the results as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Also write the results as one self-contained HTML page to this file, to
    /// publish beside the plugin (its name, version and SHA-256, every case, and
    /// the rules the kit cannot check).
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// The seed of the randomized cases (model.*). Every report prints the seed it
    /// ran with; pass it here, with the same --budget, to replay a failure.
    #[arg(long, value_name = "N")]
    seed: Option<u64>,
    /// How many operations the randomized cases run: steps of model.sequential
    /// (default 1000), and a fortieth of it as rounds of model.concurrent (default
    /// 25). More finds rarer defects and takes longer.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    budget: Option<u32>,
    /// The record sizes this deployment holds, MIN..MAX in bytes, when its settings
    /// hold fewer than the plugin declares (e.g. 1..4096 for the AWS plugin with
    /// kms_envelope): larger records must then be refused with invalid-argument.
    #[arg(long, value_name = "MIN..MAX", value_parser = parse_sizes)]
    record_size: Option<std::ops::RangeInclusive<usize>>,
    /// Also page through a listing of 20,000 names (scale.listing), the size where
    /// directory reads and backend pages run out. Takes minutes on a slow backend.
    #[arg(long)]
    scale: bool,
    /// Run the cases through host-side sealing (keystore.seal) with a throw-away
    /// key-encryption key, as a server that seals uses the plugin.
    #[arg(long)]
    sealed: bool,
}

fn parse_sizes(s: &str) -> Result<std::ops::RangeInclusive<usize>, String> {
    let parsed = s
        .split_once("..")
        .and_then(|(min, max)| Some((min.parse::<usize>().ok()?, max.parse::<usize>().ok()?)));
    match parsed {
        Some((min, max)) if min <= max => Ok(min..=max),
        _ => Err(format!("'{s}' is not MIN..MAX in bytes, e.g. 1..4096")),
    }
}

fn parse_setting(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("'{s}' is not KEY=VALUE")),
    }
}

fn parse_origin(s: &str) -> Result<Origin, String> {
    Origin::parse(s)
}

/// The default cache directory for compiled plugins.
pub fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("keyhost").join("plugins"))
}

impl PluginArgs {
    fn runtime(&self) -> Result<Runtime, String> {
        let cache_dir = if self.no_cache {
            None
        } else {
            self.cache_dir.clone().or_else(default_cache_dir)
        };
        Runtime::new(RuntimeOptions {
            cache_dir,
            ..RuntimeOptions::default()
        })
        .map_err(|e| e.to_string())
    }

    /// `--tls-ca`, `--tls-cert` and `--tls-key`, for every https origin granted.
    fn origin_tls(&self) -> Result<std::collections::HashMap<Origin, OriginTls>, String> {
        let read =
            |flag: &str, path: &PathBuf| std::fs::read(path).map_err(|e| format!("{flag} {}: {e}", path.display()));
        let tls = OriginTls {
            ca_pem: self.tls_ca.as_ref().map(|p| read("--tls-ca", p)).transpose()?,
            client: match (&self.tls_cert, &self.tls_key) {
                (Some(cert), Some(key)) => Some((
                    read("--tls-cert", cert)?,
                    keyhost_files::read_secret(key, keyhost_tls::load::MAX_KEY_FILE, "private key file")
                        .map_err(|e| format!("--tls-key: {e}"))?,
                )),
                _ => None,
            },
        };
        if tls.ca_pem.is_none() && tls.client.is_none() {
            return Ok(std::collections::HashMap::new());
        }
        let https: Vec<&Origin> = self.allow_http.iter().filter(|o| o.is_https()).collect();
        if https.is_empty() {
            return Err(
                "--tls-ca, --tls-cert and --tls-key apply to https origins; grant one with --allow-http https://…"
                    .into(),
            );
        }
        Ok(https.into_iter().map(|o| (o.clone(), tls.clone())).collect())
    }

    fn spec(&self) -> Result<PluginSpec, String> {
        let (name, source) = if let Some(builtin) = self.plugin.strip_prefix("builtin:") {
            let bundled = keyhost_bundled::find(builtin).ok_or_else(|| {
                let names: Vec<String> = keyhost_bundled::ALL
                    .iter()
                    .map(|b| format!("builtin:{}", b.name))
                    .collect();
                format!(
                    "there is no bundled plugin '{}'; bundled: {}",
                    self.plugin,
                    names.join(", ")
                )
            })?;
            (
                bundled.name.to_owned(),
                PluginSource::Embedded {
                    label: self.plugin.clone(),
                    bytes: bundled.wasm,
                },
            )
        } else {
            let path = PathBuf::from(&self.plugin);
            let name = path
                .file_stem()
                .map_or_else(|| "plugin".to_owned(), |s| s.to_string_lossy().into_owned());
            (name, PluginSource::File(path))
        };
        let mut spec = PluginSpec::new(name, source);
        spec.sha256 = self.sha256.clone();
        spec.config = self.config.iter().cloned().collect::<BTreeMap<_, _>>();
        spec.grants = Grants {
            http: self.allow_http.clone(),
            dir: self.allow_dir.clone(),
            tls: self.origin_tls()?,
            ..Grants::default()
        };
        spec.limits = Limits {
            memory: self.memory,
            timeout: self.timeout,
            instances: self.instances,
            ..Limits::default()
        };
        Ok(spec)
    }
}

impl PluginCommand {
    pub async fn run(self) -> ExitCode {
        match self {
            PluginCommand::Test(args) => test(*args).await,
            PluginCommand::Inspect { plugin, json } => inspect(&plugin, json).await,
            PluginCommand::New { name, path } => match new_project(&name, path) {
                Ok(dir) => {
                    println!("created {}", dir.display());
                    println!();
                    println!("  cd {} && cargo build --release", dir.display());
                    println!(
                        "  mkdir -p /tmp/kit && keyhost plugin test target/wasm32-wasip2/release/{}.wasm --allow-dir /tmp/kit",
                        name.replace('-', "_")
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(1)
                }
            },
        }
    }
}

async fn test(args: TestArgs) -> ExitCode {
    let prepared = args.plugin.runtime().and_then(|rt| Ok((rt, args.plugin.spec()?)));
    let (runtime, spec) = match prepared {
        Ok(x) => x,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let options = KitOptions {
        filter: args.filter.clone(),
        skip: args.skip.clone(),
        case_timeout: None,
        seal: args.sealed.then(|| {
            std::sync::Arc::new(
                keyhost_seal::Sealer::new(vec![keyhost_seal::Kek::generate().0])
                    .expect("one new key-encryption key is a valid list"),
            )
        }),
        seed: args.seed,
        budget: args.budget,
        scale: args.scale,
        record_sizes: args.record_size.clone(),
    };
    let report = match keyhost_conformance::run(&runtime, spec, &options).await {
        Ok(report) => report,
        Err(e) => {
            eprintln!("error: {e}");
            if e.to_string().contains("grant one with `allow.dir`") {
                eprintln!("hint: pass --allow-dir DIR to grant the plugin a directory");
            }
            return ExitCode::from(2);
        }
    };
    // Write without panicking: stdout may be a closed pipe (`… | head`).
    let _ = std::io::Write::write_all(&mut std::io::stdout(), report.to_text().as_bytes());
    for (path, content) in [
        (&args.junit, report.to_junit()),
        (&args.json, report.to_json()),
        (&args.html, report.to_html()),
    ] {
        // Written to a new file renamed onto the path: a link planted at the path is
        // replaced, never written through.
        if let Some(path) = path
            && let Err(e) = crate::files::write_atomic(path, content.as_bytes(), crate::files::Mode::Public, true)
        {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    }
    if report.cases.is_empty() {
        eprintln!(
            "error: no case matches the filter {:?}",
            args.filter.unwrap_or_default()
        );
        return ExitCode::from(2);
    }
    if report.failed() > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// The source of `plugin` (a file or `builtin:NAME`), for commands with no grants.
fn source_of(plugin: &str) -> Result<PluginSource, String> {
    if let Some(builtin) = plugin.strip_prefix("builtin:") {
        let bundled = keyhost_bundled::find(builtin).ok_or_else(|| format!("there is no bundled plugin '{plugin}'"))?;
        return Ok(PluginSource::Embedded {
            label: plugin.to_owned(),
            bytes: bundled.wasm,
        });
    }
    Ok(PluginSource::File(PathBuf::from(plugin)))
}

async fn inspect(plugin: &str, json: bool) -> ExitCode {
    let result = async {
        let source = source_of(plugin)?;
        let runtime = Runtime::new(RuntimeOptions {
            cache_dir: default_cache_dir(),
            ..RuntimeOptions::default()
        })
        .map_err(|e| e.to_string())?;
        runtime.inspect(&source).await.map_err(|e| e.to_string())
    }
    .await;
    let found = match result {
        Ok(found) => found,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if json {
        let info = found.info.as_ref().map(|i| {
            serde_json::json!({
                "name": i.name,
                "version": i.version,
                "features": i.features,
                "settings": i.settings.iter().map(|s| serde_json::json!({
                    "name": s.name, "required": s.required, "secret": s.secret, "description": s.description,
                })).collect::<Vec<_>>(),
            })
        });
        let value = serde_json::json!({
            "plugin": found.label,
            "size": found.size,
            "sha256": found.sha256,
            "exports": found.exports,
            "imports": found.imports,
            "runnable": found.problem.is_none(),
            "problem": found.problem,
            "info": info,
        });
        println!("{value}");
    } else {
        println!("plugin    {}", found.label);
        println!("size      {} bytes", found.size);
        println!("sha256    {}   (pin it with keystore.plugin.sha256)", found.sha256);
        if let Some(info) = &found.info {
            println!("name      {} {}", info.name, info.version);
            if !info.features.is_empty() {
                println!("features  {}", info.features.join(", "));
            }
            println!("settings");
            for s in &info.settings {
                let mut flags = Vec::new();
                if s.required {
                    flags.push("required");
                }
                if s.secret {
                    flags.push("secret");
                }
                let flags = if flags.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", flags.join(", "))
                };
                println!("  {}{flags}: {}", s.name, s.description);
            }
        }
        println!("exports");
        for e in &found.exports {
            println!("  {e}");
        }
        println!("imports");
        for i in &found.imports {
            println!("  {i}");
        }
        match &found.problem {
            None => println!("status    this keyhost can run it"),
            Some(p) => println!("status    this keyhost cannot run it: {p}"),
        }
    }
    if found.problem.is_some() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// The files `plugin new` writes, from this keyhost's own sources.
mod template {
    pub const LIB: &str = include_str!("../../../../plugins/template/src/lib.rs");
    pub const SDK: &str = include_str!("../../../../plugins/sdk/src/lib.rs");
    pub const KEYSTORE_WIT: &str = include_str!("../../../../wit/keystore.wit");
    pub const CONFIG_WORLD_WIT: &str = include_str!("../../../../wit/deps/config/world.wit");
    pub const CONFIG_STORE_WIT: &str = include_str!("../../../../wit/deps/config/store.wit");
    /// The WASI 0.2 packages the `keystore-plugin-http` world uses.
    pub const WASI_DEPS: &[(&str, &str)] = &[
        ("cli.wit", include_str!("../../../../wit/deps/cli.wit")),
        ("clocks.wit", include_str!("../../../../wit/deps/clocks.wit")),
        ("filesystem.wit", include_str!("../../../../wit/deps/filesystem.wit")),
        ("http.wit", include_str!("../../../../wit/deps/http.wit")),
        ("io.wit", include_str!("../../../../wit/deps/io.wit")),
        ("random.wit", include_str!("../../../../wit/deps/random.wit")),
        ("sockets.wit", include_str!("../../../../wit/deps/sockets.wit")),
    ];
    pub const TOOLCHAIN: &str = include_str!("../../../../rust-toolchain.toml");
}

/// Writes a stand-alone plugin project named `name`; returns its directory.
fn new_project(name: &str, path: Option<PathBuf>) -> Result<PathBuf, String> {
    let valid = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !valid {
        return Err(format!(
            "'{name}' is not a plugin name: use lowercase letters, digits and dashes, starting with a letter"
        ));
    }
    let dir = path.unwrap_or_else(|| PathBuf::from(name));
    if dir.exists() && std::fs::read_dir(&dir).map_or(true, |mut d| d.next().is_some()) {
        return Err(format!(
            "{} exists and is not empty; choose another --path",
            dir.display()
        ));
    }
    let sdk_lib = template::SDK.replace(r#"path: "../../wit""#, r#"path: "wit""#);
    if sdk_lib == template::SDK {
        return Err("internal: the SDK's WIT path was not found; please report this".into());
    }
    let mut files: Vec<(String, String)> = template::WASI_DEPS
        .iter()
        .map(|(name, text)| (format!("keyhost-plugin-sdk/wit/deps/{name}"), (*text).to_owned()))
        .collect();
    let fixed: Vec<(&str, String)> = vec![
        (
            "Cargo.toml",
            format!(
                r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
keyhost-plugin-sdk = {{ path = "keyhost-plugin-sdk" }}

# A project of its own, even inside another Cargo workspace.
[workspace]

[profile.release]
opt-level = "s"
lto = true
codegen-units = 1
strip = "debuginfo"
panic = "abort"
"#
            ),
        ),
        (".cargo/config.toml", "[build]\ntarget = \"wasm32-wasip2\"\n".into()),
        ("rust-toolchain.toml", template::TOOLCHAIN.into()),
        (".gitignore", "/target\n".into()),
        ("src/lib.rs", template::LIB.into()),
        (
            "keyhost-plugin-sdk/Cargo.toml",
            r#"[package]
name = "keyhost-plugin-sdk"
version = "0.1.0"
edition = "2024"
description = "Write keyhost keystore plugins in Rust (copied by `keyhost plugin new`)."
publish = false

[dependencies]
wit-bindgen = { version = "0.61", default-features = false, features = ["macros", "realloc"] }
wasip2 = "1"
wstd = { version = "0.6", default-features = false, optional = true }

[features]
# `keyhost_plugin_sdk::http`: a blocking client for backends with HTTP APIs, over
# wasi:http (keyhost does TLS, checks the grant, and pools connections).
http = ["dep:wstd"]
"#
            .into(),
        ),
        ("keyhost-plugin-sdk/src/lib.rs", sdk_lib),
        ("keyhost-plugin-sdk/wit/keystore.wit", template::KEYSTORE_WIT.into()),
        (
            "keyhost-plugin-sdk/wit/deps/config/world.wit",
            template::CONFIG_WORLD_WIT.into(),
        ),
        (
            "keyhost-plugin-sdk/wit/deps/config/store.wit",
            template::CONFIG_STORE_WIT.into(),
        ),
        (
            "README.md",
            format!(
                "# {name}\n\nA keyhost keystore plugin (a WASI 0.2 component). The contract it implements is\n\
                 `keyhost-plugin-sdk/wit/keystore.wit`; `src/lib.rs` is a complete plugin that keeps one\n\
                 file per key in its granted directory. Replace its functions with calls to your backend.\n\n\
                 ```sh\ncargo build --release\nmkdir -p /tmp/kit\nkeyhost plugin test target/wasm32-wasip2/release/{}.wasm --allow-dir /tmp/kit\n```\n",
                name.replace('-', "_")
            ),
        ),
    ];
    files.extend(fixed.into_iter().map(|(f, t)| (f.to_owned(), t)));
    for (file, text) in files {
        let path = dir.join(file);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(dir)
}
