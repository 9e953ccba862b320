//! A deliberately broken keystore that implements the WIT export itself, as a plugin
//! written without the SDK (or in another language) does: it reads and checks its
//! own settings, so it can break the rules of `info` and `open` that the SDK keeps
//! for its users. The defect is chosen by the `defect` setting; without one (or with
//! `none`) it follows the contract and must pass the kit.
//!
//! Settings: `defect` (optional) and `subdir` (required: the directory under `/data`
//! that holds the records).

use std::cell::RefCell;

use keyhost_fs_store::DirStore;
use keyhost_plugin_sdk::__bindings::exports::keyhost::keystore::store::Guest;
use keyhost_plugin_sdk::__bindings::wasi::config::store as config;
use keyhost_plugin_sdk::{Error, Info, Page, Setting, Status};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Defect {
    None,
    /// "`open` must refuse any other key": unknown settings are ignored.
    IgnoresUnknownSettings,
    /// "Must fail fast with `invalid-argument` naming the setting when a required
    /// setting is missing": a default is used instead.
    MissingSettingDefault,
    /// The same rule: the refusal is `other`, not `invalid-argument`.
    MissingSettingOther,
    /// "when a value is malformed": `subdir` is used unchecked, and the file
    /// system's error comes back as `unavailable`.
    MalformedSettingUnavailable,
    /// "`info` … may be called before `open`": it reports a setting, so it differs
    /// with and without settings.
    InfoReadsSettings,
    /// "The plugin's own version (semver)": `v1`.
    InfoBadVersion,
}

impl Defect {
    fn parse(text: &str) -> Result<Self, Error> {
        Ok(match text {
            "none" => Self::None,
            "ignores-unknown-settings" => Self::IgnoresUnknownSettings,
            "missing-setting-default" => Self::MissingSettingDefault,
            "missing-setting-other" => Self::MissingSettingOther,
            "malformed-setting-unavailable" => Self::MalformedSettingUnavailable,
            "info-reads-settings" => Self::InfoReadsSettings,
            "info-bad-version" => Self::InfoBadVersion,
            _ => {
                return Err(Error::InvalidArgument(
                    "setting 'defect': unknown defect; e.g. `none`".into(),
                ));
            }
        })
    }

    /// The defect the settings name; `info` may run before (and without) settings.
    fn configured() -> Result<Self, Error> {
        setting("defect").map_or(Ok(Self::None), |d| Self::parse(&d))
    }
}

const SETTINGS: [&str; 2] = ["defect", "subdir"];

fn setting(key: &str) -> Option<String> {
    config::get(key).ok().flatten().filter(|v| !v.is_empty())
}

thread_local! {
    static STORE: RefCell<Option<DirStore>> = const { RefCell::new(None) };
}

fn with<R>(f: impl FnOnce(&DirStore) -> Result<R, Error>) -> Result<R, Error> {
    STORE.with(|s| match s.borrow().as_ref() {
        Some(store) => f(store),
        None => Err(Error::Other("called before a successful open".into())),
    })
}

struct Raw;

impl Guest for Raw {
    fn info() -> Info {
        let defect = Defect::configured().unwrap_or(Defect::None);
        Info {
            name: "faulty-raw".into(),
            version: if defect == Defect::InfoBadVersion {
                "v1"
            } else {
                "0.0.0"
            }
            .into(),
            features: match defect {
                Defect::InfoReadsSettings => vec![format!("subdir={}", setting("subdir").unwrap_or_default())],
                _ => vec![],
            },
            settings: vec![
                Setting {
                    name: "defect".into(),
                    required: false,
                    secret: false,
                    description: "which contract rule to break, e.g. `info-bad-version`, or `none`".into(),
                },
                Setting {
                    name: "subdir".into(),
                    required: true,
                    secret: false,
                    description: "the directory under the granted one that holds the records, e.g. `keys`".into(),
                },
            ],
        }
    }

    fn open() -> Result<(), Error> {
        let defect = Defect::configured()?;
        let pairs = config::get_all().map_err(|e| Error::Other(format!("cannot read the settings: {e:?}")))?;
        if defect != Defect::IgnoresUnknownSettings
            && let Some((key, _)) = pairs.iter().find(|(k, _)| !SETTINGS.contains(&k.as_str()))
        {
            return Err(Error::InvalidArgument(format!(
                "unknown setting '{key}'; this plugin reads defect, subdir"
            )));
        }
        let subdir = match (setting("subdir"), defect) {
            (Some(subdir), _) => subdir,
            (None, Defect::MissingSettingDefault) => "keys".into(),
            (None, Defect::MissingSettingOther) => return Err(Error::Other("no subdir".into())),
            (None, _) => return Err(Error::InvalidArgument("missing required setting 'subdir'".into())),
        };
        let portable = subdir.len() <= 80
            && !subdir.starts_with('.')
            && subdir.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
        if !portable && defect != Defect::MalformedSettingUnavailable {
            return Err(Error::InvalidArgument(
                "setting 'subdir': use 1 to 80 of 0-9 A-Z a-z _ - . not starting with a dot".into(),
            ));
        }
        let root = format!("/data/{subdir}");
        if !std::path::Path::new(&root).is_dir() {
            std::fs::create_dir(&root).map_err(|e| match e.kind() {
                std::io::ErrorKind::PermissionDenied => Error::AccessDenied(format!("cannot make the directory: {e}")),
                _ => Error::Unavailable(format!("cannot make the directory: {e}")),
            })?;
        }
        let store = DirStore::open(root)?;
        STORE.with(|s| *s.borrow_mut() = Some(store));
        Ok(())
    }

    fn status() -> Result<Status, Error> {
        with(DirStore::status)
    }

    fn create(name: String, value: Vec<u8>) -> Result<(), Error> {
        with(|s| s.create(&name, &value))
    }

    fn get(name: String) -> Result<Vec<u8>, Error> {
        with(|s| s.get(&name))
    }

    fn delete(name: String) -> Result<(), Error> {
        with(|s| s.delete(&name))
    }

    fn list(prefix: String, after: Option<String>, limit: u32) -> Result<Page, Error> {
        with(|s| s.list(&prefix, after.as_deref(), limit))
    }
}

keyhost_plugin_sdk::__bindings::__export_keystore_plugin!(Raw with_types_in keyhost_plugin_sdk::__bindings);
