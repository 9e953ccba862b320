//! The subcommands.

pub mod plugin;
