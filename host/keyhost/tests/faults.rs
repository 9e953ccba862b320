//! Faults under load: while many mutual-TLS clients generate, decrypt, HMAC and
//! describe keys (every answer checked; `keyhost_test_support::load`), something
//! breaks — the configuration is reloaded or broken, the key directory fills up or
//! turns read-only, the keystore plugin traps, hangs or stalls on every call. The
//! clients must see no failure, and what broke must fail cleanly, within the
//! deadline, and recover by itself. (The AWS outage under load is in `aws.rs`.)

#![expect(clippy::unwrap_used, reason = "Tests fail loudly by design")]

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use keyhost_test_support::load::{self, Load, Spec};
use keyhost_tls::mint::DevCredentials;

use keyhost_test_support::process::{Running, newest_config, server_files, start, start_logging_to};

/// A server and what the load needs to reach it.
struct Setup {
    server: Running,
    addr: SocketAddr,
    connector: tokio_rustls::TlsConnector,
}

impl Setup {
    fn start(config: &Path, creds: &DevCredentials) -> Self {
        let server = start(config, &[]).unwrap();
        let addr = server.url.trim_start_matches("https://").parse().unwrap();
        let connector = load::connector(
            creds.server_cert_der.clone(),
            &creds.admin_cert_pem,
            creds.admin_key_pem.as_str(),
        );
        Self {
            server,
            addr,
            connector,
        }
    }

    fn send(&self, method: &str, path: &str) -> (u16, String) {
        load::send_once(self.addr, &self.connector, method, path, b"{}").unwrap()
    }

    /// Creates `count` keys named `load-N` and returns the load's spec over them.
    fn load_keys(&self, count: usize) -> Spec {
        let keys: Vec<String> = (0..count).map(|n| format!("load-{n}")).collect();
        for key in &keys {
            let (status, body) = self.send("PUT", &format!("/v1/key/create/{key}"));
            assert_eq!(status, 200, "create {key}: {body}");
        }
        Spec {
            addr: self.addr,
            failover: vec![],
            connector: self.connector.clone(),
            keep_alive: 16,
            reconnecting: 4,
            keys,
        }
    }

    /// Kills the server and returns everything it wrote to standard error.
    fn stop(mut self) -> String {
        let _ = self.server.child.kill();
        let _ = self.server.child.wait();
        let mut stderr = String::new();
        if let Some(mut pipe) = self.server.child.stderr.take() {
            let _ = pipe.read_to_string(&mut stderr);
        }
        stderr
    }
}

