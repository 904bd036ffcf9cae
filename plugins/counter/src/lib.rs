//! `counter`: the smallest useful realm type, and the template to copy.
//!
//! A realm holds one signed number. Events add to it or reset it; an addition
//! that would overflow is rejected, not wrapped.
//!
//! To start a new plugin: copy this crate, rename it in `Cargo.toml`, change
//! `REALM_TYPE`, the state and the events, and add the crate to the list in
//! `plugins/artifacts/build.rs` so the workspace builds its component.

use realmhost_guest::{Event, RealmLogic, Rejection, export_realm};
use serde::{Deserialize, Serialize};

/// The `counter` realm type.
#[derive(Debug)]
pub struct Counter;

/// A counter realm's state.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Current value.
    pub value: i64,
    /// Number of events applied.
    pub events: u64,
}

/// What can happen to a counter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Add a (possibly negative) amount.
    Add(i64),
    /// Back to zero.
    Reset,
}

impl RealmLogic for Counter {
    const REALM_TYPE: &'static str = "counter";
    const VERSION: &'static str = "1.0.0";
    const DESCRIPTION: &'static str = "A signed counter; rejects overflow";
    type State = State;
    type Event = Op;

    fn init(_realm_id: &str) -> State {
        State::default()
    }

    fn apply(state: &mut State, event: Event<'_, Op>) -> Result<(), Rejection> {
        match event.payload {
            Op::Add(n) => {
                state.value = state.value.checked_add(n).ok_or_else(|| {
                    Rejection::new("overflow", format!("{} + {n} overflows", state.value))
                })?;
            }
            Op::Reset => state.value = 0,
        }
        state.events += 1;
        Ok(())
    }
}

export_realm!(Counter);

#[cfg(test)]
mod tests {
    use super::*;
    use realmhost_guest::{ApplyError, EventRef, encode_payload, entry};

    fn run(ops: &[Op]) -> Result<State, ApplyError> {
        let mut state = entry::init::<Counter>("c");
        for (i, op) in ops.iter().enumerate() {
            let payload = encode_payload(op);
            state =
                entry::apply::<Counter>(&state, &EventRef::new(i as u64 + 1, "op", &payload, "t"))?;
        }
        Ok(entry::decode_state::<Counter>(&state).unwrap())
    }

    #[test]
    fn adds_and_resets() {
        let s = run(&[Op::Add(5), Op::Add(-2), Op::Reset, Op::Add(7)]).unwrap();
        assert_eq!(
            s,
            State {
                value: 7,
                events: 4
            }
        );
    }

    #[test]
    fn overflow_is_rejected() {
        let err = run(&[Op::Add(i64::MAX), Op::Add(1)]).unwrap_err();
        assert!(matches!(err, ApplyError::Rejected(r) if r.code == "overflow"));
    }

    #[test]
    fn json_events() {
        let bytes = entry::encode_event::<Counter>("add", r#"{"add":3}"#).unwrap();
        assert_eq!(bytes, encode_payload(&Op::Add(3)));
        assert!(entry::encode_event::<Counter>("add", "{").is_err());
    }
}
