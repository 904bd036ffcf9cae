//! The plugin runtime against real components (contract 0.2: a realm's state
//! is a host-owned keyed map that plugins read and write through the `state`
//! import). The example plugins behave like their native builds, deliberately
//! hostile plugins fail one call each with a typed cause, the per-realm state
//! limits stop a call without keeping any of its writes, and faults are
//! attributed to realms: one faulting realm never takes its plugin version
//! out of service.
//!
//! The property test `keyed_state_matches_a_btreemap_model` prints its
//! failing case and persists its seed the way proptest always does (see
//! `runtime.proptest-regressions` next to this file once a case has failed);
//! `PROPTEST_RNG_SEED=<n>` replays a run and `PROPTEST_CASES=<n>` changes the
//! number of cases (32 by default).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use proptest::prelude::*;
use realmhost::EventRecord;
use realmhost::runtime::{
    ApplyOutcome, BatchOutcome, EventFailure, LoadOptions, Plugin, PluginRegistry, PluginRuntime,
    RegistryError, RuntimeConfig, RuntimeError, Scope, TrapCause,
};
use realmhost::state::{Bytes, StateLimit, StateLimitError, StateLimits, StateMap, Written};
use realmhost_guest::batch::BatchEncoder;
use realmhost_guest::{ApplyError, MemoryState, encode_payload, entry, whole};
use realmhost_plugin_artifacts::{COUNTER, LEDGER, MEMBERSHIP, fixtures};
use realmhost_plugin_ledger::{
    ACCOUNTS, AccountsPage, Ledger, StateV1, StateV2, TOTALS, Totals, Tx,
};

mod hostile;
mod large;
mod limits;
mod model;

// Helpers shared between the modules.
#[allow(unused_imports)]
use {hostile::*, large::*, limits::*, model::*};

/// A realm's entries as plain bytes: the model the host's map is checked against.
type Entries = BTreeMap<Vec<u8>, Vec<u8>>;
/// A call's writes as the host reports them: key → new value, `None` = deleted.
type Changes = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// Small limits keep the hostile tests fast.
fn config() -> RuntimeConfig {
    RuntimeConfig {
        fuel_per_call: 20_000_000,
        max_memory_bytes: 32 << 20,
        max_output_bytes: 1 << 20,
        ..RuntimeConfig::default()
    }
}

fn runtime() -> PluginRuntime {
    PluginRuntime::new(config()).expect("runtime")
}

fn entries(map: &StateMap) -> Entries {
    map.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect()
}

fn state_of(e: &Entries) -> StateMap {
    StateMap::from_sorted(
        e.iter()
            .map(|(k, v)| (Bytes::from(&k[..]), Bytes::from(&v[..])))
            .collect(),
    )
    .expect("a BTreeMap is sorted")
}

fn memory_of(map: &StateMap) -> MemoryState {
    MemoryState::from(entries(map))
}

fn changes_of(w: &Written) -> Changes {
    w.changes
        .iter()
        .map(|(k, v)| (k.to_vec(), v.as_ref().map(|v| v.to_vec())))
        .collect()
}

fn event(seq: u64, kind: &str, payload: Vec<u8>) -> EventRecord {
    EventRecord {
        seq,
        kind: kind.into(),
        payload,
        source: "tester".into(),
        source_realm: None,
        timestamp_ms: 1_700_000_000_000,
        source_reputation: 1.0,
        message: None,
    }
}

fn tx(seq: u64, t: &Tx) -> EventRecord {
    event(seq, "tx", encode_payload(t))
}

fn open(a: &str) -> Tx {
    Tx::Open { account: a.into() }
}

fn deposit(a: &str, amount: u64) -> Tx {
    Tx::Deposit {
        account: a.into(),
        amount,
    }
}

fn transfer(from: &str, to: &str, amount: u64) -> Tx {
    Tx::Transfer {
        from: from.into(),
        to: to.into(),
        amount,
    }
}

/// The written map of a successful `apply`.
fn applied(r: Result<realmhost::runtime::Metered<ApplyOutcome>, RuntimeError>) -> Written {
    match r.map(|m| m.value) {
        Ok(ApplyOutcome::Applied(w, _)) => w,
        other => panic!("expected Applied, got {other:?}"),
    }
}

/// The map `init` writes.
fn init_map(p: &Plugin, realm: &str) -> StateMap {
    p.init(realm).expect("init").value.expect("init ok").map
}

