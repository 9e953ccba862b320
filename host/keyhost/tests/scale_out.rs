//! Several keyhost nodes on one replicated keystore, as a MinIO deployment runs
//! them: three `keyhost` processes on one etcd cluster (and on one Secrets Manager),
//! load from clients that list every node (the failover of kms-go's client), and
//! nodes and the etcd leader killed and restarted under it. No request may fail and
//! no key may be lost.

#![expect(clippy::unwrap_used, reason = "Tests fail loudly by design")]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use keyhost_test_support::etcd::EtcdCluster;
use keyhost_test_support::load::{self, Load, Spec};
use keyhost_test_support::process::{Running, newest_config, server_files, start_with, write_identity};
use keyhost_test_support::{ACCESS_KEY, Moto, REGION, SECRET_KEY, free_port};

/// How long a node keeps a key it has read (`cache.expiry.any`): the bound on how
/// long a key deleted on one node still works on another.
const EXPIRY: Duration = Duration::from_secs(3);

/// Three nodes of one deployment: the same configuration file, each on a port of
/// its own that it keeps across restarts.
struct Nodes {
    dir: tempfile::TempDir,
    config: std::path::PathBuf,
    ports: Vec<u16>,
    running: Vec<Option<Running>>,
    connector: tokio_rustls::TlsConnector,
}

impl Nodes {
    fn start(keystore: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let creds = server_files(d);
        write_identity(d, "admin", &creds.admin);
        let config = newest_config(
            d,
            &creds,
            &format!(
                "cache:\n  expiry:\n    any: {}s\n    unused: {}s\n{keystore}",
                EXPIRY.as_secs(),
                EXPIRY.as_secs()
            ),
        );
        let read = |name: &str| std::fs::read_to_string(d.join(name)).unwrap();
        let connector = load::connector_from_pem(&read("server.cert"), &read("admin.cert"), &read("admin.key"));
        let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let mut nodes = Self {
            dir,
            config,
            ports,
            running: Vec::new(),
            connector,
        };
        for i in 0..3 {
            let node = nodes.spawn(i);
            nodes.running.push(Some(node));
        }
        nodes
    }

    fn spawn(&self, i: usize) -> Running {
        let addr = format!("127.0.0.1:{}", self.ports[i]);
        start_with(&["--addr", &addr], &self.config, &[]).unwrap_or_else(|e| panic!("node {i}: {e}"))
    }

    fn addr(&self, i: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ports[i]))
    }

    fn addrs(&self) -> Vec<SocketAddr> {
        (0..3).map(|i| self.addr(i)).collect()
    }

    /// One request to node `i`.
    fn send(&self, i: usize, method: &str, path: &str) -> (u16, String) {
        load::send_once(self.addr(i), &self.connector, method, path, b"{}").unwrap_or_else(|e| panic!("node {i}: {e}"))
    }

    fn kill(&mut self, i: usize) {
        self.running[i] = None;
    }

    fn restart(&mut self, i: usize) {
        self.kill(i);
        self.running[i] = Some(self.spawn(i));
    }

    /// Load from 12 keep-alive and 3 reconnecting clients that list every node.
    fn load(&self, keys: &[String]) -> Load {
        let addrs = self.addrs();
        Load::start(Spec {
            addr: addrs[0],
            failover: addrs[1..].to_vec(),
            connector: self.connector.clone(),
            keep_alive: 12,
            reconnecting: 3,
            keys: keys.to_vec(),
        })
    }
}

/// Creates keys `live-N` one after another while the faults happen, as a client
/// with every node listed: a node it cannot reach, it skips; a create whose answer
/// was lost and that the next node then finds existing, was its own.
struct Creator {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<(Vec<String>, Vec<String>)>,
}

