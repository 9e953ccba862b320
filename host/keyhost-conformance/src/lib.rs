//! The keystore plugin conformance kit, behind `keyhost plugin test`.
//!
//! [`run`] loads a plugin in the production runtime with the production limits and
//! checks every rule of the `keyhost:keystore` contract (`wit/keystore.wit`) with a
//! case whose id is stable, so that CI systems can track cases across versions.
//! Everything the kit creates is named under a random prefix (`kc<random>-`) and
//! deleted at the end; names the contract requires that cannot carry the prefix
//! (one-character names, for instance) are only used when the backend does not
//! already hold them, and never deleted otherwise.
//!
//! The kit proves that it can fail: the test suite runs it against deliberately
//! broken plugins and checks that each fails the case that names its defect.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::future::Future;
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keyhost_keystore::{Error, Keystore};
use keyhost_plugin_host::{LoadError, Plugin, PluginSpec, Runtime};
use rand::Rng;
use serde::Serialize;

/// The setting the kit adds to prove that `open` refuses unknown settings.
pub const UNKNOWN_SETTING: &str = "keyhost-conformance-unknown";

/// One case of the kit.
#[derive(Debug, Clone, Copy)]
pub struct CaseInfo {
    /// Stable identifier, e.g. `create.exists`.
    pub id: &'static str,
    /// What the case checks, in one line.
    pub title: &'static str,
    /// The contract's words the case checks (`wit/keystore.wit`).
    pub rule: &'static str,
}

/// Every case, in the order they run.
pub const CASES: &[CaseInfo] = &[
    CaseInfo {
        id: "info.sane",
        title: "info names the plugin, a semver version and unique settings, and is stable",
        rule: "Describes the plugin. Must not fail, trap or touch the backend.",
    },
    CaseInfo {
        id: "open.missing-setting",
        title: "open without a required setting fails with invalid-argument naming it",
        rule: "Must fail fast with `invalid-argument` naming the setting when a required setting is missing",
    },
    CaseInfo {
        id: "open.unknown-setting",
        title: "open with an unknown setting fails with invalid-argument naming it",
        rule: "[Must fail fast with `invalid-argument` naming the setting] when a key that `info` does not list is present",
    },
    CaseInfo {
        id: "status.answers",
        title: "status succeeds",
        rule: "Succeeds when a read would succeed; otherwise `unavailable` (transient), `access-denied` (credentials or permissions lost) or `other`",
    },
    CaseInfo {
        id: "create.roundtrip.empty",
        title: "an empty record reads back exactly",
        rule: "A record is 0 to 1 MiB (1,048,576 bytes) of arbitrary bytes, including none and including bytes that are not valid UTF-8. [get] Returns the record stored under `name`, byte for byte.",
    },
    CaseInfo {
        id: "create.roundtrip.one-byte",
        title: "a 1-byte record reads back exactly",
        rule: "A record is 0 to 1 MiB (1,048,576 bytes) of arbitrary bytes, including none and including bytes that are not valid UTF-8. [get] Returns the record stored under `name`, byte for byte.",
    },
    CaseInfo {
        id: "create.roundtrip.64kib",
        title: "a 64 KiB record reads back exactly",
        rule: "A record is 0 to 1 MiB (1,048,576 bytes) of arbitrary bytes, including none and including bytes that are not valid UTF-8. [get] Returns the record stored under `name`, byte for byte.",
    },
    CaseInfo {
        id: "create.roundtrip.all-bytes",
        title: "a record of all 256 byte values reads back exactly",
        rule: "A record is 0 to 1 MiB (1,048,576 bytes) of arbitrary bytes, including none and including bytes that are not valid UTF-8. [get] Returns the record stored under `name`, byte for byte.",
    },
    CaseInfo {
        id: "create.roundtrip.1mib",
        title: "a 1 MiB record (the largest) reads back exactly",
        rule: "A record is 0 to 1 MiB (1,048,576 bytes) of arbitrary bytes, including none and including bytes that are not valid UTF-8. [get] Returns the record stored under `name`, byte for byte.",
    },
    CaseInfo {
        id: "create.exists",
        title: "create of an existing name is already-exists and leaves the record unchanged",
        rule: "An existing record is never modified: `already-exists` leaves it exactly as it was.",
    },
    CaseInfo {
        id: "get.missing",
        title: "get of a missing name is not-found",
        rule: "`not-found` if there is none.",
    },
    CaseInfo {
        id: "delete.then-get",
        title: "after delete, get is not-found",
        rule: "Removes the record stored under `name`. [Once that succeeds,] afterwards `get` returns `not-found`.",
    },
    CaseInfo {
        id: "delete.missing",
        title: "delete of a missing name is not-found",
        rule: "Deleting a name that has no record returns `not-found`.",
    },
    CaseInfo {
        id: "list.sorted",
        title: "list returns exactly the matching names in ascending byte order",
        rule: "Names come in ascending byte order, each exactly once.",
    },
    CaseInfo {
        id: "list.prefix",
        title: "list filters by prefix",
        rule: "Lists names that start with `prefix` (the empty prefix matches every name).",
    },
    CaseInfo {
        id: "list.after",
        title: "list continues strictly after `after`, which need not be a stored name",
        rule: "If `after` is given, only names strictly greater than it are returned; it need not be a stored name.",
    },
    CaseInfo {
        id: "list.pages.0",
        title: "paging over 0 names ends at once",
        rule: "Paging through with `after = next` returns every matching name exactly once, however many there are.",
    },
    CaseInfo {
        id: "list.pages.1",
        title: "paging over 1 name returns it once",
        rule: "Paging through with `after = next` returns every matching name exactly once, however many there are.",
    },
    CaseInfo {
        id: "list.pages.1000",
        title: "paging over 1,000 names returns each exactly once, in order",
        rule: "Paging through with `after = next` returns every matching name exactly once, however many there are.",
    },
    CaseInfo {
        id: "list.pages.2500",
        title: "paging over 2,500 names returns each exactly once, in order",
        rule: "Paging through with `after = next` returns every matching name exactly once, however many there are.",
    },
    CaseInfo {
        id: "names.edges",
        title: "names at the edges of the portable charset and length round-trip",
        rule: "Every plugin must support, and store verbatim, every name of 1 to 80 bytes made of `0-9 A-Z a-z _ - .` whose first character is not `.`.",
    },
    CaseInfo {
        id: "names.case",
        title: "names that differ only in case are distinct records",
        rule: "Names are compared and sorted as byte strings, so they are case-sensitive: `KEY` and `key` are two records.",
    },
    CaseInfo {
        id: "create.concurrent-same",
        title: "of 16 concurrent creates of one name exactly one succeeds",
        rule: "Atomic: of any number of concurrent creates of one name, from any number of instances, exactly one succeeds and all others return `already-exists`.",
    },
    CaseInfo {
        id: "create.concurrent-distinct",
        title: "32 concurrent creates of distinct names all succeed",
        rule: "Creates of distinct names never interfere.",
    },
    CaseInfo {
        id: "recycle.durable",
        title: "a record stored, and a record deleted, before all instances are recycled stay so after",
        rule: "[Keep] all state in the backend, never only in instance memory. Success once the removal is durable.",
    },
    CaseInfo {
        id: "info.no-grant",
        title: "info answers in a sandbox with no grant and no setting, as on an opened instance",
        rule: "`info` must be cheap, must not touch the backend, and may be called before `open`. It describes the component, not the deployment: every instance returns the same, whatever its settings and grants.",
    },
    CaseInfo {
        id: "list.pages.boundaries",
        title: "limits 1, 2, 3, 5 and 7 over k*limit-1, k*limit and k*limit+1 names: every name once, `next` exact",
        rule: "At most `limit` names are returned. `next` is `none` exactly when no name greater than the last one returned matches; otherwise it is the last name of the page.",
    },
    CaseInfo {
        id: "names.neighbours",
        title: "names that extend one another or differ in case are distinct in get, delete, create and list",
        rule: "Names are compared and sorted as byte strings. [get] Returns the record stored under `name`. [delete] Removes the record stored under `name`.",
    },
    CaseInfo {
        id: "records.text",
        title: "text-like records (newlines, CR, spaces, NUL, JSON) come back byte for byte",
        rule: "[The plugin] must store it byte for byte and give it back byte for byte, nothing more.",
    },
    CaseInfo {
        id: "records.empty",
        title: "an empty record exists: create over it is refused, it survives recycling and is listed",
        rule: "A record is 0 to 1 MiB (1,048,576 bytes) of arbitrary bytes, including none. An existing record is never modified.",
    },
    CaseInfo {
        id: "names.non-portable",
        title: "a name outside the portable set is refused with invalid-argument or stored verbatim",
        rule: "A name it cannot store faithfully (one its backend would alter, truncate or interpret as a path) it must refuse with `invalid-argument` rather than store something else. All or nothing: on failure no record, and no partial record, is visible under `name`.",
    },
    CaseInfo {
        id: "instances.shared-state",
        title: "a second set of instances sees at once what the first created and deleted",
        rule: "[Every guarantee] must hold *across* instances: keep all state in the backend, never only in instance memory.",
    },
    CaseInfo {
        id: "list.pages.churn",
        title: "paging while names before and after the cursor are created and deleted returns every other name once",
        rule: "Names created or deleted while paging may or may not appear; all others must.",
    },
    CaseInfo {
        id: "open.malformed-setting",
        title: "a malformed value (NUL, newline) of each setting is refused with invalid-argument naming it, or accepted",
        rule: "[Must fail fast with `invalid-argument` naming the setting] when a value is malformed.",
    },
    CaseInfo {
        id: "records.never-revealed",
        title: "no record and no secret setting appears in the plugin's output or in an error's text",
        rule: "Never print a record or a credential. The text must describe it without revealing a record or a credential.",
    },
];

