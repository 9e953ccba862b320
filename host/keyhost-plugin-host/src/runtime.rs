//! The runtime: the engine, its deadline clock, the linker of host interfaces, the
//! compile caches; compiling and loading plugins.

use super::*;

/// How often the deadline clock ticks.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Interfaces the host provides to plugins, by prefix. Anything else a component
/// imports is refused at load, naming the import.
pub(crate) const PROVIDED_IMPORTS: &[&str] = &[
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
    pub(crate) inner: Arc<RuntimeInner>,
}

pub(crate) struct RuntimeInner {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<HostState>,
    pub(crate) http: egress::HttpClient,
    /// The extra roots of [`RuntimeOptions`], for origins with TLS settings of their own.
    pub(crate) extra_roots: Vec<rustls::pki_types::CertificateDer<'static>>,
    pub(crate) disk: Option<cache::ArtifactCache>,
    pub(crate) compiled: Mutex<HashMap<[u8; 32], Component>>,
    pub(crate) log_capture: Arc<stdio::LogCapture>,
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
            Some(dir) => Some(cache::ArtifactCache::open(dir).map_err(LoadError::CacheDir)?),
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
                extra_roots: roots,
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
    pub(crate) fn prepare(&self, label: &str, bytes: &[u8]) -> Result<(Component, CompileSource), LoadError> {
        let (component, how) = self.compile(label, bytes)?;
        self.check_shape(label, &component)?;
        Ok((component, how))
    }

    /// Compiles `bytes`, or fetches the compiled form from the caches.
    pub(crate) fn compile(&self, label: &str, bytes: &[u8]) -> Result<(Component, CompileSource), LoadError> {
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
        let shared = self.shared(&spec, &label, actual, compile, &component)?;
        // Open a first instance now: a plugin that cannot serve is refused at start-up.
        let first = shared.spawn().await.map_err(|error| LoadError::Open {
            source_label: label.clone(),
            error,
        })?;
        shared.put_back(first);
        Ok(Plugin { shared })
    }

    /// The HTTP clients of granted origins with TLS settings of their own: each must
    /// be granted and `https`.
    fn origin_clients(&self, spec: &PluginSpec, label: &str) -> Result<HashMap<Origin, egress::HttpClient>, LoadError> {
        let grant_err = |reason: String| LoadError::Grant {
            source_label: label.to_owned(),
            reason,
        };
        let mut clients = HashMap::new();
        for (origin, tls) in &spec.grants.tls {
            if !spec.grants.http.contains(origin) {
                return Err(grant_err(format!(
                    "TLS settings for {origin}, which is not granted: add it to allow.http"
                )));
            }
            if !origin.is_https() {
                return Err(grant_err(format!(
                    "TLS settings for {origin}, which is plain http: write it as https://"
                )));
            }
            let client = egress::HttpClient::for_origin(origin, tls, &self.inner.extra_roots).map_err(grant_err)?;
            clients.insert(origin.clone(), client);
        }
        Ok(clients)
    }

    /// The state every instance of one loaded plugin shares.
    pub(crate) fn shared(
        &self,
        spec: &PluginSpec,
        label: &str,
        sha256: String,
        compile: CompileSource,
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
            compile,
            info: Mutex::new(None),
            pre,
            engine: self.inner.engine.clone(),
            settings: spec.config.clone(),
            config: Mutex::new(Arc::new(
                spec.config.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            )),
            dir: spec.grants.dir.clone(),
            dir_read_only: spec.grants.dir_read_only,
            egress_allowed: spec.grants.http.clone().into(),
            http: self.inner.http.clone(),
            http_per_origin: Arc::new(self.origin_clients(spec, label)?),
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
pub(crate) fn read_source(source: &PluginSource, label: &str) -> Result<std::borrow::Cow<'static, [u8]>, LoadError> {
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
