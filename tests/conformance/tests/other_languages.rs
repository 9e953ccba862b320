//! Plugins written in other languages pass the same kit: the Python plugin
//! (`plugins/python/generic`, built with componentize-py) against a service speaking
//! KES's dropped "generic" keystore protocol.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use keyhost_conformance::KitOptions;
use keyhost_plugin_host::{Grants, Origin, PluginSource, PluginSpec, Runtime, RuntimeOptions};
use keyhost_test_support::{GenericService, build_python_plugin};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_plugin_passes_the_kit() {
    let wasm = build_python_plugin("generic");
    let service = GenericService::start();
    let mut spec = PluginSpec::new("generic-py", PluginSource::File(wasm));
    spec.config.insert("endpoint".into(), service.url());
    spec.grants = Grants {
        http: vec![Origin::parse(&service.url()).unwrap()],
        dir: None,
    };
    let cache = tempfile::tempdir().unwrap();
    let runtime = Runtime::new(RuntimeOptions {
        cache_dir: Some(cache.path().join("artifacts")),
        ..RuntimeOptions::default()
    })
    .unwrap();
    let report = keyhost_conformance::run(&runtime, spec, &KitOptions::default())
        .await
        .unwrap();
    assert_eq!(report.failed(), 0, "{}", report.to_text());
    assert_eq!(
        report.passed(),
        keyhost_conformance::CASES.len(),
        "{}",
        report.to_text()
    );
    assert!(report.plugin_info.starts_with("generic-py "), "{}", report.plugin_info);
}