/// How a case ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", content = "detail", rename_all = "lowercase")]
pub enum Outcome {
    /// The rule holds.
    Pass,
    /// The rule is broken; the text says how.
    Fail(String),
    /// The case does not apply; the text says why.
    Skip(String),
}

/// The result of one case.
#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    /// Stable identifier.
    pub id: &'static str,
    /// What it checks.
    pub title: &'static str,
    /// The contract's words it checks.
    pub rule: &'static str,
    /// How it ended.
    #[serde(flatten)]
    pub outcome: Outcome,
    /// How long it took, in seconds.
    pub seconds: f64,
}

/// The result of a kit run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The plugin's source (file or builtin label).
    pub plugin: String,
    /// The plugin's name and version, as it reports them.
    pub plugin_info: String,
    /// SHA-256 of the component.
    pub sha256: String,
    /// The prefix under which the kit created its records.
    pub prefix: String,
    /// Every case that ran (after filtering).
    pub cases: Vec<CaseResult>,
}

impl Report {
    /// Cases that passed.
    pub fn passed(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Pass))
    }
    /// Cases that failed.
    pub fn failed(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Fail(_)))
    }
    /// Cases that were skipped.
    pub fn skipped(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Skip(_)))
    }
    fn count(&self, f: impl Fn(&Outcome) -> bool) -> usize {
        self.cases.iter().filter(|c| f(&c.outcome)).count()
    }
    /// The ids of the failed cases.
    pub fn failed_ids(&self) -> Vec<&'static str> {
        self.cases
            .iter()
            .filter(|c| matches!(c.outcome, Outcome::Fail(_)))
            .map(|c| c.id)
            .collect()
    }

    /// A human-readable summary: one line per case, then the totals.
    pub fn to_text(&self) -> String {
        let mut out = format!(
            "conformance of {} ({}), sha256 {}\n",
            self.plugin, self.plugin_info, self.sha256
        );
        for case in &self.cases {
            let (mark, detail) = match &case.outcome {
                Outcome::Pass => ("ok  ", String::new()),
                Outcome::Fail(why) => (
                    "FAIL",
                    format!("\n       rule: \u{201c}{}\u{201d}\n       {why}", case.rule),
                ),
                Outcome::Skip(why) => ("skip", format!(" ({why})")),
            };
            let _ = writeln!(
                out,
                "  {mark} {:<28} {:>7.3}s  {}{detail}",
                case.id, case.seconds, case.title
            );
        }
        let _ = writeln!(
            out,
            "{} passed, {} failed, {} skipped",
            self.passed(),
            self.failed(),
            self.skipped()
        );
        out
    }

    /// The report as JUnit XML.
    pub fn to_junit(&self) -> String {
        let total: f64 = self.cases.iter().map(|c| c.seconds).sum();
        let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        let _ = writeln!(
            out,
            "<testsuite name=\"keyhost-conformance\" tests=\"{}\" failures=\"{}\" skipped=\"{}\" time=\"{total:.3}\">",
            self.cases.len(),
            self.failed(),
            self.skipped()
        );
        let _ = writeln!(
            out,
            "  <properties><property name=\"plugin\" value=\"{}\"/><property name=\"sha256\" value=\"{}\"/></properties>",
            xml(&self.plugin),
            self.sha256
        );
        for case in &self.cases {
            let _ = write!(
                out,
                "  <testcase classname=\"keyhost.conformance\" name=\"{}\" time=\"{:.3}\"",
                case.id, case.seconds
            );
            match &case.outcome {
                Outcome::Pass => out.push_str("/>\n"),
                Outcome::Fail(why) => {
                    let _ = writeln!(
                        out,
                        "><failure message=\"{}\">rule: {}\n{}</failure></testcase>",
                        xml(case.title),
                        xml(case.rule),
                        xml(why)
                    );
                }
                Outcome::Skip(why) => {
                    let _ = writeln!(out, "><skipped message=\"{}\"/></testcase>", xml(why));
                }
            }
        }
        out.push_str("</testsuite>\n");
        out
    }

    /// The report as JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

fn xml(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '<' => "&lt;".into(),
            '>' => "&gt;".into(),
            '&' => "&amp;".into(),
            '"' => "&quot;".into(),
            c if c.is_control() && c != '\n' && c != '\t' => "\u{fffd}".into(),
            c => c.to_string(),
        })
        .collect()
}

/// Options of a kit run.
#[derive(Debug, Clone, Default)]
pub struct KitOptions {
    /// Run only cases whose id matches (`*` matches any run of characters; without
    /// `*`, any id containing the pattern matches; `a,b` matches either).
    pub filter: Option<String>,
    /// Skip the cases whose id matches (same syntax as `filter`).
    pub skip: Option<String>,
    /// How long one case may take before it fails.
    pub case_timeout: Option<Duration>,
    /// Run the cases through host-side sealing with these key-encryption keys, as
    /// a server with `keystore.seal` uses the plugin: every record the plugin
    /// receives is sealed, and the largest record is what still fits once sealed.
    pub seal: Option<Arc<keyhost_seal::Sealer>>,
}

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

