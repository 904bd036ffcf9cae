//! Crash safety of messages between realms: the real binary runs transfer
//! sagas between banks (`transfer_out` → `credit` message → reply, plus a
//! timer) under concurrent clients, and is killed with SIGKILL at random
//! moments, again and again, on the same data directory. At the end, once
//! every message has reached its outcome:
//! - money is conserved: the banks' balances add up to what was deposited,
//!   and nothing is left reserved;
//! - every acknowledged `transfer_out` is in its bank's log exactly once;
//! - every message was delivered at most once (no credit or timer twice at
//!   its target) and every sent message got exactly one outcome: each
//!   transfer has exactly one reply and one timer at its bank, and at most
//!   one credit at its target;
//! - each bank's live state equals a replay of its log.
//!
//! 10 kills in CI; `REALMHOST_SOAK=1` makes it 100.

use crate::common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::NodeProc;
use rand::Rng;
use serde_json::{Value, json};

const BANKS: usize = 6;
const ACCOUNTS: usize = 4;
const FUNDS: u64 = 1_000;
const WRITERS: usize = 4;

fn bank(i: usize) -> String {
    format!("bank-{i}")
}

fn append(agent: &ureq::Agent, url: &str, realm: &str, payload: Value) -> Option<Value> {
    let body = json!({"realm_id": realm, "realm_type": "ledger", "kind": "tx",
                      "payload": payload, "source": "saga-test"});
    let mut resp = agent
        .post(&format!("{url}/v1/events"))
        .send_json(&body)
        .ok()?;
    if resp.status().as_u16() != 200 {
        return Some(Value::Null);
    }
    resp.body_mut().read_json::<Value>().ok()
}

