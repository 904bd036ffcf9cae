//! A realm in memory, and how it is rebuilt from storage.
//!
//! A load reads the realm's metadata, latest snapshot and the events after it
//! in one consistent storage read, turns the snapshot's entries into a
//! [`StateMap`], runs the plugin's `migrate` when the snapshot was written
//! with an older state version, and replays the tail with `apply-batch`. An
//! unusable snapshot — damaged entries, a newer state version, a failed
//! migration, a tail that will not replay on it — is reported and the realm
//! is rebuilt by full replay instead: a load never yields a wrong state.
//!
//! ## Incremental snapshots
//! A realm remembers which keys changed since its last durable snapshot
//! ([`RealmState::snapshot_write`]). A large realm's next snapshot is then a
//! delta of those keys against the stored one, so it costs what changed,
//! not what the realm holds; small (packed) realms, realms whose changed set
//! grew past half their size, and realms whose stored snapshot is not a
//! known base write the whole map.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::realm::{EventRecord, RealmId};
use crate::runtime::{Plugin, PluginRegistry, PluginTag, PluginVersion, Scope};
use crate::state::{Bytes, Change, StateMap};
use crate::storage::{RealmLoad, SnapshotBody, SnapshotWrite, Storage, StorageError};
use crate::store::StoreValue;

use super::NodeError;
use super::exec::{self, ExecPool};

/// Heap bytes one remembered changed key costs (a B+tree slot; the key bytes
/// are shared with the map).
const DIRTY_KEY_OVERHEAD: usize = 48;

/// Keys changed since the last durable snapshot.
#[derive(Debug, Clone)]
enum Dirty {
    /// Unknown or not worth tracking: the next snapshot writes the whole map.
    All,
    /// Exactly these keys (possibly none).
    Keys(imbl::OrdSet<Bytes>),
}

/// One realm in memory. Immutable: an append publishes a new value, so a
/// reader holding this one keeps a consistent view.
#[derive(Debug)]
pub struct RealmState {
    built_by: Arc<PluginTag>,
    seq: u64,
    snapshot_seq: u64,
    map: StateMap,
    dirty: Dirty,
}

impl RealmState {
    /// A freshly built state as of `seq`, built by the plugin version
    /// `built_by` (see [`crate::runtime::Plugin::tag`]). Its stored snapshot
    /// (if any) is not used as a base for deltas: its next snapshot writes the
    /// whole map. The node builds states itself; this is public for
    /// embedders' tools and benchmarks that fill a store directly.
    pub fn new(built_by: Arc<PluginTag>, seq: u64, snapshot_seq: u64, map: StateMap) -> Self {
        Self {
            built_by,
            seq,
            snapshot_seq,
            map,
            dirty: Dirty::All,
        }
    }

    /// The tag of the plugin version that built it.
    pub(crate) fn built_by(&self) -> Arc<PluginTag> {
        self.built_by.clone()
    }

    /// Realm type.
    pub fn realm_type(&self) -> &str {
        &self.built_by.realm_type
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
        self.built_by.version
    }

    /// State (entry layout) version of the plugin that built it.
    pub fn state_version(&self) -> u32 {
        self.built_by.state_version
    }

    /// The realm's entries.
    pub fn map(&self) -> &StateMap {
        &self.map
    }

    /// True when events were applied since the last snapshot.
    pub fn is_dirty(&self) -> bool {
        self.seq > self.snapshot_seq
    }

    /// The state after one more applied (durable) event at `seq` that wrote
    /// `changes`, producing `map`.
    pub(crate) fn next(
        &self,
        built_by: Arc<PluginTag>,
        seq: u64,
        map: StateMap,
        changes: &[Change],
    ) -> Self {
        let dirty = track(self.dirty.clone(), &map, changes);
        Self {
            built_by,
            seq,
            snapshot_seq: self.snapshot_seq,
            map,
            dirty,
        }
    }

    /// The same state, now durably snapshotted at its seq.
    pub(crate) fn snapshotted(&self) -> Self {
        Self {
            built_by: self.built_by.clone(),
            seq: self.seq,
            snapshot_seq: self.seq,
            map: self.map.clone(),
            dirty: clean(&self.map),
        }
    }

