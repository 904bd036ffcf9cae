//! Unit and model-based tests of [`RedbStorage`].

mod faults;
mod messages;
mod model;
mod snapshots;

use std::io::Write;

use super::*;
use crate::realm::EventRecord;
use crate::runtime::PluginVersion;

const V1: PluginVersion = PluginVersion([1; 32]);
const V2: PluginVersion = PluginVersion([2; 32]);

/// Wait for a storage future (these tests drive the storage synchronously).
fn run<T>(f: impl std::future::Future<Output = T>) -> T {
    futures::executor::block_on(f)
}

fn rid(s: &str) -> RealmId {
    RealmId::new(s).unwrap()
}

fn ev(seq: u64, tag: &str) -> EventRecord {
    EventRecord {
        seq,
        kind: "k".into(),
        payload: format!("{tag}:{seq}").into_bytes(),
        source: "src".into(),
        source_realm: None,
        timestamp_ms: 1_700_000_000_000 + seq,
        source_reputation: 0.5,
        message: None,
    }
}

fn b(bytes: &[u8]) -> Bytes {
    Bytes::from(bytes)
}

/// A full snapshot write of `entries` (given in order) by V2.
fn full(seq: u64, entries: &[(&[u8], &[u8])]) -> SnapshotWrite {
    SnapshotWrite {
        seq,
        plugin_version: V2,
        state_version: 1,
        body: SnapshotBody::Full(entries.iter().map(|(k, v)| (b(k), b(v))).collect()),
    }
}

/// What [`full`] reads back as.
fn stored(seq: u64, entries: &[(&[u8], &[u8])]) -> Snapshot {
    Snapshot {
        seq,
        plugin_version: V2,
        state_version: 1,
        entries: entries.iter().map(|(k, v)| (b(k), b(v))).collect(),
    }
}

fn req(realm: &str, ty: &str, seqs: std::ops::RangeInclusive<u64>) -> AppendRequest {
    AppendRequest {
        realm_id: rid(realm),
        realm_type: ty.into(),
        plugin_version: V1,
        events: seqs.map(|s| ev(s, realm)).collect(),
    }
}

#[test]
fn append_read_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = RedbStorage::open(dir.path()).unwrap();
        let ack = s.append_blocking(req("a", "counter", 1..=3)).unwrap();
        assert_eq!(
            ack,
            AppendAck {
                last_seq: 3,
                created: true
            }
        );
        s.append_blocking(req("b", "ledger", 1..=1)).unwrap();
        let ack = s.append_blocking(req("a", "counter", 4..=4)).unwrap();
        assert_eq!(
            ack,
            AppendAck {
                last_seq: 4,
                created: false
            }
        );
        assert_eq!(
            s.events_since(&rid("a"), 0).unwrap(),
            (1..=4).map(|i| ev(i, "a")).collect::<Vec<_>>()
        );
        assert_eq!(
            s.events_since(&rid("a"), 2).unwrap(),
            vec![ev(3, "a"), ev(4, "a")]
        );
        assert_eq!(s.events_since(&rid("a"), 4).unwrap(), vec![]);
        assert_eq!(s.events_since(&rid("zz"), 0).unwrap(), vec![]);
        assert!(!s.opened_with_repair());
    }
    let s = RedbStorage::open(dir.path()).unwrap();
    assert!(
        !s.opened_with_repair(),
        "a clean shutdown must not need a repair"
    );
    let meta = s.realm_meta(&rid("a")).unwrap().unwrap();
    assert_eq!(
        meta,
        RealmMeta {
            realm_type: "counter".into(),
            last_seq: 4,
            last_snapshot_seq: 0,
            plugin_version: V1
        }
    );
    assert_eq!(s.events_since(&rid("b"), 0).unwrap(), vec![ev(1, "b")]);
    // Positions keep growing after a reopen.
    s.append_blocking(req("b", "ledger", 2..=2)).unwrap();
    assert_eq!(
        s.events_since(&rid("b"), 0).unwrap(),
        vec![ev(1, "b"), ev(2, "b")]
    );
    assert_eq!(s.realm_meta(&rid("nope")).unwrap(), None);
}

