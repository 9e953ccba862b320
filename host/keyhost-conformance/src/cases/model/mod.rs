//! The contract as a model, and the randomized cases that hold a plugin to it.
//!
//! [`Model`] is what `wit/keystore.wit` says a keystore is: records by name, listed
//! in byte order under a prefix, after a name, a page at a time. The cases here do
//! not pick examples: they generate sequences of operations from a seed, biased to
//! the boundaries where stores tend to break (sizes where backends chunk, the
//! largest numbers, names that extend, cut or encode like one another), run them on
//! several independent sets of instances, and compare every answer with what the
//! model allows.
//!
//! - `model.sequential` runs one sequence step by step. On a failure it replays
//!   shorter sequences on fresh names until none can be left out, and reports the
//!   shortest it found, with the seed that generates the original.
//! - `model.concurrent` runs creates, reads and deletes of a few names from several
//!   sets of instances at once, and checks that some order of the operations, each
//!   taking effect between its call and its answer, explains every answer
//!   (linearizability, checked name by name: the contract's records are
//!   independent of one another).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt::Write as _;
use std::ops::Bound;
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keyhost_keystore::{Error, Keystore};
use keyhost_plugin_host::Plugin;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::Checked;
use crate::kit::{Kit, MAX_RECORD, for_each_concurrent, sealed_as};

mod concurrent;
mod sequential;

pub(crate) use concurrent::concurrent;
pub(crate) use sequential::sequential;

/// Steps of `model.sequential` without `--budget`.
pub(crate) const DEFAULT_STEPS: u32 = 1000;
/// Rounds of `model.concurrent` without `--budget`, and a fortieth of it with one (a round is 3 sets of
/// instances, each running 6 operations at once on 3 names).
pub(crate) const DEFAULT_ROUNDS: u32 = 25;
/// How many independent sets of instances the cases use (the kit's own is one).
const SETS: usize = 3;
/// The longest portable name.
const PORTABLE_MAX: usize = 80;
/// At most this many replays while looking for a shorter failing sequence.
const SHRINK_REPLAYS: u32 = 200;
/// Nor longer than this.
const SHRINK_TIME: Duration = Duration::from_secs(90);

/// Whether the contract requires every plugin to store `name`: 1 to 80 bytes of
/// `0-9 A-Z a-z _ - .`, the first not `.`.
pub(crate) fn portable(name: &str) -> bool {
    (1..=PORTABLE_MAX).contains(&name.len())
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
}

/// Whether `text` (a prefix or an `after`) holds only what portable names hold, so
/// that `list` may not refuse it.
fn portable_text(text: &str) -> bool {
    text.len() <= PORTABLE_MAX && text.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
}

/// What the contract says a keystore holds.
#[derive(Debug, Clone, Default)]
pub(crate) struct Model {
    /// The records, by full name.
    records: BTreeMap<String, Value>,
}

impl Model {
    /// The names `list(prefix, after, _)` must page through, in order.
    fn matching(&self, prefix: &str, after: Option<&str>) -> Vec<&String> {
        self.records
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(name, _)| name.starts_with(prefix))
            .map(|(name, _)| name)
            .filter(|name| after.is_none_or(|a| name.as_str() > a))
            .collect()
    }
}

/// A record's bytes, described so that a step stays short to print and to shrink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Value {
    len: usize,
    text: bool,
    seed: u32,
}

impl Value {
    fn bytes(self) -> Vec<u8> {
        if self.text {
            // What records of earlier key servers look like, with the bytes text
            // handling loses: line ends, a NUL, trailing blanks.
            const PIECES: [&[u8]; 6] = [
                b"{\"bytes\":\"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\"}\n",
                b"\r\n",
                b"  ",
                b"\0",
                b"\t\xef\xbb\xbf",
                b"line\n",
            ];
            let mut out = Vec::with_capacity(self.len);
            let mut i = self.seed as usize;
            while out.len() < self.len {
                out.extend_from_slice(PIECES[i % PIECES.len()]);
                i = i.wrapping_mul(7).wrapping_add(3);
            }
            out.truncate(self.len);
            out
        } else {
            let mut rng = StdRng::seed_from_u64(u64::from(self.seed));
            let mut out = vec![0u8; self.len];
            rng.fill(&mut out[..]);
            out
        }
    }
}