/// Runs the kit against the plugin that `spec` describes.
///
/// # Errors
///
/// Returns the load error when the plugin cannot be loaded with `spec` at all;
/// every other problem is a failed case in the report.
pub async fn run(runtime: &Runtime, spec: PluginSpec, options: &KitOptions) -> Result<Report, LoadError> {
    let plugin = runtime.load(spec.clone()).await?;
    let info = plugin.info();
    let prefix = format!("kc{}-", random_token(8));
    let mut record_sizes = record_sizes(&info.features).unwrap_or(0..=MAX_RECORD);
    if options.seal.is_some() {
        // Sealed, every record is larger than its plaintext, also an empty one.
        record_sizes = 0..=keyhost_seal::Sealer::max_plain(*record_sizes.end());
    }
    let store = sealed_as(&options.seal, plugin.clone());
    let kit = Kit {
        record_sizes,
        seal: options.seal.clone(),
        store,
        runtime: runtime.clone(),
        spec,
        plugin: plugin.clone(),
        prefix: prefix.clone(),
        created: Arc::new(Mutex::new(BTreeSet::new())),
    };
    let timeout = options.case_timeout.unwrap_or(Duration::from_secs(300));
    let mut results = Vec::new();
    for case in CASES {
        if let Some(filter) = &options.filter
            && !matches_filter(filter, case.id)
        {
            continue;
        }
        if let Some(skip) = &options.skip
            && matches_filter(skip, case.id)
        {
            continue;
        }
        let start = Instant::now();
        let outcome = match tokio::time::timeout(timeout, kit.run_case(case.id)).await {
            Ok(outcome) => outcome,
            Err(_) => Outcome::Fail(format!("the case did not finish within {} s", timeout.as_secs())),
        };
        results.push(CaseResult {
            id: case.id,
            title: case.title,
            rule: case.rule,
            outcome,
            seconds: start.elapsed().as_secs_f64(),
        });
    }
    kit.cleanup().await;
    Ok(Report {
        plugin: kit.spec.source.label(),
        plugin_info: format!("{} {}", info.name, info.version),
        sha256: plugin.sha256().to_owned(),
        prefix,
        cases: results,
    })
}

