//! The tutorial of docs/plugin-guide.md, run as written: every ```sh tutorial block,
//! in order, in an empty directory, with the keyhost under test on PATH (the first
//! block in a shell of its own, the others in one shell). If the guide's commands
//! stop working, this test fails.

#![expect(clippy::unwrap_used, reason = "Tests fail loudly by design")]

use std::process::Command;

/// Runs `script` in `sh` in `dir`, with the keyhost under test first on `PATH` and
/// nothing of the surrounding cargo or of a KES client's environment.
fn shell(script: &str, dir: &std::path::Path) -> std::process::Output {
    let bin_dir = std::path::Path::new(env!("CARGO_BIN_EXE_keyhost")).parent().unwrap();
    let mut cmd = Command::new("sh");
    keyhost_plugin_build::without_cargo_env(&mut cmd);
    cmd.arg("-c")
        .arg(script)
        .current_dir(dir)
        .env(
            "PATH",
            format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap()),
        )
        .env("XDG_CACHE_HOME", dir.join("cache"))
        .env("KEYHOST_LOG", "warn")
        .env_remove("KES_API_KEY")
        .env_remove("KES_SERVER")
        .output()
        .unwrap()
}

/// The tutorial's shell blocks, dedented, in order.
fn tutorial() -> Vec<String> {
    let guide = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/plugin-guide.md")).unwrap();
    let mut blocks = Vec::new();
    let mut current: Option<(usize, Vec<String>)> = None;
    for line in guide.lines() {
        let trimmed = line.trim_start();
        match &mut current {
            None if trimmed == "```sh tutorial" => current = Some((line.len() - trimmed.len(), Vec::new())),
            None => {}
            Some((indent, lines)) => {
                if trimmed == "```" {
                    blocks.push(lines.join("\n"));
                    current = None;
                } else {
                    lines.push(line.get(*indent..).unwrap_or("").to_owned());
                }
            }
        }
    }
    blocks
}

#[test]
fn the_plugin_authors_tutorial_works_as_written() {
    let blocks = tutorial();
    assert_eq!(blocks.len(), 5, "the tutorial has five steps");
    // The tutorial runs in a fresh directory of a fixed path, and the project it
    // generates builds into a target directory kept between runs: the project's
    // own crates are rebuilt every time (their files are new), the registry crates
    // under them only when they change.
    let work = keyhost_plugin_build::target_dir().with_file_name("plugin-guide");
    std::fs::create_dir_all(&work).unwrap();
    // One run at a time uses the fixed directory.
    let lock = std::fs::File::create(work.join("lock")).unwrap();
    lock.lock().unwrap();
    let dir = work.join("tutorial");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // The component of an earlier run must not stand in for this one's.
    let _ = std::fs::remove_dir_all(work.join("target/wasm32-wasip2/release"));
    let (first, rest) = blocks.split_first().unwrap();
    let run = |script: &str| {
        let script = format!("set -e\n{script}\n");
        let out = shell(&script, &dir);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "{script}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
        );
        stdout
    };
    let mut stdout = run(first);
    assert!(
        !dir.join("my-store/target").exists(),
        "`plugin new` writes no target directory"
    );
    std::fs::create_dir_all(work.join("target")).unwrap();
    std::os::unix::fs::symlink(work.join("target"), dir.join("my-store/target")).unwrap();
    stdout.push_str(&run(&rest.join("\n")));
    assert!(stdout.contains(" passed, 0 failed"), "the kit passes:\n{stdout}");
    assert!(stdout.contains("this keyhost can run it"), "{stdout}");
    assert!(stdout.contains("ciphertext:"), "a data key was generated:\n{stdout}");
    assert!(
        stdout.lines().any(|l| l.trim() == "my-first-key"),
        "the plugin stored the key:\n{stdout}"
    );
    // "Enable the SDK's `http` feature": the generated project builds with it.
    let project = dir.join("my-store");
    let manifest = project.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let with_http = text.replace(
        r#"keyhost-plugin-sdk = { path = "keyhost-plugin-sdk" }"#,
        r#"keyhost-plugin-sdk = { path = "keyhost-plugin-sdk", features = ["http"] }"#,
    );
    assert_ne!(
        text, with_http,
        "the generated manifest names the SDK as the guide says"
    );
    std::fs::write(&manifest, with_http).unwrap();
    let lib = project.join("src/lib.rs");
    let mut code = std::fs::read_to_string(&lib).unwrap();
    code.push_str("\npub use keyhost_plugin_sdk::http::Method as HttpMethod;\n");
    std::fs::write(&lib, code).unwrap();
    let mut cargo = Command::new("cargo");
    keyhost_plugin_build::without_cargo_env(&mut cargo);
    let out = cargo
        .args(["build", "--release"])
        .current_dir(&project)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the generated project does not build with the SDK's http feature:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
