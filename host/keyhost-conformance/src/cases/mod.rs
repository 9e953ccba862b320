//! The one table of cases: each registered once, with its id, the contract's
//! words it checks and its code. One module per group of rules.

use futures::future::LocalBoxFuture;

use crate::kit::{CaseResultInner, Kit};

mod env;
mod info;
mod instances;
mod list;
mod model;
mod names;
mod open;
mod records;
mod scale;
mod secrets;

pub use open::UNKNOWN_SETTING;

/// How a case's code ends: `Ok(None)` passed, `Ok(Some(why))` skipped,
/// `Err(why)` failed.
pub(crate) type Checked = CaseResultInner;

/// The code of a case.
pub(crate) type CaseFn = for<'a> fn(&'a Kit) -> LocalBoxFuture<'a, Checked>;

/// One case of the kit.
#[derive(Clone, Copy)]
pub struct Case {
    /// Stable identifier, e.g. `create.exists`.
    pub id: &'static str,
    /// What the case checks, in one line.
    pub title: &'static str,
    /// The contract's words the case checks (`wit/keystore.wit`); words in
    /// brackets are the kit's own.
    pub rule: &'static str,
    /// Its code.
    pub(crate) run: CaseFn,
}

impl std::fmt::Debug for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Case")
            .field("id", &self.id)
            .field("title", &self.title)
            .finish_non_exhaustive()
    }
}

