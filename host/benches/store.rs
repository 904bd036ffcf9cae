//! Store benchmarks, each against a bare `DashMap<String, Arc<_>>` in the
//! same run.
//!
//! `cargo bench -p realmhost --bench store` first prints a summary (hit-path
//! ratios, memory per realm as RSS delta measured in child processes,
//! `evict_all` duration and read latency during it), then runs the criterion
//! groups. `REALMHOST_STORE_BENCH_QUICK=1` skips the criterion groups.

use std::hint::black_box;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use dashmap::DashMap;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use realmhost::store::{ShardedStore, ShardingConfig, StoreValue};

const REALMS: usize = 1_000_000;
const STATE_BYTES: usize = 64;
const SAMPLES: usize = 1 << 20;
const MEM_ENV: &str = "REALMHOST_STORE_BENCH_MEM";

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

/// `iters` lookups on each of `threads` threads; returns the wall time.
fn run<L: Lookup>(
    map: &L,
    ids: &[String],
    keys: &[Vec<usize>],
    threads: usize,
    iters: u64,
) -> Duration {
    let start = Instant::now();
    std::thread::scope(|scope| {
        for t in 0..threads {
            let keys = &keys[t % keys.len()];
            scope.spawn(move || {
                let mut k = t * 7919;
                for _ in 0..iters {
                    k = (k + 1) & (SAMPLES - 1);
                    black_box(map.lookup(&ids[keys[k]]));
                }
            });
        }
    });
    start.elapsed()
}

fn summary_hit_path(
    ids: &[String],
    store: &ShardedStore<BenchState>,
    map: &DashMap<String, Arc<BenchState>>,
) {
    println!(
        "get_cached vs DashMap::get over {REALMS} realms (ns/op per thread, median of 5 rounds):"
    );
    let dists = [
        ("uniform", vec![uniform_keys(1), uniform_keys(2)]),
        ("zipf0.99", vec![zipf_keys(3), zipf_keys(4)]),
    ];
    for (name, keys) in &dists {
        for threads in [1, 2] {
            let iters = 2_000_000u64;
            let mut s = Vec::new();
            let mut d = Vec::new();
            for _ in 0..5 {
                d.push(run(map, ids, keys, threads, iters).as_nanos() as f64 / iters as f64);
                s.push(run(store, ids, keys, threads, iters).as_nanos() as f64 / iters as f64);
            }
            let (s, d) = (median(&mut s), median(&mut d));
            println!(
                "  {name:9} {threads}t: store {s:6.1} ns, dashmap {d:6.1} ns, store throughput = {:.2}x dashmap",
                d / s
            );
        }
    }
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

fn main() {
    if let Ok(kind) = std::env::var(MEM_ENV) {
        measure_memory(&kind);
        return;
    }
    println!("== realmhost store bench summary ==");
    summary_memory();
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
