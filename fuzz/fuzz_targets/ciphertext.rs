//! Ciphertexts of every format (raw 2024+, JSON ≤ v0.19.1, v0.16's), opened with a
//! fixed key of each algorithm: any input is an error or a plaintext, never a panic.
//! A ciphertext this key sealed must open to what was sealed.
//!
//! Input: one byte that picks the algorithm and splits the rest into associated
//! data and ciphertext.

#![no_main]

use keyhost_crypto::{Algorithm, CiphertextFormat, SecretKey};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let algorithm = if first & 1 == 0 {
        Algorithm::Aes256
    } else {
        Algorithm::ChaCha20
    };
    let key = SecretKey::new(algorithm, [7; 32]);
    let split = usize::from(first >> 1).min(rest.len());
    let (context, ciphertext) = rest.split_at(split);
    let _ = key.open(ciphertext, context);
    // Round trip of the same bytes as a plaintext, in every format.
    for format in [CiphertextFormat::Raw, CiphertextFormat::Json] {
        let sealed = key.seal(ciphertext, context, format);
        let opened = key.open(&sealed, context).expect("what the key sealed opens");
        assert_eq!(&opened[..], ciphertext);
    }
});
