//! What a flood from one address or one identity does to a well-behaved client:
//! the latency of its requests (a key described and a data key generated, one after
//! the other on a kept connection) with no flood, then during each flood, in the
//! same run, with the server's default shares. On loopback, in one process, but the
//! server, the floods and the client each on a runtime of their own: with two CPUs
//! the server has one to itself, as it would have its own machine, and the floods
//! run at the lowest priority on the other, beside the client (see `main`). Each
//! row also says how fast the flood went (its rounds per second: connections,
//! probes, requests), so that a flood the server keeps busy shows as one.
//!
//! `cargo bench -p keyhost-bench --bench fairness` (or `scripts/bench fairness`);
//! `KEYHOST_BENCH_FLOODS=TEXT` runs only the floods whose names contain TEXT.

#![expect(clippy::unwrap_used, reason = "Benchmarks fail loudly by design")]

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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

/// Spawns `tasks` copies of `f` on `on` until `stop` is set; each copy counts its
/// rounds in `rounds`.
fn flood<F, Fut>(
    on: &tokio::runtime::Handle,
    tasks: usize,
    stop: &Arc<AtomicBool>,
    rounds: &Arc<AtomicUsize>,
    f: F,
) -> Vec<tokio::task::JoinHandle<()>>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static + Clone,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    (0..tasks)
        .map(|i| {
            let (stop, rounds, f) = (stop.clone(), rounds.clone(), f.clone());
            on.spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    f(i).await;
                    rounds.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect()
}

/// Pins the calling thread to `cpu`, if this machine has it.
fn pin(cpu: usize) {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    if let Err(e) = rustix::thread::sched_setaffinity(None, &set) {
        eprintln!("cannot pin a thread to CPU {cpu}: {e}");
    }
}

/// The server, the floods and the well-behaved client each on a runtime of its
/// own. With two CPUs or more, the server has CPU 0 to itself, as it would have its
/// own machine, and the floods and the client share CPU 1, the floods at the
/// lowest priority, so that what the client measures is the server's doing, not
/// its own waiting behind the flooders. With one CPU, all share it (and the
/// figures say less).
fn main() {
    let pinned = std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2;
    let server = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(if pinned { 1 } else { 2 })
        .on_thread_start(move || {
            if pinned {
                pin(0);
            }
        })
        .enable_all()
        .build()
        .unwrap();
    let floods = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .on_thread_start(move || {
            if pinned {
                pin(1);
            }
            // The lowest priority: the flooders use what CPU 1 has left.
            let _ = rustix::process::setpriority_process(None, 19);
        })
        .enable_all()
        .build()
        .unwrap();
    if pinned {
        pin(1);
    }
    // The client thread preempts the flooders at once (real-time priority, where
    // allowed): its latency is then the server's.
    let fifo = std::process::Command::new("chrt")
        .args(["-f", "-p", "10", &rustix::thread::gettid().as_raw_nonzero().to_string()])
        .status()
        .is_ok_and(|s| s.success());
    if !fifo {
        eprintln!("the client runs at normal priority (chrt -f not allowed here)");
    }
    let client = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "{}",
        if pinned {
            "server on CPU 0; floods (lowest priority) and the client on CPU 1"
        } else {
            "one CPU: server, floods and client share it"
        }
    );
    client.block_on(run(server.handle(), floods.handle()));
}

