//! Readiness and the storage scrub route.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::ApiError;
use super::check_token;
use crate::node::Node;

/// `GET /ready`: 200 when the node can serve writes, 503 with the same body
/// listing what is degraded otherwise. `/health` stays plain liveness.
pub(super) async fn ready(State(node): State<Arc<Node>>) -> Response {
    let r = node.readiness();
    let status = if r.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(r)).into_response()
}

/// `POST /v1/admin/storage/check`: scrub the whole database (the logical
/// checks; redb's page check needs the node stopped, see `realmhost storage
/// check`). The scrub reads every table, so it runs on a blocking thread,
/// never on the async workers. 200 with the report either way; `clean`
/// says whether damage was found.
#[tracing::instrument(name = "api.storage_check", skip_all)]
pub(super) async fn storage_check(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_token(&node, &headers)?;
    let storage = node.storage().clone();
    let report = tokio::task::spawn_blocking(move || storage.scrub())
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("the scrub failed: {e}"),
            )
        })?
        .map_err(|e| ApiError::from(crate::node::NodeError::Storage(e)))?;
    let clean = report.is_clean();
    let mut body = serde_json::to_value(&report).unwrap_or_default();
    body["clean"] = clean.into();
    Ok(Json(body).into_response())
}
