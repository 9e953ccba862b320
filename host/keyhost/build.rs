//! Records the commit the binary is built from, for `keyhost --version`:
//! `$KEYHOST_COMMIT` when set (a build from a source archive), else what git says
//! of the checkout (with `-dirty` when tracked files differed from the commit when
//! this ran), else `unknown`.

use std::path::Path;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn main() {
    println!("cargo::rerun-if-env-changed=KEYHOST_COMMIT");
    let commit = match std::env::var("KEYHOST_COMMIT").ok().filter(|c| !c.trim().is_empty()) {
        Some(commit) => commit.trim().to_owned(),
        None => {
            // A commit, a checkout or a `git add` changes one of these; in a
            // worktree, the branches live in the common directory. (A path that
            // does not exist would make cargo run this script at every build.)
            let dirs = [
                git(&["rev-parse", "--absolute-git-dir"]),
                git(&["rev-parse", "--path-format=absolute", "--git-common-dir"]),
            ];
            for dir in dirs.iter().flatten() {
                for path in ["HEAD", "index", "refs/heads", "packed-refs"] {
                    let path = Path::new(dir).join(path);
                    if path.exists() {
                        println!("cargo::rerun-if-changed={}", path.display());
                    }
                }
            }
            match git(&["rev-parse", "--short=12", "HEAD"]).filter(|c| !c.is_empty()) {
                None => "unknown".to_owned(),
                Some(commit) => {
                    let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
                    if dirty { format!("{commit}-dirty") } else { commit }
                }
            }
        }
    };
    println!("cargo::rustc-env=KEYHOST_COMMIT={commit}");
}
