//! What a plugin answers when its surroundings change under it: the granted
//! directory made read-only or removed, the outbound grant revoked, the backend
//! gone, a credential that the backend refuses, and another set of instances
//! configured for the same backend in other words.
//!
//! Each case loads further sets of instances of the plugin with the changed
//! grant or settings, as an operator's change or a backend's failure would leave
//! it, and checks the error case the contract names for it.

use std::collections::BTreeMap;
use std::sync::Arc;

use keyhost_keystore::{Error, Keystore};
use keyhost_plugin_host::{LoadError, Origin, PluginSpec};

use super::Checked;
use crate::kit::{Kit, sealed_as};

/// Loads `spec` as another set of instances, through the kit's sealing.
async fn load(kit: &Kit, spec: PluginSpec) -> Result<Arc<dyn Keystore>, LoadError> {
    kit.runtime.load(spec).await.map(|p| sealed_as(&kit.seal, p))
}

/// How `what` answered, for a failure message.
fn shown<T>(result: &Result<T, Error>) -> String {
    match result {
        Ok(_) => "success".into(),
        Err(e) => format!("{e}"),
    }
}

/// `env.dir-read-only`: with the granted directory read-only, reads go on and
/// writes are refused with `access-denied`.
pub(crate) async fn dir_read_only(kit: &Kit) -> Checked {
    if kit.spec.grants.dir.is_none() {
        return Ok(Some("the plugin is granted no directory".into()));
    }
    let name = kit.name("ro-kept");
    kit.create_ok(&name, b"kept").await?;
    let mut spec = kit.spec.clone();
    spec.grants.dir_read_only = true;
    let store = match load(kit, spec).await {
        Ok(store) => store,
        Err(e) => {
            return Err(format!(
                "with the granted directory read-only, open failed ({e}); reads still succeed there, so open must too"
            ));
        }
    };
    let status = store.status().await;
    if status.is_err() {
        return Err(format!(
            "with the directory read-only, status answered {}, but reads succeed: status must succeed",
            shown(&status)
        ));
    }
    match store.get(&name).await {
        Ok(v) if &v[..] == b"kept" => {}
        other => {
            return Err(format!(
                "with the directory read-only, get of a stored record answered {}; expected the record",
                shown(&other)
            ));
        }
    }
    let fresh = kit.name("ro-new");
    match store.create(&fresh, b"refused").await {
        Err(Error::AccessDenied(_)) => {}
        other => {
            if other.is_ok() {
                kit.note_created(&fresh);
            }
            return Err(format!(
                "with the directory read-only, create answered {}; a write the backend refuses for permissions is access-denied",
                shown(&other)
            ));
        }
    }
    match store.delete(&name).await {
        Err(Error::AccessDenied(_)) => {}
        other => {
            return Err(format!(
                "with the directory read-only, delete answered {}; a write the backend refuses for permissions is access-denied",
                shown(&other)
            ));
        }
    }
    match kit.store.get(&name).await {
        Ok(v) if &v[..] == b"kept" => Ok(None),
        other => Err(format!(
            "after a refused delete, the record reads {}; a refused delete must leave it",
            shown(&other)
        )),
    }
}

/// `env.dir-removed`: with the granted directory removed, `status` and every
/// operation fail with `unavailable`: never success, never `not-found`.
pub(crate) async fn dir_removed(kit: &Kit) -> Checked {
    if kit.spec.grants.dir.is_none() {
        return Ok(Some("the plugin is granted no directory".into()));
    }
    // A directory of the kit's own, granted, used, then removed under the plugin.
    let dir = tempfile::Builder::new()
        .prefix("keyhost-kit-")
        .tempdir()
        .map_err(|e| format!("cannot create a scratch directory: {e}"))?;
    let mut spec = kit.spec.clone();
    spec.grants.dir = Some(dir.path().to_owned());
    let store = load(kit, spec)
        .await
        .map_err(|e| format!("with a fresh directory granted, the plugin did not open: {e}"))?;
    let name = kit.name("gone");
    store
        .create(&name, b"in a directory about to go")
        .await
        .map_err(|e| format!("create in a fresh directory failed: {e}"))?;
    std::fs::remove_dir_all(dir.path()).map_err(|e| format!("cannot remove the scratch directory: {e}"))?;
    let answers = [
        ("status", store.status().await.map(drop)),
        ("get of a record it held", store.get(&name).await.map(drop)),
        (
            "get of a name it never held",
            store.get(&kit.name("gone-never")).await.map(drop),
        ),
        ("create", store.create(&kit.name("gone-new"), b"x").await),
        ("delete", store.delete(&name).await),
        ("list", store.list(&kit.name(""), None, 10).await.map(drop)),
    ];
    for (what, answer) in answers {
        if !matches!(answer, Err(Error::Unavailable(_))) {
            return Err(format!(
                "with the granted directory removed, {what} answered {}; the backend is gone, so every call is unavailable",
                shown(&answer)
            ));
        }
    }
    Ok(None)
}

