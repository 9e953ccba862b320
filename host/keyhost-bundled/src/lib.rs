//! The keystore plugins shipped inside the keyhost binary.
//!
//! They are built from `plugins/` by this crate's build script, so the binary always
//! carries the plugins of its own source tree. Configurations name them
//! `builtin:<name>`.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

/// A plugin shipped inside the binary.
#[derive(Debug, Clone, Copy)]
pub struct Bundled {
    /// The name after `builtin:`.
    pub name: &'static str,
    /// One line on what it stores where.
    pub description: &'static str,
    /// The component.
    pub wasm: &'static [u8],
}

/// The filesystem keystore: one file per key in the granted directory.
pub const FS: Bundled = Bundled {
    name: "fs",
    description: "one file per key in the one directory granted with allow.dir",
    wasm: include_bytes!(concat!(env!("OUT_DIR"), "/keyhost-plugin-fs.wasm")),
};

/// The AWS keystore: key records as secrets in AWS Secrets Manager, optionally
/// under a customer KMS key. `keystore.aws.secretsmanager` selects it.
pub const AWS: Bundled = Bundled {
    name: "aws",
    description: "key records as secrets in AWS Secrets Manager, optionally under a KMS key",
    wasm: include_bytes!(concat!(env!("OUT_DIR"), "/keyhost-plugin-aws.wasm")),
};

/// The etcd keystore: key records as keys of an etcd cluster, under a prefix.
pub const ETCD: Bundled = Bundled {
    name: "etcd",
    description: "key records as keys of an etcd cluster (v3 API), under a key prefix",
    wasm: include_bytes!(concat!(env!("OUT_DIR"), "/keyhost-plugin-etcd.wasm")),
};

/// Every bundled plugin.
pub const ALL: &[Bundled] = &[FS, AWS, ETCD];

/// The bundled plugin called `name` (with or without the `builtin:` prefix).
pub fn find(name: &str) -> Option<Bundled> {
    let name = name.strip_prefix("builtin:").unwrap_or(name);
    ALL.iter().copied().find(|b| b.name == name)
}
