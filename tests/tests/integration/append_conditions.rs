//! Idempotent and conditional appends: a retry with the same key appends
//! nothing and gets the original receipt — concurrently, and across a
//! restart — and an expected seq turns concurrent writers into optimistic
//! concurrency with typed conflicts.

use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use realmhost::node::{AppendOptions, Node, NodeConfig, NodeError, api};
use realmhost::realm::RealmId;
use realmhost_plugin_ledger::Tx;
use realmhost_tests::ledger_event;
use tower::ServiceExt;

async fn open(dir: &std::path::Path) -> Arc<Node> {
    let mut cfg = NodeConfig::with_data_dir(dir);
    cfg.plugins_dir = None;
    Node::open(cfg).await.unwrap()
}

fn deposit(realm: &str, amount: u64) -> realmhost::realm::NewEvent {
    ledger_event(
        realm,
        &Tx::Deposit {
            account: "a".into(),
            amount,
        },
    )
}

fn keyed(key: &str) -> AppendOptions {
    AppendOptions {
        idempotency_key: Some(key.into()),
        expected_seq: None,
    }
}

async fn events(node: &Node, realm: &str) -> u64 {
    node.state(&RealmId::new(realm).unwrap())
        .await
        .unwrap()
        .seq()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_key_appends_once_even_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let node = open(dir.path()).await;
    let open_a = Tx::Open {
        account: "a".into(),
    };
    node.append(ledger_event("acct", &open_a)).await.unwrap();

    let first = node
        .append_with(deposit("acct", 5), keyed("pay-1"))
        .await
        .unwrap();
    assert!(!first.replayed);
    // A retry (even with another payload) appends nothing.
    let retry = node
        .append_with(deposit("acct", 5), keyed("pay-1"))
        .await
        .unwrap();
    assert!(retry.replayed);
    assert_eq!(
        realmhost::node::AppendReceipt {
            replayed: false,
            ..retry.clone()
        },
        first
    );
    assert_eq!(events(&node, "acct").await, 2);

    // Sixteen concurrent retries of a new key: one event.
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let node = node.clone();
        tasks.push(tokio::spawn(async move {
            node.append_with(deposit("acct", 7), keyed("pay-2"))
                .await
                .unwrap()
        }));
    }
    let mut seqs = Vec::new();
    let mut fresh = 0;
    for t in tasks {
        let r = t.await.unwrap();
        seqs.push(r.seq);
        fresh += usize::from(!r.replayed);
    }
    assert_eq!(fresh, 1, "exactly one append was not a replay");
    assert!(seqs.iter().all(|&s| s == 3), "{seqs:?}");
    assert_eq!(events(&node, "acct").await, 3);
    // Keys are per realm.
    node.append(ledger_event("other", &open_a)).await.unwrap();
    let r = node
        .append_with(deposit("other", 1), keyed("pay-1"))
        .await
        .unwrap();
    assert!(!r.replayed);
    node.shutdown().await.unwrap();
    drop(node);

    // After a restart the keys are still there.
    let node = open(dir.path()).await;
    let again = node
        .append_with(deposit("acct", 5), keyed("pay-1"))
        .await
        .unwrap();
    assert!(again.replayed);
    assert_eq!(again.seq, first.seq);
    assert_eq!(events(&node, "acct").await, 3);
    assert_eq!(node.stats().idempotent_replays, 1);
    let balance = node
        .query(&RealmId::new("acct").unwrap(), r#"{"balance":"a"}"#)
        .await
        .unwrap();
    assert_eq!(balance, r#"{"balance":12}"#);

    // A key that is not acceptable is a typed error.
    let long = "k".repeat(realmhost::node::MAX_IDEMPOTENCY_KEY_BYTES + 1);
    for bad in ["", "a\nb", long.as_str()] {
        assert!(matches!(
            node.append_with(deposit("acct", 1), keyed(bad)).await,
            Err(NodeError::InvalidInput(_))
        ));
    }
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_conditional_appends_conflict_and_never_lose_an_update() {
    const WRITERS: usize = 8;
    const EACH: usize = 15;
    let dir = tempfile::tempdir().unwrap();
    let node = open(dir.path()).await;
    let open_a = Tx::Open {
        account: "a".into(),
    };
    // A realm with no events is at seq 0.
    let r = node
        .append_with(
            ledger_event("cas", &open_a),
            AppendOptions {
                idempotency_key: None,
                expected_seq: Some(0),
            },
        )
        .await
        .unwrap();
    assert_eq!(r.seq, 1);

    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let node = node.clone();
        tasks.push(tokio::spawn(async move {
            let mut conflicts = 0;
            let mut done = 0;
            while done < EACH {
                // Read, then append only if nobody appended in between.
                let seen = events(&node, "cas").await;
                let opts = AppendOptions {
                    idempotency_key: None,
                    expected_seq: Some(seen),
                };
                match node.append_with(deposit("cas", 1 + w as u64), opts).await {
                    Ok(r) => {
                        assert_eq!(r.seq, seen + 1);
                        done += 1;
                    }
                    Err(NodeError::SeqConflict {
                        expected, actual, ..
                    }) => {
                        assert_eq!(expected, seen);
                        assert_ne!(actual, seen);
                        conflicts += 1;
                        tokio::task::yield_now().await;
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            conflicts
        }));
    }
    let mut conflicts = 0;
    for t in tasks {
        conflicts += t.await.unwrap();
    }
    println!("{conflicts} conflicts for {} appends", WRITERS * EACH);
    assert!(conflicts > 0, "concurrent writers never conflicted");
    assert_eq!(events(&node, "cas").await, 1 + (WRITERS * EACH) as u64);
    let expected: u64 = (0..WRITERS as u64).map(|w| (1 + w) * EACH as u64).sum();
    let balance = node
        .query(&RealmId::new("cas").unwrap(), r#"{"balance":"a"}"#)
        .await
        .unwrap();
    assert_eq!(balance, format!(r#"{{"balance":{expected}}}"#));
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_takes_the_key_as_a_header_and_answers_conflicts_with_409() {
    let dir = tempfile::tempdir().unwrap();
    let node = open(dir.path()).await;
    let app = api::router(node.clone());
    let post = |body: serde_json::Value, key: Option<&str>| {
        let mut req = Request::post("/v1/events").header("content-type", "application/json");
        if let Some(k) = key {
            req = req.header("idempotency-key", k);
        }
        req.body(Body::from(body.to_string())).unwrap()
    };
    let event = |extra: serde_json::Value| {
        let mut b = serde_json::json!({
            "realm_id": "web", "realm_type": "ledger", "kind": "tx",
            "payload": {"open": {"account": "a"}}, "source": "web",
        });
        b.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        b
    };
    let read = |resp: axum::response::Response| async move {
        let status = resp.status().as_u16();
        let replayed = resp.headers().contains_key("idempotent-replayed");
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (
            status,
            replayed,
            serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
        )
    };

    let r = app
        .clone()
        .oneshot(post(event(serde_json::json!({})), Some("k-1")))
        .await
        .unwrap();
    let (status, replayed, first) = read(r).await;
    assert_eq!((status, replayed), (200, false), "{first}");
    let r = app
        .clone()
        .oneshot(post(event(serde_json::json!({})), Some("k-1")))
        .await
        .unwrap();
    let (status, replayed, again) = read(r).await;
    assert_eq!((status, replayed), (200, true), "{again}");
    assert_eq!(again["seq"], first["seq"]);
    assert_eq!(again["replayed"], true);

    // The header and the body field must agree.
    let r = app
        .clone()
        .oneshot(post(
            event(serde_json::json!({"idempotency_key": "k-2"})),
            Some("k-3"),
        ))
        .await
        .unwrap();
    let (status, _, body) = read(r).await;
    assert_eq!(status, 400, "{body}");

    let r = app
        .clone()
        .oneshot(post(
            event(serde_json::json!({"expected_seq": 7, "payload": {"open": {"account": "b"}}})),
            None,
        ))
        .await
        .unwrap();
    let (status, _, body) = read(r).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "seq_conflict", "{body}");
    assert_eq!(body["error"]["detail"]["actual_seq"], 1, "{body}");
    node.shutdown().await.unwrap();
}
