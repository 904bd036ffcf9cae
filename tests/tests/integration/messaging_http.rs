//! What operators see of messages between realms over HTTP: a realm's
//! outbox and queues, a chain, dead letters (list, page, retry, drop), the
//! scopes those routes take, the message metrics and the page's snapshot.
//! Requests go straight into the router (no sockets).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use realmhost::node::{ChainView, MessageView, Node, NodeConfig, RealmMessages, api};
use realmhost_plugin_ledger::Tx;
use realmhost_tests::{ledger_event, until_messages as until};
use serde_json::{Value, json};
use tower::ServiceExt;

const ADMIN: &str = "messages-admin-token";
const READ: &str = "messages-read-token";

async fn open(dir: &std::path::Path, tokens: bool) -> Arc<Node> {
    let mut cfg = NodeConfig::with_data_dir(dir);
    cfg.plugins_dir = None;
    cfg.messaging.retry_min_ms = 10;
    cfg.messaging.retry_max_ms = 50;
    if tokens {
        cfg.http.admin_token = Some(ADMIN.into());
        cfg.http.read_token = Some(READ.into());
    }
    Node::open(cfg).await.unwrap()
}

/// One request into the router: status and body (JSON, or the text as a
/// JSON string when it is not JSON).
async fn call(
    router: &axum::Router,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let body = match body {
        Some(v) => {
            req = req.header(header::CONTENT_TYPE, "application/json");
            Body::from(v.to_string())
        }
        None => Body::empty(),
    };
    let resp = router
        .clone()
        .oneshot(req.body(body).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 24)
        .await
        .unwrap();
    let v = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, v)
}

/// A GET with the read token that must answer 200.
async fn read(router: &axum::Router, path: &str) -> Value {
    let (s, v) = call(router, "GET", path, Some(READ), None).await;
    assert_eq!(s, StatusCode::OK, "{path}: {v}");
    v
}

/// The error code of a failed answer, checking the status.
fn code(answer: &(StatusCode, Value), status: StatusCode) -> &str {
    assert_eq!(answer.0, status, "{}", answer.1);
    answer.1["error"]["code"].as_str().unwrap_or("")
}

/// Two banks in different shards (alice at the first with 100), and a
/// counter realm that a transfer cannot reach.
async fn setup(node: &Node) -> (String, String) {
    let (a, b) = realmhost_tests::two_banks(node, 100).await;
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
    (a, b)
}

