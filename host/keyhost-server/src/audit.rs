//! The audit log's writer.
//!
//! Request handlers append finished audit lines to a shared buffer; one writer
//! thread wakes when lines arrive, lets more gather for [`GATHER`], and writes
//! them in one system call. Under load a thousand requests cost one `write` and one
//! wake-up instead of one each. No request ever waits for the output: when
//! [`MAX_PENDING`] bytes are already waiting (a stalled log reader), lines are
//! dropped and counted instead, which keeps the server's memory bounded and its
//! threads free; `log.audit: required` refuses requests meanwhile.
//!
//! A write that fails is not lost: the writer keeps what was not written (from the
//! first byte not written, so no line is cut) and tries again every [`RETRY`], with
//! the lines that arrived meanwhile, until a write succeeds. While it fails, lines
//! beyond [`MAX_PENDING`] are dropped rather than making requests wait, and counted;
//! [`AuditWriter::error`] reports the failure (`log.audit: required` refuses requests
//! meanwhile).

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// The most bytes of audit lines waiting for the writer before requests wait too.
pub const MAX_PENDING: usize = 4 << 20;

/// How long the writer waits before it tries a failed write again.
pub const RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// How long the writer lets lines gather after the first one arrives. Each wake-up
/// of the writer is a context switch on a core the requests need; at 10 ms, a busy
/// server pays a hundred a second, and a line is on its way within 10 ms.
pub const GATHER: std::time::Duration = std::time::Duration::from_millis(10);

/// A handle on the audit writer; the writer thread flushes and ends when the last
/// handle is dropped.
#[derive(Clone)]
pub struct AuditWriter {
    shared: Arc<Shared>,
    _close: Arc<CloseOnDrop>,
}

impl std::fmt::Debug for AuditWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditWriter").finish_non_exhaustive()
    }
}

struct Shared {
    pending: Mutex<Pending>,
    /// Signalled when lines arrive in an empty buffer, or on close.
    arrived: Condvar,
    /// Signalled when the writer has taken the buffer.
    taken: Condvar,
}

#[derive(Default)]
struct Pending {
    buf: Vec<u8>,
    /// Lines taken by the writer and not yet written.
    in_flight: bool,
    /// The writer waits for lines (and must be woken).
    idle: bool,
    closed: bool,
    /// The last write error, until a later write succeeds.
    error: Option<String>,
    /// Bytes the writer holds after a failed write, to write again.
    retained: usize,
    /// Lines dropped while the log could not be written.
    dropped: u64,
    /// Lines dropped in all.
    dropped_total: u64,
    /// Lines are being dropped because the backlog is full, until the writer
    /// takes it.
    full: bool,
}

struct CloseOnDrop(Arc<Shared>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        lock(&self.0.pending).closed = true;
        self.0.arrived.notify_all();
    }
}

