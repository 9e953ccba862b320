//! MinIO's guide "Server-Side Object Encryption with AWS Root KMS", run with Podman
//! as the guide runs KES, with keyhost's image (`scripts/release`) in its place:
//! identities made with `podman run -v`, the server started with
//! `--cap-add=IPC_LOCK -p … --mlock --auth=off` against moto on the host, the key
//! created with `podman exec`, then data keys generated and decrypted from the host
//! with MinIO's `MINIO_KMS_KES_*` files. Then the image on a read-only root file
//! system, and `server --dev` in it.
//!
//! Podman runs containers on this kind of machine as root with `runc` and a
//! `containers.conf` holding `default_ulimits = []`; the test writes that file and
//! points `CONTAINERS_CONF` at it. Where podman cannot run at all (not installed,
//! no root), the test says so on standard error and passes, unless
//! `KEYHOST_REQUIRE_PODMAN=1` (which `scripts/test` sets as root, after
//! `scripts/release` built the image with podman): then that is a failure too.

#![expect(clippy::unwrap_used, reason = "Tests fail loudly by design")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use keyhost_test_support::{ACCESS_KEY, Moto, REGION, SECRET_KEY, free_port};

/// The image `scripts/release` builds, as `podman load` names it.
const IMAGE: &str = concat!("keyhost:", env!("CARGO_PKG_VERSION"));

/// Podman with this test's `containers.conf`.
struct Podman {
    conf: PathBuf,
    _dir: tempfile::TempDir,
}

impl Podman {
    /// Podman, if it can run containers here; `None` (said on standard error) if it
    /// cannot.
    fn find() -> Option<Self> {
        let skip = |why: &str| {
            assert!(
                std::env::var_os("KEYHOST_REQUIRE_PODMAN").is_none_or(|v| v != "1"),
                "podman cannot run here, and KEYHOST_REQUIRE_PODMAN=1: {why}"
            );
            eprintln!("SKIPPED: podman cannot run here: {why}");
            None
        };
        if Command::new("podman").arg("--version").output().is_err() {
            return skip("it is not installed (scripts/test installs Debian's podman as root)");
        }
        if !keyhost_test_support::process::is_root() {
            return skip("rootless podman needs a user namespace set up for this user; the test runs as root");
        }
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("containers.conf");
        // crun cannot set rlimits on this kind of machine; runc without default
        // ulimits can.
        std::fs::write(
            &conf,
            "[containers]\ndefault_ulimits = []\n\n[engine]\nruntime = \"runc\"\n",
        )
        .unwrap();
        let podman = Self { conf, _dir: dir };
        let info = podman.run(&["info", "--format", "{{.Host.OCIRuntime.Name}}"]);
        if !info.status.success() {
            return skip(&String::from_utf8_lossy(&info.stderr));
        }
        Some(podman)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("podman");
        command.env("CONTAINERS_CONF", &self.conf).args(args);
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).stdin(Stdio::null()).output().unwrap()
    }

    /// Runs `args`, which must succeed; their standard output.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "podman {}:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

/// A container removed when dropped.
struct Container<'a> {
    podman: &'a Podman,
    name: String,
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        let _ = self.podman.run(&["rm", "--force", "--time", "0", &self.name]);
    }
}

impl Container<'_> {
    fn logs(&self) -> String {
        let out = self.podman.run(&["logs", &self.name]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }
}

/// Runs curl against `url` with `args`; the status and the body.
fn curl(args: &[&str], url: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-o", "-", "-w", "\n%{http_code}"])
        .args(args)
        .arg(url)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (status.trim().parse().unwrap_or(0), body.to_owned())
}

/// Waits until `ready` says yes; how long that took.
fn wait_until(what: &str, container: &Container<'_>, mut ready: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !ready() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{what}: not ready after 60 s:\n{}",
            container.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    started.elapsed()
}

