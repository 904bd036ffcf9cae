//! The plugin call path on the ledger logic (contract 0.2, host-owned keyed
//! state): the WebAssembly component against the same logic compiled
//! natively and driven through the SDK's entry points
//! (`realmhost_guest::entry`) on a `MemoryState`, with the same event bytes,
//! in the same run.
//!
//! - **apply**: one transfer between two existing accounts of a realm of
//!   1000 funded accounts (two balance reads and writes, the transaction
//!   counter read and written). Sandbox: `Plugin::apply` on the host's map,
//!   including building the realm's next map version. Native:
//!   `entry::apply::<Ledger>` on a `MemoryState`. Each side carries its state
//!   forward from event to event.
//! - **replay 10k**: 10 000 ledger events (1000 opens, 1000 deposits, 8000
//!   transfers) from an empty realm. Sandbox: `Plugin::replay` in chunks of
//!   1000 (the node's `replay_batch`). Native: the same chunks encoded with
//!   `BatchEncoder` and applied with `entry::apply_batch::<Ledger>`.
//!
//! The ratio is native time / sandbox time (1.0 = a free sandbox).
//!
//! ```sh
//! cargo bench -p realmhost --bench plugin_call
//! # ratio summary only (fewer rounds, no criterion groups):
//! REALMHOST_PLUGIN_BENCH_QUICK=1 cargo bench -p realmhost --bench plugin_call
//! # more rounds on a noisy machine (default 15, quick 7):
//! REALMHOST_PLUGIN_BENCH_ROUNDS=31 cargo bench -p realmhost --bench plugin_call
//! ```

use std::hint::black_box;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use realmhost::EventRecord;
use realmhost::runtime::{ApplyOutcome, Plugin, PluginRuntime, RuntimeConfig, Scope};
use realmhost::state::{Bytes, StateMap};
use realmhost_guest::batch::BatchEncoder;
use realmhost_guest::{MemoryState, encode_payload, entry};
use realmhost_plugin_ledger::{Ledger, Tx};

const REALM: &str = "bench-realm";
/// Accounts of the `apply` realm.
const ACCOUNTS: usize = 1000;
/// Events of the replay case.
const REPLAY_EVENTS: usize = 10_000;
/// Events per `apply-batch` call in replay (the node's default `replay_batch`).
const REPLAY_CHUNK: usize = 1000;

const QUICK_ENV: &str = "REALMHOST_PLUGIN_BENCH_QUICK";
const ROUNDS_ENV: &str = "REALMHOST_PLUGIN_BENCH_ROUNDS";

fn name(i: usize) -> String {
    format!("acct-{i:04}")
}

fn record(seq: u64, tx: &Tx) -> EventRecord {
    EventRecord {
        seq,
        kind: "tx".into(),
        payload: encode_payload(tx),
        source: "teller-7".into(),
        source_realm: None,
        timestamp_ms: 1_700_000_000_000 + seq,
        source_reputation: 1.0,
        message: None,
    }
}

/// The two transfers the `apply` case alternates between (so balances stay
/// bounded while each side carries its state forward).
fn transfers() -> [EventRecord; 2] {
    let (a, b) = (name(123), name(877));
    [
        record(
            1_000_001,
            &Tx::Transfer {
                from: a.clone(),
                to: b.clone(),
                amount: 1,
            },
        ),
        record(
            1_000_002,
            &Tx::Transfer {
                from: b,
                to: a,
                amount: 1,
            },
        ),
    ]
}

/// 1000 opens, 1000 deposits, then transfers between pseudo-random accounts.
fn replay_events() -> Vec<EventRecord> {
    let mut txs = Vec::with_capacity(REPLAY_EVENTS);
    for i in 0..ACCOUNTS {
        txs.push(Tx::Open { account: name(i) });
    }
    for i in 0..ACCOUNTS {
        txs.push(Tx::Deposit {
            account: name(i),
            amount: 1_000_000,
        });
    }
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    while txs.len() < REPLAY_EVENTS {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let from = (x % ACCOUNTS as u64) as usize;
        let to = (from + 1 + (x >> 20) as usize % (ACCOUNTS - 1)) % ACCOUNTS;
        txs.push(Tx::Transfer {
            from: name(from),
            to: name(to),
            amount: 1 + (x >> 40) % 100,
        });
    }
    txs.iter()
        .enumerate()
        .map(|(i, t)| record(i as u64 + 1, t))
        .collect()
}

