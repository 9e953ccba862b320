//! `keyhost identity`: make identities and compute them.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use keyhost_policy::{ApiKey, Identity};
use keyhost_server::dev::{CertificateRequest, identity_certificate};

/// Make identities and compute them.
#[derive(Debug, Subcommand)]
pub enum IdentityCommand {
    New(NewArgs),
    Of(OfArgs),
}

impl IdentityCommand {
    pub fn run(self) -> ExitCode {
        let result = match self {
            Self::New(args) => args.run(),
            Self::Of(args) => args.run(),
        };
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(1)
            }
        }
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
        let (cert_pem, key_pem) = identity_certificate(&key, &request).map_err(|e| e.to_string())?;
        write_private(key_path, key_pem.as_bytes(), self.force)?;
        std::fs::write(cert_path, cert_pem).map_err(|e| format!("cannot write {}: {e}", cert_path.display()))?;
        println!("{}", identity.as_str());
        Ok(())
    }
}

/// Writes a file only its owner can read.
fn write_private(path: &Path, bytes: &[u8], force: bool) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).mode(0o600);
    if force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let mut file = options
        .open(path)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
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
    keyhost_policy::identity_of_chain(certs.iter().map(|c| c.as_ref())).map_err(|e| e.to_string())
}
