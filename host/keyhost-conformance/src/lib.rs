//! The keystore plugin conformance kit, shipped in the keyhost binary as
//! `keyhost plugin test`.
//!
//! [`run`] loads a plugin in the production runtime with the production limits and
//! checks the rules of the `keyhost:keystore` contract (`wit/keystore.wit`):
//!
//! - a reference model of the contract ([`CASES`] `model.*`): randomized, stateful
//!   sequences of operations from several sets of instances, checked step by step
//!   against the model, shrunk to a shortest failing sequence, with the seed that
//!   reproduces them; and concurrent operations checked for linearizability;
//! - cases for what the model cannot reach: settings, `info`, sealing, secrets in
//!   output, the surroundings failing (`env.*`), listings of tens of thousands of
//!   names (`scale.*`, with [`KitOptions::scale`]);
//! - [`contract::SENTENCES`]: every sentence of the contract, with the cases that
//!   check it or why the kit cannot.
//!
//! Each case has a stable id, so that CI systems can track cases across versions.
//! Everything the kit creates is named under a random prefix (`kc<random>-`) and
//! deleted at the end; names the contract requires that cannot carry the prefix
//! (one-character names, for instance) are only used when the backend does not
//! already hold them, and never deleted otherwise.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

/// Fails the case with a message unless `cond` holds.
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

mod cases;
pub mod contract;
mod filter;
mod kit;
mod report;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keyhost_plugin_host::{LoadError, PluginSpec, Runtime};

pub use cases::{CASES, Case, UNKNOWN_SETTING};
pub use filter::matches_filter;
pub use kit::KitOptions;
pub use report::{CaseResult, Outcome, Report};

use kit::{Kit, MAX_RECORD, random_token, record_sizes, sealed_as};

/// Runs the kit against the plugin that `spec` describes.
///
/// # Errors
///
/// Returns the load error when the plugin cannot be loaded with `spec` at all;
/// every other problem is a failed case in the report.
pub async fn run(runtime: &Runtime, spec: PluginSpec, options: &KitOptions) -> Result<Report, LoadError> {
    let plugin = runtime.load(spec.clone()).await?;
    let info = plugin.info();
    let prefix = format!("kc{}-", random_token(8));
    let seed = options.seed.unwrap_or_else(rand::random);
    let mut record_sizes = record_sizes(&info.features).unwrap_or(0..=MAX_RECORD);
    if let Some(narrower) = &options.record_sizes {
        // The deployment's settings hold less than the component declares.
        record_sizes = (*narrower.start()).max(*record_sizes.start())..=(*narrower.end()).min(*record_sizes.end());
    }
    if options.seal.is_some() {
        // Sealed, every record is larger than its plaintext, also an empty one.
        record_sizes = 0..=keyhost_seal::Sealer::max_plain(*record_sizes.end());
    }
    let store = sealed_as(&options.seal, plugin.clone());
    let kit = Kit {
        record_sizes,
        seal: options.seal.clone(),
        store,
        runtime: runtime.clone(),
        spec,
        plugin: plugin.clone(),
        prefix: prefix.clone(),
        created: Arc::new(Mutex::new(BTreeSet::new())),
        seed,
        budget: options.budget,
        scale: options.scale,
    };
    let timeout = options.case_timeout.unwrap_or(Duration::from_secs(300));
    let mut results = Vec::new();
    for case in CASES {
        if let Some(filter) = &options.filter
            && !matches_filter(filter, case.id)
        {
            continue;
        }
        if let Some(skip) = &options.skip
            && matches_filter(skip, case.id)
        {
            continue;
        }
        let start = Instant::now();
        let outcome = match tokio::time::timeout(timeout, (case.run)(&kit)).await {
            Ok(Ok(None)) => Outcome::Pass,
            Ok(Ok(Some(why))) => Outcome::Skip(why),
            Ok(Err(why)) => Outcome::Fail(why),
            Err(_) => Outcome::Fail(format!("the case did not finish within {} s", timeout.as_secs())),
        };
        results.push(CaseResult {
            id: case.id,
            title: case.title,
            rule: case.rule,
            outcome,
            seconds: start.elapsed().as_secs_f64(),
        });
    }
    kit.cleanup().await;
    Ok(Report {
        plugin: kit.spec.source.label(),
        plugin_name: info.name,
        plugin_version: info.version,
        sha256: plugin.sha256().to_owned(),
        kit_version: env!("CARGO_PKG_VERSION").to_owned(),
        seed,
        prefix,
        cases: results,
    })
}
