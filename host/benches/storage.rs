//! Storage benchmarks.
//!
//! 1. Durable append throughput with 256 concurrent writers (tokio tasks,
//!    distinct realms, one event per append, each writer waits for its ack),
//!    against the bare fdatasync rate of the same disk measured in the same
//!    run. Printed as events/s, ack p50/p99, and the ratio to fdatasync.
//! 2. A bare redb read of a realm's snapshot plus a 100-event tail
//!    (`RedbStorage::load_realm`, page cache warm), via criterion.
//!
//! `cargo bench -p realmhost --bench storage`. `REALMHOST_BENCH_DIR` picks
//! the directory (default: the system temp dir); `REALMHOST_BENCH_SECS` the
//! measurement time of the append runs (default 5).

use std::fs::OpenOptions;
use std::hint::black_box;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::Criterion;
use realmhost::runtime::PluginVersion;
use realmhost::storage::{AppendRequest, RedbStorage, Snapshot, StorageConfig};
use realmhost::{EventRecord, RealmId};

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

fn main() {
    let mut c = Criterion::default()
        .configure_from_args()
        .measurement_time(Duration::from_secs(3));
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

    // Read path: snapshot (1 KiB, seq 102) + 100-event tail (103..=202, the
    // last two appended interleaved with other realms), warm cache.
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
                Snapshot {
                    seq: 102,
                    plugin_version: version,
                    state: vec![7; 1024],
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
