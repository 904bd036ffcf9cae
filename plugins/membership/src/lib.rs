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
//!
//! ## Layout (state version 2)
//! One entry per member ([`MEMBERS`]) and one per banned realm ([`BANNED`]),
//! plus the crossing counter ([`CROSSINGS`]). Membership 1.x kept the whole
//! [`State`] as one value (state version 1); [`Realm::migrate`] turns it into
//! these entries.
//!
//! ## Queries
//! `{"member":"alice"}` answers one member (`{"trust":0.5,"since_seq":1,"origin":null}`);
//! any other request answers the whole realm in the JSON form of [`State`],
//! as membership 1.x did for every request (it reads every entry).

use std::collections::{BTreeMap, BTreeSet};

use realmhost_guest::{
    ApplyError, Bound, Event, Item, Map, Order, Realm, Rejection, export_realm, whole,
};
use serde::{Deserialize, Serialize};

/// Crossings from shards below this reputation are refused.
pub const MIN_CROSSING_REPUTATION: f64 = 0.2;

/// Trust of a member who arrived by crossing, before damping.
pub const ARRIVAL_TRUST: f64 = 0.5;

/// The `membership` realm type.
#[derive(Debug)]
pub struct Membership;

/// Members by name.
pub const MEMBERS: Map<&str, Member> = Map::new("members");
/// Realms whose crossings are refused (the value is empty).
pub const BANNED: Map<&str, ()> = Map::new("banned");
/// Crossings accepted so far.
pub const CROSSINGS: Item<u64> = Item::new("crossings");

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

/// The whole realm: the JSON answer of `query`, and the state of
/// membership 1.x (state version 1), read by `migrate`.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Members by name.
    pub members: BTreeMap<String, Member>,
    /// Realms whose crossings are refused.
    pub banned_realms: BTreeSet<String>,
    /// Crossings accepted so far.
    pub crossings_accepted: u64,
}

/// Requests understood by `query` besides the whole-realm view (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Query {
    /// `{"member":"alice"}` → the member, or an error if there is none.
    Member(String),
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

fn already_member(m: &str) -> Rejection {
    Rejection::new("already_member", format!("{m:?} is already a member"))
}

fn apply_change(event: Event<'_, Change>) -> Result<(), ApplyError> {
    match event.payload {
        Change::Join { member } => {
            if member.is_empty() || member.len() > 128 {
                return Err(Rejection::new("bad_member", "member names are 1..=128 bytes").into());
            }
            if MEMBERS.has(&member) {
                return Err(already_member(&member).into());
            }
            MEMBERS.save(
                &member,
                &Member {
                    trust: 0.5,
                    since_seq: event.seq,
                    origin: None,
                },
            )?;
        }
        Change::Leave { member } => {
            if !MEMBERS.remove(&member) {
                return Err(not_member(&member).into());
            }
        }
        Change::Trust { member, delta } => {
            if !delta.is_finite() || !(-1.0..=1.0).contains(&delta) {
                return Err(Rejection::new(
                    "bad_delta",
                    "trust deltas are finite and within [-1, 1]",
                )
                .into());
            }
            let mut m = MEMBERS
                .may_load(&member)?
                .ok_or_else(|| not_member(&member))?;
            let damped = delta * event.source_reputation.clamp(0.0, 1.0);
            m.trust = (m.trust + damped).clamp(0.0, 1.0);
            MEMBERS.save(&member, &m)?;
        }
        Change::Arrive { member } => {
            let origin = event
                .source_realm
                .ok_or_else(|| Rejection::new("not_a_crossing", "arrive needs a source realm"))?;
            if BANNED.has(origin) {
                return Err(Rejection::new(
                    "realm_banned",
                    format!("crossings from {origin:?} are banned"),
                )
                .into());
            }
            if event.source_reputation < MIN_CROSSING_REPUTATION {
                return Err(Rejection::new(
                    "untrusted_shard",
                    format!(
                        "source shard reputation {:.2} is below {MIN_CROSSING_REPUTATION}",
                        event.source_reputation
                    ),
                )
                .into());
            }
            if MEMBERS.has(&member) {
                return Err(already_member(&member).into());
            }
            MEMBERS.save(
                &member,
                &Member {
                    trust: ARRIVAL_TRUST * event.source_reputation,
                    since_seq: event.seq,
                    origin: Some(origin.to_owned()),
                },
            )?;
            CROSSINGS.update(|n| -> Result<u64, ApplyError> { Ok(n.unwrap_or(0) + 1) })?;
        }
        Change::Ban { realm } => BANNED.save(&realm, &())?,
        Change::Unban { realm } => {
            BANNED.remove(&realm);
        }
    }
    Ok(())
}

/// The whole realm, read entry by entry.
fn whole_view() -> Result<State, String> {
    let mut state = State {
        crossings_accepted: CROSSINGS.may_load()?.unwrap_or(0),
        ..State::default()
    };
    for entry in MEMBERS.range(Bound::Unbounded, Bound::Unbounded, Order::Ascending) {
        let (name, member) = entry?;
        state.members.insert(name, member);
    }
    for realm in BANNED.keys(Bound::Unbounded, Bound::Unbounded, Order::Ascending) {
        state.banned_realms.insert(realm?);
    }
    Ok(state)
}

