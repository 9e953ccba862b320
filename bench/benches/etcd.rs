//! The etcd plugin's cache-miss read against the same read made natively, both
//! against one etcd member on loopback (Debian's `etcd-server`):
//!
//! - native: the same JSON range request (`POST /v3/kv/range` of one key, the value
//!   base64-decoded) over a pooled hyper client with `TCP_NODELAY`, as the host's
//!   `wasi:http` implementation uses;
//! - the plugin's `get` on a warm instance, and on a fresh instance each call.
//!
//! So the ratio is the price of the sandbox, not of another HTTP stack.
//!
//! Then the throughput of a deployment: `keyhost` processes on one three-member etcd
//! cluster, under the load of MinIO-like mTLS clients (generate, decrypt, HMAC and
//! describe over 16 keys, the tests' load client) that list every node: one node,
//! then three, and three with one killed halfway (whose slowest request bounds
//! the failover time a client sees). Everything shares this machine's cores, so the
//! three-node figure shows what spreading costs or gains on one host, not on three.
//!
//! Run with `scripts/bench etcd` (it builds the release `keyhost` first);
//! `KEYHOST_BENCH_ITERS` sets the number of timed calls (default 2000) and
//! `KEYHOST_BENCH_SECONDS` the length of each load phase (default 10).

#![expect(clippy::unwrap_used, reason = "Benchmarks fail loudly by design")]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use keyhost_bench::{iterations, print_cache_miss, time_calls};
use keyhost_keystore::Keystore;
use keyhost_plugin_host::{Grants, Origin, PluginSource, PluginSpec, Runtime, RuntimeOptions};
use keyhost_test_support::etcd::EtcdCluster;
use keyhost_test_support::load::{self, Load, Spec};
use keyhost_test_support::process::{Running, newest_config, server_files, start_with, write_identity};

/// `keyhost` nodes of one deployment on a three-member etcd cluster.
struct Deployment {
    _dir: tempfile::TempDir,
    ports: Vec<u16>,
    running: Vec<Option<Running>>,
    connector: tokio_rustls::TlsConnector,
    keys: Vec<String>,
}

impl Deployment {
    fn start(cluster: &EtcdCluster, nodes: usize) -> Self {
        // Each deployment keeps its keys under a prefix of its own.
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let creds = server_files(d);
        write_identity(d, "admin", &creds.admin);
        let endpoints = cluster.endpoints();
        let granted: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
        let config = newest_config(
            d,
            &creds,
            &format!(
                "log:\n  error: off\nkeystore:\n  plugin:\n    path: builtin:etcd\n    config:\n      endpoints: {}\n      \
                 prefix: bench-{nodes}-nodes/\n    allow:\n      http: [{}]\n",
                endpoints.join(","),
                granted.join(", ")
            ),
        );
        let read = |name: &str| std::fs::read_to_string(d.join(name)).unwrap();
        let connector = load::connector_from_pem(&read("server.cert"), &read("admin.cert"), &read("admin.key"));
        let ports: Vec<u16> = (0..nodes).map(|_| keyhost_test_support::free_port()).collect();
        let running = ports
            .iter()
            .map(|port| Some(start_with(&["--addr", &format!("127.0.0.1:{port}")], &config, &[]).unwrap()))
            .collect();
        let deployment = Self {
            _dir: dir,
            ports,
            running,
            connector,
            keys: (0..16).map(|n| format!("bench-{n}")).collect(),
        };
        for key in deployment.keys.clone() {
            let (status, body) = deployment.send("POST", &format!("/v1/key/create/{key}"));
            assert_eq!(status, 200, "{key}: {body}");
        }
        deployment
    }

    fn addrs(&self) -> Vec<std::net::SocketAddr> {
        self.ports
            .iter()
            .map(|p| std::net::SocketAddr::from(([127, 0, 0, 1], *p)))
            .collect()
    }

    fn send(&self, method: &str, path: &str) -> (u16, String) {
        load::send_once(self.addrs()[0], &self.connector, method, path, b"{}").unwrap()
    }

    /// The load of 24 keep-alive clients and 2 that reconnect for each request,
    /// spread over every node, for `seconds`; with `kill`, node `kill` dies halfway.
    fn measure(&mut self, seconds: f64, kill: Option<usize>) -> load::Report {
        let addrs = self.addrs();
        let load = Load::start(Spec {
            addr: addrs[0],
            failover: addrs[1..].to_vec(),
            connector: self.connector.clone(),
            keep_alive: 24,
            reconnecting: 2,
            keys: self.keys.clone(),
        });
        let period = std::time::Duration::from_secs_f64(seconds);
        if let Some(node) = kill {
            std::thread::sleep(period / 2);
            self.running[node] = None;
            std::thread::sleep(period / 2);
        } else {
            std::thread::sleep(period);
        }
        let report = load.stop();
        assert_eq!(report.failed, 0, "requests failed:\n{}", report.failures_text());
        report
    }
}

