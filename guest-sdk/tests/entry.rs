//! The native drivers keep the host's semantics: writes kept only on
//! success, read-only queries, no realm in scope in describe/encode-event,
//! migrations gated by state version.

use realmhost_guest::batch::BatchEncoder;
use realmhost_guest::{
    ApplyError, Event, EventRef, MemoryState, Realm, RealmLogic, Rejection, encode_payload, entry,
    state,
};
use serde::{Deserialize, Serialize};

/// Keyed: each event writes `n` keys, then obeys its verdict.
struct Writer;

#[derive(Debug, Serialize, Deserialize)]
enum Cmd {
    Write { n: u32, then: Verdict },
    Clear,
}

#[derive(Debug, Serialize, Deserialize)]
enum Verdict {
    Ok,
    Reject,
    Invalid,
    Panic,
}

impl Realm for Writer {
    const REALM_TYPE: &'static str = "writer";
    const VERSION: &'static str = "1.2.3";
    const DESCRIPTION: &'static str = "writes keys";
    const STATE_VERSION: u32 = 3;
    type Event = Cmd;

    fn init(realm_id: &str) -> Result<(), String> {
        state::set(b"id", realm_id.as_bytes());
        Ok(())
    }

    fn apply(event: Event<'_, Cmd>) -> Result<(), ApplyError> {
        match event.payload {
            Cmd::Write { n, then } => {
                for i in 0..n {
                    let key = format!("k/{}/{i:05}", event.seq);
                    state::set(key.as_bytes(), &event.seq.to_be_bytes());
                }
                match then {
                    Verdict::Ok => Ok(()),
                    Verdict::Reject => Err(Rejection::new("no", "said no").into()),
                    Verdict::Invalid => Err(ApplyError::invalid("bad")),
                    Verdict::Panic => panic!("deliberate"),
                }
            }
            Cmd::Clear => {
                let keys: Vec<_> = state::range(
                    std::ops::Bound::Unbounded,
                    std::ops::Bound::Unbounded,
                    false,
                )
                .map(|(k, _)| k)
                .collect();
                for k in keys {
                    assert!(state::delete(&k));
                }
                Ok(())
            }
        }
    }

    fn migrate(from: u32) -> Result<(), String> {
        match from {
            2 => {
                state::set(b"migrated", b"from 2");
                Ok(())
            }
            _ => {
                state::set(b"half", b"done");
                Err(format!("cannot migrate from {from}"))
            }
        }
    }

    fn query(request: &str) -> Result<String, String> {
        if request == "write" {
            state::set(b"q", b"q");
        }
        Ok(state::len().to_string())
    }
}

fn write(seq: u64, n: u32, then: Verdict) -> Vec<u8> {
    let _ = seq;
    encode_payload(&Cmd::Write { n, then })
}

fn ev<'a>(seq: u64, payload: &'a [u8]) -> EventRef<'a> {
    EventRef::new(seq, "cmd", payload, "test")
}

#[test]
fn describe_reports_the_state_version() {
    let info = entry::describe::<Writer>();
    assert_eq!(info.realm_type, "writer");
    assert_eq!(info.version, "1.2.3");
    assert_eq!(info.state_version, 3);
}

#[test]
fn failed_calls_keep_nothing() {
    let mut realm = MemoryState::new();
    entry::init::<Writer>(&mut realm, "r1").unwrap();
    assert_eq!(realm.get(b"id"), Some(&b"r1"[..]));
    entry::apply::<Writer>(&mut realm, &ev(1, &write(1, 3, Verdict::Ok))).unwrap();
    assert_eq!(realm.len(), 4);
    let before = realm.clone();

    let err = entry::apply::<Writer>(&mut realm, &ev(2, &write(2, 100, Verdict::Reject)));
    assert!(matches!(err, Err(ApplyError::Rejected(r)) if r.code == "no"));
    assert_eq!(realm, before);

    let err = entry::apply::<Writer>(&mut realm, &ev(2, &write(2, 100, Verdict::Invalid)));
    assert_eq!(err, Err(ApplyError::Invalid("bad".into())));
    assert_eq!(realm, before);

    let p = write(2, 100, Verdict::Panic);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        entry::apply::<Writer>(&mut realm, &ev(2, &p))
    }));
    assert!(r.is_err());
    assert_eq!(realm, before);

    // An undecodable payload is invalid, not a panic.
    let err = entry::apply::<Writer>(&mut realm, &ev(2, &[0xff, 0xff])).unwrap_err();
    assert!(matches!(err, ApplyError::Invalid(m) if m.contains("event 2")));

    // A call sees its own writes, deletions included.
    entry::apply::<Writer>(&mut realm, &ev(2, &encode_payload(&Cmd::Clear))).unwrap();
    assert!(realm.is_empty());
}

