//! The `keyhost` binary as the tests run it: a server started on a free port with
//! a configuration file, the files it needs, and curl as its client.

#![expect(clippy::unwrap_used, reason = "Fixtures fail loudly by design")]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use keyhost_policy::ApiKey;

/// The `keyhost` binary that cargo built with the running test:
/// `target/<profile>/keyhost` for a test at `target/<profile>/deps/<test>` (where
/// `CARGO_BIN_EXE_keyhost` points for the keyhost package's tests). No variable
/// overrides it, so a test never runs some other build.
pub fn keyhost_bin() -> PathBuf {
    let test = std::env::current_exe().unwrap();
    let profile_dir = test.parent().and_then(|deps| deps.parent()).unwrap();
    let bin = profile_dir.join("keyhost");
    assert!(
        bin.is_file(),
        "no keyhost binary at {}: run the tests of the keyhost package (cargo test -p keyhost), which build it",
        bin.display()
    );
    bin
}

/// A running `keyhost server`, killed when dropped.
#[derive(Debug)]
pub struct Running {
    /// The server process.
    pub child: Child,
    /// `https://127.0.0.1:PORT`.
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
    // The tests' client certificates are self-signed: a v0.16 file needs
    // `--auth=off` for them, as in MinIO's guide (a newest file ignores it).
    let auth: &[&str] = if flags.iter().any(|f| f.starts_with("--auth")) {
        &[]
    } else {
        &["--auth=off"]
    };
    // A free port, unless the flags name the address.
    let addr: &[&str] = if flags.iter().any(|f| *f == "--addr" || f.starts_with("--addr=")) {
        &[]
    } else {
        &["--addr", "127.0.0.1:0"]
    };
    let mut child = Command::new(keyhost_bin())
        .arg("server")
        .args(addr)
        .args(auth)
        .args(flags)
        .arg("--config")
        .arg(config)
        .envs(env.iter().copied())
        .env("KEYHOST_LOG", "warn")
        .env("XDG_CACHE_HOME", crate::cache_home())
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

/// Runs curl with `args` as `who` (`DIR/WHO.cert`, `DIR/WHO.key`), trusting
/// `DIR/server.cert`; the status and the body.
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
pub fn server_files(dir: &std::path::Path) -> keyhost_tls::mint::DevCredentials {
    let creds = keyhost_tls::mint::DevCredentials::generate(&["localhost".into(), "127.0.0.1".into()]).unwrap();
    std::fs::write(dir.join("server.cert"), &creds.server_cert_pem).unwrap();
    crate::write_private(dir.join("server.key"), creds.server_key_pem.as_str());
    creds
}

/// Writes `WHO.cert` and `WHO.key` for the API key `key` into `dir`.
pub fn write_identity(dir: &std::path::Path, who: &str, key: &ApiKey) {
    let (cert, private) = keyhost_tls::mint::client_certificate(key).unwrap();
    std::fs::write(dir.join(format!("{who}.cert")), cert).unwrap();
    crate::write_private(dir.join(format!("{who}.key")), private.as_str());
}

/// Writes `config.yaml` in the newest schema into `dir`: the admin of `creds`, the
/// server files of [`server_files`], then `extra` (top-level YAML).
pub fn newest_config(
    dir: &std::path::Path,
    creds: &keyhost_tls::mint::DevCredentials,
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

/// A child process, killed when dropped (also when a test fails).
#[derive(Debug)]
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether the tests run as root.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
}

/// Starts `keyhost server --config CONFIG` on a free port with `env` added, its
/// standard output (banner and audit log) and standard error going to files; returns
/// it and its URL once the banner is there.
pub fn start_logging_to(
    config: &std::path::Path,
    stdout: &std::path::Path,
    stderr: &std::path::Path,
    env: &[(&str, &str)],
) -> (KillOnDrop, String) {
    let mut server = KillOnDrop(
        Command::new(keyhost_bin())
            .args(["server", "--addr", "127.0.0.1:0", "--config"])
            .arg(config)
            .env("KEYHOST_LOG", "warn")
            .env("XDG_CACHE_HOME", crate::cache_home())
            .envs(env.iter().copied())
            .stdout(std::fs::File::create(stdout).unwrap())
            .stderr(std::fs::File::create(stderr).unwrap())
            .spawn()
            .unwrap(),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(stdout).unwrap_or_default();
        if let Some(url) = text.split_whitespace().find(|w| w.starts_with("https://")) {
            return (server, url.to_owned());
        }
        let tail = || {
            let text = std::fs::read_to_string(stderr).unwrap_or_default();
            text[text.len().saturating_sub(3000)..].to_owned()
        };
        assert!(server.0.try_wait().unwrap().is_none(), "keyhost exited:\n{}", tail());
        assert!(std::time::Instant::now() < deadline, "no banner:\n{}", tail());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Server files and an admin identity in `dir`, a newest-schema configuration with
/// `extra`, and the server started on it.
pub fn start_as_admin(dir: &std::path::Path, extra: &str) -> (keyhost_tls::mint::DevCredentials, Running) {
    let creds = server_files(dir);
    write_identity(dir, "admin", &creds.admin);
    let config = newest_config(dir, &creds, extra);
    let server = start(&config, &[]).unwrap();
    (creds, server)
}
