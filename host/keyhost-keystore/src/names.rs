//! The portable key-name rule of the keystore contract.

use std::fmt;

/// The longest portable name, in bytes.
pub const MAX_NAME_LEN: usize = 80;

/// Why a name is not portable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameError {
    name: String,
    reason: &'static str,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "key name {:?} {}", self.name, self.reason)
    }
}

impl std::error::Error for NameError {}

/// Checks that `name` is one every keystore must support: 1 to 80 bytes of
/// `0-9 A-Z a-z _ - .`, not starting with `.`.
pub fn validate_name(name: &str) -> Result<(), NameError> {
    let fail = |reason| {
        Err(NameError {
            name: name.chars().take(100).collect(),
            reason,
        })
    };
    if name.is_empty() {
        return fail("is empty");
    }
    if name.len() > MAX_NAME_LEN {
        return fail("is longer than 80 bytes");
    }
    if name.starts_with('.') {
        return fail("starts with '.'");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return fail("contains a character other than 0-9 A-Z a-z _ - .");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn portable_names() {
        for ok in ["a", "_", "-", "0", "my-key", "minio.key", "Z_-.9", &"a".repeat(80)] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            ".x",
            "a/b",
            "a\\b",
            "/x",
            "x/",
            "a b",
            "☰",
            &"a".repeat(81),
        ] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }
}
