//! Every sentence of the contract (`wit/keystore.wit`), and what the kit does with
//! it: the cases that check it, why the kit cannot check it, or that it states no
//! rule for a plugin (it describes keyhost, or explains a term).
//!
//! A unit test splits the contract into sentences and holds this table to it: each
//! sentence has exactly one entry, each case named here exists, and each case of
//! the kit is named by a sentence. So a rule the contract gains without a check,
//! or a check without a rule, fails the build.

/// What the kit does with a sentence of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coverage {
    /// Checked by these cases.
    Checked(&'static [&'static str]),
    /// A rule the kit cannot check, and why.
    Unchecked(&'static str),
    /// Not a rule for plugins: it describes keyhost or explains a term.
    Descriptive,
}

/// A sentence of the contract, by a fragment of it that no other sentence holds.
#[derive(Debug, Clone, Copy)]
pub struct Sentence {
    /// Words of the sentence, as written (whitespace aside).
    pub fragment: &'static str,
    /// What the kit does with it.
    pub coverage: Coverage,
}

use Coverage::{Checked, Descriptive, Unchecked};

const fn s(fragment: &'static str, coverage: Coverage) -> Sentence {
    Sentence { fragment, coverage }
}

/// Every sentence of the contract, in its order.
pub const SENTENCES: &[Sentence] = &[
    s("The keyhost keystore contract", Descriptive),
    s(
        "is a WebAssembly component (WASI 0.2) that stores and returns opaque",
        Descriptive,
    ),
    s("keyhost does everything security-critical itself", Descriptive),
    s("TLS, client identity, policy, and all cryptography", Descriptive),
    s("A record is one of KES's stored-key formats", Descriptive),
    s(
        "Either way the plugin must store it byte for byte",
        Checked(&["create.roundtrip.*", "records.text", "model.sequential"]),
    ),
    s("This file is the whole contract", Descriptive),
    s("Every rule a plugin must follow is written next to", Descriptive),
    s("keyhost runs a pool of independent instances", Descriptive),
    s("Each fresh instance gets exactly one call to `open`", Descriptive),
    s(
        "several instances serve calls concurrently",
        Checked(&["instances.shared-state", "recycle.durable", "model.sequential"]),
    ),
    s("keyhost discards an instance at any moment", Descriptive),
    s(
        "takes effect at one instant between its call and its answer",
        Checked(&["model.concurrent"]),
    ),
    s("A `list` call need not be one instant", Descriptive),
    s("A name is a non-empty UTF-8 string", Descriptive),
    s(
        "Every plugin must support, and store verbatim, every name of 1 to 80 bytes",
        Checked(&["names.edges", "model.sequential"]),
    ),
    s(
        "A plugin may accept more names",
        Checked(&["names.non-portable", "model.sequential"]),
    ),
    s(
        "Names are compared and sorted as byte strings",
        Checked(&["names.case", "names.neighbours", "list.sorted", "model.sequential"]),
    ),
    s(
        "`KEY` and `key` are two records",
        Unchecked(
            "that a plugin refuses to open on a store that folds case: the kit cannot give it such a store (that names differing in case are two records is checked by names.case)",
        ),
    ),
    s(
        "A record is 0 to 1 MiB",
        Checked(&["create.roundtrip.*", "records.empty", "model.sequential"]),
    ),
    s("Records written by earlier key servers (KES)", Descriptive),
    s(
        "says which sizes it holds with the feature",
        Checked(&["info.sane", "create.roundtrip.*"]),
    ),
    s(
        "It must refuse a record outside that range",
        Checked(&["create.roundtrip.*", "model.sequential"]),
    ),
    s("A plugin reads its settings through", Descriptive),
    s("Values are strings, with", Descriptive),
    s("The plugin must never need the process environment", Descriptive),
    s(
        "Settings that name the same backend in other words",
        Checked(&["env.same-backend"]),
    ),
    s("One setting name is reserved", Descriptive),
    s(
        "It is the plugin's budget for one call",
        Unchecked(
            "a plugin that retries past its budget and one that keyhost stops at the deadline both answer unavailable; the kit cannot tell them apart",
        ),
    ),
    s("A plugin starts with no capability", Descriptive),
    s("The operator may grant", Descriptive),
    s("which the plugin sees as the preopened directory", Descriptive),
    s(
        "A subdirectory that the plugin did not create",
        Checked(&["env.dir-foreign"]),
    ),
    s("outbound HTTP (through", Descriptive),
    s("Any other request fails with `HTTP-request-denied`", Descriptive),
    s("Anything a plugin writes to stdout or stderr", Descriptive),
    s(
        "Never print a record or a credential",
        Checked(&["records.never-revealed"]),
    ),
    s("Every function reports failure through the closed", Descriptive),
    s(
        "Each function says which cases it may return for which condition",
        Checked(&["model.sequential", "get.missing", "delete.missing", "create.exists"]),
    ),
    s(
        "A trap (a Rust panic, for instance) is never a substitute for an error",
        Checked(&["model.sequential"]),
    ),
    s(
        "When the plugin's surroundings fail, the case says which way",
        Descriptive,
    ),
    s(
        "A write the backend refuses for permissions",
        Checked(&["env.dir-read-only"]),
    ),
    s(
        "When the granted directory is removed, or the backend cannot be reached",
        Checked(&["env.dir-removed", "env.backend-gone"]),
    ),
    s(
        "A request the host denies",
        Checked(&["env.http-revoked", "env.credential-refused"]),
    ),
    s("Why an operation failed", Descriptive),
    s("The named record does not exist", Descriptive),
    s("found a record of that name already in place", Descriptive),
    s(
        "The request cannot be served as given, whatever the backend's state",
        Checked(&["names.non-portable", "open.missing-setting", "model.sequential"]),
    ),
    s(
        "The text says which argument or setting, and why",
        Checked(&["open.missing-setting", "open.unknown-setting", "open.malformed-setting"]),
    ),
    s(
        "or cannot decrypt the stored record",
        Unchecked(
            "a backend that cannot decrypt is specific to each backend (the AWS plugin's own tests revoke a KMS grant)",
        ),
    ),
    s("Not transient", Descriptive),
    s(
        "The backend could not be reached or answered with a transient failure",
        Checked(&["env.backend-gone"]),
    ),
    s("Retrying later may succeed", Descriptive),
    s(
        "The backend asked to slow down",
        Unchecked("the kit cannot make a backend throttle"),
    ),
    s(
        "how many milliseconds to wait before retrying",
        Unchecked("the kit cannot make a backend throttle"),
    ),
    s("The operation is not supported by this plugin or backend", Descriptive),
    s("Any other failure", Descriptive),
    s(
        "The text must describe it without revealing a record or a credential",
        Checked(&["records.never-revealed"]),
    ),
    s("A setting the plugin reads from", Descriptive),
    s("The key, e.g", Descriptive),
    s("`endpoint`", Descriptive),
    s("Whether `open` fails without it", Checked(&["open.missing-setting"])),
    s("Whether the value is secret", Checked(&["records.never-revealed"])),
    s("One sentence for operators", Checked(&["info.sane"])),
    s("What a plugin says about itself", Descriptive),
    s(
        "`info` must be cheap, must not touch the backend",
        Checked(&["info.no-grant"]),
    ),
    s(
        "It describes the component, not the deployment",
        Checked(&["info.no-grant", "info.sane"]),
    ),
    s("A short lowercase identifier", Checked(&["info.sane"])),
    s("`fs` or `aws-secretsmanager`", Descriptive),
    s("The plugin's own version (semver)", Checked(&["info.sane"])),
    s("`1.2.0`", Descriptive),
    s("Optional capabilities, free-form identifiers", Descriptive),
    s("Defined:", Descriptive),
    s("`record-size=MIN..MAX` (see Records)", Descriptive),
    s("Every setting the plugin reads", Checked(&["open.unknown-setting"])),
    s("`open` must refuse any other key", Checked(&["open.unknown-setting"])),
    s("One page of a listing", Descriptive),
    s(
        "Names in ascending byte order, each at most once",
        Checked(&["list.sorted", "model.sequential"]),
    ),
    s(
        "`none` when the listing is complete",
        Checked(&["list.pages.boundaries", "model.sequential"]),
    ),
    s(
        "Otherwise the value to pass as `after` to get the next page",
        Checked(&["list.pages.boundaries", "model.sequential"]),
    ),
    s("The backend's health", Descriptive),
    s("The round trip to the backend in milliseconds", Descriptive),
    s("It is measured during this call", Checked(&["model.sequential"])),
    s(
        "keyhost otherwise reports the duration of the `status` call itself",
        Descriptive,
    ),
    s("A short human-readable note", Descriptive),
    s("Describes the plugin", Descriptive),
    s(
        "Must not fail, trap or touch the backend",
        Checked(&["info.sane", "info.no-grant"]),
    ),
    s("Reads and validates the settings", Descriptive),
    s("Called exactly once on every fresh instance", Descriptive),
    s(
        "Must fail fast with `invalid-argument` naming the setting",
        Checked(&["open.missing-setting", "open.malformed-setting", "open.unknown-setting"]),
    ),
    s(
        "May fail with `unavailable` or `access-denied` when the backend refuses to serve",
        Checked(&["env.backend-gone", "env.http-revoked", "env.credential-refused"]),
    ),
    s("Reports whether the backend can serve requests right now", Descriptive),
    s(
        "Succeeds when a read would succeed",
        Checked(&[
            "status.answers",
            "env.dir-read-only",
            "env.dir-removed",
            "model.sequential",
        ]),
    ),
    s(
        "keep it cheap",
        Unchecked("cheap has no bound in the contract; the kit reports how long each case took"),
    ),
    s(
        "Stores `value` under `name` if, and only if",
        Checked(&["create.exists", "model.sequential"]),
    ),
    s(
        "Atomic: of any number of concurrent creates",
        Checked(&["create.concurrent-same", "model.concurrent"]),
    ),
    s(
        "Creates of distinct names never interfere",
        Checked(&["create.concurrent-distinct"]),
    ),
    s(
        "An existing record is never modified",
        Checked(&["create.exists", "records.empty", "model.sequential"]),
    ),
    s(
        "`already-exists` leaves it exactly as it was",
        Checked(&["create.exists", "model.sequential"]),
    ),
    s(
        "That holds when `value` is the very value stored",
        Checked(&["model.sequential"]),
    ),
    s(
        "`create` is never a way to check a value",
        Checked(&["model.sequential"]),
    ),
    s(
        "Durable: when `create` returns success",
        Unchecked(
            "the kit cannot crash the host or cut its power; recycle.durable checks only that records live in the backend, not in instance memory",
        ),
    ),
    s("Records are kept however old they are", Checked(&["env.dir-aged"])),
    s(
        "All or nothing: on failure no record",
        Checked(&["create.roundtrip.*", "names.non-portable", "model.sequential"]),
    ),
    s(
        "`invalid-argument` for a name the plugin cannot store faithfully",
        Checked(&["names.non-portable", "model.sequential"]),
    ),
    s(
        "Returns the record stored under `name`, byte for byte",
        Checked(&["create.roundtrip.*", "model.sequential"]),
    ),
    s(
        "`not-found` if there is none",
        Checked(&["get.missing", "model.sequential"]),
    ),
    s(
        "The record is the one created under exactly this name",
        Checked(&["names.neighbours", "model.sequential"]),
    ),
    s(
        "A plugin may read records that KES or an earlier version",
        Unchecked("the kit cannot write records in a plugin's legacy layout"),
    ),
    s(
        "Removes the record stored under `name`",
        Checked(&["delete.then-get", "model.sequential"]),
    ),
    s(
        "Success once the removal is durable",
        Checked(&["recycle.durable", "delete.then-get", "model.sequential"]),
    ),
    s(
        "Deleting a name that has no record returns `not-found`",
        Checked(&["delete.missing", "model.sequential"]),
    ),
    s(
        "Of concurrent deletes of one name, more than one may succeed",
        Checked(&["model.concurrent"]),
    ),
    s(
        "Lists names that start with `prefix`",
        Checked(&["list.prefix", "model.sequential"]),
    ),
    s(
        "The prefix is matched against the names as `create` received them",
        Checked(&["model.sequential"]),
    ),
    s(
        "Names come in ascending byte order, each exactly once",
        Checked(&["list.sorted", "model.sequential"]),
    ),
    s(
        "If `after` is given, only names strictly greater",
        Checked(&["list.after", "model.sequential"]),
    ),
    s(
        "At most `limit` names are returned",
        Checked(&["list.pages.boundaries", "model.sequential"]),
    ),
    s(
        "`limit` is any value from 1 to 4,294,967,295",
        Checked(&["model.sequential"]),
    ),
    s(
        "A page may be shorter, but if `next` is set",
        Checked(&["list.pages.boundaries", "model.sequential"]),
    ),
    s(
        "A page holds the first matching names after `after`",
        Checked(&["model.sequential"]),
    ),
    s(
        "`next` is `none` exactly when no name greater",
        Checked(&["list.pages.boundaries", "model.sequential"]),
    ),
    s(
        "Paging through with `after = next` returns every matching name exactly once",
        Checked(&["list.pages.*", "scale.listing", "model.sequential"]),
    ),
    s(
        "Names created or deleted while paging may or may not appear",
        Checked(&["list.pages.churn"]),
    ),
    s("What a keystore plugin is: it exports `store`", Descriptive),
    s("`keystore-plugin` with outbound HTTP", Descriptive),
    s("Rust plugins built with the SDK use `keystore-plugin`", Descriptive),
];

