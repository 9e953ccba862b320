//! The identity routes: list and describe (both eras), the caller's own, and
//! v0.16's assign and forget, which change this node's assignments in memory.

use keyhost_keystore::NameKind;
use keyhost_policy::Identity;
use serde_json::json;

use super::names::{checked, glob_matches, listing_prefix, v016_glob};
use super::respond::{empty, ndjson_with_trailers, ok, rfc3339, rules};
use super::{Answer, Call};
use crate::era::Era;
use crate::error::ApiError;

pub(super) fn describe(call: &Call<'_>) -> Answer {
    let Call { state, resource, .. } = *call;
    checked(NameKind::Identity, resource, Era::Newest)?;
    let auth = state.authorizer();
    let id = Identity::parse(resource).ok_or(ApiError::IdentityNotFound)?;
    let admin = auth.admin();
    if Some(&id) == admin {
        return ok(&json!({ "admin": true, "created_at": rfc3339(Some(state.started_at)) }));
    }
    let (policy, _) = auth.policy_of(&id).ok_or(ApiError::IdentityNotFound)?;
    ok(&json!({
        "policy": policy,
        "created_at": rfc3339(Some(state.started_at)),
        "created_by": admin.map(Identity::as_str).unwrap_or_default(),
    }))
}

/// The caller's own identity, policy and rules.
pub(super) fn own(call: &Call<'_>) -> Answer {
    let auth = call.state.authorizer();
    let id = call.identity.ok_or(ApiError::CertRequired)?;
    let created_at = rfc3339(Some(call.state.started_at));
    if Some(id) == auth.admin() {
        return ok(&json!({ "identity": id.as_str(), "admin": true, "created_at": created_at }));
    }
    let mut out = json!({ "identity": id.as_str(), "admin": false, "created_at": created_at });
    if let Some((name, policy)) = auth.policy_of(id) {
        out["policy"] = json!(name);
        out["allow"] = rules(&policy.allow);
        out["deny"] = rules(&policy.deny);
    }
    ok(&out)
}

pub(super) fn list(call: &Call<'_>) -> Answer {
    if call.state.era == Era::V016 {
        let lines: Vec<String> = {
            let auth = call.state.authorizer();
            let glob = v016_glob(call.resource)?;
            auth.identities()
                .filter(|(i, _)| glob_matches(&glob, i.as_str()))
                .map(|(i, p)| json!({ "identity": i.as_str(), "policy": p }).to_string() + "\n")
                .collect()
        };
        return ndjson_with_trailers(lines);
    }
    let auth = call.state.authorizer();
    let prefix = listing_prefix(call.resource)?;
    let mut ids: Vec<&str> = auth
        .identities()
        .map(|(i, _)| i.as_str())
        .chain(auth.admin().map(Identity::as_str))
        .filter(|i| i.starts_with(prefix))
        .collect();
    ids.sort_unstable();
    ok(&json!({ "identities": ids, "continue_at": "" }))
}

/// KES v0.16's `/v1/identity/assign/<policy>/<identity>`.
pub(super) fn assign(call: &Call<'_>) -> Answer {
    let state = call.state;
    let (policy, id) = call.resource.split_once('/').ok_or(ApiError::IdentityUnknown)?;
    let id = Identity::parse(id).ok_or(ApiError::IdentityUnknown)?;
    // KES v0.16's order: the admin first, then the caller itself.
    if Some(&id) == state.authorizer().admin() {
        return Err(ApiError::IdentityIsRoot);
    }
    if Some(&id) == call.identity {
        return Err(ApiError::AssignSelf);
    }
    state.authorizer_mut().assign(policy, id).map_err(|e| match e {
        keyhost_policy::AssignError::UnknownPolicy(_) => ApiError::PolicyNotFound,
        _ => ApiError::IdentityIsRoot,
    })?;
    empty()
}

/// KES v0.16's `/v1/identity/forget/<identity>`.
pub(super) fn forget(call: &Call<'_>) -> Answer {
    let id = Identity::parse(call.resource).ok_or(ApiError::IdentityUnknown)?;
    let mut auth = call.state.authorizer_mut();
    if Some(&id) == auth.admin() {
        return Err(ApiError::IdentityIsRoot);
    }
    auth.forget(&id);
    empty()
}
