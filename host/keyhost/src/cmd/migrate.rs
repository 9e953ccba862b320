//! `keyhost migrate`: copy keys from one keystore to another.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use keyhost_config::{Config, KeystoreConfig};
use keyhost_keystore::{Error, Keystore};

/// Copy keys from the keystore of one configuration to the keystore of another.
///
/// Records are copied byte for byte, so keys of every era stay readable by every
/// server that could read them before. Both files may be in either KES schema;
/// only their keystore sections are used, and both must name one (a file without
/// one would mean the in-memory store, which keeps nothing), and not the same one.
/// Without --merge or --force, a key that exists at the destination stops the
/// migration before anything is copied. With --force, the record each replaced key
/// had is first saved in a backup directory (a directory keystore: point
/// keystore.fs.path at it to serve or migrate those keys again).
///
/// Examples:
///
///   keyhost migrate --from old-kes.yaml --to keyhost.yaml --dry-run
///   keyhost migrate --from old-kes.yaml --to keyhost.yaml 'minio-*'
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct MigrateArgs {
    /// The configuration whose keystore keys are copied from.
    #[arg(long, value_name = "FILE")]
    from: PathBuf,
    /// The configuration whose keystore keys are copied to.
    #[arg(long, value_name = "FILE")]
    to: PathBuf,
    /// Only keys whose names start with this prefix (a trailing `*` is allowed).
    #[arg(default_value = "*")]
    pattern: String,
    /// Show what would be copied; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Skip keys that already exist at the destination.
    #[arg(long, conflicts_with = "force")]
    merge: bool,
    /// Replace keys that already exist at the destination (their records are
    /// saved in the backup directory first).
    #[arg(short, long)]
    force: bool,
    /// Where --force saves the records it replaces [default:
    /// ./keyhost-migrate-backup-<seconds since 1970>].
    #[arg(long, value_name = "DIR", requires = "force")]
    backup: Option<PathBuf>,
}

impl MigrateArgs {
    pub async fn run(self) -> ExitCode {
        match self.migrate().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(1)
            }
        }
    }

    fn config(path: &std::path::Path) -> Result<Config, String> {
        let config = Config::load(path).map_err(|e| e.to_string())?;
        if config.keystore == KeystoreConfig::Memory {
            return Err(format!(
                "{}: no keystore section, so this is the in-memory store, which keeps nothing; \
                 name the keystore (keystore.fs, keystore.aws or keystore.plugin)",
                path.display()
            ));
        }
        Ok(config)
    }

    async fn migrate(&self) -> Result<(), String> {
        let (from_config, to_config) = (Self::config(&self.from)?, Self::config(&self.to)?);
        if same_store(&from_config.keystore, &to_config.keystore) {
            return Err(format!(
                "{} and {} name the same keystore; a migration needs two",
                self.from.display(),
                self.to.display()
            ));
        }
        let from = super::keystore::open(&from_config.keystore, &self.from.display().to_string()).await?;
        let to = super::keystore::open(&to_config.keystore, &self.to.display().to_string()).await?;
        let prefix = self.pattern.strip_suffix('*').unwrap_or(&self.pattern);
        let mut names = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = from
                .list(prefix, after.as_deref(), 1000)
                .await
                .map_err(|e| format!("cannot list the source keystore: {e}"))?;
            names.extend(page.names);
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        let mut existing = Vec::new();
        for name in &names {
            match to.get(name).await {
                Ok(_) => existing.push(name.clone()),
                Err(Error::NotFound) => {}
                Err(e) => return Err(format!("cannot read '{name}' at the destination: {e}")),
            }
        }
        if !existing.is_empty() && !self.merge && !self.force {
            return Err(format!(
                "{} of {} keys already exist at the destination (e.g. '{}'); nothing was copied. \
                 Use --merge to skip them or --force to replace them",
                existing.len(),
                names.len(),
                existing[0]
            ));
        }
        if self.dry_run {
            for name in &names {
                let what = match (existing.contains(name), self.force) {
                    (false, _) => "copy",
                    (true, true) => "replace",
                    (true, false) => "skip (exists)",
                };
                println!("{what:<14} {name}");
            }
            println!("{} keys; dry run, nothing changed", names.len());
            return Ok(());
        }
        let tty = std::io::stderr().is_terminal();
        let backup = match (&self.backup, self.force && !existing.is_empty()) {
            (_, false) => None,
            (Some(dir), true) => Some(dir.clone()),
            (None, true) => {
                let secs = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                Some(PathBuf::from(format!("keyhost-migrate-backup-{secs}")))
            }
        };
        // Every record about to be replaced is saved before any is replaced: a
        // backup that cannot be written stops the migration with nothing changed.
        let mut previous = std::collections::HashMap::new();
        if let Some(dir) = &backup {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| format!("--backup: cannot create {}: {e}; nothing was copied", dir.display()))?;
            for name in &existing {
                let old = to
                    .get(name)
                    .await
                    .map_err(|e| format!("cannot read '{name}' at the destination: {e}; nothing was copied"))?;
                crate::files::write_atomic(
                    &dir.join(backup_file_name(name)),
                    &old,
                    crate::files::Mode::Private,
                    false,
                )
                .map_err(|e| format!("cannot save the record '{name}' had: {e}; nothing was copied"))?;
                previous.insert(name.clone(), old);
            }
        }
        let (mut copied, mut skipped) = (0usize, 0usize);
        for (i, name) in names.iter().enumerate() {
            let exists = existing.contains(name);
            if exists && !self.force {
                skipped += 1;
            } else {
                let record = from.get(name).await.map_err(|e| format!("cannot read '{name}': {e}"))?;
                if let Some(old) = previous.get(name) {
                    replace(&*to, name, &record, old).await?;
                } else {
                    to.create(name, &record)
                        .await
                        .map_err(|e| format!("cannot write '{name}' ({copied} keys copied so far): {e}"))?;
                }
                copied += 1;
            }
            if tty {
                let mut err = std::io::stderr();
                let _ = write!(err, "\r{}/{} {name:<40}", i + 1, names.len());
                let _ = err.flush();
            }
        }
        if tty {
            eprintln!();
        }
        println!("{copied} keys copied, {skipped} skipped (already at the destination)");
        if let Some(dir) = &backup {
            println!(
                "the {} replaced keys' previous records are in {} (point keystore.fs.path at it to restore them)",
                existing.len(),
                dir.display()
            );
        }
        Ok(())
    }
}

