//! The HTTP surface under random input: any method, path, headers and body
//! get a typed answer — JSON `{"error":{"code","message"}}` with a 4xx or a
//! 503 — and never a panic, a plain-text error or a 500. Requests go
//! straight into the router (no sockets), so many cases run quickly.
//!
//! `PROPTEST_RNG_SEED=<n>` replays a run, `PROPTEST_CASES=<n>` changes the
//! number of cases (256 by default); a failing case is printed and its seed
//! persisted the way proptest does.

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::{Method, Request};
use proptest::prelude::*;
use realmhost::node::{Node, NodeConfig, api};
use tower::ServiceExt;

const TOKEN: &str = "fuzz-admin-token";

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

/// One node (and a runtime to drive it) for every case.
fn fixture() -> &'static (tokio::runtime::Runtime, Arc<Node>, tempfile::TempDir) {
    static F: OnceLock<(tokio::runtime::Runtime, Arc<Node>, tempfile::TempDir)> = OnceLock::new();
    F.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = NodeConfig::with_data_dir(dir.path());
        cfg.plugins_dir = None;
        cfg.http.admin_token = Some(TOKEN.into());
        let node = rt.block_on(Node::open(cfg)).unwrap();
        // Something to find: a realm of each example type.
        rt.block_on(async {
            for (id, ty, json) in [
                ("c-1", "counter", r#"{"add":1}"#),
                ("l-1", "ledger", r#"{"open":{"account":"a"}}"#),
            ] {
                node.append_json(
                    realmhost::RealmId::new(id).unwrap(),
                    ty,
                    "t",
                    json,
                    "fuzz",
                    None,
                )
                .await
                .unwrap();
            }
        });
        (rt, node, dir)
    })
}

fn method() -> impl Strategy<Value = Method> {
    prop_oneof![
        Just(Method::GET),
        Just(Method::POST),
        Just(Method::PUT),
        Just(Method::DELETE),
        Just(Method::PATCH),
        Just(Method::OPTIONS),
    ]
}

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("c-1".to_owned()),
        Just("ledger".to_owned()),
        Just("counter".to_owned()),
        Just("3.0.0".to_owned()),
        Just("0".to_owned()),
        Just("99999999999999999999".to_owned()),
        Just("%ff%00".to_owned()),
        "[a-z0-9._-]{0,12}",
        "[ -~]{0,8}".prop_map(|s| s.replace(['/', '?', '#', ' '], "x")),
    ]
}

