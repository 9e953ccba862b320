//! Fixtures for keyhost's integration tests, in one place.
//!
//! - [`api`]: a server in the test's own process over real mutual TLS, and HTTP
//!   clients of its identities.
//! - [`process`]: the `keyhost` binary run as a server on a configuration file, the
//!   files it needs, and curl as its client.
//! - [`Moto`]: the AWS emulator moto (PyPI `moto[server]`, version pinned in
//!   `scripts/test-requirements.txt`), installed on first use into a virtual
//!   environment under the target directory and started on a free loopback port.
//! - [`Relay`]: a TCP relay in front of a server that a test can cut and restore,
//!   to simulate an outage without losing the server's state.
//! - [`etcd`]: a real etcd cluster of any size on loopback (Debian's `etcd-server`),
//!   whose members a test can kill and restart.
//! - [`load`]: a raw HTTP/1.1 client over mutual TLS, and background load of
//!   many such clients that checks every answer.

#![warn(missing_docs)]
#![allow(
    clippy::missing_panics_doc,
    reason = "Fixtures panic with a message when the machine lacks something"
)]

pub mod api;
pub mod etcd;
pub mod load;
pub mod process;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Writes a file that holds a secret as keyhost demands of one: mode 0600.
pub fn write_private(path: impl AsRef<std::path::Path>, contents: impl AsRef<[u8]>) {
    use std::os::unix::fs::PermissionsExt;
    let path = path.as_ref();
    std::fs::write(path, contents).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// The `XDG_CACHE_HOME` that tests give the binary: one per machine, shared by
/// every test process and kept between runs, so a plugin is compiled once per
/// change of it rather than once per test.
pub fn cache_home() -> PathBuf {
    std::env::temp_dir().join("keyhost-test-cache")
}

/// Where the binary keeps compiled plugins under [`cache_home`]; tests that load
/// plugins in their own process use it too.
pub fn plugin_cache_dir() -> PathBuf {
    cache_home().join("keyhost").join("plugins")
}

/// The virtual environment that holds moto: `<target dir>/moto-venv`, or
/// `$KEYHOST_MOTO_VENV`.
pub fn moto_venv() -> PathBuf {
    if let Some(dir) = std::env::var_os("KEYHOST_MOTO_VENV") {
        return PathBuf::from(dir);
    }
    keyhost_plugin_build::target_dir()
        .parent()
        .map_or_else(|| PathBuf::from("target"), Path::to_path_buf)
        .join("moto-venv")
}

/// Installs moto into [`moto_venv`] unless it is there already; safe to call from
/// several test processes at once.
pub fn install_moto() -> PathBuf {
    let venv = moto_venv();
    let server = venv.join("bin/moto_server");
    let requirements = keyhost_plugin_build::repo_root().join("scripts/test-requirements.txt");
    let current =
        || server.exists() && std::fs::read(venv.join("requirements.txt")).ok() == std::fs::read(&requirements).ok();
    if current() {
        return venv;
    }
    std::fs::create_dir_all(venv.parent().expect("the venv has a parent")).expect("create the target directory");
    let lock_path = venv.with_extension("lock");
    let lock = std::fs::File::create(&lock_path).expect("create the moto install lock");
    lock.lock().expect("lock the moto install");
    if !current() {
        // Installed for older requirements (or half installed): start again.
        let _ = std::fs::remove_dir_all(&venv);
        run(Command::new("python3").arg("-m").arg("venv").arg(&venv));
        run(Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
            .arg(&requirements));
        // scripts/test compares this copy to decide whether to reinstall.
        std::fs::copy(&requirements, venv.join("requirements.txt")).expect("record the installed requirements");
    }
    drop(lock);
    venv
}

fn run(command: &mut Command) {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e} (moto needs python3 with venv and pip)"));
    assert!(
        out.status.success(),
        "{command:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A free loopback port (bound and released; the caller binds it next).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a loopback port")
        .port()
}

/// A running moto server; stopped when dropped.
#[derive(Debug)]
pub struct Moto {
    child: Child,
    port: u16,
    venv: PathBuf,
}

/// The region every test uses.
pub const REGION: &str = "us-east-1";
/// Credentials moto accepts (it checks none).
pub const ACCESS_KEY: &str = "AKIAKEYHOSTTEST";
/// Credentials moto accepts (it checks none).
pub const SECRET_KEY: &str = "keyhost-test-secret";

impl Moto {
    /// Installs moto if needed and starts it on a free loopback port.
    pub fn start() -> Self {
        Self::start_on("127.0.0.1")
    }

    /// [`Moto::start`], listening on `host` (`0.0.0.0`: every interface, for
    /// clients in containers).
    pub fn start_on(host: &str) -> Self {
        let venv = install_moto();
        // Another process may take the port between our probe and moto's bind:
        // then moto exits, and we try another port.
        for _ in 0..5 {
            let port = free_port();
            let child = Command::new(venv.join("bin/moto_server"))
                .args(["-H", host, "-p", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start moto_server");
            let mut moto = Self {
                child,
                port,
                venv: venv.clone(),
            };
            if moto.wait_ready() {
                return moto;
            }
        }
        panic!("moto did not start on any of 5 ports");
    }

    /// Freezes moto (SIGSTOP): connections are still accepted by the kernel, but no
    /// request is answered, as with a hung service.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Unfreezes moto (SIGCONT) after [`Moto::pause`].
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} moto failed");
    }

