//! `keyhost key`: manage keys on a running server.

use std::process::ExitCode;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::client::{CliError, Client, ClientArgs};
use super::output::{Output, table};

/// Manage keys on a running server.
///
/// The server and credentials come from KES_SERVER (comma-separated endpoints) and
/// KES_API_KEY, or KES_CLIENT_CERT and KES_CLIENT_KEY — as for the kes CLI.
///
/// Exit codes: 0 done, 1 the server refused (the message says why), 2 bad usage,
/// 3 the server could not be reached or the local setup is wrong.
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct KeyArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(flatten)]
    output: Output,
    #[command(subcommand)]
    command: KeyCommand,
}

#[derive(Debug, Subcommand)]
enum KeyCommand {
    /// Create keys (KES v0.16: `key create NAME BASE64-KEY` imports a key).
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
    /// Import a key: 32 bytes, base64.
    ///
    /// Example:
    ///
    ///   keyhost key import -k my-key "$(head -c 32 /dev/urandom | base64)"
    #[command(verbatim_doc_comment)]
    Import {
        /// The key's name.
        name: String,
        /// The key material, base64 (32 bytes).
        key: String,
    },
    /// Show a key's name, algorithm, creation time and creator.
    ///
    /// Example:
    ///
    ///   keyhost key info -k my-key
    #[command(verbatim_doc_comment, visible_alias = "describe")]
    Info {
        /// The key's name.
        name: String,
    },
    /// List keys whose names start with a prefix (`my-*` or `my-`; all by default).
    ///
    /// Example:
    ///
    ///   keyhost key ls -k 'minio-*'
    #[command(verbatim_doc_comment, visible_alias = "list")]
    Ls {
        /// A prefix, optionally ending in `*`.
        #[arg(default_value = "*")]
        pattern: String,
    },
    /// Delete keys. Ciphertexts made with them can no longer be decrypted.
    ///
    /// Example:
    ///
    ///   keyhost key rm -k my-key
    #[command(verbatim_doc_comment, visible_alias = "delete")]
    Rm {
        /// The names of the keys to delete.
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
    },
    /// Generate a data encryption key: its plaintext and its ciphertext under NAME.
    ///
    /// Example:
    ///
    ///   keyhost key dek -k my-key '{"bucket":"photos"}'
    #[command(verbatim_doc_comment, visible_alias = "derive")]
    Dek {
        /// The key's name.
        name: String,
        /// Associated data (the context), as text; it is needed again to decrypt.
        context: Option<String>,
    },
    /// Encrypt a short message (at most 1 MB) with a key; prints the ciphertext.
    ///
    /// Example:
    ///
    ///   keyhost key encrypt -k my-key 'hello world'
    #[command(verbatim_doc_comment)]
    Encrypt {
        /// The key's name.
        name: String,
        /// The message, as text.
        message: String,
        /// Associated data, as text.
        context: Option<String>,
    },
    /// Decrypt a ciphertext (base64) with a key; prints the plaintext.
    ///
    /// Example:
    ///
    ///   keyhost key decrypt -k my-key "$CIPHERTEXT"
    #[command(verbatim_doc_comment)]
    Decrypt {
        /// The key's name.
        name: String,
        /// The ciphertext, base64 (as encrypt or dek print it).
        ciphertext: String,
        /// Associated data, as text (the same as given to encrypt or dek).
        context: Option<String>,
    },
    /// Compute the HMAC-SHA256 of a message with a key's HMAC key.
    ///
    /// Example:
    ///
    ///   keyhost key hmac -k my-key 'message'
    #[command(verbatim_doc_comment)]
    Hmac {
        /// The key's name.
        name: String,
        /// The message, as text.
        message: String,
    },
}

impl KeyArgs {
    pub async fn run(self) -> ExitCode {
        let client = match Client::new(&self.client) {
            Ok(c) => c,
            Err(e) => return CliError::Setup(e).exit(),
        };
        let out = &self.output;
        let result = match &self.command {
            KeyCommand::Create { names } => create(&client, names).await,
            KeyCommand::Import { name, key } => import(&client, name, key).await,
            KeyCommand::Info { name } => info(&client, out, name).await,
            KeyCommand::Ls { pattern } => ls(&client, out, pattern).await,
            KeyCommand::Rm { names } => rm(&client, names).await,
            KeyCommand::Dek { name, context } => dek(&client, out, name, context.as_deref()).await,
            KeyCommand::Encrypt { name, message, context } => {
                encrypt(&client, out, name, message, context.as_deref()).await
            }
            KeyCommand::Decrypt {
                name,
                ciphertext,
                context,
            } => decrypt(&client, out, name, ciphertext, context.as_deref()).await,
            KeyCommand::Hmac { name, message } => hmac(&client, out, name, message).await,
        };
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => e.exit(),
        }
    }
}

