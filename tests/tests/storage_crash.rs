//! Crash safety of the durable log: a child process appends under steady
//! concurrent load and prints every acknowledged `(realm, seq)`; the parent
//! kills it with SIGKILL at random moments, reopens the storage and checks
//! that every acknowledged event is present exactly once, in order, without
//! gaps, and that the database opened without a repair.
//!
//! `REALMHOST_SOAK=1` runs many more iterations.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use realmhost::runtime::PluginVersion;
use realmhost::storage::{AppendRequest, RedbStorage, StorageConfig};
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
    }
}

/// The child: append to every realm concurrently until killed. Not a test of
/// its own (returns at once without the environment variable).
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
                loop {
                    // Alternate single events and small batches.
                    let n = if next % 5 == 0 { 3 } else { 1 };
                    let events = (next..next + n).map(|s| event(i, s)).collect();
                    let req = AppendRequest {
                        realm_id: id.clone(),
                        realm_type: "crash".into(),
                        plugin_version: PluginVersion([7; 32]),
                        events,
                    };
                    storage.append(req).await.expect("append");
                    let mut out = std::io::stdout().lock();
                    // One line per acknowledged batch: realm and last seq.
                    writeln!(out, "ACK {i} {}", next + n - 1).expect("stdout");
                    out.flush().expect("flush");
                    next += n;
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
    let mut total_acks = 0usize;
    // Unindexed events the reopens rebuilt from the log.
    let mut recovered = 0usize;

    for iter in 0..iterations {
        let mut child = Command::new(&exe)
            .args([
                "crash_writer_child",
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
                if parts.next() != Some("ACK") {
                    continue;
                }
                // A line cut by the kill is incomplete; it was never
                // fully printed, so it is not an acknowledgment we rely on.
                let (Some(r), Some(s)) = (parts.next(), parts.next()) else {
                    continue;
                };
                let (Ok(r), Ok(s)) = (r.parse::<usize>(), s.parse::<u64>()) else {
                    continue;
                };
                acks.push((r, s));
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
        for (r, s) in acks {
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
        "crash test: {total_acks} acknowledgments checked, {recovered} unindexed events rebuilt by reopens, in {:?}",
        started.elapsed()
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
