//! Unit tests of the store: API, eviction order, evictability, loading and a
//! concurrency stress test.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;

#[derive(Debug)]
struct State {
    seq: u64,
    bytes: usize,
    durable: AtomicBool,
}

impl State {
    fn new(seq: u64) -> Self {
        Self {
            seq,
            bytes: 64,
            durable: AtomicBool::new(true),
        }
    }
    fn dirty(seq: u64) -> Self {
        Self {
            seq,
            bytes: 64,
            durable: AtomicBool::new(false),
        }
    }
}

impl StoreValue for State {
    fn size_bytes(&self) -> usize {
        self.bytes
    }
    fn is_evictable(&self) -> bool {
        self.durable.load(Ordering::SeqCst)
    }
}

fn config(shards: usize, max: usize, cap: usize) -> ShardingConfig {
    ShardingConfig::builder()
        .num_shards(shards)
        .max_per_shard(max)
        .lru_capacity_per_shard(cap)
        .eviction_interval_secs(1)
        .build()
        .expect("valid config")
}

fn store(shards: usize, max: usize, cap: usize) -> ShardedStore<State> {
    ShardedStore::new(config(shards, max, cap)).expect("store")
}

#[test]
fn basic_api_and_stats() {
    let s = store(4, 100, 150);
    assert!(s.register("a", State::new(1)));
    assert!(!s.register("a", State::new(2)));
    assert_eq!(s.get_cached("a").map(|v| v.seq), Some(1));
    assert!(s.get_cached("b").is_none());
    assert_eq!(s.upsert("a", State::new(3)).map(|v| v.seq), Some(1));
    assert!(s.upsert("b", State::new(1)).is_none());
    assert!(s.contains("b"));
    assert_eq!(s.len(), 2);
    assert_eq!(s.state_bytes(), 128);
    assert_eq!(s.remove("b").map(|v| v.seq), Some(1));
    assert!(s.remove("b").is_none());
    assert!(!s.contains("b"));
    let st = s.stats();
    assert_eq!(
        (
            st.total_loaded_realms,
            st.total_cache_hits,
            st.total_cache_misses
        ),
        (1, 1, 1)
    );
    assert_eq!(st.total_state_bytes, 64);
    assert!((st.cache_hit_rate_percent - 50.0).abs() < 1e-9);
    assert_eq!(st.shards.len(), 4);
    assert_eq!(st.shards[s.shard_index("a")].loaded_count, 1);
    assert!(
        ShardedStore::<State>::new(ShardingConfig {
            num_shards: 0,
            ..ShardingConfig::minimal()
        })
        .is_err()
    );
}

#[test]
fn hits_from_many_threads_are_all_counted() {
    let s = Arc::new(store(4, 100, 150));
    s.register("hot", State::new(1));
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                for _ in 0..1000 {
                    assert!(s.get_cached("hot").is_some());
                }
            });
        }
    });
    assert_eq!(s.stats().total_cache_hits, 4000);
}

/// The store places realms with `shard_of`; these ids must stay where they
/// are across releases, processes and platforms.
#[test]
fn shard_placement_is_pinned() {
    let s = ShardedStore::<State>::new(ShardingConfig::default()).expect("store");
    let placed: Vec<usize> = [
        "realm-0",
        "eu-realm-gaming-001/partition-0",
        "ledger-42",
        "x",
    ]
    .iter()
    .map(|id| s.shard_index(id))
    .collect();
    assert_eq!(placed, PINNED_64);
}

const PINNED_64: [usize; 4] = [22, 16, 59, 14];