    /// Waits until moto answers its own API over HTTP; false if it exited.
    fn wait_ready(&mut self) -> bool {
        use std::io::{Read, Write};
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let request = "GET /moto-api/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
                let mut answer = String::new();
                if stream.write_all(request.as_bytes()).is_ok()
                    && stream.read_to_string(&mut answer).is_ok()
                    && answer.starts_with("HTTP/1.")
                {
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("moto did not answer on port {} within 60 s", self.port);
    }

    /// The port moto listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// moto's URL, e.g. `http://127.0.0.1:43121`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Runs a Python script with boto3 against this moto. The script finds
    /// `sm` (Secrets Manager) and `kms` clients ready; what it prints is returned.
    pub fn python(&self, script: &str) -> String {
        let prelude = format!(
            "import boto3, base64, json\n\
             _kw = dict(endpoint_url='{url}', region_name='{REGION}', aws_access_key_id='{ACCESS_KEY}', aws_secret_access_key='{SECRET_KEY}')\n\
             sm = boto3.client('secretsmanager', **_kw)\n\
             kms = boto3.client('kms', **_kw)\n",
            url = self.url()
        );
        let out = Command::new(self.venv.join("bin/python"))
            .arg("-c")
            .arg(format!("{prelude}{script}"))
            .output()
            .expect("run the venv's python");
        assert!(
            out.status.success(),
            "python failed:\n{script}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 output").trim().to_owned()
    }

    /// Creates a symmetric KMS key and returns its id.
    pub fn create_kms_key(&self) -> String {
        self.python("print(kms.create_key()['KeyMetadata']['KeyId'])")
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Builds the Python plugin in `plugins/python/NAME` (its `app.py`) with
/// componentize-py from the test venv, into `<target dir>/plugins/python/NAME.wasm`;
/// rebuilt only when its source, the WIT contract or the pinned tools change.
pub fn build_python_plugin(name: &str) -> PathBuf {
    let venv = install_moto();
    let root = keyhost_plugin_build::repo_root();
    let source = root.join("plugins/python").join(name);
    let out_dir = keyhost_plugin_build::target_dir().join("python");
    std::fs::create_dir_all(&out_dir).expect("create the Python plugin directory");
    let out = out_dir.join(format!("{name}.wasm"));
    let mut build = Command::new(venv.join("bin/componentize-py"));
    build
        .current_dir(&source)
        .arg("-d")
        .arg(root.join("wit"))
        .args([
            "-w",
            "keyhost:keystore/keystore-plugin-http",
            "componentize",
            "app",
            "-o",
        ])
        .arg(&out);
    let inputs = [
        source.clone(),
        root.join("wit"),
        root.join("scripts/test-requirements.txt"),
    ];
    build_unless_current(&out, &format!("{build:?}"), &inputs, || run(&mut build));
    out
}

/// Builds the JavaScript plugin in `plugins/js/NAME` with componentize-js (npm, from
/// its package-lock.json), into `<target dir>/plugins/js/NAME.wasm`; rebuilt only
/// when its source, its lock file or the WIT contract change.
pub fn build_js_plugin(name: &str) -> PathBuf {
    let root = keyhost_plugin_build::repo_root();
    let source = root.join("plugins/js").join(name);
    let out_dir = keyhost_plugin_build::target_dir().join("js");
    std::fs::create_dir_all(&out_dir).expect("create the JavaScript plugin directory");
    let out = out_dir.join(format!("{name}.wasm"));
    // The tools, as the lock file pins them: installed again when it changes.
    let lock = source.join("package-lock.json");
    let mut install = Command::new("npm");
    install.current_dir(&source).args(["ci", "--no-audit", "--no-fund"]);
    build_unless_current(
        &source.join("node_modules/.keyhost-installed"),
        &format!("{install:?}"),
        std::slice::from_ref(&lock),
        || run(&mut install),
    );
    let mut build = Command::new(source.join("node_modules/.bin/componentize-js"));
    build
        .current_dir(&source)
        .arg("--wit")
        .arg(root.join("wit"))
        .args(["--world-name", "keyhost:keystore/keystore-plugin-http", "-o"])
        .arg(&out)
        .arg(format!("{name}.js"));
    build_unless_current(&out, &format!("{build:?}"), &[source.clone(), root.join("wit")], || {
        run(&mut build);
    });
    out
}

/// Runs `build`, which writes `out`, unless `out` exists and was built by the same
/// `recipe` (the command line) from the same `inputs`: files, or directories read
/// recursively but for `node_modules` and `__pycache__`. The digest of recipe and
/// inputs (paths and contents) is kept in `out` with `.inputs` appended; it is
/// written only after a build succeeds. An `out` that `build` does not write is a
/// stamp of its own (installed tools).
fn build_unless_current(out: &Path, recipe: &str, inputs: &[PathBuf], build: impl FnOnce()) {
    use std::hash::{Hash, Hasher};
    fn walk(path: &Path, hasher: &mut std::hash::DefaultHasher) {
        if path.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
                .map(|e| e.expect("a directory entry").path())
                .filter(|p| !p.ends_with("node_modules") && !p.ends_with("__pycache__"))
                .collect();
            entries.sort();
            for entry in entries {
                walk(&entry, hasher);
            }
        } else {
            path.hash(hasher);
            std::fs::read(path)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
                .hash(hasher);
        }
    }
    let mut hasher = std::hash::DefaultHasher::new();
    recipe.hash(&mut hasher);
    for input in inputs {
        walk(input, &mut hasher);
    }
    let digest = format!("{:016x}\n", hasher.finish());
    let mut stamp = out.as_os_str().to_owned();
    stamp.push(".inputs");
    let stamp = PathBuf::from(stamp);
    if out.exists() && std::fs::read_to_string(&stamp).ok().as_deref() == Some(digest.as_str()) {
        return;
    }
    let _ = std::fs::remove_file(&stamp);
    build();
    if !out.exists() {
        std::fs::write(out, "").expect("write the stamp");
    }
    std::fs::write(&stamp, digest).expect("record the plugin's inputs");
}

/// A service speaking KES's "generic" keystore protocol (`generic_keystore.py`),
/// on a free loopback port; stopped when dropped.
#[derive(Debug)]
pub struct GenericService {
    child: Child,
    port: u16,
}

impl GenericService {
    /// Starts the service.
    pub fn start() -> Self {
        use std::io::{BufRead, BufReader};
        let script = keyhost_plugin_build::repo_root().join("tests/support/generic_keystore.py");
        let port = free_port();
        let mut child = Command::new("python3")
            .arg(script)
            .arg(port.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the generic keystore service");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped stdout"))
            .read_line(&mut line)
            .expect("read the service's first line");
        assert_eq!(line.trim(), "ready", "the generic keystore service did not start");
        Self { child, port }
    }

    /// The service's URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for GenericService {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP relay from a loopback port to a target that can be cut (every connection
/// closed, new ones closed at once) and restored. The relay holds its port while cut,
/// so that no other test's server can take it meanwhile.
#[derive(Debug)]
pub struct Relay {
    listener: Arc<tokio::net::TcpListener>,
    target: SocketAddr,
    /// Whether it relays now, and the task that accepts.
    state: Mutex<Option<(bool, tokio::task::JoinHandle<()>)>>,
    runtime: tokio::runtime::Runtime,
}

impl Relay {
    /// Starts a relay to `target` on a free loopback port.
    pub fn start(target: SocketAddr) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("relay runtime");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(("127.0.0.1", 0)))
            .expect("relay bind");
        let relay = Self {
            listener: Arc::new(listener),
            target,
            state: Mutex::new(None),
            runtime,
        };
        relay.restore();
        relay
    }

