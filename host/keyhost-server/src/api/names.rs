//! KES's name rules: key, policy and identity names, and listing patterns of both
//! eras.

use keyhost_keystore::names::{self, NameKind};

use crate::era::Era;
use crate::error::ApiError;

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
            kind: NameKind::ListingPattern,
            name: resource.to_owned(),
        });
    }
    Ok(keyhost_policy::Pattern::parse(pattern, keyhost_policy::PatternSyntax::Glob).ok())
}

/// Whether a v0.16 listing's glob (see [`v016_glob`]) matches `name`.
pub(super) fn glob_matches(glob: &Option<keyhost_policy::Pattern>, name: &str) -> bool {
    glob.as_ref().is_some_and(|g| g.matches(name))
}

/// The name rules of the server's era: v0.16 also accepted inner dots (`minio.key`).
fn valid_name(name: &str, era: Era) -> bool {
    match era {
        Era::Newest => names::is_kes_name(name),
        Era::V016 => names::is_v016_name(name),
    }
}

/// `name` if it is valid in `era`, or KES's 400 naming its kind.
pub(super) fn checked(kind: NameKind, name: &str, era: Era) -> Result<&str, ApiError> {
    if valid_name(name, era) {
        Ok(name)
    } else {
        Err(ApiError::InvalidName {
            kind,
            name: name.to_owned(),
        })
    }
}

/// A listing's pattern as a prefix, or KES's 400.
pub(super) fn listing_prefix(pattern: &str) -> Result<&str, ApiError> {
    names::list_prefix(pattern).ok_or_else(|| ApiError::InvalidName {
        kind: NameKind::ListingPattern,
        name: pattern.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_era_decides_on_dots() {
        assert!(valid_name("minio.key", Era::V016));
        assert!(!valid_name("minio.key", Era::Newest));
        assert!(valid_name("minio-key", Era::Newest));
        assert_eq!(listing_prefix("my-key*"), Ok("my-key"));
        assert!(listing_prefix("a*b").is_err());
        assert!(v016_glob(&"*".repeat(MAX_GLOB + 1)).is_err());
        assert!(glob_matches(&v016_glob("my-*").unwrap(), "my-key"));
        assert!(!glob_matches(&v016_glob("[").unwrap(), "["));
    }
}
