//! The etcd plugin's cache-miss read against the same read made natively, both
//! against one etcd member on loopback (Debian's `etcd-server`):
//!
//! - native: the same JSON range request (`POST /v3/kv/range` of one key, the value
//!   base64-decoded) over a pooled hyper client with `TCP_NODELAY`, as the host's
//!   `wasi:http` implementation uses;
//! - the plugin's `get` on a warm instance, and on a fresh instance each call.
//!
//! So the ratio is the price of the sandbox, not of another HTTP stack. Run with
//! `cargo bench -p keyhost-bench --bench etcd` (`scripts/bench etcd`);
//! `KEYHOST_BENCH_ITERS` sets the number of timed calls (default 2000).

#![expect(clippy::unwrap_used, reason = "Benchmarks fail loudly by design")]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use keyhost_bench::{header, iterations, time_calls};
use keyhost_keystore::Keystore;
use keyhost_plugin_host::{Grants, Origin, PluginSource, PluginSpec, Runtime, RuntimeOptions};
use keyhost_test_support::etcd::EtcdCluster;

fn main() {
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

        println!();
        println!(
            "cache-miss read of a 180-byte key record from one etcd member on loopback, {iters} calls, one at a time:"
        );
        println!("{}", header("vs native"));
        for sample in [&native, &via_plugin, &fresh] {
            println!("{}", sample.row(Some(&native)));
        }
        println!();
        println!(
            "plugin overhead over the native read: {:.1} µs per read",
            (via_plugin.mean().as_secs_f64() - native.mean().as_secs_f64()) * 1e6
        );
    });
}
