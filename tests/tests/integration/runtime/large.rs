//! Large realms.

#[allow(unused_imports)]
use super::*;

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
    let ApplyOutcome::Applied(w, _) = m.value else {
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