/// A directory of the kit's own, granted to a fresh set of instances in place of
/// the operator's, so that the kit may age, plant or remove what is in it.
async fn scratch_dir(kit: &Kit) -> Result<(tempfile::TempDir, Arc<dyn Keystore>), String> {
    let dir = tempfile::Builder::new()
        .prefix("keyhost-kit-")
        .tempdir()
        .map_err(|e| format!("cannot create a scratch directory: {e}"))?;
    let mut spec = kit.spec.clone();
    spec.grants.dir = Some(dir.path().to_owned());
    let store = load(kit, spec)
        .await
        .map_err(|e| format!("with a fresh directory granted, the plugin did not open: {e}"))?;
    // The one place the kit knows a store to be empty: it must list nothing, and
    // say so without an error.
    match store.list("", None, 1000).await {
        Ok(page) if page.names.is_empty() && page.next.is_none() => {}
        got => {
            return Err(format!(
                "in a fresh, empty directory, list(\"\", after none, limit 1000) answered {}; expected an empty page",
                match got {
                    Ok(page) => format!("{:?} (next {:?})", page.names, page.next),
                    Err(e) => e.to_string(),
                }
            ));
        }
    }
    Ok((dir, store))
}

/// A fresh set of instances on `dir`, as after a restart.
async fn reopen(kit: &Kit, dir: &std::path::Path) -> Result<Arc<dyn Keystore>, String> {
    let mut spec = kit.spec.clone();
    spec.grants.dir = Some(dir.to_owned());
    load(kit, spec)
        .await
        .map_err(|e| format!("a fresh set of instances on the same directory did not open: {e}"))
}

/// Sets the times of everything under `dir` (not `dir` itself) `age` back.
fn age(dir: &std::path::Path, by: std::time::Duration) -> Result<(), String> {
    let then = std::time::SystemTime::now() - by;
    let times = std::fs::FileTimes::new().set_accessed(then).set_modified(then);
    let entries = std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    for entry in entries.flatten() {
        let path = entry.path();
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            age(&path, by)?;
        }
        std::fs::File::open(&path)
            .and_then(|f| f.set_times(times))
            .map_err(|e| format!("cannot age {}: {e}", path.display()))?;
    }
    Ok(())
}

/// `env.dir-aged`: records two days old survive a fresh `open` (housekeeping of
/// old temporary files must not take records with them).
pub(crate) async fn dir_aged(kit: &Kit) -> Checked {
    if kit.spec.grants.dir.is_none() {
        return Ok(Some("the plugin is granted no directory".into()));
    }
    let (dir, store) = scratch_dir(kit).await?;
    let name = kit.name("aged");
    store
        .create(&name, b"an old record")
        .await
        .map_err(|e| format!("create in a fresh directory failed: {e}"))?;
    age(dir.path(), std::time::Duration::from_secs(2 * 24 * 3600))?;
    let fresh = reopen(kit, dir.path()).await?;
    match fresh.get(&name).await {
        Ok(v) if &v[..] == b"an old record" => {}
        got => {
            return Err(format!(
                "with every file in the directory two days old, a fresh set of instances read {} for a record; \
                 housekeeping at open must never remove records",
                shown(&got)
            ));
        }
    }
    let listed = fresh
        .list(&kit.name(""), None, 10)
        .await
        .map_err(|e| format!("list failed: {e}"))?;
    ensure!(
        listed.names == [name.clone()],
        "with every file two days old, a fresh set of instances listed {:?}, expected {name:?}",
        listed.names
    );
    Ok(None)
}

/// `env.dir-foreign`: a subdirectory that the plugin did not write, named like a
/// record, is neither listed nor read as one.
pub(crate) async fn dir_foreign(kit: &Kit) -> Checked {
    if kit.spec.grants.dir.is_none() {
        return Ok(Some("the plugin is granted no directory".into()));
    }
    let (dir, store) = scratch_dir(kit).await?;
    let name = kit.name("foreign-record");
    store
        .create(&name, b"a record")
        .await
        .map_err(|e| format!("create in a fresh directory failed: {e}"))?;
    // Beside whatever the plugin wrote, wherever it keeps its records.
    let foreign = kit.name("foreign-dir");
    let mut planted = vec![dir.path().join(&foreign)];
    for entry in std::fs::read_dir(dir.path()).map_err(|e| e.to_string())?.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            planted.push(entry.path().join(&foreign));
        }
    }
    for path in &planted {
        std::fs::create_dir(path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    }
    let listed = store
        .list(&kit.name("foreign-"), None, 10)
        .await
        .map_err(|e| format!("list failed: {e}"))?;
    ensure!(
        listed.names == [name.clone()],
        "with a directory named {foreign:?} planted beside the records, list returned {:?}: a directory is not a record",
        listed.names
    );
    match store.get(&foreign).await {
        Err(Error::NotFound) => Ok(None),
        got => Err(format!(
            "with a directory named {foreign:?} planted beside the records, get({foreign:?}) answered {}; it holds no record, so not-found",
            shown(&got)
        )),
    }
}

