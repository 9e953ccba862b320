//! The AWS plugin's costs, against baselines built in the same run:
//!
//! - loading `builtin:aws`: cold compile vs precompiled artifact from the disk cache;
//! - a cache-miss read (GetSecretValue of a 180-byte key record from moto on
//!   loopback) through the plugin vs the same SDK compiled natively, over the same
//!   pooled hyper client the host gives plugins — so the ratio is the price of the
//!   sandbox, not of a different HTTP stack.
//!
//! Run with `cargo bench -p keyhost-bench --bench aws` (release build; starts moto
//! from the virtual environment that `scripts/test` installs). `KEYHOST_BENCH_ITERS`
//! sets the number of timed calls (default 2000).

#![expect(clippy::unwrap_used, reason = "Benchmarks fail loudly by design")]

use aws_sdk_secretsmanager::config::{BehaviorVersion, Credentials, Region};
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector as TcpConnector;
use hyper_util::rt::TokioExecutor;
use keyhost_bench::{iterations, loads, median, print_cache_miss, print_load, time_calls};
use keyhost_keystore::Keystore;
use keyhost_plugin_host::{Grants, Origin, PluginSource, PluginSpec, Runtime, RuntimeOptions};
use keyhost_test_support::{ACCESS_KEY, Moto, REGION, SECRET_KEY};

/// The AWS SDK's HTTP client over a pooled hyper client with TCP_NODELAY, as the
/// host's `wasi:http` implementation uses.
#[derive(Debug, Clone)]
struct Pooled(Client<TcpConnector, Full<Bytes>>);

impl Pooled {
    fn new() -> Self {
        let mut tcp = TcpConnector::new();
        tcp.set_nodelay(true);
        Self(Client::builder(TokioExecutor::new()).build(tcp))
    }
}

impl HttpConnector for Pooled {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let client = self.0.clone();
        HttpConnectorFuture::new(async move {
            let request = request
                .try_into_http1x()
                .map_err(|e| ConnectorError::other(Box::new(e), None))?;
            let (parts, body) = request.into_parts();
            let bytes = Bytes::copy_from_slice(body.bytes().unwrap_or_default());
            let response = client
                .request(http::Request::from_parts(parts, Full::new(bytes)))
                .await
                .map_err(|e| ConnectorError::io(Box::new(e)))?;
            let (parts, body) = response.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| ConnectorError::io(Box::new(e)))?
                .to_bytes();
            aws_smithy_runtime_api::http::Response::try_from(http::Response::from_parts(parts, SdkBody::from(body)))
                .map_err(|e| ConnectorError::other(Box::new(e), None))
        })
    }
}

impl HttpClient for Pooled {
    fn http_connector(&self, _: &HttpConnectorSettings, _: &RuntimeComponents) -> SharedHttpConnector {
        SharedHttpConnector::new(self.clone())
    }
}

fn main() {
    let iters = iterations(2_000);
    let moto = Moto::start();
    let wasm = keyhost_plugin_build::build(&["keyhost-plugin-aws"]).unwrap_or_else(|e| panic!("{e}"))[0].clone();
    let size = std::fs::metadata(&wasm).map(|m| m.len()).unwrap_or(0);
    let record = format!("{{\"bytes\":\"{}\"}}", "A".repeat(43) + "=");
    let record = format!("{record:<180}");
    moto.python(&format!("sm.create_secret(Name='bench-key', SecretString='{record}')"));

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let cache = tempfile::tempdir().unwrap();
        let mut spec = PluginSpec::new("aws", PluginSource::File(wasm.clone()));
        for (k, v) in [
            ("endpoint", moto.url()),
            ("region", REGION.into()),
            ("accesskey", ACCESS_KEY.into()),
            ("secretkey", SECRET_KEY.into()),
        ] {
            spec.config.insert(k.into(), v);
        }
        spec.grants = Grants {
            http: vec![Origin::parse(&moto.url()).unwrap()],
            dir: None,
            ..Grants::default()
        };
        let options = |cached: bool| RuntimeOptions {
            cache_dir: cached.then(|| cache.path().join("artifacts")),
            ..RuntimeOptions::default()
        };

        // Load times: the median of `loads()` fresh runtimes each.
        let cold = median(loads(), || async {
            Runtime::new(options(false)).unwrap().load(spec.clone()).await.unwrap();
        })
        .await;
        Runtime::new(options(true)).unwrap().load(spec.clone()).await.unwrap();
        let cached = median(loads(), || async {
            Runtime::new(options(true)).unwrap().load(spec.clone()).await.unwrap();
        })
        .await;
        print_load(&format!("aws plugin: {}", wasm.display()), size, loads(), cold, cached);

        let plugin = Runtime::new(options(true)).unwrap().load(spec.clone()).await.unwrap();
        let native = aws_sdk_secretsmanager::Client::from_conf(
            aws_sdk_secretsmanager::Config::builder()
                .behavior_version(BehaviorVersion::latest())
                .region(Region::new(REGION))
                .endpoint_url(moto.url())
                .credentials_provider(Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "bench"))
                .http_client(SharedHttpClient::new(Pooled::new()))
                .build(),
        );
        let expected = record.as_bytes().to_vec();
        let sdk = time_calls("native AWS SDK GetSecretValue", iters, || async {
            let out = native.get_secret_value().secret_id("bench-key").send().await.unwrap();
            assert_eq!(out.secret_string().map(str::as_bytes), Some(&expected[..]));
        })
        .await;
        let via_plugin = time_calls("aws plugin get (warm instance)", iters, || async {
            assert_eq!(*plugin.get("bench-key").await.unwrap(), expected[..]);
        })
        .await;
        let fresh = time_calls("aws plugin get (fresh instance each)", (iters / 10).max(50), || async {
            plugin.recycle();
            assert_eq!(*plugin.get("bench-key").await.unwrap(), expected[..]);
        })
        .await;

        print_cache_miss(
            &format!("cache-miss read of a 180-byte key record from moto on loopback, {iters} calls, one at a time:"),
            "vs SDK",
            &sdk,
            &via_plugin,
            &fresh,
            "the native SDK",
        );
    });
}
