//! Cases of instances: concurrent creates, recycling, state shared across instances.

use crate::kit::{CaseResultInner, Kit, sealed_as};
use keyhost_keystore::{Error, Keystore};

impl Kit {
    pub(crate) async fn concurrent_same(&self) -> CaseResultInner {
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

    pub(crate) async fn concurrent_distinct(&self) -> CaseResultInner {
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

    pub(crate) async fn recycle_durable(&self) -> CaseResultInner {
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

    pub(crate) async fn shared_state(&self) -> CaseResultInner {
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
