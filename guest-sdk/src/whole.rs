//! Whole-state mode: the realm's state is one serde value, stored under one
//! key.
//!
//! For small realms, [`RealmLogic`] is the simplest way to write a plugin:
//! `apply` gets `&mut State` and the SDK loads and saves it around each
//! event. Every [`RealmLogic`] is a [`Realm`] (a blanket implementation), so
//! it is exported by [`crate::export_realm!`] and driven by [`crate::entry`]
//! like any other plugin.
//!
//! The state lives under [`STATE_KEY`] as
//! `varint(state version) ++ postcard(State)` (the varint is postcard's
//! LEB128 for `u32`). For state versions below 128 this is byte for byte the
//! state encoding of contract 0.1 (`[version: u8] ++ postcard(State)`), so a
//! 0.1 state placed under [`STATE_KEY`] is read as is, and a plugin that moves
//! from whole-state mode to keyed entries reads its old layout with [`load_raw`]
//! in its [`Realm::migrate`].
//!
//! A batch of events loads the state once and saves it once.
//!
//! [`RealmLogic::apply`] sends messages with [`crate::send`] like any
//! `apply`, and replies arrive in [`RealmLogic::on_reply`] with the state.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::batch::BatchReader;
use crate::error::{ApplyError, BatchError, StateError};
use crate::message::Reply;
use crate::{Event, Realm, Rejection, entry, state};

/// The key under which whole-state mode keeps the state.
pub const STATE_KEY: &[u8] = b"state";

const NAMESPACE: &str = "state";

/// The logic of a realm type whose whole state is one serde value. Implement
/// it, then call [`crate::export_realm!`].
///
/// Every event costs the size of the whole state (it is decoded and encoded
/// around each call), so use it for realms that stay small; larger ones
/// implement [`Realm`] with [`crate::Map`] entries.
pub trait RealmLogic: 'static {
    /// The realm type this plugin implements (the registry key), e.g. `counter`.
    const REALM_TYPE: &'static str;
    /// Semantic version of the logic.
    const VERSION: &'static str;
    /// One line for operators.
    const DESCRIPTION: &'static str;
    /// Version of the state encoding. Bump it when `State` changes shape and
    /// handle the older versions in [`RealmLogic::migrate`].
    const STATE_VERSION: u32 = 1;

    /// The realm state.
    type State: Serialize + DeserializeOwned;
    /// The event payload.
    type Event: Serialize + DeserializeOwned;

    /// The state of a realm with no events.
    fn init(realm_id: &str) -> Self::State;

    /// Apply one event. On `Err` the host keeps the previous state, so a
    /// partly mutated `state` is harmless.
    fn apply(state: &mut Self::State, event: Event<'_, Self::Event>) -> Result<(), Rejection>;

    /// Handle a reply to a message this realm sent (see
    /// [`Realm::on_reply`]): called instead of [`RealmLogic::apply`] for
    /// every event that carries one. The default ignores it.
    fn on_reply(state: &mut Self::State, reply: Reply<'_>) -> Result<(), Rejection> {
        let _ = (state, reply);
        Ok(())
    }

    /// Read a state written with an older [`RealmLogic::STATE_VERSION`]
    /// (`bytes` is its postcard encoding). The default knows no older versions.
    fn migrate(version: u32, bytes: &[u8]) -> Result<Self::State, String> {
        let _ = bytes;
        Err(format!(
            "{} {} cannot migrate a realm from state version {version} to state version {}",
            Self::REALM_TYPE,
            Self::VERSION,
            Self::STATE_VERSION
        ))
    }

    /// Parse an event given as JSON (from the HTTP API or the CLI). The default
    /// reads the serde JSON form of `Event` and ignores `kind`.
    fn event_from_json(kind: &str, json: &str) -> Result<Self::Event, String> {
        let _ = kind;
        serde_json::from_str(json).map_err(|e| format!("invalid event JSON: {e}"))
    }

    /// A read-only view of the state. The default returns the whole state as
    /// JSON and ignores the request.
    fn query(state: &Self::State, request: &str) -> Result<String, String> {
        let _ = request;
        serde_json::to_string(state).map_err(|e| e.to_string())
    }
}

impl<T: RealmLogic> Realm for T {
    const REALM_TYPE: &'static str = <T as RealmLogic>::REALM_TYPE;
    const VERSION: &'static str = <T as RealmLogic>::VERSION;
    const DESCRIPTION: &'static str = <T as RealmLogic>::DESCRIPTION;
    const STATE_VERSION: u32 = <T as RealmLogic>::STATE_VERSION;
    type Event = <T as RealmLogic>::Event;

    fn init(realm_id: &str) -> Result<(), String> {
        save(
            <T as RealmLogic>::STATE_VERSION,
            &<T as RealmLogic>::init(realm_id),
        )?;
        Ok(())
    }

