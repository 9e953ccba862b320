//! Runs keyhost keystore plugins: WebAssembly components that implement the
//! `keyhost:keystore` contract (`wit/keystore.wit`), sandboxed by wasmtime.
//!
//! This is the only crate of keyhost that uses wasmtime. It gives the rest of the
//! server a [`Plugin`], which implements [`keyhost_keystore::Keystore`].
//!
//! # What a plugin gets
//!
//! Nothing that is not granted: no environment variables, arguments or stdin, no
//! files, no sockets, no name lookup. A [`PluginSpec`] may grant one directory (seen
//! by the plugin as `/data`) and outbound HTTP to a list of origins ([`Origin`]),
//! checked on each request's real target before any connection is made. A plugin's
//! stdout and stderr become host log lines prefixed with its name.
//!
//! # How it runs
//!
//! - [`Runtime::load`] reads the component (a file, or bytes embedded in the
//!   binary), checks an optional SHA-256 pin, checks that it exports the keystore
//!   interface and imports nothing the host does not provide, compiles it or loads
//!   its precompiled artifact from the on-disk cache, and opens a first instance:
//!   a plugin that cannot open its backend is refused at start-up.
//! - A [`Plugin`] keeps a pool of long-lived instances (at most
//!   [`Limits::instances`]); calls beyond that wait in a bounded queue.
//! - Every call has a deadline ([`Limits::timeout`]), enforced inside wasm by epoch
//!   interruption and around host I/O by a timer. Wasm code that computes yields
//!   to the async runtime at every epoch tick (10 ms), so a plugin that spins for
//!   its whole deadline does not hold a runtime thread from the server's other
//!   work. Every instance has a memory limit
//!   ([`Limits::memory`]). An instance that traps, misses its deadline or hits the
//!   limit is discarded, and a fresh one replaces it on the next call; other calls
//!   go on undisturbed.

#![deny(unsafe_code)]
#![warn(missing_docs)]

mod cache;
mod egress;
mod stdio;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use keyhost_keystore::{Error, Keystore, MAX_RECORD_LEN, Page, Record, Status};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Engine, ResourceLimiter, Store, UpdateDeadline};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_config::{WasiConfig, WasiConfigVariables};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};
use zeroize::Zeroizing;

pub use egress::Origin;
pub use stdio::CapturedLog;

mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "keyhost:keystore/keystore-plugin",
        exports: { default: async },
    });
}

use bindings::KeystorePluginPre;
use bindings::exports::keyhost::keystore::store as wit;
use bindings::keyhost::keystore::types as wit_types;

/// The interface every plugin must export.
pub const STORE_EXPORT: &str = "keyhost:keystore/store@0.1.0";

/// Where a granted directory appears inside the sandbox.
pub const GUEST_DIR: &str = "/data";

/// How often the deadline clock ticks.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Interfaces the host provides to plugins, by prefix. Anything else a component
/// imports is refused at load, naming the import.
const PROVIDED_IMPORTS: &[&str] = &[
    "wasi:cli/",
    "wasi:clocks/",
    "wasi:filesystem/",
    "wasi:http/outgoing-handler@0.2",
    "wasi:http/types@0.2",
    "wasi:io/",
    "wasi:random/",
    "wasi:sockets/",
    "wasi:config/store@0.2.0-rc.1",
    // The contract's type definitions (no functions).
    "keyhost:keystore/types@0.1.0",
];

/// Where a plugin's code comes from.
#[derive(Clone)]
pub enum PluginSource {
    /// A `.wasm` component file.
    File(PathBuf),
    /// A component embedded in the binary, e.g. a bundled plugin.
    Embedded {
        /// How it is called in messages, e.g. `builtin:fs`.
        label: String,
        /// The component.
        bytes: &'static [u8],
    },
}

impl fmt::Debug for PluginSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label())
    }
}

impl PluginSource {
    /// How the source is named in messages.
    pub fn label(&self) -> String {
        match self {
            PluginSource::File(path) => path.display().to_string(),
            PluginSource::Embedded { label, .. } => label.clone(),
        }
    }
}

/// The capabilities granted to a plugin. The default grants nothing.
#[derive(Debug, Clone, Default)]
pub struct Grants {
    /// Origins the plugin may send HTTP requests to.
    pub http: Vec<Origin>,
    /// A directory the plugin may read and write, seen inside as [`GUEST_DIR`].
    pub dir: Option<PathBuf>,
}

/// Resource limits of a plugin.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The largest linear memory of an instance, in bytes.
    pub memory: usize,
    /// The deadline of one call (including the wait for a free instance).
    pub timeout: Duration,
    /// How many instances run calls at the same time.
    pub instances: usize,
    /// How many calls may wait for a free instance before further calls are refused.
    pub max_waiting: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory: 64 << 20,
            timeout: Duration::from_secs(10),
            instances: 4,
            max_waiting: 1024,
        }
    }
}

