//! Crash safety of the whole node: the real binary under steady concurrent
//! appends is killed with SIGKILL at random moments and restarted, again and
//! again, on the same data directory. After every restart:
//! - every acknowledged event is there: each realm's seq is at least the
//!   highest seq acknowledged for it;
//! - each event was applied exactly once and in order: the realms are
//!   counters that add 1 per event, so value == seq, and `/v1/verify` (the
//!   live state against a replay of the whole log) matches;
//! - no repair step is needed: the node simply starts.
//!
//! 20 kills in CI; `REALMHOST_SOAK=1` makes it 200. This first test runs on
//! a log split into 3 partitions (`storage.partitions`), so the kills land
//! while three committers commit independently; the others on one.

use crate::common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::NodeProc;
use rand::Rng;
use serde_json::json;

const WRITERS: usize = 8;
const REALMS_PER_WRITER: usize = 4;

#[test]
fn acknowledged_events_survive_sigkill() {
    let rounds = if std::env::var("REALMHOST_SOAK").is_ok_and(|v| v == "1") {
        200
    } else {
        20
    };
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("node.toml");
    std::fs::write(&config, "[storage]\npartitions = 3\n").unwrap();
    let config = config.to_str().unwrap().to_owned();
    let args = ["--config", config.as_str()];
    let acked: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
    let mut rng = rand::rng();
    let mut total_acks = 0usize;

    for round in 0..rounds {
        let node = NodeProc::start(dir.path(), &args);
        check(&node, &acked.lock().unwrap(), round);

        let stop = Arc::new(AtomicBool::new(false));
        let mut writers = Vec::new();
        for w in 0..WRITERS {
            let (url, acked, stop) = (node.url.clone(), acked.clone(), stop.clone());
            writers.push(std::thread::spawn(move || {
                let agent = NodeProc::agent();
                let mut n = 0usize;
                let mut acks = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let realm = format!("crash-{w}-{}", n % REALMS_PER_WRITER);
                    n += 1;
                    let body = json!({"realm_id": realm, "realm_type": "counter", "kind": "inc",
                                      "payload": {"add": 1}, "source": format!("writer-{w}")});
                    let Ok(mut resp) = agent.post(&format!("{url}/v1/events")).send_json(&body)
                    else {
                        break; // the node is gone
                    };
                    if resp.status().as_u16() != 200 {
                        continue;
                    }
                    let Ok(v) = resp.body_mut().read_json::<serde_json::Value>() else {
                        break;
                    };
                    if let Some(seq) = v["seq"].as_u64() {
                        let mut a = acked.lock().unwrap();
                        let e = a.entry(realm).or_default();
                        assert!(seq > *e, "seq went backwards for an acknowledged realm");
                        *e = seq;
                        acks += 1;
                    }
                }
                acks
            }));
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(150..700)));
        node.kill9();
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            total_acks += w.join().unwrap();
        }
    }
    let node = NodeProc::start(dir.path(), &args);
    check(&node, &acked.lock().unwrap(), rounds);
    assert!(
        total_acks > rounds * 10,
        "too few acknowledged appends ({total_acks}) to mean anything"
    );
    let layout = std::fs::read_to_string(dir.path().join("storage-layout.toml")).unwrap();
    assert!(layout.contains("partitions = 3"), "{layout}");
    eprintln!("{rounds} kills, {total_acks} acknowledged appends, all present exactly once");
}

fn check(node: &NodeProc, acked: &HashMap<String, u64>, round: usize) {
    for (realm, &seq) in acked {
        let (s, v) = node.get(&format!("/v1/realm?id={realm}"));
        assert_eq!(s, 200, "round {round}: {realm} lost: {v}");
        let durable = v["seq"].as_u64().unwrap();
        assert!(
            durable >= seq,
            "round {round}: {realm} acknowledged seq {seq} but only {durable} survived"
        );
        let (_, q) = node.post("/v1/query", &json!({"realm_id": realm}), None);
        assert_eq!(
            q["response"]["value"].as_u64(),
            Some(durable),
            "round {round}: {realm}: an event applied twice or lost: {q}"
        );
        let (_, ver) = node.get(&format!("/v1/verify?id={realm}"));
        assert_eq!(
            ver["matches"], true,
            "round {round}: {realm}: live state differs from replay: {ver}"
        );
    }
}

