//! Glue between the generated WIT bindings and [`RealmLogic`]. Used by the
//! expansion of [`crate::export_realm!`]; not part of the API.

use core::marker::PhantomData;

use crate::RealmLogic;

/// The type that implements the generated `Guest` trait for a plugin `P`.
#[derive(Debug)]
pub struct Adapter<P>(PhantomData<P>);

#[cfg(target_arch = "wasm32")]
mod wasm {
    use super::Adapter;
    use crate::RealmLogic;
    use crate::batch::EventRef;
    use crate::bindings::Guest;
    use crate::bindings::realmhost::realm::types as wit;
    use crate::entry::{self, ApplyError};

    use crate::install_panic_hook;

    fn to_wit(e: ApplyError) -> wit::ApplyError {
        match e {
            ApplyError::Rejected(r) => wit::ApplyError::Rejected(wit::Rejection {
                code: r.code,
                message: r.message,
            }),
            ApplyError::Invalid(m) => wit::ApplyError::Invalid(m),
        }
    }

    impl<P: RealmLogic> Guest for Adapter<P> {
        fn describe() -> wit::PluginInfo {
            install_panic_hook();
            let i = entry::describe::<P>();
            wit::PluginInfo {
                realm_type: i.realm_type,
                version: i.version,
                description: i.description,
            }
        }

        fn init(realm_id: String) -> Vec<u8> {
            install_panic_hook();
            entry::init::<P>(&realm_id)
        }

        fn apply(state: Vec<u8>, event: wit::EventContext) -> Result<Vec<u8>, wit::ApplyError> {
            install_panic_hook();
            let ev = EventRef {
                seq: event.seq,
                kind: &event.kind,
                payload: &event.payload,
                source: &event.source,
                source_realm: event.source_realm.as_deref(),
                timestamp_ms: event.timestamp_ms,
                source_reputation: event.source_reputation,
            };
            entry::apply::<P>(&state, &ev).map_err(to_wit)
        }

        fn apply_batch(state: Vec<u8>, events: Vec<u8>) -> Result<Vec<u8>, wit::BatchError> {
            install_panic_hook();
            entry::apply_batch::<P>(&state, &events).map_err(|e| wit::BatchError {
                index: e.index,
                error: to_wit(e.error),
            })
        }

        fn restore(snapshot: Vec<u8>) -> Result<Vec<u8>, String> {
            install_panic_hook();
            entry::restore::<P>(&snapshot)
        }

        fn encode_event(kind: String, json: String) -> Result<Vec<u8>, String> {
            install_panic_hook();
            entry::encode_event::<P>(&kind, &json)
        }

        fn query(state: Vec<u8>, request: String) -> Result<String, String> {
            install_panic_hook();
            entry::query::<P>(&state, &request)
        }
    }
}

// Keep the bound visible on native targets too, so misuse fails everywhere.
impl<P: RealmLogic> Adapter<P> {
    #[doc(hidden)]
    pub fn realm_type() -> &'static str {
        P::REALM_TYPE
    }
}