/// Where `list` starts: after a name relative to the run's prefix, or after an
/// absolute string (outside the run's names, below or above all of them).
#[derive(Debug, Clone, PartialEq, Eq)]
enum After {
    Rel(String),
    Abs(String),
}

/// One operation; names and prefixes are relative to the run's prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Create {
        name: String,
        value: Value,
    },
    Get {
        name: String,
    },
    Delete {
        name: String,
    },
    List {
        prefix: String,
        after: Option<After>,
        limit: u32,
    },
    Page {
        prefix: String,
        limit: u32,
    },
    Status,
    Recycle,
}

/// An operation and the set of instances that runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Step {
    set: usize,
    op: Op,
}

impl Step {
    fn describe(&self) -> String {
        let s = self.set;
        match &self.op {
            Op::Create { name, value } => format!(
                "set {s}: create(P+{name:?}, {} bytes{})",
                value.len,
                if value.text { " of text" } else { "" }
            ),
            Op::Get { name } => format!("set {s}: get(P+{name:?})"),
            Op::Delete { name } => format!("set {s}: delete(P+{name:?})"),
            Op::List { prefix, after, limit } => {
                let after = match after {
                    None => "none".to_owned(),
                    Some(After::Rel(a)) => format!("P+{a:?}"),
                    Some(After::Abs(a)) => format!("{a:?}"),
                };
                format!("set {s}: list(P+{prefix:?}, after {after}, limit {limit})")
            }
            Op::Page { prefix, limit } => format!("set {s}: page through P+{prefix:?} with limit {limit}"),
            Op::Status => format!("set {s}: status"),
            Op::Recycle => format!("set {s}: recycle every instance"),
        }
    }
}

/// One independent set of instances of the plugin under test.
struct Set {
    plugin: Plugin,
    store: Arc<dyn Keystore>,
}

/// The kit's own instances, and `SETS - 1` more loaded with the same settings.
async fn load_sets(kit: &Kit) -> Result<Vec<Set>, String> {
    let mut sets = vec![Set {
        plugin: kit.plugin.clone(),
        store: kit.store.clone(),
    }];
    for _ in 1..SETS {
        let plugin = kit
            .load_with(kit.spec.config.clone())
            .await
            .map_err(|e| format!("another set of instances could not be loaded: {e}"))?;
        sets.push(Set {
            store: sealed_as(&kit.seal, plugin.clone()),
            plugin,
        });
    }
    Ok(sets)
}

/// Generates steps, biased to boundaries.
struct Gen {
    sizes: RangeInclusive<usize>,
    /// Bytes of the run's prefix: portable suffixes are at most 80 minus this.
    prefix_len: usize,
    /// Every name used so far (also deleted ones), relative.
    known: Vec<String>,
    /// Large records written so far: they cost time, so they are rationed.
    large: u32,
}

/// Record sizes where backends and their clients tend to cut, chunk or buffer.
const SIZES: &[usize] = &[
    0, 1, 2, 3, 15, 16, 17, 63, 64, 65, 255, 256, 257, 1023, 1024, 1025, 4095, 4096, 4097, 8191, 8192, 8193, 16383,
    16384, 16385, 32767, 32768, 32769, 65535, 65536, 65537, 131_071, 131_072, 131_073, 262_144, 524_287, 524_288,
    524_289, 1_048_575, 1_048_576,
];

/// Characters that names of other stores hold and that files, URLs or encodings
/// treat specially.
const ODD: &[&str] = &[
    " ",
    "/",
    "\\",
    "%",
    "%2F",
    "%41",
    "+",
    ":",
    "*",
    "?",
    "\"",
    "<",
    ">",
    "|",
    "~",
    "!",
    "@",
    "#",
    "$",
    "&",
    "=",
    ",",
    ";",
    "'",
    "\u{e9}",
    "e\u{301}",
    "\u{212a}",
    "\u{1f511}",
    "\t",
    "\n",
    "..",
    "/../",
    "./",
];

const PORTABLE: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_-.";

impl Gen {
    fn new(sizes: RangeInclusive<usize>, prefix_len: usize) -> Self {
        Self {
            sizes,
            prefix_len,
            known: Vec::new(),
            large: 0,
        }
    }

    fn max_suffix(&self) -> usize {
        PORTABLE_MAX.saturating_sub(self.prefix_len).max(1)
    }