fn transfer(from: &str, to: &str, to_account: &str, amount: u64, id: &str) -> Tx {
    Tx::TransferOut {
        from_bank: from.into(),
        account: "alice".into(),
        to_bank: to.into(),
        to_account: to_account.into(),
        amount,
        transfer_id: id.into(),
        timeout_ms: Some(60_000),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_follow_messages_and_handle_dead_letters_over_http() {
    realmhost::node::metrics::install();
    let dir = tempfile::tempdir().unwrap();
    let node = open(dir.path(), true).await;
    let router = api::router(node.clone());
    let (a, b) = setup(&node).await;

    // A transfer: the credit is accepted, the timer to bank-a itself waits.
    node.append(ledger_event(&a, &transfer(&a, &b, "bob", 30, "t-1")))
        .await
        .unwrap();
    until(&node, "the reply", |s| s.accepted == 1 && s.replies == 1).await;
    let v = read(
        &router,
        &format!("/v1/admin/realms/messages?id={a}&limit=10"),
    )
    .await;
    let mine: RealmMessages = serde_json::from_value(v).unwrap();
    assert_eq!(mine.realm_id, a);
    assert_eq!(mine.outbox.len(), 1, "{mine:?}");
    let timer = &mine.outbox[0];
    assert_eq!(timer.message_id, format!("{a}@3.1"));
    assert_eq!((timer.target.as_str(), timer.sender.as_str()), (&*a, &*a));
    assert!(
        timer.due_ms > timer.sent_ms,
        "a timer is due later: {timer:?}"
    );
    assert!(mine.queues.iter().any(|q| q.sender == a && q.target == a));
    // Another realm's outbox holds nothing of bank-a's.
    let v = read(&router, &format!("/v1/admin/realms/messages?id={b}")).await;
    assert_eq!(v["outbox"], json!([]), "{v}");

    // The credit's chain: settled, accepted; the timer's chain: pending.
    let v = read(&router, &format!("/v1/admin/messages/chain?id={a}@3.0")).await;
    let chain: ChainView = serde_json::from_value(v).unwrap();
    let credit = chain
        .settled
        .iter()
        .find(|m| m.message_id == format!("{a}@3.0"))
        .expect("the credit is remembered");
    assert!(credit.outcome.is_accepted(), "{chain:?}");
    assert_eq!(credit.target, b);
    let v = read(&router, &format!("/v1/admin/messages/chain?id={a}@3.1")).await;
    let chain: ChainView = serde_json::from_value(v).unwrap();
    assert_eq!(chain.pending.len(), 1, "{chain:?}");
    assert_eq!(chain.pending[0].message_id, format!("{a}@3.1"));
    // A chain nobody sent: empty, not an error.
    let v = read(&router, "/v1/admin/messages/chain?id=nobody@1.0").await;
    assert_eq!((&v["settled"], &v["pending"]), (&json!([]), &json!([])));

    // A credit to a realm of another type is dead-lettered.
    node.append(ledger_event(&a, &transfer(&a, "not-a-bank", "x", 5, "t-5")))
        .await
        .unwrap();
    until(&node, "the dead letter", |s| {
        s.dead_lettered == 1 && s.replies == 2
    })
    .await;
    let v = read(&router, "/v1/admin/messages/dead").await;
    let dead: Vec<MessageView> = serde_json::from_value(v["dead_letters"].clone()).unwrap();
    assert_eq!(dead.len(), 1, "{v}");
    assert!(v["next"].is_null(), "{v}");
    let id = dead[0].message_id.clone();
    // bank-a's events: open, deposit, transfer, its reply, this transfer.
    assert_eq!(id, format!("{a}@5.0"));
    assert_eq!(dead[0].target, "not-a-bank");
    assert!(
        dead[0].dead_reason.as_deref().unwrap().contains("counter"),
        "{dead:?}"
    );
    // Paging: a full page names the next `after`; after the last, nothing.
    let v = read(&router, "/v1/admin/messages/dead?limit=1").await;
    assert_eq!(v["next"], json!(id), "{v}");
    let v = read(
        &router,
        &format!("/v1/admin/messages/dead?after={id}&limit=1000"),
    )
    .await;
    assert_eq!((&v["dead_letters"], &v["next"]), (&json!([]), &Value::Null));

    // Retry: the read token may not; the admin token may, and the message
    // is dead-lettered again.
    let path = "/v1/admin/messages/dead/retry";
    let r = call(&router, "POST", path, Some(READ), Some(json!({ "id": id }))).await;
    assert_eq!(code(&r, StatusCode::UNAUTHORIZED), "bad_token");
    let r = call(
        &router,
        "POST",
        path,
        Some(ADMIN),
        Some(json!({ "id": id })),
    )
    .await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);
    assert_eq!(r.1, json!({ "message_id": id, "retried": true }));
    until(&node, "the second dead letter", |s| s.dead_lettered == 2).await;
    let v = read(&router, "/v1/admin/messages/dead").await;
    assert_eq!(v["dead_letters"][0]["message_id"], json!(id), "{v}");
    assert_eq!(v["dead_letters"].as_array().unwrap().len(), 1, "{v}");

    // Drop it: gone; dropping or retrying it again is refused.
    let r = call(
        &router,
        "POST",
        "/v1/admin/messages/dead/drop",
        Some(ADMIN),
        Some(json!({ "id": id })),
    )
    .await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);
    assert_eq!(r.1, json!({ "message_id": id, "dropped": true }));
    let v = read(&router, "/v1/admin/messages/dead").await;
    assert_eq!(v["dead_letters"], json!([]), "{v}");
    for verb in ["drop", "retry"] {
        let r = call(
            &router,
            "POST",
            &format!("/v1/admin/messages/dead/{verb}"),
            Some(ADMIN),
            Some(json!({ "id": id })),
        )
        .await;
        assert_eq!(
            code(&r, StatusCode::NOT_FOUND),
            "dead_letter_not_found",
            "{verb}"
        );
    }

    // Malformed input gets typed errors.
    for (method, path, body, expected) in [
        (
            "GET",
            "/v1/admin/messages/chain?id=no-position",
            None,
            "invalid_input",
        ),
        (
            "GET",
            "/v1/admin/messages/dead?after=bank-a@x.0",
            None,
            "invalid_input",
        ),
        (
            "GET",
            "/v1/admin/realms/messages?id=",
            None,
            "invalid_realm_id",
        ),
        (
            "GET",
            "/v1/admin/realms/messages?id=bank-a&limit=many",
            None,
            "invalid_query",
        ),
        (
            "GET",
            "/v1/admin/messages/dead?before=x",
            None,
            "invalid_query",
        ),
        (
            "POST",
            "/v1/admin/messages/dead/drop",
            Some(json!({ "id": "bank-a" })),
            "invalid_input",
        ),
        (
            "POST",
            "/v1/admin/messages/dead/retry",
            Some(json!({ "id": id, "force": true })),
            "invalid_json",
        ),
    ] {
        let (s, v) = call(&router, method, path, Some(ADMIN), body).await;
        assert!(s.is_client_error(), "{method} {path}: {s} {v}");
        assert_eq!(v["error"]["code"], expected, "{method} {path}: {v}");
    }

    // The metrics carry the message counters (once the replies are in,
    // they stand still: the two timers wait a minute).
    let m = until(&node, "quiet", |s| {
        s.in_flight == 0 && s.pending == 2 && s.replies == 3
    })
    .await;
    let (s, text) = call(&router, "GET", "/metrics", None, None).await;
    assert_eq!(s, StatusCode::OK);
    let text = text.as_str().unwrap();
    let settled = |o: &str| format!("realmhost_messages_settled_total{{outcome=\"{o}\"}}");
    for (name, value) in [
        ("realmhost_messages_pending".to_owned(), m.pending),
        ("realmhost_messages_in_flight".to_owned(), 0),
        ("realmhost_messages_sent_total".to_owned(), m.sent),
        (settled("accepted"), m.accepted),
        (settled("rejected"), m.rejected),
        (settled("invalid"), m.invalid),
        (settled("expired"), m.expired),
        (settled("dead_lettered"), m.dead_lettered),
        ("realmhost_message_replies_total".to_owned(), m.replies),
        ("realmhost_message_retries_total".to_owned(), m.retries),
        (
            "realmhost_message_redelivered_total".to_owned(),
            m.redelivered,
        ),
        (
            "realmhost_message_latency_ms_total".to_owned(),
            m.latency_ms_sum,
        ),
        (
            "realmhost_message_latency_ms_max".to_owned(),
            m.latency_ms_max,
        ),
    ] {
        let line = format!("{name} {value}");
        assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
    }
    assert_eq!(m.sent, 4, "two transfers, each a credit and a timer: {m:?}");
    assert_eq!((m.accepted, m.dead_lettered), (1, 2), "{m:?}");
    for kind in [
        "# TYPE realmhost_messages_settled_total counter",
        "# TYPE realmhost_messages_sent_total counter",
        "# TYPE realmhost_messages_pending gauge",
        "# TYPE realmhost_message_latency_ms_max gauge",
    ] {
        assert!(text.contains(kind), "no {kind} in:\n{text}");
    }

    // The page's snapshot shows the same figures.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (s, snap) = call(&router, "GET", "/v1/ui/snapshot", None, None).await;
    assert_eq!(s, StatusCode::OK);
    let ui = &snap["messaging"];
    assert_eq!(ui["available"], true, "{ui}");
    assert_eq!(ui["pending"], m.pending, "{ui}");
    assert_eq!(ui["dead_lettered"], m.dead_lettered, "{ui}");
    assert_eq!(
        snap["counters"]["messages_settled"],
        m.accepted + m.rejected + m.invalid + m.expired + m.dead_lettered,
        "{snap}"
    );
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_routes_need_their_scopes() {
    let dir = tempfile::tempdir().unwrap();
    let node = open(dir.path(), true).await;
    let router = api::router(node.clone());
    let listings = [
        "/v1/admin/realms/messages?id=bank-a",
        "/v1/admin/messages/chain?id=bank-a@1.0",
        "/v1/admin/messages/dead",
    ];
    let changes = [
        "/v1/admin/messages/dead/retry",
        "/v1/admin/messages/dead/drop",
    ];
    let body = || Some(json!({ "id": "bank-a@1.0" }));
    for path in listings {
        let r = call(&router, "GET", path, None, None).await;
        assert_eq!(
            code(&r, StatusCode::UNAUTHORIZED),
            "missing_token",
            "{path}"
        );
        let r = call(&router, "GET", path, Some("wrong"), None).await;
        assert_eq!(code(&r, StatusCode::UNAUTHORIZED), "bad_token", "{path}");
        for token in [READ, ADMIN] {
            let (s, v) = call(&router, "GET", path, Some(token), None).await;
            assert_eq!(s, StatusCode::OK, "{path}: {v}");
        }
    }
    for path in changes {
        let r = call(&router, "POST", path, None, body()).await;
        assert_eq!(
            code(&r, StatusCode::UNAUTHORIZED),
            "missing_token",
            "{path}"
        );
        let r = call(&router, "POST", path, Some(READ), body()).await;
        assert_eq!(code(&r, StatusCode::UNAUTHORIZED), "bad_token", "{path}");
        // The admin token passes the guard: no such dead letter.
        let r = call(&router, "POST", path, Some(ADMIN), body()).await;
        assert_eq!(
            code(&r, StatusCode::NOT_FOUND),
            "dead_letter_not_found",
            "{path}"
        );
        let r = call(&router, "GET", path, Some(ADMIN), None).await;
        assert_eq!(
            code(&r, StatusCode::METHOD_NOT_ALLOWED),
            "method_not_allowed"
        );
    }
    node.shutdown().await.unwrap();

    // A node without tokens: every message route is disabled.
    let dir = tempfile::tempdir().unwrap();
    let node = open(dir.path(), false).await;
    let router = api::router(node.clone());
    for path in listings {
        let r = call(&router, "GET", path, Some(READ), None).await;
        assert_eq!(code(&r, StatusCode::FORBIDDEN), "admin_disabled", "{path}");
    }
    for path in changes {
        let r = call(&router, "POST", path, Some(ADMIN), body()).await;
        assert_eq!(code(&r, StatusCode::FORBIDDEN), "admin_disabled", "{path}");
    }
    node.shutdown().await.unwrap();
}
