//! Crash safety of the durable log and of keyed snapshots: a child process
//! appends under steady concurrent load, snapshots every realm every few
//! events (a full map now and then, deltas otherwise), and prints every
//! acknowledged `(realm, seq)` and snapshot; the parent kills it with
//! SIGKILL at random moments, reopens the storage and checks that every
//! acknowledged event is present exactly once, in order, without gaps, that
//! every stored snapshot equals the model map at its seq, is not older than
//! the last acknowledged one and never runs ahead of the log, and that the
//! database opened without a repair.
//!
//! The model: event `n` of realm `r` sets key `n % 97` to a 64-byte value
//! made of `r` and `n`, and every tenth event also deletes key
//! `(n / 10) % 97`. Maps start small (inline in the snapshot header) and
//! grow past the inline limit (one row per entry), so kills land on both
//! layouts and on the move between them.
//!
//! `REALMHOST_SOAK=1` runs many more iterations.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use realmhost::runtime::PluginVersion;
use realmhost::state::Bytes;
use realmhost::storage::{
    AppendRequest, INLINE_SNAPSHOT_BYTES, RedbStorage, SnapshotBody, SnapshotWrite, StorageConfig,
};
use realmhost::{EventRecord, RealmId};

const CHILD_ENV: &str = "REALMHOST_CRASH_WRITER_DIR";
const REALMS: usize = 48;

fn realm(i: usize) -> RealmId {
    RealmId::new(format!("crash/{i}")).expect("valid id")
}

fn event(realm: usize, seq: u64) -> EventRecord {
    EventRecord {
        seq,
        kind: "tick".into(),
        payload: format!("{realm}:{seq}").into_bytes(),
        source: "writer".into(),
        source_realm: None,
        timestamp_ms: seq,
        source_reputation: 1.0,
        message: None,
    }
}

/// A realm's snapshot every this many events.
const SNAPSHOT_EVERY: u64 = 6;
/// Every this many snapshots of a realm is a full one; the others are deltas.
const FULL_EVERY: u64 = 5;
const VERSION: PluginVersion = PluginVersion([7; 32]);

type Map = BTreeMap<Vec<u8>, Vec<u8>>;

fn key(k: u64) -> Vec<u8> {
    format!("key/{k:02}").into_bytes()
}

/// Apply event `n` of realm `realm` to the model map.
fn apply(map: &mut Map, realm: usize, n: u64) {
    let mut value = Vec::with_capacity(64);
    while value.len() < 64 {
        value.push(realm as u8);
        value.extend_from_slice(&n.to_le_bytes());
    }
    value.truncate(64);
    map.insert(key(n % 97), value);
    if n.is_multiple_of(10) {
        map.remove(&key((n / 10) % 97));
    }
}

/// The model map of realm `realm` after its events `1..=seq`.
fn model_at(realm: usize, seq: u64) -> Map {
    let mut map = Map::new();
    for n in 1..=seq {
        apply(&mut map, realm, n);
    }
    map
}

fn entries(map: &Map) -> Vec<(Bytes, Bytes)> {
    map.iter()
        .map(|(k, v)| (Bytes::from(&k[..]), Bytes::from(&v[..])))
        .collect()
}

/// The changes that turn `old` into `new`.
fn diff(old: &Map, new: &Map) -> Vec<(Bytes, Option<Bytes>)> {
    let mut out: Vec<(Bytes, Option<Bytes>)> = new
        .iter()
        .filter(|(k, v)| old.get(*k) != Some(*v))
        .map(|(k, v)| (Bytes::from(&k[..]), Some(Bytes::from(&v[..]))))
        .collect();
    out.extend(
        old.keys()
            .filter(|k| !new.contains_key(*k))
            .map(|k| (Bytes::from(&k[..]), None)),
    );
    out
}

