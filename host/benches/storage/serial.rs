//! Serial work per event (`REALMHOST_BENCH_PARTS=serial`): the storage
//! committer's CPU time per event, and the throughput ceiling it implies.
//!
//! Requests are checked and encoded on the callers' threads; what remains
//! runs on the one committer thread, so however many cores the machine has,
//! the storage takes at most `1 s / (committer CPU per event)` events per
//! second. The committer reports its own thread CPU per batch
//! ([`RedbStorage::committer_stats`]; time blocked in fsync is not CPU
//! time). Two loads, 256 closed-loop writers each, one ~50-byte event per
//! append:
//!
//! - `distinct_256`: one realm per writer;
//! - `uniform_100k`: 100 000 realms, each writer drawing uniformly among its
//!   own 1/256 of them (the storage expects one append in flight per realm).
//!   Every realm is created before the measurement, so the figure is the
//!   steady state, not realm creation.
//!
//! `REALMHOST_BENCH_SERIAL_REALMS` picks the realm counts (comma-separated,
//! default `256,100000`; any count ≥ 256 spreads over the writers);
//! `REALMHOST_BENCH_SERIAL_PARTITIONS` (comma-separated, default `1`) also
//! runs each load over a [`PartitionedStorage`] of that many partitions
//! (`storage.partitions`: files with a committer each, every realm in the
//! one its id hashes to). The serial figure is then the busiest committer's
//! CPU divided by all the events (each committer runs on its own core);
//! `REALMHOST_BENCH_SERIAL_CHECKPOINT_EVENTS` overrides
//! `storage.checkpoint_events` (with many realms it decides how many events
//! one index entry covers, hence the index pages each event dirties);
//! `REALMHOST_BENCH_SERIAL_QUICK_REPAIR=0` turns `quick_repair` off (one
//! fsync per commit instead of two, and no allocator state written).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use realmhost::runtime::PluginVersion;
use realmhost::storage::{
    AppendRequest, CommitterStats, PartitionedStorage, Storage, StorageConfig,
};
use realmhost::{EventRecord, RealmId};

/// Closed-loop writers (`REALMHOST_BENCH_SERIAL_WRITERS`, default 256): a
/// machine with more cores serves more clients, and each partition's
/// batches grow with them.
fn writers() -> usize {
    std::env::var("REALMHOST_BENCH_SERIAL_WRITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&n: &usize| n > 0)
        .unwrap_or(256)
}

/// A small event: ~50 bytes of payload, as a counter or ledger event.
fn small_event(seq: u64, w: usize) -> EventRecord {
    EventRecord {
        seq,
        kind: "add".into(),
        payload: vec![0x5c; 50],
        source: format!("writer-{w}"),
        source_realm: None,
        timestamp_ms: 1_700_000_000_000 + seq,
        source_reputation: 1.0,
        message: None,
    }
}

/// One load's figures over the measurement window.
pub struct SerialFigures {
    pub realms: usize,
    pub writers: usize,
    pub partitions: usize,
    pub events_per_s: f64,
    /// Summed over the storages.
    pub stats: CommitterStats,
    /// The storage whose committer used the most CPU.
    pub busiest: CommitterStats,
}

impl SerialFigures {
    /// The busiest committer's CPU per event of all storages, µs: the
    /// serial work that bounds throughput.
    pub fn busy_us(&self) -> f64 {
        self.busiest.busy.as_secs_f64() * 1e6 / self.stats.events.max(1) as f64
    }

    /// Every committer's CPU per event, µs.
    fn total_us(&self) -> f64 {
        self.stats.busy_us_per_event().unwrap_or(f64::NAN)
    }

    fn commit_us(&self) -> f64 {
        self.busiest.commit.as_secs_f64() * 1e6 / self.stats.events.max(1) as f64
    }

    fn per_batch(&self) -> f64 {
        self.stats.events as f64 / self.stats.batches.max(1) as f64
    }
}

fn realm_counts() -> Vec<usize> {
    std::env::var("REALMHOST_BENCH_SERIAL_REALMS")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![256, 100_000])
}

fn partition_counts() -> Vec<usize> {
    std::env::var("REALMHOST_BENCH_SERIAL_PARTITIONS")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1])
}

