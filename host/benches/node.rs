//! The whole node, measured against baselines taken in the same run.
//!
//! `cargo bench -p realmhost --bench node` (set `REALMHOST_BENCH_SECS` to
//! change the measurement time per case, default 3;
//! `REALMHOST_NODE_BENCH_SECTIONS` to a comma-separated subset of
//! `appends,cold,swap,keyed` to run only those, default all;
//! `REALMHOST_NODE_BENCH_MAX_ACCOUNTS` to leave out the larger keyed realms,
//! default 1 000 000).
//!
//! 1. **Durable appends** (`appends`): 256 writers on distinct counter
//!    realms through the full append path (validate, apply in the sandbox,
//!    group commit, publish), against the bare `write 4 KiB + fdatasync`
//!    rate of the same disk. Also with the shard monitor off, for the
//!    monitor's overhead.
//! 2. **Cold load and replay** (`cold`): a small ledger realm with a
//!    snapshot and a ~100-event tail, evicted, then read through the node
//!    (storage read + snapshot entries to a map + `apply-batch` in the
//!    sandbox), against the bare storage read of the same rows; and a
//!    10 000-event realm without snapshot, replayed in the sandbox against
//!    the same logic native.
//! 3. **Hot swap under load** (`swap`): 64 writers; swap latency (including
//!    shadow replay of every realm) and the throughput dip around the swap.
//! 4. **Keyed state at scale** (`keyed`): ledger realms of 100, 10 000,
//!    100 000 and 1 000 000 accounts, seeded in bulk (see [`seed_ledger`]):
//!    - the CPU cost of one `apply` in the sandbox on each realm's map, and
//!      durable appends through the node (a few writers on that one realm,
//!      delta snapshots every 100 events), each against the 100-account
//!      realm in the same rounds;
//!    - the snapshot after 100 events that touch 100 keys (a delta) against
//!      a full snapshot of the same realm, and against one durable commit of
//!      a tiny record;
//!    - a cold load of the 100 000-account realm (snapshot + 100-event tail)
//!      against the bare storage read of the same rows.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use realmhost::node::{Node, NodeConfig};
use realmhost::realm::{EventRecord, NewEvent, RealmId};
use realmhost::runtime::{ApplyOutcome, Plugin, Scope};
use realmhost::state::{Bytes, StateMap};
use realmhost::storage::{AppendRequest, SnapshotBody, SnapshotWrite, Storage};
use realmhost_guest::{MemoryState, encode_payload};
use realmhost_plugin_ledger::{Ledger, Tx};

fn secs() -> Duration {
    let s = std::env::var("REALMHOST_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    Duration::from_secs_f64(s)
}

/// Whether section `name` runs (`REALMHOST_NODE_BENCH_SECTIONS`).
fn section(name: &str) -> bool {
    match std::env::var("REALMHOST_NODE_BENCH_SECTIONS") {
        Ok(list) => list.split(',').any(|s| s.trim() == name),
        Err(_) => true,
    }
}

/// Realm sizes (accounts) of the keyed-state section.
fn keyed_sizes() -> Vec<u64> {
    let max = std::env::var("REALMHOST_NODE_BENCH_MAX_ACCOUNTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000u64);
    [100, 10_000, 100_000, 1_000_000]
        .into_iter()
        .filter(|&n| n <= max)
        .collect()
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Sort and take the median.
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    pct(v, 0.5)
}

/// "median [min..max]" of per-round ratios.
fn spread(v: &mut [f64]) -> String {
    v.sort_by(f64::total_cmp);
    format!(
        "{:.2}x [{:.2}..{:.2}]",
        pct(v, 0.5),
        v.first().copied().unwrap_or(f64::NAN),
        v.last().copied().unwrap_or(f64::NAN)
    )
}

fn fdatasync_rate(dir: &std::path::Path, d: Duration) -> f64 {
    let path = dir.join("fsync-probe");
    let mut f = std::fs::File::create(&path).unwrap();
    let block = vec![0xa5u8; 4096];
    let t = Instant::now();
    let mut n = 0u64;
    while t.elapsed() < d {
        f.write_all(&block).unwrap();
        f.sync_data().unwrap();
        n += 1;
    }
    let _ = std::fs::remove_file(&path);
    n as f64 / t.elapsed().as_secs_f64()
}

fn counter_event(realm: &RealmId, w: usize) -> NewEvent {
    NewEvent {
        realm_id: realm.clone(),
        realm_type: "counter".into(),
        kind: "add".into(),
        payload: encode_payload(&realmhost_plugin_counter::Op::Add(1)),
        source: format!("writer-{w}"),
        source_realm: None,
    }
}

fn ledger_event(realm: &RealmId, tx: &Tx) -> NewEvent {
    NewEvent {
        realm_id: realm.clone(),
        realm_type: "ledger".into(),
        kind: "tx".into(),
        payload: encode_payload(tx),
        source: "bench".into(),
        source_realm: None,
    }
}

/// A ledger event as the log stores it.
fn ledger_record(seq: u64, tx: &Tx) -> EventRecord {
    EventRecord {
        seq,
        kind: "tx".into(),
        payload: encode_payload(tx),
        source: "bench".into(),
        source_realm: None,
        timestamp_ms: 1_700_000_000_000 + seq,
        source_reputation: 1.0,
    }
}

/// `n` ledger events: two accounts opened, then deposits and transfers.
async fn fill_ledger(node: &Node, realm: &RealmId, n: u64) {
    node.append(ledger_event(
        realm,
        &Tx::Open {
            account: "a".into(),
        },
    ))
    .await
    .unwrap();
    node.append(ledger_event(
        realm,
        &Tx::Open {
            account: "b".into(),
        },
    ))
    .await
    .unwrap();
    for i in 0..n.saturating_sub(2) {
        let tx = if i % 2 == 0 {
            Tx::Deposit {
                account: "a".into(),
                amount: 5,
            }
        } else {
            Tx::Transfer {
                from: "a".into(),
                to: "b".into(),
                amount: 2,
            }
        };
        node.append(ledger_event(realm, &tx)).await.unwrap();
    }
}

/// 256 writers, distinct realms: (events/s, p50 ms, p99 ms).
async fn appends(monitor: bool, d: Duration) -> (f64, f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = NodeConfig::with_data_dir(dir.path());
    cfg.plugins_dir = None;
    cfg.monitor_enabled = monitor;
    let node = Node::open(cfg).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let warm = Duration::from_millis(500);
    let mut tasks = Vec::new();
    for w in 0..256 {
        let (node, stop) = (node.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let realm = RealmId::new(format!("bench-{w:04}")).unwrap();
            let start = Instant::now();
            let mut lat = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                node.append(counter_event(&realm, w)).await.unwrap();
                if start.elapsed() > warm {
                    lat.push(t.elapsed().as_secs_f64() * 1e3);
                }
            }
            lat
        }));
    }
    tokio::time::sleep(warm + d).await;
    stop.store(true, Ordering::Relaxed);
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    lat.sort_by(f64::total_cmp);
    let rate = lat.len() as f64 / d.as_secs_f64();
    node.shutdown().await.unwrap();
    (rate, pct(&lat, 0.5), pct(&lat, 0.99))
}

