//! `keyhost policy`: read (and, on KES v0.16-style servers, change) policies.

use std::io::Read;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::client::{CliError, Client, ClientArgs};
use super::output::{Output, table};

/// Read the policies of a running server (and change them on v0.16-style servers).
///
/// Exit codes: 0 done, 1 the server refused, 2 bad usage, 3 not reachable.
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct PolicyArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(flatten)]
    output: Output,
    #[command(subcommand)]
    command: PolicyCommand,
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// List policies whose names start with a prefix (all by default).
    ///
    /// Example:
    ///
    ///   keyhost policy ls -k
    #[command(verbatim_doc_comment, visible_alias = "list")]
    Ls {
        /// A prefix, optionally ending in `*`.
        #[arg(default_value = "*")]
        pattern: String,
    },
    /// Show when and by whom a policy was created.
    ///
    /// Example:
    ///
    ///   keyhost policy info -k minio
    #[command(verbatim_doc_comment, visible_alias = "describe")]
    Info {
        /// The policy's name.
        name: String,
    },
    /// Show a policy's allow and deny rules.
    ///
    /// Example:
    ///
    ///   keyhost policy show -k minio
    #[command(verbatim_doc_comment)]
    Show {
        /// The policy's name.
        name: String,
    },
    /// Add or replace a policy from a JSON file `{"allow":[…],"deny":[…]}` or
    /// standard input (servers with a KES v0.16-style configuration; kept in memory
    /// until the server restarts).
    ///
    /// Example:
    ///
    ///   echo '{"allow":["/v1/key/generate/app-*"]}' | keyhost policy add -k app
    #[command(verbatim_doc_comment)]
    Add {
        /// The policy's name.
        name: String,
        /// The policy file (default: standard input).
        file: Option<std::path::PathBuf>,
    },
    /// Delete a policy (servers with a KES v0.16-style configuration).
    ///
    /// Example:
    ///
    ///   keyhost policy rm -k app
    #[command(verbatim_doc_comment, visible_alias = "delete")]
    Rm {
        /// The policy's name.
        name: String,
    },
}

impl PolicyArgs {
    pub async fn run(self) -> ExitCode {
        let client = match Client::new(&self.client) {
            Ok(c) => c,
            Err(e) => return CliError::Setup(e).exit(),
        };
        let out = &self.output;
        let result = match &self.command {
            PolicyCommand::Ls { pattern } => ls(&client, out, pattern).await,
            PolicyCommand::Info { name } => info(&client, out, name).await,
            PolicyCommand::Show { name } => show(&client, out, name).await,
            PolicyCommand::Add { name, file } => add(&client, name, file.as_deref()).await,
            PolicyCommand::Rm { name } => client
                .call(http::Method::DELETE, &format!("/v1/policy/delete/{name}"), None)
                .await
                .map(|_| ()),
        };
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => e.exit(),
        }
    }
}

/// A JSON answer; NDJSON (KES v0.16 listings) becomes an array.
pub(crate) fn parse_any(body: &[u8]) -> Result<Value, CliError> {
    if let Ok(v) = serde_json::from_slice(body) {
        return Ok(v);
    }
    let lines: Result<Vec<Value>, _> = body
        .split(|b| *b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .map(serde_json::from_slice)
        .collect();
    lines
        .map(Value::Array)
        .map_err(|e| CliError::Setup(format!("the server's answer is not JSON ({e})")))
}

/// Names from a listing: `{"names": […]}` (newest) or `["…"]` / `[{"Name": …}]`.
pub(crate) fn names(v: &Value, key: &str) -> Vec<String> {
    let list = v.get(key).or(Some(v)).and_then(Value::as_array);
    list.map(|a| {
        a.iter()
            .filter_map(|n| {
                n.as_str().map(str::to_owned).or_else(|| {
                    n.get("name")
                        .or_else(|| n.get("Name"))
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                })
            })
            .collect()
    })
    .unwrap_or_default()
}

async fn ls(client: &Client, out: &Output, pattern: &str) -> Result<(), CliError> {
    let answer = client
        .call(http::Method::GET, &format!("/v1/policy/list/{pattern}"), None)
        .await?;
    let list = names(&parse_any(&answer.body)?, "names");
    out.print(&json!({ "names": list }), || list.join("\n"));
    Ok(())
}

async fn info(client: &Client, out: &Output, name: &str) -> Result<(), CliError> {
    let answer = client
        .call(http::Method::GET, &format!("/v1/policy/describe/{name}"), None)
        .await?;
    let v = parse_any(&answer.body)?;
    let text = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
    out.print(&v, || {
        table(
            &["Name", "Created at", "Created by"],
            &[vec![name.to_owned(), text("created_at"), text("created_by")]],
        )
    });
    Ok(())
}

/// Rules as a list of patterns: newest servers send `{"pattern": {}}` objects,
/// older ones arrays.
pub(crate) fn rules(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Object(map)) => map.keys().cloned().collect(),
        Some(Value::Array(list)) => list.iter().filter_map(|p| p.as_str().map(str::to_owned)).collect(),
        _ => Vec::new(),
    }
}

async fn show(client: &Client, out: &Output, name: &str) -> Result<(), CliError> {
    let answer = client
        .call(http::Method::GET, &format!("/v1/policy/read/{name}"), None)
        .await?;
    let v = parse_any(&answer.body)?;
    out.print(&v, || {
        let mut lines = Vec::new();
        for (title, key) in [("allow", "allow"), ("deny", "deny")] {
            let list = rules(v.get(key));
            if !list.is_empty() {
                lines.push(format!("{title}:"));
                lines.extend(list.iter().map(|p| format!("  - {p}")));
            }
        }
        lines.join("\n")
    });
    Ok(())
}

async fn add(client: &Client, name: &str, file: Option<&std::path::Path>) -> Result<(), CliError> {
    let mut text = String::new();
    match file {
        Some(path) => {
            text = std::fs::read_to_string(path)
                .map_err(|e| CliError::Setup(format!("cannot read {}: {e}", path.display())))?;
        }
        None => {
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| CliError::Setup(format!("cannot read standard input: {e}")))?;
        }
    }
    let policy: Value = serde_json::from_str(&text).map_err(|e| {
        CliError::Setup(format!(
            "the policy is not JSON ({e}); write {{\"allow\":[…],\"deny\":[…]}}"
        ))
    })?;
    let body = json!({ "allow": rules(policy.get("allow")), "deny": rules(policy.get("deny")) });
    client
        .call(
            http::Method::POST,
            &format!("/v1/policy/write/{name}"),
            Some(body.to_string().into_bytes()),
        )
        .await?;
    Ok(())
}