    /// The snapshot to write for this state: a delta of the changed keys
    /// against the stored snapshot when that is known and worth it, the whole
    /// map otherwise (or when `full`).
    pub(crate) fn snapshot_write(&self, full: bool) -> SnapshotWrite {
        let body = match &self.dirty {
            Dirty::Keys(keys) if !full && self.snapshot_seq > 0 => SnapshotBody::Delta {
                base_seq: self.snapshot_seq,
                changes: keys
                    .iter()
                    .map(|k| (k.clone(), self.map.get_shared(k)))
                    .collect(),
            },
            _ => SnapshotBody::Full(self.map.to_entries()),
        };
        SnapshotWrite {
            seq: self.seq,
            plugin_version: self.built_by.version,
            state_version: self.built_by.state_version,
            body,
        }
    }
}

/// A clean change set for `map`: packed (small) maps always snapshot whole,
/// so they track nothing.
fn clean(map: &StateMap) -> Dirty {
    if map.is_packed() {
        Dirty::All
    } else {
        Dirty::Keys(imbl::OrdSet::new())
    }
}

/// Add `changes` to a change set, giving up (whole-map snapshot) when the
/// set would exceed half the map.
fn track(dirty: Dirty, map: &StateMap, changes: &[Change]) -> Dirty {
    match dirty {
        Dirty::All => Dirty::All,
        Dirty::Keys(_) if map.is_packed() => Dirty::All,
        Dirty::Keys(mut keys) => {
            for (k, _) in changes {
                keys.insert(k.clone());
            }
            if keys.len() as u64 > map.len() / 2 {
                Dirty::All
            } else {
                Dirty::Keys(keys)
            }
        }
    }
}

/// Every state in the store is durable (it is published after its commit),
/// so every state is evictable; dirty ones are snapshotted by the node's
/// eviction hook.
impl StoreValue for RealmState {
    fn size_bytes(&self) -> usize {
        let dirty = match &self.dirty {
            Dirty::All => 0,
            Dirty::Keys(k) => k.len() * DIRTY_KEY_OVERHEAD,
        };
        self.map.heap_bytes() + dirty
    }
}

/// Why a load failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LoadFailure {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error(transparent)]
    Replay(Box<ReplayFailure>),
    #[error("realm {0} is not in memory and event replay on load is disabled")]
    ReplayDisabled(String),
}

/// A plugin refused one of a realm's stored events (seq 0: its `init`).
#[derive(Debug, thiserror::Error)]
#[error("replay of {realm} with {realm_type} {semver} failed at seq {seq}: {reason}")]
pub(crate) struct ReplayFailure {
    pub(crate) realm: String,
    pub(crate) realm_type: String,
    pub(crate) semver: String,
    pub(crate) version: crate::runtime::PluginVersion,
    pub(crate) seq: u64,
    pub(crate) reason: String,
}

impl LoadFailure {
    fn replay(plugin: &Plugin, id: &RealmId, seq: u64, reason: String) -> Self {
        Self::Replay(Box::new(ReplayFailure {
            realm: id.to_string(),
            realm_type: plugin.realm_type().to_owned(),
            semver: plugin.info().semver.clone(),
            version: plugin.version(),
            seq,
            reason,
        }))
    }

    /// The node error for a realm the plugin cannot rebuild, if that is
    /// what this failure is.
    pub(crate) fn unservable(&self, id: &RealmId) -> Option<NodeError> {
        match self {
            Self::Replay(f) => Some(NodeError::RealmUnservable(Box::new(
                super::error::Unservable {
                    realm: id.clone(),
                    realm_type: f.realm_type.clone(),
                    semver: f.semver.clone(),
                    version: f.version,
                    seq: f.seq,
                    reason: f.reason.clone(),
                },
            ))),
            _ => None,
        }
    }
}

/// Replay `tail` onto `map`; returns the final map and the keys changed.
fn replay_tail(
    plugin: &Plugin,
    id: &RealmId,
    map: StateMap,
    tail: &[EventRecord],
    batch: usize,
) -> Result<(StateMap, Vec<Change>), LoadFailure> {
    match plugin
        .replay(id.as_str(), map, tail, batch)
        .map_err(NodeError::from)?
        .value
    {
        Ok(r) => Ok((r.map, r.changes)),
        Err((seq, e)) => Err(LoadFailure::replay(plugin, id, seq, e.to_string())),
    }
}