fn appends_section(rt: &tokio::runtime::Runtime, d: Duration) {
    let probe_dir = tempfile::tempdir().unwrap();
    let fsync1 = fdatasync_rate(probe_dir.path(), Duration::from_secs(2));
    let mut on = Vec::new();
    let mut off = Vec::new();
    for _ in 0..2 {
        on.push(rt.block_on(appends(true, d)));
        off.push(rt.block_on(appends(false, d)));
    }
    let fsync2 = fdatasync_rate(probe_dir.path(), Duration::from_secs(2));
    let fsync = (fsync1 + fsync2) / 2.0;
    println!("bare fdatasync (4 KiB writes): {fsync1:.0}/s before, {fsync2:.0}/s after");
    println!("durable appends through the node, 256 writers on distinct counter realms:");
    for (name, runs) in [("monitor on ", &on), ("monitor off", &off)] {
        for (rate, p50, p99) in runs.iter() {
            println!(
                "  {name}: {rate:>8.0} events/s ({:.1}× fdatasync)  ack p50 {p50:.1} ms  p99 {p99:.1} ms",
                rate / fsync
            );
        }
    }
    let best = |v: &Vec<(f64, f64, f64)>| v.iter().map(|r| r.0).fold(0.0, f64::max);
    println!(
        "  monitor on / off (best of 2 each): {:.3}",
        best(&on) / best(&off)
    );
}

