//! State limits, read-only queries, no realm in scope.

#[allow(unused_imports)]
use super::*;

/// A hostile plugin under `limits` (compiled once per test through `cache`).
pub(super) fn hostile_with(cache: &Path, limits: StateLimits) -> Plugin {
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

pub(super) fn grow(seq: u64, n: u32) -> EventRecord {
    event(seq, "grow", n.to_string().into_bytes())
}

/// The keys `grow` writes: `g/` ++ seq (u64 BE) ++ i (u32 BE), value i (u64 LE).
pub(super) fn grow_entry(prefix: &[u8], seq: u64, i: u32) -> (Vec<u8>, Vec<u8>) {
    let mut k = prefix.to_vec();
    k.extend_from_slice(&seq.to_be_bytes());
    k.extend_from_slice(&i.to_be_bytes());
    (k, u64::from(i).to_le_bytes().to_vec())
}

pub(super) fn expect_limit(
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
        // Distinct keys through the SDK's write-back cache: the buffered
        // writes reach the host in write-batches, one operation each.
        (
            roomy.clone(),
            event(2, "cached", b"1001".to_vec()),
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
