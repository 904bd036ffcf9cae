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
use crate::storage::{RealmLoad, Storage, StorageError};
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

/// Build a realm's state as of `upto` with `plugin` from what storage holds:
/// `restore` the snapshot and replay the tail after it; if the snapshot is
/// unreadable (or the tail will not replay on it), replay the whole log from
/// `init`. Returns the state and whether it had to fall back.
async fn build(
    storage: &dyn Storage,
    plugin: &Plugin,
    id: &RealmId,
    load: RealmLoad,
    upto: u64,
    batch: usize,
) -> Result<(RealmState, bool), LoadFailure> {
    let new = |seq_snap: u64, state: Vec<u8>| {
        RealmState::new(plugin.realm_type(), upto, seq_snap, plugin.version(), state)
    };
    let snapshot = load.snapshot.as_ref().filter(|s| s.seq <= upto);
    if let Some(snap) = snapshot {
        tracing::Span::current().record("snapshot_seq", snap.seq);
        let restored = match super::snapshot_blob(snap) {
            Some(blob) => plugin.restore(blob).map_err(NodeError::from)?.value,
            None => Err("not a contract 0.1 state blob".to_owned()),
        };
        match restored {
            Ok(state) => {
                let tail: Vec<_> = load
                    .tail
                    .iter()
                    .filter(|e| e.seq > snap.seq && e.seq <= upto)
                    .cloned()
                    .collect();
                match replay_tail(plugin, id, state, &tail, batch) {
                    Ok(state) => return Ok((new(snap.seq, state), false)),
                    Err(e) => {
                        tracing::warn!(realm = %id, error = %e, "replay after snapshot failed; falling back to full replay");
                    }
                }
            }
            Err(reason) => {
                tracing::warn!(realm = %id, snapshot_seq = snap.seq, %reason, "snapshot unreadable; falling back to full replay");
            }
        }
    }
    // Full replay from the start of the log (the tail is the whole log when
    // there is no snapshot).
    let events = if load.snapshot.is_some() {
        storage.events_since(id, 0).await?
    } else {
        load.tail
    };
    let events: Vec<_> = events.into_iter().take_while(|e| e.seq <= upto).collect();
    let init = plugin.init(id.as_str()).map_err(NodeError::from)?.value;
    let state = replay_tail(plugin, id, init, &events, batch)?;
    Ok((new(0, state), snapshot.is_some()))
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
    tracing::Span::current().record("tail", load.tail.len());
    if !replay_enabled && !load.tail.is_empty() {
        return Err(LoadFailure::ReplayDisabled(id.to_string()));
    }
    let upto = load.meta.last_seq;
    let (state, fell_back) = build(storage, &plugin, id, load, upto, batch).await?;
    if fell_back {
        fallbacks.fetch_add(1, Ordering::Relaxed);
    }
    Ok(Some(state))
}

/// Rebuild a realm as of `seq` with `plugin` (a new active version): restore
/// its snapshot with the new version, or replay the whole log.
pub(crate) async fn rebuild(
    storage: &dyn Storage,
    plugin: &Plugin,
    id: &RealmId,
    seq: u64,
    batch: usize,
) -> Result<RealmState, NodeError> {
    let load = storage
        .load_realm(id)
        .await?
        .ok_or_else(|| NodeError::RealmNotFound(id.clone()))?;
    match build(storage, plugin, id, load, seq, batch).await {
        Ok((state, _)) => Ok(state),
        Err(LoadFailure::Node(e)) => Err(e),
        Err(LoadFailure::Storage(e)) => Err(e.into()),
        Err(other) => Err(NodeError::PluginInvalid {
            realm_type: plugin.realm_type().to_owned(),
            message: format!("rebuilding {id} with version {}: {other}", plugin.version()),
        }),
    }
}
