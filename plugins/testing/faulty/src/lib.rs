//! A deliberately broken keystore: the fs keystore with exactly one defect, chosen
//! by the `defect` setting. The conformance kit must fail every defect with the case
//! that names it; `defect=none` must pass.

use std::cell::RefCell;
use std::collections::BTreeMap;

use keyhost_fs_store::DirStore;
use keyhost_plugin_sdk::{Config, Error, Info, Keystore, Page, Setting, Status, export_keystore};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Defect {
    None,
    /// Check-then-write create: concurrent creates of one name can all succeed.
    NonAtomicCreate,
    /// Create of an existing name overwrites it (and still reports already-exists).
    OverwriteExisting,
    /// Listing in descending order.
    UnsortedList,
    /// Every page after the first silently drops its first name.
    PaginationDropsName,
    /// Get returns the record with its last byte flipped.
    GetOtherBytes,
    /// Delete reports success but removes nothing.
    DeleteDoesNothing,
    /// Get of a missing name returns `other` instead of `not-found`.
    WrongErrorCase,
    /// Records live in instance memory only: lost when the instance is recycled.
    MemoryOnly,
    /// Names are folded to lower case, as a case-insensitive file system does:
    /// `KEY` and `key` are one record.
    FoldCase,
    /// Every create fails (a backend that has stopped taking writes).
    CreateFails,
    // Each defect below breaks one sentence of wit/keystore.wit the way an author
    // might; the comment quotes the rule.
    /// "`next` is `none` exactly when no name greater than the last one returned
    /// matches": a full last page still sets `next`.
    ListNextOnFullLastPage,
    /// "At most `limit` names are returned": one more.
    ListLimitPlusOne,
    /// "only names strictly greater than it": `after` itself is included.
    ListAfterInclusive,
    /// "Names are compared … as byte strings, so they are case-sensitive": the
    /// prefix matches without regard to case.
    ListPrefixIgnoresCase,
    /// "`not-found` if there is none": a missing name returns the record of a
    /// longer name it starts.
    GetPrefixMatch,
    /// "Removes the record stored under `name`": and every name that extends it.
    DeleteTakesNeighbours,
    /// "byte for byte": trailing whitespace is trimmed, as text.
    ValueTrimEnd,
    /// "byte for byte": CRLF is stored as LF.
    ValueCrlfToLf,
    /// "byte for byte": the value ends at its first NUL, as a C string.
    ValueCutAtNul,
    /// "A record is 0 to 1 MiB … including none": an empty record reads as missing.
    EmptyIsMissing,
    /// "An existing record is never modified": an empty one counts as absent.
    CreateOverEmpty,
    /// "refuse with `invalid-argument` rather than store something else": `/` is
    /// stored as `_`.
    SlashToUnderscore,
    /// "store verbatim, every name of 1 to 80 bytes": names longer than 64 bytes
    /// are cut.
    NamesCutAt64,
    /// "store verbatim": non-ASCII characters become `?`.
    NonAsciiToQuestionMark,
    /// "keep all state in the backend, never only in instance memory": gets are
    /// cached in the instance.
    InstanceCache,
    /// "Deleting a name that has no record returns `not-found`": success.
    DeleteMissingOk,
    /// "Deleting a name that has no record returns `not-found`": `other`.
    DeleteMissingOther,
    /// "`already-exists` leaves it exactly as it was": reported as `other`.
    ExistsAsOther,
    /// "Succeeds when a read would succeed": status always fails.
    StatusUnavailable,
    /// "each exactly once": a page repeats its first name.
    ListDuplicatesFirst,
    /// "ascending byte order": sorted without regard to case.
    ListCaseInsensitiveOrder,
    /// "At most `limit` names": the limit is ignored.
    ListIgnoresLimit,
    /// "it is the last name of the page": the first.
    ListNextFirstName,
    /// "`none` when the listing is complete": `next` is always set.
    ListNextAlways,
    /// "`not-found` if there is none": `unavailable`.
    GetMissingUnavailable,
    /// "0 to 1 MiB": records over 64 KiB are cut there, without saying so.
    Truncate64KiB,
    /// "including bytes that are not valid UTF-8": stored as lossy UTF-8.
    Utf8LossyValues,
    /// "afterwards `get` returns `not-found`": a deleted record reads empty.
    TombstoneDelete,
    /// "every name of 1 to 80 bytes": one-character names are refused.
    RefuseSingleChar,
    /// "made of `0-9 A-Z a-z _ - .`": names with a dot are refused.
    RefuseDots,
    /// "Lists names that start with `prefix`": not when `after` is given.
    PrefixIgnoredWithAfter,
    /// "ascending byte order": shorter names first.
    ListShortestFirst,
    /// "byte for byte": a record that looks like JSON gains a newline.
    JsonGainsNewline,
    /// "Names are compared and sorted as byte strings": listed in lower case.
    ListLowercase,
    /// "A record is 0 to 1 MiB … including none": an empty record is refused.
    EmptyRefused,
    /// "store verbatim": spaces become `_`.
    SpacesToUnderscore,
    /// "Never print a record": a debugging line left in `create`.
    LogsRecords,
    /// "Never print … a credential": the settings are printed at `open`.
    LogsCredential,
    /// "The text must describe it without revealing a record": a refusal quotes the
    /// record it refused.
    ErrorQuotesRecord,
    /// "Names created or deleted while paging may or may not appear; all others
    /// must": the next page starts at the offset the last one ended at, remembered
    /// in the backend for every `next` given, as plugins of backends with offset
    /// paging do.
    OffsetCursor,
    /// "Success once the removal is durable": deletes are queued in the instance
    /// and applied with the next write.
    QueuedDelete,
    /// "Creates of distinct names never interfere": one lock for the whole store,
    /// and a create that finds it taken gives up.
    GlobalLockGivesUp,
    /// "Must fail fast with `invalid-argument` naming the setting … when a value is
    /// malformed": `sync` is parsed with `unwrap`.
    SettingUnwrap,
}

