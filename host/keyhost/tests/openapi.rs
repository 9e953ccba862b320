//! The API against its description (`docs/openapi.yaml`): schemathesis (PyPI, pinned
//! in `scripts/test-requirements.txt`) generates valid and invalid requests for every
//! operation — examples, boundary and negative cases, random ones — and sends them
//! over mutual TLS to a running server. No answer may be a 5xx, and every answer must
//! have a status, content type and shape the description allows.

use std::process::Command;

use keyhost_test_support::process::start_as_admin;

#[test]
fn generated_requests_get_no_5xx_and_answers_the_description_allows() {
    let venv = keyhost_test_support::install_moto();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_, server) = start_as_admin(d, "keys:\n  - name: my-key\n");
    let spec = keyhost_plugin_build::repo_root().join("docs/openapi.yaml");
    // A number of cases, not a time budget (with `--max-time`, schemathesis repeats
    // fuzzing until the time is spent): the same cases on every machine.
    let examples = std::env::var("KEYHOST_SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| "100".into());
    let out = Command::new(venv.join("bin/schemathesis"))
        .arg("run")
        .arg(&spec)
        .args(["--url", &server.url])
        .arg("--request-cert")
        .arg(d.join("admin.cert"))
        .arg("--request-cert-key")
        .arg(d.join("admin.key"))
        .arg("--tls-verify")
        .arg(d.join("server.cert"))
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            "--phases",
            "examples,coverage,fuzzing",
            "--exclude-path-regex",
            "^/v1/log/",
            // One worker: schemathesis's coverage phase compiles code on several
            // threads, which CPython 3.11 cannot always do ("AST constructor
            // recursion depth mismatch").
            "--workers",
            "1",
            "--max-examples",
            &examples,
            "--seed",
            "7373",
            "--no-color",
        ])
        .env("SCHEMATHESIS_HOOKS", "")
        // schemathesis keeps a cache in the directory it runs in.
        .current_dir(d)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "schemathesis found failures (above)");
    drop(server);
}