/// Requests per second, 1 node vs 3, and the failover a client sees.
fn throughput() {
    let seconds: f64 = std::env::var("KEYHOST_BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10.0);
    let cluster = EtcdCluster::start(3);
    let rate = |r: &load::Report| r.ok as f64 / r.elapsed.as_secs_f64();
    let mut one = Deployment::start(&cluster, 1);
    let single = one.measure(seconds, None);
    drop(one);
    let mut three = Deployment::start(&cluster, 3);
    let spread = three.measure(seconds, None);
    let killed = three.measure(seconds, Some(1));
    println!();
    println!(
        "keyhost nodes on a three-member etcd cluster, 24 keep-alive + 2 reconnecting mTLS clients listing every \
         node, {seconds} s each, all on this machine's {} cores:",
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    println!(
        "| {:<34} | {:>10} | {:>8} | {:>10} | {:>12} |",
        "deployment", "requests", "req/s", "vs 1 node", "slowest (ms)"
    );
    println!("|{:-<36}|{:->12}|{:->10}|{:->12}|{:->14}|", "", "", "", "", "");
    for (name, report) in [
        ("1 node", &single),
        ("3 nodes", &spread),
        ("3 nodes, one killed halfway", &killed),
    ] {
        println!(
            "| {:<34} | {:>10} | {:>8.0} | {:>9.2}x | {:>12} |",
            name,
            report.ok,
            rate(report),
            rate(report) / rate(&single),
            report.slowest.as_millis()
        );
    }
    println!("no request failed; a request that met the killed node was sent again to another, within its time");
}

fn main() {
    cache_miss();
    throughput();
}

/// The plugin's cache-miss read against the same read made natively.
fn cache_miss() {
    let iters = iterations(2_000);
    let cluster = EtcdCluster::start(1);
    let endpoint = cluster.endpoints()[0].clone();
    let wasm = keyhost_plugin_build::build(&["keyhost-plugin-etcd"]).unwrap_or_else(|e| panic!("{e}"))[0].clone();
    let record = format!("{{\"bytes\":\"{}\"}}", "A".repeat(43) + "=");
    let record = format!("{record:<180}");
    let key = B64.encode("keyhost/bench-key");
    cluster.request(
        "/v3/kv/put",
        &format!(r#"{{"key":"{key}","value":"{}"}}"#, B64.encode(&record)),
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut spec = PluginSpec::new("etcd", PluginSource::File(wasm));
        spec.config.insert("endpoints".into(), endpoint.clone());
        spec.grants = Grants {
            http: vec![Origin::parse(&endpoint).unwrap()],
            ..Grants::default()
        };
        let plugin = Runtime::new(RuntimeOptions::default())
            .unwrap()
            .load(spec)
            .await
            .unwrap();
        let mut tcp = HttpConnector::new();
        tcp.set_nodelay(true);
        let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(tcp);
        let url: http::Uri = format!("{endpoint}/v3/kv/range").parse().unwrap();
        let body = Bytes::from(format!(r#"{{"key":"{key}"}}"#));
        let expected = record.as_bytes().to_vec();

        let native = time_calls("native range read over hyper", iters, || async {
            let request = http::Request::post(url.clone())
                .header("content-type", "application/json")
                .body(Full::new(body.clone()))
                .unwrap();
            let answer = client
                .request(request)
                .await
                .unwrap()
                .into_body()
                .collect()
                .await
                .unwrap();
            let json: serde_json::Value = serde_json::from_slice(&answer.to_bytes()).unwrap();
            let value = B64.decode(json["kvs"][0]["value"].as_str().unwrap()).unwrap();
            assert_eq!(value, expected);
        })
        .await;
        let via_plugin = time_calls("etcd plugin get (warm instance)", iters, || async {
            assert_eq!(*plugin.get("bench-key").await.unwrap(), expected[..]);
        })
        .await;
        let fresh = time_calls(
            "etcd plugin get (fresh instance each)",
            (iters / 10).max(50),
            || async {
                plugin.recycle();
                assert_eq!(*plugin.get("bench-key").await.unwrap(), expected[..]);
            },
        )
        .await;

        print_cache_miss(
            &format!(
                "cache-miss read of a 180-byte key record from one etcd member on loopback, {iters} calls, one at a time:"
            ),
            "vs native",
            &native,
            &via_plugin,
            &fresh,
            "the native read",
        );
    });
}