/// Everything needed to load a plugin.
#[derive(Clone)]
pub struct PluginSpec {
    /// The name used in logs and messages.
    pub name: String,
    /// The component.
    pub source: PluginSource,
    /// The expected SHA-256 of the component (hex); loading fails on a mismatch.
    pub sha256: Option<String>,
    /// Settings served to the plugin through `wasi:config/store`.
    pub config: BTreeMap<String, String>,
    /// Granted capabilities.
    pub grants: Grants,
    /// Resource limits.
    pub limits: Limits,
}

impl fmt::Debug for PluginSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Settings may hold credentials: show their keys only.
        f.debug_struct("PluginSpec")
            .field("name", &self.name)
            .field("source", &self.source)
            .field("sha256", &self.sha256)
            .field("config", &self.config.keys().collect::<Vec<_>>())
            .field("grants", &self.grants)
            .field("limits", &self.limits)
            .finish()
    }
}

impl PluginSpec {
    /// A spec with no settings, no grants and default limits.
    pub fn new(name: impl Into<String>, source: PluginSource) -> Self {
        Self {
            name: name.into(),
            source,
            sha256: None,
            config: BTreeMap::new(),
            grants: Grants::default(),
            limits: Limits::default(),
        }
    }
}

/// Why a plugin could not be loaded. Each message names the plugin and says what
/// to do.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The component file could not be read.
    #[error("cannot read plugin {source_label}: {error}")]
    Read {
        /// The file.
        source_label: String,
        /// Why.
        error: std::io::Error,
    },
    /// The SHA-256 pin did not match.
    #[error(
        "plugin {source_label} has SHA-256 {actual}, but the configuration pins {expected}; \
         if the new file is the one you meant to deploy, update `sha256` to {actual}"
    )]
    PinMismatch {
        /// The file.
        source_label: String,
        /// The pinned digest.
        expected: String,
        /// The file's digest.
        actual: String,
    },
    /// The pin is not a SHA-256 hex string.
    #[error("plugin {source_label}: `sha256` must be 64 hex digits, got {pin:?}")]
    BadPin {
        /// The file.
        source_label: String,
        /// The configured value.
        pin: String,
    },
    /// The file is not a usable component for this contract.
    #[error("plugin {source_label} is not a keystore plugin: {reason}")]
    NotAPlugin {
        /// The file.
        source_label: String,
        /// What is wrong.
        reason: String,
    },
    /// A granted capability cannot be set up.
    #[error("plugin {source_label}: {reason}")]
    Grant {
        /// The file.
        source_label: String,
        /// What is wrong.
        reason: String,
    },
    /// The plugin refused to open: bad settings, or a backend it cannot use.
    #[error("plugin {source_label} failed to open: {error}")]
    Open {
        /// The file.
        source_label: String,
        /// The plugin's answer.
        error: Error,
    },
    /// The runtime itself could not be set up.
    #[error("cannot set up the plugin runtime: {0}")]
    Runtime(String),
}

/// A setting a plugin reads, as it describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// The key.
    pub name: String,
    /// Whether `open` fails without it.
    pub required: bool,
    /// Whether the value is secret.
    pub secret: bool,
    /// What it is, for operators.
    pub description: String,
}

/// What a plugin says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginInfo {
    /// Its short name, e.g. `fs`.
    pub name: String,
    /// Its version.
    pub version: String,
    /// Optional capabilities.
    pub features: Vec<String>,
    /// Every setting it reads.
    pub settings: Vec<Setting>,
}

/// How a component was made ready to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompileSource {
    /// Already compiled by this runtime.
    Memory,
    /// Loaded from the on-disk artifact cache.
    DiskCache,
    /// Compiled now.
    Compiled,
}

/// Options of a [`Runtime`].
#[derive(Debug, Clone, Default)]
pub struct RuntimeOptions {
    /// Where precompiled plugins are cached; `None` disables the disk cache.
    pub cache_dir: Option<PathBuf>,
    /// Extra CA certificates (DER) trusted for plugins' HTTPS requests, besides the
    /// Mozilla roots.
    pub extra_roots: Vec<Vec<u8>>,
}

/// The shared machinery of all plugins: the engine, its deadline clock, the linker
/// of host interfaces, the compile caches and the pooled HTTP client.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<RuntimeInner>,
}

struct RuntimeInner {
    engine: Engine,
    linker: Linker<HostState>,
    http: egress::HttpClient,
    disk: Option<cache::ArtifactCache>,
    compiled: Mutex<HashMap<[u8; 32], Component>>,
    log_capture: Arc<stdio::LogCapture>,
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime").finish_non_exhaustive()
    }
}