/// Every case, in the order they run.
pub const CASES: &[Case] = &[
    Case {
        id: "info.sane",
        title: "info names the plugin, a semver version and unique settings, and is stable",
        rule: "Describes the plugin. Must not fail, trap or touch the backend.",
        run: |kit| Box::pin(kit.info_sane()),
    },
    Case {
        id: "open.missing-setting",
        title: "open without a required setting fails with invalid-argument naming it",
        rule: "Must fail fast with `invalid-argument` naming the setting when a required setting is missing",
        run: |kit| Box::pin(kit.open_missing_setting()),
    },
    Case {
        id: "open.unknown-setting",
        title: "open with an unknown setting fails with invalid-argument naming it",
        rule: "[Must fail fast with `invalid-argument` naming the setting] when a key that `info` does not list is present",
        run: |kit| Box::pin(kit.open_unknown_setting()),
    },
    Case {
        id: "status.answers",
        title: "status succeeds",
        rule: "Succeeds when a read would succeed; otherwise `unavailable` (transient), `access-denied` (credentials or permissions lost) or `other`",
        run: |kit| Box::pin(kit.status_answers()),
    },
    Case {
        id: "create.roundtrip.empty",
        title: "an empty record reads back exactly",
        rule: "A record is 0 to 1 MiB (1,048,576 bytes) of arbitrary bytes, including none and including bytes that are not valid UTF-8. [get] Returns the record stored under `name`, byte for byte.",
        run: |kit| Box::pin(kit.roundtrip("rt-empty", Vec::new())),
    },
    Case {
        id: "create.roundtrip.one-byte",
        title: "a 1-byte record reads back exactly",
        rule: "A record is 0 to 1 MiB (1,048,576 bytes) of arbitrary bytes, including none and including bytes that are not valid UTF-8. [get] Returns the record stored under `name`, byte for byte.",
        run: |kit| Box::pin(kit.roundtrip("rt-one", vec![0x2a])),
    },
    Case {
        id: "create.roundtrip.64kib",
        title: "a 64 KiB record reads back exactly",
        rule: "A record is 0 to 1 MiB (1,048,576 bytes) of arbitrary bytes, including none and including bytes that are not valid UTF-8. [get] Returns the record stored under `name`, byte for byte.",
        run: |kit| Box::pin(kit.roundtrip("rt-64k", crate::kit::pattern(64 << 10))),
    },
    Case {
        id: "create.roundtrip.all-bytes",
        title: "a record of all 256 byte values reads back exactly",
        rule: "A record is 0 to 1 MiB (1,048,576 bytes) of arbitrary bytes, including none and including bytes that are not valid UTF-8. [get] Returns the record stored under `name`, byte for byte.",
        run: |kit| Box::pin(kit.roundtrip("rt-all", (0..=255u8).collect())),
    },
    Case {
        id: "create.roundtrip.1mib",
        title: "a 1 MiB record (the largest) reads back exactly",
        rule: "A record is 0 to 1 MiB (1,048,576 bytes) of arbitrary bytes, including none and including bytes that are not valid UTF-8. [get] Returns the record stored under `name`, byte for byte.",
        run: |kit| Box::pin(kit.roundtrip("rt-1m", crate::kit::pattern(1 << 20))),
    },
    Case {
        id: "create.exists",
        title: "create of an existing name is already-exists and leaves the record unchanged",
        rule: "An existing record is never modified: `already-exists` leaves it exactly as it was.",
        run: |kit| Box::pin(kit.create_exists()),
    },
    Case {
        id: "get.missing",
        title: "get of a missing name is not-found",
        rule: "`not-found` if there is none.",
        run: |kit| Box::pin(kit.get_missing()),
    },
    Case {
        id: "delete.then-get",
        title: "after delete, get is not-found",
        rule: "Removes the record stored under `name`. [Once that succeeds,] afterwards `get` returns `not-found`.",
        run: |kit| Box::pin(kit.delete_then_get()),
    },
    Case {
        id: "delete.missing",
        title: "delete of a missing name is not-found",
        rule: "Deleting a name that has no record returns `not-found`.",
        run: |kit| Box::pin(kit.delete_missing()),
    },
    Case {
        id: "list.sorted",
        title: "list returns exactly the matching names in ascending byte order",
        rule: "Names come in ascending byte order, each exactly once.",
        run: |kit| Box::pin(kit.list_sorted()),
    },
    Case {
        id: "list.prefix",
        title: "list filters by prefix",
        rule: "Lists names that start with `prefix` (the empty prefix matches every name).",
        run: |kit| Box::pin(kit.list_prefix()),
    },
    Case {
        id: "list.after",
        title: "list continues strictly after `after`, which need not be a stored name",
        rule: "If `after` is given, only names strictly greater than it are returned; it need not be a stored name.",
        run: |kit| Box::pin(kit.list_after()),
    },
    Case {
        id: "list.pages.0",
        title: "paging over 0 names ends at once",
        rule: "Paging through with `after = next` returns every matching name exactly once, however many there are.",
        run: |kit| Box::pin(kit.list_pages(0)),
    },
    Case {
        id: "list.pages.1",
        title: "paging over 1 name returns it once",
        rule: "Paging through with `after = next` returns every matching name exactly once, however many there are.",
        run: |kit| Box::pin(kit.list_pages(1)),
    },
    Case {
        id: "list.pages.1000",
        title: "paging over 1,000 names returns each exactly once, in order",
        rule: "Paging through with `after = next` returns every matching name exactly once, however many there are.",
        run: |kit| Box::pin(kit.list_pages(1000)),
    },
    Case {
        id: "list.pages.2500",
        title: "paging over 2,500 names returns each exactly once, in order",
        rule: "Paging through with `after = next` returns every matching name exactly once, however many there are.",
        run: |kit| Box::pin(kit.list_pages(2500)),
    },
    Case {
        id: "names.edges",
        title: "names at the edges of the portable charset and length round-trip",
        rule: "Every plugin must support, and store verbatim, every name of 1 to 80 bytes made of `0-9 A-Z a-z _ - .` whose first character is not `.`.",
        run: |kit| Box::pin(kit.names_edges()),
    },
    Case {
        id: "names.case",
        title: "names that differ only in case are distinct records",
        rule: "Names are compared and sorted as byte strings, so they are case-sensitive: `KEY` and `key` are two records.",
        run: |kit| Box::pin(kit.names_case()),
    },
    Case {
        id: "create.concurrent-same",
        title: "of 16 concurrent creates of one name exactly one succeeds",
        rule: "Atomic: of any number of concurrent creates of one name, from any number of instances, exactly one succeeds and all others return `already-exists`.",
        run: |kit| Box::pin(kit.concurrent_same()),
    },
    Case {
        id: "create.concurrent-distinct",
        title: "32 concurrent creates of distinct names all succeed",
        rule: "Creates of distinct names never interfere.",
        run: |kit| Box::pin(kit.concurrent_distinct()),
    },
    Case {
        id: "recycle.durable",
        title: "a record stored, and a record deleted, before all instances are recycled stay so after",
        rule: "[Keep] all state in the backend, never only in instance memory. Success once the removal is durable.",
        run: |kit| Box::pin(kit.recycle_durable()),
    },
    Case {
        id: "info.no-grant",
        title: "info answers in a sandbox with no grant and no setting, as on an opened instance",
        rule: "`info` must be cheap, must not touch the backend, and may be called before `open`. It describes the component, not the deployment: every instance returns the same, whatever its settings and grants.",
        run: |kit| Box::pin(kit.info_no_grant()),
    },
    Case {
        id: "list.pages.boundaries",
        title: "limits 1, 2, 3, 5 and 7 over k*limit-1, k*limit and k*limit+1 names: every name once, `next` exact",
        rule: "At most `limit` names are returned. `next` is `none` exactly when no name greater than the last one returned matches; otherwise it is the last name of the page.",
        run: |kit| Box::pin(kit.list_boundaries()),
    },
    Case {
        id: "names.neighbours",
        title: "names that extend one another or differ in case are distinct in get, delete, create and list",
        rule: "Names are compared and sorted as byte strings. [get] Returns the record stored under `name`. [delete] Removes the record stored under `name`.",
        run: |kit| Box::pin(kit.names_neighbours()),
    },
    Case {
        id: "records.text",
        title: "text-like records (newlines, CR, spaces, NUL, JSON) come back byte for byte",
        rule: "[The plugin] must store it byte for byte and give it back byte for byte, nothing more.",
        run: |kit| Box::pin(kit.records_text()),
    },
    Case {
        id: "records.empty",
        title: "an empty record exists: create over it is refused, it survives recycling and is listed",
        rule: "A record is 0 to 1 MiB (1,048,576 bytes) of arbitrary bytes, including none. An existing record is never modified.",
        run: |kit| Box::pin(kit.records_empty()),
    },
    Case {
        id: "names.non-portable",
        title: "a name outside the portable set is refused with invalid-argument or stored verbatim",
        rule: "A name it cannot store faithfully (one its backend would alter, truncate or interpret as a path) it must refuse with `invalid-argument` rather than store something else. All or nothing: on failure no record, and no partial record, is visible under `name`.",
        run: |kit| Box::pin(kit.names_non_portable()),
    },
    Case {
        id: "instances.shared-state",
        title: "a second set of instances sees at once what the first created and deleted",
        rule: "[Every guarantee] must hold *across* instances: keep all state in the backend, never only in instance memory.",
        run: |kit| Box::pin(kit.shared_state()),
    },
    Case {
        id: "list.pages.churn",
        title: "paging while names before and after the cursor are created and deleted returns every other name once",
        rule: "Names created or deleted while paging may or may not appear; all others must.",
        run: |kit| Box::pin(kit.list_churn()),
    },
    Case {
        id: "open.malformed-setting",
        title: "a malformed value (NUL, newline) of each setting is refused with invalid-argument naming it, or accepted",
        rule: "[Must fail fast with `invalid-argument` naming the setting] when a value is malformed.",
        run: |kit| Box::pin(kit.open_malformed_setting()),
    },
    Case {
        id: "records.never-revealed",
        title: "no record and no secret setting appears in the plugin's output or in an error's text",
        rule: "Never print a record or a credential. The text must describe it without revealing a record or a credential.",
        run: |kit| Box::pin(kit.never_revealed()),
    },
    Case {
        id: "model.sequential",
        title: "randomized sequences from several sets of instances agree step by step with the contract's model",
        rule: "Returns the record stored under `name`, byte for byte. `not-found` if there is none. An existing record is never modified: `already-exists` leaves it exactly as it was. That holds when `value` is the very value stored, too: `create` is never a way to check a value. The prefix is matched against the names as `create` received them, byte for byte, never against the form in which a backend stores them (escaped, encoded or hashed). A page holds the first matching names after `after`, leaving none out between them. `limit` is any value from 1 to 4,294,967,295, the largest of its type: keyhost passes on what its client asks for, so nothing computed from it may overflow.",
        run: |kit| Box::pin(model::sequential(kit)),
    },
    Case {
        id: "model.concurrent",
        title: "creates, reads and deletes of a few names from several sets of instances at once are linearizable",
        rule: "Every `create`, `get` and `delete` takes effect at one instant between its call and its answer, as seen from every instance: the calls of all instances can be put in one order that keeps each call after those that answered before it was made and explains every answer. Of concurrent deletes of one name, more than one may succeed, because some backends (AWS Secrets Manager) cannot tell which of them removed the record; a delete made after another has answered returns `not-found`.",
        run: |kit| Box::pin(model::concurrent(kit)),
    },
    Case {
        id: "env.same-backend",
        title: "a set of instances configured for the same backend in other words reads, lists and deletes the same records",
        rule: "Settings that name the same backend in other words (the same endpoints in another order, another `timeout_ms`) reach the same records.",
        run: |kit| Box::pin(env::same_backend(kit)),
    },
    Case {
        id: "env.dir-read-only",
        title: "with the granted directory read-only, status and reads succeed and writes are access-denied",
        rule: "Succeeds when a read would succeed. A write the backend refuses for permissions (a read-only directory, HTTP 401 or 403) is `access-denied`, never `unavailable`.",
        run: |kit| Box::pin(env::dir_read_only(kit)),
    },
    Case {
        id: "env.dir-removed",
        title: "with the granted directory removed, status and every call are unavailable, never not-found",
        rule: "When the granted directory is removed, or the backend cannot be reached, every call fails with `unavailable`: never success, never `not-found`, which would tell keyhost that a key does not exist.",
        run: |kit| Box::pin(env::dir_removed(kit)),
    },
    Case {
        id: "env.dir-aged",
        title: "records two days old survive a fresh open of their directory",
        rule: "Records are kept however old they are: housekeeping (removing old temporary files, for instance) never removes a record.",
        run: |kit| Box::pin(env::dir_aged(kit)),
    },
    Case {
        id: "env.dir-foreign",
        title: "a subdirectory the plugin did not write, named like a record, is neither listed nor read",
        rule: "A subdirectory that the plugin did not create in its granted directory is not a record: it is neither listed nor read.",
        run: |kit| Box::pin(env::dir_foreign(kit)),
    },
    Case {
        id: "env.http-revoked",
        title: "without its outbound grant, open or every call is access-denied",
        rule: "A request the host denies (`HTTP-request-denied`: the origin is not granted) is `access-denied`.",
        run: |kit| Box::pin(env::http_revoked(kit)),
    },
    Case {
        id: "env.backend-gone",
        title: "with the backend's address answering nothing, open or every call is unavailable",
        rule: "When the granted directory is removed, or the backend cannot be reached, every call fails with `unavailable`: never success, never `not-found`, which would tell keyhost that a key does not exist.",
        run: |kit| Box::pin(env::backend_gone(kit)),
    },
    Case {
        id: "env.credential-refused",
        title: "with a secret setting changed to a wrong credential, open or every call is access-denied",
        rule: "A request the host denies (`HTTP-request-denied`: the origin is not granted) is `access-denied`, and so is a credential the backend refuses.",
        run: |kit| Box::pin(env::credential_refused(kit)),
    },
    Case {
        id: "scale.listing",
        title: "paging through 20,000 names returns each once, in order (with --scale)",
        rule: "Paging through with `after = next` returns every matching name exactly once, however many there are.",
        run: |kit| Box::pin(kit.scale_listing()),
    },
];

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn every_case_quotes_the_contract() {
        let wit = include_str!("../../../../wit/keystore.wit");
        let normal = |t: &str| t.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase();
        let text = normal(&crate::contract::without_case_ids(
            &wit.lines()
                .map(|l| l.trim_start().trim_start_matches("///").trim_start_matches('-'))
                .collect::<Vec<_>>()
                .join(" "),
        ));
        for case in CASES {
            let mut rule = case.rule.to_owned();
            while let (Some(a), Some(b)) = (rule.find('['), rule.find(']')) {
                rule.replace_range(a..=b, "");
            }
            for sentence in rule.split(". ") {
                let sentence = normal(sentence.trim().trim_end_matches('.'));
                assert!(
                    text.contains(&sentence),
                    "{}: {sentence:?} is not in wit/keystore.wit",
                    case.id
                );
            }
            // The ids in brackets: `[a]`, `[a, b]`, `[stem.*]`.
            let ids: Vec<&str> = wit
                .split('[')
                .skip(1)
                .filter_map(|rest| rest.split_once(']').map(|(inside, _)| inside))
                .flat_map(|inside| inside.split(',').map(str::trim))
                .collect();
            let named = ids.iter().any(|id| {
                *id == case.id
                    || id
                        .strip_suffix(".*")
                        .is_some_and(|stem| case.id.starts_with(&format!("{stem}.")))
            });
            assert!(named, "{} is not named in wit/keystore.wit", case.id);
        }
    }

    #[test]
    fn case_ids_are_unique() {
        let mut seen = BTreeSet::new();
        assert!(CASES.iter().all(|c| seen.insert(c.id)));
    }
}
