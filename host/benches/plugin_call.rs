//! The plugin call path on the ledger logic: the WebAssembly component
//! against the same logic compiled natively, driven through the same SDK
//! entry points with the same encoded bytes, in the same run. The ratio is the
//! sandbox's overhead, not encoding.
//!
//! `cargo bench -p realmhost --bench plugin_call`
//!
//! Prints a ratio summary first (native time / wasm time, so 1.0 = free
//! sandbox), then criterion's detailed statistics.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use realmhost::EventRecord;
use realmhost::runtime::{ApplyOutcome, BatchOutcome, Plugin, PluginRuntime, RuntimeConfig};
use realmhost_guest::batch::BatchEncoder;
use realmhost_guest::{encode_payload, entry};
use realmhost_plugin_ledger::{Ledger, Tx};

fn event(seq: u64) -> EventRecord {
    let (from, to) = if seq.is_multiple_of(2) {
        ("alice", "bob")
    } else {
        ("bob", "alice")
    };
    EventRecord {
        seq,
        kind: "tx".into(),
        payload: encode_payload(&Tx::Transfer {
            from: from.into(),
            to: to.into(),
            amount: 1,
        }),
        source: "teller-7".into(),
        source_realm: None,
        timestamp_ms: 1_700_000_000_000 + seq,
        source_reputation: 1.0,
    }
}

/// A ledger with three funded accounts (~60 bytes of state).
fn base_state() -> Vec<u8> {
    let mut s = entry::init::<Ledger>("bench-realm");
    let setup = [
        Tx::Open {
            account: "alice".into(),
        },
        Tx::Open {
            account: "bob".into(),
        },
        Tx::Open {
            account: "carol".into(),
        },
        Tx::Deposit {
            account: "alice".into(),
            amount: 1_000_000,
        },
        Tx::Deposit {
            account: "bob".into(),
            amount: 1_000_000,
        },
    ];
    for (i, tx) in setup.iter().enumerate() {
        let p = encode_payload(tx);
        s = entry::apply::<Ledger>(
            &s,
            &realmhost_guest::EventRef::new(i as u64 + 1, "tx", &p, "setup"),
        )
        .unwrap();
    }
    s
}

fn batch(n: u64) -> Vec<u8> {
    let events: Vec<_> = (1..=n).map(event).collect();
    let mut enc = BatchEncoder::new();
    for e in &events {
        enc.push(&e.as_event_ref());
    }
    enc.finish()
}

fn wasm_apply(p: &Plugin, state: &[u8], e: &EventRecord) {
    match p.apply(state, e).unwrap().value {
        ApplyOutcome::Applied(s) => {
            black_box(s);
        }
        other => panic!("{other:?}"),
    }
}

fn wasm_batch(p: &Plugin, state: &[u8], b: &[u8], n: u32) {
    match p.apply_batch(state, b, n).unwrap().value {
        BatchOutcome::Applied(s) => {
            black_box(s);
        }
        other => panic!("{other:?}"),
    }
}

/// Median ns per event over repeated timed rounds of `f` (which handles `per_call` events).
fn ns_per_event(per_call: u64, mut f: impl FnMut()) -> f64 {
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_millis(200) {
        f();
    }
    let iters = (20_000 / per_call).max(20);
    let mut rounds: Vec<f64> = (0..15)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..iters {
                f();
            }
            t.elapsed().as_nanos() as f64 / (iters * per_call) as f64
        })
        .collect();
    rounds.sort_by(f64::total_cmp);
    rounds[rounds.len() / 2]
}

fn summary(p: &Plugin, state: &[u8]) {
    println!(
        "\nplugin call path, ledger logic: ns/event (median of 15 rounds), ratio = native / wasm"
    );
    println!(
        "{:<22} {:>10} {:>10} {:>8}",
        "case", "native", "wasm", "ratio"
    );
    let e = event(1);
    let native = ns_per_event(1, || {
        black_box(entry::apply::<Ledger>(state, &e.as_event_ref()).unwrap());
    });
    let wasm = ns_per_event(1, || wasm_apply(p, state, &e));
    println!(
        "{:<22} {:>10.1} {:>10.1} {:>8.3}",
        "apply (1 event)",
        native,
        wasm,
        native / wasm
    );
    for n in [100u64, 1000] {
        let b = batch(n);
        let native = ns_per_event(n, || {
            black_box(entry::apply_batch::<Ledger>(state, &b).unwrap());
        });
        let wasm = ns_per_event(n, || wasm_batch(p, state, &b, n as u32));
        println!(
            "{:<22} {:>10.1} {:>10.1} {:>8.3}",
            format!("apply-batch ({n})"),
            native,
            wasm,
            native / wasm
        );
    }
    println!();
}

fn main() {
    let rt = PluginRuntime::new(RuntimeConfig::default()).unwrap();
    let plugin = rt.load(realmhost_plugin_artifacts::LEDGER).unwrap();
    let state = base_state();
    // Sanity: both sides produce identical bytes.
    let e = event(1);
    let native = entry::apply::<Ledger>(&state, &e.as_event_ref()).unwrap();
    assert_eq!(
        plugin.apply(&state, &e).unwrap().value,
        ApplyOutcome::Applied(native)
    );

    summary(&plugin, &state);

    let mut c = Criterion::default()
        .configure_from_args()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    let mut g = c.benchmark_group("apply");
    g.throughput(Throughput::Elements(1));
    g.bench_function("native", |b| {
        b.iter(|| entry::apply::<Ledger>(&state, &e.as_event_ref()).unwrap())
    });
    g.bench_function("wasm", |b| b.iter(|| wasm_apply(&plugin, &state, &e)));
    g.finish();
    for n in [100u64, 1000] {
        let bytes = batch(n);
        let mut g = c.benchmark_group(format!("apply_batch_{n}"));
        g.throughput(Throughput::Elements(n));
        g.bench_function("native", |b| {
            b.iter(|| entry::apply_batch::<Ledger>(&state, &bytes).unwrap())
        });
        g.bench_function("wasm", |b| {
            b.iter(|| wasm_batch(&plugin, &state, &bytes, n as u32))
        });
        g.finish();
    }
    c.final_summary();
}
