//! Readiness: whether the node can serve writes now, as opposed to liveness
//! (the process answers at all, `/health`).
//!
//! A load balancer should route to a node only while it is ready; a
//! supervisor should restart it only when it is not live. Keeping the two
//! apart matters for storage faults: a full disk makes the node unready
//! (every append would fail) but a restart would not help — the storage
//! heals by itself once space is freed.

use serde::{Deserialize, Serialize};

use super::{Node, NodeError};
use crate::realm::RealmId;
use crate::storage::{StorageError, StorageHealth};

/// What `GET /ready` reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Readiness {
    /// Storage accepts writes, the plugins are loaded and (with lazy loading
    /// off) every stored realm was loaded.
    pub ready: bool,
    /// The storage's own report.
    pub storage: StorageHealth,
    /// The plugin registry was opened (built-in and directory plugins).
    pub plugins_loaded: bool,
    /// Preloading finished (always true with lazy loading on).
    pub preload_done: bool,
    /// Why the node is not ready, one line each (empty when ready).
    pub degraded: Vec<String>,
}

impl Node {
    /// Whether the node is ready to serve writes, and what is degraded.
    pub fn readiness(&self) -> Readiness {
        let storage = self.storage().health();
        // A node exists only after its registry was opened.
        let plugins_loaded = true;
        let preload_done =
            self.config().sharding.lazy_loading_enabled || self.preload_report().is_some();
        let mut degraded = Vec::new();
        if !storage.writable {
            let what = if storage.no_space {
                "storage is full"
            } else {
                "storage is failing writes"
            };
            let since = storage
                .failing_since_ms
                .map(|ms| format!(" since {ms} ms after the epoch"))
                .unwrap_or_default();
            let last = storage.last_error.as_deref().unwrap_or("unknown error");
            degraded.push(format!("{what}{since}: {last}"));
        }
        if !preload_done {
            degraded.push("preload has not finished".into());
        }
        Readiness {
            ready: degraded.is_empty() && plugins_loaded,
            storage,
            plugins_loaded,
            preload_done,
            degraded,
        }
    }
}

impl Node {
    /// Map a failed durable append. Storage already holding the seq the
    /// node offered means the in-memory state is behind the log: a commit
    /// reported as failed was stored after all (the rare case where the file
    /// could not be reopened right after the failure, see
    /// `docs/design-storage.md`). The realm is dropped from memory so the
    /// next request reloads it from the log, and this one is answered as
    /// retryable.
    pub(super) fn append_storage_failed(&self, realm: &RealmId, e: StorageError) -> NodeError {
        if let StorageError::Duplicate { last_seq, .. } = &e
            && self.config().sharding.lazy_loading_enabled
        {
            tracing::warn!(realm = %realm, last_seq, "realm was behind its log; reloading it");
            self.store.remove(realm.as_str());
            return NodeError::Storage(StorageError::Unavailable(format!(
                "realm {realm} was behind its stored log (last seq {last_seq}); it is reloaded, retry"
            )));
        }
        NodeError::Storage(e)
    }
}