impl std::str::FromStr for Defect {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "none" => Self::None,
            "non-atomic-create" => Self::NonAtomicCreate,
            "overwrite-existing" => Self::OverwriteExisting,
            "unsorted-list" => Self::UnsortedList,
            "pagination-drops-name" => Self::PaginationDropsName,
            "get-other-bytes" => Self::GetOtherBytes,
            "delete-does-nothing" => Self::DeleteDoesNothing,
            "wrong-error-case" => Self::WrongErrorCase,
            "memory-only" => Self::MemoryOnly,
            "fold-case" => Self::FoldCase,
            "create-fails" => Self::CreateFails,
            "list-next-on-full-last-page" => Self::ListNextOnFullLastPage,
            "list-limit-plus-one" => Self::ListLimitPlusOne,
            "list-after-inclusive" => Self::ListAfterInclusive,
            "list-prefix-ignores-case" => Self::ListPrefixIgnoresCase,
            "get-prefix-match" => Self::GetPrefixMatch,
            "delete-takes-neighbours" => Self::DeleteTakesNeighbours,
            "value-trim-end" => Self::ValueTrimEnd,
            "value-crlf-to-lf" => Self::ValueCrlfToLf,
            "value-cut-at-nul" => Self::ValueCutAtNul,
            "empty-is-missing" => Self::EmptyIsMissing,
            "create-over-empty" => Self::CreateOverEmpty,
            "slash-to-underscore" => Self::SlashToUnderscore,
            "names-cut-at-64" => Self::NamesCutAt64,
            "non-ascii-to-question-mark" => Self::NonAsciiToQuestionMark,
            "instance-cache" => Self::InstanceCache,
            "delete-missing-ok" => Self::DeleteMissingOk,
            "delete-missing-other" => Self::DeleteMissingOther,
            "exists-as-other" => Self::ExistsAsOther,
            "status-unavailable" => Self::StatusUnavailable,
            "list-duplicates-first" => Self::ListDuplicatesFirst,
            "list-case-insensitive-order" => Self::ListCaseInsensitiveOrder,
            "list-ignores-limit" => Self::ListIgnoresLimit,
            "list-next-first-name" => Self::ListNextFirstName,
            "list-next-always" => Self::ListNextAlways,
            "get-missing-unavailable" => Self::GetMissingUnavailable,
            "truncate-64kib" => Self::Truncate64KiB,
            "utf8-lossy-values" => Self::Utf8LossyValues,
            "tombstone-delete" => Self::TombstoneDelete,
            "refuse-single-char" => Self::RefuseSingleChar,
            "refuse-dots" => Self::RefuseDots,
            "prefix-ignored-with-after" => Self::PrefixIgnoredWithAfter,
            "list-shortest-first" => Self::ListShortestFirst,
            "json-gains-newline" => Self::JsonGainsNewline,
            "list-lowercase" => Self::ListLowercase,
            "empty-refused" => Self::EmptyRefused,
            "spaces-to-underscore" => Self::SpacesToUnderscore,
            "logs-records" => Self::LogsRecords,
            "logs-credential" => Self::LogsCredential,
            "error-quotes-record" => Self::ErrorQuotesRecord,
            "offset-cursor" => Self::OffsetCursor,
            "queued-delete" => Self::QueuedDelete,
            "global-lock-gives-up" => Self::GlobalLockGivesUp,
            "setting-unwrap" => Self::SettingUnwrap,
            other => return Err(format!("unknown defect '{other}'")),
        })
    }
}