    /// The relay's URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!(
            "http://127.0.0.1:{}",
            self.listener.local_addr().expect("relay address").port()
        )
    }

    /// Closes every connection, and each new one at once, until [`Relay::restore`].
    pub fn cut(&self) {
        self.switch(false);
    }

    /// Relays connections again.
    pub fn restore(&self) {
        self.switch(true);
    }

    fn switch(&self, relaying: bool) {
        let mut state = self.state.lock().expect("relay state");
        if let Some((now, task)) = state.take() {
            if now == relaying {
                *state = Some((now, task));
                return;
            }
            task.abort();
            // The accepting task is gone before the call returns; its relayed
            // connections are aborted with it (their sockets close as the relay's
            // runtime drops them, at once).
            let _ = self.runtime.block_on(task);
        }
        let listener = self.listener.clone();
        let target = self.target;
        let task = if relaying {
            self.runtime.spawn(async move {
                let mut connections = tokio::task::JoinSet::new();
                loop {
                    let Ok((mut inbound, _)) = listener.accept().await else {
                        // Out of descriptors, say: try again rather than leave the
                        // port bound and unanswered.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    };
                    while connections.try_join_next().is_some() {}
                    connections.spawn(async move {
                        if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                            // A relay forwards what arrives as it arrives: without
                            // TCP_NODELAY, each second small write would wait for an ACK.
                            let _ = inbound.set_nodelay(true);
                            let _ = outbound.set_nodelay(true);
                            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                }
                // Aborting this task drops `connections`, which aborts every relayed
                // connection.
            })
        } else {
            self.runtime.spawn(async move {
                loop {
                    match listener.accept().await {
                        // Closed at once: the client's request fails without an answer.
                        Ok((inbound, _)) => drop(inbound),
                        Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                    }
                }
            })
        };
        *state = Some((relaying, task));
    }
}
