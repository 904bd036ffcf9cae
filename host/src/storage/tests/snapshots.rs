//! Keyed snapshots: full and delta writes, the inline and row layouts,
//! refusals, damaged records, and the upgrade from format 2.

use std::collections::BTreeMap;
use std::path::Path;

use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use super::*;
use crate::storage::codec::{self, RealmRow};

const SYS: TableDefinition<&str, u64> = TableDefinition::new("sys");
const SNAPSHOTS: TableDefinition<u64, &[u8]> = TableDefinition::new("snapshots");
const ENTRIES: TableDefinition<(u64, &[u8]), &[u8]> = TableDefinition::new("snapshot_entries");

fn delta(seq: u64, base_seq: u64, changes: &[(&[u8], Option<&[u8]>)]) -> SnapshotWrite {
    SnapshotWrite {
        seq,
        plugin_version: V2,
        state_version: 1,
        body: SnapshotBody::Delta {
            base_seq,
            changes: changes.iter().map(|(k, v)| (b(k), v.map(b))).collect(),
        },
    }
}

fn as_stored(seq: u64, map: &BTreeMap<Vec<u8>, Vec<u8>>) -> Snapshot {
    Snapshot {
        seq,
        plugin_version: V2,
        state_version: 1,
        entries: map.iter().map(|(k, v)| (b(k), b(v))).collect(),
    }
}

fn full_of(seq: u64, map: &BTreeMap<Vec<u8>, Vec<u8>>) -> SnapshotWrite {
    SnapshotWrite {
        seq,
        plugin_version: V2,
        state_version: 1,
        body: SnapshotBody::Full(map.iter().map(|(k, v)| (b(k), b(v))).collect()),
    }
}

fn map_bytes(map: &BTreeMap<Vec<u8>, Vec<u8>>) -> u64 {
    map.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum()
}

#[test]
fn deltas_apply_onto_the_stored_snapshot_and_refusals_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = RedbStorage::open(dir.path()).unwrap();
    let a = rid("a");
    assert!(matches!(
        s.put_snapshot_blocking(&a, delta(1, 0, &[])),
        Err(StorageError::UnknownRealm(_))
    ));
    s.append_blocking(req("a", "t", 1..=10)).unwrap();

    // No snapshot stored: a delta must name base 0, and applies to the
    // empty map; deleting an absent key does nothing.
    match s.put_snapshot_blocking(&a, delta(2, 1, &[(b"x", Some(b"1"))])) {
        Err(e @ StorageError::SnapshotBaseMismatch { .. }) => {
            assert!(e.is_rejection());
            assert!(matches!(
                e,
                StorageError::SnapshotBaseMismatch {
                    base_seq: 1,
                    stored_seq: 0,
                    ..
                }
            ));
        }
        other => panic!("expected SnapshotBaseMismatch, got {other:?}"),
    }
    assert_eq!(s.load_snapshot(&a).unwrap(), None);
    s.put_snapshot_blocking(&a, delta(2, 0, &[(b"x", Some(b"1")), (b"gone", None)]))
        .unwrap();
    assert_eq!(
        s.load_snapshot(&a).unwrap(),
        Some(stored(2, &[(b"x", b"1")]))
    );

    // Changes in any order; a key given twice takes its last change.
    s.put_snapshot_blocking(
        &a,
        delta(
            4,
            2,
            &[
                (b"z", Some(b"26")),
                (b"b", Some(b"first")),
                (b"x", None),
                (b"b", Some(b"second")),
                (b"c", Some(b"3")),
                (b"c", None),
            ],
        ),
    )
    .unwrap();
    let want = stored(4, &[(b"b", b"second"), (b"z", b"26")]);
    assert_eq!(s.load_snapshot(&a).unwrap(), Some(want.clone()));

    // Refusals, none of which changes anything.
    for (write, what) in [
        (delta(5, 2, &[(b"q", Some(b"1"))]), "old base"),
        (delta(5, 0, &[(b"q", Some(b"1"))]), "base 0"),
        (delta(5, 5, &[(b"q", Some(b"1"))]), "base ahead"),
        (delta(3, 4, &[(b"q", Some(b"1"))]), "stale"),
        (delta(11, 4, &[(b"q", Some(b"1"))]), "ahead of the log"),
        (delta(0, 4, &[(b"q", Some(b"1"))]), "seq 0"),
        (full(5, &[(b"b", b"1"), (b"a", b"2")]), "unsorted"),
        (full(5, &[(b"a", b"1"), (b"a", b"2")]), "repeated key"),
    ] {
        let r = s.put_snapshot_blocking(&a, write);
        assert!(
            r.as_ref().is_err_and(StorageError::is_rejection),
            "{what}: {r:?}"
        );
        assert_eq!(s.load_snapshot(&a).unwrap(), Some(want.clone()), "{what}");
        assert_eq!(s.realm_meta(&a).unwrap().unwrap().last_snapshot_seq, 4);
    }
    assert!(matches!(
        s.put_snapshot_blocking(&a, full(5, &[(b"a", b"1"), (b"c", b""), (b"c", b"2")])),
        Err(StorageError::UnsortedSnapshot { index: 2, .. })
    ));

    // A delta at the base's own seq, and the versions come from the write.
    let mut w = delta(4, 4, &[(b"b", None)]);
    w.plugin_version = V1;
    w.state_version = 9;
    s.put_snapshot_blocking(&a, w).unwrap();
    let back = s.load_snapshot(&a).unwrap().unwrap();
    assert_eq!(
        (back.seq, back.plugin_version, back.state_version),
        (4, V1, 9)
    );
    assert_eq!(back.entries, vec![(b(b"z"), b(b"26"))]);
    let load = s.load_realm(&a).unwrap().unwrap();
    assert_eq!(load.snapshot, Some(back));
    assert_eq!(load.tail, (5..=10).map(|q| ev(q, "a")).collect::<Vec<_>>());
}