#[test]
fn seq_continuity_is_enforced_per_request() {
    let dir = tempfile::tempdir().unwrap();
    let s = RedbStorage::open(dir.path()).unwrap();
    assert!(matches!(
        s.append_blocking(req("a", "t", 2..=2)),
        Err(StorageError::Gap {
            expected: 1,
            found: 2,
            ..
        })
    ));
    s.append_blocking(req("a", "t", 1..=2)).unwrap();
    assert!(matches!(
        s.append_blocking(req("a", "t", 2..=3)),
        Err(StorageError::Duplicate {
            seq: 2,
            last_seq: 2,
            ..
        })
    ));
    assert!(matches!(
        s.append_blocking(req("a", "t", 4..=4)),
        Err(StorageError::Gap {
            expected: 3,
            found: 4,
            ..
        })
    ));
    let mut r = req("a", "t", 3..=4);
    r.events[1].seq = 9;
    assert!(matches!(
        s.append_blocking(r),
        Err(StorageError::Gap {
            expected: 4,
            found: 9,
            ..
        })
    ));
    assert!(matches!(
        s.append_blocking(req("a", "other", 3..=3)),
        Err(StorageError::RealmTypeMismatch { .. })
    ));
    let mut empty = req("a", "t", 3..=3);
    empty.events.clear();
    assert!(matches!(
        s.append_blocking(empty),
        Err(StorageError::InvalidRequest(_))
    ));
    assert!(matches!(
        s.append_blocking(req("b", "", 1..=1)),
        Err(StorageError::InvalidRequest(_))
    ));
    // Nothing of the rejected requests was stored.
    assert_eq!(s.realm_meta(&rid("a")).unwrap().unwrap().last_seq, 2);
    assert_eq!(s.events_since(&rid("a"), 0).unwrap().len(), 2);
    assert_eq!(s.realm_meta(&rid("b")).unwrap(), None);
}

/// The committer accounts its CPU time and the events it committed (the
/// storage bench's serial figure); rejected requests count no events.
#[test]
fn committer_stats_count_committed_events() {
    let dir = tempfile::tempdir().unwrap();
    let s = RedbStorage::open(dir.path()).unwrap();
    assert_eq!(s.committer_stats().events, 0);
    s.append_blocking(req("a", "t", 1..=3)).unwrap();
    s.append_blocking(req("a", "t", 4..=4)).unwrap();
    assert!(s.append_blocking(req("a", "t", 4..=4)).is_err());
    let st = s.committer_stats();
    assert_eq!(st.events, 4);
    assert!(st.batches >= 2, "{st:?}");
    if cfg!(unix) {
        assert!(st.busy > std::time::Duration::ZERO, "{st:?}");
        assert!(st.busy >= st.commit, "{st:?}");
    }
    let later = s.committer_stats().since(&st);
    assert_eq!(later.events, 0);
}

/// A cache of one realm is emptied at every other realm: continuity and
/// types are still checked against the tables, before and after a restart.
#[test]
fn a_tiny_realm_cache_still_checks_every_append() {
    let dir = tempfile::tempdir().unwrap();
    let config = StorageConfig {
        realm_cache: 1,
        ..StorageConfig::default()
    };
    for round in 0..2u64 {
        let s = RedbStorage::open_with(dir.path(), config.clone()).unwrap();
        for i in 0..4u64 {
            for r in ["a", "b", "c"] {
                let seq = round * 4 + i + 1;
                assert_eq!(
                    s.append_blocking(req(r, "t", seq..=seq)).unwrap().last_seq,
                    seq
                );
                assert!(matches!(
                    s.append_blocking(req(r, "t", seq..=seq)),
                    Err(StorageError::Duplicate { .. })
                ));
                assert!(matches!(
                    s.append_blocking(req(r, "u", seq + 1..=seq + 1)),
                    Err(StorageError::RealmTypeMismatch { .. })
                ));
            }
        }
    }
}

