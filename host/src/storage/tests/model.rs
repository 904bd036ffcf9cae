//! Model-based property test: random appends, full and delta snapshots,
//! reads, clean reopens and crash-like reopens against a `BTreeMap` model,
//! through the `Storage` trait of a [`PartitionedStorage`] of one to three
//! partitions (one is exactly a single [`RedbStorage`]).

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

#[derive(Debug, Clone)]
enum Step {
    /// Append `n` events to realm `r`, with the first seq shifted by `skew`
    /// (0 = correct, negative = duplicate, positive = gap).
    Append {
        r: usize,
        n: u64,
        skew: i64,
        /// Append with plugin version V2 instead of V1.
        v2: bool,
    },
    /// A full snapshot of realm `r` at `last_seq - back`. `mangle` 0 swaps
    /// the first two entries, 1 repeats the first (both refused as
    /// unsorted, if there are entries to mangle); anything else sends them
    /// as they are.
    Full {
        r: usize,
        back: u64,
        state_version: u32,
        map: BTreeMap<Vec<u8>, Vec<u8>>,
        mangle: u8,
    },
    /// A delta of realm `r` at `last_seq - back` onto the stored snapshot's
    /// seq shifted by `base_skew` (0 = correct, else refused).
    Delta {
        r: usize,
        back: u64,
        base_skew: i64,
        changes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    },
    /// Read realm `r` from `after`.
    Read { r: usize, after: u64 },
    /// Clean close (the tail is indexed) and reopen with another inline
    /// snapshot limit: maps stored under the old one read back the same.
    Reopen { inline: u64 },
    /// Close without indexing the tail, as a crash would, and reopen: the
    /// tail is rebuilt from the log.
    CrashReopen { inline: u64 },
}

/// Keys from a small alphabet, so that deltas hit existing keys often.
fn key() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(0..4u8, 0..3)
}

/// Values up to 300 bytes: a map of a handful of entries crosses the inline
/// limit (see [`inline_limit`]) both ways.
fn value() -> impl Strategy<Value = Vec<u8>> {
    (any::<u8>(), 0..300usize).prop_map(|(b, n)| vec![b; n])
}

/// The inline snapshot limit: mostly small, so that maps move between the
/// inline and the row layout often; sometimes the default.
fn inline_limit() -> impl Strategy<Value = u64> {
    prop_oneof![3 => 0..1200u64, 1 => Just(INLINE_SNAPSHOT_BYTES)]
}

/// How far behind the last seq a snapshot is taken: mostly at it.
fn back() -> impl Strategy<Value = u64> {
    prop_oneof![3 => Just(0u64), 1 => 1..3u64]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        5 => (0..4usize, 1..4u64, prop_oneof![8 => Just(0i64), 1 => -2..0i64, 1 => 1..3i64], any::<bool>())
            .prop_map(|(r, n, skew, v2)| Step::Append { r, n, skew, v2 }),
        2 => (0..4usize, back(), 0..3u32, proptest::collection::btree_map(key(), value(), 0..12), 0..12u8)
            .prop_map(|(r, back, state_version, map, mangle)| Step::Full { r, back, state_version, map, mangle }),
        5 => (
            0..4usize,
            back(),
            prop_oneof![6 => Just(0i64), 1 => -3..0i64, 1 => 1..3i64],
            proptest::collection::vec((key(), proptest::option::weighted(0.5, value())), 0..8),
        )
            .prop_map(|(r, back, base_skew, changes)| Step::Delta { r, back, base_skew, changes }),
        2 => (0..4usize, 0..12u64).prop_map(|(r, after)| Step::Read { r, after }),
        1 => inline_limit().prop_map(|inline| Step::Reopen { inline }),
        1 => inline_limit().prop_map(|inline| Step::CrashReopen { inline }),
    ]
}

#[derive(Debug, Clone, PartialEq)]
struct ModelSnap {
    seq: u64,
    state_version: u32,
    map: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Rows stored for it: one per entry if the map was larger than the
    /// inline limit when it was written, else none.
    rows: usize,
}

impl ModelSnap {
    fn stored(&self) -> Snapshot {
        Snapshot {
            seq: self.seq,
            plugin_version: V2,
            state_version: self.state_version,
            entries: self.map.iter().map(|(k, v)| (b(k), b(v))).collect(),
        }
    }
}

#[derive(Default)]
struct Model {
    logs: BTreeMap<usize, Vec<EventRecord>>,
    snaps: BTreeMap<usize, ModelSnap>,
    versions: BTreeMap<usize, PluginVersion>,
}