/// Rejected snapshot writes share a group commit with good writes without
/// spoiling it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_snapshots_do_not_spoil_the_batch() {
    let dir = tempfile::tempdir().unwrap();
    let s = RedbStorage::open(dir.path()).unwrap();
    for i in 0..20 {
        s.append(req(&format!("r{i}"), "t", 1..=3)).await.unwrap();
    }
    let mut futs = Vec::new();
    for i in 0..20 {
        let id = rid(&format!("r{i}"));
        let w = if i % 2 == 0 {
            delta(3, 0, &[(b"k", Some(&[i as u8; 5000]))])
        } else {
            delta(3, 7, &[(b"k", Some(b"v"))])
        };
        futs.push(s.put_snapshot(&id, w));
        futs.push(s.put_snapshot(&id, delta(3, 3, &[(b"j", Some(b"w"))])));
    }
    let results = futures::future::join_all(futs).await;
    for (n, r) in results.iter().enumerate() {
        let (i, second) = (n / 2, n % 2 == 1);
        if i % 2 == 0 {
            assert!(r.is_ok(), "{n}: {r:?}");
        } else if second {
            // Its base (3) names a snapshot the first one failed to store.
            assert!(
                matches!(
                    r,
                    Err(StorageError::SnapshotBaseMismatch { stored_seq: 0, .. })
                ),
                "{n}: {r:?}"
            );
        } else {
            assert!(
                matches!(
                    r,
                    Err(StorageError::SnapshotBaseMismatch { base_seq: 7, .. })
                ),
                "{n}: {r:?}"
            );
        }
    }
    for i in 0..20 {
        let snap = s.load_snapshot(&rid(&format!("r{i}"))).unwrap();
        if i % 2 == 0 {
            let snap = snap.unwrap();
            assert_eq!(snap.entries.len(), 2);
            assert_eq!(*snap.entries[1].1, [i as u8; 5000]);
        } else {
            assert_eq!(snap, None);
        }
    }
}