impl Runtime {
    /// Sets up the engine, the deadline clock and the host interfaces.
    pub fn new(options: RuntimeOptions) -> Result<Self, LoadError> {
        let runtime_err = |e: &dyn fmt::Display| LoadError::Runtime(e.to_string());
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        config.wasm_component_model(true);
        // This wasmtime is built without its `gc` and `threads` features, and the
        // release keyhost pins accepts GC subtypes and atomic waits anyway, then aborts
        // the whole process when a plugin reaches them (GHSA-rc4p-x33f-vpr2,
        // GHSA-2674-w29h-wqvj). Keystores need neither: validation refuses them.
        config.wasm_gc(false);
        config.wasm_features(
            wasmtime::WasmFeatures::THREADS | wasmtime::WasmFeatures::SHARED_EVERYTHING_THREADS,
            false,
        );
        let engine = Engine::new(&config).map_err(|e| runtime_err(&e))?;

        let mut linker = Linker::<HostState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(|e| runtime_err(&e))?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(|e| runtime_err(&e))?;
        wasmtime_wasi_config::add_to_linker(&mut linker, |h: &mut HostState| WasiConfig::new(&h.config))
            .map_err(|e| runtime_err(&e))?;

        let roots: Vec<_> = options
            .extra_roots
            .iter()
            .map(|der| rustls::pki_types::CertificateDer::from(der.clone()))
            .collect();
        let http = egress::HttpClient::new(&roots).map_err(|e| runtime_err(&e))?;
        let disk = match &options.cache_dir {
            Some(dir) => Some(cache::ArtifactCache::open(dir).map_err(LoadError::Runtime)?),
            None => None,
        };

        let weak = engine.weak();
        std::thread::Builder::new()
            .name("keyhost-plugin-clock".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })
            .map_err(|e| runtime_err(&e))?;

