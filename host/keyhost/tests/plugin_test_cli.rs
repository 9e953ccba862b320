//! `keyhost plugin test` drives the real binary: exit codes, output, report files.

#![expect(clippy::unwrap_used, reason = "Tests and benchmarks fail loudly by design")]

use std::process::Command;

fn keyhost() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_keyhost"));
    cmd.env("KEYHOST_LOG", "warn");
    cmd
}

#[test]
fn the_bundled_fs_plugin_passes_and_writes_reports() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let junit = dir.path().join("report.xml");
    let json = dir.path().join("report.json");
    let html = dir.path().join("report.html");
    // Links planted at the report paths (another user's doing, in a shared
    // directory): the reports replace them and never write through them.
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "not a report").unwrap();
    std::os::unix::fs::symlink(&victim, &junit).unwrap();
    std::os::unix::fs::symlink(&victim, &json).unwrap();
    std::os::unix::fs::symlink(&victim, &html).unwrap();
    let out = keyhost()
        .args(["plugin", "test", "builtin:fs", "--allow-dir"])
        .arg(&data)
        .args(["--skip", "list.pages.2500", "--cache-dir"])
        .arg(dir.path().join("cache"))
        .arg("--junit")
        .arg(&junit)
        .arg("--json")
        .arg(&json)
        .arg("--html")
        .arg(&html)
        .args(["--seed", "7"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("ok   create.concurrent-same"), "{stdout}");
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
    assert!(
        std::fs::read_to_string(&junit)
            .unwrap()
            .contains("<testsuite name=\"keyhost-conformance\"")
    );
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert!(report["cases"].as_array().unwrap().len() > 20);
    assert_eq!(report["seed"], 7);
    assert!(stdout.contains("reproduce with --seed 7"), "{stdout}");
    // Every form names the component's SHA-256.
    let sha256 = report["sha256"].as_str().unwrap().to_owned();
    assert_eq!(sha256.len(), 64);
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.starts_with("<!DOCTYPE html>") && page.contains(&sha256), "{page}");
    assert!(std::fs::read_to_string(&junit).unwrap().contains(&sha256));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "not a report");
    for report in [&junit, &json, &html] {
        assert!(
            std::fs::symlink_metadata(report).unwrap().is_file(),
            "{}",
            report.display()
        );
    }
}

#[test]
fn a_broken_plugin_exits_1_naming_the_failed_case() {
    let wasm = keyhost_plugin_build::build(&["keyhost-test-faulty"]).unwrap_or_else(|e| panic!("{e}"))[0].clone();
    let data = tempfile::tempdir().unwrap();
    let out = keyhost()
        .args(["plugin", "test"])
        .arg(&wasm)
        .args([
            "--config",
            "defect=unsorted-list",
            "--no-cache",
            "--filter",
            "list.sorted",
            "--allow-dir",
        ])
        .arg(data.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("FAIL list.sorted"), "{stdout}");
    assert!(stdout.contains("0 passed, 1 failed"), "{stdout}");
}

