//! Helpers shared by the integration tests of the `keyhost` binary.

#![allow(dead_code)] // Each test file uses a different subset.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use keyhost_policy::ApiKey;

/// A running `keyhost server`, killed when dropped.
pub struct Running {
    pub child: Child,
    pub url: String,
    /// The server's standard output after its banner line.
    pub stdout: BufReader<std::process::ChildStdout>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `keyhost server --config CONFIG` on a free port with `env` added; the
/// error is the server's standard error when it does not start.
pub fn start(config: &std::path::Path, env: &[(&str, &str)]) -> Result<Running, String> {
    start_with(&[], config, env)
}

/// [`start`] with extra flags for `keyhost server`.
pub fn start_with(flags: &[&str], config: &std::path::Path, env: &[(&str, &str)]) -> Result<Running, String> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_keyhost"))
        .args(["server", "--addr", "127.0.0.1:0"])
        .args(flags)
        .arg("--config")
        .arg(config)
        .envs(env.iter().copied())
        .env("KEYHOST_LOG", "warn")
        .env("XDG_CACHE_HOME", std::env::temp_dir().join("keyhost-test-cache"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    stdout.read_line(&mut first).unwrap();
    match first.split_whitespace().find(|w| w.starts_with("https://")) {
        Some(url) => Ok(Running {
            url: url.to_owned(),
            child,
            stdout,
        }),
        None => {
            let out = child.wait_with_output().unwrap();
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}

pub fn curl(dir: &std::path::Path, who: &str, args: &str) -> (u16, String) {
    let d = dir.display();
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "curl -sS --cacert {d}/server.cert --cert {d}/{who}.cert --key {d}/{who}.key -w '\\n%{{http_code}}' {args}"
        ))
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.parse().unwrap(), body.to_owned())
}

/// Writes `server.cert` and `server.key` for localhost into `dir`; returns the
/// credentials (with an admin API key).
pub fn server_files(dir: &std::path::Path) -> keyhost_server::dev::DevCredentials {
    let creds = keyhost_server::dev::DevCredentials::generate(&["localhost".into(), "127.0.0.1".into()]).unwrap();
    std::fs::write(dir.join("server.cert"), &creds.server_cert_pem).unwrap();
    std::fs::write(dir.join("server.key"), creds.server_key_pem.as_str()).unwrap();
    creds
}

pub fn write_identity(dir: &std::path::Path, who: &str, key: &ApiKey) {
    let (cert, private) = keyhost_server::dev::client_certificate(key).unwrap();
    std::fs::write(dir.join(format!("{who}.cert")), cert).unwrap();
    std::fs::write(dir.join(format!("{who}.key")), private.as_str()).unwrap();
}

/// Writes `config.yaml` in the newest schema into `dir`: the admin of `creds`, the
/// server files of [`server_files`], then `extra` (top-level YAML).
pub fn newest_config(
    dir: &std::path::Path,
    creds: &keyhost_server::dev::DevCredentials,
    extra: &str,
) -> std::path::PathBuf {
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "version: v1\nadmin:\n  identity: {}\ntls:\n  key: {d}/server.key\n  cert: {d}/server.cert\n{extra}",
            creds.admin.identity(),
            d = dir.display()
        ),
    )
    .unwrap();
    config
}
