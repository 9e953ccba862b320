//! One instance of a plugin, and the typed calls into it: one type per operation of
//! the WIT interface, each knowing its name and what it returns.

use std::future::Future;

use super::*;

pub(crate) struct Instance {
    pub(crate) store: Store<HostState>,
    pub(crate) plugin: bindings::KeystorePlugin,
    pub(crate) generation: u64,
}

/// What a call into a plugin returns: a trap (the outer error) or the plugin's answer.
pub(crate) type Answer<T> = wasmtime::Result<Result<T, wit_types::Error>>;

/// One operation of the `store` interface.
pub(crate) trait Call: Sync {
    /// What the plugin returns on success.
    type Output: Send;
    /// The operation's name in the WIT interface, for logs and errors.
    const NAME: &'static str;
    /// Calls the operation on an instance.
    fn invoke(&self, inst: &mut Instance) -> impl Future<Output = Answer<Self::Output>> + Send;
}

/// `info`: what the component says about itself.
pub(crate) struct Info;
/// `open`: checks settings and grants; the first call of every instance.
pub(crate) struct Open;
/// `status`: is the backend reachable.
pub(crate) struct Health;
/// `create`: stores a record under a name that must not exist.
pub(crate) struct Create<'a>(pub(crate) &'a str, pub(crate) &'a [u8]);
/// `get`: the record under a name.
pub(crate) struct Get<'a>(pub(crate) &'a str);
/// `delete`: removes a name.
pub(crate) struct Delete<'a>(pub(crate) &'a str);
/// `list`: a page of names with a prefix, after a cursor.
pub(crate) struct List<'a>(pub(crate) &'a str, pub(crate) Option<&'a str>, pub(crate) u32);

fn guest(inst: &mut Instance) -> (&wit::Guest, &mut Store<HostState>) {
    (inst.plugin.keyhost_keystore_store(), &mut inst.store)
}

impl Call for Info {
    type Output = wit_types::PluginInfo;
    const NAME: &'static str = "info";
    async fn invoke(&self, inst: &mut Instance) -> Answer<Self::Output> {
        let (guest, store) = guest(inst);
        guest.call_info(store).await.map(Ok)
    }
}

impl Call for Open {
    type Output = ();
    const NAME: &'static str = "open";
    async fn invoke(&self, inst: &mut Instance) -> Answer<()> {
        let (guest, store) = guest(inst);
        guest.call_open(store).await
    }
}

impl Call for Health {
    type Output = wit_types::Health;
    const NAME: &'static str = "status";
    async fn invoke(&self, inst: &mut Instance) -> Answer<Self::Output> {
        let (guest, store) = guest(inst);
        guest.call_status(store).await
    }
}

impl Call for Create<'_> {
    type Output = ();
    const NAME: &'static str = "create";
    async fn invoke(&self, inst: &mut Instance) -> Answer<()> {
        let (guest, store) = guest(inst);
        guest.call_create(store, self.0, self.1).await
    }
}

impl Call for Get<'_> {
    type Output = Vec<u8>;
    const NAME: &'static str = "get";
    async fn invoke(&self, inst: &mut Instance) -> Answer<Vec<u8>> {
        let (guest, store) = guest(inst);
        guest.call_get(store, self.0).await
    }
}

impl Call for Delete<'_> {
    type Output = ();
    const NAME: &'static str = "delete";
    async fn invoke(&self, inst: &mut Instance) -> Answer<()> {
        let (guest, store) = guest(inst);
        guest.call_delete(store, self.0).await
    }
}

impl Call for List<'_> {
    type Output = wit_types::Page;
    const NAME: &'static str = "list";
    async fn invoke(&self, inst: &mut Instance) -> Answer<Self::Output> {
        let (guest, store) = guest(inst);
        guest.call_list(store, self.0, self.1, self.2).await
    }
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