/// Rejected requests share a commit with good ones without spoiling it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejections_do_not_spoil_the_batch() {
    let dir = tempfile::tempdir().unwrap();
    let s = RedbStorage::open(dir.path()).unwrap();
    // Enqueue everything before awaiting, so they land in few commits.
    let mut futs = Vec::new();
    for i in 0..200u64 {
        let name = format!("r{i}");
        let r = if i % 3 == 0 {
            req(&name, "t", 2..=2)
        } else {
            req(&name, "t", 1..=2)
        };
        futs.push(s.append(r));
    }
    // Same realm twice in one batch: the second sees the first.
    futs.push(s.append(req("dup", "t", 1..=1)));
    futs.push(s.append(req("dup", "t", 2..=2)));
    futs.push(s.append(req("dup", "t", 2..=2)));
    let results = futures::future::join_all(futs).await;
    for (i, r) in results.iter().take(200).enumerate() {
        if i % 3 == 0 {
            assert!(matches!(r, Err(StorageError::Gap { .. })), "{i}: {r:?}");
        } else {
            assert!(r.is_ok(), "{i}: {r:?}");
        }
    }
    assert!(results[200].is_ok() && results[201].is_ok());
    assert!(matches!(results[202], Err(StorageError::Duplicate { .. })));
    for i in 0..200u64 {
        let got = s.events_since(&rid(&format!("r{i}")), 0).unwrap();
        assert_eq!(got.len(), if i % 3 == 0 { 0 } else { 2 });
    }
    assert_eq!(s.events_since(&rid("dup"), 0).unwrap().len(), 2);
}

#[test]
fn snapshots_and_load() {
    let dir = tempfile::tempdir().unwrap();
    let s = RedbStorage::open(dir.path()).unwrap();
    let value = |seq: u64| vec![seq as u8; 100];
    let snap = |seq: u64| full(seq, &[(b"k", &value(seq))]);
    assert!(matches!(
        s.put_snapshot_blocking(&rid("a"), snap(1)),
        Err(StorageError::UnknownRealm(_))
    ));
    s.append_blocking(req("a", "t", 1..=10)).unwrap();
    assert!(matches!(
        s.put_snapshot_blocking(&rid("a"), snap(11)),
        Err(StorageError::SnapshotAhead { .. })
    ));
    assert!(matches!(
        s.put_snapshot_blocking(&rid("a"), snap(0)),
        Err(StorageError::InvalidRequest(_))
    ));
    assert_eq!(s.load_snapshot(&rid("a")).unwrap(), None);
    s.put_snapshot_blocking(&rid("a"), snap(7)).unwrap();
    assert!(matches!(
        s.put_snapshot_blocking(&rid("a"), snap(6)),
        Err(StorageError::StaleSnapshot { .. })
    ));
    let want = stored(7, &[(b"k", &value(7))]);
    assert_eq!(s.load_snapshot(&rid("a")).unwrap(), Some(want.clone()));
    let load = s.load_realm(&rid("a")).unwrap().unwrap();
    assert_eq!(load.meta.last_snapshot_seq, 7);
    assert_eq!(load.snapshot, Some(want));
    assert_eq!(load.tail, (8..=10).map(|i| ev(i, "a")).collect::<Vec<_>>());
    assert_eq!(s.load_realm(&rid("none")).unwrap(), None);
}

