//! Request bodies: read within a limit, a deadline and a server-wide budget into
//! buffers that are wiped, or drained and discarded before an early answer.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use zeroize::Zeroizing;

use crate::Holder;
use crate::error::ApiError;
use crate::shares::{Share, Shares};

/// A request body the API reads: hyper's, from a connection, or any other (an
/// in-process request, see [`crate::respond`]).
pub(crate) trait RequestBody:
    hyper::body::Body<Data = Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>> + Send + Unpin + 'static
{
}

impl<B> RequestBody for B where
    B: hyper::body::Body<Data = Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>> + Send + Unpin + 'static
{
}

/// How much of a body that will not be used is read and discarded before an error
/// answer, and for how long.
const DRAIN_LIMIT: usize = 4 << 20;
const DRAIN_TIME: Duration = Duration::from_secs(1);

/// Reads and discards what is left of a request body (at most [`DRAIN_LIMIT`] bytes
/// for at most [`DRAIN_TIME`]) before an early error answer, so that a client still
/// sending can finish and read the answer. Without it, HTTP/2 resets the stream and
/// HTTP/1.1 closes the connection under the client's feet: curl, for one, then
/// reports a framing error or a broken pipe instead of the answer. What is read is
/// dropped at once, never gathered.
pub(super) async fn drain<B: RequestBody>(mut body: B) {
    let discard = async {
        let mut read = 0;
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(chunk) = frame.into_data() {
                read += chunk.len();
                if read > DRAIN_LIMIT {
                    break;
                }
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME, discard).await;
}

/// Bytes of request-body memory ([`crate::BODY_BUDGET`]) held by one request,
/// given back when dropped. They are a share of the holder's: one client (an
/// identity, or an address without one) holds at most a quarter of the budget, and
/// the admin may use an eighth more that no one else can, so that one client
/// sending large bodies slowly never leaves the others, the admin least of all,
/// without room.
#[derive(Debug)]
pub(super) struct Reserved {
    pool: Arc<Shares<Holder>>,
    holder: Holder,
    privileged: bool,
    share: Option<Share<Holder>>,
    bytes: usize,
}

/// The page in which a body's room is taken from its share.
const STEP: usize = 4 << 10;

/// How long a request waits for room in its share before it is refused.
const BODY_WAIT: Duration = Duration::from_secs(1);

impl Reserved {
    /// Nothing held yet, of `holder`'s share of `pool`.
    pub(super) fn new(pool: Arc<Shares<Holder>>, holder: Holder, privileged: bool) -> Self {
        Self {
            pool,
            holder,
            privileged,
            share: None,
            bytes: 0,
        }
    }

    /// Takes `bytes` more, waiting at most [`BODY_WAIT`] for room.
    async fn take(&mut self, bytes: usize) -> Result<(), ApiError> {
        if bytes == 0 {
            return Ok(());
        }
        let more = self
            .pool
            .take(&self.holder, bytes, self.privileged, BODY_WAIT)
            .await
            .ok_or(ApiError::Busy)?;
        match &mut self.share {
            Some(share) => share.absorb(more),
            None => self.share = Some(more),
        }
        self.bytes += bytes;
        Ok(())
    }
}

/// Reads a body of at most `max` bytes, holding the bytes that arrived in
/// `reserved` (never more: a declared length alone holds nothing); a larger body
/// is handed back, partly read. The body may carry plaintexts and keys: it is
/// gathered in a [`Wiping`] buffer.
pub(super) async fn read_limited<B: RequestBody>(
    mut body: B,
    max: usize,
    declared: Option<u64>,
    reserved: &mut Reserved,
) -> Result<Zeroizing<Vec<u8>>, (ApiError, Option<B>)> {
    let expected = declared.and_then(|n| usize::try_from(n).ok()).unwrap_or(0).min(max);
    let mut data = Wiping(Zeroizing::new(Vec::new()));
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return Err((ApiError::InvalidBody, None));
        };
        if let Ok(chunk) = frame.into_data() {
            let needed = data.0.len() + chunk.len();
            if needed > max {
                return Err((ApiError::InvalidBody, Some(body)));
            }
            // The buffer never holds more than the share taken, whatever the body
            // declared: room doubles as bytes arrive (in pages of `STEP`, at most the
            // route's maximum), and the buffer grows to at most that room.
            if needed > reserved.bytes {
                let room = needed
                    .max(2 * reserved.bytes)
                    .next_multiple_of(STEP)
                    .min(max)
                    .max(needed);
                if let Err(e) = reserved.take(room - reserved.bytes).await {
                    return Err((e, None));
                }
            }
            data.append(&chunk, expected.min(reserved.bytes), reserved.bytes);
        }
    }
    Ok(data.0)
}

/// A buffer that never leaves a copy of its bytes behind: when it must grow, it
/// moves to a larger allocation and wipes the old one (a `Vec` would free it as it
/// is).
pub(super) struct Wiping(pub(super) Zeroizing<Vec<u8>>);

impl Wiping {
    /// Appends `bytes`; `expected` is the size the whole is expected to reach (0:
    /// unknown), to grow there at once; the buffer grows to at most `cap` bytes
    /// (or what is needed, if more).
    fn append(&mut self, bytes: &[u8], expected: usize, cap: usize) {
        let needed = self.0.len() + bytes.len();
        if needed > self.0.capacity() {
            let size = if expected >= needed {
                expected
            } else {
                needed.max(2 * self.0.capacity())
            };
            let size = size.min(cap).max(needed);
            let mut larger = Zeroizing::new(Vec::with_capacity(size));
            larger.extend_from_slice(&self.0);
            self.0 = larger; // the old buffer is wiped as it is dropped
        }
        self.0.extend_from_slice(bytes);
    }
}

impl std::io::Write for Wiping {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.append(bytes, 0, usize::MAX);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The bytes of a response body that are wiped when hyper drops the body.
pub(super) struct Wiped(pub(super) Zeroizing<Vec<u8>>);

impl AsRef<[u8]> for Wiped {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}
