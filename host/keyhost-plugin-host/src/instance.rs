//! One instance of a plugin, and one call into it.

use super::*;

pub(crate) struct Instance {
    pub(crate) store: Store<HostState>,
    pub(crate) plugin: bindings::KeystorePlugin,
    pub(crate) generation: u64,
}

pub(crate) enum Op<'a> {
    Info,
    Open,
    Status,
    Create(&'a str, &'a [u8]),
    Get(&'a str),
    Delete(&'a str),
    List(&'a str, Option<&'a str>, u32),
}

impl Op<'_> {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Op::Info => "info",
            Op::Open => "open",
            Op::Status => "status",
            Op::Create(..) => "create",
            Op::Get(_) => "get",
            Op::Delete(_) => "delete",
            Op::List(..) => "list",
        }
    }
}

pub(crate) enum Out {
    Info(wit_types::PluginInfo),
    Unit,
    Health(wit_types::Health),
    Bytes(Vec<u8>),
    Page(wit_types::Page),
}

pub(crate) async fn invoke(inst: &mut Instance, op: &Op<'_>) -> wasmtime::Result<Result<Out, wit_types::Error>> {
    let store = &mut inst.store;
    let guest: &wit::Guest = inst.plugin.keyhost_keystore_store();
    Ok(match *op {
        Op::Info => Ok(Out::Info(guest.call_info(store).await?)),
        Op::Open => guest.call_open(store).await?.map(|()| Out::Unit),
        Op::Status => guest.call_status(store).await?.map(Out::Health),
        Op::Create(name, value) => guest.call_create(store, name, value).await?.map(|()| Out::Unit),
        Op::Get(name) => guest.call_get(store, name).await?.map(Out::Bytes),
        Op::Delete(name) => guest.call_delete(store, name).await?.map(|()| Out::Unit),
        Op::List(prefix, after, limit) => guest.call_list(store, prefix, after, limit).await?.map(Out::Page),
    })
}

pub(crate) fn from_wit(e: wit_types::Error) -> Error {
    use wit_types::Error as W;
    match e {
        W::NotFound => Error::NotFound,
        W::AlreadyExists => Error::AlreadyExists,
        W::InvalidArgument(m) => Error::InvalidArgument(m),
        W::AccessDenied(m) => Error::AccessDenied(m),
        W::Unavailable(m) => Error::Unavailable(m),
        W::Throttled(ms) => Error::Throttled {
            retry_after: ms.map(|ms| Duration::from_millis(ms.into())),
        },
        W::Unsupported(m) => Error::Unsupported(m),
        W::Other(m) => Error::Other(m),
    }
}