fn realm_name(r: usize) -> String {
    format!("m/{r}")
}
fn realm_type(r: usize) -> &'static str {
    if r.is_multiple_of(2) { "even" } else { "odd" }
}

/// The refusal a snapshot at `seq` of a realm with `last` events and a
/// stored snapshot at `stored` gets from the checks every write shares, if
/// any.
fn common_refusal(last: u64, seq: u64, stored: u64) -> Option<&'static str> {
    if last == 0 {
        Some("unknown")
    } else if seq == 0 {
        Some("invalid")
    } else if seq < stored {
        Some("stale")
    } else {
        None
    }
}

fn refusal_kind(e: &StorageError) -> &'static str {
    match e {
        StorageError::UnknownRealm(_) => "unknown",
        StorageError::InvalidRequest(_) => "invalid",
        StorageError::StaleSnapshot { .. } => "stale",
        StorageError::SnapshotBaseMismatch { .. } => "base",
        StorageError::UnsortedSnapshot { .. } => "unsorted",
        _ => "other",
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn storage_matches_model(
        steps in proptest::collection::vec(step(), 1..40),
        checkpoint_events in 0..8usize,
        checkpoint_realms in 1..3usize,
        inline in inline_limit(),
        // Off, a cache emptied every couple of realms, and the default.
        realm_cache in prop_oneof![Just(0usize), 1..3usize, Just(256 * 1024)],
        partitions in 1..4usize,
    ) {
        let dir = tempfile::tempdir().unwrap();
        // Tiny checkpoint thresholds, so that runs mix indexed and unindexed
        // events, partial checkpoints, and recovery scans.
        let mut config = StorageConfig {
            checkpoint_events,
            checkpoint_realms,
            inline_snapshot_bytes: inline,
            realm_cache,
            partitions,
            ..StorageConfig::default()
        };
        let rows_for = |map: &BTreeMap<Vec<u8>, Vec<u8>>, limit: u64| {
            let bytes: u64 = map.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum();
            if bytes > limit { map.len() } else { 0 }
        };
        let mut s = PartitionedStorage::open_with(dir.path(), config.clone()).unwrap();
        prop_assert_eq!(s.partitions(), partitions);
        let mut m = Model::default();
        for st in steps {
            match st {
                Step::Append { r, n, skew, v2 } => {
                    let version = if v2 { V2 } else { V1 };
                    let log = m.logs.entry(r).or_default();
                    let last = log.len() as u64;
                    let first = (last as i64 + 1 + skew).max(1) as u64;
                    let events: Vec<_> = (first..first + n).map(|q| ev(q, &realm_name(r))).collect();
                    let res = run(Storage::append(&s, AppendRequest {
                        realm_id: rid(&realm_name(r)),
                        realm_type: realm_type(r).into(),
                        plugin_version: version,
                        events: events.clone(),
                    }));
                    if first == last + 1 {
                        prop_assert_eq!(res.unwrap(), AppendAck { last_seq: last + n, created: last == 0 });
                        log.extend(events);
                        m.versions.insert(r, version);
                    } else if first <= last {
                        let is_dup = matches!(res, Err(StorageError::Duplicate { .. }));
                        prop_assert!(is_dup, "{:?}", res);
                    } else {
                        let is_gap = matches!(res, Err(StorageError::Gap { .. }));
                        prop_assert!(is_gap, "{:?}", res);
                    }
                }
                Step::Full { r, back, state_version, map, mangle } => {
                    let last = m.logs.get(&r).map_or(0, |l| l.len() as u64);
                    let seq = last.saturating_sub(back);
                    let stored = m.snaps.get(&r).map_or(0, |s| s.seq);
                    let mut entries: Vec<(Bytes, Bytes)> = map.iter().map(|(k, v)| (b(k), b(v))).collect();
                    let unsorted = match mangle {
                        0 if entries.len() >= 2 => {
                            entries.swap(0, 1);
                            true
                        }
                        1 if !entries.is_empty() => {
                            entries.insert(1, entries[0].clone());
                            true
                        }
                        _ => false,
                    };
                    let res = run(Storage::put_snapshot(&s, &rid(&realm_name(r)), SnapshotWrite {
                        seq,
                        plugin_version: V2,
                        state_version,
                        body: SnapshotBody::Full(entries),
                    }));
                    // Key order is checked before anything else.
                    let want = if unsorted { Some("unsorted") } else { common_refusal(last, seq, stored) };
                    match want {
                        Some(kind) => {
                            let got = res.as_ref().err().map(refusal_kind);
                            prop_assert_eq!(got, Some(kind), "{:?}", res);
                        }
                        None => {
                            res.unwrap();
                            let rows = rows_for(&map, config.inline_snapshot_bytes);
                            m.snaps.insert(r, ModelSnap { seq, state_version, map, rows });
                        }
                    }
                }
                Step::Delta { r, back, base_skew, changes } => {
                    let last = m.logs.get(&r).map_or(0, |l| l.len() as u64);
                    let seq = last.saturating_sub(back);
                    let current = m.snaps.get(&r).cloned();
                    let stored = current.as_ref().map_or(0, |s| s.seq);
                    let base_seq = (stored as i64 + base_skew).max(0) as u64;
                    // The state version is the snapshot's own, whatever the base had.
                    let state_version = (seq % 3) as u32;
                    let res = run(Storage::put_snapshot(&s, &rid(&realm_name(r)), SnapshotWrite {
                        seq,
                        plugin_version: V2,
                        state_version,
                        body: SnapshotBody::Delta {
                            base_seq,
                            changes: changes.iter().map(|(k, v)| (b(k), v.as_deref().map(b))).collect(),
                        },
                    }));
                    let want = common_refusal(last, seq, stored)
                        .or((base_seq != stored).then_some("base"));
                    match want {
                        Some(kind) => {
                            let got = res.as_ref().err().map(refusal_kind);
                            prop_assert_eq!(got, Some(kind), "{:?}", res);
                        }
                        None => {
                            res.unwrap();
                            let mut map = current.map(|c| c.map).unwrap_or_default();
                            for (k, v) in changes {
                                match v {
                                    Some(v) => map.insert(k, v),
                                    None => map.remove(&k),
                                };
                            }
                            let rows = rows_for(&map, config.inline_snapshot_bytes);
                            m.snaps.insert(r, ModelSnap { seq, state_version, map, rows });
                        }
                    }
                }
                Step::Read { r, after } => {
                    let want: Vec<_> = m.logs.get(&r).map_or(vec![], |l| l.iter().filter(|e| e.seq > after).cloned().collect());
                    prop_assert_eq!(run(Storage::events_since(&s, &rid(&realm_name(r)), after)).unwrap(), want);
                }
                Step::Reopen { inline } => {
                    drop(s);
                    config.inline_snapshot_bytes = inline;
                    s = PartitionedStorage::open_with(dir.path(), config.clone()).unwrap();
                    prop_assert_eq!(s.recovered_events(), 0);
                }
                Step::CrashReopen { inline } => {
                    s.close_without_checkpoint();
                    config.inline_snapshot_bytes = inline;
                    s = PartitionedStorage::open_with(dir.path(), config.clone()).unwrap();
                }
            }
            // Invariants after every step.
            for r in 0..4 {
                let id = rid(&realm_name(r));
                let log = m.logs.get(&r).cloned().unwrap_or_default();
                let meta = run(Storage::realm_meta(&s, &id)).unwrap();
                if log.is_empty() {
                    prop_assert_eq!(meta, None);
                    continue;
                }
                let meta = meta.unwrap();
                prop_assert_eq!(meta.last_seq, log.len() as u64);
                prop_assert_eq!(meta.realm_type.as_str(), realm_type(r));
                prop_assert_eq!(meta.plugin_version, m.versions[&r]);
                let snap = m.snaps.get(&r).map(ModelSnap::stored);
                prop_assert_eq!(meta.last_snapshot_seq, snap.as_ref().map_or(0, |s| s.seq));
                let load = run(Storage::load_realm(&s, &id)).unwrap().unwrap();
                let from = snap.as_ref().map_or(0, |s| s.seq);
                prop_assert_eq!(&load.snapshot, &snap);
                prop_assert_eq!(run(Storage::load_snapshot(&s, &id)).unwrap(), snap);
                prop_assert_eq!(load.tail, log.iter().filter(|e| e.seq > from).cloned().collect::<Vec<_>>());
                // The layout follows the map's size when it was written:
                // rows only for a map larger than the inline limit, one per
                // entry.
                let want_rows = m.snaps.get(&r).map_or(0, |s| s.rows);
                let home = s.partition(s.partition_of(&id));
                prop_assert_eq!(home.snapshot_rows(&id).unwrap(), want_rows);
            }
            for ty in ["even", "odd"] {
                let want: Vec<RealmId> = m.logs.iter()
                    .filter(|(r, l)| realm_type(**r) == ty && !l.is_empty())
                    .map(|(r, _)| rid(&realm_name(*r)))
                    .collect();
                prop_assert_eq!(run(Storage::list_realms(&s, ty, None, 100)).unwrap(), want);
            }
        }
    }
}
