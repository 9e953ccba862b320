//! The per-instance state of the host interfaces: the WASI and wasi:http views,
//! the settings, and the memory limiter.

use super::*;

/// The per-instance state of the host interfaces.
pub(crate) struct HostState {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) http: WasiHttpCtx,
    pub(crate) egress: egress::Egress,
    pub(crate) config: Arc<WasiConfigVariables>,
    pub(crate) limiter: MemoryLimiter,
    /// When the running call (or instantiation) must stop.
    pub(crate) deadline: Instant,
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

/// The memory one instance may hold, all of it together: its linear memories,
/// its tables and the host-side buffers of its outgoing HTTP requests. Shared by
/// the limiter (the store's) and the instance's egress hooks.
#[derive(Debug)]
pub(crate) struct InstanceBudget {
    limit: usize,
    used: std::sync::atomic::AtomicUsize,
}

impl InstanceBudget {
    pub(crate) fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            used: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// Takes `bytes` more, unless the instance would then hold more than its limit.
    pub(crate) fn try_take(&self, bytes: usize) -> bool {
        use std::sync::atomic::Ordering::AcqRel;
        self.used
            .fetch_update(AcqRel, std::sync::atomic::Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|&total| total <= self.limit)
            })
            .is_ok()
    }

    /// Gives `bytes` back.
    pub(crate) fn give_back(&self, bytes: usize) {
        self.used.fetch_sub(bytes, std::sync::atomic::Ordering::AcqRel);
    }
}

/// What one table element is counted as: a reference and its type.
const TABLE_ELEMENT_BYTES: usize = 16;

/// How many core instances, linear memories and tables one plugin instance may
/// create. Each linear memory reserves gigabytes of address space however little
/// it uses, so their number is bounded as well as their sizes. The shipped plugins
/// (Rust, Python, JavaScript) use far fewer.
pub(crate) const MAX_CORE_INSTANCES: usize = 256;
pub(crate) const MAX_MEMORIES: usize = 8;
pub(crate) const MAX_TABLES: usize = 64;

pub(crate) struct MemoryLimiter {
    pub(crate) limit: usize,
    pub(crate) hit: bool,
    pub(crate) budget: Arc<InstanceBudget>,
    /// What the last growth took, to give back if the growth then failed.
    pub(crate) pending: usize,
}

impl MemoryLimiter {
    fn grow(&mut self, current: usize, desired: usize, maximum: Option<usize>, unit: usize) -> wasmtime::Result<bool> {
        if maximum.is_some_and(|max| desired > max) {
            return Ok(false);
        }
        let more = desired.saturating_sub(current).saturating_mul(unit);
        if !self.budget.try_take(more) {
            self.hit = true;
            wasmtime::bail!(
                "the plugin exceeded its memory limit of {} bytes (its memories, tables and HTTP buffers together)",
                self.limit
            );
        }
        self.pending = more;
        Ok(true)
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        self.grow(current, desired, maximum, 1)
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.budget.give_back(std::mem::take(&mut self.pending));
        Ok(())
    }

    fn table_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        self.grow(current, desired, maximum, TABLE_ELEMENT_BYTES)
    }

    fn table_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.budget.give_back(std::mem::take(&mut self.pending));
        Ok(())
    }

    fn instances(&self) -> usize {
        MAX_CORE_INSTANCES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }
}