        Ok(Self {
            inner: Arc::new(RuntimeInner {
                engine,
                linker,
                http,
                disk,
                compiled: Mutex::new(HashMap::new()),
                log_capture: Arc::default(),
            }),
        })
    }

    /// Starts (`true`) or stops keeping every line that the plugins of this runtime
    /// write to stdout or stderr — every instance, from its first call, before rate
    /// limiting — for [`Runtime::captured_log`]. The conformance kit uses it to check
    /// that a plugin never prints a record or a credential; a server never does.
    pub fn capture_log(&self, on: bool) {
        self.inner.log_capture.set(on);
    }

    /// The lines kept since the capture started (or since the last call). A line
    /// still unfinished in a live instance appears once the instance ends, so
    /// recycle plugins first to see everything.
    pub fn captured_log(&self) -> CapturedLog {
        self.inner.log_capture.take()
    }

    /// Compiles `bytes` (or fetches the compiled form from the caches) and checks
    /// that it is a keystore plugin this host can run.
    pub fn prepare(&self, label: &str, bytes: &[u8]) -> Result<(Component, CompileSource), LoadError> {
        let (component, how) = self.compile(label, bytes)?;
        self.check_shape(label, &component)?;
        Ok((component, how))
    }

    /// Compiles `bytes`, or fetches the compiled form from the caches.
    fn compile(&self, label: &str, bytes: &[u8]) -> Result<(Component, CompileSource), LoadError> {
        let digest: [u8; 32] = Sha256::digest(bytes).into();
        let inner = &self.inner;
        let cached = lock(&inner.compiled).get(&digest).cloned();
        let (component, how) = match cached {
            Some(c) => (c, CompileSource::Memory),
            None => {
                let from_disk = inner.disk.as_ref().and_then(|d| d.load(&inner.engine, &digest));
                let (component, how) = match from_disk {
                    Some(c) => (c, CompileSource::DiskCache),
                    None => {
                        let component = Component::new(&inner.engine, bytes).map_err(|e| LoadError::NotAPlugin {
                            source_label: label.to_owned(),
                            reason: format!("not a valid WebAssembly component: {e:#}"),
                        })?;
                        if let Some(disk) = &inner.disk {
                            disk.store(&inner.engine, &digest, &component);
                        }
                        (component, CompileSource::Compiled)
                    }
                };
                lock(&inner.compiled).insert(digest, component.clone());
                (component, how)
            }
        };
        Ok((component, how))
    }

    /// Describes a component without opening it: size, SHA-256 (the value to pin),
    /// imports and exports, whether this host can run it as a keystore plugin, and
    /// — when it can — what its `info` function says. `info` runs in a sandbox with
    /// no grants and no settings.
    pub async fn inspect(&self, source: &PluginSource) -> Result<Inspection, LoadError> {
        let label = source.label();
        let bytes = read_source(source, &label)?;
        let sha256 = hex::encode(Sha256::digest(&bytes));
        let (component, _) = self.compile(&label, &bytes)?;
        let ty = component.component_type();
        let engine = &self.inner.engine;
        let mut imports: Vec<String> = ty.imports(engine).map(|(n, _)| n.to_owned()).collect();
        let mut exports: Vec<String> = ty.exports(engine).map(|(n, _)| n.to_owned()).collect();
        imports.sort();
        exports.sort();
        let mut inspection = Inspection {
            label: label.clone(),
            size: bytes.len(),
            sha256,
            imports,
            exports,
            problem: None,
            info: None,
        };
        if let Err(e) = self.check_shape(&label, &component) {
            inspection.problem = Some(e.to_string());
            return Ok(inspection);
        }
        let spec = PluginSpec::new("inspect", source.clone());
        match self.shared(&spec, &label, inspection.sha256.clone(), &component) {
            Err(e) => inspection.problem = Some(e.to_string()),
            Ok(shared) => match shared.spawn_unopened().await {
                Ok(_) => inspection.info = lock(&shared.info).clone(),
                Err(e) => inspection.problem = Some(format!("its info function failed: {e}")),
            },
        }
        Ok(inspection)
    }

    fn check_shape(&self, label: &str, component: &Component) -> Result<(), LoadError> {
        let engine = &self.inner.engine;
        let ty = component.component_type();
        let not_a_plugin = |reason: String| LoadError::NotAPlugin {
            source_label: label.to_owned(),
            reason,
        };
        let exports: Vec<String> = ty.exports(engine).map(|(name, _)| name.to_owned()).collect();
        if !exports.iter().any(|e| e == STORE_EXPORT) {
            let similar: Vec<&String> = exports.iter().filter(|e| e.starts_with("keyhost:keystore/")).collect();
            return Err(not_a_plugin(if similar.is_empty() {
                format!(
                    "it does not export {STORE_EXPORT} (it exports: {}); build it against wit/keystore.wit",
                    if exports.is_empty() {
                        "nothing".to_owned()
                    } else {
                        exports.join(", ")
                    }
                )
            } else {
                format!(
                    "it exports {} but this keyhost speaks {STORE_EXPORT}; rebuild it against this keyhost's wit/keystore.wit",
                    similar.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                )
            }));
        }
        let unknown: Vec<String> = ty
            .imports(engine)
            .map(|(name, _)| name.to_owned())
            .filter(|name| !PROVIDED_IMPORTS.iter().any(|p| name.starts_with(p)))
            .collect();
        if !unknown.is_empty() {
            return Err(not_a_plugin(format!(
                "it imports {}, which keyhost does not provide (a plugin may import wasi:config/store, \
                 wasi:http/outgoing-handler and the WASI 0.2 cli, clocks, filesystem, io, random and sockets interfaces)",
                unknown.join(", ")
            )));
        }
        Ok(())
    }

    /// Loads a plugin and opens its first instance.
    pub async fn load(&self, spec: PluginSpec) -> Result<Plugin, LoadError> {
        let label = spec.source.label();
        let bytes = read_source(&spec.source, &label)?;
        let actual = hex::encode(Sha256::digest(&bytes));
        if let Some(pin) = &spec.sha256 {
            let pin = pin.trim().to_ascii_lowercase();
            if pin.len() != 64 || !pin.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(LoadError::BadPin {
                    source_label: label,
                    pin,
                });
            }
            if pin != actual {
                return Err(LoadError::PinMismatch {
                    source_label: label,
                    expected: pin,
                    actual,
                });
            }
        }
        if let Some(dir) = &spec.grants.dir
            && !dir.is_dir()
        {
            return Err(LoadError::Grant {
                source_label: label,
                reason: format!(
                    "the granted directory {} does not exist or is not a directory",
                    dir.display()
                ),
            });
        }
        let (component, compile) = self.prepare(&label, &bytes)?;
        let mut shared = self.shared(&spec, &label, actual, &component)?;
        if let Some(s) = Arc::get_mut(&mut shared) {
            s.compile = compile;
        }
        // Open a first instance now: a plugin that cannot serve is refused at start-up.
        let first = shared.spawn().await.map_err(|error| LoadError::Open {
            source_label: label.clone(),
            error,
        })?;
        shared.put_back(first);
        Ok(Plugin { shared })
    }

    /// The state every instance of one loaded plugin shares.
    fn shared(
        &self,
        spec: &PluginSpec,
        label: &str,
        sha256: String,
        component: &Component,
    ) -> Result<Arc<Shared>, LoadError> {
        let pre = self
            .inner
            .linker
            .instantiate_pre(component)
            .and_then(KeystorePluginPre::new)
            .map_err(|e| LoadError::NotAPlugin {
                source_label: label.to_owned(),
                reason: format!("{e:#}"),
            })?;
        let name: Arc<str> = spec.name.as_str().into();
        Ok(Arc::new(Shared {
            name,
            label: label.to_owned(),
            sha256,
            compile: CompileSource::Memory,
            info: Mutex::new(None),
            pre,
            engine: self.inner.engine.clone(),
            config: Arc::new(spec.config.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
            dir: spec.grants.dir.clone(),
            egress_allowed: spec.grants.http.clone().into(),
            http: self.inner.http.clone(),
            limits: Limits {
                instances: spec.limits.instances.max(1),
                ..spec.limits
            },
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(spec.limits.instances.max(1)),
            waiting: AtomicUsize::new(0),
            generation: AtomicU64::new(0),
            log_budget: Arc::default(),
            log_capture: self.inner.log_capture.clone(),
            stats: Counters::default(),
        }))
    }
}

