//! Whole API requests, answered in-process exactly as over TLS
//! (`keyhost_server::respond`): any method, path, header and body get an answer —
//! never a panic, never a 5xx from the in-memory keystore — and every error of the
//! newest era is KES's JSON `{"message": …}` (but for unknown routes: Go's plain
//! `404 page not found`, as from KES).
//!
//! Input: a flags byte (bit 0: the v0.16 era; bits 1–2: the caller is the admin, an
//! identity with a policy, an identity without one, or has no certificate), then
//! `METHOD PATH`, header lines `name: value`, an empty line and the body — as in
//! HTTP/1.1. The keystore holds the key `k`; the policy allows `/v1/key/*/k`
//! (`/v1/key/*` in the newest syntax) and denies `/v1/key/delete/*`.

#![no_main]

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use keyhost_policy::{ApiKey, Authorizer, Identity, PatternSyntax, Policy};
use keyhost_server::{ApiError, Era, Peer, State};
use libfuzzer_sys::fuzz_target;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a runtime")
    })
}

fn identity(seed: u8) -> Identity {
    ApiKey::from_seed([seed; 32]).identity()
}

fn state(era: Era) -> State {
    let syntax = match era {
        Era::V016 => PatternSyntax::Glob,
        Era::Newest => PatternSyntax::Prefix,
    };
    let allow = match era {
        Era::V016 => "/v1/key/*/k",
        Era::Newest => "/v1/key/*",
    };
    let mut authorizer = Authorizer::new(Some(identity(1)));
    let policy = Policy::parse(&[allow, "/v1/policy/*"], &["/v1/key/delete/*"], syntax).expect("a policy");
    authorizer.add("app", policy, &[identity(2)]).expect("assigned");
    let mut state = State::new(Arc::new(keyhost_keystore::MemStore::new()), authorizer);
    state.era = era;
    state
}

/// Splits the input into a request; `None` if it is not one http can represent.
fn request(text: &[u8]) -> Option<http::Request<Full<Bytes>>> {
    let (head, body) = match text.windows(2).position(|w| w == b"\n\n") {
        Some(at) => (&text[..at], &text[at + 2..]),
        None => (text, &[][..]),
    };
    let head = std::str::from_utf8(head).ok()?;
    let mut lines = head.split('\n');
    let (method, path) = lines.next()?.split_once(' ')?;
    let mut builder = http::Request::builder().method(method).uri(path);
    for line in lines {
        let (name, value) = line.split_once(':')?;
        builder = builder.header(name.trim(), value.trim());
    }
    builder.body(Full::new(Bytes::copy_from_slice(body))).ok()
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let Some(request) = request(rest) else { return };
    let era = if flags & 1 == 0 { Era::Newest } else { Era::V016 };
    let peer = Peer {
        addr: SocketAddr::from(([127, 0, 0, 1], 40000)),
        identity: match (flags >> 1) & 3 {
            0 => Ok(identity(1)),
            1 => Ok(identity(2)),
            2 => Ok(identity(3)),
            _ => Err(ApiError::CertRequired),
        },
    };
    let streams = request.uri().path().starts_with("/v1/log/");
    runtime().block_on(async {
        let state = state(era);
        state
            .create_key_if_missing("k", identity(1).as_str())
            .await
            .expect("the key k");
        let response = keyhost_server::respond(&state, &peer, request).await;
        let status = response.status().as_u16();
        assert!(status < 500, "{status} from the in-memory keystore");
        if streams && status == 200 {
            return; // an endless event stream
        }
        let body = response.into_body().collect().await.expect("a body").to_bytes();
        // Unknown routes get Go's plain "404 page not found", as from KES.
        if status >= 400 && era == Era::Newest && &body[..] != b"404 page not found\n" {
            let text = String::from_utf8_lossy(&body);
            assert!(
                text.starts_with(r#"{"message":""#) && text.trim_end().ends_with('}'),
                "{status}: {text}"
            );
        }
    });
});
