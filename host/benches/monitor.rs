//! Cost of the shard monitor on the append path.
//!
//! Per simulated append: `record_event` + `is_quarantined` +
//! `record_crossing` + `reputation`, on 64 shards with 1024 distinct sources,
//! 1% of crossings failing (relaxed profile, so nothing is quarantined and the
//! steady state is measured). Baseline: one `AtomicU64::fetch_add` per event
//! on a single shared counter — the cheapest conceivable "global" bookkeeping.
//! Both run on 1 and 2 threads; multi-threaded figures are wall time divided
//! by total events (aggregate cost per event), plus per-thread cost.
//!
//! Reproduce: `cargo bench -p realmhost --bench monitor`.

use std::hint::black_box;
use std::sync::Barrier;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use realmhost::monitor::{ShardMonitor, ShardMonitorConfig};

const SHARDS: usize = 64;
const SOURCES: usize = 1024;

fn sources() -> Vec<String> {
    (0..SOURCES).map(|i| format!("entity-{i:05}")).collect()
}

fn new_monitor() -> ShardMonitor {
    ShardMonitor::new(SHARDS, ShardMonitorConfig::relaxed()).expect("valid config")
}

/// One append's worth of monitor calls for event number `i` of thread `t`.
#[inline]
fn monitor_op(m: &ShardMonitor, sources: &[String], t: usize, i: usize) {
    // Spread events over shards the way FxHash spreads realms.
    let mixed = (i ^ (t << 20)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let shard = (mixed >> 32) % SHARDS;
    m.record_event(shard, &sources[(mixed >> 8) % SOURCES]);
    if !m.is_quarantined(shard) {
        m.record_crossing(shard, !i.is_multiple_of(100));
    }
    black_box(m.reputation(shard));
}

/// Wall time for `threads` threads to do `total` operations together.
fn run(threads: usize, total: u64, op: &(dyn Fn(usize, usize) + Sync)) -> Duration {
    let per_thread = (total as usize).div_ceil(threads);
    let barrier = Barrier::new(threads + 1);
    std::thread::scope(|s| {
        for t in 0..threads {
            let barrier = &barrier;
            s.spawn(move || {
                barrier.wait();
                for i in 0..per_thread {
                    op(t, i);
                }
                barrier.wait();
            });
        }
        barrier.wait();
        let start = Instant::now();
        barrier.wait();
        start.elapsed()
    })
}

fn bench(c: &mut Criterion) {
    let sources = sources();
    let mut group = c.benchmark_group("monitor_per_event");
    group
        .throughput(Throughput::Elements(1))
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20);
    for threads in [1usize, 2] {
        let counter = AtomicU64::new(0);
        group.bench_function(format!("baseline_fetch_add/{threads}t"), |b| {
            b.iter_custom(|iters| {
                run(threads, iters, &|_, _| {
                    counter.fetch_add(1, Ordering::Relaxed);
                })
            })
        });
        let m = new_monitor();
        group.bench_function(format!("monitor/{threads}t"), |b| {
            b.iter_custom(|iters| run(threads, iters, &|t, i| monitor_op(&m, &sources, t, i)))
        });
    }
    group.finish();
    summary(&sources);
}

/// A plain table of the same measurements, best of five runs of 4M events
/// each, so the figures can be copied into docs/BENCHMARKS.md.
fn summary(sources: &[String]) {
    const EVENTS: u64 = 4_000_000;
    let best = |f: &dyn Fn() -> Duration| (0..5).map(|_| f()).min().unwrap_or_default();
    println!();
    println!("shard monitor, {EVENTS} events per run, best of 5");
    println!(
        "threads | baseline fetch_add ns/event | monitor ns/event | monitor ns/event/thread | ratio"
    );
    for threads in [1usize, 2] {
        let counter = AtomicU64::new(0);
        let base = best(&|| {
            run(threads, EVENTS, &|_, _| {
                counter.fetch_add(1, Ordering::Relaxed);
            })
        });
        let m = new_monitor();
        let mon = best(&|| run(threads, EVENTS, &|t, i| monitor_op(&m, sources, t, i)));
        let ns = |d: Duration| d.as_nanos() as f64 / EVENTS as f64;
        println!(
            "{threads:7} | {:27.2} | {:16.2} | {:23.2} | {:5.1}x",
            ns(base),
            ns(mon),
            ns(mon) * threads as f64,
            ns(mon) / ns(base)
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