/// The bytes of a plugin.
fn read_source(source: &PluginSource, label: &str) -> Result<std::borrow::Cow<'static, [u8]>, LoadError> {
    Ok(match source {
        PluginSource::File(path) => std::fs::read(path)
            .map_err(|error| LoadError::Read {
                source_label: label.to_owned(),
                error,
            })?
            .into(),
        PluginSource::Embedded { bytes, .. } => (*bytes).into(),
    })
}

/// What [`Runtime::inspect`] found.
#[derive(Debug, Clone)]
pub struct Inspection {
    /// The file or bundled name.
    pub label: String,
    /// Size in bytes.
    pub size: usize,
    /// Lowercase hex SHA-256: the value for a `sha256` pin.
    pub sha256: String,
    /// Imported interfaces, sorted.
    pub imports: Vec<String>,
    /// Exported interfaces, sorted.
    pub exports: Vec<String>,
    /// Why this host cannot run it as a keystore plugin, if it cannot.
    pub problem: Option<String>,
    /// What its `info` function says, when it could be asked.
    pub info: Option<PluginInfo>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The per-instance state of the host interfaces.
struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    http: WasiHttpCtx,
    egress: egress::Egress,
    config: Arc<WasiConfigVariables>,
    limiter: MemoryLimiter,
    /// When the running call (or instantiation) must stop.
    deadline: Instant,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.egress,
        }
    }
}

struct MemoryLimiter {
    limit: usize,
    hit: bool,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.limit {
            self.hit = true;
            wasmtime::bail!("the plugin exceeded its memory limit of {} bytes", self.limit);
        }
        Ok(maximum.is_none_or(|max| desired <= max))
    }

    fn table_growing(&mut self, _current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000 && maximum.is_none_or(|max| desired <= max))
    }
}

/// Counters of a plugin's activity.
#[derive(Debug, Default)]
struct Counters {
    calls: AtomicU64,
    errors: AtomicU64,
    traps: AtomicU64,
    timeouts: AtomicU64,
    memory_exhausted: AtomicU64,
    instances_started: AtomicU64,
    instances_discarded: AtomicU64,
}

/// A snapshot of a plugin's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PluginStats {
    /// Calls made (including failed ones).
    pub calls: u64,
    /// Calls that returned an error of any kind.
    pub errors: u64,
    /// Calls that ended in a trap (a plugin defect such as a panic).
    pub traps: u64,
    /// Calls that missed their deadline.
    pub timeouts: u64,
    /// Calls that hit the memory limit.
    pub memory_exhausted: u64,
    /// Instances started.
    pub instances_started: u64,
    /// Instances discarded (after a failure, or recycled).
    pub instances_discarded: u64,
    /// Instances alive and idle right now.
    pub instances_idle: u64,
}

struct Instance {
    store: Store<HostState>,
    plugin: bindings::KeystorePlugin,
    generation: u64,
}

enum Op<'a> {
    Info,
    Open,
    Status,
    Create(&'a str, &'a [u8]),
    Get(&'a str),
    Delete(&'a str),
    List(&'a str, Option<&'a str>, u32),
}

impl Op<'_> {
    fn name(&self) -> &'static str {
        match self {
            Op::Info => "info",
            Op::Open => "open",
            Op::Status => "status",
            Op::Create(..) => "create",
            Op::Get(_) => "get",
            Op::Delete(_) => "delete",
            Op::List(..) => "list",
        }
    }
}

enum Out {
    Info(wit_types::PluginInfo),
    Unit,
    Health(wit_types::Health),
    Bytes(Vec<u8>),
    Page(wit_types::Page),
}

async fn invoke(inst: &mut Instance, op: &Op<'_>) -> wasmtime::Result<Result<Out, wit_types::Error>> {
    let store = &mut inst.store;
    let guest: &wit::Guest = inst.plugin.keyhost_keystore_store();
    Ok(match *op {
        Op::Info => Ok(Out::Info(guest.call_info(store).await?)),
        Op::Open => guest.call_open(store).await?.map(|()| Out::Unit),
        Op::Status => guest.call_status(store).await?.map(Out::Health),
        Op::Create(name, value) => guest.call_create(store, name, value).await?.map(|()| Out::Unit),
        Op::Get(name) => guest.call_get(store, name).await?.map(Out::Bytes),
        Op::Delete(name) => guest.call_delete(store, name).await?.map(|()| Out::Unit),
        Op::List(prefix, after, limit) => guest.call_list(store, prefix, after, limit).await?.map(Out::Page),
    })
}

