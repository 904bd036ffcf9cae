//! The whole node, measured against baselines taken in the same run.
//!
//! `cargo bench -p realmhost --bench node` (set `REALMHOST_BENCH_SECS` to
//! change the measurement time per case, default 3;
//! `REALMHOST_NODE_BENCH_SECTIONS` to a comma-separated subset of
//! `appends,partitions,cold,swap,keyed,hot,noisy,messages` to run only those,
//! default all;
//! `REALMHOST_NODE_BENCH_MAX_ACCOUNTS` to leave out the larger keyed realms,
//! default 1 000 000).
//!
//! 1. **Durable appends** (`appends`): 256 writers on distinct counter
//!    realms through the full append path (validate, apply in the sandbox,
//!    group commit, publish), against the bare `write 4 KiB + fdatasync`
//!    rate of the same disk. Also with the shard monitor off, for the
//!    monitor's overhead.
//!    **By partitions** (`partitions`): the same over 1, 2, 4 and 8
//!    storage partitions with 256 and 1024 writers, against one partition.
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
//! 5. **Hot realms and skew** (`hot`): one counter realm from 64 writers
//!    with and without pipelining; Zipf(0.99) against uniform traffic over
//!    100 000 counter realms from 256 writers (see `node/hot.rs`).
//! 6. **Noisy neighbour** (`noisy`): 8 writers appending to counter and
//!    ledger realms, p50/p99 ack latency alone, then while 8 callers keep the
//!    hostile fixture looping to its fuel limit on every call — submitted
//!    through `Node::run_plugin` (the plugin-execution pool) and through
//!    `Node::append` — three rounds, interleaved, on one node; prints
//!    p99(noisy)/p99(baseline) per round.
//! 7. **Messages between realms** (`messages`): one-way messages delivered
//!    per second and transfer sagas (request + reply) per second, against
//!    plain appends with the same writers; send-to-outcome p50/p99 (see
//!    `node/messages.rs`).

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
        message: None,
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
    appends_with(monitor, d, 0, 256).await
}

/// `writers` writers on distinct realms, `partitions` storage partitions
/// (0: the default): (events/s, p50 ms, p99 ms).
async fn appends_with(
    monitor: bool,
    d: Duration,
    partitions: usize,
    writers: usize,
) -> (f64, f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = NodeConfig::with_data_dir(dir.path());
    cfg.plugins_dir = None;
    cfg.monitor_enabled = monitor;
    cfg.storage.partitions = partitions;
    let node = Node::open(cfg).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let warm = Duration::from_millis(500);
    let mut tasks = Vec::new();
    for w in 0..writers {
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

/// Node appends over 1, 2, 4 and 8 storage partitions, 256 and 1024
/// writers on distinct realms, interleaved over two rounds; each figure
/// against one partition in the same round.
fn partitions_section(rt: &tokio::runtime::Runtime, d: Duration) {
    let counts = [1usize, 2, 4, 8];
    println!("durable appends through the node by storage partitions (distinct counter realms):");
    for writers in [256usize, 1024] {
        for round in 1..=2 {
            let runs: Vec<(f64, f64, f64)> = counts
                .iter()
                .map(|&n| rt.block_on(appends_with(true, d, n, writers)))
                .collect();
            let base = runs[0].0;
            for (n, (rate, p50, p99)) in counts.iter().zip(&runs) {
                println!(
                    "  {writers:>4} writers, round {round}, {n} partition(s): {rate:>8.0} events/s ({:.2}× one)  ack p50 {p50:.1} ms  p99 {p99:.1} ms",
                    rate / base
                );
            }
        }
    }
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

#[path = "node/keyed.rs"]
mod keyed;
use keyed::*;

#[path = "node/hot.rs"]
mod hot;
#[path = "node/messages.rs"]
mod messages;
#[path = "node/noisy.rs"]
mod noisy;

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
    if section("partitions") {
        println!();
        partitions_section(&rt, d);
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
    if section("hot") {
        println!();
        rt.block_on(hot::hot_section(d));
    }
    if section("noisy") {
        println!();
        rt.block_on(noisy::noisy_neighbour(d));
    }
    if section("messages") {
        println!();
        rt.block_on(messages::messages_section(d));
    }
}
