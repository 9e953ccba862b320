//! "Key material is zeroized where keyhost owns the memory", checked: a global
//! allocator looks at every block this test binary frees while the server encrypts
//! and decrypts a known plaintext, and counts the blocks that still hold it (raw or
//! base64). Requests are answered in-process (`keyhost_server::respond`), so only
//! keyhost's own buffers are involved: hyper's and rustls' are not (the README says
//! that those are not wiped).

#![expect(unsafe_code, reason = "The allocator that inspects freed blocks")]
#![expect(clippy::unwrap_used, reason = "Tests fail loudly by design")]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use keyhost_keystore::MemStore;
use keyhost_policy::{ApiKey, Authorizer};
use keyhost_server::{Peer, State, respond};

/// The plaintext, and its base64 as it crosses the API.
const CANARY: &[u8] = b"canary-of-a-plaintext-0123456789";
const CANARY_B64: &[u8] = b"Y2FuYXJ5LW9mLWEtcGxhaW50ZXh0LTAxMjM0NTY3ODk=";

static WATCHING: AtomicBool = AtomicBool::new(false);
static LEFT_BEHIND: AtomicUsize = AtomicUsize::new(0);

fn holds(block: &[u8], pattern: &[u8]) -> bool {
    block.windows(pattern.len()).any(|w| w == pattern)
}

/// The system allocator, counting freed blocks that still hold the canary.
struct Inspecting;

// SAFETY: every call is passed to the system allocator unchanged; `dealloc` only
// reads the block it is given, which is still allocated until `System.dealloc`.
unsafe impl GlobalAlloc for Inspecting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is System's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if WATCHING.load(Ordering::SeqCst) {
            // SAFETY: `ptr` is a live block of `layout.size()` bytes that this
            // allocator handed out; it is read before it is freed.
            let block = unsafe { std::slice::from_raw_parts(ptr, layout.size()) };
            if holds(block, CANARY) || holds(block, CANARY_B64) {
                LEFT_BEHIND.fetch_add(1, Ordering::SeqCst);
            }
        }
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Inspecting = Inspecting;

/// A request body the test wipes when it is dropped (so that the test's own copy
/// of the canary does not count).
struct Wiped(zeroize::Zeroizing<Vec<u8>>);

impl AsRef<[u8]> for Wiped {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

fn request(path: &str, body: &[u8]) -> http::Request<Full<Bytes>> {
    let body = Bytes::from_owner(Wiped(zeroize::Zeroizing::new(body.to_vec())));
    http::Request::put(path).body(Full::new(body)).unwrap()
}

/// Sends a request and checks the answer without copying it: 200, and whether the
/// body holds the base64 canary.
async fn call(state: &State, peer: &Peer, path: &str, body: &[u8]) -> (bool, Bytes) {
    let response = respond(state, peer, request(path, body)).await;
    assert_eq!(response.status(), 200, "{path}");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (holds(&body, CANARY_B64), body)
}

#[tokio::test(flavor = "current_thread")]
async fn plaintexts_leave_no_copy_in_freed_memory() {
    let admin = ApiKey::from_seed([3; 32]);
    let state = State::new(Arc::new(MemStore::new()), Authorizer::new(Some(admin.identity())));
    let peer = Peer {
        addr: "127.0.0.1:1".parse().unwrap(),
        identity: Ok(admin.identity()),
    };
    let created = respond(
        &state,
        &peer,
        http::Request::post("/v1/key/create/k")
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(created.status(), 200);

    // The ciphertext of the canary, made before watching (it holds no canary).
    let mut encrypt = b"{\"plaintext\":\"".to_vec();
    encrypt.extend_from_slice(CANARY_B64);
    encrypt.extend_from_slice(b"\"}");
    WATCHING.store(true, Ordering::SeqCst);
    let (_, answer) = call(&state, &peer, "/v1/key/encrypt/k", &encrypt).await;
    let ciphertext = {
        let start = answer.windows(14).position(|w| w == b"\"ciphertext\":\"").unwrap() + 14;
        let end = start + answer[start..].iter().position(|&b| b == b'"').unwrap();
        answer.slice(start..end)
    };
    drop(answer);

    let mut decrypt = b"{\"ciphertext\":\"".to_vec();
    decrypt.extend_from_slice(&ciphertext);
    decrypt.extend_from_slice(b"\"}");
    let (found, answer) = call(&state, &peer, "/v1/key/decrypt/k", &decrypt).await;
    assert!(found, "the decrypted plaintext is in the answer");
    drop(answer);

    let mut bulk = b"[".to_vec();
    for i in 0..3 {
        if i > 0 {
            bulk.push(b',');
        }
        bulk.extend_from_slice(&decrypt);
    }
    bulk.push(b']');
    let (found, answer) = call(&state, &peer, "/v1/key/bulk/decrypt/k", &bulk).await;
    assert!(found);
    drop(answer);
    WATCHING.store(false, Ordering::SeqCst);

    assert_eq!(
        LEFT_BEHIND.load(Ordering::SeqCst),
        0,
        "blocks freed with the plaintext still in them"
    );
}
