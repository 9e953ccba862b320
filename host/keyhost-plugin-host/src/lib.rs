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
//!
//! # Modules
//!
//! `spec` (what to load: source, settings, grants, limits), `error` (why loading
//! failed), `runtime` (the engine and its clock, compiling and loading), `shape`
//! (what a component imports, exports and says, without opening it), `host_state`
//! (the WASI and wasi:http views and the memory limiter of one instance),
//! `instance` (one call into an instance), `pool` (the [`Plugin`]: instances,
//! deadlines, retirement, counters), `egress` (the wasi:http client that checks the
//! grants), `stdio` (plugin output as log lines), `cache` (compiled artifacts on
//! disk), `bindings` (the generated WIT bindings, private). The modules split out of
//! this file import its names (`use super::*`), so each shows only its own code.

#![deny(unsafe_code)]
#![warn(missing_docs)]

mod bindings;
mod cache;
mod egress;
mod error;
mod host_state;
mod instance;
mod pool;
mod runtime;
mod shape;
mod spec;
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
pub use error::LoadError;
pub use pool::{DEADLINE_SETTING, MAX_RESOURCES, Plugin, PluginStats, RETIRE_AT_RESOURCES};
pub use runtime::{CompileSource, Runtime, RuntimeOptions};
pub use shape::Inspection;
pub use spec::{Grants, Limits, OriginTls, PluginInfo, PluginSource, PluginSpec, Setting};
pub use stdio::CapturedLog;

use bindings::KeystorePluginPre;
use bindings::exports::keyhost::keystore::store as wit;
use bindings::keyhost::keystore::types as wit_types;
use host_state::{HostState, MemoryLimiter};
use instance::{Call, Create, Delete, Get, Health, Info, Instance, List, Open, from_wit};
use pool::{Counters, Shared};
use runtime::{EPOCH_TICK, PROVIDED_IMPORTS, read_source};

/// The interface every plugin must export.
pub const STORE_EXPORT: &str = "keyhost:keystore/store@0.1.0";

/// Where a granted directory appears inside the sandbox.
pub const GUEST_DIR: &str = "/data";

/// A mutex's guard, also when a panic elsewhere poisoned it: one failed call does
/// not take the plugin's pool down with it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
