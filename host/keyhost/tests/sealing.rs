//! Host-side sealing (`keystore.seal`) end to end, over real mTLS with the real
//! `keyhost` binary: what a plugin receives with and without it, start-up checks of
//! the key-encryption keys (files, environment variables, AWS KMS on moto), records
//! moved in the backend, rotation under load, and the way back to unsealed records.

#![expect(clippy::unwrap_used, reason = "Tests fail loudly by design")]

use std::io::Read;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use keyhost_crypto::KeyRecord;
use keyhost_seal::{Kek, PREFIX, Sealer};
use keyhost_test_support::load::{self, Load, Spec};
use keyhost_test_support::process::{Running, curl, keyhost_bin, newest_config, server_files, start, write_identity};
use keyhost_test_support::{ACCESS_KEY, Moto, REGION, SECRET_KEY};

/// A deployment's files: server and admin credentials, and key files.
struct Site {
    dir: tempfile::TempDir,
    creds: keyhost_tls::mint::DevCredentials,
}

impl Site {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let creds = server_files(dir.path());
        write_identity(dir.path(), "admin", &creds.admin);
        Self { dir, creds }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A new KEK in the file `name` (mode 0600), and its id.
    fn kek_file(&self, name: &str) -> (PathBuf, String) {
        use std::os::unix::fs::PermissionsExt;
        let (kek, bytes) = Kek::generate();
        let path = self.path().join(name);
        std::fs::write(&path, STANDARD.encode(*bytes)).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        (path, kek.id().to_owned())
    }

    /// Writes `NAME.yaml` with `keystore` (YAML under `keystore:`) and `extra`.
    fn config(&self, name: &str, keystore: &str, extra: &str) -> PathBuf {
        let path = newest_config(self.path(), &self.creds, &format!("keystore:\n{keystore}{extra}"));
        let named = self.path().join(format!("{name}.yaml"));
        std::fs::rename(path, &named).unwrap();
        named
    }

    fn call(&self, args: &str) -> (u16, String) {
        curl(self.path(), "admin", args)
    }
}

fn fs(dir: &Path) -> String {
    format!("  fs:\n    path: {}\n", dir.display())
}

fn seal(entries: &[(&Path, &str)]) -> String {
    let mut out = "  seal:\n    keys:\n".to_owned();
    for (file, id) in entries {
        out.push_str(&format!("      - id: {id}\n        file: {}\n", file.display()));
    }
    out
}

fn must_start(config: &Path, env: &[(&str, &str)]) -> Running {
    start(config, env).unwrap_or_else(|e| panic!("the server did not start: {e}"))
}

fn must_not_start(config: &Path, env: &[(&str, &str)]) -> String {
    match start(config, env) {
        Ok(_) => panic!("the server started with {}", std::fs::read_to_string(config).unwrap()),
        Err(e) => e,
    }
}

/// Stops `server` and returns what it wrote to standard error.
fn stop_and_read_log(mut server: Running) -> String {
    server.child.kill().unwrap();
    let mut log = String::new();
    server.child.stderr.take().unwrap().read_to_string(&mut log).unwrap();
    log
}

