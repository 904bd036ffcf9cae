//! Storage benchmarks.
//!
//! 1. Durable append throughput with 256 concurrent writers (tokio tasks,
//!    distinct realms, one event per append, each writer waits for its ack),
//!    against the bare fdatasync rate of the same disk measured in the same
//!    run. Printed as events/s, ack p50/p99, and the ratio to fdatasync.
//! 2. Snapshots of one realm with 100 000 entries (20-byte keys, 8-byte
//!    values): a full write against deltas of 1, 100 and 1000 keys (wall
//!    time and the committer's CPU time; a delta costs in proportion to its
//!    keys, a full write to the map), a 100-key delta against bare redb
//!    updating 100 rows, and `load_snapshot` against a bare redb range read
//!    of the same rows, in the same run.
//! 3. A read of a realm's snapshot plus a 100-event tail
//!    (`RedbStorage::load_realm`, page cache warm), via criterion.
//! 4. Serial work per event (`serial`): the committer thread's CPU per event
//!    with 256 and with 100 000 realms, and the ceiling it implies (see
//!    `storage/serial.rs`).
//!
//! `cargo bench -p realmhost --bench storage`. `REALMHOST_BENCH_DIR` picks
//! the directory (default: the system temp dir); `REALMHOST_BENCH_SECS` the
//! measurement time of the append runs (default 5); `REALMHOST_BENCH_PARTS`
//! a comma-separated subset of `serial,append,snapshot,read` (default: all).

use std::fs::OpenOptions;
use std::hint::black_box;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::Criterion;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use realmhost::runtime::PluginVersion;
use realmhost::state::Bytes;
use realmhost::storage::{
    AppendRequest, DB_FILE_NAME, RedbStorage, SnapshotBody, SnapshotWrite, StorageConfig,
};
use realmhost::{EventRecord, RealmId};
use redb::{ReadableDatabase, TableDefinition};

const WRITERS: usize = 256;

fn event(seq: u64) -> EventRecord {
    EventRecord {
        seq,
        kind: "transfer".into(),
        payload: vec![0xab; 96],
        source: "bench-source".into(),
        source_realm: None,
        timestamp_ms: 1_700_000_000_000 + seq,
        source_reputation: 0.75,
        message: None,
    }
}

fn bench_dir() -> tempfile::TempDir {
    match std::env::var_os("REALMHOST_BENCH_DIR") {
        Some(d) => tempfile::tempdir_in(d).expect("bench dir"),
        None => tempfile::tempdir().expect("temp dir"),
    }
}