fn path() -> impl Strategy<Value = String> {
    let known = prop_oneof![
        Just("/health".to_owned()),
        Just("/v1/events".to_owned()),
        Just("/v1/realm".to_owned()),
        Just("/v1/realm/events".to_owned()),
        Just("/v1/query".to_owned()),
        Just("/v1/verify".to_owned()),
        Just("/v1/realms".to_owned()),
        Just("/v1/stats".to_owned()),
        Just("/v1/plugins".to_owned()),
        Just("/v1/plugins/history".to_owned()),
        Just("/v1/ui/snapshot".to_owned()),
        Just("/ui".to_owned()),
        Just("/ui/app.js".to_owned()),
        Just("/v1/admin/evict".to_owned()),
        Just("/v1/admin/plugins".to_owned()),
        Just("/v1/admin/realms/parked".to_owned()),
        Just("/v1/admin/realms/release".to_owned()),
        Just("/v1/admin/realms/messages".to_owned()),
        Just("/v1/admin/messages/chain".to_owned()),
        Just("/v1/admin/messages/dead".to_owned()),
        Just("/v1/admin/messages/dead/retry".to_owned()),
        Just("/v1/admin/messages/dead/drop".to_owned()),
        segment().prop_map(|s| format!("/v1/shards/{s}")),
        segment().prop_map(|s| format!("/v1/admin/shards/{s}/quarantine")),
        segment().prop_map(|s| format!("/v1/plugins/{s}/shadow")),
        segment().prop_map(|s| format!("/v1/admin/plugins/{s}/swap")),
        segment().prop_map(|s| format!("/v1/admin/plugins/{s}/rollback")),
        (segment(), segment()).prop_map(|(a, b)| format!("/v1/admin/plugins/{a}/{b}")),
        proptest::collection::vec(segment(), 0..5).prop_map(|v| format!("/{}", v.join("/"))),
    ];
    let query = prop_oneof![
        Just(String::new()),
        Just("?id=c-1".to_owned()),
        Just("?id=l-1&after=0&limit=5".to_owned()),
        Just("?id=l-1@1.0&after=l-1@0.0&limit=5".to_owned()),
        Just("?type=counter&limit=3".to_owned()),
        Just("?activate=true&force=maybe".to_owned()),
        segment().prop_map(|s| format!("?id={s}")),
        "[ -~]{0,16}".prop_map(|s| format!("?{}", s.replace(['#', ' '], "x"))),
    ];
    (known, query).prop_map(|(p, q)| format!("{p}{q}"))
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(Vec::new()),
        Just(
            br#"{"realm_id":"c-1","realm_type":"counter","payload":{"add":2},"source":"fuzz"}"#
                .to_vec()
        ),
        Just(br#"{"id":"l-1","request":"{\"balance\":\"a\"}"}"#.to_vec()),
        Just(br#"{"version":"3.0.0","force":true}"#.to_vec()),
        Just(br#"{"all":true}"#.to_vec()),
        Just(br#"{"id":"l-1@1.0"}"#.to_vec()),
        Just(b"\0asm\x0d\0\x01\0".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..512),
        "[ -~]{0,256}".prop_map(String::into_bytes),
    ]
}

fn content_type() -> impl Strategy<Value = Option<&'static str>> {
    prop_oneof![
        Just(None),
        Just(Some("application/json")),
        Just(Some("application/wasm")),
        Just(Some("text/plain")),
        Just(Some("application/json; charset=utf-8")),
    ]
}

fn token() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        Just(Some(format!("Bearer {TOKEN}"))),
        Just(Some("Bearer wrong".to_owned())),
        Just(Some("Basic abc".to_owned())),
        "[ -~]{0,24}".prop_map(Some),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        max_shrink_iters: 500,
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_request_gets_a_typed_answer(
        method in method(),
        path in path(),
        body in body(),
        ct in content_type(),
        auth in token(),
    ) {
        let (rt, node, _) = fixture();
        let mut req = Request::builder().method(method.clone()).uri(path.as_str());
        if let Some(ct) = ct {
            req = req.header("content-type", ct);
        }
        if let Some(a) = &auth {
            req = req.header("authorization", a.as_str());
        }
        let Ok(req) = req.body(Body::from(body)) else {
            // Not a valid HTTP request at all (the URI): nothing to send.
            return Ok(());
        };
        let resp = rt
            .block_on(api::router(node.clone()).oneshot(req))
            .expect("the router never fails");
        let status = resp.status();
        let bytes = rt
            .block_on(axum::body::to_bytes(resp.into_body(), 1 << 22))
            .expect("readable body");
        prop_assert!(
            status.as_u16() != 500,
            "{method} {path}: 500 {}",
            String::from_utf8_lossy(&bytes)
        );
        // Metrics are text, the operator page HTML, CSS and JavaScript.
        if (path.starts_with("/metrics") || path.starts_with("/ui")) && status.is_success() {
            return Ok(());
        }
        let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
            TestCaseError::fail(format!(
                "{method} {path}: {status} body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&bytes)
            ))
        })?;
        if !status.is_success() {
            prop_assert!(
                v["error"]["code"].is_string() && v["error"]["message"].is_string(),
                "{method} {path}: {status} untyped error {v}"
            );
            prop_assert!(
                status.is_client_error() || status.as_u16() == 503,
                "{method} {path}: {status} {v}"
            );
        }
    }
}

async fn node_with(f: impl FnOnce(&mut NodeConfig)) -> (Arc<Node>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = NodeConfig::with_data_dir(dir.path());
    cfg.plugins_dir = None;
    cfg.http.admin_token = Some(TOKEN.into());
    f(&mut cfg);
    (Node::open(cfg).await.unwrap(), dir)
}

fn append_req(source: &str, n: u64) -> Request<Body> {
    Request::post("/v1/events")
        .header("content-type", "application/json")
        .body(Body::from(format!(
            r#"{{"realm_id":"r-{n}","realm_type":"counter","payload":{{"add":1}},"source":"{source}"}}"#
        )))
        .unwrap()
}

