//! The sandbox holds: hostile plugins (built from plugins/testing/hostile) are
//! stopped, contained and refused, and the host keeps serving.

#![expect(clippy::unwrap_used, reason = "Tests and benchmarks fail loudly by design")]

use std::io::Read;
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use keyhost_keystore::{Error, Keystore};
use keyhost_plugin_host::{
    Grants, Limits, LoadError, Origin, Plugin, PluginSource, PluginSpec, Runtime, RuntimeOptions,
};

fn hostile_wasm() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        keyhost_plugin_build::build(&["keyhost-test-hostile"]).unwrap_or_else(|e| panic!("{e}"))[0].clone()
    })
    .clone()
}

fn runtime() -> Runtime {
    Runtime::new(RuntimeOptions::default()).expect("runtime")
}

async fn hostile(grants: Grants, limits: Limits) -> Plugin {
    let mut spec = PluginSpec::new("hostile", PluginSource::File(hostile_wasm()));
    spec.grants = grants;
    spec.limits = limits;
    runtime().load(spec).await.expect("load hostile plugin")
}

fn short() -> Limits {
    Limits {
        timeout: Duration::from_millis(300),
        memory: 32 << 20,
        instances: 2,
        ..Limits::default()
    }
}

async fn text(plugin: &Plugin, action: &str) -> Result<String, Error> {
    plugin
        .get(action)
        .await
        .map(|v| String::from_utf8_lossy(&v).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_infinite_loop_is_stopped_at_the_deadline_and_the_next_call_succeeds() {
    let plugin = hostile(Grants::default(), short()).await;
    let start = Instant::now();
    let err = plugin.get("spin").await.unwrap_err();
    let took = start.elapsed();
    assert!(
        matches!(err, Error::Unavailable(ref m) if m.contains("within 300 ms")),
        "{err:?}"
    );
    assert!(took < Duration::from_secs(2), "stopped after {took:?}");
    assert_eq!(plugin.get("nothing").await, Err(Error::NotFound));
    let stats = plugin.stats();
    assert_eq!(stats.timeouts, 1);
    assert!(stats.instances_discarded >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_blocked_in_host_io_is_stopped_at_the_deadline() {
    let plugin = hostile(Grants::default(), short()).await;
    let start = Instant::now();
    let err = plugin.get("sleep").await.unwrap_err();
    assert!(matches!(err, Error::Unavailable(_)), "{err:?}");
    assert!(start.elapsed() < Duration::from_secs(2));
    assert_eq!(plugin.get("nothing").await, Err(Error::NotFound));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbounded_allocation_hits_the_memory_limit_and_the_instance_is_replaced() {
    let plugin = hostile(Grants::default(), short()).await;
    let err = plugin.get("alloc").await.unwrap_err();
    assert!(
        matches!(err, Error::Other(ref m) if m.contains("memory limit of 32 MiB")),
        "{err:?}"
    );
    let before = plugin.stats();
    assert_eq!(before.memory_exhausted, 1);
    assert_eq!(plugin.get("nothing").await, Err(Error::NotFound));
    assert!(
        plugin.stats().instances_started > before.instances_started,
        "a fresh instance served the next call"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_is_an_error_not_a_crash() {
    let plugin = hostile(Grants::default(), short()).await;
    let err = plugin.get("panic").await.unwrap_err();
    assert!(
        matches!(err, Error::Other(ref m) if m.contains("crashed during get")),
        "{err:?}"
    );
    assert_eq!(plugin.stats().traps, 1);
    assert_eq!(plugin.get("nothing").await, Err(Error::NotFound));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_calls_go_on_while_one_instance_spins() {
    let plugin = hostile(
        Grants::default(),
        Limits {
            timeout: Duration::from_millis(1500),
            ..short()
        },
    )
    .await;
    let spinner = tokio::spawn({
        let plugin = plugin.clone();
        async move { plugin.get("spin").await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let start = Instant::now();
    for _ in 0..20 {
        assert_eq!(plugin.get("nothing").await, Err(Error::NotFound));
    }
    assert!(
        start.elapsed() < Duration::from_millis(1000),
        "calls waited for the spinning instance"
    );
    assert!(spinner.await.unwrap().is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_environment_and_arguments_are_empty() {
    // SAFETY-free: the variable is set in this process; the plugin must not see it.
    let plugin = hostile(Grants::default(), short()).await;
    let seen = text(&plugin, "env").await.unwrap();
    assert_eq!(seen, "vars=[] args=[]");
}

/// A listener that records whether anything connected to it.
struct Watch {
    listener: TcpListener,
}

impl Watch {
    fn new() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        Self { listener }
    }
    fn port(&self) -> u16 {
        self.listener.local_addr().unwrap().port()
    }
    fn connections(&self) -> usize {
        let mut n = 0;
        while let Ok((mut s, _)) = self.listener.accept() {
            let _ = s.set_read_timeout(Some(Duration::from_millis(10)));
            let _ = s.read(&mut [0; 16]);
            n += 1;
        }
        n
    }
}

/// A tiny HTTP server answering every request with `200 hello`.
fn serve_hello() -> (u16, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        use std::io::Write;
        for stream in listener.incoming().take(1) {
            let mut stream = stream.unwrap();
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello");
        }
    });
    (port, handle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_reaches_only_granted_origins() {
    let (granted_port, server) = serve_hello();
    let other = Watch::new();
    let grants = Grants {
        http: vec![
            Origin::parse(&format!("http://127.0.0.1:{granted_port}")).unwrap(),
            Origin::parse(&format!("http://localhost:{granted_port}")).unwrap(),
        ],
        dir: None,
        ..Grants::default()
    };
    let plugin = hostile(
        grants,
        Limits {
            timeout: Duration::from_secs(5),
            ..short()
        },
    )
    .await;

    let ok = text(&plugin, &format!("http:http://127.0.0.1:{granted_port}/v1"))
        .await
        .unwrap();
    assert_eq!(ok, "200 hello");
    server.join().unwrap();

    let other_port = other.port();
    for url in [
        // Another port on the same address.
        format!("http://127.0.0.1:{other_port}/"),
        // A granted host name on another port.
        format!("http://localhost:{other_port}/"),
        // A different scheme to a granted host and port.
        format!("https://127.0.0.1:{granted_port}/"),
        // The same port through another name for the same address.
        format!("http://[::1]:{granted_port}/"),
    ] {
        let err = plugin.get(&format!("http:{url}")).await.unwrap_err();
        assert!(
            matches!(err, Error::Unavailable(ref m) if m.contains("HttpRequestDenied")),
            "{url}: {err:?}"
        );
    }
    assert_eq!(other.connections(), 0, "a refused request reached the network");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_are_refused() {
    let watch = Watch::new();
    let plugin = hostile(Grants::default(), short()).await;
    let err = plugin
        .get(&format!("tcp:127.0.0.1:{}", watch.port()))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::AccessDenied(_)), "{err:?}");
    assert_eq!(watch.connections(), 0);
    // Nor UDP, nor name lookups.
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let err = plugin
        .get(&format!("udp:{}", udp.local_addr().unwrap()))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::AccessDenied(_)), "{err:?}");
    assert!(udp.recv(&mut [0; 64]).is_err(), "a datagram arrived");
    let err = plugin.get("resolve:localhost").await.unwrap_err();
    assert!(matches!(err, Error::AccessDenied(_)), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_outside_the_granted_directory_are_out_of_reach() {
    let granted = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), b"outside").unwrap();
    std::fs::write(granted.path().join("inside"), b"inside").unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret"), granted.path().join("link")).unwrap();
    std::os::unix::fs::symlink(outside.path(), granted.path().join("dirlink")).unwrap();
    let grants = Grants {
        http: vec![],
        dir: Some(granted.path().to_owned()),
        ..Grants::default()
    };
    let plugin = hostile(grants, short()).await;

    assert_eq!(text(&plugin, "read:/data/inside").await.unwrap(), "inside");
    let secret = outside.path().join("secret");
    for path in [
        "/etc/passwd".to_owned(),
        secret.display().to_string(),
        "/data/../etc/passwd".to_owned(),
        format!("/data/../../../../..{}", secret.display()),
        "/data/link".to_owned(),
        "/data/dirlink/secret".to_owned(),
        "inside".to_owned(),
        "../etc/passwd".to_owned(),
    ] {
        let got = text(&plugin, &format!("read:{path}")).await;
        assert!(matches!(got, Err(Error::AccessDenied(_))), "{path}: {got:?}");
    }
    for path in ["/data/../escaped", "/data/dirlink/escaped", "/tmp/escaped"] {
        let got = text(&plugin, &format!("write:{path}")).await;
        assert!(matches!(got, Err(Error::AccessDenied(_))), "{path}: {got:?}");
    }
    assert!(!outside.path().join("escaped").exists());
    assert!(!granted.path().parent().unwrap().join("escaped").exists());
    // A link the plugin makes itself leads nowhere outside either.
    for target in [
        secret.display().to_string(),
        "../secret".to_owned(),
        "/etc/passwd".to_owned(),
    ] {
        let _ = std::fs::remove_file(granted.path().join("made-link"));
        let got = text(&plugin, &format!("symlink:{target}")).await;
        assert!(matches!(got, Err(Error::AccessDenied(_))), "{target}: {got:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_grant_no_directory_is_visible() {
    let plugin = hostile(Grants::default(), short()).await;
    for path in ["/data/x", "/", ".", "/etc/passwd"] {
        let got = text(&plugin, &format!("read:{path}")).await;
        assert!(matches!(got, Err(Error::AccessDenied(_))), "{path}: {got:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_records_are_refused() {
    let plugin = hostile(
        Grants::default(),
        Limits {
            memory: 64 << 20,
            ..short()
        },
    )
    .await;
    assert_eq!(plugin.get("big:1048576").await.unwrap().len(), 1 << 20);
    let err = plugin.get("big:1048577").await.unwrap_err();
    assert!(
        matches!(err, Error::Other(ref m) if m.contains("larger than")),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pin_mismatch_refuses_to_load() {
    let mut spec = PluginSpec::new("hostile", PluginSource::File(hostile_wasm()));
    spec.sha256 = Some("00".repeat(32));
    let err = runtime().load(spec.clone()).await.unwrap_err();
    assert!(matches!(err, LoadError::PinMismatch { .. }), "{err}");
    assert!(err.to_string().contains("update `sha256` to"), "{err}");
    spec.sha256 = Some("not-hex".into());
    assert!(matches!(
        runtime().load(spec).await.unwrap_err(),
        LoadError::BadPin { .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_that_are_not_plugins_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"not wasm at all").unwrap();
    let err = runtime()
        .load(PluginSpec::new("junk", PluginSource::File(junk)))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not a valid WebAssembly component"), "{err}");

    let missing = dir.path().join("missing.wasm");
    let err = runtime()
        .load(PluginSpec::new("missing", PluginSource::File(missing)))
        .await
        .unwrap_err();
    assert!(matches!(err, LoadError::Read { .. }), "{err}");

    // A core module (not a component).
    let module = dir.path().join("module.wasm");
    std::fs::write(&module, b"\0asm\x01\0\0\0").unwrap();
    let err = runtime()
        .load(PluginSpec::new("module", PluginSource::File(module)))
        .await
        .unwrap_err();
    assert!(matches!(err, LoadError::NotAPlugin { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_artifact_cache_skips_compilation_and_rejects_tampering() {
    use keyhost_plugin_host::CompileSource;
    let cache = tempfile::tempdir().unwrap();
    let dir = cache.path().join("cache");
    let options = RuntimeOptions {
        cache_dir: Some(dir.clone()),
        ..RuntimeOptions::default()
    };
    let spec = PluginSpec::new("hostile", PluginSource::File(hostile_wasm()));

    let first = Runtime::new(options.clone()).unwrap().load(spec.clone()).await.unwrap();
    assert_eq!(first.compile_source(), CompileSource::Compiled);
    let second = Runtime::new(options.clone()).unwrap().load(spec.clone()).await.unwrap();
    assert_eq!(second.compile_source(), CompileSource::DiskCache);

    // Tamper with the artifact: it must be ignored and recompiled, never loaded.
    let artifact = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .find(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
        .unwrap()
        .path();
    let mut bytes = std::fs::read(&artifact).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&artifact, &bytes).unwrap();
    let third = Runtime::new(options.clone()).unwrap().load(spec.clone()).await.unwrap();
    assert_eq!(third.compile_source(), CompileSource::Compiled);
    assert_eq!(third.get("nothing").await, Err(Error::NotFound));

    // A cache directory others may write to is refused.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    assert!(Runtime::new(options).is_err());
}

#[test]
fn plugin_output_becomes_log_lines_prefixed_with_its_name() {
    let log = logs_of(async {
        let plugin = hostile(Grants::default(), short()).await;
        plugin.get("print:hello from the sandbox").await.unwrap();
        // Output is written asynchronously; give the writer task a moment.
        tokio::time::sleep(Duration::from_millis(50)).await;
    });
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("hello from the sandbox")).collect();
    assert_eq!(lines.len(), 2, "{log}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("plugin=hostile") && l.contains("stream=\"stdout\"")),
        "{log}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("plugin=hostile") && l.contains("stream=\"stderr\"")),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_connections_are_pooled() {
    use std::io::Write;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            counter.fetch_add(1, Ordering::SeqCst);
            let mut stream = stream.unwrap();
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                loop {
                    match stream.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                    // Answer each complete request (a GET: no body).
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let len = end + 4;
                        buf.drain(..len);
                        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
                    }
                }
            });
        }
    });
    let grants = Grants {
        http: vec![Origin::parse(&format!("http://127.0.0.1:{port}")).unwrap()],
        dir: None,
        ..Grants::default()
    };
    let plugin = hostile(
        grants,
        Limits {
            timeout: Duration::from_secs(5),
            instances: 1,
            ..short()
        },
    )
    .await;
    for _ in 0..5 {
        assert_eq!(
            text(&plugin, &format!("http:http://127.0.0.1:{port}/")).await.unwrap(),
            "200 ok"
        );
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "five requests should share one connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_beyond_the_wait_queue_are_refused_at_once() {
    let limits = Limits {
        timeout: Duration::from_millis(800),
        instances: 1,
        max_waiting: 1,
        ..short()
    };
    let plugin = hostile(Grants::default(), limits).await;
    let busy = tokio::spawn({
        let plugin = plugin.clone();
        async move { plugin.get("spin").await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let waiting = tokio::spawn({
        let plugin = plugin.clone();
        async move { plugin.get("nothing").await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let start = Instant::now();
    let refused = plugin.get("nothing").await;
    assert!(
        matches!(refused, Err(Error::Unavailable(ref m)) if m.contains("overloaded")),
        "{refused:?}"
    );
    assert!(start.elapsed() < Duration::from_millis(100), "refusal must not wait");
    assert!(busy.await.unwrap().is_err());
    // The queued call ran once the spinning instance was stopped.
    assert_eq!(waiting.await.unwrap(), Err(Error::NotFound));
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// A plugin that opens files and never closes them holds at most its share of host
/// descriptors (the resource table's cap), and the next call works again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_cannot_hold_unbounded_host_descriptors() {
    let dir = tempfile::tempdir().unwrap();
    let grants = Grants {
        dir: Some(dir.path().to_owned()),
        ..Grants::default()
    };
    let plugin = hostile(
        grants,
        Limits {
            timeout: Duration::from_secs(10),
            instances: 1,
            ..Limits::default()
        },
    )
    .await;
    let before = open_fds();
    let held = text(&plugin, "files:5000").await;
    let during = open_fds();
    assert!(
        during < before + keyhost_plugin_host::MAX_RESOURCES + 16,
        "the plugin holds {} host descriptors ({held:?})",
        during - before
    );
    match held {
        Ok(n) => assert!(n.parse::<usize>().unwrap() < keyhost_plugin_host::MAX_RESOURCES, "{n}"),
        Err(e) => assert!(!matches!(e, Error::NotFound), "{e}"),
    }
    assert!(plugin.status().await.is_ok(), "the plugin serves again");
    // The instance that held them was retired: the descriptors are the host's again.
    assert!(
        open_fds() < before + 16,
        "{} descriptors still held",
        open_fds() - before
    );

    // A slow leak (a handle per call) never fails a call: the instance is retired
    // once it holds more than RETIRE_AT_RESOURCES, and a fresh one goes on.
    for i in 0..600 {
        assert_eq!(text(&plugin, "files:1").await.unwrap(), "1", "call {i}");
    }
    assert!(open_fds() < before + keyhost_plugin_host::RETIRE_AT_RESOURCES + 16);
}

/// Zero-length writes to stdout cost the host nothing: no queue grows (the
/// GHSA-5m8g-xhq4-4h93 path).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_length_writes_do_not_grow_host_memory() {
    fn rss() -> usize {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
        statm.split(' ').nth(1).unwrap().parse::<usize>().unwrap() * 4096
    }
    let plugin = hostile(
        Grants::default(),
        Limits {
            timeout: Duration::from_secs(20),
            ..Limits::default()
        },
    )
    .await;
    text(&plugin, "empty:1000").await.unwrap();
    let before = rss();
    assert_eq!(text(&plugin, "empty:3000000").await.unwrap(), "written");
    let grown = rss().saturating_sub(before);
    assert!(grown < 16 << 20, "3M empty writes grew the host by {} MiB", grown >> 20);
}

/// Core code that reaches wasmtime's stubs for the GC and threads proposals (which
/// abort the process in this build: GHSA-rc4p-x33f-vpr2, GHSA-2674-w29h-wqvj) is
/// refused when the plugin is loaded, with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_subtypes_and_atomic_waits_are_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    for (name, module, reason) in [
        (
            "gc",
            r#"(type $t (sub (func)))
               (type $s (sub $t (func)))
               (func $f (type $s))
               (table funcref (elem $f))
               (func (export "run") (call_indirect (type $t) (i32.const 0)))"#,
            "gc proposal must be enabled to use subtypes",
        ),
        (
            "threads",
            r#"(memory 1)
               (func (export "run") (result i32)
                 (memory.atomic.notify (i32.const 0) (i32.const 1)))"#,
            "threads support is not enabled",
        ),
    ] {
        let component = wat::parse_str(format!("(component (core module {module}))")).unwrap();
        let path = dir.path().join(format!("{name}.wasm"));
        std::fs::write(&path, component).unwrap();
        let err = runtime()
            .load(PluginSpec::new(name, PluginSource::File(path)))
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, LoadError::NotAPlugin { .. }), "{name}: {text}");
        assert!(text.contains(reason), "{name}: {text}");
    }
}

/// A plugin that writes newlines by the kilobyte gets a bounded number of host log
/// lines, and the host says how many it dropped.
#[test]
fn a_plugin_cannot_flood_the_host_log() {
    let log = logs_of(async {
        let plugin = hostile(Grants::default(), short()).await;
        assert_eq!(text(&plugin, "lines:40000").await.unwrap(), "written");
        tokio::time::sleep(Duration::from_millis(50)).await;
        plugin.get("print:after the flood").await.unwrap();
    });
    let plugin_lines = log.lines().filter(|l| l.contains("plugin=hostile")).count();
    assert!(
        plugin_lines < 400,
        "{plugin_lines} host log lines for 40,000 plugin lines"
    );
    assert!(log.contains("after the flood") || plugin_lines > 150, "{log}");
    assert!(log.contains("plugin log lines dropped"), "the drop is not reported");
}

/// What the host logs while `work` runs on a runtime of its own.
fn logs_of(work: impl std::future::Future<Output = ()>) -> String {
    use std::sync::{Arc, Mutex};
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buffer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(work);
    String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap()
}

/// A component exporting the keystore interface from a core module that declares,
/// besides its own memory, `memories` linear memories of `pages` pages and `tables`
/// tables of `elements` elements, created when it is instantiated. Every export
/// traps: instantiation is what is under test.
fn many_memories(memories: usize, pages: u32, tables: usize, elements: u32) -> Vec<u8> {
    let mut resolve = wit_parser::Resolve::default();
    let (package, _) = resolve
        .push_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../../wit"))
        .unwrap();
    let world = resolve.select_world(&[package], Some("keystore-plugin")).unwrap();
    let mut module = String::from("(module\n  (memory (export \"memory\") 1)\n");
    for _ in 0..memories {
        module.push_str(&format!("  (memory {pages})\n"));
    }
    for _ in 0..tables {
        module.push_str(&format!("  (table {elements} funcref)\n"));
    }
    let store = "keyhost:keystore/store@0.1.0";
    for (name, params) in [
        ("info", 0),
        ("open", 0),
        ("status", 0),
        ("create", 4),
        ("get", 2),
        ("delete", 2),
        ("list", 6),
    ] {
        let params = " i32".repeat(params);
        let params = if params.is_empty() {
            String::new()
        } else {
            format!("(param{params})")
        };
        module.push_str(&format!(
            "  (func (export \"{store}#{name}\") {params} (result i32) unreachable)\n"
        ));
    }
    module.push_str("  (func (export \"cabi_realloc\") (param i32 i32 i32 i32) (result i32) i32.const 8))\n");
    let mut core = wat::parse_str(&module).unwrap();
    wit_component::embed_component_metadata(&mut core, &resolve, world, wit_component::StringEncoding::UTF8, false)
        .unwrap();
    wit_component::ComponentEncoder::default()
        .module(&core)
        .unwrap()
        .validate(true)
        .encode()
        .unwrap()
}

async fn load_component(name: &str, bytes: Vec<u8>, memory: usize) -> Result<Plugin, LoadError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("{name}.wasm"));
    std::fs::write(&path, bytes).unwrap();
    let mut spec = PluginSpec::new(name, PluginSource::File(path));
    spec.limits = Limits { memory, ..short() };
    runtime().load(spec).await
}

/// Round 3, item 4: the memory limit holds for an instance as a whole. A component
/// declaring many memories (or tables), each well under the limit, is stopped when
/// together they pass it; so is one declaring more memories or tables than an
/// instance may have. The same component within the limit instantiates (and then
/// traps in `info`, which is all its exports do).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_limit_counts_every_memory_and_table_of_an_instance() {
    const MIB: usize = 1 << 20;
    // Seven memories of 4 MiB: 28 MiB, each under a limit of 16 MiB.
    let err = load_component("p1", many_memories(7, 64, 0, 0), 16 * MIB)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("exceeded its memory limit"), "{err}");
    // Tables of 400,000 elements (6.4 MB counted each), each under the limit.
    let err = load_component("p2", many_memories(0, 0, 4, 400_000), 16 * MIB)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("exceeded its memory limit"), "{err}");
    // More memories than an instance may have, however small.
    let err = load_component("p3", many_memories(40, 0, 0, 0), 16 * MIB)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("memory count too high"), "{err}");
    let err = load_component("p4", many_memories(0, 0, 90, 1), 16 * MIB)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("table count too high"), "{err}");
    // Within every limit: instantiated, then the export traps.
    let err = load_component("p5", many_memories(3, 16, 2, 1000), 16 * MIB)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("unreachable"), "{err}");
}

/// A server that reads each request's whole body and answers `200 ok`.
fn serve_sink() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                use std::io::{BufRead, BufReader, Write};
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut length = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = vec![0u8; length];
                if reader.read_exact(&mut body).is_ok() {
                    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
                }
            });
        }
    });
    port
}

