//! Hostile plugins: each misbehaviour fails one call, with a typed cause.

#[allow(unused_imports)]
use super::*;

pub(super) const HOSTILE_REALM: &str = "hostile-realm";

/// What the hostile fixture's `init` writes: the `ok` counter at 0.
pub(super) fn hostile_base() -> StateMap {
    state_of(&[(b"n".to_vec(), 0u64.to_le_bytes().to_vec())].into())
}

pub(super) fn hostile_call_in(
    p: &Plugin,
    realm: &str,
    kind: &str,
) -> Result<ApplyOutcome, RuntimeError> {
    p.apply(Scope::new(realm, &hostile_base()), &event(1, kind, vec![]))
        .map(|m| m.value)
}

pub(super) fn hostile_call(p: &Plugin, kind: &str) -> Result<ApplyOutcome, RuntimeError> {
    hostile_call_in(p, HOSTILE_REALM, kind)
}

/// The cause of a trap, checking that it names the plugin and the realm.
pub(super) fn trap_cause(r: Result<ApplyOutcome, RuntimeError>) -> TrapCause {
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
pub(super) fn still_counts(p: &Plugin) {
    let w = match hostile_call(p, "ok") {
        Ok(ApplyOutcome::Applied(w, _)) => w,
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

/// stdout and stderr are served (routed to the host log, rate-limited), so a
/// plugin that prints keeps working; its writes are kept.
#[test]
fn printing_plugins_work() {
    let rt = runtime();
    let p = rt.load(fixtures::HOSTILE).unwrap();
    for _ in 0..3 {
        match hostile_call(&p, "print") {
            Ok(ApplyOutcome::Applied(w, _)) => {
                assert_eq!(w.map.get(b"printed"), Some(&1u64.to_le_bytes()[..]));
            }
            other => panic!("a printing plugin must not trap, got {other:?}"),
        }
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
        ApplyOutcome::Applied(w, _) => w.map,
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
            // The error says what usually causes it and where to read more.
            assert!(msg.contains("event.timestamp_ms"), "{msg}");
            assert!(msg.contains("README"), "{msg}");
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
            assert!(msg.contains("realmhost:realm@0.3.0"), "{msg}");
            assert!(msg.contains("0.2.0"), "{msg}");
            let RuntimeError::ContractVersion { found, required } = e else {
                unreachable!()
            };
            assert_eq!(found, "realmhost:realm@0.1.0");
            assert_eq!(required, "0.3.0");
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
    let first = reg.load(LEDGER, LoadOptions::default()).unwrap();
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
    assert!(
        reg.load(LEDGER, LoadOptions::activate())
            .unwrap()
            .already_loaded
    );

    // A faulty version: hostile panics on every call. Faults in one realm
    // (however many) leave it in service; faults across
    // `quarantine_realms` distinct realms take it out.
    let hostile = reg
        .load(fixtures::HOSTILE, LoadOptions::activate())
        .unwrap();
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
    // The same semantic version under another hash is refused unless forced:
    // a version name must mean one build.
    match reg.load(&fixtures::ledger_next_version(), LoadOptions::default()) {
        Err(RegistryError::DuplicateSemver {
            semver, existing, ..
        }) => {
            assert_eq!(semver, first.info.semver);
            assert_eq!(existing, first.info.version);
        }
        other => panic!("expected a duplicate-version refusal, got {other:?}"),
    }
    let v2 = reg
        .load(
            &fixtures::ledger_next_version(),
            LoadOptions {
                activate: false,
                force: true,
            },
        )
        .unwrap();
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
    reg.load(fixtures::HOSTILE, LoadOptions::activate())
        .unwrap();
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
        Ok(ApplyOutcome::Applied(_, _))
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
