//! Name rules, in one place: the portable key names of the keystore contract, and
//! KES's rules for key, policy and identity names and for listing patterns, which
//! the API and the configuration files apply.
//!
//! Every name KES accepts is portable (a test checks it), so a key created through
//! the API can always be stored.

use std::fmt;

/// The longest name, in bytes, of every rule here.
pub const MAX_NAME_LEN: usize = 80;

/// What a name names; it appears in error texts ("invalid key name 'x'").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    /// A key's name.
    Key,
    /// A policy's name.
    Policy,
    /// An identity (its hex form).
    Identity,
    /// A listing's pattern: a name prefix ending in `*`.
    ListingPattern,
}

impl NameKind {
    /// The words KES uses for the kind ("key name", "policy name", …).
    pub const fn as_str(self) -> &'static str {
        match self {
            NameKind::Key => "key name",
            NameKind::Policy => "policy name",
            NameKind::Identity => "identity",
            NameKind::ListingPattern => "listing pattern",
        }
    }
}

impl fmt::Display for NameKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// KES's `validName` (the newest release): 1–80 bytes of `0-9 A-Z a-z _ -`, not
/// starting or ending with `-`, and not `_` alone.
pub fn is_kes_name(name: &str) -> bool {
    kes_name(name, false)
}

/// What KES v0.16 and configuration files of both eras accept: [`is_kes_name`],
/// plus dots that are not first (`minio.key`).
pub fn is_v016_name(name: &str) -> bool {
    kes_name(name, true)
}

fn kes_name(name: &str, dots: bool) -> bool {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (dots && b == b'.');
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name != "_"
        && !name.starts_with(['-', '.'])
        && !name.ends_with('-')
        && name.bytes().all(allowed)
}

/// KES's `validPattern`: empty, `*`, or up to 80 bytes of `0-9 A-Z a-z _ -` (`-`
/// neither first nor last, not `_` alone) optionally ending in one `*`. Returns
/// the prefix the pattern lists.
pub fn list_prefix(pattern: &str) -> Option<&str> {
    if pattern == "*" {
        return Some("");
    }
    let last = pattern.len().saturating_sub(1);
    let ok = pattern != "_"
        && pattern.len() <= MAX_NAME_LEN
        && pattern.bytes().enumerate().all(|(i, b)| {
            b.is_ascii_alphanumeric() || b == b'_' || (b == b'-' && i > 0 && i < last) || (b == b'*' && i == last)
        });
    ok.then(|| pattern.strip_suffix('*').unwrap_or(pattern))
}

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

    #[test]
    fn kes_names() {
        for ok in [
            "my-key",
            "abc123",
            "0",
            "_-___---_",
            "_0",
            "0-Z",
            "my_key-0",
            &"a".repeat(80),
        ] {
            assert!(is_kes_name(ok), "{ok}");
            assert!(is_v016_name(ok), "{ok}");
        }
        for bad in [
            "",
            "my.key",
            "key/",
            "☰",
            "hel<lo",
            "Εmacs",
            &"a".repeat(81),
            "_",
            "-a",
            "a-",
        ] {
            assert!(!is_kes_name(bad), "{bad}");
        }
        assert!(is_v016_name("minio.key"));
        for bad in [".x", "-a", "a-", "_", "a/b", ""] {
            assert!(!is_v016_name(bad), "{bad}");
        }
    }

    #[test]
    fn listing_patterns() {
        for ok in ["", "*", "my*", "_-*"] {
            assert!(list_prefix(ok).is_some(), "{ok}");
        }
        assert!(list_prefix("*-*").is_none());
        assert_eq!(list_prefix("my-key*"), Some("my-key"));
        // What the newest KES refused (seen side by side in scripts/compat).
        for bad in ["app-", "a.b", "_", "a*b", "**", &"a".repeat(81)] {
            assert!(list_prefix(bad).is_none(), "{bad}");
        }
    }

    /// Every name of 1–3 bytes over an alphabet of every class of byte the rules
    /// treat apart: what KES accepts, in either era, is portable.
    #[test]
    fn every_kes_name_is_portable() {
        let alphabet = ["a", "Z", "0", "_", "-", ".", "*", "/", " ", "é"];
        let mut names = vec![String::new()];
        for _ in 0..3 {
            let longer: Vec<String> = names
                .iter()
                .flat_map(|n| alphabet.iter().map(move |c| format!("{n}{c}")))
                .collect();
            names.extend(longer);
        }
        names.push("a".repeat(80));
        names.push("a".repeat(81));
        for name in &names {
            if is_kes_name(name) || is_v016_name(name) {
                assert!(validate_name(name).is_ok(), "{name:?}");
            }
            if is_kes_name(name) {
                assert!(is_v016_name(name), "{name:?}");
            }
        }
    }
}
