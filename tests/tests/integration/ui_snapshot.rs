//! The operator page's routes: `/ui` and its assets with their security
//! headers, the shape of `GET /v1/ui/snapshot`, that both read without a
//! token, and that the admin routes the page calls refuse a request without
//! one. Requests go straight into the router (no sockets).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use realmhost::node::{Node, NodeConfig, api};
use serde_json::{Value, json};
use tower::ServiceExt;

const TOKEN: &str = "ui-admin-token";

async fn node() -> (Arc<Node>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = NodeConfig::with_data_dir(dir.path());
    cfg.plugins_dir = None;
    cfg.http.admin_token = Some(TOKEN.into());
    (Node::open(cfg).await.unwrap(), dir)
}

async fn call(
    router: &axum::Router,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
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
    let (parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 24).await.unwrap();
    (parts.status, parts.headers, bytes.to_vec())
}

async fn snapshot(router: &axum::Router) -> Value {
    let (s, h, b) = call(router, "GET", "/v1/ui/snapshot", None, None).await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    assert_eq!(h[header::CONTENT_TYPE], "application/json");
    assert_eq!(h[header::CACHE_CONTROL], "no-store");
    serde_json::from_slice(&b).unwrap()
}

/// Wait out the snapshot cache, so the next snapshot is built afresh.
async fn past_cache() {
    tokio::time::sleep(Duration::from_millis(600)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_and_its_assets_carry_their_headers() {
    let (node, _dir) = node().await;
    let router = api::router(node.clone());
    for (path, ty) in [
        ("/ui", "text/html; charset=utf-8"),
        ("/ui/", "text/html; charset=utf-8"),
        ("/ui/app.js", "text/javascript; charset=utf-8"),
        ("/ui/app.css", "text/css; charset=utf-8"),
    ] {
        let (s, h, b) = call(&router, "GET", path, None, None).await;
        assert_eq!(s, StatusCode::OK, "{path}");
        assert_eq!(h[header::CONTENT_TYPE], ty, "{path}");
        let csp = h[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(csp.contains("default-src 'none'"), "{csp}");
        assert!(csp.contains("script-src 'self'"), "{csp}");
        assert!(!csp.contains("unsafe"), "{csp}");
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert!(!b.is_empty());
    }
    let (_, _, html) = call(&router, "GET", "/ui", None, None).await;
    let html = String::from_utf8(html).unwrap();
    assert!(html.contains(r#"src="/ui/app.js""#), "{html}");
    assert!(!html.contains("<script>"), "no inline script: {html}");
    let (s, _, _) = call(&router, "POST", "/v1/ui/snapshot", None, None).await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_snapshot_has_every_shard_and_reflects_changes() {
    let (node, _dir) = node().await;
    let router = api::router(node.clone());
    let shards = node.config().sharding.num_shards;

    let empty = snapshot(&router).await;
    assert_eq!(empty["node"]["num_shards"], shards);
    assert_eq!(empty["counters"]["appends"], 0);
    assert_eq!(empty["top_realms"], json!([]));
    assert_eq!(empty["messaging"]["available"], true);
    assert_eq!(empty["messaging"]["pending"], 0);
    assert_eq!(empty["messaging"]["dead_lettered"], 0);
    assert_eq!(empty["counters"]["messages_settled"], 0);
    assert_eq!(empty["node"]["admin_enabled"], true);

    for i in 0..40 {
        let realm = if i % 4 == 0 {
            "hot".to_owned()
        } else {
            format!("r-{i}")
        };
        let (s, _, b) = call(
            &router,
            "POST",
            "/v1/events",
            None,
            Some(
                json!({"realm_id": realm, "realm_type": "counter", "kind": "t",
                        "payload": {"add": 1}, "source": "tester"}),
            ),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    }
    past_cache().await;
    let s = snapshot(&router).await;
    assert_eq!(s["counters"]["appends"], 40);
    for column in [
        "loaded",
        "hits",
        "misses",
        "activity",
        "entropy",
        "reputation",
        "quarantine",
        "alarm",
        "parked",
    ] {
        assert_eq!(
            s["shards"][column].as_array().map(Vec::len),
            Some(shards),
            "column {column}"
        );
    }
    let activity: u64 = s["shards"]["activity"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(activity, 40);
    let loaded: u64 = s["shards"]["loaded"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(loaded, 31, "hot plus 30 others");
    let top = &s["top_realms"][0];
    assert_eq!(top["realm_id"], "hot");
    assert_eq!(top["appends"], 10);
    assert_eq!(top["shard"], node.shard_of("hot"));
    let counter = s["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["realm_type"] == "counter")
        .expect("counter listed");
    let versions = counter["versions"].as_array().unwrap();
    assert!(versions.iter().any(|v| v["active"] == true), "{counter}");
    assert!(counter["versions"][0]["version"].as_str().unwrap().len() == 64);
    assert!(counter["last_change"]["action"].is_string(), "{counter}");

    // A quarantine shows in its shard's column.
    let (st, _, b) = call(
        &router,
        "POST",
        "/v1/admin/shards/5/quarantine",
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    past_cache().await;
    let s = snapshot(&router).await;
    assert_eq!(s["shards"]["quarantine"][5], "Manual");
    assert_eq!(s["shards"]["quarantine"][4], Value::Null);
    assert_eq!(s["node"]["quarantined_shards"], 1);
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_actions_need_the_admin_token() {
    let (node, _dir) = node().await;
    let router = api::router(node.clone());
    for (path, body) in [
        ("/v1/admin/shards/1/quarantine", None),
        ("/v1/admin/shards/1/release", None),
        (
            "/v1/admin/plugins/counter/swap",
            Some(json!({"version": "0000"})),
        ),
        ("/v1/admin/plugins/counter/rollback", Some(json!({}))),
    ] {
        for token in [None, Some("wrong")] {
            let (s, _, b) = call(&router, "POST", path, token, body.clone()).await;
            assert_eq!(s, StatusCode::UNAUTHORIZED, "{path} {token:?}");
            let e: Value = serde_json::from_slice(&b).unwrap();
            let code = if token.is_none() {
                "missing_token"
            } else {
                "bad_token"
            };
            assert_eq!(e["error"]["code"], code, "{path}");
        }
    }
    assert!(!node.monitor().is_quarantined(1));
    node.shutdown().await.unwrap();
}
