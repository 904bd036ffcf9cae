//! Store benchmarks, each against a bare `DashMap<String, Arc<_>>` in the
//! same run.
//!
//! `cargo bench -p realmhost --bench store` first prints a summary (hit-path
//! ratios, memory per realm as RSS delta measured in child processes,
//! `evict_all` duration and read latency during it; the memory of keyed
//! realm state, see [`summary_keyed_memory`]), then runs the criterion
//! groups. `REALMHOST_STORE_BENCH_QUICK=1` skips the criterion groups;
//! `REALMHOST_STORE_BENCH_ROUNDS=N` sets the hit-path rounds (default 9);
//! `REALMHOST_STORE_BENCH_ONLY=memory` prints only the memory lines.
//! `REALMHOST_STORE_BENCH_CALLGRIND=1` only runs Zipf lookups in two named
//! functions, for exact instruction and cache-miss counts under callgrind
//! (see `docs/BENCHMARKS.md`).
//!
//! The hit-path ratios are taken per round — store and DashMap run back to
//! back, in alternating order — and summarized by their median and range, so
//! that a burst of load from another process skews one round, not the
//! figure. Besides wall time, each bench thread reads its own on-CPU time
//! (`/proc/thread-self/schedstat`), which leaves out time the thread spent
//! waiting for a core on a shared machine.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use dashmap::DashMap;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use realmhost::node::RealmState;
use realmhost::runtime::{PluginTag, PluginVersion};
use realmhost::state::{Bytes, Change, StateMap};
use realmhost::store::{ShardedStore, ShardingConfig, StoreValue};
use realmhost_guest::{EventRef, MemoryState, encode_payload, entry};

const REALMS: usize = 1_000_000;
const STATE_BYTES: usize = 64;
const SAMPLES: usize = 1 << 20;
const MEM_ENV: &str = "REALMHOST_STORE_BENCH_MEM";

/// The system allocator, counting live bytes (as requested) and live
/// allocations once [`COUNTING`] is set — only in the memory child
/// processes, so the timed paths pay one relaxed load per allocation.
struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);
static LIVE_ALLOCS: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded to `System` with the caller's arguments;
// the counters are side bookkeeping.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() && COUNTING.load(Ordering::Relaxed) {
            LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
            LIVE_ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if COUNTING.load(Ordering::Relaxed) {
            LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
            LIVE_ALLOCS.fetch_sub(1, Ordering::Relaxed);
        }
        // SAFETY: forwarded as is.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as is.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() && COUNTING.load(Ordering::Relaxed) {
            LIVE_BYTES.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