#[test]
fn example_plugins_describe_themselves() {
    let rt = runtime();
    for (bytes, ty, state_version) in [
        (COUNTER, "counter", None),
        (LEDGER, "ledger", Some(3)),
        (MEMBERSHIP, "membership", Some(2)),
    ] {
        let p = rt.load(bytes).unwrap();
        assert_eq!(p.realm_type(), ty);
        assert!(!p.info().semver.is_empty());
        assert!(!p.info().description.is_empty());
        assert_eq!(p.version(), realmhost::PluginVersion::of(bytes));
        assert_eq!(p.info().size_bytes, bytes.len());
        if let Some(v) = state_version {
            assert_eq!(p.state_version(), v, "{ty}");
        }
    }
    // The native build describes itself the same way.
    let p = rt.load(LEDGER).unwrap();
    let native = entry::describe::<Ledger>();
    assert_eq!(p.info().semver, native.version);
    assert_eq!(p.info().description, native.description);
    assert_eq!(p.state_version(), native.state_version);
}

/// A deterministic ledger history with every kind of transaction and every
/// kind of rejection (overdraft, unknown account, duplicate, zero, self).
fn ledger_history(n: usize) -> Vec<Tx> {
    let names = ["alice", "bob", "carol", "dave", "erin"];
    let mut txs: Vec<Tx> = names[..3].iter().map(|a| open(a)).collect();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move |m: u64| {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (x >> 33) % m
    };
    while txs.len() < n {
        let a = names[next(5) as usize];
        let b = names[next(5) as usize];
        let amount = next(80);
        txs.push(match next(7) {
            0 => open(a),
            1 | 2 => deposit(a, amount),
            3 => Tx::Withdraw {
                account: a.into(),
                amount,
            },
            4 => transfer(a, "nobody", 1),
            _ => transfer(a, b, amount),
        });
    }
    txs
}

const LEDGER_QUERIES: &[&str] = &[
    "",
    r#""total""#,
    r#"{"balance":"alice"}"#,
    r#"{"balance":"bob"}"#,
    r#"{"balance":"nobody"}"#,
    r#"{"accounts":{}}"#,
    r#"{"accounts":{"limit":2}}"#,
    r#"{"accounts":{"after":"bob","limit":2}}"#,
    r#"{"accounts":{"after":"zzz"}}"#,
    "nonsense",
];