fn from_wit(e: wit_types::Error) -> Error {
    use wit_types::Error as W;
    match e {
        W::NotFound => Error::NotFound,
        W::AlreadyExists => Error::AlreadyExists,
        W::InvalidArgument(m) => Error::InvalidArgument(m),
        W::AccessDenied(m) => Error::AccessDenied(m),
        W::Unavailable(m) => Error::Unavailable(m),
        W::Throttled(ms) => Error::Throttled {
            retry_after: ms.map(|ms| Duration::from_millis(ms.into())),
        },
        W::Unsupported(m) => Error::Unsupported(m),
        W::Other(m) => Error::Other(m),
    }
}

struct Shared {
    name: Arc<str>,
    label: String,
    sha256: String,
    compile: CompileSource,
    info: Mutex<Option<PluginInfo>>,
    pre: KeystorePluginPre<HostState>,
    engine: Engine,
    config: Arc<WasiConfigVariables>,
    dir: Option<PathBuf>,
    egress_allowed: Arc<[Origin]>,
    http: egress::HttpClient,
    limits: Limits,
    idle: Mutex<Vec<Instance>>,
    permits: Semaphore,
    waiting: AtomicUsize,
    generation: AtomicU64,
    stats: Counters,
    log_budget: Arc<stdio::LogBudget>,
    log_capture: Arc<stdio::LogCapture>,
}

/// The most resources (open files, streams, HTTP requests, pollables) one plugin
/// instance may hold at once; a call that would hold more traps.
pub const MAX_RESOURCES: usize = 1024;

/// An instance that still holds more resources than this after a call is retired
/// (and a fresh one started for the next call): a plugin that leaks a handle now
/// and then — a file it never closes, a pollable a library forgets — keeps serving,
/// and what it leaked is given back to the host.
pub const RETIRE_AT_RESOURCES: usize = 256;

impl Shared {
    fn host_state(&self) -> Result<HostState, Error> {
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdout(stdio::PluginLog {
            plugin: self.name.clone(),
            stream: "stdout",
            budget: self.log_budget.clone(),
            capture: self.log_capture.clone(),
        })
        .stderr(stdio::PluginLog {
            plugin: self.name.clone(),
            stream: "stderr",
            budget: self.log_budget.clone(),
            capture: self.log_capture.clone(),
        })
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .allow_blocking_current_thread(true);
        if let Some(dir) = &self.dir {
            wasi.preopened_dir(dir, GUEST_DIR, FsPerms::ReadWrite)
                .map_err(|e| Error::Unavailable(format!("cannot open the granted directory {}: {e}", dir.display())))?;
        }
        let mut table = ResourceTable::new();
        // Every open file, stream and request of a plugin is an entry: the cap bounds
        // the host descriptors and memory one instance can hold (default 1,000,000).
        table.set_max_capacity(MAX_RESOURCES);
        Ok(HostState {
            wasi: wasi.build(),
            table,
            http: WasiHttpCtx::new(),
            egress: egress::Egress {
                plugin: self.name.clone(),
                allowed: self.egress_allowed.clone(),
                client: self.http.clone(),
            },
            config: self.config.clone(),
            limiter: MemoryLimiter {
                limit: self.limits.memory,
                hit: false,
            },
            deadline: Instant::now() + self.limits.timeout,
        })
    }

    /// Starts a fresh instance, learns its info (first time) and opens it.
    async fn spawn(&self) -> Result<Instance, Error> {
        let mut inst = self.spawn_unopened().await?;
        self.run(&mut inst, &Op::Open).await.map_err(Failure::into_error)?;
        Ok(inst)
    }

    /// A new instance whose `info` has been read but that is not opened.
    async fn spawn_unopened(&self) -> Result<Instance, Error> {
        let mut store = Store::new(&self.engine, self.host_state()?);
        store.limiter(|h| &mut h.limiter);
        // At every epoch tick, yield to the runtime until the call's deadline, then
        // trap: wasm that computes shares the runtime's threads with other work.
        store.epoch_deadline_callback(|store| {
            if Instant::now() < store.data().deadline {
                Ok(UpdateDeadline::YieldCustom(1, Box::pin(tokio::task::yield_now())))
            } else {
                Ok(UpdateDeadline::Interrupt)
            }
        });
        store.set_epoch_deadline(1);
        let instantiate = self.pre.instantiate_async(&mut store);
        let plugin = match tokio::time::timeout(self.limits.timeout, instantiate).await {
            Ok(Ok(plugin)) => plugin,
            Ok(Err(e)) => {
                return Err(Error::Other(format!("cannot start plugin '{}': {e:#}", self.name)));
            }
            Err(_) => return Err(self.timeout_error("start")),
        };
        self.stats.instances_started.fetch_add(1, Ordering::Relaxed);
        let mut inst = Instance {
            store,
            plugin,
            generation: self.generation.load(Ordering::Acquire),
        };
        if lock(&self.info).is_none() {
            let Out::Info(info) = self.run(&mut inst, &Op::Info).await.map_err(Failure::into_error)? else {
                unreachable!("info returns info")
            };
            *lock(&self.info) = Some(PluginInfo {
                name: info.name,
                version: info.version,
                features: info.features,
                settings: info
                    .settings
                    .into_iter()
                    .map(|s| Setting {
                        name: s.name,
                        required: s.required,
                        secret: s.secret,
                        description: s.description,
                    })
                    .collect(),
            });
        }
        Ok(inst)
    }