/// Accounts per large ledger realm: well past the packed size, so the realm
/// lives in the persistent tree and its snapshots are deltas.
const BIG_ACCOUNTS: usize = 1_000;
const BIG_REALMS: usize = 2;

/// The same under large realms with incremental snapshots: ledgers of
/// thousands of accounts, a snapshot every 16 events (so almost every
/// snapshot is a delta of a few keys against the stored one), kills at
/// random moments. After every restart each realm is rebuilt from its
/// snapshot plus deltas plus tail, and must equal a replay of its whole log;
/// acknowledged deposits are all there.
///
/// 8 kills in CI; `REALMHOST_SOAK=1` makes it 80.
#[test]
fn large_realms_with_incremental_snapshots_survive_sigkill() {
    let rounds = if std::env::var("REALMHOST_SOAK").is_ok_and(|v| v == "1") {
        80
    } else {
        8
    };
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("node.toml");
    std::fs::write(&config, "snapshot_every = 16\n").unwrap();
    let config = config.to_str().unwrap().to_owned();
    let args = ["--config", config.as_str()];

    // Seed the large realms (not killed during this phase).
    let node = NodeProc::start(dir.path(), &args);
    let agent = NodeProc::agent();
    for r in 0..BIG_REALMS {
        for a in 0..BIG_ACCOUNTS {
            let body = json!({"realm_id": format!("big-{r}"), "realm_type": "ledger", "kind": "tx",
                              "payload": {"open": {"account": format!("acct-{a:05}")}}, "source": "seed"});
            let resp = agent
                .post(&format!("{}/v1/events", node.url))
                .send_json(&body)
                .unwrap();
            assert_eq!(resp.status().as_u16(), 200);
        }
    }
    node.stop();

    // Realm → (highest acknowledged seq, sum of acknowledged deposits).
    let acked: Arc<Mutex<HashMap<String, (u64, u64)>>> = Arc::default();
    let mut rng = rand::rng();
    let mut total_acks = 0usize;
    for round in 0..rounds {
        let node = NodeProc::start(dir.path(), &args);
        check_big(&node, &acked.lock().unwrap(), round);
        let stop = Arc::new(AtomicBool::new(false));
        let mut writers = Vec::new();
        for w in 0..4 {
            let (url, acked, stop) = (node.url.clone(), acked.clone(), stop.clone());
            writers.push(std::thread::spawn(move || {
                let agent = NodeProc::agent();
                let mut rng = rand::rng();
                let mut acks = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let realm = format!("big-{}", rng.random_range(0..BIG_REALMS));
                    let account = format!("acct-{:05}", rng.random_range(0..BIG_ACCOUNTS));
                    let amount = rng.random_range(1..1000u64);
                    let body = json!({"realm_id": realm, "realm_type": "ledger", "kind": "tx",
                                      "payload": {"deposit": {"account": account, "amount": amount}},
                                      "source": format!("writer-{w}")});
                    let Ok(mut resp) = agent.post(&format!("{url}/v1/events")).send_json(&body)
                    else {
                        break;
                    };
                    if resp.status().as_u16() != 200 {
                        continue;
                    }
                    let Ok(v) = resp.body_mut().read_json::<serde_json::Value>() else {
                        break;
                    };
                    if let Some(seq) = v["seq"].as_u64() {
                        let mut a = acked.lock().unwrap();
                        let e = a.entry(realm).or_default();
                        e.0 = e.0.max(seq);
                        e.1 += amount;
                        acks += 1;
                    }
                }
                acks
            }));
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(300..1200)));
        node.kill9();
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            total_acks += w.join().unwrap();
        }
    }
    let node = NodeProc::start(dir.path(), &args);
    let snapshotted = check_big(&node, &acked.lock().unwrap(), rounds);
    assert!(
        total_acks > rounds * 5,
        "too few acknowledged appends ({total_acks})"
    );
    assert!(
        snapshotted,
        "no large realm was ever loaded from a snapshot: the test did not exercise deltas"
    );
    eprintln!(
        "{rounds} kills, {total_acks} acknowledged deposits into {BIG_REALMS} realms of {BIG_ACCOUNTS} accounts, all present exactly once"
    );
}