#[test]
fn load_errors_exit_2_with_a_hint() {
    let out = keyhost()
        .args(["plugin", "test", "builtin:fs", "--no-cache"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("pass --allow-dir DIR"), "{stderr}");

    let out = keyhost().args(["plugin", "test", "builtin:nope"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bundled: builtin:fs"));

    let out = keyhost()
        .args(["plugin", "test", "/nonexistent.wasm", "--no-cache"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read plugin /nonexistent.wasm"));

    let out = keyhost()
        .args(["plugin", "test", "builtin:fs", "--allow-http", "ftp://x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "clap usage errors exit 2");
}

#[test]
fn inspect_describes_plugins_and_explains_what_cannot_run() {
    let out = keyhost()
        .args(["plugin", "inspect", "builtin:aws", "--json"])
        .env("XDG_CACHE_HOME", keyhost_test_support::cache_home())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["info"]["name"], "aws");
    assert_eq!(v["runnable"], true);
    assert_eq!(v["size"].as_u64().unwrap() as usize, keyhost_bundled_size("aws"));
    assert_eq!(v["sha256"].as_str().unwrap().len(), 64);
    assert!(
        v["exports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "keyhost:keystore/store@0.1.0")
    );
    assert!(
        v["imports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e.as_str().unwrap().starts_with("wasi:http/"))
    );
    assert!(
        v["info"]["features"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "record-size=1..65536")
    );
    let settings = v["info"]["settings"].as_array().unwrap();
    assert!(settings.iter().any(|s| s["name"] == "secretkey" && s["secret"] == true));

    // Human output names the pin; a core module (not a component) cannot even be
    // compiled as a plugin: exit code 2 with the reason.
    let text = keyhost().args(["plugin", "inspect", "builtin:fs"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&text.stdout);
    assert!(
        stdout.contains("keystore.plugin.sha256") && stdout.contains("this keyhost can run it"),
        "{stdout}"
    );
    let dir = tempfile::tempdir().unwrap();
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let out = keyhost().args(["plugin", "inspect"]).arg(&core).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(!out.stderr.is_empty());
}

/// The size of a bundled plugin, read from the build's artifacts.
fn keyhost_bundled_size(name: &str) -> usize {
    let wasm = keyhost_plugin_build::wasm_path(&format!("keyhost-plugin-{name}"));
    std::fs::metadata(wasm).unwrap().len() as usize
}

/// `plugin new` refuses bad names and non-empty directories; building the project
/// and running the kit on it is the tutorial of docs/plugin-guide.md, which
/// `plugin_guide.rs` runs as written.
#[test]
fn plugin_new_writes_a_project_once() {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("demo-store");
    let out = keyhost()
        .args(["plugin", "new", "demo-store", "--path"])
        .arg(&project)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for file in [
        "Cargo.toml",
        "src/lib.rs",
        "keyhost-plugin-sdk/src/lib.rs",
        "keyhost-plugin-sdk/wit/keystore.wit",
        "keyhost-plugin-sdk/wit/deps/config/store.wit",
        "keyhost-plugin-sdk/wit/deps/http.wit",
        "rust-toolchain.toml",
        ".cargo/config.toml",
    ] {
        assert!(project.join(file).is_file(), "{file}");
    }
    let again = keyhost()
        .args(["plugin", "new", "demo-store", "--path"])
        .arg(&project)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("is not empty"));
    let bad = keyhost().args(["plugin", "new", "Demo_Store"]).output().unwrap();
    assert!(String::from_utf8_lossy(&bad.stderr).contains("lowercase letters"));
}

/// `--tls-ca`, `--tls-cert` and `--tls-key`: the kit against an etcd member that
/// requires a client certificate, which the host presents for the plugin.
#[test]
fn the_kit_reaches_a_tls_backend_with_the_host_presenting_a_client_certificate() {
    let cluster = keyhost_test_support::etcd::EtcdCluster::start_tls(1);
    let pki = cluster.tls().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, text: &str| {
        let path = dir.path().join(name);
        keyhost_test_support::write_private(&path, text);
        path
    };
    let (ca, cert, key) = (
        file("ca.pem", &pki.ca_pem),
        file("client.pem", &pki.client_cert_pem),
        file("client.key", &pki.client_key_pem),
    );
    let endpoint = &cluster.endpoints()[0];
    let run = |tls: bool, filter: &str| {
        let mut cmd = keyhost();
        cmd.args(["plugin", "test", "builtin:etcd", "--no-cache", "--config"])
            .arg(format!("endpoints={endpoint}"))
            .args(["--allow-http", endpoint, "--filter", filter])
            .arg("--tls-ca")
            .arg(&ca);
        if tls {
            cmd.arg("--tls-cert").arg(&cert).arg("--tls-key").arg(&key);
        }
        cmd.output().unwrap()
    };
    let out = run(true, "create.,get.,list.prefix");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
    // Without the client certificate etcd refuses every connection (one case: each
    // waits out the plugin's retries).
    let out = run(false, "get.missing");
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stdout));
    // A certificate without its key is a usage error.
    let out = keyhost()
        .args(["plugin", "test", "builtin:etcd", "--tls-cert"])
        .arg(&cert)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
}
