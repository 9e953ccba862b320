//! What the conformance crate's test binaries share.

use keyhost_conformance::Report;
use keyhost_plugin_host::{Plugin, PluginSpec, Runtime, RuntimeOptions};

/// A runtime that keeps compiled plugins where the other tests keep them: the
/// plugins and the kit, not the compiler, are under test.
pub fn runtime() -> Runtime {
    Runtime::new(RuntimeOptions {
        cache_dir: Some(keyhost_test_support::plugin_cache_dir()),
        ..RuntimeOptions::default()
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

/// `spec` loaded in a [`runtime`]; panics when it does not load.
#[allow(dead_code, reason = "Not every test binary loads plugins itself")]
pub async fn load(spec: PluginSpec) -> Plugin {
    runtime().load(spec).await.unwrap_or_else(|e| panic!("{e}"))
}

/// The kit failed no case and passed every one of them.
#[allow(dead_code, reason = "Not every test binary runs the whole kit")]
pub fn assert_every_case_passed(report: &Report) {
    assert_eq!(report.failed(), 0, "{}", report.to_text());
    assert_eq!(
        report.passed(),
        keyhost_conformance::CASES.len(),
        "{}",
        report.to_text()
    );
}
