//! Why a plugin could not be loaded.

use super::*;

/// Why a plugin could not be loaded. Each message names the plugin and says what
/// to do.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The component file could not be read.
    #[error("cannot read plugin {source_label}: {error}")]
    Read {
        /// The file.
        source_label: String,
        /// Why.
        error: std::io::Error,
    },
    /// The SHA-256 pin did not match.
    #[error(
        "plugin {source_label} has SHA-256 {actual}, but the configuration pins {expected}; \
         if the new file is the one you meant to deploy, update `sha256` to {actual}"
    )]
    PinMismatch {
        /// The file.
        source_label: String,
        /// The pinned digest.
        expected: String,
        /// The file's digest.
        actual: String,
    },
    /// The pin is not a SHA-256 hex string.
    #[error("plugin {source_label}: `sha256` must be 64 hex digits, got {pin:?}")]
    BadPin {
        /// The file.
        source_label: String,
        /// The configured value.
        pin: String,
    },
    /// The file is not a usable component for this contract.
    #[error("plugin {source_label} is not a keystore plugin: {reason}")]
    NotAPlugin {
        /// The file.
        source_label: String,
        /// What is wrong.
        reason: String,
    },
    /// A granted capability cannot be set up.
    #[error("plugin {source_label}: {reason}")]
    Grant {
        /// The file.
        source_label: String,
        /// What is wrong.
        reason: String,
    },
    /// The plugin refused to open: bad settings, or a backend it cannot use.
    #[error("plugin {source_label} failed to open: {error}")]
    Open {
        /// The file.
        source_label: String,
        /// The plugin's answer.
        error: Error,
    },
    /// The runtime itself could not be set up.
    #[error("cannot set up the plugin runtime: {0}")]
    Runtime(String),
    /// The directory for compiled plugins cannot be created, or is not this user's
    /// alone: a runtime without a disk cache still works.
    #[error("cannot set up the plugin runtime: {0}")]
    CacheDir(String),
}
