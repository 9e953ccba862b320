//! Key names: the keystore's check never panics, and what it accepts is 1–80 bytes
//! of `0-9 A-Z a-z _ - .` not starting with `.` — the names every plugin must store.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(name) = std::str::from_utf8(data) else { return };
    if keyhost_keystore::validate_name(name).is_ok() {
        assert!((1..=80).contains(&name.len()), "{name:?}");
        assert!(!name.starts_with('.'), "{name:?}");
        assert!(
            name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b)),
            "{name:?}"
        );
    }
});