async fn cold_load() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = NodeConfig::with_data_dir(dir.path());
    cfg.plugins_dir = None;
    cfg.snapshot_every = 100;
    let node = Node::open(cfg).await.unwrap();
    let realms: Vec<RealmId> = (0..200)
        .map(|i| RealmId::new(format!("cold-{i:04}")).unwrap())
        .collect();
    for r in &realms {
        // 199 events: a snapshot at seq 100 and a 99-event tail.
        fill_ledger(&node, r, 199).await;
    }
    let storage = node.storage().clone();
    // Warm redb's cache for both measurements alike.
    for r in &realms {
        storage.load_realm(r).await.unwrap();
    }
    let (mut bare, mut full) = (Vec::new(), Vec::new());
    for _round in 0..5 {
        for r in &realms {
            let t = Instant::now();
            std::hint::black_box(storage.load_realm(r).await.unwrap());
            bare.push(t.elapsed().as_secs_f64() * 1e6);
            node.store().remove(r.as_str());
            let t = Instant::now();
            std::hint::black_box(node.get(r).await.unwrap());
            full.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    bare.sort_by(f64::total_cmp);
    full.sort_by(f64::total_cmp);
    println!(
        "cold load, snapshot + 99-event tail (ledger, 2 accounts), {} loads, warm redb cache",
        full.len()
    );
    println!(
        "  bare storage read of the same rows     p50 {:>8.1} µs  p99 {:>8.1} µs",
        pct(&bare, 0.5),
        pct(&bare, 0.99)
    );
    println!(
        "  node load (read + map + replay)        p50 {:>8.1} µs  p99 {:>8.1} µs",
        pct(&full, 0.5),
        pct(&full, 0.99)
    );
    println!(
        "  ratio                                  p50 {:>8.2}×     p99 {:>8.2}×",
        pct(&full, 0.5) / pct(&bare, 0.5),
        pct(&full, 0.99) / pct(&bare, 0.99)
    );

    node.shutdown().await.unwrap();
    drop(node);

    // A 10k-event realm without a snapshot: full replay.
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = NodeConfig::with_data_dir(dir.path());
    cfg.plugins_dir = None;
    cfg.snapshot_every = u64::MAX;
    let node = Node::open(cfg).await.unwrap();
    let storage = node.storage().clone();
    let big = RealmId::new("big-realm").unwrap();
    fill_ledger(&node, &big, 10_000).await;
    let events = storage.events_since(&big, 0).await.unwrap();
    let plugin = node.plugins().get("ledger").unwrap();
    let mut wasm = Vec::new();
    let mut native = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let init = plugin.init("big-realm").unwrap().value.unwrap().map;
        let replayed = plugin
            .replay("big-realm", init, &events, 1000)
            .unwrap()
            .value
            .unwrap();
        std::hint::black_box(replayed);
        wasm.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let mut state = MemoryState::new();
        realmhost_guest::entry::init::<Ledger>(&mut state, "big-realm").unwrap();
        let mut enc = realmhost_guest::batch::BatchEncoder::with_capacity(4096);
        for chunk in events.chunks(1000) {
            enc.clear();
            for e in chunk {
                enc.push(&e.as_event_ref());
            }
            realmhost_guest::entry::apply_batch::<Ledger>(&mut state, enc.as_bytes()).unwrap();
        }
        std::hint::black_box(state);
        native.push(t.elapsed().as_secs_f64());
    }
    wasm.sort_by(f64::total_cmp);
    native.sort_by(f64::total_cmp);
    let n = events.len() as f64;
    println!("replay of a 10 000-event realm (no snapshot), median of 5");
    println!(
        "  sandbox {:>10.0} events/s ({:.1} ms)   native {:>10.0} events/s   ratio {:.2}×",
        n / wasm[2],
        wasm[2] * 1e3,
        n / native[2],
        native[2] / wasm[2]
    );
    node.store().remove("big-realm");
    let t = Instant::now();
    node.get(&big).await.unwrap();
    println!(
        "  cold load through the node (storage read + init + replay): {:.1} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    node.shutdown().await.unwrap();
}

async fn swap_under_load(d: Duration) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = NodeConfig::with_data_dir(dir.path());
    cfg.plugins_dir = None;
    let node = Node::open(cfg).await.unwrap();
    let v2 = node
        .load_plugin(
            realmhost_plugin_artifacts::fixtures::ledger_next_version(),
            realmhost::runtime::LoadOptions {
                activate: false,
                force: true,
            },
        )
        .await
        .unwrap()
        .info
        .version;
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for w in 0..64 {
        let (node, done, stop) = (node.clone(), done.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let realm = RealmId::new(format!("swap-{w:03}")).unwrap();
            node.append(ledger_event(
                &realm,
                &Tx::Open {
                    account: "a".into(),
                },
            ))
            .await
            .unwrap();
            while !stop.load(Ordering::Relaxed) {
                node.append(ledger_event(
                    &realm,
                    &Tx::Deposit {
                        account: "a".into(),
                        amount: 1,
                    },
                ))
                .await
                .unwrap();
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let window = Duration::from_millis(100);
    let mut samples = Vec::new();
    let t0 = Instant::now();
    let swap_at = d / 2;
    let mut swapped = None;
    let mut last = 0;
    while t0.elapsed() < d {
        if swapped.is_none() && t0.elapsed() >= swap_at {
            let t = Instant::now();
            let swapped_to = node.promote("ledger", v2, None, false).await.unwrap();
            swapped = Some((
                t.elapsed(),
                swapped_to.shadow.map(|r| (r.realms_checked, r.millis)),
                samples.len(),
            ));
        }
        tokio::time::sleep(window).await;
        let now = done.load(Ordering::Relaxed);
        samples.push((now - last) as f64 / window.as_secs_f64());
        last = now;
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let (lat, report, at) = swapped.unwrap();
    let mut before: Vec<f64> = samples[..at].to_vec();
    before.sort_by(f64::total_cmp);
    let base = pct(&before, 0.5);
    let after = &samples[at..(at + 5).min(samples.len())];
    let dip = after.iter().copied().fold(f64::INFINITY, f64::min);
    println!("hot swap under load (64 writers, ledger)");
    if let Some((checked, millis)) = report {
        println!("  shadow replay before promotion: {checked} realms in {millis} ms");
    }
    println!(
        "  swap latency (shadow + promote): {:.1} ms",
        lat.as_secs_f64() * 1e3
    );
    println!(
        "  throughput: {:.0} events/s before; lowest 100 ms window in the 0.5 s after: {:.0} events/s ({:.2}×)",
        base,
        dip,
        dip / base
    );
    println!(
        "  realms rebuilt with the new version on next access: {}",
        node.stats().rebuilds
    );
    node.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------
// Keyed state at scale.

/// Every seeded account starts with this balance, so transfers never
/// overdraw during the bench.
const FUND: u64 = 1_000_000_000;
/// Events per storage append request while seeding.
const SEED_EVENTS_PER_REQUEST: usize = 5_000;
/// Writers appending to the one measured realm.
const WRITERS: usize = 4;
/// Snapshot interval of the keyed-state node.
const SNAPSHOT_EVERY: u64 = 100;

fn account(i: u64) -> String {
    format!("acct-{i:07}")
}

fn realm_of_size(n: u64) -> RealmId {
    RealmId::new(format!("ledger-{n}")).unwrap()
}

/// The bench's workload on a realm of `n` accounts: deposits and transfers
/// (alternating) between uniformly drawn accounts.
fn workload_tx(rng: &mut SmallRng, n: u64, i: u64) -> Tx {
    if i.is_multiple_of(2) {
        Tx::Deposit {
            account: account(rng.random_range(0..n)),
            amount: 1,
        }
    } else {
        let from = rng.random_range(0..n);
        let mut to = rng.random_range(0..n);
        if to == from {
            to = (from + 1) % n;
        }
        Tx::Transfer {
            from: account(from),
            to: account(to),
            amount: 1,
        }
    }
}

/// Seed ledger realm `id` with `n` accounts, each opened and funded, in
/// bulk: `Storage::append` requests of [`SEED_EVENTS_PER_REQUEST`] `open` /
/// `deposit` events (the log an honest realm of that size would hold); the
/// state built from the same events by the sandboxed ledger
/// (`Plugin::replay`, `apply-batch` of 1000 events, as a load does); a full
/// snapshot of it at the last seq (`put_snapshot`, `SnapshotBody::Full`).
/// The node then loads the realm from that snapshot like any other.
/// Returns the map and the last seq.
async fn seed_ledger(
    storage: &Arc<dyn Storage>,
    plugin: &Plugin,
    id: &RealmId,
    n: u64,
) -> (StateMap, u64) {
    let mut map = plugin.init(id.as_str()).unwrap().value.unwrap().map;
    let mut seq = 0;
    let per_request = (SEED_EVENTS_PER_REQUEST / 2) as u64;
    let mut first = 0;
    while first < n {
        let last = (first + per_request).min(n);
        let mut events = Vec::with_capacity(((last - first) * 2) as usize);
        for i in first..last {
            seq += 1;
            events.push(ledger_record(
                seq,
                &Tx::Open {
                    account: account(i),
                },
            ));
            seq += 1;
            events.push(ledger_record(
                seq,
                &Tx::Deposit {
                    account: account(i),
                    amount: FUND,
                },
            ));
        }
        // Enqueued now; committed while the sandbox builds the state.
        let append = storage.append(AppendRequest {
            realm_id: id.clone(),
            realm_type: "ledger".into(),
            plugin_version: plugin.version(),
            events: events.clone(),
        });
        map = plugin
            .replay(id.as_str(), map, &events, 1000)
            .unwrap()
            .value
            .unwrap()
            .map;
        append.await.unwrap();
        first = last;
    }
    storage
        .put_snapshot(
            id,
            SnapshotWrite {
                seq,
                plugin_version: plugin.version(),
                state_version: plugin.state_version(),
                body: SnapshotBody::Full(map.to_entries()),
            },
        )
        .await
        .unwrap();
    (map, seq)
}

/// (i) CPU cost of one `apply` in the sandbox on each realm's map; the
/// 100-account realm is the baseline. Each round applies the same number of
/// events to every realm (sizes in rotating order), each event to the map the
/// previous one produced, and times every call.
fn sandbox_apply(plugin: &Plugin, maps: &mut [(u64, RealmId, StateMap, u64)]) {
    const ROUNDS: usize = 15;
    const EVENTS: u64 = 2_000;
    let mut rng = SmallRng::seed_from_u64(11);
    let k = maps.len();
    let mut all: Vec<Vec<f64>> = vec![Vec::new(); k];
    let mut fuel: Vec<u64> = vec![0; k];
    let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); k];
    // Warm-up: instances, caches, allocator.
    for (n, id, map, seq) in maps.iter_mut() {
        run_applies(plugin, &mut rng, *n, id, map, seq, 200);
    }
    for round in 0..ROUNDS {
        let mut med = vec![0.0; k];
        for j in 0..k {
            let i = (j + round) % k;
            let (n, id, map, seq) = &mut maps[i];
            let (mut ns, f) = run_applies(plugin, &mut rng, *n, id, map, seq, EVENTS);
            fuel[i] += f;
            med[i] = median(&mut ns);
            all[i].extend(ns);
        }
        for i in 0..k {
            ratios[i].push(med[i] / med[0]);
        }
    }
    println!(
        "apply one event in the sandbox (`Plugin::apply` on the realm's map; deposits and transfers \
         between uniformly drawn accounts), {ROUNDS} rounds × {EVENTS} events per realm, sizes interleaved:"
    );
    for i in 0..k {
        let v = &mut all[i];
        v.sort_by(f64::total_cmp);
        println!(
            "  {:>9} accounts: p50 {:>6.2} µs  p90 {:>6.2} µs  p99 {:>6.2} µs  fuel {:>6}/event;  vs 100 accounts (per-round p50 ratio) {}",
            maps[i].0,
            pct(v, 0.5) / 1e3,
            pct(v, 0.9) / 1e3,
            pct(v, 0.99) / 1e3,
            fuel[i] / (ROUNDS as u64 * EVENTS),
            spread(&mut ratios[i])
        );
    }
}

/// `count` workload events applied one by one to `map`; returns each call's
/// ns and the fuel burned.
fn run_applies(
    plugin: &Plugin,
    rng: &mut SmallRng,
    n: u64,
    id: &RealmId,
    map: &mut StateMap,
    seq: &mut u64,
    count: u64,
) -> (Vec<f64>, u64) {
    let events: Vec<EventRecord> = (0..count)
        .map(|i| ledger_record(*seq + 1 + i, &workload_tx(rng, n, i)))
        .collect();
    *seq += count;
    let mut ns = Vec::with_capacity(events.len());
    let mut fuel = 0;
    for e in &events {
        let t = Instant::now();
        let m = plugin.apply(Scope::new(id.as_str(), map), e).unwrap();
        match m.value {
            ApplyOutcome::Applied(w) => *map = w.map,
            other => panic!("{other:?}"),
        }
        ns.push(t.elapsed().as_nanos() as f64);
        fuel += m.fuel;
    }
    (ns, fuel)
}

/// (ii) Durable appends through the node, [`WRITERS`] writers on one realm,
/// until `count` events are acknowledged, while one bystander appends to a
/// small counter realm of its own: (seconds, the writers' ack latencies in
/// ms, the bystander's ack latencies in ms, snapshots written).
async fn node_appends(
    node: &Arc<Node>,
    n: u64,
    id: &RealmId,
    count: u64,
    seed: u64,
) -> (f64, Vec<f64>, Vec<f64>, u64) {
    let issued = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let snaps = node.stats().snapshots;
    let bystander = {
        let (node, stop) = (node.clone(), stop.clone());
        tokio::spawn(async move {
            let realm = RealmId::new("bystander").unwrap();
            let mut lat = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                node.append(counter_event(&realm, 0)).await.unwrap();
                lat.push(t.elapsed().as_secs_f64() * 1e3);
            }
            lat
        })
    };
    let t = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let (node, issued, id) = (node.clone(), issued.clone(), id.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = SmallRng::seed_from_u64(seed * 100 + w as u64);
            let mut lat = Vec::new();
            loop {
                let i = issued.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    break;
                }
                let ev = ledger_event(&id, &workload_tx(&mut rng, n, i));
                let t = Instant::now();
                node.append(ev).await.unwrap();
                lat.push(t.elapsed().as_secs_f64() * 1e3);
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    let took = t.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let by = bystander.await.unwrap();
    (took, lat, by, node.stats().snapshots - snaps)
}

/// A batch of `count` deposits touching `count - 2` distinct accounts (plus
/// the totals and the transaction counter): exactly `count` keys.
fn hundred_keys(rng: &mut SmallRng, n: u64, first_seq: u64, count: u64) -> Vec<EventRecord> {
    let mut accounts = std::collections::BTreeSet::new();
    while (accounts.len() as u64) < (count - 2).min(n) {
        accounts.insert(rng.random_range(0..n));
    }
    let accounts: Vec<u64> = accounts.into_iter().collect();
    (0..count)
        .map(|i| {
            let a = accounts[(i as usize) % accounts.len()];
            ledger_record(
                first_seq + i,
                &Tx::Deposit {
                    account: account(a),
                    amount: 1,
                },
            )
        })
        .collect()
}

/// 100 events touching 100 keys, applied in the sandbox and appended to the
/// log directly: returns the changes (for a delta snapshot).
async fn advance(
    storage: &Arc<dyn Storage>,
    plugin: &Plugin,
    id: &RealmId,
    map: &mut StateMap,
    seq: &mut u64,
    rng: &mut SmallRng,
    n: u64,
) -> Vec<(Bytes, Option<Bytes>)> {
    let events = hundred_keys(rng, n, *seq + 1, 100);
    let r = plugin
        .replay(id.as_str(), map.clone(), &events, 1000)
        .unwrap()
        .value
        .unwrap();
    *map = r.map;
    *seq += events.len() as u64;
    storage
        .append(AppendRequest {
            realm_id: id.clone(),
            realm_type: "ledger".into(),
            plugin_version: plugin.version(),
            events,
        })
        .await
        .unwrap();
    r.changes
}

fn snap(plugin: &Plugin, seq: u64, body: SnapshotBody) -> SnapshotWrite {
    SnapshotWrite {
        seq,
        plugin_version: plugin.version(),
        state_version: plugin.state_version(),
        body,
    }
}

/// The snapshot after 100 events that touch 100 keys, written as a delta,
/// against a full snapshot of the same realm and against one durable commit
/// of a tiny record (`put_meta`), per realm size. Paired rounds, alternating
/// order. Leaves every realm's stored snapshot at its last seq.
async fn snapshot_costs(
    storage: &Arc<dyn Storage>,
    plugin: &Plugin,
    realms: &mut [(u64, RealmId, StateMap, u64)],
) {
    const ROUNDS: usize = 7;
    let mut rng = SmallRng::seed_from_u64(23);
    println!(
        "snapshot after 100 events that touch 100 keys: `put_snapshot` of the delta (100 changed keys) \
         vs of the full map, vs one durable `put_meta` commit; {ROUNDS} paired rounds, median:"
    );
    for (n, id, map, seq) in realms.iter_mut() {
        // Base: a full snapshot of the live map.
        storage
            .put_snapshot(id, snap(plugin, *seq, SnapshotBody::Full(map.to_entries())))
            .await
            .unwrap();
        let (mut delta, mut full, mut commit, mut build) = (vec![], vec![], vec![], vec![]);
        for round in 0..ROUNDS {
            for step in 0..3 {
                let step = (step + round) % 3;
                let base_seq = *seq;
                let changes = advance(storage, plugin, id, map, seq, &mut rng, *n).await;
                match step {
                    0 => {
                        assert_eq!(changes.len(), 100, "100 keys");
                        let w = snap(plugin, *seq, SnapshotBody::Delta { base_seq, changes });
                        let t = Instant::now();
                        storage.put_snapshot(id, w).await.unwrap();
                        delta.push(t.elapsed().as_secs_f64() * 1e3);
                    }
                    1 => {
                        let t = Instant::now();
                        let entries = map.to_entries();
                        build.push(t.elapsed().as_secs_f64() * 1e3);
                        let w = snap(plugin, *seq, SnapshotBody::Full(entries));
                        let t = Instant::now();
                        storage.put_snapshot(id, w).await.unwrap();
                        full.push(t.elapsed().as_secs_f64() * 1e3);
                    }
                    _ => {
                        // Keep the stored snapshot a valid delta base.
                        storage
                            .put_snapshot(
                                id,
                                snap(plugin, *seq, SnapshotBody::Delta { base_seq, changes }),
                            )
                            .await
                            .unwrap();
                        let t = Instant::now();
                        storage
                            .put_meta("bench/probe", Some(seq.to_le_bytes().to_vec()))
                            .await
                            .unwrap();
                        commit.push(t.elapsed().as_secs_f64() * 1e3);
                    }
                }
            }
        }
        let (d, f, c, b) = (
            median(&mut delta),
            median(&mut full),
            median(&mut commit),
            median(&mut build),
        );
        println!(
            "  {:>9} accounts: delta {:>8.2} ms  full {:>8.2} ms (+ {:>6.2} ms to list the entries)  tiny commit {:>6.2} ms;  \
             full / delta {:>7.1}x, delta / commit {:>6.1}x",
            n,
            d,
            f,
            b,
            c,
            f / d,
            d / c
        );
    }
}

/// Cold load of the realm `id` (a snapshot and a 100-event tail): `Node::get`
/// after removing it from the store, against the bare storage read of the
/// same rows (`Storage::load_realm`) and against `Node::get` of the cached
/// realm (what a get costs without a load: the view hashes every entry).
async fn keyed_cold_load(node: &Arc<Node>, id: &RealmId, n: u64) {
    const ROUNDS: usize = 15;
    let storage = node.storage().clone();
    let load = storage.load_realm(id).await.unwrap().unwrap();
    let snap_seq = load.snapshot.as_ref().map_or(0, |s| s.seq);
    let entries = load.snapshot.as_ref().map_or(0, |s| s.entries.len());
    let tail = load.tail.len();
    drop(load);
    let plugin = node.plugins().get("ledger").unwrap();
    let (mut bare, mut cold, mut warm, mut r_raw, mut r_load) =
        (vec![], vec![], vec![], vec![], vec![]);
    let (mut build, mut replay) = (vec![], vec![]);
    node.store().remove(id.as_str());
    node.get(id).await.unwrap();
    for round in 0..ROUNDS {
        let mut b = 0.0;
        let mut c = 0.0;
        for step in 0..2 {
            if (step + round) % 2 == 0 {
                let t = Instant::now();
                std::hint::black_box(storage.load_realm(id).await.unwrap());
                b = t.elapsed().as_secs_f64() * 1e3;
            } else {
                node.store().remove(id.as_str());
                let t = Instant::now();
                std::hint::black_box(node.get(id).await.unwrap());
                c = t.elapsed().as_secs_f64() * 1e3;
            }
        }
        let t = Instant::now();
        std::hint::black_box(node.get(id).await.unwrap());
        let w = t.elapsed().as_secs_f64() * 1e3;
        // The load's two steps after the read, alone: the snapshot's entries
        // to a map (as `from_snapshot` does it), the tail replayed on it.
        let load = storage.load_realm(id).await.unwrap().unwrap();
        let entries = load.snapshot.as_ref().unwrap().entries.clone();
        let t = Instant::now();
        let map = StateMap::from_sorted(entries).unwrap();
        build.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        let r = plugin.replay(id.as_str(), map, &load.tail, 1000).unwrap();
        replay.push(t.elapsed().as_secs_f64() * 1e3);
        drop((r, load));
        bare.push(b);
        cold.push(c);
        warm.push(w);
        r_raw.push(c / b);
        r_load.push((c - w) / b);
    }
    println!(
        "cold load of the {n}-account realm (snapshot at seq {snap_seq} with {entries} entries + {tail}-event tail), \
         {ROUNDS} paired rounds, warm redb cache, median:"
    );
    println!(
        "  bare storage read (load_realm) {:>7.2} ms;  Node::get after eviction {:>7.2} ms;  Node::get of the cached realm {:>6.2} ms",
        median(&mut bare),
        median(&mut cold),
        median(&mut warm)
    );
    println!(
        "  of the load: StateMap::from_sorted over the snapshot's entries {:>6.2} ms, replay of the tail {:>5.2} ms",
        median(&mut build),
        median(&mut replay)
    );
    println!(
        "  load / bare read: {} (Node::get as is), {} (minus the cached get: the load alone)",
        spread(&mut r_raw),
        spread(&mut r_load)
    );
}

async fn keyed_state() {
    let sizes = keyed_sizes();
    if sizes.is_empty() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = NodeConfig::with_data_dir(dir.path());
    cfg.plugins_dir = None;
    cfg.snapshot_every = SNAPSHOT_EVERY;
    let node = Node::open(cfg).await.unwrap();
    let storage = node.storage().clone();
    let plugin = node.plugins().get("ledger").unwrap();

    // Seed every realm.
    let mut maps = Vec::new();
    for &n in &sizes {
        let id = realm_of_size(n);
        let t = Instant::now();
        let (map, seq) = seed_ledger(&storage, &plugin, &id, n).await;
        println!(
            "seeded {id}: {n} accounts, {seq} events in requests of {SEED_EVENTS_PER_REQUEST}, {} entries \
             ({} key+value bytes), full snapshot; {:.1} s",
            map.len(),
            map.data_bytes(),
            t.elapsed().as_secs_f64()
        );
        maps.push((n, id, map, seq));
    }
    println!();

    // (i) The plugin call on the realm's map.
    sandbox_apply(&plugin, &mut maps);
    println!();

    // (ii) Durable appends through the node. First load every realm from
    // its snapshot (timed, for orientation) and warm it up.
    let mut live = Vec::new();
    for (n, id, map, _) in &maps {
        let t = Instant::now();
        let (view, _) = node.get(id).await.unwrap();
        let took = t.elapsed();
        assert_eq!(view.entries, map.len(), "{id}");
        println!(
            "  loaded {id} through the node: {} entries at seq {} in {:.1} ms (includes the view's hash of every entry)",
            view.entries,
            view.seq,
            took.as_secs_f64() * 1e3
        );
        live.push((*n, id.clone()));
    }
    for (i, (n, id)) in live.iter().enumerate() {
        node_appends(&node, *n, id, 2 * SNAPSHOT_EVERY, 1000 + i as u64).await;
    }
    // Three snapshot intervals per window: every window holds 3 snapshots.
    let per_round = 3 * SNAPSHOT_EVERY;
    let rounds = 9;
    let k = live.len();
    let mut per_event: Vec<Vec<f64>> = vec![Vec::new(); k];
    let mut lats: Vec<Vec<f64>> = vec![Vec::new(); k];
    let mut by_lats: Vec<Vec<f64>> = vec![Vec::new(); k];
    let mut snaps = vec![0; k];
    let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); k];
    let probe_dir = tempfile::tempdir_in(dir.path()).unwrap();
    let fsync1 = fdatasync_rate(probe_dir.path(), Duration::from_secs(1));
    for round in 0..rounds {
        let mut cost = vec![0.0; k];
        for j in 0..k {
            let i = (j + round) % k;
            let (n, id) = &live[i];
            let (s, lat, by, sn) =
                node_appends(&node, *n, id, per_round, round as u64 * 10 + i as u64).await;
            cost[i] = s * 1e6 / per_round as f64;
            per_event[i].push(cost[i]);
            lats[i].extend(lat);
            by_lats[i].extend(by);
            snaps[i] += sn;
        }
        for i in 0..k {
            ratios[i].push(cost[i] / cost[0]);
        }
    }
    let fsync2 = fdatasync_rate(probe_dir.path(), Duration::from_secs(1));
    println!(
        "durable appends through the node to one realm, {WRITERS} writers, snapshot every {SNAPSHOT_EVERY} events \
         (deltas), {rounds} rounds × {per_round} events per realm, sizes interleaved; one bystander \
         appends to a counter realm meanwhile (bare fdatasync {fsync1:.0}/s before, {fsync2:.0}/s after):"
    );
    for i in 0..k {
        let l = &mut lats[i];
        l.sort_by(f64::total_cmp);
        let b = &mut by_lats[i];
        b.sort_by(f64::total_cmp);
        println!(
            "  {:>9} accounts: {:>7.0} µs/append ({:>5.0} appends/s)  ack p50 {:>6.2} ms  p99 {:>7.2} ms  max {:>7.1} ms  \
             {} snapshots;  vs 100 accounts {};  bystander ack p50 {:.2} ms p99 {:.2} ms max {:.1} ms",
            live[i].0,
            median(&mut per_event[i]),
            1e6 / median(&mut per_event[i]),
            pct(l, 0.5),
            pct(l, 0.99),
            pct(l, 1.0),
            snaps[i],
            spread(&mut ratios[i]),
            pct(b, 0.5),
            pct(b, 0.99),
            pct(b, 1.0),
        );
    }
    println!();
    node.shutdown().await.unwrap();
    drop((node, storage, plugin));

    // Snapshots and the cold load: on the same data, through storage
    // directly, then a fresh node. Continue from the live states.
    let mut cfg = NodeConfig::with_data_dir(dir.path());
    cfg.plugins_dir = None;
    cfg.snapshot_every = u64::MAX;
    let node = Node::open(cfg).await.unwrap();
    let storage = node.storage().clone();
    let plugin = node.plugins().get("ledger").unwrap();
    let mut realms = Vec::new();
    for (n, id) in &live {
        let (_, s) = node.get(id).await.unwrap();
        realms.push((*n, id.clone(), s.map().clone(), s.seq()));
        node.store().remove(id.as_str());
    }
    snapshot_costs(&storage, &plugin, &mut realms).await;
    println!();
    if let Some((n, id, map, seq)) = realms.iter_mut().find(|r| r.0 == 100_000) {
        // A 100-event tail after the snapshot.
        let mut rng = SmallRng::seed_from_u64(31);
        advance(&storage, &plugin, id, map, seq, &mut rng, *n).await;
        keyed_cold_load(&node, id, *n).await;
        let (view, _) = node.get(id).await.unwrap();
        assert_eq!(view.seq, *seq);
        assert_eq!(view.state_hash, hex_hash(map));
    }
    node.shutdown().await.unwrap();
}

fn hex_hash(map: &StateMap) -> String {
    map.content_hash()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `REALMHOST_NODE_BENCH_PROFILE=apply|load|replay`: one case in a loop for
/// `REALMHOST_BENCH_SECS`, for `perf record` (see `docs/BENCHMARKS.md`).
/// `apply`: `Plugin::apply` on a realm of `REALMHOST_NODE_BENCH_MAX_ACCOUNTS`
/// accounts; `load`: cold loads of that realm (snapshot + 100-event tail)
/// through the node; `replay`: the `cold` section's 10 000-event replay in
/// the sandbox.
async fn profile(case: &str, d: Duration) {
    let n = *keyed_sizes().last().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = NodeConfig::with_data_dir(dir.path());
    cfg.plugins_dir = None;
    cfg.snapshot_every = u64::MAX;
    let node = Node::open(cfg).await.unwrap();
    let storage = node.storage().clone();
    let plugin = node.plugins().get("ledger").unwrap();
    let id = realm_of_size(n);
    let (mut map, mut seq) = seed_ledger(&storage, &plugin, &id, n).await;
    let mut rng = SmallRng::seed_from_u64(3);
    let t = Instant::now();
    let mut count = 0u64;
    match case {
        "replay" => {
            // The replay case of the `cold` section: 10 000 ledger events on
            // two accounts, from `init`, 1000 per `apply-batch`.
            let mut events = vec![
                ledger_record(
                    1,
                    &Tx::Open {
                        account: "a".into(),
                    },
                ),
                ledger_record(
                    2,
                    &Tx::Open {
                        account: "b".into(),
                    },
                ),
            ];
            for i in 0..9_998u64 {
                let tx = if i % 2 == 0 {
                    Tx::Deposit {
                        account: "a".into(),
                        amount: 5,
                    }
                } else {
                    Tx::Transfer {
                        from: "a".into(),
                        to: "b".into(),
                        amount: 2,
                    }
                };
                events.push(ledger_record(i + 3, &tx));
            }
            while t.elapsed() < d {
                let init = plugin.init("big-realm").unwrap().value.unwrap().map;
                let r = plugin.replay("big-realm", init, &events, 1000).unwrap();
                std::hint::black_box(r.value.unwrap());
                count += events.len() as u64;
            }
        }
        "apply" => {
            while t.elapsed() < d {
                run_applies(&plugin, &mut rng, n, &id, &mut map, &mut seq, 1000);
                count += 1000;
            }
        }
        _ => {
            advance(&storage, &plugin, &id, &mut map, &mut seq, &mut rng, n).await;
            while t.elapsed() < d {
                node.store().remove(id.as_str());
                let _ = std::hint::black_box(node.query(&id, "\"total\"").await.unwrap());
                count += 1;
            }
        }
    }
    println!(
        "profile {case}, {n} accounts: {count} in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    drop((storage, plugin));
    node.shutdown().await.unwrap();
}

fn main() {
    let d = secs();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    if let Ok(case) = std::env::var("REALMHOST_NODE_BENCH_PROFILE") {
        rt.block_on(profile(&case, d));
        return;
    }
    if section("appends") {
        println!();
        appends_section(&rt, d);
    }
    if section("cold") {
        println!();
        rt.block_on(cold_load());
    }
    if section("swap") {
        println!();
        rt.block_on(swap_under_load(d.max(Duration::from_secs(3))));
    }
    if section("keyed") {
        println!();
        rt.block_on(keyed_state());
    }
}
