//! `keyhost server --dev` works as its banner says: the printed commands, run as
//! printed, create a key and generate a data key.

#![expect(clippy::unwrap_used, reason = "Tests fail loudly by design")]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Starts `keyhost server --dev` with `flags`.
fn dev_server(flags: &[&str]) -> Child {
    dev_server_via(&[], flags)
}

/// Starts `keyhost server --dev` with `flags`, run by the command `wrapper` (such as
/// `prlimit …`) when it is not empty.
fn dev_server_via(wrapper: &[&str], flags: &[&str]) -> Child {
    let mut argv: Vec<&str> = wrapper.to_vec();
    argv.push(env!("CARGO_BIN_EXE_keyhost"));
    argv.extend(["server", "--dev", "--addr", "127.0.0.1:0"]);
    argv.extend(flags);
    Command::new(argv[0])
        .args(&argv[1..])
        .env("KEYHOST_LOG", "warn")
        .env("XDG_CACHE_HOME", keyhost_test_support::cache_home())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Reads the banner up to its last line.
fn banner(server: &mut Child) -> String {
    let stdout = BufReader::new(server.stdout.take().unwrap());
    let mut banner = String::new();
    let start = Instant::now();
    for line in stdout.lines() {
        let line = line.unwrap();
        banner.push_str(&line);
        banner.push('\n');
        if line.starts_with("Stop with Ctrl-C") || start.elapsed() > Duration::from_secs(60) {
            break;
        }
    }
    banner
}

/// Runs the banner's two curl commands as printed; returns their outputs.
fn run_curl_lines(banner: &str) -> Vec<String> {
    let commands: Vec<&str> = banner
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("curl "))
        .collect();
    assert_eq!(commands.len(), 2, "{banner}");
    commands
        .iter()
        .map(|command| {
            let out = Command::new("sh")
                .arg("-c")
                .arg(format!("{command} -sS --fail-with-body"))
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{command}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap()
        })
        .collect()
}

#[test]
fn the_printed_curl_commands_work_as_shown() {
    let mut server = dev_server(&[]);
    let banner = banner(&mut server);
    let outputs = run_curl_lines(&banner);
    let commands: Vec<&str> = banner
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("curl "))
        .collect();
    let dek: serde_json::Value = serde_json::from_str(&outputs[1]).unwrap();
    // The metrics show the plugin behind the keystore.
    let base = commands[0].split(" -X ").next().unwrap();
    let url = commands[0]
        .split_whitespace()
        .last()
        .unwrap()
        .split("/v1/")
        .next()
        .unwrap();
    let metrics = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{base} -sS -H 'Accept: text/plain; version=0.0.4' {url}/v1/metrics"
        ))
        .output()
        .unwrap();
    let metrics = String::from_utf8(metrics.stdout).unwrap();
    assert!(metrics.contains("keyhost_plugin_instances_started 1"), "{metrics}");
    assert!(
        metrics.contains("keyhost_keystore_operations{op=\"create\",result=\"ok\"} 1"),
        "{metrics}"
    );
    assert!(
        dek["plaintext"].is_string() && dek["ciphertext"].is_string(),
        "{}",
        outputs[1]
    );
    assert!(banner.contains("KES_API_KEY=kes:v1:"), "{banner}");
    // The keyhost CLI lines, run as printed with the binary on PATH.
    let cli: Vec<&str> = banner
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("export KES_SERVER") || l.starts_with("keyhost key "))
        .collect();
    assert_eq!(cli.len(), 3, "{banner}");
    let bin_dir = std::path::Path::new(env!("CARGO_BIN_EXE_keyhost")).parent().unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("set -e; {}", cli.join("; ")))
        .env(
            "PATH",
            format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap()),
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{cli:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ciphertext:"), "{out:?}");
    // Ctrl-C: the server removes its temporary directory.
    Command::new("kill")
        .args(["-INT", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(server.wait().unwrap().success());
}

/// Whether this process may lock unlimited memory (`CAP_IPC_LOCK`, bit 14 of the
/// effective capability set).
fn may_lock_memory() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let caps = status.lines().find_map(|l| l.strip_prefix("CapEff:")).unwrap().trim();
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let unlimited = limits
        .lines()
        .any(|l| l.starts_with("Max locked memory") && l.split_whitespace().nth(3) == Some("unlimited"));
    u64::from_str_radix(caps, 16).unwrap() & (1 << 14) != 0 || unlimited
}

/// A figure in kilobytes from `/proc/PID/status` (`VmLck`, `VmRSS`, …).
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find_map(|l| l.strip_prefix(field)).unwrap();
    line.trim().trim_end_matches("kB").trim().parse().unwrap()
}