    fn apply(event: Event<'_, Self::Event>) -> Result<(), ApplyError> {
        let mut s = load::<T>().map_err(ApplyError::Invalid)?;
        <T as RealmLogic>::apply(&mut s, event)?;
        save(<T as RealmLogic>::STATE_VERSION, &s)?;
        Ok(())
    }

    fn on_reply(reply: Reply<'_>) -> Result<(), ApplyError> {
        let mut s = load::<T>().map_err(ApplyError::Invalid)?;
        <T as RealmLogic>::on_reply(&mut s, reply)?;
        save(<T as RealmLogic>::STATE_VERSION, &s)?;
        Ok(())
    }

    fn apply_batch(batch: BatchReader<'_>) -> Result<(), BatchError> {
        let mut s = load::<T>().map_err(|e| BatchError {
            index: 0,
            error: ApplyError::Invalid(e),
        })?;
        let mut last = 0;
        for (index, item) in (0u32..).zip(batch) {
            let at = |error| BatchError { index, error };
            let raw = item.map_err(|e| at(ApplyError::Invalid(e.to_string())))?;
            match Reply::from_event(&raw) {
                Some(reply) => <T as RealmLogic>::on_reply(&mut s, reply),
                None => {
                    let event = entry::decode_event::<T>(&raw).map_err(at)?;
                    <T as RealmLogic>::apply(&mut s, event)
                }
            }
            .map_err(|r| at(r.into()))?;
            last = index;
        }
        save(<T as RealmLogic>::STATE_VERSION, &s).map_err(|e| BatchError {
            index: last,
            error: e.into(),
        })
    }

    fn migrate(from_state_version: u32) -> Result<(), String> {
        let current = <T as RealmLogic>::STATE_VERSION;
        let (version, body) = load_raw()?.ok_or_else(|| {
            format!("no state entry to migrate from state version {from_state_version}")
        })?;
        if version == current {
            return Ok(());
        }
        if version > current {
            return Err(newer(version, current));
        }
        let s = <T as RealmLogic>::migrate(version, &body)?;
        save(current, &s)?;
        Ok(())
    }

    fn event_from_json(kind: &str, json: &str) -> Result<Self::Event, String> {
        <T as RealmLogic>::event_from_json(kind, json)
    }

    fn query(request: &str) -> Result<String, String> {
        let s = load::<T>()?;
        <T as RealmLogic>::query(&s, request)
    }
}

fn newer(version: u32, current: u32) -> String {
    format!("the state has state version {version}, newer than this plugin's {current}")
}

/// The stored state's version and its postcard body, if the realm has one.
pub fn load_raw() -> Result<Option<(u32, Vec<u8>)>, StateError> {
    let Some(bytes) = state::get(STATE_KEY) else {
        return Ok(None);
    };
    let (version, body) =
        postcard::take_from_bytes::<u32>(&bytes).map_err(|e| StateError::Decode {
            namespace: NAMESPACE,
            key: Vec::new(),
            message: format!("no state version: {e}"),
        })?;
    Ok(Some((version, body.to_vec())))
}

/// Encode a state as whole-state mode stores it.
pub fn encode<S: Serialize>(version: u32, state: &S) -> Result<Vec<u8>, StateError> {
    let err = |e: postcard::Error| StateError::Encode {
        namespace: NAMESPACE,
        key: Vec::new(),
        message: e.to_string(),
    };
    let out = postcard::to_extend(&version, Vec::with_capacity(64)).map_err(err)?;
    postcard::to_extend(state, out).map_err(err)
}

/// Store a state under [`STATE_KEY`] with its version.
pub fn save<S: Serialize>(version: u32, state: &S) -> Result<(), StateError> {
    state::set_owned(STATE_KEY, encode(version, state)?);
    Ok(())
}

/// Remove the whole-state entry (after migrating to keyed entries); returns
/// whether there was one.
pub fn remove() -> bool {
    state::delete(STATE_KEY)
}

/// Load the state of a [`RealmLogic`] in its current state version.
pub fn load<T: RealmLogic>() -> Result<T::State, String> {
    let current = T::STATE_VERSION;
    match load_raw()? {
        None => Err("the realm has no state entry (was it initialized?)".to_owned()),
        Some((v, body)) if v == current => postcard::from_bytes(&body).map_err(|e| {
            StateError::Decode {
                namespace: NAMESPACE,
                key: Vec::new(),
                message: e.to_string(),
            }
            .to_string()
        }),
        Some((v, _)) if v > current => Err(newer(v, current)),
        Some((v, _)) => Err(format!(
            "the state has state version {v}; this plugin reads {current} (older states go through migrate)"
        )),
    }
}