/// The entries the plugin's `init` writes for a new realm.
pub(crate) fn init_map(plugin: &Plugin, id: &RealmId) -> Result<StateMap, LoadFailure> {
    match plugin.init(id.as_str()).map_err(NodeError::from)?.value {
        Ok(w) => Ok(w.map),
        Err(reason) => Err(LoadFailure::replay(
            plugin,
            id,
            0,
            format!("init failed: {reason}"),
        )),
    }
}

/// Replay one stretch of a log onto `map` (see [`init_map`] for the start).
pub(crate) fn replay_part(
    plugin: &Plugin,
    id: &RealmId,
    map: StateMap,
    events: &[EventRecord],
    batch: usize,
) -> Result<StateMap, LoadFailure> {
    Ok(replay_tail(plugin, id, map, events, batch)?.0)
}

/// The realm's map as of `upto`, built from `init` and the whole log.
pub(crate) fn replay_from_init(
    plugin: &Plugin,
    id: &RealmId,
    events: &[EventRecord],
    batch: usize,
) -> Result<StateMap, LoadFailure> {
    let init = init_map(plugin, id)?;
    replay_part(plugin, id, init, events, batch)
}

/// Build from the snapshot: entries → map → `migrate` if older → tail.
/// `Ok(None)` when the snapshot cannot be used (the caller replays fully).
fn from_snapshot(
    plugin: &Plugin,
    id: &RealmId,
    load: &mut RealmLoad,
    upto: u64,
    batch: usize,
) -> Result<Option<RealmState>, LoadFailure> {
    let Some(snap) = load.snapshot.as_mut().filter(|s| s.seq <= upto) else {
        return Ok(None);
    };
    tracing::Span::current().record("snapshot_seq", snap.seq);
    // The entries move into the map (a full replay, if it comes to that,
    // does not need them).
    let Some(map) = StateMap::from_sorted(std::mem::take(&mut snap.entries)) else {
        tracing::warn!(realm = %id, snapshot_seq = snap.seq, "snapshot entries out of order; falling back to full replay");
        return Ok(None);
    };
    let mut dirty = clean(&map);
    let map = match snap.state_version.cmp(&plugin.state_version()) {
        std::cmp::Ordering::Equal => map,
        std::cmp::Ordering::Less => {
            let m = plugin
                .migrate(Scope::new(id.as_str(), &map), snap.state_version)
                .map_err(NodeError::from)?;
            match m.value {
                Ok(w) => {
                    dirty = track(dirty, &w.map, &w.changes);
                    w.map
                }
                Err(reason) => {
                    tracing::warn!(realm = %id, from = snap.state_version, %reason, "migrate failed; falling back to full replay");
                    return Ok(None);
                }
            }
        }
        std::cmp::Ordering::Greater => {
            tracing::warn!(realm = %id, snapshot_state_version = snap.state_version, plugin_state_version = plugin.state_version(), "snapshot written by a newer state version; falling back to full replay");
            return Ok(None);
        }
    };
    let tail: Vec<_> = load
        .tail
        .iter()
        .filter(|e| e.seq > snap.seq && e.seq <= upto)
        .cloned()
        .collect();
    match replay_tail(plugin, id, map, &tail, batch) {
        Ok((map, changes)) => {
            let dirty = track(dirty, &map, &changes);
            Ok(Some(RealmState {
                built_by: plugin.tag().clone(),
                seq: upto,
                snapshot_seq: snap.seq,
                map,
                dirty,
            }))
        }
        Err(e) => {
            tracing::warn!(realm = %id, error = %e, "replay after snapshot failed; falling back to full replay");
            Ok(None)
        }
    }
}

