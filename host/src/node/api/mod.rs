//! The HTTP API (axum). JSON in, JSON out; every error is a JSON body
//! `{"error": {"code": "...", "message": "..."}}` with a fitting status.
//!
//! Realm ids may contain `/`, so they travel in query strings and bodies, not
//! in paths.
//!
//! | method | path | what |
//! |---|---|---|
//! | GET | `/health` | liveness |
//! | GET | `/ready` | readiness: 200, or 503 listing what is degraded (storage full or failing, preload) |
//! | POST | `/v1/admin/storage/check` | scrub the database, report damage (token) |
//! | POST | `/v1/events` | append an event (`payload` as JSON, or `payload_hex`) |
//! | GET | `/v1/realm?id=` | a realm's view (seq, version, state hash) |
//! | GET | `/v1/realm/events?id=&after=&limit=` | a realm's events, payloads decoded by its plugin, paged (≤ 1000) |
//! | POST | `/v1/query` | run the realm type's query |
//! | GET | `/v1/verify?id=` | rebuild from the log and compare by hash |
//! | GET | `/v1/realms?type=&after=&limit=` | inventory, paginated |
//! | GET | `/v1/stats` | node, store and monitor statistics |
//! | GET | `/v1/shards/{n}` | analysis of one shard |
//! | GET | `/v1/plugins` | loaded plugin versions |
//! | POST | `/v1/admin/shards/{n}/quarantine` · `/release` | shard admin (token) |
//! | POST | `/v1/admin/evict` | evict (`{"all":true}` for everything) (token); 409 `eviction_disabled` with lazy loading off |
//! | GET | `/v1/plugins/history` | loads, activations, swaps, rollbacks, unloads |
//! | POST | `/v1/admin/plugins?activate=&force=` | upload a component; stored, so it survives restarts (token) |
//! | POST | `/v1/plugins/{type}/shadow` | shadow-replay a candidate version (read-only) |
//! | POST | `/v1/admin/plugins/{type}/swap` · `/rollback` | promote / roll back, each after a shadow replay unless `force` (token) |
//! | DELETE | `/v1/admin/plugins/{type}/{version}?force=` | unload a version that serves nothing (token) |
//! | GET | `/v1/admin/realms/parked` · `/unservable` | realms parked after faults / that the active version cannot rebuild |
//! | GET · POST | `/v1/admin/jobs` | background jobs (verify, shadow, preload) / start one: `{"kind":"verify","realm_id":…}` or `{"kind":"shadow","realm_type":…,"version":…,"sample":…}` → 202 (read scope) |
//! | GET · DELETE | `/v1/admin/jobs/{id}` | a job's state, progress and result / cancel it (read scope) |
//! | GET | `/v1/admin/realms/messages?id=&limit=` | a realm's undelivered messages and its queues (read scope) |
//! | GET | `/v1/admin/messages/chain?id=` | a chain: settled messages still remembered, pending ones (read scope) |
//! | GET | `/v1/admin/messages/dead?after=&limit=` | dead letters, paged (≤ 1000) (read scope) |
//! | POST | `/v1/admin/messages/dead/retry` · `/drop` | `{"id":…}`: deliver a dead letter again / delete it (token) |
//! | GET | `/metrics` | Prometheus metrics |
//! | GET | `/ui` (`/ui/app.js`, `/ui/app.css`) | the operator page: shard heat map, rates, plugins, busiest realms; actions take the admin token |
//! | GET | `/v1/ui/snapshot` | the page's data in one compact body: per-shard columns, counters for rates, plugin lifecycle, busiest realms (`O(shards)`, cached 0.5 s) |
//!
//! Versions are named by semantic version (when one build carries it), full
//! hash, or an unambiguous hash prefix (at least 4 hex characters).

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;

mod error;
pub mod guard;
mod health;
mod jobs;
mod messages;
mod plugins;
pub mod ui;

pub use error::ApiError;

use super::{Node, NodeError};
use crate::realm::{NewEvent, RealmId};

pub(super) type ApiResult<T> = Result<Json<T>, ApiError>;

pub(super) fn realm_id(s: &str) -> Result<RealmId, ApiError> {
    RealmId::new(s).map_err(|e| ApiError::from(NodeError::from(e)))
}