/// The realm of the `apply` case, natively: 1000 funded accounts.
fn native_realm(events: &[EventRecord]) -> MemoryState {
    let mut s = MemoryState::new();
    entry::init::<Ledger>(&mut s, REALM).unwrap();
    native_replay(&mut s, &events[..2 * ACCOUNTS]);
    s
}

fn to_map(s: &MemoryState) -> StateMap {
    StateMap::from_sorted(
        s.iter()
            .map(|(k, v)| (Bytes::from(k), Bytes::from(v)))
            .collect(),
    )
    .unwrap()
}

fn same(map: &StateMap, s: &MemoryState) -> bool {
    map.len() == s.len() as u64 && map.iter().eq(s.iter())
}

/// The native counterpart of `Plugin::replay`: the same chunks, encoded the
/// same way, through `entry::apply_batch`.
fn native_replay(state: &mut MemoryState, events: &[EventRecord]) {
    let mut enc = BatchEncoder::with_capacity(64 << 10);
    for part in events.chunks(REPLAY_CHUNK) {
        enc.clear();
        for e in part {
            enc.push(&e.as_event_ref());
        }
        entry::apply_batch::<Ledger>(state, enc.as_bytes()).unwrap();
    }
}

fn wasm_replay(p: &Plugin, events: &[EventRecord]) -> StateMap {
    p.replay(REALM, StateMap::new(), events, REPLAY_CHUNK)
        .unwrap()
        .value
        .unwrap()
        .map
}

fn wasm_apply(p: &Plugin, map: &StateMap, e: &EventRecord) -> StateMap {
    match p.apply(Scope::new(REALM, map), e).unwrap().value {
        ApplyOutcome::Applied(w, _) => w.map,
        other => panic!("{other:?}"),
    }
}