    fn step(&mut self, rng: &mut StdRng, model: &Model, run: &str) -> Step {
        let set = rng.random_range(0..SETS);
        let op = match rng.random_range(0..100) {
            0..30 => {
                let name = self.name(rng, model, run);
                let full = format!("{run}{name}");
                // Creating over a record with the very value it holds must still be
                // refused: reuse it now and then.
                let value = match model.records.get(&full) {
                    Some(v) if rng.random_bool(0.4) => *v,
                    _ => self.value(rng),
                };
                Op::Create { name, value }
            }
            30..55 => Op::Get {
                name: self.name(rng, model, run),
            },
            55..67 => Op::Delete {
                name: self.name(rng, model, run),
            },
            67..85 => {
                let prefix = self.prefix(rng);
                let after = match rng.random_range(0..10) {
                    0..3 => None,
                    3..7 => Some(After::Rel(self.cut_or_known(rng))),
                    7 => Some(After::Rel(self.neighbour(rng))),
                    _ => Some(After::Abs(match rng.random_range(0..4) {
                        0 => String::new(),
                        1 => run[..run.len() - 1].to_owned(),
                        2 => format!("{run}~"),
                        _ => "\u{10ffff}".to_owned(),
                    })),
                };
                let count = {
                    let full_prefix = format!("{run}{prefix}");
                    let after_full = after.as_ref().map(|a| match a {
                        After::Rel(a) => format!("{run}{a}"),
                        After::Abs(a) => a.clone(),
                    });
                    model.matching(&full_prefix, after_full.as_deref()).len()
                };
                Op::List {
                    prefix,
                    after,
                    limit: limit(rng, count),
                }
            }
            85..93 => {
                let prefix = self.prefix(rng);
                let count = model.matching(&format!("{run}{prefix}"), None).len();
                let limit = match rng.random_range(0..4) {
                    0 => rng.random_range(1..=3),
                    1 => u32::MAX,
                    _ => limit(rng, count),
                };
                // Paging one name at a time through many is slow and says little more.
                let limit = if count / (limit as usize).max(1) > 64 {
                    64
                } else {
                    limit
                };
                Op::Page { prefix, limit }
            }
            93..97 => Op::Status,
            _ => Op::Recycle,
        };
        if let Op::Create { name, .. } | Op::Get { name } | Op::Delete { name } = &op
            && !self.known.contains(name)
        {
            self.known.push(name.clone());
        }
        Step { set, op }
    }

    fn value(&mut self, rng: &mut StdRng) -> Value {
        let (min, max) = (*self.sizes.start(), *self.sizes.end());
        let mut candidates: Vec<usize> = SIZES.iter().copied().filter(|s| *s <= max + 1).collect();
        candidates.extend([max.saturating_sub(1), max, max + 1]);
        if min > 0 {
            candidates.push(min - 1);
        }
        // Only sizes the contract knows; beyond 1 MiB keyhost never sends.
        candidates.retain(|s| *s <= MAX_RECORD);
        let len = if rng.random_bool(0.1) {
            // Empty records are records: stores that treat them as missing abound.
            0
        } else if rng.random_bool(0.5) {
            rng.random_range(0..=max.min(300))
        } else {
            candidates[rng.random_range(0..candidates.len())]
        };
        // At most a few dozen records over 64 KiB in a run.
        let len = if len > 65_536 {
            if self.large >= 24 {
                rng.random_range(0..=max.min(4096))
            } else {
                self.large += 1;
                len
            }
        } else {
            len
        };
        Value {
            len,
            text: rng.random_bool(0.3),
            seed: rng.random(),
        }
    }

    /// A name, relative to the run: mostly one used before, or a neighbour of one.
    fn name(&mut self, rng: &mut StdRng, model: &Model, run: &str) -> String {
        let stored: Vec<&String> = model.records.keys().collect();
        match rng.random_range(0..100) {
            0..30 if !stored.is_empty() => stored[rng.random_range(0..stored.len())][run.len()..].to_owned(),
            0..45 if !self.known.is_empty() => self.known[rng.random_range(0..self.known.len())].clone(),
            0..65 if !self.known.is_empty() => self.neighbour(rng),
            0..88 => self.fresh(rng),
            _ => self.odd(rng),
        }
    }