#[test]
fn recently_read_realms_survive_an_eviction_pass() {
    let s = store(1, 100, 400);
    for i in 0..300 {
        s.register(&format!("r{i}"), State::new(i));
    }
    // Read the 50 oldest: they become the most recently used.
    for i in 0..50 {
        assert!(s.get_cached(&format!("r{i}")).is_some());
    }
    assert_eq!(s.evict_all(), 200);
    for i in 0..50 {
        assert!(
            s.contains(&format!("r{i}")),
            "recently read r{i} was evicted"
        );
    }
    // The other survivors are the 50 most recently inserted.
    for i in 250..300 {
        assert!(
            s.contains(&format!("r{i}")),
            "recently inserted r{i} was evicted"
        );
    }
    assert_eq!(s.len(), 100);
    let st = s.stats();
    assert_eq!(st.total_evictions, 200);
    assert!(st.shards[0].last_eviction_ms > 0);
}

#[test]
fn eviction_respects_evictability_and_feeds_the_hook() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    let s = ShardedStore::new(config(2, 1, 10))
        .expect("store")
        .with_eviction_hook(move |e: Evicted<State>| {
            assert_eq!(e.reason, EvictionReason::Explicit);
            sink.lock().expect("lock").push(e.realm_id.to_string());
        });
    for i in 0..6 {
        let value = if i % 2 == 0 {
            State::dirty(i)
        } else {
            State::new(i)
        };
        s.register(&format!("r{i}"), value);
    }
    assert_eq!(s.evict_down_to(0), 3);
    for i in [0, 2, 4] {
        assert!(s.contains(&format!("r{i}")), "non-durable r{i} was evicted");
    }
    let mut evicted = seen.lock().expect("lock").clone();
    evicted.sort();
    assert_eq!(evicted, ["r1", "r3", "r5"]);
    // Once durable, they may go.
    for i in [0, 2, 4] {
        if let Some(v) = s.get_cached(&format!("r{i}")) {
            v.durable.store(true, Ordering::SeqCst);
        }
    }
    assert_eq!(s.evict_down_to(0), 3);
    assert!(s.is_empty());
}

#[test]
fn hard_cap_sheds_at_insert_time() {
    let s = ShardedStore::<State>::new(
        ShardingConfig::builder()
            .num_shards(1)
            .max_per_shard(100)
            .lru_capacity_per_shard(200)
            .hard_cap_per_shard(150)
            .build()
            .expect("valid"),
    )
    .expect("store");
    for i in 0..150 {
        s.register(&format!("r{i}"), State::new(i));
    }
    assert_eq!(s.len(), 150);
    s.register("one-more", State::new(0));
    assert_eq!(s.len(), 100);
    assert!(s.contains("one-more"));
    assert!(!s.contains("r0"));
}

#[test]
fn memory_budget_sheds_coldest() {
    let s = ShardedStore::<State>::new(
        ShardingConfig::builder()
            .num_shards(1)
            .max_per_shard(1000)
            .memory_budget_bytes(64 * 32)
            .build()
            .expect("ok"),
    )
    .expect("store");
    for i in 0..32 {
        s.register(&format!("r{i}"), State::new(i));
    }
    assert!(s.get_cached("r0").is_some());
    s.register("r32", State::new(32));
    assert!(s.state_bytes() <= 64 * 30, "{} bytes", s.state_bytes());
    assert!(s.contains("r0"), "recently read realm shed");
    assert!(s.contains("r32"));
    assert!(!s.contains("r1"));
}

type BoxedLoad = std::pin::Pin<Box<dyn Future<Output = Result<Option<State>, BoxError>> + Send>>;

