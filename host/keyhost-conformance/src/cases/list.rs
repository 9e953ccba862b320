//! Cases of `list`: order, prefix, `after`, pages and their boundaries, paging while names change.

use crate::kit::{CaseResultInner, Kit};
use keyhost_keystore::Error;
use std::collections::BTreeSet;

impl Kit {
    pub(crate) async fn list_sorted(&self) -> CaseResultInner {
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

    pub(crate) async fn list_prefix(&self) -> CaseResultInner {
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

    pub(crate) async fn list_after(&self) -> CaseResultInner {
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

    pub(crate) async fn list_pages(&self, count: usize) -> CaseResultInner {
        let base = self.name(&format!("pages{count}-"));
        let mut names: Vec<String> = (0..count).map(|i| format!("{base}{i:05}")).collect();
        self.create_many(&names).await?;
        names.sort();
        let result = self.page_through(&base, &names).await;
        self.remove_now(&names).await;
        result
    }

    pub(crate) async fn list_boundaries(&self) -> CaseResultInner {
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

    /// Pages through names while others are created and deleted on both sides of the
    /// cursor: the cursor's own name and the next page's first go, names come just
    /// after it, and more go behind it than come, so that a plugin resuming at a
    /// remembered offset, or at a remembered next name, loses or repeats one.
    pub(crate) async fn list_churn(&self) -> CaseResultInner {
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
}
