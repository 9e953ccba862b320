//! The state a run shares among its cases, and the helpers they share.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keyhost_keystore::{Error, Keystore};
use keyhost_plugin_host::{LoadError, Plugin, PluginSpec, Runtime};
use rand::Rng;

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
    /// The seed of the randomized cases (`model.*`); a run without one picks one
    /// and reports it, so that a failure can be replayed with the same keyhost.
    pub seed: Option<u64>,
    /// How many operations the randomized cases run: steps of `model.sequential`,
    /// and a fortieth of it as rounds of `model.concurrent`. `None`: the defaults,
    /// 1,000 steps and 25 rounds.
    pub budget: Option<u32>,
    /// Also run the cases of tens of thousands of names (`scale.*`).
    pub scale: bool,
    /// The record sizes this deployment holds, when its settings hold fewer than
    /// the component declares (`record-size=MIN..MAX` describes the component,
    /// whatever its settings): the AWS plugin's `kms_envelope`, for instance,
    /// wraps at most 4 KiB. Records outside it must be refused with
    /// `invalid-argument`, as outside the declared sizes.
    pub record_sizes: Option<RangeInclusive<usize>>,
}

/// The rules every page obeys, whatever else the store holds: at most `limit`
/// names, each under `prefix` and after `after`.
fn check_page(page: &keyhost_keystore::Page, prefix: &str, after: Option<&str>, limit: u32) -> Result<(), String> {
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
        if let Some(a) = after {
            ensure!(
                name.as_str() > a,
                "list after {a:?} returned {name:?}, which is not greater"
            );
        }
    }
    Ok(())
}

/// `plugin`, sealed by `seal` when there is one.
pub(crate) fn sealed_as(seal: &Option<Arc<keyhost_seal::Sealer>>, plugin: Plugin) -> Arc<dyn Keystore> {
    match seal {
        None => Arc::new(plugin),
        Some(sealer) => Arc::new(keyhost_seal::SealedStore::new(Arc::new(plugin), Some(sealer.clone()))),
    }
}

pub(crate) fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

pub(crate) fn random_token(len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// The largest record the contract knows.
pub(crate) const MAX_RECORD: usize = 1 << 20;

/// The sizes a plugin's `record-size=MIN..MAX` feature declares: `None` without the
/// feature, `Some(Err)` when it is malformed or out of the contract's bounds.
pub(crate) fn declared_record_sizes(features: &[String]) -> Option<Result<RangeInclusive<usize>, String>> {
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

pub(crate) fn record_sizes(features: &[String]) -> Option<RangeInclusive<usize>> {
    declared_record_sizes(features).and_then(Result::ok)
}

/// What every case works with: the plugin, its spec, the names it created.
pub(crate) struct Kit {
    pub(crate) record_sizes: RangeInclusive<usize>,
    /// The sealing `store` applies, if any.
    pub(crate) seal: Option<Arc<keyhost_seal::Sealer>>,
    /// What the cases' records go through: the plugin, or the plugin under sealing.
    pub(crate) store: Arc<dyn Keystore>,
    pub(crate) runtime: Runtime,
    pub(crate) spec: PluginSpec,
    pub(crate) plugin: Plugin,
    pub(crate) prefix: String,
    pub(crate) created: Arc<Mutex<BTreeSet<String>>>,
    /// The seed of the randomized cases.
    pub(crate) seed: u64,
    /// [`KitOptions::budget`].
    pub(crate) budget: Option<u32>,
    /// [`KitOptions::scale`].
    pub(crate) scale: bool,
}

pub(crate) type CaseResultInner = Result<Option<String>, String>;

impl Kit {
    pub(crate) fn name(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.prefix)
    }

    pub(crate) async fn create(&self, name: &str, value: &[u8]) -> Result<(), Error> {
        let result = self.store.create(name, value).await;
        if result.is_ok() {
            self.note_created(name);
        }
        result
    }

    /// Remembers `name` for the cleanup at the end of the run.
    pub(crate) fn note_created(&self, name: &str) {
        self.created
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_owned());
    }

    pub(crate) async fn create_ok(&self, name: &str, value: &[u8]) -> Result<(), String> {
        self.create(name, value)
            .await
            .map_err(|e| format!("create({name:?}, {} bytes) failed: {e}", value.len()))
    }

    pub(crate) async fn cleanup(&self) {
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
    pub(crate) async fn remove_now(&self, names: &[String]) {
        for_each_concurrent(names.to_vec(), 8, |name| async move {
            if self.store.delete(&name).await.is_ok() {
                self.created.lock().unwrap_or_else(|p| p.into_inner()).remove(&name);
            }
        })
        .await;
    }

    pub(crate) async fn load_with(&self, config: BTreeMap<String, String>) -> Result<Plugin, LoadError> {
        let mut spec = self.spec.clone();
        spec.config = config;
        self.runtime.load(spec).await
    }

    /// Pages through everything under `prefix` with `limit`, checking the page rules.
    pub(crate) async fn list_all(&self, prefix: &str, limit: u32) -> Result<Vec<String>, String> {
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
            check_page(&page, prefix, after.as_deref(), limit)?;
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

    pub(crate) async fn create_many(&self, names: &[String]) -> Result<(), String> {
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

    /// Lists every name under `base` with a few page sizes and compares with `names`.
    pub(crate) async fn page_through(&self, base: &str, names: &[String]) -> CaseResultInner {
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

    /// `list_all` from `after`, with the strict `next` rule.
    pub(crate) async fn list_from(
        &self,
        prefix: &str,
        mut after: Option<String>,
        limit: u32,
    ) -> Result<Vec<String>, String> {
        let mut all = Vec::new();
        for _ in 0..1000 {
            let page = self
                .store
                .list(prefix, after.as_deref(), limit)
                .await
                .map_err(|e| format!("list({prefix:?}, after {after:?}, limit {limit}) failed: {e}"))?;
            check_page(&page, prefix, after.as_deref(), limit)?;
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

    /// The values of the settings that are credentials: those the plugin calls
    /// secret, and those whose names say so (`password`, `secret`, `token`,
    /// `credential`), of at least 8 bytes (shorter ones match ordinary text).
    pub(crate) fn secrets(&self) -> Vec<String> {
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
}

pub(crate) fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i.wrapping_mul(31) ^ (i >> 8)) as u8).collect()
}

pub(crate) fn first_difference(a: &[u8], b: &[u8]) -> String {
    match a.iter().zip(b).position(|(x, y)| x != y) {
        Some(at) => format!(" (first difference at byte {at})"),
        None if a.len() != b.len() => " (one is a prefix of the other)".into(),
        None => String::new(),
    }
}

pub(crate) async fn for_each_concurrent<T, F, Fut>(items: Vec<T>, width: usize, f: F)
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
}