/// `plugin`, sealed by `seal` when there is one.
fn sealed_as(seal: &Option<Arc<keyhost_seal::Sealer>>, plugin: Plugin) -> Arc<dyn Keystore> {
    match seal {
        None => Arc::new(plugin),
        Some(sealer) => Arc::new(keyhost_seal::SealedStore::new(Arc::new(plugin), Some(sealer.clone()))),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn random_token(len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// The largest record the contract knows.
const MAX_RECORD: usize = 1 << 20;

/// The sizes a plugin's `record-size=MIN..MAX` feature declares: `None` without the
/// feature, `Some(Err)` when it is malformed or out of the contract's bounds.
fn declared_record_sizes(features: &[String]) -> Option<Result<RangeInclusive<usize>, String>> {
    let raw = features.iter().find_map(|f| f.strip_prefix("record-size="))?;
    let parsed = raw
        .split_once("..")
        .and_then(|(min, max)| Some((min.parse::<usize>().ok()?, max.parse::<usize>().ok()?)));
    Some(match parsed {
        Some((min, max)) if min <= 1 && (4096..=MAX_RECORD).contains(&max) => Ok(min..=max),
        _ => Err(format!(
            "feature record-size={raw} must read MIN..MAX with MIN at most 1 and MAX from 4096 to {MAX_RECORD}"
        )),
    })
}

fn record_sizes(features: &[String]) -> Option<RangeInclusive<usize>> {
    declared_record_sizes(features).and_then(Result::ok)
}

struct Kit {
    record_sizes: RangeInclusive<usize>,
    /// The sealing `store` applies, if any.
    seal: Option<Arc<keyhost_seal::Sealer>>,
    /// What the cases' records go through: the plugin, or the plugin under sealing.
    store: Arc<dyn Keystore>,
    runtime: Runtime,
    spec: PluginSpec,
    plugin: Plugin,
    prefix: String,
    created: Arc<Mutex<BTreeSet<String>>>,
}

type CaseResultInner = Result<Option<String>, String>;

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

impl Kit {
    async fn run_case(&self, id: &str) -> Outcome {
        let result: CaseResultInner = match id {
            "info.sane" => self.info_sane().await,
            "open.missing-setting" => self.open_missing_setting().await,
            "open.unknown-setting" => self.open_unknown_setting().await,
            "status.answers" => self
                .store
                .status()
                .await
                .map(|_| None)
                .map_err(|e| format!("status failed: {e}")),
            "create.roundtrip.empty" => self.roundtrip("rt-empty", Vec::new()).await,
            "create.roundtrip.one-byte" => self.roundtrip("rt-one", vec![0x2a]).await,
            "create.roundtrip.64kib" => self.roundtrip("rt-64k", pattern(64 << 10)).await,
            "create.roundtrip.all-bytes" => self.roundtrip("rt-all", (0..=255u8).collect()).await,
            "create.roundtrip.1mib" => self.roundtrip("rt-1m", pattern(1 << 20)).await,
            "create.exists" => self.create_exists().await,
            "get.missing" => self.get_missing().await,
            "delete.then-get" => self.delete_then_get().await,
            "delete.missing" => self.delete_missing().await,
            "list.sorted" => self.list_sorted().await,
            "list.prefix" => self.list_prefix().await,
            "list.after" => self.list_after().await,
            "list.pages.0" => self.list_pages(0).await,
            "list.pages.1" => self.list_pages(1).await,
            "list.pages.1000" => self.list_pages(1000).await,
            "list.pages.2500" => self.list_pages(2500).await,
            "names.edges" => self.names_edges().await,
            "names.case" => self.names_case().await,
            "create.concurrent-same" => self.concurrent_same().await,
            "create.concurrent-distinct" => self.concurrent_distinct().await,
            "recycle.durable" => self.recycle_durable().await,
            "info.no-grant" => self.info_no_grant().await,
            "list.pages.boundaries" => self.list_boundaries().await,
            "names.neighbours" => self.names_neighbours().await,
            "records.text" => self.records_text().await,
            "records.empty" => self.records_empty().await,
            "names.non-portable" => self.names_non_portable().await,
            "instances.shared-state" => self.shared_state().await,
            "list.pages.churn" => self.list_churn().await,
            "open.malformed-setting" => self.open_malformed_setting().await,
            "records.never-revealed" => self.never_revealed().await,
            other => Err(format!("unknown case {other}")),
        };
        match result {
            Ok(None) => Outcome::Pass,
            Ok(Some(why)) => Outcome::Skip(why),
            Err(why) => Outcome::Fail(why),
        }
    }

    fn name(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.prefix)
    }

    async fn create(&self, name: &str, value: &[u8]) -> Result<(), Error> {
        let result = self.store.create(name, value).await;
        if result.is_ok() {
            self.created
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(name.to_owned());
        }
        result
    }

    async fn create_ok(&self, name: &str, value: &[u8]) -> Result<(), String> {
        self.create(name, value)
            .await
            .map_err(|e| format!("create({name:?}, {} bytes) failed: {e}", value.len()))
    }

    async fn cleanup(&self) {
        let names: Vec<String> = std::mem::take(&mut *self.created.lock().unwrap_or_else(|p| p.into_inner()))
            .into_iter()
            .collect();
        for_each_concurrent(names, 8, |name| {
            let store = self.store.clone();
            async move {
                let _ = store.delete(&name).await;
            }
        })
        .await;
    }

    /// Deletes `names` now rather than at the end of the run, so that the cases after
    /// a large one do not list its names again; a name whose delete fails stays for
    /// the final cleanup.
    async fn remove_now(&self, names: &[String]) {
        for_each_concurrent(names.to_vec(), 8, |name| async move {
            if self.store.delete(&name).await.is_ok() {
                self.created.lock().unwrap_or_else(|p| p.into_inner()).remove(&name);
            }
        })
        .await;
    }

    async fn info_sane(&self) -> CaseResultInner {
        let info = self.plugin.info();
        ensure!(
            !info.name.is_empty()
                && info
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
            "info.name {:?} must be a short lowercase identifier ([a-z0-9-]+)",
            info.name
        );
        let parts: Vec<&str> = info.version.split(['-', '+']).next().unwrap_or("").split('.').collect();
        ensure!(
            parts.len() == 3
                && parts
                    .iter()
                    .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())),
            "info.version {:?} is not a semver version such as 1.2.3",
            info.version
        );
        if let Some(Err(why)) = declared_record_sizes(&info.features) {
            return Err(why);
        }
        let mut seen = BTreeSet::new();
        for s in &info.settings {
            ensure!(!s.name.is_empty(), "a setting has an empty name");
            ensure!(seen.insert(s.name.as_str()), "setting {:?} is listed twice", s.name);
            ensure!(
                !s.description.trim().is_empty(),
                "setting {:?} has no description",
                s.name
            );
        }
        // A fresh instance must describe itself the same way.
        self.plugin.recycle();
        self.plugin
            .status()
            .await
            .map_err(|e| format!("status after recycle failed: {e}"))?;
        ensure!(self.plugin.info() == info, "info changed between instances");
        Ok(None)
    }

    async fn load_with(&self, config: BTreeMap<String, String>) -> Result<Plugin, LoadError> {
        let mut spec = self.spec.clone();
        spec.config = config;
        self.runtime.load(spec).await
    }

    async fn open_missing_setting(&self) -> CaseResultInner {
        let info = self.plugin.info();
        let required: Vec<_> = info.settings.iter().filter(|s| s.required).collect();
        if required.is_empty() {
            return Ok(Some("the plugin has no required setting".into()));
        }
        for setting in required {
            let mut config = self.spec.config.clone();
            config.remove(&setting.name);
            match self.load_with(config).await {
                Err(LoadError::Open {
                    error: Error::InvalidArgument(message),
                    ..
                }) if message.contains(&setting.name) => {}
                Err(LoadError::Open { error, .. }) => {
                    return Err(format!(
                        "without required setting {:?}, open failed with {error:?}; expected invalid-argument naming the setting",
                        setting.name
                    ));
                }
                Err(other) => return Err(format!("without setting {:?}: {other}", setting.name)),
                Ok(_) => {
                    return Err(format!("open succeeded without required setting {:?}", setting.name));
                }
            }
        }
        Ok(None)
    }

    async fn open_unknown_setting(&self) -> CaseResultInner {
        let mut config = self.spec.config.clone();
        config.insert(UNKNOWN_SETTING.into(), "1".into());
        match self.load_with(config).await {
            Err(LoadError::Open {
                error: Error::InvalidArgument(message),
                ..
            }) if message.contains(UNKNOWN_SETTING) => Ok(None),
            Err(LoadError::Open { error, .. }) => Err(format!(
                "with unknown setting {UNKNOWN_SETTING:?}, open failed with {error:?}; expected invalid-argument naming it"
            )),
            Err(other) => Err(format!("with an unknown setting: {other}")),
            Ok(_) => Err(format!("open accepted the unknown setting {UNKNOWN_SETTING:?}")),
        }
    }

    async fn roundtrip(&self, suffix: &str, value: Vec<u8>) -> CaseResultInner {
        let name = self.name(suffix);
        if !self.record_sizes.contains(&value.len()) {
            // Outside the sizes the plugin declares: refused, and nothing stored.
            match self.create(&name, &value).await {
                Err(Error::InvalidArgument(_)) => {}
                Ok(()) => {
                    return Err(format!(
                        "create of a {}-byte record succeeded although the plugin declares record-size={}..{}",
                        value.len(),
                        self.record_sizes.start(),
                        self.record_sizes.end()
                    ));
                }
                Err(e) => {
                    return Err(format!(
                        "create of a {}-byte record, outside the declared sizes, failed with {e} instead of invalid-argument",
                        value.len()
                    ));
                }
            }
            return match self.store.get(&name).await {
                Err(Error::NotFound) => Ok(None),
                other => Err(format!(
                    "after a refused create, get({name:?}) returned {:?} instead of not-found",
                    other.map(|v| v.len())
                )),
            };
        }
        self.create_ok(&name, &value).await?;
        let got = self
            .store
            .get(&name)
            .await
            .map_err(|e| format!("get({name:?}) failed: {e}"))?;
        ensure!(
            *got == value,
            "get({name:?}) returned {} bytes that differ from the {} bytes stored{}",
            got.len(),
            value.len(),
            first_difference(&got, &value)
        );
        if self.seal.is_some() {
            // What the plugin holds is the sealed record, not the value.
            let raw = self
                .plugin
                .get(&name)
                .await
                .map_err(|e| format!("get({name:?}) of the sealed record failed: {e}"))?;
            ensure!(
                raw.starts_with(keyhost_seal::PREFIX.as_bytes()) && (value.len() < 16 || !contains(&raw, &value[..16])),
                "the plugin holds {name:?} unsealed"
            );
        }
        Ok(None)
    }

    async fn create_exists(&self) -> CaseResultInner {
        let name = self.name("exists");
        self.create_ok(&name, b"first").await?;
        match self.store.create(&name, b"second").await {
            Err(Error::AlreadyExists) => {}
            Ok(()) => return Err("the second create of the same name succeeded".into()),
            Err(e) => {
                return Err(format!("the second create returned {e:?}, expected already-exists"));
            }
        }
        let got = self.store.get(&name).await.map_err(|e| format!("get failed: {e}"))?;
        ensure!(
            &got[..] == b"first",
            "after a refused create the record reads {:?}, expected the first value",
            String::from_utf8_lossy(&got)
        );
        Ok(None)
    }

    async fn get_missing(&self) -> CaseResultInner {
        match self.store.get(&self.name("never-created")).await {
            Err(Error::NotFound) => Ok(None),
            Ok(_) => Err("get of a never-created name returned a record".into()),
            Err(e) => Err(format!(
                "get of a never-created name returned {e:?}, expected not-found"
            )),
        }
    }

    async fn delete_then_get(&self) -> CaseResultInner {
        let name = self.name("deleted");
        self.create_ok(&name, b"doomed").await?;
        self.plugin
            .delete(&name)
            .await
            .map_err(|e| format!("delete failed: {e}"))?;
        match self.store.get(&name).await {
            Err(Error::NotFound) => {}
            Ok(_) => return Err("get after delete still returns the record".into()),
            Err(e) => {
                return Err(format!("get after delete returned {e:?}, expected not-found"));
            }
        }
        let listed = self.list_all(&name, 100).await?;
        ensure!(listed.is_empty(), "list after delete still shows {listed:?}");
        Ok(None)
    }

    async fn delete_missing(&self) -> CaseResultInner {
        match self.store.delete(&self.name("never-created")).await {
            Err(Error::NotFound) => Ok(None),
            Ok(()) => Err("delete of a missing name succeeded; the contract requires not-found".into()),
            Err(e) => Err(format!("delete of a missing name returned {e:?}, expected not-found")),
        }
    }

    /// Pages through everything under `prefix` with `limit`, checking the page rules.
    async fn list_all(&self, prefix: &str, limit: u32) -> Result<Vec<String>, String> {
        let mut all: Vec<String> = Vec::new();
        let mut after: Option<String> = None;
        let mut set_next = false;
        for round in 0.. {
            if round > 100_000 {
                return Err("listing did not end after 100,000 pages".into());
            }
            let page = self
                .store
                .list(prefix, after.as_deref(), limit)
                .await
                .map_err(|e| format!("list({prefix:?}, after {after:?}, limit {limit}) failed: {e}"))?;
            ensure!(
                page.names.len() <= limit as usize,
                "a page with limit {limit} held {} names",
                page.names.len()
            );
            for name in &page.names {
                ensure!(
                    name.starts_with(prefix),
                    "list({prefix:?}) returned {name:?}, which lacks the prefix"
                );
                if let Some(a) = &after {
                    ensure!(name > a, "list after {a:?} returned {name:?}, which is not greater");
                }
            }
            if after.is_some() && page.names.is_empty() && round > 0 && set_next {
                return Err(format!(
                    "`next` was {after:?}, but no greater name matches (the next page is empty): `next` must be none exactly when nothing follows"
                ));
            }
            all.extend(page.names.iter().cloned());
            set_next = page.next.is_some();
            match page.next {
                None => break,
                Some(next) => {
                    ensure!(!page.names.is_empty(), "an empty page set `next` to {next:?}");
                    ensure!(
                        page.names.last() == Some(&next),
                        "`next` is {next:?}, but the page's last name is {:?}",
                        page.names.last()
                    );
                    after = Some(next);
                }
            }
        }
        Ok(all)
    }

    async fn create_many(&self, names: &[String]) -> Result<(), String> {
        let failures = Arc::new(Mutex::new(Vec::new()));
        for_each_concurrent(names.to_vec(), 8, |name| {
            let failures = failures.clone();
            async move {
                if let Err(e) = self.create(&name, name.as_bytes()).await {
                    failures
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(format!("{name}: {e}"));
                }
            }
        })
        .await;
        let failures = failures.lock().unwrap_or_else(|p| p.into_inner());
        ensure!(
            failures.is_empty(),
            "{} creates failed, e.g. {}",
            failures.len(),
            failures[0]
        );
        Ok(())
    }

    async fn list_sorted(&self) -> CaseResultInner {
        let base = self.name("sorted-");
        // Names chosen so that byte order differs from insertion order and from
        // case-insensitive or numeric order.
        let suffixes = [
            "b", "B", "a", "a-", "a_", "a.", "10", "9", "Z", "z", "_", "-", "0", "aa", "a0", "ab",
        ];
        let mut names: Vec<String> = suffixes.iter().map(|s| format!("{base}{s}")).collect();
        self.create_many(&names).await?;
        let listed = self
            .store
            .list(&base, None, 1000)
            .await
            .map_err(|e| format!("list failed: {e}"))?;
        names.sort();
        ensure!(
            listed.next.is_none(),
            "a listing of {} names with limit 1000 set next",
            names.len()
        );
        ensure!(
            listed.names == names,
            "list returned {:?}, expected (byte order) {:?}",
            listed.names,
            names
        );
        Ok(None)
    }

    async fn list_prefix(&self) -> CaseResultInner {
        let a: Vec<String> = (0..5).map(|i| self.name(&format!("pfx-a{i}"))).collect();
        let b: Vec<String> = (0..5).map(|i| self.name(&format!("pfx-b{i}"))).collect();
        self.create_many(&a).await?;
        self.create_many(&b).await?;
        let listed = self.list_all(&self.name("pfx-a"), 1000).await?;
        ensure!(
            listed == a,
            "list({:?}) returned {listed:?}, expected {a:?}",
            self.name("pfx-a")
        );
        let none = self.list_all(&self.name("pfx-c"), 1000).await?;
        ensure!(none.is_empty(), "a prefix matching nothing returned {none:?}");
        Ok(None)
    }

    async fn list_after(&self) -> CaseResultInner {
        let base = self.name("after-");
        let names: Vec<String> = ["a", "c", "e"].iter().map(|s| format!("{base}{s}")).collect();
        self.create_many(&names).await?;
        for (after, expected) in [
            ("b", &names[1..]),
            ("c", &names[2..]),
            ("e", &names[3..]),
            ("", &names[..]),
        ] {
            let after_name = format!("{base}{after}");
            let page = self
                .store
                .list(&base, Some(&after_name), 100)
                .await
                .map_err(|e| format!("list after {after_name:?} failed: {e}"))?;
            ensure!(
                page.names == expected,
                "list after {after_name:?} returned {:?}, expected {expected:?}",
                page.names
            );
            ensure!(
                page.next.is_none(),
                "list after {after_name:?} set next although nothing follows"
            );
        }
        Ok(None)
    }

    async fn list_pages(&self, count: usize) -> CaseResultInner {
        let base = self.name(&format!("pages{count}-"));
        let mut names: Vec<String> = (0..count).map(|i| format!("{base}{i:05}")).collect();
        self.create_many(&names).await?;
        names.sort();
        let result = self.page_through(&base, &names).await;
        self.remove_now(&names).await;
        result
    }

    /// Lists every name under `base` with a few page sizes and compares with `names`.
    async fn page_through(&self, base: &str, names: &[String]) -> CaseResultInner {
        let count = names.len();
        // Small pages over few names, large pages over many: every page boundary
        // case is covered without listing thousands of pages.
        let limits: &[u32] = if count <= 100 { &[1, 7, 100] } else { &[97, 1000] };
        for &limit in limits {
            let listed = self.list_all(base, limit).await?;
            if listed != names {
                let got: BTreeSet<&String> = listed.iter().collect();
                let missing: Vec<&String> = names.iter().filter(|n| !got.contains(n)).take(5).collect();
                let mut seen = BTreeSet::new();
                let dup: Vec<&String> = listed.iter().filter(|n| !seen.insert(*n)).take(5).collect();
                return Err(format!(
                    "paging with limit {limit} over {count} names returned {} names; missing e.g. {missing:?}, duplicated e.g. {dup:?}{}",
                    listed.len(),
                    if missing.is_empty() && dup.is_empty() {
                        ", out of order"
                    } else {
                        ""
                    }
                ));
            }
        }
        Ok(None)
    }

    /// On a store that folds case (a case-insensitive file system), `KEY` and `key`
    /// are one record, so a policy that names one could be bypassed with the other.
    async fn names_case(&self) -> CaseResultInner {
        let (upper, lower) = (self.name("case-KEY"), self.name("case-key"));
        for (name, value) in [(&upper, &b"upper"[..]), (&lower, &b"lower"[..])] {
            self.create(name, value).await.map_err(|e| {
                format!("create({name:?}) failed after create({upper:?}): {e}; names must be case-sensitive")
            })?;
        }
        for (name, value) in [(&upper, &b"upper"[..]), (&lower, &b"lower"[..])] {
            let got = self
                .store
                .get(name)
                .await
                .map_err(|e| format!("get({name:?}) failed: {e}"))?;
            ensure!(
                got[..] == *value,
                "get({name:?}) returned the record of a name that differs only in case"
            );
        }
        Ok(None)
    }

    async fn names_edges(&self) -> CaseResultInner {
        // The portable alphabet, at its edges: single characters, inner dots, and
        // the longest portable name.
        let long = format!("{}{}", self.prefix, "Zz9_-.".repeat(20));
        let long = &long[..80];
        let mut names: Vec<String> = ["a", "Z", "0", "9", "_", "-", "a.b", "A-z_0.9-"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        names.push(long.to_owned());
        names.push(self.name("x.y.z"));
        let mut used = 0;
        for name in &names {
            let value = format!("value of {name}");
            match self.create(name, value.as_bytes()).await {
                Ok(()) => used += 1,
                // Somebody's real key: leave it alone.
                Err(Error::AlreadyExists) if !name.starts_with(&self.prefix) => continue,
                Err(e) => return Err(format!("create({name:?}) of a portable name failed: {e}")),
            }
            let got = self
                .store
                .get(name)
                .await
                .map_err(|e| format!("get({name:?}) failed: {e}"))?;
            ensure!(got[..] == *value.as_bytes(), "get({name:?}) returned other bytes");
            let listed = self.list_all(name, 1000).await?;
            ensure!(
                listed.first() == Some(name),
                "list({name:?}) does not start with {name:?}: {listed:?}"
            );
            self.plugin
                .delete(name)
                .await
                .map_err(|e| format!("delete({name:?}) failed: {e}"))?;
            self.created.lock().unwrap_or_else(|p| p.into_inner()).remove(name);
        }
        ensure!(used > 0, "no edge name could be used");
        Ok(None)
    }

    async fn concurrent_same(&self) -> CaseResultInner {
        let name = self.name("race");
        let attempts = futures::future::join_all((0..16u8).map(|i| {
            let name = name.clone();
            async move { (i, self.create(&name, &[i; 16]).await) }
        }))
        .await;
        let winners: Vec<u8> = attempts.iter().filter(|(_, r)| r.is_ok()).map(|(i, _)| *i).collect();
        let others: Vec<String> = attempts
            .iter()
            .filter_map(|(_, r)| match r {
                Ok(()) | Err(Error::AlreadyExists) => None,
                Err(e) => Some(e.to_string()),
            })
            .collect();
        ensure!(
            others.is_empty(),
            "concurrent creates failed with other errors than already-exists: {others:?}"
        );
        ensure!(
            winners.len() == 1,
            "{} of 16 concurrent creates of one name succeeded",
            winners.len()
        );
        let got = self.store.get(&name).await.map_err(|e| format!("get failed: {e}"))?;
        ensure!(
            got[..] == [winners[0]; 16],
            "the stored record is not the value of the create that succeeded"
        );
        Ok(None)
    }

    async fn concurrent_distinct(&self) -> CaseResultInner {
        let names: Vec<String> = (0..32).map(|i| self.name(&format!("distinct-{i:02}"))).collect();
        let results = futures::future::join_all(names.iter().map(|n| self.create(n, n.as_bytes()))).await;
        let failed: Vec<String> = names
            .iter()
            .zip(&results)
            .filter_map(|(n, r)| r.as_ref().err().map(|e| format!("{n}: {e}")))
            .collect();
        ensure!(
            failed.is_empty(),
            "{} of 32 concurrent creates failed: {:?}",
            failed.len(),
            &failed[..failed.len().min(3)]
        );
        for name in &names {
            let got = self
                .store
                .get(name)
                .await
                .map_err(|e| format!("get({name:?}) failed: {e}"))?;
            ensure!(got[..] == *name.as_bytes(), "get({name:?}) returned another record");
        }
        Ok(None)
    }

    async fn recycle_durable(&self) -> CaseResultInner {
        let name = self.name("durable");
        self.create_ok(&name, b"survives").await?;
        self.plugin.recycle();
        match self.store.get(&name).await {
            Ok(v) if &v[..] == b"survives" => {}
            Ok(_) => return Err("after recycling, the record reads other bytes".into()),
            Err(e) => {
                return Err(format!(
                    "after recycling every instance, get returned {e:?}: the record was kept in instance memory, not in the backend"
                ));
            }
        }
        self.plugin
            .delete(&name)
            .await
            .map_err(|e| format!("delete({name:?}) failed: {e}"))?;
        self.plugin.recycle();
        match self.store.get(&name).await {
            Err(Error::NotFound) => {
                self.created.lock().unwrap_or_else(|p| p.into_inner()).remove(&name);
                Ok(None)
            }
            Ok(_) => Err(format!(
                "delete({name:?}) succeeded, but after recycling every instance the record is back: the removal was not made in the backend"
            )),
            Err(e) => Err(format!(
                "after a delete and a recycle, get returned {e:?}, expected not-found"
            )),
        }
    }
}

impl Kit {
    async fn info_no_grant(&self) -> CaseResultInner {
        let inspection = self
            .runtime
            .inspect(&self.spec.source)
            .await
            .map_err(|e| format!("the component could not be inspected: {e}"))?;
        if let Some(problem) = inspection.problem {
            return Err(format!(
                "info, called with no grant and no setting, failed: {problem} (info must not touch the backend)"
            ));
        }
        let opened = self.plugin.info();
        if let Some(bare) = &inspection.info
            && *bare != opened
        {
            let show = |i: &keyhost_plugin_host::PluginInfo| {
                format!("name {:?}, version {:?}, features {:?}", i.name, i.version, i.features)
            };
            return Err(format!(
                "info differs with and without settings and grants: without, {}; on an opened instance, {}",
                show(bare),
                show(&opened)
            ));
        }
        ensure!(inspection.info.is_some(), "info could not be read without grants");
        Ok(None)
    }

    async fn list_boundaries(&self) -> CaseResultInner {
        let base = self.name("bound-");
        let total = 15;
        let names: Vec<String> = (0..total).map(|i| format!("{base}{i:02}")).collect();
        self.create_many(&names).await?;
        // A name after all of them without their prefix (`.` sorts after `-`): a
        // plugin that forgets the prefix once `after` is set returns it, whatever
        // else the store holds.
        let outsider = self.name("bound.");
        self.create_ok(&outsider, b"outside the prefix").await?;
        for limit in [1u32, 2, 3, 5, 7] {
            let l = limit as usize;
            let mut sizes: Vec<usize> = (1..=2)
                .flat_map(|k| [k * l - 1, k * l, k * l + 1])
                .filter(|n| *n <= total)
                .collect();
            sizes.dedup();
            for n in sizes {
                // The last n names: those after names[total - n - 1].
                let after = (n < total).then(|| names[total - n - 1].clone());
                let expected = &names[total - n..];
                let listed = self.list_from(&base, after.clone(), limit).await?;
                ensure!(
                    listed == expected,
                    "paging with limit {limit} over {n} names (after {after:?}) returned {listed:?}, expected {expected:?}"
                );
            }
        }
        Ok(None)
    }

    /// `list_all` from `after`, with the strict `next` rule.
    async fn list_from(&self, prefix: &str, mut after: Option<String>, limit: u32) -> Result<Vec<String>, String> {
        let mut all = Vec::new();
        for _ in 0..1000 {
            let page = self
                .store
                .list(prefix, after.as_deref(), limit)
                .await
                .map_err(|e| format!("list({prefix:?}, after {after:?}, limit {limit}) failed: {e}"))?;
            ensure!(
                page.names.len() <= limit as usize,
                "a page with limit {limit} held {} names",
                page.names.len()
            );
            for name in &page.names {
                ensure!(
                    name.starts_with(prefix),
                    "list({prefix:?}) returned {name:?}, which lacks the prefix"
                );
                if let Some(a) = &after {
                    ensure!(name > a, "list after {a:?} returned {name:?}, which is not greater");
                }
            }
            all.extend(page.names.iter().cloned());
            match page.next {
                None => {
                    if let Some(last) = page.names.last() {
                        // `none` only when nothing greater matches.
                        let rest = self
                            .store
                            .list(prefix, Some(last), limit)
                            .await
                            .map_err(|e| format!("list after {last:?} failed: {e}"))?;
                        ensure!(
                            rest.names.is_empty(),
                            "`next` was none after {last:?}, but {:?} follow",
                            rest.names
                        );
                    }
                    return Ok(all);
                }
                Some(next) => {
                    ensure!(
                        page.names.last() == Some(&next),
                        "`next` is {next:?}, but the page's last name is {:?}",
                        page.names.last()
                    );
                    let peek = self
                        .store
                        .list(prefix, Some(&next), limit)
                        .await
                        .map_err(|e| format!("list after {next:?} failed: {e}"))?;
                    ensure!(
                        !peek.names.is_empty(),
                        "`next` was {next:?} on a page of {} names with limit {limit}, but no greater name matches: `next` must be none exactly when nothing follows",
                        page.names.len()
                    );
                    after = Some(next);
                }
            }
        }
        Err("listing did not end after 1,000 pages".into())
    }

    async fn names_neighbours(&self) -> CaseResultInner {
        let (a, ab, abc, upper) = (
            self.name("nb"),
            self.name("nb-x"),
            self.name("nb-x-y"),
            self.name("NB-x"),
        );
        for n in [&a, &abc, &upper] {
            self.create_ok(n, n.as_bytes()).await?;
        }
        match self.store.get(&ab).await {
            Err(Error::NotFound) => {}
            Ok(v) => {
                return Err(format!(
                    "get({ab:?}), never created, returned {:?}, the record of a neighbouring name",
                    String::from_utf8_lossy(&v)
                ));
            }
            Err(e) => {
                return Err(format!(
                    "get({ab:?}), never created, returned {e:?}, expected not-found"
                ));
            }
        }
        self.create_ok(&ab, ab.as_bytes()).await?;
        for n in [&a, &ab, &abc, &upper] {
            let got = self.store.get(n).await.map_err(|e| format!("get({n:?}) failed: {e}"))?;
            ensure!(
                got[..] == *n.as_bytes(),
                "get({n:?}) returned the record of another name"
            );
        }
        let listed = self.list_all(&self.name("nb-"), 1000).await?;
        ensure!(
            listed == [ab.clone(), abc.clone()],
            "list({:?}) returned {listed:?}",
            self.name("nb-")
        );
        let listed = self.list_all(&self.name("NB"), 1000).await?;
        ensure!(
            listed == [upper.clone()],
            "list({:?}) (case-sensitive) returned {listed:?}",
            self.name("NB")
        );
        self.plugin
            .delete(&ab)
            .await
            .map_err(|e| format!("delete({ab:?}) failed: {e}"))?;
        for n in [&a, &abc, &upper] {
            let got = self.store.get(n).await.map_err(|e| {
                format!("after delete({ab:?}), get({n:?}) failed: {e}; a delete must remove its own name only")
            })?;
            ensure!(
                got[..] == *n.as_bytes(),
                "after delete({ab:?}), get({n:?}) returned other bytes"
            );
        }
        match self.store.create(&abc, b"other").await {
            Err(Error::AlreadyExists) => Ok(None),
            other => Err(format!(
                "create({abc:?}) over an existing record returned {other:?}, expected already-exists"
            )),
        }
    }

    async fn records_text(&self) -> CaseResultInner {
        let values: [&[u8]; 9] = [
            b"x\n",
            b"x\r\n",
            b" x ",
            b"x\0",
            b"\0",
            b"\n",
            b"{\"bytes\":\"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\"}\n",
            "\u{feff}x\t".as_bytes(),
            b"  ",
        ];
        for (i, value) in values.iter().enumerate() {
            let name = self.name(&format!("text-{i}"));
            if !self.record_sizes.contains(&value.len()) {
                continue;
            }
            self.create_ok(&name, value).await?;
            let got = self
                .store
                .get(&name)
                .await
                .map_err(|e| format!("get({name:?}) failed: {e}"))?;
            ensure!(
                got[..] == **value,
                "the record {:?} came back as {:?}",
                String::from_utf8_lossy(value),
                String::from_utf8_lossy(&got)
            );
        }
        Ok(None)
    }

    async fn records_empty(&self) -> CaseResultInner {
        if !self.record_sizes.contains(&0) {
            return Ok(Some("the plugin declares that it holds no empty record".into()));
        }
        let name = self.name("empty");
        self.create_ok(&name, b"").await?;
        match self.store.create(&name, b"not empty").await {
            Err(Error::AlreadyExists) => {}
            other => {
                return Err(format!(
                    "create over an empty record returned {other:?}, expected already-exists: an empty record exists"
                ));
            }
        }
        self.plugin.recycle();
        match self.store.get(&name).await {
            Ok(v) if v.is_empty() => {}
            Ok(v) => {
                return Err(format!(
                    "the empty record reads {} bytes after a refused create",
                    v.len()
                ));
            }
            Err(e) => return Err(format!("after recycling, get of the empty record returned {e:?}")),
        }
        let listed = self.list_all(&name, 10).await?;
        ensure!(
            listed == [name.clone()],
            "list({name:?}) returned {listed:?}, expected the empty record"
        );
        Ok(None)
    }

    async fn names_non_portable(&self) -> CaseResultInner {
        let suffixes = [
            "a/b".to_owned(),
            "a\\b".to_owned(),
            "a b".to_owned(),
            "caf\u{e9}".to_owned(),
            "a/../b".to_owned(),
            "KEY\u{212a}".to_owned(),
            "l".repeat(200),
        ];
        for suffix in &suffixes {
            let name = self.name(suffix);
            let value = format!("value of {name}");
            match self.create(&name, value.as_bytes()).await {
                Ok(()) => {
                    let got = self
                        .store
                        .get(&name)
                        .await
                        .map_err(|e| format!("get({name:?}) failed after create: {e}"))?;
                    ensure!(got[..] == *value.as_bytes(), "get({name:?}) returned other bytes");
                    let listed = self.list_all(&self.name(""), 10_000).await?;
                    ensure!(
                        listed.contains(&name),
                        "{name:?} was accepted but is listed otherwise (stored under another name?)"
                    );
                    self.plugin
                        .delete(&name)
                        .await
                        .map_err(|e| format!("delete({name:?}) failed: {e}"))?;
                    self.created.lock().unwrap_or_else(|p| p.into_inner()).remove(&name);
                }
                Err(Error::InvalidArgument(_)) => {
                    match self.store.get(&name).await {
                        Err(Error::NotFound | Error::InvalidArgument(_)) => {}
                        other => {
                            return Err(format!(
                                "create({name:?}) was refused, but get then returned {:?}",
                                other.map(|v| v.len())
                            ));
                        }
                    }
                    match self.store.list(&name, None, 10).await {
                        Ok(page) if page.names.is_empty() => {}
                        Err(Error::InvalidArgument(_)) => {}
                        Ok(page) => {
                            return Err(format!(
                                "create({name:?}) was refused, but list({name:?}) then returned {:?}",
                                page.names
                            ));
                        }
                        Err(e) => return Err(format!("list({name:?}) failed: {e}")),
                    }
                }
                Err(e) => {
                    return Err(format!(
                        "create({name:?}) failed with {e:?}; a name the plugin cannot store faithfully must be refused with invalid-argument"
                    ));
                }
            }
        }
        Ok(None)
    }

    async fn shared_state(&self) -> CaseResultInner {
        let other = sealed_as(
            &self.seal,
            self.load_with(self.spec.config.clone())
                .await
                .map_err(|e| format!("a second set of instances could not be loaded: {e}"))?,
        );
        let name = self.name("shared");
        self.create_ok(&name, b"one").await?;
        let got = other
            .get(&name)
            .await
            .map_err(|e| format!("the second set's get failed: {e}"))?;
        ensure!(&got[..] == b"one", "the second set read other bytes");
        // Both sets have read it; one deletes it; the other must not still see it.
        let _ = self.store.get(&name).await;
        other
            .delete(&name)
            .await
            .map_err(|e| format!("the second set's delete failed: {e}"))?;
        match self.store.get(&name).await {
            Err(Error::NotFound) => {}
            Ok(_) => {
                return Err(
                    "a record deleted by one instance is still read by another: state is kept in instance memory"
                        .into(),
                );
            }
            Err(e) => {
                return Err(format!(
                    "after another instance's delete, get returned {e:?}, expected not-found"
                ));
            }
        }
        self.created.lock().unwrap_or_else(|p| p.into_inner()).remove(&name);
        match other.create(&name, b"two").await {
            Ok(()) => {
                self.created
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(name.clone());
            }
            Err(e) => return Err(format!("re-creating a deleted name from the second set failed: {e}")),
        }
        match self.store.get(&name).await {
            Ok(v) if &v[..] == b"two" => Ok(None),
            other => Err(format!(
                "after another instance re-created it, get returned {:?}",
                other.map(|v| String::from_utf8_lossy(&v).into_owned())
            )),
        }
    }
}

/// A value no setting of any format takes: NUL, a newline, DEL, a bidi override, a
/// percent escape and a path climb.
const MALFORMED_SETTING: &str = "\u{0}\n\u{7f}\u{202e}%00/../";

impl Kit {
    /// Pages through names while others are created and deleted on both sides of the
    /// cursor: the cursor's own name and the next page's first go, names come just
    /// after it, and more go behind it than come, so that a plugin resuming at a
    /// remembered offset, or at a remembered next name, loses or repeats one.
    async fn list_churn(&self) -> CaseResultInner {
        let base = self.name("churn-");
        let at = |n: usize| format!("{base}{n:02}");
        // Multiples of 3; the others are created while paging.
        let originals: Vec<String> = (0..24).map(|i| at(i * 3)).collect();
        self.create_many(&originals).await?;
        let mut touched: BTreeSet<String> = BTreeSet::new();
        let mut listed: Vec<String> = Vec::new();
        let mut after: Option<String> = None;
        let limit = 5;
        let mut ended = false;
        for _ in 0..100 {
            let page = self
                .store
                .list(&base, after.as_deref(), limit)
                .await
                .map_err(|e| format!("list({base:?}, after {after:?}, limit {limit}) failed: {e}"))?;
            if let Some(a) = &after
                && let Some(bad) = page.names.iter().find(|n| *n <= a)
            {
                return Err(format!("list after {a:?} returned {bad:?}, which is not greater"));
            }
            listed.extend(page.names.iter().cloned());
            let Some(next) = page.next.clone() else {
                ended = true;
                break;
            };
            after = Some(next.clone());
            let last: usize = next
                .strip_prefix(base.as_str())
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| format!("`next` is {next:?}, which the kit never created"))?;
            // Behind the cursor: the page's first two names and the cursor's own go,
            // one name comes. Ahead: the next page's first original goes, and a name
            // comes just after the cursor; the originals after those stay, so a
            // resumption two names too far loses one of them. A name deleted already
            // may still be listed (the contract allows it): not-found is fine.
            let mut gone: Vec<String> = page.names.iter().take(2).cloned().collect();
            gone.extend([next.clone(), at(last + 3)]);
            for name in gone {
                if !originals.contains(&name) && !touched.contains(&name) {
                    continue;
                }
                match self.store.delete(&name).await {
                    Ok(()) | Err(Error::NotFound) => {}
                    Err(e) => return Err(format!("delete({name:?}) while paging failed: {e}")),
                }
                touched.insert(name);
            }
            for new in [at(last.saturating_sub(1)), at(last + 1)] {
                if !touched.contains(&new) && !originals.contains(&new) {
                    self.create_ok(&new, new.as_bytes()).await?;
                    touched.insert(new);
                }
            }
        }
        ensure!(ended, "paging with limit {limit} did not end after 100 pages");
        let mut seen = BTreeSet::new();
        if let Some(dup) = listed.iter().find(|n| !seen.insert(*n)) {
            return Err(format!("paging returned {dup:?} twice: {listed:?}"));
        }
        ensure!(
            listed.windows(2).all(|w| w[0] < w[1]),
            "paging returned names out of order: {listed:?}"
        );
        let missing: Vec<&String> = originals
            .iter()
            .filter(|n| !touched.contains(*n) && !seen.contains(n))
            .collect();
        ensure!(
            missing.is_empty(),
            "paging with limit {limit} while other names came and went lost {missing:?}, which nobody touched (listed: {listed:?})"
        );
        Ok(None)
    }

    /// Each setting, set to a malformed value — on its own, and after the value it
    /// is configured with — must be refused with `invalid-argument` naming it, or
    /// accepted.
    async fn open_malformed_setting(&self) -> CaseResultInner {
        let info = self.plugin.info();
        if info.settings.is_empty() {
            return Ok(Some("the plugin reads no setting".into()));
        }
        let secrets = self.secrets();
        for setting in &info.settings {
            let mut values = vec![MALFORMED_SETTING.to_owned()];
            if let Some(configured) = self.spec.config.get(&setting.name) {
                values.push(format!("{configured}{MALFORMED_SETTING}"));
            }
            for value in values {
                let mut config = self.spec.config.clone();
                config.insert(setting.name.clone(), value.clone());
                let shown = if secrets.iter().any(|s| value.contains(s.as_str())) {
                    format!("<its value>{MALFORMED_SETTING:?}")
                } else {
                    format!("{value:?}")
                };
                let refusal = match self.load_with(config).await {
                    // Any value is valid for this setting.
                    Ok(_) => continue,
                    Err(LoadError::Open {
                        error: Error::InvalidArgument(message),
                        ..
                    }) if message.contains(&setting.name) => message,
                    Err(LoadError::Open { error, .. }) => {
                        return Err(format!(
                            "with setting {:?} set to {shown}, open failed with {}; expected invalid-argument naming the setting (or success, if any value is valid)",
                            setting.name,
                            masked(&format!("{error:?}"), &secrets)
                        ));
                    }
                    Err(other) => {
                        return Err(format!(
                            "with setting {:?} set to {shown}: {}",
                            setting.name,
                            masked(&other.to_string(), &secrets)
                        ));
                    }
                };
                if let Some(what) = revealed(&refusal, &[], &secrets) {
                    return Err(format!(
                        "refusing setting {:?}, the plugin revealed {what}: {:?}",
                        setting.name,
                        masked(&refusal, &secrets)
                    ));
                }
            }
        }
        Ok(None)
    }

    /// The values of the settings that are credentials: those the plugin calls
    /// secret, and those whose names say so (`password`, `secret`, `token`,
    /// `credential`), of at least 8 bytes (shorter ones match ordinary text).
    fn secrets(&self) -> Vec<String> {
        let info = self.plugin.info();
        let looks_secret = |name: &str| {
            let name = name.to_ascii_lowercase();
            ["password", "passwd", "secret", "token", "credential", "passphrase"]
                .iter()
                .any(|w| name.contains(w))
        };
        self.spec
            .config
            .iter()
            .filter(|(k, _)| looks_secret(k) || info.settings.iter().any(|s| s.secret && &s.name == *k))
            .map(|(_, v)| v)
            .filter(|v| v.len() >= 8)
            .cloned()
            .collect()
    }

    /// Stores records of random text, provokes every error the kit can (an existing
    /// name, refused names, an oversized record, a missing name, an unknown setting)
    /// and a fresh `open`, deletes a record, and looks for the records and the
    /// credentials in what every instance printed and in every error's text.
    async fn never_revealed(&self) -> CaseResultInner {
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
    async fn provoke(&self) -> Result<(Vec<String>, Vec<String>), String> {
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
fn revealed(text: &str, records: &[String], secrets: &[String]) -> Option<&'static str> {
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
fn base64_forms(bytes: &[u8]) -> Vec<String> {
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

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            b => format!("%{b:02X}"),
        })
        .collect()
}

/// `text` with every occurrence of a secret replaced, so that a report never
/// repeats what it found.
fn masked(text: &str, secrets: &[String]) -> String {
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

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i.wrapping_mul(31) ^ (i >> 8)) as u8).collect()
}

