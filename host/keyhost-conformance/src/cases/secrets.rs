//! `records.never-revealed`: no record and no credential in what a plugin prints or answers.

use super::open::UNKNOWN_SETTING;
use crate::kit::{CaseResultInner, Kit, MAX_RECORD, random_token};
use keyhost_keystore::Error;
use std::fmt::Write as _;

impl Kit {
    /// Stores records of random text, provokes every error the kit can (an existing
    /// name, refused names, an oversized record, a missing name, an unknown setting)
    /// and a fresh `open`, deletes a record, and looks for the records and the
    /// credentials in what every instance printed and in every error's text.
    pub(crate) async fn never_revealed(&self) -> CaseResultInner {
        self.runtime.capture_log(true);
        let _ = self.runtime.captured_log();
        let result = self.provoke().await;
        // Unfinished lines appear when their instances end.
        self.plugin.recycle();
        self.runtime.capture_log(false);
        let log = self.runtime.captured_log();
        let (records, errors) = result?;
        ensure!(
            log.dropped == 0,
            "the plugin printed more than {} MiB in a few calls ({} lines beyond); the kit cannot check it all",
            8,
            log.dropped
        );
        let secrets = self.secrets();
        let hide: Vec<String> = records.iter().chain(&secrets).cloned().collect();
        for (place, texts) in [("printed", &log.lines), ("answered with an error", &errors)] {
            for text in texts {
                if let Some(what) = revealed(text, &records, &secrets) {
                    return Err(format!("the plugin {place} {what}: {:?}", masked(text, &hide)));
                }
            }
        }
        Ok(None)
    }

    /// The calls of [`Kit::never_revealed`]: the records it stored, and the texts of
    /// the errors it got.
    pub(crate) async fn provoke(&self) -> Result<(Vec<String>, Vec<String>), String> {
        let token = || format!("kcrecord{}", random_token(24));
        let (first, second, refused, deleted) = (token(), token(), token(), token());
        let mut errors: Vec<String> = Vec::new();
        let mut note = |result: Result<(), Error>| {
            if let Err(e) = result {
                errors.push(e.to_string());
            }
        };
        let name = self.name("secret");
        self.create_ok(&name, first.as_bytes()).await?;
        note(self.store.create(&name, second.as_bytes()).await);
        note(self.store.get(&name).await.map(drop));
        note(self.store.list(&name, None, 10).await.map(drop));
        for odd in ["a/b", "a b", "caf\u{e9}", "..", "a\\b"] {
            let odd = self.name(odd);
            note(self.create(&odd, refused.as_bytes()).await);
        }
        if *self.record_sizes.end() < MAX_RECORD {
            let big = refused.repeat(self.record_sizes.end() / refused.len() + 1);
            note(self.create(&self.name("secret-big"), big.as_bytes()).await);
        }
        note(self.store.get(&self.name("secret-missing")).await.map(drop));
        note(self.store.delete(&self.name("secret-missing")).await);
        let doomed = self.name("secret-deleted");
        self.create_ok(&doomed, deleted.as_bytes()).await?;
        note(self.store.delete(&doomed).await);
        note(self.store.get(&doomed).await.map(drop));
        // Fresh instances open with the settings, credentials included.
        self.plugin.recycle();
        note(self.store.status().await.map(drop));
        let mut config = self.spec.config.clone();
        config.insert(UNKNOWN_SETTING.into(), "1".into());
        if let Err(e) = self.load_with(config).await {
            errors.push(e.to_string());
        }
        Ok((vec![first, second, refused, deleted], errors))
    }
}

/// What of `records` or `secrets` `text` reveals, in the forms a plugin might print
/// them: as text; any 12 bytes of a record's random part as text, hex (either
/// case), a list of bytes (decimal or hex, with or without spaces); base64 and
/// URL-safe base64 at any alignment; a credential percent-encoded.
pub(crate) fn revealed(text: &str, records: &[String], secrets: &[String]) -> Option<&'static str> {
    for record in records {
        let bytes = record.as_bytes();
        let random = &bytes[bytes.len().min(8)..];
        if text.contains(record.as_str()) || base64_forms(bytes).iter().any(|f| text.contains(f.as_str())) {
            return Some("a record");
        }
        for window in random.chunks(12).filter(|w| w.len() == 12) {
            let mut forms = vec![String::from_utf8_lossy(window).into_owned(), hex(window)];
            forms.push(hex(window).to_ascii_uppercase());
            for (format_byte, sep) in [(0, ", "), (0, ","), (1, ", "), (1, ",")] {
                let list: Vec<String> = window
                    .iter()
                    .map(|b| {
                        if format_byte == 0 {
                            b.to_string()
                        } else {
                            format!("{b:x}")
                        }
                    })
                    .collect();
                forms.push(list.join(sep));
            }
            if forms.iter().any(|f| text.contains(f.as_str())) {
                return Some("a record, or part of one");
            }
        }
    }
    for secret in secrets {
        let mut forms = base64_forms(secret.as_bytes());
        forms.push(secret.clone());
        let encoded: String = percent_encode(secret);
        forms.push(encoded);
        if forms.iter().any(|f| !f.is_empty() && text.contains(f.as_str())) {
            return Some("a credential");
        }
    }
    None
}

/// Substrings that every base64 (standard or URL-safe, padded or not) of a buffer
/// holding `bytes` contains, whatever the offset of `bytes` in it.
pub(crate) fn base64_forms(bytes: &[u8]) -> Vec<String> {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
    let mut forms = Vec::new();
    for shift in 0..3 {
        let mut shifted = vec![0u8; shift];
        shifted.extend_from_slice(bytes);
        for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
            let encoded = engine.encode(&shifted);
            // The first group holds the shift's bytes and the last may hold a
            // neighbour's: keep what lies between.
            let (start, end) = (4, encoded.len().saturating_sub(4));
            if end > start + 8 {
                forms.push(encoded[start..end].to_owned());
            }
        }
    }
    forms
}

pub(crate) fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            b => format!("%{b:02X}"),
        })
        .collect()
}

/// `text` with every occurrence of a secret replaced, so that a report never
/// repeats what it found.
pub(crate) fn masked(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_owned();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        out = out.replace(secret.as_str(), "<hidden>");
    }
    if out.len() > 300 {
        let mut end = 300;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
        out.push('…');
    }
    out
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}