#[test]
fn batches_are_all_or_nothing() {
    let mut realm = MemoryState::new();
    let payloads = [
        write(1, 2, Verdict::Ok),
        write(2, 2, Verdict::Ok),
        write(3, 2, Verdict::Reject),
    ];
    let mut enc = BatchEncoder::new();
    for (i, p) in payloads.iter().enumerate() {
        enc.push(&ev(i as u64 + 1, p));
    }
    let err = entry::apply_batch::<Writer>(&mut realm, &enc.finish()).unwrap_err();
    assert_eq!(err.index, 2);
    assert!(realm.is_empty());

    let mut enc = BatchEncoder::new();
    for (i, p) in payloads[..2].iter().enumerate() {
        enc.push(&ev(i as u64 + 1, p));
    }
    entry::apply_batch::<Writer>(&mut realm, &enc.finish()).unwrap();
    assert_eq!(realm.len(), 4);

    // A malformed batch is invalid at index 0.
    let err = entry::apply_batch::<Writer>(&mut realm, &[7, 0]).unwrap_err();
    assert_eq!(err.index, 0);
    assert!(matches!(err.error, ApplyError::Invalid(_)));
}

#[test]
fn queries_are_read_only() {
    let mut realm = MemoryState::new();
    entry::init::<Writer>(&mut realm, "r").unwrap();
    assert_eq!(entry::query::<Writer>(&realm, "").unwrap(), "1");
    let r = std::panic::catch_unwind(|| entry::query::<Writer>(&realm, "write"));
    assert!(r.is_err());
    assert_eq!(realm.len(), 1);
}

struct Nosy;

impl Realm for Nosy {
    const REALM_TYPE: &'static str = "nosy";
    const VERSION: &'static str = "0.1.0";
    const DESCRIPTION: &'static str = "reads state where it may not";
    type Event = ();
    fn apply(_: Event<'_, ()>) -> Result<(), ApplyError> {
        Ok(())
    }
    fn event_from_json(_kind: &str, _json: &str) -> Result<(), String> {
        state::len();
        Ok(())
    }
    fn query(_: &str) -> Result<String, String> {
        Ok(String::new())
    }
}

#[test]
fn no_realm_in_scope_outside_calls() {
    let r = std::panic::catch_unwind(|| entry::encode_event::<Nosy>("x", "null"));
    let msg = *r.unwrap_err().downcast::<String>().unwrap();
    assert!(msg.contains("no realm in scope"), "{msg}");
    // Not even inside another realm's scope.
    let mut realm = MemoryState::new();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        realm.enter(|| entry::encode_event::<Nosy>("x", "null"))
    }));
    assert!(r.is_err());
    // And natively, outside any driver.
    assert!(std::panic::catch_unwind(state::len).is_err());
}

#[test]
fn migrations_are_gated_by_state_version() {
    let mut realm = MemoryState::new();
    entry::migrate::<Writer>(&mut realm, 3).unwrap();
    assert!(realm.is_empty(), "the current version is a no-op");
    let err = entry::migrate::<Writer>(&mut realm, 4).unwrap_err();
    assert!(err.contains('4') && err.contains('3'), "{err}");
    entry::migrate::<Writer>(&mut realm, 2).unwrap();
    assert_eq!(realm.get(b"migrated"), Some(&b"from 2"[..]));
    let before = realm.clone();
    assert!(entry::migrate::<Writer>(&mut realm, 1).is_err());
    assert_eq!(realm, before, "a failed migration keeps nothing");
    // The default migrate names both versions.
    let err = entry::migrate::<Nosy>(&mut realm, 0).unwrap_err();
    assert!(
        err.contains("state version 0") && err.contains("state version 1"),
        "{err}"
    );
}