    fn timeout_error(&self, what: &str) -> Error {
        Error::Unavailable(format!(
            "keystore plugin '{}' did not finish {what} within {} ms",
            self.name,
            self.limits.timeout.as_millis()
        ))
    }

    /// Runs one call on an instance the caller owns. A [`Failure::Broken`] (trap,
    /// missed deadline, memory limit) means the instance must be dropped.
    async fn run(&self, inst: &mut Instance, op: &Op<'_>) -> Result<Out, Failure> {
        inst.store.data_mut().deadline = Instant::now() + self.limits.timeout;
        inst.store.set_epoch_deadline(1);
        // Epochs stop wasm code; the timer stops a call blocked in host I/O.
        let outcome = tokio::time::timeout(self.limits.timeout + EPOCH_TICK * 5, invoke(inst, op)).await;
        match outcome {
            Ok(Ok(Ok(out))) => Ok(out),
            Ok(Ok(Err(e))) => Err(Failure::Answer(from_wit(e))),
            Ok(Err(trap)) => Err(Failure::Broken(self.classify(inst, op, &trap))),
            Err(_) => {
                self.stats.timeouts.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(plugin = %self.name, op = op.name(), "plugin blocked past its deadline; instance discarded");
                Err(Failure::Broken(self.timeout_error(op.name())))
            }
        }
    }

    fn classify(&self, inst: &Instance, op: &Op<'_>, trap: &wasmtime::Error) -> Error {
        if inst.store.data().limiter.hit {
            self.stats.memory_exhausted.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(plugin = %self.name, op = op.name(), "plugin hit its memory limit; instance discarded");
            return Error::Other(format!(
                "keystore plugin '{}' exceeded its memory limit of {} MiB",
                self.name,
                self.limits.memory >> 20
            ));
        }
        if trap.downcast_ref::<wasmtime::Trap>() == Some(&wasmtime::Trap::Interrupt) {
            self.stats.timeouts.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(plugin = %self.name, op = op.name(), "plugin missed its deadline; instance discarded");
            return self.timeout_error(op.name());
        }
        self.stats.traps.fetch_add(1, Ordering::Relaxed);
        let reason = trap
            .downcast_ref::<wasmtime::Trap>()
            .map_or_else(|| format!("{trap}"), |t| t.to_string());
        tracing::warn!(plugin = %self.name, op = op.name(), %reason, "plugin trapped; instance discarded");
        Error::Other(format!(
            "keystore plugin '{}' crashed during {}: {reason}",
            self.name,
            op.name()
        ))
    }

    fn put_back(&self, mut inst: Instance) {
        let held = inst.store.data_mut().table.iter_mut().count();
        if held > RETIRE_AT_RESOURCES {
            tracing::debug!(plugin = %self.name, held, "instance holds too many resources after a call; retired");
            self.stats.instances_discarded.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if inst.generation == self.generation.load(Ordering::Acquire) {
            lock(&self.idle).push(inst);
        } else {
            self.stats.instances_discarded.fetch_add(1, Ordering::Relaxed);
        }
    }

    async fn call(&self, op: Op<'_>) -> Result<Out, Error> {
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        let result = self.call_inner(op).await;
        if result.is_err() {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    async fn call_inner(&self, op: Op<'_>) -> Result<Out, Error> {
        let _permit = match self.permits.try_acquire() {
            Ok(permit) => permit,
            Err(_) => {
                // Every instance is busy: wait in the bounded queue, or be refused.
                let waiting = self.waiting.fetch_add(1, Ordering::AcqRel) + 1;
                let _guard = DecrementOnDrop(&self.waiting);
                if waiting > self.limits.max_waiting {
                    return Err(Error::Unavailable(format!(
                        "keystore plugin '{}' is overloaded: {} calls are already waiting",
                        self.name, self.limits.max_waiting
                    )));
                }
                match tokio::time::timeout(self.limits.timeout, self.permits.acquire()).await {
                    Ok(Ok(permit)) => permit,
                    Ok(Err(_)) => {
                        return Err(Error::Unavailable("the plugin is shutting down".into()));
                    }
                    Err(_) => return Err(self.timeout_error("waiting for a free instance")),
                }
            }
        };
        let idle = lock(&self.idle).pop();
        let mut inst = match idle {
            Some(inst) => inst,
            None => self.spawn().await?,
        };
        match self.run(&mut inst, &op).await {
            Ok(out) => {
                self.put_back(inst);
                Ok(out)
            }
            Err(Failure::Answer(error)) => {
                self.put_back(inst);
                Err(error)
            }
            Err(Failure::Broken(error)) => {
                self.stats.instances_discarded.fetch_add(1, Ordering::Relaxed);
                Err(error)
            }
        }
    }
}

/// How a call on an instance failed.
enum Failure {
    /// The plugin answered with an error; the instance is fine.
    Answer(Error),
    /// The instance trapped, missed its deadline or hit its memory limit.
    Broken(Error),
}

impl Failure {
    fn into_error(self) -> Error {
        match self {
            Failure::Answer(e) | Failure::Broken(e) => e,
        }
    }
}

struct DecrementOnDrop<'a>(&'a AtomicUsize);

impl Drop for DecrementOnDrop<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A loaded keystore plugin: a pool of sandboxed instances behind the
/// [`Keystore`] trait. Cloning is cheap and shares the pool.
#[derive(Clone)]
pub struct Plugin {
    shared: Arc<Shared>,
}

impl fmt::Debug for Plugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.shared.name)
            .field("source", &self.shared.label)
            .finish_non_exhaustive()
    }
}

