//! Client certificate chains: the identity (SHA-256 of the leaf's public key) is
//! derived or refused, never a panic. The input is one DER certificate, or several
//! each preceded by a two-byte big-endian length.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = keyhost_policy::identity_of_chain([data]);
    let mut chain = Vec::new();
    let mut rest = data;
    while let [a, b, tail @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*a, *b])).min(tail.len());
        let (cert, tail) = tail.split_at(len);
        chain.push(cert);
        rest = tail;
    }
    let _ = keyhost_policy::identity_of_chain(chain);
});