#[cfg(target_os = "linux")]
#[test]
fn mlock_locks_the_servers_memory_or_says_what_it_needs() {
    let mut server = dev_server(&["--mlock"]);
    if !may_lock_memory() {
        // Without the capability, locking all memory must fail at start-up with a
        // message that says what is missing, rather than later at some allocation.
        let out = server.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("CAP_IPC_LOCK"), "{stderr}");
        return;
    }
    // The plugin instance and the keystore work with every page locked.
    run_curl_lines(&banner(&mut server));
    // Every mapping is locked, but only touched pages are resident: the plugin
    // runtime's gigabytes of reserved address space must not be populated.
    let locked = status_kib(server.id(), "VmLck:");
    let resident = status_kib(server.id(), "VmRSS:");
    assert!(locked > 4 * 1024, "VmLck is {locked} kB");
    assert!(resident < 512 * 1024, "VmRSS is {resident} kB");
    Command::new("kill")
        .args(["-INT", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(server.wait().unwrap().success());
}

/// `keyhost server --dev` without `CAP_IPC_LOCK` (dropped from the bounding set when
/// the test runs as root) and with a `ulimit -l` of 64 KiB.
#[cfg(target_os = "linux")]
fn unprivileged_dev_server(flags: &[&str]) -> Child {
    let limit = ["prlimit", "--memlock=65536:65536"];
    if keyhost_test_support::process::is_root() {
        dev_server_via(&[&["setpriv", "--bounding-set=-ipc_lock"][..], &limit].concat(), flags)
    } else {
        dev_server_via(&limit, flags)
    }
}

/// By default the server locks its memory when it may, and says so when it may
/// not (KES's behaviour); `--mlock` makes locking a condition of starting, and
/// `--no-mlock` neither locks nor warns.
#[cfg(target_os = "linux")]
#[test]
fn memory_is_locked_when_allowed_and_a_warning_says_when_not() {
    // Where the test may lock memory, the default locks it.
    if may_lock_memory() {
        let mut server = dev_server(&[]);
        banner(&mut server);
        assert!(status_kib(server.id(), "VmLck:") > 1024, "locked by default");
        server.kill().unwrap();
        let _ = server.wait();
    }
    // Without the capability and with a small limit: a warning, and it serves.
    let mut server = unprivileged_dev_server(&[]);
    let lines = banner(&mut server);
    assert!(lines.contains("Stop with Ctrl-C"), "{lines}");
    assert_eq!(status_kib(server.id(), "VmLck:"), 0);
    run_curl_lines(&lines);
    server.kill().unwrap();
    let out = server.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("memory is not locked") && stderr.contains("CAP_IPC_LOCK"),
        "{stderr}"
    );
    // --mlock refuses to start there, saying what it needs.
    let out = unprivileged_dev_server(&["--mlock"]).wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("CAP_IPC_LOCK"), "{stderr}");
    // --no-mlock: no lock, no warning.
    let mut server = dev_server(&["--no-mlock"]);
    banner(&mut server);
    assert_eq!(status_kib(server.id(), "VmLck:"), 0);
    server.kill().unwrap();
    let out = server.wait_with_output().unwrap();
    assert!(!String::from_utf8_lossy(&out.stderr).contains("memory is not locked"));
}
