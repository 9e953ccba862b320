//! What a flood from one address or one identity does to a well-behaved client:
//! the latency of its requests (a key described and a data key generated, one after
//! the other on a kept connection) with no flood, then during each flood, in the
//! same run. In process, on loopback, with the server's default shares: the floods
//! and the server share this machine's cores, so what a flood costs in CPU shows
//! too; what the shares bound is what a flood can hold.
//!
//! `cargo bench -p keyhost-bench --bench fairness` (or `scripts/bench fairness`).

#![expect(clippy::unwrap_used, reason = "Benchmarks fail loudly by design")]

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use keyhost_bench::percentile;
use keyhost_policy::{ApiKey, PatternSyntax, Policy};
use keyhost_server::RouteOverride;
use keyhost_test_support::api::{Server, start_with};
use tokio::io::AsyncWriteExt;

fn requests() -> usize {
    std::env::var("KEYHOST_BENCH_REQUESTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(2000, |n: usize| n.clamp(20, 2000))
}

/// The well-behaved client's latencies: describe, then generate, `n` times.
async fn measure(
    s: &Server,
    app: &impl Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = u16> + Send>>,
    n: usize,
) -> Vec<Duration> {
    let _ = s;
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        let status = app().await;
        times.push(start.elapsed());
        assert_eq!(status, 200, "the well-behaved client was refused");
    }
    times.sort();
    times
}

fn pem(key: &ApiKey) -> (String, String) {
    let (cert, private) = keyhost_tls::mint::client_certificate(key).unwrap();
    (cert, private.to_string())
}

/// Spawns `tasks` copies of `flood` until `stop` is set.
fn flood<F, Fut>(tasks: usize, stop: &Arc<AtomicBool>, f: F) -> Vec<tokio::task::JoinHandle<()>>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static + Clone,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    (0..tasks)
        .map(|i| {
            let (stop, f) = (stop.clone(), f.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    f(i).await;
                }
            })
        })
        .collect()
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