/// Body of `POST /v1/events`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AppendBody {
    /// Target realm.
    pub realm_id: String,
    /// Realm type.
    pub realm_type: String,
    /// Event kind.
    #[serde(default)]
    pub kind: String,
    /// The event as JSON (the plugin encodes it).
    #[serde(default)]
    pub payload: Option<serde_json::Value>,
    /// The event as hex-encoded payload bytes (already encoded).
    #[serde(default)]
    pub payload_hex: Option<String>,
    /// The entity that caused the event.
    pub source: String,
    /// The realm an imported event came from. Set by the host for delivered
    /// messages; a client may set it only as an operator importing a log
    /// (with the admin token): the monitor never counts it as a crossing.
    #[serde(default)]
    pub source_realm: Option<String>,
    /// Makes retries safe (also accepted as the `Idempotency-Key` header):
    /// a retry with the same key returns the original receipt and appends
    /// nothing (the response then carries `Idempotent-Replayed: true`).
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// Append only if the realm is at this seq (0: no events yet); else 409
    /// `seq_conflict`.
    #[serde(default)]
    pub expected_seq: Option<u64>,
}

async fn append(
    State(node): State<Arc<Node>>,
    Extension(ui): Extension<Arc<ui::UiState>>,
    headers: HeaderMap,
    body: Result<Json<AppendBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(b) = body?;
    node.http_guard().check_source(&b.source)?;
    let t = Instant::now();
    let id = realm_id(&b.realm_id)?;
    let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, "invalid_input", m);
    // Who sent an event across realms is the host's to say: a client's
    // claim is refused, unless it is an operator's import.
    if b.source_realm.is_some()
        && node
            .http_guard()
            .authorize(guard::Scope::Admin, &headers)
            .is_err()
    {
        return Err(bad(
            "source_realm is set by the host for messages between realms; only an import with the admin token may set it".into(),
        ));
    }
    let source_realm = b.source_realm.as_deref().map(realm_id).transpose()?;
    let header_key = headers
        .get("idempotency-key")
        .map(|v| v.to_str().map(str::to_owned))
        .transpose()
        .map_err(|_| bad("Idempotency-Key header is not visible ASCII".into()))?;
    let idempotency_key = match (header_key, b.idempotency_key) {
        (Some(h), Some(k)) if h != k => {
            return Err(bad(
                "the Idempotency-Key header and `idempotency_key` differ".into(),
            ));
        }
        (h, k) => h.or(k),
    };
    let options = super::AppendOptions {
        idempotency_key,
        expected_seq: b.expected_seq,
    };
    let payload = match (b.payload, b.payload_hex) {
        (Some(json), None) => {
            node.encode_json(&id, &b.realm_type, &b.kind, &json.to_string())
                .await?
        }
        (None, Some(hex)) => {
            hex::decode(hex.trim()).map_err(|e| bad(format!("payload_hex: {e}")))?
        }
        _ => {
            return Err(bad("give exactly one of `payload` and `payload_hex`".into()));
        }
    };
    let r = node
        .append_with(
            NewEvent {
                realm_id: id,
                realm_type: b.realm_type,
                kind: b.kind,
                payload,
                source: b.source,
                source_realm,
            },
            options,
        )
        .await;
    metrics::histogram!("realmhost_append_seconds").record(t.elapsed().as_secs_f64());
    match &r {
        Ok(_) => metrics::counter!("realmhost_appends_total", "outcome" => "ok").increment(1),
        Err(NodeError::Rejected { .. }) => {
            metrics::counter!("realmhost_appends_total", "outcome" => "rejected").increment(1)
        }
        Err(_) => metrics::counter!("realmhost_appends_total", "outcome" => "error").increment(1),
    }
    let receipt = r?;
    let replayed = receipt.replayed;
    if !replayed {
        ui.top.record(&receipt.realm_id, receipt.shard);
    }
    let mut response = Json(receipt).into_response();
    if replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

#[derive(Debug, Deserialize)]
struct IdQuery {
    id: String,
}

async fn get_realm(
    State(node): State<Arc<Node>>,
    q: Result<Query<IdQuery>, QueryRejection>,
) -> ApiResult<serde_json::Value> {
    let Query(q) = q?;
    let id = realm_id(&q.id)?;
    let (view, _) = node.get(&id).await?;
    let v = serde_json::to_value(view)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    Ok(Json(v))
}

/// Body of `POST /v1/query`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct QueryBody {
    /// The realm.
    pub realm_id: String,
    /// The request (JSON value; passed to the plugin as text).
    #[serde(default)]
    pub request: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    id: String,
    #[serde(default)]
    after: u64,
    #[serde(default = "default_events_limit")]
    limit: usize,
}

