//! `keyhost server --config`: the MinIO guide's procedure, with the fs keystore
//! standing in for AWS — a v0.16 configuration with `root: disabled`, a `minio`
//! policy, `${VAR}` identities and `keys:` created at start-up — driven with curl.

#![expect(clippy::unwrap_used, reason = "Tests fail loudly by design")]

use std::process::Command;

use keyhost_policy::ApiKey;

use keyhost_test_support::process::{curl, newest_config, server_files, start, start_as_admin, write_identity};

#[test]
fn the_guide_procedure_with_the_fs_keystore() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    server_files(d);
    let minio = ApiKey::from_seed([3; 32]);
    write_identity(d, "minio", &minio);
    write_identity(d, "stranger", &ApiKey::from_seed([4; 32]));

    let config = d.join("server-config.yaml");
    std::fs::write(
        &config,
        format!(
            r#"address: 0.0.0.0:7373
root: disabled
tls:
  key:  {d}/server.key
  cert: {d}/server.cert
policy:
  minio:
    allow:
    - /v1/key/create/*
    - /v1/key/generate/*
    - /v1/key/decrypt/*
    identities:
    - ${{MINIO_IDENTITY_HASH}}
keys:
  - name: minio-encryption-key-alpha
keystore:
  fs:
    path: {d}/keys
"#,
            d = d.display()
        ),
    )
    .unwrap();
    let server = start(&config, &[("MINIO_IDENTITY_HASH", minio.identity().as_str())]).unwrap();
    let url = &server.url;
    assert!(
        d.join("keys/minio-encryption-key-alpha").is_file(),
        "keys: are created at start-up"
    );

    assert_eq!(
        curl(
            d,
            "minio",
            &format!("-X POST {url}/v1/key/create/minio-backend-default-key")
        )
        .0,
        200
    );
    let (status, body) = curl(
        d,
        "minio",
        &format!("-X POST {url}/v1/key/create/minio-backend-default-key"),
    );
    assert_eq!(
        (status, body.as_str()),
        (400, r#"{"message":"key does already exist"}"#),
        "v0.16 texts for v0.16 files"
    );
    let (status, body) = curl(
        d,
        "minio",
        &format!("-X POST -d '{{\"context\":\"e30=\"}}' {url}/v1/key/generate/minio-backend-default-key"),
    );
    assert_eq!(status, 200, "{body}");
    let dek: serde_json::Value = serde_json::from_str(&body).unwrap();
    let (status, body) = curl(
        d,
        "minio",
        &format!(
            "-X POST -d '{{\"ciphertext\":\"{}\",\"context\":\"e30=\"}}' {url}/v1/key/decrypt/minio-backend-default-key",
            dek["ciphertext"].as_str().unwrap()
        ),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["plaintext"],
        dek["plaintext"]
    );

    let (status, body) = curl(
        d,
        "minio",
        &format!("-X DELETE {url}/v1/key/delete/minio-backend-default-key"),
    );
    assert_eq!((status, body.as_str()), (403, r#"{"message":"prohibited by policy"}"#));
    let (status, _) = curl(
        d,
        "stranger",
        &format!("-X POST {url}/v1/key/generate/minio-backend-default-key"),
    );
    assert_eq!(status, 403, "an identity without a policy is denied");
    // A path with more elements than the route's pattern, refused before the
    // policy is asked, with KES v0.16.1's message.
    assert_eq!(
        curl(d, "minio", &format!("-X POST {url}/v1/key/create/a/b")),
        (
            400,
            r#"{"message":"request URL path does not match API pattern: /v1/key/create/*"}"#.to_owned()
        )
    );
}

#[test]
fn a_broken_configuration_names_the_file_and_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kes.yaml");
    std::fs::write(&config, "root: disabled\ntls:\n  key: k\n  cret: c\n").unwrap();
    let err = start(&config, &[]).expect_err("must not start");
    assert!(
        err.contains("kes.yaml") && err.contains("line 4") && err.contains("cret"),
        "{err}"
    );

    std::fs::write(
        &config,
        "admin: {identity: disabled}\ntls: {key: /nonexistent.key, cert: /nonexistent.cert}\n",
    )
    .unwrap();
    let err = start(&config, &[]).expect_err("must not start");
    assert!(err.contains("cannot read /nonexistent.cert"), "{err}");
}

/// Kubernetes probes: `api.<route>.skip_auth` lets clients without a certificate
/// reach that route, and only that route.
#[test]
fn skip_auth_routes_answer_clients_without_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_, server) = start_as_admin(d, "api:\n  /v1/ready:\n    skip_auth: true\n    timeout: 3s\n");
    let url = &server.url;
    let anonymous = |path: &str| {
        let out = Command::new("curl")
            .args(["-sS", "-w", "\n%{http_code}", "--cacert"])
            .arg(d.join("server.cert"))
            .arg(format!("{url}{path}"))
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let (body, code) = text.rsplit_once('\n').unwrap();
        (code.parse::<u16>().unwrap(), body.to_owned())
    };
    assert_eq!(anonymous("/v1/ready").0, 200);
    let (status, body) = anonymous("/v1/key/list/");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("tls: client certificate is required"), "{body}");
    // Clients with a certificate are served as before.
    assert_eq!(curl(d, "admin", &format!("{url}/v1/key/list/")).0, 200);
    let (_, api) = curl(d, "admin", &format!("{url}/v1/api"));
    let api: Vec<serde_json::Value> = serde_json::from_str(&api).unwrap();
    let ready = api.iter().find(|r| r["path"] == "/v1/ready").unwrap();
    assert_eq!(ready["timeout"], 3, "the override shows in /v1/api");
}

/// `log.audit: on` writes one JSON line per request to stdout, in KES's field order,
/// and a server stopped with Ctrl-C writes the lines still queued before it exits.
#[test]
fn audit_lines_reach_stdout_and_survive_a_stop() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (creds, mut server) = start_as_admin(d, "log:\n  audit: on\n");
    let url = server.url.clone();
    assert_eq!(curl(d, "admin", &format!("-X POST {url}/v1/key/create/audited")).0, 200);
    assert_eq!(curl(d, "admin", &format!("{url}/v1/key/describe/nothing-here")).0, 404);
    // Stop at once: the last lines are still gathering in the writer.
    Command::new("kill")
        .args(["-INT", &server.child.id().to_string()])
        .status()
        .unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut server.stdout, &mut rest).unwrap();
    assert!(server.child.wait().unwrap().success());
    let events: Vec<serde_json::Value> = rest
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| {
            assert!(l.starts_with("{\"time\":\""), "KES's field order: {l}");
            serde_json::from_str(l).unwrap()
        })
        .collect();
    let find = |path: &str| {
        events
            .iter()
            .find(|e| e["request"]["path"] == path)
            .unwrap_or_else(|| panic!("no audit line for {path} in:\n{rest}"))
    };
    let created = find("/v1/key/create/audited");
    assert_eq!(created["response"]["code"], 200);
    assert_eq!(created["request"]["identity"], creds.admin.identity().as_str());
    assert_eq!(created["request"]["ip"], "127.0.0.1");
    assert_eq!(find("/v1/key/describe/nothing-here")["response"]["code"], 404);
}

/// The server switches core dumps off, so that no key material lands in a core file.
#[test]
fn the_server_writes_no_core_dumps() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let creds = server_files(d);
    let config = newest_config(d, &creds, "");
    let server = start(&config, &[]).unwrap();
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", server.child.id())).unwrap();
    let core = limits.lines().find(|l| l.starts_with("Max core file size")).unwrap();
    let values: Vec<&str> = core.split_whitespace().skip(4).take(2).collect();
    assert_eq!(values, ["0", "0"], "{core}");
}

/// SIGHUP re-reads the configuration: a changed policy applies to new requests; a
/// broken file is refused and the previous configuration keeps serving.
#[test]
fn sighup_reloads_and_a_broken_file_keeps_the_old_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    server_files(d);
    let app = ApiKey::from_seed([9; 32]);
    write_identity(d, "app", &app);
    let config = d.join("config.yaml");
    let write = |allow: &str| {
        std::fs::write(
            &config,
            format!(
                "version: v1\nadmin: {{identity: disabled}}\ntls: {{key: {d}/server.key, cert: {d}/server.cert}}\n\
                 policy:\n  app:\n    allow: [{allow}]\n    identities: [{id}]\nkeystore: {{fs: {{path: {d}/keys}}}}\n",
                d = d.display(),
                id = app.identity()
            ),
        )
        .unwrap();
    };
    write("/v1/key/create/*");
    let server = start(&config, &[]).unwrap();
    let url = server.url.clone();
    let hup = || {
        Command::new("kill")
            .args(["-HUP", &server.child.id().to_string()])
            .status()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    assert_eq!(curl(d, "app", &format!("-X POST {url}/v1/key/create/k")).0, 200);
    assert_eq!(curl(d, "app", &format!("-X DELETE {url}/v1/key/delete/k")).0, 403);

    write("/v1/key/create/*, /v1/key/delete/*");
    hup();
    assert_eq!(curl(d, "app", &format!("-X DELETE {url}/v1/key/delete/k")).0, 200);

    std::fs::write(&config, "version: v1\nadmin: [broken\n").unwrap();
    hup();
    assert_eq!(
        curl(d, "app", &format!("-X POST {url}/v1/key/create/k2")).0,
        200,
        "still serving"
    );
    assert_eq!(
        curl(d, "app", &format!("-X DELETE {url}/v1/key/delete/k2")).0,
        200,
        "with the last good configuration"
    );
}

/// `compat:` makes keyhost write what old KES servers read: JSON ciphertexts and
/// `{"bytes"}` key records.
#[test]
fn compat_writes_formats_old_kes_reads() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let creds = server_files(d);
    write_identity(d, "admin", &creds.admin);
    let config = d.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "admin: {{identity: {id}}}\ntls: {{key: {d}/server.key, cert: {d}/server.cert}}\n\
             keystore: {{fs: {{path: {d}/keys}}}}\ncompat: {{ciphertext: json, key_format: v0.16}}\n",
            id = creds.admin.identity(),
            d = d.display()
        ),
    )
    .unwrap();
    let server = start(&config, &[]).unwrap();
    let url = &server.url;
    assert_eq!(curl(d, "admin", &format!("-X POST {url}/v1/key/create/old")).0, 200);
    let record = std::fs::read_to_string(d.join("keys/old")).unwrap();
    assert!(record.starts_with("{\"bytes\":\"") && record.len() < 60, "{record}");
    let (status, body) = curl(d, "admin", &format!("-X POST {url}/v1/key/generate/old"));
    assert_eq!(status, 200, "{body}");
    let dek: serde_json::Value = serde_json::from_str(&body).unwrap();
    let ct = dek["ciphertext"].as_str().unwrap();
    let decoded = Command::new("sh")
        .arg("-c")
        .arg(format!("echo {ct} | base64 -d"))
        .output()
        .unwrap()
        .stdout;
    assert!(
        decoded.starts_with(b"{\"aead\":\""),
        "{}",
        String::from_utf8_lossy(&decoded)
    );
}

/// Key files the fs keystore writes are readable by their owner only (0600), even
/// in a key directory that already existed with 0755 and under a umask of 022, and
/// the server raises its open-file limit to the hard limit at start.
#[test]
fn key_files_are_readable_by_their_owner_only() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let keys = d.join("keys");
    std::fs::create_dir(&keys).unwrap();
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (_creds, server) = start_as_admin(d, &format!("keystore:\n  fs:\n    path: {}\n", keys.display()));
    let (status, body) = curl(d, "admin", &format!("-X POST {}/v1/key/create/private-key", server.url));
    assert_eq!(status, 200, "{body}");
    let mode = std::fs::metadata(keys.join("private-key")).unwrap().mode() & 0o777;
    assert_eq!(mode, 0o600, "the key file is {mode:o}");
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", server.child.id())).unwrap();
    let files = limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
    let fields: Vec<&str> = files.split_whitespace().collect();
    assert_eq!(fields[3], fields[4], "soft and hard open-file limits: {files}");
}

/// The fs keystore refuses a directory on a file system that ignores case, where
/// `SECRET` and `secret` would be one key and a policy naming one could be bypassed
/// with the other (item 18). The file system is a FUSE one that folds every name to
/// lower case (`tests/support/casefold_fs.py`); mounting it needs root.
#[test]
fn the_fs_keystore_refuses_a_file_system_that_ignores_case() {
    assert!(
        keyhost_test_support::process::is_root(),
        "this test mounts a FUSE file system and needs root (CI and the dev machines run as root)"
    );
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (backing, mount) = (d.join("backing"), d.join("keys"));
    std::fs::create_dir(&backing).unwrap();
    std::fs::create_dir(&mount).unwrap();
    let venv = keyhost_test_support::install_moto();
    let script = keyhost_plugin_build::repo_root().join("tests/support/casefold_fs.py");
    let fuse = keyhost_test_support::process::KillOnDrop(
        Command::new(venv.join("bin/python"))
            .arg(&script)
            .arg(&backing)
            .arg(&mount)
            .spawn()
            .unwrap(),
    );
    struct Unmount<'a>(&'a std::path::Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0).status();
        }
    }
    let _unmount = Unmount(&mount);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mounted = || {
        std::fs::read_to_string("/proc/self/mounts")
            .unwrap_or_default()
            .lines()
            .any(|l| l.split(' ').nth(1) == mount.to_str())
    };
    while !mounted() {
        assert!(
            std::time::Instant::now() < deadline,
            "the case-folding file system did not mount"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // It does fold case.
    std::fs::write(mount.join("Probe"), b"x").unwrap();
    assert!(mount.join("PROBE").exists(), "the test file system does not fold case");
    std::fs::remove_file(mount.join("probe")).unwrap();

    let creds = server_files(d);
    let config = newest_config(d, &creds, &format!("keystore:\n  fs:\n    path: {}\n", mount.display()));
    let err = start(&config, &[]).expect_err("the server started on a case-folding directory");
    assert!(err.contains("ignores case"), "{err}");
    assert!(
        err.contains(&mount.display().to_string()) || err.contains("/data"),
        "{err}"
    );
    drop(fuse);
}

/// KES v0.16.1 sends a listing's outcome in the trailers `Status` and `Error` to
/// every client, and its clients (the v0.16 `kes` CLI, MinIO of that era) read
/// them without asking with `TE: trailers`; without them `kes key list` fails with
/// `no HTTP status trailer`. Played over HTTP/1.1 with curl, which does not ask.
#[test]
fn v016_listings_carry_their_trailers_to_clients_that_do_not_ask() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    server_files(d);
    let admin = ApiKey::from_seed([5; 32]);
    write_identity(d, "admin", &admin);
    let config = d.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "address: 0.0.0.0:7373\nroot: {}\ntls:\n  key: {d}/server.key\n  cert: {d}/server.cert\nkeystore:\n  fs:\n    path: {d}/keys\n",
            admin.identity(),
            d = d.display()
        ),
    )
    .unwrap();
    let server = start(&config, &[]).unwrap();
    let url = &server.url;
    assert_eq!(curl(d, "admin", &format!("-X POST {url}/v1/key/create/k1")).0, 200);
    for path in ["/v1/key/list/*", "/v1/identity/list/*"] {
        let out = Command::new("curl")
            .args(["-sS", "--http1.1", "-D", "-", "-o", "/dev/null", "--cacert"])
            .arg(d.join("server.cert"))
            .arg("--cert")
            .arg(d.join("admin.cert"))
            .arg("--key")
            .arg(d.join("admin.key"))
            .arg(format!("{url}{path}"))
            .output()
            .unwrap();
        let head = String::from_utf8(out.stdout).unwrap().to_ascii_lowercase();
        assert!(head.contains("transfer-encoding: chunked"), "{path}: {head}");
        assert!(head.contains("trailer: status,error"), "{path}: {head}");
        assert!(
            head.contains("\nstatus: 200"),
            "{path}: the Status trailer is missing:\n{head}"
        );
        assert!(
            head.contains("\nerror: "),
            "{path}: the Error trailer is missing:\n{head}"
        );
    }
}

/// KES v0.16's `--auth` defaults to `on`: client certificates are verified against
/// the system's CA certificates (SSL_CERT_FILE). A v0.16 file started without the
/// flag refuses a self-signed client certificate at the handshake, and serves one
/// its CA signed; `--auth=off` (MinIO's guide) serves the self-signed one.
#[test]
fn v016_files_verify_clients_against_the_system_cas_unless_auth_is_off() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    server_files(d);
    let signed = rcgen::CertifiedIssuer::self_signed(ca_params(), rcgen::KeyPair::generate().unwrap()).unwrap();
    std::fs::write(d.join("ca.cert"), signed.pem()).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let mut leaf = rcgen::CertificateParams::new(vec!["client".into()]).unwrap();
    leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let leaf = leaf.signed_by(&leaf_key, &signed).unwrap();
    std::fs::write(d.join("signed.cert"), leaf.pem()).unwrap();
    std::fs::write(d.join("signed.key"), leaf_key.serialize_pem()).unwrap();
    let stranger = ApiKey::from_seed([6; 32]);
    write_identity(d, "stranger", &stranger);
    let config = d.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "address: 0.0.0.0:7373\nroot: disabled\ntls:\n  key: {d}/server.key\n  cert: {d}/server.cert\nkeystore:\n  fs:\n    path: {d}/keys\n",
            d = d.display()
        ),
    )
    .unwrap();
    let ca = d.join("ca.cert");
    let env = [("SSL_CERT_FILE", ca.to_str().unwrap())];
    // `--auth=on`, as no flag at all means (the helper adds `--auth=off` otherwise).
    let server = keyhost_test_support::process::start_with(&["--auth=on"], &config, &env).unwrap();
    let url = &server.url;
    assert_eq!(
        curl(d, "signed", &format!("{url}/version")).0,
        200,
        "a CA-signed client is served"
    );
    let (status, _) = curl(d, "stranger", &format!("{url}/version"));
    assert_eq!(
        status, 0,
        "a self-signed client certificate is refused at the handshake"
    );
    drop(server);
    let server = keyhost_test_support::process::start_with(&["--auth=off"], &config, &env).unwrap();
    assert_eq!(curl(d, "stranger", &format!("{}/version", server.url)).0, 200);
    drop(server);
    // No flag: the same as --auth=on.
    let mut child = Command::new(env!("CARGO_BIN_EXE_keyhost"))
        .args(["server", "--addr", "127.0.0.1:0", "--config"])
        .arg(&config)
        .envs(env)
        .env("KEYHOST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut first).unwrap();
    let url = first
        .split_whitespace()
        .find(|w| w.starts_with("https://"))
        .unwrap()
        .to_owned();
    assert_eq!(
        curl(d, "stranger", &format!("{url}/version")).0,
        0,
        "--auth defaults to on"
    );
    assert_eq!(curl(d, "signed", &format!("{url}/version")).0, 200);
    let _ = child.kill();
    let _ = child.wait();
}

fn ca_params() -> rcgen::CertificateParams {
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    ca
}

/// A v0.16 file with `tls.proxy` and `--auth on`: KES v0.16.1 verifies the
/// certificate a proxy forwards against the system's CAs (Go's default usage), and
/// answers 403 when it does not verify. Played as the attack: the proxy's client
/// forwards the admin's *public*, self-signed certificate to become the admin.
/// With `--auth=off` the proxy is trusted to have verified it (KES v0.16.1 alike).
#[test]
fn v016_auth_on_verifies_the_certificate_a_proxy_forwards() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    server_files(d);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params(), rcgen::KeyPair::generate().unwrap()).unwrap();
    std::fs::write(d.join("ca.cert"), ca.pem()).unwrap();
    // The proxy: a client certificate of the CA, as `--auth on` needs of it.
    let issue = |who: &str, usages: Vec<rcgen::ExtendedKeyUsagePurpose>| {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec![who.into()]).unwrap();
        params.extended_key_usages = usages;
        let cert = params.signed_by(&key, &ca).unwrap();
        std::fs::write(d.join(format!("{who}.cert")), cert.pem()).unwrap();
        std::fs::write(d.join(format!("{who}.key")), key.serialize_pem()).unwrap();
        cert.pem()
    };
    let proxy_pem = issue("proxy", vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth]);
    // A client of the CA behind the proxy, with no extended key usage (Go's check
    // then passes).
    let client_pem = issue("client", vec![]);
    let admin = ApiKey::from_seed([8; 32]);
    write_identity(d, "admin", &admin);
    let admin_pem = std::fs::read_to_string(d.join("admin.cert")).unwrap();
    let id = |pem: &str| {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        keyhost_policy::identity_of_chain([der.as_ref()], keyhost_policy::ChainRule::V016).unwrap()
    };
    let config = d.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "address: 0.0.0.0:7373\nroot: {admin}\ntls:\n  key: {d}/server.key\n  cert: {d}/server.cert\n  proxy:\n    identities:\n    - {proxy}\n    header:\n      cert: X-Tls-Client-Cert\npolicy:\n  app:\n    paths:\n    - /v1/key/list/*\n    identities:\n    - {client}\nkeystore:\n  fs:\n    path: {d}/keys\n",
            admin = admin.identity(),
            proxy = id(&proxy_pem),
            client = id(&client_pem),
            d = d.display()
        ),
    )
    .unwrap();
    let escape = |pem: &str| pem.bytes().map(|b| format!("%{b:02X}")).collect::<String>();
    let env = [("SSL_CERT_FILE", d.join("ca.cert").to_str().unwrap().to_owned())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let forward = |url: &str, pem: &str, path: &str| {
        // KES v0.16 creates keys with POST and lists them with GET.
        let method = if path.starts_with("/v1/key/create/") {
            "POST"
        } else {
            "GET"
        };
        curl(
            d,
            "proxy",
            &format!("-X {method} -H 'X-Tls-Client-Cert: {}' {url}{path}", escape(pem)),
        )
    };

    let server = keyhost_test_support::process::start_with(&["--auth=on"], &config, &env).unwrap();
    let url = server.url.clone();
    let (status, body) = forward(&url, &admin_pem, "/v1/key/create/planted");
    assert_eq!(
        (status, body.as_str()),
        (403, r#"{"message":""}"#),
        "a forwarded certificate no trusted CA issued is refused, as KES v0.16.1 refuses it"
    );
    let (status, body) = forward(&url, &client_pem, "/v1/key/list/*");
    assert_eq!(status, 200, "the CA's client behind the proxy is served: {body}");
    let (status, _) = forward(&url, &client_pem, "/v1/key/create/k");
    assert_eq!(status, 403, "as itself, under its own policy");
    drop(server);

    let server = keyhost_test_support::process::start_with(&["--auth=off"], &config, &env).unwrap();
    let (status, body) = forward(&server.url, &admin_pem, "/v1/key/create/k");
    assert_eq!(
        status, 200,
        "with --auth=off the proxy is trusted to have verified its client: {body}"
    );
}

/// Round 3, item 6: private keys are read as key-encryption keys are, only from
/// files other local users cannot read: the server's own (`tls.key`) and the client
/// key the host presents for a plugin (`allow.tls`). Start-up refuses a key file
/// open to others, naming the file and the fix, before anything else runs.
#[test]
fn private_keys_open_to_other_users_stop_the_server_naming_the_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let creds = server_files(d);
    let open = |path: &std::path::Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    let key = d.join("server.key");
    for mode in [0o644, 0o640, 0o604] {
        open(&key, mode);
        let config = newest_config(d, &creds, "");
        let err = keyhost_test_support::process::start(&config, &[]).unwrap_err();
        assert!(
            err.contains(&format!("{} has mode {mode:04o}", key.display())) && err.contains("chmod 600"),
            "{mode:o}: {err}"
        );
    }
    open(&key, 0o600);

    let client_key = d.join("etcd-client.key");
    std::fs::write(&client_key, creds.server_key_pem.as_str()).unwrap();
    open(&client_key, 0o644);
    let config = newest_config(
        d,
        &creds,
        &format!(
            "keystore:\n  plugin:\n    path: builtin:etcd\n    config:\n      endpoints: https://127.0.0.1:2379\n    allow:\n      http: [\"https://127.0.0.1:2379\"]\n      tls:\n        - origins: [\"https://127.0.0.1:2379\"]\n          cert: {d}/server.cert\n          key: {d}/etcd-client.key\n",
            d = d.display()
        ),
    );
    let err = keyhost_test_support::process::start(&config, &[]).unwrap_err();
    assert!(
        err.contains("keystore.plugin.allow.tls[0].key") && err.contains("has mode 0644"),
        "{err}"
    );
}
