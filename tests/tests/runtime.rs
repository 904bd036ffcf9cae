//! The plugin runtime against real components: the example plugins behave,
//! and deliberately hostile plugins fail one call each without hurting the
//! host or any other plugin.

use std::sync::Arc;
use std::time::Instant;

use realmhost::EventRecord;
use realmhost::runtime::{
    ApplyOutcome, BatchOutcome, PluginRuntime, RuntimeConfig, RuntimeError, TrapCause,
};
use realmhost_guest::{encode_payload, entry};
use realmhost_plugin_artifacts::{COUNTER, LEDGER, MEMBERSHIP, fixtures};
use realmhost_plugin_ledger::{Ledger, Tx};

fn runtime() -> PluginRuntime {
    PluginRuntime::new(RuntimeConfig {
        // Small limits keep the hostile tests fast.
        fuel_per_call: 20_000_000,
        max_memory_bytes: 32 << 20,
        max_output_bytes: 1 << 20,
        ..RuntimeConfig::default()
    })
    .expect("runtime")
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

#[test]
fn example_plugins_describe_themselves() {
    let rt = runtime();
    for (bytes, ty) in [
        (COUNTER, "counter"),
        (LEDGER, "ledger"),
        (MEMBERSHIP, "membership"),
    ] {
        let p = rt.load(bytes).unwrap();
        assert_eq!(p.realm_type(), ty);
        assert!(!p.info().semver.is_empty());
        assert_eq!(p.version(), realmhost::PluginVersion::of(bytes));
    }
}

/// The component and the native build of the same logic agree byte for byte.
#[test]
fn ledger_component_matches_native_logic() {
    let rt = runtime();
    let p = rt.load(LEDGER).unwrap();
    let txs = [
        open("a"),
        open("b"),
        Tx::Deposit {
            account: "a".into(),
            amount: 100,
        },
        Tx::Transfer {
            from: "a".into(),
            to: "b".into(),
            amount: 40,
        },
    ];
    let mut wasm_state = p.init("realm-1").unwrap().value;
    let mut native_state = entry::init::<Ledger>("realm-1");
    assert_eq!(wasm_state, native_state);
    let events: Vec<_> = txs
        .iter()
        .enumerate()
        .map(|(i, t)| tx(i as u64 + 1, t))
        .collect();
    for e in &events {
        let m = p.apply(&wasm_state, e).unwrap();
        assert!(m.fuel > 0);
        wasm_state = match m.value {
            ApplyOutcome::Applied(s) => s,
            other => panic!("{other:?}"),
        };
        native_state = entry::apply::<Ledger>(&native_state, &e.as_event_ref()).unwrap();
    }
    assert_eq!(wasm_state, native_state);

    // Replay through apply-batch gives the same bytes.
    let replayed = p
        .replay(p.init("realm-1").unwrap().value, &events, 3)
        .unwrap()
        .value
        .unwrap();
    assert_eq!(replayed, wasm_state);

    // Overdraft is a rejection, not an error.
    let bad = tx(
        5,
        &Tx::Withdraw {
            account: "b".into(),
            amount: 1000,
        },
    );
    match p.apply(&wasm_state, &bad).unwrap().value {
        ApplyOutcome::Rejected(r) => assert_eq!(r.code, "overdraft"),
        other => panic!("{other:?}"),
    }
    // A payload that is not a ledger event is invalid input.
    match p
        .apply(&wasm_state, &event(5, "tx", vec![0xff, 0xff, 0xff]))
        .unwrap()
        .value
    {
        ApplyOutcome::Invalid(m) => assert!(m.contains("payload"), "{m}"),
        other => panic!("{other:?}"),
    }
    // Query and JSON event encoding.
    assert_eq!(
        p.query(&wasm_state, r#"{"balance":"a"}"#).unwrap().unwrap(),
        r#"{"balance":60}"#
    );
    let bytes = p
        .encode_event("tx", r#"{"open":{"account":"c"}}"#)
        .unwrap()
        .unwrap();
    assert_eq!(bytes, encode_payload(&open("c")));
    assert!(p.encode_event("tx", "not json").unwrap().is_err());
}

#[test]
fn batch_failure_names_the_event() {
    let rt = runtime();
    let p = rt.load(LEDGER).unwrap();
    let events = vec![tx(1, &open("a")), tx(2, &open("a"))];
    let init = p.init("r").unwrap().value;
    let (seq, err) = p.replay(init, &events, 10).unwrap().value.unwrap_err();
    assert_eq!(seq, 2);
    assert!(matches!(err, ApplyOutcome::Rejected(r) if r.code == "account_exists"));
}

#[test]
fn restore_migrates_old_snapshots_and_refuses_garbage() {
    let rt = runtime();
    let p = rt.load(LEDGER).unwrap();
    let mut v1 = realmhost_plugin_ledger::StateV1::default();
    v1.accounts.insert("old".into(), 5);
    let mut snap = vec![1u8];
    snap.extend(encode_payload(&v1));
    let restored = p.restore(&snap).unwrap().value.unwrap();
    assert_eq!(
        entry::decode_state::<Ledger>(&restored).unwrap().accounts["old"],
        5
    );
    assert!(
        p.restore(&[2, 0xff, 0xff, 0xff, 0xff])
            .unwrap()
            .value
            .is_err()
    );
    assert!(p.restore(&[]).unwrap().value.is_err());
}

fn hostile_call(p: &realmhost::runtime::Plugin, kind: &str) -> Result<ApplyOutcome, RuntimeError> {
    p.apply(&[1, 0], &event(1, kind, vec![])).map(|m| m.value)
}

fn trap_cause(r: Result<ApplyOutcome, RuntimeError>) -> TrapCause {
    match r {
        Err(RuntimeError::Trap {
            realm_type, cause, ..
        }) => {
            assert_eq!(realm_type, "hostile");
            cause
        }
        other => panic!("expected a trap, got {other:?}"),
    }
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
    // The plugin still serves the next call on a fresh instance.
    assert_eq!(
        hostile_call(&p, "ok").unwrap(),
        ApplyOutcome::Applied(vec![1, 1])
    );
}

#[test]
fn unbounded_allocation_hits_the_memory_cap() {
    let rt = runtime();
    let p = rt.load(fixtures::HOSTILE).unwrap();
    assert_eq!(
        trap_cause(hostile_call(&p, "alloc")),
        TrapCause::OutOfMemory
    );
    assert_eq!(
        hostile_call(&p, "ok").unwrap(),
        ApplyOutcome::Applied(vec![1, 1])
    );
}

#[test]
fn panic_is_reported_with_its_message() {
    let rt = runtime();
    let p = rt.load(fixtures::HOSTILE).unwrap();
    match trap_cause(hostile_call(&p, "panic")) {
        TrapCause::Panic(m) => assert!(m.contains("deliberate panic in apply"), "{m}"),
        other => panic!("expected a panic, got {other:?}"),
    }
    assert_eq!(
        hostile_call(&p, "ok").unwrap(),
        ApplyOutcome::Applied(vec![1, 1])
    );
}

#[test]
fn stack_overflow_is_a_trap() {
    let rt = runtime();
    let p = rt.load(fixtures::HOSTILE).unwrap();
    assert_eq!(
        trap_cause(hostile_call(&p, "stack")),
        TrapCause::StackOverflow
    );
}

#[test]
fn oversized_output_is_refused() {
    let rt = runtime();
    let p = rt.load(fixtures::HOSTILE).unwrap();
    match hostile_call(&p, "huge") {
        Err(RuntimeError::OutputTooLarge { size, limit, .. }) => {
            assert_eq!(size, 8 << 20);
            assert_eq!(limit, 1 << 20);
        }
        other => panic!("expected OutputTooLarge, got {other:?}"),
    }
}

/// Garbage state bytes come back as bytes (the host cannot know a plugin's
/// format), and the *next* plugin that reads them says they are invalid.
#[test]
fn garbage_state_is_caught_by_the_reader() {
    let rt = runtime();
    let hostile = rt.load(fixtures::HOSTILE).unwrap();
    let ledger = rt.load(LEDGER).unwrap();
    let garbage = match hostile_call(&hostile, "garbage").unwrap() {
        ApplyOutcome::Applied(s) => s,
        other => panic!("{other:?}"),
    };
    match ledger.apply(&garbage, &tx(1, &open("a"))).unwrap().value {
        ApplyOutcome::Invalid(m) => assert!(m.contains("state"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(ledger.restore(&garbage).unwrap().value.is_err());
    assert!(ledger.query(&garbage, "").unwrap().is_err());
    match ledger
        .apply_batch(&garbage, &[1, 0, 0, 0, 0], 0)
        .unwrap()
        .value
    {
        BatchOutcome::Failed {
            index: 0,
            error: ApplyOutcome::Invalid(_),
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

/// Hostile calls on many threads while honest plugins keep working: no panic,
/// no poisoned state, every honest call correct.
#[test]
fn hostile_plugin_does_not_disturb_others() {
    let rt = Arc::new(runtime());
    let hostile = Arc::new(rt.load(fixtures::HOSTILE).unwrap());
    let counter = Arc::new(rt.load(COUNTER).unwrap());
    let mut threads = Vec::new();
    for t in 0..2 {
        let hostile = hostile.clone();
        threads.push(std::thread::spawn(move || {
            for (i, kind) in ["panic", "loop", "alloc", "garbage", "huge", "ok"]
                .iter()
                .cycle()
                .take(12)
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
    let mut state = counter.init("c").unwrap().value;
    for i in 1..=2000u64 {
        let payload = encode_payload(&realmhost_plugin_counter::Op::Add(1));
        state = match counter
            .apply(&state, &event(i, "add", payload))
            .unwrap()
            .value
        {
            ApplyOutcome::Applied(s) => s,
            other => panic!("{other:?}"),
        };
    }
    for t in threads {
        t.join().expect("hostile thread");
    }
    let s = entry::decode_state::<realmhost_plugin_counter::Counter>(&state).unwrap();
    assert_eq!(s.value, 2000);
    assert!(
        hostile
            .stats()
            .faults
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 8
    );
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
    assert_eq!(rt3.load(COUNTER).unwrap().realm_type(), "counter");
}

#[test]
fn registry_swaps_rolls_back_and_quarantines_faulty_versions() {
    use realmhost::runtime::{PluginRegistry, RegistryError};
    let rt = Arc::new(
        PluginRuntime::new(RuntimeConfig {
            fuel_per_call: 5_000_000,
            quarantine_faults: 3,
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

    // A faulty version: hostile panics on every call after its realm type's active plugin is asked.
    let hostile = reg.load(fixtures::HOSTILE, true).unwrap();
    assert_eq!(hostile.info.realm_type, "hostile");
    let p = reg.get("hostile").unwrap();
    for _ in 0..4 {
        assert!(hostile_call(&p, "panic").is_err());
    }
    match reg.get("hostile") {
        Err(RegistryError::Quarantined { last_fault, .. }) => {
            assert!(last_fault.contains("deliberate panic"), "{last_fault}")
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

    // Swap and roll back between two versions of one realm type. The counter
    // component under another name would be a different type, so use the
    // ledger under two content hashes (the second has an extra custom section).
    let v2 = reg.load(&fixtures::ledger_next_version(), false).unwrap();
    assert!(!v2.activated);
    assert_eq!(reg.get("ledger").unwrap().version(), first.info.version);
    reg.swap("ledger", v2.info.version).unwrap();
    assert_eq!(reg.get("ledger").unwrap().version(), v2.info.version);
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