/// Bare `write 4 KiB + fdatasync` loop on the bench disk: the rate one
/// durable commit per event could reach at best.
fn fdatasync_rate(dir: &Path, secs: f64) -> f64 {
    let mut f = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(dir.join("fsync.bin"))
        .expect("open");
    let block = [0x5au8; 4096];
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed().as_secs_f64() < secs {
        f.seek(SeekFrom::Start(0)).expect("seek");
        f.write_all(&block).expect("write");
        f.sync_data().expect("fdatasync");
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// CPU time (user + system) the storage committer thread has used so far,
/// from `/proc/self/task/*/stat`; `None` where that is not available. CPU
/// per event is the figure that does not move with the disk's mood.
fn committer_cpu() -> Option<Duration> {
    let ticks_per_s = 100.0; // USER_HZ on Linux
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let path = task.ok()?.path();
        let comm = std::fs::read_to_string(path.join("comm")).ok()?;
        if comm.trim() != "storage-committ" {
            continue;
        }
        let stat = std::fs::read_to_string(path.join("stat")).ok()?;
        // Fields after the parenthesized command name; utime and stime are
        // fields 14 and 15 of the whole line.
        let rest = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let utime: f64 = fields.get(11)?.parse().ok()?;
        let stime: f64 = fields.get(12)?.parse().ok()?;
        return Some(Duration::from_secs_f64((utime + stime) / ticks_per_s));
    }
    None
}

/// The committer thread's time on a CPU so far, in nanoseconds from
/// `/proc/self/task/*/schedstat`; falls back to [`committer_cpu`]'s clock
/// ticks (10 ms resolution) where that file is missing.
fn committer_cpu_ns() -> Option<Duration> {
    let precise = || -> Option<Duration> {
        for task in std::fs::read_dir("/proc/self/task").ok()? {
            let path = task.ok()?.path();
            let comm = std::fs::read_to_string(path.join("comm")).ok()?;
            if comm.trim() != "storage-committ" {
                continue;
            }
            let stat = std::fs::read_to_string(path.join("schedstat")).ok()?;
            let ns: u64 = stat.split_whitespace().next()?.parse().ok()?;
            return Some(Duration::from_nanos(ns));
        }
        None
    };
    precise().or_else(committer_cpu)
}

struct AppendFigures {
    events_per_s: f64,
    committer_us_per_event: Option<f64>,
    p50: Duration,
    p99: Duration,
    max: Duration,
    commits_hint: String,
}

fn append_throughput(dir: &Path, config: StorageConfig, secs: f64) -> AppendFigures {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let storage = Arc::new(RedbStorage::open_with(dir, config).expect("open"));
    let version = PluginVersion([3; 32]);
    let warmup = Duration::from_millis(500);
    let measure = Duration::from_secs_f64(secs);
    let (events, lat, elapsed, cpu) = rt.block_on(async {
        let t0 = Instant::now();
        let cpu_at_warmup = tokio::spawn(async move {
            tokio::time::sleep_until((t0 + warmup).into()).await;
            committer_cpu()
        });
        let mut tasks = Vec::new();
        for w in 0..WRITERS {
            let storage = storage.clone();
            tasks.push(tokio::spawn(async move {
                let id = RealmId::new(format!("bench/writer-{w}")).expect("id");
                let mut seq = 1u64;
                let mut lat = Vec::with_capacity(1 << 14);
                let mut counted = 0u64;
                loop {
                    let now = Instant::now();
                    if now.duration_since(t0) >= warmup + measure {
                        break;
                    }
                    let req = AppendRequest {
                        realm_id: id.clone(),
                        realm_type: "bench".into(),
                        plugin_version: version,
                        events: vec![event(seq)],
                    };
                    storage.append(req).await.expect("append");
                    seq += 1;
                    if now.duration_since(t0) >= warmup {
                        lat.push(now.elapsed());
                        counted += 1;
                    }
                }
                (counted, lat)
            }));
        }
        let mut events = 0u64;
        let mut lat = Vec::new();
        for t in tasks {
            let (c, l) = t.await.expect("writer");
            events += c;
            lat.extend(l);
        }
        let cpu = match (cpu_at_warmup.await.expect("probe"), committer_cpu()) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a)),
            _ => None,
        };
        (events, lat, t0.elapsed().saturating_sub(warmup), cpu)
    });
    let mut lat = lat;
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    AppendFigures {
        events_per_s: events as f64 / elapsed.as_secs_f64(),
        committer_us_per_event: cpu.map(|c| c.as_secs_f64() * 1e6 / events.max(1) as f64),
        p50: pct(0.50),
        p99: pct(0.99),
        max: lat.last().copied().unwrap_or_default(),
        commits_hint: format!("{events} events in {:.2}s", elapsed.as_secs_f64()),
    }
}

fn print_append(label: &str, f: &AppendFigures, fsync: f64) {
    println!(
        "storage/append_{label}: {:>9.0} events/s  ({:.1}x fdatasync)  committer {} us/event  ack p50 {:>6.2} ms  p99 {:>6.2} ms  max {:>6.2} ms  [{}]",
        f.events_per_s,
        f.events_per_s / fsync,
        f.committer_us_per_event
            .map_or_else(|| "?".to_owned(), |c| format!("{c:.1}")),
        f.p50.as_secs_f64() * 1e3,
        f.p99.as_secs_f64() * 1e3,
        f.max.as_secs_f64() * 1e3,
        f.commits_hint,
    );
}