#[test]
fn inventory_is_paginated_by_type() {
    let dir = tempfile::tempdir().unwrap();
    let s = RedbStorage::open(dir.path()).unwrap();
    for i in 0..25 {
        s.append_blocking(req(&format!("c{i:02}"), "counter", 1..=1))
            .unwrap();
        s.append_blocking(req(&format!("l{i:02}"), "ledger", 1..=1))
            .unwrap();
    }
    s.append_blocking(req("c00", "counter", 2..=2)).unwrap();
    let mut all = Vec::new();
    let mut after: Option<RealmId> = None;
    loop {
        let page = s.list_realms("counter", after.as_ref(), 10).unwrap();
        if page.is_empty() {
            break;
        }
        after = page.last().cloned();
        all.extend(page);
    }
    let want: Vec<RealmId> = (0..25).map(|i| rid(&format!("c{i:02}"))).collect();
    assert_eq!(all, want);
    assert_eq!(s.list_realms("ledger", None, 100).unwrap().len(), 25);
    assert!(s.list_realms("led", None, 100).unwrap().is_empty());
    assert!(s.list_realms("counter", None, 0).unwrap().is_empty());
}

#[test]
fn events_are_paged() {
    let dir = tempfile::tempdir().unwrap();
    let s = RedbStorage::open(dir.path()).unwrap();
    s.append_blocking(req("a", "counter", 1..=10)).unwrap();
    let seqs = |after, limit| -> Vec<u64> {
        s.events_page(&rid("a"), after, limit)
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect()
    };
    assert_eq!(seqs(0, 3), vec![1, 2, 3]);
    assert_eq!(seqs(8, 5), vec![9, 10]);
    assert!(seqs(10, 5).is_empty());
    assert!(seqs(3, 0).is_empty());
    assert!(s.events_page(&rid("none"), 0, 5).unwrap().is_empty());
}

#[test]
fn realm_types_are_listed_once_each() {
    let dir = tempfile::tempdir().unwrap();
    let s = RedbStorage::open(dir.path()).unwrap();
    assert!(s.realm_types().unwrap().is_empty());
    for (i, t) in ["ledger", "counter", "led", "ledger", "zeta", "counter"]
        .iter()
        .enumerate()
    {
        s.append_blocking(req(&format!("r{i}"), t, 1..=1)).unwrap();
    }
    assert_eq!(
        s.realm_types().unwrap(),
        vec!["counter", "led", "ledger", "zeta"]
    );
}

#[test]
fn meta_records() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = RedbStorage::open(dir.path()).unwrap();
        assert_eq!(s.get_meta("monitor/rep").unwrap(), None);
        s.put_meta_blocking("monitor/rep", Some(vec![1, 2, 3]))
            .unwrap();
        s.put_meta_blocking("other", Some(vec![9])).unwrap();
        s.put_meta_blocking("other", None).unwrap();
    }
    let s = RedbStorage::open(dir.path()).unwrap();
    assert_eq!(s.get_meta("monitor/rep").unwrap(), Some(vec![1, 2, 3]));
    assert_eq!(s.get_meta("other").unwrap(), None);
}

#[tokio::test]
async fn usable_as_trait_object() {
    let dir = tempfile::tempdir().unwrap();
    let s: std::sync::Arc<dyn Storage> =
        std::sync::Arc::new(RedbStorage::open(dir.path()).unwrap());
    s.append(req("a", "t", 1..=2)).await.unwrap();
    assert_eq!(
        s.events_since(&rid("a"), 1).await.unwrap(),
        vec![ev(2, "a")]
    );
    assert_eq!(s.realm_meta(&rid("a")).await.unwrap().unwrap().last_seq, 2);
    s.put_snapshot(&rid("a"), full(2, &[])).await.unwrap();
    assert_eq!(s.load_snapshot(&rid("a")).await.unwrap().unwrap().seq, 2);
    assert_eq!(s.load_realm(&rid("a")).await.unwrap().unwrap().tail, vec![]);
    assert_eq!(s.list_realms("t", None, 5).await.unwrap(), vec![rid("a")]);
    s.put_meta("k", Some(vec![1])).await.unwrap();
    assert_eq!(s.get_meta("k").await.unwrap(), Some(vec![1]));
}

