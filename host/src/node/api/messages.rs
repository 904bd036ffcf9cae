//! Message routes: what operators see of messages between realms (a realm's
//! outbox and queues, a chain, dead letters) under the read scope, and what
//! they may do about dead letters (retry, drop) under the admin scope.
//!
//! | method | path | scope | answer |
//! |---|---|---|---|
//! | GET | `/v1/admin/realms/messages?id=&limit=` | read | [`RealmMessages`] |
//! | GET | `/v1/admin/messages/chain?id=` | read | [`ChainView`] |
//! | GET | `/v1/admin/messages/dead?after=&limit=` | read | `{"dead_letters": [MessageView], "next": id or null}` |
//! | POST | `/v1/admin/messages/dead/retry` `{"id"}` | admin | `{"message_id", "retried": true}` |
//! | POST | `/v1/admin/messages/dead/drop` `{"id"}` | admin | `{"message_id", "dropped": true}` |
//!
//! Message ids are `<sender>@<seq>.<index>`; a malformed one is 400
//! `invalid_input`, one that names no dead letter 404
//! `dead_letter_not_found`. Pages hold at most
//! [`MAX_MESSAGES_PAGE`] messages (100 by default).

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Query, State};
use serde::Deserialize;
use serde_json::json;

use super::{ApiError, ApiResult, realm_id};
use crate::message::MessageId;
use crate::node::{ChainView, MAX_MESSAGES_PAGE, Node, NodeError, RealmMessages};

/// Messages per page when the client names no `limit`.
const DEFAULT_LIMIT: usize = 100;

fn default_limit() -> usize {
    DEFAULT_LIMIT
}

/// A message id, checked for its shape (`<sender>@<seq>.<index>`).
fn message_id(s: &str) -> Result<MessageId, ApiError> {
    s.parse::<MessageId>()
        .map_err(|e| ApiError::from(NodeError::InvalidInput(e)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RealmQuery {
    id: String,
    #[serde(default = "default_limit")]
    limit: usize,
}

/// `GET /v1/admin/realms/messages?id=&limit=`: a realm's undelivered
/// messages in send order and the queues it is part of.
pub(super) async fn realm(
    State(node): State<Arc<Node>>,
    q: Result<Query<RealmQuery>, QueryRejection>,
) -> ApiResult<RealmMessages> {
    let Query(q) = q?;
    let id = realm_id(&q.id)?;
    Ok(Json(node.realm_messages(&id, q.limit).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ChainQuery {
    id: String,
}

/// `GET /v1/admin/messages/chain?id=`: a chain's settled messages (as far
/// as the node remembers them) and its pending ones.
pub(super) async fn chain(
    State(node): State<Arc<Node>>,
    q: Result<Query<ChainQuery>, QueryRejection>,
) -> ApiResult<ChainView> {
    let Query(q) = q?;
    // A chain id is the id of its first message.
    message_id(&q.id)?;
    Ok(Json(node.message_chain(&q.id)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DeadQuery {
    #[serde(default)]
    after: Option<String>,
    #[serde(default = "default_limit")]
    limit: usize,
}

/// `GET /v1/admin/messages/dead?after=&limit=`: dead letters in id order;
/// `next` is the `after` of the next page, while the page is full.
pub(super) async fn dead(
    State(node): State<Arc<Node>>,
    q: Result<Query<DeadQuery>, QueryRejection>,
) -> ApiResult<serde_json::Value> {
    let Query(q) = q?;
    let after = q.after.as_deref().filter(|a| !a.is_empty());
    if let Some(a) = after {
        message_id(a)?;
    }
    let limit = q.limit.clamp(1, MAX_MESSAGES_PAGE);
    let page = node.dead_letters(after, limit).await?;
    let next = (page.len() == limit)
        .then(|| page.last().map(|m| m.message_id.clone()))
        .flatten();
    Ok(Json(json!({ "dead_letters": page, "next": next })))
}

/// Body of `POST /v1/admin/messages/dead/retry` and `/drop`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct IdBody {
    /// The dead letter's message id.
    id: String,
}

/// `POST /v1/admin/messages/dead/retry`: put a dead letter back into its
/// sender's outbox for another delivery.
pub(super) async fn retry_dead(
    State(node): State<Arc<Node>>,
    body: Result<Json<IdBody>, JsonRejection>,
) -> ApiResult<serde_json::Value> {
    let Json(b) = body?;
    message_id(&b.id)?;
    node.retry_dead_letter(&b.id).await?;
    Ok(Json(json!({ "message_id": b.id, "retried": true })))
}

/// `POST /v1/admin/messages/dead/drop`: delete a dead letter for good.
pub(super) async fn drop_dead(
    State(node): State<Arc<Node>>,
    body: Result<Json<IdBody>, JsonRejection>,
) -> ApiResult<serde_json::Value> {
    let Json(b) = body?;
    message_id(&b.id)?;
    node.drop_dead_letter(&b.id).await?;
    Ok(Json(json!({ "message_id": b.id, "dropped": true })))
}
