//! Policy patterns of both syntaxes (v0.16's globs, the newest trailing `*`) and the
//! paths they are matched against: parsing and matching never panic, and a
//! non-empty pattern without wildcards matches exactly itself (an empty one matches
//! nothing).
//!
//! Input: the pattern, a newline, the path.

#![no_main]

use keyhost_policy::{Pattern, PatternSyntax, Policy};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (pattern, path) = text.split_once('\n').unwrap_or((text, ""));
    for syntax in [PatternSyntax::Glob, PatternSyntax::Prefix] {
        if let Ok(p) = Pattern::parse(pattern, syntax) {
            let matched = p.matches(path);
            if !pattern.is_empty() && !pattern.contains(['*', '?', '[', '\\']) {
                assert_eq!(matched, pattern == path, "{pattern:?} vs {path:?} ({syntax:?})");
            }
        }
        if let Ok(policy) = Policy::parse(&[pattern], &[path], syntax) {
            let _ = policy.allows(path);
            let _ = policy.allows(pattern);
        }
    }
});