struct Faulty {
    defect: Defect,
    dir: DirStore,
    memory: RefCell<BTreeMap<String, Vec<u8>>>,
    /// `QueuedDelete`: names deleted but not yet removed from the directory.
    queued: RefCell<std::collections::BTreeSet<String>>,
}

impl Keystore for Faulty {
    fn info() -> Info {
        Info {
            name: "faulty".into(),
            version: "0.0.0".into(),
            features: vec![],
            settings: vec![
                Setting {
                    name: "defect".into(),
                    required: true,
                    secret: false,
                    description: "which contract rule to break, e.g. `unsorted-list`, or `none`".into(),
                },
                Setting {
                    name: "password".into(),
                    required: false,
                    secret: true,
                    description: "a credential, never used, e.g. `hunter2`".into(),
                },
                Setting {
                    name: "sync".into(),
                    required: false,
                    secret: false,
                    description: "true or false, read and ignored, e.g. `true`".into(),
                },
            ],
        }
    }

    fn open(config: Config) -> Result<Self, Error> {
        let defect: Defect = config.parse_or("defect", Defect::None)?;
        match defect {
            #[expect(clippy::unwrap_used, reason = "the defect: a malformed value traps")]
            Defect::SettingUnwrap => {
                let _sync: bool = config.get("sync").unwrap_or("true").parse().unwrap();
            }
            _ => {
                let _sync: bool = config.parse_or("sync", true)?;
            }
        }
        if defect == Defect::LogsCredential {
            println!("faulty: opening with password {:?}", config.get("password"));
        }
        Ok(Self {
            defect,
            dir: DirStore::open("/data")?,
            memory: RefCell::default(),
            queued: RefCell::default(),
        })
    }

    fn status(&self) -> Result<Status, Error> {
        match self.defect {
            Defect::StatusUnavailable => Err(Error::Unavailable("the backend is resting".into())),
            _ => self.dir.status(),
        }
    }

