//! A loaded plugin: a pool of instances behind the `Keystore` trait, with deadlines,
//! retirement and counters.

use super::*;

/// Counters of a plugin's activity.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) calls: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) traps: AtomicU64,
    pub(crate) timeouts: AtomicU64,
    pub(crate) memory_exhausted: AtomicU64,
    pub(crate) instances_started: AtomicU64,
    pub(crate) instances_discarded: AtomicU64,
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

pub(crate) struct Shared {
    pub(crate) name: Arc<str>,
    pub(crate) label: String,
    pub(crate) sha256: String,
    pub(crate) compile: CompileSource,
    pub(crate) info: Mutex<Option<PluginInfo>>,
    pub(crate) pre: KeystorePluginPre<HostState>,
    pub(crate) engine: Engine,
    /// The operator's settings.
    pub(crate) settings: BTreeMap<String, String>,
    /// What `wasi:config/store` serves: the settings, and [`DEADLINE_SETTING`] once
    /// the plugin has said that it reads it.
    pub(crate) config: Mutex<Arc<WasiConfigVariables>>,
    pub(crate) dir: Option<PathBuf>,
    pub(crate) dir_read_only: bool,
    pub(crate) egress_allowed: Arc<[Origin]>,
    pub(crate) http: egress::HttpClient,
    pub(crate) http_per_origin: Arc<HashMap<Origin, egress::HttpClient>>,
    pub(crate) limits: Limits,
    pub(crate) idle: Mutex<Vec<Instance>>,
    pub(crate) permits: Semaphore,
    pub(crate) waiting: AtomicUsize,
    pub(crate) generation: AtomicU64,
    pub(crate) stats: Counters,
    pub(crate) log_budget: Arc<stdio::LogBudget>,
    pub(crate) log_capture: Arc<stdio::LogCapture>,
}

/// The setting through which a plugin learns its time budget for one call: when
/// a plugin lists it in its `info` and the operator does not set it, keyhost
/// serves 80% of the call deadline (`limits.timeout`), in milliseconds.
pub const DEADLINE_SETTING: &str = "timeout_ms";

/// The most resources (open files, streams, HTTP requests, pollables) one plugin
/// instance may hold at once; a call that would hold more traps.
pub const MAX_RESOURCES: usize = 1024;

/// An instance that still holds more resources than this after a call is retired
/// (and a fresh one started for the next call): a plugin that leaks a handle now
/// and then — a file it never closes, a pollable a library forgets — keeps serving,
/// and what it leaked is given back to the host.
pub const RETIRE_AT_RESOURCES: usize = 256;