fn body(value: Value) -> Option<Vec<u8>> {
    Some(value.to_string().into_bytes())
}

fn parse(answer: &super::client::Answer) -> Result<Value, CliError> {
    serde_json::from_slice(&answer.body).map_err(|e| {
        CliError::Setup(format!(
            "the server's answer is not JSON ({e}); is KES_SERVER a key server?"
        ))
    })
}

fn field<'a>(value: &'a Value, name: &str) -> &'a str {
    value.get(name).and_then(Value::as_str).unwrap_or_default()
}

async fn create(client: &Client, names: &[String]) -> Result<(), CliError> {
    // KES v0.16's `kes key create NAME KEY`: a second argument that is a base64
    // 256-bit key means import.
    if let [name, key] = names
        && B64.decode(key).is_ok_and(|k| k.len() == 32)
    {
        return import(client, name, key).await;
    }
    let mut failed = 0;
    for name in names {
        if let Err(e) = client
            .call(http::Method::POST, &format!("/v1/key/create/{name}"), None)
            .await
        {
            let e = match e {
                CliError::Refused(m) => CliError::Refused(format!("cannot create key '{name}': {m}")),
                other => other,
            };
            if names.len() == 1 {
                return Err(e);
            }
            eprintln!("error: {}", describe(&e));
            failed += 1;
        }
    }
    if failed > 0 {
        return Err(CliError::Refused(format!(
            "{failed} of {} keys were not created",
            names.len()
        )));
    }
    Ok(())
}

fn describe(e: &CliError) -> &str {
    match e {
        CliError::Refused(m) | CliError::Setup(m) => m,
    }
}

async fn import(client: &Client, name: &str, key: &str) -> Result<(), CliError> {
    let bytes = B64.decode(key.trim()).map_err(|_| {
        CliError::Setup("the key is not base64; make one with: head -c 32 /dev/urandom | base64".into())
    })?;
    if bytes.len() != 32 {
        return Err(CliError::Setup(format!(
            "the key has {} bytes; keys have 32",
            bytes.len()
        )));
    }
    // Both the newest (`key`) and KES v0.16's (`bytes`) field names.
    let request = json!({ "key": key.trim(), "cipher": "AES256", "bytes": key.trim() });
    client
        .call(http::Method::POST, &format!("/v1/key/import/{name}"), body(request))
        .await
        .map_err(|e| refine(e, &format!("cannot import key '{name}'")))?;
    Ok(())
}

fn refine(e: CliError, what: &str) -> CliError {
    match e {
        CliError::Refused(m) => CliError::Refused(format!("{what}: {m}")),
        other => other,
    }
}

async fn info(client: &Client, out: &Output, name: &str) -> Result<(), CliError> {
    let answer = client
        .call(http::Method::GET, &format!("/v1/key/describe/{name}"), None)
        .await
        .map_err(|e| refine(e, &format!("cannot describe key '{name}'")))?;
    let v = parse(&answer)?;
    out.print(&v, || {
        table(
            &["Name", "Algorithm", "Created at", "Created by"],
            &[vec![
                field(&v, "name").to_owned(),
                field(&v, "algorithm").to_owned(),
                field(&v, "created_at").to_owned(),
                field(&v, "created_by").to_owned(),
            ]],
        )
    });
    Ok(())
}

async fn ls(client: &Client, out: &Output, pattern: &str) -> Result<(), CliError> {
    let prefix = pattern.strip_suffix('*').unwrap_or(pattern);
    let mut names: Vec<String> = Vec::new();
    let mut next = prefix.to_owned();
    // Pages continue at the name `continue_at` gives (the server treats it as a
    // prefix, as KES does, so only names that also start with the prefix follow).
    loop {
        let answer = client
            .call(http::Method::GET, &format!("/v1/key/list/{next}*"), None)
            .await
            .map_err(|e| refine(e, "cannot list keys"))?;
        // The newest API answers `{"names": […]}`; KES v0.16 (and keyhost with a
        // v0.16 file) NDJSON lines `{"Name": …}`, of which one alone is an object.
        let v = super::policy::parse_any(&answer.body)?;
        let v = if v.get("Name").is_some() {
            Value::Array(vec![v])
        } else {
            v
        };
        let page = super::policy::names(&v, "names");
        for name in page {
            if name.starts_with(prefix) && !names.contains(&name) {
                names.push(name);
            }
        }
        match v.get("continue_at").and_then(Value::as_str) {
            Some(c) if !c.is_empty() && c.starts_with(prefix) && c != next => next = c.to_owned(),
            _ => break,
        }
    }
    out.print(&json!({ "names": names }), || names.join("\n"));
    Ok(())
}