    fn create(&self, name: &str, value: &[u8]) -> Result<(), Error> {
        use Defect as D;
        let name = &self.stored_name(name)?;
        let value = &self.stored_value(value);
        if self.defect == D::QueuedDelete {
            for queued in std::mem::take(&mut *self.queued.borrow_mut()) {
                let _ = self.dir.delete(&queued);
            }
        }
        match self.defect {
            D::LogsRecords => {
                eprintln!("faulty: create {name} = {}", String::from_utf8_lossy(value));
                self.dir.create(name, value)
            }
            D::ErrorQuotesRecord => match self.dir.create(name, value) {
                Err(Error::InvalidArgument(why)) => Err(Error::InvalidArgument(format!("{why} (record {value:?})"))),
                other => other,
            },
            D::GlobalLockGivesUp => {
                let lock = "/data/.lock";
                if std::fs::File::create_new(lock).is_err() {
                    return Err(Error::Unavailable("the store is locked by another writer".into()));
                }
                // The lock is held for a backend round trip.
                std::thread::sleep(std::time::Duration::from_millis(20));
                let result = self.dir.create(name, value);
                let _ = std::fs::remove_file(lock);
                result
            }
            D::CreateFails => Err(Error::Unavailable("the backend takes no writes".into())),
            D::EmptyRefused if value.is_empty() => Err(Error::InvalidArgument("an empty record".into())),
            D::NonAtomicCreate => self.dir.create_racy(name, value),
            D::OverwriteExisting => match self.dir.create(name, value) {
                Err(Error::AlreadyExists) => {
                    self.dir.delete(name)?;
                    self.dir.create(name, value)?;
                    Err(Error::AlreadyExists)
                }
                other => other,
            },
            D::CreateOverEmpty => match self.dir.get(name) {
                Ok(old) if old.is_empty() => {
                    self.dir.delete(name)?;
                    self.dir.create(name, value)
                }
                _ => self.dir.create(name, value),
            },
            D::ExistsAsOther => match self.dir.create(name, value) {
                Err(Error::AlreadyExists) => Err(Error::Other("file exists".into())),
                other => other,
            },
            D::TombstoneDelete => match self.dir.get(&format!("{name}~deleted")) {
                Ok(_) => {
                    self.dir.delete(&format!("{name}~deleted"))?;
                    self.dir.create(name, value)
                }
                Err(_) => self.dir.create(name, value),
            },
            D::MemoryOnly => {
                let mut memory = self.memory.borrow_mut();
                if memory.contains_key(name) {
                    return Err(Error::AlreadyExists);
                }
                memory.insert(name.to_owned(), value.to_vec());
                Ok(())
            }
            _ => self.dir.create(name, value),
        }
    }

    fn get(&self, name: &str) -> Result<Vec<u8>, Error> {
        use Defect as D;
        let name = &self.stored_name(name)?;
        let result = match self.defect {
            D::MemoryOnly => self.memory.borrow().get(name).cloned().ok_or(Error::NotFound),
            D::InstanceCache => {
                if let Some(v) = self.memory.borrow().get(name) {
                    return Ok(v.clone());
                }
                let v = self.dir.get(name)?;
                self.memory.borrow_mut().insert(name.clone(), v.clone());
                Ok(v)
            }
            D::GetPrefixMatch => match self.dir.get(name) {
                Err(Error::NotFound) => {
                    let longer = self.dir.names()?.into_iter().find(|n| n.starts_with(name.as_str()));
                    match longer {
                        Some(n) => self.dir.get(&n),
                        None => Err(Error::NotFound),
                    }
                }
                other => other,
            },
            D::TombstoneDelete => match self.dir.get(name) {
                Err(Error::NotFound) if self.dir.get(&format!("{name}~deleted")).is_ok() => Ok(Vec::new()),
                other => other,
            },
            D::QueuedDelete if self.queued.borrow().contains(name) => Err(Error::NotFound),
            _ => self.dir.get(name),
        };
        match (self.defect, result) {
            (D::GetOtherBytes, Ok(mut value)) => {
                match value.last_mut() {
                    Some(b) => *b ^= 1,
                    None => value.push(0),
                }
                Ok(value)
            }
            (D::EmptyIsMissing, Ok(value)) if value.is_empty() => Err(Error::NotFound),
            (D::JsonGainsNewline, Ok(mut value)) if value.first() == Some(&b'{') => {
                value.push(b'\n');
                Ok(value)
            }
            (D::WrongErrorCase, Err(Error::NotFound)) => Err(Error::Other("no such file".into())),
            (D::GetMissingUnavailable, Err(Error::NotFound)) => Err(Error::Unavailable("try again".into())),
            (_, result) => result,
        }
    }

