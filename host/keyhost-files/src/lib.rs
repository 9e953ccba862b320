//! Files and directories that hold secrets: private keys, key-encryption keys,
//! backups of key records, reports.
//!
//! - [`read_secret`]: a secret is read only from a regular file that other users
//!   cannot read or change. The rule is PostgreSQL's for its TLS key: a file owned
//!   by the user keyhost runs as may be read by that user alone (`0600` or less);
//!   a file owned by root may also be read, but not written, by its group (`0640`
//!   or less) when that group is one of keyhost's own, which is how Kubernetes
//!   mounts a Secret for a pod's `fsGroup`. Any other owner is refused. Every check
//!   is of the file opened (`fstat`), then read from it, so nothing can be swapped
//!   in between; the file is opened without blocking, so a FIFO put at the path
//!   cannot hold start-up.
//! - [`create_private_dir`]: a directory made fresh, `0700`; an existing path is
//!   refused, so a directory another user prepared (and can read) is never used.
//! - [`check_private_dir`]: an existing directory that is the user's own, not a
//!   link, and closed to others.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

/// Why a secret file or a private directory is refused. Each message names the
/// path and how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// It cannot be opened or read.
    #[error("cannot read {path}: {error}")]
    Read {
        /// The path.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// It is not a regular file (or, for a directory, not a directory).
    #[error("{path} is not a {expected}")]
    Kind {
        /// The path.
        path: PathBuf,
        /// What it should be.
        expected: &'static str,
    },
    /// It belongs to a user other than keyhost's and root.
    #[error(
        "{path} belongs to user {owner}, not to the user keyhost runs as ({user}) or root; \
         a file holding a secret must belong to that user: chown {user} {path}"
    )]
    Owner {
        /// The path.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// keyhost's effective user.
        user: u32,
    },
    /// Its group may read it, and that group is not one of keyhost's.
    #[error(
        "{path} is readable by its group {group}, which is not a group of the user keyhost runs as; \
         only keyhost's own group may read a file holding a secret: chmod 600 {path}, or chgrp it"
    )]
    Group {
        /// The path.
        path: PathBuf,
        /// Its group.
        group: u32,
    },
    /// Other users may read or change it.
    #[error(
        "{path} has mode {mode:04o}, so users other than its owner may read or change it; \
         a file holding a secret must be readable by its owner alone: chmod {fix:o} {path}"
    )]
    Mode {
        /// The path.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
        /// The mode to set.
        fix: u32,
    },
    /// It is larger than such a file can be.
    #[error("{path} has {len} bytes, more than the {max} a {what} can hold")]
    TooLarge {
        /// The path.
        path: PathBuf,
        /// Its length.
        len: u64,
        /// The most it may hold.
        max: u64,
        /// What it should hold.
        what: &'static str,
    },
    /// The path exists, and a fresh directory was asked for.
    #[error("{path} exists already; name a directory that does not exist yet (it is created, 0700)")]
    Exists {
        /// The path.
        path: PathBuf,
    },
}

fn effective_user() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Checks the owner and mode of an opened secret file.
fn check_secret(path: &Path, meta: &std::fs::Metadata) -> Result<(), FileError> {
    if !meta.is_file() {
        return Err(FileError::Kind {
            path: path.to_owned(),
            expected: "regular file",
        });
    }
    let user = effective_user();
    let mode = meta.mode() & 0o7777;
    let (allowed_other_bits, fix) = if meta.uid() == user {
        (0o077, 0o600)
    } else if meta.uid() == 0 {
        // Root's file, readable by keyhost through its group (Kubernetes' fsGroup).
        (0o037, 0o640)
    } else {
        return Err(FileError::Owner {
            path: path.to_owned(),
            owner: meta.uid(),
            user,
        });
    };
    if mode & allowed_other_bits != 0 {
        return Err(FileError::Mode {
            path: path.to_owned(),
            mode,
            fix,
        });
    }
    if mode & 0o040 != 0 && !is_own_group(meta.gid()) {
        return Err(FileError::Group {
            path: path.to_owned(),
            group: meta.gid(),
        });
    }
    Ok(())
}

/// Whether keyhost's user is in `gid`: its effective group or a supplementary one.
fn is_own_group(gid: u32) -> bool {
    rustix::process::getegid().as_raw() == gid
        || rustix::process::getgroups().is_ok_and(|groups| groups.iter().any(|g| g.as_raw() == gid))
}

/// Reads a file that holds a secret (at most `max` bytes of a `what`), after
/// checking, on the file opened, that it is a regular file other users cannot read
/// or change (see the [crate] documentation for the rule). The bytes are wiped
/// when dropped.
///
/// # Errors
///
/// [`FileError`] naming the path and the fix.
pub fn read_secret(path: &Path, max: u64, what: &'static str) -> Result<Zeroizing<Vec<u8>>, FileError> {
    let read_error = |error| FileError::Read {
        path: path.to_owned(),
        error,
    };
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)
        .map_err(read_error)?;
    let meta = file.metadata().map_err(read_error)?;
    check_secret(path, &meta)?;
    if meta.len() > max {
        return Err(FileError::TooLarge {
            path: path.to_owned(),
            len: meta.len(),
            max,
            what,
        });
    }
    let mut bytes = Zeroizing::new(Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0) + 1));
    file.take(max + 1).read_to_end(&mut bytes).map_err(read_error)?;
    if bytes.len() as u64 > max {
        return Err(FileError::TooLarge {
            path: path.to_owned(),
            len: bytes.len() as u64,
            max,
            what,
        });
    }
    Ok(bytes)
}

