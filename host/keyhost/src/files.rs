//! Writing files that hold secrets, and files that must not be half-written.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Who may read a file keyhost writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Only its owner (0600): private keys, API keys.
    Private,
    /// Everyone (0644): certificates.
    Public,
}

/// Writes `bytes` to `path` atomically: into a new file in the same directory
/// (created 0600, whatever the umask), synced, given `mode`, then renamed onto
/// `path`. The rename replaces a symbolic link at `path` itself and never writes
/// through it, and a reader never sees a half-written file. Without `overwrite`, an
/// existing `path` (even a dangling link) is an error and is left as it was.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8], mode: Mode, overwrite: bool) -> Result<(), String> {
    let fail = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut file = tempfile::Builder::new()
        .prefix(".keyhost-")
        .tempfile_in(dir)
        .map_err(fail)?;
    file.write_all(bytes).map_err(fail)?;
    let bits = match mode {
        Mode::Private => 0o600,
        Mode::Public => 0o644,
    };
    file.as_file()
        .set_permissions(std::fs::Permissions::from_mode(bits))
        .map_err(fail)?;
    file.as_file().sync_all().map_err(fail)?;
    if overwrite {
        file.persist(path).map_err(|e| fail(e.error))?;
    } else {
        file.persist_noclobber(path).map_err(|e| match e.error.kind() {
            std::io::ErrorKind::AlreadyExists => format!("{} exists; use --force to overwrite it", path.display()),
            _ => fail(e.error),
        })?;
    }
    // The rename is durable once the directory is.
    if let Ok(dir) = std::fs::File::open(dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn mode_of(path: &Path) -> u32 {
        std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{e}")).mode() & 0o777
    }

    /// A private file is 0600 even over an existing 0644 file, and a link at its
    /// path is replaced, not followed.
    #[test]
    fn private_files_are_0600_and_links_are_not_followed() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("key.pem");
        std::fs::write(&path, "old").unwrap_or_else(|e| panic!("{e}"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap_or_else(|e| panic!("{e}"));
        write_atomic(&path, b"secret", Mode::Private, true).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(mode_of(&path), 0o600);
        assert_eq!(std::fs::read(&path).unwrap_or_default(), b"secret");

        let victim = dir.path().join("victim");
        std::fs::write(&victim, "untouched").unwrap_or_else(|e| panic!("{e}"));
        let link = dir.path().join("link.pem");
        std::os::unix::fs::symlink(&victim, &link).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            write_atomic(&link, b"secret", Mode::Private, false)
                .unwrap_err()
                .contains("exists; use --force")
        );
        write_atomic(&link, b"secret", Mode::Private, true).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(std::fs::read(&victim).unwrap_or_default(), b"untouched");
        assert!(
            !std::fs::symlink_metadata(&link)
                .unwrap_or_else(|e| panic!("{e}"))
                .file_type()
                .is_symlink()
        );
        assert_eq!(mode_of(&link), 0o600);

        // A dangling link is not written through either.
        let dangling = dir.path().join("dangling.pem");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).unwrap_or_else(|e| panic!("{e}"));
        assert!(write_atomic(&dangling, b"secret", Mode::Private, false).is_err());
        assert!(!dir.path().join("nowhere").exists());
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap_or_else(|e| panic!("{e}"))
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.starts_with(".keyhost-")), "{names:?}");
    }
}