    fn delete(&self, name: &str) -> Result<(), Error> {
        use Defect as D;
        let name = &self.stored_name(name)?;
        match self.defect {
            D::DeleteDoesNothing => Ok(()),
            D::MemoryOnly => self.memory.borrow_mut().remove(name).map(drop).ok_or(Error::NotFound),
            D::InstanceCache => {
                self.memory.borrow_mut().remove(name);
                self.dir.delete(name)
            }
            D::DeleteTakesNeighbours => {
                self.dir.delete(name)?;
                for n in self.dir.names()? {
                    if n.starts_with(name.as_str()) {
                        let _ = self.dir.delete(&n);
                    }
                }
                Ok(())
            }
            D::DeleteMissingOk => match self.dir.delete(name) {
                Err(Error::NotFound) => Ok(()),
                other => other,
            },
            D::DeleteMissingOther => match self.dir.delete(name) {
                Err(Error::NotFound) => Err(Error::Other("ENOENT".into())),
                other => other,
            },
            D::TombstoneDelete => {
                self.dir.delete(name)?;
                self.dir.create(&format!("{name}~deleted"), b"")
            }
            D::QueuedDelete => {
                if self.queued.borrow().contains(name) {
                    return Err(Error::NotFound);
                }
                self.dir.get(name)?;
                self.queued.borrow_mut().insert(name.clone());
                Ok(())
            }
            _ => self.dir.delete(name),
        }
    }

    fn list(&self, prefix: &str, after: Option<&str>, limit: u32) -> Result<Page, Error> {
        use Defect as D;
        let mut names: Vec<String> = match self.defect {
            D::MemoryOnly => self.memory.borrow().keys().cloned().collect(),
            _ => self.dir.names()?,
        };
        if self.defect == D::TombstoneDelete {
            names.retain(|n| !n.ends_with("~deleted"));
        }
        if self.defect == D::QueuedDelete {
            names.retain(|n| !self.queued.borrow().contains(n));
        }
        if self.defect == D::OffsetCursor {
            let mut matching: Vec<String> = names.into_iter().filter(|n| n.starts_with(prefix)).collect();
            matching.sort();
            let start = match after {
                None => 0,
                Some(a) => match offset_of(prefix, a) {
                    Some(offset) => offset,
                    None => matching.partition_point(|n| n.as_str() <= a),
                },
            };
            let end = (start + limit as usize).min(matching.len());
            let names = matching.get(start..end).unwrap_or_default().to_vec();
            let next = (end < matching.len()).then(|| names.last().cloned()).flatten();
            if let Some(next) = &next {
                remember_offset(prefix, next, end);
            }
            return Ok(Page { names, next });
        }
        let limit = match self.defect {
            D::ListLimitPlusOne => limit + 1,
            D::ListIgnoresLimit => u32::MAX,
            _ => limit,
        };
        let mut page = match self.defect {
            D::ListAfterInclusive => {
                let names: Vec<String> = names
                    .into_iter()
                    .filter(|n| after.is_none_or(|a| n.as_str() >= a))
                    .collect();
                keyhost_plugin_sdk::page(names, prefix, None, limit)
            }
            D::ListPrefixIgnoresCase => {
                let lower = prefix.to_ascii_lowercase();
                let names: Vec<String> = names
                    .into_iter()
                    .filter(|n| n.to_ascii_lowercase().starts_with(&lower))
                    .collect();
                keyhost_plugin_sdk::page(names, "", after, limit)
            }
            D::PrefixIgnoredWithAfter if after.is_some() => keyhost_plugin_sdk::page(names, "", after, limit),
            _ => keyhost_plugin_sdk::page(names, prefix, after, limit),
        };
        match self.defect {
            D::UnsortedList => page.names.reverse(),
            D::PaginationDropsName if after.is_some() && !page.names.is_empty() => {
                page.names.remove(0);
            }
            D::ListNextOnFullLastPage if page.next.is_none() && page.names.len() == limit as usize => {
                page.next = page.names.last().cloned();
            }
            D::ListNextAlways if page.next.is_none() => page.next = page.names.last().cloned(),
            D::ListNextFirstName if page.next.is_some() => page.next = page.names.first().cloned(),
            D::ListDuplicatesFirst => {
                if let Some(first) = page.names.first().cloned() {
                    page.names.insert(0, first);
                }
            }
            D::ListCaseInsensitiveOrder => page.names.sort_by_key(|n| n.to_ascii_lowercase()),
            D::ListShortestFirst => page.names.sort_by(|a, b| a.len().cmp(&b.len()).then(a.cmp(b))),
            D::ListLowercase => page.names = page.names.iter().map(|n| n.to_ascii_lowercase()).collect(),
            _ => {}
        }
        Ok(page)
    }
}

