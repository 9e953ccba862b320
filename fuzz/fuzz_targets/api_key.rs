//! API keys (`kes:v1:…`) and identities (64 hex digits): parsing never panics, and a
//! key that parses prints as text that parses to the same identity.

#![no_main]

use keyhost_policy::{ApiKey, Identity};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(key) = ApiKey::parse(text) {
        let again = ApiKey::parse(&key.to_text()).expect("printed keys parse");
        assert_eq!(again.identity(), key.identity());
    }
    if let Some(identity) = Identity::parse(text) {
        assert_eq!(Identity::parse(identity.as_str()), Some(identity));
    }
});
