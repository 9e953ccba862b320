//! Plugins written in other languages pass the same kit: the Python plugin
//! (`plugins/python/generic`, built with componentize-py) and the JavaScript plugin
//! (`plugins/js/generic`, built with componentize-js), each against a service
//! speaking KES's dropped "generic" keystore protocol — next to the Rust plugin of
//! the same protocol (`plugins/generic`, the SDK's HTTP example).

#![expect(clippy::unwrap_used, reason = "Tests fail loudly by design")]

mod common;

use keyhost_conformance::KitOptions;
use keyhost_plugin_host::{Grants, Limits, Origin, PluginSource, PluginSpec};
use keyhost_test_support::{GenericService, build_js_plugin, build_python_plugin};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_plugin_of_the_same_protocol_passes_the_kit() {
    // The SDK's HTTP client and error mapping, in the same role.
    let wasm = keyhost_plugin_build::build(&["keyhost-plugin-generic"]).unwrap_or_else(|e| panic!("{e}"))[0].clone();
    kit("generic", wasm, Limits::default(), &KitOptions::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_plugin_of_the_same_protocol_passes_the_kit_with_host_side_sealing() {
    let wasm = keyhost_plugin_build::build(&["keyhost-plugin-generic"]).unwrap_or_else(|e| panic!("{e}"))[0].clone();
    kit("generic", wasm, Limits::default(), &common::sealed()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_plugin_passes_the_kit() {
    kit(
        "generic-py",
        build_python_plugin("generic"),
        Limits::default(),
        &KitOptions::default(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_javascript_plugin_passes_the_kit() {
    // A JavaScript engine's heap needs more than the default 64 MiB for 1 MiB records.
    let limits = Limits {
        memory: 256 << 20,
        ..Limits::default()
    };
    kit("generic-js", build_js_plugin("generic"), limits, &KitOptions::default()).await;
}

async fn kit(name: &str, wasm: std::path::PathBuf, limits: Limits, options: &KitOptions) {
    let service = GenericService::start();
    let mut spec = PluginSpec::new(name, PluginSource::File(wasm));
    spec.limits = limits;
    spec.config.insert("endpoint".into(), service.url());
    spec.grants = Grants {
        http: vec![Origin::parse(&service.url()).unwrap()],
        dir: None,
        ..Grants::default()
    };
    // Components of 13 to 19 MB take seconds to compile: they are kept where the
    // other tests keep compiled plugins.
    let runtime = common::runtime();
    let report = keyhost_conformance::run(&runtime, spec, options).await.unwrap();
    // One endpoint and no timeout_ms to word otherwise, nothing of a directory, no
    // credential, no listing of 20,000 names.
    common::assert_passed_but(
        &report,
        &[
            "env.same-backend",
            "env.dir-read-only",
            "env.dir-removed",
            "env.dir-aged",
            "env.dir-foreign",
            "env.credential-refused",
            "scale.listing",
        ],
    );
    assert_eq!(report.plugin_name, name);
}