/// `env.http-revoked`: with the outbound grant taken away, the host denies every
/// request, and the plugin says `access-denied`, at `open` or at each call.
pub(crate) async fn http_revoked(kit: &Kit) -> Checked {
    if kit.spec.grants.http.is_empty() {
        return Ok(Some("the plugin is granted no outbound HTTP".into()));
    }
    let mut spec = kit.spec.clone();
    spec.grants.http.clear();
    spec.grants.tls.clear();
    open_or_every_call_fails(kit, spec, "without its outbound grant", "access-denied", |e| {
        matches!(e, Error::AccessDenied(_))
    })
    .await
    .map_err(|why| format!("{why}; a request the host denies is access-denied"))
}

/// `env.backend-gone`: with the backend's address answering nothing (every
/// granted origin in the settings moved to a closed port), `open` or each call
/// is `unavailable`.
pub(crate) async fn backend_gone(kit: &Kit) -> Checked {
    if kit.spec.grants.http.is_empty() {
        return Ok(Some("the plugin is granted no outbound HTTP".into()));
    }
    let closed = {
        let listener =
            std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("cannot find a free port: {e}"))?;
        listener.local_addr().map_err(|e| e.to_string())?.port()
    };
    let mut spec = kit.spec.clone();
    let mut moved = false;
    let mut http = Vec::new();
    for origin in &kit.spec.grants.http {
        let gone = Origin::parse(&format!(
            "{}://127.0.0.1:{closed}",
            if origin.is_https() { "https" } else { "http" }
        ))
        .map_err(|e| format!("cannot name the closed port: {e}"))?;
        let from = origin.to_string();
        for value in spec.config.values_mut() {
            if value.contains(&from) {
                *value = value.replace(&from, &gone.to_string());
                moved = true;
            }
        }
        http.push(gone);
    }
    if !moved {
        return Ok(Some(
            "no setting names a granted origin, so the kit cannot point the plugin elsewhere".into(),
        ));
    }
    spec.grants.http = http;
    spec.grants.tls.clear();
    // A plugin that retries must give up within its budget; one second is plenty.
    if kit.plugin.info().settings.iter().any(|s| s.name == "timeout_ms") {
        spec.config.insert("timeout_ms".into(), "1000".into());
    }
    open_or_every_call_fails(kit, spec, "with the backend gone", "unavailable", |e| {
        matches!(e, Error::Unavailable(_))
    })
    .await
    .map_err(|why| format!("{why}; a backend that cannot be reached is unavailable"))
}

/// `env.credential-refused`: with each secret setting changed to a value the
/// backend does not know, `open` or each call is `access-denied`. A backend that
/// checks no credential (an emulator) makes the case a skip.
pub(crate) async fn credential_refused(kit: &Kit) -> Checked {
    let info = kit.plugin.info();
    let secret: Vec<&String> = info
        .settings
        .iter()
        .filter(|s| s.secret && kit.spec.config.contains_key(&s.name))
        .map(|s| &s.name)
        .collect();
    if secret.is_empty() {
        return Ok(Some("the plugin is configured with no secret setting".into()));
    }
    let mut unchecked = Vec::new();
    for setting in secret {
        let mut spec = kit.spec.clone();
        let value = spec.config.get(setting).cloned().unwrap_or_default();
        spec.config.insert(setting.clone(), wrong(&value));
        let store = match load(kit, spec).await {
            Err(LoadError::Open {
                error: Error::AccessDenied(_),
                ..
            }) => continue,
            Err(e) => {
                return Err(format!(
                    "with setting {setting:?} changed to a wrong credential, open failed with {}; a refused credential is access-denied",
                    e.to_string().replace(&value, "<the credential>")
                ));
            }
            Ok(store) => store,
        };
        match store.get(&kit.name("credential-probe")).await {
            // The backend takes any credential: nothing to check.
            Err(Error::NotFound) => {
                unchecked.push(setting.clone());
                continue;
            }
            Err(Error::AccessDenied(_)) => {}
            other => {
                return Err(format!(
                    "with setting {setting:?} changed to a wrong credential, get answered {}; a refused credential is access-denied",
                    shown(&other).replace(&value, "<the credential>")
                ));
            }
        }
        every_call_fails(kit, store.as_ref(), &format!("with setting {setting:?} wrong"), |e| {
            matches!(e, Error::AccessDenied(_))
        })
        .await
        .map_err(|why| format!("{why}; a refused credential is access-denied"))?;
    }
    if unchecked.is_empty() {
        Ok(None)
    } else {
        Ok(Some(format!(
            "the backend accepted a wrong value of {unchecked:?}: it checks no credential"
        )))
    }
}

