//! The client commands drive a real server over mutual TLS: keys, policies,
//! identities, status, metrics and the live audit log, with human and `--json`
//! output, the exit codes, and the errors that say what to do.

#![expect(clippy::unwrap_used, reason = "Tests fail loudly by design")]

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};

use keyhost_policy::ApiKey;
use keyhost_test_support::process::start;
use serde_json::Value;

struct Env {
    server: keyhost_test_support::process::Running,
    admin: ApiKey,
    app: ApiKey,
    _dir: tempfile::TempDir,
}

fn setup() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    keyhost_test_support::process::server_files(d);
    let admin = ApiKey::from_seed([21; 32]);
    let app = ApiKey::from_seed([22; 32]);
    let config = d.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "version: v1\naddress: 0.0.0.0:7373\nadmin:\n  identity: {}\ntls:\n  key: {d}/server.key\n  cert: {d}/server.cert\n\
             policy:\n  app:\n    allow:\n    - /v1/key/generate/app-*\n    - /v1/key/decrypt/app-*\n    - /v1/identity/self/describe\n\
             \x20   identities:\n    - {}\nkeystore:\n  fs:\n    path: {d}/keys\n",
            admin.identity().as_str(),
            app.identity().as_str(),
            d = d.display()
        ),
    )
    .unwrap();
    let server = start(&config, &[]).unwrap();
    Env {
        server,
        admin,
        app,
        _dir: dir,
    }
}

fn run(env: &[(&str, String)], args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keyhost"))
        .args(args)
        .env_remove("KES_CLIENT_CERT")
        .env_remove("KES_CLIENT_KEY")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap()
}

impl Env {
    fn as_key(&self, key: &ApiKey) -> Vec<(&'static str, String)> {
        vec![
            ("KES_SERVER", self.server.url.clone()),
            ("KES_API_KEY", key.to_text().to_string()),
        ]
    }