fn lock(m: &Mutex<Pending>) -> MutexGuard<'_, Pending> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl AuditWriter {
    /// Starts a writer thread that writes audit lines to `out`.
    pub fn spawn(out: impl Write + Send + 'static) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            arrived: Condvar::new(),
            taken: Condvar::new(),
        });
        let writer = shared.clone();
        std::thread::Builder::new()
            .name("keyhost-audit".into())
            .spawn(move || write_loop(&writer, out))?;
        Ok(Self {
            _close: Arc::new(CloseOnDrop(shared.clone())),
            shared,
        })
    }

    /// Starts a writer thread that writes audit lines to standard output.
    pub fn stdout() -> std::io::Result<Self> {
        Self::spawn(std::io::stdout())
    }

    /// Queues one line (with its newline). Never waits: when [`MAX_PENDING`] bytes
    /// are already waiting (the log's reader has stalled, or writes fail), the line
    /// is dropped and counted, and [`AuditWriter::is_failing`] reports it until the
    /// writer takes the backlog, so that `log.audit: required` refuses requests
    /// meanwhile. Returns whether the line was queued.
    pub fn push(&self, line: &[u8]) -> bool {
        self.push_line(line, false)
    }

    /// Like [`AuditWriter::push`], but a line that does not fit is queued all the
    /// same (and the writer reports itself failing): for `log.audit: required`,
    /// where a request that was answered must be audited. Requests are refused while
    /// the writer fails, so the excess is bounded by the requests in flight.
    pub fn push_kept(&self, line: &[u8]) {
        self.push_line(line, true);
    }

    fn push_line(&self, line: &[u8], keep: bool) -> bool {
        let mut pending = lock(&self.shared.pending);
        if pending.buf.len() + pending.retained + line.len() > MAX_PENDING
            && pending.buf.len() + pending.retained > 0
            && !keep
        {
            if !pending.full && pending.error.is_none() {
                tracing::warn!("the audit log is not being read; dropping audit lines until it is");
            }
            pending.full = true;
            pending.dropped += 1;
            pending.dropped_total += 1;
            return false;
        }
        if pending.buf.len() + pending.retained + line.len() > MAX_PENDING {
            pending.full = true;
        }
        pending.buf.extend_from_slice(line);
        let wake = std::mem::take(&mut pending.idle);
        drop(pending);
        if wake {
            self.shared.arrived.notify_one();
        }
        true
    }

    /// How many lines were dropped since the writer started.
    pub fn dropped_total(&self) -> u64 {
        lock(&self.shared.pending).dropped_total
    }

    /// Waits until every queued line has been written or has failed to be (failed
    /// lines stay queued for the next retry).
    pub fn flush(&self) {
        let mut pending = lock(&self.shared.pending);
        while (!pending.buf.is_empty() || pending.in_flight) && !pending.closed {
            pending = self.shared.taken.wait(pending).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// The error of the last write, if it failed.
    pub fn error(&self) -> Option<String> {
        lock(&self.shared.pending).error.clone()
    }

    /// Whether lines cannot be written now: the last write failed, or the backlog
    /// is full and lines are being dropped.
    pub fn is_failing(&self) -> bool {
        let pending = lock(&self.shared.pending);
        pending.error.is_some() || pending.full
    }
}

fn write_loop(shared: &Shared, mut out: impl Write) {
    // Lines taken from the buffer and not yet written (after a failed write).
    let mut batch = Vec::new();
    loop {
        let mut pending = lock(&shared.pending);
        pending.in_flight = false;
        pending.retained = batch.len();
        shared.taken.notify_all();
        if batch.is_empty() {
            while pending.buf.is_empty() && !pending.closed {
                pending.idle = true;
                pending = shared.arrived.wait(pending).unwrap_or_else(|p| p.into_inner());
            }
            pending.idle = false;
            if pending.buf.is_empty() {
                return; // closed, and everything is written
            }
            if !pending.closed && pending.buf.len() < MAX_PENDING / 2 {
                // Let the lines of concurrent requests join this write.
                drop(pending);
                std::thread::sleep(GATHER);
                pending = lock(&shared.pending);
            }
        } else if !pending.closed {
            // The last write failed: try again after a while, with what came since.
            pending = shared
                .arrived
                .wait_timeout(pending, RETRY)
                .map_or_else(|p| p.into_inner().0, |(p, _)| p);
        }
        if batch.is_empty() {
            std::mem::swap(&mut pending.buf, &mut batch);
        } else {
            batch.append(&mut pending.buf);
        }
        pending.full = false;
        let closing = pending.closed;
        pending.in_flight = true;
        drop(pending);
        shared.taken.notify_all();

        let mut written = 0;
        let result = loop {
            match out.write(&batch[written..]) {
                Ok(0) => break Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    written += n;
                    if written == batch.len() {
                        break out.flush();
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        batch.drain(..written);
        if batch.capacity() > MAX_PENDING {
            batch.shrink_to(MAX_PENDING);
        }
        let mut pending = lock(&shared.pending);
        match result {
            Ok(()) => {
                if pending.error.take().is_some() {
                    let dropped = std::mem::take(&mut pending.dropped);
                    tracing::warn!(dropped, "the audit log can be written again");
                }
            }
            Err(e) => {
                if pending.error.is_none() {
                    tracing::error!(error = %e, "cannot write the audit log; retrying");
                }
                pending.error = Some(e.to_string());
                if closing {
                    tracing::error!(
                        bytes = batch.len(),
                        "audit lines lost: the log cannot be written at exit"
                    );
                    pending.in_flight = false;
                    shared.taken.notify_all();
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `Write` that records each call, to count system calls.
    #[derive(Clone, Default)]
    struct Calls(Arc<Mutex<Vec<Vec<u8>>>>);

    impl Write for Calls {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap_or_else(|p| p.into_inner()).push(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_is_written_in_order() {
        let calls = Calls::default();
        let writer = AuditWriter::spawn(calls.clone()).unwrap_or_else(|e| panic!("{e}"));
        let expected: Vec<u8> = (0..10_000).flat_map(|i| format!("line {i}\n").into_bytes()).collect();
        for i in 0..10_000 {
            writer.push(format!("line {i}\n").as_bytes());
        }
        writer.flush();
        let written: Vec<u8> = calls.0.lock().unwrap_or_else(|p| p.into_inner()).concat();
        assert_eq!(written, expected);
    }

    #[test]
    fn dropping_the_last_handle_writes_what_is_queued() {
        let calls = Calls::default();
        let writer = AuditWriter::spawn(calls.clone()).unwrap_or_else(|e| panic!("{e}"));
        writer.push(b"last\n");
        drop(writer);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while calls.0.lock().unwrap_or_else(|p| p.into_inner()).concat() != b"last\n" {
            assert!(std::time::Instant::now() < deadline, "the queued line was not written");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    /// A reader that stopped reading: `write` blocks until released. Pushing never
    /// waits for it; what does not fit is dropped and counted, and the writer
    /// reports itself failing until it can write again.
    #[test]
    fn a_stalled_reader_never_blocks_a_push() {
        struct Stalled(Arc<(Mutex<bool>, Condvar)>, Calls);
        impl Write for Stalled {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                let (lock, released) = &*self.0;
                let mut open = lock.lock().unwrap_or_else(|p| p.into_inner());
                while !*open {
                    open = released.wait(open).unwrap_or_else(|p| p.into_inner());
                }
                self.1.write(buf)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let calls = Calls::default();
        let writer = AuditWriter::spawn(Stalled(gate.clone(), calls.clone())).unwrap_or_else(|e| panic!("{e}"));
        let line = [b'x'; 99].iter().copied().chain(*b"\n").collect::<Vec<u8>>();
        // Until the writer holds one batch in its stuck write and the buffer
        // behind it is full too: then pushes are dropped.
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn({
            let (writer, line) = (writer.clone(), line.clone());
            move || {
                let (mut pushed, mut tried) = (0u64, 0u64);
                loop {
                    tried += 1;
                    if writer.push(&line) {
                        pushed += 1;
                        continue;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(50));
                    tried += 1;
                    if !writer.push(&line) {
                        break;
                    }
                    pushed += 1;
                }
                let _ = done.send((pushed, tried));
            }
        });
        let (pushed, tried) = finished
            .recv_timeout(std::time::Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("pushing waited for the stalled reader"));
        assert!(writer.is_failing(), "a full backlog is reported");
        assert!(writer.dropped_total() > 0);
        assert_eq!(pushed + writer.dropped_total(), tried);
        *gate.0.lock().unwrap_or_else(|p| p.into_inner()) = true;
        gate.1.notify_all();
        writer.flush();
        assert!(!writer.is_failing(), "the writer recovers once the reader reads");
        let written = calls.0.lock().unwrap_or_else(|p| p.into_inner()).concat();
        assert_eq!(
            written.len() as u64,
            pushed * line.len() as u64,
            "every queued line, whole"
        );
        assert!(written.chunks(line.len()).all(|l| l == line.as_slice()));
    }

    #[test]
    fn a_failed_write_is_retried_and_nothing_is_lost() {
        /// Fails while the switch is on; records what it wrote.
        struct Failing(Arc<std::sync::atomic::AtomicBool>, Calls);
        impl Write for Failing {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                if self.0.load(std::sync::atomic::Ordering::SeqCst) {
                    Err(std::io::Error::other("disk full"))
                } else {
                    self.1.write(buf)
                }
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let fail = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let calls = Calls::default();
        let writer = AuditWriter::spawn(Failing(fail.clone(), calls.clone())).unwrap_or_else(|e| panic!("{e}"));
        writer.push(b"a\n");
        writer.flush();
        assert_eq!(writer.error().as_deref(), Some("disk full"));
        writer.push(b"b\n");
        fail.store(false, std::sync::atomic::Ordering::SeqCst);
        // No new line is needed: the writer tries again by itself.
        let deadline = std::time::Instant::now() + RETRY * 5;
        while writer.error().is_some() {
            assert!(std::time::Instant::now() < deadline, "the failed write was not retried");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        writer.flush();
        assert_eq!(calls.0.lock().unwrap_or_else(|p| p.into_inner()).concat(), b"a\nb\n");
    }
}
