//! Memory of keyed realm state (contract 0.2): bytes per key of one large
//! realm and bytes per small realm, measured in child processes.

use super::*;

/// Keys in the one large realm.
pub(super) const KEYS: usize = 1_000_000;

/// A funded ledger account's entry, as the ledger plugin writes it (run
/// natively through the SDK's entry points): (key prefix of the `accounts`
/// map, value bytes of a balance of 10^9).
pub(super) fn ledger_entry_shape() -> (Vec<u8>, Vec<u8>) {
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
pub(super) fn counter_entry() -> (Vec<u8>, Vec<u8>) {
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

pub(super) fn account_key(prefix: &[u8], i: usize) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.extend_from_slice(format!("acct-{i:07}").as_bytes());
    k
}

/// (RSS bytes, counted live bytes, counted live allocations), now.
pub(super) fn memory_now() -> (i64, i64, i64) {
    (
        rss_bytes() as i64,
        LIVE_BYTES.load(Ordering::Relaxed) as i64,
        LIVE_ALLOCS.load(Ordering::Relaxed) as i64,
    )
}

/// Child process for the keyed-state lines. Prints
/// `rss_per_item counted_per_item allocs_per_item data_per_item [extra]`.
pub(super) fn measure_keyed_memory(kind: &str) {
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
pub(super) fn summary_keyed_memory() {
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
