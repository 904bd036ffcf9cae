//! `membership`: who belongs to a realm, how much they are trusted, and who may
//! cross over from other realms.
//!
//! This is the realm of the original design: members join and leave, trust is
//! adjusted by events, and entities arrive from other realms (a *crossing*).
//! Trust updates are damped by the reputation of the shard the event came
//! from (`delta × source_reputation`), so a toxic shard cannot pump trust.
//! A crossing is refused when the source realm is banned, when the source
//! shard's reputation is below [`MIN_CROSSING_REPUTATION`], or when the
//! arriving entity is already a member.

use std::collections::{BTreeMap, BTreeSet};

use realmhost_guest::{Event, RealmLogic, Rejection, export_realm};
use serde::{Deserialize, Serialize};

/// Crossings from shards below this reputation are refused.
pub const MIN_CROSSING_REPUTATION: f64 = 0.2;

/// Trust of a member who arrived by crossing, before damping.
pub const ARRIVAL_TRUST: f64 = 0.5;

/// The `membership` realm type.
#[derive(Debug)]
pub struct Membership;

/// One member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    /// Trust in `[0, 1]`.
    pub trust: f64,
    /// Sequence number of the event that admitted the member.
    pub since_seq: u64,
    /// Realm the member came from, when admitted by a crossing.
    pub origin: Option<String>,
}

/// A membership realm's state.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Members by name.
    pub members: BTreeMap<String, Member>,
    /// Realms whose crossings are refused.
    pub banned_realms: BTreeSet<String>,
    /// Crossings accepted so far.
    pub crossings_accepted: u64,
}

/// What can happen to a membership realm.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// A local entity joins with trust 0.5.
    Join {
        /// Member name.
        member: String,
    },
    /// A member leaves.
    Leave {
        /// Member name.
        member: String,
    },
    /// Adjust a member's trust by `delta × source_reputation`, clamped to `[0, 1]`.
    Trust {
        /// Member name.
        member: String,
        /// Requested change, in `[-1, 1]`.
        delta: f64,
    },
    /// An entity crosses over from the event's `source_realm`.
    Arrive {
        /// Name of the arriving entity.
        member: String,
    },
    /// Refuse future crossings from a realm.
    Ban {
        /// Realm id.
        realm: String,
    },
    /// Accept crossings from a realm again.
    Unban {
        /// Realm id.
        realm: String,
    },
}

fn not_member(m: &str) -> Rejection {
    Rejection::new("not_member", format!("{m:?} is not a member"))
}

impl RealmLogic for Membership {
    const REALM_TYPE: &'static str = "membership";
    const VERSION: &'static str = "1.0.0";
    const DESCRIPTION: &'static str =
        "Members, trust damped by shard reputation, refusable crossings";
    type State = State;
    type Event = Change;

    fn init(_realm_id: &str) -> State {
        State::default()
    }

    fn apply(state: &mut State, event: Event<'_, Change>) -> Result<(), Rejection> {
        match event.payload {
            Change::Join { member } => {
                if member.is_empty() || member.len() > 128 {
                    return Err(Rejection::new(
                        "bad_member",
                        "member names are 1..=128 bytes",
                    ));
                }
                if state.members.contains_key(&member) {
                    return Err(Rejection::new(
                        "already_member",
                        format!("{member:?} is already a member"),
                    ));
                }
                state.members.insert(
                    member,
                    Member {
                        trust: 0.5,
                        since_seq: event.seq,
                        origin: None,
                    },
                );
            }
            Change::Leave { member } => {
                state
                    .members
                    .remove(&member)
                    .ok_or_else(|| not_member(&member))?;
            }
            Change::Trust { member, delta } => {
                if !delta.is_finite() || !(-1.0..=1.0).contains(&delta) {
                    return Err(Rejection::new(
                        "bad_delta",
                        "trust deltas are finite and within [-1, 1]",
                    ));
                }
                let m = state
                    .members
                    .get_mut(&member)
                    .ok_or_else(|| not_member(&member))?;
                let damped = delta * event.source_reputation.clamp(0.0, 1.0);
                m.trust = (m.trust + damped).clamp(0.0, 1.0);
            }
            Change::Arrive { member } => {
                let origin = event.source_realm.ok_or_else(|| {
                    Rejection::new("not_a_crossing", "arrive needs a source realm")
                })?;
                if state.banned_realms.contains(origin) {
                    return Err(Rejection::new(
                        "realm_banned",
                        format!("crossings from {origin:?} are banned"),
                    ));
                }
                if event.source_reputation < MIN_CROSSING_REPUTATION {
                    return Err(Rejection::new(
                        "untrusted_shard",
                        format!(
                            "source shard reputation {:.2} is below {MIN_CROSSING_REPUTATION}",
                            event.source_reputation
                        ),
                    ));
                }
                if state.members.contains_key(&member) {
                    return Err(Rejection::new(
                        "already_member",
                        format!("{member:?} is already a member"),
                    ));
                }
                state.members.insert(
                    member,
                    Member {
                        trust: ARRIVAL_TRUST * event.source_reputation,
                        since_seq: event.seq,
                        origin: Some(origin.to_owned()),
                    },
                );
                state.crossings_accepted += 1;
            }
            Change::Ban { realm } => {
                state.banned_realms.insert(realm);
            }
            Change::Unban { realm } => {
                state.banned_realms.remove(&realm);
            }
        }
        Ok(())
    }
}