struct BenchState(#[allow(dead_code)] Box<[u8]>);

impl StoreValue for BenchState {
    fn size_bytes(&self) -> usize {
        STATE_BYTES
    }
}

fn state() -> BenchState {
    BenchState(vec![7u8; STATE_BYTES].into_boxed_slice())
}

/// 20-character realm ids.
fn ids() -> Vec<String> {
    (0..REALMS).map(|i| format!("realm-{i:014}")).collect()
}

fn config() -> ShardingConfig {
    // Room for all realms: the hit path is measured, not eviction.
    ShardingConfig::builder()
        .max_per_shard(20_000)
        .lru_capacity_per_shard(30_000)
        .build()
        .expect("valid config")
}

fn filled_store(ids: &[String]) -> ShardedStore<BenchState> {
    let store = ShardedStore::new(config()).expect("store");
    for id in ids {
        store.register(id, state());
    }
    store
}

fn filled_dashmap(ids: &[String]) -> DashMap<String, Arc<BenchState>> {
    let map = DashMap::new();
    for id in ids {
        map.insert(id.clone(), Arc::new(state()));
    }
    map
}

/// Key index sequences: uniform, and Zipf(0.99) over ranks shuffled onto ids.
fn uniform_keys(seed: u64) -> Vec<usize> {
    let mut rng = SmallRng::seed_from_u64(seed);
    (0..SAMPLES).map(|_| rng.random_range(0..REALMS)).collect()
}

fn zipf_keys(seed: u64) -> Vec<usize> {
    let mut cdf = Vec::with_capacity(REALMS);
    let mut sum = 0.0;
    for rank in 1..=REALMS {
        sum += 1.0 / (rank as f64).powf(0.99);
        cdf.push(sum);
    }
    let mut rng = SmallRng::seed_from_u64(seed);
    // Hot ranks land on scattered ids, not on neighbours.
    let mut perm: Vec<usize> = (0..REALMS).collect();
    for i in (1..REALMS).rev() {
        perm.swap(i, rng.random_range(0..=i));
    }
    (0..SAMPLES)
        .map(|_| {
            let u = rng.random::<f64>() * sum;
            let rank = cdf.partition_point(|&c| c < u).min(REALMS - 1);
            perm[rank]
        })
        .collect()
}

trait Lookup: Sync {
    fn lookup(&self, id: &str) -> Option<Arc<BenchState>>;
}

impl Lookup for ShardedStore<BenchState> {
    #[inline]
    fn lookup(&self, id: &str) -> Option<Arc<BenchState>> {
        self.get_cached(id)
    }
}

impl Lookup for DashMap<String, Arc<BenchState>> {
    #[inline]
    fn lookup(&self, id: &str) -> Option<Arc<BenchState>> {
        self.get(id).map(|r| Arc::clone(r.value()))
    }
}

/// Nanoseconds the calling thread has spent on a CPU (Linux schedstat), so
/// that time other processes hold the core is not counted; `None` elsewhere.
fn thread_cpu_ns() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// `iters` lookups on each of `threads` threads; returns the wall time and
/// the threads' summed on-CPU time (zero if it cannot be read).
fn run_timed<L: Lookup>(
    map: &L,
    ids: &[String],
    keys: &[Vec<usize>],
    threads: usize,
    iters: u64,
) -> (Duration, Duration) {
    let start = Instant::now();
    let cpu = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let keys = &keys[t % keys.len()];
                scope.spawn(move || {
                    let cpu_start = thread_cpu_ns();
                    let mut k = t * 7919;
                    for _ in 0..iters {
                        k = (k + 1) & (SAMPLES - 1);
                        black_box(map.lookup(&ids[keys[k]]));
                    }
                    match (cpu_start, thread_cpu_ns()) {
                        (Some(a), Some(b)) => b.saturating_sub(a),
                        _ => 0,
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or(0))
            .sum::<u64>()
    });
    (start.elapsed(), Duration::from_nanos(cpu))
}

/// [`run_timed`], wall time only (criterion).
fn run<L: Lookup>(
    map: &L,
    ids: &[String],
    keys: &[Vec<usize>],
    threads: usize,
    iters: u64,
) -> Duration {
    run_timed(map, ids, keys, threads, iters).0
}

fn summary_hit_path(
    ids: &[String],
    store: &ShardedStore<BenchState>,
    map: &DashMap<String, Arc<BenchState>>,
) {
    println!(
        "get_cached vs DashMap::get over {REALMS} realms, {} rounds of {ITERS} lookups per thread, \
         store and DashMap alternating within each round; ratio = DashMap time / store time per round \
         (median [min..max]); wall = throughput, cpu = on-CPU time of the bench threads:",
        rounds()
    );
    let dists = [
        ("uniform", vec![uniform_keys(1), uniform_keys(2)]),
        ("zipf0.99", vec![zipf_keys(3), zipf_keys(4)]),
    ];
    for (name, keys) in &dists {
        for threads in [1, 2] {
            // Every thread does ITERS lookups: wall time / ITERS is ns per
            // lookup per thread.
            let per_op = |d: Duration| d.as_nanos() as f64 / ITERS as f64;
            let (mut s_ns, mut d_ns) = (Vec::new(), Vec::new());
            let (mut wall, mut cpu) = (Vec::new(), Vec::new());
            for round in 0..rounds() {
                let (s, d) = if round % 2 == 0 {
                    let d = run_timed(map, ids, keys, threads, ITERS);
                    (run_timed(store, ids, keys, threads, ITERS), d)
                } else {
                    let s = run_timed(store, ids, keys, threads, ITERS);
                    (s, run_timed(map, ids, keys, threads, ITERS))
                };
                s_ns.push(per_op(s.0));
                d_ns.push(per_op(d.0));
                wall.push(d.0.as_secs_f64() / s.0.as_secs_f64());
                if !s.1.is_zero() && !d.1.is_zero() {
                    cpu.push(d.1.as_secs_f64() / s.1.as_secs_f64());
                }
            }
            let spread = |v: &mut Vec<f64>| {
                if v.is_empty() {
                    return "n/a".to_owned();
                }
                let m = median(v);
                format!("{m:.2}x [{:.2}..{:.2}]", v[0], v[v.len() - 1])
            };
            println!(
                "  {name:9} {threads}t: store {:6.1} ns, dashmap {:6.1} ns; wall {}; cpu {}",
                median(&mut s_ns),
                median(&mut d_ns),
                spread(&mut wall),
                spread(&mut cpu),
            );
        }
    }
}

/// Rounds of the hit-path summary (`REALMHOST_STORE_BENCH_ROUNDS` overrides).
const ROUNDS: usize = 9;
/// Lookups per thread per round.
const ITERS: u64 = 2_000_000;

/// `REALMHOST_STORE_BENCH_ROUNDS`, or [`ROUNDS`].
fn rounds() -> usize {
    std::env::var("REALMHOST_STORE_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .filter(|&r| r > 0)
        .unwrap_or(ROUNDS)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// Child process: fill one structure and print the RSS delta per realm.
fn measure_memory(kind: &str) {
    if kind != "store" && kind != "dashmap" {
        return measure_keyed_memory(kind);
    }
    let ids = ids();
    let before = rss_bytes();
    let per_realm = match kind {
        "store" => {
            let store = filled_store(&ids);
            let delta = rss_bytes() - before;
            black_box(&store);
            delta as f64 / REALMS as f64
        }
        _ => {
            let map = filled_dashmap(&ids);
            let delta = rss_bytes() - before;
            black_box(&map);
            delta as f64 / REALMS as f64
        }
    };
    println!("{per_realm:.1}");
}

fn summary_memory() {
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => return println!("memory: cannot find own executable: {e}"),
    };
    let measure = |kind: &str| -> Option<f64> {
        let out = Command::new(&exe).env(MEM_ENV, kind).output().ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    match (measure("store"), measure("dashmap")) {
        (Some(s), Some(d)) => println!(
            "memory, {REALMS} realms, 20-char ids, {STATE_BYTES}-byte states (RSS delta per realm): \
             store {s:.0} B ({:.0} B beyond state), DashMap<String, Arc<_>> {d:.0} B ({:.0} B beyond state), ratio {:.2}x",
            s - STATE_BYTES as f64,
            d - STATE_BYTES as f64,
            s / d
        ),
        _ => println!("memory: measurement failed"),
    }
}

#[path = "store/keyed_memory.rs"]
mod keyed_memory;
use keyed_memory::*;

fn percentile(lat: &mut [u64], p: f64) -> u64 {
    if lat.is_empty() {
        return 0;
    }
    lat.sort_unstable();
    lat[((lat.len() - 1) as f64 * p) as usize]
}

/// Read hot realms on one thread while `work` runs on this one; returns the
/// read latencies in ns.
fn read_latencies(
    store: &ShardedStore<BenchState>,
    hot: &[String],
    work: impl FnOnce(),
) -> Vec<u64> {
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        let reader = scope.spawn(|| {
            let mut lat = Vec::with_capacity(8 << 20);
            let mut rng = SmallRng::seed_from_u64(9);
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let id = &hot[rng.random_range(0..hot.len())];
                let t = Instant::now();
                black_box(store.get_cached(id));
                lat.push(t.elapsed().as_nanos() as u64);
            }
            lat
        });
        work();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        reader.join().unwrap_or_default()
    })
}