/// Replaces `name` at `to` with `record`; the record it had (`old`) is saved in
/// the backup directory already, and is put back if the new one cannot be written.
async fn replace(to: &dyn Keystore, name: &str, record: &[u8], old: &[u8]) -> Result<(), String> {
    to.delete(name)
        .await
        .map_err(|e| format!("cannot replace '{name}': {e}"))?;
    if let Err(e) = to.create(name, record).await {
        let restored = match to.create(name, old).await {
            Ok(()) => "it has its previous record again".to_owned(),
            Err(r) => format!("putting its previous record back failed too ({r}); it is saved in the backup directory"),
        };
        return Err(format!("cannot write '{name}': {e}; {restored}"));
    }
    Ok(())
}

/// The file a key's previous record is saved in: the name itself where it is a
/// plain file name (so the backup directory is a directory keystore), otherwise
/// with `%`, `/` and a leading `.` written as `%25`, `%2F` and `%2E`.
fn backup_file_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for (i, c) in name.chars().enumerate() {
        match c {
            '%' => out.push_str("%25"),
            '/' => out.push_str("%2F"),
            '\0' => out.push_str("%00"),
            '.' if i == 0 => out.push_str("%2E"),
            c => out.push(c),
        }
    }
    out
}

/// Whether two keystore sections name the same store: the same directory (however
/// spelt), or the same AWS endpoint and region.
fn same_store(a: &KeystoreConfig, b: &KeystoreConfig) -> bool {
    fn dir(k: &KeystoreConfig) -> Option<PathBuf> {
        let path = match k {
            KeystoreConfig::Fs { path } => path.clone(),
            KeystoreConfig::Plugin(p) => p.allow_dir.clone()?,
            _ => return None,
        };
        Some(std::fs::canonicalize(&path).unwrap_or(path))
    }
    match (a, b) {
        (KeystoreConfig::AwsSecretsManager(a), KeystoreConfig::AwsSecretsManager(b)) => {
            a.endpoint == b.endpoint && a.region == b.region
        }
        _ => dir(a).is_some() && dir(a) == dir(b) || a == b,
    }
}