/// A database whose format record says `version`; returns its path.
fn db_with_format(dir: &std::path::Path, version: u64) -> std::path::PathBuf {
    drop(RedbStorage::open(dir).unwrap());
    let path = dir.join(DB_FILE_NAME);
    let db = redb::Database::create(&path).unwrap();
    let txn = db.begin_write().unwrap();
    txn.open_table(redb::TableDefinition::<&str, u64>::new("sys"))
        .unwrap()
        .insert("format_version", version)
        .unwrap();
    txn.commit().unwrap();
    path
}

/// redb itself rewrites its header on open/close; what matters is that our
/// records are untouched: the format version is still `version`.
fn assert_format_untouched(path: &std::path::Path, version: u64) {
    let db = redb::Database::open(path).unwrap();
    let txn = redb::ReadableDatabase::begin_read(&db).unwrap();
    let sys = txn
        .open_table(redb::TableDefinition::<&str, u64>::new("sys"))
        .unwrap();
    assert_eq!(sys.get("format_version").unwrap().unwrap().value(), version);
}

#[test]
fn newer_format_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_with_format(dir.path(), FORMAT_VERSION + 1);
    match RedbStorage::open(dir.path())
        .as_ref()
        .map_err(StorageError::cause)
    {
        Err(StorageError::NewerFormat { found, supported }) => {
            assert_eq!((*found, *supported), (FORMAT_VERSION + 1, FORMAT_VERSION));
        }
        other => panic!("expected NewerFormat, got {other:?}"),
    }
    assert_format_untouched(&path, FORMAT_VERSION + 1);
}

#[test]
fn older_format_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_with_format(dir.path(), 1);
    match RedbStorage::open(dir.path())
        .as_ref()
        .map_err(StorageError::cause)
    {
        Err(e @ StorageError::UnsupportedFormat { found: 1, .. }) => {
            assert!(e.to_string().contains("older"), "{e}");
        }
        other => panic!("expected UnsupportedFormat, got {other:?}"),
    }
    assert_format_untouched(&path, 1);
}

#[test]
fn foreign_redb_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = redb::Database::create(dir.path().join(DB_FILE_NAME)).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(redb::TableDefinition::<u64, u64>::new("x"))
            .unwrap()
            .insert(1, 2)
            .unwrap();
        txn.commit().unwrap();
    }
    assert!(matches!(
        RedbStorage::open(dir.path()),
        Err(StorageError::NotRealmhost(_))
    ));
}

fn filled_db(dir: &std::path::Path) -> Vec<u8> {
    let s = RedbStorage::open(dir).unwrap();
    for i in 0..50 {
        s.append_blocking(req(&format!("r{i}"), "t", 1..=20))
            .unwrap();
    }
    drop(s);
    std::fs::read(dir.join(DB_FILE_NAME)).unwrap()
}

/// Opening must fail with a typed error or succeed; reads after a successful
/// open must not panic either.
fn open_and_read(dir: &std::path::Path, verify: bool) -> Result<(), StorageError> {
    let s = RedbStorage::open_with(
        dir,
        StorageConfig {
            verify_on_open: verify,
            ..StorageConfig::default()
        },
    )?;
    for i in 0..50 {
        s.events_since(&rid(&format!("r{i}")), 0)?;
    }
    Ok(())
}

