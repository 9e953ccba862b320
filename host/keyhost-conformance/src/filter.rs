//! Which cases a run selects: `--filter` and `--skip` patterns.

/// Whether `id` is selected by `pattern`: one or more comma-separated patterns.
pub fn matches_filter(pattern: &str, id: &str) -> bool {
    pattern
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .any(|p| matches_one(p, id))
}

fn matches_one(pattern: &str, id: &str) -> bool {
    if !pattern.contains('*') {
        return id.contains(pattern);
    }
    let parts: Vec<&str> = pattern.split('*').collect();
    let mut rest = id;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            match rest.strip_prefix(part) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
    }
    rest.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters() {
        assert!(matches_filter("list", "list.pages.0"));
        assert!(matches_filter("list.*", "list.pages.0"));
        assert!(matches_filter("*.0", "list.pages.0"));
        assert!(matches_filter("create.*.empty", "create.roundtrip.empty"));
        assert!(!matches_filter("create.*", "list.sorted"));
        assert!(!matches_filter("list.pages", "create.exists"));
        assert!(matches_filter("list.pages.*,create.*.64kib", "create.roundtrip.64kib"));
        assert!(matches_filter("list.pages.*, create.*.64kib", "list.pages.1000"));
        assert!(!matches_filter("list.pages.*,create.*.64kib", "create.exists"));
    }
}
