//! Fair shares, played as attacks over real mutual TLS: no one client, known or
//! not, takes a resource the server shares whole (connection slots, handshake
//! slots, request-body memory, requests in flight, the keystore behind readiness
//! probes), and the admin keeps a reserve of each.

#![expect(clippy::unwrap_used, reason = "Tests fail loudly by design")]

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use keyhost_keystore::{Keystore, MemStore, Page, Record, Status};
use keyhost_policy::{ApiKey, PatternSyntax, Policy};
use keyhost_server::RouteOverride;
use keyhost_test_support::api::{Server, start, start_with};
use keyhost_tls::mint::client_certificate;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type Conn = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn pem_of(key: &ApiKey) -> (String, String) {
    let (cert, private) = client_certificate(key).unwrap();
    (cert, private.to_string())
}

/// A connection from `from` that has been served `/version` and is kept open, or
/// `None` when the server closed it (before, during or after the handshake).
async fn kept_open(s: &Server, from: IpAddr, who: &(String, String)) -> Option<Conn> {
    let mut conn = s
        .try_tls_from(from, &[b"http/1.1"], Some((&who.0, &who.1)))
        .await
        .ok()?;
    conn.write_all(b"GET /version HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .ok()?;
    let mut buf = [0u8; 512];
    match tokio::time::timeout(Duration::from_secs(2), conn.read(&mut buf)).await {
        Ok(Ok(n)) if n > 0 && buf.starts_with(b"HTTP/1.1 200") => Some(conn),
        _ => None,
    }
}

/// One address, with any self-signed certificate, opens connection after
/// connection and keeps each alive with `GET /version`; then identities without a
/// policy (anyone can make one) come from many addresses and networks. Identities
/// without a policy keep to their share together, one network to a quarter of it,
/// and a client with a policy and the admin are served, from the same address too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_or_identities_without_a_policy_cannot_take_every_connection() {
    let s = start(|state| {
        state.limits.max_connections = 32;
        state.limits.admin_reserve = 2;
        state.limits.per_address = 8;
        state.limits.unknown = 12;
        state.limits.header_timeout = Duration::from_secs(30);
        state.limits.idle_timeout = Duration::from_secs(30);
    })
    .await;
    let stranger = pem_of(&ApiKey::from_seed([9; 32]));
    let mut kept = Vec::new();
    for _ in 0..40 {
        kept.extend(kept_open(&s, ip("127.0.0.1"), &stranger).await);
    }
    assert_eq!(
        kept.len(),
        3,
        "one address keeps a quarter of the 12 of identities without a policy"
    );
    let other_address = pem_of(&ApiKey::from_seed([8; 32]));
    assert!(
        kept_open(&s, ip("127.0.0.5"), &other_address).await.is_none(),
        "another address of the same network gets no more"
    );
    for i in 2..10 {
        let from = ip(&format!("127.0.{i}.2"));
        for seed in 0..4u8 {
            let other = pem_of(&ApiKey::from_seed([100 + i * 4 + seed; 32]));
            kept.extend(kept_open(&s, from, &other).await);
        }
    }
    assert_eq!(
        still_open(&mut kept).await,
        12,
        "identities without a policy keep their share of 12, together"
    );
    let app = pem_of(&s.app);
    assert!(
        kept_open(&s, ip("127.0.0.30"), &app).await.is_some(),
        "a client with a policy is served"
    );
    let mut apps = Vec::new();
    for _ in 0..10 {
        apps.extend(kept_open(&s, ip("127.0.0.1"), &app).await);
    }
    // The newcomers took some of its strangers' connections (see the next test).
    let strangers_there = kept
        .iter()
        .filter(|c| c.get_ref().0.local_addr().unwrap().ip() == ip("127.0.0.1"))
        .count();
    assert!((1..=3).contains(&strangers_there), "{strangers_there}");
    assert_eq!(
        apps.len(),
        8 - strangers_there,
        "the address keeps its share of 8, some held by the strangers"
    );
    let admin = (s.creds.admin_cert_pem.clone(), s.creds.admin_key_pem.to_string());
    assert!(
        kept_open(&s, ip("127.0.0.1"), &admin).await.is_some(),
        "the admin is served, from the full address too"
    );
    drop(kept);
}

/// How many of `conns` the server has not closed (those it closed are dropped).
async fn still_open(conns: &mut Vec<Conn>) -> usize {
    let mut open = Vec::new();
    for mut conn in conns.drain(..) {
        let mut byte = [0u8; 1];
        if tokio::time::timeout(Duration::from_millis(100), conn.read(&mut byte))
            .await
            .is_err()
        {
            open.push(conn);
        }
    }
    *conns = open;
    conns.len()
}

