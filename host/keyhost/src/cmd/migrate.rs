//! `keyhost migrate`: copy keys from one keystore to another, or re-seal the
//! records of one keystore in place.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use keyhost_config::{Config, KeystoreConfig};
use keyhost_files::PrivateDir;
use keyhost_keystore::{Error, Keystore};
use keyhost_seal::{SealedStore, Sealer, Sealing};

/// Copy keys from the keystore of one configuration to the keystore of another,
/// or re-seal the records of one keystore (--reseal).
///
/// Records are copied byte for byte, so keys of every era stay readable by every
/// server that could read them before; where either side has keystore.seal, records
/// are opened with the source's key-encryption keys and sealed with the
/// destination's (a destination without keystore.seal receives them unsealed, as
/// KES can read them). Both files may be in either KES schema; only their keystore
/// sections are used, and both must name one (a file without one would mean the
/// in-memory store, which keeps nothing), and not the same one. Without --merge or
/// --force, a key that exists at the destination stops the migration before
/// anything is copied. With --force, the record each replaced key had is first
/// saved in a backup directory (a directory keystore: point keystore.fs.path at it
/// to serve or migrate those keys again).
///
/// --reseal FILE seals every record of FILE's keystore under its current
/// key-encryption key (the first of keystore.seal.keys): records sealed under an
/// older one, and records not sealed yet. Servers may keep running meanwhile, once
/// every one of them lists the current key. Each record is replaced by a delete and
/// a create, so it is absent for that moment; a server that has the key cached does
/// not notice.
///
/// Examples:
///
///   keyhost migrate --from old-kes.yaml --to keyhost.yaml --dry-run
///   keyhost migrate --from old-kes.yaml --to keyhost.yaml 'minio-*'
///   keyhost migrate --reseal keyhost.yaml --dry-run
///   keyhost migrate --reseal keyhost.yaml
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct MigrateArgs {
    /// The configuration whose keystore keys are copied from.
    #[arg(long, value_name = "FILE", required_unless_present = "reseal", requires = "to")]
    from: Option<PathBuf>,
    /// The configuration whose keystore keys are copied to.
    #[arg(long, value_name = "FILE", required_unless_present = "reseal", requires = "from")]
    to: Option<PathBuf>,
    /// Re-seal the records of this configuration's keystore under its current
    /// key-encryption key, instead of copying.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["from", "to", "merge", "force"])]
    reseal: Option<PathBuf>,
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
    /// Where --force and --reseal save the records they replace, as they were
    /// stored. An existing DIR must be a directory of this user closed to others
    /// (0700); a new one is created so [default: a new
    /// ./keyhost-migrate-backup-<seconds since 1970>-<random>].
    #[arg(long, value_name = "DIR")]
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
        let (from_path, to_path) = match (&self.reseal, &self.from, &self.to) {
            (Some(path), _, _) => return self.reseal(path).await,
            (None, Some(from), Some(to)) => (from, to),
            _ => return Err("give --from FILE and --to FILE, or --reseal FILE".into()),
        };
        if self.backup.is_some() && !self.force {
            return Err("--backup goes with --force or --reseal, which replace records".into());
        }
        let (from_config, to_config) = (Self::config(from_path)?, Self::config(to_path)?);
        if same_store(&from_config.keystore, &to_config.keystore) {
            return Err(format!(
                "{} and {} name the same keystore; a migration needs two \
                 (to seal or re-seal the records of one keystore, use --reseal)",
                from_path.display(),
                to_path.display()
            ));
        }
        let from = super::keystore::open(
            &from_config.keystore,
            from_config.seal.as_ref(),
            &from_path.display().to_string(),
        )
        .await?;
        let to = super::keystore::open(
            &to_config.keystore,
            to_config.seal.as_ref(),
            &to_path.display().to_string(),
        )
        .await?;
        let prefix = self.pattern.strip_suffix('*').unwrap_or(&self.pattern);
        let names = list_all(&*from, prefix).await.map_err(|e| format!("the source: {e}"))?;
        let mut existing = Vec::new();
        for name in &names {
            match to.inner().get(name).await {
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
        let backup = if self.force && !existing.is_empty() {
            Some(self.backup_dir().map_err(|e| format!("{e}; nothing was copied"))?)
        } else {
            None
        };
        // Every record about to be replaced is saved before any is replaced: a
        // backup that cannot be written stops the migration with nothing changed.
        let mut previous = std::collections::HashMap::new();
        if let Some(dir) = &backup {
            for name in &existing {
                let old = to
                    .inner()
                    .get(name)
                    .await
                    .map_err(|e| format!("cannot read '{name}' at the destination: {e}; nothing was copied"))?;
                dir.write_new(&backup_file_name(name), &old)
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
                    replace(&to, name, &record, old).await?;
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
                "the {} replaced keys' previous records are in {} (point keystore.fs.path at it, with the \
                 destination's keystore.seal if it has one, to restore them)",
                existing.len(),
                dir.path().display()
            );
        }
        Ok(())
    }
}

impl MigrateArgs {
    /// `--reseal`: every record under the current KEK.
    async fn reseal(&self, path: &Path) -> Result<(), String> {
        let config = Self::config(path)?;
        let file = path.display().to_string();
        let Some(seal) = &config.seal else {
            return Err(format!(
                "{file}: keystore.seal is not configured; --reseal seals every record under its first key, \
                 so add keystore.seal (to take records out of sealing, migrate them to a keystore without it)"
            ));
        };
        let inner = super::keystore::open_unsealed(&config.keystore, &file).await?;
        let sealer = Arc::new(keyhost_seal::kek::load(seal, &file, &|name| std::env::var(name).ok()).await?);
        // The server's acceptance rules: a record the server refuses (one planted
        // unsealed in the backend, under `unsealed: refuse`) is skipped, never
        // sealed, so that a re-seal cannot launder it into a record the server serves.
        let rule = super::keystore::unsealed_rule(Some(seal));
        let store = SealedStore::new(inner.clone(), Some(sealer.clone())).with_unsealed(rule);
        let current = sealer.current().to_owned();
        let prefix = self.pattern.strip_suffix('*').unwrap_or(&self.pattern);
        let names = list_all(&*inner, prefix).await?;

        // First, what there is: how many records under each KEK, and how many plain.
        let mut records = Vec::with_capacity(names.len());
        let mut by_kek = std::collections::BTreeMap::<String, usize>::new();
        for name in names {
            match inner.get(&name).await {
                Ok(stored) => {
                    let label = match Sealer::inspect(&stored) {
                        Sealing::Plain if rule == keyhost_seal::Unsealed::Refuse => {
                            "not sealed, refused (keystore.seal.unsealed: refuse)".to_owned()
                        }
                        Sealing::Plain => "not sealed".to_owned(),
                        Sealing::Sealed(id) if id == current => format!("sealed under {id} (current)"),
                        Sealing::Sealed(id) if sealer.ids().any(|k| k == id) => format!("sealed under {id}"),
                        Sealing::Sealed(id) => format!("sealed under {id}, which is not configured"),
                        Sealing::Malformed => "sealed in a form this build does not read".to_owned(),
                    };
                    *by_kek.entry(label).or_default() += 1;
                    records.push((name, stored));
                }
                Err(Error::NotFound) => {}
                Err(e) => return Err(format!("cannot read '{name}': {e}; nothing was changed")),
            }
        }
        println!("{} records in the keystore of {file}:", records.len());
        for (label, count) in &by_kek {
            println!("  {count:>8}  {label}");
        }
        let is_current = |stored: &[u8]| Sealer::inspect(stored) == Sealing::Sealed(current.clone());
        if self.dry_run {
            let (mut todo, mut unopened) = (0usize, 0usize);
            // Every record is opened, those under the current KEK too: the count of
            // those that do not open is complete.
            for (name, stored) in &records {
                match store.open(name, stored.clone()) {
                    Ok(_) if is_current(stored) => {}
                    Ok(_) => todo += 1,
                    Err(e) => {
                        unopened += 1;
                        eprintln!("  {e}");
                    }
                }
            }
            println!(
                "{todo} would be sealed under {current}; {unopened} would be skipped (they do not open, or the \
                 configuration refuses them); dry run, nothing changed"
            );
            return Ok(());
        }

        let todo = records.iter().filter(|(_, stored)| !is_current(stored)).count();
        if todo == 0 {
            println!("every record is sealed under {current}; nothing to do");
            print_refuse_hint(seal.refuse_unsealed, &current);
            return Ok(());
        }
        // Each record is saved, as it was stored, before it is replaced: whatever
        // happens to the keystore between the delete and the create, the record is
        // on disk.
        let backup = self.backup_dir().map_err(|e| format!("{e}; nothing was changed"))?;
        let tty = std::io::stderr().is_terminal();
        let total = records.len();
        let step = (total / 10).max(1);
        let (mut resealed, mut already, mut changed) = (0usize, 0usize, 0usize);
        let mut failed = Vec::new();
        for (i, (name, stored)) in records.into_iter().enumerate() {
            if is_current(&stored) {
                already += 1;
            } else {
                match store.open(&name, stored.clone()) {
                    Err(e) => failed.push(e.to_string()),
                    Ok(record) => {
                        // Read again just before replacing: a record a server deleted
                        // or wrote since is that server's, and is left as it is.
                        match inner.get(&name).await {
                            Ok(now) if now == stored => {
                                let saved = backup.write_new(&backup_file_name(&name), &stored).map_err(|e| {
                                    format!("cannot save the record of '{name}': {e}; it was left as it is")
                                })?;
                                reseal_one(&store, &name, &record, &stored, &saved)
                                    .await
                                    .map_err(|e| format!("{e} ({resealed} records sealed before it)"))?;
                                resealed += 1;
                            }
                            Ok(_) | Err(Error::NotFound) => changed += 1,
                            Err(e) => {
                                return Err(format!(
                                    "cannot read '{name}': {e} ({resealed} records sealed before it)"
                                ));
                            }
                        }
                    }
                }
            }
            let done = i + 1;
            if tty {
                let mut err = std::io::stderr();
                let _ = write!(err, "\r{done}/{total} {name:<40}");
                let _ = err.flush();
            } else if done % step == 0 || done == total {
                eprintln!("{done}/{total} records done");
            }
        }
        if tty {
            eprintln!();
        }
        println!(
            "{resealed} records sealed under {current}, {already} already were, \
             {changed} changed by a server meanwhile (left as written)"
        );
        println!(
            "the records as they were before are in {} (delete it once the keys are known to work)",
            backup.path().display()
        );
        if failed.is_empty() {
            if changed == 0 {
                print_refuse_hint(seal.refuse_unsealed, &current);
            }
            Ok(())
        } else {
            for why in failed.iter().take(20) {
                eprintln!("  skipped: {why}");
            }
            Err(format!(
                "{} records were skipped and left as they are: they do not open, or keystore.seal.unsealed \
                 refuses them as the server does (the first are listed above). A record not sealed may have \
                 been planted in the backend: check that each listed one was written by this deployment \
                 (before sealing was switched on) before re-sealing with unsealed: serve, which seals every \
                 record not sealed that it finds",
                failed.len()
            ))
        }
    }
}

/// Says that unsealed records may now be refused, unless they are.
fn print_refuse_hint(refused: bool, current: &str) {
    if !refused {
        println!(
            "every record is sealed under {current} now: set keystore.seal.unsealed: refuse, so that a record \
             planted unsealed in the backend is refused rather than served"
        );
    }
}

impl MigrateArgs {
    /// Where replaced records are saved, private to keyhost's user: `--backup DIR`,
    /// created 0700 when it does not exist, or else used only when it is a
    /// directory of that user closed to others (not a link); by default a new
    /// directory `./keyhost-migrate-backup-<seconds since 1970>-<random>`, whose
    /// name cannot be foreseen, created fresh (an existing one is refused).
    ///
    /// The directory is held open once checked, and records are written through
    /// that handle: whatever is done to its path meanwhile, they land in the
    /// directory that was checked.
    fn backup_dir(&self) -> Result<PrivateDir, String> {
        let Some(dir) = &self.backup else {
            let secs = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let dir = PathBuf::from(format!("keyhost-migrate-backup-{secs}-{:08x}", rand::random::<u32>()));
            return PrivateDir::create(&dir).map_err(|e| format!("the backup directory: {e}"));
        };
        match std::fs::symlink_metadata(dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => PrivateDir::create(dir),
            _ => PrivateDir::open(dir),
        }
        .map_err(|e| format!("--backup: {e}"))
    }
}

/// Replaces the record of `name` (`stored`, saved in the file `saved`) with
/// `record` sealed under the current KEK. If the create fails, the previous record
/// is put back (three tries); if someone else created the name in between, that
/// is said, with where the previous record is.
async fn reseal_one(store: &SealedStore, name: &str, record: &[u8], stored: &[u8], saved: &Path) -> Result<(), String> {
    let inner = store.inner();
    inner
        .delete(name)
        .await
        .map_err(|e| format!("cannot replace '{name}': {e}; it was left as it is"))?;
    let e = match store.create(name, record).await {
        Ok(()) => return Ok(()),
        Err(e) => e,
    };
    let mut last = None;
    for attempt in 0..3u32 {
        if attempt > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(200 << attempt)).await;
        }
        match inner.create(name, stored).await {
            Ok(()) => return Err(format!("cannot write '{name}': {e}; it has its previous record again")),
            Err(Error::AlreadyExists) => {
                return Err(format!(
                    "'{name}' was created anew by someone else between the delete and the create of its re-seal \
                     ({e}); its previous record is saved in {}: compare the two and put back the one that \
                     is in use",
                    saved.display()
                ));
            }
            Err(r) => last = Some(r),
        }
    }
    Err(format!(
        "cannot write '{name}': {e}; putting its previous record back failed too ({}); it is saved in {}",
        last.map(|r| r.to_string()).unwrap_or_default(),
        saved.display()
    ))
}

/// Every name in `store` that starts with `prefix`.
async fn list_all(store: &dyn Keystore, prefix: &str) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store
            .list(prefix, after.as_deref(), 1000)
            .await
            .map_err(|e| format!("cannot list the keystore: {e}"))?;
        names.extend(page.names);
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(names),
        }
    }
}

/// Replaces `name` at `to` with `record` (sealed as `to` seals); the record it had
/// as stored (`old`) is saved in the backup directory already, and is put back if
/// the new one cannot be written.
async fn replace(to: &SealedStore, name: &str, record: &[u8], old: &[u8]) -> Result<(), String> {
    to.delete(name)
        .await
        .map_err(|e| format!("cannot replace '{name}': {e}"))?;
    if let Err(e) = to.create(name, record).await {
        let restored = match to.inner().create(name, old).await {
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
