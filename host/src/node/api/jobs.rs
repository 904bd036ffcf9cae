//! Job routes: start a verify or shadow replay in the background, follow
//! its progress, cancel it (read scope: the work reads and replays, it
//! changes nothing).

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::json;

use super::{ApiError, ApiResult, realm_id};
use crate::node::{JobView, Node, NodeError};
use crate::runtime::VersionSelector;

/// Body of `POST /v1/admin/jobs`.
#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub(super) enum StartBody {
    /// Verify one realm.
    Verify {
        /// The realm.
        realm_id: String,
    },
    /// Shadow-replay a candidate version.
    Shadow {
        /// The realm type.
        realm_type: String,
        /// Semantic version, hash or hash prefix.
        version: String,
        /// Realms to replay (default: all).
        #[serde(default)]
        sample: Option<usize>,
    },
}

fn not_found(id: u64) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "job_not_found",
        format!("no job {id} is kept (finished jobs are forgotten after a while)"),
    )
}

pub(super) async fn list(State(node): State<Arc<Node>>) -> ApiResult<serde_json::Value> {
    Ok(Json(json!({ "jobs": node.jobs() })))
}

pub(super) async fn start(
    State(node): State<Arc<Node>>,
    body: Result<Json<StartBody>, JsonRejection>,
) -> Result<(StatusCode, Json<JobView>), ApiError> {
    let Json(b) = body?;
    let view = match b {
        StartBody::Verify { realm_id: id } => node.start_verify(realm_id(&id)?),
        StartBody::Shadow {
            realm_type,
            version,
            sample,
        } => {
            let selector = VersionSelector::parse(&version).map_err(|e| {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_input", e.to_string())
            })?;
            let version = node
                .plugins()
                .resolve(&realm_type, &selector)
                .map_err(NodeError::from)?
                .version();
            node.start_shadow(&realm_type, version, sample)
        }
    };
    Ok((StatusCode::ACCEPTED, Json(view)))
}

pub(super) async fn show(
    State(node): State<Arc<Node>>,
    id: Result<Path<u64>, PathRejection>,
) -> ApiResult<JobView> {
    let Path(id) = id?;
    node.job(id).map(Json).ok_or_else(|| not_found(id))
}

pub(super) async fn cancel(
    State(node): State<Arc<Node>>,
    id: Result<Path<u64>, PathRejection>,
) -> ApiResult<JobView> {
    let Path(id) = id?;
    node.cancel_job(id).map(Json).ok_or_else(|| not_found(id))
}
