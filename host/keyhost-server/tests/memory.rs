//! Request bodies cannot grow the server's memory (issue item 7): measured as the
//! resident memory of this test process, so it runs in a binary of its own, with no
//! other test allocating meanwhile.

#![expect(clippy::unwrap_used, reason = "Tests fail loudly by design")]

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use keyhost_test_support::api::start;

fn rss_mib() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    (statm.split(' ').nth(1).unwrap().parse::<usize>().unwrap() * 4096) >> 20
}

/// A body that sends `sent` bytes and then, if `stall`, nothing more.
fn streamed(sent: usize, stall: bool) -> reqwest::Body {
    static CHUNK: [u8; 64 * 1024] = [b'A'; 64 * 1024];
    let chunks = (0..sent.div_ceil(CHUNK.len())).map(move |i| {
        let n = CHUNK.len().min(sent - i * CHUNK.len());
        Ok::<_, std::io::Error>(bytes::Bytes::from_static(&CHUNK[..n]))
    });
    let stream = futures::stream::iter(chunks);
    if stall {
        reqwest::Body::wrap_stream(stream.chain(futures::stream::pending()))
    } else {
        reqwest::Body::wrap_stream(stream)
    }
}

/// Item 7: refused requests' bodies are discarded as they are drained, and bodies
/// being read share one budget that only bytes received count against: neither 64
/// refused 4 MiB bodies nor 200 slow 1 MB bodies of an authenticated client grow
/// the process by their size (resident memory sampled while they are in flight).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_cannot_grow_the_servers_memory() {
    let s = start(|state| state.limits.body_timeout = Duration::from_secs(2)).await;
    s.call(&s.admin(), "POST", "/v1/key/create/app-key", None).await;
    let app = s.app();

    /// The most resident memory above `base` while `work` runs, in MiB.
    async fn peak_during<T>(work: impl std::future::Future<Output = T>) -> (T, usize) {
        let base = rss_mib();
        let peak = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let sampler = tokio::spawn({
            let peak = peak.clone();
            async move {
                loop {
                    peak.fetch_max(rss_mib().saturating_sub(base), std::sync::atomic::Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        });
        let out = work.await;
        sampler.abort();
        (out, peak.load(std::sync::atomic::Ordering::SeqCst))
    }

    // Refused by policy before the body is read: 64 x 4 MiB.
    let refused = (0..64).map(|_| {
        let (app, url) = (app.clone(), s.url.clone());
        async move {
            let len = 4 << 20;
            app.put(format!("{url}/v1/key/encrypt/not-allowed"))
                .header("content-length", len)
                .body(streamed(len, false))
                .send()
                .await
                .map(|r| r.status().as_u16())
        }
    });
    let (statuses, grown) = peak_during(futures::future::join_all(refused)).await;
    let answered = statuses.iter().filter(|s| matches!(s, Ok(403))).count();
    assert!(statuses.iter().all(|s| matches!(s, Ok(403) | Err(_))), "{statuses:?}");
    assert!(answered >= 32, "only {answered} of 64 refusals were read: {statuses:?}");
    println!("64 refused 4 MiB bodies: +{grown} MiB at most");
    assert!(grown < 64, "64 refused 4 MiB bodies grew the process by {grown} MiB");

    // Allowed, 1 MB each, 900 kB sent and then nothing: 200 at once.
    let slow = (0..200).map(|_| {
        let (app, url) = (app.clone(), s.url.clone());
        async move {
            let len = 1_000_000;
            app.put(format!("{url}/v1/key/decrypt/app-key"))
                .header("content-length", len)
                .body(streamed(900_000, true))
                .send()
                .await
                .map(|r| r.status().as_u16())
        }
    });
    let (statuses, grown) = peak_during(futures::future::join_all(slow)).await;
    // 408 once the body timeout passes, or 503 when no room came within a second;
    // a connection turned away in a burst of handshakes from one address is fine.
    let answered = statuses.iter().filter(|s| matches!(s, Ok(408 | 503))).count();
    assert!(
        statuses.iter().all(|s| matches!(s, Ok(408 | 503) | Err(_))),
        "{statuses:?}"
    );
    assert!(answered >= 150, "only {answered} of 200 were answered: {statuses:?}");
    // Without the budget this is over 200 MiB (900 kB x 200); with it, the 64 MiB
    // budget plus what connections read ahead (at most 128 KiB each).
    println!("200 slow 1 MB bodies: +{grown} MiB at most");
    assert!(grown < 150, "200 slow 1 MB bodies grew the process by {grown} MiB");
}