/// A value of the same shape as `value` that is not it.
fn wrong(value: &str) -> String {
    let mut out: Vec<char> = value.chars().collect();
    match out.last_mut() {
        Some(c) => *c = if *c == 'x' { 'y' } else { 'x' },
        None => out.push('x'),
    }
    out.into_iter().collect()
}

/// With `spec`, either `open` fails as `ok` says, or it succeeds and every call
/// does.
async fn open_or_every_call_fails(
    kit: &Kit,
    spec: PluginSpec,
    when: &str,
    expected: &str,
    ok: impl Fn(&Error) -> bool,
) -> Checked {
    match load(kit, spec).await {
        Err(LoadError::Open { error, .. }) if ok(&error) => Ok(None),
        Err(e) => Err(format!("{when}, open failed with {e}; expected {expected}")),
        Ok(store) => every_call_fails(kit, store.as_ref(), when, ok).await.map(|()| None),
    }
}

/// `status`, `get`, `create`, `delete` and `list` all fail as `ok` says.
async fn every_call_fails(
    kit: &Kit,
    store: &dyn Keystore,
    when: &str,
    ok: impl Fn(&Error) -> bool,
) -> Result<(), String> {
    let name = kit.name("env-probe");
    let answers = [
        ("status", store.status().await.map(drop)),
        ("get", store.get(&name).await.map(drop)),
        ("create", store.create(&name, b"x").await),
        ("delete", store.delete(&name).await),
        ("list", store.list(&kit.name(""), None, 10).await.map(drop)),
    ];
    for (what, answer) in answers {
        if what == "create" && answer.is_ok() {
            kit.note_created(&name);
        }
        match answer {
            Err(e) if ok(&e) => {}
            other => return Err(format!("{when}, {what} answered {}", shown(&other))),
        }
    }
    Ok(())
}

/// `env.same-backend`: a set of instances configured for the same backend in
/// other words (its list settings in another order, another call budget) reads,
/// lists and deletes what the first set wrote, and the first reads what it wrote.
pub(crate) async fn same_backend(kit: &Kit) -> Checked {
    let mut config: BTreeMap<String, String> = kit.spec.config.clone();
    let mut changed = Vec::new();
    for (key, value) in &mut config {
        if value.contains(',') {
            let mut parts: Vec<&str> = value.split(',').collect();
            parts.reverse();
            *value = parts.join(",");
            changed.push(key.clone());
        }
    }
    if kit.plugin.info().settings.iter().any(|s| s.name == "timeout_ms") {
        config.insert("timeout_ms".into(), "7000".into());
        changed.push("timeout_ms".into());
    }
    if changed.is_empty() {
        return Ok(Some(
            "the plugin's settings have no other wording: no list of values, no timeout_ms".into(),
        ));
    }
    let other = sealed_as(
        &kit.seal,
        kit.load_with(config)
            .await
            .map_err(|e| format!("with the settings {changed:?} changed, the plugin did not open: {e}"))?,
    );
    let (mine, theirs) = (kit.name("same-a"), kit.name("same-b"));
    kit.create_ok(&mine, b"first").await?;
    match other.get(&mine).await {
        Ok(v) if &v[..] == b"first" => {}
        got => {
            return Err(format!(
                "a set with the settings {changed:?} in other words read {}, not the record the first set wrote",
                shown(&got)
            ));
        }
    }
    other
        .create(&theirs, b"second")
        .await
        .map_err(|e| format!("the second set's create failed: {e}"))?;
    kit.note_created(&theirs);
    match kit.store.get(&theirs).await {
        Ok(v) if &v[..] == b"second" => {}
        got => {
            return Err(format!(
                "the first set read {} for the second set's record",
                shown(&got)
            ));
        }
    }
    let listed = other
        .list(&kit.name("same-"), None, 10)
        .await
        .map_err(|e| format!("the second set's list failed: {e}"))?;
    if listed.names != [mine.clone(), theirs.clone()] {
        return Err(format!(
            "the second set listed {:?}, expected both records",
            listed.names
        ));
    }
    other
        .delete(&mine)
        .await
        .map_err(|e| format!("the second set's delete of the first set's record failed: {e}"))?;
    match kit.store.get(&mine).await {
        Err(Error::NotFound) => Ok(None),
        got => Err(format!(
            "after the second set deleted it, the first set read {}",
            shown(&got)
        )),
    }
}