/// A socket from `from` that says nothing; whether the server closed it at once.
async fn silent(s: &Server, from: IpAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind((from, 0).into()).unwrap();
    socket.connect(s.addr).await.unwrap()
}

async fn closed(sockets: &mut [tokio::net::TcpStream]) -> usize {
    let mut closed = 0;
    for socket in sockets {
        let mut byte = [0u8; 1];
        if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_millis(100), socket.read(&mut byte)).await {
            closed += 1;
        }
    }
    closed
}

/// Silent sockets from a handful of addresses of one network take no more than the
/// network's share of handshake slots; spread over several networks, they share
/// the slots evenly and a newcomer network still gets one (the network holding the
/// most gives one back), and the networks the operator names as the admin's keep a
/// reserve.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_sockets_from_a_handful_of_addresses_leave_room_and_the_admin_a_reserve() {
    let s = start(|state| {
        state.limits.handshakes = 32;
        state.limits.handshakes_per_ip = 8;
        state.limits.handshakes_per_network = 16;
        state.limits.admin_reserve = 4;
        state.limits.admin_networks = vec![keyhost_server::shares::Network::parse("127.0.9.0/24").unwrap()].into();
        state.limits.handshake_timeout = Duration::from_secs(30);
    })
    .await;
    let admin = (s.creds.admin_cert_pem.clone(), s.creds.admin_key_pem.to_string());
    let mut sockets = Vec::new();
    for i in 2..10 {
        for _ in 0..8 {
            sockets.push(silent(&s, ip(&format!("127.0.0.{i}"))).await);
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        closed(&mut sockets).await,
        64 - 16,
        "one network keeps its share of 16 handshakes"
    );
    assert!(
        kept_open(&s, ip("127.0.1.2"), &admin).await.is_some(),
        "a client of another network shakes hands at once"
    );
    // Four more networks, 16 sockets each: the 32 slots end up shared evenly by
    // the five networks, each newcomer having asked the biggest for a slot back.
    let mut more = Vec::new();
    for net in 2..6 {
        for host in 2..4 {
            for _ in 0..8 {
                more.push(silent(&s, ip(&format!("127.0.{net}.{host}"))).await);
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    sockets.append(&mut more);
    let mut by_network = std::collections::BTreeMap::new();
    for socket in &mut sockets {
        let mut byte = [0u8; 1];
        let open = tokio::time::timeout(Duration::from_millis(20), socket.read(&mut byte))
            .await
            .is_err();
        let network = socket.local_addr().unwrap().ip().to_string();
        let network = network.rsplit_once('.').unwrap().0.to_owned();
        *by_network.entry(network).or_insert(0usize) += usize::from(open);
    }
    let held: usize = by_network.values().sum();
    assert_eq!(held, 32, "the total of 32 is taken: {by_network:?}");
    let (least, most) = (by_network.values().min().unwrap(), by_network.values().max().unwrap());
    assert!(most - least <= 1, "the networks share the slots evenly: {by_network:?}");
    // A client of a sixth network still shakes hands, and so does the admin's.
    let app = pem_of(&s.app);
    assert!(
        kept_open(&s, ip("127.0.8.2"), &app).await.is_some(),
        "a newcomer network shakes hands although every slot was taken"
    );
    assert!(
        kept_open(&s, ip("127.0.9.2"), &admin).await.is_some(),
        "the admin's network has its reserve"
    );
    drop(sockets);
}

fn policy(allow: &[&str]) -> Policy {
    Policy::parse(allow, &[], PatternSyntax::Prefix).unwrap()
}

/// An identity allowed one encrypt route sends large bodies slowly on many
/// connections. It holds at most its share of the memory bodies are read into:
/// the admin and another client, sending bodies meanwhile, are served, not told
/// that the server is busy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_identity_cannot_fill_the_memory_request_bodies_are_read_into() {
    let hog = ApiKey::from_seed([11; 32]);
    let hog_id = hog.identity();
    let s = start_with(
        move |app| {
            vec![
                (
                    "app",
                    policy(&["/v1/key/encrypt/app-*", "/v1/key/generate/app-*"]),
                    vec![app.identity()],
                ),
                ("hog", policy(&["/v1/key/encrypt/k"]), vec![hog_id]),
            ]
        },
        |state| {
            state.limits.body_timeout = Duration::from_secs(30);
            state.limits.header_timeout = Duration::from_secs(30);
            state.limits.idle_timeout = Duration::from_secs(60);
        },
    )
    .await;
    for name in ["k", "app-k"] {
        assert_eq!(
            s.call(&s.admin(), "POST", &format!("/v1/key/create/{name}"), None)
                .await
                .0,
            200
        );
    }
    let hog_pem = pem_of(&hog);
    let mut hogs = Vec::new();
    for _ in 0..80 {
        let mut conn = s.tls(&[b"http/1.1"], Some((&hog_pem.0, &hog_pem.1))).await;
        hogs.push(tokio::spawn(async move {
            let head = "PUT /v1/key/encrypt/k HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1048576\r\n\r\n";
            let _ = conn.write_all(head.as_bytes()).await;
            let _ = conn.write_all(&vec![b' '; 1_000_000]).await;
            // Never the rest: the body stalls, holding what was read.
            tokio::time::sleep(Duration::from_secs(60)).await;
            drop(conn);
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let body = serde_json::json!({ "plaintext": "aGVsbG8=" });
    let (status, answer) = s.call(&s.admin(), "PUT", "/v1/key/encrypt/k", Some(body.clone())).await;
    assert_eq!(status, 200, "the admin: {answer}");
    let (status, answer) = s.call(&s.app(), "PUT", "/v1/key/encrypt/app-k", Some(body)).await;
    assert_eq!(status, 200, "another client: {answer}");
    for hog in hogs {
        hog.abort();
    }
}

/// A keystore like a plugin's instance pool: `slots` calls at a time; key reads
/// beyond them are refused at once, status calls wait for a slot; every call waits
/// until the test lets it go. Status calls are counted.
#[derive(Debug)]
struct Gated {
    inner: MemStore,
    slots: tokio::sync::Semaphore,
    release: tokio::sync::Semaphore,
    status_calls: AtomicUsize,
}

impl Gated {
    fn new(slots: usize) -> Arc<Self> {
        Arc::new(Self {
            inner: MemStore::new(),
            slots: tokio::sync::Semaphore::new(slots),
            release: tokio::sync::Semaphore::new(0),
            status_calls: AtomicUsize::new(0),
        })
    }

    async fn gate(&self) -> keyhost_keystore::Result<tokio::sync::SemaphorePermit<'_>> {
        let slot = self
            .slots
            .try_acquire()
            .map_err(|_| keyhost_keystore::Error::Unavailable("every instance is busy".into()))?;
        self.release.acquire().await.unwrap().forget();
        Ok(slot)
    }

    fn open(&self) {
        self.release.add_permits(1 << 20);
    }
}

#[async_trait]
impl Keystore for Gated {
    async fn create(&self, name: &str, value: &[u8]) -> keyhost_keystore::Result<()> {
        self.inner.create(name, value).await
    }
    async fn get(&self, name: &str) -> keyhost_keystore::Result<Record> {
        let _slot = self.gate().await?;
        self.inner.get(name).await
    }
    async fn delete(&self, name: &str) -> keyhost_keystore::Result<()> {
        self.inner.delete(name).await
    }
    async fn list(&self, prefix: &str, after: Option<&str>, limit: u32) -> keyhost_keystore::Result<Page> {
        self.inner.list(prefix, after, limit).await
    }
    async fn status(&self) -> keyhost_keystore::Result<Status> {
        // A status call waits for a slot, as a plugin's does in the instance queue.
        self.status_calls.fetch_add(1, Ordering::SeqCst);
        let _slot = self.slots.acquire().await.unwrap();
        self.release.acquire().await.unwrap().forget();
        self.inner.status().await
    }
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..500 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what}");
}

/// `/v1/ready`, served without authentication as the shipped Kubernetes manifest
/// serves it, is flooded while every keystore slot is busy with key reads. The
/// probes are answered from the last known status at once, and the flood makes no
/// keystore call of its own beyond one refresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_probes_answer_from_the_last_status_and_never_queue() {
    let gated = Gated::new(2);
    let keystore = gated.clone();
    let s = start(move |state| {
        state.keystore = keystore;
        state.overrides.insert(
            "/v1/ready".into(),
            RouteOverride {
                skip_auth: true,
                timeout: None,
            },
        );
    })
    .await;
    // Over HTTP/2: 25 connections of 8 streams each, so that all 200 probes of
    // the flood below are under way at once.
    let stranger = pem_of(&ApiKey::from_seed([12; 32]));
    let probers: Vec<_> = (0..25).map(|_| s.client_h2(Some((&stranger.0, &stranger.1)))).collect();
    let prober = probers[0].clone();
    // The first probe waits for the first status.
    let first = {
        let (prober, url) = (prober.clone(), s.url.clone());
        tokio::spawn(async move { prober.get(format!("{url}/v1/ready")).send().await.unwrap().status() })
    };
    wait_until("the first status call", || {
        gated.status_calls.load(Ordering::SeqCst) == 1
    })
    .await;
    gated.release.add_permits(1);
    // It waits at most a second; on a busy machine the status may come after that,
    // and the next probe then finds it.
    if first.await.unwrap() != 200 {
        let ready = prober.get(format!("{}/v1/ready", s.url)).send().await.unwrap().status();
        assert_eq!(ready, 200, "the first status was not kept");
    }
    assert_eq!(gated.status_calls.load(Ordering::SeqCst), 1);
    // Every slot is taken by key reads that do not end.
    let app = s.app();
    let mut reads = Vec::new();
    for name in ["app-a", "app-b"] {
        let (app, url) = (app.clone(), s.url.clone());
        reads.push(tokio::spawn(async move {
            app.get(format!("{url}/v1/key/describe/{name}"))
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    wait_until("the reads to take every slot", || gated.slots.available_permits() == 0).await;
    let mut probes = Vec::new();
    for i in 0..200 {
        let (prober, url) = (probers[i % probers.len()].clone(), s.url.clone());
        probes.push(tokio::spawn(async move {
            prober.get(format!("{url}/v1/ready")).send().await.unwrap().status()
        }));
    }
    for probe in probes {
        assert_eq!(probe.await.unwrap(), 200, "a probe waited behind key reads");
    }
    let calls = gated.status_calls.load(Ordering::SeqCst);
    assert!(calls <= 2, "{calls} status calls for 201 probes");
    gated.open();
    for read in reads {
        assert_eq!(read.await.unwrap(), 404);
    }
}

/// An identity allowed to describe keys asks for many keys at once while the
/// keystore serves few calls at a time (a plugin's instances). It holds at most its
/// share of requests in flight, so another client's read still finds a slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_identity_cannot_hold_every_request_in_flight() {
    let gated = Gated::new(8);
    let keystore = gated.clone();
    let hog = ApiKey::from_seed([13; 32]);
    let hog_id = hog.identity();
    let s = start_with(
        move |app| {
            vec![
                ("app", policy(&["/v1/key/describe/*"]), vec![app.identity()]),
                ("hog", policy(&["/v1/key/describe/*"]), vec![hog_id]),
            ]
        },
        move |state| {
            state.keystore = keystore;
            state.limits.requests_per_identity = 4;
        },
    )
    .await;
    let hog_pem = pem_of(&hog);
    let hog = s.client_for(Some((&hog_pem.0, &hog_pem.1)));
    let mut floods = Vec::new();
    for i in 0..20 {
        let (hog, url) = (hog.clone(), s.url.clone());
        floods.push(tokio::spawn(async move {
            hog.get(format!("{url}/v1/key/describe/hog-{i}"))
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    wait_until("the hog's share of requests to hold slots", || {
        gated.slots.available_permits() == 4
    })
    .await;
    let read = {
        let (app, url) = (s.app(), s.url.clone());
        tokio::spawn(async move {
            app.get(format!("{url}/v1/key/describe/mine"))
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    wait_until("the other client's read to find a slot", || {
        gated.slots.available_permits() == 3
    })
    .await;
    gated.open();
    assert_eq!(read.await.unwrap(), 404, "served: the key does not exist");
    let mut refused = 0;
    for flood in floods {
        match flood.await.unwrap().as_u16() {
            404 => {}
            503 => refused += 1,
            other => panic!("{other}"),
        }
    }
    assert_eq!(refused, 16, "past its share of 4, the identity's requests are refused");
}

/// One identity opens 40 requests at once on one HTTP/2 connection, each waiting
/// in the keystore: the connection has at most `H2_STREAMS` under way, the others
/// wait in the client (a connection's streams are served in one task, so its
/// streams are what one connection can put ahead of another client's request).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_http2_connection_has_a_bounded_number_of_requests_under_way() {
    let gated = Gated::new(1000);
    let keystore = gated.clone();
    let s = start(move |state| state.keystore = keystore).await;
    let app = pem_of(&s.app);
    let client = s.client_h2(Some((&app.0, &app.1)));
    let requests: Vec<_> = (0..40)
        .map(|i| {
            let request = client.get(format!("{}/v1/key/describe/waiting-{i}", s.url));
            tokio::spawn(async move { request.send().await.map(|r| r.status().as_u16()) })
        })
        .collect();
    let under_way = || 1000 - gated.slots.available_permits();
    wait_until("the first requests reach the keystore", || {
        under_way() >= keyhost_server::H2_STREAMS as usize
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        under_way(),
        keyhost_server::H2_STREAMS as usize,
        "requests under way on one HTTP/2 connection"
    );
    gated.open();
    for request in requests {
        assert_eq!(request.await.unwrap().unwrap(), 404);
    }
}

/// Four networks fill the pool of clients without a known identity (a quarter
/// each) and keep their connections alive. A newcomer of that pool from a fifth
/// network (a prober, which has no certificate or one without a policy) is still
/// served: a network holding the most gives a connection back, and only one. More
/// addresses of the newcomer's network (as many as an IPv6 network has) get nothing
/// more: the network now holds one less than the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_few_networks_cannot_fill_the_pool_of_unknown_clients_against_a_newcomer() {
    let s = start(|state| {
        state.limits.unknown = 8;
        state.limits.header_timeout = Duration::from_secs(30);
        state.limits.idle_timeout = Duration::from_secs(30);
    })
    .await;
    let mut kept = Vec::new();
    for i in 1..=4u8 {
        let stranger = pem_of(&ApiKey::from_seed([40 + i; 32]));
        for host in 1..=3u8 {
            kept.extend(kept_open(&s, ip(&format!("127.0.{}.{host}", 4 + i)), &stranger).await);
        }
    }
    assert_eq!(kept.len(), 8, "four networks, two each, fill the pool of 8");
    let prober = pem_of(&ApiKey::from_seed([50; 32]));
    let probe = kept_open(&s, ip("127.0.10.1"), &prober).await;
    assert!(probe.is_some(), "a newcomer was refused");
    assert_eq!(
        still_open(&mut kept).await,
        7,
        "one connection of a biggest network was given back"
    );
    let mut more = Vec::new();
    for host in 2..=20u8 {
        more.extend(kept_open(&s, ip(&format!("127.0.10.{host}")), &prober).await);
    }
    assert!(
        more.is_empty(),
        "more addresses of the newcomer's network took {}",
        more.len()
    );
    assert_eq!(still_open(&mut kept).await, 7, "and took nothing from the others");
    // The network that gave one back cannot take it again from the newcomer,
    // who now holds one less than it.
    let again = pem_of(&ApiKey::from_seed([41; 32]));
    let mut back = 0;
    for i in 1..=4u8 {
        back += usize::from(kept_open(&s, ip(&format!("127.0.{}.9", 4 + i)), &again).await.is_some());
    }
    assert_eq!(
        back, 0,
        "the networks took connections back from the newcomer or each other"
    );
}

/// A keystore whose reads of names starting with `busy-` cost 2 ms of CPU each,
/// as a busy server's work does, and are counted.
#[derive(Debug, Default)]
struct Busy {
    inner: MemStore,
    reads: AtomicUsize,
}

#[async_trait]
impl Keystore for Busy {
    async fn create(&self, name: &str, value: &[u8]) -> keyhost_keystore::Result<()> {
        self.inner.create(name, value).await
    }
    async fn get(&self, name: &str) -> keyhost_keystore::Result<Record> {
        if name.starts_with("busy-") {
            let start = std::time::Instant::now();
            while start.elapsed() < Duration::from_millis(2) {
                std::hint::spin_loop();
            }
            self.reads.fetch_add(1, Ordering::SeqCst);
        }
        self.inner.get(name).await
    }
    async fn delete(&self, name: &str) -> keyhost_keystore::Result<()> {
        self.inner.delete(name).await
    }
    async fn list(&self, prefix: &str, after: Option<&str>, limit: u32) -> keyhost_keystore::Result<Page> {
        self.inner.list(prefix, after, limit).await
    }
    async fn status(&self) -> keyhost_keystore::Result<Status> {
        self.inner.status().await
    }
}

/// One identity writes 100 requests ahead of their answers on one HTTP/1.1
/// connection, each costing the server 2 ms of CPU; another client then sends
/// one. hyper serves the requests it has read one after the other within one
/// turn of the connection's task (up to 16 at a time), which the other client's
/// request would wait for; the server starts one request per turn, so it waits
/// for one per step of its own.
///
/// One thread, and the runtime looks for ready I/O before every task, so that the
/// order in which the server runs its work is all that decides.
#[test]
fn requests_written_ahead_on_one_connection_run_one_per_turn() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .event_interval(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let busy = Arc::new(Busy::default());
        let keystore = busy.clone();
        let hog = ApiKey::from_seed([31; 32]);
        let hog_id = hog.identity();
        let s = start_with(
            move |app| {
                vec![
                    ("app", policy(&["/v1/key/describe/app-*"]), vec![app.identity()]),
                    ("hog", policy(&["/v1/key/describe/busy-*"]), vec![hog_id]),
                ]
            },
            move |state| state.keystore = keystore,
        )
        .await;
        assert_eq!(s.call(&s.admin(), "POST", "/v1/key/create/app-k", None).await.0, 200);
        let app = pem_of(&s.app);
        let client = s.client_for(Some((&app.0, &app.1)));
        let describe = || {
            let request = client.get(format!("{}/v1/key/describe/app-k", s.url));
            async move { request.send().await.unwrap().status().as_u16() }
        };
        // The app's connection is open and its key cached.
        assert_eq!(describe().await, 200);
        let hog_pem = pem_of(&hog);
        let mut conn = s.tls(&[b"http/1.1"], Some((&hog_pem.0, &hog_pem.1))).await;
        let pipelined: String = (0..100)
            .map(|i| format!("GET /v1/key/describe/busy-{i} HTTP/1.1\r\nHost: localhost\r\n\r\n"))
            .collect();
        conn.write_all(pipelined.as_bytes()).await.unwrap();
        let drain = tokio::spawn(async move {
            let mut buf = vec![0u8; 1 << 16];
            while matches!(conn.read(&mut buf).await, Ok(n) if n > 0) {}
        });
        while busy.reads.load(Ordering::SeqCst) < 3 {
            tokio::task::yield_now().await;
        }
        let before = busy.reads.load(Ordering::SeqCst);
        assert_eq!(describe().await, 200);
        let ahead = busy.reads.load(Ordering::SeqCst) - before;
        drain.abort();
        // Each step of the other client's request (its client's write, the
        // server's read and answer, its client's read) waits for one of the
        // flood's: 6 here; 48 to 64 when the server serves what it has read in
        // one turn.
        assert!(
            ahead <= 12,
            "{ahead} of the requests written ahead ran while the other client's one waited"
        );
    });
}

/// A reload that makes the limits smaller: the connections open at the reload
/// count against the new maximum (the pools are resized, not replaced by empty
/// ones), so a reload never lets in more than the new limits allow, nor the old
/// and the new limits together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_to_smaller_limits_counts_the_connections_open_already() {
    let creds = keyhost_tls::mint::DevCredentials::generate(&["localhost".into(), "127.0.0.1".into()]).unwrap();
    let app = ApiKey::from_seed([7; 32]);
    let (admin, app_id) = (creds.admin.identity(), app.identity());
    let state = |max: usize| {
        let mut authorizer = keyhost_policy::Authorizer::new(Some(admin.clone()));
        authorizer
            .add("app", policy(&["/v1/key/describe/*"]), std::slice::from_ref(&app_id))
            .unwrap();
        let mut state = keyhost_server::State::new(Arc::new(MemStore::new()), authorizer);
        state.limits = keyhost_server::Limits {
            max_connections: max,
            per_address: max,
            per_identity: max,
            header_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(30),
            ..keyhost_server::Limits::for_max_connections(max)
        };
        Arc::new(state)
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let tls = Arc::new(creds.server_config().unwrap());
    let live = keyhost_server::Live::new(tls.clone(), state(8));
    tokio::spawn(keyhost_server::serve_live(listener, live.clone()));
    let s = Server {
        url: format!("https://localhost:{}", addr.port()),
        addr,
        creds,
        app,
    };
    let app_pem = pem_of(&s.app);
    let mut open = Vec::new();
    for _ in 0..6 {
        open.extend(kept_open(&s, ip("127.0.0.1"), &app_pem).await);
    }
    assert_eq!(open.len(), 6);
    live.replace(tls, state(4));
    assert!(
        kept_open(&s, ip("127.0.0.1"), &app_pem).await.is_none(),
        "6 connections open against a new maximum of 4, and one more was let in"
    );
    open.truncate(3);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        kept_open(&s, ip("127.0.0.1"), &app_pem).await.is_some(),
        "3 open: there is room again under the new maximum"
    );
}
