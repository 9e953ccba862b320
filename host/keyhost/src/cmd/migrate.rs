//! `keyhost migrate`: copy keys from one keystore to another.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use keyhost_config::Config;
use keyhost_keystore::{Error, Keystore};

/// Copy keys from the keystore of one configuration to the keystore of another.
///
/// Records are copied byte for byte, so keys of every era stay readable by every
/// server that could read them before. Both files may be in either KES schema;
/// only their keystore sections are used. Without --merge or --force, a key that
/// exists at the destination stops the migration before anything is copied.
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
    /// Replace keys that already exist at the destination.
    #[arg(short, long)]
    force: bool,
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

    async fn open(path: &std::path::Path) -> Result<std::sync::Arc<dyn Keystore>, String> {
        let config = Config::load(path).map_err(|e| e.to_string())?;
        super::keystore::open(&config.keystore, &path.display().to_string()).await
    }

    async fn migrate(&self) -> Result<(), String> {
        let from = Self::open(&self.from).await?;
        let to = Self::open(&self.to).await?;
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
        let (mut copied, mut skipped) = (0usize, 0usize);
        for (i, name) in names.iter().enumerate() {
            let exists = existing.contains(name);
            if exists && !self.force {
                skipped += 1;
            } else {
                let record = from.get(name).await.map_err(|e| format!("cannot read '{name}': {e}"))?;
                if exists {
                    to.delete(name)
                        .await
                        .map_err(|e| format!("cannot replace '{name}': {e}"))?;
                }
                to.create(name, &record)
                    .await
                    .map_err(|e| format!("cannot write '{name}' ({copied} keys copied so far): {e}"))?;
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
        Ok(())
    }
}
