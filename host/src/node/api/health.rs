//! Readiness and the storage scrub route.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::ApiError;
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
pub(super) async fn storage_check(State(node): State<Arc<Node>>) -> Result<Response, ApiError> {
    // The admin scope's layer checked the token before this runs.
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::response::IntoResponse;

    use super::ApiError;
    use crate::node::NodeError;
    use crate::realm::RealmId;
    use crate::storage::StorageError;
    use crate::store::LoadError;

    async fn answer(e: NodeError) -> (u16, Option<String>, serde_json::Value) {
        let resp = ApiError::from(e).into_response();
        let status = resp.status().as_u16();
        let retry = resp
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, retry, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn storage_failures_have_typed_answers() {
        let (s, retry, b) = answer(NodeError::Storage(StorageError::NoSpace("full".into()))).await;
        assert_eq!(
            (s, b["error"]["code"].as_str()),
            (507, Some("storage_full"))
        );
        assert!(retry.is_some());
        let (s, retry, b) = answer(NodeError::Storage(StorageError::Unavailable(
            "reopening".into(),
        )))
        .await;
        assert_eq!(
            (s, b["error"]["code"].as_str()),
            (503, Some("storage_unavailable"))
        );
        assert!(retry.is_some());
        let corrupt = || StorageError::RealmCorrupt {
            realm: RealmId::new("bank-7").unwrap(),
            reason: "log entry: bad".into(),
        };
        let (s, retry, b) = answer(NodeError::Storage(corrupt())).await;
        assert_eq!(
            (s, b["error"]["code"].as_str()),
            (500, Some("storage_corrupt"))
        );
        assert_eq!(b["error"]["detail"]["realm_id"], "bank-7");
        assert!(retry.is_none());
        // Damage met by a lazy load comes wrapped in the loader's error.
        let load = LoadError::Loader {
            realm: "bank-7".into(),
            source: Arc::new(NodeError::Storage(corrupt())),
        };
        let (s, _, b) = answer(NodeError::Load(load)).await;
        assert_eq!(
            (s, b["error"]["code"].as_str()),
            (500, Some("storage_corrupt"))
        );
        assert_eq!(b["error"]["detail"]["realm_id"], "bank-7");
    }
}