fn first_difference(a: &[u8], b: &[u8]) -> String {
    match a.iter().zip(b).position(|(x, y)| x != y) {
        Some(at) => format!(" (first difference at byte {at})"),
        None if a.len() != b.len() => " (one is a prefix of the other)".into(),
        None => String::new(),
    }
}

async fn for_each_concurrent<T, F, Fut>(items: Vec<T>, width: usize, f: F)
where
    F: Fn(T) -> Fut,
    Fut: Future<Output = ()>,
{
    use futures::StreamExt;
    futures::stream::iter(items).for_each_concurrent(width, f).await;
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

    #[test]
    fn record_size_feature() {
        let f = |s: &str| vec![s.to_owned()];
        assert_eq!(record_sizes(&f("record-size=1..65536")), Some(1..=65536));
        assert_eq!(record_sizes(&f("record-size=0..1048576")), Some(0..=1048576));
        assert_eq!(record_sizes(&[]), None);
        for bad in [
            "record-size=2..65536",
            "record-size=1..100",
            "record-size=1..2000000",
            "record-size=1-5000",
        ] {
            assert!(matches!(declared_record_sizes(&f(bad)), Some(Err(_))), "{bad}");
        }
    }

    /// Every case quotes the contract word for word (bracketed words are the kit's
    /// own), and the contract names every case.
    #[test]
    fn every_case_quotes_the_contract() {
        let wit = include_str!("../../../wit/keystore.wit");
        let normal = |t: &str| t.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase();
        let text = normal(
            &wit.lines()
                .map(|l| l.trim_start().trim_start_matches("///").trim_start_matches('-'))
                .collect::<Vec<_>>()
                .join(" "),
        );
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