/// The same events through the component (on the host's map) and through
/// `realmhost_guest::entry` natively (on a `MemoryState`) give identical
/// entries after every event, the same rejections, and identical answers.
#[test]
fn ledger_component_matches_native_logic() {
    let rt = runtime();
    let p = rt.load(LEDGER).unwrap();
    let realm = "realm-1";
    let initial = init_map(&p, realm);
    let mut native = MemoryState::new();
    entry::init::<Ledger>(&mut native, realm).unwrap();
    assert_eq!(entries(&initial), *native.as_map());

    let mut wasm = initial.clone();
    let mut accepted = Vec::new();
    let (mut applied_n, mut rejected_n) = (0, 0);
    for (i, t) in ledger_history(80).iter().enumerate() {
        let e = tx(i as u64 + 1, t);
        let m = p.apply(Scope::new(realm, &wasm), &e).unwrap();
        assert!(m.fuel > 0);
        let before = native.clone();
        let nat = entry::apply::<Ledger>(&mut native, &e.as_event_ref());
        match (m.value, nat) {
            (ApplyOutcome::Applied(w, sent), Ok(effects)) => {
                // The sandbox returns the messages the native call sent.
                assert_eq!(sent.len(), effects.messages.len(), "{t:?}");
                // The changes name exactly the entries that differ.
                for (k, v) in changes_of(&w) {
                    assert_eq!(native.get(&k), v.as_deref(), "{t:?}");
                }
                let differing = native
                    .iter()
                    .filter(|(k, v)| before.get(k) != Some(*v))
                    .count();
                assert!(w.changes.len() >= differing, "{t:?}");
                wasm = w.map;
                accepted.push(e);
                applied_n += 1;
            }
            (ApplyOutcome::Rejected(r), Err(ApplyError::Rejected(n))) => {
                assert_eq!((r.code, r.message), (n.code, n.message));
                assert_eq!(native, before, "a rejection keeps nothing");
                rejected_n += 1;
            }
            (ApplyOutcome::Invalid(w), Err(ApplyError::Invalid(n))) => assert_eq!(w, n),
            (w, n) => panic!("{t:?}: component {w:?}, native {n:?}"),
        }
        assert_eq!(entries(&wasm), *native.as_map(), "after {t:?}");
    }
    assert!(applied_n > 20 && rejected_n > 5, "{applied_n} {rejected_n}");

    for q in LEDGER_QUERIES {
        assert_eq!(
            p.query(Scope::new(realm, &wasm), q).unwrap(),
            entry::query::<Ledger>(&native, q),
            "query {q}"
        );
    }

    // Replay through apply-batch (in chunks) and one batch give the same entries.
    let replayed = p
        .replay(realm, initial.clone(), &accepted, 7)
        .unwrap()
        .value
        .unwrap();
    assert_eq!(entries(&replayed.map), *native.as_map());
    // A fresh ledger holds nothing, so every final entry is a change.
    assert_eq!(replayed.changes.len(), native.len());
    let mut enc = BatchEncoder::new();
    for e in &accepted {
        enc.push(&e.as_event_ref());
    }
    let batch = enc.finish();
    match p
        .apply_batch(Scope::new(realm, &initial), &batch, accepted.len() as u32)
        .unwrap()
        .value
    {
        BatchOutcome::Applied(w) => assert_eq!(entries(&w.map), *native.as_map()),
        other => panic!("{other:?}"),
    }
    let mut native_batched = MemoryState::new();
    entry::apply_batch::<Ledger>(&mut native_batched, &batch).unwrap();
    assert_eq!(native_batched, native);

    // Overdraft is a rejection, not an error.
    let bad = tx(
        1000,
        &Tx::Withdraw {
            account: "bob".into(),
            amount: u64::MAX,
        },
    );
    match p.apply(Scope::new(realm, &wasm), &bad).unwrap().value {
        ApplyOutcome::Rejected(r) => assert_eq!(r.code, "overdraft"),
        other => panic!("{other:?}"),
    }
    // A payload that is not a ledger event is invalid input.
    match p
        .apply(
            Scope::new(realm, &wasm),
            &event(1000, "tx", vec![0xff, 0xff, 0xff]),
        )
        .unwrap()
        .value
    {
        ApplyOutcome::Invalid(m) => assert!(m.contains("payload"), "{m}"),
        other => panic!("{other:?}"),
    }
    // JSON event encoding, as the native build does it.
    let json = r#"{"transfer":{"from":"a","to":"b","amount":3}}"#;
    let bytes = p.encode_event("tx", json).unwrap().unwrap();
    assert_eq!(bytes, encode_payload(&transfer("a", "b", 3)));
    assert_eq!(bytes, entry::encode_event::<Ledger>("tx", json).unwrap());
    assert!(p.encode_event("tx", "not json").unwrap().is_err());
}

#[test]
fn batch_failure_names_the_event() {
    let rt = runtime();
    let p = rt.load(LEDGER).unwrap();
    let init = init_map(&p, "r");
    let events = vec![tx(1, &open("a")), tx(2, &open("a"))];
    let (seq, err) = p
        .replay("r", init.clone(), &events, 10)
        .unwrap()
        .value
        .unwrap_err();
    assert_eq!(seq, 2);
    assert!(matches!(err, EventFailure::Rejected(r) if r.code == "account_exists"));

    // The failing event sits in a later chunk: its seq, not its index, is named.
    let events = vec![
        tx(11, &open("a")),
        tx(12, &open("b")),
        tx(13, &deposit("a", 5)),
        tx(14, &transfer("a", "b", 6)),
        tx(15, &deposit("b", 1)),
    ];
    let (seq, err) = p
        .replay("r", init.clone(), &events, 2)
        .unwrap()
        .value
        .unwrap_err();
    assert_eq!(seq, 14);
    assert!(matches!(err, EventFailure::Rejected(r) if r.code == "overdraft"));

    // One batch: the index of the failing event, and nothing kept.
    let mut enc = BatchEncoder::new();
    for e in &events {
        enc.push(&e.as_event_ref());
    }
    match p
        .apply_batch(Scope::new("r", &init), &enc.finish(), 5)
        .unwrap()
        .value
    {
        BatchOutcome::Failed {
            index: 3,
            error: EventFailure::Rejected(r),
        } => assert_eq!(r.code, "overdraft"),
        other => panic!("{other:?}"),
    }
}