fn rounds() -> usize {
    let quick = std::env::var_os(QUICK_ENV).is_some();
    std::env::var(ROUNDS_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(if quick { 7 } else { 15 })
}

/// Timed rounds of two cases, interleaved (native, wasm, native, wasm, ...)
/// so that load from other processes hits both alike. Each round runs its
/// case `iters` times; returns ns per event for every round of each case.
fn paired_rounds(
    rounds: usize,
    iters: u64,
    per_call: u64,
    mut native: impl FnMut(),
    mut wasm: impl FnMut(),
) -> (Vec<f64>, Vec<f64>) {
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_millis(300) {
        native();
        wasm();
    }
    let time = |f: &mut dyn FnMut()| {
        let t = Instant::now();
        for _ in 0..iters {
            f();
        }
        t.elapsed().as_nanos() as f64 / (iters * per_call) as f64
    };
    let (mut n, mut w) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        n.push(time(&mut native));
        w.push(time(&mut wasm));
    }
    (n, w)
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// One summary line: medians, their ratio, and the median of the per-round
/// ratios (each round pairs a native and a sandbox run taken back to back).
fn row(case: &str, native: &[f64], wasm: &[f64], target: Option<f64>) {
    let (n, w) = (median(native), median(wasm));
    let paired: Vec<f64> = native.iter().zip(wasm).map(|(n, w)| n / w).collect();
    println!(
        "{case:<26} {n:>10.1} {w:>10.1} {:>8.3} {:>8.3} {:>8}",
        n / w,
        median(&paired),
        target.map_or("—".to_owned(), |t| format!("≥ {t}"))
    );
}

fn summary(p: &Plugin, base_map: &StateMap, base_native: &MemoryState, replay: &[EventRecord]) {
    let rounds = rounds();
    println!(
        "\nplugin call path, ledger logic: ns/event, median of {rounds} interleaved rounds; ratio = native / sandbox"
    );
    println!(
        "{:<26} {:>10} {:>10} {:>8} {:>8} {:>8}",
        "case", "native", "sandbox", "ratio", "paired", "target"
    );

    let [t1, t2] = transfers();
    let mut map = base_map.clone();
    let mut native = base_native.clone();
    let mut flip = false;
    let mut wasm_flip = false;
    let (n, w) = paired_rounds(
        rounds,
        20_000,
        1,
        || {
            flip = !flip;
            let e = if flip { &t1 } else { &t2 };
            entry::apply::<Ledger>(&mut native, &e.as_event_ref()).unwrap();
        },
        || {
            wasm_flip = !wasm_flip;
            let e = if wasm_flip { &t1 } else { &t2 };
            map = wasm_apply(p, &map, e);
        },
    );
    row(
        &format!("apply (1 of {ACCOUNTS} accounts)"),
        &n,
        &w,
        Some(0.3),
    );
    black_box((&map, &native));

    // The fixed cost of a call: an event rejected before any state access.
    let zero = record(
        1_000_003,
        &Tx::Transfer {
            from: name(1),
            to: name(2),
            amount: 0,
        },
    );
    let (n, w) = paired_rounds(
        rounds,
        20_000,
        1,
        || {
            black_box(entry::apply::<Ledger>(&mut native, &zero.as_event_ref()).unwrap_err());
        },
        || {
            let r = p.apply(Scope::new(REALM, &map), &zero).unwrap().value;
            assert!(matches!(r, ApplyOutcome::Rejected(_)));
        },
    );
    row("apply (rejected, no state)", &n, &w, None);

    let (n, w) = paired_rounds(
        rounds,
        3,
        REPLAY_EVENTS as u64,
        || {
            let mut s = MemoryState::new();
            native_replay(&mut s, replay);
            black_box(s);
        },
        || {
            black_box(wasm_replay(p, replay));
        },
    );
    row(
        &format!("replay ({REPLAY_EVENTS} events)"),
        &n,
        &w,
        Some(0.5),
    );

    // State operations crossing the sandbox per event, from the plugin's counters.
    let ops = |f: &mut dyn FnMut()| {
        let s = p.stats();
        let before = s.state_ops.load(Ordering::Relaxed);
        f();
        s.state_ops.load(Ordering::Relaxed) - before
    };
    let transfer_ops = ops(&mut || {
        wasm_apply(p, base_map, &t1);
    });
    let replay_ops = ops(&mut || {
        wasm_replay(p, replay);
    });
    println!(
        "state operations per event: transfer {transfer_ops}, replay {:.2}",
        replay_ops as f64 / REPLAY_EVENTS as f64
    );
    println!();
}

fn main() {
    let rt = PluginRuntime::new(RuntimeConfig::default()).unwrap();
    let plugin = rt.load(realmhost_plugin_artifacts::LEDGER).unwrap();
    let replay = replay_events();

    // The apply realm, built natively and handed to the host as its map.
    let base_native = native_realm(&replay);
    let base_map = to_map(&base_native);
    assert_eq!(base_map.len(), ACCOUNTS as u64 + 2);

    // Sanity: both sides produce identical entries.
    let [t1, _] = transfers();
    let mut n = base_native.clone();
    entry::apply::<Ledger>(&mut n, &t1.as_event_ref()).unwrap();
    assert!(same(&wasm_apply(&plugin, &base_map, &t1), &n));
    let mut n = MemoryState::new();
    native_replay(&mut n, &replay);
    assert!(same(&wasm_replay(&plugin, &replay), &n));
    // The component built the apply realm the same way.
    let mut n = MemoryState::new();
    native_replay(&mut n, &replay[..2 * ACCOUNTS]);
    assert!(same(&wasm_replay(&plugin, &replay[..2 * ACCOUNTS]), &n));

    summary(&plugin, &base_map, &base_native, &replay);

    if std::env::var_os(QUICK_ENV).is_some() {
        return;
    }
    let mut c = Criterion::default()
        .configure_from_args()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    let mut g = c.benchmark_group("apply_transfer_1000_accounts");
    g.throughput(Throughput::Elements(1));
    let [t1, t2] = transfers();
    let mut native = base_native.clone();
    let mut flip = false;
    g.bench_function("native", |b| {
        b.iter(|| {
            flip = !flip;
            let e = if flip { &t1 } else { &t2 };
            entry::apply::<Ledger>(&mut native, &e.as_event_ref()).unwrap()
        })
    });
    let mut map = base_map.clone();
    let mut flip = false;
    g.bench_function("sandbox", |b| {
        b.iter(|| {
            flip = !flip;
            map = wasm_apply(&plugin, &map, if flip { &t1 } else { &t2 });
        })
    });
    g.finish();

    let mut g = c.benchmark_group("replay_10k");
    g.throughput(Throughput::Elements(REPLAY_EVENTS as u64));
    g.sample_size(10);
    g.bench_function("native", |b| {
        b.iter(|| {
            let mut s = MemoryState::new();
            native_replay(&mut s, &replay);
            s
        })
    });
    g.bench_function("sandbox", |b| b.iter(|| wasm_replay(&plugin, &replay)));
    g.finish();
    c.final_summary();
}
