//! Section `keyed` of the node bench: ledger realms of 100 … 1 000 000
//! accounts, seeded in bulk; per-append cost, delta vs full snapshots, and a
//! cold load of the 100 000-account realm (see the bench's module docs).

use super::*;

/// Every seeded account starts with this balance, so transfers never
/// overdraw during the bench.
pub(super) const FUND: u64 = 1_000_000_000;
/// Events per storage append request while seeding.
pub(super) const SEED_EVENTS_PER_REQUEST: usize = 5_000;
/// Writers appending to the one measured realm.
pub(super) const WRITERS: usize = 4;
/// Snapshot interval of the keyed-state node.
pub(super) const SNAPSHOT_EVERY: u64 = 100;

pub(super) fn account(i: u64) -> String {
    format!("acct-{i:07}")
}

pub(super) fn realm_of_size(n: u64) -> RealmId {
    RealmId::new(format!("ledger-{n}")).unwrap()
}

/// The bench's workload on a realm of `n` accounts: deposits and transfers
/// (alternating) between uniformly drawn accounts.
pub(super) fn workload_tx(rng: &mut SmallRng, n: u64, i: u64) -> Tx {
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
pub(super) async fn seed_ledger(
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
pub(super) fn sandbox_apply(plugin: &Plugin, maps: &mut [(u64, RealmId, StateMap, u64)]) {
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
pub(super) fn run_applies(
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
            ApplyOutcome::Applied(w, _) => *map = w.map,
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
pub(super) async fn node_appends(
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
pub(super) fn hundred_keys(
    rng: &mut SmallRng,
    n: u64,
    first_seq: u64,
    count: u64,
) -> Vec<EventRecord> {
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
pub(super) async fn advance(
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

pub(super) fn snap(plugin: &Plugin, seq: u64, body: SnapshotBody) -> SnapshotWrite {
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
pub(super) async fn snapshot_costs(
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
pub(super) async fn keyed_cold_load(node: &Arc<Node>, id: &RealmId, n: u64) {
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

pub(super) async fn keyed_state() {
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

pub(super) fn hex_hash(map: &StateMap) -> String {
    map.content_hash()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
