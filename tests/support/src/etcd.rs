//! A real etcd cluster on loopback: `etcd` from Debian's `etcd-server` (which
//! `scripts/test` installs), one process and data directory per member, on free
//! ports, with short heartbeat and election timeouts so that a killed leader is
//! replaced within a second. [`EtcdCluster::start_tls`] runs it as production
//! clusters run: TLS between members and to clients, and a client certificate
//! required, all issued by a CA minted for the run.

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
    tls: Option<EtcdTls>,
}

/// The PKI of a TLS cluster: one CA, a certificate every member uses as server and
/// as peer (for 127.0.0.1), and a client certificate it accepts.
#[derive(Debug, Clone)]
pub struct EtcdTls {
    /// The CA certificate (PEM).
    pub ca_pem: String,
    /// A client certificate (PEM) issued by the CA.
    pub client_cert_pem: String,
    /// Its private key (PEM).
    pub client_key_pem: String,
    /// A CA certificate (PEM) that etcd does not trust, with a client certificate of
    /// its own: for tests of what etcd refuses.
    pub other_ca_pem: String,
    /// A client certificate (PEM) issued by the other CA.
    pub other_client_cert_pem: String,
    /// Its private key (PEM).
    pub other_client_key_pem: String,
}

impl EtcdTls {
    fn mint() -> (Self, String, String) {
        let ca = |name: &str| {
            let key = rcgen::KeyPair::generate().expect("a CA key");
            let mut params = rcgen::CertificateParams::new(vec![]).expect("CA parameters");
            params.distinguished_name.push(rcgen::DnType::CommonName, name);
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            rcgen::CertifiedIssuer::self_signed(params, key).expect("a CA certificate")
        };
        let leaf = |issuer: &rcgen::CertifiedIssuer<'_, rcgen::KeyPair>, name: &str, server: bool| {
            let key = rcgen::KeyPair::generate().expect("a key");
            let sans = if server {
                vec!["127.0.0.1".to_owned(), "localhost".to_owned()]
            } else {
                vec![]
            };
            let mut params = rcgen::CertificateParams::new(sans).expect("parameters");
            params.distinguished_name.push(rcgen::DnType::CommonName, name);
            params.extended_key_usages = if server {
                vec![
                    rcgen::ExtendedKeyUsagePurpose::ServerAuth,
                    rcgen::ExtendedKeyUsagePurpose::ClientAuth,
                ]
            } else {
                vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth]
            };
            let cert = params.signed_by(&key, issuer).expect("a certificate");
            (cert.pem(), key.serialize_pem())
        };
        let ca_cert = ca("keyhost test etcd CA");
        let other = ca("a CA etcd does not trust");
        let (member_cert, member_key) = leaf(&ca_cert, "etcd member", true);
        let (client_cert_pem, client_key_pem) = leaf(&ca_cert, "keyhost", false);
        let (other_client_cert_pem, other_client_key_pem) = leaf(&other, "stranger", false);
        (
            Self {
                ca_pem: ca_cert.pem(),
                client_cert_pem,
                client_key_pem,
                other_ca_pem: other.pem(),
                other_client_cert_pem,
                other_client_key_pem,
            },
            member_cert,
            member_key,
        )
    }
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
        Self::launch(size, false)
    }

    /// Starts `size` members that speak TLS to each other and to clients and require
    /// a client certificate of [`EtcdCluster::tls`]'s CA.
    pub fn start_tls(size: usize) -> Self {
        Self::launch(size, true)
    }

    /// The cluster's PKI, when it runs TLS.
    pub fn tls(&self) -> Option<&EtcdTls> {
        self.tls.as_ref()
    }

    fn launch(size: usize, tls: bool) -> Self {
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
        let tls = tls.then(|| {
            let (pki, member_cert, member_key) = EtcdTls::mint();
            for (name, pem) in [
                ("ca.pem", &pki.ca_pem),
                ("member.pem", &member_cert),
                ("member.key", &member_key),
            ] {
                std::fs::write(dir.path().join(name), pem).expect("write the etcd PKI");
            }
            pki
        });
        let mut cluster = Self {
            dir,
            token,
            members,
            tls,
        };
        for i in 0..size {
            cluster.spawn(i);
        }
        cluster.wait_for_leader(Duration::from_secs(30));
        cluster
    }

    fn spawn(&mut self, i: usize) {
        let scheme = self.scheme();
        let initial: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("{}={scheme}://127.0.0.1:{}", m.name, m.peer))
            .collect();
        let member = &self.members[i];
        let client = format!("{scheme}://127.0.0.1:{}", member.client);
        let peer = format!("{scheme}://127.0.0.1:{}", member.peer);
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{}.log", member.name)))
            .expect("etcd log");
        let mut command = Command::new(etcd_binary());
        if self.tls.is_some() {
            let file = |name: &str| self.dir.path().join(name);
            command
                .arg("--cert-file")
                .arg(file("member.pem"))
                .arg("--key-file")
                .arg(file("member.key"))
                .arg("--trusted-ca-file")
                .arg(file("ca.pem"))
                .arg("--client-cert-auth")
                .arg("--peer-cert-file")
                .arg(file("member.pem"))
                .arg("--peer-key-file")
                .arg(file("member.key"))
                .arg("--peer-trusted-ca-file")
                .arg(file("ca.pem"))
                .arg("--peer-client-cert-auth");
        }
        let child = command
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
            // With authentication on, a token lapses after 2 s unused (5 min by
            // default), so that tests see clients renew it.
            .args(["--auth-token", "simple", "--auth-token-ttl", "2"])
            .args(["--logger", "zap", "--log-level", "warn"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start etcd");
        self.members[i].child = Some(child);
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// The members' client URLs, in member order.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("{}://127.0.0.1:{}", self.scheme(), m.client))
            .collect()
    }

    /// Kills member `i` at once (SIGKILL: no goodbye to its peers).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes member `i` (SIGSTOP): the kernel still accepts its connections, but
    /// it answers nothing, as a member on a stalled disk or behind a silent
    /// partition. [`EtcdCluster::resume`] thaws it.
    pub fn pause(&self, i: usize) {
        self.signal(i, "-STOP");
    }

    /// Thaws member `i` after [`EtcdCluster::pause`].
    pub fn resume(&self, i: usize) {
        self.signal(i, "-CONT");
    }

    fn signal(&self, i: usize, signal: &str) {
        let child = self.members[i].child.as_ref().expect("the member runs");
        let status = std::process::Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} etcd member {i} failed");
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
                let status = self.post(m.client, "/v3/maintenance/status", "{}")?;
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

    /// Waits until member `i` answers and knows a leader: after [`EtcdCluster::restart`],
    /// before another member may fail without costing the quorum.
    pub fn wait_member(&self, i: usize, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let status = self.post(self.members[i].client, "/v3/maintenance/status", "{}");
            let leader = status
                .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
                .and_then(|v| v["leader"].as_str().map(str::to_owned));
            if leader.is_some_and(|l| l != "0") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "etcd member {i} is not back after {within:?}:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
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
            .find_map(|m| self.post(m.client, path, body))
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

impl EtcdCluster {
    /// POSTs `body` to a member's `path` (over TLS with the client certificate when
    /// the cluster runs TLS); the body of a 200 answer.
    fn post(&self, port: u16, path: &str, body: &str) -> Option<String> {
        let tcp = TcpStream::connect(("127.0.0.1", port)).ok()?;
        tcp.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let request = format!(
            "POST {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let mut answer = Vec::new();
        match &self.tls {
            None => {
                let mut tcp = tcp;
                tcp.write_all(request.as_bytes()).ok()?;
                let _ = tcp.read_to_end(&mut answer);
            }
            Some(pki) => {
                let config = client_config(pki).ok()?;
                let server = rustls::pki_types::ServerName::try_from("127.0.0.1").ok()?;
                let connection = rustls::ClientConnection::new(std::sync::Arc::new(config), server).ok()?;
                let mut stream = rustls::StreamOwned::new(connection, tcp);
                stream.write_all(request.as_bytes()).ok()?;
                // etcd may close without a TLS close_notify: keep what arrived.
                let _ = stream.read_to_end(&mut answer);
            }
        }
        let answer = String::from_utf8_lossy(&answer);
        let (head, body) = answer.split_once("\r\n\r\n")?;
        (head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200")).then(|| body.to_owned())
    }
}

/// A rustls client that trusts the cluster's CA and presents its client certificate.
fn client_config(pki: &EtcdTls) -> Result<rustls::ClientConfig, rustls::Error> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pki.ca_pem.as_bytes()).flatten() {
        roots.add(cert)?;
    }
    let chain: Vec<_> = CertificateDer::pem_slice_iter(pki.client_cert_pem.as_bytes())
        .flatten()
        .collect();
    let key = PrivateKeyDer::from_pem_slice(pki.client_key_pem.as_bytes())
        .map_err(|_| rustls::Error::General("the client key is not PEM".into()))?;
    rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
}