    /// Runs a command as the admin and returns its standard output; it must succeed.
    fn ok(&self, args: &[&str]) -> String {
        let out = run(&self.as_key(&self.admin), args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        serde_json::from_str(&self.ok(&all)).unwrap()
    }
}

fn fails(out: &Output, code: i32, text: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{stderr}");
    assert!(stderr.contains(text), "expected {text:?} in: {stderr}");
}

#[test]
fn key_commands() {
    let e = setup();
    e.ok(&["key", "create", "-k", "app-one", "app-two"]);
    fails(
        &run(&e.as_key(&e.admin), &["key", "create", "-k", "app-one"]),
        1,
        "cannot create key 'app-one': key already exists (400 Bad Request)",
    );
    assert_eq!(
        e.ok(&["key", "ls", "-k", "app-*"]).lines().collect::<Vec<_>>(),
        ["app-one", "app-two"]
    );
    assert_eq!(
        e.json(&["key", "list", "-k"])["names"],
        serde_json::json!(["app-one", "app-two"])
    );
    let info = e.json(&["key", "info", "-k", "app-one"]);
    assert_eq!(
        (info["name"].as_str(), info["algorithm"].as_str()),
        (Some("app-one"), Some("AES256"))
    );
    assert!(e.ok(&["key", "describe", "-k", "app-one"]).starts_with("Name"));

    let dek = e.json(&["key", "dek", "-k", "app-one", "bucket/object"]);
    let ciphertext = dek["ciphertext"].as_str().unwrap();
    let plain = e.json(&["key", "decrypt", "-k", "app-one", ciphertext, "bucket/object"]);
    assert_eq!(plain["plaintext"], dek["plaintext"]);
    fails(
        &run(
            &e.as_key(&e.admin),
            &["key", "decrypt", "-k", "app-one", ciphertext, "other"],
        ),
        1,
        "ciphertext is not authentic",
    );
    let sealed = e.ok(&["key", "encrypt", "-k", "app-two", "hello world"]);
    assert_eq!(
        e.ok(&["key", "decrypt", "-k", "app-two", sealed.trim()]).trim(),
        "hello world"
    );
    let mac = e.ok(&["key", "hmac", "-k", "app-two", "message"]);
    assert_eq!(mac, e.ok(&["key", "hmac", "-k", "app-two", "message"]));
    assert_eq!(mac.trim().len(), 44, "{mac}");

    e.ok(&[
        "key",
        "import",
        "-k",
        "imported",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
    ]);
    // KES v0.16's spelling of import.
    e.ok(&[
        "key",
        "create",
        "-k",
        "imported-v016",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
    ]);
    fails(
        &run(&e.as_key(&e.admin), &["key", "import", "-k", "x", "c2hvcnQ="]),
        3,
        "keys have 32",
    );
    e.ok(&["key", "rm", "-k", "app-two", "imported"]);
    fails(
        &run(&e.as_key(&e.admin), &["key", "info", "-k", "app-two"]),
        1,
        "key does not exist (404 Not Found)",
    );

    // The app identity may generate but not create: the error says what to do.
    fails(
        &run(&e.as_key(&e.app), &["key", "create", "-k", "app-three"]),
        1,
        "policy does not allow /v1/key/create/app-three",
    );
    let dek = serde_json::from_str::<Value>(
        &String::from_utf8(run(&e.as_key(&e.app), &["key", "dek", "-k", "--json", "app-one"]).stdout).unwrap(),
    )
    .unwrap();
    assert!(dek["ciphertext"].is_string());
}

#[test]
fn policy_identity_status_metric_and_log() {
    let e = setup();
    assert_eq!(e.ok(&["policy", "ls", "-k"]).trim(), "app");
    assert_eq!(e.ok(&["ls", "-k", "-p"]).trim(), "app");
    assert_eq!(e.json(&["ls", "-k", "-i"])["identities"].as_array().unwrap().len(), 2);
    e.ok(&["key", "create", "-k", "listed"]);
    assert_eq!(e.ok(&["ls", "-k", "list*"]).trim(), "listed");
    assert!(
        e.ok(&["policy", "info", "-k", "app"])
            .contains(e.admin.identity().as_str())
    );
    let shown = e.ok(&["policy", "show", "-k", "app"]);
    assert!(shown.contains("allow:\n  - /v1/identity/self/describe"), "{shown}");
    assert!(e.json(&["policy", "show", "-k", "app"])["allow"].is_object());
    fails(
        &run(&e.as_key(&e.admin), &["policy", "show", "-k", "nope"]),
        1,
        "policy does not exist",
    );

    let ids = e.ok(&["identity", "ls", "-k"]);
    assert!(
        ids.contains(e.app.identity().as_str()) && ids.contains(e.admin.identity().as_str()),
        "{ids}"
    );
    let app_info = e.json(&["identity", "info", "-k", e.app.identity().as_str()]);
    assert_eq!(app_info["policy"], "app");
    let me = run(&e.as_key(&e.app), &["identity", "self", "-k", "--json"]);
    let me: Value = serde_json::from_slice(&me.stdout).unwrap();
    assert_eq!(
        (me["identity"].as_str(), me["policy"].as_str()),
        (Some(e.app.identity().as_str()), Some("app"))
    );

    let status = e.ok(&["status", "-k"]);
    assert!(
        status.contains("reachable") && status.contains(&e.server.url),
        "{status}"
    );
    assert!(e.ok(&["status", "-k", "-s"]).trim().ends_with("ready"));
    let with_api = e.json(&["status", "-k", "--api"]);
    assert!(with_api["api"].as_array().unwrap().len() > 20);
    let metrics = e.json(&["metric", "-k"]);
    assert!(
        metrics["kes_http_request_success{code=\"200\"}"].as_f64().unwrap() >= 1.0,
        "{metrics}"
    );
    assert!(e.ok(&["metric", "-k"]).contains("kes_http_request_success"));

    // The live metric view prints rates until stopped.
    let mut live = Command::new(env!("CARGO_BIN_EXE_keyhost"))
        .args(["metric", "-k", "--rate", "200ms", "--json"])
        .envs(e.as_key(&e.admin).iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut rates = BufReader::new(live.stdout.take().unwrap()).lines();
    for _ in 0..2 {
        let line: Value = serde_json::from_str(&rates.next().unwrap().unwrap()).unwrap();
        assert!(line["success_per_second"].as_f64().unwrap() >= 0.0, "{line}");
    }
    let _ = live.kill();
    let _ = live.wait();

    // The live audit log shows a request made after subscribing.
    let mut log = Command::new(env!("CARGO_BIN_EXE_keyhost"))
        .args(["log", "-k", "--audit", "--json"])
        .envs(e.as_key(&e.admin).iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Read on another thread: a line may never come for requests made before the
    // subscription, and a blocked read would hang the test.
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = log.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = None;
    for _ in 0..50 {
        e.ok(&["key", "create", "-k", "logged"]);
        // The first events may precede the subscription; keep creating until one shows.
        let _ = run(&e.as_key(&e.admin), &["key", "rm", "-k", "logged"]);
        if let Ok(Ok(line)) = rx.recv_timeout(std::time::Duration::from_millis(500)) {
            seen = Some(line);
            break;
        }
    }
    let _ = log.kill();
    let _ = log.wait();
    let event: Value = serde_json::from_str(&seen.unwrap()).unwrap();
    assert!(
        event["request"]["path"].as_str().unwrap().contains("/logged"),
        "{event}"
    );
}

#[test]
fn endpoints_failover_and_helpful_errors() {
    let e = setup();
    let port = e.server.url.rsplit(':').next().unwrap().to_owned();
    // The first endpoint refuses connections: the next one answers.
    let both = vec![
        ("KES_SERVER", format!("127.0.0.1:1,localhost:{port}")),
        ("KES_API_KEY", e.admin.to_text().to_string()),
    ];
    let out = run(&both, &["key", "create", "-k", "failover"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let nowhere = vec![
        ("KES_SERVER", "127.0.0.1:1".to_owned()),
        ("KES_API_KEY", e.admin.to_text().to_string()),
    ];
    fails(&run(&nowhere, &["status", "-k"]), 3, "is the server running there?");
    fails(&run(&e.as_key(&e.admin), &["status"]), 3, "add -k/--insecure");
    fails(
        &run(&[("KES_SERVER", e.server.url.clone())], &["key", "ls", "-k"]),
        3,
        "no credentials: set KES_API_KEY",
    );
    let completion = Command::new(env!("CARGO_BIN_EXE_keyhost"))
        .args(["completion", "bash"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&completion.stdout).contains("keyhost"));
}

#[test]
fn migrate_copies_records_verbatim() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = |name: &str| fs_config(d, name);
    let (from, to) = (config("old"), config("new"));
    // Records as KES v0.16 wrote them: one file per key.
    for (name, record) in [
        ("minio-a", r#"{"bytes":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}"#),
        ("minio-b", r#"{"bytes":"J8qmOyEV2ce2yoAC+5t0Y7CSP/hTMppL7XHpAnyc+0E="}"#),
        ("other", r#"{"bytes":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAE="}"#),
    ] {
        std::fs::write(d.join("old").join(name), record).unwrap();
    }
    let migrate = |extra: &[&str]| migrate_between(&from, &to, extra);
    let out = migrate(&["--dry-run", "minio-*"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("copy           minio-b"));
    assert_eq!(
        std::fs::read_dir(d.join("new")).unwrap().count(),
        0,
        "a dry run changes nothing"
    );

    let out = migrate(&["minio-*"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("2 keys copied"));
    for name in ["minio-a", "minio-b"] {
        assert_eq!(
            std::fs::read(d.join("old").join(name)).unwrap(),
            std::fs::read(d.join("new").join(name)).unwrap()
        );
    }
    assert!(!d.join("new/other").exists());
    // Again: the keys exist; nothing happens without --merge.
    fails(&migrate(&[]), 1, "2 of 3 keys already exist at the destination");
    assert!(!d.join("new/other").exists());
    let out = migrate(&["--merge"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 keys copied, 2 skipped"),
        "{out:?}"
    );

    // --force saves what it replaces before it replaces it (0600), so no key is lost.
    std::fs::write(
        d.join("old/minio-a"),
        r#"{"bytes":"BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBA="}"#,
    )
    .unwrap();
    let before = std::fs::read(d.join("new/minio-a")).unwrap();
    let backup = d.join("backup");
    let out = migrate(&["--force", "--backup", backup.to_str().unwrap(), "minio-a"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("previous records are in"),
        "{out:?}"
    );
    assert_eq!(std::fs::read(backup.join("minio-a")).unwrap(), before);
    assert_eq!(
        std::fs::read(d.join("new/minio-a")).unwrap(),
        std::fs::read(d.join("old/minio-a")).unwrap()
    );
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(backup.join("minio-a")).unwrap().mode() & 0o777, 0o600);

    // A destination that fails between the delete and the create loses nothing: the
    // record it had is in the backup directory before anything is replaced.
    let faulty = keyhost_plugin_build::build(&["keyhost-test-faulty"]).unwrap_or_else(|e| panic!("{e}"))[0].clone();
    let broken = d.join("broken");
    std::fs::create_dir(&broken).unwrap();
    std::fs::write(broken.join("minio-a"), b"the only copy").unwrap();
    let broken_config = d.join("broken.yaml");
    std::fs::write(
        &broken_config,
        format!(
            "version: v1\nadmin:\n  identity: disabled\nkeystore:\n  plugin:\n    path: {}\n    config: {{ defect: create-fails }}\n    allow:\n      dir: {}\n",
            faulty.display(),
            broken.display()
        ),
    )
    .unwrap();
    let rescue = d.join("rescue");
    let out = migrate_between(
        &from,
        &broken_config,
        &["--force", "--backup", rescue.to_str().unwrap(), "minio-a"],
    );
    fails(&out, 1, "cannot write 'minio-a'");
    fails(&out, 1, "it is saved in the backup directory");
    assert_eq!(std::fs::read(rescue.join("minio-a")).unwrap(), b"the only copy");

    // A configuration without a keystore would be the in-memory store: refused.
    let memory = d.join("memory.yaml");
    std::fs::write(&memory, "address: 0.0.0.0:7373\nroot: disabled\n").unwrap();
    for (a, b) in [(&from, &memory), (&memory, &to)] {
        fails(&migrate_between(a, b, &[]), 1, "no keystore section");
    }
    // Two files that name one store, however spelt: refused.
    let same = d.join("same.yaml");
    std::fs::write(
        &same,
        format!(
            "address: 0.0.0.0:7373\nroot: disabled\nkeystore:\n  fs:\n    path: {}/./old/\n",
            d.display()
        ),
    )
    .unwrap();
    fails(
        &migrate_between(&from, &same, &["--force"]),
        1,
        "name the same keystore",
    );
    assert_eq!(
        std::fs::read_dir(d.join("old")).unwrap().count(),
        3,
        "the store was left as it was"
    );
}

/// Round 3, item 6: the records a migration replaces are key material, so they go
/// only into a directory that is keyhost's user's alone. A directory prepared by
/// another user (or open to others, or a link to one) is refused with nothing
/// changed; the default directory has a name nobody can foresee and is made fresh,
/// 0700, whatever the umask.
#[test]
fn migrate_backups_go_only_into_private_fresh_directories() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = |name: &str| fs_config(d, name);
    let (from, to) = (config("old"), config("new"));
    let record = |tag: char| format!(r#"{{"bytes":"{}="}}"#, tag.to_string().repeat(43));
    std::fs::write(d.join("old/k"), record('A')).unwrap();
    std::fs::write(d.join("new/k"), record('B')).unwrap();

    // Prepared by someone else: open to all, owned by another user, or a link.
    let open = d.join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let foreign = d.join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::set_permissions(&foreign, std::fs::Permissions::from_mode(0o700)).unwrap();
    let is_root = rustix::process::geteuid().is_root();
    if is_root {
        std::os::unix::fs::chown(&foreign, Some(65534), Some(65534)).unwrap();
    }
    let private = d.join("private");
    std::fs::create_dir(&private).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    let link = d.join("link");
    std::os::unix::fs::symlink(&open, &link).unwrap();
    let mut refused = vec![(&open, "has mode 0777"), (&link, "symbolic link")];
    if is_root {
        refused.push((&foreign, "belongs to user 65534"));
    }
    for (bad, why) in refused {
        let out = migrate_between(&from, &to, &["--force", "--backup", bad.to_str().unwrap()]);
        fails(&out, 1, why);
        fails(&out, 1, "nothing was copied");
        assert_eq!(std::fs::read_to_string(d.join("new/k")).unwrap(), record('B'));
        assert_eq!(std::fs::read_dir(&open).unwrap().count(), 0, "{}", bad.display());
    }
    // The user's own private directory is used.
    let out = migrate_between(&from, &to, &["--force", "--backup", private.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read_to_string(private.join("k")).unwrap(), record('B'));

    // The default: a new directory in the working directory, 0700 under any umask.
    std::fs::write(d.join("old/k"), record('C')).unwrap();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "umask 000 && exec {} migrate --from {} --to {} --force",
            env!("CARGO_BIN_EXE_keyhost"),
            from.display(),
            to.display()
        ))
        .current_dir(d)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let made: Vec<_> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("keyhost-migrate-backup-")
        })
        .collect();
    assert_eq!(made.len(), 1, "{made:?}");
    let name = made[0].file_name().unwrap().to_string_lossy().into_owned();
    let random = name.rsplit('-').next().unwrap();
    assert_eq!(random.len(), 8, "a random part: {name}");
    assert_eq!(std::fs::metadata(&made[0]).unwrap().mode() & 0o777, 0o700);
    assert_eq!(std::fs::metadata(made[0].join("k")).unwrap().mode() & 0o777, 0o600);
}

/// Writes `DIR/NAME.yaml`, a v0.16 configuration whose keystore is the directory
/// `DIR/NAME` (created); returns the file's path.
fn fs_config(d: &std::path::Path, name: &str) -> std::path::PathBuf {
    let path = d.join(format!("{name}.yaml"));
    std::fs::write(
        &path,
        format!(
            "address: 0.0.0.0:7373\nroot: disabled\nkeystore:\n  fs:\n    path: {}/{name}\n",
            d.display()
        ),
    )
    .unwrap();
    std::fs::create_dir_all(d.join(name)).unwrap();
    path
}

/// Runs `keyhost migrate --from FROM --to TO EXTRA…`.
fn migrate_between(from: &std::path::Path, to: &std::path::Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "migrate",
        "--from",
        from.to_str().unwrap(),
        "--to",
        to.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    run(&[], &args)
}

#[test]
fn identity_new_and_of() {
    // An API key and its identity.
    let out = run(&[], &["identity", "new"]);
    let text = String::from_utf8(out.stdout).unwrap();
    let api_key = text.split_whitespace().find(|w| w.starts_with("kes:v1:")).unwrap();
    let identity = text.split_whitespace().find(|w| w.len() == 64).unwrap();
    let of = run(&[], &["identity", "of", api_key]);
    assert_eq!(String::from_utf8(of.stdout).unwrap().trim(), identity);

    // Certificates of both key types; the printed identity is the certificate's.
    let dir = tempfile::tempdir().unwrap();
    for key_type in ["ed25519", "ecdsa", "rsa"] {
        let key = dir.path().join(format!("{key_type}.key"));
        let cert = dir.path().join(format!("{key_type}.cert"));
        let out = run(
            &[],
            &[
                "identity",
                "new",
                "--type",
                key_type,
                "--key",
                key.to_str().unwrap(),
                "--cert",
                cert.to_str().unwrap(),
                "--dns",
                "localhost",
                "client",
            ],
        );
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let printed = String::from_utf8(out.stdout).unwrap();
        let of = run(&[], &["identity", "of", cert.to_str().unwrap()]);
        assert_eq!(String::from_utf8(of.stdout).unwrap(), printed, "{key_type}");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
        // Existing files are kept unless --force.
        let again = run(
            &[],
            &[
                "identity",
                "new",
                "--key",
                key.to_str().unwrap(),
                "--cert",
                cert.to_str().unwrap(),
            ],
        );
        fails(&again, 1, "use --force to overwrite it");
    }
    fails(
        &run(&[], &["identity", "of", "kes:v1:garbage"]),
        1,
        "not a valid API key",
    );
}

/// `identity new --encrypt`: the password comes from standard input in scripts; the
/// key is PKCS#8-encrypted, and a client given it asks for the password.
#[test]
fn encrypted_client_keys() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("sealed.key");
    let cert = dir.path().join("sealed.cert");
    let mut child = Command::new(env!("CARGO_BIN_EXE_keyhost"))
        .args([
            "identity",
            "new",
            "--encrypt",
            "--key",
            key.to_str().unwrap(),
            "--cert",
            cert.to_str().unwrap(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), b"correct horse\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let pem = std::fs::read_to_string(&key).unwrap();
    assert!(pem.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"), "{pem}");

    let e = setup();
    let client = |password: &str| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_keyhost"))
            .args(["identity", "self", "-k", "--json"])
            .env_remove("KES_API_KEY")
            .env("KES_SERVER", &e.server.url)
            .env("KES_CLIENT_KEY", &key)
            .env("KES_CLIENT_CERT", &cert)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), password.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    };
    fails(&client("wrong\n"), 3, "cannot decrypt");
    // Any identity may describe itself: the handshake with the decrypted key worked.
    let right = client("correct horse\n");
    assert_eq!(
        right.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&right.stderr)
    );
    let me: Value = serde_json::from_slice(&right.stdout).unwrap();
    assert_eq!(me["identity"].as_str().unwrap().len(), 64);
}

/// `key ls` lists every key however many keystore pages they take (it printed the
/// first 1,001 of 2,301 and exited 0, taking the continuation for a prefix).
#[test]
fn key_ls_lists_every_key_past_the_first_page() {
    let env = setup();
    let names: Vec<String> = (0..2301).map(|i| format!("many-{i:04}")).collect();
    let mut args = vec!["key", "create", "-k"];
    args.extend(names.iter().map(String::as_str));
    env.ok(&args);
    let listed: Vec<String> = env
        .ok(&["key", "ls", "-k", "many-*"])
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(listed, names);
    let all = env.json(&["key", "ls", "-k"]);
    assert_eq!(all["names"].as_array().unwrap().len(), 2301);
}

/// `identity new --force` writes a private key 0600 even over a 0644 file, and
/// replaces a symbolic link instead of writing through it (to a file of the
/// attacker's choosing).
#[test]
fn identity_new_writes_private_keys_0600_and_never_through_a_link() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (key, cert, victim) = (d.join("id.key"), d.join("id.cert"), d.join("victim"));
    std::fs::write(&key, "old").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&victim, "untouched").unwrap();
    std::os::unix::fs::symlink(&victim, &cert).unwrap();
    let args = [
        "identity",
        "new",
        "--key",
        key.to_str().unwrap(),
        "--cert",
        cert.to_str().unwrap(),
    ];
    fails(&run(&[], &args), 1, "exists; use --force to overwrite it");
    let mut forced = args.to_vec();
    forced.push("--force");
    let out = run(&[], &forced);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::metadata(&key).unwrap().mode() & 0o777, 0o600);
    assert!(std::fs::read_to_string(&key).unwrap().contains("PRIVATE KEY"));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
    assert!(!std::fs::symlink_metadata(&cert).unwrap().file_type().is_symlink());
}

/// keyhost's CLI against a v0.16 configuration, whose listings are NDJSON (one
/// line alone, none, or many) and whose status has v0.16's shape.
#[test]
fn the_cli_reads_v016_listings_and_status() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    keyhost_test_support::process::server_files(d);
    let admin = ApiKey::from_seed([23; 32]);
    let app = ApiKey::from_seed([24; 32]);
    let config = d.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "address: 0.0.0.0:7373\nroot: {}\ntls:\n  key: {d}/server.key\n  cert: {d}/server.cert\n\
             policy:\n  app:\n    paths:\n    - /v1/key/generate/app-*\n    identities:\n    - {}\nkeystore:\n  fs:\n    path: {d}/keys\n",
            admin.identity().as_str(),
            app.identity().as_str(),
            d = d.display()
        ),
    )
    .unwrap();
    let server = start(&config, &[]).unwrap();
    let env = vec![
        ("KES_SERVER", server.url.clone()),
        ("KES_API_KEY", admin.to_text().to_string()),
    ];
    let names = |pattern: &str| -> Vec<String> {
        let out = run(&env, &["key", "ls", "-k", "--json", pattern]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let list = v.get("names").unwrap_or(&v).as_array().cloned().unwrap_or_default();
        list.iter().map(|n| n.as_str().unwrap().to_owned()).collect()
    };
    assert!(names("*").is_empty(), "no keys");
    assert!(run(&env, &["key", "create", "-k", "k1"]).status.success());
    assert_eq!(names("*"), ["k1"], "one NDJSON line");
    assert!(run(&env, &["key", "create", "-k", "k2"]).status.success());
    let mut two = names("k*");
    two.sort();
    assert_eq!(two, ["k1", "k2"]);

    let out = run(&env, &["identity", "ls", "-k"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(app.identity().as_str()) && text.contains("app"), "{text}");

    let out = run(&env, &["status", "-k", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v["uptime"].as_u64().unwrap() < 3600,
        "uptime in seconds, not nanoseconds: {v}"
    );
    assert!(v["certificate"]["expiry"].as_u64().unwrap() > 0, "{v}");
}
