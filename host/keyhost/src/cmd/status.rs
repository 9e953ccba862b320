//! `keyhost status`, `keyhost metric` and `keyhost log`: a running server's state,
//! counters and live events.

use std::process::ExitCode;

use clap::Args;
use http_body_util::BodyExt;
use serde_json::{Value, json};

use super::client::{CliError, Client, ClientArgs};
use super::output::{Output, table};

/// Show a server's version, uptime and keystore state.
///
/// Example:
///
///   keyhost status -k
///
/// Exit codes: 0 the server is up and its keystore reachable, 1 the server refused
/// or its keystore is unreachable, 3 the server could not be reached.
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct StatusArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(flatten)]
    output: Output,
    /// One line: the endpoint and whether it is ready.
    #[arg(short, long)]
    short: bool,
    /// Also list the server's API routes.
    #[arg(long)]
    api: bool,
}

impl StatusArgs {
    pub async fn run(self) -> ExitCode {
        match self.status().await {
            Ok(code) => code,
            Err(e) => e.exit(),
        }
    }

    async fn status(&self) -> Result<ExitCode, CliError> {
        let client = Client::new(&self.client)?;
        let answer = client.call(http::Method::GET, "/v1/status", None).await?;
        let mut v: Value = serde_json::from_slice(&answer.body).map_err(|e| CliError::Setup(e.to_string()))?;
        if self.api {
            let api = client.call(http::Method::GET, "/v1/api", None).await?;
            v["api"] = serde_json::from_slice(&api.body).unwrap_or(Value::Null);
        }
        let unreachable = v.get("keystore_unreachable").and_then(Value::as_bool).unwrap_or(false);
        // A KES v0.16 server (or keyhost with a v0.16 file) answers v0.16's shape: the
        // uptime in nanoseconds, the certificate, and nothing about the keystore.
        let v016 = v.get("certificate").is_some();
        if v016 && let Some(ns) = v.get("uptime").and_then(Value::as_u64) {
            v["uptime"] = Value::from(ns / 1_000_000_000);
        }
        self.output.print(&v, || {
            if self.short {
                return format!(
                    "{}  {}",
                    client.endpoint(),
                    if unreachable {
                        "keystore unreachable"
                    } else if v016 {
                        "up (the v0.16 API reports nothing about the keystore)"
                    } else {
                        "ready"
                    }
                );
            }
            let text = |k: &str| {
                v.get(k)
                    .map(|x| x.to_string().trim_matches('"').to_owned())
                    .unwrap_or_default()
            };
            let mut out = table(
                &["Endpoint", "Version", "Uptime (s)", "Keystore", "Latency (ms)"],
                &[vec![
                    client.endpoint().to_owned(),
                    text("version"),
                    text("uptime"),
                    if unreachable {
                        "unreachable".into()
                    } else if v016 {
                        "not reported (v0.16 API)".into()
                    } else {
                        "reachable".into()
                    },
                    text("keystore_latency"),
                ]],
            );
            if let Some(routes) = v.get("api").and_then(Value::as_array) {
                let rows: Vec<Vec<String>> = routes
                    .iter()
                    .map(|r| {
                        let f = |k: &str| {
                            r.get(k)
                                .map(|x| x.to_string().trim_matches('"').to_owned())
                                .unwrap_or_default()
                        };
                        vec![f("method"), f("path"), f("max_body"), f("timeout")]
                    })
                    .collect();
                out.push_str("\n\n");
                out.push_str(&table(&["Method", "Path", "Max body", "Timeout (s)"], &rows));
            }
            out
        });
        Ok(if unreachable {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        })
    }
}

/// Show a server's request and keystore counters (its Prometheus metrics), once or,
/// with --rate, as a live view of rates until interrupted.
///
/// Example:
///
///   keyhost metric -k
///   keyhost metric -k --rate 5s
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct MetricArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(flatten)]
    output: Output,
    /// Print requests and keystore operations per second every DURATION.
    #[arg(long, value_name = "DURATION", value_parser = crate::units::duration)]
    rate: Option<std::time::Duration>,
}

/// The counters a live view follows: successful, refused (4xx) and failed (5xx)
/// requests, and keystore operations.
fn totals(samples: &[(String, f64)]) -> [f64; 4] {
    let sum = |prefix: &str| {
        samples
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v)
            .sum::<f64>()
    };
    [
        sum("kes_http_request_success"),
        sum("kes_http_request_error"),
        sum("kes_http_request_failure"),
        sum("keyhost_keystore_operations"),
    ]
}

