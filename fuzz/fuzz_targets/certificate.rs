//! Client certificate chains: the identity (SHA-256 of the leaf's public key) is
//! derived or refused, never a panic, and only ever from the first certificate. The input is one DER certificate, or several
//! each preceded by a two-byte big-endian length.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    use keyhost_policy::{ChainRule, identity_of_chain};
    // One certificate: both rules agree.
    assert_eq!(
        identity_of_chain([data], ChainRule::Newest),
        identity_of_chain([data], ChainRule::V016)
    );
    let mut chain = Vec::new();
    let mut rest = data;
    while let [a, b, tail @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*a, *b])).min(tail.len());
        let (cert, tail) = tail.split_at(len);
        chain.push(cert);
        rest = tail;
    }
    // A longer chain names the client by its first certificate or not at all.
    let newest = identity_of_chain(chain.iter().copied(), ChainRule::Newest);
    if let (Ok(identity), Some(first)) = (&newest, chain.first()) {
        assert_eq!(Ok(identity), identity_of_chain([*first], ChainRule::Newest).as_ref());
    }
    if chain.len() > 1 {
        assert!(identity_of_chain(chain.iter().copied(), ChainRule::V016).is_err());
    }
});
