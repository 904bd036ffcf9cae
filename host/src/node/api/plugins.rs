//! Plugin routes: list, upload, shadow, swap, rollback, unload, history.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::json;

use super::{ApiError, ApiResult};
use crate::node::{Node, NodeError};
use crate::runtime::{LoadOptions, VersionSelector};

pub(super) async fn plugins(State(node): State<Arc<Node>>) -> ApiResult<serde_json::Value> {
    Ok(Json(json!({ "plugins": node.plugins().list() })))
}

pub(super) async fn history(State(node): State<Arc<Node>>) -> ApiResult<serde_json::Value> {
    Ok(Json(json!({ "history": node.plugin_history().await })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UploadQuery {
    #[serde(default)]
    activate: bool,
    /// Accept a second build of a semantic version that is already loaded.
    #[serde(default)]
    force: bool,
}

pub(super) async fn upload(
    State(node): State<Arc<Node>>,
    q: Result<Query<UploadQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<crate::runtime::LoadReport> {
    let body = body?;
    let Query(q) = q?;
    let opts = LoadOptions {
        activate: q.activate,
        force: q.force,
    };
    Ok(Json(node.load_plugin(body.to_vec(), opts).await?))
}

fn selector(v: &str) -> Result<VersionSelector, ApiError> {
    VersionSelector::parse(v)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_input", e.to_string()))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ShadowBody {
    /// Semantic version, hash or hash prefix.
    version: String,
    #[serde(default)]
    sample: Option<usize>,
}

pub(super) async fn shadow(
    State(node): State<Arc<Node>>,
    realm_type: Result<Path<String>, PathRejection>,
    body: Result<Json<ShadowBody>, JsonRejection>,
) -> ApiResult<crate::node::ShadowReport> {
    let Path(realm_type) = realm_type?;
    let Json(b) = body?;
    let version = node
        .plugins()
        .resolve(&realm_type, &selector(&b.version)?)
        .map_err(NodeError::from)?
        .version();
    Ok(Json(node.shadow(&realm_type, version, b.sample).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SwapBody {
    /// Semantic version, hash or hash prefix.
    version: String,
    /// Skip the shadow replay.
    #[serde(default)]
    force: bool,
    /// Realms to shadow-replay (default: all).
    #[serde(default)]
    sample: Option<usize>,
}

pub(super) async fn swap(
    State(node): State<Arc<Node>>,
    realm_type: Result<Path<String>, PathRejection>,
    body: Result<Json<SwapBody>, JsonRejection>,
) -> ApiResult<crate::node::Activation> {
    let Path(realm_type) = realm_type?;
    let Json(b) = body?;
    Ok(Json(
        node.promote(&realm_type, selector(&b.version)?, b.sample, b.force)
            .await?,
    ))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RollbackBody {
    /// Skip the shadow replay.
    #[serde(default)]
    force: bool,
    /// Realms to shadow-replay (default: all).
    #[serde(default)]
    sample: Option<usize>,
}

pub(super) async fn rollback(
    State(node): State<Arc<Node>>,
    realm_type: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<crate::node::Activation> {
    let Path(realm_type) = realm_type?;
    let body = body?;
    // An empty body means the defaults.
    let b: RollbackBody = if body.is_empty() {
        RollbackBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", e.to_string()))?
    };
    Ok(Json(node.rollback(&realm_type, b.sample, b.force).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UnloadQuery {
    /// Unload the rollback target too.
    #[serde(default)]
    force: bool,
}

pub(super) async fn unload(
    State(node): State<Arc<Node>>,
    path: Result<Path<(String, String)>, PathRejection>,
    q: Result<Query<UnloadQuery>, QueryRejection>,
) -> ApiResult<crate::runtime::PluginInfo> {
    let Path((realm_type, version)) = path?;
    let Query(q) = q?;
    Ok(Json(
        node.unload_plugin(&realm_type, selector(&version)?, q.force)
            .await?,
    ))
}

pub(super) async fn unservable(State(node): State<Arc<Node>>) -> ApiResult<serde_json::Value> {
    Ok(Json(json!({ "unservable": node.unservable_realms() })))
}
