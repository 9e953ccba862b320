//! `keyhost server --dev` works as its banner says: the printed commands, run as
//! printed, create a key and generate a data key.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn the_printed_curl_commands_work_as_shown() {
    let mut server = Command::new(env!("CARGO_BIN_EXE_keyhost"))
        .args(["server", "--dev", "--addr", "127.0.0.1:0"])
        .env("KEYHOST_LOG", "warn")
        .env("XDG_CACHE_HOME", std::env::temp_dir().join("keyhost-test-cache"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
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
    let commands: Vec<&str> = banner
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("curl "))
        .collect();
    assert_eq!(commands.len(), 2, "{banner}");
    let mut outputs = Vec::new();
    for command in &commands {
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
        outputs.push(String::from_utf8(out.stdout).unwrap());
    }
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
        .arg(format!("{base} -sS {url}/v1/metrics"))
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
    // Ctrl-C: the server removes its temporary directory.
    Command::new("kill")
        .args(["-INT", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(server.wait().unwrap().success());
}