/// Loads the image from `dist/keyhost-image.tar`, as another machine would, and
/// checks that it is this tree's: its label names this build's commit, its
/// `/keyhost` is `dist/keyhost-linux-amd64` (whose SHA-256 file checks), and it is
/// under 32 MB (30.2 MB on wasmtime 50; 27.1 MB on wasmtime 48).
fn check_image(podman: &Podman) {
    let dist = keyhost_plugin_build::repo_root().join("dist");
    assert!(
        dist.join("keyhost-image.tar").is_file(),
        "there is no dist/keyhost-image.tar: run scripts/release first (scripts/test does)"
    );
    let loaded = podman.ok(&["load", "--input", &dist.join("keyhost-image.tar").display().to_string()]);
    assert!(loaded.contains(&format!("localhost/{IMAGE}")), "{loaded}");
    let out = podman.run(&[
        "image",
        "inspect",
        "--format",
        "{{index .Labels \"org.opencontainers.image.revision\"}}",
        IMAGE,
    ]);
    assert!(
        out.status.success(),
        "there is no image {IMAGE}: run scripts/release first (scripts/test does)\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let revision = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert_ne!(
        revision, "unknown",
        "{IMAGE} does not say which commit it was built from"
    );
    assert_eq!(
        revision,
        env!("KEYHOST_COMMIT"),
        "{IMAGE} was built from another commit: run scripts/release again"
    );
    let check = Command::new("sha256sum")
        .args(["--check", "keyhost-linux-amd64.sha256"])
        .current_dir(&dist)
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));
    let expected = std::fs::read_to_string(dist.join("keyhost-linux-amd64.sha256")).unwrap();
    let root = podman.ok(&["image", "mount", IMAGE]);
    let inside = Command::new("sha256sum")
        .arg(Path::new(root.trim()).join("keyhost"))
        .output()
        .unwrap();
    let _ = podman.run(&["image", "unmount", IMAGE]);
    let inside = String::from_utf8_lossy(&inside.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_owned();
    assert_eq!(
        Some(inside.as_str()),
        expected.split_whitespace().next(),
        "the image's /keyhost is not dist/keyhost-linux-amd64"
    );
    let size: u64 = podman
        .ok(&["image", "inspect", "--format", "{{.Size}}", IMAGE])
        .trim()
        .parse()
        .unwrap();
    assert!(size < 32_000_000, "the image is {size} bytes");
    eprintln!("{IMAGE}: {size} bytes");
}

/// Makes `dir` writable by the image's user (65532), as an operator does before
/// mounting it.
fn give_to_image_user(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::os::unix::fs::chown(dir, Some(65532), Some(65532)).unwrap();
}

