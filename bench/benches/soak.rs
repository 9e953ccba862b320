//! The soak: many mutual-TLS clients against keyhost with the bundled fs plugin for a
//! minute, with every answer checked, and the server's file descriptors and memory
//! watched for growth.
//!
//! `KEYHOST_SOAK_KEEP_ALIVE` (default 64) clients keep one connection each and
//! `KEYHOST_SOAK_RECONNECTING` (default 16) open a new TLS connection for every
//! request. Each client generates a data key, decrypts it, computes an HMAC and
//! describes the key, over `KEYHOST_SOAK_KEYS` (default 100) keys in turn (the test
//! support crate's `load` module; an answer that is not the expected one is a
//! failure). The run is a warm-up of `KEYHOST_SOAK_WARMUP` seconds (default 10), a
//! pause, the soak proper of `KEYHOST_SOAK_SECONDS` (default 60), and a pause. In both
//! pauses, with no client connected, the server's open file descriptors and resident
//! memory are read from `/proc`; so are they every second under load.
//!
//! It fails (exit status 1) on any failed request, on a panic or error line from the
//! server, on more open file descriptors after the soak than after the warm-up (but
//! for a slack of 4, for plugin instances the pool starts late), or
//! on resident memory after the soak above that after the warm-up by more than
//! `KEYHOST_SOAK_RSS_SLACK_MIB` (default 4) MiB plus 10 %.
//!
//! Run with `scripts/soak` (release build) or `scripts/soak --short` (the debug
//! build, a few seconds; `scripts/test` runs it).

#![expect(clippy::unwrap_used, reason = "The soak fails loudly by design")]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use keyhost_test_support::load::{self, Load, Spec, request};

/// Descriptors the server may hold after the soak beyond those after the warm-up.
const FD_SLACK: usize = 4;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// What `/proc` says of the server.
#[derive(Debug, Clone, Copy)]
struct Sample {
    fds: usize,
    rss_kib: u64,
    threads: u64,
}

