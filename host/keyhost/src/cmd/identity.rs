//! `keyhost identity`: make identities and compute them.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use keyhost_policy::{ApiKey, Identity};
use keyhost_tls::mint::{CertificateRequest, identity_certificate};
use serde_json::Value;

use super::client::{CliError, Client, ClientArgs};
use super::output::{Output, table};

/// Make identities and compute them; list and describe a server's identities.
#[derive(Debug, Subcommand)]
pub enum IdentityCommand {
    New(NewArgs),
    Of(OfArgs),
    /// Describe an identity on a running server (yours by default).
    ///
    /// Example:
    ///
    ///   keyhost identity info -k 3ecfcdf38fcbe141ae26a1030f81e96b753365a46760ae6b578698a97c59fd22
    #[command(verbatim_doc_comment, visible_alias = "describe")]
    Info {
        #[command(flatten)]
        remote: Remote,
        /// The identity (64 hex digits) [default: your own].
        identity: Option<String>,
    },
    /// List the identities a running server knows, with their policies.
    ///
    /// Example:
    ///
    ///   keyhost identity ls -k
    #[command(verbatim_doc_comment, visible_alias = "list")]
    Ls {
        #[command(flatten)]
        remote: Remote,
        /// A prefix, optionally ending in `*`.
        #[arg(default_value = "*")]
        pattern: String,
    },
    /// Show your own identity, policy and rules on a running server.
    ///
    /// Example:
    ///
    ///   keyhost identity self -k
    #[command(verbatim_doc_comment, name = "self")]
    Own {
        #[command(flatten)]
        remote: Remote,
    },
    /// Assign a policy to an identity (servers with a KES v0.16-style configuration).
    ///
    /// Example:
    ///
    ///   keyhost identity assign -k 3ecfcdf3…fd22 app
    #[command(verbatim_doc_comment)]
    Assign {
        #[command(flatten)]
        remote: Remote,
        /// The identity (64 hex digits).
        identity: String,
        /// The policy's name.
        policy: String,
    },
    /// Remove an identity's policy (servers with a KES v0.16-style configuration).
    ///
    /// Example:
    ///
    ///   keyhost identity forget -k 3ecfcdf3…fd22
    #[command(verbatim_doc_comment)]
    Forget {
        #[command(flatten)]
        remote: Remote,
        /// The identity (64 hex digits).
        identity: String,
    },
}

/// The flags of the commands that talk to a server.
#[derive(Debug, clap::Args)]
pub struct Remote {
    #[command(flatten)]
    client: ClientArgs,
    #[command(flatten)]
    output: Output,
}

impl IdentityCommand {
    pub async fn run(self) -> ExitCode {
        let result = match self {
            Self::New(args) => args.run().map_err(CliError::Refused),
            Self::Of(args) => args.run().map_err(CliError::Refused),
            Self::Info { remote, identity } => remote.info(identity.as_deref()).await,
            Self::Ls { remote, pattern } => remote.ls(&pattern).await,
            Self::Own { remote } => remote.info(None).await,
            Self::Assign {
                remote,
                identity,
                policy,
            } => {
                remote
                    .change(http::Method::POST, &format!("/v1/identity/assign/{policy}/{identity}"))
                    .await
            }
            Self::Forget { remote, identity } => {
                remote
                    .change(http::Method::DELETE, &format!("/v1/identity/forget/{identity}"))
                    .await
            }
        };
        match result {
            Ok(()) => ExitCode::SUCCESS,
            // New and Of work offline: their failures are exit code 1 (Refused).
            Err(e) => e.exit(),
        }
    }
}

impl Remote {
    async fn info(&self, identity: Option<&str>) -> Result<(), CliError> {
        let client = Client::new(&self.client)?;
        let path = match identity {
            Some(id) => format!("/v1/identity/describe/{id}"),
            None => "/v1/identity/self/describe".to_owned(),
        };
        let answer = client.call(http::Method::GET, &path, None).await?;
        let v: Value = serde_json::from_slice(&answer.body).map_err(|e| CliError::Setup(e.to_string()))?;
        self.output.print(&v, || {
            let text = |k: &str| {
                v.get(k)
                    .map(|x| x.to_string().trim_matches('"').to_owned())
                    .unwrap_or_default()
            };
            let mut lines = vec![table(
                &["Identity", "Admin", "Policy", "Created at"],
                &[vec![
                    identity.map_or_else(|| text("identity"), str::to_owned),
                    text("admin"),
                    text("policy"),
                    text("created_at"),
                ]],
            )];
            for key in ["allow", "deny"] {
                let list = super::policy::rules(v.get(key));
                if !list.is_empty() {
                    lines.push(format!("{key}:"));
                    lines.extend(list.iter().map(|p| format!("  - {p}")));
                }
            }
            lines.join("\n")
        });
        Ok(())
    }

