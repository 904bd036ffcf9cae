//! Messages between realms through a node: the ledger's transfer saga
//! (accepted, rejected, expired), exactly-once across a restart, crossings
//! counted from outcomes, dead letters, and the HTTP API refusing a
//! client's `source_realm`.

use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use realmhost::node::{Node, NodeConfig, api};
use realmhost::realm::RealmId;
use realmhost_plugin_ledger::Tx;
use realmhost_tests::{ledger_event, until_messages as until};
use tower::ServiceExt;

async fn open(dir: &std::path::Path) -> Arc<Node> {
    let mut cfg = NodeConfig::with_data_dir(dir);
    cfg.plugins_dir = None;
    cfg.messaging.retry_min_ms = 10;
    cfg.messaging.retry_max_ms = 50;
    Node::open(cfg).await.unwrap()
}

async fn query(node: &Node, realm: &str, q: &str) -> serde_json::Value {
    let out = node.query(&RealmId::new(realm).unwrap(), q).await.unwrap();
    serde_json::from_str(&out).unwrap()
}

async fn balance(node: &Node, realm: &str, account: &str) -> u64 {
    query(node, realm, &format!(r#"{{"balance":"{account}"}}"#)).await["balance"]
        .as_u64()
        .unwrap()
}

async fn banks(node: &Node, funds: u64) -> (String, String) {
    realmhost_tests::two_banks(node, funds).await
}

fn transfer(from: &str, to: &str, to_account: &str, amount: u64, id: &str, timeout_ms: u64) -> Tx {
    Tx::TransferOut {
        from_bank: from.into(),
        account: "alice".into(),
        to_bank: to.into(),
        to_account: to_account.into(),
        amount,
        transfer_id: id.into(),
        timeout_ms: Some(timeout_ms),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accepted_transfer_moves_the_money_once_and_is_confirmed() {
    let dir = tempfile::tempdir().unwrap();
    let node = open(dir.path()).await;
    let (a, b) = banks(&node, 100).await;
    let crossings_before = node.monitor().snapshot();
    node.append(ledger_event(
        &a,
        &transfer(&a, &b, "bob", 30, "t-1", 60_000),
    ))
    .await
    .unwrap();
    // The credit is accepted and its reply appended; the timer waits.
    let s = until(&node, "the reply", |s| s.accepted == 1 && s.replies == 1).await;
    assert_eq!((s.sent, s.pending), (2, 1), "{s:?}");
    assert_eq!(balance(&node, &a, "alice").await, 70);
    assert_eq!(balance(&node, &b, "bob").await, 30);
    assert_eq!(query(&node, &a, r#""reserved""#).await["amount"], 0);
    // The credit at bank-b says where it came from.
    let events = node
        .events(&RealmId::new(&b).unwrap(), 0, 10)
        .await
        .unwrap();
    let credit = events.events.last().unwrap();
    assert_eq!(credit.source_realm.as_deref(), Some(a.as_str()));
    // The pending message is the timer, to bank-a itself.
    let mine = node
        .realm_messages(&RealmId::new(&a).unwrap(), 10)
        .await
        .unwrap();
    assert_eq!(mine.outbox.len(), 1);
    assert_eq!(mine.outbox[0].target, a);
    assert_eq!(mine.outbox[0].message_id, format!("{a}@3.1"));
    // The crossing was counted once, as a success of bank-a's shard.
    let shard = node.shard_of(&a);
    let after = node.monitor().snapshot();
    let ok = |snap: &realmhost::monitor::ShardMonitorSnapshot| snap.shards[shard].successes;
    assert_eq!(ok(&after) - ok(&crossings_before), 1);
    // The chain of the credit: settled, accepted.
    let chain = node.message_chain(&format!("{a}@3.0"));
    assert_eq!(chain.settled.len(), 1);
    assert!(chain.settled[0].outcome.is_accepted());
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_credit_is_compensated_by_the_reply() {
    let dir = tempfile::tempdir().unwrap();
    let node = open(dir.path()).await;
    let (a, b) = banks(&node, 100).await;
    node.append(ledger_event(
        &a,
        &transfer(&a, &b, "nobody", 40, "t-2", 60_000),
    ))
    .await
    .unwrap();
    until(&node, "the rejection's reply", |s| {
        s.rejected == 1 && s.replies == 1
    })
    .await;
    assert_eq!(balance(&node, &a, "alice").await, 100, "refunded");
    assert_eq!(query(&node, &b, r#""total""#).await["total"], 0);
    assert_eq!(query(&node, &a, r#""reserved""#).await["amount"], 0);
    node.shutdown().await.unwrap();
}

/// A credit that cannot be delivered within its time-to-live expires and
/// is refunded. Made deterministic by the pair's order: the credit queues
/// behind a timer of the same (sender, target) pair that is due later than
/// the credit's time-to-live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credit_past_its_time_to_live_expires_and_is_refunded() {
    let dir = tempfile::tempdir().unwrap();
    let node = open(dir.path()).await;
    let (a, _) = banks(&node, 100).await;
    // Within bank-a: credit now, timer in 300 ms; then a credit that may
    // take 1 ms, queued behind that timer.
    node.append(ledger_event(
        &a,
        &transfer(&a, &a, "alice", 10, "t-3a", 300),
    ))
    .await
    .unwrap();
    node.append(ledger_event(&a, &transfer(&a, &a, "alice", 20, "t-3b", 1)))
        .await
        .unwrap();
    let s = until(&node, "all four messages", |s| s.pending == 0).await;
    assert_eq!((s.accepted, s.expired, s.replies), (3, 1, 2), "{s:?}");
    assert_eq!(balance(&node, &a, "alice").await, 100);
    assert_eq!(query(&node, &a, r#""reserved""#).await["amount"], 0);
    node.shutdown().await.unwrap();
}

/// Undelivered messages survive a restart and are delivered once: the
/// transfer's timer is still due when the node stops, and is delivered
/// after the restart, once; the credit is not delivered again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undelivered_messages_survive_a_restart_and_arrive_once() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = {
        let node = open(dir.path()).await;
        let (a, b) = banks(&node, 100).await;
        node.append(ledger_event(&a, &transfer(&a, &b, "bob", 25, "t-4", 1_500)))
            .await
            .unwrap();
        until(&node, "the credit", |s| s.accepted == 1 && s.replies == 1).await;
        node.shutdown().await.unwrap();
        (a, b)
    };
    let node = open(dir.path()).await;
    // Loaded from the outbox: the timer, due 1.5 s after the transfer.
    assert_eq!(node.stats().messages.pending, 1);
    until(&node, "the timer", |s| s.accepted == 1 && s.pending == 0).await;
    assert_eq!(balance(&node, &a, "alice").await, 75);
    assert_eq!(balance(&node, &b, "bob").await, 25, "credited once");
    let bank_a = node
        .events(&RealmId::new(&a).unwrap(), 0, 100)
        .await
        .unwrap();
    // open, deposit, transfer_out, reply, timer.
    assert_eq!(bank_a.events.len(), 5);
    node.shutdown().await.unwrap();
}

/// A message to a realm type nobody serves is dead-lettered (with a reply
/// to the sender); an operator can list it and drop it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undeliverable_messages_become_dead_letters_an_operator_can_drop() {
    let dir = tempfile::tempdir().unwrap();
    let node = open(dir.path()).await;
    let (a, _) = banks(&node, 100).await;
    // A credit to a realm that exists with another type (a counter): the
    // delivery is dead-lettered.
    let counter = realmhost::realm::NewEvent {
        realm_type: "counter".into(),
        payload: realmhost_guest::encode_payload(&realmhost_plugin_counter::Op::Add(1)),
        ..ledger_event(
            "not-a-bank",
            &Tx::Open {
                account: "x".into(),
            },
        )
    };
    node.append(counter).await.unwrap();
    node.append(ledger_event(
        &a,
        &transfer(&a, "not-a-bank", "x", 5, "t-5", 60_000),
    ))
    .await
    .unwrap();
    until(&node, "the dead letter", |s| {
        s.dead_lettered == 1 && s.replies == 1
    })
    .await;
    assert_eq!(balance(&node, &a, "alice").await, 100, "refunded");
    let dead = node.dead_letters(None, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0].dead_reason.as_deref().unwrap().contains("counter"),
        "{dead:?}"
    );
    node.drop_dead_letter(&dead[0].message_id).await.unwrap();
    assert!(node.dead_letters(None, 10).await.unwrap().is_empty());
    assert!(node.drop_dead_letter(&dead[0].message_id).await.is_err());
    node.shutdown().await.unwrap();
}

/// A client cannot claim to be another realm: `source_realm` is refused on
/// the public append (only the admin token may import it), and a client's
/// `credit` to a bank is refused by the ledger (not a message).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_cannot_forge_crossings() {
    let dir = tempfile::tempdir().unwrap();
    let node = open(dir.path()).await;
    let app = api::router(node.clone());
    let body = serde_json::json!({
        "realm_id": "bank-z", "realm_type": "ledger", "kind": "tx",
        "payload": {"open": {"account": "z"}},
        "source": "mallory", "source_realm": "bank-a",
    });
    let res = app
        .oneshot(
            Request::post("/v1/events")
                .header("content-type", "application/json")
                .body(Body::from(body.to_string()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&bytes).contains("source_realm"));

    let forged = Tx::Credit {
        account: "z".into(),
        amount: 1_000,
        transfer_id: "free-money".into(),
    };
    node.append(ledger_event(
        "bank-z",
        &Tx::Open {
            account: "z".into(),
        },
    ))
    .await
    .unwrap();
    let e = node
        .append(ledger_event("bank-z", &forged))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("not_a_transfer"), "{e}");
    let shard = node.shard_of("bank-z");
    let snap = node.monitor().snapshot();
    assert_eq!(snap.shards[shard].failures, 0);
    node.shutdown().await.unwrap();
}

fn hostile(realm: &str, kind: &str, payload: &str) -> realmhost::realm::NewEvent {
    realmhost::realm::NewEvent {
        realm_id: RealmId::new(realm).unwrap(),
        realm_type: "hostile".into(),
        kind: kind.into(),
        payload: payload.as_bytes().to_vec(),
        source: "tester".into(),
        source_realm: None,
    }
}

async fn with_hostile(dir: &std::path::Path, tune: impl FnOnce(&mut NodeConfig)) -> Arc<Node> {
    let mut cfg = NodeConfig::with_data_dir(dir);
    cfg.plugins_dir = None;
    cfg.messaging.retry_min_ms = 1;
    cfg.messaging.retry_max_ms = 5;
    tune(&mut cfg);
    let node = Node::open(cfg).await.unwrap();
    node.load_plugin(
        realmhost_plugin_artifacts::fixtures::HOSTILE.to_vec(),
        realmhost::runtime::LoadOptions::activate(),
    )
    .await
    .unwrap();
    node
}

/// Two realms that answer every message with one back loop until the hop
/// limit dead-letters the chain: exactly `hop_limit` deliveries, then one
/// dead letter, and the node is quiet again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_loop_ends_at_the_hop_limit() {
    let dir = tempfile::tempdir().unwrap();
    let node = with_hostile(dir.path(), |c| c.messaging.hop_limit = 8).await;
    node.append(hostile("ping", "echo", "pong")).await.unwrap();
    let s = until(&node, "the loop's end", |s| {
        s.dead_lettered == 1 && s.pending == 0
    })
    .await;
    assert_eq!(s.accepted, 8, "{s:?}");
    let dead = node.dead_letters(None, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].hop, 9);
    assert_eq!(dead[0].chain_id, "ping@1.0");
    assert!(
        dead[0]
            .dead_reason
            .as_deref()
            .unwrap()
            .contains("hop limit")
    );
    // ping: the client's event and 4 echoes; pong: 4 echoes.
    let seq = |r: &str| {
        let node = node.clone();
        let r = RealmId::new(r).unwrap();
        async move { node.state(&r).await.unwrap().seq() }
    };
    assert_eq!((seq("ping").await, seq("pong").await), (5, 4));
    let chain = node.message_chain("ping@1.0");
    assert_eq!(chain.settled.len(), 9);
    assert!(chain.pending.is_empty());
    node.shutdown().await.unwrap();
}

/// A target whose plugin traps is retried with backoff and dead-lettered
/// after `max_attempts`, while the same sender's messages to another target
/// are delivered at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trapping_target_does_not_hold_up_other_targets() {
    let dir = tempfile::tempdir().unwrap();
    // The failing target waits 1 s, then 2 s between attempts: long enough
    // for the healthy deliveries to happen meanwhile.
    let node = with_hostile(dir.path(), |c| {
        c.messaging.max_attempts = 3;
        c.messaging.retry_min_ms = 1_000;
        c.messaging.retry_max_ms = 2_000;
        c.parking.faults = 0;
    })
    .await;
    node.append(hostile("sender", "forward", "trapper:panic"))
        .await
        .unwrap();
    for _ in 0..5 {
        node.append(hostile("sender", "forward", "healthy:ok"))
            .await
            .unwrap();
    }
    let s = until(&node, "the healthy deliveries", |s| s.accepted == 5).await;
    assert_eq!(s.dead_lettered, 0, "the trapping target is still retried");
    let s = until(&node, "the dead letter", |s| s.dead_lettered == 1).await;
    assert_eq!(s.retries, 2, "{s:?}");
    let dead = node.dead_letters(None, 10).await.unwrap();
    assert!(
        dead[0]
            .dead_reason
            .as_deref()
            .unwrap()
            .contains("3 attempts"),
        "{dead:?}"
    );
    // An operator retries it: it fails again and comes back.
    node.retry_dead_letter(&dead[0].message_id).await.unwrap();
    until(&node, "the second dead letter", |s| s.dead_lettered == 2).await;
    assert_eq!(node.dead_letters(None, 10).await.unwrap().len(), 1);
    node.shutdown().await.unwrap();
}

/// A component built against contract 0.2 (before messages) still loads,
/// applies events and replays its log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contract_0_2_plugin_still_serves_its_realms() {
    let dir = tempfile::tempdir().unwrap();
    let node = with_hostile(dir.path(), |_| {}).await;
    node.load_plugin(
        realmhost_plugin_artifacts::fixtures::CONTRACT_V02.to_vec(),
        realmhost::runtime::LoadOptions::activate(),
    )
    .await
    .unwrap();
    let id = RealmId::new("old-1").unwrap();
    for n in [5u64, 7] {
        node.append(realmhost::realm::NewEvent {
            realm_id: id.clone(),
            realm_type: "legacy-counter".into(),
            kind: "add".into(),
            payload: n.to_le_bytes().to_vec(),
            source: "tester".into(),
            source_realm: None,
        })
        .await
        .unwrap();
    }
    assert_eq!(query(&node, "old-1", "").await["value"], 12);
    // Replayed from the log through apply-batch (batch layout 1).
    let v = node.verify(&id).await.unwrap();
    assert!(v.matches && v.events == 2, "{v:?}");
    node.shutdown().await.unwrap();
}