fn summary_evict_all(ids: &[String]) {
    // Half of the realms fit: evict_all removes about 500 000.
    let config = ShardingConfig::builder()
        .max_per_shard(REALMS / 64 / 2)
        .lru_capacity_per_shard(30_000)
        .build()
        .expect("valid config");
    let store = ShardedStore::new(config).expect("store");
    for id in ids {
        store.register(id, state());
    }
    // 100 000 recently read realms: they must stay, and readers hit them.
    let hot: Vec<String> = ids.iter().step_by(10).cloned().collect();
    for id in &hot {
        black_box(store.get_cached(id));
    }
    let mut quiet = read_latencies(&store, &hot, || {
        std::thread::sleep(Duration::from_millis(1500))
    });
    let mut took = Duration::ZERO;
    let mut evicted = 0;
    let mut busy = read_latencies(&store, &hot, || {
        let start = Instant::now();
        evicted = store.evict_all();
        took = start.elapsed();
    });
    let survived = hot.iter().filter(|id| store.contains(id)).count();
    let (q50, q99) = (percentile(&mut quiet, 0.5), percentile(&mut quiet, 0.99));
    let (b50, b99) = (percentile(&mut busy, 0.5), percentile(&mut busy, 0.99));
    println!(
        "evict_all over {REALMS} realms: evicted {evicted} in {:.1} ms; {survived}/{} recently read realms kept",
        took.as_secs_f64() * 1e3,
        hot.len()
    );
    println!(
        "get_cached latency (incl. ~20 ns timer): without eviction p50 {q50} ns p99 {q99} ns; during evict_all p50 {b50} ns p99 {b99} ns; p99 ratio {:.2}x",
        b99 as f64 / q99.max(1) as f64
    );
}