impl Shared {
    pub(crate) fn host_state(&self) -> Result<HostState, Error> {
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
            let perms = if self.dir_read_only {
                FsPerms::ReadOnly
            } else {
                FsPerms::ReadWrite
            };
            wasi.preopened_dir(dir, GUEST_DIR, perms)
                .map_err(|e| Error::Unavailable(format!("cannot open the granted directory {}: {e}", dir.display())))?;
        }
        let budget = host_state::InstanceBudget::new(self.limits.memory);
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
                per_origin: self.http_per_origin.clone(),
                budget: budget.clone(),
                in_flight: Arc::default(),
            },
            config: lock(&self.config).clone(),
            limiter: MemoryLimiter {
                limit: self.limits.memory,
                hit: false,
                budget,
                pending: 0,
            },
            deadline: Instant::now() + self.limits.timeout,
        })
    }

    /// Starts a fresh instance, learns its info (first time) and opens it.
    pub(crate) async fn spawn(&self) -> Result<Instance, Error> {
        let mut inst = self.spawn_unopened().await?;
        self.run(&mut inst, &Open).await.map_err(Failure::into_error)?;
        Ok(inst)
    }

    /// A new instance whose `info` has been read but that is not opened.
    pub(crate) async fn spawn_unopened(&self) -> Result<Instance, Error> {
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
            let info = self.run(&mut inst, &Info).await.map_err(Failure::into_error)?;
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
            if let Some(config) = self.with_deadline_setting(lock(&self.info).as_ref())? {
                *lock(&self.config) = config;
            }
        }
        // What this instance's `open` reads: the settings as they are once the info
        // is known, whichever spawn learnt it.
        inst.store.data_mut().config = lock(&self.config).clone();
        Ok(inst)
    }

    /// The settings with [`DEADLINE_SETTING`] added, when the plugin reads it and
    /// the operator left it out: most of the call deadline, so that a plugin's own
    /// retries end (as `unavailable`) before keyhost gives up on the instance.
    /// An operator's own value must be below the deadline: a plugin still retrying
    /// when keyhost gives up would lose its instance on every outage.
    fn with_deadline_setting(&self, info: Option<&PluginInfo>) -> Result<Option<Arc<WasiConfigVariables>>, Error> {
        let reads = info.is_some_and(|i| i.settings.iter().any(|s| s.name == DEADLINE_SETTING));
        if !reads {
            return Ok(None);
        }
        let deadline = self.limits.timeout.as_millis();
        if let Some(set) = self.settings.get(DEADLINE_SETTING).filter(|v| !v.is_empty()) {
            return match set.trim().parse::<u128>() {
                Ok(ms) if ms >= deadline => Err(Error::InvalidArgument(format!(
                    "setting '{DEADLINE_SETTING}' is {ms} ms, not below the call deadline of {deadline} ms \
                     (limits.timeout): lower it, or leave it out and keyhost sets it to 80% of the deadline"
                ))),
                // The plugin checks the value itself.
                _ => Ok(None),
            };
        }
        let budget = self.limits.timeout.mul_f64(0.8).as_millis().max(1).to_string();
        let mut settings = self.settings.clone();
        settings.insert(DEADLINE_SETTING.to_owned(), budget);
        Ok(Some(Arc::new(settings.into_iter().collect())))
    }

    pub(crate) fn timeout_error(&self, what: &str) -> Error {
        Error::Unavailable(format!(
            "keystore plugin '{}' did not finish {what} within {} ms",
            self.name,
            self.limits.timeout.as_millis()
        ))
    }

    /// Runs one call on an instance the caller owns. A [`Failure::Broken`] (trap,
    /// missed deadline, memory limit) means the instance must be dropped.
    pub(crate) async fn run<C: Call>(&self, inst: &mut Instance, call: &C) -> Result<C::Output, Failure> {
        inst.store.data_mut().deadline = Instant::now() + self.limits.timeout;
        inst.store.set_epoch_deadline(1);
        // Epochs stop wasm code; the timer stops a call blocked in host I/O.
        let outcome = tokio::time::timeout(self.limits.timeout + EPOCH_TICK * 5, call.invoke(inst)).await;
        match outcome {
            Ok(Ok(Ok(out))) => Ok(out),
            Ok(Ok(Err(e))) => Err(Failure::Answer(from_wit(e))),
            Ok(Err(trap)) => Err(Failure::Broken(self.classify(inst, C::NAME, &trap))),
            Err(_) => {
                self.stats.timeouts.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(plugin = %self.name, op = C::NAME, "plugin blocked past its deadline; instance discarded");
                Err(Failure::Broken(self.timeout_error(C::NAME)))
            }
        }
    }

    pub(crate) fn classify(&self, inst: &Instance, op: &'static str, trap: &wasmtime::Error) -> Error {
        if inst.store.data().limiter.hit {
            self.stats.memory_exhausted.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(plugin = %self.name, op, "plugin hit its memory limit; instance discarded");
            return Error::Other(format!(
                "keystore plugin '{}' exceeded its memory limit of {} MiB",
                self.name,
                self.limits.memory >> 20
            ));
        }
        if trap.downcast_ref::<wasmtime::Trap>() == Some(&wasmtime::Trap::Interrupt) {
            self.stats.timeouts.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(plugin = %self.name, op, "plugin missed its deadline; instance discarded");
            return self.timeout_error(op);
        }
        self.stats.traps.fetch_add(1, Ordering::Relaxed);
        let reason = trap
            .downcast_ref::<wasmtime::Trap>()
            .map_or_else(|| format!("{trap}"), |t| t.to_string());
        tracing::warn!(plugin = %self.name, op, %reason, "plugin trapped; instance discarded");
        Error::Other(format!(
            "keystore plugin '{}' crashed during {}: {reason}",
            self.name, op
        ))
    }

    pub(crate) fn put_back(&self, mut inst: Instance) {
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

    pub(crate) async fn call<C: Call>(&self, call: C) -> Result<C::Output, Error> {
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        let result = self.call_inner(&call).await;
        if result.is_err() {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    pub(crate) async fn call_inner<C: Call>(&self, call: &C) -> Result<C::Output, Error> {
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
        match self.run(&mut inst, call).await {
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
pub(crate) enum Failure {
    /// The plugin answered with an error; the instance is fine.
    Answer(Error),
    /// The instance trapped, missed its deadline or hit its memory limit.
    Broken(Error),
}

impl Failure {
    pub(crate) fn into_error(self) -> Error {
        match self {
            Failure::Answer(e) | Failure::Broken(e) => e,
        }
    }
}

pub(crate) struct DecrementOnDrop<'a>(&'a AtomicUsize);

impl Drop for DecrementOnDrop<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A loaded keystore plugin: a pool of sandboxed instances behind the
/// [`Keystore`] trait. Cloning is cheap and shares the pool.
#[derive(Clone)]
pub struct Plugin {
    pub(crate) shared: Arc<Shared>,
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
        self.shared.call(Create(name, value)).await
    }

    async fn get(&self, name: &str) -> Result<Record, Error> {
        let record = Zeroizing::new(self.shared.call(Get(name)).await?);
        if record.len() > MAX_RECORD_LEN {
            return Err(Error::Other(format!(
                "keystore plugin '{}' returned a record larger than {MAX_RECORD_LEN} bytes",
                self.shared.name
            )));
        }
        Ok(record)
    }

    async fn delete(&self, name: &str) -> Result<(), Error> {
        self.shared.call(Delete(name)).await
    }

    async fn list(&self, prefix: &str, after: Option<&str>, limit: u32) -> Result<Page, Error> {
        let page = self.shared.call(List(prefix, after, limit.max(1))).await?;
        Ok(Page {
            names: page.names,
            next: page.next,
        })
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
        let health = self.shared.call(Health).await?;
        Ok(Status {
            latency: health
                .latency_ms
                .map_or_else(|| start.elapsed(), |ms| Duration::from_millis(ms.into())),
            detail: health.detail,
        })
    }
}
