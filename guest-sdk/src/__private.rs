//! Glue between the generated WIT bindings and [`Realm`]. Used by the
//! expansion of [`crate::export_realm!`]; not part of the API.
//!
//! Every export that has a realm in scope runs inside a write-back cache over
//! the host's state (see `state::cache`): reads of the same key and the
//! call's writes cost one host call per key, and the writes reach the host
//! in one `write-batch` when the call succeeds.

use core::marker::PhantomData;

use crate::Realm;

/// The type that implements the generated `Guest` trait for a plugin `P`.
#[derive(Debug)]
pub struct Adapter<P>(PhantomData<P>);

#[cfg(target_arch = "wasm32")]
mod wasm {
    use super::Adapter;
    use crate::Realm;
    use crate::batch::EventRef;
    use crate::bindings::Guest;
    use crate::bindings::realmhost::realm::types as wit;
    use crate::entry::run;
    use crate::error::ApplyError;
    use crate::install_panic_hook;
    use crate::state::cached_call as host_call;

    fn to_wit(e: ApplyError) -> wit::ApplyError {
        match e {
            ApplyError::Rejected(r) => wit::ApplyError::Rejected(wit::Rejection {
                code: r.code,
                message: r.message,
            }),
            ApplyError::Invalid(m) => wit::ApplyError::Invalid(m),
        }
    }

    impl<P: Realm> Guest for Adapter<P> {
        fn describe() -> wit::PluginInfo {
            install_panic_hook();
            let i = run::describe::<P>();
            wit::PluginInfo {
                realm_type: i.realm_type,
                version: i.version,
                description: i.description,
                state_version: i.state_version,
            }
        }

        fn init(realm_id: String) -> Result<(), String> {
            install_panic_hook();
            host_call(false, || run::init::<P>(&realm_id))
        }

        fn apply(event: wit::EventContext) -> Result<wit::Effects, wit::ApplyError> {
            install_panic_hook();
            let ev = EventRef {
                seq: event.seq,
                kind: &event.kind,
                payload: &event.payload,
                source: &event.source,
                source_realm: event.source_realm.as_deref(),
                timestamp_ms: event.timestamp_ms,
                source_reputation: event.source_reputation,
                origin: event.origin.as_ref().map(|o| crate::batch::Origin {
                    source_realm: &o.source_realm,
                    source_type: &o.source_type,
                    message_id: &o.message_id,
                    chain_id: &o.chain_id,
                    hop: o.hop,
                    correlation: o.correlation.as_deref(),
                }),
                reply: event.reply.as_ref().map(|r| crate::batch::ReplyRef {
                    message_id: &r.message_id,
                    correlation: r.correlation.as_deref(),
                    outcome: match &r.outcome {
                        wit::Outcome::Accepted => crate::batch::Outcome::Accepted,
                        wit::Outcome::Rejected(j) => crate::batch::Outcome::Rejected {
                            code: &j.code,
                            message: &j.message,
                        },
                        wit::Outcome::Invalid(m) => crate::batch::Outcome::Invalid(m),
                        wit::Outcome::Expired => crate::batch::Outcome::Expired,
                        wit::Outcome::DeadLettered(m) => crate::batch::Outcome::DeadLettered(m),
                    },
                }),
            };
            host_call(false, || run::apply::<P>(&ev))
                .map(crate::message::to_wit)
                .map_err(to_wit)
        }

        fn apply_batch(events: Vec<u8>) -> Result<(), wit::BatchError> {
            install_panic_hook();
            host_call(false, || run::apply_batch::<P>(&events)).map_err(|e| wit::BatchError {
                index: e.index,
                error: to_wit(e.error),
            })
        }

        fn migrate(from_state_version: u32) -> Result<(), String> {
            install_panic_hook();
            host_call(false, || run::migrate::<P>(from_state_version))
        }

        fn encode_event(kind: String, json: String) -> Result<Vec<u8>, String> {
            install_panic_hook();
            run::encode_event::<P>(&kind, &json)
        }

        fn decode_event(kind: String, payload: Vec<u8>) -> Result<String, String> {
            install_panic_hook();
            run::event_json::<P>(&kind, &payload)
        }

        fn query(request: String) -> Result<String, String> {
            install_panic_hook();
            host_call(true, || run::query::<P>(&request))
        }
    }
}

// Keep the bound visible on native targets too, so misuse fails everywhere.
impl<P: Realm> Adapter<P> {
    #[doc(hidden)]
    pub fn realm_type() -> &'static str {
        P::REALM_TYPE
    }
}
