//! Helpers for keyhost's benchmarks: time calls one at a time, and print a table of
//! mean, median and 99th percentile with the ratio to a baseline measured in the
//! same run.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::future::Future;
use std::time::{Duration, Instant};

/// The `p` quantile (0..=1) of sorted durations.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let last = sorted.len() - 1;
    // Rounded index into a non-empty slice: at most `last`.
    let at = ((last as f64) * p.clamp(0.0, 1.0)).round() as usize;
    sorted[at.min(last)]
}

/// The timings of one operation.
#[derive(Debug, Clone)]
pub struct Sample {
    /// What was timed.
    pub name: &'static str,
    /// One duration per call.
    pub times: Vec<Duration>,
}

impl Sample {
    /// The mean duration.
    pub fn mean(&self) -> Duration {
        if self.times.is_empty() {
            return Duration::ZERO;
        }
        self.times.iter().sum::<Duration>() / u32::try_from(self.times.len()).unwrap_or(u32::MAX)
    }

    /// A Markdown table row in microseconds, with the ratio of means to `baseline`.
    pub fn row(&self, baseline: Option<&Sample>) -> String {
        let mut sorted = self.times.clone();
        sorted.sort();
        let ratio = baseline.map_or(String::new(), |b| {
            format!("{:>8.2}x", self.mean().as_secs_f64() / b.mean().as_secs_f64())
        });
        format!(
            "| {:<40} | {:>10.2} | {:>10.2} | {:>10.2} | {ratio:>9} |",
            self.name,
            self.mean().as_secs_f64() * 1e6,
            percentile(&sorted, 0.5).as_secs_f64() * 1e6,
            percentile(&sorted, 0.99).as_secs_f64() * 1e6,
        )
    }
}

/// The header of the table [`Sample::row`] fills.
pub fn header(baseline: &str) -> String {
    format!(
        "| {:<40} | {:>10} | {:>10} | {:>10} | {:>9} |\n|{:-<42}|{:-<12}|{:-<12}|{:-<12}|{:-<11}|",
        "operation (µs)", "mean", "p50", "p99", baseline, "", "", "", "", ""
    )
}

/// Prints a cache-miss comparison: the title, the table of `baseline` and the
/// plugin's warm and fresh-instance samples against it, and the plugin's overhead
/// per read over the baseline.
pub fn print_cache_miss(title: &str, versus: &str, baseline: &Sample, warm: &Sample, fresh: &Sample, over: &str) {
    println!();
    println!("{title}");
    println!("{}", header(versus));
    for sample in [baseline, warm, fresh] {
        println!("{}", sample.row(Some(baseline)));
    }
    println!();
    println!(
        "plugin overhead over {over}: {:.1} µs per read",
        (warm.mean().as_secs_f64() - baseline.mean().as_secs_f64()) * 1e6
    );
}

/// Calls `f` `iters / 10` times to warm up, then `iters` times one at a time,
/// timing each call.
pub async fn time_calls<F, Fut>(name: &'static str, iters: usize, mut f: F) -> Sample
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    for _ in 0..iters / 10 {
        f().await;
    }
    let mut times = Vec::with_capacity(iters);
    for _ in 0..iters {
        let start = Instant::now();
        f().await;
        times.push(start.elapsed());
    }
    Sample { name, times }
}

/// The median duration of `runs` calls of `f`, one at a time.
pub async fn median<F, Fut>(runs: usize, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        let start = Instant::now();
        f().await;
        times.push(start.elapsed());
    }
    times.sort();
    times[times.len() / 2]
}

/// Prints the load-time lines of a plugin: cold compile vs cached artifact, each the
/// median of `loads` runs.
pub fn print_load(what: &str, size: u64, loads: usize, cold: Duration, cached: Duration) {
    println!("{what} ({size} bytes)");
    println!("load (compile + first instance + open), median of {loads}:");
    println!("  cold compile:          {:>8.2} ms", cold.as_secs_f64() * 1e3);
    println!("  cached artifact:       {:>8.2} ms", cached.as_secs_f64() * 1e3);
    println!(
        "  ratio cold/cached:     {:>8.1}x",
        cold.as_secs_f64() / cached.as_secs_f64()
    );
}

/// `KEYHOST_BENCH_LOADS`, or 5: how many fresh runtimes load a plugin for the
/// median load times.
pub fn loads() -> usize {
    std::env::var("KEYHOST_BENCH_LOADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(5)
}

/// `KEYHOST_BENCH_ITERS`, or `default`.
pub fn iterations(default: usize) -> usize {
    std::env::var("KEYHOST_BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_known_samples() {
        let sorted: Vec<Duration> = (1..=101).map(Duration::from_millis).collect();
        assert_eq!(percentile(&sorted, 0.5), Duration::from_millis(51));
        assert_eq!(percentile(&sorted, 0.99), Duration::from_millis(100));
        assert_eq!(percentile(&sorted, 1.0), Duration::from_millis(101));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
        let s = Sample {
            name: "x",
            times: vec![Duration::from_micros(10), Duration::from_micros(30)],
        };
        assert_eq!(s.mean(), Duration::from_micros(20));
        assert!(s.row(Some(&s)).contains("1.00x"));
    }
}
