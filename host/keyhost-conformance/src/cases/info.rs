//! Cases of `info`: what a plugin says about itself.

use keyhost_keystore::Keystore;

use crate::kit::{CaseResultInner, Kit, declared_record_sizes};
use std::collections::BTreeSet;

impl Kit {
    pub(crate) async fn info_sane(&self) -> CaseResultInner {
        let info = self.plugin.info();
        ensure!(
            !info.name.is_empty()
                && info
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
            "info.name {:?} must be a short lowercase identifier ([a-z0-9-]+)",
            info.name
        );
        let parts: Vec<&str> = info.version.split(['-', '+']).next().unwrap_or("").split('.').collect();
        ensure!(
            parts.len() == 3
                && parts
                    .iter()
                    .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())),
            "info.version {:?} is not a semver version such as 1.2.3",
            info.version
        );
        if let Some(Err(why)) = declared_record_sizes(&info.features) {
            return Err(why);
        }
        let mut seen = BTreeSet::new();
        for s in &info.settings {
            ensure!(!s.name.is_empty(), "a setting has an empty name");
            ensure!(seen.insert(s.name.as_str()), "setting {:?} is listed twice", s.name);
            ensure!(
                !s.description.trim().is_empty(),
                "setting {:?} has no description",
                s.name
            );
        }
        // A fresh instance must describe itself the same way.
        self.plugin.recycle();
        self.plugin
            .status()
            .await
            .map_err(|e| format!("status after recycle failed: {e}"))?;
        ensure!(self.plugin.info() == info, "info changed between instances");
        Ok(None)
    }

    pub(crate) async fn info_no_grant(&self) -> CaseResultInner {
        let inspection = self
            .runtime
            .inspect(&self.spec.source)
            .await
            .map_err(|e| format!("the component could not be inspected: {e}"))?;
        if let Some(problem) = inspection.problem {
            return Err(format!(
                "info, called with no grant and no setting, failed: {problem} (info must not touch the backend)"
            ));
        }
        let opened = self.plugin.info();
        if let Some(bare) = &inspection.info
            && *bare != opened
        {
            let show = |i: &keyhost_plugin_host::PluginInfo| {
                format!("name {:?}, version {:?}, features {:?}", i.name, i.version, i.features)
            };
            return Err(format!(
                "info differs with and without settings and grants: without, {}; on an opened instance, {}",
                show(bare),
                show(&opened)
            ));
        }
        ensure!(inspection.info.is_some(), "info could not be read without grants");
        Ok(None)
    }
}