/// The map of the snapshot bench: `n` entries, 20-byte keys, 8-byte values.
fn big_map(n: u64) -> Vec<(Bytes, Bytes)> {
    (0..n)
        .map(|i| {
            let key = format!("entity/{i:013}");
            (
                Bytes::from(key.as_bytes()),
                Bytes::from(&i.to_le_bytes()[..]),
            )
        })
        .collect()
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort_unstable();
    xs.get(xs.len() / 2).copied().unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The calling thread's time on a CPU so far (`/proc/thread-self/schedstat`).
fn thread_cpu() -> Option<Duration> {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map(Duration::from_nanos)
}

/// Wall times of one operation over several rounds, and the CPU time it
/// used (of the committer thread, or of the calling thread).
#[derive(Default)]
struct Samples {
    wall: Vec<Duration>,
    cpu: Option<Duration>,
    cpu_runs: u32,
}

impl Samples {
    /// Run `f` `runs` times (given the run number), adding the wall time of
    /// each and the CPU time `cpu` reports over all of them.
    fn run(&mut self, runs: usize, cpu: fn() -> Option<Duration>, mut f: impl FnMut(usize)) {
        let cpu0 = cpu();
        for i in 0..runs {
            let t = Instant::now();
            f(i);
            self.wall.push(t.elapsed());
        }
        if let (Some(a), Some(b)) = (cpu0, cpu()) {
            self.cpu = Some(self.cpu.unwrap_or_default() + b.saturating_sub(a));
            self.cpu_runs += runs as u32;
        }
    }

    fn median(&self) -> Duration {
        median(self.wall.clone())
    }

    fn cpu_per_run(&self) -> Option<Duration> {
        self.cpu.map(|c| c / self.cpu_runs.max(1))
    }

    fn cpu_ms(&self) -> String {
        self.cpu_per_run()
            .map_or_else(|| "?".to_owned(), |c| format!("{:.2}", ms(c)))
    }
}

/// `a / b` of wall medians and, where both are known, of CPU per run.
fn ratio(a: &Samples, b: &Samples) -> String {
    let wall = a.median().as_secs_f64() / b.median().as_secs_f64();
    match (a.cpu_per_run(), b.cpu_per_run()) {
        (Some(x), Some(y)) if !y.is_zero() => {
            format!(
                "{wall:.2}x wall, {:.2}x cpu",
                x.as_secs_f64() / y.as_secs_f64()
            )
        }
        _ => format!("{wall:.2}x wall"),
    }
}

/// Snapshots of one realm with 100 000 entries (20-byte keys, 8-byte
/// values): a full write against deltas of 1, 100 and 1000 keys (a delta
/// must cost in proportion to its keys, not to the map), and bare redb
/// doing the same work on the same rows: updating 100 random rows in one
/// durable commit, and a range read of the realm's rows against
/// `load_snapshot`. redb allows one handle per file, so the storage and the
/// bare database take turns over three rounds (each reopening the file) and
/// every figure is the median over the rounds.
fn snapshot_bench() {
    const N: u64 = 100_000;
    const ROUNDS: usize = 3;
    let dir = bench_dir();
    let id = RealmId::new("bench/big").expect("id");
    let version = PluginVersion([3; 32]);
    let map = big_map(N);
    let write = |storage: &RedbStorage, body: SnapshotBody| {
        storage
            .put_snapshot_blocking(
                &id,
                SnapshotWrite {
                    seq: 1,
                    plugin_version: version,
                    state_version: 1,
                    body,
                },
            )
            .expect("snapshot");
    };
    // `k` keys spread over the map, with new (same-size) values.
    let mut rng = StdRng::seed_from_u64(7);
    let mut changes = |k: usize, r: usize| -> Vec<(Bytes, Option<Bytes>)> {
        (0..k)
            .map(|_| {
                let i = rng.random_range(0..N) as usize;
                let v = (r as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                (map[i].0.clone(), Some(Bytes::from(&v.to_le_bytes()[..])))
            })
            .collect()
    };
    let table_def: TableDefinition<(u64, &[u8]), &[u8]> = TableDefinition::new("snapshot_entries");
    // The bench's realm is the first one created: realm number 1.
    let rows = (1u64, &[][..])..(2u64, &[][..]);

    let mut full = Samples::default();
    let mut d1 = Samples::default();
    let mut d100 = Samples::default();
    let mut d1000 = Samples::default();
    let mut load = Samples::default();
    let mut bare_update = Samples::default();
    let mut bare_collect = Samples::default();
    let mut bare_iter = Samples::default();
    for round in 0..ROUNDS {
        let storage = RedbStorage::open(dir.path()).expect("open");
        if round == 0 {
            storage
                .append_blocking(AppendRequest {
                    realm_id: id.clone(),
                    realm_type: "bench".into(),
                    plugin_version: version,
                    events: vec![event(1)],
                })
                .expect("append");
        }
        // Full writes, each replacing every row. The map's clone (Arc
        // increments) is made outside the timed section.
        let mut copies: Vec<_> = (0..3).map(|_| map.clone()).collect();
        full.run(3, committer_cpu_ns, |_| {
            write(&storage, SnapshotBody::Full(copies.pop().expect("copy")))
        });
        for (samples, k, runs) in [
            (&mut d1, 1, 30),
            (&mut d100, 100, 30),
            (&mut d1000, 1000, 10),
        ] {
            let mut batches = (0..runs)
                .map(|r| changes(k, r))
                .collect::<Vec<_>>()
                .into_iter();
            samples.run(runs, committer_cpu_ns, |_| {
                let changes = batches.next().expect("batch");
                write(
                    &storage,
                    SnapshotBody::Delta {
                        base_seq: 1,
                        changes,
                    },
                )
            });
        }
        load.run(7, thread_cpu, |_| {
            let snap = storage.load_snapshot(&id).expect("load").expect("snapshot");
            assert_eq!(snap.entries.len() as u64, N);
            black_box(snap);
        });
        drop(storage);

        let db = redb::Database::open(dir.path().join(DB_FILE_NAME)).expect("raw open");
        // Updates keep every value 8 bytes, so the snapshot's header stays
        // true for the next round.
        let mut batches = (0..30)
            .map(|r| changes(100, r))
            .collect::<Vec<_>>()
            .into_iter();
        bare_update.run(30, thread_cpu, |_| {
            let mut txn = db.begin_write().expect("txn");
            txn.set_durability(redb::Durability::Immediate)
                .expect("durability");
            txn.set_quick_repair(true);
            {
                let mut table = txn.open_table(table_def).expect("table");
                for (k, v) in batches.next().expect("batch") {
                    let v = v.expect("a set");
                    table.insert((1u64, &*k), &*v).expect("insert");
                }
            }
            txn.commit().expect("commit");
        });
        bare_collect.run(7, thread_cpu, |_| {
            let txn = db.begin_read().expect("txn");
            let table = txn.open_table(table_def).expect("table");
            let mut out: Vec<(Bytes, Bytes)> = Vec::new();
            for item in table.range(rows.clone()).expect("range") {
                let (k, v) = item.expect("row");
                out.push((Bytes::from(k.value().1), Bytes::from(v.value())));
            }
            assert_eq!(out.len() as u64, N);
            black_box(out);
        });
        bare_iter.run(7, thread_cpu, |_| {
            let txn = db.begin_read().expect("txn");
            let table = txn.open_table(table_def).expect("table");
            let mut bytes = 0usize;
            let mut n = 0u64;
            for item in table.range(rows.clone()).expect("range") {
                let (k, v) = item.expect("row");
                bytes += k.value().1.len() + v.value().len();
                n += 1;
            }
            assert_eq!(n, N);
            black_box(bytes);
        });
    }

    println!(
        "storage/snapshot_full_100k:       {:>7.2} ms  committer cpu {} ms  (100 000 entries, 20 B keys, 8 B values; median of {})",
        ms(full.median()),
        full.cpu_ms(),
        full.wall.len()
    );
    for (label, s) in [
        ("delta_1   ", &d1),
        ("delta_100 ", &d100),
        ("delta_1000", &d1000),
    ] {
        println!(
            "storage/snapshot_{label}:       {:>7.2} ms  committer cpu {} ms  (full / this: {})",
            ms(s.median()),
            s.cpu_ms(),
            ratio(&full, s)
        );
    }
    println!(
        "storage/snapshot_bare_update_100: {:>7.2} ms  cpu {} ms  (bare redb, 100 random rows updated in one durable commit; delta_100 / this: {})",
        ms(bare_update.median()),
        bare_update.cpu_ms(),
        ratio(&d100, &bare_update)
    );
    println!(
        "storage/snapshot_load_100k:       {:>7.2} ms  cpu {} ms  (load_snapshot; median of {})",
        ms(load.median()),
        load.cpu_ms(),
        load.wall.len()
    );
    println!(
        "storage/snapshot_bare_range_100k: {:>7.2} ms  cpu {} ms  (bare redb range read of the same rows into Arc pairs; load / this: {}; iterating only: {:.2} ms)",
        ms(bare_collect.median()),
        bare_collect.cpu_ms(),
        ratio(&load, &bare_collect),
        ms(bare_iter.median())
    );
}

/// Which parts to run: `REALMHOST_BENCH_PARTS`, a comma-separated subset of
/// `serial,append,read,snapshot` (default: all).
fn part(name: &str) -> bool {
    std::env::var("REALMHOST_BENCH_PARTS")
        .map_or(true, |parts| parts.split(',').any(|p| p.trim() == name))
}

#[path = "storage/serial.rs"]
mod serial;

fn main() {
    if part("serial") {
        serial::serial_bench(
            std::env::var("REALMHOST_BENCH_SECS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(5.0),
            bench_dir,
        );
    }
    if part("append") {
        append_bench();
    }
    if part("snapshot") {
        snapshot_bench();
    }
    if part("read") {
        read_bench();
    }
}

fn append_bench() {
    let secs: f64 = std::env::var("REALMHOST_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5.0);

    let dir = bench_dir();
    let fsync = fdatasync_rate(dir.path(), 2.0);
    println!(
        "storage/fdatasync_4k: {fsync:>9.0} syncs/s  (write 4 KiB + File::sync_data, {})",
        dir.path().display()
    );

    let d1 = bench_dir();
    let quick = append_throughput(d1.path(), StorageConfig::default(), secs);
    print_append("256_writers_quick_repair", &quick, fsync);
    let d2 = bench_dir();
    let plain = append_throughput(
        d2.path(),
        StorageConfig {
            quick_repair: false,
            ..StorageConfig::default()
        },
        secs,
    );
    print_append("256_writers_no_quick_repair", &plain, fsync);
    let fsync_after = fdatasync_rate(dir.path(), 2.0);
    println!("storage/fdatasync_4k_after: {fsync_after:>9.0} syncs/s");
}

fn read_bench() {
    let mut c = Criterion::default()
        .configure_from_args()
        .measurement_time(Duration::from_secs(3));
    // Read path: snapshot (a 1 KiB map of 32 entries, inline in its header,
    // seq 102) + 100-event tail (103..=202, the last two appended
    // interleaved with other realms), warm cache.
    let small_map: Vec<(Bytes, Bytes)> = big_map(32)
        .into_iter()
        .map(|(k, _)| (k, Bytes::from(&[7u8; 12][..])))
        .collect();
    let rd = bench_dir();
    let storage = RedbStorage::open(rd.path()).expect("open");
    let version = PluginVersion([3; 32]);
    let mut ids = Vec::new();
    for r in 0..1000u64 {
        let id = RealmId::new(format!("bench/read-{r}")).expect("id");
        storage
            .append_blocking(AppendRequest {
                realm_id: id.clone(),
                realm_type: "bench".into(),
                plugin_version: version,
                events: (1..=200).map(event).collect(),
            })
            .expect("fill");
        ids.push(id);
    }
    // Interleave further appends so tails are not contiguous in the log.
    for round in 0..2u64 {
        for id in &ids {
            storage
                .append_blocking(AppendRequest {
                    realm_id: id.clone(),
                    realm_type: "bench".into(),
                    plugin_version: version,
                    events: vec![event(201 + round)],
                })
                .expect("interleave");
        }
    }
    for id in &ids {
        storage
            .put_snapshot_blocking(
                id,
                SnapshotWrite {
                    seq: 102,
                    plugin_version: version,
                    state_version: 1,
                    body: SnapshotBody::Full(small_map.clone()),
                },
            )
            .expect("snapshot");
    }
    let mut i = 0usize;
    c.bench_function("storage/load_realm_snapshot_1k_plus_100_tail", |b| {
        b.iter(|| {
            i = (i + 1) % ids.len();
            let load = storage.load_realm(&ids[i]).expect("load").expect("exists");
            black_box(load.tail.len())
        })
    });
    c.bench_function("storage/events_since_tail_100", |b| {
        b.iter(|| {
            i = (i + 1) % ids.len();
            black_box(storage.events_since(&ids[i], 102).expect("read").len())
        })
    });
    c.final_summary();
}
