//! The fs plugin's own rules, beyond the contract: KES's name rules, one file per
//! key holding exactly the record, nothing else left in the directory.

#![expect(clippy::unwrap_used, reason = "Tests and benchmarks fail loudly by design")]

use keyhost_keystore::{Error, Keystore};
use keyhost_plugin_host::{Grants, PluginSource, PluginSpec, Runtime, RuntimeOptions};

async fn fs_plugin(dir: &std::path::Path) -> keyhost_plugin_host::Plugin {
    let wasm = keyhost_plugin_build::build(&["keyhost-plugin-fs"]).unwrap_or_else(|e| panic!("{e}"))[0].clone();
    let mut spec = PluginSpec::new("fs", PluginSource::File(wasm));
    spec.grants = Grants {
        http: vec![],
        dir: Some(dir.to_owned()),
        ..Grants::default()
    };
    Runtime::new(RuntimeOptions::default())
        .unwrap()
        .load(spec)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_that_are_not_plain_file_names_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = fs_plugin(dir.path()).await;
    for name in [
        "",
        ".",
        "..",
        ".x",
        "a/b",
        "a\\b",
        "/x",
        "x/",
        "./x",
        "../x",
        "a\0b",
        &"a".repeat(256),
    ] {
        let got = plugin.create(name, b"v").await;
        assert!(
            matches!(got, Err(Error::InvalidArgument(_))),
            "create {name:?}: {got:?}"
        );
        let got = plugin.get(name).await;
        assert!(matches!(got, Err(Error::InvalidArgument(_))), "get {name:?}: {got:?}");
        let got = plugin.delete(name).await;
        assert!(
            matches!(got, Err(Error::InvalidArgument(_))),
            "delete {name:?}: {got:?}"
        );
    }
    for name in ["my-key", "minio.key", "a", &"a".repeat(255)] {
        plugin
            .create(name, b"v")
            .await
            .unwrap_or_else(|e| panic!("{name:?}: {e}"));
    }
    assert!(
        std::fs::read_dir(dir.path().parent().unwrap())
            .unwrap()
            .flatten()
            .all(|e| e.file_name() != "x")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_file_per_key_holds_exactly_the_record() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = fs_plugin(dir.path()).await;
    let record = br#"{"bytes":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}"#;
    plugin.create("my-key", record).await.unwrap();
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names, ["my-key"], "no temporary file is left behind");
    assert_eq!(std::fs::read(dir.path().join("my-key")).unwrap(), record);

    // A key written by KES (or by hand) is read back, and foreign files that are not
    // keys (dot files, directories) are not listed.
    std::fs::write(dir.path().join("from-kes"), b"{\"bytes\":\"x\"}").unwrap();
    std::fs::write(dir.path().join(".hidden"), b"x").unwrap();
    std::fs::create_dir(dir.path().join("subdir")).unwrap();
    assert_eq!(&plugin.get("from-kes").await.unwrap()[..], b"{\"bytes\":\"x\"}");
    let page = plugin.list("", None, 100).await.unwrap();
    assert_eq!(page.names, ["from-kes", "my-key"]);

    plugin.delete("my-key").await.unwrap();
    assert!(!dir.path().join("my-key").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_larger_than_a_record_is_an_error_not_a_truncated_read() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = fs_plugin(dir.path()).await;
    std::fs::write(dir.path().join("huge"), vec![0u8; (1 << 20) + 1]).unwrap();
    let got = plugin.get("huge").await;
    assert!(
        matches!(got, Err(Error::Other(ref m)) if m.contains("larger than 1 MiB")),
        "{got:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_directory_grant_the_plugin_refuses_to_open() {
    let wasm = keyhost_plugin_build::build(&["keyhost-plugin-fs"]).unwrap_or_else(|e| panic!("{e}"))[0].clone();
    let spec = PluginSpec::new("fs", PluginSource::File(wasm));
    let err = Runtime::new(RuntimeOptions::default())
        .unwrap()
        .load(spec)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("grant one with `allow.dir`"), "{err}");
}