async fn rm(client: &Client, names: &[String]) -> Result<(), CliError> {
    for name in names {
        client
            .call(http::Method::DELETE, &format!("/v1/key/delete/{name}"), None)
            .await
            .map_err(|e| refine(e, &format!("cannot delete key '{name}'")))?;
    }
    Ok(())
}

/// A context (associated data) given as text, as the server wants it: base64.
fn context_b64(context: Option<&str>) -> Option<String> {
    context.map(|c| B64.encode(c))
}

async fn dek(client: &Client, out: &Output, name: &str, context: Option<&str>) -> Result<(), CliError> {
    let mut request = json!({});
    if let Some(c) = context_b64(context) {
        request["context"] = json!(c);
    }
    let answer = client
        .call(http::Method::POST, &format!("/v1/key/generate/{name}"), body(request))
        .await
        .map_err(|e| refine(e, &format!("cannot generate a data key with '{name}'")))?;
    let v = parse(&answer)?;
    out.print(&v, || {
        format!(
            "plaintext:  {}\nciphertext: {}",
            field(&v, "plaintext"),
            field(&v, "ciphertext")
        )
    });
    Ok(())
}

async fn encrypt(
    client: &Client,
    out: &Output,
    name: &str,
    message: &str,
    context: Option<&str>,
) -> Result<(), CliError> {
    let mut request = json!({ "plaintext": B64.encode(message) });
    if let Some(c) = context_b64(context) {
        request["context"] = json!(c);
    }
    let answer = client
        .call(http::Method::POST, &format!("/v1/key/encrypt/{name}"), body(request))
        .await
        .map_err(|e| refine(e, &format!("cannot encrypt with '{name}'")))?;
    let v = parse(&answer)?;
    out.print(&v, || field(&v, "ciphertext").to_owned());
    Ok(())
}

async fn decrypt(
    client: &Client,
    out: &Output,
    name: &str,
    ciphertext: &str,
    context: Option<&str>,
) -> Result<(), CliError> {
    let mut request = json!({ "ciphertext": ciphertext.trim() });
    if let Some(c) = context_b64(context) {
        request["context"] = json!(c);
    }
    let answer = client
        .call(http::Method::POST, &format!("/v1/key/decrypt/{name}"), body(request))
        .await
        .map_err(|e| refine(e, &format!("cannot decrypt with '{name}'")))?;
    let v = parse(&answer)?;
    out.print(&v, || {
        let plain = B64.decode(field(&v, "plaintext")).unwrap_or_default();
        match String::from_utf8(plain) {
            Ok(text) => text,
            Err(_) => format!("(binary, base64) {}", field(&v, "plaintext")),
        }
    });
    Ok(())
}

async fn hmac(client: &Client, out: &Output, name: &str, message: &str) -> Result<(), CliError> {
    let answer = client
        .call(
            http::Method::PUT,
            &format!("/v1/key/hmac/{name}"),
            body(json!({ "message": B64.encode(message) })),
        )
        .await
        .map_err(|e| refine(e, &format!("cannot compute an HMAC with '{name}'")))?;
    let v = parse(&answer)?;
    out.print(&v, || field(&v, "hmac").to_owned());
    Ok(())
}

/// List keys (or, with -p, policies; with -i, identities) whose names start with a
/// prefix — the newest kes CLI's `kes ls`.
///
/// Example:
///
///   keyhost ls -k 'minio-*'
///   keyhost ls -k -p
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct LsArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(flatten)]
    output: Output,
    /// List identities instead of keys.
    #[arg(short = 'i', long = "identity", conflicts_with = "policy")]
    identity: bool,
    /// List policies instead of keys.
    #[arg(short = 'p', long = "policy")]
    policy: bool,
    /// A prefix, optionally ending in `*`.
    #[arg(default_value = "*")]
    prefix: String,
}

impl LsArgs {
    pub async fn run(self) -> ExitCode {
        let result = async {
            let client = Client::new(&self.client)?;
            if !self.identity && !self.policy {
                return ls(&client, &self.output, &self.prefix).await;
            }
            let (route, key) = if self.identity {
                ("identity", "identities")
            } else {
                ("policy", "names")
            };
            let answer = client
                .call(http::Method::GET, &format!("/v1/{route}/list/{}", self.prefix), None)
                .await?;
            let value = super::policy::parse_any(&answer.body)?;
            let mut names = super::policy::names(&value, key);
            if names.is_empty() {
                // v0.16 identity listings: `{"identity", "policy"}` lines.
                names = value
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|i| i.get("identity")?.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
            }
            self.output.print(&json!({ key: names }), || names.join("\n"));
            Ok::<_, CliError>(())
        }
        .await;
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => e.exit(),
        }
    }
}