impl MetricArgs {
    pub async fn run(self) -> ExitCode {
        if let Some(rate) = self.rate {
            return match self.live(rate).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => e.exit(),
            };
        }
        let result = async {
            let client = Client::new(&self.client)?;
            let answer = client.call(http::Method::GET, "/v1/metrics", None).await?;
            let text = String::from_utf8_lossy(&answer.body).into_owned();
            let samples = parse_metrics(&text);
            let wanted = [
                "kes_http_request_success",
                "kes_http_request_error",
                "kes_http_request_failure",
                "kes_http_request_active",
                "kes_system_up_time",
                "keyhost_keystore_operations",
            ];
            let json: serde_json::Map<String, Value> = samples.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
            self.output.print(&Value::Object(json), || {
                let rows: Vec<Vec<String>> = samples
                    .iter()
                    .filter(|(k, _)| wanted.iter().any(|w| k.starts_with(w)))
                    .map(|(k, v)| vec![k.clone(), v.to_string()])
                    .collect();
                table(&["Metric", "Value"], &rows)
            });
            Ok::<_, CliError>(())
        }
        .await;
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => e.exit(),
        }
    }
}

impl MetricArgs {
    async fn live(&self, rate: std::time::Duration) -> Result<(), CliError> {
        let rate = rate.max(std::time::Duration::from_millis(100));
        let client = Client::new(&self.client)?;
        let fetch = || async {
            let answer = client.call(http::Method::GET, "/v1/metrics", None).await?;
            Ok::<_, CliError>(totals(&parse_metrics(&String::from_utf8_lossy(&answer.body))))
        };
        let mut last = fetch().await?;
        if !self.output.json {
            println!("{:>10} {:>10} {:>10} {:>12}", "ok/s", "4xx/s", "5xx/s", "keystore/s");
        }
        loop {
            tokio::time::sleep(rate).await;
            let now = fetch().await?;
            let per_second: Vec<f64> = now
                .iter()
                .zip(&last)
                .map(|(n, l)| ((n - l).max(0.0)) / rate.as_secs_f64())
                .collect();
            last = now;
            let value = json!({
                "success_per_second": per_second[0],
                "error_per_second": per_second[1],
                "failure_per_second": per_second[2],
                "keystore_operations_per_second": per_second[3],
            });
            self.output.print(&value, || {
                format!(
                    "{:>10.1} {:>10.1} {:>10.1} {:>12.1}",
                    per_second[0], per_second[1], per_second[2], per_second[3]
                )
            });
        }
    }
}

/// Samples of a Prometheus text exposition: `name{labels}` → value.
fn parse_metrics(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// Follow a server's audit log (every request) or error log, live.
///
/// Example:
///
///   keyhost log -k --audit
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct LogArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(flatten)]
    output: Output,
    /// Follow the audit log (the default).
    #[arg(long, conflicts_with = "error")]
    audit: bool,
    /// Follow the error log.
    #[arg(long)]
    error: bool,
    /// KES v0.16's `log trace --type audit|error`.
    #[arg(long = "type", value_name = "audit|error", value_parser = ["audit", "error"], hide = true)]
    kind: Option<String>,
}

impl LogArgs {
    pub async fn run(self) -> ExitCode {
        match self.follow().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => e.exit(),
        }
    }

    async fn follow(&self) -> Result<(), CliError> {
        let client = Client::new(&self.client)?;
        let error = self.error || self.kind.as_deref() == Some("error");
        let path = if error { "/v1/log/error" } else { "/v1/log/audit" };
        let mut body = client.stream(path).await?.into_body();
        let mut buf = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| CliError::Setup(format!("the log stream broke: {e}")))?;
            let Ok(data) = frame.into_data() else { continue };
            buf.extend_from_slice(&data);
            while let Some(end) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=end).collect();
                let Ok(event) = serde_json::from_slice::<Value>(&line) else {
                    continue;
                };
                self.output.print(&event, || human_event(&event, error));
            }
        }
        Ok(())
    }
}

fn human_event(e: &Value, error: bool) -> String {
    let s = |v: &Value| v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string());
    if error {
        return format!("{}  {}", s(&e["time"]), s(&e["message"]));
    }
    let identity = s(&e["request"]["identity"]);
    format!(
        "{}  {:<12}  {:>3}  {:<40}  {}",
        s(&e["time"]),
        identity.get(..12).unwrap_or(&identity),
        s(&e["response"]["code"]),
        s(&e["request"]["path"]),
        s(&e["response"]["time"]),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn metric_lines_parse() {
        let samples = super::parse_metrics(
            "# HELP x y\nkes_http_request_success 3\nkeyhost_keystore_operations{op=\"get\",result=\"ok\"} 2\n",
        );
        assert_eq!(
            samples,
            vec![
                ("kes_http_request_success".to_owned(), 3.0),
                ("keyhost_keystore_operations{op=\"get\",result=\"ok\"}".to_owned(), 2.0)
            ]
        );
    }
}
