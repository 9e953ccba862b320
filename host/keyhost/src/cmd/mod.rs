//! The subcommands.

pub mod plugin;
pub mod server;