#[test]
fn garbage_and_truncated_files_are_typed_errors() {
    let hook = std::panic::take_hook();
    // redb may panic internally on a damaged file; the storage turns that
    // into an error. Keep the expected panic messages out of the test output.
    std::panic::set_hook(Box::new(|info| {
        if info
            .location()
            .is_some_and(|l| l.file().ends_with("tests.rs"))
        {
            eprintln!("{info}");
        }
    }));
    let result = std::panic::catch_unwind(|| {
        let dir = tempfile::tempdir().unwrap();
        let bytes = filled_db(dir.path());
        let path = dir.path().join(DB_FILE_NAME);

        // Not a database at all.
        std::fs::write(&path, vec![0x5a; 64 << 10]).unwrap();
        for verify in [false, true] {
            assert!(
                matches!(
                    open_and_read(dir.path(), verify)
                        .as_ref()
                        .map_err(StorageError::cause),
                    Err(StorageError::Corrupt(_) | StorageError::Io(_))
                ),
                "garbage, verify={verify}"
            );
        }
        // Truncated at several points, header included.
        for cut in [17, 512, 4096, bytes.len() / 2, bytes.len() - 4096] {
            for verify in [false, true] {
                std::fs::write(&path, &bytes[..cut]).unwrap();
                let r = open_and_read(dir.path(), verify);
                assert!(
                    r.is_err(),
                    "truncated at {cut} of {}, verify={verify}: opened fine",
                    bytes.len()
                );
            }
        }
        // A flipped byte in the middle of the data.
        let mut flipped = bytes.clone();
        let mid = flipped.len() / 2;
        for b in &mut flipped[mid..mid + 64] {
            *b ^= 0xff;
        }
        std::fs::write(&path, &flipped).unwrap();
        // Flipped bytes may land in a free page: opening may then succeed,
        // but it must never panic.
        for verify in [false, true] {
            let _ = open_and_read(dir.path(), verify);
        }
    });
    std::panic::set_hook(hook);
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}

#[test]
fn second_open_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _s = RedbStorage::open(dir.path()).unwrap();
    let e = RedbStorage::open(dir.path()).unwrap_err();
    assert!(matches!(e.cause(), StorageError::AlreadyOpen), "{e:?}");
    // The message names the file.
    let file = dir.path().join(DB_FILE_NAME);
    assert!(e.to_string().contains(&file.display().to_string()), "{e}");
}

#[test]
fn errors_are_displayable() {
    let e = StorageError::Gap {
        realm: rid("a"),
        expected: 2,
        found: 5,
    };
    assert!(e.is_rejection());
    let mut out = Vec::new();
    write!(out, "{e}").unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "realm a: expected seq 2, got 5"
    );
    assert!(!StorageError::Closed.is_rejection());
}

/// The unindexed tail survives a close that skips the final checkpoint (what
/// a crash leaves) and is rebuilt from the log; a clean close indexes it.
#[test]
fn unindexed_tail_is_rebuilt_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let config = StorageConfig {
        checkpoint_events: 100,
        checkpoint_realms: 3,
        ..StorageConfig::default()
    };
    let s = RedbStorage::open_with(dir.path(), config.clone()).unwrap();
    // 40 realms × 10 one-event appends, interleaved: checkpoints index the
    // oldest realms a few at a time and leave up to ~100 events unindexed.
    for seq in 1..=10u64 {
        for r in 0..40 {
            s.append_blocking(req(&format!("t/{r}"), "t", seq..=seq))
                .unwrap();
        }
    }
    let unindexed = s.unindexed_events();
    assert!(unindexed > 0 && unindexed <= 100 + 1, "{unindexed}");
    s.close_without_checkpoint();

    let s = RedbStorage::open_with(dir.path(), config.clone()).unwrap();
    assert_eq!(s.recovered_events(), unindexed);
    for r in 0..40 {
        let id = rid(&format!("t/{r}"));
        let got = s.events_since(&id, 0).unwrap();
        let want: Vec<_> = (1..=10).map(|q| ev(q, id.as_str())).collect();
        assert_eq!(got, want, "{id}");
        assert_eq!(s.realm_meta(&id).unwrap().unwrap().last_seq, 10);
    }
    // Appends continue where the log left off.
    s.append_blocking(req("t/0", "t", 11..=11)).unwrap();
    drop(s);

    let s = RedbStorage::open_with(dir.path(), config).unwrap();
    assert_eq!(s.recovered_events(), 0, "a clean close indexes the tail");
    assert_eq!(s.events_since(&rid("t/0"), 9).unwrap().len(), 2);
}