/// `OffsetCursor`: where a listing continues after a `next` the plugin gave, kept
/// in the backend (one line per `next`: prefix, name, offset).
const OFFSETS: &str = "/data/.offsets";

fn offset_of(prefix: &str, next: &str) -> Option<usize> {
    let text = std::fs::read_to_string(OFFSETS).ok()?;
    text.lines().rev().find_map(|line| {
        let mut fields = line.split('\u{1f}');
        let (p, n, o) = (fields.next()?, fields.next()?, fields.next()?);
        (p == prefix && n == next).then(|| o.parse().ok()).flatten()
    })
}

fn remember_offset(prefix: &str, next: &str, offset: usize) {
    use std::io::Write as _;
    if let Ok(mut file) = std::fs::OpenOptions::new().create(true).append(true).open(OFFSETS) {
        let _ = writeln!(file, "{prefix}\u{1f}{next}\u{1f}{offset}");
    }
}

impl Faulty {
    /// The name under which a record is kept, or the refusal of it.
    fn stored_name(&self, name: &str) -> Result<String, Error> {
        use Defect as D;
        Ok(match self.defect {
            D::FoldCase => name.to_ascii_lowercase(),
            D::SlashToUnderscore => name.replace('/', "_"),
            D::SpacesToUnderscore => name.replace(' ', "_"),
            D::NonAsciiToQuestionMark => name.chars().map(|c| if c.is_ascii() { c } else { '?' }).collect(),
            D::NamesCutAt64 => name.chars().take(64).collect(),
            D::RefuseSingleChar if name.len() == 1 => {
                return Err(Error::InvalidArgument(format!("name {name:?} is too short")));
            }
            D::RefuseDots if name.contains('.') => {
                return Err(Error::InvalidArgument(format!("name {name:?} contains a dot")));
            }
            _ => name.to_owned(),
        })
    }

    /// The bytes that are kept for `value`.
    fn stored_value(&self, value: &[u8]) -> Vec<u8> {
        use Defect as D;
        match self.defect {
            D::ValueTrimEnd => {
                let end = value
                    .iter()
                    .rposition(|b| !b.is_ascii_whitespace())
                    .map_or(0, |i| i + 1);
                value[..end].to_vec()
            }
            D::ValueCrlfToLf => {
                let mut out = Vec::with_capacity(value.len());
                for (i, b) in value.iter().enumerate() {
                    if *b == b'\r' && value.get(i + 1) == Some(&b'\n') {
                        continue;
                    }
                    out.push(*b);
                }
                out
            }
            D::ValueCutAtNul => value.split(|b| *b == 0).next().unwrap_or_default().to_vec(),
            D::Truncate64KiB => value[..value.len().min(64 << 10)].to_vec(),
            D::Utf8LossyValues => String::from_utf8_lossy(value).into_owned().into_bytes(),
            _ => value.to_vec(),
        }
    }
}

export_keystore!(Faulty);