fn loader_counting(loads: &Arc<AtomicUsize>, seq: u64) -> impl FnMut() -> BoxedLoad + use<> {
    let loads = Arc::clone(loads);
    move || {
        let loads = Arc::clone(&loads);
        Box::pin(async move {
            loads.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok(Some(State::new(seq)))
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_share_one_load() {
    let s = Arc::new(store(4, 100, 150));
    let loads = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let s = Arc::clone(&s);
            let loader = loader_counting(&loads, 7);
            tokio::spawn(async move { s.get_or_load("cold", loader).await })
        })
        .collect();
    let mut values = Vec::new();
    for t in tasks {
        values.push(t.await.expect("join").expect("loaded"));
    }
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    assert!(
        values
            .iter()
            .all(|v| Arc::ptr_eq(v, &values[0]) && v.seq == 7)
    );
    let st = s.stats();
    assert_eq!(st.total_loads, 1);
    // A warm realm is not loaded again.
    s.get_or_load("cold", loader_counting(&loads, 8))
        .await
        .expect("cached");
    assert_eq!(loads.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loader_errors_reach_every_waiter() {
    let s = Arc::new(store(4, 100, 150));
    let calls = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let s = Arc::clone(&s);
            let calls = Arc::clone(&calls);
            tokio::spawn(async move {
                s.get_or_load("broken", move || {
                    let calls = Arc::clone(&calls);
                    async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        Err::<Option<State>, BoxError>("disk on fire".into())
                    }
                })
                .await
            })
        })
        .collect();
    for t in tasks {
        match t.await.expect("join") {
            Err(LoadError::Loader { realm, source }) => {
                assert_eq!(&*realm, "broken");
                assert_eq!(source.to_string(), "disk on fire");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(!s.contains("broken"));
    let unknown = s.get_or_load("nobody", || async { Ok(None) }).await;
    assert!(matches!(unknown, Err(LoadError::NotFound(id)) if &*id == "nobody"));
}

#[tokio::test]
async fn loading_can_be_disabled() {
    let s = ShardedStore::<State>::new(ShardingConfig::minimal()).expect("store");
    let r = s
        .get_or_load("x", || async { Ok(Some(State::new(1))) })
        .await;
    assert!(matches!(r, Err(LoadError::LoadingDisabled(_))));
    s.register("x", State::new(1));
    assert!(
        s.get_or_load("x", || async { Ok(Some(State::new(2))) })
            .await
            .is_ok()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loads_are_limited_fair_and_time_out() {
    let s = Arc::new(
        ShardedStore::<State>::new(
            ShardingConfig::builder()
                .max_concurrent_loads(1)
                .load_timeout_ms(300)
                .build()
                .expect("ok"),
        )
        .expect("store"),
    );
    let order = Arc::new(Mutex::new(Vec::new()));
    let running = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..4 {
        let (s, order, running) = (Arc::clone(&s), Arc::clone(&order), Arc::clone(&running));
        tasks.push(tokio::spawn(async move {
            s.get_or_load(&format!("realm-{i}"), move || {
                let (order, running) = (Arc::clone(&order), Arc::clone(&running));
                async move {
                    assert_eq!(
                        running.fetch_add(1, Ordering::SeqCst),
                        0,
                        "two loads ran at once"
                    );
                    order.lock().expect("lock").push(i);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    running.fetch_sub(1, Ordering::SeqCst);
                    Ok(Some(State::new(i)))
                }
            })
            .await
        }));
        // Let each caller queue before the next one arrives.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    for t in tasks {
        t.await.expect("join").expect("loaded");
    }
    assert_eq!(
        *order.lock().expect("lock"),
        [0, 1, 2, 3],
        "loads started out of arrival order"
    );

    // A loader slower than the timeout fails with `Timeout`.
    let r = s
        .get_or_load("slow", || async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok(Some(State::new(0)))
        })
        .await;
    assert!(matches!(r, Err(LoadError::Timeout { .. })), "{r:?}");
    // So does a caller that waits longer than the timeout for a load slot.
    let held = s.load_slots.acquire().await.expect("semaphore open");
    let r = s
        .get_or_load("waiting", || async { Ok(Some(State::new(0))) })
        .await;
    assert!(matches!(r, Err(LoadError::Timeout { .. })), "{r:?}");
    drop(held);
    assert!(
        s.get_or_load("waiting", || async { Ok(Some(State::new(0))) })
            .await
            .is_ok()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_racing_a_removal_is_retried() {
    let s = Arc::new(store(1, 100, 150));
    let calls = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(tokio::sync::Notify::new());
    let durable = Arc::new(AtomicU64::new(1));
    let task = {
        let (s, calls, release, durable) = (
            Arc::clone(&s),
            Arc::clone(&calls),
            Arc::clone(&release),
            Arc::clone(&durable),
        );
        tokio::spawn(async move {
            s.get_or_load("r", move || {
                let (calls, release, durable) = (
                    Arc::clone(&calls),
                    Arc::clone(&release),
                    Arc::clone(&durable),
                );
                async move {
                    let seq = durable.load(Ordering::SeqCst);
                    if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                        release.notified().await;
                    }
                    Ok(Some(State::new(seq)))
                }
            })
            .await
        })
    };
    while calls.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // A writer appends seq 2, puts it in memory, and the realm is evicted,
    // all while the first load (which read seq 1) is still running.
    durable.store(2, Ordering::SeqCst);
    s.upsert("r", State::new(2));
    assert_eq!(s.evict_down_to(0), 1);
    release.notify_one();
    let v = task.await.expect("join").expect("loaded");
    assert_eq!(v.seq, 2, "stale load was inserted");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(s.get_cached("r").map(|v| v.seq), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_leader_hands_over() {
    let s = Arc::new(store(1, 100, 150));
    let leader = {
        let s = Arc::clone(&s);
        tokio::spawn(async move {
            s.get_or_load("r", || async {
                tokio::time::sleep(Duration::from_secs(10)).await;
                Ok(Some(State::new(1)))
            })
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    let follower = {
        let s = Arc::clone(&s);
        tokio::spawn(async move {
            s.get_or_load("r", || async { Ok(Some(State::new(2))) })
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    leader.abort();
    let v = tokio::time::timeout(Duration::from_secs(2), follower)
        .await
        .expect("no hang")
        .expect("join");
    assert_eq!(v.expect("loaded").seq, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_tasks_sweep_and_stop() {
    let s = Arc::new(store(2, 5, 100));
    for i in 0..40 {
        s.register(&format!("r{i}"), State::new(i));
    }
    let tasks = Arc::clone(&s).spawn_eviction_tasks().expect("runtime");
    assert_eq!(tasks.len(), 2);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while s.len() > 10 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(s.len() <= 10, "{} realms left", s.len());
    tokio::time::timeout(Duration::from_secs(2), tasks.shutdown())
        .await
        .expect("tasks stop");
    assert_eq!(Arc::strong_count(&s), 1, "tasks still hold the store");
}

/// With lazy loading off nothing is evicted — no periodic task, no sweep, no
/// shedding at the hard cap or the memory budget — and new realms past the
/// limits are refused by `reserve` instead. Explicit calls still work.
#[tokio::test]
async fn without_lazy_loading_nothing_is_evicted_and_full_shards_refuse_room() {
    let lazy_off =
        || ShardingConfigBuilder::from_profile(config(1, 10, 20)).lazy_loading_enabled(false);
    let s =
        Arc::new(ShardedStore::<State>::new(lazy_off().build().expect("valid")).expect("store"));
    let tasks = Arc::clone(&s).spawn_eviction_tasks().expect("runtime");
    assert!(tasks.is_empty(), "a periodic eviction task was started");
    for i in 0..20 {
        let room = s
            .reserve(&format!("r{i}"))
            .expect("room below the hard cap");
        assert!(s.register(&format!("r{i}"), State::new(i)));
        drop(room);
    }
    // Twice `max_per_shard`, and nothing goes.
    assert_eq!(s.evict_all(), 0);
    assert_eq!(s.len(), 20);
    // At the hard cap: no room for a new realm; a realm in memory needs none.
    assert!(matches!(
        s.reserve("new"),
        Err(StoreError::ShardFull { shard: 0, cap: 20 })
    ));
    assert!(s.reserve("r3").is_ok());
    // Replacing a realm in memory is always possible.
    assert!(s.upsert("r3", State::new(30)).is_some());
    // An insert without a reservation is not refused, but still sheds nothing.
    assert!(s.register("unreserved", State::new(0)));
    assert_eq!(s.len(), 21);
    assert_eq!(s.stats().total_evictions, 0);
    for i in 0..20 {
        assert!(s.contains(&format!("r{i}")), "r{i} was evicted");
    }
    // Explicit calls still drop realms.
    assert!(s.remove("unreserved").is_some());
    assert_eq!(s.evict_down_to(0), 20);
    assert!(s.is_empty());
    tasks.shutdown().await;

    // Rooms granted and not released count against the cap.
    let s = ShardedStore::<State>::new(
        ShardingConfigBuilder::from_profile(config(1, 1, 2))
            .lazy_loading_enabled(false)
            .build()
            .expect("valid"),
    )
    .expect("store");
    let a = s.reserve("a").expect("room");
    let b = s.reserve("b").expect("room");
    assert!(matches!(s.reserve("c"), Err(StoreError::ShardFull { .. })));
    drop(b);
    let c = s.reserve("c").expect("room given back");
    s.register("a", State::new(1));
    drop(a);
    drop(c);
    assert!(s.reserve("d").is_ok());

    // The memory budget refuses new realms instead of shedding old ones.
    let s = ShardedStore::<State>::new(
        lazy_off()
            .memory_budget_bytes(64 * 3)
            .build()
            .expect("valid"),
    )
    .expect("store");
    for i in 0..3 {
        let room = s.reserve(&format!("m{i}")).expect("room below the budget");
        s.register(&format!("m{i}"), State::new(i));
        drop(room);
    }
    assert!(matches!(
        s.reserve("m3"),
        Err(StoreError::MemoryFull {
            bytes: 192,
            budget: 192
        })
    ));
    let grown = State {
        bytes: 128,
        ..State::new(9)
    };
    assert!(s.upsert("m0", grown).is_some());
    assert_eq!((s.len(), s.state_bytes()), (3, 256));

    // With lazy loading on, a reservation never fails: inserts make room.
    let s = store(1, 1, 2);
    for i in 0..5 {
        let room = s.reserve(&format!("e{i}")).expect("always room");
        s.register(&format!("e{i}"), State::new(i));
        drop(room);
    }
    assert!(s.len() <= 2);
}

/// Each shard's map gets enough internal locks for 4 × CPUs in total, as a
/// power of two (DashMap's requirement) and at least 2.
#[test]
fn internal_locks_add_up_to_a_plain_dashmaps() {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    for shards in [1, 3, 4, 64, 128, 256, 10_000] {
        let inner = inner_shards(shards);
        assert!(inner >= 2 && inner.is_power_of_two(), "{shards}: {inner}");
        assert!(inner * shards >= 4 * cpus, "{shards}: {inner}");
        assert!(inner == 2 || inner * shards < 8 * cpus, "{shards}: {inner}");
    }
}

#[test]
fn spawning_needs_a_runtime() {
    assert!(matches!(
        Arc::new(store(1, 1, 1)).spawn_eviction_tasks(),
        Err(StoreError::NoRuntime)
    ));
}

/// Readers, writers, loaders and eviction on the same few realms. Writers
/// serialize per realm (as the node does) and check that the realm's state in
/// memory is always the durable one: no lost update, no stale load. Loads of
/// one realm never overlap. Everything finishes: no deadlock.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stress_readers_writers_loaders_eviction() {
    const REALMS: u64 = 16;
    const WRITES: u64 = 200;
    let s = Arc::new(store(2, 2, 64));
    let durable: Arc<Mutex<HashMap<String, u64>>> = Arc::new(Mutex::new(
        (0..REALMS).map(|i| (format!("r{i}"), 0)).collect(),
    ));
    let loading: Arc<HashMap<String, AtomicBool>> = Arc::new(
        (0..REALMS)
            .map(|i| (format!("r{i}"), AtomicBool::new(false)))
            .collect(),
    );
    let locks: Arc<HashMap<String, tokio::sync::Mutex<()>>> = Arc::new(
        (0..REALMS)
            .map(|i| (format!("r{i}"), tokio::sync::Mutex::new(())))
            .collect(),
    );
    let stop = Arc::new(AtomicBool::new(false));

    let make_loader = {
        let (durable, loading) = (Arc::clone(&durable), Arc::clone(&loading));
        move |id: String| {
            let (durable, loading) = (Arc::clone(&durable), Arc::clone(&loading));
            move || {
                let (durable, loading, id) =
                    (Arc::clone(&durable), Arc::clone(&loading), id.clone());
                async move {
                    let flag = loading.get(&id).ok_or("unknown")?;
                    assert!(
                        !flag.swap(true, Ordering::SeqCst),
                        "two loads of {id} at once"
                    );
                    tokio::task::yield_now().await;
                    let seq = durable.lock().expect("lock").get(&id).copied();
                    tokio::task::yield_now().await;
                    flag.store(false, Ordering::SeqCst);
                    Ok::<_, BoxError>(seq.map(State::new))
                }
            }
        }
    };

    let mut tasks = Vec::new();
    for w in 0..4u64 {
        let (s, durable, locks) = (Arc::clone(&s), Arc::clone(&durable), Arc::clone(&locks));
        let make_loader = make_loader.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..WRITES {
                let id = format!("r{}", (n * 7 + w) % REALMS);
                let Some(lock) = locks.get(&id) else { continue };
                let _guard = lock.lock().await;
                let current = s
                    .get_or_load(&id, make_loader(id.clone()))
                    .await
                    .expect("load");
                let on_disk = durable.lock().expect("lock").get(&id).copied();
                assert_eq!(Some(current.seq), on_disk, "memory lost an update of {id}");
                durable
                    .lock()
                    .expect("lock")
                    .insert(id.clone(), current.seq + 1);
                s.upsert(&id, State::new(current.seq + 1));
            }
        }));
    }
    for r in 0..2u64 {
        let (s, stop) = (Arc::clone(&s), Arc::clone(&stop));
        let make_loader = make_loader.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = r;
            while !stop.load(Ordering::Relaxed) {
                let id = format!("r{}", n % REALMS);
                if n % 3 == 0 {
                    s.get_or_load(&id, make_loader(id.clone()))
                        .await
                        .expect("load");
                } else {
                    let _ = s.get_cached(&id);
                }
                n += 1;
                tokio::task::yield_now().await;
            }
        }));
    }
    let evictor = {
        let (s, stop) = (Arc::clone(&s), Arc::clone(&stop));
        tokio::spawn(async move {
            let mut passes = 0u64;
            while !stop.load(Ordering::Relaxed) {
                s.evict_down_to(passes as usize % 3);
                passes += 1;
                tokio::task::yield_now().await;
            }
            passes
        })
    };
    let writers: Vec<_> = tasks.drain(..4).collect();
    let all = async {
        for t in writers {
            t.await.expect("writer");
        }
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            t.await.expect("reader");
        }
        evictor.await.expect("evictor")
    };
    let passes = tokio::time::timeout(Duration::from_secs(20), all)
        .await
        .expect("no deadlock");
    assert!(passes > 0);
    let total: u64 = durable.lock().expect("lock").values().sum();
    assert_eq!(total, 4 * WRITES);
    for i in 0..REALMS {
        let id = format!("r{i}");
        let v = s
            .get_or_load(&id, make_loader(id.clone()))
            .await
            .expect("load");
        assert_eq!(Some(v.seq), durable.lock().expect("lock").get(&id).copied());
    }
    let st = s.stats();
    assert!(st.total_evictions > 0 && st.total_loads > 0, "{st:?}");
}
