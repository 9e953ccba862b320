//! Cases of names: the portable set at its edges, case, neighbours, names outside the set.

use crate::kit::{CaseResultInner, Kit};
use keyhost_keystore::{Error, Keystore};

impl Kit {
    /// On a store that folds case (a case-insensitive file system), `KEY` and `key`
    /// are one record, so a policy that names one could be bypassed with the other.
    pub(crate) async fn names_case(&self) -> CaseResultInner {
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

    pub(crate) async fn names_edges(&self) -> CaseResultInner {
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

    pub(crate) async fn names_neighbours(&self) -> CaseResultInner {
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

    pub(crate) async fn names_non_portable(&self) -> CaseResultInner {
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
}