/// Creates `path` as a new directory, `0700` whatever the umask; its parents are
/// created as needed (`0700` too). An existing `path`, whatever it is, is refused:
/// a directory that someone else made in advance is never written into.
///
/// # Errors
///
/// [`FileError::Exists`], or why it could not be created.
pub fn create_private_dir(path: &Path) -> Result<(), FileError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(|error| FileError::Read {
                path: parent.to_owned(),
                error,
            })?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(FileError::Exists { path: path.to_owned() });
        }
        Err(error) => {
            return Err(FileError::Read {
                path: path.to_owned(),
                error,
            });
        }
    }
    // The umask may have taken bits away, never added them; make sure.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).map_err(|error| FileError::Read {
        path: path.to_owned(),
        error,
    })
}

/// Checks that `path` is a directory of keyhost's user, not a symbolic link, and
/// closed to other users (no group or other bits), so that what is written into it
/// stays private.
///
/// # Errors
///
/// [`FileError`] naming the path and the fix.
pub fn check_private_dir(path: &Path) -> Result<(), FileError> {
    let meta = std::fs::symlink_metadata(path).map_err(|error| FileError::Read {
        path: path.to_owned(),
        error,
    })?;
    if !meta.is_dir() {
        return Err(FileError::Kind {
            path: path.to_owned(),
            expected: "directory (a symbolic link is not followed)",
        });
    }
    let user = effective_user();
    if meta.uid() != user {
        return Err(FileError::Owner {
            path: path.to_owned(),
            owner: meta.uid(),
            user,
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(FileError::Mode {
            path: path.to_owned(),
            mode,
            fix: 0o700,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn file_with_mode(dir: &Path, name: &str, mode: u32) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, b"secret").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn only_files_closed_to_others_are_read() {
        let dir = tempfile::tempdir().unwrap();
        for mode in [0o600, 0o400] {
            let path = file_with_mode(dir.path(), &format!("ok{mode:o}"), mode);
            assert_eq!(&read_secret(&path, 64, "key").unwrap()[..], b"secret");
        }
        // Owned by the running user (the tests' own): no group or other bits.
        for mode in [0o640, 0o604, 0o644, 0o660, 0o602, 0o620] {
            let path = file_with_mode(dir.path(), &format!("bad{mode:o}"), mode);
            let e = read_secret(&path, 64, "key").unwrap_err().to_string();
            assert!(
                e.contains(&format!("mode {mode:04o}")) && e.contains(&format!("chmod 600 {}", path.display())),
                "{e}"
            );
        }
    }

    #[test]
    fn links_are_followed_to_a_checked_file_and_other_kinds_refused() {
        let dir = tempfile::tempdir().unwrap();
        let target = file_with_mode(dir.path(), "target", 0o600);
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(
            read_secret(&link, 64, "key").is_ok(),
            "Kubernetes mounts Secrets as links"
        );
        let open = file_with_mode(dir.path(), "open", 0o644);
        let link = dir.path().join("link-open");
        std::os::unix::fs::symlink(&open, &link).unwrap();
        assert!(read_secret(&link, 64, "key").is_err(), "the file linked to is checked");
        let e = read_secret(dir.path(), 64, "key").unwrap_err().to_string();
        assert!(e.contains("is not a regular file"), "{e}");
        // A FIFO put at the path is refused at once, not waited on.
        let fifo = dir.path().join("fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let e = read_secret(&fifo, 64, "key").unwrap_err().to_string();
        assert!(e.contains("is not a regular file"), "{e}");
        let big = file_with_mode(dir.path(), "big", 0o600);
        std::fs::write(&big, [b'x'; 100]).unwrap();
        let e = read_secret(&big, 64, "key-encryption key").unwrap_err().to_string();
        assert!(e.contains("100 bytes") && e.contains("key-encryption key"), "{e}");
    }

    #[test]
    fn private_directories_are_fresh_and_closed() {
        let dir = tempfile::tempdir().unwrap();
        let fresh = dir.path().join("a/b/backup");
        create_private_dir(&fresh).unwrap();
        assert_eq!(std::fs::metadata(&fresh).unwrap().mode() & 0o777, 0o700);
        check_private_dir(&fresh).unwrap();
        let e = create_private_dir(&fresh).unwrap_err().to_string();
        assert!(e.contains("exists already"), "{e}");

        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
        let e = check_private_dir(&open).unwrap_err().to_string();
        assert!(e.contains("mode 0755") && e.contains("chmod 700"), "{e}");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&fresh, &link).unwrap();
        let e = check_private_dir(&link).unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");
    }
}