#[test]
fn maps_move_between_inline_and_rows_with_their_size() {
    let dir = tempfile::tempdir().unwrap();
    let a = rid("a");
    let mut map: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let check = |s: &RedbStorage, seq: u64, map: &BTreeMap<Vec<u8>, Vec<u8>>, rows: usize| {
        assert_eq!(s.load_snapshot(&a).unwrap(), Some(as_stored(seq, map)));
        assert_eq!(s.snapshot_rows(&a).unwrap(), rows, "at seq {seq}");
    };
    {
        let s = RedbStorage::open(dir.path()).unwrap();
        s.append_blocking(req("a", "t", 1..=20)).unwrap();
        // Small: inline.
        for i in 0..4u8 {
            map.insert(vec![b'k', i], vec![i; 1000]);
        }
        s.put_snapshot_blocking(&a, full_of(1, &map)).unwrap();
        check(&s, 1, &map, 0);
        // Exactly at the limit: still inline.
        map.insert(b"pad".to_vec(), vec![0; 4096 - 4 * 1002 - 3]);
        assert_eq!(map_bytes(&map), INLINE_SNAPSHOT_BYTES);
        s.put_snapshot_blocking(
            &a,
            delta(2, 1, &[(b"pad", Some(map[&b"pad"[..]].as_slice()))]),
        )
        .unwrap();
        check(&s, 2, &map, 0);
        // One byte more: rows, one per entry.
        map.insert(b"pad".to_vec(), vec![0; 4096 - 4 * 1002 - 2]);
        s.put_snapshot_blocking(
            &a,
            delta(3, 2, &[(b"pad", Some(map[&b"pad"[..]].as_slice()))]),
        )
        .unwrap();
        check(&s, 3, &map, 5);
        // A delta that keeps it large touches rows only.
        map.insert(b"k\x09".to_vec(), vec![9; 10]);
        map.remove(&b"k\x00"[..]);
        map.insert(b"k\x01".to_vec(), vec![1; 2000]);
        s.put_snapshot_blocking(
            &a,
            delta(
                4,
                3,
                &[
                    (b"k\x09", Some(&[9; 10])),
                    (b"k\x00", None),
                    (b"k\x01", Some(&[1; 2000])),
                ],
            ),
        )
        .unwrap();
        assert!(map_bytes(&map) > INLINE_SNAPSHOT_BYTES);
        check(&s, 4, &map, 5);
    }
    // The layout survives a reopen.
    let s = RedbStorage::open(dir.path()).unwrap();
    check(&s, 4, &map, 5);
    // Shrinks below the limit: back inline, no rows left.
    map.remove(&b"k\x01"[..]);
    assert!(map_bytes(&map) <= INLINE_SNAPSHOT_BYTES);
    s.put_snapshot_blocking(&a, delta(5, 4, &[(b"k\x01", None)]))
        .unwrap();
    check(&s, 5, &map, 0);
    // Grows again by a delta onto the inline map.
    map.insert(b"big".to_vec(), vec![7; 5000]);
    s.put_snapshot_blocking(&a, delta(6, 5, &[(b"big", Some(&[7; 5000]))]))
        .unwrap();
    check(&s, 6, &map, map.len());
    // A full write of a small map drops every row; of a big one, replaces
    // them all.
    let small: BTreeMap<Vec<u8>, Vec<u8>> = [(b"s".to_vec(), b"1".to_vec())].into();
    s.put_snapshot_blocking(&a, full_of(7, &small)).unwrap();
    check(&s, 7, &small, 0);
    let big: BTreeMap<Vec<u8>, Vec<u8>> = (0..50u8).map(|i| (vec![i], vec![i; 100])).collect();
    s.put_snapshot_blocking(&a, full_of(8, &map)).unwrap();
    check(&s, 8, &map, map.len());
    s.put_snapshot_blocking(&a, full_of(9, &big)).unwrap();
    check(&s, 9, &big, 50);
    // Another realm's rows are never touched.
    s.append_blocking(req("b", "t", 1..=1)).unwrap();
    s.put_snapshot_blocking(&rid("b"), full_of(1, &map))
        .unwrap();
    s.put_snapshot_blocking(&a, full_of(10, &small)).unwrap();
    check(&s, 10, &small, 0);
    assert_eq!(
        s.load_snapshot(&rid("b")).unwrap(),
        Some(as_stored(1, &map))
    );
    assert_eq!(s.snapshot_rows(&rid("b")).unwrap(), map.len());
}

