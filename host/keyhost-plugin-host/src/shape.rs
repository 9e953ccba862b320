//! What a component is: its imports and exports, whether this host can run it,
//! and what its `info` says, without opening it.

use super::*;

impl Runtime {
    /// Describes a component without opening it: size, SHA-256 (the value to pin),
    /// imports and exports, whether this host can run it as a keystore plugin, and
    /// — when it can — what its `info` function says. `info` runs in a sandbox with
    /// no grants and no settings.
    pub async fn inspect(&self, source: &PluginSource) -> Result<Inspection, LoadError> {
        let label = source.label();
        let bytes = read_source(source, &label)?;
        let sha256 = hex::encode(Sha256::digest(&bytes));
        let (component, compile) = self.compile(&label, &bytes)?;
        let ty = component.component_type();
        let engine = &self.inner.engine;
        let mut imports: Vec<String> = ty.imports(engine).map(|(n, _)| n.to_owned()).collect();
        let mut exports: Vec<String> = ty.exports(engine).map(|(n, _)| n.to_owned()).collect();
        imports.sort();
        exports.sort();
        let mut inspection = Inspection {
            label: label.clone(),
            size: bytes.len(),
            sha256,
            imports,
            exports,
            problem: None,
            info: None,
        };
        if let Err(e) = self.check_shape(&label, &component) {
            inspection.problem = Some(e.to_string());
            return Ok(inspection);
        }
        let spec = PluginSpec::new("inspect", source.clone());
        match self.shared(&spec, &label, inspection.sha256.clone(), compile, &component) {
            Err(e) => inspection.problem = Some(e.to_string()),
            Ok(shared) => match shared.spawn_unopened().await {
                Ok(_) => inspection.info = lock(&shared.info).clone(),
                Err(e) => inspection.problem = Some(format!("its info function failed: {e}")),
            },
        }
        Ok(inspection)
    }

    pub(crate) fn check_shape(&self, label: &str, component: &Component) -> Result<(), LoadError> {
        let engine = &self.inner.engine;
        let ty = component.component_type();
        let not_a_plugin = |reason: String| LoadError::NotAPlugin {
            source_label: label.to_owned(),
            reason,
        };
        let exports: Vec<String> = ty.exports(engine).map(|(name, _)| name.to_owned()).collect();
        if !exports.iter().any(|e| e == STORE_EXPORT) {
            let similar: Vec<&String> = exports.iter().filter(|e| e.starts_with("keyhost:keystore/")).collect();
            return Err(not_a_plugin(if similar.is_empty() {
                format!(
                    "it does not export {STORE_EXPORT} (it exports: {}); build it against wit/keystore.wit",
                    if exports.is_empty() {
                        "nothing".to_owned()
                    } else {
                        exports.join(", ")
                    }
                )
            } else {
                format!(
                    "it exports {} but this keyhost speaks {STORE_EXPORT}; rebuild it against this keyhost's wit/keystore.wit",
                    similar.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                )
            }));
        }
        let unknown: Vec<String> = ty
            .imports(engine)
            .map(|(name, _)| name.to_owned())
            .filter(|name| !PROVIDED_IMPORTS.iter().any(|p| name.starts_with(p)))
            .collect();
        if !unknown.is_empty() {
            return Err(not_a_plugin(format!(
                "it imports {}, which keyhost does not provide (a plugin may import wasi:config/store, \
                 wasi:http/outgoing-handler and the WASI 0.2 cli, clocks, filesystem, io, random and sockets interfaces)",
                unknown.join(", ")
            )));
        }
        Ok(())
    }
}

/// What [`Runtime::inspect`] found.
#[derive(Debug, Clone)]
pub struct Inspection {
    /// The file or bundled name.
    pub label: String,
    /// Size in bytes.
    pub size: usize,
    /// Lowercase hex SHA-256: the value for a `sha256` pin.
    pub sha256: String,
    /// Imported interfaces, sorted.
    pub imports: Vec<String>,
    /// Exported interfaces, sorted.
    pub exports: Vec<String>,
    /// Why this host cannot run it as a keystore plugin, if it cannot.
    pub problem: Option<String>,
    /// What its `info` function says, when it could be asked.
    pub info: Option<PluginInfo>,
}
