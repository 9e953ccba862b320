//! A plugin's stdout and stderr, turned into host log lines prefixed with its name.
//!
//! The WASIp2 stream is written synchronously, byte by byte, into one line buffer
//! of at most [`MAX_LINE`] bytes: nothing is queued. (wasmtime's default adapter,
//! `AsyncWriteStream`, queues every write and charges only its length, so a plugin
//! making zero-length writes grew host memory without bound — GHSA-5m8g-xhq4-4h93,
//! fixed upstream after the wasmtime release keyhost pins.)

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

/// The longest line kept; the rest of a longer line is dropped, so that a plugin
/// cannot grow the host's memory by never writing a newline.
const MAX_LINE: usize = 4096;

#[derive(Clone)]
pub(crate) struct PluginLog {
    pub(crate) plugin: Arc<str>,
    pub(crate) stream: &'static str,
    pub(crate) budget: Arc<LogBudget>,
    pub(crate) capture: Arc<LogCapture>,
}

/// The lines plugins wrote, kept while a capture is on — for the conformance kit,
/// which checks that no record or credential is ever printed. Lines are kept before
/// rate limiting, up to [`LogCapture::BYTES`]; the lines beyond are counted. Off,
/// it costs one atomic load per line.
#[derive(Debug, Default)]
pub(crate) struct LogCapture {
    on: std::sync::atomic::AtomicBool,
    kept: std::sync::Mutex<CapturedLog>,
}

/// What a capture kept: see [`crate::Runtime::capture_log`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CapturedLog {
    /// The lines, as they are logged (invalid UTF-8 and control characters
    /// replaced).
    pub lines: Vec<String>,
    /// How many lines did not fit.
    pub dropped: usize,
    bytes: usize,
}

impl LogCapture {
    /// The most text a capture keeps.
    pub(crate) const BYTES: usize = 8 << 20;

    pub(crate) fn set(&self, on: bool) {
        self.on.store(on, std::sync::atomic::Ordering::Release);
    }

    fn is_on(&self) -> bool {
        self.on.load(std::sync::atomic::Ordering::Acquire)
    }

    /// What was kept so far, which is then forgotten.
    pub(crate) fn take(&self) -> CapturedLog {
        std::mem::take(&mut *self.kept.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn keep(&self, line: &str) {
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        if kept.bytes + line.len() > Self::BYTES {
            kept.dropped += 1;
        } else {
            kept.bytes += line.len();
            kept.lines.push(line.to_owned());
        }
    }
}

/// How many lines a plugin may log: a burst of [`LogBudget::BURST`], then
/// [`LogBudget::PER_SECOND`]. A plugin writing newlines by the kilobyte would
/// otherwise turn each write into thousands of host log lines. Lines beyond are
/// dropped and counted, and the count is logged with the next line let through.
#[derive(Debug)]
pub(crate) struct LogBudget {
    state: std::sync::Mutex<(f64, std::time::Instant, u64)>,
}

impl Default for LogBudget {
    fn default() -> Self {
        Self {
            state: std::sync::Mutex::new((Self::BURST, std::time::Instant::now(), 0)),
        }
    }
}

impl LogBudget {
    pub(crate) const BURST: f64 = 200.0;
    pub(crate) const PER_SECOND: f64 = 100.0;

    /// Whether one more line may be logged, and how many were dropped before it.
    fn take(&self) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (tokens, last, dropped) = &mut *state;
        let now = std::time::Instant::now();
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * Self::PER_SECOND).min(Self::BURST);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Some(std::mem::take(dropped))
        } else {
            *dropped += 1;
            None
        }
    }
}

impl IsTerminal for PluginLog {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for PluginLog {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.writer())
    }

    fn p2_stream(&self) -> Box<dyn wasmtime_wasi::p2::OutputStream> {
        Box::new(self.writer())
    }
}

impl PluginLog {
    fn writer(&self) -> LineWriter {
        LineWriter {
            log: self.clone(),
            line: Vec::new(),
        }
    }
}

/// How much a plugin may write in one call.
const WRITE_BUDGET: usize = 64 * 1024;

struct LineWriter {
    log: PluginLog,
    line: Vec<u8>,
}

impl LineWriter {
    fn emit(&mut self) {
        let capture = self.log.capture.is_on();
        let budget = self.log.budget.take();
        if budget.is_none() && !capture {
            self.line.clear();
            return;
        }
        let text: String = String::from_utf8_lossy(&self.line)
            .chars()
            .map(|c| if c.is_control() && c != '\t' { '\u{fffd}' } else { c })
            .collect();
        if capture {
            self.log.capture.keep(&text);
        }
        let Some(dropped) = budget else {
            self.line.clear();
            return;
        };
        if dropped > 0 {
            tracing::warn!(target: "keyhost::plugin", plugin = %self.log.plugin, dropped, "plugin log lines dropped (more than {} a second)", LogBudget::PER_SECOND);
        }
        tracing::info!(target: "keyhost::plugin", plugin = %self.log.plugin, stream = self.log.stream, "{text}");
        self.line.clear();
    }
}

impl LineWriter {
    fn take(&mut self, buf: &[u8]) {
        for &b in buf {
            match b {
                b'\n' => self.emit(),
                b'\r' => {}
                _ if self.line.len() < MAX_LINE => self.line.push(b),
                _ => {}
            }
        }
    }
}

#[async_trait::async_trait]
impl wasmtime_wasi::p2::Pollable for LineWriter {
    async fn ready(&mut self) {}
}

impl wasmtime_wasi::p2::OutputStream for LineWriter {
    fn write(&mut self, bytes: bytes::Bytes) -> wasmtime_wasi::p2::StreamResult<()> {
        self.take(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> wasmtime_wasi::p2::StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> wasmtime_wasi::p2::StreamResult<usize> {
        Ok(WRITE_BUDGET)
    }
}

impl AsyncWrite for LineWriter {
    fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.take(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.line.is_empty() {
            self.emit();
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if !self.line.is_empty() {
            self.emit();
        }
    }
}
