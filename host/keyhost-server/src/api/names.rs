//! KES's name rules: key, policy and identity names, and listing patterns of both
//! eras.

use crate::error::{ApiError, Era};

/// The longest listing glob a v0.16 listing accepts. Go's `path.Match` walks the
/// whole pattern at every position of a name, so a pattern's cost grows with its
/// length times the names'; names are at most 80 bytes, and 256 bytes leave room
/// for a class per character of a long name.
const MAX_GLOB: usize = 256;

/// A v0.16 listing's glob (`*` when empty); `None` for a malformed one, which (as in KES v0.16,
/// where `path.Match` fails) matches nothing. Longer globs than [`MAX_GLOB`] are
/// refused: matching them costs more than any name is worth.
pub(super) fn v016_glob(resource: &str) -> Result<Option<keyhost_policy::Pattern>, ApiError> {
    let pattern = if resource.is_empty() { "*" } else { resource };
    if pattern.len() > MAX_GLOB {
        return Err(ApiError::InvalidName {
            kind: "listing pattern",
            name: resource.to_owned(),
        });
    }
    Ok(keyhost_policy::Pattern::parse(pattern, keyhost_policy::PatternSyntax::Glob).ok())
}

/// Whether a v0.16 listing's glob (see [`v016_glob`]) matches `name`.
pub(super) fn glob_matches(glob: &Option<keyhost_policy::Pattern>, name: &str) -> bool {
    glob.as_ref().is_some_and(|g| g.matches(name))
}

/// KES's `validName`: 1–80 bytes of `0-9 A-Z a-z _ -`, not starting or ending with
/// `-`, and not `_` alone. Configurations in the v0.16 style also allow inner dots,
/// which that release accepted (`minio.key`).
pub(super) fn valid_name(name: &str, era: Era) -> bool {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (era == Era::V016 && b == b'.');
    !name.is_empty()
        && name.len() <= 80
        && name != "_"
        && !name.starts_with(['-', '.'])
        && !name.ends_with('-')
        && name.bytes().all(allowed)
}

/// KES's `validPattern`: empty, `*`, or up to 80 bytes of `0-9 A-Z a-z _ -`
/// (`-` neither first nor last, not `_` alone) optionally ending in one `*`; the
/// prefix it lists.
fn list_prefix(pattern: &str) -> Option<&str> {
    if pattern == "*" {
        return Some("");
    }
    let last = pattern.len().saturating_sub(1);
    let ok = pattern != "_"
        && pattern.len() <= 80
        && pattern.bytes().enumerate().all(|(i, b)| {
            b.is_ascii_alphanumeric() || b == b'_' || (b == b'-' && i > 0 && i < last) || (b == b'*' && i == last)
        });
    ok.then(|| pattern.strip_suffix('*').unwrap_or(pattern))
}

/// A listing's pattern as a prefix, or KES's 400.
pub(super) fn listing_prefix(pattern: &str) -> Result<&str, ApiError> {
    list_prefix(pattern).ok_or_else(|| ApiError::InvalidName {
        kind: "listing pattern",
        name: pattern.to_owned(),
    })
}

/// A policy name or identity of a newest route, checked with KES's `validName`.
pub(super) fn valid_newest(kind: &'static str, name: &str) -> Result<(), ApiError> {
    if valid_name(name, Era::Newest) {
        Ok(())
    } else {
        Err(ApiError::InvalidName {
            kind,
            name: name.to_owned(),
        })
    }
}

pub(super) fn key_name(name: &str, era: Era) -> Result<&str, ApiError> {
    if valid_name(name, era) {
        Ok(name)
    } else {
        Err(ApiError::InvalidName {
            kind: "key name",
            name: name.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_patterns() {
        for ok in ["my-key", "abc123", "0", "_-___---_", "_0", "0-Z", "my_key-0"] {
            assert!(valid_name(ok, Era::Newest), "{ok}");
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
            assert!(!valid_name(bad, Era::Newest), "{bad}");
        }
        assert!(valid_name("minio.key", Era::V016));
        for ok in ["", "*", "my*", "_-*"] {
            assert!(list_prefix(ok).is_some(), "{ok}");
        }
        assert!(list_prefix("*-*").is_none());
        assert_eq!(list_prefix("my-key*"), Some("my-key"));
        // What the newest KES refused (seen side by side in tests/compat).
        for bad in ["app-", "a.b", "_", "a*b", "**", &"a".repeat(81)] {
            assert!(list_prefix(bad).is_none(), "{bad}");
        }
    }
}