/// Every encoding of `bytes` a leak could take.
fn spellings(bytes: &[u8]) -> Vec<Vec<u8>> {
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    vec![
        bytes.to_vec(),
        STANDARD.encode(bytes).into_bytes(),
        STANDARD_NO_PAD.encode(bytes).into_bytes(),
        URL_SAFE.encode(bytes).into_bytes(),
        URL_SAFE_NO_PAD.encode(bytes).into_bytes(),
        hex.clone().into_bytes(),
        hex.to_uppercase().into_bytes(),
    ]
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

/// The `(name, record)` pairs the recording plugin received, in order.
fn received(dir: &Path) -> Vec<(String, Vec<u8>)> {
    std::fs::read_to_string(dir.join(".received"))
        .unwrap_or_default()
        .lines()
        .map(|line| {
            let (name, value) = line.split_once(' ').unwrap();
            (String::from_utf8(unhex(name)).unwrap(), unhex(value))
        })
        .collect()
}

fn recording_plugin(dir: &Path) -> String {
    let wasm = keyhost_plugin_build::build(&["keyhost-test-recording"]).unwrap_or_else(|e| panic!("{e}"))[0].clone();
    format!(
        "  plugin:\n    path: {}\n    allow:\n      dir: {}\n",
        wasm.display(),
        dir.display()
    )
}

const IMPORTED: [u8; 32] = *b"an imported key of 32 bytes, yes";

/// Creates a key with `create`, one with `import`; `boot` comes from `keys:`.
fn make_three_keys(site: &Site, server: &Running) {
    let url = &server.url;
    let (status, body) = site.call(&format!("-X POST {url}/v1/key/create/made"));
    assert_eq!(status, 200, "{body}");
    let body = format!(r#"{{"key":"{}","cipher":"AES256"}}"#, STANDARD.encode(IMPORTED));
    let (status, reply) = site.call(&format!("-X POST {url}/v1/key/import/imported -d '{body}'"));
    assert_eq!(status, 200, "{reply}");
    for name in ["boot", "made", "imported"] {
        let (status, body) = site.call(&format!("-X POST {url}/v1/key/generate/{name} -d '{{}}'"));
        assert_eq!(status, 200, "{name}: {body}");
    }
}

#[test]
fn no_record_a_plugin_receives_holds_key_material_when_sealed() {
    let site = Site::new();
    let (kek_path, kek_id) = site.kek_file("kek");
    let sealer = Sealer::new(vec![
        Kek::from_base64(&std::fs::read_to_string(&kek_path).unwrap()).unwrap(),
    ])
    .unwrap();
    for sealed in [false, true] {
        let store = tempfile::tempdir().unwrap();
        let mut keystore = recording_plugin(store.path());
        if sealed {
            keystore.push_str(&seal(&[(&kek_path, &kek_id)]));
        }
        let config = site.config("recording", &keystore, "keys:\n  - name: boot\n");
        let server = must_start(&config, &[]);
        make_three_keys(&site, &server);
        drop(server);

        let records = received(store.path());
        let names: Vec<&str> = records.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["boot", "made", "imported"], "sealed: {sealed}");
        for (name, record) in &records {
            // The key as the host knows it: opened with the KEK the test holds.
            let plain = if sealed {
                assert!(record.starts_with(format!("{PREFIX}{kek_id}:").as_bytes()), "{name}");
                sealer.open(name, record).unwrap().to_vec()
            } else {
                record.clone()
            };
            let key = KeyRecord::parse(&plain).unwrap();
            let mut secrets = vec![key.key.expose_bytes().to_vec()];
            secrets.extend(key.hmac.as_ref().map(|h| h.expose_bytes().to_vec()));
            if *name == "imported" {
                assert_eq!(key.key.expose_bytes(), &IMPORTED);
            }
            let leaked: Vec<_> = secrets
                .iter()
                .flat_map(|s| spellings(s))
                .filter(|s| contains(record, s))
                .collect();
            if sealed {
                assert!(leaked.is_empty(), "'{name}': the plugin received key material");
            } else {
                // The check finds what is there: without sealing the plugin sees the key.
                assert!(!leaked.is_empty(), "'{name}': an unsealed record should hold its key");
            }
        }
    }
}

#[test]
fn a_missing_or_wrong_kek_is_refused_at_start_up_naming_it() {
    use std::os::unix::fs::PermissionsExt;
    let site = Site::new();
    let store = site.path().join("keys");
    let (good, good_id) = site.kek_file("good");
    let (other, other_id) = site.kek_file("other");
    // The keystore.seal section, the environment, and what the error must say.
    type Case<'a> = (String, &'a [(&'a str, &'a str)], Vec<String>);
    let cases: Vec<Case<'_>> = vec![
        (
            seal(&[(&site.path().join("absent"), &good_id)]),
            &[],
            vec!["keystore.seal.keys[0].file: cannot read".into(), "absent".into()],
        ),
        (
            seal(&[(&good, &good_id), (&other, &good_id)]),
            &[],
            vec![
                "keystore.seal.keys[1]:".into(),
                format!("is not the key-encryption key {good_id} (its id is {other_id})"),
            ],
        ),
        (
            format!("  seal:\n    keys:\n      - file: {}\n", good.display()),
            &[],
            vec![format!(
                "keystore.seal.keys[0].id: missing; the key from {} has the id {good_id}",
                good.display()
            )],
        ),
        (
            format!("  seal:\n    keys:\n      - id: {good_id}\n        env: KEYHOST_TEST_KEK\n"),
            &[],
            vec!["keystore.seal.keys[0].env: the environment variable KEYHOST_TEST_KEK is not set".into()],
        ),
        (
            format!("  seal:\n    keys:\n      - id: {good_id}\n        env: KEYHOST_TEST_KEK\n"),
            &[("KEYHOST_TEST_KEK", "c2hvcnQ=")],
            vec!["KEYHOST_TEST_KEK does not hold the base64 of 32 bytes".into()],
        ),
        (
            format!("  seal:\n    keys:\n      - id: {good_id}\n"),
            &[],
            vec!["keystore.seal.keys[0]: no source of the key".into()],
        ),
    ];
    for (i, (sealing, env, expected)) in cases.iter().enumerate() {
        let config = site.config(&format!("case{i}"), &format!("{}{sealing}", fs(&store)), "");
        let error = must_not_start(&config, env);
        for part in expected {
            assert!(error.contains(part.as_str()), "case {i}: expected {part:?} in: {error}");
        }
        assert!(
            error.contains(&format!("case{i}.yaml")),
            "case {i}: the file is named: {error}"
        );
    }

    // Readable by others: refused with the fix.
    let open = site.path().join("open");
    std::fs::copy(&good, &open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
    let config = site.config("open", &format!("{}{}", fs(&store), seal(&[(&open, &good_id)])), "");
    let error = must_not_start(&config, &[]);
    assert!(error.contains("mode 0644") && error.contains("chmod 600"), "{error}");

    // The key works from the environment too.
    let value = std::fs::read_to_string(&good).unwrap();
    let config = site.config(
        "env",
        &format!(
            "{}  seal:\n    keys:\n      - id: {good_id}\n        env: KEYHOST_TEST_KEK\n",
            fs(&store)
        ),
        "",
    );
    let server = must_start(&config, &[("KEYHOST_TEST_KEK", value.trim())]);
    let (status, body) = site.call(&format!("-X POST {}/v1/key/create/k1", server.url));
    assert_eq!(status, 200, "{body}");
    drop(server);

    // Records exist under `good`: a file that lists only `other`, or no sealing at
    // all, is refused, naming the KEK the records need.
    let config = site.config(
        "rotated-too-early",
        &format!("{}{}", fs(&store), seal(&[(&other, &other_id)])),
        "",
    );
    let error = must_not_start(&config, &[]);
    assert!(
        error.contains(&format!(
            "records sealed under the key-encryption key {good_id} (e.g. 'k1'), which is not listed"
        )),
        "{error}"
    );
    let config = site.config("unsealed", &fs(&store), "");
    let error = must_not_start(&config, &[]);
    assert!(
        error.contains(&format!(
            "sealed under the key-encryption key {good_id}), but keystore.seal is not configured"
        )),
        "{error}"
    );
}

