//! Go's `path.Match` glob semantics, which KES up to 2023 used for policies.
//!
//! A pattern is a sequence of chunks, each optionally preceded by stars. `*` matches
//! any run of characters except `/`; `?` one character except `/`; `[…]` a class
//! (ranges `a-z`, negation `^`, escapes `\`); `\c` the character `c`.

const BAD: &str = "the glob is malformed (unclosed [ class, empty range or trailing \\)";

/// Splits off the next chunk: leading stars, then everything up to the next
/// star outside a class.
fn scan_chunk(pattern: &str) -> (bool, &str, &str) {
    let trimmed = pattern.trim_start_matches('*');
    let star = trimmed.len() != pattern.len();
    let bytes = trimmed.as_bytes();
    let mut in_range = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if i + 1 < bytes.len() => i += 1,
            b'[' => in_range = true,
            b']' => in_range = false,
            b'*' if !in_range => break,
            _ => {}
        }
        i += 1;
    }
    (star, &trimmed[..i], &trimmed[i..])
}

/// One (possibly escaped) character of a class.
fn class_char(chunk: &str) -> Result<(char, &str), &'static str> {
    let mut rest = chunk;
    match rest.chars().next() {
        None | Some('-') | Some(']') => return Err(BAD),
        Some('\\') => rest = &rest[1..],
        _ => {}
    }
    let c = rest.chars().next().ok_or(BAD)?;
    let rest = &rest[c.len_utf8()..];
    if rest.is_empty() {
        return Err(BAD);
    }
    Ok((c, rest))
}

/// Matches `chunk` at the start of `s`; returns what is left of `s`. Always walks
/// the whole chunk, so a malformed chunk is an error even when `s` runs out.
fn match_chunk<'a>(mut chunk: &str, mut s: &'a str) -> Result<Option<&'a str>, &'static str> {
    let mut failed = false;
    while let Some(first) = chunk.chars().next() {
        if !failed && s.is_empty() {
            failed = true;
        }
        match first {
            '[' => {
                let mut r = '\0';
                if !failed {
                    r = s.chars().next().unwrap_or('\0');
                    s = &s[r.len_utf8()..];
                }
                chunk = &chunk[1..];
                let negated = chunk.starts_with('^');
                if negated {
                    chunk = &chunk[1..];
                }
                let mut matched = false;
                let mut ranges = 0;
                loop {
                    if chunk.starts_with(']') && ranges > 0 {
                        chunk = &chunk[1..];
                        break;
                    }
                    let (lo, rest) = class_char(chunk)?;
                    chunk = rest;
                    let mut hi = lo;
                    if let Some(rest) = chunk.strip_prefix('-') {
                        let (h, rest) = class_char(rest)?;
                        hi = h;
                        chunk = rest;
                    }
                    if lo <= r && r <= hi {
                        matched = true;
                    }
                    ranges += 1;
                }
                if matched == negated {
                    failed = true;
                }
            }
            '?' => {
                if !failed {
                    let c = s.chars().next().unwrap_or('\0');
                    if c == '/' {
                        failed = true;
                    }
                    s = &s[c.len_utf8()..];
                }
                chunk = &chunk[1..];
            }
            _ => {
                let literal = if first == '\\' {
                    chunk = &chunk[1..];
                    chunk.chars().next().ok_or(BAD)?
                } else {
                    first
                };
                if !failed {
                    if s.starts_with(literal) {
                        s = &s[literal.len_utf8()..];
                    } else {
                        failed = true;
                    }
                }
                chunk = &chunk[literal.len_utf8()..];
            }
        }
    }
    Ok(if failed { None } else { Some(s) })
}

/// Checks that every chunk of `pattern` is well-formed.
pub(crate) fn validate(pattern: &str) -> Result<(), &'static str> {
    let mut rest = pattern;
    while !rest.is_empty() {
        let (_, chunk, next) = scan_chunk(rest);
        match_chunk(chunk, "")?;
        rest = next;
    }
    Ok(())
}

/// Whether `name` matches `pattern` (a malformed pattern matches nothing).
pub(crate) fn matches(pattern: &str, name: &str) -> bool {
    try_match(pattern, name).unwrap_or(false)
}

fn try_match(mut pattern: &str, mut name: &str) -> Result<bool, &'static str> {
    'pattern: while !pattern.is_empty() {
        let (star, chunk, rest) = scan_chunk(pattern);
        pattern = rest;
        if star && chunk.is_empty() {
            // A trailing star matches the rest of the name unless it has a '/'.
            return Ok(!name.contains('/'));
        }
        if let Some(t) = match_chunk(chunk, name)?
            && (t.is_empty() || !pattern.is_empty())
        {
            name = t;
            continue;
        }
        if star {
            // Let the star swallow characters, never a '/'.
            for (i, c) in name.char_indices() {
                if c == '/' {
                    break;
                }
                if let Some(t) = match_chunk(chunk, &name[i + c.len_utf8()..])? {
                    if pattern.is_empty() && !t.is_empty() {
                        continue;
                    }
                    name = t;
                    continue 'pattern;
                }
            }
        }
        validate(pattern)?;
        return Ok(false);
    }
    Ok(name.is_empty())
}