#[test]
fn a_delta_may_delete_every_key() {
    let dir = tempfile::tempdir().unwrap();
    let s = RedbStorage::open(dir.path()).unwrap();
    s.append_blocking(req("a", "t", 1..=9)).unwrap();
    let a = rid("a");
    for (seq, size) in [(2u64, 10usize), (4, 1000)] {
        // 20 entries of `size` bytes: inline, then rows.
        let map: BTreeMap<Vec<u8>, Vec<u8>> = (0..20u8).map(|i| (vec![i], vec![i; size])).collect();
        s.put_snapshot_blocking(&a, full_of(seq, &map)).unwrap();
        let rows = if size > 100 { 20 } else { 0 };
        assert_eq!(s.snapshot_rows(&a).unwrap(), rows);
        let keys: Vec<Vec<u8>> = map.keys().cloned().collect();
        let changes: Vec<(&[u8], Option<&[u8]>)> = keys.iter().map(|k| (&k[..], None)).collect();
        s.put_snapshot_blocking(&a, delta(seq + 1, seq, &changes))
            .unwrap();
        let snap = s.load_snapshot(&a).unwrap().unwrap();
        assert_eq!((snap.seq, snap.entries.len()), (seq + 1, 0));
        assert_eq!(s.snapshot_rows(&a).unwrap(), 0);
        let load = s.load_realm(&a).unwrap().unwrap();
        assert_eq!(load.meta.last_snapshot_seq, seq + 1);
        assert_eq!(load.tail.len() as u64, 9 - seq - 1);
    }
    // The empty map takes deltas like any other.
    s.put_snapshot_blocking(&a, delta(6, 5, &[(b"new", Some(b"1"))]))
        .unwrap();
    assert_eq!(
        s.load_snapshot(&a).unwrap(),
        Some(stored(6, &[(b"new", b"1")]))
    );
}

#[test]
fn a_large_map_written_full_then_changed_by_a_small_delta() {
    const N: u64 = 100_000;
    let dir = tempfile::tempdir().unwrap();
    let s = RedbStorage::open(dir.path()).unwrap();
    s.append_blocking(req("big", "t", 1..=3)).unwrap();
    let id = rid("big");
    let key = |i: u64| format!("entity/{i:012}").into_bytes();
    let mut map: BTreeMap<Vec<u8>, Vec<u8>> =
        (0..N).map(|i| (key(i), i.to_le_bytes().to_vec())).collect();
    s.put_snapshot_blocking(&id, full_of(1, &map)).unwrap();
    assert_eq!(s.snapshot_rows(&id).unwrap(), N as usize);

    // 100 changes: 40 updates, 30 deletes, 30 new keys, spread over the map.
    let mut changes: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
    for j in 0..100u64 {
        let i = j * 997 % N;
        match j % 10 {
            0..4 => changes.push((key(i), Some(vec![0xee; 8]))),
            4..7 => changes.push((key(i), None)),
            _ => changes.push((key(N + j), Some(j.to_le_bytes().to_vec()))),
        }
    }
    for (k, v) in &changes {
        match v {
            Some(v) => map.insert(k.clone(), v.clone()),
            None => map.remove(k),
        };
    }
    let w = SnapshotWrite {
        seq: 3,
        plugin_version: V2,
        state_version: 1,
        body: SnapshotBody::Delta {
            base_seq: 1,
            changes: changes
                .iter()
                .map(|(k, v)| (b(k), v.as_deref().map(b)))
                .collect(),
        },
    };
    s.put_snapshot_blocking(&id, w).unwrap();
    assert_eq!(map.len() as u64, N);
    let snap = s.load_snapshot(&id).unwrap().unwrap();
    assert_eq!(snap, as_stored(3, &map));
    assert_eq!(s.snapshot_rows(&id).unwrap(), map.len());
}

/// Close `s` and run `f` on the raw database file.
fn raw(dir: &Path, f: impl FnOnce(&redb::WriteTransaction)) {
    let db = redb::Database::open(dir.join(DB_FILE_NAME)).unwrap();
    let txn = db.begin_write().unwrap();
    f(&txn);
    txn.commit().unwrap();
}

fn assert_corrupt_naming(r: Result<impl std::fmt::Debug, StorageError>, realm: &str) {
    match r.as_ref().map_err(StorageError::cause) {
        Err(StorageError::Corrupt(m)) => assert!(m.contains(realm), "{m}"),
        Err(StorageError::RealmCorrupt { realm: r, .. }) => assert_eq!(r.as_str(), realm),
        other => panic!("expected Corrupt naming {realm}, got {other:?}"),
    }
}

