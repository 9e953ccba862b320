//! Builds the bundled plugins (plugins/ workspace, wasm32-wasip2, release) and copies
//! them into OUT_DIR for `include_bytes!`.

const BUNDLED: &[&str] = &["keyhost-plugin-fs", "keyhost-plugin-aws", "keyhost-plugin-etcd"];

fn main() {
    let plugins = keyhost_plugin_build::plugins_dir();
    for path in ["Cargo.toml", "Cargo.lock", "sdk", "fs", "fs-store", "aws", "etcd"] {
        println!("cargo::rerun-if-changed={}", plugins.join(path).display());
    }
    println!("cargo::rerun-if-changed={}", keyhost_plugin_build::wit_dir().display());
    println!("cargo::rerun-if-env-changed=CARGO_TARGET_DIR");

    let built = match keyhost_plugin_build::build(BUNDLED) {
        Ok(built) => built,
        Err(e) => {
            // Cargo shows a build script's stderr when it fails.
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    for (package, wasm) in BUNDLED.iter().zip(built) {
        let dest = out.join(format!("{package}.wasm"));
        if let Err(e) = std::fs::copy(&wasm, &dest) {
            eprintln!("cannot copy {} to {}: {e}", wasm.display(), dest.display());
            std::process::exit(1);
        }
    }
}
