//! Section `noisy` of the node bench: healthy appends' latency alone, then
//! while another realm type burns its whole fuel budget on every call, in
//! the same run (see the bench's module docs).

use super::*;

/// Healthy writers, each on its own realm (counter and ledger alternately).
pub(super) const HEALTHY_WRITERS: usize = 8;
/// Callers that keep the hostile plugin looping to its fuel limit.
pub(super) const NOISY_CALLERS: usize = 8;
/// Rounds of (baseline, noise via the pool, noise via append)
/// (`REALMHOST_NOISY_ROUNDS`, default 3).
fn rounds() -> usize {
    std::env::var("REALMHOST_NOISY_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&n: &usize| n > 0)
        .unwrap_or(3)
}

/// The hostile event kind the noise sends (`REALMHOST_NOISY_KIND`, default
/// `loop`: run to the fuel limit). `panic` traps at once: the same path
/// without the CPU, to tell the CPU's share of the tail from the rest.
fn noisy_kind() -> String {
    std::env::var("REALMHOST_NOISY_KIND").unwrap_or_else(|_| "loop".into())
}

/// Where the fuel-burning calls come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Noise {
    /// No noise: the baseline.
    Quiet,
    /// `hostile` appends of kind `loop` through `Node::append_json`.
    Appends,
    /// The same `apply` call submitted through `Node::run_plugin`, the
    /// plugin-execution pool's entry point.
    Pool,
}

fn healthy_event(realm: &RealmId, w: usize, first: bool) -> NewEvent {
    if w.is_multiple_of(2) {
        counter_event(realm, w)
    } else if first {
        ledger_event(
            realm,
            &Tx::Open {
                account: "a".into(),
            },
        )
    } else {
        ledger_event(
            realm,
            &Tx::Deposit {
                account: "a".into(),
                amount: 1,
            },
        )
    }
}

/// One phase: healthy appends for `d` (after a warm-up) under `noise`.
/// Returns (healthy appends/s, p50 ms, p99 ms, fuel-burning calls done).
async fn phase(node: &Arc<Node>, noise: Noise, round: usize, d: Duration) -> (f64, f64, f64, u64) {
    let stop = Arc::new(AtomicBool::new(false));
    let burned = Arc::new(AtomicU64::new(0));
    let mut noisy = Vec::new();
    if noise != Noise::Quiet {
        let plugin = node.plugins().get("hostile").unwrap();
        for c in 0..NOISY_CALLERS {
            let (node, stop, burned, plugin) =
                (node.clone(), stop.clone(), burned.clone(), plugin.clone());
            noisy.push(tokio::spawn(async move {
                let realm = format!("hostile-{round}-{c:02}");
                let kind = noisy_kind();
                let record = EventRecord {
                    seq: 1,
                    kind: kind.clone(),
                    payload: Vec::new(),
                    source: "noisy".into(),
                    source_realm: None,
                    timestamp_ms: 1_700_000_000_000,
                    source_reputation: 1.0,
                    message: None,
                };
                let base = plugin.init(&realm).unwrap().value.unwrap().map;
                while !stop.load(Ordering::Relaxed) {
                    match noise {
                        Noise::Appends => {
                            let r = node
                                .append_json(
                                    RealmId::new(realm.as_str()).unwrap(),
                                    "hostile",
                                    &kind,
                                    "null",
                                    "noisy",
                                    None,
                                )
                                .await;
                            assert!(r.is_err(), "a {kind} event must fail");
                        }
                        _ => {
                            let (p, r, m, e) =
                                (plugin.clone(), realm.clone(), base.clone(), record.clone());
                            let out = node
                                .run_plugin("hostile", move || p.apply(Scope::new(&r, &m), &e))
                                .await;
                            assert!(matches!(out, Ok(Err(_))), "a {kind} call must fail");
                        }
                    }
                    burned.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
    }
    let warm = Duration::from_millis(500);
    let mut tasks = Vec::new();
    for w in 0..HEALTHY_WRITERS {
        let (node, stop) = (node.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let realm = RealmId::new(format!("healthy-{round}-{noise:?}-{w:02}")).unwrap();
            let start = Instant::now();
            let mut lat = Vec::new();
            let mut first = true;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                node.append(healthy_event(&realm, w, first)).await.unwrap();
                first = false;
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
    for t in noisy {
        t.await.unwrap();
    }
    lat.sort_by(f64::total_cmp);
    (
        lat.len() as f64 / d.as_secs_f64(),
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        burned.load(Ordering::Relaxed),
    )
}

/// The section: baseline, noise through the pool, noise through the append
/// path, [`rounds`] times, interleaved, on one node.
pub(super) async fn noisy_neighbour(d: Duration) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = NodeConfig::with_data_dir(dir.path());
    cfg.plugins_dir = None;
    // The hostile realms fault on every call: keep them (and their plugin)
    // in service so the noise lasts the whole phase.
    cfg.parking.faults = 0;
    cfg.runtime.quarantine_faults = 0;
    let node = Node::open(cfg).await.unwrap();
    node.load_plugin(
        realmhost_plugin_artifacts::fixtures::HOSTILE.to_vec(),
        realmhost::runtime::LoadOptions::activate(),
    )
    .await
    .unwrap();
    let exec = node.stats().exec;
    println!(
        "noisy neighbour: {HEALTHY_WRITERS} writers on counter/ledger realms; noise = {NOISY_CALLERS} callers looping the hostile plugin to its fuel limit"
    );
    println!(
        "  pool: {} slots, at most {} per realm type",
        exec.threads, exec.max_per_type
    );
    let mut rows: Vec<(Noise, (f64, f64, f64, u64))> = Vec::new();
    for round in 0..rounds() {
        for noise in [Noise::Quiet, Noise::Pool, Noise::Appends] {
            rows.push((noise, phase(&node, noise, round, d).await));
        }
    }
    for (noise, (rate, p50, p99, burned)) in &rows {
        println!(
            "  {:<28} {rate:>7.0} appends/s  p50 {p50:>6.2} ms  p99 {p99:>6.2} ms  fuel-limit calls {burned}",
            match noise {
                Noise::Quiet => "baseline (no noise)",
                Noise::Pool => "noise via run_plugin (pool)",
                Noise::Appends => "noise via append (inline)",
            }
        );
    }
    let exec = node.stats().exec;
    println!(
        "  pool calls: {} done, {} on the lower-priority background threads, {} refused",
        exec.completed, exec.background, exec.rejected
    );
    // Per round: each noisy phase against the baseline just before it.
    for (name, n) in [
        ("noise via the pool", Noise::Pool),
        ("noise via append", Noise::Appends),
    ] {
        let mut p99s = Vec::new();
        let mut p50s = Vec::new();
        for round in rows.chunks(3) {
            let base = round[0].1;
            let noisy = round.iter().find(|r| r.0 == n).unwrap().1;
            p99s.push(noisy.2 / base.2);
            p50s.push(noisy.1 / base.1);
        }
        println!(
            "  {name}: p99(noisy)/p99(baseline) per round {}, median {}  (p50 ratio median {}; target p99 ≤ 1.5)",
            p99s.iter()
                .map(|r| format!("{r:.2}"))
                .collect::<Vec<_>>()
                .join(" "),
            spread(&mut p99s),
            spread(&mut p50s)
        );
    }
    node.shutdown().await.unwrap();
}
