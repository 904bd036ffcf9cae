//! Host-side bindings generated from the WIT contract, one module per
//! supported version, kept private so the rest of the crate sees plain Rust
//! types.
//!
//! - [`v3`]: `wit/realm.wit`, `realmhost:realm@0.3.0` (messages).
//! - [`v2`]: `wit/compat/realm-0.2.wit`, `realmhost:realm@0.2.0`. Uploaded
//!   plugins are stored and must stay loadable across a host upgrade, so a
//!   component built against 0.2 is still served: it sends no messages and
//!   sees no origin.
//!
//! [`Logic`] and [`LogicPre`] hide which one a component implements.

/// Contract 0.3.0.
pub(crate) mod v3 {
    wasmtime::component::bindgen!({
        path: "../wit/realm.wit",
        world: "realm-logic",
        // Borrowed argument types: the host passes `&str`/`&[u8]` views of its
        // own event record instead of cloning it for every call.
        ownership: Borrowing { duplicate_if_necessary: true },
        // A state operation past a realm's limit stops the call: the host
        // function returns an error, which traps the guest.
        imports: {
            "realmhost:realm/state": trappable,
        },
    });
}

/// Contract 0.2.0, for components built before messages.
pub(crate) mod v2 {
    wasmtime::component::bindgen!({
        path: "../wit/compat/realm-0.2.wit",
        world: "realm-logic",
        ownership: Borrowing { duplicate_if_necessary: true },
        imports: {
            "realmhost:realm/state": trappable,
        },
    });
}

pub(crate) use v3::realmhost::realm::types::{
    ApplyError, BatchError, Effects, EventContext, MessageOrigin, Outcome as WitOutcome, Outgoing,
    PluginInfo, RejectionParam, ReplyContext, ReplyWanted,
};

/// The contract version a component implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Contract {
    /// `realmhost:realm@0.2.0`.
    V2,
    /// `realmhost:realm@0.3.0`.
    V3,
}

/// A pre-linked component of either contract version.
#[derive(Clone)]
pub(crate) enum LogicPre<T: 'static> {
    V2(v2::RealmLogicPre<T>),
    V3(v3::RealmLogicPre<T>),
}

/// An instance of either contract version.
pub(crate) enum Logic {
    V2(v2::RealmLogic),
    V3(v3::RealmLogic),
}

impl<T: 'static> LogicPre<T> {
    pub(crate) fn contract(&self) -> Contract {
        match self {
            Self::V2(_) => Contract::V2,
            Self::V3(_) => Contract::V3,
        }
    }

    pub(crate) fn instantiate(&self, store: &mut wasmtime::Store<T>) -> wasmtime::Result<Logic> {
        Ok(match self {
            Self::V2(p) => Logic::V2(p.instantiate(store)?),
            Self::V3(p) => Logic::V3(p.instantiate(store)?),
        })
    }
}

/// Converts the 0.2 types the calls below return into their 0.3 twins.
mod from_v2 {
    use super::v2::realmhost::realm::types as old;
    use super::v3::realmhost::realm::types as new;

    pub(super) fn apply_error(e: old::ApplyError) -> new::ApplyError {
        match e {
            old::ApplyError::Rejected(r) => new::ApplyError::Rejected(new::RejectionResult {
                code: r.code,
                message: r.message,
            }),
            old::ApplyError::Invalid(m) => new::ApplyError::Invalid(m),
        }
    }

    pub(super) fn plugin_info(i: old::PluginInfo) -> new::PluginInfo {
        new::PluginInfo {
            realm_type: i.realm_type,
            version: i.version,
            description: i.description,
            state_version: i.state_version,
        }
    }
}

impl Logic {
    pub(crate) fn call_describe<S: wasmtime::AsContextMut>(
        &self,
        store: S,
    ) -> wasmtime::Result<PluginInfo> {
        match self {
            Self::V2(b) => b.call_describe(store).map(from_v2::plugin_info),
            Self::V3(b) => b.call_describe(store),
        }
    }

    pub(crate) fn call_init<S: wasmtime::AsContextMut>(
        &self,
        store: S,
        realm: &str,
    ) -> wasmtime::Result<Result<(), String>> {
        match self {
            Self::V2(b) => b.call_init(store, realm),
            Self::V3(b) => b.call_init(store, realm),
        }
    }

    /// `apply`; a 0.2 component is called without the 0.3 fields and sends
    /// nothing.
    pub(crate) fn call_apply<S: wasmtime::AsContextMut>(
        &self,
        store: S,
        event: EventContext<'_>,
    ) -> wasmtime::Result<Result<Effects, ApplyError>> {
        match self {
            Self::V2(b) => {
                let old = v2::realmhost::realm::types::EventContext {
                    seq: event.seq,
                    kind: event.kind,
                    payload: event.payload,
                    source: event.source,
                    source_realm: event.source_realm,
                    timestamp_ms: event.timestamp_ms,
                    source_reputation: event.source_reputation,
                };
                Ok(b.call_apply(store, old)?
                    .map(|()| Effects {
                        messages: Vec::new(),
                    })
                    .map_err(from_v2::apply_error))
            }
            Self::V3(b) => b.call_apply(store, event),
        }
    }

    pub(crate) fn call_apply_batch<S: wasmtime::AsContextMut>(
        &self,
        store: S,
        batch: &[u8],
    ) -> wasmtime::Result<Result<(), BatchError>> {
        match self {
            Self::V2(b) => Ok(b.call_apply_batch(store, batch)?.map_err(|e| BatchError {
                index: e.index,
                error: from_v2::apply_error(e.error),
            })),
            Self::V3(b) => b.call_apply_batch(store, batch),
        }
    }

    pub(crate) fn call_migrate<S: wasmtime::AsContextMut>(
        &self,
        store: S,
        from_state_version: u32,
    ) -> wasmtime::Result<Result<(), String>> {
        match self {
            Self::V2(b) => b.call_migrate(store, from_state_version),
            Self::V3(b) => b.call_migrate(store, from_state_version),
        }
    }

    pub(crate) fn call_encode_event<S: wasmtime::AsContextMut>(
        &self,
        store: S,
        kind: &str,
        json: &str,
    ) -> wasmtime::Result<Result<Vec<u8>, String>> {
        match self {
            Self::V2(b) => b.call_encode_event(store, kind, json),
            Self::V3(b) => b.call_encode_event(store, kind, json),
        }
    }

    pub(crate) fn call_decode_event<S: wasmtime::AsContextMut>(
        &self,
        store: S,
        kind: &str,
        payload: &[u8],
    ) -> wasmtime::Result<Result<String, String>> {
        match self {
            Self::V2(b) => b.call_decode_event(store, kind, payload),
            Self::V3(b) => b.call_decode_event(store, kind, payload),
        }
    }

    pub(crate) fn call_query<S: wasmtime::AsContextMut>(
        &self,
        store: S,
        request: &str,
    ) -> wasmtime::Result<Result<String, String>> {
        match self {
            Self::V2(b) => b.call_query(store, request),
            Self::V3(b) => b.call_query(store, request),
        }
    }
}
