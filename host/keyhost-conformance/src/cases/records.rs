//! Cases of records: round trips of every size, existing and missing names.

use crate::kit::{CaseResultInner, Kit, contains, first_difference};
use keyhost_keystore::{Error, Keystore};

impl Kit {
    pub(crate) async fn status_answers(&self) -> CaseResultInner {
        self.store
            .status()
            .await
            .map(|_| None)
            .map_err(|e| format!("status failed: {e}"))
    }

    pub(crate) async fn roundtrip(&self, suffix: &str, value: Vec<u8>) -> CaseResultInner {
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

    pub(crate) async fn create_exists(&self) -> CaseResultInner {
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

    pub(crate) async fn get_missing(&self) -> CaseResultInner {
        match self.store.get(&self.name("never-created")).await {
            Err(Error::NotFound) => Ok(None),
            Ok(_) => Err("get of a never-created name returned a record".into()),
            Err(e) => Err(format!(
                "get of a never-created name returned {e:?}, expected not-found"
            )),
        }
    }

    pub(crate) async fn delete_then_get(&self) -> CaseResultInner {
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

    pub(crate) async fn delete_missing(&self) -> CaseResultInner {
        match self.store.delete(&self.name("never-created")).await {
            Err(Error::NotFound) => Ok(None),
            Ok(()) => Err("delete of a missing name succeeded; the contract requires not-found".into()),
            Err(e) => Err(format!("delete of a missing name returned {e:?}, expected not-found")),
        }
    }

    pub(crate) async fn records_text(&self) -> CaseResultInner {
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

    pub(crate) async fn records_empty(&self) -> CaseResultInner {
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
}