#[test]
fn damaged_snapshots_are_corrupt_errors_naming_the_realm() {
    let dir = tempfile::tempdir().unwrap();
    let big: BTreeMap<Vec<u8>, Vec<u8>> = (0..10u8).map(|i| (vec![i], vec![i; 1000])).collect();
    {
        let s = RedbStorage::open(dir.path()).unwrap();
        for name in ["realm-1", "realm-2", "realm-3"] {
            s.append_blocking(req(name, "t", 1..=4)).unwrap();
            s.put_snapshot_blocking(&rid(name), full_of(2, &big))
                .unwrap();
        }
    }
    // Realm numbers are assigned in order of creation: 1, 2, 3.
    raw(dir.path(), |txn| {
        // realm-1: a garbage header.
        let mut snaps = txn.open_table(SNAPSHOTS).unwrap();
        snaps.insert(1, &[0xab; 30][..]).unwrap();
        // realm-2: a row missing (the header counts 10).
        let mut rows = txn.open_table(ENTRIES).unwrap();
        rows.remove((2, &[3u8][..])).unwrap();
        // realm-3: the header gone.
        snaps.remove(3).unwrap();
    });
    let s = RedbStorage::open(dir.path()).unwrap();
    for name in ["realm-1", "realm-2", "realm-3"] {
        let id = rid(name);
        assert_corrupt_naming(s.load_snapshot(&id), name);
        assert_corrupt_naming(s.load_realm(&id), name);
        // The log is intact.
        assert_eq!(s.events_since(&id, 0).unwrap().len(), 4);
    }
    // A delta onto a damaged header is refused and writes nothing; so is one
    // that would move the damaged rows inline (it has to read them all).
    assert_corrupt_naming(
        s.put_snapshot_blocking(&rid("realm-1"), delta(3, 2, &[(b"k", Some(b"v"))])),
        "realm-1",
    );
    let shrink: Vec<(Vec<u8>, Option<&[u8]>)> = (0..9u8).map(|i| (vec![i], None)).collect();
    let shrink: Vec<(&[u8], Option<&[u8]>)> = shrink.iter().map(|(k, v)| (&k[..], *v)).collect();
    assert_corrupt_naming(
        s.put_snapshot_blocking(&rid("realm-2"), delta(3, 2, &shrink)),
        "realm-2",
    );
    assert_eq!(s.snapshot_rows(&rid("realm-2")).unwrap(), 9);
    assert_corrupt_naming(
        s.put_snapshot_blocking(&rid("realm-3"), delta(3, 2, &[(b"k", Some(b"v"))])),
        "realm-3",
    );
    // A full write replaces whatever was there.
    for name in ["realm-1", "realm-2", "realm-3"] {
        s.put_snapshot_blocking(&rid(name), full_of(3, &big))
            .unwrap();
        assert_eq!(
            s.load_snapshot(&rid(name)).unwrap(),
            Some(as_stored(3, &big))
        );
    }
}

// ---- Upgrade from format 2 ----

/// Realms of the format-2 file: (id, events, snapshot seq or 0).
const OLD_REALMS: [(&str, u64, u64); 3] = [("old/1", 5, 3), ("old/2", 4, 4), ("old/3", 2, 0)];

/// Write a format-2 database the way release 2 did: its tables, its
/// records. Realm `old/1`'s events are indexed, the others' form the
/// unindexed tail; `old/1` and `old/2` have opaque snapshot blobs.
fn write_format_2(dir: &Path, damage_a_row: bool) {
    std::fs::create_dir_all(dir).unwrap();
    let db = redb::Database::create(dir.join(DB_FILE_NAME)).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut sys = txn.open_table(SYS).unwrap();
        let mut log = txn
            .open_table(TableDefinition::<u64, &[u8]>::new("log"))
            .unwrap();
        let mut index = txn
            .open_table(TableDefinition::<(u64, u64), &[u8]>::new("log_index"))
            .unwrap();
        let mut realms = txn
            .open_table(TableDefinition::<&str, &[u8]>::new("realms"))
            .unwrap();
        let mut by_type = txn
            .open_table(TableDefinition::<(&str, &str), ()>::new("realms_by_type"))
            .unwrap();
        let mut snapshots = txn.open_table(SNAPSHOTS).unwrap();
        let mut versions = txn
            .open_table(TableDefinition::<u32, &[u8]>::new("versions"))
            .unwrap();
        let mut meta = txn
            .open_table(TableDefinition::<&str, &[u8]>::new("meta"))
            .unwrap();
        versions.insert(0, &V1.0[..]).unwrap();
        let mut pos = 1u64;
        let mut floor = 1u64;
        for (no, (id, events, snap_seq)) in (1u64..).zip(OLD_REALMS) {
            let row = RealmRow {
                no,
                realm_type: "legacy".into(),
                last_snapshot_seq: snap_seq,
            };
            let mut row = codec::encode_realm(&row).unwrap();
            if damage_a_row && no == 2 {
                row.truncate(1);
            }
            realms.insert(id, row.as_slice()).unwrap();
            by_type.insert(("legacy", id), ()).unwrap();
            let first = pos;
            for q in 1..=events {
                let mut entry = codec::encode_entry(&ev(q, id)).unwrap();
                codec::set_entry_header(&mut entry, no, 0);
                log.insert(pos, entry.as_slice()).unwrap();
                pos += 1;
            }
            if no == 1 {
                let positions: Vec<u64> = (first..pos).collect();
                index
                    .insert(
                        (no, 1),
                        codec::encode_run(0, &positions).unwrap().as_slice(),
                    )
                    .unwrap();
                floor = pos;
            }
            if snap_seq > 0 {
                // Format 2's snapshot record: seq ‖ plugin version ‖ blob.
                let mut blob = snap_seq.to_le_bytes().to_vec();
                blob.extend_from_slice(&V1.0);
                blob.extend_from_slice(&[no as u8; 700]);
                snapshots.insert(no, blob.as_slice()).unwrap();
            }
        }
        sys.insert("format_version", 2).unwrap();
        sys.insert("next_realm_no", OLD_REALMS.len() as u64 + 1)
            .unwrap();
        sys.insert("index_floor", floor).unwrap();
        meta.insert("monitor/x", &[1u8, 2, 3][..]).unwrap();
    }
    txn.commit().unwrap();
}

