//! The etcd plugin on a real three-member etcd cluster (Debian's `etcd-server`, on
//! loopback): the whole kit, over plain HTTP and over TLS with a client certificate
//! that the host presents; etcd authentication; and members failing under it.

#![expect(clippy::unwrap_used, reason = "Tests fail loudly by design")]

mod common;

use common::{load, runtime};

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use keyhost_conformance::KitOptions;
use keyhost_keystore::{Error, Keystore};
use keyhost_plugin_host::{Grants, Origin, OriginTls, Plugin, PluginSource, PluginSpec};
use keyhost_test_support::etcd::EtcdCluster;

fn wasm() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            keyhost_plugin_build::build(&["keyhost-plugin-etcd"]).unwrap_or_else(|e| panic!("{e}"))[0].clone()
        })
        .clone()
}

/// What the kit cannot check on etcd without authentication: the cases of a
/// granted directory and of a credential; and the listing of 20,000 names, which
/// one test runs.
const SKIPS: &[&str] = &[
    "env.dir-read-only",
    "env.dir-removed",
    "env.dir-aged",
    "env.dir-foreign",
    "env.credential-refused",
    "scale.listing",
];

/// The plugin's settings for every member of `cluster`, plus `extra`.
fn spec(cluster: &EtcdCluster, extra: &[(&str, &str)]) -> PluginSpec {
    let endpoints = cluster.endpoints();
    let mut spec = PluginSpec::new("etcd", PluginSource::File(wasm()));
    spec.config.insert("endpoints".into(), endpoints.join(","));
    for (k, v) in extra {
        spec.config.insert((*k).to_owned(), (*v).to_owned());
    }
    spec.grants = Grants {
        http: endpoints.iter().map(|e| Origin::parse(e).unwrap()).collect(),
        dir: None,
        ..Grants::default()
    };
    spec
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kit_passes_on_a_three_member_cluster() {
    let cluster = EtcdCluster::start(3);
    // With the listing of 20,000 names.
    let options = KitOptions {
        scale: true,
        ..KitOptions::default()
    };
    let report = keyhost_conformance::run(&runtime(), spec(&cluster, &[]), &options)
        .await
        .unwrap();
    common::assert_passed_but(&report, &SKIPS[..SKIPS.len() - 1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kit_passes_with_host_side_sealing() {
    let cluster = EtcdCluster::start(3);
    let report = keyhost_conformance::run(&runtime(), spec(&cluster, &[]), &common::sealed())
        .await
        .unwrap();
    common::assert_passed_but(&report, SKIPS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_live_under_the_prefix_and_nothing_else_is_listed() {
    let cluster = EtcdCluster::start(1);
    // A key of other data just past the configured prefix's range (`/` + 1 is `0`).
    let other = base64_of("tenant-a/keys0-not-ours");
    cluster.request(
        "/v3/kv/put",
        &format!(r#"{{"key":"{other}","value":"{}"}}"#, base64_of("x")),
    );
    let plugin = load(spec(&cluster, &[("prefix", "tenant-a/keys/")])).await;
    plugin.create("my-key", b"record").await.unwrap();
    let stored = cluster.request(
        "/v3/kv/range",
        &format!(r#"{{"key":"{}"}}"#, base64_of("tenant-a/keys/my-key")),
    );
    assert!(stored.contains(&base64_of("record")), "{stored}");
    let page = plugin.list("", None, 100).await.unwrap();
    assert_eq!(page.names, ["my-key"]);
    assert_eq!(plugin.create("my-key", b"other").await, Err(Error::AlreadyExists));
    assert_eq!(*plugin.get("my-key").await.unwrap(), *b"record");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_authentication_a_token_is_used_and_a_wrong_password_is_refused() {
    let cluster = EtcdCluster::start(1);
    for (path, body) in [
        ("/v3/auth/user/add", r#"{"name":"root","password":"etcd-root-pw-7d1e"}"#),
        ("/v3/auth/role/add", r#"{"name":"root"}"#),
        ("/v3/auth/user/grant", r#"{"user":"root","role":"root"}"#),
        ("/v3/auth/enable", "{}"),
    ] {
        cluster.request(path, body);
    }
    let plugin = load(spec(
        &cluster,
        &[("username", "root"), ("password", "etcd-root-pw-7d1e")],
    ))
    .await;
    plugin.create("authed", b"record").await.unwrap();
    assert_eq!(*plugin.get("authed").await.unwrap(), *b"record");
    plugin.status().await.unwrap();
    // The token lapses unused (after 2 s in these clusters): the plugin gets a new
    // one and the call succeeds.
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    assert_eq!(*plugin.get("authed").await.unwrap(), *b"record");
    plugin.create("after-renewal", b"record").await.unwrap();

    // Without credentials etcd refuses the calls; with a wrong password the token
    // request is refused, and the password is in no error.
    let anonymous = load(spec(&cluster, &[])).await;
    let err = anonymous.get("authed").await.unwrap_err();
    assert!(matches!(err, Error::AccessDenied(_)), "{err:?}");
    let wrong = load(spec(&cluster, &[("username", "root"), ("password", "wrong-pw-3b9a")])).await;
    let err = wrong.get("authed").await.unwrap_err();
    assert!(
        matches!(&err, Error::AccessDenied(m) if m.contains("etcd refused user 'root'") && !m.contains("wrong-pw-3b9a")),
        "{err:?}"
    );

    // The kit's cases of a failing surrounding, with a credential to refuse: every
    // call with a wrong password is access-denied.
    let options = KitOptions {
        filter: Some("env.*".into()),
        ..KitOptions::default()
    };
    let report = keyhost_conformance::run(
        &runtime(),
        spec(&cluster, &[("username", "root"), ("password", "etcd-root-pw-7d1e")]),
        &options,
    )
    .await
    .unwrap();
    common::assert_passed_but(&report, &SKIPS[..4]);
}

/// Creates three records named `tag-N`, each holding its own name.
async fn create_three(plugin: &Plugin, created: &mut Vec<String>, tag: &str) {
    for i in 0..3 {
        let name = format!("{tag}-{i}");
        plugin
            .create(&name, name.as_bytes())
            .await
            .unwrap_or_else(|e| panic!("create {name}: {e:?}"));
        created.push(name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_members_and_a_killed_leader_fail_no_call() {
    let mut cluster = EtcdCluster::start(3);
    let plugin = load(spec(&cluster, &[])).await;
    let mut created = Vec::new();
    create_three(&plugin, &mut created, "before").await;
    // The first member, the one the plugin asked first, goes away.
    cluster.kill(0);
    create_three(&plugin, &mut created, "member-0-down").await;
    cluster.restart(0);
    cluster.wait_member(0, Duration::from_secs(10));
    // Then the leader, wherever it is: calls wait out the election.
    let leader = cluster.wait_for_leader(Duration::from_secs(10));
    cluster.kill(leader);
    create_three(&plugin, &mut created, "leader-down").await;
    cluster.restart(leader);
    cluster.wait_for_leader(Duration::from_secs(10));
    for name in &created {
        assert_eq!(*plugin.get(name).await.unwrap(), *name.as_bytes(), "{name}");
    }
    let mut listed = plugin.list("", None, 1000).await.unwrap().names;
    listed.sort();
    created.sort();
    assert_eq!(listed, created);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_call_budget_is_most_of_the_deadline_unless_the_operator_sets_it() {
    let cluster = EtcdCluster::start(1);
    let mut short = spec(&cluster, &[]);
    short.limits.timeout = Duration::from_secs(5);
    let detail = load(short).await.status().await.unwrap().detail.unwrap();
    assert!(detail.contains("call budget 4000 ms, attempt 2000 ms"), "{detail}");
    let mut set = spec(&cluster, &[("timeout_ms", "1234")]);
    set.limits.timeout = Duration::from_secs(5);
    let detail = load(set).await.status().await.unwrap().detail.unwrap();
    // One member: its attempt may take the whole budget.
    assert!(detail.contains("call budget 1234 ms, attempt 1234 ms"), "{detail}");
    // A budget the deadline would cut short is refused at load, naming both.
    let mut long = spec(&cluster, &[("timeout_ms", "6000")]);
    long.limits.timeout = Duration::from_secs(5);
    let err = runtime().load(long).await.err().unwrap().to_string();
    assert!(
        err.contains("setting 'timeout_ms' is 6000 ms, not below the call deadline of 5000 ms"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_that_cannot_be_right_are_refused_at_open_naming_the_setting() {
    let bad: &[(&[(&str, &str)], &str)] = &[
        (
            &[("endpoints", "10.0.0.1:2379")],
            "setting 'endpoints': '10.0.0.1:2379' is not an http(s) URL",
        ),
        (&[("endpoints", "http://10.0.0.1:2379/v3")], "setting 'endpoints'"),
        (&[("endpoints", "http://root:pw@10.0.0.1:2379")], "without a user"),
        (&[("endpoints", "http://10.0.0.1:2379?x=1")], "setting 'endpoints'"),
        (
            &[("prefix", "key\nhost/")],
            "setting 'prefix' holds a control character",
        ),
        (
            &[("username", "root")],
            "setting 'username' is set but 'password' is not",
        ),
        (&[("password", "pw")], "setting 'password' is set but 'username' is not"),
        (&[("timeout_ms", "soon")], "setting 'timeout_ms'"),
        (
            &[("attempt_timeout_ms", "0")],
            "'attempt_timeout_ms' must be at least 1",
        ),
        (&[("endpoint", "http://10.0.0.1:2379")], "unknown setting 'endpoint'"),
    ];
    for (settings, expected) in bad {
        let mut spec = PluginSpec::new("etcd", PluginSource::File(wasm()));
        spec.config.insert("endpoints".into(), "http://127.0.0.1:2379".into());
        for (k, v) in *settings {
            spec.config.insert((*k).to_owned(), (*v).to_owned());
        }
        let err = runtime()
            .load(spec)
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains(expected), "{settings:?}: {err}");
        assert!(!err.contains("pw"), "{settings:?}: the password is quoted: {err}");
    }
}

/// `cluster`'s endpoints with member `first` listed first: the member the plugin
/// asks first.
fn first_asked(cluster: &EtcdCluster, first: usize) -> String {
    let mut endpoints = cluster.endpoints();
    endpoints.rotate_left(first);
    endpoints.join(",")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_member_costs_one_attempt_and_a_hung_leader_fails_no_call() {
    let cluster = EtcdCluster::start(3);
    let leader = cluster.wait_for_leader(Duration::from_secs(10));
    let follower = (leader + 1) % 3;
    let endpoints = first_asked(&cluster, follower);
    let plugin = load(spec(
        &cluster,
        &[("endpoints", &endpoints), ("attempt_timeout_ms", "1000")],
    ))
    .await;
    let mut created = Vec::new();
    create_three(&plugin, &mut created, "before").await;

    // The member asked first accepts connections and answers nothing: the call
    // that meets it loses one attempt (1 s), the next ones ask another member.
    cluster.pause(follower);
    for i in 0..3 {
        let name = format!("follower-hung-{i}");
        let started = Instant::now();
        plugin.create(&name, name.as_bytes()).await.unwrap();
        assert_eq!(*plugin.get(&name).await.unwrap(), *name.as_bytes());
        let took = started.elapsed();
        assert!(
            took < Duration::from_millis(3_000),
            "create and get of {name} took {took:?}"
        );
        created.push(name);
    }
    cluster.resume(follower);
    cluster.wait_member(follower, Duration::from_secs(10));

    // The leader hangs: the others elect a new one (election timeout 500 ms) and
    // every call waits it out within its budget.
    let leader = cluster.wait_for_leader(Duration::from_secs(10));
    cluster.pause(leader);
    let started = Instant::now();
    create_three(&plugin, &mut created, "leader-hung").await;
    let took = started.elapsed();
    cluster.resume(leader);
    assert!(
        took < Duration::from_secs(8),
        "three creates with a hung leader took {took:?}"
    );
    cluster.wait_for_leader(Duration::from_secs(10));
    for name in &created {
        assert_eq!(*plugin.get(name).await.unwrap(), *name.as_bytes(), "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_quorum_calls_fail_as_unavailable_within_their_budget() {
    let cluster = EtcdCluster::start(3);
    let leader = cluster.wait_for_leader(Duration::from_secs(10));
    let alone = (leader + 1) % 3;
    let endpoints = cluster.endpoints()[alone].clone();
    let plugin = load(spec(
        &cluster,
        &[
            ("endpoints", &endpoints),
            ("timeout_ms", "2000"),
            ("attempt_timeout_ms", "1500"),
        ],
    ))
    .await;
    plugin.create("with-quorum", b"v").await.unwrap();
    // The two others freeze: the member left loses its leader after the election
    // timeout and refuses reads and writes. Each call keeps trying for its budget
    // (2 s here, 80% of keyhost's deadline by default), then says why.
    cluster.pause(leader);
    cluster.pause((leader + 2) % 3);
    std::thread::sleep(Duration::from_millis(1_500));
    let mut outcomes = Vec::new();
    for call in ["get", "create"] {
        let started = Instant::now();
        let outcome = match call {
            "get" => plugin.get("with-quorum").await.map(|_| ()),
            _ => plugin.create("without-quorum", b"v").await,
        };
        outcomes.push((call, outcome, started.elapsed()));
    }
    cluster.resume(leader);
    cluster.resume((leader + 2) % 3);
    for (call, outcome, took) in outcomes {
        assert!(
            matches!(&outcome, Err(Error::Unavailable(m)) if m.contains("no leader")),
            "{call}: {outcome:?}"
        );
        assert!(
            took >= Duration::from_millis(1_500) && took < Duration::from_millis(3_000),
            "{call}: gave up after {took:?}, not after its 2 s budget"
        );
    }
    cluster.wait_for_leader(Duration::from_secs(10));
    assert_eq!(*plugin.get("with-quorum").await.unwrap(), *b"v");
    assert!(matches!(plugin.get("without-quorum").await, Err(Error::NotFound)));
}

/// The TLS grant of every member of a TLS `cluster`: its CA, and the client
/// certificate from `pki` (of the cluster's CA, or of another).
fn with_tls(mut spec: PluginSpec, ca_pem: &str, client: Option<(&str, &str)>) -> PluginSpec {
    let tls = OriginTls {
        ca_pem: Some(ca_pem.as_bytes().to_vec()),
        client: client.map(|(cert, key)| {
            (
                cert.as_bytes().to_vec(),
                zeroize::Zeroizing::new(key.as_bytes().to_vec()),
            )
        }),
    };
    spec.grants.tls = spec.grants.http.iter().map(|o| (o.clone(), tls.clone())).collect();
    spec
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_the_host_presents_the_client_certificate_and_the_kit_passes() {
    let cluster = EtcdCluster::start_tls(3);
    let pki = cluster.tls().unwrap().clone();
    let client = Some((pki.client_cert_pem.as_str(), pki.client_key_pem.as_str()));
    let report = keyhost_conformance::run(
        &runtime(),
        with_tls(spec(&cluster, &[]), &pki.ca_pem, client),
        &KitOptions::default(),
    )
    .await
    .unwrap();
    common::assert_passed_but(&report, SKIPS);

    // What etcd or the host refuses, all at once (each waits out the plugin's
    // retries): no client certificate, one of a CA etcd does not trust, and a
    // server the host cannot verify (the public roots instead of the cluster's CA).
    let stranger = Some((pki.other_client_cert_pem.as_str(), pki.other_client_key_pem.as_str()));
    let refused = [
        with_tls(spec(&cluster, &[]), &pki.ca_pem, None),
        with_tls(spec(&cluster, &[]), &pki.ca_pem, stranger),
        with_tls(spec(&cluster, &[]), &pki.other_ca_pem, client),
    ];
    let outcomes = futures::future::join_all(refused.into_iter().map(|spec| async move {
        let plugin = load(spec).await;
        let started = Instant::now();
        let outcome = plugin.get("anything").await;
        (outcome, started.elapsed())
    }))
    .await;
    for (what, (outcome, took)) in [
        "no client certificate",
        "another CA's client certificate",
        "an unverifiable server",
    ]
    .iter()
    .zip(outcomes)
    {
        // A refusal is told as a TLS failure, at once: retrying cannot fix a
        // certificate.
        assert!(
            matches!(&outcome, Err(Error::Unavailable(m)) if m.contains("TLS handshake failed with every etcd member")),
            "{what}: {outcome:?}"
        );
        assert!(took < Duration::from_secs(2), "{what}: the refusal took {took:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_settings_are_checked_at_load() {
    let cluster = EtcdCluster::start(1);
    // For an origin that is not granted, and for a plain http one.
    let mut spec_a = spec(&cluster, &[]);
    let stray = Origin::parse("https://127.0.0.1:1").unwrap();
    spec_a.grants.tls.insert(stray, OriginTls::default());
    let err = runtime().load(spec_a).await.unwrap_err().to_string();
    assert!(err.contains("which is not granted"), "{err}");
    let spec_b = with_tls(spec(&cluster, &[]), "-----BEGIN CERTIFICATE-----\n", None);
    let err = runtime().load(spec_b).await.unwrap_err().to_string();
    assert!(err.contains("which is plain http"), "{err}");
    // A CA file without a certificate.
    let mut spec_c = spec(&cluster, &[]);
    let https = Origin::parse("https://127.0.0.1:2").unwrap();
    spec_c.grants.http.push(https.clone());
    spec_c.grants.tls.insert(
        https,
        OriginTls {
            ca_pem: Some(b"not a certificate".to_vec()),
            client: None,
        },
    );
    let err = runtime().load(spec_c).await.unwrap_err().to_string();
    assert!(err.contains("holds no certificate"), "{err}");
    // A key that is not PEM: the error does not quote it, nor does a grant's Debug.
    let mut spec_d = spec(&cluster, &[]);
    let https = Origin::parse("https://127.0.0.1:3").unwrap();
    spec_d.grants.http.push(https.clone());
    let secret = "secret-key-material-0c4f";
    spec_d.grants.tls.insert(
        https,
        OriginTls {
            ca_pem: None,
            client: Some((
                EtcdCluster::start_tls(1)
                    .tls()
                    .unwrap()
                    .client_cert_pem
                    .clone()
                    .into_bytes(),
                zeroize::Zeroizing::new(secret.as_bytes().to_vec()),
            )),
        },
    );
    assert!(!format!("{:?}", spec_d.grants).contains(secret));
    let err = runtime().load(spec_d).await.unwrap_err().to_string();
    assert!(
        err.contains("holds no PEM private key") && !err.contains(secret),
        "{err}"
    );
}

fn base64_of(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}
