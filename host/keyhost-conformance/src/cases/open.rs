//! Cases of `open`: settings missing, unknown or malformed.

use super::secrets::{masked, revealed};
use crate::kit::{CaseResultInner, Kit};
use keyhost_keystore::Error;
use keyhost_plugin_host::LoadError;

/// The setting the kit adds to prove that `open` refuses unknown settings.
pub const UNKNOWN_SETTING: &str = "keyhost-conformance-unknown";

/// A value no setting of any format takes: NUL, a newline, DEL, a bidi override, a
/// percent escape and a path climb.
const MALFORMED_SETTING: &str = "\u{0}\n\u{7f}\u{202e}%00/../";

impl Kit {
    pub(crate) async fn open_missing_setting(&self) -> CaseResultInner {
        let info = self.plugin.info();
        let required: Vec<_> = info.settings.iter().filter(|s| s.required).collect();
        if required.is_empty() {
            return Ok(Some("the plugin has no required setting".into()));
        }
        for setting in required {
            let mut config = self.spec.config.clone();
            config.remove(&setting.name);
            match self.load_with(config).await {
                Err(LoadError::Open {
                    error: Error::InvalidArgument(message),
                    ..
                }) if message.contains(&setting.name) => {}
                Err(LoadError::Open { error, .. }) => {
                    return Err(format!(
                        "without required setting {:?}, open failed with {error:?}; expected invalid-argument naming the setting",
                        setting.name
                    ));
                }
                Err(other) => return Err(format!("without setting {:?}: {other}", setting.name)),
                Ok(_) => {
                    return Err(format!("open succeeded without required setting {:?}", setting.name));
                }
            }
        }
        Ok(None)
    }

    pub(crate) async fn open_unknown_setting(&self) -> CaseResultInner {
        let mut config = self.spec.config.clone();
        config.insert(UNKNOWN_SETTING.into(), "1".into());
        match self.load_with(config).await {
            Err(LoadError::Open {
                error: Error::InvalidArgument(message),
                ..
            }) if message.contains(UNKNOWN_SETTING) => Ok(None),
            Err(LoadError::Open { error, .. }) => Err(format!(
                "with unknown setting {UNKNOWN_SETTING:?}, open failed with {error:?}; expected invalid-argument naming it"
            )),
            Err(other) => Err(format!("with an unknown setting: {other}")),
            Ok(_) => Err(format!("open accepted the unknown setting {UNKNOWN_SETTING:?}")),
        }
    }

    /// Each setting, set to a malformed value — on its own, and after the value it
    /// is configured with — must be refused with `invalid-argument` naming it, or
    /// accepted.
    pub(crate) async fn open_malformed_setting(&self) -> CaseResultInner {
        let info = self.plugin.info();
        if info.settings.is_empty() {
            return Ok(Some("the plugin reads no setting".into()));
        }
        let secrets = self.secrets();
        for setting in &info.settings {
            let mut values = vec![MALFORMED_SETTING.to_owned()];
            if let Some(configured) = self.spec.config.get(&setting.name) {
                values.push(format!("{configured}{MALFORMED_SETTING}"));
            }
            for value in values {
                let mut config = self.spec.config.clone();
                config.insert(setting.name.clone(), value.clone());
                let shown = if secrets.iter().any(|s| value.contains(s.as_str())) {
                    format!("<its value>{MALFORMED_SETTING:?}")
                } else {
                    format!("{value:?}")
                };
                let refusal = match self.load_with(config).await {
                    // Any value is valid for this setting.
                    Ok(_) => continue,
                    Err(LoadError::Open {
                        error: Error::InvalidArgument(message),
                        ..
                    }) if message.contains(&setting.name) => message,
                    Err(LoadError::Open { error, .. }) => {
                        return Err(format!(
                            "with setting {:?} set to {shown}, open failed with {}; expected invalid-argument naming the setting (or success, if any value is valid)",
                            setting.name,
                            masked(&format!("{error:?}"), &secrets)
                        ));
                    }
                    Err(other) => {
                        return Err(format!(
                            "with setting {:?} set to {shown}: {}",
                            setting.name,
                            masked(&other.to_string(), &secrets)
                        ));
                    }
                };
                if let Some(what) = revealed(&refusal, &[], &secrets) {
                    return Err(format!(
                        "refusing setting {:?}, the plugin revealed {what}: {:?}",
                        setting.name,
                        masked(&refusal, &secrets)
                    ));
                }
            }
        }
        Ok(None)
    }
}
