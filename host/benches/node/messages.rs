//! Section `messages` of the node bench: messages between realms against
//! plain appends, in the same run, on fresh nodes, rounds interleaved.
//!
//! - **Plain appends** (the baseline): `WRITERS` closed-loop writers, each
//!   appending to its own realm of the hostile fixture's counter (`ok`).
//! - **One-way messages**: the same writers append `forward` events, each of
//!   which sends one message to the writer's own target realm (`ok` there).
//!   What counts is messages delivered (accepted at the target and settled
//!   at the sender) per second; a sender whose outbox is full is refused
//!   (`outbox_full`) and tries again, so the rate is the delivery capacity.
//! - **Request and reply**: ledger transfer sagas between pairs of banks:
//!   `transfer_out` sends a credit (reply: always) and a timer; a saga is
//!   counted when its reply has been appended at the sender.
//!
//! - **Paced one-way messages**: one message per writer every 20 ms, far
//!   under capacity, for the latency of a message that queues behind none
//!   (the saturated cases' latency is mostly queueing).
//!
//! Latency is send-to-outcome (from the sending event's time, or the due
//! time of a delayed message, to the settle), p50/p99 over the node's last
//! 4 096 settled messages.

use super::*;
use realmhost::node::MessageStats;

const WRITERS: usize = 64;
const ROUNDS: usize = 2;

#[derive(Clone, Copy)]
enum Case {
    Plain,
    OneWay,
    Saga,
    /// One-way messages at a light, steady rate (each writer sends one every
    /// `PACE`): the latency of a message that does not queue behind others.
    Paced,
}

/// Interval between one writer's sends in the paced case: 64 writers every
/// 20 ms is 3 200 messages/s, well under the delivery capacity.
const PACE: Duration = Duration::from_millis(20);

struct Run {
    /// Client appends acknowledged per second.
    appends: f64,
    /// Messages settled (plain: appends) per second.
    delivered: f64,
    stats: MessageStats,
}

fn hostile(realm: &str, kind: &str, payload: String) -> NewEvent {
    NewEvent {
        realm_id: RealmId::new(realm).unwrap(),
        realm_type: "hostile".into(),
        kind: kind.into(),
        payload: payload.into_bytes(),
        source: "bench".into(),
        source_realm: None,
    }
}

fn ledger(realm: &str, tx: &Tx) -> NewEvent {
    NewEvent {
        realm_id: RealmId::new(realm).unwrap(),
        realm_type: "ledger".into(),
        kind: "tx".into(),
        payload: encode_payload(tx),
        source: "bench".into(),
        source_realm: None,
    }
}

async fn drive(case: Case, d: Duration) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = NodeConfig::with_data_dir(dir.path());
    cfg.plugins_dir = None;
    let node = Node::open(cfg).await.unwrap();
    node.load_plugin(
        realmhost_plugin_artifacts::fixtures::HOSTILE.to_vec(),
        realmhost::runtime::LoadOptions::activate(),
    )
    .await
    .unwrap();
    if matches!(case, Case::Saga) {
        for w in 0..WRITERS {
            for (bank, account) in [(format!("bank-{w}"), "a"), (format!("peer-{w}"), "b")] {
                let open = Tx::Open {
                    account: account.into(),
                };
                node.append(ledger(&bank, &open)).await.unwrap();
            }
            let fund = Tx::Deposit {
                account: "a".into(),
                amount: u64::MAX / 4,
            };
            node.append(ledger(&format!("bank-{w}"), &fund))
                .await
                .unwrap();
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let warm = Duration::from_millis(500);
    let counted = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let (node, stop, counted) = (node.clone(), stop.clone(), counted.clone());
        tasks.push(tokio::spawn(async move {
            let start = Instant::now();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                if matches!(case, Case::Paced) {
                    tokio::time::sleep(PACE).await;
                }
                let ev = match case {
                    Case::Plain => hostile(&format!("plain-{w}"), "ok", String::new()),
                    Case::OneWay | Case::Paced => {
                        hostile(&format!("sender-{w}"), "forward", format!("target-{w}:ok"))
                    }
                    Case::Saga => ledger(
                        &format!("bank-{w}"),
                        &Tx::TransferOut {
                            from_bank: format!("bank-{w}"),
                            account: "a".into(),
                            to_bank: format!("peer-{w}"),
                            to_account: "b".into(),
                            amount: 1,
                            transfer_id: format!("t-{n}"),
                            timeout_ms: Some(600_000),
                        },
                    ),
                };
                let ok = node.append(ev).await.is_ok();
                if ok && start.elapsed() > warm {
                    counted.fetch_add(1, Ordering::Relaxed);
                }
                if !ok {
                    // outbox_full: let delivery catch up.
                    tokio::task::yield_now().await;
                }
            }
        }));
    }
    tokio::time::sleep(warm).await;
    let before = node.stats().messages;
    tokio::time::sleep(d).await;
    let after = node.stats().messages;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let secs = d.as_secs_f64();
    let appends = counted.load(Ordering::Relaxed) as f64 / secs;
    let delivered = match case {
        Case::Plain => appends,
        Case::OneWay | Case::Paced => (after.accepted - before.accepted) as f64 / secs,
        Case::Saga => (after.replies - before.replies) as f64 / secs,
    };
    node.shutdown().await.unwrap();
    Run {
        appends,
        delivered,
        stats: after,
    }
}

pub(super) async fn messages_section(d: Duration) {
    let (mut plain, mut oneway, mut saga, mut paced) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        plain.push(drive(Case::Plain, d).await);
        oneway.push(drive(Case::OneWay, d).await);
        saga.push(drive(Case::Saga, d).await);
        paced.push(drive(Case::Paced, d).await);
    }
    println!("messages between realms, {WRITERS} writers ({ROUNDS} rounds, interleaved):");
    for r in &plain {
        println!("  plain appends      : {:>8.0} appends/s", r.appends);
    }
    for r in &oneway {
        println!(
            "  one-way messages   : {:>8.0} delivered/s  (sends acknowledged {:.0}/s)  send-to-outcome p50 {} ms  p99 {} ms",
            r.delivered, r.appends, r.stats.latency_ms_p50, r.stats.latency_ms_p99
        );
    }
    for r in &saga {
        println!(
            "  request + reply    : {:>8.0} sagas/s      (transfers acknowledged {:.0}/s)  send-to-outcome p50 {} ms  p99 {} ms",
            r.delivered, r.appends, r.stats.latency_ms_p50, r.stats.latency_ms_p99
        );
    }
    for r in &paced {
        println!(
            "  one-way, paced     : {:>8.0} delivered/s  (one per writer every {} ms)  send-to-outcome p50 {} ms  p99 {} ms",
            r.delivered,
            PACE.as_millis(),
            r.stats.latency_ms_p50,
            r.stats.latency_ms_p99
        );
    }
    let mut one: Vec<f64> = oneway
        .iter()
        .zip(&plain)
        .map(|(m, p)| m.delivered / p.appends)
        .collect();
    let mut two: Vec<f64> = saga
        .iter()
        .zip(&plain)
        .map(|(m, p)| m.delivered / p.appends)
        .collect();
    println!(
        "  one-way delivered / plain appends (per round): {}",
        spread(&mut one)
    );
    println!("  sagas / plain appends (per round): {}", spread(&mut two));
}
