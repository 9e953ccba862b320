//! Stored key records of every era (v0.16's `{"bytes"}` JSON, the newest base64
//! protobuf): parsing never panics, and a record that parses survives being written
//! in each format and read back.

#![no_main]

use keyhost_crypto::{KeyRecord, RecordFormat};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(record) = KeyRecord::parse(data) else { return };
    for format in [RecordFormat::Current, RecordFormat::V016] {
        if let Ok(encoded) = record.encode(format) {
            let again = KeyRecord::parse(&encoded).expect("a record keyhost wrote parses");
            assert_eq!(again.key.expose_bytes(), record.key.expose_bytes(), "the key survives");
            if format == RecordFormat::Current {
                assert_eq!(
                    again.hmac.as_ref().map(|h| *h.expose_bytes()),
                    record.hmac.as_ref().map(|h| *h.expose_bytes()),
                    "the HMAC key survives"
                );
                assert_eq!(again.key.algorithm(), record.key.algorithm(), "the algorithm survives");
            }
        }
    }
});
