//! The subcommands.

pub mod keystore;
pub mod plugin;
pub mod server;