impl Creator {
    fn start(addrs: Vec<SocketAddr>, connector: tokio_rustls::TlsConnector) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let stop = stop.clone();
            move || {
                let (mut created, mut failures) = (Vec::new(), Vec::new());
                let mut n = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let name = format!("live-{n}");
                    let path = format!("/v1/key/create/{name}");
                    let mut lost = false;
                    let mut outcome = None;
                    for attempt in 0..addrs.len() {
                        match load::send_once(addrs[(n + attempt) % addrs.len()], &connector, "POST", &path, b"") {
                            Err(_) => lost = true,
                            Ok((200, _)) => {
                                outcome = Some(Ok(()));
                                break;
                            }
                            Ok((400, body)) if lost && body.contains("already exists") => {
                                outcome = Some(Ok(()));
                                break;
                            }
                            Ok((status, body)) => {
                                outcome = Some(Err(format!("{name}: {status} {body}")));
                                break;
                            }
                        }
                    }
                    match outcome {
                        Some(Ok(())) => created.push(name),
                        Some(Err(e)) => failures.push(e),
                        None => failures.push(format!("{name}: no node answered")),
                    }
                    n += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                (created, failures)
            }
        });
        Self { stop, thread }
    }

    fn stop(self) -> (Vec<String>, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

/// The `keyhost` CLI as an operator's script runs it, with every node in
/// `KES_SERVER` (node `first` listed first: with every node on localhost, the
/// client asks the first listed first, as kms-go does): `key dek` of a key, then
/// `key decrypt` of the ciphertext it printed, over and over.
struct Cli {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<(usize, Vec<String>)>,
}

impl Cli {
    fn start(nodes: &Nodes, first: usize, keys: &[String]) -> Self {
        let mut order: Vec<usize> = (0..3).collect();
        order.rotate_left(first);
        let servers: Vec<String> = order
            .iter()
            .map(|&i| format!("https://127.0.0.1:{}", nodes.ports[i]))
            .collect();
        let env = [
            ("KES_SERVER", servers.join(",")),
            (
                "KES_CLIENT_CERT",
                nodes.dir.path().join("admin.cert").display().to_string(),
            ),
            (
                "KES_CLIENT_KEY",
                nodes.dir.path().join("admin.key").display().to_string(),
            ),
        ];
        let keys = keys.to_vec();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let stop = stop.clone();
            move || {
                let run = |args: &[&str]| -> Result<serde_json::Value, String> {
                    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_keyhost"))
                        .args(args)
                        .env_remove("KES_API_KEY")
                        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
                        .stdout(std::process::Stdio::piped())
                        .stderr(std::process::Stdio::piped())
                        .spawn()
                        .map_err(|e| e.to_string())?;
                    // A command that hangs is a failure, not a hung test.
                    let deadline = Instant::now() + Duration::from_secs(30);
                    while child.try_wait().map_err(|e| e.to_string())?.is_none() {
                        if Instant::now() > deadline {
                            let _ = child.kill();
                            let _ = child.wait();
                            return Err(format!("{args:?}: no answer within 30 s"));
                        }
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    let out = child.wait_with_output().map_err(|e| e.to_string())?;
                    if !out.status.success() {
                        return Err(format!("{args:?}: {}", String::from_utf8_lossy(&out.stderr).trim()));
                    }
                    serde_json::from_slice(&out.stdout).map_err(|e| format!("{args:?}: {e}"))
                };
                let (mut ok, mut failures) = (0, Vec::new());
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let key = &keys[n % keys.len()];
                    n += 1;
                    let outcome = run(&["key", "dek", "-k", "--json", key, "cli"]).and_then(|dek| {
                        let ciphertext = dek["ciphertext"].as_str().ok_or("dek printed no ciphertext")?;
                        let plain = run(&["key", "decrypt", "-k", "--json", key, ciphertext, "cli"])?;
                        if plain["plaintext"] == dek["plaintext"] {
                            Ok(())
                        } else {
                            Err(format!("{key}: decrypt gave another plaintext"))
                        }
                    });
                    match outcome {
                        Ok(()) => ok += 1,
                        Err(e) => failures.push(e),
                    }
                }
                (ok, failures)
            }
        });
        Self { stop, thread }
    }

    /// How many dek-and-decrypt rounds passed, and the failures.
    fn stop(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

/// Lets `load` run for `period`, which it must spend answering (at least 100 more
/// answers by its end).
fn answers_for(load: &Load, period: Duration) {
    let before = load.progress().ok;
    std::thread::sleep(period);
    let deadline = Instant::now() + Duration::from_secs(60);
    while load.progress().ok < before + 100 {
        assert!(
            Instant::now() < deadline,
            "the load got no answers: {:?}",
            load.progress()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Keys created on node 0 and used on the others at once; the keys of the load.
fn keys_across_nodes(nodes: &Nodes) -> Vec<String> {
    let keys: Vec<String> = (0..6).map(|n| format!("shared-{n}")).collect();
    for key in &keys {
        let (status, body) = nodes.send(0, "POST", &format!("/v1/key/create/{key}"));
        assert_eq!(status, 200, "{key}: {body}");
        for i in 1..3 {
            // A miss in node i's cache: read from the keystore.
            let (status, body) = nodes.send(i, "PUT", &format!("/v1/key/generate/{key}"));
            assert_eq!(status, 200, "{key} on node {i}: {body}");
        }
    }
    keys
}

/// Every key works on every node.
fn every_key_on_every_node(nodes: &Nodes, keys: &[String]) {
    for i in 0..3 {
        for key in keys {
            let (status, body) = nodes.send(i, "GET", &format!("/v1/key/describe/{key}"));
            assert_eq!(status, 200, "{key} on node {i}: {body}");
        }
    }
}

#[test]
fn three_nodes_on_etcd_lose_no_request_and_no_key_when_a_node_and_the_etcd_leader_die() {
    let mut cluster = EtcdCluster::start(3);
    let endpoints = cluster.endpoints();
    let quoted: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
    let mut nodes = Nodes::start(&format!(
        "keystore:\n  plugin:\n    path: builtin:etcd\n    config:\n      endpoints: {}\n    allow:\n      http: [{}]\n",
        endpoints.join(","),
        quoted.join(", ")
    ));
    let keys = keys_across_nodes(&nodes);

    // A key deleted on node 0 stops working on node 1 when node 1's cached copy
    // expires.
    assert_eq!(nodes.send(0, "POST", "/v1/key/create/doomed").0, 200);
    assert_eq!(nodes.send(1, "PUT", "/v1/key/generate/doomed").0, 200);
    assert_eq!(nodes.send(0, "DELETE", "/v1/key/delete/doomed").0, 200);
    let deleted = Instant::now();
    loop {
        let (status, body) = nodes.send(1, "PUT", "/v1/key/generate/doomed");
        if status != 200 {
            assert_eq!(status, 404, "a deleted key: {body}");
            break;
        }
        assert!(
            deleted.elapsed() < EXPIRY + Duration::from_secs(2),
            "node 1 still serves a deleted key"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let delete_latency = deleted.elapsed();

    let load = nodes.load(&keys);
    let creator = Creator::start(nodes.addrs(), nodes.connector.clone());
    // The CLI asks node 1, the one that dies, first.
    let cli = Cli::start(&nodes, 1, &keys);
    answers_for(&load, Duration::from_secs(1));
    // (a) A keyhost node dies.
    nodes.kill(1);
    answers_for(&load, Duration::from_secs(2));
    // (b) The etcd leader dies: the nodes serve cached keys, and reads of expired
    // keys and creates wait for the election.
    let leader = cluster.wait_for_leader(Duration::from_secs(10));
    cluster.kill(leader);
    answers_for(&load, EXPIRY);
    // (c) Both come back.
    cluster.restart(leader);
    cluster.wait_member(leader, Duration::from_secs(20));
    nodes.restart(1);
    answers_for(&load, Duration::from_secs(2));
    let (created, create_failures) = creator.stop();
    let (cli_rounds, cli_failures) = cli.stop();
    let report = load.stop();

    assert_eq!(report.failed, 0, "requests failed:\n{}", report.failures_text());
    assert!(create_failures.is_empty(), "creates failed: {create_failures:?}");
    assert!(created.len() > 10, "only {} keys created", created.len());
    assert!(cli_failures.is_empty(), "CLI commands failed: {cli_failures:?}");
    assert!(cli_rounds > 5, "only {cli_rounds} CLI rounds");
    let all: Vec<String> = keys.iter().chain(&created).cloned().collect();
    every_key_on_every_node(&nodes, &all);
    eprintln!(
        "etcd, 3 nodes: {} requests in {:.1} s, none failed, slowest {} ms; {} keys created during the faults, \
         all readable on every node; {cli_rounds} CLI dek-and-decrypt rounds, none failed; a key deleted on one \
         node stopped working on another after {} ms",
        report.ok,
        report.elapsed.as_secs_f64(),
        report.slowest.as_millis(),
        created.len(),
        delete_latency.as_millis()
    );
}

#[test]
fn three_nodes_on_one_secrets_manager_lose_no_request_when_a_node_dies() {
    let moto = Moto::start();
    let mut nodes = Nodes::start(&format!(
        "keystore:\n  aws:\n    secretsmanager:\n      endpoint: {}\n      region: {REGION}\n      credentials:\n        \
         accesskey: {ACCESS_KEY}\n        secretkey: {SECRET_KEY}\n",
        moto.url()
    ));
    let keys = keys_across_nodes(&nodes);
    let load = nodes.load(&keys);
    let creator = Creator::start(nodes.addrs(), nodes.connector.clone());
    answers_for(&load, Duration::from_secs(1));
    nodes.kill(2);
    answers_for(&load, Duration::from_secs(2));
    nodes.restart(2);
    answers_for(&load, Duration::from_secs(1));
    let (created, create_failures) = creator.stop();
    let report = load.stop();
    assert_eq!(report.failed, 0, "requests failed:\n{}", report.failures_text());
    assert!(create_failures.is_empty(), "creates failed: {create_failures:?}");
    let all: Vec<String> = keys.iter().chain(&created).cloned().collect();
    every_key_on_every_node(&nodes, &all);
    eprintln!(
        "AWS, 3 nodes: {} requests in {:.1} s, none failed, slowest {} ms; {} keys created meanwhile",
        report.ok,
        report.elapsed.as_secs_f64(),
        report.slowest.as_millis(),
        created.len()
    );
}
