//! The AWS plugin against moto (AWS Secrets Manager and KMS, emulated on a loopback
//! port): the whole kit in each mode, credentials from the instance metadata
//! service, KMS health, envelopes bound to their key name, secrets written by KES,
//! and no reach beyond the granted endpoints.

#![expect(clippy::unwrap_used, reason = "Tests fail loudly by design")]

mod common;

use common::{load, runtime};

use std::io::Read;
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use keyhost_conformance::{KitOptions, Report};
use keyhost_keystore::{Error, Keystore};
use keyhost_plugin_host::{Grants, Origin, PluginSource, PluginSpec};
use keyhost_test_support::{ACCESS_KEY, Moto, REGION, SECRET_KEY};

fn wasm() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            keyhost_plugin_build::build(&["keyhost-plugin-aws"]).unwrap_or_else(|e| panic!("{e}"))[0].clone()
        })
        .clone()
}

/// The plugin's settings for `moto` with static credentials, plus `extra`.
fn spec(moto: &Moto, extra: &[(&str, &str)]) -> PluginSpec {
    let mut spec = PluginSpec::new("aws", PluginSource::File(wasm()));
    for (k, v) in [
        ("endpoint", moto.url().as_str()),
        ("region", REGION),
        ("accesskey", ACCESS_KEY),
        ("secretkey", SECRET_KEY),
    ]
    .into_iter()
    .chain(extra.iter().copied())
    {
        spec.config.insert(k.to_owned(), v.to_owned());
    }
    spec.config.retain(|_, v| !v.is_empty());
    spec.grants = Grants {
        http: vec![Origin::parse(&moto.url()).unwrap()],
        dir: None,
        ..Grants::default()
    };
    spec
}

async fn kit(spec: PluginSpec, skip: Option<&str>) -> Report {
    let runtime = runtime();
    let options = KitOptions {
        skip: skip.map(str::to_owned),
        ..KitOptions::default()
    };
    keyhost_conformance::run(&runtime, spec, &options).await.unwrap()
}

/// No case fails, and `expected` cases ran. Skipped: `records.empty` (Secrets
/// Manager holds no empty secret: the plugin declares `record-size=1..`), the
/// cases of a granted directory, the listing of 20,000 names, and a refused
/// credential (moto takes any).
fn assert_passed(report: &Report, expected: usize) {
    common::assert_passed_but(report, SKIPS);
    assert_eq!(report.cases.len(), expected, "{}", report.to_text());
}