    async fn ls(&self, pattern: &str) -> Result<(), CliError> {
        let client = Client::new(&self.client)?;
        let answer = client
            .call(http::Method::GET, &format!("/v1/identity/list/{pattern}"), None)
            .await?;
        let v = super::policy::parse_any(&answer.body)?;
        // One NDJSON line alone (a v0.16 listing of one identity) is an object.
        let v = if v.get("identity").is_some() {
            Value::Array(vec![v])
        } else {
            v
        };
        // Newest servers list identities; v0.16 ones identities with their policy.
        let rows: Vec<Vec<String>> = match v.get("identities").and_then(Value::as_array) {
            Some(ids) => ids
                .iter()
                .filter_map(|i| i.as_str().map(|s| vec![s.to_owned(), String::new()]))
                .collect(),
            None => v
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|i| {
                            let f = |k: &str| i.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
                            vec![f("identity"), f("policy")]
                        })
                        .collect()
                })
                .unwrap_or_default(),
        };
        self.output.print(&v, || table(&["Identity", "Policy"], &rows));
        Ok(())
    }

    async fn change(&self, method: http::Method, path: &str) -> Result<(), CliError> {
        Client::new(&self.client)?.call(method, path, None).await.map(|_| ())
    }
}

/// Create a new identity: an API key, and with --key and --cert a private key and
/// a self-signed certificate for it.
///
/// Without --key and --cert, prints a new API key (`kes:v1:…`) and its identity;
/// clients use the API key directly (KES_API_KEY). With them, writes the private key
/// and a certificate valid for client and server authentication, and prints the
/// identity to put in a policy or `admin.identity`.
///
/// Examples:
///
///   keyhost identity new
///   keyhost identity new --key server.key --cert server.cert --ip 127.0.0.1 --dns localhost
///   keyhost identity new --key minio.key --cert minio.cert minio
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct NewArgs {
    /// Write the private key (PKCS#8 PEM, mode 0600) to this file.
    #[arg(long, value_name = "FILE", requires = "cert")]
    key: Option<PathBuf>,
    /// Write the certificate (PEM) to this file.
    #[arg(long, value_name = "FILE", requires = "key")]
    cert: Option<PathBuf>,
    /// An IP address the certificate is valid for (repeatable).
    #[arg(long, value_name = "IP")]
    ip: Vec<std::net::IpAddr>,
    /// A DNS name the certificate is valid for (repeatable).
    #[arg(long, value_name = "NAME")]
    dns: Vec<String>,
    /// How long the certificate is valid, e.g. 720h or 90d.
    #[arg(short = 't', long, value_name = "DURATION", default_value = "720h")]
    expiry: String,
    /// Accepted for KES v0.16 compatibility: every certificate is valid for
    /// servers and clients.
    #[arg(long)]
    server: bool,
    /// The key type of a certificate: ed25519 (an API key's key, the default),
    /// ecdsa (P-256) or rsa (3072 bits), for peers without Ed25519.
    #[arg(long = "type", value_name = "TYPE", default_value = "ed25519", value_parser = ["ed25519", "ecdsa", "rsa"])]
    key_type: String,
    /// Encrypt the private key with a password (PKCS#8, PBES2 with scrypt and
    /// AES-256-CBC), read from the terminal, or from standard input in scripts.
    /// Servers read it with tls.password; clients are asked for it.
    #[arg(long, requires = "key")]
    encrypt: bool,
    /// Overwrite existing files.
    #[arg(short, long)]
    force: bool,
    /// The certificate's subject (common name) [default: the identity].
    subject: Option<String>,
}

