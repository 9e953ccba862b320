//! `keyhost key`: manage keys on a running server.

use std::process::ExitCode;

use base64::Engine as _;
use clap::{Args, Subcommand};

use super::client::{Client, ClientArgs};

/// Manage keys on a running server.
#[derive(Debug, Args)]
pub struct KeyArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    command: KeyCommand,
}

#[derive(Debug, Subcommand)]
enum KeyCommand {
    /// Create keys (KES v0.16: `key create NAME BASE64-KEY` imports a key).
    ///
    /// The server and credentials come from KES_SERVER and KES_API_KEY, or
    /// KES_CLIENT_CERT and KES_CLIENT_KEY.
    ///
    /// Example:
    ///
    ///   KES_SERVER=https://127.0.0.1:7373 KES_API_KEY=kes:v1:… keyhost key create -k my-key
    #[command(verbatim_doc_comment)]
    Create {
        /// The names of the keys to create.
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
    },
}

impl KeyArgs {
    pub async fn run(self) -> ExitCode {
        let client = match Client::new(&self.client) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(1);
            }
        };
        match self.command {
            KeyCommand::Create { names } => create(&client, &names).await,
        }
    }
}

async fn create(client: &Client, names: &[String]) -> ExitCode {
    // KES v0.16's `kes key create NAME KEY`: a second argument that is a base64
    // 256-bit key means import.
    if let [name, key] = names
        && base64::engine::general_purpose::STANDARD
            .decode(key)
            .is_ok_and(|k| k.len() == 32)
    {
        let body = serde_json::json!({ "key": key, "bytes": key }).to_string();
        return report(
            name,
            "import",
            client
                .send(
                    http::Method::PUT,
                    &format!("/v1/key/import/{name}"),
                    Some(body.into_bytes()),
                )
                .await,
        );
    }
    let mut code = ExitCode::SUCCESS;
    for name in names {
        let answer = client
            .send(http::Method::PUT, &format!("/v1/key/create/{name}"), None)
            .await;
        if report(name, "create", answer) != ExitCode::SUCCESS {
            code = ExitCode::from(1);
        }
    }
    code
}

fn report(name: &str, what: &str, answer: Result<super::client::Answer, String>) -> ExitCode {
    match answer {
        Ok(a) if a.status.is_success() => ExitCode::SUCCESS,
        Ok(a) => {
            eprintln!("error: cannot {what} key '{name}': {} ({})", a.message(), a.status);
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("error: cannot {what} key '{name}': {e}");
            ExitCode::from(1)
        }
    }
}
