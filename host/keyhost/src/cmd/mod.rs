//! The subcommands.

pub mod aws;
pub mod client;
pub mod identity;
pub mod key;
pub mod keystore;
pub mod migrate;
pub mod output;
pub mod password;
pub mod plugin;
pub mod policy;
pub mod seal;
pub mod server;
pub mod status;