impl Plugin {
    /// The plugin's name (as given in its spec).
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// What the plugin says about itself.
    pub fn info(&self) -> PluginInfo {
        lock(&self.shared.info).clone().unwrap_or_else(|| PluginInfo {
            name: self.shared.name.to_string(),
            version: String::new(),
            features: vec![],
            settings: vec![],
        })
    }

    /// The SHA-256 (hex) of the component.
    pub fn sha256(&self) -> &str {
        &self.shared.sha256
    }

    /// How the component was made ready at load.
    pub fn compile_source(&self) -> CompileSource {
        self.shared.compile
    }

    /// The plugin's limits.
    pub fn limits(&self) -> Limits {
        self.shared.limits
    }

    /// Discards every instance; calls already running finish on theirs, which are
    /// then discarded too. The next call starts a fresh instance.
    pub fn recycle(&self) {
        self.shared.generation.fetch_add(1, Ordering::AcqRel);
        let idle = std::mem::take(&mut *lock(&self.shared.idle));
        self.shared
            .stats
            .instances_discarded
            .fetch_add(idle.len() as u64, Ordering::Relaxed);
    }

    /// A snapshot of the plugin's counters.
    pub fn stats(&self) -> PluginStats {
        let c = &self.shared.stats;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        PluginStats {
            calls: get(&c.calls),
            errors: get(&c.errors),
            traps: get(&c.traps),
            timeouts: get(&c.timeouts),
            memory_exhausted: get(&c.memory_exhausted),
            instances_started: get(&c.instances_started),
            instances_discarded: get(&c.instances_discarded),
            instances_idle: lock(&self.shared.idle).len() as u64,
        }
    }
}

#[async_trait]
impl Keystore for Plugin {
    async fn create(&self, name: &str, value: &[u8]) -> Result<(), Error> {
        self.shared.call(Op::Create(name, value)).await.map(drop)
    }

    async fn get(&self, name: &str) -> Result<Record, Error> {
        match self.shared.call(Op::Get(name)).await? {
            Out::Bytes(bytes) if bytes.len() > MAX_RECORD_LEN => {
                drop(Zeroizing::new(bytes));
                Err(Error::Other(format!(
                    "keystore plugin '{}' returned a record larger than {MAX_RECORD_LEN} bytes",
                    self.shared.name
                )))
            }
            Out::Bytes(bytes) => Ok(Zeroizing::new(bytes)),
            _ => Err(Error::Other("plugin returned the wrong type".into())),
        }
    }

    async fn delete(&self, name: &str) -> Result<(), Error> {
        self.shared.call(Op::Delete(name)).await.map(drop)
    }

    async fn list(&self, prefix: &str, after: Option<&str>, limit: u32) -> Result<Page, Error> {
        match self.shared.call(Op::List(prefix, after, limit.max(1))).await? {
            Out::Page(page) => Ok(Page {
                names: page.names,
                next: page.next,
            }),
            _ => Err(Error::Other("plugin returned the wrong type".into())),
        }
    }

    fn runtime_stats(&self) -> Option<keyhost_keystore::RuntimeStats> {
        let s = self.stats();
        Some(keyhost_keystore::RuntimeStats {
            instances_started: s.instances_started,
            instances_discarded: s.instances_discarded,
            traps: s.traps,
            timeouts: s.timeouts,
            memory_exhausted: s.memory_exhausted,
        })
    }

    async fn status(&self) -> Result<Status, Error> {
        let start = Instant::now();
        match self.shared.call(Op::Status).await? {
            Out::Health(health) => Ok(Status {
                latency: health
                    .latency_ms
                    .map_or_else(|| start.elapsed(), |ms| Duration::from_millis(ms.into())),
                detail: health.detail,
            }),
            _ => Err(Error::Other("plugin returned the wrong type".into())),
        }
    }
}
