//! `counter`: the smallest useful realm type, and the template to copy.
//!
//! A realm holds one signed number. Events add to it or reset it; an addition
//! that would overflow is rejected, not wrapped.
//!
//! It uses whole-state mode ([`RealmLogic`]): the whole state is one small
//! serde value that the SDK loads and saves around each event. Realms that
//! grow (accounts, members, ...) keep one entry per item instead; see the
//! `ledger` plugin.
//!
//! To start a new plugin of your own, outside this repository, run
//! `realmhost new plugin NAME`: it writes a standalone crate (see
//! `docs/plugin-authors.md`). To add an example to this workspace instead:
//! copy this crate, rename it in `Cargo.toml`, change `REALM_TYPE`, the state
//! and the events, and add the crate to the list in
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
    use realmhost_guest::{ApplyError, EventRef, MemoryState, encode_payload, entry};

    fn run(ops: &[Op]) -> Result<State, ApplyError> {
        let mut realm = MemoryState::new();
        entry::init::<Counter>(&mut realm, "c").unwrap();
        for (i, op) in ops.iter().enumerate() {
            let payload = encode_payload(op);
            entry::apply::<Counter>(
                &mut realm,
                &EventRef::new(i as u64 + 1, "op", &payload, "t"),
            )?;
        }
        Ok(entry::whole_state::<Counter>(&realm).unwrap())
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
    fn json_events_and_queries() {
        let bytes = entry::encode_event::<Counter>("add", r#"{"add":3}"#).unwrap();
        assert_eq!(bytes, encode_payload(&Op::Add(3)));
        assert!(entry::encode_event::<Counter>("add", "{").is_err());
        let mut realm = MemoryState::new();
        entry::init::<Counter>(&mut realm, "c").unwrap();
        entry::apply::<Counter>(&mut realm, &EventRef::new(1, "op", &bytes, "t")).unwrap();
        assert_eq!(
            entry::query::<Counter>(&realm, "").unwrap(),
            r#"{"value":3,"events":1}"#
        );
    }

    #[test]
    fn reads_states_written_under_contract_0_1() {
        // 0.1 kept `[state version: u8] ++ postcard(State)`; whole-state mode
        // stores the same bytes under one key.
        let mut old = vec![1u8];
        old.extend(encode_payload(&State {
            value: -4,
            events: 9,
        }));
        let mut realm = MemoryState::new();
        realm.insert(realmhost_guest::whole::STATE_KEY, old);
        let p = encode_payload(&Op::Add(1));
        entry::apply::<Counter>(&mut realm, &EventRef::new(10, "op", &p, "t")).unwrap();
        assert_eq!(
            entry::whole_state::<Counter>(&realm).unwrap(),
            State {
                value: -3,
                events: 10
            }
        );
    }
}
