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
    ApplyOutcome, BatchOutcome, EventFailure, Plugin, PluginRegistry, PluginRuntime, RegistryError,
    RuntimeConfig, RuntimeError, Scope, TrapCause,
};
use realmhost::state::{Bytes, StateLimit, StateLimitError, StateLimits, StateMap, Written};
use realmhost_guest::batch::BatchEncoder;
use realmhost_guest::{ApplyError, MemoryState, encode_payload, entry, whole};
use realmhost_plugin_artifacts::{COUNTER, LEDGER, MEMBERSHIP, fixtures};
use realmhost_plugin_ledger::{
    ACCOUNTS, AccountsPage, Ledger, StateV1, StateV2, TOTALS, Totals, Tx,
};

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
        Ok(ApplyOutcome::Applied(w)) => w,
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
            (ApplyOutcome::Applied(w), Ok(())) => {
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

// ---------------------------------------------------------------------------
// Hostile plugins: each misbehaviour fails one call, with a typed cause.
// ---------------------------------------------------------------------------

const HOSTILE_REALM: &str = "hostile-realm";

/// What the hostile fixture's `init` writes: the `ok` counter at 0.
fn hostile_base() -> StateMap {
    state_of(&[(b"n".to_vec(), 0u64.to_le_bytes().to_vec())].into())
}

fn hostile_call_in(p: &Plugin, realm: &str, kind: &str) -> Result<ApplyOutcome, RuntimeError> {
    p.apply(Scope::new(realm, &hostile_base()), &event(1, kind, vec![]))
        .map(|m| m.value)
}

fn hostile_call(p: &Plugin, kind: &str) -> Result<ApplyOutcome, RuntimeError> {
    hostile_call_in(p, HOSTILE_REALM, kind)
}

/// The cause of a trap, checking that it names the plugin and the realm.
fn trap_cause(r: Result<ApplyOutcome, RuntimeError>) -> TrapCause {
    match r {
        Err(e @ RuntimeError::Trap { .. }) => {
            assert!(e.is_plugin_fault());
            assert_eq!(e.realm_type(), Some("hostile"));
            assert_eq!(e.realm(), Some(HOSTILE_REALM), "{e}");
            assert!(e.to_string().contains(HOSTILE_REALM), "{e}");
            match e {
                RuntimeError::Trap { cause, .. } => cause,
                _ => unreachable!(),
            }
        }
        other => panic!("expected a trap, got {other:?}"),
    }
}

/// The plugin still serves calls (on a fresh instance after a trap), and the
/// call sees the committed map only.
fn still_counts(p: &Plugin) {
    let w = match hostile_call(p, "ok") {
        Ok(ApplyOutcome::Applied(w)) => w,
        other => panic!("expected the next call to succeed, got {other:?}"),
    };
    let expect: Entries = [(b"n".to_vec(), 1u64.to_le_bytes().to_vec())].into();
    assert_eq!(entries(&w.map), expect);
}

#[test]
fn endless_loop_runs_out_of_fuel() {
    let rt = runtime();
    let p = rt.load(fixtures::HOSTILE).unwrap();
    let t = Instant::now();
    assert_eq!(trap_cause(hostile_call(&p, "loop")), TrapCause::OutOfFuel);
    assert!(
        t.elapsed().as_secs() < 10,
        "fuel did not stop the loop promptly"
    );
    still_counts(&p);
}

#[test]
fn unbounded_allocation_hits_the_memory_cap() {
    let rt = runtime();
    let p = rt.load(fixtures::HOSTILE).unwrap();
    assert_eq!(
        trap_cause(hostile_call(&p, "alloc")),
        TrapCause::OutOfMemory
    );
    still_counts(&p);
}

#[test]
fn panic_is_reported_with_its_message() {
    let rt = runtime();
    let p = rt.load(fixtures::HOSTILE).unwrap();
    match trap_cause(hostile_call(&p, "panic")) {
        TrapCause::Panic(m) => assert!(m.contains("deliberate panic in apply (seq 1)"), "{m}"),
        other => panic!("expected a panic, got {other:?}"),
    }
    still_counts(&p);
}

#[test]
fn stack_overflow_is_a_trap() {
    let rt = runtime();
    let p = rt.load(fixtures::HOSTILE).unwrap();
    assert_eq!(
        trap_cause(hostile_call(&p, "stack")),
        TrapCause::StackOverflow
    );
    still_counts(&p);
}

/// Oversized output: an 8 MiB value is stopped by the value limit (it never
/// reaches the realm), and answers or error messages bigger than the output
/// cap are refused with `OutputTooLarge`.
#[test]
fn oversized_output_is_refused() {
    let rt = runtime();
    let p = rt.load(fixtures::HOSTILE).unwrap();
    match hostile_call(&p, "huge") {
        Err(RuntimeError::StateLimit {
            realm_type, error, ..
        }) => {
            assert_eq!(realm_type, "hostile");
            assert_eq!(
                error,
                StateLimitError {
                    realm: HOSTILE_REALM.into(),
                    limit: StateLimit::ValueBytes,
                    actual: 8 << 20,
                    max: 1 << 20,
                }
            );
        }
        other => panic!("expected StateLimit, got {other:?}"),
    }
    // encode-event echoes its JSON: 2 MiB out against a 1 MiB cap.
    let json = "7".repeat(2 << 20);
    match p.encode_event("x", &json) {
        Err(RuntimeError::OutputTooLarge { size, limit, .. }) => {
            assert_eq!(size, 2 << 20);
            assert_eq!(limit, 1 << 20);
        }
        other => panic!("expected OutputTooLarge, got {other:?}"),
    }
    // An `invalid` message that quotes a 2 MiB kind.
    let kind = "k".repeat(2 << 20);
    match hostile_call(&p, &kind) {
        Err(RuntimeError::OutputTooLarge { size, limit, .. }) => {
            assert!(size > 2 << 20, "{size}");
            assert_eq!(limit, 1 << 20);
        }
        other => panic!("expected OutputTooLarge, got {other:?}"),
    }
    still_counts(&p);
}

/// Garbage entries come back as bytes (the host cannot know a plugin's
/// format), and the plugin that reads them says they are invalid.
#[test]
fn garbage_entries_are_caught_by_the_reader() {
    let rt = runtime();
    let hostile = rt.load(fixtures::HOSTILE).unwrap();
    let garbage = match hostile_call(&hostile, "garbage").unwrap() {
        ApplyOutcome::Applied(w) => w.map,
        other => panic!("{other:?}"),
    };
    assert_eq!(garbage.get(b"n"), Some(&[0xde, 0xad, 0xbe][..]));
    match hostile
        .apply(Scope::new("g", &garbage), &event(2, "ok", vec![]))
        .unwrap()
        .value
    {
        ApplyOutcome::Invalid(m) => assert!(m.contains("8 bytes"), "{m}"),
        other => panic!("{other:?}"),
    }

    // A ledger whose entries were corrupted.
    let ledger = rt.load(LEDGER).unwrap();
    let mut native = MemoryState::new();
    for (i, t) in [open("a"), deposit("a", 5)].iter().enumerate() {
        entry::apply::<Ledger>(&mut native, &tx(i as u64 + 1, t).as_event_ref()).unwrap();
    }
    let corrupt: Entries = native
        .iter()
        .map(|(k, _)| (k.to_vec(), vec![0xff]))
        .collect();
    let corrupt = state_of(&corrupt);
    match ledger
        .apply(Scope::new("c", &corrupt), &tx(3, &deposit("a", 1)))
        .unwrap()
        .value
    {
        ApplyOutcome::Invalid(m) => assert!(!m.is_empty()),
        other => panic!("{other:?}"),
    }
    assert!(
        ledger
            .query(Scope::new("c", &corrupt), r#"{"balance":"a"}"#)
            .unwrap()
            .is_err()
    );
    assert!(
        ledger
            .query(Scope::new("c", &corrupt), "")
            .unwrap()
            .is_err()
    );
    let mut enc = BatchEncoder::new();
    let e = tx(3, &deposit("a", 1));
    enc.push(&e.as_event_ref());
    match ledger
        .apply_batch(Scope::new("c", &corrupt), &enc.finish(), 1)
        .unwrap()
        .value
    {
        BatchOutcome::Failed {
            index: 0,
            error: EventFailure::Invalid(_),
        } => {}
        other => panic!("{other:?}"),
    }
    // A batch buffer that is not a batch.
    match ledger
        .apply_batch(Scope::new("c", &corrupt), &[0xee; 7], 1)
        .unwrap()
        .value
    {
        BatchOutcome::Failed {
            index: 0,
            error: EventFailure::Invalid(_),
        } => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn forbidden_import_is_refused_by_name() {
    let rt = runtime();
    match rt.load(fixtures::FORBIDDEN) {
        Err(RuntimeError::ForbiddenImport { import, all }) => {
            assert!(import.starts_with("wasi:clocks/"), "{import}");
            assert!(
                all.iter()
                    .all(|i| !i.starts_with("wasi:cli/") && !i.starts_with("wasi:io/")),
                "{all:?}"
            );
            let msg = RuntimeError::ForbiddenImport {
                import: import.clone(),
                all,
            }
            .to_string();
            assert!(msg.contains(&import));
        }
        other => panic!("expected ForbiddenImport, got {other:?}"),
    }
}

/// A component built against contract 0.1 is refused at load time, naming
/// the version it was built against and the one the host needs.
#[test]
fn contract_0_1_component_is_refused_naming_both_versions() {
    let rt = runtime();
    match rt.load(fixtures::CONTRACT_V01) {
        Err(e @ RuntimeError::ContractVersion { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("realmhost:realm@0.1.0"), "{msg}");
            assert!(msg.contains("realmhost:realm@0.2.0"), "{msg}");
            let RuntimeError::ContractVersion { found, required } = e else {
                unreachable!()
            };
            assert_eq!(found, "realmhost:realm@0.1.0");
            assert_eq!(required, "0.2.0");
            assert_eq!(required, realmhost::runtime::CONTRACT_VERSION);
        }
        other => panic!("expected ContractVersion, got {other:?}"),
    }
}

#[test]
fn bad_wasm_files_are_typed_errors() {
    let rt = runtime();
    assert!(matches!(
        rt.load(b""),
        Err(RuntimeError::InvalidComponent { .. })
    ));
    assert!(matches!(
        rt.load(b"\0asm garbage"),
        Err(RuntimeError::InvalidComponent { .. })
    ));
    // A truncated real component.
    assert!(matches!(
        rt.load(&LEDGER[..LEDGER.len() / 2]),
        Err(RuntimeError::InvalidComponent { .. })
    ));
    // A core module is not a component.
    let core_module = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];
    assert!(rt.load(&core_module).is_err());
}

/// Hostile calls on many threads while an honest plugin keeps working: no
/// panic, no poisoned state, every honest call correct.
#[test]
fn hostile_plugin_does_not_disturb_others() {
    let rt = Arc::new(runtime());
    let hostile = Arc::new(rt.load(fixtures::HOSTILE).unwrap());
    let counter = Arc::new(rt.load(COUNTER).unwrap());
    let mut threads = Vec::new();
    for t in 0..2 {
        let hostile = hostile.clone();
        threads.push(std::thread::spawn(move || {
            for (i, kind) in [
                "panic",
                "loop",
                "alloc",
                "garbage",
                "huge",
                "huge-key",
                "ok",
                "panic-after-writes",
            ]
            .iter()
            .cycle()
            .take(16)
            .enumerate()
            {
                let r = hostile_call(&hostile, kind);
                assert_eq!(
                    r.is_err(),
                    !matches!(*kind, "ok" | "garbage"),
                    "thread {t} call {i} {kind}: {r:?}"
                );
            }
        }));
    }
    let mut map = init_map(&counter, "c");
    let mut native = MemoryState::new();
    entry::init::<realmhost_plugin_counter::Counter>(&mut native, "c").unwrap();
    for i in 1..=2000u64 {
        let payload = encode_payload(&realmhost_plugin_counter::Op::Add(1));
        let e = event(i, "add", payload);
        map = applied(counter.apply(Scope::new("c", &map), &e)).map;
        entry::apply::<realmhost_plugin_counter::Counter>(&mut native, &e.as_event_ref()).unwrap();
    }
    for t in threads {
        t.join().expect("hostile thread");
    }
    assert_eq!(entries(&map), *native.as_map());
    let s = entry::whole_state::<realmhost_plugin_counter::Counter>(&memory_of(&map)).unwrap();
    assert_eq!(s.value, 2000);
    assert_eq!(counter.stats().faults.load(Ordering::Relaxed), 0);
    assert!(hostile.stats().faults.load(Ordering::Relaxed) >= 24);
}

#[test]
fn compiled_components_are_cached_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = RuntimeConfig {
        cache_dir: Some(dir.path().to_owned()),
        ..RuntimeConfig::default()
    };
    let rt = PluginRuntime::new(cfg.clone()).unwrap();
    rt.load(COUNTER).unwrap();
    let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(files.len(), 1);
    // A second runtime loads from the cache, and a corrupt cache file is rebuilt.
    let rt2 = PluginRuntime::new(cfg.clone()).unwrap();
    assert_eq!(rt2.load(COUNTER).unwrap().realm_type(), "counter");
    let path = files[0].as_ref().unwrap().path();
    std::fs::write(&path, b"not a compiled component").unwrap();
    let rt3 = PluginRuntime::new(cfg).unwrap();
    let p = rt3.load(COUNTER).unwrap();
    assert_eq!(p.realm_type(), "counter");
    // The component loaded from the cache works.
    let w = applied(p.apply(
        Scope::new("c", &init_map(&p, "c")),
        &event(
            1,
            "add",
            encode_payload(&realmhost_plugin_counter::Op::Add(3)),
        ),
    ));
    let s = entry::whole_state::<realmhost_plugin_counter::Counter>(&memory_of(&w.map)).unwrap();
    assert_eq!(s.value, 3);
}

#[test]
fn registry_swaps_rolls_back_and_quarantines_faulty_versions() {
    let rt = Arc::new(
        PluginRuntime::new(RuntimeConfig {
            fuel_per_call: 5_000_000,
            quarantine_faults: 3,
            quarantine_realms: 3,
            quarantine_window_secs: 60,
            ..RuntimeConfig::default()
        })
        .unwrap(),
    );
    let reg = PluginRegistry::new(rt);
    let first = reg.load(LEDGER, false).unwrap();
    assert!(
        first.activated,
        "the first version of a type becomes active"
    );
    assert!(matches!(
        reg.get("nope"),
        Err(RegistryError::UnknownRealmType(_))
    ));
    assert!(matches!(
        reg.rollback("ledger"),
        Err(RegistryError::NothingToRollBack(_))
    ));
    // Loading the same bytes again is recognized.
    assert!(reg.load(LEDGER, true).unwrap().already_loaded);

    // A faulty version: hostile panics on every call. Faults in one realm
    // (however many) leave it in service; faults across
    // `quarantine_realms` distinct realms take it out.
    let hostile = reg.load(fixtures::HOSTILE, true).unwrap();
    assert_eq!(hostile.info.realm_type, "hostile");
    let p = reg.get("hostile").unwrap();
    for _ in 0..10 {
        assert!(hostile_call_in(&p, "realm-a", "panic").is_err());
    }
    assert!(reg.get("hostile").is_ok(), "one realm must not quarantine");
    assert!(hostile_call_in(&p, "realm-b", "panic").is_err());
    assert!(reg.get("hostile").is_ok(), "two realms must not quarantine");
    assert!(hostile_call_in(&p, "realm-c", "panic").is_err());
    match reg.get("hostile") {
        Err(RegistryError::Quarantined { last_fault, .. }) => {
            assert!(last_fault.contains("deliberate panic"), "{last_fault}");
            assert!(last_fault.contains("realm-c"), "{last_fault}");
        }
        other => panic!("expected quarantine, got {other:?}"),
    }
    assert!(
        reg.list()
            .iter()
            .any(|l| l.info.realm_type == "hostile" && l.quarantined.is_some())
    );
    reg.release("hostile").unwrap();
    assert!(reg.get("hostile").is_ok());
    // Release forgets the old faults: one more realm does not tip it over.
    assert!(hostile_call_in(&p, "realm-d", "panic").is_err());
    assert!(reg.get("hostile").is_ok());

    // Swap and roll back between two versions of one realm type (the ledger
    // under two content hashes; the second has an extra custom section).
    let v2 = reg.load(&fixtures::ledger_next_version(), false).unwrap();
    assert!(!v2.activated);
    assert_eq!(reg.get("ledger").unwrap().version(), first.info.version);
    // A map built by the first version is read by the second.
    let old = reg.get("ledger").unwrap();
    let map = applied(old.apply(Scope::new("l", &init_map(&old, "l")), &tx(1, &open("a")))).map;
    reg.swap("ledger", v2.info.version).unwrap();
    let new = reg.get("ledger").unwrap();
    assert_eq!(new.version(), v2.info.version);
    let map = applied(new.apply(Scope::new("l", &map), &tx(2, &deposit("a", 4)))).map;
    // The old version (still held by a caller in flight) keeps working.
    assert_eq!(
        old.query(Scope::new("l", &map), r#"{"balance":"a"}"#)
            .unwrap()
            .unwrap(),
        r#"{"balance":4}"#
    );
    reg.rollback("ledger").unwrap();
    assert_eq!(reg.get("ledger").unwrap().version(), first.info.version);
    reg.rollback("ledger").unwrap();
    assert_eq!(reg.get("ledger").unwrap().version(), v2.info.version);
    let listed: Vec<_> = reg
        .list()
        .into_iter()
        .filter(|l| l.info.realm_type == "ledger")
        .collect();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed.iter().filter(|l| l.active).count(), 1);
    assert_eq!(listed.iter().filter(|l| l.previous).count(), 1);
}

/// One realm that keeps faulting — traps and state-limit violations, far
/// more often than `quarantine_faults` — never quarantines the version;
/// faults across `quarantine_realms` distinct realms do, and exactly then.
#[test]
fn quarantine_needs_faults_across_many_realms() {
    let cfg = RuntimeConfig {
        quarantine_faults: 20,
        quarantine_realms: 5,
        quarantine_window_secs: 600,
        ..config()
    };
    let rt = Arc::new(PluginRuntime::new(cfg).unwrap());
    let reg = PluginRegistry::new(rt);
    reg.load(fixtures::HOSTILE, true).unwrap();
    let p = reg.get("hostile").unwrap();
    for i in 0..120 {
        let kind = ["panic", "huge-key", "stack"][i % 3];
        let e = hostile_call_in(&p, "bad-realm", kind).unwrap_err();
        assert_eq!(e.realm(), Some("bad-realm"), "{e}");
    }
    assert_eq!(p.stats().faults.load(Ordering::Relaxed), 120);
    assert!(p.quarantined().is_none());
    assert!(reg.get("hostile").is_ok());
    // Other realms carry on meanwhile.
    assert!(matches!(
        hostile_call_in(&p, "good-realm", "ok"),
        Ok(ApplyOutcome::Applied(_))
    ));

    // Three more faulting realms: four distinct, still in service.
    for r in ["r1", "r2", "r3"] {
        assert!(hostile_call_in(&p, r, "panic").is_err());
        assert!(reg.get("hostile").is_ok(), "{r}");
    }
    // The fifth distinct realm tips it over.
    assert!(hostile_call_in(&p, "r4", "panic").is_err());
    assert!(p.quarantined().is_some());
    assert!(matches!(
        reg.get("hostile"),
        Err(RegistryError::Quarantined { .. })
    ));
    reg.release("hostile").unwrap();

    // Without the long-faulting realm: 5 realms but not more than 20 faults
    // is not enough either…
    for i in 0..20 {
        assert!(hostile_call_in(&p, &format!("s{}", i % 5), "panic").is_err());
    }
    assert!(reg.get("hostile").is_ok());
    // …one more is.
    assert!(hostile_call_in(&p, "s0", "panic").is_err());
    assert!(reg.get("hostile").is_err());
}

/// Faults whose error message is too large (`OutputTooLarge` from `apply`)
/// happen with a realm in scope and must count for that realm like any other
/// fault, so that they quarantine a version when they span many realms.
#[test]
fn oversized_apply_errors_are_attributed_to_their_realm() {
    let rt = PluginRuntime::new(RuntimeConfig {
        quarantine_faults: 3,
        quarantine_realms: 3,
        ..config()
    })
    .unwrap();
    let p = rt.load(fixtures::HOSTILE).unwrap();
    // `invalid("unknown kind …")` quoting a kind longer than the output cap.
    let kind = "k".repeat((1 << 20) + 1);
    for r in ["o1", "o2", "o3"] {
        for _ in 0..2 {
            assert!(matches!(
                hostile_call_in(&p, r, &kind),
                Err(RuntimeError::OutputTooLarge { .. })
            ));
        }
    }
    assert!(
        p.quarantined().is_some(),
        "6 faults in 3 realms must quarantine (policy: > 3 faults, >= 3 realms)"
    );
}

// ---------------------------------------------------------------------------
// State limits, read-only queries, no realm in scope.
// ---------------------------------------------------------------------------

/// A hostile plugin under `limits` (compiled once per test through `cache`).
fn hostile_with(cache: &Path, limits: StateLimits) -> Plugin {
    let rt = PluginRuntime::new(RuntimeConfig {
        cache_dir: Some(cache.to_owned()),
        state_limits: limits,
        ..config()
    })
    .unwrap();
    let p = rt.load(fixtures::HOSTILE).unwrap();
    assert_eq!(p.state_limits(), &rt.config().state_limits);
    p
}

fn grow(seq: u64, n: u32) -> EventRecord {
    event(seq, "grow", n.to_string().into_bytes())
}

/// The keys `grow` writes: `g/` ++ seq (u64 BE) ++ i (u32 BE), value i (u64 LE).
fn grow_entry(prefix: &[u8], seq: u64, i: u32) -> (Vec<u8>, Vec<u8>) {
    let mut k = prefix.to_vec();
    k.extend_from_slice(&seq.to_be_bytes());
    k.extend_from_slice(&i.to_be_bytes());
    (k, u64::from(i).to_le_bytes().to_vec())
}

fn expect_limit(
    r: Result<impl std::fmt::Debug, RuntimeError>,
    realm: &str,
    limit: StateLimit,
    actual: u64,
    max: u64,
) {
    match r {
        Err(e @ RuntimeError::StateLimit { .. }) => {
            assert!(e.is_plugin_fault());
            assert_eq!(e.realm(), Some(realm));
            let msg = e.to_string();
            assert!(
                msg.contains(realm) && msg.contains(&limit.to_string()),
                "{msg}"
            );
            let RuntimeError::StateLimit {
                realm_type, error, ..
            } = e
            else {
                unreachable!()
            };
            assert_eq!(realm_type, "hostile");
            assert_eq!(
                error,
                StateLimitError {
                    realm: realm.into(),
                    limit,
                    actual,
                    max,
                }
            );
        }
        other => panic!("expected StateLimit {limit}, got {other:?}"),
    }
}

/// Each state limit stops the call with `StateLimit` naming the realm and the
/// limit; the committed map is unchanged and the next call sees none of the
/// failed call's writes.
#[test]
fn each_state_limit_stops_the_call_and_keeps_nothing() {
    let cache = tempfile::tempdir().unwrap();
    let roomy = StateLimits {
        max_key_bytes: 64,
        max_value_bytes: 4096,
        max_entries: 1_000_000,
        max_total_bytes: 1 << 30,
        max_ops_per_call: 1000,
    };
    // (limits, offending event, limit, actual, max). The base realm holds
    // `n` plus 300 grown keys: 301 entries, 9 + 300 × 22 = 6609 bytes.
    let cases = [
        (
            roomy.clone(),
            event(2, "huge-key", vec![]),
            StateLimit::KeyBytes,
            1 << 20,
            64,
        ),
        (
            roomy.clone(),
            event(2, "huge", vec![]),
            StateLimit::ValueBytes,
            8 << 20,
            4096,
        ),
        (
            StateLimits {
                max_entries: 500,
                ..roomy.clone()
            },
            grow(2, 250),
            StateLimit::Entries,
            501,
            500,
        ),
        (
            StateLimits {
                max_total_bytes: 10_000,
                ..roomy.clone()
            },
            grow(2, 250),
            StateLimit::TotalBytes,
            6609 + 155 * 22,
            10_000,
        ),
        (
            roomy.clone(),
            event(2, "many", b"1001".to_vec()),
            StateLimit::OpsPerCall,
            1001,
            1000,
        ),
    ];
    for (limits, bad, limit, actual, max) in cases {
        let realm = format!("limited-{limit}");
        let p = hostile_with(cache.path(), limits);
        let base = applied(p.apply(Scope::new(&realm, &init_map(&p, &realm)), &grow(1, 300))).map;
        let before = entries(&base);
        assert_eq!((base.len(), base.data_bytes()), (301, 6609));

        expect_limit(
            p.apply(Scope::new(&realm, &base), &bad),
            &realm,
            limit.clone(),
            actual,
            max,
        );
        // The same event in a batch stops the batch the same way.
        let mut enc = BatchEncoder::new();
        enc.push(&event(3, "ok", vec![]).as_event_ref());
        enc.push(&bad.as_event_ref());
        let r = p.apply_batch(Scope::new(&realm, &base), &enc.finish(), 2);
        match limit {
            // A batch of two gets twice the operations.
            StateLimit::OpsPerCall => assert!(matches!(r.unwrap().value, BatchOutcome::Applied(_))),
            // One `ok` (a key and 8 bytes more when `n` exists: no new entry).
            _ => expect_limit(r, &realm, limit.clone(), actual, max),
        }

        // Nothing of it reached the realm.
        assert_eq!(entries(&base), before);
        assert_eq!(
            p.query(Scope::new(&realm, &base), "len").unwrap().unwrap(),
            "301"
        );
        assert_eq!(
            p.query(Scope::new(&realm, &base), "count")
                .unwrap()
                .unwrap(),
            "301"
        );
        let next = applied(p.apply(Scope::new(&realm, &base), &event(4, "ok", vec![])));
        let expect: Changes = [(b"n".to_vec(), Some(1u64.to_le_bytes().to_vec()))].into();
        assert_eq!(changes_of(&next), expect);
        assert_eq!(next.map.len(), 301);
    }

    // A batch of n events gets n × max_ops_per_call operations in total.
    let p = hostile_with(cache.path(), roomy);
    let realm = "batch-ops";
    let base = init_map(&p, realm);
    let batch = |events: &[EventRecord]| {
        let mut enc = BatchEncoder::new();
        for e in events {
            enc.push(&e.as_event_ref());
        }
        enc.finish()
    };
    match p
        .apply_batch(
            Scope::new(realm, &base),
            &batch(&[grow(1, 1000), grow(2, 1000)]),
            2,
        )
        .unwrap()
        .value
    {
        BatchOutcome::Applied(w) => assert_eq!(w.map.len(), 2001),
        other => panic!("{other:?}"),
    }
    expect_limit(
        p.apply_batch(
            Scope::new(realm, &base),
            &batch(&[grow(1, 1001), grow(2, 1000)]),
            2,
        ),
        realm,
        StateLimit::OpsPerCall,
        2001,
        2000,
    );
}

/// `query` is read-only: a write is stopped with the `read-only` limit and
/// nothing is kept. `encode-event` has no realm in scope: state access traps.
#[test]
fn queries_are_read_only_and_encode_event_has_no_realm() {
    let rt = runtime();
    let p = rt.load(fixtures::HOSTILE).unwrap();
    let base = hostile_base();
    expect_limit(
        p.query(Scope::new("reader", &base), "write"),
        "reader",
        StateLimit::ReadOnly,
        1,
        0,
    );
    assert_eq!(base.get(b"query"), None);
    assert_eq!(base.len(), 1);
    assert_eq!(
        p.query(Scope::new("reader", &base), "len")
            .unwrap()
            .unwrap(),
        "1"
    );

    match p.encode_event("state", "1") {
        Err(RuntimeError::Trap {
            realm_type,
            realm,
            cause: TrapCause::Other(m),
            ..
        }) => {
            assert_eq!(realm_type, "hostile");
            assert_eq!(realm, None);
            assert!(m.contains("no realm in scope"), "{m}");
        }
        other => panic!("expected a trap, got {other:?}"),
    }
    // Without state access, encode-event works (the fixture echoes the JSON).
    assert_eq!(p.encode_event("x", "[1]").unwrap().unwrap(), b"[1]");
    still_counts(&p);
}

// ---------------------------------------------------------------------------
// Large realms.
// ---------------------------------------------------------------------------

/// A realm grown past 100 000 keys over several events (each within the
/// per-call operation limit) still takes appends that touch only what they
/// name, at the cost of a small realm, and scans page through all of it.
///
/// A full scan costs ~800 fuel per entry through the SDK's range iterator,
/// so one call cannot scan 115 000 entries on the default 50M budget: that
/// is a typed out-of-fuel fault, and the scans below run with 200M.
#[test]
fn realm_past_100k_keys_takes_appends_and_scans_page() {
    let rt = PluginRuntime::new(RuntimeConfig {
        fuel_per_call: 200_000_000,
        ..RuntimeConfig::default()
    })
    .unwrap();
    let p = rt.load(fixtures::HOSTILE).unwrap();
    let realm = "big";
    let small = init_map(&p, realm);
    let small_ok = p
        .apply(Scope::new(realm, &small), &event(100, "ok", vec![]))
        .unwrap()
        .fuel;

    let mut map = small;
    for seq in 1..=11 {
        let w = applied(p.apply(Scope::new(realm, &map), &grow(seq, 10_000)));
        assert_eq!(w.changes.len(), 10_000);
        map = w.map;
    }
    assert_eq!(map.len(), 110_001);
    assert!(!map.is_packed());

    // An append in the big realm writes one entry and costs what it did in
    // a realm of one entry.
    let m = p
        .apply(Scope::new(realm, &map), &event(100, "ok", vec![]))
        .unwrap();
    assert!(m.fuel <= small_ok * 2, "{} vs {small_ok}", m.fuel);
    let ApplyOutcome::Applied(w) = m.value else {
        panic!("{:?}", m.value)
    };
    let expect: Changes = [(b"n".to_vec(), Some(1u64.to_le_bytes().to_vec()))].into();
    assert_eq!(changes_of(&w), expect);
    assert_eq!(w.map.len(), 110_001);
    let map = applied(p.apply(Scope::new(realm, &w.map), &grow(12, 5_000))).map;
    assert_eq!(map.len(), 115_001);

    // Scans page through every entry (the fixture's `scan` fails unless its
    // paged scan counts exactly `len` entries).
    let scan = event(101, "scan", vec![]);
    match p.apply_with_fuel(Scope::new(realm, &map), &scan, 50_000_000) {
        Err(RuntimeError::Trap {
            cause: TrapCause::OutOfFuel,
            realm,
            ..
        }) => assert_eq!(realm.as_deref(), Some("big")),
        other => panic!("expected out of fuel, got {other:?}"),
    }
    let w = applied(p.apply(Scope::new(realm, &map), &scan));
    assert!(w.changes.is_empty());
    for q in ["len", "count"] {
        assert_eq!(
            p.query(Scope::new(realm, &map), q).unwrap().unwrap(),
            "115001",
            "{q}"
        );
    }
    assert_eq!(p.query(Scope::new(realm, &map), "").unwrap().unwrap(), "1");
    // The host's map holds exactly the grown keys, in byte order.
    let (k, v) = grow_entry(b"g/", 7, 4321);
    assert_eq!(map.get(&k), Some(&v[..]));
    let (first, _) = grow_entry(b"g/", 1, 0);
    let (last, _) = grow_entry(b"g/", 12, 4_999);
    let keys: Vec<&[u8]> = map.iter().map(|(k, _)| k).collect();
    assert_eq!(keys[0], &first[..]);
    assert_eq!(keys[keys.len() - 2], &last[..]);
    assert_eq!(keys[keys.len() - 1], b"n");
}

/// A ledger of 100 000 accounts: a transfer through the component touches
/// three entries, and the `accounts` query pages through every account once,
/// in order, through the sandbox's paged scans.
#[test]
fn ledger_with_100k_accounts_pages_through_the_sandbox() {
    const N: u64 = 100_000;
    let name = |i: u64| format!("acct-{i:06}");
    let mut native = MemoryState::new();
    native.enter(|| {
        let mut totals = Totals::default();
        for i in 0..N {
            ACCOUNTS.save(&name(i), &(i + 1)).unwrap();
            totals.accounts += 1;
            totals.total += u128::from(i + 1);
        }
        TOTALS.save(&totals).unwrap();
    });
    let map = state_of(native.as_map());
    assert_eq!(map.len(), N + 1);

    let rt = PluginRuntime::new(RuntimeConfig::default()).unwrap();
    let p = rt.load(LEDGER).unwrap();
    let realm = "bank";
    let w = applied(p.apply(
        Scope::new(realm, &map),
        &tx(1, &transfer(&name(0), &name(N - 1), 1)),
    ));
    // Two balances and the transaction counter.
    assert_eq!(w.changes.len(), 3);
    let map = w.map;
    assert_eq!(
        p.query(
            Scope::new(realm, &map),
            &format!(r#"{{"balance":"{}"}}"#, name(N - 1))
        )
        .unwrap()
        .unwrap(),
        format!(r#"{{"balance":{}}}"#, N + 1)
    );

    let mut after: Option<String> = None;
    let mut seen = 0u64;
    let mut sum = 0u128;
    let mut pages = 0;
    loop {
        let request = match &after {
            Some(a) => format!(r#"{{"accounts":{{"after":"{a}","limit":1000}}}}"#),
            None => r#"{"accounts":{"limit":1000}}"#.to_owned(),
        };
        let answer = p.query(Scope::new(realm, &map), &request).unwrap().unwrap();
        let page: AccountsPage = serde_json::from_str(&answer).unwrap();
        pages += 1;
        for row in &page.accounts {
            assert_eq!(row.account, name(seen));
            seen += 1;
            sum += u128::from(row.balance);
        }
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!((seen, pages), (N, 100));
    assert_eq!(sum, u128::from(N * (N + 1) / 2));
}

// ---------------------------------------------------------------------------
// Property: keyed state through the real sandbox equals a BTreeMap model.
// ---------------------------------------------------------------------------

/// One call of the hostile fixture, by kind.
#[derive(Debug, Clone)]
enum Hostile {
    /// `ok`: read `n`, write `n + 1` (`invalid` if `n` is not 8 bytes).
    Ok,
    /// `garbage`: `n` becomes 3 bytes.
    Garbage,
    /// `grow`: `n` keys `g/seq/i` (the same seq overwrites).
    Grow { seq: u64, n: u32 },
    /// `many`: `n` keys `m/seq/i` (past the operation limit when large).
    Many { seq: u64, n: u32 },
    /// `scan`: pages through every entry, writes nothing.
    Scan,
    /// `reject`: a rejection, no writes.
    Reject,
    /// 10 000 writes and `n = u64::MAX`, then a rejection.
    RejectAfterWrites { seq: u64 },
    /// 10 000 writes and `n = u64::MAX`, then a panic.
    PanicAfterWrites { seq: u64 },
    /// An 8 MiB value: past the value limit.
    Huge,
    /// A 1 MiB key: past the key limit.
    HugeKey,
    /// A panic before any write.
    Panic,
}

impl Hostile {
    fn event(&self, seq: u64) -> EventRecord {
        let (kind, payload, seq) = match self {
            Self::Ok => ("ok", String::new(), seq),
            Self::Garbage => ("garbage", String::new(), seq),
            Self::Grow { seq, n } => ("grow", n.to_string(), *seq),
            Self::Many { seq, n } => ("many", n.to_string(), *seq),
            Self::Scan => ("scan", String::new(), seq),
            Self::Reject => ("reject", String::new(), seq),
            Self::RejectAfterWrites { seq } => ("reject-after-writes", String::new(), *seq),
            Self::PanicAfterWrites { seq } => ("panic-after-writes", String::new(), *seq),
            Self::Huge => ("huge", String::new(), seq),
            Self::HugeKey => ("huge-key", String::new(), seq),
            Self::Panic => ("panic", String::new(), seq),
        };
        event(seq, kind, payload.into_bytes())
    }
}

/// A membership change: the only example logic that deletes entries (the
/// hostile fixture has no kind that deletes).
#[derive(Debug, Clone)]
enum Member {
    Join(u8),
    Leave(u8),
    Ban(u8),
    Unban(u8),
}

impl Member {
    fn event(&self, seq: u64) -> EventRecord {
        use realmhost_plugin_membership::Change;
        let c = match self {
            Self::Join(i) => Change::Join {
                member: format!("m{i}"),
            },
            Self::Leave(i) => Change::Leave {
                member: format!("m{i}"),
            },
            Self::Ban(i) => Change::Ban {
                realm: format!("r{i}"),
            },
            Self::Unban(i) => Change::Unban {
                realm: format!("r{i}"),
            },
        };
        event(seq, "change", encode_payload(&c))
    }
}

#[derive(Debug, Clone)]
enum Step {
    Hostile(Hostile),
    /// `apply-batch` of hostile events: all or nothing.
    Batch(Vec<Hostile>),
    /// A membership event on the same realm.
    Member(Member),
    /// Queries `len`, `count` and the counter.
    Read,
    /// A query that tries to write.
    QueryWrite,
}

type Violation = (StateLimit, u64, u64);

/// Why a modelled call keeps nothing.
#[derive(Debug, Clone, PartialEq)]
enum Stop {
    Limit(Violation),
    Rejected(String),
    Invalid,
    Panic,
}

impl From<Violation> for Stop {
    fn from(v: Violation) -> Self {
        Self::Limit(v)
    }
}

/// What a call must do.
#[derive(Clone, PartialEq)]
enum Expected {
    /// Succeed with exactly these changes (`None`: do not compare the list).
    Applied(Changes, bool),
    Rejected(String),
    Invalid,
    BatchFailed(u32, Option<String>),
    Limit(Violation),
    Panic,
}

/// Short enough to read in a failure report: a call may write 10 000 keys.
impl std::fmt::Debug for Expected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Applied(changes, _) => {
                let show = |k: &[u8], v: &Option<Vec<u8>>| {
                    format!(
                        "{}={}",
                        k.escape_ascii(),
                        v.as_ref()
                            .map_or("<deleted>".to_owned(), |v| v.escape_ascii().to_string())
                    )
                };
                write!(f, "Applied({} changes", changes.len())?;
                for (k, v) in changes.iter().take(3) {
                    write!(f, ", {}", show(k, v))?;
                }
                if let Some((k, v)) = changes.iter().next_back().filter(|_| changes.len() > 3) {
                    write!(f, ", …, {}", show(k, v))?;
                }
                f.write_str(")")
            }
            Self::Rejected(c) => write!(f, "Rejected({c})"),
            Self::Invalid => f.write_str("Invalid"),
            Self::BatchFailed(i, c) => write!(f, "BatchFailed(index {i}, {c:?})"),
            Self::Limit((l, actual, max)) => write!(f, "Limit({l}: {actual} > {max})"),
            Self::Panic => f.write_str("Panic"),
        }
    }
}

/// The model of one call's view of the state, with the limits the host
/// enforces (in the host's order: key, value, operations, entries, bytes).
struct Sim<'a> {
    base: &'a Entries,
    limits: &'a StateLimits,
    writes: Changes,
    entries: u64,
    bytes: u64,
    ops: u64,
    max_ops: u64,
}

impl<'a> Sim<'a> {
    fn new(base: &'a Entries, limits: &'a StateLimits, events: u64) -> Self {
        Self {
            base,
            limits,
            writes: Changes::new(),
            entries: base.len() as u64,
            bytes: base.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum(),
            ops: 0,
            max_ops: u64::from(limits.max_ops_per_call) * events,
        }
    }

    fn current(&self, k: &[u8]) -> Option<&Vec<u8>> {
        match self.writes.get(k) {
            Some(w) => w.as_ref(),
            None => self.base.get(k),
        }
    }

    fn key(&self, k: &[u8]) -> Result<(), Violation> {
        let max = self.limits.max_key_bytes;
        if k.len() > max {
            return Err((StateLimit::KeyBytes, k.len() as u64, max as u64));
        }
        Ok(())
    }

    fn op(&mut self) -> Result<(), Violation> {
        self.ops += 1;
        if self.ops > self.max_ops {
            return Err((StateLimit::OpsPerCall, self.ops, self.max_ops));
        }
        Ok(())
    }

    fn get(&mut self, k: &[u8]) -> Result<Option<Vec<u8>>, Violation> {
        self.key(k)?;
        self.op()?;
        Ok(self.current(k).cloned())
    }

    fn set(&mut self, k: &[u8], v: &[u8]) -> Result<(), Violation> {
        self.key(k)?;
        let max_value = self.limits.max_value_bytes;
        if v.len() > max_value {
            return Err((StateLimit::ValueBytes, v.len() as u64, max_value as u64));
        }
        self.op()?;
        let old = self.current(k).map(Vec::len);
        let entries = self.entries + u64::from(old.is_none());
        let bytes =
            self.bytes - old.map_or(0, |o| (k.len() + o) as u64) + (k.len() + v.len()) as u64;
        if entries > self.limits.max_entries {
            return Err((StateLimit::Entries, entries, self.limits.max_entries));
        }
        if bytes > self.limits.max_total_bytes {
            return Err((StateLimit::TotalBytes, bytes, self.limits.max_total_bytes));
        }
        self.entries = entries;
        self.bytes = bytes;
        self.writes.insert(k.to_vec(), Some(v.to_vec()));
        Ok(())
    }

    fn delete(&mut self, k: &[u8]) -> Result<bool, Violation> {
        self.key(k)?;
        self.op()?;
        let Some(old) = self.current(k).map(Vec::len) else {
            return Ok(false);
        };
        self.entries -= 1;
        self.bytes -= (k.len() + old) as u64;
        if self.base.contains_key(k) {
            self.writes.insert(k.to_vec(), None);
        } else {
            self.writes.remove(k);
        }
        Ok(true)
    }

    fn write_keys(&mut self, prefix: &[u8], seq: u64, n: u32) -> Result<(), Violation> {
        for i in 0..n {
            let (k, v) = grow_entry(prefix, seq, i);
            self.set(&k, &v)?;
        }
        Ok(())
    }

    /// The hostile fixture's logic for one event, on this view.
    fn hostile(&mut self, h: &Hostile) -> Result<(), Stop> {
        match h {
            Hostile::Ok => {
                let n = match self.get(b"n")? {
                    None => 0,
                    Some(b) => u64::from_le_bytes(b.try_into().map_err(|_| Stop::Invalid)?),
                };
                self.set(b"n", &n.wrapping_add(1).to_le_bytes())?;
            }
            Hostile::Garbage => self.set(b"n", &[0xde, 0xad, 0xbe])?,
            Hostile::Grow { seq, n } => self.write_keys(b"g/", *seq, *n)?,
            Hostile::Many { seq, n } => self.write_keys(b"m/", *seq, *n)?,
            // Its page-by-page operations stay far below the limit here.
            Hostile::Scan => {}
            Hostile::Reject => return Err(Stop::Rejected("no".into())),
            Hostile::RejectAfterWrites { seq } => {
                self.write_keys(b"r/", *seq, 10_000)?;
                self.set(b"n", &u64::MAX.to_le_bytes())?;
                return Err(Stop::Rejected("no".into()));
            }
            Hostile::PanicAfterWrites { seq } => {
                self.write_keys(b"p/", *seq, 10_000)?;
                self.set(b"n", &u64::MAX.to_le_bytes())?;
                return Err(Stop::Panic);
            }
            Hostile::Huge => self.set(b"huge", &vec![1u8; 8 << 20])?,
            Hostile::HugeKey => self.set(&vec![b'k'; 1 << 20], b"v")?,
            Hostile::Panic => return Err(Stop::Panic),
        }
        Ok(())
    }
}

fn expect_single(r: Result<(), Stop>, sim: Sim<'_>) -> Expected {
    match r {
        Ok(()) => Expected::Applied(sim.writes, true),
        Err(Stop::Limit(v)) => Expected::Limit(v),
        Err(Stop::Rejected(c)) => Expected::Rejected(c),
        Err(Stop::Invalid) => Expected::Invalid,
        Err(Stop::Panic) => Expected::Panic,
    }
}

/// What the model says a step does to `model`.
fn expected(step: &Step, model: &Entries, limits: &StateLimits, seq: u64) -> Expected {
    match step {
        Step::Hostile(h) => {
            let mut sim = Sim::new(model, limits, 1);
            let r = sim.hostile(h);
            expect_single(r, sim)
        }
        Step::Batch(hs) => {
            let mut sim = Sim::new(model, limits, hs.len() as u64);
            for (i, h) in hs.iter().enumerate() {
                match sim.hostile(h) {
                    Ok(()) => {}
                    Err(Stop::Rejected(c)) => return Expected::BatchFailed(i as u32, Some(c)),
                    Err(Stop::Invalid) => return Expected::BatchFailed(i as u32, None),
                    Err(Stop::Limit(v)) => return Expected::Limit(v),
                    Err(Stop::Panic) => return Expected::Panic,
                }
            }
            Expected::Applied(sim.writes, true)
        }
        Step::Member(m) => {
            // The native build on a copy gives the entries it writes; the
            // model checks them against the limits.
            let mut native = MemoryState::from(model.clone());
            match entry::apply::<realmhost_plugin_membership::Membership>(
                &mut native,
                &m.event(seq).as_event_ref(),
            ) {
                Err(ApplyError::Rejected(r)) => Expected::Rejected(r.code),
                Err(ApplyError::Invalid(_)) => Expected::Invalid,
                Ok(()) => {
                    let mut sim = Sim::new(model, limits, 1);
                    let after = native.as_map();
                    let mut r = Ok(());
                    for k in model.keys().filter(|k| !after.contains_key(*k)) {
                        r = r.and_then(|()| sim.delete(k).map(drop));
                    }
                    for (k, v) in after.iter().filter(|(k, v)| model.get(*k) != Some(*v)) {
                        r = r.and_then(|()| sim.set(k, v));
                    }
                    match r {
                        Ok(()) => Expected::Applied(sim.writes, false),
                        Err(v) => Expected::Limit(v),
                    }
                }
            }
        }
        Step::Read | Step::QueryWrite => unreachable!("queries are checked directly"),
    }
}

fn hostile_strategy() -> impl Strategy<Value = Hostile> {
    // Few distinct seqs: grown keys are often overwritten, not only added.
    let seq = 1u64..=6;
    prop_oneof![
        6 => Just(Hostile::Ok),
        1 => Just(Hostile::Garbage),
        5 => (seq.clone(), 0u32..3000).prop_map(|(seq, n)| Hostile::Grow { seq, n }),
        1 => (seq.clone(), 0u32..40).prop_map(|(seq, n)| Hostile::Many { seq, n }),
        1 => (seq.clone(), 12_001u32..12_040).prop_map(|(seq, n)| Hostile::Many { seq, n }),
        1 => Just(Hostile::Scan),
        1 => Just(Hostile::Reject),
        1 => seq.clone().prop_map(|seq| Hostile::RejectAfterWrites { seq }),
        1 => seq.prop_map(|seq| Hostile::PanicAfterWrites { seq }),
        1 => Just(Hostile::Huge),
        1 => Just(Hostile::HugeKey),
        1 => Just(Hostile::Panic),
    ]
}

fn batch_item_strategy() -> impl Strategy<Value = Hostile> {
    prop_oneof![
        4 => Just(Hostile::Ok),
        1 => Just(Hostile::Garbage),
        3 => (1u64..=6, 0u32..800).prop_map(|(seq, n)| Hostile::Grow { seq, n }),
        1 => Just(Hostile::Reject),
        1 => Just(Hostile::Panic),
    ]
}

fn step_strategy() -> impl Strategy<Value = Step> {
    // Two names each, so that leaves and unbans often find what a join or
    // a ban wrote.
    let member = (0u8..2, 0u8..4).prop_map(|(i, op)| {
        Step::Member(match op {
            0 => Member::Join(i),
            1 => Member::Leave(i),
            2 => Member::Ban(i),
            _ => Member::Unban(i),
        })
    });
    prop_oneof![
        12 => hostile_strategy().prop_map(Step::Hostile),
        3 => proptest::collection::vec(batch_item_strategy(), 1..4).prop_map(Step::Batch),
        6 => member,
        1 => Just(Step::Read),
        1 => Just(Step::QueryWrite),
    ]
}

/// Which limits a property-test case runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PropLimits {
    /// Room for the 10 001 writes of the write-then-reject/panic kinds, so
    /// they are rejected or panic (unless the realm already holds many
    /// entries).
    Roomy,
    /// The entry count binds first (every grown entry is 22 bytes).
    Entries,
    /// The byte total binds first (at ~5 400 grown entries).
    Bytes,
}

impl PropLimits {
    const ALL: [Self; 3] = [Self::Roomy, Self::Entries, Self::Bytes];

    fn limits(self) -> StateLimits {
        let (max_entries, max_total_bytes) = match self {
            Self::Roomy => (14_000, 64 << 20),
            Self::Entries => (6_000, 64 << 20),
            Self::Bytes => (1_000_000, 120_000),
        };
        StateLimits {
            max_key_bytes: 256,
            max_value_bytes: 64 << 10,
            max_entries,
            max_total_bytes,
            // Room for 10 001 writes in one call; `many` with more hits it.
            max_ops_per_call: 12_000,
        }
    }

    /// (hostile, membership) under these limits, loaded once per process.
    fn plugins(self) -> &'static (Plugin, Plugin) {
        static PLUGINS: OnceLock<Vec<(Plugin, Plugin)>> = OnceLock::new();
        let all = PLUGINS.get_or_init(|| {
            let cache = tempfile::tempdir().unwrap();
            PropLimits::ALL
                .iter()
                .map(|l| {
                    let rt = PluginRuntime::new(RuntimeConfig {
                        max_memory_bytes: 64 << 20,
                        max_output_bytes: 1 << 20,
                        cache_dir: Some(cache.path().to_owned()),
                        state_limits: l.limits(),
                        ..RuntimeConfig::default()
                    })
                    .unwrap();
                    (
                        rt.load(fixtures::HOSTILE).unwrap(),
                        rt.load(MEMBERSHIP).unwrap(),
                    )
                })
                .collect()
        });
        &all[self as usize]
    }
}