/// Whole-state mode, version 2 of a state whose version 1 was a bare u32.
struct Tally;

#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
struct TallyState {
    total: u64,
    events: u64,
}

impl RealmLogic for Tally {
    const REALM_TYPE: &'static str = "tally";
    const VERSION: &'static str = "2.0.0";
    const DESCRIPTION: &'static str = "tally";
    const STATE_VERSION: u32 = 2;
    type State = TallyState;
    type Event = u64;

    fn init(_: &str) -> TallyState {
        TallyState::default()
    }

    fn apply(s: &mut TallyState, e: Event<'_, u64>) -> Result<(), Rejection> {
        s.total = s
            .total
            .checked_add(e.payload)
            .ok_or_else(|| Rejection::new("overflow", "full"))?;
        s.events += 1;
        Ok(())
    }

    fn migrate(version: u32, bytes: &[u8]) -> Result<TallyState, String> {
        match version {
            1 => Ok(TallyState {
                total: u64::from(entry::decode_postcard::<u32>(bytes)?),
                events: 0,
            }),
            v => Err(format!("unknown version {v}")),
        }
    }
}

#[test]
fn whole_state_mode_round_trips() {
    let mut realm = MemoryState::new();
    entry::init::<Tally>(&mut realm, "t").unwrap();
    assert_eq!(realm.len(), 1);
    let payloads: Vec<_> = [5u64, 7, u64::MAX].iter().map(encode_payload).collect();
    entry::apply::<Tally>(&mut realm, &ev(1, &payloads[0])).unwrap();
    let mut enc = BatchEncoder::new();
    enc.push(&ev(2, &payloads[1]));
    enc.push(&ev(3, &payloads[2]));
    let err = entry::apply_batch::<Tally>(&mut realm, &enc.finish()).unwrap_err();
    assert_eq!(err.index, 1);
    assert_eq!(
        entry::whole_state::<Tally>(&realm).unwrap(),
        TallyState {
            total: 5,
            events: 1
        }
    );
    let mut enc = BatchEncoder::new();
    enc.push(&ev(2, &payloads[1]));
    enc.push(&ev(3, &payloads[1]));
    entry::apply_batch::<Tally>(&mut realm, &enc.finish()).unwrap();
    assert_eq!(
        entry::query::<Tally>(&realm, "").unwrap(),
        r#"{"total":19,"events":3}"#
    );
    assert_eq!(entry::describe::<Tally>().state_version, 2);
}

#[test]
fn whole_state_migrates_and_reads_contract_0_1_bytes() {
    // The 0.1 encoding of a version-1 state: [1] ++ postcard(u32).
    let mut old = vec![1u8];
    old.extend(encode_payload(&41u32));
    let mut realm = MemoryState::new();
    realm.insert(realmhost_guest::whole::STATE_KEY, old);

    let p = encode_payload(&1u64);
    let err = entry::apply::<Tally>(&mut realm, &ev(1, &p)).unwrap_err();
    assert!(matches!(err, ApplyError::Invalid(m) if m.contains("migrate")));

    entry::migrate::<Tally>(&mut realm, 1).unwrap();
    entry::apply::<Tally>(&mut realm, &ev(1, &p)).unwrap();
    assert_eq!(
        entry::whole_state::<Tally>(&realm).unwrap(),
        TallyState {
            total: 42,
            events: 1
        }
    );
    // The stored bytes are again [version] ++ postcard(state).
    assert_eq!(realm.get(b"state").unwrap()[0], 2);

    // A state from the future is refused, not misread.
    realm.insert(&b"state"[..], vec![9, 0, 0]);
    assert!(entry::migrate::<Tally>(&mut realm, 1).is_err());
    assert!(entry::query::<Tally>(&realm, "").is_err());
}
