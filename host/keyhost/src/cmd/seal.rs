//! `keyhost seal`: make key-encryption keys for `keystore.seal`.

use std::path::PathBuf;
use std::process::ExitCode;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use clap::{Args, Subcommand};
use keyhost_config::AwsKmsKek;
use keyhost_seal::Kek;
use zeroize::Zeroizing;

/// The `keyhost seal` commands. With keystore.seal, keyhost seals every record with AES-256-GCM under a KEK
/// before the keystore plugin, and the backend behind it, receive it. A KEK is
/// 32 random bytes, kept in a file (readable by its owner alone), in an
/// environment variable, or encrypted by AWS KMS, which keyhost asks to decrypt
/// it at start-up.
#[derive(Debug, Subcommand)]
pub enum SealCommand {
    New(NewArgs),
}

/// Make a new key-encryption key and print the keystore.seal entry for it.
///
/// Without options the key's base64 is printed, for an environment variable; with
/// --out it is written to a new file (mode 0600); with --aws-kms-key it is
/// encrypted by that AWS KMS key and only the ciphertext is printed (credentials:
/// AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY).
///
/// Examples:
///
///   keyhost seal new --out /etc/keyhost/kek
///   keyhost seal new --aws-kms-key alias/keyhost --aws-region us-east-1
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct NewArgs {
    /// Write the key to this new file (mode 0600) instead of printing it.
    #[arg(long, value_name = "FILE", conflicts_with = "aws_kms_key")]
    out: Option<PathBuf>,
    /// Encrypt the key under this AWS KMS key (id, ARN or alias).
    #[arg(long, value_name = "KEY", requires = "aws_region")]
    aws_kms_key: Option<String>,
    /// The KMS key's region.
    #[arg(long, value_name = "REGION")]
    aws_region: Option<String>,
    /// The KMS endpoint, when not the region's default.
    #[arg(long, value_name = "URL")]
    aws_endpoint: Option<String>,
}

impl SealCommand {
    pub async fn run(self) -> ExitCode {
        let Self::New(args) = self;
        match args.run().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(1)
            }
        }
    }
}

impl NewArgs {
    async fn run(self) -> Result<(), String> {
        let (kek, bytes) = Kek::generate();
        let encoded = Zeroizing::new(STANDARD.encode(&bytes[..]));
        let id = kek.id();
        if let Some(path) = &self.out {
            if std::fs::symlink_metadata(path).is_ok() {
                return Err(format!(
                    "{} exists; a new key-encryption key is never written over a file (it may be a key in use)",
                    path.display()
                ));
            }
            let text = Zeroizing::new(format!("{}\n", encoded.as_str()));
            crate::files::write_atomic(path, text.as_bytes(), crate::files::Mode::Private, false)?;
            println!(
                "keystore:\n  seal:\n    keys:\n      - id: {id}\n        file: {}",
                path.display()
            );
        } else if let Some(key) = &self.aws_kms_key {
            let kms = AwsKmsKek {
                ciphertext: String::new(),
                key: Some(key.clone()),
                region: self.aws_region.clone().unwrap_or_default(),
                endpoint: self.aws_endpoint.clone(),
                access_key: None,
                secret_key: None,
                session_token: None,
            };
            let blob =
                keyhost_seal::kek::kms_encrypt("--aws-kms-key", &kms, &bytes[..], &|name| std::env::var(name).ok())
                    .await?;
            println!(
                "keystore:\n  seal:\n    keys:\n      - id: {id}\n        aws_kms:\n          key: {key}\n          region: {}\n{}          ciphertext: {}",
                kms.region,
                kms.endpoint
                    .as_ref()
                    .map(|e| format!("          endpoint: {e}\n"))
                    .unwrap_or_default(),
                STANDARD.encode(blob)
            );
        } else {
            eprintln!("# the key is printed below: put it in the environment variable, and nowhere else");
            println!(
                "KEYHOST_KEK={}\nkeystore:\n  seal:\n    keys:\n      - id: {id}\n        env: KEYHOST_KEK",
                encoded.as_str()
            );
        }
        Ok(())
    }
}