#[test]
fn the_guide_procedure_runs_in_podman_with_the_keyhost_image() {
    let Some(podman) = Podman::find() else { return };
    check_image(&podman);
    // The container reaches moto on the host through host.containers.internal,
    // the host's address on podman's network: moto listens on every interface
    // for the test's length (the bridge's address is not known before a
    // container runs).
    let moto = Moto::start_on("0.0.0.0");
    let home = tempfile::tempdir().unwrap();
    let (certs, config) = (home.path().join("kes/certs"), home.path().join("kes/config"));
    give_to_image_user(&certs);
    give_to_image_user(&config);
    let certs_volume = format!("{}:/data/certs", certs.display());
    let config_volume = format!("{}:/data/config", config.display());

    // 1) The version, as the guide checks it.
    let version = podman.ok(&["run", "--rm", IMAGE, "--version"]);
    assert!(
        version.starts_with("keyhost ") && version.contains(env!("KEYHOST_COMMIT")),
        "{version}"
    );

    // 2) and 3) The identities, through `podman run --rm -v`, as the guide writes
    // them (with keyhost's image in place of KES's).
    podman.ok(&[
        "run",
        "--rm",
        "-v",
        &certs_volume,
        IMAGE,
        "tool",
        "identity",
        "new",
        "--server",
        "--key",
        "/data/certs/server.key",
        "--cert",
        "/data/certs/server.cert",
        "--ip",
        "127.0.0.1",
        "--dns",
        "localhost",
    ]);
    podman.ok(&[
        "run",
        "--rm",
        "-v",
        &certs_volume,
        IMAGE,
        "tool",
        "identity",
        "new",
        "--key",
        "/data/certs/minio-kes.key",
        "--cert",
        "/data/certs/minio-kes.cert",
    ]);
    let identity = podman.ok(&[
        "run",
        "--rm",
        "-v",
        &certs_volume,
        IMAGE,
        "tool",
        "identity",
        "of",
        "/data/certs/minio-kes.cert",
    ]);
    let identity = identity.trim();
    assert_eq!(identity.len(), 64, "{identity}");
    // The private keys are the owner's alone.
    for key in ["server.key", "minio-kes.key"] {
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(certs.join(key)).unwrap().permissions());
        assert_eq!(mode & 0o077, 0, "{key} is mode {mode:o}");
    }

    // 4) The guide's configuration file, with moto on the host as the endpoint.
    std::fs::write(
        config.join("server-config.yaml"),
        format!(
            r#"address: 0.0.0.0:7373
root: disabled
tls:
  key:  /data/certs/server.key
  cert: /data/certs/server.cert
policy:
  minio:
    allow:
    - /v1/key/create/*
    - /v1/key/generate/*
    - /v1/key/decrypt/*
    identities:
    - ${{MINIO_IDENTITY_HASH}}
keystore:
  secretsmanager:
    endpoint: http://host.containers.internal:{port}
    region: {REGION}
    kmskey: ""
    credentials:
      accesskey: "${{AWSACCESSKEY}}"
      secretkey: "${{AWSSECRETKEY}}"
"#,
            port = moto.port()
        ),
    )
    .unwrap();

    // 5) The server, as the guide starts it (the variables the configuration
    // names are given with -e, before the image).
    let port = free_port();
    let server = Container {
        podman: &podman,
        name: format!("keyhost-guide-{port}"),
    };
    let publish = format!("127.0.0.1:{port}:7373");
    let (hash, access, secret) = (
        format!("MINIO_IDENTITY_HASH={identity}"),
        format!("AWSACCESSKEY={ACCESS_KEY}"),
        format!("AWSSECRETKEY={SECRET_KEY}"),
    );
    let started = Instant::now();
    podman.ok(&[
        "run",
        "--rm",
        "-idt",
        "--cap-add=IPC_LOCK",
        "--name",
        &server.name,
        "-v",
        &certs_volume,
        "-v",
        &config_volume,
        "-p",
        &publish,
        "-e",
        &hash,
        "-e",
        &access,
        "-e",
        &secret,
        IMAGE,
        "server",
        "--mlock",
        "--config=/data/config/server-config.yaml",
        "--auth=off",
    ]);
    let url = format!("https://127.0.0.1:{port}");
    let c = |f: &str| certs.join(f).display().to_string();
    let minio = [
        "--cacert",
        &c("server.cert"),
        "--cert",
        &c("minio-kes.cert"),
        "--key",
        &c("minio-kes.key"),
    ];
    wait_until("the server in its container", &server, || {
        curl(&minio, &format!("{url}/version")).0 == 200
    });
    let ready = started.elapsed();

    // 6) The key, created inside the container as the guide does (its `podman exec
    // -it … /bin/bash` has no shell to open here: the image has none).
    podman.ok(&[
        "exec",
        "-e",
        "KES_SERVER=https://127.0.0.1:7373",
        "-e",
        "KES_CLIENT_KEY=/data/certs/minio-kes.key",
        "-e",
        "KES_CLIENT_CERT=/data/certs/minio-kes.cert",
        &server.name,
        "/keyhost",
        "key",
        "create",
        "-k",
        "minio-backend-default-key",
    ]);
    let stored = moto.python("print(sm.get_secret_value(SecretId='minio-backend-default-key')['SecretString'])");
    assert!(!stored.trim().is_empty(), "the key is not in Secrets Manager");

    // 7) What MinIO does with MINIO_KMS_KES_ENDPOINT, _CERT_FILE, _KEY_FILE and
    // _CAPATH: generate a data key, then decrypt it.
    let context = "eyJidWNrZXQiOiJteWJ1Y2tldCJ9";
    let mut post = minio.to_vec();
    let body = format!(r#"{{"context":"{context}"}}"#);
    post.extend(["-X", "POST", "-d", &body]);
    let (status, dek) = curl(&post, &format!("{url}/v1/key/generate/minio-backend-default-key"));
    assert_eq!(status, 200, "{dek}\n{}", server.logs());
    let dek: serde_json::Value = serde_json::from_str(&dek).unwrap();
    let body = format!(
        r#"{{"ciphertext":"{}","context":"{context}"}}"#,
        dek["ciphertext"].as_str().unwrap()
    );
    let mut post = minio.to_vec();
    post.extend(["-X", "POST", "-d", &body]);
    let (status, plain) = curl(&post, &format!("{url}/v1/key/decrypt/minio-backend-default-key"));
    assert_eq!(status, 200, "{plain}");
    let plain: serde_json::Value = serde_json::from_str(&plain).unwrap();
    assert_eq!(plain["plaintext"], dek["plaintext"]);
    // The policy allows nothing else.
    let (status, _) = curl(&minio, &format!("{url}/v1/key/list/*"));
    assert_eq!(status, 403);
    // The server locked its memory (--mlock refuses to start otherwise), and runs
    // as the image's user.
    let status = podman.ok(&["exec", &server.name, "/keyhost", "--version"]);
    assert!(status.contains("keyhost"), "{status}");
    let top = podman.ok(&["top", &server.name, "user", "args"]);
    assert!(
        top.lines()
            .skip(1)
            .all(|l| l.trim_start().starts_with("keyhost") || l.trim_start().starts_with("65532")),
        "{top}"
    );
    // The compiled plugin was kept under /data: no fallback to memory.
    assert!(!server.logs().contains("compiled in memory"), "{}", server.logs());
    eprintln!(
        "the guide's server in podman: ready {} ms after `podman run`",
        ready.as_millis()
    );
    drop(server);

    // A read-only root file system, and a cache directory on it: the plugins are
    // compiled in memory instead, and `server --dev` prints how to connect; the
    // printed API key works from the host.
    let port = free_port();
    let dev = Container {
        podman: &podman,
        name: format!("keyhost-dev-{port}"),
    };
    let publish = format!("127.0.0.1:{port}:7373");
    let started = Instant::now();
    podman.ok(&[
        "run",
        "--rm",
        "-d",
        "--read-only",
        "--read-only-tmpfs",
        "-e",
        "XDG_CACHE_HOME=/cache",
        "--name",
        &dev.name,
        "-p",
        &publish,
        IMAGE,
        "server",
        "--dev",
        "--addr",
        "0.0.0.0:7373",
    ]);
    let mut api_key = None;
    wait_until("server --dev on a read-only root", &dev, || {
        api_key = dev
            .logs()
            .lines()
            .find_map(|l| l.trim().strip_prefix("admin API key").map(|k| k.trim().to_owned()));
        api_key.is_some()
    });
    let dev_ready = started.elapsed();
    let api_key = api_key.unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_keyhost"))
        .args(["key", "create", "-k", "from-the-host"])
        .env("KES_SERVER", format!("https://127.0.0.1:{port}"))
        .env("KES_API_KEY", &api_key)
        .env_remove("KES_CLIENT_CERT")
        .env_remove("KES_CLIENT_KEY")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        dev.logs()
    );
    let banner = dev.logs();
    assert!(banner.contains("https://127.0.0.1:7373"), "{banner}");
    assert!(
        banner.contains("plugins are compiled in memory at each start"),
        "{banner}"
    );
    eprintln!(
        "server --dev in podman, read-only root: banner {} ms after `podman run`",
        dev_ready.as_millis()
    );
}