/// The rules the kit cannot check, with why: for the report.
pub fn unchecked() -> impl Iterator<Item = (&'static str, &'static str)> {
    SENTENCES.iter().filter_map(|s| match s.coverage {
        Unchecked(why) => Some((s.fragment, why)),
        _ => None,
    })
}

/// The contract's documentation split into sentences: doc comments joined into
/// paragraphs (a blank line, a heading or a list item starts a new one), the case
/// ids in brackets taken out, whitespace normalised, split after `.` or `:` where
/// a capital, a backtick or a parenthesis follows (or, after `.`, the word
/// `keyhost`).
pub fn sentences(wit: &str) -> Vec<String> {
    let mut paragraphs: Vec<String> = Vec::new();
    let mut current: Vec<&str> = Vec::new();
    let mut flush = |current: &mut Vec<&str>| {
        if !current.is_empty() {
            paragraphs.push(current.join(" "));
            current.clear();
        }
    };
    for line in wit.lines() {
        let Some(doc) = line.trim().strip_prefix("///") else {
            flush(&mut current);
            continue;
        };
        let doc = doc.trim();
        if doc.is_empty() || doc.starts_with('#') {
            flush(&mut current);
            continue;
        }
        if let Some(item) = doc.strip_prefix("- ") {
            flush(&mut current);
            current.push(item);
        } else {
            current.push(doc);
        }
    }
    flush(&mut current);
    let mut out = Vec::new();
    for paragraph in paragraphs {
        let text = without_case_ids(&paragraph);
        let text: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
        let chars: Vec<char> = text.chars().collect();
        let mut start = 0;
        for i in 0..chars.len() {
            let ends = matches!(chars[i], '.' | ':')
                && chars.get(i + 1) == Some(&' ')
                && (chars
                    .get(i + 2)
                    .is_some_and(|c| c.is_uppercase() || *c == '`' || *c == '(')
                    || chars[i] == '.' && chars[i + 2..].starts_with(&['k', 'e', 'y', 'h', 'o', 's', 't', ' ']));
            if ends {
                out.push(chars[start..=i].iter().collect::<String>().trim().to_owned());
                start = i + 2;
            }
        }
        let rest: String = chars[start..].iter().collect();
        if !rest.trim().is_empty() {
            out.push(rest.trim().to_owned());
        }
    }
    out
}