impl NewArgs {
    fn run(self) -> Result<(), String> {
        let mut seed = [0u8; 32];
        seed.copy_from_slice(&keyhost_crypto::random_key()[..]);
        let key = ApiKey::from_seed(seed);
        let identity = key.identity();
        let (Some(key_path), Some(cert_path)) = (&self.key, &self.cert) else {
            println!("Your API key:\n\n   {}\n", key.to_text().as_str());
            println!("This is the only time it is shown. Keep it secret and secure.\n");
            println!("Your identity:\n\n   {}\n", identity.as_str());
            println!("The identity is not a secret: use it in policies and admin.identity.");
            return Ok(());
        };
        for path in [key_path, cert_path] {
            if path.exists() && !self.force {
                return Err(format!("{} exists; use --force to overwrite it", path.display()));
            }
        }
        let validity = crate::units::duration(&self.expiry).map_err(|e| format!("--expiry: {e}"))?;
        if validity < Duration::from_secs(60) {
            return Err("--expiry: a certificate must be valid for at least a minute".into());
        }
        let request = CertificateRequest {
            subject: self.subject.clone().unwrap_or_else(|| identity.as_str().to_owned()),
            ips: self.ip.clone(),
            dns: self.dns.clone(),
            validity,
        };
        let (cert_pem, key_pem) = match self.key_type.as_str() {
            "ecdsa" => keyhost_tls::mint::ecdsa_identity_certificate(&request),
            "rsa" => {
                use rsa::pkcs8::EncodePrivateKey;
                let private = rsa::RsaPrivateKey::new(&mut rand_core_06::OsRng, 3072)
                    .map_err(|e| format!("cannot generate an RSA key: {e}"))?;
                let der = private
                    .to_pkcs8_der()
                    .map_err(|e| format!("cannot encode the RSA key: {e}"))?;
                keyhost_tls::mint::rsa_identity_certificate(der.as_bytes(), &request)
            }
            _ => identity_certificate(&key, &request),
        }
        .map_err(|e| e.to_string())?;
        // An ECDSA or RSA certificate has an identity of its own.
        let identity = of_pem(cert_pem.as_bytes())?;
        let key_pem = if self.encrypt {
            let password = super::password::read("Password for the private key: ")?;
            encrypt_pem(&key_pem, &password)?
        } else {
            key_pem
        };
        use crate::files::{Mode, write_atomic};
        write_atomic(key_path, key_pem.as_bytes(), Mode::Private, self.force)?;
        write_atomic(cert_path, cert_pem.as_bytes(), Mode::Public, self.force)?;
        println!("{}", identity.as_str());
        Ok(())
    }
}

/// A PKCS#8 PEM private key, encrypted with `password`.
fn encrypt_pem(pem: &str, password: &str) -> Result<zeroize::Zeroizing<String>, String> {
    use pkcs8::der::pem::LineEnding;
    use rustls::pki_types::PrivateKeyDer;
    use rustls::pki_types::pem::PemObject;
    let der = match PrivateKeyDer::from_pem_slice(pem.as_bytes()) {
        Ok(PrivateKeyDer::Pkcs8(der)) => der,
        _ => return Err("internal: the new key is not PKCS#8".into()),
    };
    let info = pkcs8::PrivateKeyInfo::try_from(der.secret_pkcs8_der()).map_err(|e| e.to_string())?;
    let encrypted = info
        .encrypt(rand_core_06::OsRng, password.as_bytes())
        .map_err(|e| format!("cannot encrypt the key: {e}"))?;
    encrypted
        .to_pem("ENCRYPTED PRIVATE KEY", LineEnding::LF)
        .map_err(|e| format!("cannot encode the key: {e}"))
}

/// Print the identity of a certificate or an API key.
///
/// The identity is the hex SHA-256 of the certificate's public key; it is what
/// policies and admin.identity name. Reads standard input when given `-` or nothing.
///
/// Examples:
///
///   keyhost identity of minio.cert
///   keyhost identity of kes:v1:ACQpoGqx3rHHjT938Hfu5hVVQJHZWSqVI2Xp1KlYxFVw
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct OfArgs {
    /// The hash function; KES servers use SHA-256 only (KES v0.16 flag).
    #[arg(long, value_name = "SHA-256", default_value = "SHA-256")]
    hash: String,
    /// A certificate file (PEM), an API key, or `-` for standard input.
    source: Option<String>,
}

impl OfArgs {
    fn run(self) -> Result<(), String> {
        if !self.hash.eq_ignore_ascii_case("sha-256") && !self.hash.eq_ignore_ascii_case("sha256") {
            return Err(format!(
                "--hash {}: servers compute identities with SHA-256 only",
                self.hash
            ));
        }
        let identity = match self.source.as_deref() {
            Some(text) if text.starts_with("kes:v1:") => ApiKey::parse(text)
                .map_err(|e| format!("not a valid API key: {e}"))?
                .identity(),
            Some(path) if path != "-" => {
                let pem = std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))?;
                of_pem(&pem).map_err(|e| format!("{path}: {e}"))?
            }
            _ => {
                let mut pem = Vec::new();
                std::io::stdin()
                    .read_to_end(&mut pem)
                    .map_err(|e| format!("cannot read standard input: {e}"))?;
                of_pem(&pem).map_err(|e| format!("standard input: {e}"))?
            }
        };
        println!("{}", identity.as_str());
        Ok(())
    }
}

fn of_pem(pem: &[u8]) -> Result<Identity, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("not a PEM certificate: {e}"))?;
    if certs.is_empty() {
        return Err("no certificate (expected -----BEGIN CERTIFICATE-----)".into());
    }
    keyhost_policy::identity_of_chain(certs.iter().map(|c| c.as_ref()), keyhost_policy::ChainRule::Newest)
        .map_err(|e| e.to_string())
}