impl Realm for Membership {
    const REALM_TYPE: &'static str = "membership";
    const VERSION: &'static str = "2.0.0";
    const DESCRIPTION: &'static str =
        "Members, trust damped by shard reputation, refusable crossings";
    const STATE_VERSION: u32 = 2;
    type Event = Change;

    fn apply(event: Event<'_, Change>) -> Result<(), ApplyError> {
        apply_change(event)
    }

    fn migrate(from_state_version: u32) -> Result<(), String> {
        let Some((version, body)) = whole::load_raw()? else {
            return Ok(());
        };
        if version != 1 || from_state_version != 1 {
            return Err(format!(
                "membership cannot migrate from state version {from_state_version} (entry version {version})"
            ));
        }
        let old: State = realmhost_guest::entry::decode_postcard(&body)?;
        for (name, member) in &old.members {
            MEMBERS.save(name, member)?;
        }
        for realm in &old.banned_realms {
            BANNED.save(realm, &())?;
        }
        CROSSINGS.save(&old.crossings_accepted)?;
        whole::remove();
        Ok(())
    }

    fn query(request: &str) -> Result<String, String> {
        if let Ok(Query::Member(name)) = serde_json::from_str::<Query>(request) {
            let member = MEMBERS
                .may_load(&name)?
                .ok_or_else(|| format!("{name:?} is not a member"))?;
            return serde_json::to_string(&member).map_err(|e| e.to_string());
        }
        serde_json::to_string(&whole_view()?).map_err(|e| e.to_string())
    }
}

export_realm!(Membership);

#[cfg(test)]
mod tests {
    use super::*;
    use realmhost_guest::{ApplyError, EventRef, MemoryState, encode_payload, entry};

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

    fn run_on(realm: &mut MemoryState, steps: &[Step]) -> Result<(), ApplyError> {
        for (i, st) in steps.iter().enumerate() {
            let p = encode_payload(&st.change);
            let mut ev = EventRef::new(i as u64 + 1, "change", &p, "someone");
            ev.source_realm = st.source_realm;
            ev.source_reputation = st.reputation;
            let before = realm.clone();
            let r = entry::apply::<Membership>(realm, &ev);
            if r.is_err() {
                assert_eq!(*realm, before, "a failed event must keep nothing");
            }
            r?;
        }
        Ok(())
    }

    fn realm_of(steps: &[Step]) -> Result<MemoryState, ApplyError> {
        let mut realm = MemoryState::new();
        entry::init::<Membership>(&mut realm, "m").unwrap();
        run_on(&mut realm, steps)?;
        Ok(realm)
    }

    fn run(steps: &[Step]) -> Result<State, ApplyError> {
        let realm = realm_of(steps)?;
        Ok(realm.read(whole_view).unwrap())
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

    #[test]
    fn one_entry_per_member_and_ban() {
        let realm = realm_of(&[
            local(join("a")),
            local(join("b")),
            local(Change::Ban { realm: "x".into() }),
            Step {
                change: Change::Arrive { member: "v".into() },
                source_realm: Some("other"),
                reputation: 1.0,
            },
        ])
        .unwrap();
        // a, b, v, the ban, the crossing counter.
        assert_eq!(realm.len(), 5);
    }

    #[test]
    fn queries_keep_their_json_form() {
        let realm = realm_of(&[
            local(join("a")),
            local(Change::Ban { realm: "x".into() }),
            Step {
                change: Change::Arrive { member: "v".into() },
                source_realm: Some("other"),
                reputation: 0.8,
            },
        ])
        .unwrap();
        let all = r#"{"members":{"a":{"trust":0.5,"since_seq":1,"origin":null},"v":{"trust":0.4,"since_seq":3,"origin":"other"}},"banned_realms":["x"],"crossings_accepted":1}"#;
        assert_eq!(entry::query::<Membership>(&realm, "").unwrap(), all);
        assert_eq!(entry::query::<Membership>(&realm, "anything").unwrap(), all);
        assert_eq!(
            entry::query::<Membership>(&realm, r#"{"member":"v"}"#).unwrap(),
            r#"{"trust":0.4,"since_seq":3,"origin":"other"}"#
        );
        assert!(entry::query::<Membership>(&realm, r#"{"member":"nobody"}"#).is_err());
        // A fresh realm answers like the old empty state did.
        assert_eq!(
            entry::query::<Membership>(&realm_of(&[]).unwrap(), "").unwrap(),
            r#"{"members":{},"banned_realms":[],"crossings_accepted":0}"#
        );
        let ev = entry::encode_event::<Membership>("c", r#"{"trust":{"member":"a","delta":0.5}}"#)
            .unwrap();
        assert_eq!(
            ev,
            encode_payload(&Change::Trust {
                member: "a".into(),
                delta: 0.5
            })
        );
    }

    #[test]
    fn migrates_the_whole_state_layout() {
        let old = run(&[
            local(join("a")),
            local(Change::Ban { realm: "x".into() }),
            Step {
                change: Change::Arrive { member: "v".into() },
                source_realm: Some("other"),
                reputation: 0.8,
            },
        ])
        .unwrap();
        let mut realm = MemoryState::new();
        realm.enter(|| whole::save(1, &old)).unwrap();
        entry::migrate::<Membership>(&mut realm, 1).unwrap();
        assert!(realm.get(whole::STATE_KEY).is_none());
        assert_eq!(realm.read(whole_view).unwrap(), old);
        assert!(entry::migrate::<Membership>(&mut realm, 3).is_err());
    }
}