    /// A portable suffix of a length biased to the edges.
    fn fresh(&self, rng: &mut StdRng) -> String {
        let max = self.max_suffix();
        let len = match rng.random_range(0..6) {
            0 => 1,
            1 => 2,
            2 => max,
            3 => max.saturating_sub(1).max(1),
            _ => rng.random_range(1..=max.min(12)),
        };
        (0..len)
            .map(|_| PORTABLE[rng.random_range(0..PORTABLE.len())] as char)
            .collect()
    }

    /// A name outside the portable set: a plugin stores it verbatim or refuses it.
    fn odd(&self, rng: &mut StdRng) -> String {
        match rng.random_range(0..4) {
            // One byte too long, and much too long.
            0 => "x".repeat(self.max_suffix() + 1),
            1 => "y".repeat([200, 255, 256, 300][rng.random_range(0..4)]),
            _ => {
                let base = if self.known.is_empty() || rng.random_bool(0.3) {
                    self.fresh(rng)
                } else {
                    self.known[rng.random_range(0..self.known.len())].clone()
                };
                let odd = ODD[rng.random_range(0..ODD.len())];
                let at = floor_char_boundary(&base, rng.random_range(0..=base.len()));
                format!("{}{odd}{}", &base[..at], &base[at..])
            }
        }
    }

    /// A name that extends, cuts, or differs by case or by one byte from a known one,
    /// or that a store could confuse with it (a legacy or temporary file of it).
    fn neighbour(&self, rng: &mut StdRng) -> String {
        let Some(base) = (!self.known.is_empty()).then(|| self.known[rng.random_range(0..self.known.len())].clone())
        else {
            return self.fresh(rng);
        };
        const TAILS: &[&str] = &[
            "a", "A", "0", "-", "_", ".", ".key", ".json", ".tmp", ".bak", ".old", "~", "/x", " ", "%", "\u{0}",
        ];
        match rng.random_range(0..6) {
            0 => format!("{base}{}", TAILS[rng.random_range(0..TAILS.len())]),
            5 if !portable_text(&base) => {
                // What a store that cannot hold a character tends to write instead.
                let with = ["_", "-", "", "%20", "?"][rng.random_range(0..5)];
                base.chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() || "_-.".contains(c) {
                            c.to_string()
                        } else {
                            with.to_owned()
                        }
                    })
                    .collect()
            }
            1 if base.len() > 1 => base[..floor_char_boundary(&base, base.len() - 1)].to_owned(),
            2 => {
                // Another case of one letter.
                let mut chars: Vec<char> = base.chars().collect();
                let i = rng.random_range(0..chars.len());
                chars[i] = if chars[i].is_ascii_lowercase() {
                    chars[i].to_ascii_uppercase()
                } else {
                    chars[i].to_ascii_lowercase()
                };
                chars.into_iter().collect()
            }
            3 => {
                // One portable byte up or down.
                let mut bytes = base.clone().into_bytes();
                let i = rng.random_range(0..bytes.len());
                if let Some(at) = PORTABLE.iter().position(|b| *b == bytes[i]) {
                    let to = if rng.random_bool(0.5) {
                        at + 1
                    } else {
                        at.wrapping_sub(1)
                    };
                    if let Some(b) = PORTABLE.get(to) {
                        bytes[i] = *b;
                    }
                }
                String::from_utf8(bytes).unwrap_or(base)
            }
            _ => {
                let ext = [".key", ".json", "/", "_"][rng.random_range(0..4)];
                base.strip_suffix(ext)
                    .map_or_else(|| format!("{base}{ext}"), str::to_owned)
            }
        }
    }

    /// A known name, or one cut short.
    fn cut_or_known(&self, rng: &mut StdRng) -> String {
        if self.known.is_empty() {
            return self.fresh(rng);
        }
        let base = &self.known[rng.random_range(0..self.known.len())];
        if rng.random_bool(0.5) {
            base.clone()
        } else {
            base[..floor_char_boundary(base, rng.random_range(0..=base.len()))].to_owned()
        }
    }

    /// A prefix: the whole run, or a cut of a known name at any byte.
    fn prefix(&self, rng: &mut StdRng) -> String {
        match rng.random_range(0..10) {
            0..3 => String::new(),
            3..8 => self.cut_or_known(rng),
            8 => self.neighbour(rng),
            _ => self.fresh(rng),
        }
    }
}

