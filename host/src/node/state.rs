//! A realm in memory, and how it is rebuilt from storage.
//!
//! A load reads the realm's metadata, latest snapshot and the events after it
//! in one consistent storage read, hands the snapshot to the plugin's
//! `restore` (which migrates older state versions), and replays the tail with
//! `apply-batch`. An unreadable snapshot — corrupt bytes, a restore error, a
//! snapshot by a plugin that cannot read it — is reported and the realm is
//! rebuilt by full replay instead: a load never yields a wrong state.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::realm::{EventRecord, RealmId};
use crate::runtime::{Plugin, PluginRegistry, PluginVersion};
use crate::storage::{Storage, StorageError};
use crate::store::StoreValue;

use super::NodeError;

/// One realm in memory. Immutable: an append publishes a new value.
#[derive(Debug)]
pub struct RealmState {
    realm_type: Arc<str>,
    seq: u64,
    snapshot_seq: u64,
    version: PluginVersion,
    state: Box<[u8]>,
}

impl RealmState {
    /// A realm state as of `seq`.
    pub fn new(
        realm_type: &str,
        seq: u64,
        snapshot_seq: u64,
        version: PluginVersion,
        state: Vec<u8>,
    ) -> Self {
        Self {
            realm_type: Arc::from(realm_type),
            seq,
            snapshot_seq,
            version,
            state: state.into_boxed_slice(),
        }
    }

    /// Realm type.
    pub fn realm_type(&self) -> &str {
        &self.realm_type
    }

    /// Last applied seq.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Seq of the latest durable snapshot.
    pub fn snapshot_seq(&self) -> u64 {
        self.snapshot_seq
    }

    /// Plugin version that built the state.
    pub fn plugin_version(&self) -> PluginVersion {
        self.version
    }

    /// The plugin's state bytes.
    pub fn state(&self) -> &[u8] {
        &self.state
    }

    /// True when events were applied since the last snapshot.
    pub fn is_dirty(&self) -> bool {
        self.seq > self.snapshot_seq
    }
}

/// Every state in the store is durable (it is published after its commit),
/// so every state is evictable; dirty ones are snapshotted by the node's
/// eviction hook.
impl StoreValue for RealmState {
    fn size_bytes(&self) -> usize {
        self.state.len()
    }
}

/// Why a load failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LoadFailure {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error("replay of {realm} failed at seq {seq}: {reason}")]
    Replay {
        realm: String,
        seq: u64,
        reason: String,
    },
    #[error("realm {0} is not in memory and event replay on load is disabled")]
    ReplayDisabled(String),
}

fn replay_tail(
    plugin: &Plugin,
    id: &RealmId,
    state: Vec<u8>,
    tail: &[EventRecord],
    batch: usize,
) -> Result<Vec<u8>, LoadFailure> {
    match plugin
        .replay(state, tail, batch)
        .map_err(NodeError::from)?
        .value
    {
        Ok(s) => Ok(s),
        Err((seq, e)) => Err(LoadFailure::Replay {
            realm: id.to_string(),
            seq,
            reason: format!("{e:?}"),
        }),
    }
}

/// Load a realm from storage: `Ok(None)` if it has no events.
#[tracing::instrument(name = "node.load", skip_all, fields(realm = %id, tail, snapshot_seq))]
pub(crate) async fn load_realm(
    storage: &dyn Storage,
    registry: &PluginRegistry,
    id: &RealmId,
    batch: usize,
    replay_enabled: bool,
    fallbacks: &AtomicU64,
) -> Result<Option<RealmState>, LoadFailure> {
    let Some(load) = storage.load_realm(id).await? else {
        return Ok(None);
    };
    let plugin = registry
        .get(&load.meta.realm_type)
        .map_err(NodeError::from)?;
    let span = tracing::Span::current();
    span.record("tail", load.tail.len());
    if !replay_enabled && !load.tail.is_empty() {
        return Err(LoadFailure::ReplayDisabled(id.to_string()));
    }

    if let Some(snap) = &load.snapshot {
        span.record("snapshot_seq", snap.seq);
        let restored = plugin.restore(&snap.state).map_err(NodeError::from)?.value;
        match restored {
            Ok(state) => {
                let tail: Vec<_> = load
                    .tail
                    .iter()
                    .filter(|e| e.seq > snap.seq)
                    .cloned()
                    .collect();
                match replay_tail(&plugin, id, state, &tail, batch) {
                    Ok(state) => {
                        return Ok(Some(RealmState::new(
                            plugin.realm_type(),
                            load.meta.last_seq,
                            snap.seq,
                            plugin.version(),
                            state,
                        )));
                    }
                    Err(e) => {
                        tracing::warn!(realm = %id, error = %e, "replay after snapshot failed; falling back to full replay");
                    }
                }
            }
            Err(reason) => {
                tracing::warn!(realm = %id, snapshot_seq = snap.seq, %reason, "snapshot unreadable; falling back to full replay");
            }
        }
        fallbacks.fetch_add(1, Ordering::Relaxed);
    }

    // Full replay from the start of the log.
    let events = if load.snapshot.is_some() {
        storage.events_since(id, 0).await?
    } else {
        load.tail
    };
    let init = plugin.init(id.as_str()).map_err(NodeError::from)?.value;
    let state = replay_tail(&plugin, id, init, &events, batch)?;
    Ok(Some(RealmState::new(
        plugin.realm_type(),
        load.meta.last_seq,
        0,
        plugin.version(),
        state,
    )))
}

/// Rebuild a realm with `plugin` (a new active version): restore its
/// snapshot with the new version, or replay the whole log.
pub(crate) async fn rebuild(
    storage: &dyn Storage,
    plugin: &Plugin,
    id: &RealmId,
    seq: u64,
    batch: usize,
) -> Result<RealmState, NodeError> {
    let fail = |reason: String| NodeError::PluginInvalid {
        realm_type: plugin.realm_type().to_owned(),
        message: format!(
            "rebuilding {id} with version {}: {reason}",
            plugin.version()
        ),
    };
    let load = storage
        .load_realm(id)
        .await?
        .ok_or_else(|| NodeError::RealmNotFound(id.clone()))?;
    if let Some(snap) = &load.snapshot {
        if let Ok(state) = plugin.restore(&snap.state)?.value {
            let tail: Vec<_> = load
                .tail
                .iter()
                .filter(|e| e.seq > snap.seq && e.seq <= seq)
                .cloned()
                .collect();
            if let Ok(Ok(state)) = plugin.replay(state, &tail, batch).map(|m| m.value) {
                return Ok(RealmState::new(
                    plugin.realm_type(),
                    seq,
                    snap.seq,
                    plugin.version(),
                    state,
                ));
            }
        }
    }
    let events: Vec<_> = storage
        .events_since(id, 0)
        .await?
        .into_iter()
        .take_while(|e| e.seq <= seq)
        .collect();
    let init = plugin.init(id.as_str())?.value;
    match plugin.replay(init, &events, batch)?.value {
        Ok(state) => Ok(RealmState::new(
            plugin.realm_type(),
            seq,
            0,
            plugin.version(),
            state,
        )),
        Err((at, e)) => Err(fail(format!("event {at}: {e:?}"))),
    }
}
