//! API errors: every failure is `{"error": {"code", "message", "detail"?}}`
//! with a fitting status and a stable code.

use axum::Json;
use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::monitor::MonitorError;
use crate::node::NodeError;
use crate::runtime::{RegistryError, RuntimeError};
use crate::storage::StorageError;
use crate::store::{LoadError, StoreError};

/// An API error: status, stable code, message.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    detail: Option<serde_json::Value>,
    /// Seconds for a `Retry-After` header.
    retry_after: Option<u64>,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            detail: None,
            retry_after: None,
        }
    }

    /// Ask the client to retry after `secs` seconds (`Retry-After`).
    pub(super) fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// The stable code.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The answer for a storage failure: a full disk is 507 `storage_full`
    /// and other write failures 503 `storage_unavailable`, both with
    /// `Retry-After` (the storage heals by itself); damaged data is 500
    /// `storage_corrupt` naming the realm.
    pub(super) fn storage(e: &StorageError) -> Self {
        use StatusCode as S;
        let msg = e.to_string();
        match e {
            StorageError::NotOwner { shard, owner } => Self {
                retry_after: Some(1),
                detail: Some(json!({ "shard": shard, "owner": owner })),
                ..Self::new(S::SERVICE_UNAVAILABLE, "not_owner", msg)
            },
            StorageError::NoSpace(_) => Self {
                retry_after: Some(5),
                ..Self::new(S::INSUFFICIENT_STORAGE, "storage_full", msg)
            },
            e if e.is_transient() => Self {
                retry_after: Some(1),
                ..Self::new(S::SERVICE_UNAVAILABLE, "storage_unavailable", msg)
            },
            StorageError::RealmCorrupt { realm, .. } => Self {
                detail: Some(json!({ "realm_id": realm.as_str() })),
                ..Self::new(S::INTERNAL_SERVER_ERROR, "storage_corrupt", msg)
            },
            StorageError::Corrupt(_) => Self::new(S::INTERNAL_SERVER_ERROR, "storage_corrupt", msg),
            _ => Self::new(S::INTERNAL_SERVER_ERROR, "storage", msg),
        }
    }
}

/// The storage error behind a failed load, if that is what failed it.
fn load_storage_error(e: &LoadError) -> Option<&StorageError> {
    let LoadError::Loader { source, .. } = e else {
        return None;
    };
    let source: &(dyn std::error::Error + 'static) = &**source;
    source
        .downcast_ref::<StorageError>()
        .or_else(|| match source.downcast_ref::<NodeError>() {
            Some(NodeError::Storage(s)) => Some(s),
            _ => None,
        })
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut err = json!({ "code": self.code, "message": self.message });
        if let Some(d) = self.detail {
            err["detail"] = d;
        }
        let mut resp = (self.status, Json(json!({ "error": err }))).into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        resp
    }
}

