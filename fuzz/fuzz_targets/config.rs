//! Configuration files of both eras: any text is a configuration or an error that
//! names the file, never a panic. `${VAR}` values resolve to a fixed text.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let env = |name: &str| (name.len() % 2 == 0).then(|| "value-of-a-variable".to_owned());
    if let Err(e) = keyhost_config::Config::parse_with_env(Path::new("fuzz.yaml"), text, &env) {
        let shown = e.to_string();
        assert!(shown.starts_with("fuzz.yaml"), "the error names the file: {shown}");
    }
});