fn bench_get_cached(c: &mut Criterion) {
    let ids = ids();
    let store = filled_store(&ids);
    let map = filled_dashmap(&ids);
    let dists = [
        ("uniform", vec![uniform_keys(1), uniform_keys(2)]),
        ("zipf0.99", vec![zipf_keys(3), zipf_keys(4)]),
    ];
    let mut group = c.benchmark_group("get_cached_1M");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500));
    for (name, keys) in &dists {
        for threads in [1usize, 2] {
            group.throughput(Throughput::Elements(threads as u64));
            group.bench_with_input(
                BenchmarkId::new(format!("store/{name}"), threads),
                &threads,
                |b, &t| b.iter_custom(|iters| run(&store, &ids, keys, t, iters)),
            );
            group.bench_with_input(
                BenchmarkId::new(format!("dashmap/{name}"), threads),
                &threads,
                |b, &t| b.iter_custom(|iters| run(&map, &ids, keys, t, iters)),
            );
        }
    }
    group.finish();
}

criterion_group!(benches, bench_get_cached);

/// Zipf lookups counted by callgrind (`--toggle-collect`).
const CALLGRIND_LOOKUPS: usize = 400_000;

#[inline(never)]
fn measured_store_lookups(store: &ShardedStore<BenchState>, ids: &[String], keys: &[usize]) {
    for &k in keys {
        black_box(store.get_cached(&ids[k]));
    }
}

#[inline(never)]
fn measured_dashmap_lookups(
    map: &DashMap<String, Arc<BenchState>>,
    ids: &[String],
    keys: &[usize],
) {
    for &k in keys {
        black_box(map.get(&ids[k]).map(|r| Arc::clone(r.value())));
    }
}

/// `REALMHOST_STORE_BENCH_CALLGRIND=1`: the hit path only, twice over the
/// same Zipf(0.99) keys after a warm-up pass, in the two functions above.
fn callgrind_lookups() {
    let ids = ids();
    let store = filled_store(&ids);
    let map = filled_dashmap(&ids);
    let keys = vec![zipf_keys(3)];
    let warm = CALLGRIND_LOOKUPS as u64;
    run(&store, &ids, &keys, 1, warm);
    run(&map, &ids, &keys, 1, warm);
    // `run` starts at key 1.
    let measured = &keys[0][1..=CALLGRIND_LOOKUPS];
    for _ in 0..2 {
        measured_store_lookups(&store, &ids, measured);
        measured_dashmap_lookups(&map, &ids, measured);
    }
}

fn main() {
    if let Ok(kind) = std::env::var(MEM_ENV) {
        measure_memory(&kind);
        return;
    }
    if std::env::var_os("REALMHOST_STORE_BENCH_CALLGRIND").is_some() {
        callgrind_lookups();
        return;
    }
    println!("== realmhost store bench summary ==");
    summary_memory();
    summary_keyed_memory();
    if std::env::var("REALMHOST_STORE_BENCH_ONLY").as_deref() == Ok("memory") {
        return;
    }
    {
        let ids = ids();
        {
            let store = filled_store(&ids);
            let map = filled_dashmap(&ids);
            summary_hit_path(&ids, &store, &map);
        }
        summary_evict_all(&ids);
    }
    if std::env::var_os("REALMHOST_STORE_BENCH_QUICK").is_some() {
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