/// Check every large realm; returns whether any has a stored snapshot.
fn check_big(node: &NodeProc, acked: &HashMap<String, (u64, u64)>, round: usize) -> bool {
    let mut snapshotted = false;
    for r in 0..BIG_REALMS {
        let realm = format!("big-{r}");
        let (s, v) = node.get(&format!("/v1/realm?id={realm}"));
        assert_eq!(s, 200, "round {round}: {realm} lost: {v}");
        assert!(v["entries"].as_u64().unwrap() >= BIG_ACCOUNTS as u64, "{v}");
        snapshotted |= v["snapshot_seq"].as_u64().unwrap() > 0;
        let (ack_seq, ack_sum) = acked.get(&realm).copied().unwrap_or_default();
        let durable = v["seq"].as_u64().unwrap();
        assert!(
            durable >= ack_seq,
            "round {round}: {realm} acknowledged seq {ack_seq} but only {durable} survived"
        );
        let (_, q) = node.post("/v1/query", &json!({"realm_id": realm}), None);
        let total = q["response"]["total"]
            .as_u64()
            .unwrap_or_else(|| panic!("{q}"));
        assert!(
            total >= ack_sum,
            "round {round}: {realm}: acknowledged deposits of {ack_sum} but the total is {total}"
        );
        let (_, ver) = node.get(&format!("/v1/verify?id={realm}"));
        assert_eq!(
            ver["matches"], true,
            "round {round}: {realm}: state from snapshot + deltas + tail differs from a full replay: {ver}"
        );
    }
    snapshotted
}

/// Writers per hot realm in the pipelined crash test.
const HOT_WRITERS: usize = 8;
const HOT_REALMS: usize = 2;
/// Acknowledged events re-sent (same idempotency key) after each restart.
const HOT_SAMPLE: usize = 60;

