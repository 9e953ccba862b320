//! The on-disk cache of precompiled plugins.
//!
//! Compiling a component takes from tens of milliseconds to seconds; loading its
//! precompiled artifact takes milliseconds. Artifacts are keyed by the SHA-256 of the
//! component and by the engine's compatibility hash (wasmtime version and every
//! setting that affects code generation), so a changed plugin or a changed host
//! never picks up a stale artifact.
//!
//! Deserializing an artifact means running the machine code inside it, so the cache
//! loads only what this host wrote: the directory is created with mode 0700, it and
//! every artifact must be owned by the effective user and writable by nobody else,
//! and each file starts with the SHA-256 of the rest, checked before deserializing.
//! Anything that fails a check is ignored (and recompiled), never loaded.

use std::fs;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

#[derive(Debug, Clone)]
pub(crate) struct ArtifactCache {
    dir: PathBuf,
}

impl ArtifactCache {
    /// Opens (creating if needed) the cache directory.
    pub(crate) fn open(dir: &Path) -> Result<Self, String> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot create the plugin cache directory {}: {e}", dir.display()))?;
        let meta = fs::metadata(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
        if !trusted(&meta) {
            return Err(format!(
                "the plugin cache directory {} must be owned by this user and writable by nobody else (chmod 700)",
                dir.display()
            ));
        }
        Ok(Self { dir: dir.to_owned() })
    }

    fn path(&self, engine: &Engine, wasm_sha256: &[u8; 32]) -> PathBuf {
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        self.dir
            .join(format!("{}-{:016x}.cwasm", hex::encode(wasm_sha256), hasher.finish()))
    }

    /// The cached artifact for this component, if there is a trustworthy one.
    pub(crate) fn load(&self, engine: &Engine, wasm_sha256: &[u8; 32]) -> Option<Component> {
        let path = self.path(engine, wasm_sha256);
        let meta = fs::symlink_metadata(&path).ok()?;
        if !meta.is_file() || !trusted(&meta) {
            tracing::warn!(path = %path.display(), "ignoring a plugin artifact not written by this user");
            return None;
        }
        let bytes = fs::read(&path).ok()?;
        let (digest, artifact) = bytes.split_at_checked(32)?;
        if Sha256::digest(artifact).as_slice() != digest {
            tracing::warn!(path = %path.display(), "ignoring a corrupt plugin artifact");
            return None;
        }
        // SAFETY: `artifact` was produced by `Component::serialize` of this host (the
        // file is owned by our user, writable only by it, in a 0700 directory, and its
        // digest matches); wasmtime itself rejects artifacts of another engine
        // configuration or version.
        #[expect(unsafe_code, reason = "the one audited unsafe block: see SAFETY above")]
        let component = unsafe { Component::deserialize(engine, artifact) };
        match component {
            Ok(component) => Some(component),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "ignoring an unusable plugin artifact");
                None
            }
        }
    }

    /// Stores the artifact of `component`; failures only cost a recompilation later.
    pub(crate) fn store(&self, engine: &Engine, wasm_sha256: &[u8; 32], component: &Component) {
        let path = self.path(engine, wasm_sha256);
        let result = component.serialize().map_err(|e| e.to_string()).and_then(|artifact| {
            let mut tmp = tempfile_in(&self.dir)?;
            tmp.1.write_all(&Sha256::digest(&artifact)).map_err(|e| e.to_string())?;
            tmp.1.write_all(&artifact).map_err(|e| e.to_string())?;
            tmp.1.sync_all().map_err(|e| e.to_string())?;
            fs::rename(&tmp.0, &path).map_err(|e| {
                let _ = fs::remove_file(&tmp.0);
                e.to_string()
            })
        });
        if let Err(e) = result {
            tracing::warn!(path = %path.display(), error = %e, "cannot cache the compiled plugin");
        }
    }
}

fn tempfile_in(dir: &Path) -> Result<(PathBuf, fs::File), String> {
    let path = dir.join(format!(".tmp-{}-{:x}", std::process::id(), rand_u64()));
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| e.to_string())?;
    Ok((path, file))
}

fn rand_u64() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(std::time::SystemTime::now())
}

fn trusted(meta: &fs::Metadata) -> bool {
    meta.uid() == rustix::process::geteuid().as_raw() && meta.permissions().mode() & 0o022 == 0
}

use std::os::unix::fs::OpenOptionsExt;