/// [`writers`] writers over `realms` realms in a storage of `parts` partitions, for
/// `secs` after every realm exists and a 0.5 s warm-up.
pub fn serial_load(dir: &std::path::Path, realms: usize, parts: usize, secs: f64) -> SerialFigures {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut config = StorageConfig::default();
    if let Some(n) = std::env::var("REALMHOST_BENCH_SERIAL_CHECKPOINT_EVENTS")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        config.checkpoint_events = n;
    }
    if std::env::var("REALMHOST_BENCH_SERIAL_QUICK_REPAIR").is_ok_and(|v| v == "0") {
        config.quick_repair = false;
    }
    config.partitions = parts.max(1);
    let storage = Arc::new(PartitionedStorage::open_with(dir, config).expect("open"));
    let parts = storage.partitions();
    let all_stats = |s: &PartitionedStorage| s.committer_stats();
    let version = PluginVersion([5; 32]);
    let writers = writers();
    let realms = realms.max(writers);
    let (events, elapsed, stats) = rt.block_on(async {
        // Writer w owns realms w, w + 256, ...: one append in flight per
        // realm, uniform over all of them.
        let created = Arc::new(tokio::sync::Barrier::new(writers + 1));
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for w in 0..writers {
            let (storage, created, stop) = (storage.clone(), created.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                let mine: Vec<RealmId> = (w..realms)
                    .step_by(writers)
                    .map(|r| RealmId::new(format!("serial/realm-{r:06}")).expect("id"))
                    .collect();
                let mut seqs = vec![0u64; mine.len()];
                let mut rng = SmallRng::seed_from_u64(w as u64);
                let append = |i: usize, seq: u64| AppendRequest {
                    realm_id: mine[i].clone(),
                    realm_type: "counter".into(),
                    plugin_version: version,
                    events: vec![small_event(seq, w)],
                };
                for (i, seq) in seqs.iter_mut().enumerate() {
                    storage.append(append(i, 1)).await.expect("create");
                    *seq = 1;
                }
                created.wait().await;
                let mut counted = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let counting = MEASURING.load(Ordering::Relaxed);
                    let i = rng.random_range(0..mine.len());
                    seqs[i] += 1;
                    storage.append(append(i, seqs[i])).await.expect("append");
                    if counting {
                        counted += 1;
                    }
                }
                counted
            }));
        }
        created.wait().await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = all_stats(&storage);
        let t0 = Instant::now();
        MEASURING.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs_f64(secs)).await;
        let after = all_stats(&storage);
        let elapsed = t0.elapsed();
        stop.store(true, Ordering::Relaxed);
        MEASURING.store(false, Ordering::SeqCst);
        let mut events = 0u64;
        for t in tasks {
            events += t.await.expect("writer");
        }
        let stats: Vec<CommitterStats> =
            after.iter().zip(&before).map(|(a, b)| a.since(b)).collect();
        (events, elapsed, stats)
    });
    drop(storage);
    let busiest = stats
        .iter()
        .copied()
        .max_by_key(|s| s.busy)
        .unwrap_or_default();
    let stats = stats
        .iter()
        .fold(CommitterStats::default(), |t, s| CommitterStats {
            busy: t.busy + s.busy,
            commit: t.commit + s.commit,
            acks: t.acks + s.acks,
            events: t.events + s.events,
            batches: t.batches + s.batches,
        });
    SerialFigures {
        realms,
        writers,
        partitions: parts,
        busiest,
        // Appends answered in the window, counted by the writers (a few in
        // flight at either edge blur it by < 0.1 %).
        events_per_s: events as f64 / elapsed.as_secs_f64(),
        stats,
    }
}

/// Set while the window runs; the writers count their appends only then.
static MEASURING: AtomicBool = AtomicBool::new(false);

pub fn print(f: &SerialFigures) {
    let us = f.busy_us();
    let acks = f.busiest.acks.as_secs_f64() * 1e6 / f.stats.events.max(1) as f64;
    let writers = if f.writers == 256 {
        String::new()
    } else {
        format!("_{}_writers", f.writers)
    };
    let label = if f.partitions > 1 {
        format!(
            "{}_realms{writers}_{}_partitions: all committers {:.2} us/event; busiest:",
            f.realms,
            f.partitions,
            f.total_us()
        )
    } else {
        format!("{}_realms{writers}:", f.realms)
    };
    println!(
        "storage/serial_{label} {:>9.0} events/s  committer {:.2} us/event (commit {:.2})  acks {:.2} us/event  ceiling {:>9.0} events/s  ({:.0} events/commit)",
        f.events_per_s,
        us,
        f.commit_us(),
        acks,
        // Two stages that overlap: the slower one bounds the throughput.
        1e6 / us.max(acks),
        f.per_batch(),
    );
}

/// Every configured load, one after another, in fresh directories.
pub fn serial_bench(secs: f64, dir: impl Fn() -> tempfile::TempDir) {
    for parts in partition_counts() {
        for realms in realm_counts() {
            let d = dir();
            print(&serial_load(d.path(), realms, parts, secs));
        }
    }
}