/// The child: append to every realm concurrently and snapshot them until
/// killed. Not a test of its own (returns at once without the environment
/// variable).
#[test]
fn crash_writer_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let storage =
            std::sync::Arc::new(RedbStorage::open_with(&dir, config()).expect("child open"));
        let mut tasks = Vec::new();
        for i in 0..REALMS {
            let storage = storage.clone();
            tasks.push(tokio::spawn(async move {
                let id = realm(i);
                let mut next = storage
                    .realm_meta(&id)
                    .expect("meta")
                    .map_or(1, |m| m.last_seq + 1);
                // The stored snapshot and the model map at its seq (what a
                // delta applies to), and the model map now.
                let mut snap_seq = storage
                    .load_snapshot(&id)
                    .expect("load snapshot")
                    .map_or(0, |s| s.seq);
                let mut snap_map = model_at(i, snap_seq);
                let mut map = model_at(i, next - 1);
                let mut snapshots = 0u64;
                loop {
                    // Alternate single events and small batches.
                    let n = if next.is_multiple_of(5) { 3 } else { 1 };
                    let events = (next..next + n).map(|s| event(i, s)).collect();
                    let req = AppendRequest {
                        realm_id: id.clone(),
                        realm_type: "crash".into(),
                        plugin_version: VERSION,
                        events,
                    };
                    storage.append(req).await.expect("append");
                    {
                        // One line per acknowledged batch: realm and last seq.
                        let mut out = std::io::stdout().lock();
                        writeln!(out, "ACK {i} {}", next + n - 1).expect("stdout");
                        out.flush().expect("flush");
                    }
                    for q in next..next + n {
                        apply(&mut map, i, q);
                    }
                    next += n;

                    let seq = next - 1;
                    if seq - snap_seq < SNAPSHOT_EVERY {
                        continue;
                    }
                    snapshots += 1;
                    let body = if snapshots.is_multiple_of(FULL_EVERY) {
                        SnapshotBody::Full(entries(&map))
                    } else {
                        SnapshotBody::Delta {
                            base_seq: snap_seq,
                            changes: diff(&snap_map, &map),
                        }
                    };
                    let write = SnapshotWrite {
                        seq,
                        plugin_version: VERSION,
                        state_version: 1,
                        body,
                    };
                    storage.put_snapshot(&id, write).await.expect("snapshot");
                    {
                        let mut out = std::io::stdout().lock();
                        writeln!(out, "SNAP {i} {seq}").expect("stdout");
                        out.flush().expect("flush");
                    }
                    snap_seq = seq;
                    snap_map = map.clone();
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    });
}

/// Small checkpoint thresholds, so that kills land before, during and after
/// checkpoints, and reopens rebuild unindexed tails of every length.
fn config() -> StorageConfig {
    StorageConfig {
        checkpoint_events: 300,
        checkpoint_realms: 8,
        ..StorageConfig::default()
    }
}

#[test]
fn acknowledged_events_survive_sigkill() {
    let soak = std::env::var("REALMHOST_SOAK").is_ok_and(|v| v == "1");
    let iterations = if soak { 300 } else { 24 };
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    eprintln!("crash test: {iterations} iterations, seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("current exe");
    let started = Instant::now();
    // Highest acknowledged seq per realm over all runs so far.
    let mut acked: BTreeMap<usize, u64> = BTreeMap::new();
    // Seq of the latest acknowledged (or found stored) snapshot per realm.
    let mut snapped: BTreeMap<usize, u64> = BTreeMap::new();
    let mut total_acks = 0usize;
    let mut snapshot_acks = 0usize;
    // Stored snapshots checked against the model: maps small enough to be
    // inline, and larger ones stored as rows.
    let (mut inline_checked, mut rows_checked) = (0usize, 0usize);
    // Unindexed events the reopens rebuilt from the log.
    let mut recovered = 0usize;

    for iter in 0..iterations {
        let mut child = Command::new(&exe)
            .args([
                "storage_crash::crash_writer_child",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("stdout");
        let reader = std::thread::spawn(move || {
            let mut acks = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let mut parts = line.split_whitespace();
                let snapshot = match parts.next() {
                    Some("ACK") => false,
                    Some("SNAP") => true,
                    _ => continue,
                };
                // A line cut by the kill is incomplete; it was never
                // fully printed, so it is not an acknowledgment we rely on.
                let (Some(r), Some(s)) = (parts.next(), parts.next()) else {
                    continue;
                };
                let (Ok(r), Ok(s)) = (r.parse::<usize>(), s.parse::<u64>()) else {
                    continue;
                };
                acks.push((snapshot, r, s));
            }
            acks
        });
        // Kill at a random moment: sometimes during open/recovery, mostly
        // under load.
        let wait_ms = rng.random_range(20..420);
        std::thread::sleep(Duration::from_millis(wait_ms));
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
        let acks = reader.join().expect("reader");
        total_acks += acks.len();
        for (snapshot, r, s) in acks {
            if snapshot {
                snapshot_acks += 1;
                let e = snapped.entry(r).or_default();
                assert!(
                    s > *e,
                    "child acknowledged a snapshot of realm {r} at {s} after one at {e}"
                );
                *e = s;
                continue;
            }
            let e = acked.entry(r).or_default();
            assert!(
                s > *e || *e == 0,
                "child acknowledged seq {s} of realm {r} after {e}: acks out of order"
            );
            *e = (*e).max(s);
        }

        let storage = RedbStorage::open_with(dir.path(), config())
            .unwrap_or_else(|e| panic!("iteration {iter}: reopen failed: {e}"));
        recovered += storage.recovered_events();
        assert!(
            !storage.opened_with_repair(),
            "iteration {iter}: reopen needed a repair"
        );
        for i in 0..REALMS {
            let id = realm(i);
            let events = storage
                .events_since(&id, 0)
                .unwrap_or_else(|e| panic!("realm {i}: {e}"));
            let want = acked.get(&i).copied().unwrap_or(0);
            let last = storage
                .realm_meta(&id)
                .expect("meta")
                .map_or(0, |m| m.last_seq);
            assert!(
                last >= want,
                "iteration {iter}: realm {i} lost acknowledged events: stored {last}, acked {want}"
            );
            assert_eq!(
                events.len() as u64,
                last,
                "iteration {iter}: realm {i} log length vs metadata"
            );
            for (k, ev) in events.iter().enumerate() {
                assert_eq!(
                    *ev,
                    event(i, k as u64 + 1),
                    "iteration {iter}: realm {i} event {k}"
                );
            }
            // Unacknowledged but committed events are fine; the next writer
            // continues after them.
            if last > want {
                acked.insert(i, last);
            }

            // The snapshot: not older than the last acknowledged one, not
            // ahead of the log, the model map at its seq.
            let snap = storage
                .load_snapshot(&id)
                .unwrap_or_else(|e| panic!("iteration {iter}: realm {i} snapshot: {e}"));
            let want_snap = snapped.get(&i).copied().unwrap_or(0);
            let Some(snap) = snap else {
                assert_eq!(
                    want_snap, 0,
                    "iteration {iter}: realm {i} lost its acknowledged snapshot at {want_snap}"
                );
                continue;
            };
            assert!(
                snap.seq >= want_snap,
                "iteration {iter}: realm {i} snapshot at {} is older than the acknowledged {want_snap}",
                snap.seq
            );
            assert!(
                snap.seq <= last,
                "iteration {iter}: realm {i} snapshot at {} is ahead of the log ({last})",
                snap.seq
            );
            let meta = storage.realm_meta(&id).expect("meta").expect("realm");
            assert_eq!(
                meta.last_snapshot_seq, snap.seq,
                "iteration {iter}: realm {i}"
            );
            assert_eq!(
                (snap.plugin_version, snap.state_version),
                (VERSION, 1),
                "iteration {iter}: realm {i}"
            );
            let model = model_at(i, snap.seq);
            assert!(
                snap.entries == entries(&model),
                "iteration {iter}: realm {i} snapshot at {} differs from the model ({} entries stored, {} expected)",
                snap.seq,
                snap.entries.len(),
                model.len()
            );
            let bytes: usize = model.iter().map(|(k, v)| k.len() + v.len()).sum();
            if bytes as u64 > INLINE_SNAPSHOT_BYTES {
                rows_checked += 1;
            } else {
                inline_checked += 1;
            }
            snapped.insert(i, snap.seq);
        }
        // Every other check leaves the tail unindexed, so the child's own
        // open rebuilds it too (and may be killed while doing so).
        if iter % 2 == 0 {
            storage.close_without_checkpoint();
        } else {
            drop(storage);
        }
    }
    eprintln!(
        "crash test: {total_acks} acknowledgments checked ({snapshot_acks} of snapshots), {recovered} unindexed events rebuilt by reopens, {inline_checked} inline and {rows_checked} row snapshots checked, in {:?}",
        started.elapsed()
    );
    assert!(
        rows_checked > 0,
        "no stored snapshot was large enough for rows: the row layout went untested"
    );
    assert!(
        total_acks > iterations,
        "the child barely wrote anything ({total_acks} acks)"
    );
    assert!(
        recovered > 0,
        "no reopen had an unindexed tail to rebuild: the recovery scan went untested"
    );
}
