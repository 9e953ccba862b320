//! The subcommands.

pub mod aws;
pub mod client;
pub mod identity;
pub mod key;
pub mod keystore;
pub mod plugin;
pub mod server;
