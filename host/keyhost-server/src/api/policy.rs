//! The policy routes: read, list and describe (both eras), and v0.16's write and
//! delete, which change this node's policies in memory.

use keyhost_keystore::NameKind;
use keyhost_policy::Identity;
use serde::Deserialize;
use serde_json::json;

use super::names::{checked, glob_matches, listing_prefix, v016_glob};
use super::respond::{empty, ok, rfc3339, rules};
use super::{Answer, Call};
use crate::era::Era;
use crate::error::ApiError;

pub(super) fn read(call: &Call<'_>) -> Answer {
    if call.state.era == Era::V016 {
        let auth = call.state.authorizer();
        let policy = auth.policy(call.resource).ok_or(ApiError::PolicyNotFound)?;
        let list = |l: &[keyhost_policy::Pattern]| l.iter().map(|p| p.as_str().to_owned()).collect::<Vec<_>>();
        return ok(&json!({ "allow": list(&policy.allow), "deny": list(&policy.deny) }));
    }
    show(call, true)
}

pub(super) fn describe(call: &Call<'_>) -> Answer {
    show(call, false)
}

/// A newest-era policy: its name and origin, and its rules when `with_rules`.
fn show(call: &Call<'_>, with_rules: bool) -> Answer {
    let Call { state, resource, .. } = *call;
    checked(NameKind::Policy, resource, Era::Newest)?;
    let auth = state.authorizer();
    let policy = auth.policy(resource).ok_or(ApiError::PolicyNotFound)?;
    let admin = auth.admin().map(Identity::as_str).unwrap_or_default();
    let mut out = json!({ "name": resource, "created_at": rfc3339(Some(state.started_at)), "created_by": admin });
    if with_rules {
        out["allow"] = rules(&policy.allow);
        out["deny"] = rules(&policy.deny);
    }
    ok(&out)
}

pub(super) fn list(call: &Call<'_>) -> Answer {
    let auth = call.state.authorizer();
    if call.state.era == Era::V016 {
        let glob = v016_glob(call.resource)?;
        let names: Vec<&str> = auth.policy_names().filter(|n| glob_matches(&glob, n)).collect();
        return ok(&names);
    }
    let prefix = listing_prefix(call.resource)?;
    let names: Vec<&str> = auth.policy_names().filter(|n| n.starts_with(prefix)).collect();
    ok(&json!({ "names": names, "continue_at": "" }))
}

/// KES v0.16's `/v1/policy/write/<name>`.
pub(super) fn write(call: &Call<'_>) -> Answer {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Written {
        #[serde(default)]
        allow: Vec<String>,
        #[serde(default)]
        deny: Vec<String>,
    }
    let Call {
        state, resource, body, ..
    } = *call;
    checked(NameKind::Policy, resource, Era::V016)?;
    let written: Written = serde_json::from_slice(body).map_err(|_| ApiError::InvalidBody)?;
    let syntax = match state.era {
        Era::V016 => keyhost_policy::PatternSyntax::Glob,
        Era::Newest => keyhost_policy::PatternSyntax::Prefix,
    };
    let policy =
        keyhost_policy::Policy::parse(&written.allow, &written.deny, syntax).map_err(|_| ApiError::InvalidBody)?;
    state.authorizer_mut().set_policy(resource, policy);
    empty()
}

/// KES v0.16's `/v1/policy/delete/<name>`.
pub(super) fn delete(call: &Call<'_>) -> Answer {
    call.state.authorizer_mut().remove_policy(call.resource);
    empty()
}
