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
//! 20 kills in CI; `REALMHOST_SOAK=1` makes it 200.

mod common;

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
    let acked: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
    let mut rng = rand::rng();
    let mut total_acks = 0usize;

    for round in 0..rounds {
        let node = NodeProc::start(dir.path(), &[]);
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
    let node = NodeProc::start(dir.path(), &[]);
    check(&node, &acked.lock().unwrap(), rounds);
    assert!(
        total_acks > rounds * 10,
        "too few acknowledged appends ({total_acks}) to mean anything"
    );
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
