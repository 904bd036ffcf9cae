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

// ---------------------------------------------------------------------------
// Memory of keyed realm state (contract 0.2).

/// Keys in the one large realm.
const KEYS: usize = 1_000_000;

/// A funded ledger account's entry, as the ledger plugin writes it (run
/// natively through the SDK's entry points): (key prefix of the `accounts`
/// map, value bytes of a balance of 10^9).
fn ledger_entry_shape() -> (Vec<u8>, Vec<u8>) {
    use realmhost_plugin_ledger::{ACCOUNTS, Ledger, Tx};
    let mut s = MemoryState::new();
    entry::init::<Ledger>(&mut s, "r").expect("init");
    let name = "acct-0000000";
    for (seq, tx) in [
        Tx::Open {
            account: name.into(),
        },
        Tx::Deposit {
            account: name.into(),
            amount: 1_000_000_000,
        },
    ]
    .iter()
    .enumerate()
    {
        let p = encode_payload(tx);
        entry::apply::<Ledger>(&mut s, &EventRef::new(seq as u64 + 1, "tx", &p, "x"))
            .expect("apply");
    }
    let key = ACCOUNTS.key(name);
    let value = s.get(&key).expect("account entry").to_vec();
    (key[..key.len() - name.len()].to_vec(), value)
}

/// A counter realm's one entry after one event, as the counter plugin
/// writes it (natively, through the SDK).
fn counter_entry() -> (Vec<u8>, Vec<u8>) {
    use realmhost_plugin_counter::{Counter, Op};
    let mut s = MemoryState::new();
    entry::init::<Counter>(&mut s, "r").expect("init");
    let p = encode_payload(&Op::Add(1));
    entry::apply::<Counter>(&mut s, &EventRef::new(1, "add", &p, "x")).expect("apply");
    let mut it = s.iter();
    let (k, v) = it.next().expect("one entry");
    assert!(it.next().is_none(), "a counter realm holds one entry");
    (k.to_vec(), v.to_vec())
}

fn account_key(prefix: &[u8], i: usize) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.extend_from_slice(format!("acct-{i:07}").as_bytes());
    k
}

/// (RSS bytes, counted live bytes, counted live allocations), now.
fn memory_now() -> (i64, i64, i64) {
    (
        rss_bytes() as i64,
        LIVE_BYTES.load(Ordering::Relaxed) as i64,
        LIVE_ALLOCS.load(Ordering::Relaxed) as i64,
    )
}

/// Child process for the keyed-state lines. Prints
/// `rss_per_item counted_per_item allocs_per_item data_per_item [extra]`.
fn measure_keyed_memory(kind: &str) {
    COUNTING.store(true, Ordering::Relaxed);
    let per = |before: (i64, i64, i64), after: (i64, i64, i64), n: usize, data: u64| {
        format!(
            "{:.1} {:.1} {:.2} {:.2}",
            (after.0 - before.0) as f64 / n as f64,
            (after.1 - before.1) as f64 / n as f64,
            (after.2 - before.2) as f64 / n as f64,
            data as f64 / n as f64
        )
    };
    match kind {
        // One realm of KEYS ledger accounts, built the way a load builds it
        // (`StateMap::from_sorted` over the snapshot's entries).
        "statemap-loaded" => {
            let (prefix, value) = ledger_entry_shape();
            let before = memory_now();
            let mut entries = Vec::with_capacity(KEYS);
            for i in 0..KEYS {
                entries.push((
                    Bytes::from(account_key(&prefix, i)),
                    Bytes::from(&value[..]),
                ));
            }
            let map = StateMap::from_sorted(entries).expect("sorted");
            let after = memory_now();
            println!(
                "{} {}",
                per(before, after, KEYS, map.data_bytes()),
                map.heap_bytes() as f64 / KEYS as f64
            );
            black_box(&map);
        }
        // The same realm grown by writes in random key order, 1000 keys per
        // new version (as events write them), every older version dropped.
        "statemap-grown" => {
            let (prefix, value) = ledger_entry_shape();
            let mut order: Vec<usize> = (0..KEYS).collect();
            let mut rng = SmallRng::seed_from_u64(5);
            for i in (1..KEYS).rev() {
                order.swap(i, rng.random_range(0..=i));
            }
            let before = memory_now();
            let mut map = StateMap::new();
            for chunk in order.chunks(1000) {
                let mut changes: Vec<Change> = chunk
                    .iter()
                    .map(|&i| {
                        (
                            Bytes::from(account_key(&prefix, i)),
                            Some(Bytes::from(&value[..])),
                        )
                    })
                    .collect();
                changes.sort_by(|a, b| a.0.cmp(&b.0));
                map = map.with_changes(&changes);
            }
            let after = memory_now();
            println!(
                "{} {}",
                per(before, after, KEYS, map.data_bytes()),
                map.heap_bytes() as f64 / KEYS as f64
            );
            black_box(&map);
        }
        // Baseline: a plain `BTreeMap<Box<[u8]>, Box<[u8]>>` of the same
        // entries (not persistent: no sharing between versions).
        "btreemap" => {
            let (prefix, value) = ledger_entry_shape();
            let before = memory_now();
            let map: BTreeMap<Box<[u8]>, Box<[u8]>> = (0..KEYS)
                .map(|i| {
                    (
                        account_key(&prefix, i).into_boxed_slice(),
                        value.clone().into_boxed_slice(),
                    )
                })
                .collect();
            let after = memory_now();
            let data: u64 = map.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum();
            println!("{}", per(before, after, KEYS, data));
            black_box(&map);
        }
        // REALMS small realms, one counter entry each, as the node holds
        // them: `Arc<RealmState>` with a packed map, in the sharded store.
        "realms-store" => {
            let (k, v) = counter_entry();
            let ids = ids();
            let tag = Arc::new(PluginTag {
                realm_type: Arc::from("counter"),
                version: PluginVersion::of(b"counter"),
                state_version: 1,
            });
            let before = memory_now();
            let store: ShardedStore<RealmState> = ShardedStore::new(config()).expect("store");
            for id in &ids {
                let map = StateMap::from_sorted(vec![(Bytes::from(&k[..]), Bytes::from(&v[..]))])
                    .expect("one entry");
                store.register(id, RealmState::new(tag.clone(), 1, 0, map));
            }
            let after = memory_now();
            println!(
                "{}",
                per(before, after, REALMS, ((k.len() + v.len()) * REALMS) as u64)
            );
            black_box(&store);
        }
        // Baseline: a bare `DashMap<String, Arc<Box<[u8]>>>` holding the same
        // entry bytes per realm.
        _ => {
            let (k, v) = counter_entry();
            let ids = ids();
            let data = [k, v].concat();
            let before = memory_now();
            let map: DashMap<String, Arc<Box<[u8]>>> = DashMap::new();
            for id in &ids {
                map.insert(id.clone(), Arc::new(data.clone().into_boxed_slice()));
            }
            let after = memory_now();
            println!(
                "{}",
                per(before, after, REALMS, (data.len() * REALMS) as u64)
            );
            black_box(&map);
        }
    }
}

