//! Request bodies: read within a limit, a deadline and a server-wide budget into
//! buffers that are wiped, or drained and discarded before an early answer.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use zeroize::Zeroizing;

use crate::error::ApiError;

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

/// How many bytes of request bodies all requests together may hold at once.
/// Bodies are read into memory before a handler runs; without a common budget, a
/// client sending many 1 MB bodies slowly would hold that much memory per request.
/// A request whose next chunk does not fit waits (within its body timeout) for
/// others to finish.
const BODY_BUDGET: usize = 64 << 20;

static BODY_PERMITS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(BODY_BUDGET);

/// Bytes of [`BODY_BUDGET`] held by one request, given back when dropped.
#[derive(Debug, Default)]
pub(super) struct Reserved(usize);

/// How long a request waits for room in [`BODY_BUDGET`] before it is refused.
const BODY_WAIT: Duration = Duration::from_secs(1);

impl Reserved {
    /// Takes `bytes` more of the budget, waiting at most [`BODY_WAIT`] for room.
    async fn take(&mut self, bytes: usize) -> Result<(), ApiError> {
        if bytes == 0 {
            return Ok(());
        }
        let n = u32::try_from(bytes).map_err(|_| ApiError::InvalidBody)?;
        match tokio::time::timeout(BODY_WAIT, BODY_PERMITS.acquire_many(n)).await {
            Ok(Ok(permit)) => {
                permit.forget();
                self.0 += bytes;
                Ok(())
            }
            _ => Err(ApiError::Busy),
        }
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        BODY_PERMITS.add_permits(self.0);
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
            if let Err(e) = reserved.take(needed.saturating_sub(reserved.0)).await {
                return Err((e, None));
            }
            data.append(&chunk, expected);
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
    /// unknown), to grow there at once.
    fn append(&mut self, bytes: &[u8], expected: usize) {
        let needed = self.0.len() + bytes.len();
        if needed > self.0.capacity() {
            let size = if expected >= needed {
                expected
            } else {
                needed.max(2 * self.0.capacity())
            };
            let mut larger = Zeroizing::new(Vec::with_capacity(size));
            larger.extend_from_slice(&self.0);
            self.0 = larger; // the old buffer is wiped as it is dropped
        }
        self.0.extend_from_slice(bytes);
    }
}

impl std::io::Write for Wiping {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.append(bytes, 0);
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
