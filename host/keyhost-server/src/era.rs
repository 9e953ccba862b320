//! Which KES release the server speaks as.
//!
//! Both eras serve the same keys; they differ in routes, name rules and the exact
//! error texts, which clients of each era compare byte for byte.

/// Which KES release's texts the server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Era {
    /// KES 2023 and later (`version: v1` configurations, `--dev`).
    #[default]
    Newest,
    /// KES v0.16 (2021): MinIO of that time compares these texts byte for byte.
    V016,
}