/// The keyed-state memory lines: (a) bytes per key beyond its key and value
/// bytes with 1M keys in one realm's `StateMap`, against a plain `BTreeMap`;
/// (b) bytes per small realm beyond its data with 1M one-entry realms in a
/// `ShardedStore<RealmState>`, against a bare `DashMap`. Each structure is
/// built in its own child process; RSS delta (what the process really
/// holds, allocator overhead included) and the live bytes the allocator was
/// asked for.
fn summary_keyed_memory() {
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => return println!("keyed memory: cannot find own executable: {e}"),
    };
    let measure = |kind: &str| -> Option<Vec<f64>> {
        let out = Command::new(&exe).env(MEM_ENV, kind).output().ok()?;
        let v: Vec<f64> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        (v.len() >= 4).then_some(v)
    };
    let line = |name: &str, v: &[f64]| {
        format!(
            "{name}: {:.1} B/item RSS ({:.1} beyond data), {:.1} B/item requested ({:.1} beyond data), {:.2} allocations/item, data {:.1} B/item",
            v[0],
            v[0] - v[3],
            v[1],
            v[1] - v[3],
            v[2],
            v[3]
        )
    };
    println!("keyed state, one realm of {KEYS} ledger accounts (one entry each):");
    let mut beyond = Vec::new();
    for (kind, name) in [
        ("statemap-loaded", "StateMap from_sorted (a load)     "),
        ("statemap-grown", "StateMap grown by random writes   "),
        ("btreemap", "BTreeMap<Box<[u8]>, Box<[u8]>>    "),
    ] {
        match measure(kind) {
            Some(v) => {
                let est = v
                    .get(4)
                    .map(|h| format!("; heap_bytes() estimate {:.1} B/item", h))
                    .unwrap_or_default();
                println!("  {}{est}", line(name, &v));
                beyond.push(v[0] - v[3]);
            }
            None => println!("  {name}: measurement failed"),
        }
    }
    if beyond.len() == 3 {
        println!(
            "  beyond data, RSS: loaded {:.1} B/key, grown {:.1} B/key, BTreeMap {:.1} B/key; ratio to BTreeMap {:.2}x / {:.2}x",
            beyond[0],
            beyond[1],
            beyond[2],
            beyond[0] / beyond[2],
            beyond[1] / beyond[2]
        );
    }
    println!("keyed state, {REALMS} small realms (one counter entry each), 20-char ids:");
    match (measure("realms-store"), measure("realms-dashmap")) {
        (Some(s), Some(d)) => {
            println!("  {}", line("ShardedStore<RealmState>        ", &s));
            println!("  {}", line("DashMap<String, Arc<Box<[u8]>>> ", &d));
            println!(
                "  beyond data per realm (RSS): store {:.0} B, DashMap {:.0} B, ratio {:.2}x (target <= 260 B)",
                s[0] - s[3],
                d[0] - d[3],
                (s[0] - s[3]) / (d[0] - d[3])
            );
            println!(
                "  (size_of: RealmState {} B, StateMap {} B; each realm's state is one Arc<RealmState> allocation \
                 plus one packed buffer)",
                std::mem::size_of::<RealmState>(),
                std::mem::size_of::<StateMap>()
            );
        }
        _ => println!("  measurement failed"),
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