const PROP_REALM: &str = "prop-realm";

fn prop_cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32)
}

/// Run one step on the host and check it against the model; returns the
/// host's next committed map.
fn run_step(
    step: &Step,
    seq: u64,
    map: &StateMap,
    model: &mut Entries,
    limits: PropLimits,
) -> Result<Option<StateMap>, TestCaseError> {
    let (hostile, membership) = limits.plugins();
    let limits = limits.limits();
    let scope = Scope::new(PROP_REALM, map);
    let mut written = None;
    let got: Result<Expected, RuntimeError> = match step {
        Step::Read => {
            let n = model
                .get(&b"n"[..])
                .and_then(|b| <[u8; 8]>::try_from(&b[..]).ok())
                .map_or(0, u64::from_le_bytes);
            let len = model.len().to_string();
            for (q, want) in [("len", &len), ("count", &len), ("", &n.to_string())] {
                prop_assert_eq!(
                    &hostile.query(scope, q).unwrap().unwrap(),
                    want,
                    "query {:?}",
                    q
                );
            }
            return Ok(None);
        }
        Step::QueryWrite => {
            match hostile.query(scope, "write") {
                Err(RuntimeError::StateLimit { error, .. }) => {
                    prop_assert_eq!(error.limit, StateLimit::ReadOnly);
                    prop_assert_eq!(error.realm, PROP_REALM);
                }
                other => prop_assert!(false, "query write: {:?}", other),
            }
            return Ok(None);
        }
        Step::Hostile(h) => hostile.apply(scope, &h.event(seq)).map(|m| match m.value {
            ApplyOutcome::Applied(w) => {
                let c = changes_of(&w);
                written = Some(w.map);
                Expected::Applied(c, true)
            }
            ApplyOutcome::Rejected(r) => Expected::Rejected(r.code),
            ApplyOutcome::Invalid(_) => Expected::Invalid,
        }),
        Step::Batch(hs) => {
            let mut enc = BatchEncoder::new();
            let events: Vec<_> = hs
                .iter()
                .enumerate()
                .map(|(i, h)| h.event(seq + i as u64))
                .collect();
            for e in &events {
                enc.push(&e.as_event_ref());
            }
            hostile
                .apply_batch(scope, &enc.finish(), hs.len() as u32)
                .map(|m| match m.value {
                    BatchOutcome::Applied(w) => {
                        let c = changes_of(&w);
                        written = Some(w.map);
                        Expected::Applied(c, true)
                    }
                    BatchOutcome::Failed { index, error } => Expected::BatchFailed(
                        index,
                        match error {
                            EventFailure::Rejected(r) => Some(r.code),
                            EventFailure::Invalid(_) => None,
                        },
                    ),
                })
        }
        Step::Member(m) => membership
            .apply(scope, &m.event(seq))
            .map(|m| match m.value {
                ApplyOutcome::Applied(w) => {
                    let c = changes_of(&w);
                    written = Some(w.map);
                    Expected::Applied(c, false)
                }
                ApplyOutcome::Rejected(r) => Expected::Rejected(r.code),
                ApplyOutcome::Invalid(_) => Expected::Invalid,
            }),
    };
    let want = expected(step, model, &limits, seq);
    let got = match got {
        Ok(g) => g,
        Err(RuntimeError::StateLimit { error, .. }) => {
            prop_assert_eq!(&error.realm, PROP_REALM);
            Expected::Limit((error.limit, error.actual, error.max))
        }
        Err(RuntimeError::Trap {
            cause: TrapCause::Panic(m),
            realm,
            ..
        }) => {
            prop_assert_eq!(realm.as_deref(), Some(PROP_REALM));
            prop_assert!(m.contains("deliberate panic"), "{}", m);
            Expected::Panic
        }
        Err(e) => return Err(TestCaseError::fail(format!("{step:?}: unexpected {e}"))),
    };
    match (&want, &got) {
        (Expected::Applied(w, check), Expected::Applied(g, _)) => {
            if *check && w != g {
                let first = w.iter().zip(g.iter()).find(|(a, b)| a != b);
                return Err(TestCaseError::fail(format!(
                    "changes of {step:?}: model {want:?}, host {got:?}, first difference {first:?}"
                )));
            }
            for (k, v) in w {
                match v {
                    Some(v) => model.insert(k.clone(), v.clone()),
                    None => model.remove(k),
                };
            }
            let map = written.expect("an applied call writes a map");
            prop_assert_eq!(map.len(), model.len() as u64);
            prop_assert!(
                map.iter().eq(model.iter().map(|(k, v)| (&k[..], &v[..]))),
                "after {:?} the host's map differs from the model",
                step
            );
            Ok(Some(map))
        }
        _ => {
            prop_assert_eq!(&want, &got, "{:?}", step);
            Ok(None)
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: prop_cases(),
        max_shrink_iters: 2000,
        max_shrink_time: 120_000,
        ..ProptestConfig::default()
    })]

    /// Random sequences of calls through the real sandbox — sets, scans,
    /// deletes (membership), rejections after writes, panics after writes,
    /// writes past each limit, all-or-nothing batches, queries that write —
    /// against a `BTreeMap` model of the realm: after each call the host's
    /// committed map (from `Written.map` of successful calls only) equals the
    /// model, each call's reported changes equal the model's, every failure
    /// has the model's typed cause, and nothing from a failed call leaks into
    /// later calls.
    #[test]
    fn keyed_state_matches_a_btreemap_model(
        limits in proptest::sample::select(PropLimits::ALL.to_vec()),
        steps in proptest::collection::vec(step_strategy(), 1..24),
    ) {
        let (hostile, _) = limits.plugins();
        let mut map = init_map(hostile, PROP_REALM);
        let mut model: Entries = entries(&map);
        prop_assert_eq!(model.len(), 1);
        for (i, step) in steps.iter().enumerate() {
            let seq = 100 + 10 * i as u64;
            if let Some(next) = run_step(step, seq, &map, &mut model, limits)? {
                map = next;
            } else {
                // A failed call or a query: the committed map is what it was
                // and the model did not move.
                prop_assert!(
                    map.iter().eq(model.iter().map(|(k, v)| (&k[..], &v[..]))),
                    "after {:?} the committed map differs from the model",
                    step
                );
            }
        }
        // Nothing of the failed calls shows in a final full read.
        run_step(&Step::Read, 0, &map, &mut model, limits)?;
    }
}