const SKIPS: &[&str] = &[
    "records.empty",
    "env.dir-read-only",
    "env.dir-removed",
    "env.dir-aged",
    "env.dir-foreign",
    "env.credential-refused",
    "scale.listing",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kit_passes_on_the_aws_plugin() {
    let moto = Moto::start();
    // Secrets Manager returns at most 100 secrets a page: 1,000 names already take
    // the plugin through ten of its pages at both of the kit's page sizes. The
    // 2,500-name run would add only half a minute of moto (the fs plugin runs it).
    let report = kit(spec(&moto, &[]), Some("list.pages.2500")).await;
    assert_passed(&report, keyhost_conformance::CASES.len() - 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kit_passes_with_host_side_sealing() {
    let moto = Moto::start();
    let options = KitOptions {
        skip: Some("list.pages.2500".into()),
        ..common::sealed()
    };
    let report = keyhost_conformance::run(&runtime(), spec(&moto, &[]), &options)
        .await
        .unwrap();
    // Sealed, even an empty record is a sealed record of some bytes: records.empty
    // runs too.
    common::assert_passed_but(&report, &SKIPS[1..]);
    assert_eq!(report.cases.len(), keyhost_conformance::CASES.len() - 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kit_passes_with_a_kms_key_and_with_envelopes() {
    let moto = Moto::start();
    let key = moto.create_kms_key();
    // Paging is the same code in every mode and takes most of a run: the first
    // test covers it.
    let paging = keyhost_conformance::CASES
        .iter()
        .filter(|c| c.id.starts_with("list.pages."))
        .count();
    let all = keyhost_conformance::CASES.len();
    let report = kit(
        spec(&moto, &[("kmskey", &key), ("kms_endpoint", &moto.url())]),
        Some("list.pages.*"),
    )
    .await;
    assert_passed(&report, all - paging);
    // KMS wraps at most 4 KiB: the deployment holds 1 to 4,096 bytes, and the kit
    // checks that larger records are refused with invalid-argument.
    let options = KitOptions {
        skip: Some("list.pages.*".into()),
        record_sizes: Some(1..=4096),
        ..KitOptions::default()
    };
    let envelopes = spec(
        &moto,
        &[
            ("kmskey", &key),
            ("kms_endpoint", &moto.url()),
            ("kms_envelope", "true"),
        ],
    );
    let report = keyhost_conformance::run(&runtime(), envelopes, &options).await.unwrap();
    assert_passed(&report, all - paging);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelopes_hide_the_record_and_are_bound_to_their_name() {
    let moto = Moto::start();
    let key = moto.create_kms_key();
    let plugin = load(spec(
        &moto,
        &[
            ("kmskey", &key),
            ("kms_endpoint", &moto.url()),
            ("kms_envelope", "true"),
        ],
    ))
    .await;
    let record = br#"{"bytes":"WMm3jVnCwERDIhaOZWVVyCt5fbHwIgeClIfjFuStpEk="}"#;
    plugin.create("envelope-a", record).await.unwrap();
    assert_eq!(*plugin.get("envelope-a").await.unwrap(), record[..]);
    let stored = moto.python("print(sm.get_secret_value(SecretId='envelope-a')['SecretString'])");
    assert!(stored.starts_with("keyhost:kms-envelope:v1:"), "{stored}");
    assert!(
        !stored.contains("WMm3jVnC"),
        "the record is visible in the secret: {stored}"
    );
    // The same envelope under another name does not open.
    moto.python(&format!("sm.create_secret(Name='envelope-b', SecretString='{stored}')"));
    match plugin.get("envelope-b").await {
        Err(Error::AccessDenied(why)) => assert!(why.contains("envelope-b"), "{why}"),
        other => panic!("a moved envelope opened: {other:?}"),
    }
    // Without the KMS key configured, an envelope is refused with the reason.
    let plain = load(spec(&moto, &[])).await;
    match plain.get("envelope-a").await {
        Err(Error::InvalidArgument(why)) => assert!(why.contains("kmskey"), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_fails_when_the_kms_key_is_disabled() {
    let moto = Moto::start();
    let key = moto.create_kms_key();
    let plugin = load(spec(&moto, &[("kmskey", &key), ("kms_endpoint", &moto.url())])).await;
    let health = plugin.status().await.unwrap();
    assert!(health.detail.unwrap_or_default().contains("usable"));
    moto.python(&format!("kms.disable_key(KeyId='{key}')"));
    // A fresh instance has no cached probe.
    plugin.recycle();
    match plugin.status().await {
        Err(Error::Unavailable(why) | Error::AccessDenied(why)) => {
            assert!(why.contains(&key) || why.contains("Disabled"), "{why}");
        }
        other => panic!("status with a disabled KMS key: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_written_by_kes_read_back_verbatim() {
    let moto = Moto::start();
    // KES v0.16 stores {"bytes": …}; newer KES a base64 protobuf; both as the
    // secret string under the key's own name.
    let v016 = r#"{"bytes":"WMm3jVnCwERDIhaOZWVVyCt5fbHwIgeClIfjFuStpEk="}"#;
    let newest = "CiDuRyZJc7AHn4qgv6J0yS7hFfMxcsR2QWFMkErNw4gE3BIMCJrq9qwGEJCg/a8CGgVhZG1pbg==";
    moto.python(&format!(
        "sm.create_secret(Name='minio-key-v016', SecretString='{v016}')\n\
         sm.create_secret(Name='minio-key-newest', SecretString='{newest}')\n\
         sm.create_secret(Name='binary-secret', SecretBinary=b'\\x00\\x01\\xff')"
    ));
    let plugin = load(spec(&moto, &[])).await;
    assert_eq!(*plugin.get("minio-key-v016").await.unwrap(), *v016.as_bytes());
    assert_eq!(*plugin.get("minio-key-newest").await.unwrap(), *newest.as_bytes());
    assert_eq!(*plugin.get("binary-secret").await.unwrap(), [0, 1, 0xff]);
    let page = plugin.list("minio-key-", None, 10).await.unwrap();
    assert_eq!(page.names, ["minio-key-newest", "minio-key-v016"]);
    // keyhost writes text records as the secret string, as KES does.
    plugin.create("written-by-keyhost", v016.as_bytes()).await.unwrap();
    let stored = moto.python("print(sm.get_secret_value(SecretId='written-by-keyhost')['SecretString'])");
    assert_eq!(stored, v016);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_from_the_instance_metadata_service() {
    let moto = Moto::start();
    // moto answers IMDSv2 (token, role, credentials) on its own port.
    let plugin = load(spec(
        &moto,
        &[("accesskey", ""), ("secretkey", ""), ("imds_endpoint", &moto.url())],
    ))
    .await;
    plugin.create("via-imds", b"record").await.unwrap();
    assert_eq!(*plugin.get("via-imds").await.unwrap(), *b"record");

    // Neither static credentials nor a metadata service: refused at open.
    let runtime = runtime();
    let err = runtime
        .load(spec(&moto, &[("accesskey", ""), ("secretkey", "")]))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no credentials"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plugin_reaches_only_the_granted_endpoints() {
    let moto = Moto::start();
    let bait = TcpListener::bind("127.0.0.1:0").unwrap();
    bait.set_nonblocking(true).unwrap();
    let bait_url = format!("http://{}", bait.local_addr().unwrap());
    // The Secrets Manager endpoint points elsewhere than the grant.
    let mut to_bait = spec(&moto, &[("endpoint", &bait_url)]);
    to_bait.limits.timeout = Duration::from_secs(5);
    let plugin = load(to_bait).await;
    let err = plugin.create("never-sent", b"x").await.unwrap_err();
    assert!(matches!(err, Error::Unavailable(_) | Error::AccessDenied(_)), "{err:?}");
    // A KMS endpoint that is not granted: the probe in status is refused too.
    let key = moto.create_kms_key();
    let plugin = load(spec(&moto, &[("kmskey", &key), ("kms_endpoint", &bait_url)])).await;
    assert!(plugin.status().await.is_err());
    // The bait saw no connection at all.
    match bait.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        Ok((mut s, _)) => {
            let mut buf = [0; 256];
            let n = s.read(&mut buf).unwrap_or(0);
            panic!(
                "the plugin reached an endpoint it was not granted: {:?}",
                String::from_utf8_lossy(&buf[..n])
            );
        }
        Err(e) => panic!("{e}"),
    }
    // Nothing was created through moto either.
    assert_eq!(moto.python("print(len(sm.list_secrets()['SecretList']))"), "0");
}

/// A fake AWS endpoint that answers each request with the next scripted response
/// (status, JSON body), keeping connections alive, and counts the requests.
fn scripted(responses: Vec<(u16, &'static str)>) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{BufRead, BufReader, Write};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let script = Arc::new(Mutex::new(std::collections::VecDeque::from(responses)));
    let seen = count.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let (script, seen) = (script.clone(), seen.clone());
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut writer = stream;
                loop {
                    let mut length = 0;
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap();
                        }
                        if line == "\r\n" {
                            break;
                        }
                    }
                    let mut body = vec![0; length];
                    std::io::Read::read_exact(&mut reader, &mut body).unwrap();
                    seen.fetch_add(1, Ordering::SeqCst);
                    let (status, json) = script.lock().unwrap().pop_front().unwrap_or((500, "{}"));
                    let _ = write!(
                        writer,
                        "HTTP/1.1 {status} X\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: {}\r\n\r\n{json}",
                        json.len()
                    );
                }
            });
        }
    });
    (url, count)
}

const SECRET: &str = r#"{"ARN":"arn:aws:secretsmanager:us-east-1:123456789012:secret:k-abcdef","Name":"k","SecretString":"record","VersionId":"v1","VersionStages":["AWSCURRENT"],"CreatedDate":1700000000.0}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_errors_are_retried_and_throttling_is_reported() {
    use std::sync::atomic::Ordering;
    let moto = Moto::start(); // only for the settings' shape; the endpoint is the fake
    let internal = r#"{"__type":"InternalServiceError","message":"try again"}"#;
    let (url, count) = scripted(vec![(500, internal), (500, internal), (200, SECRET)]);
    let mut s = spec(&moto, &[("endpoint", &url)]);
    s.grants.http = vec![Origin::parse(&url).unwrap()];
    // Loading opens the plugin, which sends nothing.
    let plugin = load(s.clone()).await;
    assert_eq!(*plugin.get("k").await.unwrap(), *b"record");
    assert_eq!(count.load(Ordering::SeqCst), 3, "two retries, then the answer");

    let throttled = r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#;
    let (url, count) = scripted(vec![(400, throttled); 5]);
    let mut s = spec(&moto, &[("endpoint", &url)]);
    s.grants.http = vec![Origin::parse(&url).unwrap()];
    let plugin = load(s).await;
    let started = std::time::Instant::now();
    match plugin.get("k").await {
        Err(Error::Throttled { .. }) => {}
        other => panic!("persistent throttling: {other:?}"),
    }
    assert_eq!(count.load(Ordering::SeqCst), 3, "three attempts in all");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
}