async fn run(server: &tokio::runtime::Handle, flooders: &tokio::runtime::Handle) {
    let n = requests();
    let hog = ApiKey::from_seed([21; 32]);
    let hog_id = hog.identity();
    let s = Arc::new(
        server
            .spawn(start_with(
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
            ))
            .await
            .unwrap(),
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
    println!("| flood | flood rounds/s | p50 µs | p99 µs | p99 vs no flood |");
    println!("|---|---|---|---|---|");
    println!("| none | 0 | {:.0} | {:.0} | 1.00x |", p50(&unloaded), p99(&unloaded));

    let stranger = pem(&ApiKey::from_seed([22; 32]));
    let hog_pem = pem(&hog);
    type Flood = Box<
        dyn Fn(
            &tokio::runtime::Handle,
            &Arc<Server>,
            &Arc<AtomicBool>,
            &Arc<AtomicUsize>,
        ) -> Vec<tokio::task::JoinHandle<()>>,
    >;
    let floods: Vec<(&str, Flood)> = vec![
        (
            "connections from one address, any certificate (64 openers)",
            Box::new({
                let stranger = stranger.clone();
                move |on, s, stop, rounds| {
                    let (s, stranger) = (s.clone(), stranger.clone());
                    flood(on, 64, stop, rounds, move |_| {
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
            Box::new(|on, s, stop, rounds| {
                let s = s.clone();
                flood(on, 256, stop, rounds, move |i| {
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
                move |on, s, stop, rounds| {
                    let (s, hog_pem) = (s.clone(), hog_pem.clone());
                    flood(on, 80, stop, rounds, move |_| {
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
                move |on, s, stop, rounds| {
                    let client = s.client_h2(Some((&stranger.0, &stranger.1)));
                    let url = s.url.clone();
                    flood(on, 32, stop, rounds, move |_| {
                        let (client, url) = (client.clone(), url.clone());
                        async move {
                            let _ = client.get(format!("{url}/v1/ready")).send().await;
                        }
                    })
                }
            }),
        ),
        (
            "requests of one identity, keys not cached (512 at once on one HTTP/2 connection)",
            Box::new({
                let hog_pem = hog_pem.clone();
                move |on, s, stop, rounds| {
                    let client = s.client_h2(Some((&hog_pem.0, &hog_pem.1)));
                    let url = s.url.clone();
                    flood(on, 512, stop, rounds, move |i| {
                        let (client, url) = (client.clone(), url.clone());
                        async move {
                            let _ = client.get(format!("{url}/v1/key/describe/missing-{i}")).send().await;
                        }
                    })
                }
            }),
        ),
        (
            "requests of one identity, keys not cached (64 HTTP/1.1 connections)",
            Box::new({
                let hog_pem = hog_pem.clone();
                move |on, s, stop, rounds| {
                    let client = s.client_for(Some((&hog_pem.0, &hog_pem.1)));
                    let url = s.url.clone();
                    flood(on, 64, stop, rounds, move |i| {
                        let (client, url) = (client.clone(), url.clone());
                        async move {
                            let _ = client.get(format!("{url}/v1/key/describe/missing-{i}")).send().await;
                        }
                    })
                }
            }),
        ),
        (
            "requests of one identity, keys not cached, pipelined on 64 HTTP/1.1 connections",
            Box::new({
                let hog_pem = hog_pem.clone();
                move |on, s, stop, rounds| {
                    // Rounds here are answers read, counted by the readers.
                    let (s, hog_pem, sent) = (s.clone(), hog_pem.clone(), rounds.clone());
                    flood(on, 64, stop, &Arc::new(AtomicUsize::new(0)), move |i| {
                        let (s, hog_pem, sent) = (s.clone(), hog_pem.clone(), sent.clone());
                        async move {
                            let from: IpAddr = [127, 0, 0, 9].into();
                            let Ok(conn) = s
                                .try_tls_from(from, &[b"http/1.1"], Some((&hog_pem.0, &hog_pem.1)))
                                .await
                            else {
                                tokio::time::sleep(Duration::from_millis(20)).await;
                                return;
                            };
                            // Requests written ahead of their answers: the flooder
                            // spends next to nothing per request, so the server's CPU
                            // is what runs out.
                            let (mut read, mut write) = tokio::io::split(conn);
                            // Counts the answers (each ends its head with a blank line).
                            let drain = tokio::spawn(async move {
                                let mut buf = vec![0u8; 64 << 10];
                                let mut tail = [0u8; 3];
                                while let Ok(n) = tokio::io::AsyncReadExt::read(&mut read, &mut buf).await {
                                    if n == 0 {
                                        break;
                                    }
                                    let mut joined = tail.to_vec();
                                    joined.extend_from_slice(&buf[..n]);
                                    let answers = joined.windows(4).filter(|w| w == b"\r\n\r\n").count();
                                    sent.fetch_add(answers, Ordering::Relaxed);
                                    tail.copy_from_slice(&joined[joined.len() - 3..]);
                                }
                            });
                            let batch: Vec<u8> = (0..32)
                                .flat_map(|_| {
                                    format!("GET /v1/key/describe/missing-{i} HTTP/1.1\r\nHost: localhost\r\n\r\n")
                                        .into_bytes()
                                })
                                .collect();
                            // Kept open: the writes wait for the server to read.
                            while write.write_all(&batch).await.is_ok() {}
                            drain.abort();
                        }
                    })
                }
            }),
        ),
    ];
    // KEYHOST_BENCH_FLOODS=TEXT runs only the floods whose names contain TEXT.
    let only = std::env::var("KEYHOST_BENCH_FLOODS").unwrap_or_default();
    for (name, start_flood) in floods.into_iter().filter(|(name, _)| name.contains(&only)) {
        let stop = Arc::new(AtomicBool::new(false));
        let rounds = Arc::new(AtomicUsize::new(0));
        let tasks = start_flood(flooders, &s, &stop, &rounds);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (started, before) = (Instant::now(), rounds.load(Ordering::Relaxed));
        let during = measure(&s, &app, n).await;
        let rate = (rounds.load(Ordering::Relaxed) - before) as f64 / started.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        for task in tasks {
            task.abort();
        }
        println!(
            "| {name} | {rate:.0} | {:.0} | {:.0} | {:.2}x |",
            p50(&during),
            p99(&during),
            p99(&during) / p99(&unloaded)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