#[test]
fn a_record_moved_to_another_name_does_not_open_and_says_why() {
    let site = Site::new();
    let store = site.path().join("keys");
    let (kek, id) = site.kek_file("kek");
    let config = site.config("c", &format!("{}{}", fs(&store), seal(&[(&kek, &id)])), "");
    let server = must_start(&config, &[]);
    let url = server.url.clone();
    assert_eq!(site.call(&format!("-X POST {url}/v1/key/create/original")).0, 200);
    // Someone with access to the backend copies the record to a name they may use.
    std::fs::copy(store.join("original"), store.join("copied")).unwrap();
    let (status, body) = site.call(&format!("-X POST {url}/v1/key/generate/copied -d '{{}}'"));
    let message: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (status, &message["message"]),
        (502, &serde_json::json!("failed to read key"))
    );
    assert_eq!(
        site.call(&format!("-X POST {url}/v1/key/generate/original -d '{{}}'"))
            .0,
        200
    );
    let log = stop_and_read_log(server);
    assert!(
        log.contains("the sealed record of 'copied' does not open: it was sealed for another key name"),
        "{log}"
    );
}

#[test]
fn a_kek_encrypted_by_aws_kms_is_decrypted_by_the_host_at_start_up() {
    let moto = Moto::start();
    let kms_key = moto.create_kms_key();
    let site = Site::new();
    let store = site.path().join("keys");
    let aws_env = [("AWS_ACCESS_KEY_ID", ACCESS_KEY), ("AWS_SECRET_ACCESS_KEY", SECRET_KEY)];
    let out = std::process::Command::new(keyhost_bin())
        .args([
            "seal",
            "new",
            "--aws-kms-key",
            &kms_key,
            "--aws-region",
            REGION,
            "--aws-endpoint",
        ])
        .arg(moto.url())
        .envs(aws_env)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let snippet = String::from_utf8(out.stdout).unwrap();
    let entry = snippet.strip_prefix("keystore:\n").unwrap();
    let id = snippet.split("id: ").nth(1).unwrap().lines().next().unwrap().to_owned();

    let config = site.config("kms", &format!("{}{entry}\n", fs(&store)), "");
    let server = must_start(&config, &aws_env);
    assert_eq!(site.call(&format!("-X POST {}/v1/key/create/k", server.url)).0, 200);
    drop(server);
    let record = std::fs::read(store.join("k")).unwrap();
    assert!(record.starts_with(format!("{PREFIX}{id}:").as_bytes()));

    // Half the credentials, and a ciphertext KMS did not make: refused, saying so.
    let half = site.config(
        "half",
        &format!(
            "{}{entry}\n          credentials:\n            accesskey: {ACCESS_KEY}\n",
            fs(&store)
        ),
        "",
    );
    let error = must_not_start(&half, &aws_env);
    assert!(
        error.contains("keystore.seal.keys[0].aws_kms.credentials: give both accesskey and secretkey"),
        "{error}"
    );
    let forged = snippet
        .lines()
        .map(|l| match l.split_once("ciphertext: ") {
            Some((indent, _)) => format!("{indent}ciphertext: {}", STANDARD.encode([7u8; 180])),
            None => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    let config = site.config(
        "forged",
        &format!("{}{}\n", fs(&store), forged.strip_prefix("keystore:\n").unwrap()),
        "",
    );
    let error = must_not_start(&config, &aws_env);
    assert!(
        error.contains("keystore.seal.keys[0].aws_kms: KMS cannot decrypt"),
        "{error}"
    );
    // The ciphertext of one KMS key, with `key` naming another: KMS refuses.
    let other_key = moto.create_kms_key();
    let config = site.config(
        "other-key",
        &format!("{}{}\n", fs(&store), entry.replace(&kms_key, &other_key)),
        "",
    );
    let error = must_not_start(&config, &aws_env);
    assert!(
        error.contains(&format!("KMS cannot decrypt the key-encryption key ({other_key}")),
        "{error}"
    );
    // KMS over plain http to another machine is refused before it is asked.
    let config = site.config(
        "plain-http",
        &format!(
            "{}{}\n",
            fs(&store),
            entry.replace(&moto.url(), "http://kms.example.com")
        ),
        "",
    );
    let error = must_not_start(&config, &aws_env);
    assert!(
        error.contains("aws_kms.endpoint: http://kms.example.com is not https"),
        "{error}"
    );
}

/// Round 3, item 6: `seal new --aws-kms-key` sends a fresh KEK to KMS to be
/// encrypted, so plain http is allowed to this machine only. An endpoint whose
/// user name is a loopback address (`http://[::1]@HOST`) passed that check while the
/// client connected to HOST. Played with a listener standing in for HOST: it must
/// see no connection, and the command must say why.
#[test]
fn a_kms_endpoint_with_a_loopback_user_name_is_refused_before_any_connection() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    for endpoint in [
        format!("http://[::1]@127.0.0.1:{port}"),
        format!("http://localhost@127.0.0.1:{port}"),
        format!("http://127.0.0.1:1@127.0.0.1:{port}/"),
        format!("http://[::1]%40@127.0.0.1:{port}"),
    ] {
        let out = std::process::Command::new(keyhost_bin())
            .args([
                "seal",
                "new",
                "--aws-kms-key",
                "arn:aws:kms:us-east-1:123456789012:key/x",
                "--aws-region",
                REGION,
                "--aws-endpoint",
                &endpoint,
            ])
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{endpoint}: {stderr}");
        assert!(stderr.contains("contains credentials"), "{endpoint}: {stderr}");
        assert!(
            listener.accept().is_err(),
            "{endpoint}: the KEK was sent to the host after the user name"
        );
    }
}

/// Keys with their ciphertexts, made through `url`.
fn make_keys(site: &Site, url: &str, names: &[String]) -> Vec<(String, String, String)> {
    names
        .iter()
        .map(|name| {
            let (status, body) = site.call(&format!("-X POST {url}/v1/key/create/{name}"));
            assert_eq!(status, 200, "{body}");
            let (status, body) = site.call(&format!("-X POST {url}/v1/key/generate/{name} -d '{{}}'"));
            assert_eq!(status, 200, "{body}");
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            (
                name.clone(),
                v["plaintext"].as_str().unwrap().to_owned(),
                v["ciphertext"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn all_decrypt(site: &Site, url: &str, keys: &[(String, String, String)]) {
    for (name, plaintext, ciphertext) in keys {
        let (status, body) = site.call(&format!(
            "-X POST {url}/v1/key/decrypt/{name} -d '{{\"ciphertext\":\"{ciphertext}\"}}'"
        ));
        assert_eq!(status, 200, "{name}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["plaintext"].as_str(), Some(plaintext.as_str()), "{name}");
    }
}

fn migrate(args: &[&str]) -> String {
    migrate_expecting(args, true)
}

/// Runs `keyhost migrate ARGS…`, asserting that it succeeds (or fails); its stdout
/// and stderr.
fn migrate_expecting(args: &[&str], success: bool) -> String {
    let out = std::process::Command::new(keyhost_bin())
        .arg("migrate")
        .args(args)
        .env("XDG_CACHE_HOME", keyhost_test_support::cache_home())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.success(), success, "migrate {args:?}: {text}");
    text
}

fn records_in(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn rotation_under_load_loses_nothing_and_the_old_kek_can_then_go() {
    let site = Site::new();
    let store = site.path().join("keys");
    let (old, old_id) = site.kek_file("old");
    let (new, new_id) = site.kek_file("new");
    // Before sealing: records as KES writes them.
    let plain = site.config("plain", &fs(&store), "");
    let server = must_start(&plain, &[]);
    let mut keys = make_keys(
        &site,
        &server.url,
        &(0..5).map(|i| format!("plain-{i}")).collect::<Vec<_>>(),
    );
    drop(server);
    // Sealing switched on with `old`: the plain records are still served.
    let sealed_old = site.config("old", &format!("{}{}", fs(&store), seal(&[(&old, &old_id)])), "");
    let server = must_start(&sealed_old, &[]);
    all_decrypt(&site, &server.url, &keys);
    keys.extend(make_keys(
        &site,
        &server.url,
        &(0..20).map(|i| format!("old-{i}")).collect::<Vec<_>>(),
    ));
    drop(server);

    // The rolled configuration: `new` seals, `old` still opens.
    let rolled = site.config(
        "rolled",
        &format!("{}{}", fs(&store), seal(&[(&new, &new_id), (&old, &old_id)])),
        "",
    );
    let dry = migrate(&["--reseal", rolled.to_str().unwrap(), "--dry-run"]);
    assert!(dry.contains("25 records"), "{dry}");
    assert!(dry.contains(&format!("20  sealed under {old_id}")), "{dry}");
    assert!(dry.contains("5  not sealed"), "{dry}");
    assert!(dry.contains(&format!("25 would be sealed under {new_id}")), "{dry}");

    // Two nodes on the rolled configuration, under load, while every record is
    // re-sealed and new keys are made.
    let a = must_start(&rolled, &[]);
    let b = must_start(&rolled, &[]);
    // Each node has every key cached, as a node in service has: a record is absent
    // for the moment of its replacement, which only a cache miss would notice.
    all_decrypt(&site, &a.url, &keys);
    all_decrypt(&site, &b.url, &keys);
    let addr = |r: &Running| {
        r.url
            .trim_start_matches("https://")
            .parse::<std::net::SocketAddr>()
            .unwrap()
    };
    let read = |name: &str| std::fs::read_to_string(site.path().join(name)).unwrap();
    let connector = load::connector_from_pem(&read("server.cert"), &read("admin.cert"), &read("admin.key"));
    let names: Vec<String> = keys.iter().map(|k| k.0.clone()).collect();
    let load = Load::start(Spec {
        addr: addr(&a),
        failover: vec![addr(&b)],
        connector,
        keep_alive: 4,
        reconnecting: 1,
        keys: names,
    });
    std::thread::sleep(std::time::Duration::from_millis(500));
    let backup = site.path().join("reseal-backup");
    let during = std::thread::spawn({
        let (rolled, backup) = (rolled.clone(), backup.clone());
        move || {
            migrate(&[
                "--reseal",
                rolled.to_str().unwrap(),
                "--backup",
                backup.to_str().unwrap(),
            ])
        }
    });
    // Keys are made on node b for as long as the re-seal runs (at least three).
    let mut made = 0;
    while made < 3 || !during.is_finished() {
        keys.extend(make_keys(&site, &b.url, &[format!("new-{made}")]));
        made += 1;
    }
    let resealed = during.join().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let report = load.stop();
    assert_eq!(report.failed, 0, "{}", report.failures_text());
    assert!(report.ok > 20, "the load ran: {} requests", report.ok);
    assert!(
        resealed.contains(&format!("25 records sealed under {new_id}")),
        "{resealed}"
    );
    assert!(resealed.contains("every record is sealed under"), "{resealed}");
    // Each replaced record was saved first, as it was stored, readable by its owner
    // alone.
    assert_eq!(records_in(&backup).len(), 25);
    for entry in std::fs::read_dir(&backup).unwrap() {
        use std::os::unix::fs::PermissionsExt;
        let mode = entry.unwrap().metadata().unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    drop((a, b));

    // Every record is under `new` now: a node without `old` serves every key.
    for (name, record) in records_in(&store) {
        assert!(record.starts_with(format!("{PREFIX}{new_id}:").as_bytes()), "{name}");
    }
    let only_new = site.config("new", &format!("{}{}", fs(&store), seal(&[(&new, &new_id)])), "");
    let server = must_start(&only_new, &[]);
    all_decrypt(&site, &server.url, &keys);
    drop(server);

    // The way back: migrate to a keystore without sealing, which KES can read.
    let back_dir = site.path().join("back");
    let back = site.config("back", &fs(&back_dir), "");
    let out = migrate(&["--from", only_new.to_str().unwrap(), "--to", back.to_str().unwrap()]);
    assert!(out.contains(&format!("{} keys copied", keys.len())), "{out}");
    for (name, record) in records_in(&back_dir) {
        assert!(!record.starts_with(b"keyhost-sealed"), "{name}");
        KeyRecord::parse(&record).unwrap_or_else(|e| panic!("'{name}' is not a KES record: {e}"));
    }
    let server = must_start(&back, &[]);
    all_decrypt(&site, &server.url, &keys);
}

#[test]
fn a_record_planted_unsealed_is_served_only_until_unsealed_records_are_refused() {
    let site = Site::new();
    let store = site.path().join("keys");
    let (kek, id) = site.kek_file("kek");
    std::fs::create_dir_all(&store).unwrap();
    // Whoever writes to the backend plants a key they know, in KES's format.
    let known = [0x42u8; 32];
    std::fs::write(
        store.join("planted"),
        format!(r#"{{"bytes":"{}"}}"#, STANDARD.encode(known)),
    )
    .unwrap();
    let generate = |url: &str| site.call(&format!("-X POST {url}/v1/key/generate/planted -d '{{}}'"));

    let serve = site.config("serve", &format!("{}{}", fs(&store), seal(&[(&kek, &id)])), "");
    let server = must_start(&serve, &[]);
    assert_eq!(
        generate(&server.url).0,
        200,
        "with unsealed: serve the planted key is used"
    );
    drop(server);

    let refuse = site.config(
        "refuse",
        &format!("{}{}    unsealed: refuse\n", fs(&store), seal(&[(&kek, &id)])),
        "",
    );
    let server = must_start(&refuse, &[]);
    let (status, body) = generate(&server.url);
    assert_eq!(status, 502, "{body}");
    assert!(
        !body.contains("bytes") && !body.contains(&STANDARD.encode(known)),
        "{body}"
    );
    // Keys it made itself are sealed, and served.
    assert_eq!(site.call(&format!("-X POST {}/v1/key/create/mine", server.url)).0, 200);
    assert_eq!(
        site.call(&format!("-X POST {}/v1/key/generate/mine -d '{{}}'", server.url))
            .0,
        200
    );
    let log = stop_and_read_log(server);
    assert!(
        log.contains("the record of 'planted' does not open: it is not sealed"),
        "{log}"
    );

    // The documented rotation step applies the server's rules: under refuse, a
    // re-seal skips the planted record, says so, and leaves it as it was, so the
    // server still refuses it. It would otherwise seal the attacker's key.
    let planted_before = std::fs::read(store.join("planted")).unwrap();
    let dry = migrate(&["--reseal", refuse.to_str().unwrap(), "--dry-run"]);
    assert!(
        dry.contains("not sealed, refused (keystore.seal.unsealed: refuse)"),
        "{dry}"
    );
    assert!(dry.contains("1 would be skipped"), "{dry}");
    let backup = site.path().join("reseal-backup");
    let out = migrate_failing(&[
        "--reseal",
        refuse.to_str().unwrap(),
        "--backup",
        backup.to_str().unwrap(),
    ]);
    assert!(
        out.contains("skipped: ") && out.contains("the record of 'planted' does not open: it is not sealed"),
        "{out}"
    );
    assert!(out.contains("1 records were skipped"), "{out}");
    assert_eq!(
        std::fs::read(store.join("planted")).unwrap(),
        planted_before,
        "left as it was"
    );
    let server = must_start(&refuse, &[]);
    assert_eq!(generate(&server.url).0, 502, "still refused after the re-seal");
    drop(server);
    // Copying to another keystore applies the source's rules too.
    let elsewhere = site.config("elsewhere", &fs(&site.path().join("elsewhere")), "");
    let out = migrate_failing(&[
        "--from",
        refuse.to_str().unwrap(),
        "--to",
        elsewhere.to_str().unwrap(),
        "planted",
    ]);
    assert!(
        out.contains("cannot read 'planted'") && out.contains("not sealed"),
        "{out}"
    );
    assert!(!site.path().join("elsewhere").join("planted").exists());
}

fn migrate_failing(args: &[&str]) -> String {
    migrate_expecting(args, false)
}