fn sample(pid: u32) -> Sample {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Sample {
        fds,
        rss_kib: field("VmRSS:"),
        threads: field("Threads:"),
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

struct Server {
    child: Child,
    addr: SocketAddr,
    stderr: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn keyhost_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("KEYHOST_BIN") {
        return bin.into();
    }
    // target/<profile>/deps/soak-… → target/<profile>/keyhost
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().join("keyhost")
}

/// Starts keyhost with the bundled fs plugin on a free port, ready to serve.
async fn start(dir: &Path, connector: &tokio_rustls::TlsConnector) -> Server {
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "version: v1\naddress: 127.0.0.1:0\nadmin:\n  identity: {admin}\ntls:\n  key: {d}/server.key\n  cert: {d}/server.cert\n\
             keystore:\n  plugin:\n    path: builtin:fs\n    allow:\n      dir: {d}/keys\n",
            admin = std::fs::read_to_string(dir.join("admin.identity")).unwrap().trim(),
            d = dir.display()
        ),
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("keys")).unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], keyhost_test_support::free_port()));
    let stderr = dir.join("server.stderr");
    let child = Command::new(keyhost_bin())
        .arg("server")
        .arg("--config")
        .arg(&config)
        .arg("--addr")
        .arg(addr.to_string())
        .env("XDG_CACHE_HOME", dir.join("cache"))
        .env("KEYHOST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let mut server = Server { child, addr, stderr };
    let started = Instant::now();
    let ready = request("GET", "/v1/ready", b"", true);
    loop {
        if let Ok(mut conn) = load::Conn::open(addr, connector).await
            && let Ok((200, _)) = conn.send(&ready).await
        {
            return server;
        }
        if let Ok(Some(status)) = server.child.try_wait() {
            panic!(
                "keyhost exited before it was ready ({status}):\n{}",
                std::fs::read_to_string(&server.stderr).unwrap_or_default()
            );
        }
        assert!(started.elapsed() < Duration::from_secs(60), "keyhost not ready in 60 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the server has closed the connections of the last phase: its count
/// of descriptors stops changing.
fn settle(pid: u32) -> Sample {
    let mut last = sample(pid);
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(200));
        let now = sample(pid);
        if now.fds == last.fds {
            return now;
        }
        last = now;
    }
    last
}

/// Runs the load for `seconds`, printing a line of figures every `every` seconds.
fn phase(name: &str, spec: &Spec, pid: u32, seconds: f64, every: u64) -> (load::Report, Vec<Sample>) {
    println!("\n{name}: {seconds} s");
    println!(
        "| {:>6} | {:>10} | {:>8} | {:>6} | {:>8} | {:>8} | {:>7} |",
        "t (s)", "requests", "req/s", "failed", "fds", "RSS MiB", "threads"
    );
    println!(
        "|{:->8}|{:->12}|{:->10}|{:->8}|{:->10}|{:->10}|{:->9}|",
        "", "", "", "", "", "", ""
    );
    let load = Load::start(spec.clone());
    let mut samples = Vec::new();
    let mut last_ok = 0;
    let mut second = 0u64;
    let end = Duration::from_secs_f64(seconds);
    while load.elapsed() < end {
        second += 1;
        let next = Duration::from_secs(second).min(end);
        std::thread::sleep(next.saturating_sub(load.elapsed()));
        let s = sample(pid);
        samples.push(s);
        if second.is_multiple_of(every) || load.elapsed() >= end {
            let p = load.progress();
            println!(
                "| {:>6.1} | {:>10} | {:>8.0} | {:>6} | {:>8} | {:>8.1} | {:>7} |",
                load.elapsed().as_secs_f64(),
                p.ok + p.failed,
                (p.ok - last_ok) as f64 / every as f64,
                p.failed,
                s.fds,
                mib(s.rss_kib),
                s.threads
            );
            last_ok = p.ok;
        }
    }
    (load.stop(), samples)
}

fn main() {
    let keep_alive = env_or("KEYHOST_SOAK_KEEP_ALIVE", 64);
    let reconnecting = env_or("KEYHOST_SOAK_RECONNECTING", 16);
    let keys = env_or("KEYHOST_SOAK_KEYS", 100usize);
    let warmup = env_or("KEYHOST_SOAK_WARMUP", 10.0f64);
    let seconds = env_or("KEYHOST_SOAK_SECONDS", 60.0f64);
    let slack_mib = env_or("KEYHOST_SOAK_RSS_SLACK_MIB", 4.0f64);
    let every = if seconds > 20.0 { 5 } else { 1 };

    let dir = tempfile::tempdir().unwrap();
    let creds = keyhost_tls::mint::DevCredentials::generate(&["localhost".into(), "127.0.0.1".into()]).unwrap();
    std::fs::write(dir.path().join("server.cert"), &creds.server_cert_pem).unwrap();
    keyhost_test_support::write_private(dir.path().join("server.key"), creds.server_key_pem.as_str());
    std::fs::write(dir.path().join("admin.identity"), creds.admin.identity().as_str()).unwrap();
    let connector = load::connector(
        creds.server_cert_der.clone(),
        &creds.admin_cert_pem,
        creds.admin_key_pem.as_str(),
    );

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut server = rt.block_on(start(dir.path(), &connector));
    let pid = server.child.id();
    let names: Vec<String> = (0..keys).map(|n| format!("soak-{n:04}")).collect();
    rt.block_on(async {
        let mut conn = load::Conn::open(server.addr, &connector).await.unwrap();
        for name in &names {
            let (status, body) = conn
                .send(&request("PUT", &format!("/v1/key/create/{name}"), b"", false))
                .await
                .unwrap();
            assert_eq!(status, 200, "create {name}: {}", String::from_utf8_lossy(&body));
        }
    });
    drop(rt);
    let at_start = settle(pid);

    println!(
        "keyhost {} with the fs plugin; {keep_alive} keep-alive and {reconnecting} reconnecting mTLS clients over {keys} keys",
        keyhost_bin().display()
    );
    let spec = Spec {
        addr: server.addr,
        failover: vec![],
        connector,
        keep_alive,
        reconnecting,
        keys: names,
    };
    let (warm, _) = phase("warm-up", &spec, pid, warmup, every);
    let after_warmup = settle(pid);
    let (soak, samples) = phase("soak", &spec, pid, seconds, every);
    let after_soak = settle(pid);

    let mut failed = Vec::new();
    for (name, report) in [("warm-up", &warm), ("soak", &soak)] {
        println!(
            "\n{name}: {} requests answered as expected, {} failed, {:.0} req/s; {} TLS connections ({} resumed); slowest request {} ms",
            report.ok,
            report.failed,
            report.ok as f64 / report.elapsed.as_secs_f64(),
            report.connections,
            report.resumed,
            report.slowest.as_millis()
        );
        if report.failed > 0 {
            failed.push(format!(
                "{name}: {} requests failed:\n{}",
                report.failed,
                report.failures_text()
            ));
        }
    }
    let peak = samples.iter().map(|s| s.fds).max().unwrap_or(0);
    let peak_rss = samples.iter().map(|s| s.rss_kib).max().unwrap_or(0);
    println!(
        "server at rest: fds {} → {} (warm-up) → {} (soak); RSS {:.1} → {:.1} → {:.1} MiB; threads {} → {} → {}",
        at_start.fds,
        after_warmup.fds,
        after_soak.fds,
        mib(at_start.rss_kib),
        mib(after_warmup.rss_kib),
        mib(after_soak.rss_kib),
        at_start.threads,
        after_warmup.threads,
        after_soak.threads,
    );
    println!("under load: at most {peak} fds and {:.1} MiB RSS", mib(peak_rss));
    // A plugin instance started late (the pool grows on demand) holds a descriptor
    // or two; a leak grows with every connection.
    if after_soak.fds > after_warmup.fds + FD_SLACK {
        failed.push(format!(
            "open file descriptors grew from {} to {}",
            after_warmup.fds, after_soak.fds
        ));
    }
    let allowed = mib(after_warmup.rss_kib) * 1.10 + slack_mib;
    if mib(after_soak.rss_kib) > allowed {
        failed.push(format!(
            "resident memory grew from {:.1} MiB to {:.1} MiB (allowed: {allowed:.1})",
            mib(after_warmup.rss_kib),
            mib(after_soak.rss_kib)
        ));
    }
    let log = std::fs::read_to_string(&server.stderr).unwrap_or_default();
    let bad: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("panic") || l.contains("ERROR") || l.contains("WARN"))
        // Not a fault of the run: the machine does not let the server lock memory.
        .filter(|l| !l.contains("memory is not locked"))
        .collect();
    if !bad.is_empty() {
        failed.push(format!("the server logged:\n{}", bad.join("\n")));
    }
    if let Ok(Some(status)) = server.child.try_wait() {
        failed.push(format!("the server exited: {status}"));
    }

    if failed.is_empty() {
        println!("\nsoak passed");
    } else {
        println!("\nsoak FAILED:");
        for f in &failed {
            println!("- {f}");
        }
        drop(server); // exit skips destructors: stop keyhost first
        std::process::exit(1);
    }
}