#[test]
fn sagas_survive_sigkill() {
    let rounds = if std::env::var("REALMHOST_SOAK").is_ok_and(|v| v == "1") {
        100
    } else {
        10
    };
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("node.toml");
    std::fs::write(
        &config,
        "[messaging]\nretry_min_ms = 10\nretry_max_ms = 200\n",
    )
    .unwrap();
    let config = config.to_str().unwrap().to_owned();
    let args = ["--config", config.as_str()];

    // Seed the banks (no kill during this phase).
    let node = NodeProc::start(dir.path(), &args);
    let agent = NodeProc::agent();
    for b in 0..BANKS {
        for a in 0..ACCOUNTS {
            let account = format!("acct-{a}");
            append(
                &agent,
                &node.url,
                &bank(b),
                json!({"open": {"account": account}}),
            )
            .unwrap();
            let deposit = json!({"deposit": {"account": account, "amount": FUNDS}});
            append(&agent, &node.url, &bank(b), deposit).unwrap();
        }
    }
    node.stop();

    // transfer id → bank, for every acknowledged transfer_out.
    let acked: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let mut rng = rand::rng();
    for round in 0..rounds {
        let node = NodeProc::start(dir.path(), &args);
        let stop = Arc::new(AtomicBool::new(false));
        let mut writers = Vec::new();
        for w in 0..WRITERS {
            let (url, acked, stop) = (node.url.clone(), acked.clone(), stop.clone());
            writers.push(std::thread::spawn(move || {
                let agent = NodeProc::agent();
                let mut rng = rand::rng();
                let mut n = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let from = rng.random_range(0..BANKS);
                    let to = (from + rng.random_range(1..BANKS)) % BANKS;
                    let id = format!("r{round}-w{w}-{n}");
                    // One in eight credits goes to an account that does not
                    // exist: rejected, then refunded by the reply.
                    let to_account = if rng.random_range(0..8) == 0 {
                        "ghost".to_owned()
                    } else {
                        format!("acct-{}", rng.random_range(0..ACCOUNTS))
                    };
                    let tx = json!({"transfer_out": {
                        "from_bank": bank(from), "account": format!("acct-{}", rng.random_range(0..ACCOUNTS)),
                        "to_bank": bank(to), "to_account": to_account,
                        "amount": rng.random_range(1..20u64), "transfer_id": id, "timeout_ms": 1_500}});
                    match append(&agent, &url, &bank(from), tx) {
                        None => break, // the node is gone
                        Some(v) if v["seq"].is_u64() => {
                            acked.lock().unwrap().insert(id, bank(from));
                        }
                        Some(_) => {} // refused (overdraft, ...)
                    }
                }
            }));
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(200..800)));
        node.kill9();
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            w.join().unwrap();
        }
    }

    let node = NodeProc::start(dir.path(), &args);
    // Undelivered messages are picked up again: wait until every one has
    // its outcome (the timers are due 1.5 s after their transfers).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, stats) = node.get("/v1/stats");
        if stats["messages"]["pending"].as_u64() == Some(0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "messages still pending: {}",
            stats["messages"]
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let mut total = 0u64;
    let mut credits = HashSet::new();
    let mut transfers_out: HashMap<String, usize> = HashMap::new();
    for b in 0..BANKS {
        let realm = bank(b);
        let (_, q) = node.post(
            "/v1/query",
            &json!({"realm_id": realm, "request": "total"}),
            None,
        );
        total += q["response"]["total"].as_u64().unwrap();
        let (_, r) = node.post(
            "/v1/query",
            &json!({"realm_id": realm, "request": "reserved"}),
            None,
        );
        assert_eq!(
            r["response"]["amount"], 0,
            "{realm}: money left reserved: {r}"
        );

        let (mut outs, mut replies, mut timers) = (HashSet::new(), HashSet::new(), HashSet::new());
        let mut after = 0u64;
        loop {
            let (s, page) = node.get(&format!(
                "/v1/realm/events?id={realm}&after={after}&limit=1000"
            ));
            assert_eq!(s, 200, "{page}");
            for e in page["events"].as_array().unwrap() {
                let message = &e["message"];
                if let Some(t) = e["payload"]["transfer_out"]["transfer_id"].as_str() {
                    assert!(outs.insert(t.to_owned()), "{realm}: transfer_out {t} twice");
                    *transfers_out.entry(t.to_owned()).or_default() += 1;
                } else if !message["reply"].is_null() {
                    let id = message["reply"]["message_id"].as_str().unwrap().to_owned();
                    assert!(replies.insert(id.clone()), "{realm}: two replies to {id}");
                } else if e["kind"] == "transfer_timeout" {
                    let id = message["origin"]["message_id"].as_str().unwrap().to_owned();
                    assert!(timers.insert(id.clone()), "{realm}: timer {id} twice");
                } else if e["kind"] == "credit" {
                    let id = message["origin"]["message_id"].as_str().unwrap().to_owned();
                    assert!(credits.insert(id.clone()), "credit {id} delivered twice");
                }
            }
            match page["next_after"].as_u64() {
                Some(n) => after = n,
                None => break,
            }
        }
        // Every transfer of this bank: one reply (to its credit), one timer.
        assert_eq!(
            replies.len(),
            outs.len(),
            "{realm}: replies {} for {} transfers",
            replies.len(),
            outs.len()
        );
        assert_eq!(
            timers.len(),
            outs.len(),
            "{realm}: timers {} for {} transfers",
            timers.len(),
            outs.len()
        );
        let (_, ver) = node.get(&format!("/v1/verify?id={realm}"));
        assert_eq!(
            ver["matches"], true,
            "{realm}: live state differs from replay: {ver}"
        );
    }
    assert_eq!(
        total,
        (BANKS * ACCOUNTS) as u64 * FUNDS,
        "money was created or lost"
    );
    let acked = acked.lock().unwrap();
    for (id, bank) in acked.iter() {
        assert_eq!(
            transfers_out.get(id),
            Some(&1),
            "acknowledged transfer {id} of {bank} lost"
        );
    }
    assert!(credits.len() <= transfers_out.len());
    assert!(
        acked.len() > rounds * 5,
        "too few acknowledged transfers ({}) to mean anything",
        acked.len()
    );
    eprintln!(
        "{rounds} kills, {} acknowledged transfers ({} stored), {} credits delivered once each, money conserved",
        acked.len(),
        transfers_out.len(),
        credits.len()
    );
}
