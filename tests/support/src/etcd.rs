//! A real etcd cluster on loopback: `etcd` from Debian's `etcd-server` (which
//! `scripts/test` installs), one process and data directory per member, on free
//! ports, with short heartbeat and election timeouts so that a killed leader is
//! replaced within a second.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;

/// A running etcd cluster; every member is killed when it is dropped.
#[derive(Debug)]
pub struct EtcdCluster {
    dir: tempfile::TempDir,
    token: String,
    members: Vec<Member>,
}

#[derive(Debug)]
struct Member {
    name: String,
    client: u16,
    peer: u16,
    child: Option<Child>,
}

/// The etcd binary: `$KEYHOST_ETCD`, or `etcd` on `PATH`.
fn etcd_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("KEYHOST_ETCD") {
        return PathBuf::from(path);
    }
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("etcd"))
            .find(|candidate| candidate.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "etcd is not installed: scripts/test installs Debian's etcd-server \
             (apt-get install etcd-server), or set KEYHOST_ETCD to an etcd 3.4+ binary"
        )
    })
}

impl EtcdCluster {
    /// Starts `size` members and waits until the cluster has a leader.
    pub fn start(size: usize) -> Self {
        // In memory where the machine has it: every write is fsynced by a quorum,
        // which on a disk costs tests minutes and proves nothing more.
        let shm = std::path::Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            tempfile::tempdir_in(shm)
        } else {
            tempfile::tempdir()
        }
        .expect("a directory for etcd");
        let members: Vec<Member> = (0..size)
            .map(|i| Member {
                name: format!("m{i}"),
                client: free_port(),
                peer: free_port(),
                child: None,
            })
            .collect();
        let token = format!(
            "keyhost-test-{}",
            dir.path()
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        );
        let mut cluster = Self { dir, token, members };
        for i in 0..size {
            cluster.spawn(i);
        }
        cluster.wait_for_leader(Duration::from_secs(30));
        cluster
    }

    fn spawn(&mut self, i: usize) {
        let initial: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer))
            .collect();
        let member = &self.members[i];
        let client = format!("http://127.0.0.1:{}", member.client);
        let peer = format!("http://127.0.0.1:{}", member.peer);
        let log = std::fs::File::create(self.dir.path().join(format!("{}.log", member.name))).expect("etcd log");
        let child = Command::new(etcd_binary())
            .arg("--name")
            .arg(&member.name)
            .arg("--data-dir")
            .arg(self.dir.path().join(&member.name))
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &initial.join(",")])
            .args(["--initial-cluster-token", &self.token])
            .args(["--initial-cluster-state", "new"])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--logger", "zap", "--log-level", "warn"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start etcd");
        self.members[i].child = Some(child);
    }

    /// The members' client URLs, in member order.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("http://127.0.0.1:{}", m.client))
            .collect()
    }

    /// Kills member `i` at once (SIGKILL: no goodbye to its peers).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts member `i` again on its data directory and ports.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i);
    }

    /// The index of the member that is the leader now, if a running member knows one.
    pub fn leader(&self) -> Option<usize> {
        let ids: Vec<Option<String>> = self
            .members
            .iter()
            .map(|m| {
                m.child.as_ref()?;
                let status = post(m.client, "/v3/maintenance/status", "{}")?;
                let value: serde_json::Value = serde_json::from_str(&status).ok()?;
                Some(format!(
                    "{}/{}",
                    value["header"]["member_id"].as_str()?,
                    value["leader"].as_str()?
                ))
            })
            .collect();
        let leader_id = ids.iter().flatten().find_map(|s| {
            let (_, leader) = s.split_once('/')?;
            (leader != "0").then(|| leader.to_owned())
        })?;
        ids.iter()
            .position(|s| s.as_deref().and_then(|s| s.split_once('/')).map(|(id, _)| id) == Some(leader_id.as_str()))
    }

    /// Waits until a running member reports a leader that is itself running.
    pub fn wait_for_leader(&self, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        loop {
            if let Some(leader) = self.leader() {
                return leader;
            }
            assert!(
                Instant::now() < deadline,
                "the etcd cluster has no leader after {within:?}:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The end of each member's log, for failure messages (the directory goes
    /// with the cluster).
    pub fn logs(&self) -> String {
        self.members
            .iter()
            .map(|m| {
                let log = std::fs::read_to_string(self.dir.path().join(format!("{}.log", m.name))).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(10).collect();
                format!(
                    "--- etcd {}:\n{}",
                    m.name,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Sends a v3 gateway request to the first running member and returns its answer,
    /// for tests that set etcd up (users, roles, auth) or look at what is stored.
    pub fn request(&self, path: &str, body: &str) -> String {
        self.members
            .iter()
            .filter(|m| m.child.is_some())
            .find_map(|m| post(m.client, path, body))
            .unwrap_or_else(|| panic!("no etcd member answered {path}"))
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

/// POSTs `body` to `http://127.0.0.1:port{path}`; the body of a 200 answer.
fn post(port: u16, path: &str, body: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "POST {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.0 200")
        .then(|| body.to_owned())
        .or_else(|| head.starts_with("HTTP/1.1 200").then(|| body.to_owned()))
}
