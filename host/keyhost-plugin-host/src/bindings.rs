//! The WIT bindings of the keystore world (generated; private to this crate).

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "keyhost:keystore/keystore-plugin",
    exports: { default: async },
});