impl From<NodeError> for ApiError {
    fn from(e: NodeError) -> Self {
        use StatusCode as S;
        let msg = e.to_string();
        match e {
            NodeError::InvalidRealmId(_) => Self::new(S::BAD_REQUEST, "invalid_realm_id", msg),
            NodeError::InvalidInput(_) => Self::new(S::BAD_REQUEST, "invalid_input", msg),
            NodeError::DeadLetterNotFound(_) => {
                Self::new(S::NOT_FOUND, "dead_letter_not_found", msg)
            }
            NodeError::UnknownRealmType(_) => Self::new(S::BAD_REQUEST, "unknown_realm_type", msg),
            NodeError::RealmTypeMismatch { .. } => {
                Self::new(S::CONFLICT, "realm_type_mismatch", msg)
            }
            NodeError::RealmNotFound(_) => Self::new(S::NOT_FOUND, "realm_not_found", msg),
            NodeError::RealmParked { .. } => Self::new(S::LOCKED, "realm_parked", msg),
            NodeError::RealmUnservable(u) => Self {
                detail: Some(json!({ "seq": u.seq, "version": u.version })),
                ..Self::new(S::SERVICE_UNAVAILABLE, "realm_unservable", msg)
            },
            NodeError::PluginConflict(_) => {
                Self::new(S::INTERNAL_SERVER_ERROR, "plugin_conflict", msg)
            }
            NodeError::Rejected { rejection, .. } => Self {
                detail: Some(json!({ "rejection": rejection.code })),
                ..Self::new(S::UNPROCESSABLE_ENTITY, "rejected", msg)
            },
            NodeError::PluginInvalid { .. } => {
                Self::new(S::UNPROCESSABLE_ENTITY, "invalid_event", msg)
            }
            NodeError::Quarantined(_) => Self::new(S::FORBIDDEN, "quarantined", msg),
            NodeError::Monitor(MonitorError::UnknownShard { .. }) => {
                Self::new(S::NOT_FOUND, "unknown_shard", msg)
            }
            NodeError::Monitor(_) => Self::new(S::BAD_REQUEST, "monitor", msg),
            NodeError::Plugin(RuntimeError::StateLimit { .. }) => {
                Self::new(S::UNPROCESSABLE_ENTITY, "state_limit", msg)
            }
            NodeError::Plugin(
                RuntimeError::Trap { .. }
                | RuntimeError::OutputTooLarge { .. }
                | RuntimeError::MalformedOutput { .. },
            ) => Self::new(S::INTERNAL_SERVER_ERROR, "plugin_fault", msg),
            NodeError::Plugin(RuntimeError::Cache { .. } | RuntimeError::Config(_)) => {
                Self::new(S::INTERNAL_SERVER_ERROR, "internal", msg)
            }
            // What remains is a component refused at load: the uploader's.
            NodeError::Plugin(_) => Self::new(S::BAD_REQUEST, "invalid_plugin", msg),
            NodeError::Registry(RegistryError::Quarantined { .. }) => {
                Self::new(S::SERVICE_UNAVAILABLE, "plugin_quarantined", msg).retry_after(30)
            }
            NodeError::Registry(RegistryError::Io { .. }) => {
                Self::new(S::INTERNAL_SERVER_ERROR, "internal", msg)
            }
            NodeError::Registry(
                RegistryError::UnknownVersion { .. }
                | RegistryError::NoSuchVersion { .. }
                | RegistryError::NothingToRollBack(_),
            ) => Self::new(S::NOT_FOUND, "plugin_version", msg),
            NodeError::Registry(RegistryError::AmbiguousVersion { candidates, .. }) => Self {
                detail: Some(json!({ "candidates": candidates })),
                ..Self::new(S::CONFLICT, "ambiguous_version", msg)
            },
            NodeError::Registry(RegistryError::InvalidSelector(_)) => {
                Self::new(S::BAD_REQUEST, "invalid_input", msg)
            }
            NodeError::Registry(RegistryError::DuplicateSemver { .. }) => {
                Self::new(S::CONFLICT, "duplicate_version", msg)
            }
            NodeError::Registry(RegistryError::VersionInUse { .. }) => {
                Self::new(S::CONFLICT, "version_in_use", msg)
            }
            NodeError::Registry(_) => Self::new(S::BAD_REQUEST, "plugin", msg),
            NodeError::Load(LoadError::Timeout { .. }) | NodeError::ShuttingDown => {
                Self::new(S::SERVICE_UNAVAILABLE, "unavailable", msg).retry_after(1)
            }
            NodeError::Load(ref l) if load_storage_error(l).is_some() => {
                let s = load_storage_error(l).map(Self::storage);
                s.unwrap_or_else(|| Self::new(S::INTERNAL_SERVER_ERROR, "load_failed", msg))
            }
            NodeError::Load(_) => Self::new(S::INTERNAL_SERVER_ERROR, "load_failed", msg),
            NodeError::Store(StoreError::ShardFull { .. } | StoreError::MemoryFull { .. }) => {
                Self::new(S::INSUFFICIENT_STORAGE, "store_full", msg)
            }
            NodeError::Store(_) => Self::new(S::INTERNAL_SERVER_ERROR, "store", msg),
            NodeError::EvictionDisabled => Self::new(S::CONFLICT, "eviction_disabled", msg),
            NodeError::Storage(ref e) => Self::storage(e),
            NodeError::SeqConflict {
                expected, actual, ..
            } => Self {
                detail: Some(json!({ "expected_seq": expected, "actual_seq": actual })),
                ..Self::new(S::CONFLICT, "seq_conflict", msg)
            },
            NodeError::PipelineAborted { .. } => {
                Self::new(S::SERVICE_UNAVAILABLE, "pipeline_aborted", msg).retry_after(1)
            }
            NodeError::Setup(_) | NodeError::ExecPanicked { .. } => {
                Self::new(S::INTERNAL_SERVER_ERROR, "internal", msg)
            }
            NodeError::Cancelled { job } => Self {
                detail: Some(json!({ "job": job })),
                ..Self::new(S::CONFLICT, "cancelled", msg)
            },
            NodeError::Overloaded { .. } => {
                Self::new(S::SERVICE_UNAVAILABLE, "overloaded", msg).retry_after(1)
            }
            NodeError::ShadowFailed(report) => Self {
                detail: serde_json::to_value(&*report).ok(),
                ..Self::new(S::CONFLICT, "shadow_failed", msg)
            },
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        let status = r.status();
        let code = match status {
            StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
            _ => "invalid_json",
        };
        Self::new(status, code, r.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_path", r.body_text())
    }
}

impl From<BytesRejection> for ApiError {
    fn from(r: BytesRejection) -> Self {
        let status = r.status();
        let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "body_too_large"
        } else {
            "invalid_body"
        };
        Self::new(status, code, r.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_query", r.body_text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overload_is_503_with_retry_after() {
        let e = ApiError::from(NodeError::Overloaded {
            realm_type: "hostile".into(),
            queued: 4096,
            limit: 4096,
        });
        assert_eq!(
            (e.status(), e.code()),
            (StatusCode::SERVICE_UNAVAILABLE, "overloaded")
        );
        let resp = e.into_response();
        assert_eq!(resp.headers()[axum::http::header::RETRY_AFTER], "1");
        let e = ApiError::from(NodeError::Cancelled { job: 3 });
        assert_eq!((e.status(), e.code()), (StatusCode::CONFLICT, "cancelled"));
    }
}
