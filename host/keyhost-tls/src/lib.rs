//! TLS material of keyhost, for the server and for its clients alike.
//!
//! - [`load`]: certificates, CA bundles and private keys from PEM files (keys
//!   encrypted with a password included), with errors that name the file;
//! - [`server`]: the server's rustls configuration and KES's client-certificate
//!   modes;
//! - [`client`]: the rustls configuration of keyhost's own client commands;
//! - [`mint`]: certificates made on the spot — the throw-away credentials of
//!   `keyhost server --dev` and of tests, and the identity certificates of
//!   `keyhost identity new`.
//!
//! Every endpoint uses one crypto [`provider`].

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::sync::Arc;

use rustls::crypto::CryptoProvider;

pub mod client;
pub mod forwarded;
pub mod load;
pub mod mint;
pub mod server;

pub use forwarded::{Forwarded, ForwardedVerifier, Usage as ForwardedUsage};
pub use load::{TlsError, load_chain, load_client_key, load_key, load_roots, system_roots};
pub use server::{server_config, server_config_verifying};

/// The crypto provider of every TLS endpoint of keyhost: aws-lc-rs, whose key
/// exchange groups are, in order of preference, the hybrid post-quantum
/// X25519MLKEM768 (data keys cross these connections, so traffic recorded today must
/// not open once quantum computers can break X25519), then X25519, P-256 and P-384
/// for clients without ML-KEM.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}