fn default_events_limit() -> usize {
    100
}

async fn realm_events(
    State(node): State<Arc<Node>>,
    q: Result<Query<EventsQuery>, QueryRejection>,
) -> ApiResult<super::EventsPage> {
    let Query(q) = q?;
    let id = realm_id(&q.id)?;
    Ok(Json(node.events(&id, q.after, q.limit).await?))
}

async fn query(
    State(node): State<Arc<Node>>,
    body: Result<Json<QueryBody>, JsonRejection>,
) -> ApiResult<serde_json::Value> {
    let Json(b) = body?;
    let id = realm_id(&b.realm_id)?;
    let request = b.request.map(|r| r.to_string()).unwrap_or_default();
    let answer = node.query(&id, &request).await?;
    let value: serde_json::Value =
        serde_json::from_str(&answer).unwrap_or(serde_json::Value::String(answer));
    Ok(Json(json!({ "realm_id": id.as_str(), "response": value })))
}

async fn verify(
    State(node): State<Arc<Node>>,
    q: Result<Query<IdQuery>, QueryRejection>,
) -> ApiResult<super::VerifyReport> {
    let Query(q) = q?;
    Ok(Json(node.verify(&realm_id(&q.id)?).await?))
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    #[serde(rename = "type")]
    realm_type: String,
    after: Option<String>,
    limit: Option<usize>,
}

async fn list_realms(
    State(node): State<Arc<Node>>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<serde_json::Value> {
    let Query(q) = q?;
    let after = q.after.as_deref().map(realm_id).transpose()?;
    let limit = q.limit.unwrap_or(100).clamp(1, 10_000);
    let page = node
        .list_realms(&q.realm_type, after.as_ref(), limit)
        .await?;
    let next = (page.len() == limit)
        .then(|| page.last().map(|r| r.to_string()))
        .flatten();
    let realms: Vec<_> = page
        .iter()
        .map(|r| json!({ "realm_id": r.as_str(), "shard": node.shard_of(r.as_str()) }))
        .collect();
    Ok(Json(
        json!({ "realm_type": q.realm_type, "realms": realms, "next": next }),
    ))
}

async fn stats(State(node): State<Arc<Node>>) -> ApiResult<super::NodeStats> {
    Ok(Json(node.stats()))
}

async fn shard(
    State(node): State<Arc<Node>>,
    n: Result<Path<usize>, PathRejection>,
) -> ApiResult<serde_json::Value> {
    let Path(n) = n?;
    let analysis = node.analyze(n)?;
    let stats = node.store().stats();
    let row = stats.shards.get(n).cloned();
    Ok(Json(json!({ "analysis": analysis, "store": row })))
}

async fn quarantine(
    State(node): State<Arc<Node>>,
    n: Result<Path<usize>, PathRejection>,
) -> ApiResult<serde_json::Value> {
    let Path(n) = n?;
    let changed = node.quarantine(n).await?;
    Ok(Json(
        json!({ "shard": n, "quarantined": true, "changed": changed }),
    ))
}

async fn release(
    State(node): State<Arc<Node>>,
    n: Result<Path<usize>, PathRejection>,
) -> ApiResult<serde_json::Value> {
    let Path(n) = n?;
    let changed = node.release(n).await?;
    Ok(Json(
        json!({ "shard": n, "quarantined": false, "changed": changed }),
    ))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct EvictBody {
    #[serde(default)]
    all: bool,
}

async fn evict(
    State(node): State<Arc<Node>>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<serde_json::Value> {
    let body = body?;
    let b: EvictBody = if body.is_empty() {
        EvictBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", e.to_string()))?
    };
    let evicted = node.evict(b.all).await?;
    Ok(Json(json!({ "evicted": evicted })))
}

async fn parked_realms(State(node): State<Arc<Node>>) -> ApiResult<serde_json::Value> {
    Ok(Json(json!({ "parked": node.parked_realms() })))
}

async fn release_realm(
    State(node): State<Arc<Node>>,
    q: Result<Query<IdQuery>, QueryRejection>,
) -> ApiResult<serde_json::Value> {
    let Query(q) = q?;
    let id = realm_id(&q.id)?;
    Ok(Json(
        json!({ "realm_id": id.as_str(), "released": node.release_realm(&id) }),
    ))
}

async fn metrics_route(State(node): State<Arc<Node>>) -> Response {
    match super::metrics::render(&node) {
        Some(text) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4",
            )],
            text,
        )
            .into_response(),
        None => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics_unavailable",
            "no metrics recorder is installed",
        )
        .into_response(),
    }
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

