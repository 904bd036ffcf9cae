//! The entry points behind every export, as plain Rust functions.
//!
//! The component exports (see [`crate::export_realm!`]) are thin wrappers over
//! these functions. They are public so that a plugin's logic can be driven
//! natively with exactly the bytes the host would send, in unit tests and in
//! benchmarks that measure the sandbox's overhead against native code.

use crate::batch::{BatchReader, EventRef};
use crate::{Event, RealmLogic, Rejection};

/// Who a plugin is (mirrors the WIT `plugin-info`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginInfo {
    /// Realm type.
    pub realm_type: String,
    /// Semantic version.
    pub version: String,
    /// One line for operators.
    pub description: String,
}

/// Why `apply` produced no state (mirrors the WIT `apply-error`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyError {
    /// The logic refused the event.
    Rejected(Rejection),
    /// The state or payload could not be decoded.
    Invalid(String),
}

/// Why `apply_batch` stopped (mirrors the WIT `batch-error`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchError {
    /// Index of the failing event in the batch.
    pub index: u32,
    /// What went wrong with it.
    pub error: ApplyError,
}

/// Plugin identity.
pub fn describe<P: RealmLogic>() -> PluginInfo {
    PluginInfo {
        realm_type: P::REALM_TYPE.to_owned(),
        version: P::VERSION.to_owned(),
        description: P::DESCRIPTION.to_owned(),
    }
}

/// Encode a state in the current state version.
pub fn encode_state<P: RealmLogic>(state: &P::State) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.push(P::STATE_VERSION);
    match postcard::to_extend(state, out) {
        Ok(out) => out,
        Err(_) => unreachable!("postcard cannot fail writing to a Vec"),
    }
}

/// Decode a state that must be in the current state version.
pub fn decode_state<P: RealmLogic>(bytes: &[u8]) -> Result<P::State, String> {
    match bytes.split_first() {
        Some((&v, body)) if v == P::STATE_VERSION => {
            postcard::from_bytes(body).map_err(|e| format!("undecodable state: {e}"))
        }
        Some((&v, _)) => Err(format!(
            "state version {v} handed to apply; expected {} (old states go through restore)",
            P::STATE_VERSION
        )),
        None => Err("empty state".to_owned()),
    }
}

/// `init`: the encoded state of a realm with no events.
pub fn init<P: RealmLogic>(realm_id: &str) -> Vec<u8> {
    encode_state::<P>(&P::init(realm_id))
}

fn decode_event<'a, P: RealmLogic>(ev: &EventRef<'a>) -> Result<Event<'a, P::Event>, ApplyError> {
    let payload = postcard::from_bytes::<P::Event>(ev.payload).map_err(|e| {
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

/// `apply`: one event on an encoded state.
pub fn apply<P: RealmLogic>(state: &[u8], event: &EventRef<'_>) -> Result<Vec<u8>, ApplyError> {
    let mut s = decode_state::<P>(state).map_err(ApplyError::Invalid)?;
    let ev = decode_event::<P>(event)?;
    P::apply(&mut s, ev).map_err(ApplyError::Rejected)?;
    Ok(encode_state::<P>(&s))
}

/// `apply-batch`: decode the state once, apply every event of the packed
/// batch in order, encode once. All or nothing.
pub fn apply_batch<P: RealmLogic>(state: &[u8], batch: &[u8]) -> Result<Vec<u8>, BatchError> {
    let at = |index: u32, error: ApplyError| BatchError { index, error };
    let mut s = decode_state::<P>(state).map_err(|e| at(0, ApplyError::Invalid(e)))?;
    let reader = BatchReader::new(batch).map_err(|e| at(0, ApplyError::Invalid(e.to_string())))?;
    for (index, item) in (0u32..).zip(reader) {
        let raw = item.map_err(|e| at(index, ApplyError::Invalid(e.to_string())))?;
        let ev = decode_event::<P>(&raw).map_err(|e| at(index, e))?;
        P::apply(&mut s, ev).map_err(|r| at(index, ApplyError::Rejected(r)))?;
    }
    Ok(encode_state::<P>(&s))
}

/// `restore`: read a snapshot of this or an older state version and return
/// it in the current encoding.
pub fn restore<P: RealmLogic>(snapshot: &[u8]) -> Result<Vec<u8>, String> {
    let (&v, body) = snapshot.split_first().ok_or("empty snapshot")?;
    let state = if v == P::STATE_VERSION {
        postcard::from_bytes(body).map_err(|e| format!("undecodable snapshot: {e}"))?
    } else if v < P::STATE_VERSION {
        P::migrate(v, body)?
    } else {
        return Err(format!(
            "snapshot has state version {v}, newer than this plugin's {}",
            P::STATE_VERSION
        ));
    };
    Ok(encode_state::<P>(&state))
}

/// `encode-event`: JSON event to payload bytes.
pub fn encode_event<P: RealmLogic>(kind: &str, json: &str) -> Result<Vec<u8>, String> {
    let ev = P::event_from_json(kind, json)?;
    Ok(crate::encode_payload(&ev))
}

/// `query`: a read-only JSON view of an encoded state.
pub fn query<P: RealmLogic>(state: &[u8], request: &str) -> Result<String, String> {
    let s = decode_state::<P>(state)?;
    P::query(&s, request)
}

/// Decode postcard bytes with a readable error (for [`RealmLogic::migrate`]).
pub fn decode_postcard<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    postcard::from_bytes(bytes).map_err(|e| format!("undecodable bytes: {e}"))
}

/// Parse JSON with a readable error (for [`RealmLogic::query`]).
pub fn decode_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, String> {
    serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))
}
