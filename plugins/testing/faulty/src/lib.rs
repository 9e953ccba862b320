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
            other => return Err(format!("unknown defect '{other}'")),
        })
    }
}

struct Faulty {
    defect: Defect,
    dir: DirStore,
    memory: RefCell<BTreeMap<String, Vec<u8>>>,
}

impl Keystore for Faulty {
    fn info() -> Info {
        Info {
            name: "faulty".into(),
            version: "0.0.0".into(),
            features: vec![],
            settings: vec![Setting {
                name: "defect".into(),
                required: true,
                secret: false,
                description: "which contract rule to break, e.g. `unsorted-list`, or `none`".into(),
            }],
        }
    }

    fn open(config: Config) -> Result<Self, Error> {
        let defect: Defect = config.parse_or("defect", Defect::None)?;
        Ok(Self {
            defect,
            dir: DirStore::open("/data")?,
            memory: RefCell::default(),
        })
    }

    fn status(&self) -> Result<Status, Error> {
        self.dir.status()
    }

    fn create(&self, name: &str, value: &[u8]) -> Result<(), Error> {
        let name = &self.stored_name(name);
        match self.defect {
            Defect::CreateFails => Err(Error::Unavailable("the backend takes no writes".into())),
            Defect::NonAtomicCreate => self.dir.create_racy(name, value),
            Defect::OverwriteExisting => match self.dir.create(name, value) {
                Err(Error::AlreadyExists) => {
                    self.dir.delete(name)?;
                    self.dir.create(name, value)?;
                    Err(Error::AlreadyExists)
                }
                other => other,
            },
            Defect::MemoryOnly => {
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
        let name = &self.stored_name(name);
        let result = match self.defect {
            Defect::MemoryOnly => self.memory.borrow().get(name).cloned().ok_or(Error::NotFound),
            _ => self.dir.get(name),
        };
        match (self.defect, result) {
            (Defect::GetOtherBytes, Ok(mut value)) => {
                match value.last_mut() {
                    Some(b) => *b ^= 1,
                    None => value.push(0),
                }
                Ok(value)
            }
            (Defect::WrongErrorCase, Err(Error::NotFound)) => Err(Error::Other("no such file".into())),
            (_, result) => result,
        }
    }

    fn delete(&self, name: &str) -> Result<(), Error> {
        let name = &self.stored_name(name);
        match self.defect {
            Defect::DeleteDoesNothing => Ok(()),
            Defect::MemoryOnly => self.memory.borrow_mut().remove(name).map(drop).ok_or(Error::NotFound),
            _ => self.dir.delete(name),
        }
    }

    fn list(&self, prefix: &str, after: Option<&str>, limit: u32) -> Result<Page, Error> {
        let names = match self.defect {
            Defect::MemoryOnly => self.memory.borrow().keys().cloned().collect(),
            _ => self.dir.names()?,
        };
        let mut page = keyhost_plugin_sdk::page(names, prefix, after, limit);
        match self.defect {
            Defect::UnsortedList => page.names.reverse(),
            Defect::PaginationDropsName if after.is_some() && !page.names.is_empty() => {
                page.names.remove(0);
            }
            _ => {}
        }
        Ok(page)
    }
}

impl Faulty {
    /// The name under which a record is kept.
    fn stored_name(&self, name: &str) -> String {
        match self.defect {
            Defect::FoldCase => name.to_ascii_lowercase(),
            _ => name.to_owned(),
        }
    }
}

export_keystore!(Faulty);
