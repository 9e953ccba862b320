//! `scale.listing`: a listing of tens of thousands of names, the size where
//! directory reads and backend pages run out (with `--scale`).

use std::collections::BTreeSet;

use crate::kit::{CaseResultInner, Kit};

/// How many names `scale.listing` pages through.
pub(crate) const SCALE_NAMES: usize = 20_000;

impl Kit {
    pub(crate) async fn scale_listing(&self) -> CaseResultInner {
        if !self.scale {
            return Ok(Some(format!("run with --scale to page through {SCALE_NAMES} names")));
        }
        let base = self.name("scale-");
        let names: Vec<String> = (0..SCALE_NAMES).map(|i| format!("{base}{i:05}")).collect();
        self.create_many(&names).await?;
        let result = async {
            // A limit of 1,000, the largest, and a prefix that holds a tenth.
            self.page_through(&base, &names).await?;
            let all = self.list_all(&base, u32::MAX).await?;
            ensure!(
                all == names,
                "paging with limit {} over {SCALE_NAMES} names returned {} names",
                u32::MAX,
                all.len()
            );
            let tenth = format!("{base}1");
            let expected: BTreeSet<&String> = names.iter().filter(|n| n.starts_with(&tenth)).collect();
            let listed = self.list_all(&tenth, 1000).await?;
            ensure!(
                listed.len() == expected.len() && listed.iter().all(|n| expected.contains(n)),
                "list({tenth:?}) over {} matching names returned {}",
                expected.len(),
                listed.len()
            );
            // And the store still answers for one name among them all.
            let probe = &names[SCALE_NAMES / 2];
            let got = self
                .store
                .get(probe)
                .await
                .map_err(|e| format!("get({probe:?}) failed: {e}"))?;
            ensure!(got[..] == *probe.as_bytes(), "get({probe:?}) returned other bytes");
            Ok(None)
        }
        .await;
        self.remove_now(&names).await;
        result
    }
}
