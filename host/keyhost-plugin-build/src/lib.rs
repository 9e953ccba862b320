//! Builds keyhost's guest crates (the `plugins/` workspace) for `wasm32-wasip2`.
//!
//! The guest crates form their own Cargo workspace, so that a plain `cargo build` of
//! the host never tries to compile them for the host target. The host's build script
//! (which embeds the bundled plugins) and the tests (which load the test plugins) call
//! [`build`], which runs `cargo build --release --target wasm32-wasip2` on that
//! workspace. Its artifacts go to `<target dir>/plugins`, where `<target dir>` is
//! `$CARGO_TARGET_DIR` if set and `target/` at the repository root otherwise, so every
//! build after the first is incremental and nothing is built twice.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The target the guest crates are built for.
pub const TARGET: &str = "wasm32-wasip2";

/// The repository root.
///
/// Found from the `CARGO_MANIFEST_DIR` that cargo sets for the build script, test
/// or benchmark now running, and only then from where this crate was compiled: a
/// target directory shared by two checkouts reuses this crate compiled in the
/// other one, whose path may be gone.
pub fn repo_root() -> PathBuf {
    let is_root = |dir: &Path| dir.join("plugins/Cargo.toml").is_file() && dir.join("wit").is_dir();
    if let Some(dir) = std::env::var_os("CARGO_MANIFEST_DIR")
        && let Some(root) = Path::new(&dir).ancestors().find(|d| is_root(d))
    {
        return root.to_path_buf();
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))
}

/// The guest workspace, `plugins/`.
pub fn plugins_dir() -> PathBuf {
    repo_root().join("plugins")
}

/// The WIT package, `wit/`.
pub fn wit_dir() -> PathBuf {
    repo_root().join("wit")
}

/// Where guest artifacts are written: `<target dir>/plugins`.
pub fn target_dir() -> PathBuf {
    let base = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if Path::new(&dir).is_absolute() => PathBuf::from(dir),
        Some(dir) => repo_root().join(dir),
        None => repo_root().join("target"),
    };
    base.join("plugins")
}

/// The component that [`build`] produces for `package`.
pub fn wasm_path(package: &str) -> PathBuf {
    target_dir()
        .join(TARGET)
        .join("release")
        .join(format!("{}.wasm", package.replace('-', "_")))
}

/// Variables that a surrounding cargo (build script or test run) sets and that must
/// not leak into the nested build: they describe the host crate, not the guests.
const LEAKY_VARS: &[&str] = &[
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_BUILD_TARGET",
    "CARGO_TARGET_DIR",
    "CARGO_MANIFEST_DIR",
    "CARGO_MANIFEST_PATH",
    "CARGO_PRIMARY_PACKAGE",
    "RUSTFLAGS",
    "RUSTDOCFLAGS",
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "TARGET",
    "HOST",
    "OUT_DIR",
    "PROFILE",
    "OPT_LEVEL",
    "DEBUG",
    "NUM_JOBS",
];

/// A `cargo` command run in `dir`, without the variables that a surrounding cargo
/// (build script or test run) sets for its own crate: the nested build must see
/// only its own project. Used for the guest workspace and for projects that
/// `keyhost plugin new` generates.
pub fn cargo_in(dir: &Path) -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let mut cmd = Command::new(cargo);
    cmd.current_dir(dir);
    without_cargo_env(&mut cmd);
    cmd
}

/// Removes from `cmd`'s environment the variables a surrounding cargo sets for its
/// own crate (target directory, flags, package metadata), so that a nested build,
/// or a script that runs one, sees only its own project.
pub fn without_cargo_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if LEAKY_VARS.contains(&key.as_ref())
            || key.starts_with("CARGO_PKG_")
            || key.starts_with("CARGO_CFG_")
            || key.starts_with("CARGO_FEATURE_")
            || key.starts_with("DEP_")
        {
            cmd.env_remove(key.as_ref());
        }
    }
}

/// Builds `packages` of the guest workspace (all of it when empty) in release mode and
/// returns the paths of their components, in the same order.
///
/// # Errors
///
/// Returns cargo's own output when the build fails, or a sentence saying how to
/// install the target when it is missing.
pub fn build(packages: &[&str]) -> Result<Vec<PathBuf>, String> {
    let mut cmd = cargo_in(&plugins_dir());
    cmd.arg("build")
        .arg("--release")
        .arg("--target")
        .arg(TARGET)
        .arg("--target-dir")
        .arg(target_dir());
    if packages.is_empty() {
        cmd.arg("--workspace");
    }
    for package in packages {
        cmd.arg("-p").arg(package);
    }
    let output = cmd
        .output()
        .map_err(|e| format!("cannot run cargo to build the plugins: {e}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let hint = if stderr.contains("may not be installed") || stderr.contains("can't find crate for `core`") {
            format!(
                "\nhint: install the target with `rustup target add {TARGET}` (rust-toolchain.toml lists it, so `rustup toolchain install` in the repository does it too)"
            )
        } else {
            String::new()
        };
        return Err(format!(
            "building the plugins in {} failed:\n{stderr}{hint}",
            plugins_dir().display()
        ));
    }
    Ok(packages.iter().map(|p| wasm_path(p)).collect())
}