/// One fault test at a time: each runs a load of 20 clients and a server, and the
/// machine may have two cores.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// Starts the load and waits until it has had answers, so that every key is cached.
fn start_load(spec: Spec) -> Load {
    let load = Load::start(spec);
    let deadline = Instant::now() + Duration::from_secs(30);
    while load.progress().ok < 2_000 {
        assert!(
            Instant::now() < deadline,
            "the load got no answers: {:?}",
            load.progress()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    load
}

/// Stops the load and checks that no client saw a failure and that it kept going.
fn no_failures(load: Load, what: &str) -> load::Report {
    let report = load.stop();
    assert_eq!(
        report.failed,
        0,
        "{what}: {} of {} requests failed:\n{}",
        report.failed,
        report.ok + report.failed,
        report.failures_text()
    );
    assert!(
        report.ok > 1_000,
        "{what}: only {} requests in {:?}",
        report.ok,
        report.elapsed
    );
    eprintln!(
        "{what}: {} requests, none failed, slowest {} ms",
        report.ok,
        report.slowest.as_millis()
    );
    report
}

fn hup(server: &Running) {
    let status = Command::new("kill")
        .args(["-HUP", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Asserts that `answer` is a KES error: a status of at least 400 and a JSON body
/// `{"message": …}` that names no file path of the server.
fn kes_error(answer: &(u16, String), what: &str) {
    let (status, body) = answer;
    assert!(*status >= 400, "{what}: {status} {body}");
    let json: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {body}"));
    let message = json["message"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: no message: {body}"));
    assert!(!message.is_empty() && !message.contains("/tmp"), "{what}: {message}");
}

#[test]
fn sighup_under_load_fails_no_request_and_a_broken_file_keeps_the_old_one() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let creds = server_files(d);
    let write = |n: u32| {
        newest_config(
            d,
            &creds,
            &format!(
                "cache:\n  expiry:\n    any: {}m\npolicy:\n  reader-{n}:\n    allow: [/v1/key/describe/*]\n    identities: [{}]\n\
                 keystore:\n  fs:\n    path: {}/keys\n",
                n + 1,
                "a".repeat(64),
                d.display()
            ),
        )
    };
    let config = write(0);
    let setup = Setup::start(&config, &creds);
    let load = start_load(setup.load_keys(20));

    for n in 1..=10 {
        write(n);
        hup(&setup.server);
        std::thread::sleep(Duration::from_millis(200));
    }
    std::fs::write(&config, "version: v1\nadmin: [broken\n").unwrap();
    hup(&setup.server);
    std::thread::sleep(Duration::from_millis(500));
    let before = load.progress().ok;
    std::thread::sleep(Duration::from_millis(500));
    assert!(load.progress().ok > before, "still serving after the broken file");
    no_failures(load, "ten reloads and a broken file");

    // The last good configuration is in force: its policy, not the broken file.
    let (status, body) = setup.send("GET", "/v1/policy/describe/reader-10");
    assert_eq!(status, 200, "{body}");
    let stderr = setup.stop();
    assert!(
        stderr.contains("config.yaml") && stderr.contains("line 2"),
        "the broken file is reported with its line:\n{stderr}"
    );
}

/// A tmpfs mounted on a directory for the test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` on `at` (created). Mounting needs root or
    /// CAP_SYS_ADMIN, as on the machines the project is built and tested on; without
    /// it the test fails and says so, rather than passing without its checks.
    fn mount(at: &Path, size: &str) -> Self {
        std::fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "this test fills a tmpfs up and needs root or CAP_SYS_ADMIN to mount one (CI and the dev machines run as root): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Self(at.to_owned())
    }

    fn remount(&self, mode: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,{mode}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(status.success(), "remount {mode}");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Every file in the key directory: a record of a key the server knows, and no
/// temporary file left behind.
fn only_whole_records(keys: &Path, setup: &Setup) {
    for entry in std::fs::read_dir(keys).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(!name.starts_with('.'), "a temporary file was left behind: {name}");
        let (status, body) = setup.send("GET", &format!("/v1/key/describe/{name}"));
        assert_eq!(status, 200, "{name} is on disk but not a whole key: {body}");
    }
}

#[test]
fn a_full_or_read_only_key_directory_fails_create_cleanly_under_load() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let keys = d.join("keys");
    let fs = Tmpfs::mount(&keys, "256k");
    let creds = server_files(d);
    let config = newest_config(
        d,
        &creds,
        &format!(
            "cache:\n  expiry:\n    any: 5m\nkeystore:\n  plugin:\n    path: builtin:fs\n    allow:\n      dir: {}\n",
            keys.display()
        ),
    );
    let setup = Setup::start(&config, &creds);
    let load = start_load(setup.load_keys(10));

    // Full: create keys until the directory has no room left.
    let mut created: Vec<String> = Vec::new();
    let full = fill_with_keys(&setup, &keys, &mut created);

    // Read-only: create fails, reads go on; writable again: create works.
    fs.remount("ro");
    let answer = setup.send("PUT", "/v1/key/create/on-read-only");
    kes_error(&answer, "create on a read-only directory");
    assert_eq!(setup.send("GET", "/v1/key/describe/on-read-only").0, 404);
    let (status, body) = setup.send("PUT", &format!("/v1/key/generate/{}", created[0]));
    assert_eq!(status, 200, "keys are still read: {body}");
    fs.remount("rw");
    let (status, body) = setup.send("PUT", "/v1/key/create/on-read-only");
    assert_eq!(status, 200, "{body}");
    only_whole_records(&keys, &setup);

    no_failures(load, "a full and a read-only key directory");
    eprintln!("full: {full:?}; read-only: {} {}", answer.0, answer.1);
    drop(setup);
    drop(fs);
}

/// Creates keys until the directory is full; checks that the refusal is clean and
/// that create works again once there is room. Returns how many keys fitted and the
/// refusal.
fn fill_with_keys(setup: &Setup, keys: &Path, created: &mut Vec<String>) -> (usize, (u16, String)) {
    let (refused, answer) = loop {
        let name = format!("fill-{}", created.len());
        let answer = setup.send("PUT", &format!("/v1/key/create/{name}"));
        if answer.0 != 200 {
            break (name, answer);
        }
        created.push(name);
        assert!(created.len() < 10_000, "the 256 KiB directory never filled up");
    };
    let fitted = created.len();
    kes_error(&answer, "create on a full directory");
    let (status, _) = setup.send("GET", &format!("/v1/key/describe/{refused}"));
    assert_eq!(status, 404, "the refused key does not exist");
    only_whole_records(keys, setup);
    // Room again (tmpfs also charges directory entries): create works.
    for name in created.drain(..4) {
        let (status, body) = setup.send("DELETE", &format!("/v1/key/delete/{name}"));
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = setup.send("PUT", &format!("/v1/key/create/{refused}"));
    assert_eq!(status, 200, "{body}");
    (fitted, answer)
}

fn hostile_wasm() -> PathBuf {
    keyhost_plugin_build::build(&["keyhost-test-hostile"]).unwrap_or_else(|e| panic!("{e}"))[0].clone()
}

/// Sends `method path`, asserting a KES error within `limit`; returns the answer.
fn fails_within(setup: &Setup, method: &str, path: &str, limit: Duration) -> (u16, String) {
    let started = Instant::now();
    let answer = setup.send(method, path);
    let took = started.elapsed();
    kes_error(&answer, path);
    assert!(took < limit, "{method} {path} took {took:?}, limit {limit:?}");
    answer
}

#[test]
fn a_plugin_that_traps_hangs_or_stalls_fails_only_its_own_calls() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let keys = d.join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let creds = server_files(d);
    let config = newest_config(
        d,
        &creds,
        &format!(
            "cache:\n  expiry:\n    any: 5m\nkeystore:\n  plugin:\n    path: {}\n    allow:\n      dir: {}\n    \
             limits: {{timeout: 1s, instances: 4, memory: 32MiB}}\n",
            hostile_wasm().display(),
            keys.display()
        ),
    );
    let setup = Setup::start(&config, &creds);
    let load = start_load(setup.load_keys(10));
    // The plugin's deadline. Every stall below lasts a whole deadline, so a request
    // that had to wait for a stalled call (one that arrived in the stall's first
    // half, as thousands of the load's do) takes more than half of it: cached
    // answers must come sooner.
    let deadline = Duration::from_secs(1);
    let limit = deadline + Duration::from_secs(2);

    // Each misbehaviour fails its own call, with a KES error, within the deadline;
    // a fresh key right after works.
    let mut seen = Vec::new();
    for action in ["spin", "panic", "sleep", "alloc", "huge", "garbage"] {
        let answer = fails_within(&setup, "PUT", &format!("/v1/key/generate/{action}"), limit);
        seen.push(format!("{action}: {} {}", answer.0, answer.1));
        let fresh = format!("after-{action}");
        assert_eq!(setup.send("PUT", &format!("/v1/key/create/{fresh}")).0, 200);
        let (status, body) = setup.send("PUT", &format!("/v1/key/generate/{fresh}"));
        assert_eq!(status, 200, "after {action}: {body}");
    }
    eprintln!("{}", seen.join("\n"));

    // Every call stalls for the whole deadline, sleeping or spinning: cached keys go
    // on, health checks and uncached keys answer within the deadline.
    for mode in ["sleep", "spin"] {
        std::fs::write(keys.join(".stall"), mode).unwrap();
        // Readiness answers a keystore status at most 2 s old (so that probes never
        // queue behind key reads): it turns within that and one deadline.
        let turned = Instant::now() + Duration::from_secs(2) + limit;
        while setup.send("GET", "/v1/ready").0 == 200 {
            assert!(Instant::now() < turned, "{mode}: /v1/ready still answers 200");
            std::thread::sleep(Duration::from_millis(100));
        }
        for _ in 0..2 {
            let started = Instant::now();
            let (status, body) = setup.send("GET", "/version");
            assert_eq!(status, 200, "{body}");
            assert!(
                started.elapsed() < deadline / 2,
                "/version waited {:?}",
                started.elapsed()
            );
            fails_within(&setup, "GET", "/v1/ready", limit);
            fails_within(&setup, "PUT", "/v1/key/generate/never-cached", limit);
        }
        std::fs::remove_file(keys.join(".stall")).unwrap();
        let recovered = Instant::now() + Duration::from_secs(10);
        while setup.send("GET", "/v1/ready").0 != 200 {
            assert!(Instant::now() < recovered, "not ready again after the {mode} stall");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let report = no_failures(load, "trapping, hanging and stalling plugin calls");
    // Spinning wasm yields its thread at every epoch tick: no cached request waited
    // for a plugin's deadline.
    assert!(
        report.slowest < deadline / 2,
        "a request waited {:?} while the plugin spun",
        report.slowest
    );
}

/// Fills the file system of `dir` with a file `filler` until it has no room left.
fn fill(dir: &Path) {
    let mut file = std::fs::File::create(dir.join("filler")).unwrap();
    let block = vec![0u8; 4096];
    while std::io::Write::write_all(&mut file, &block).is_ok() {}
}

#[test]
fn a_required_audit_log_that_cannot_be_written_refuses_requests_until_it_can() {
    let _serial = one_at_a_time();
    for mode in ["required", "on"] {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let logs = d.join("logs");
        let fs = Tmpfs::mount(&logs, "256k");
        let creds = server_files(d);
        let config = newest_config(d, &creds, &format!("log:\n  audit: {mode}\nkeys:\n  - name: my-key\n"));
        let (server, url) = start_logging_to(&config, &logs.join("audit.log"), &d.join("stderr.log"), &[]);
        let addr: SocketAddr = url.trim_start_matches("https://").parse().unwrap();
        let connector = load::connector(
            creds.server_cert_der.clone(),
            &creds.admin_cert_pem,
            creds.admin_key_pem.as_str(),
        );
        let generate = || load::send_once(addr, &connector, "PUT", "/v1/key/generate/my-key", b"{}").unwrap();
        assert_eq!(generate().0, 200);

        fill(&logs);
        let mut answers = Vec::new();
        for _ in 0..100 {
            answers.push(generate());
            std::thread::sleep(Duration::from_millis(20));
        }
        let refused = answers.iter().filter(|(status, _)| *status == 503).count();
        if mode == "required" {
            // Once the log's last page is full (a 4 KiB page holds some 17 lines),
            // the next write fails and from then on every request is refused.
            let first = answers.iter().position(|(status, _)| *status == 503);
            assert!(first.is_some_and(|i| i < 40), "{answers:?}");
            let refusal = (503, "{\"message\":\"audit log is not writable\"\n}".to_owned());
            assert!(
                answers[first.unwrap_or(0)..].iter().all(|a| *a == refusal),
                "{answers:?}"
            );
            std::fs::remove_file(logs.join("filler")).unwrap();
            let recovered = Instant::now() + Duration::from_secs(5);
            while generate().0 != 200 {
                assert!(Instant::now() < recovered, "still refused after the log has room again");
                std::thread::sleep(Duration::from_millis(20));
            }
        } else {
            assert_eq!(refused, 0, "log.audit: on serves on: {answers:?}");
        }
        drop(server);
        drop(fs);
    }
}
