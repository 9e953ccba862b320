//! The MinIO guide's deployment end to end, with moto in place of AWS: identities
//! made and computed with `keyhost identity`, the MinIO guide's configuration file (its
//! `keystore.secretsmanager` block and `${VAR}` credentials), `keyhost server`,
//! `keyhost key create`, then generate and decrypt as MinIO would with its
//! `MINIO_KMS_KES_*` settings. Also: secrets written by KES, KMS envelopes through
//! the server, and the offline cache during an AWS outage.

#![expect(clippy::unwrap_used, reason = "Tests fail loudly by design")]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use keyhost_policy::ApiKey;
use keyhost_test_support::process::{curl, start, start_logging_to, start_with, write_identity};
use keyhost_test_support::{ACCESS_KEY, Moto, REGION, Relay, SECRET_KEY};

/// Runs `keyhost ARGS` with `env`; returns stdout, or panics with stderr.
fn keyhost(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_keyhost"))
        .args(args)
        .envs(env.iter().copied())
        .env_remove("KES_API_KEY")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "keyhost {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// curl as MinIO does it: its certificate and key, and the server's certificate as
/// the CA, all from the `MINIO_KMS_KES_*` variables.
fn as_minio(env: &[(&str, String)], route: &str, body: &str) -> (u16, serde_json::Value) {
    let var = |name: &str| env.iter().find(|(k, _)| *k == name).unwrap().1.clone();
    let out = Command::new("curl")
        .args(["-sS", "-X", "POST", "-w", "\n%{http_code}", "--cert"])
        .arg(var("MINIO_KMS_KES_CERT_FILE"))
        .arg("--key")
        .arg(var("MINIO_KMS_KES_KEY_FILE"))
        .arg("--cacert")
        .arg(var("MINIO_KMS_KES_CAPATH"))
        .arg("-d")
        .arg(body)
        .arg(format!(
            "{}/v1/key/{route}/{}",
            var("MINIO_KMS_KES_ENDPOINT"),
            var("MINIO_KMS_KES_KEY_NAME")
        ))
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, code) = text.rsplit_once('\n').unwrap();
    assert!(
        out.status.success(),
        "curl {route}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        code.parse().unwrap(),
        serde_json::from_str(body).unwrap_or_else(|_| serde_json::Value::String(body.to_owned())),
    )
}

