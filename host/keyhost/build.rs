//! Records the commit the binary is built from, for `keyhost --version`:
//! `$KEYHOST_COMMIT` when set (a build from a source archive), else what git says
//! of the checkout, else `unknown`.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .filter(|s| !s.is_empty())
}

fn main() {
    println!("cargo::rerun-if-env-changed=KEYHOST_COMMIT");
    let commit = match std::env::var("KEYHOST_COMMIT").ok().filter(|c| !c.trim().is_empty()) {
        Some(commit) => commit.trim().to_owned(),
        None => {
            if let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]) {
                // A new commit or checkout changes these. (A path that does not
                // exist would make cargo run this script at every build.)
                for path in ["HEAD", "refs/heads", "packed-refs"] {
                    let path = std::path::Path::new(&dir).join(path);
                    if path.exists() {
                        println!("cargo::rerun-if-changed={}", path.display());
                    }
                }
            }
            git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".to_owned())
        }
    };
    println!("cargo::rustc-env=KEYHOST_COMMIT={commit}");
}