/// Build a realm's state as of `upto` with `plugin` from what storage holds:
/// the snapshot (migrated if older) plus the tail after it; if the snapshot
/// is unusable, replay the whole log from `init`. Returns the state and
/// whether it had to fall back.
async fn build(
    storage: &dyn Storage,
    plugin: &Plugin,
    id: &RealmId,
    mut load: RealmLoad,
    upto: u64,
    batch: usize,
) -> Result<(RealmState, bool), LoadFailure> {
    if let Some(state) = from_snapshot(plugin, id, &mut load, upto, batch)? {
        return Ok((state, false));
    }
    let had_snapshot = load.snapshot.is_some();
    // Full replay from the start of the log (the tail is the whole log when
    // there is no snapshot).
    let events = if had_snapshot {
        storage.events_since(id, 0).await?
    } else {
        load.tail
    };
    let events: Vec<_> = events.into_iter().take_while(|e| e.seq <= upto).collect();
    let map = replay_from_init(plugin, id, &events, batch)?;
    // The stored snapshot (if any) is not a base for deltas: the next
    // snapshot writes the whole map.
    let snapshot_seq = load.snapshot.as_ref().map_or(0, |s| s.seq.min(upto));
    Ok((
        RealmState::new(plugin.tag().clone(), upto, snapshot_seq, map),
        had_snapshot,
    ))
}

/// Read what storage holds for a realm on a blocking thread (the read may
/// touch the disk; an async worker must not wait for it).
async fn read_realm(
    storage: &Arc<dyn Storage>,
    id: &RealmId,
) -> Result<Option<RealmLoad>, LoadFailure> {
    let (storage, id) = (storage.clone(), id.clone());
    let handle = tokio::runtime::Handle::current();
    Ok(exec::blocking_io("realm read", move || {
        handle.block_on(storage.load_realm(&id))
    })
    .await??)
}

/// [`build`] on the plugin-execution pool: the migrate and replay calls run
/// in the sandbox, and a fallback re-reads the log, so none of it belongs on
/// an async worker.
async fn build_on_pool(
    storage: &Arc<dyn Storage>,
    exec: &ExecPool,
    plugin: &Arc<Plugin>,
    id: &RealmId,
    load: RealmLoad,
    upto: u64,
    batch: usize,
) -> Result<(RealmState, bool), LoadFailure> {
    let (storage, plugin_c, rid) = (storage.clone(), plugin.clone(), id.clone());
    let handle = tokio::runtime::Handle::current();
    exec.run(plugin.realm_type(), move || {
        handle.block_on(build(&*storage, &plugin_c, &rid, load, upto, batch))
    })
    .await?
}

/// Load a realm from storage: `Ok(None)` if it has no events. The read runs
/// on a blocking thread and the rebuild on the plugin-execution pool.
#[tracing::instrument(name = "node.load", skip_all, fields(realm = %id, tail, snapshot_seq))]
pub(crate) async fn load_realm(
    storage: &Arc<dyn Storage>,
    registry: &PluginRegistry,
    exec: &ExecPool,
    id: &RealmId,
    batch: usize,
    replay_enabled: bool,
    fallbacks: &AtomicU64,
) -> Result<Option<RealmState>, LoadFailure> {
    let Some(load) = read_realm(storage, id).await? else {
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
    let (state, fell_back) = build_on_pool(storage, exec, &plugin, id, load, upto, batch).await?;
    if fell_back {
        fallbacks.fetch_add(1, Ordering::Relaxed);
    }
    Ok(Some(state))
}

/// Rebuild a realm as of `seq` with `plugin` (a new active version): its
/// snapshot (migrated if the new version's state version is newer) plus the
/// tail, or the whole log.
pub(crate) async fn rebuild(
    storage: &Arc<dyn Storage>,
    exec: &ExecPool,
    plugin: &Arc<Plugin>,
    id: &RealmId,
    seq: u64,
    batch: usize,
) -> Result<RealmState, NodeError> {
    let load = match read_realm(storage, id).await {
        Ok(Some(load)) => load,
        Ok(None) => return Err(NodeError::RealmNotFound(id.clone())),
        Err(e) => return Err(load_failure_to_node(e, plugin, id)),
    };
    match build_on_pool(storage, exec, plugin, id, load, seq, batch).await {
        Ok((state, _)) => Ok(state),
        Err(e) => Err(load_failure_to_node(e, plugin, id)),
    }
}

pub(crate) fn load_failure_to_node(e: LoadFailure, plugin: &Plugin, id: &RealmId) -> NodeError {
    if let Some(u) = e.unservable(id) {
        return u;
    }
    match e {
        LoadFailure::Node(e) => e,
        LoadFailure::Storage(e) => e.into(),
        other => NodeError::PluginInvalid {
            realm: id.clone(),
            realm_type: plugin.realm_type().to_owned(),
            message: format!("rebuilding with version {}: {other}", plugin.version()),
        },
    }
}