/// Past its burst a client gets 429 with Retry-After; so does an event
/// source, whatever address it comes from; the admin is never limited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_and_sources_are_rate_limited() {
    let (node, _dir) = node_with(|c| {
        c.http.rate_limit.per_client_per_sec = 1;
        c.http.rate_limit.per_client_burst = 5;
        c.http.rate_limit.per_source_per_sec = 1;
        c.http.rate_limit.per_source_burst = 2;
    })
    .await;
    let app = api::router(node.clone());
    let mut codes = Vec::new();
    for n in 0..4 {
        let resp = app.clone().oneshot(append_req("spammer", n)).await.unwrap();
        codes.push(resp.status().as_u16());
        if resp.status() == 429 {
            assert!(resp.headers().contains_key("retry-after"));
        }
    }
    assert_eq!(codes, vec![200, 200, 429, 429], "per source");
    // The client's own bucket (5) runs out too, on any route.
    let mut last = 0;
    for _ in 0..4 {
        let resp = app
            .clone()
            .oneshot(Request::get("/v1/stats").body(Body::empty()).unwrap())
            .await
            .unwrap();
        last = resp.status().as_u16();
    }
    assert_eq!(last, 429, "per client");
    // Authenticated routes are not limited.
    let resp = app
        .clone()
        .oneshot(
            Request::get("/v1/admin/realms/parked")
                .header("authorization", format!("Bearer {TOKEN}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    node.shutdown().await.unwrap();
}

/// Bodies being received count against one budget: while one request holds
/// it, the next one is refused (503 overloaded) before its body is read; an
/// admin route refuses an anonymous upload without reading it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffered_bodies_share_one_budget_and_uploads_need_a_token_first() {
    let (node, _dir) = node_with(|c| {
        c.http.max_body_bytes = 4096;
        c.http.max_buffered_body_bytes = 4096;
        c.limits.max_payload_bytes = 1024;
    })
    .await;
    let app = api::router(node.clone());
    // A request whose body never finishes holds its reservation.
    let (slow, tx, reading) = stalled_append(4000);
    let held = tokio::spawn(app.clone().oneshot(slow));
    // Wait until the handler reads the first request's body: it holds its
    // reservation from then on.
    reading.await.unwrap();
    let resp = app.clone().oneshot(append_req("other", 1)).await.unwrap();
    assert_eq!(
        resp.status(),
        503,
        "a second body was buffered beyond the budget"
    );
    assert_eq!(code_of(resp).await.1, "overloaded");
    drop(tx);
    let _ = held.await.unwrap();
    // The budget is free again.
    let resp = app.clone().oneshot(append_req("other", 2)).await.unwrap();
    assert_eq!(resp.status(), 200);
    // An anonymous upload is refused without its body being read: the body
    // stream is never polled.
    let (_keep, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    let upload = Request::post("/v1/admin/plugins")
        .header("content-length", "30000000")
        .body(Body::from_stream(tokio_stream_from(rx, None)))
        .unwrap();
    let resp = tokio::time::timeout(std::time::Duration::from_secs(10), app.oneshot(upload))
        .await
        .expect("answered without waiting for the body")
        .unwrap();
    assert_eq!(resp.status(), 401);
    node.shutdown().await.unwrap();
}

/// The status and the error code of an answer.
async fn code_of(resp: axum::response::Response) -> (u16, String) {
    let status = resp.status().as_u16();
    let v: serde_json::Value = serde_json::from_slice(
        &axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap(),
    )
    .unwrap();
    (status, v["error"]["code"].as_str().unwrap_or("").to_owned())
}

/// The sending end of a body that arrives only when told.
type BodySender = tokio::sync::mpsc::Sender<Result<Vec<u8>, std::io::Error>>;

/// An append whose body (of `len` declared bytes) never arrives until the
/// returned sender is dropped; the receiver fires when the handler first
/// reads the body.
fn stalled_append(
    len: usize,
) -> (
    Request<Body>,
    BodySender,
    tokio::sync::oneshot::Receiver<()>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    let (reading_tx, reading) = tokio::sync::oneshot::channel::<()>();
    let req = Request::post("/v1/events")
        .header("content-type", "application/json")
        .header("content-length", len.to_string())
        .body(Body::from_stream(tokio_stream_from(rx, Some(reading_tx))))
        .unwrap();
    (req, tx, reading)
}

/// A stream over a channel, for bodies that arrive slowly (or never);
/// `first_poll` is signalled when something first reads it.
fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>,
    mut first_poll: Option<tokio::sync::oneshot::Sender<()>>,
) -> impl futures::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures::stream::poll_fn(move |cx| {
        if let Some(s) = first_poll.take() {
            let _ = s.send(());
        }
        rx.poll_recv(cx)
    })
}

/// A request that never finishes its body holds its place: past
/// `max_concurrent_requests` the next one is refused at once (503
/// overloaded), and a public request that takes longer than
/// `request_timeout_secs` is answered 503 timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_flight_and_their_time_are_bounded() {
    let (node, _dir) = node_with(|c| {
        c.http.max_concurrent_requests = 1;
        c.http.request_timeout_secs = 1;
    })
    .await;
    let app = api::router(node.clone());
    let (slow, tx, reading) = stalled_append(100);
    let t = std::time::Instant::now();
    let held = tokio::spawn(app.clone().oneshot(slow));
    reading.await.unwrap();
    let resp = app
        .clone()
        .oneshot(Request::get("/v1/stats").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    assert_eq!(code_of(resp).await.1, "overloaded");
    // The stalled request is cut off by the time limit, typed.
    let resp = held.await.unwrap().unwrap();
    assert!(t.elapsed() >= std::time::Duration::from_secs(1));
    assert_eq!(resp.status(), 503);
    assert_eq!(code_of(resp).await.1, "timeout");
    drop(tx);
    // Free again.
    let resp = app
        .oneshot(Request::get("/v1/stats").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    node.shutdown().await.unwrap();
}