export_realm!(Membership);

#[cfg(test)]
mod tests {
    use super::*;
    use realmhost_guest::{ApplyError, EventRef, encode_payload, entry};

    struct Step {
        change: Change,
        source_realm: Option<&'static str>,
        reputation: f64,
    }

    fn local(change: Change) -> Step {
        Step {
            change,
            source_realm: None,
            reputation: 1.0,
        }
    }

    fn run(steps: &[Step]) -> Result<State, ApplyError> {
        let mut s = entry::init::<Membership>("m");
        for (i, st) in steps.iter().enumerate() {
            let p = encode_payload(&st.change);
            let mut ev = EventRef::new(i as u64 + 1, "change", &p, "someone");
            ev.source_realm = st.source_realm;
            ev.source_reputation = st.reputation;
            s = entry::apply::<Membership>(&s, &ev)?;
        }
        Ok(entry::decode_state::<Membership>(&s).unwrap())
    }

    fn join(m: &str) -> Change {
        Change::Join { member: m.into() }
    }

    fn rejected(r: Result<State, ApplyError>) -> String {
        match r {
            Err(ApplyError::Rejected(r)) => r.code,
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[test]
    fn join_trust_leave() {
        let s = run(&[
            local(join("a")),
            Step {
                change: Change::Trust {
                    member: "a".into(),
                    delta: 0.4,
                },
                source_realm: None,
                reputation: 0.5,
            },
        ])
        .unwrap();
        // 0.5 + 0.4 × 0.5
        assert!((s.members["a"].trust - 0.7).abs() < 1e-12);
        let s = run(&[
            local(join("a")),
            local(Change::Leave { member: "a".into() }),
        ])
        .unwrap();
        assert!(s.members.is_empty());
        assert_eq!(
            rejected(run(&[local(Change::Leave { member: "x".into() })])),
            "not_member"
        );
        assert_eq!(
            rejected(run(&[local(join("a")), local(join("a"))])),
            "already_member"
        );
    }

    #[test]
    fn trust_is_clamped_and_damped_to_nothing_at_zero_reputation() {
        let s = run(&[
            local(join("a")),
            Step {
                change: Change::Trust {
                    member: "a".into(),
                    delta: 1.0,
                },
                source_realm: None,
                reputation: 0.0,
            },
        ])
        .unwrap();
        assert_eq!(s.members["a"].trust, 0.5);
        let s = run(&[
            local(join("a")),
            local(Change::Trust {
                member: "a".into(),
                delta: 1.0,
            }),
        ])
        .unwrap();
        assert_eq!(s.members["a"].trust, 1.0);
        assert_eq!(
            rejected(run(&[
                local(join("a")),
                local(Change::Trust {
                    member: "a".into(),
                    delta: f64::NAN
                })
            ])),
            "bad_delta"
        );
    }

    #[test]
    fn crossings_are_admitted_or_refused() {
        let arrive = |rep| Step {
            change: Change::Arrive { member: "v".into() },
            source_realm: Some("other"),
            reputation: rep,
        };
        let s = run(&[arrive(0.8)]).unwrap();
        assert_eq!(s.members["v"].origin.as_deref(), Some("other"));
        assert!((s.members["v"].trust - 0.4).abs() < 1e-12);
        assert_eq!(s.crossings_accepted, 1);
        assert_eq!(rejected(run(&[arrive(0.1)])), "untrusted_shard");
        assert_eq!(
            rejected(run(&[
                local(Change::Ban {
                    realm: "other".into()
                }),
                arrive(1.0)
            ])),
            "realm_banned"
        );
        assert_eq!(
            rejected(run(&[local(Change::Arrive { member: "v".into() })])),
            "not_a_crossing"
        );
        let s = run(&[
            local(Change::Ban {
                realm: "other".into(),
            }),
            local(Change::Unban {
                realm: "other".into(),
            }),
            arrive(1.0),
        ])
        .unwrap();
        assert!(s.members.contains_key("v"));
    }
}