/// `GET /v1/cluster`: the cluster's nodes and shards (404 outside a
/// cluster).
#[cfg(feature = "cluster")]
async fn cluster_status(State(node): State<Arc<Node>>) -> ApiResult<crate::cluster::ClusterStatus> {
    let Some(c) = node.cluster_handle() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_clustered",
            "this node is not part of a cluster",
        ));
    };
    c.status().await.map(Json).map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "cluster_unavailable",
            e.to_string(),
        )
    })
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    )
}

/// The API router over a node. Serve it with
/// `into_make_service_with_connect_info::<SocketAddr>()` so the per-client
/// limits see client addresses (without it, all clients share one bucket).
pub fn router(node: Arc<Node>) -> Router {
    use axum::middleware::from_fn_with_state as layer;
    let body_limit = node.config().http.max_body_bytes;
    let plugin_limit = node.config().http.max_plugin_bytes;
    // The routes about one realm: in a cluster, served by its shard's owner
    // (forwarded there from any other node).
    let realm = Router::new()
        .route("/v1/events", post(append))
        .route("/v1/realm", get(get_realm))
        .route("/v1/realm/events", get(realm_events))
        .route("/v1/query", post(query));
    #[cfg(feature = "cluster")]
    let realm = realm
        .route_layer(layer(node.clone(), crate::cluster::http::forward))
        .route("/v1/cluster", get(cluster_status));
    let public = Router::new()
        .merge(realm)
        .route("/health", get(|| async { Json(json!({ "status": "ok" })) }))
        .route("/ready", get(health::ready))
        .route("/v1/realms", get(list_realms))
        .route("/v1/stats", get(stats))
        .route("/v1/shards/{n}", get(shard))
        .route("/v1/plugins", get(plugins::plugins))
        .route("/v1/plugins/history", get(plugins::history))
        .route("/metrics", get(metrics_route))
        .merge(ui::routes())
        .route_layer(layer(node.clone(), guard::public))
        .layer(DefaultBodyLimit::max(body_limit));
    let read_realm = Router::new()
        .route("/v1/verify", get(verify))
        .route("/v1/admin/realms/messages", get(messages::realm));
    #[cfg(feature = "cluster")]
    let read_realm = read_realm.route_layer(layer(node.clone(), crate::cluster::http::forward));
    let read = Router::new()
        .merge(read_realm)
        .route("/v1/plugins/{realm_type}/shadow", post(plugins::shadow))
        .route("/v1/admin/realms/parked", get(parked_realms))
        .route("/v1/admin/realms/unservable", get(plugins::unservable))
        .route("/v1/admin/jobs", get(jobs::list).post(jobs::start))
        .route("/v1/admin/jobs/{id}", get(jobs::show).delete(jobs::cancel))
        .route("/v1/admin/messages/chain", get(messages::chain))
        .route("/v1/admin/messages/dead", get(messages::dead))
        .route_layer(layer(node.clone(), guard::read_scope))
        .layer(DefaultBodyLimit::max(body_limit));
    let admin = Router::new()
        .route("/v1/admin/shards/{n}/quarantine", post(quarantine))
        .route("/v1/admin/shards/{n}/release", post(release))
        .route("/v1/admin/evict", post(evict))
        .route("/v1/admin/realms/release", post(release_realm))
        .route("/v1/admin/storage/check", post(health::storage_check))
        .route("/v1/admin/messages/dead/retry", post(messages::retry_dead))
        .route("/v1/admin/messages/dead/drop", post(messages::drop_dead))
        .route("/v1/admin/plugins/{realm_type}/swap", post(plugins::swap))
        .route(
            "/v1/admin/plugins/{realm_type}/rollback",
            post(plugins::rollback),
        )
        .route(
            "/v1/admin/plugins/{realm_type}/{version}",
            axum::routing::delete(plugins::unload),
        )
        .layer(DefaultBodyLimit::max(body_limit))
        .merge(
            Router::new()
                .route("/v1/admin/plugins", post(plugins::upload))
                .layer(DefaultBodyLimit::max(plugin_limit)),
        )
        .route_layer(layer(node.clone(), guard::admin_scope));
    Router::new()
        .merge(public)
        .merge(read)
        .merge(admin)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(layer(node.clone(), guard::concurrency))
        .layer(Extension(Arc::new(ui::UiState::default())))
        .with_state(node)
}
