//! The kit passes the fs plugin and fails every deliberately broken plugin with the
//! case that names its defect.

#![expect(clippy::unwrap_used, reason = "Tests and benchmarks fail loudly by design")]

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use keyhost_conformance::{KitOptions, Outcome, Report};
use keyhost_plugin_host::{Grants, PluginSource, PluginSpec};

fn wasm(package: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        keyhost_plugin_build::build(&["keyhost-plugin-fs", "keyhost-test-faulty", "keyhost-test-faulty-raw"])
            .unwrap_or_else(|e| panic!("{e}"));
    });
    keyhost_plugin_build::wasm_path(package)
}

async fn kit(package: &str, config: &[(&str, &str)], skip: Option<&str>) -> (Report, tempfile::TempDir) {
    let options = KitOptions {
        skip: skip.map(str::to_owned),
        ..KitOptions::default()
    };
    kit_with(package, config, &options).await
}

async fn kit_with(package: &str, config: &[(&str, &str)], options: &KitOptions) -> (Report, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = PluginSpec::new(package, PluginSource::File(wasm(package)));
    spec.config = config
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect::<BTreeMap<_, _>>();
    spec.grants = Grants {
        http: vec![],
        dir: Some(dir.path().to_owned()),
        ..Grants::default()
    };
    // Compiled plugins are kept where the other tests keep them: the kit, not the
    // compiler, is under test here.
    let runtime = common::runtime();
    let report = keyhost_conformance::run(&runtime, spec, options).await.unwrap();
    (report, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fs_plugin_passes_every_case_and_leaves_nothing_behind() {
    // With the listing of 20,000 names.
    let options = KitOptions {
        scale: true,
        ..KitOptions::default()
    };
    let (report, dir) = kit_with("keyhost-plugin-fs", &[], &options).await;
    print!("{}", report.to_text());
    assert_eq!(report.cases.len(), keyhost_conformance::CASES.len());
    // The fs plugin reads no settings and is granted no outbound HTTP, so only the
    // cases of settings and of HTTP backends cannot apply.
    common::assert_passed_but(&report, FS_SKIPS);
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "the kit left {left:?} behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fs_plugin_passes_every_case_with_host_side_sealing() {
    let (report, dir) = kit_with("keyhost-plugin-fs", &[], &common::sealed()).await;
    common::assert_passed_but(&report, &[FS_SKIPS, &["scale.listing"]].concat());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "the kit cleans up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_plugin_without_a_defect_passes() {
    let (report, _dir) = kit(
        "keyhost-test-faulty",
        &[("defect", "none"), PASSWORD],
        Some("list.pages.2500"),
    )
    .await;
    // The credential is one the plugin's backend (a directory) never checks.
    common::assert_passed_but(&report, CONTROL_SKIPS);
    let skip = "list.pages.1000,list.pages.2500";
    let (report, _dir) = kit("keyhost-test-faulty-raw", &[("defect", "none"), SUBDIR], Some(skip)).await;
    common::assert_passed_but(&report, CONTROL_SKIPS);
}

/// What the fs plugin cannot be checked for: settings (it reads none), an HTTP
/// backend, and another wording of its settings.
const FS_SKIPS: &[&str] = &[
    "open.missing-setting",
    "open.malformed-setting",
    "env.same-backend",
    "env.http-revoked",
    "env.backend-gone",
    "env.credential-refused",
];

/// What the control plugins, directory stores with settings, cannot be checked for.
const CONTROL_SKIPS: &[&str] = &[
    "env.same-backend",
    "env.http-revoked",
    "env.backend-gone",
    "env.credential-refused",
    "scale.listing",
];

/// Each defect and the case that must name it.
const DEFECTS: &[(&str, &str)] = &[
    ("non-atomic-create", "create.concurrent-same"),
    ("overwrite-existing", "create.exists"),
    ("unsorted-list", "list.sorted"),
    ("pagination-drops-name", "list.pages.1000"),
    ("get-other-bytes", "create.roundtrip.64kib"),
    ("delete-does-nothing", "delete.then-get"),
    ("wrong-error-case", "get.missing"),
    ("memory-only", "recycle.durable"),
    ("fold-case", "names.case"),
    ("create-fails", "create.roundtrip.empty"),
    ("list-next-on-full-last-page", "list.pages.boundaries"),
    ("list-limit-plus-one", "list.pages.boundaries"),
    ("list-after-inclusive", "list.after"),
    ("list-prefix-ignores-case", "names.neighbours"),
    ("get-prefix-match", "names.neighbours"),
    ("delete-takes-neighbours", "names.neighbours"),
    ("value-trim-end", "records.text"),
    ("value-crlf-to-lf", "records.text"),
    ("value-cut-at-nul", "records.text"),
    ("empty-is-missing", "create.roundtrip.empty"),
    ("create-over-empty", "records.empty"),
    ("slash-to-underscore", "names.non-portable"),
    ("names-cut-at-64", "names.edges"),
    ("non-ascii-to-question-mark", "names.non-portable"),
    ("instance-cache", "instances.shared-state"),
    ("delete-missing-ok", "delete.missing"),
    ("delete-missing-other", "delete.missing"),
    ("exists-as-other", "create.exists"),
    ("status-unavailable", "status.answers"),
    ("list-duplicates-first", "list.sorted"),
    ("list-case-insensitive-order", "list.sorted"),
    ("list-ignores-limit", "list.pages.boundaries"),
    ("list-next-first-name", "list.pages.boundaries"),
    ("list-next-always", "list.pages.boundaries"),
    ("get-missing-unavailable", "get.missing"),
    ("truncate-64kib", "create.roundtrip.1mib"),
    ("utf8-lossy-values", "create.roundtrip.all-bytes"),
    ("tombstone-delete", "delete.then-get"),
    ("refuse-single-char", "names.edges"),
    ("refuse-dots", "names.edges"),
    ("prefix-ignored-with-after", "list.pages.boundaries"),
    ("list-shortest-first", "list.sorted"),
    ("json-gains-newline", "records.text"),
    ("list-lowercase", "list.sorted"),
    ("empty-refused", "create.roundtrip.empty"),
    ("spaces-to-underscore", "names.non-portable"),
    ("logs-records", "records.never-revealed"),
    ("logs-credential", "records.never-revealed"),
    ("error-quotes-record", "records.never-revealed"),
    ("offset-cursor", "list.pages.churn"),
    ("queued-delete", "recycle.durable"),
    ("global-lock-gives-up", "create.concurrent-distinct"),
    ("setting-unwrap", "open.malformed-setting"),
];

/// Defects of `info` and `open` that the SDK's glue makes impossible, in the plugin
/// written on the raw bindings.
const RAW_DEFECTS: &[(&str, &str)] = &[
    ("ignores-unknown-settings", "open.unknown-setting"),
    ("missing-setting-default", "open.missing-setting"),
    ("missing-setting-other", "open.missing-setting"),
    ("malformed-setting-unavailable", "open.malformed-setting"),
    ("info-reads-settings", "info.no-grant"),
    ("info-bad-version", "info.sane"),
];

/// The settings the broken plugins run with: a credential the kit must never see
/// printed, and the raw plugin's directory.
const PASSWORD: (&str, &str) = ("password", "kc-test-credential-5f1d");
const SUBDIR: (&str, &str) = ("subdir", "keys");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_broken_plugin_fails_the_case_that_names_its_defect() {
    let mut survivors = Vec::new();
    let plugins = DEFECTS
        .iter()
        .map(|d| ("keyhost-test-faulty", d, PASSWORD))
        .chain(RAW_DEFECTS.iter().map(|d| ("keyhost-test-faulty-raw", d, SUBDIR)));
    let mut controls = std::collections::BTreeSet::new();
    for (package, (defect, case), setting) in plugins {
        // Only the case that names the defect: a mutation is killed when that case
        // fails, run alone, where the same plugin without a defect does not fail it
        // (checked once per case). The kit runs in full on the fs plugin and on the
        // control plugin.
        let options = KitOptions {
            filter: Some((*case).to_owned()),
            ..KitOptions::default()
        };
        if controls.insert((package, *case)) {
            let (control, _dir) = kit_with(package, &[("defect", "none"), setting], &options).await;
            assert!(
                control.failed() == 0 && !control.cases.is_empty(),
                "{package} without a defect, case {case} alone:\n{}",
                control.to_text()
            );
        }
        let (report, _dir) = kit_with(package, &[("defect", defect), setting], &options).await;
        if !report.failed_ids().contains(case) {
            survivors.push(format!(
                "{package} defect {defect}: expected case {case} to fail; failed: {:?}\n{}",
                report.failed_ids(),
                report.to_text()
            ));
        }
    }
    let total = DEFECTS.len() + RAW_DEFECTS.len();
    let killed = total - survivors.len();
    println!("mutation score: {killed}/{total} broken plugins failed the case that names their rule");
    assert!(survivors.is_empty(), "{}", survivors.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_and_unknown_settings_are_checked() {
    // The faulty plugin requires `defect`: the kit removes it and expects a refusal.
    let (report, _dir) = kit("keyhost-test-faulty", &[("defect", "none")], Some("list.*")).await;
    let outcome = |id: &str| report.cases.iter().find(|c| c.id == id).map(|c| c.outcome.clone());
    assert_eq!(outcome("open.missing-setting"), Some(Outcome::Pass));
    assert_eq!(outcome("open.unknown-setting"), Some(Outcome::Pass));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_render_as_junit_and_json() {
    let (report, _dir) = kit("keyhost-test-faulty", &[("defect", "wrong-error-case")], Some("list.*")).await;
    let junit = report.to_junit();
    assert!(junit.contains("<testcase classname=\"keyhost.conformance\" name=\"get.missing\""));
    assert!(junit.contains("<failure message="));
    let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    let failed: Vec<&str> = json["cases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["outcome"] == "fail")
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert!(failed.contains(&"get.missing"), "{failed:?}");
    // Each failure quotes the contract's rule, in every format.
    let case = json["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "get.missing")
        .unwrap();
    assert_eq!(case["rule"], "`not-found` if there is none.");
    assert!(
        case["detail"].as_str().unwrap().contains("expected not-found"),
        "{case}"
    );
    assert!(junit.contains("rule: `not-found` if there is none."), "{junit}");
    assert!(
        report
            .to_text()
            .contains("rule: \u{201c}`not-found` if there is none.\u{201d}")
    );
}