/// Round 3, item 4: what the host buffers for a plugin's outgoing requests counts
/// against the plugin's memory limit with its own memory, and an instance has at
/// most 8 requests under way. A plugin holding most of its limit cannot make the
/// host buffer a large body for it; one starting 12 requests at once gets 8.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outgoing_request_buffers_count_against_the_memory_limit() {
    let port = serve_sink();
    let grants = Grants {
        http: vec![Origin::parse(&format!("http://127.0.0.1:{port}")).unwrap()],
        ..Grants::default()
    };
    let plugin = hostile(
        grants,
        Limits {
            memory: 32 << 20,
            timeout: Duration::from_secs(20),
            instances: 1,
            ..Limits::default()
        },
    )
    .await;
    let sent = text(&plugin, &format!("egress-big:127.0.0.1:{port}/4/7"))
        .await
        .unwrap();
    assert_eq!(sent, "200", "4 MiB of its own and a 7 MiB body fit in 32 MiB");
    let refused = text(&plugin, &format!("egress-big:127.0.0.1:{port}/26/7"))
        .await
        .unwrap();
    assert!(
        refused.contains("HttpRequestBodySize"),
        "26 MiB of its own and a 7 MiB body: {refused}"
    );
    let many = text(&plugin, &format!("egress-many:127.0.0.1:{port}/12"))
        .await
        .unwrap();
    let outcomes: Vec<&str> = many.split(' ').collect();
    assert_eq!(outcomes.iter().filter(|o| **o == "200").count(), 8, "{many}");
    assert_eq!(
        outcomes.iter().filter(|o| o.contains("ConnectionLimitReached")).count(),
        4,
        "{many}"
    );
}