/// `limit`s around `count`, and the type's largest values.
fn limit(rng: &mut StdRng, count: usize) -> u32 {
    let count = u32::try_from(count).unwrap_or(u32::MAX);
    let choices = [
        1,
        2,
        3,
        count.saturating_sub(1),
        count,
        count.saturating_add(1),
        count.saturating_mul(2),
        1000,
        65_536,
        i32::MAX as u32,
        1 << 31,
        u32::MAX - 1,
        u32::MAX,
    ];
    choices[rng.random_range(0..choices.len())].max(1)
}

fn floor_char_boundary(s: &str, mut at: usize) -> usize {
    at = at.min(s.len());
    while !s.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// Removes every record under `run`: those the model holds and any the
/// plugin lists (a broken plugin may hold others).
async fn clean(kit: &Kit, run: &str, model: &Model) {
    let mut names: BTreeSet<String> = model.records.keys().cloned().collect();
    let mut after: Option<String> = None;
    for _ in 0..100 {
        let Ok(page) = kit.store.list(run, after.as_deref(), 1000).await else {
            break;
        };
        names.extend(page.names.iter().filter(|n| n.starts_with(run)).cloned());
        match page.next {
            Some(next) if page.names.last() == Some(&next) => after = Some(next),
            _ => break,
        }
    }
    let store = kit.store.clone();
    for_each_concurrent(names.into_iter().collect(), 8, |name| {
        let store = store.clone();
        async move {
            let _ = store.delete(&name).await;
        }
    })
    .await;
}

/// The prefix of run `n` of a case: all of the same length, so that a name is
/// portable in every replay exactly when it is in the first run.
pub(super) fn run_prefix(kit: &Kit, case: char, n: u32) -> String {
    format!("{}{case}{n:03}-", kit.prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_lists_in_byte_order_after_and_under_a_prefix() {
        let mut model = Model::default();
        let v = Value {
            len: 1,
            text: false,
            seed: 0,
        };
        for n in ["pa", "pB", "pa-", "pa.", "pb", "q", "p", "pa\u{e9}"] {
            model.records.insert(n.into(), v);
        }
        let names = |p: &str, a: Option<&str>| -> Vec<String> { model.matching(p, a).into_iter().cloned().collect() };
        assert_eq!(names("p", None), ["p", "pB", "pa", "pa-", "pa.", "pa\u{e9}", "pb"]);
        assert_eq!(names("pa", Some("pa-")), ["pa.", "pa\u{e9}"]);
        assert_eq!(names("pa", Some("pa")), ["pa-", "pa.", "pa\u{e9}"]);
        assert_eq!(names("", Some("pb")), ["q"]);
        assert_eq!(names("r", None), Vec::<String>::new());
    }

    #[test]
    fn portable_names_are_those_the_contract_lists() {
        assert!(portable("a") && portable("A-z_0.9-") && portable(&"a".repeat(80)));
        assert!(!portable("") && !portable(".a") && !portable(&"a".repeat(81)));
        assert!(!portable("a b") && !portable("a/b") && !portable("caf\u{e9}"));
    }

    #[test]
    fn values_are_what_their_description_says() {
        for len in [0, 1, 4097, 65_537] {
            for text in [false, true] {
                let v = Value { len, text, seed: 42 };
                assert_eq!(v.bytes().len(), len);
                assert_eq!(v.bytes(), v.bytes());
            }
        }
        let a = Value {
            len: 64,
            text: false,
            seed: 1,
        };
        assert_ne!(a.bytes(), Value { seed: 2, ..a }.bytes());
    }

    #[test]
    fn generated_sequences_depend_only_on_the_seed() {
        let generate = |seed: u64| {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut g = Gen::new(0..=MAX_RECORD, 16);
            let model = Model::default();
            (0..200)
                .map(|_| g.step(&mut rng, &model, "kcabcdefgh-m000-"))
                .collect::<Vec<_>>()
        };
        assert_eq!(generate(7), generate(7));
        assert_ne!(generate(7), generate(8));
    }

    #[test]
    fn generated_limits_reach_the_type_s_maximum_and_every_limit_is_at_least_one() {
        let mut rng = StdRng::seed_from_u64(1);
        let limits: Vec<u32> = (0..2000).map(|_| limit(&mut rng, 0)).collect();
        assert!(limits.contains(&u32::MAX) && limits.contains(&1));
        assert!(limits.iter().all(|l| *l >= 1));
    }
}