/// `text` without the bracketed case ids (`[a.b, c.*]`).
pub(crate) fn without_case_ids(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(open) = rest.find('[') {
        let inside = &rest[open + 1..];
        match inside.find(']') {
            Some(close)
                if inside[..close]
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || ".-*, ".contains(c)) =>
            {
                out.push_str(rest[..open].trim_end());
                rest = &inside[close + 1..];
            }
            _ => {
                out.push_str(&rest[..=open]);
                rest = inside;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cases::CASES;

    const WIT: &str = include_str!("../../../wit/keystore.wit");

    fn normal(text: &str) -> String {
        text.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    fn names_case(pattern: &str, id: &str) -> bool {
        pattern == id
            || pattern
                .strip_suffix(".*")
                .is_some_and(|stem| id.starts_with(&format!("{stem}.")))
    }

    /// Each sentence of the contract has exactly one entry, and each entry one
    /// sentence: a sentence added to the contract without saying what the kit does
    /// with it fails here.
    #[test]
    fn every_sentence_of_the_contract_is_checked_or_said_not_to_be() {
        let sentences = sentences(WIT);
        let mut problems = Vec::new();
        for sentence in &sentences {
            let entries: Vec<&Sentence> = SENTENCES
                .iter()
                .filter(|e| sentence.contains(&normal(e.fragment)))
                .collect();
            if entries.len() != 1 {
                problems.push(format!("{} entries for: {sentence}", entries.len()));
            }
        }
        for entry in SENTENCES {
            let found = sentences.iter().filter(|s| s.contains(&normal(entry.fragment))).count();
            if found != 1 {
                problems.push(format!("entry {:?} matches {found} sentences", entry.fragment));
            }
        }
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }

    /// Every case named in the table exists, every case is named by a sentence,
    /// and every case the contract names in brackets exists.
    #[test]
    fn the_table_and_the_cases_agree() {
        for entry in SENTENCES {
            if let Coverage::Checked(ids) = entry.coverage {
                for id in ids {
                    assert!(
                        CASES.iter().any(|c| names_case(id, c.id)),
                        "{id} (for {:?}) is not a case",
                        entry.fragment
                    );
                }
            }
        }
        for case in CASES {
            assert!(
                SENTENCES.iter().any(
                    |e| matches!(e.coverage, Coverage::Checked(ids) if ids.iter().any(|p| names_case(p, case.id)))
                ),
                "case {} checks no sentence of the table",
                case.id
            );
        }
        let bracketed: Vec<&str> = WIT
            .split('[')
            .skip(1)
            .filter_map(|rest| rest.split_once(']').map(|(inside, _)| inside))
            .filter(|inside| {
                inside
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || ".-*, \n/".contains(c))
            })
            .flat_map(|inside| inside.split(',').map(|id| id.trim().trim_start_matches("///").trim()))
            .filter(|id| !id.is_empty())
            .collect();
        for id in bracketed {
            assert!(
                CASES.iter().any(|c| names_case(id, c.id)),
                "the contract names [{id}], which is not a case"
            );
        }
    }

    #[test]
    fn sentences_split_where_they_end() {
        let got = sentences(
            "/// One rule [a.b]. Two: `x` and y.\n/// - A list item. keyhost does.\n///\n/// # Head\n/// Last e.g. this.",
        );
        assert_eq!(
            got,
            [
                "One rule.",
                "Two:",
                "`x` and y.",
                "A list item.",
                "keyhost does.",
                "Last e.g. this."
            ]
        );
    }
}