#[test]
fn the_guide_procedure_against_moto() {
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    let c = |f: &str| certs.join(f).display().to_string();

    // 2) the server's key and certificate; 3) MinIO's, and its identity.
    keyhost(
        &[
            "tool",
            "identity",
            "new",
            "--server",
            "--key",
            &c("server.key"),
            "--cert",
            &c("server.cert"),
            "--ip",
            "127.0.0.1",
            "--dns",
            "localhost",
        ],
        &[],
    );
    keyhost(
        &[
            "identity",
            "new",
            "--key",
            &c("minio-kes.key"),
            "--cert",
            &c("minio-kes.cert"),
            "--ip",
            "127.0.0.1",
            "--dns",
            "localhost",
        ],
        &[],
    );
    let minio_identity = keyhost(&["tool", "identity", "of", &c("minio-kes.cert")], &[])
        .trim()
        .to_owned();
    assert_eq!(minio_identity.len(), 64, "{minio_identity}");
    assert_eq!(
        keyhost(&["identity", "of", &c("minio-kes.cert")], &[]).trim(),
        minio_identity
    );

    // 4) the MinIO guide's configuration file, with moto's address as the endpoint.
    let config = dir.path().join("kes-config.yaml");
    std::fs::write(
        &config,
        format!(
            r#"address: 0.0.0.0:7373

# Disable the root identity, as we do not need that level of access for
# supporting SSE operations.
root: disabled

tls:
  key:  {key}
  cert: {cert}

policy:
  minio:
    allow:
    - /v1/key/create/*
    - /v1/key/generate/*
    - /v1/key/decrypt/*
    identities:
    - ${{MINIO_IDENTITY_HASH}} # Replace with the output of 'kes tool identity of minio-kes.cert'

keystore:
  secretsmanager:
    endpoint: {endpoint} # use the Secrets Manager endpoint for your region
    region: {REGION} # e.g. us-east-1
    kmskey: "" # Optional. The root AWS KMS key to use for cryptographic operations.
    credentials:
      accesskey: "${{AWSACCESSKEY}}" # AWS Access Key
      secretkey: "${{AWSSECRETKEY}}" # AWS Secret Key
"#,
            key = c("server.key"),
            cert = c("server.cert"),
            endpoint = moto.url(),
        ),
    )
    .unwrap();

    // 5) start the server (--auth off: self-signed client certificates).
    let server = start_with(
        &["--auth", "off"],
        &config,
        &[
            ("MINIO_IDENTITY_HASH", minio_identity.as_str()),
            ("AWSACCESSKEY", ACCESS_KEY),
            ("AWSSECRETKEY", SECRET_KEY),
        ],
    )
    .unwrap();

    // 6) create the external key, as the guide does, with MinIO's identity.
    let client = [
        ("KES_SERVER", server.url.clone()),
        ("KES_CLIENT_KEY", c("minio-kes.key")),
        ("KES_CLIENT_CERT", c("minio-kes.cert")),
    ];
    let client: Vec<(&str, &str)> = client.iter().map(|(k, v)| (*k, v.as_str())).collect();
    keyhost(&["key", "create", "-k", "minio-backend-default-key"], &client);
    // The key is a secret of that name in Secrets Manager.
    let stored = moto.python("print(sm.get_secret_value(SecretId='minio-backend-default-key')['SecretString'])");
    assert!(!stored.is_empty() && stored.is_ascii(), "{stored}");
    // Without -k the self-signed server is not trusted: a clear error, not a hang.
    let out = Command::new(env!("CARGO_BIN_EXE_keyhost"))
        .args(["key", "create", "another-key"])
        .envs(client.iter().copied())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--insecure"), "{out:?}");

    // 7) MinIO's settings, and what MinIO does with them.
    let minio = [
        ("MINIO_KMS_KES_ENDPOINT", server.url.clone()),
        ("MINIO_KMS_KES_CERT_FILE", c("minio-kes.cert")),
        ("MINIO_KMS_KES_KEY_FILE", c("minio-kes.key")),
        ("MINIO_KMS_KES_CAPATH", c("server.cert")),
        ("MINIO_KMS_KES_KEY_NAME", "minio-backend-default-key".to_owned()),
    ];
    let context = r#"{"context":"eyJidWNrZXQiOiJteWJ1Y2tldCJ9"}"#;
    let (status, dek) = as_minio(&minio, "generate", context);
    assert_eq!(status, 200, "{dek}");
    let (status, plain) = as_minio(
        &minio,
        "decrypt",
        &format!(
            r#"{{"ciphertext":"{}","context":"eyJidWNrZXQiOiJteWJ1Y2tldCJ9"}}"#,
            dek["ciphertext"].as_str().unwrap()
        ),
    );
    assert_eq!(status, 200, "{plain}");
    assert_eq!(plain["plaintext"], dek["plaintext"]);
    // The policy allows nothing else.
    let (status, body) = as_minio(&minio, "encrypt", r#"{"plaintext":"AAAA"}"#);
    assert_eq!(status, 403, "{body}");
}

/// A v0.16-style configuration for an AWS keystore at `endpoint` with an admin.
fn admin_config(dir: &Path, admin: &ApiKey, keystore_extra: &str, endpoint: &str) -> std::path::PathBuf {
    let creds = keyhost_tls::mint::DevCredentials::generate(&["localhost".into(), "127.0.0.1".into()]).unwrap();
    std::fs::write(dir.join("server.cert"), &creds.server_cert_pem).unwrap();
    keyhost_test_support::write_private(dir.join("server.key"), creds.server_key_pem.as_str());
    write_identity(dir, "admin", admin);
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            r#"version: v1
address: 0.0.0.0:7373
admin:
  identity: {admin}
tls:
  key: {d}/server.key
  cert: {d}/server.cert
cache:
  expiry:
    any: 5m
    unused: 5m
    offline: 5m
keystore:
  aws:
    secretsmanager:
      endpoint: {endpoint}
      region: {REGION}
      credentials:
        accesskey: {ACCESS_KEY}
        secretkey: {SECRET_KEY}
{keystore_extra}"#,
            admin = admin.identity().as_str(),
            d = dir.display(),
        ),
    )
    .unwrap();
    config
}

#[test]
fn secrets_written_by_kes_serve_generate_and_decrypt() {
    let moto = Moto::start();
    // As KES v0.16 stored a key (32 zero bytes), and as the newest KES does.
    moto.python(
        "sm.create_secret(Name='kes-v016-key', SecretString='{\"bytes\":\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"}')\n\
         sm.create_secret(Name='kes-newest-key', SecretString='CiQKIMiHG7XrN94FuwblJJor4f7f6rbqAl7DwsLaiIoyz0D2EAESJAognLXl4yqa4cjZTcSbsU6sNnN8kP9ARWkXwa20YQZa9HgQARoMCNithK0GEID67qYDIkAzZWNmY2RmMzhmY2JlMTQxYWUyNmExMDMwZjgxZTk2Yjc1MzM2NWE0Njc2MGFlNmI1Nzg2OThhOTdjNTlmZDIy')",
    );
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let admin = ApiKey::from_seed([7; 32]);
    let server = start(&admin_config(d, &admin, "", &moto.url()), &[]).unwrap();
    let url = &server.url;

    // A ciphertext KES v0.16 produced under that key (its import test vector).
    let (status, body) = curl(
        d,
        "admin",
        &format!(
            "-X POST -d '{{\"ciphertext\":\"eyJhZWFkIjoiQUVTLTI1Ni1HQ00tSE1BQy1TSEEtMjU2IiwiaXYiOiJ1SUlmSG1OanY2MGRBbUlRL0haT3JBPT0iLCJub25jZSI6IlNEdi8wTlpWaG02R1lGS0wiLCJieXRlcyI6InBqU204UDkyRXlzZE5GZW4rQWdJUEQxeWl4KzNmWTZvUkE0SGdXYzdlZ1J5ckZtNzJ0Z1dYUitFTVlrRHZxYmUifQ==\"}}' {url}/v1/key/decrypt/kes-v016-key"
        ),
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="), "{body}");

    for key in ["kes-v016-key", "kes-newest-key"] {
        let (status, body) = curl(d, "admin", &format!("-X POST -d '{{}}' {url}/v1/key/generate/{key}"));
        assert_eq!(status, 200, "{key}: {body}");
        let dek: serde_json::Value = serde_json::from_str(&body).unwrap();
        let (status, body) = curl(
            d,
            "admin",
            &format!(
                "-X POST -d '{{\"ciphertext\":\"{}\"}}' {url}/v1/key/decrypt/{key}",
                dek["ciphertext"].as_str().unwrap()
            ),
        );
        assert_eq!(status, 200, "{key}: {body}");
        assert!(body.contains(dek["plaintext"].as_str().unwrap()), "{key}: {body}");
    }
    // The newest record carries an HMAC key.
    let (status, body) = curl(
        d,
        "admin",
        &format!("-X PUT -d '{{\"message\":\"aGk=\"}}' {url}/v1/key/hmac/kes-newest-key"),
    );
    assert_eq!(status, 200, "{body}");
    // Listing goes through ListSecrets.
    let (status, body) = curl(d, "admin", &format!("{url}/v1/key/list/kes-*"));
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("kes-newest-key") && body.contains("kes-v016-key"),
        "{body}"
    );
}

#[test]
fn kms_envelopes_through_the_server() {
    let moto = Moto::start();
    let kms_key = moto.create_kms_key();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let admin = ApiKey::from_seed([8; 32]);
    let extra = format!(
        "      kmskey: {kms_key}\n      kms_endpoint: {}\n      kms_envelope: true\n",
        moto.url()
    );
    let server = start(&admin_config(d, &admin, &extra, &moto.url()), &[]).unwrap();
    let url = &server.url;
    assert_eq!(curl(d, "admin", &format!("-X POST {url}/v1/key/create/wrapped")).0, 200);
    let stored = moto.python("print(sm.get_secret_value(SecretId='wrapped')['SecretString'])");
    assert!(stored.starts_with("keyhost:kms-envelope:v1:"), "{stored}");
    let (status, body) = curl(d, "admin", &format!("-X POST -d '{{}}' {url}/v1/key/generate/wrapped"));
    assert_eq!(status, 200, "{body}");
    let (status, body) = curl(d, "admin", &format!("{url}/v1/status"));
    assert_eq!(status, 200, "{body}");
}

/// Polls `/v1/ready` until it answers `want` (at most 30 s: the keystore is probed
/// every 10 s).
fn wait_ready(d: &Path, url: &str, want: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = curl(d, "admin", &format!("{url}/v1/ready"));
        if status == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "/v1/ready stayed {status} {body}, expected {want}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn an_aws_outage_is_served_from_the_cache_and_recovers() {
    let moto = Moto::start();
    let relay = Relay::start(format!("127.0.0.1:{}", moto.port()).parse().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let admin = ApiKey::from_seed([9; 32]);
    let server = start(&admin_config(d, &admin, "", &relay.url()), &[]).unwrap();
    let url = &server.url;
    for key in ["cached", "uncached"] {
        assert_eq!(curl(d, "admin", &format!("-X POST {url}/v1/key/create/{key}")).0, 200);
    }
    let generate = |key: &str| curl(d, "admin", &format!("-X POST -d '{{}}' {url}/v1/key/generate/{key}"));
    assert_eq!(generate("cached").0, 200);

    relay.cut();
    // A cached key keeps working.
    let (status, body) = generate("cached");
    assert_eq!(status, 200, "{body}");
    // An uncached one fails at once with a gateway error, not after a time-out.
    let started = Instant::now();
    let (status, body) = generate("uncached");
    assert!(matches!(status, 502 | 503), "{status} {body}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    // The health probe notices.
    wait_ready(d, url, 504);
    let (_, status_body) = curl(d, "admin", &format!("{url}/v1/status"));
    assert!(status_body.contains("keystore_unreachable"), "{status_body}");
    assert_eq!(generate("cached").0, 200, "offline mode still serves cached keys");

    relay.restore();
    wait_ready(d, url, 200);
    let (status, body) = generate("uncached");
    assert_eq!(status, 200, "{body}");
}

/// The same outage under load, and a hung AWS (moto frozen: connections accepted,
/// nothing answered): clients of cached keys see no failure; an uncached key fails
/// with a KES error within the plugin's deadline; everything recovers by itself.
#[test]
fn aws_outages_under_load_fail_only_uncached_keys_within_the_deadline() {
    use keyhost_test_support::load::{self, Load, Spec};
    let moto = Moto::start();
    let relay = Relay::start(format!("127.0.0.1:{}", moto.port()).parse().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let admin = ApiKey::from_seed([9; 32]);
    let server = start(&admin_config(d, &admin, "", &relay.url()), &[]).unwrap();
    let read = |name: &str| std::fs::read_to_string(d.join(name)).unwrap();
    let connector = load::connector_from_pem(&read("server.cert"), &read("admin.cert"), &read("admin.key"));
    let addr = server.url.trim_start_matches("https://").parse().unwrap();
    let send = |method: &str, path: &str| load::send_once(addr, &connector, method, path, b"{}").unwrap();
    let keys: Vec<String> = (0..8).map(|n| format!("load-{n}")).collect();
    for key in keys.iter().chain([&"uncached".to_owned()]) {
        assert_eq!(send("PUT", &format!("/v1/key/create/{key}")).0, 200);
    }
    let load = Load::start(Spec {
        addr,
        failover: vec![],
        connector: connector.clone(),
        keep_alive: 16,
        reconnecting: 4,
        keys,
    });
    let warm = Instant::now() + Duration::from_secs(30);
    while load.progress().ok < 1_000 {
        assert!(Instant::now() < warm, "the load got no answers: {:?}", load.progress());
        std::thread::sleep(Duration::from_millis(20));
    }
    // The deadline of AWS plugin calls: the default of 10 s.
    let limit = Duration::from_secs(12);
    let fails_within = |path: &str, limit: Duration| {
        let started = Instant::now();
        let (status, body) = send("PUT", path);
        let took = started.elapsed();
        assert!(matches!(status, 502..=504), "{path}: {status} {body}");
        assert!(body.starts_with(r#"{"message":""#), "{body}");
        assert!(took < limit, "{path} took {took:?}");
        eprintln!("{path}: {status} {} after {} ms", body.trim(), took.as_millis());
    };

    relay.cut();
    fails_within("/v1/key/generate/uncached", Duration::from_secs(3));
    relay.restore();
    wait_ready(d, &server.url, 200);
    moto.pause();
    fails_within("/v1/key/generate/uncached", limit);
    let started = Instant::now();
    let (status, _) = curl(d, "admin", &format!("{}/v1/ready", server.url));
    assert_ne!(status, 200, "a hung keystore is not ready");
    assert!(
        started.elapsed() < limit,
        "the health check took {:?}",
        started.elapsed()
    );
    moto.resume();
    wait_ready(d, &server.url, 200);
    let (status, body) = send("PUT", "/v1/key/generate/uncached");
    assert_eq!(status, 200, "recovered: {body}");

    let report = load.stop();
    assert_eq!(report.failed, 0, "cached keys failed:\n{}", report.failures_text());
    assert!(report.ok > 5_000, "only {} requests", report.ok);
    eprintln!(
        "{} requests on cached keys through both outages, none failed, slowest {} ms",
        report.ok,
        report.slowest.as_millis()
    );
}

/// Every secret a run handles — the AWS secret key, the admin's API key and TLS
/// key, an imported master key, data keys, plaintexts — is searched for in
/// everything the server wrote at the most verbose log level (standard error, the
/// audit log on standard output), in its metrics, status and error answers, and in
/// what the CLI printed on standard error. None may appear.
#[test]
fn no_secret_reaches_logs_errors_or_metrics() {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as B64;
    let moto = Moto::start();
    let relay = Relay::start(format!("127.0.0.1:{}", moto.port()).parse().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let admin = ApiKey::from_seed([0x5e; 32]);
    let config = admin_config(d, &admin, "log:\n  audit: on\n  error: on\n", &relay.url());
    let (stdout, stderr) = (d.join("stdout.log"), d.join("stderr.log"));
    // Everything but the compiler's own narration of the plugin's machine code.
    let trace = "trace,cranelift_codegen=info,cranelift_frontend=info,regalloc2=info";
    let (server, url) = start_logging_to(&config, &stdout, &stderr, &[("KEYHOST_LOG", trace)]);

    let mut secrets: Vec<(String, String)> = vec![
        ("the AWS secret key".into(), SECRET_KEY.into()),
        ("the admin API key".into(), admin.to_text().to_string()),
        ("the admin key seed".into(), B64.encode(admin.expose_seed())),
    ];
    let server_key = std::fs::read_to_string(d.join("server.key")).unwrap();
    for line in server_key.lines().filter(|l| !l.starts_with("-----") && l.len() > 20) {
        secrets.push(("the server's private key".into(), line.to_owned()));
    }
    let admin_key = std::fs::read_to_string(d.join("admin.key")).unwrap();
    for line in admin_key.lines().filter(|l| !l.starts_with("-----") && l.len() > 20) {
        secrets.push(("the admin's private key".into(), line.to_owned()));
    }
    let imported = [0x42u8; 32];
    secrets.push(("an imported key (base64)".into(), B64.encode(imported)));
    secrets.push(("an imported key (hex)".into(), hex(&imported)));
    let plaintext = b"attack at dawn, bring the keys";
    secrets.push(("a plaintext".into(), B64.encode(plaintext)));

    let mut answers = String::new();
    // Error answers, and status and metrics, are searched; successful answers carry
    // data keys and plaintexts to their client by design.
    let mut ask = |args: &str| {
        let (status, body) = curl(d, "admin", args);
        if status != 200 || args.ends_with("/v1/status") || args.ends_with("/v1/metrics") {
            answers.push_str(&format!("{status} {body}\n"));
        }
        body
    };
    ask(&format!("-X PUT {url}/v1/key/create/k1"));
    ask(&format!(
        "-X PUT -d '{{\"key\":\"{}\",\"cipher\":\"AES256\"}}' {url}/v1/key/import/k2",
        B64.encode(imported)
    ));
    for key in ["k1", "k2"] {
        let dek: serde_json::Value = serde_json::from_str(&ask(&format!(
            "-X PUT -d '{{\"context\":\"Yw==\"}}' {url}/v1/key/generate/{key}"
        )))
        .unwrap();
        secrets.push(("a data key".into(), dek["plaintext"].as_str().unwrap().to_owned()));
        let sealed: serde_json::Value = serde_json::from_str(&ask(&format!(
            "-X PUT -d '{{\"plaintext\":\"{}\"}}' {url}/v1/key/encrypt/{key}",
            B64.encode(plaintext)
        )))
        .unwrap();
        let ciphertext = sealed["ciphertext"].as_str().unwrap();
        ask(&format!(
            "-X PUT -d '{{\"ciphertext\":\"{ciphertext}\"}}' {url}/v1/key/decrypt/{key}"
        ));
        // Wrong context, tampered ciphertext, bad JSON: errors must not echo secrets.
        ask(&format!(
            "-X PUT -d '{{\"ciphertext\":\"{ciphertext}\",\"context\":\"eA==\"}}' {url}/v1/key/decrypt/{key}"
        ));
        ask(&format!(
            "-X PUT -d '{{\"ciphertext\":\"{}\"}}' {url}/v1/key/decrypt/{key}",
            &ciphertext[4..]
        ));
        ask(&format!("-X PUT -d '{{\"plaintext\":' {url}/v1/key/encrypt/{key}"));
        ask(&format!("-X PUT -d '{{\"message\":\"bQ==\"}}' {url}/v1/key/hmac/{key}"));
    }
    ask(&format!("-X PUT -d '{{\"key\":\"c2hvcnQ=\"}}' {url}/v1/key/import/bad"));
    // A keystore outage: plugin errors reach the log.
    relay.cut();
    ask(&format!("-X PUT {url}/v1/key/create/during-outage"));
    ask(&format!("{url}/v1/status"));
    relay.restore();
    ask(&format!("{url}/v1/metrics"));
    ask(&format!("{url}/v1/status"));
    // The CLI, with the API key in its environment.
    let cli = Command::new(env!("CARGO_BIN_EXE_keyhost"))
        .args(["key", "dek", "k1", "-k", "--json"])
        .env("KES_SERVER", &url)
        .env("KES_API_KEY", admin.to_text().as_str())
        .env("KEYHOST_LOG", "trace")
        .output()
        .unwrap();
    assert!(cli.status.success(), "{}", String::from_utf8_lossy(&cli.stderr));

    drop(server);
    let logs = [
        ("server stderr", std::fs::read_to_string(&stderr).unwrap()),
        ("server stdout", std::fs::read_to_string(&stdout).unwrap()),
        ("API error, status and metrics answers", answers),
        ("CLI stderr", String::from_utf8_lossy(&cli.stderr).into_owned()),
    ];
    assert!(
        logs[0].1.len() > 10_000,
        "trace logging produced little: {}",
        logs[0].1.len()
    );
    assert!(
        logs[0].1.contains("cannot") || logs[0].1.contains("error"),
        "the outage was logged"
    );
    for (what, secret) in &secrets {
        for (name, text) in &logs {
            assert!(!text.contains(secret.as_str()), "{what} appears in the {name}");
        }
    }
    eprintln!(
        "{} secrets searched in {} bytes of logs and answers",
        secrets.len(),
        logs.iter().map(|(_, t)| t.len()).sum::<usize>()
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
