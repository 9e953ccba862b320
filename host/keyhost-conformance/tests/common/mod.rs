//! What the conformance crate's test binaries share.

use keyhost_conformance::{KitOptions, Report};
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

/// The kit failed no case, skipped exactly `skipped` (in the kit's order), and
/// passed every other case, the randomized ones included.
#[allow(dead_code, reason = "Not every test binary runs the whole kit")]
pub fn assert_passed_but(report: &Report, skipped: &[&str]) {
    assert_eq!(report.failed(), 0, "{}", report.to_text());
    let got: Vec<&str> = report
        .cases
        .iter()
        .filter(|c| matches!(c.outcome, keyhost_conformance::Outcome::Skip(_)))
        .map(|c| c.id)
        .collect();
    assert_eq!(got, skipped, "{}", report.to_text());
    assert_eq!(
        report.passed() + skipped.len(),
        report.cases.len(),
        "{}",
        report.to_text()
    );
}

/// Kit options that run every case through host-side sealing, with a new
/// key-encryption key, as a server with `keystore.seal` uses the plugin.
#[allow(dead_code, reason = "Not every test binary runs the kit sealed")]
pub fn sealed() -> KitOptions {
    KitOptions {
        seal: Some(std::sync::Arc::new(
            keyhost_seal::Sealer::new(vec![keyhost_seal::Kek::generate().0]).unwrap_or_else(|e| panic!("{e}")),
        )),
        ..KitOptions::default()
    }
}
