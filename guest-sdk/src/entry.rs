//! The entry points behind every export, as plain Rust functions.
//!
//! The component exports (see [`crate::export_realm!`]) run the same code as
//! these drivers. The drivers are public so that a plugin's logic can be run
//! natively on a [`MemoryState`] with exactly the bytes and the semantics of
//! the host, in unit tests and in benchmarks that measure the sandbox's
//! overhead against native code:
//!
//! - the realm is in scope for the duration of the call, and only then;
//! - a call's writes reach the [`MemoryState`] only if it succeeds (an
//!   `Err`, or a panic, keeps nothing), like the host's buffered writes;
//! - [`query`] is read-only (a write panics, as it traps in the host);
//! - [`describe`] and [`encode_event`] run with no realm in scope.
//!
//! Host limits (entry sizes, entry counts, fuel) are not modelled.

use crate::batch::{BatchReader, EventRef};
use crate::error::{ApplyError, BatchError};
use crate::state::{Frame, FrameGuard, MemoryState};
use crate::{Event, Realm};

/// Who a plugin is (mirrors the WIT `plugin-info`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginInfo {
    /// Realm type.
    pub realm_type: String,
    /// Semantic version.
    pub version: String,
    /// One line for operators.
    pub description: String,
    /// Version of the layout of the plugin's entries.
    pub state_version: u32,
}

/// `describe`: plugin identity.
pub fn describe<P: Realm>() -> PluginInfo {
    let _closed = FrameGuard::install(Frame::Closed);
    run::describe::<P>()
}

/// `init`: write the initial entries of a new realm into `state`.
pub fn init<P: Realm>(state: &mut MemoryState, realm_id: &str) -> Result<(), String> {
    state.transact(|| run::init::<P>(realm_id))
}

/// `apply`: one event. On `Err` the state is unchanged.
pub fn apply<P: Realm>(state: &mut MemoryState, event: &EventRef<'_>) -> Result<(), ApplyError> {
    state.transact(|| run::apply::<P>(event))
}

/// `apply-batch`: every event of a packed batch ([`crate::batch`]) in order.
/// All or nothing: on `Err` the state is unchanged.
pub fn apply_batch<P: Realm>(state: &mut MemoryState, batch: &[u8]) -> Result<(), BatchError> {
    state.transact(|| run::apply_batch::<P>(batch))
}

/// `migrate`: bring a realm written with `from_state_version` to the
/// plugin's state version. The same version is a no-op; a newer one is an
/// error. On `Err` the state is unchanged.
pub fn migrate<P: Realm>(state: &mut MemoryState, from_state_version: u32) -> Result<(), String> {
    state.transact(|| run::migrate::<P>(from_state_version))
}

/// `query`: a read-only view of the realm.
pub fn query<P: Realm>(state: &MemoryState, request: &str) -> Result<String, String> {
    state.read(|| run::query::<P>(request))
}

/// `encode-event`: JSON event to payload bytes (no realm in scope).
pub fn encode_event<P: Realm>(kind: &str, json: &str) -> Result<Vec<u8>, String> {
    let _closed = FrameGuard::install(Frame::Closed);
    run::encode_event::<P>(kind, json)
}

/// `decode-event`: a stored payload as JSON, for operators (no realm in
/// scope).
pub fn event_json<P: Realm>(kind: &str, payload: &[u8]) -> Result<String, String> {
    let _closed = FrameGuard::install(Frame::Closed);
    run::event_json::<P>(kind, payload)
}

/// The state of a whole-state plugin ([`crate::RealmLogic`]), decoded from
/// `state`: what its tests inspect.
pub fn whole_state<P: crate::RealmLogic>(state: &MemoryState) -> Result<P::State, String> {
    state.read(crate::whole::load::<P>)
}

/// Decode an event's payload and pair it with its context.
pub fn decode_event<'a, P: Realm + ?Sized>(
    ev: &EventRef<'a>,
) -> Result<Event<'a, P::Event>, ApplyError> {
    let payload = crate::event::decode::<P>(ev.payload).map_err(|e| {
        ApplyError::Invalid(format!("undecodable payload of event {}: {e}", ev.seq))
    })?;
    Ok(Event {
        seq: ev.seq,
        kind: ev.kind,
        payload,
        source: ev.source,
        source_realm: ev.source_realm,
        timestamp_ms: ev.timestamp_ms,
        source_reputation: ev.source_reputation,
    })
}

/// Decode postcard bytes with a readable error (for migrations).
pub fn decode_postcard<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    postcard::from_bytes(bytes).map_err(|e| format!("undecodable bytes: {e}"))
}

/// Parse JSON with a readable error (for [`Realm::query`]).
pub fn decode_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, String> {
    serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))
}

/// The calls themselves, on whatever realm is in scope: the native drivers
/// above install a [`MemoryState`] first, the component exports run them
/// against the host.
pub(crate) mod run {
    use super::*;

    pub(crate) fn describe<P: Realm>() -> PluginInfo {
        PluginInfo {
            realm_type: P::REALM_TYPE.to_owned(),
            version: P::VERSION.to_owned(),
            description: P::DESCRIPTION.to_owned(),
            state_version: P::STATE_VERSION,
        }
    }

    pub(crate) fn init<P: Realm>(realm_id: &str) -> Result<(), String> {
        P::init(realm_id)
    }

    pub(crate) fn apply<P: Realm>(event: &EventRef<'_>) -> Result<(), ApplyError> {
        P::apply(decode_event::<P>(event)?)
    }

    pub(crate) fn apply_batch<P: Realm>(batch: &[u8]) -> Result<(), BatchError> {
        let reader = BatchReader::new(batch).map_err(|e| BatchError {
            index: 0,
            error: ApplyError::Invalid(e.to_string()),
        })?;
        P::apply_batch(reader)
    }

    pub(crate) fn migrate<P: Realm>(from: u32) -> Result<(), String> {
        let current = P::STATE_VERSION;
        if from == current {
            return Ok(());
        }
        if from > current {
            return Err(format!(
                "the realm was written with state version {from}, newer than {} {}'s state version {current}",
                P::REALM_TYPE,
                P::VERSION
            ));
        }
        P::migrate(from)
    }

    pub(crate) fn query<P: Realm>(request: &str) -> Result<String, String> {
        P::query(request)
    }

    pub(crate) fn encode_event<P: Realm>(kind: &str, json: &str) -> Result<Vec<u8>, String> {
        let ev = P::event_from_json(kind, json)?;
        Ok(crate::event::encode::<P>(&ev))
    }

    pub(crate) fn event_json<P: Realm>(kind: &str, payload: &[u8]) -> Result<String, String> {
        let ev = crate::event::decode::<P>(payload)?;
        P::event_to_json(kind, &ev)
    }
}
