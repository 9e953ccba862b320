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
//! - [`PrivateDir`]: such a directory, held open once checked: files are created
//!   in it through the open handle, so the directory checked is the one written,
//!   whatever is done to its path afterwards (renamed, replaced by a link).

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
    /// It cannot be written.
    #[error("cannot write {path}: {error}")]
    Write {
        /// The path.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// A file to be written new exists already (it is left as it is).
    #[error("{path} exists already, and is left as it is")]
    Taken {
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

/// A private directory held open: checked once (it is keyhost's user's, closed
/// to others, not a link), then written through its handle, so that files land in
/// the directory that was checked even if its path is renamed or replaced by a
/// link to somewhere else in between.
#[derive(Debug)]
pub struct PrivateDir {
    dir: std::os::fd::OwnedFd,
    path: PathBuf,
}

impl PrivateDir {
    /// Creates `path` as [`create_private_dir`] does, makes its entry durable
    /// (the parent directory is synced), and opens it.
    ///
    /// # Errors
    ///
    /// As [`create_private_dir`] and [`PrivateDir::open`].
    pub fn create(path: &Path) -> Result<Self, FileError> {
        create_private_dir(path)?;
        // The new entry is durable once its parent is: what is written into the
        // directory must not vanish with it in a crash.
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        std::fs::File::open(parent)
            .and_then(|dir| dir.sync_all())
            .map_err(|error| FileError::Write {
                path: parent.to_owned(),
                error,
            })?;
        Self::open(path)
    }

    /// Opens the existing directory `path` (a symbolic link is not followed) and
    /// checks the directory opened as [`check_private_dir`] does.
    ///
    /// # Errors
    ///
    /// [`FileError`] naming the path and the fix.
    pub fn open(path: &Path) -> Result<Self, FileError> {
        use rustix::fs::{Mode, OFlags};
        let fail = |error: rustix::io::Errno| FileError::Read {
            path: path.to_owned(),
            error: error.into(),
        };
        let dir = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR => FileError::Kind {
                path: path.to_owned(),
                expected: "directory (a symbolic link is not followed)",
            },
            e => fail(e),
        })?;
        let stat = rustix::fs::fstat(&dir).map_err(fail)?;
        let user = effective_user();
        if stat.st_uid != user {
            return Err(FileError::Owner {
                path: path.to_owned(),
                owner: stat.st_uid,
                user,
            });
        }
        let mode = stat.st_mode & 0o7777;
        if mode & 0o077 != 0 {
            return Err(FileError::Mode {
                path: path.to_owned(),
                mode,
                fix: 0o700,
            });
        }
        Ok(Self {
            dir,
            path: path.to_owned(),
        })
    }

    /// The path the directory was opened at (for messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `bytes` to a new file `name` in the directory, `0600`: into a
    /// temporary file first, synced, then renamed onto `name` unless `name` exists
    /// (a link at `name` is not followed, and an existing file is never replaced).
    /// The directory is synced after the rename, so the file is durable when this
    /// returns. Returns the file's path.
    ///
    /// # Errors
    ///
    /// [`FileError::Taken`] if `name` exists, or why it could not be written;
    /// nothing is left behind then.
    pub fn write_new(&self, name: &str, bytes: &[u8]) -> Result<PathBuf, FileError> {
        use rustix::fs::{Mode, OFlags};
        use std::io::Write;
        let path = self.path.join(name);
        let fail = |error: std::io::Error| FileError::Write {
            path: path.clone(),
            error,
        };
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(FileError::Kind {
                path: path.clone(),
                expected: "plain file name",
            });
        }
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let (temp, file) = {
            let mut tries = 0;
            loop {
                let temp = format!(
                    ".keyhost-{}-{}",
                    std::process::id(),
                    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                );
                match rustix::fs::openat(
                    &self.dir,
                    temp.as_str(),
                    OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                ) {
                    Ok(fd) => break (temp, std::fs::File::from(fd)),
                    Err(rustix::io::Errno::EXIST) if tries < 16 => tries += 1,
                    Err(e) => return Err(fail(e.into())),
                }
            }
        };
        let result = (|| {
            let mut file = file;
            file.write_all(bytes)?;
            // The umask may have taken bits away, never added them; the mode is
            // 0600 already.
            file.sync_all()?;
            match rustix::fs::renameat_with(
                &self.dir,
                temp.as_str(),
                &self.dir,
                name,
                rustix::fs::RenameFlags::NOREPLACE,
            ) {
                // File systems without RENAME_NOREPLACE (NFS, some FUSE): a hard
                // link, which never replaces either, then the temporary name goes.
                Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS) => {
                    rustix::fs::linkat(&self.dir, temp.as_str(), &self.dir, name, rustix::fs::AtFlags::empty())?;
                    rustix::fs::unlinkat(&self.dir, temp.as_str(), rustix::fs::AtFlags::empty())?;
                    Ok(())
                }
                other => other,
            }
            .map_err(std::io::Error::from)
        })();
        if let Err(e) = result {
            let _ = rustix::fs::unlinkat(&self.dir, temp.as_str(), rustix::fs::AtFlags::empty());
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                return Err(FileError::Taken { path });
            }
            return Err(fail(e));
        }
        rustix::fs::fsync(&self.dir).map_err(|e| fail(e.into()))?;
        Ok(path)
    }
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

    /// The attack: the backup directory is checked, then its path is swapped for
    /// a link to a directory another user reads. Files still land in the
    /// directory that was checked.
    #[test]
    fn a_private_dir_swapped_for_a_link_after_its_check_is_still_the_one_written() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("backup");
        let dir = PrivateDir::create(&path).unwrap();
        let elsewhere = root.path().join("attacker");
        std::fs::create_dir(&elsewhere).unwrap();
        let moved = root.path().join("moved");
        std::fs::rename(&path, &moved).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &path).unwrap();
        dir.write_new("key-a", b"record").unwrap();
        assert_eq!(std::fs::read(moved.join("key-a")).unwrap(), b"record");
        assert!(
            std::fs::read_dir(&elsewhere).unwrap().next().is_none(),
            "written through the link"
        );
        let mode = std::fs::metadata(moved.join("key-a")).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // Opened anew, the link is refused.
        assert!(
            matches!(PrivateDir::open(&path), Err(FileError::Kind { .. })),
            "a link was opened"
        );
    }

    #[test]
    fn a_private_dir_never_replaces_a_file_nor_writes_through_a_link() {
        let root = tempfile::tempdir().unwrap();
        let dir = PrivateDir::create(&root.path().join("backup")).unwrap();
        dir.write_new("a", b"first").unwrap();
        assert!(matches!(dir.write_new("a", b"second"), Err(FileError::Taken { .. })));
        assert_eq!(std::fs::read(dir.path().join("a")).unwrap(), b"first");
        let victim = root.path().join("victim");
        std::fs::write(&victim, b"untouched").unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join("b")).unwrap();
        assert!(matches!(dir.write_new("b", b"secret"), Err(FileError::Taken { .. })));
        assert_eq!(std::fs::read(&victim).unwrap(), b"untouched");
        for bad in ["", ".", "..", "x/y"] {
            assert!(dir.write_new(bad, b"secret").is_err(), "{bad:?}");
        }
        // Nothing is left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.starts_with(".keyhost-")), "{names:?}");
        // A directory others may read is refused when opened.
        let open = root.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(matches!(PrivateDir::open(&open), Err(FileError::Mode { .. })));
    }
}