/// The same with pipelining at work: many writers on the same two counter
/// realms, so each realm has several events in flight when the node is
/// killed. Every append carries a unique idempotency key; after each
/// restart, besides the checks above, a sample of acknowledged events is
/// sent again with its key and must come back as a replay carrying the seq
/// it was acknowledged with: each acknowledged event is present, once, at
/// its place in the order.
///
/// 8 kills in CI; `REALMHOST_SOAK=1` makes it 80.
#[test]
fn pipelined_hot_realms_survive_sigkill() {
    let rounds = if std::env::var("REALMHOST_SOAK").is_ok_and(|v| v == "1") {
        80
    } else {
        8
    };
    let dir = tempfile::tempdir().unwrap();
    // (realm, key, seq) of every acknowledged append.
    let acked: Arc<Mutex<Vec<(String, String, u64)>>> = Arc::default();
    let mut rng = rand::rng();
    let mut pipelined = 0u64;

    for round in 0..rounds {
        let node = NodeProc::start(dir.path(), &[]);
        check_hot(&node, &acked.lock().unwrap(), round, &mut rng);

        let stop = Arc::new(AtomicBool::new(false));
        let mut writers = Vec::new();
        for w in 0..HOT_REALMS * HOT_WRITERS {
            let (url, acked, stop) = (node.url.clone(), acked.clone(), stop.clone());
            writers.push(std::thread::spawn(move || {
                let agent = NodeProc::agent();
                let realm = format!("hot-{}", w % HOT_REALMS);
                let mut n = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("r{round}-w{w}-{n}");
                    n += 1;
                    let Ok(mut resp) = agent
                        .post(&format!("{url}/v1/events"))
                        .send_json(hot_event(&realm, &key))
                    else {
                        break; // the node is gone
                    };
                    if resp.status().as_u16() != 200 {
                        continue;
                    }
                    let Ok(v) = resp.body_mut().read_json::<serde_json::Value>() else {
                        break;
                    };
                    if let Some(seq) = v["seq"].as_u64() {
                        acked.lock().unwrap().push((realm.clone(), key, seq));
                    }
                }
            }));
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(200..700)));
        let (_, stats) = node.get("/v1/stats");
        pipelined += stats["pipelined_appends"].as_u64().unwrap_or(0);
        node.kill9();
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            w.join().unwrap();
        }
    }
    let node = NodeProc::start(dir.path(), &[]);
    check_hot(&node, &acked.lock().unwrap(), rounds, &mut rng);
    let total = acked.lock().unwrap().len();
    assert!(
        total > rounds * 10,
        "too few acknowledged appends ({total}) to mean anything"
    );
    assert!(pipelined > 0, "no append was pipelined");
    eprintln!(
        "{rounds} kills, {total} acknowledged appends on {HOT_REALMS} hot realms ({pipelined} pipelined), all present exactly once"
    );
}

fn hot_event(realm: &str, key: &str) -> serde_json::Value {
    json!({"realm_id": realm, "realm_type": "counter", "kind": "inc",
           "payload": {"add": 1}, "source": "hot-writer", "idempotency_key": key})
}

fn check_hot(node: &NodeProc, acked: &[(String, String, u64)], round: usize, rng: &mut impl Rng) {
    let mut seqs: HashMap<&str, Vec<u64>> = HashMap::new();
    for (realm, _, seq) in acked {
        seqs.entry(realm).or_default().push(*seq);
    }
    for (realm, mut s) in seqs {
        // No two acknowledgements of a realm share a seq.
        s.sort_unstable();
        let n = s.len();
        s.dedup();
        assert_eq!(
            s.len(),
            n,
            "round {round}: {realm}: a seq acknowledged twice"
        );
        let (_, v) = node.get(&format!("/v1/realm?id={realm}"));
        let durable = v["seq"].as_u64().unwrap_or_else(|| panic!("{v}"));
        let max = s.last().copied().unwrap_or(0);
        assert!(
            durable >= max,
            "round {round}: {realm} acknowledged seq {max} but only {durable} survived"
        );
        let (_, q) = node.post("/v1/query", &json!({"realm_id": realm}), None);
        assert_eq!(
            q["response"]["value"].as_u64(),
            Some(durable),
            "round {round}: {realm}: an event applied twice or lost: {q}"
        );
        let (_, ver) = node.get(&format!("/v1/verify?id={realm}"));
        assert_eq!(ver["matches"], true, "round {round}: {realm}: {ver}");
    }
    // The latest acknowledgements (those nearest a kill) and a random sample.
    let mut sample: Vec<&(String, String, u64)> = acked.iter().rev().take(HOT_SAMPLE).collect();
    for _ in 0..HOT_SAMPLE.min(acked.len()) {
        sample.push(&acked[rng.random_range(0..acked.len())]);
    }
    for (realm, key, seq) in sample {
        let (status, r) = node.post("/v1/events", &hot_event(realm, key), None);
        assert_eq!(status, 200, "round {round}: {r}");
        assert_eq!(
            r["replayed"], true,
            "round {round}: {key} was appended again: {r}"
        );
        assert_eq!(
            r["seq"].as_u64(),
            Some(*seq),
            "round {round}: {key} acknowledged at {seq}: {r}"
        );
    }
}