fn stored_format(dir: &Path) -> u64 {
    let db = redb::Database::open(dir.join(DB_FILE_NAME)).unwrap();
    let txn = db.begin_read().unwrap();
    let sys = txn.open_table(SYS).unwrap();
    sys.get("format_version").unwrap().unwrap().value()
}

#[test]
fn format_2_files_are_upgraded_dropping_their_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    write_format_2(dir.path(), false);
    {
        let s = RedbStorage::open(dir.path()).unwrap();
        for (id, events, _) in OLD_REALMS {
            let id = rid(id);
            let meta = s.realm_meta(&id).unwrap().unwrap();
            assert_eq!(
                (meta.last_seq, meta.last_snapshot_seq, meta.plugin_version),
                (events, 0, V1)
            );
            assert_eq!(s.load_snapshot(&id).unwrap(), None);
            let load = s.load_realm(&id).unwrap().unwrap();
            assert_eq!(load.snapshot, None);
            let want: Vec<_> = (1..=events).map(|q| ev(q, id.as_str())).collect();
            assert_eq!(load.tail, want, "{id}: the log is untouched");
        }
        assert_eq!(s.get_meta("monitor/x").unwrap(), Some(vec![1, 2, 3]));
        assert_eq!(s.list_realms("legacy", None, 10).unwrap().len(), 3);
        // Writes continue in the new format.
        s.append_blocking(AppendRequest {
            plugin_version: V1,
            ..req("old/2", "legacy", 5..=5)
        })
        .unwrap();
        let big: BTreeMap<Vec<u8>, Vec<u8>> = (0..10u8).map(|i| (vec![i], vec![i; 1000])).collect();
        s.put_snapshot_blocking(&rid("old/1"), full_of(5, &big))
            .unwrap();
        s.put_snapshot_blocking(&rid("old/2"), delta(5, 0, &[(b"k", Some(b"v"))]))
            .unwrap();
    }
    assert_eq!(stored_format(dir.path()), FORMAT_VERSION);
    // Reopening a format-3 file changes nothing.
    let s = RedbStorage::open(dir.path()).unwrap();
    assert_eq!(s.recovered_events(), 0);
    assert_eq!(s.snapshot_rows(&rid("old/1")).unwrap(), 10);
    assert_eq!(
        s.load_snapshot(&rid("old/2")).unwrap(),
        Some(stored(5, &[(b"k", b"v")]))
    );
    assert_eq!(s.events_since(&rid("old/2"), 0).unwrap().len(), 5);
}

#[test]
fn a_failed_upgrade_leaves_format_2() {
    let dir = tempfile::tempdir().unwrap();
    write_format_2(dir.path(), true);
    assert_corrupt_naming(RedbStorage::open(dir.path()), "old/2");
    // The upgrade's transaction was dropped: still format 2, blobs intact.
    assert_eq!(stored_format(dir.path()), 2);
    let db = redb::Database::open(dir.path().join(DB_FILE_NAME)).unwrap();
    let txn = db.begin_read().unwrap();
    assert_eq!(
        txn.open_table(SNAPSHOTS).unwrap().iter().unwrap().count(),
        2
    );
    assert!(txn.open_table(ENTRIES).is_err());
}