/// A ledger written by ledger 2.x (state version 2: the whole state as one
/// value under the SDK's whole-state key) is migrated by the component to
/// the keyed layout: the same entries as the native migration and as a
/// replay of the same history, and the same answers.
#[test]
fn migrate_moves_whole_state_ledgers_to_the_keyed_layout() {
    let rt = runtime();
    let p = rt.load(LEDGER).unwrap();
    assert_eq!(p.state_version(), 3);

    // The history the old realm went through, and its v2 whole state.
    let mut history = Vec::new();
    let mut v2 = StateV2::default();
    for i in 0..60u64 {
        let name = format!("acct-{i:03}");
        history.push(open(&name));
        if i % 4 != 0 {
            history.push(deposit(&name, i * 10));
        }
        v2.accounts
            .insert(name, if i % 4 != 0 { i * 10 } else { 0 });
    }
    v2.tx_count = history.len() as u64;
    let old: Entries = [(whole::STATE_KEY.to_vec(), whole::encode(2, &v2).unwrap())].into();
    let old = state_of(&old);

    let m = p.migrate(Scope::new("legacy", &old), 2).unwrap();
    assert!(m.fuel > 0);
    let migrated = m.value.unwrap();
    assert_eq!(migrated.map.get(whole::STATE_KEY), None);
    assert!(
        migrated
            .changes
            .iter()
            .any(|(k, v)| &k[..] == whole::STATE_KEY && v.is_none()),
        "the old entry is deleted"
    );
    assert_eq!(migrated.map.len(), 60 + 2);
    // The old map is untouched.
    assert_eq!(old.len(), 1);

    // Same as the native migration.
    let mut native = memory_of(&old);
    entry::migrate::<Ledger>(&mut native, 2).unwrap();
    assert_eq!(entries(&migrated.map), *native.as_map());

    // Same as replaying the history that built the old realm.
    let events: Vec<_> = history
        .iter()
        .enumerate()
        .map(|(i, t)| tx(i as u64 + 1, t))
        .collect();
    let replayed = p
        .replay("fresh", init_map(&p, "fresh"), &events, 50)
        .unwrap()
        .value
        .unwrap()
        .map;
    assert_eq!(entries(&replayed), entries(&migrated.map));
    for q in LEDGER_QUERIES.iter().copied().chain([
        r#"{"balance":"acct-007"}"#,
        r#"{"accounts":{"after":"acct-010","limit":5}}"#,
    ]) {
        let a = p.query(Scope::new("legacy", &migrated.map), q).unwrap();
        assert_eq!(
            a,
            p.query(Scope::new("fresh", &replayed), q).unwrap(),
            "{q}"
        );
        assert_eq!(a, entry::query::<Ledger>(&native, q), "{q}");
    }
    assert_eq!(
        p.query(Scope::new("legacy", &migrated.map), "")
            .unwrap()
            .unwrap(),
        format!(
            r#"{{"total":{},"accounts":60,"tx_count":{}}}"#,
            v2.accounts.values().sum::<u64>(),
            v2.tx_count
        )
    );
    // The migrated realm carries on like any other.
    let w = applied(p.apply(
        Scope::new("legacy", &migrated.map),
        &tx(500, &transfer("acct-007", "acct-000", 7)),
    ));
    assert_eq!(
        p.query(Scope::new("legacy", &w.map), r#"{"balance":"acct-000"}"#)
            .unwrap()
            .unwrap(),
        r#"{"balance":7}"#
    );

    // State version 1: balances only, the counter starts at 0.
    let mut v1 = StateV1::default();
    v1.accounts.insert("old".into(), 5);
    let old1 = state_of(&[(whole::STATE_KEY.to_vec(), whole::encode(1, &v1).unwrap())].into());
    let m1 = p
        .migrate(Scope::new("legacy-1", &old1), 1)
        .unwrap()
        .value
        .unwrap();
    assert_eq!(
        p.query(Scope::new("legacy-1", &m1.map), "")
            .unwrap()
            .unwrap(),
        r#"{"total":5,"accounts":1,"tx_count":0}"#
    );

    // What cannot be migrated is an error, and no map comes out of it.
    let garbage = state_of(&[(whole::STATE_KEY.to_vec(), vec![2, 0xff, 0xff, 0xff, 0xff])].into());
    assert!(
        p.migrate(Scope::new("g", &garbage), 2)
            .unwrap()
            .value
            .is_err()
    );
    let err = p
        .migrate(Scope::new("future", &migrated.map), 4)
        .unwrap()
        .value
        .unwrap_err();
    assert!(err.contains("newer"), "{err}");
    // A version the entry does not claim.
    assert!(p.migrate(Scope::new("x", &old1), 2).unwrap().value.is_err());
    // The current version is a no-op.
    let same = p
        .migrate(Scope::new("legacy", &migrated.map), 3)
        .unwrap()
        .value
        .unwrap();
    assert!(same.changes.is_empty());
    assert_eq!(same.map, migrated.map);
}