async fn run() {
    let n = requests();
    let hog = ApiKey::from_seed([21; 32]);
    let hog_id = hog.identity();
    let s = Arc::new(
        start_with(
            move |app| {
                let allow = |paths: &[&str]| Policy::parse(paths, &[], PatternSyntax::Prefix).unwrap();
                vec![
                    (
                        "app",
                        allow(&["/v1/key/describe/app-*", "/v1/key/generate/app-*"]),
                        vec![app.identity()],
                    ),
                    (
                        "hog",
                        allow(&["/v1/key/encrypt/hog", "/v1/key/describe/*"]),
                        vec![hog_id],
                    ),
                ]
            },
            |state| {
                state.overrides.insert(
                    "/v1/ready".into(),
                    RouteOverride {
                        skip_auth: true,
                        timeout: None,
                    },
                );
            },
        )
        .await,
    );
    for name in ["app-k", "hog"] {
        assert_eq!(
            s.call(&s.admin(), "POST", &format!("/v1/key/create/{name}"), None)
                .await
                .0,
            200
        );
    }
    let app = {
        let (s, client) = (s.clone(), s.app());
        move || {
            let (s, client) = (s.clone(), client.clone());
            Box::pin(async move {
                let (a, _) = s.call(&client, "GET", "/v1/key/describe/app-k", None).await;
                let (b, _) = s
                    .call(&client, "POST", "/v1/key/generate/app-k", Some(serde_json::json!({})))
                    .await;
                if a == 200 { b } else { a }
            }) as std::pin::Pin<Box<dyn std::future::Future<Output = u16> + Send>>
        }
    };
    // Warm up connections and caches.
    measure(&s, &app, n / 10).await;
    let unloaded = measure(&s, &app, n).await;
    let p50 = |t: &[Duration]| percentile(t, 0.5).as_secs_f64() * 1e6;
    let p99 = |t: &[Duration]| percentile(t, 0.99).as_secs_f64() * 1e6;
    println!("| flood | p50 µs | p99 µs | p99 vs no flood |");
    println!("|---|---|---|---|");
    println!("| none | {:.0} | {:.0} | 1.00x |", p50(&unloaded), p99(&unloaded));

    let stranger = pem(&ApiKey::from_seed([22; 32]));
    let hog_pem = pem(&hog);
    type Flood = Box<dyn Fn(&Arc<Server>, &Arc<AtomicBool>) -> Vec<tokio::task::JoinHandle<()>>>;
    let floods: Vec<(&str, Flood)> = vec![
        (
            "connections from one address, any certificate (64 openers)",
            Box::new({
                let stranger = stranger.clone();
                move |s, stop| {
                    let (s, stranger) = (s.clone(), stranger.clone());
                    flood(64, stop, move |_| {
                        let (s, stranger) = (s.clone(), stranger.clone());
                        async move {
                            let from: IpAddr = [127, 0, 0, 7].into();
                            if let Ok(mut conn) = s
                                .try_tls_from(from, &[b"http/1.1"], Some((&stranger.0, &stranger.1)))
                                .await
                            {
                                let _ = conn
                                    .write_all(b"GET /version HTTP/1.1\r\nHost: localhost\r\n\r\n")
                                    .await;
                                tokio::time::sleep(Duration::from_millis(500)).await;
                            } else {
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                        }
                    })
                }
            }),
        ),
        (
            "silent sockets from 8 addresses of one network (256 sockets)",
            Box::new(|s, stop| {
                let s = s.clone();
                flood(256, stop, move |i| {
                    let s = s.clone();
                    async move {
                        let from: IpAddr = [127, 0, 3, 2 + (i % 8) as u8].into();
                        let socket = tokio::net::TcpSocket::new_v4().unwrap();
                        let _ = socket.bind((from, 0).into());
                        if let Ok(mut conn) = socket.connect(s.addr).await {
                            let mut byte = [0u8; 1];
                            let _ = tokio::time::timeout(
                                Duration::from_secs(2),
                                tokio::io::AsyncReadExt::read(&mut conn, &mut byte),
                            )
                            .await;
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                })
            }),
        ),
        (
            "slow 1 MB bodies from one identity (80 connections)",
            Box::new({
                let hog_pem = hog_pem.clone();
                move |s, stop| {
                    let (s, hog_pem) = (s.clone(), hog_pem.clone());
                    flood(80, stop, move |_| {
                        let (s, hog_pem) = (s.clone(), hog_pem.clone());
                        async move {
                            let from: IpAddr = [127, 0, 0, 8].into();
                            if let Ok(mut conn) = s
                                .try_tls_from(from, &[b"http/1.1"], Some((&hog_pem.0, &hog_pem.1)))
                                .await
                            {
                                let head = "PUT /v1/key/encrypt/hog HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1048576\r\n\r\n";
                                let _ = conn.write_all(head.as_bytes()).await;
                                let _ = conn.write_all(&vec![b' '; 1_000_000]).await;
                                tokio::time::sleep(Duration::from_secs(2)).await;
                            }
                        }
                    })
                }
            }),
        ),
        (
            "readiness probes from anyone (32 probers, HTTP/2)",
            Box::new({
                let stranger = stranger.clone();
                move |s, stop| {
                    let client = s.client_h2(Some((&stranger.0, &stranger.1)));
                    let url = s.url.clone();
                    flood(32, stop, move |_| {
                        let (client, url) = (client.clone(), url.clone());
                        async move {
                            let _ = client.get(format!("{url}/v1/ready")).send().await;
                        }
                    })
                }
            }),
        ),
        (
            "requests of one identity, keys not cached (512 at once, HTTP/2)",
            Box::new({
                let hog_pem = hog_pem.clone();
                move |s, stop| {
                    let client = s.client_h2(Some((&hog_pem.0, &hog_pem.1)));
                    let url = s.url.clone();
                    flood(512, stop, move |i| {
                        let (client, url) = (client.clone(), url.clone());
                        async move {
                            let _ = client.get(format!("{url}/v1/key/describe/missing-{i}")).send().await;
                        }
                    })
                }
            }),
        ),
    ];
    for (name, start_flood) in floods {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = start_flood(&s, &stop);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let during = measure(&s, &app, n).await;
        stop.store(true, Ordering::Relaxed);
        for task in tasks {
            task.abort();
        }
        println!(
            "| {name} | {:.0} | {:.0} | {:.2}x |",
            p50(&during),
            p99(&during),
            p99(&during) / p99(&unloaded)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
