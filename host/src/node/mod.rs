//! The node: the host that ties the runtime, the store, the storage and the
//! shard monitor together.
//!
//! ## The append path
//! `append(event)`:
//! 1. **validate** — id, sizes, known realm type (typed errors, nothing stored);
//! 2. **refuse quarantined crossings** — an event whose `source_realm` lives in
//!    a quarantined shard is refused before any plugin runs;
//! 3. **serialize per realm** — a striped async lock orders appends to one
//!    realm (different realms proceed concurrently);
//! 4. **current state** — from memory, or loaded (snapshot + tail replay);
//!    a state built by an older plugin version is rebuilt with the active one;
//! 5. **apply** — the plugin runs with the source shard's reputation in the
//!    event context and a fuel budget; a rejection is returned and nothing is
//!    stored;
//! 6. **durable commit** — group commit in storage; the ack waits for it;
//! 7. **publish** — the new state replaces the old in the store, the monitor
//!    records the event, the crossing outcome and the gas;
//! 8. **acknowledge**.
//!
//! Because a state enters the store only after its events are durable, any
//! realm in memory may be evicted at any time without losing an event; a
//! dirty realm (events since its snapshot) gets a snapshot on eviction.
//!
//! ## Without lazy loading
//! With `sharding.lazy_loading_enabled` off (the `minimal` profile) a realm
//! that is not in memory cannot be loaded on demand, so the node keeps every
//! realm in memory for its whole life:
//! - [`Node::open`] loads every stored realm before it returns (see
//!   [`PreloadReport`]; a realm that fails is reported and then answers with
//!   a typed load error, it does not stop the start);
//! - nothing is evicted: no periodic sweep, no shedding at the hard cap or
//!   the memory budget, and [`Node::evict`] is refused with
//!   [`NodeError::EvictionDisabled`];
//! - a new realm is created only if the store has room for it, checked before
//!   its first event is made durable; otherwise the append fails with
//!   [`NodeError::Store`] (`StoreError::ShardFull` / `MemoryFull`) and
//!   nothing is stored.

pub mod api;
mod config;
pub mod metrics;
mod preload;
mod state;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::Mutex as AsyncMutex;

pub use config::{ConfigError, HttpConfig, InputLimits, NodeConfig};
pub use preload::{PreloadFailure, PreloadReport};
pub use state::RealmState;

use crate::monitor::{MonitorError, ShardAnalysis, ShardMonitor, ShardMonitorSnapshot};
use crate::realm::{EventRecord, InvalidRealmId, NewEvent, RealmId, shard_of};
use crate::runtime::{
    ApplyOutcome, Plugin, PluginRegistry, PluginRuntime, PluginVersion, RegistryError, Rejection,
    RuntimeConfig, RuntimeError,
};
use crate::storage::{
    AppendRequest, RedbStorage, Snapshot, SnapshotBody, SnapshotWrite, Storage, StorageError,
};
use crate::store::{Evicted, LoadError, ShardedStore, ShardingStats, StoreError};

/// Number of per-realm append lock stripes.
const LOCK_STRIPES: usize = 4096;
/// Key under which the shard monitor's record is persisted.
const MONITOR_META_KEY: &str = "monitor/state";

/// Errors of the node's operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The realm id is not valid.
    #[error(transparent)]
    InvalidRealmId(#[from] InvalidRealmId),
    /// A field of the request is not acceptable.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// No plugin serves this realm type.
    #[error("unknown realm type {0:?}")]
    UnknownRealmType(String),
    /// The realm exists with another type.
    #[error("realm {realm} has type {actual:?}, not {requested:?}")]
    RealmTypeMismatch {
        /// The realm.
        realm: RealmId,
        /// Its type.
        actual: String,
        /// The type the request named.
        requested: String,
    },
    /// The realm has no events.
    #[error("realm {0} does not exist")]
    RealmNotFound(RealmId),
    /// The plugin rejected the event (a domain "no"); nothing was stored.
    #[error("rejected by {realm_type}: {rejection}")]
    Rejected {
        /// Realm type.
        realm_type: String,
        /// The plugin's reason.
        rejection: Rejection,
    },
    /// The plugin could not understand the event or state.
    #[error("invalid for {realm_type}: {message}")]
    PluginInvalid {
        /// Realm type.
        realm_type: String,
        /// The plugin's message.
        message: String,
    },
    /// The crossing comes from a quarantined shard; no plugin ran.
    #[error(transparent)]
    Quarantined(MonitorError),
    /// A shard index or monitor operation was refused.
    #[error(transparent)]
    Monitor(MonitorError),
    /// The plugin failed (trap, limits).
    #[error(transparent)]
    Plugin(#[from] RuntimeError),
    /// Plugin registry operation failed.
    #[error(transparent)]
    Registry(RegistryError),
    /// The durable layer failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Loading the realm failed.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The store refused a new realm (lazy loading is off, so nothing is
    /// evicted, and the realm's shard or the memory budget is full); nothing
    /// was stored.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Eviction was requested, but lazy loading is off: an evicted realm
    /// could not be loaded again.
    #[error(
        "eviction is disabled: lazy loading is off, so an evicted realm could not be loaded again"
    )]
    EvictionDisabled,
    /// Shadow replay found realms the candidate cannot rebuild; not promoted.
    #[error("candidate {} refused: {} of {} realms failed shadow replay", .0.candidate, .0.failures.len(), .0.realms_checked)]
    ShadowFailed(Box<ShadowReport>),
    /// The node is shutting down.
    #[error("the node is shutting down")]
    ShuttingDown,
    /// Setting up the node failed.
    #[error("node set-up: {0}")]
    Setup(String),
}

impl From<RegistryError> for NodeError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::UnknownRealmType(t) => Self::UnknownRealmType(t),
            RegistryError::Runtime(r) => Self::Plugin(r),
            other => Self::Registry(other),
        }
    }
}

/// What an acknowledged append reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendReceipt {
    /// The realm.
    pub realm_id: String,
    /// Seq assigned to the event.
    pub seq: u64,
    /// The realm's shard.
    pub shard: usize,
    /// Plugin version that applied the event.
    pub plugin_version: PluginVersion,
    /// Fuel the plugin burned.
    pub fuel: u64,
    /// Gas charged to the source shard (fuel × penalty multiplier).
    pub gas: u64,
    /// Host timestamp of the event.
    pub timestamp_ms: u64,
}

/// A realm as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RealmView {
    /// The realm.
    pub realm_id: String,
    /// Realm type.
    pub realm_type: String,
    /// Shard.
    pub shard: usize,
    /// Last applied seq.
    pub seq: u64,
    /// Plugin version that built the state.
    pub plugin_version: PluginVersion,
    /// Seq of the latest durable snapshot.
    pub snapshot_seq: u64,
    /// State size in bytes.
    pub state_bytes: usize,
    /// SHA-256 of the state bytes (hex).
    pub state_hash: String,
}

/// Result of [`Node::verify`]: the live state against a replay from scratch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// The realm.
    pub realm_id: String,
    /// Events replayed.
    pub events: u64,
    /// Hash of the live state.
    pub live_hash: String,
    /// Hash of the state rebuilt from the full log.
    pub replay_hash: String,
    /// True when both agree.
    pub matches: bool,
    /// Replay time in microseconds.
    pub micros: u64,
}

/// One realm that a candidate plugin version could not rebuild.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShadowFailure {
    /// The realm.
    pub realm_id: String,
    /// The event the candidate refused (0 when the failure is not one event).
    pub seq: u64,
    /// What went wrong.
    pub reason: String,
}

/// Result of [`Node::shadow`]: a candidate version replayed against real realms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShadowReport {
    /// Realm type.
    pub realm_type: String,
    /// The candidate version.
    pub candidate: PluginVersion,
    /// Realms of the type in the inventory.
    pub realms_total: u64,
    /// Realms replayed through the candidate.
    pub realms_checked: u64,
    /// Events replayed.
    pub events_replayed: u64,
    /// Every realm that failed.
    pub failures: Vec<ShadowFailure>,
    /// Wall time in milliseconds.
    pub millis: u64,
}

impl ShadowReport {
    /// True when every checked realm rebuilt cleanly.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Node counters.
#[derive(Debug, Default)]
struct Counters {
    appends: AtomicU64,
    rejections: AtomicU64,
    failures: AtomicU64,
    snapshots: AtomicU64,
    snapshot_failures: AtomicU64,
    loads: AtomicU64,
    preloaded: AtomicU64,
    load_fallbacks: AtomicU64,
    rebuilds: AtomicU64,
    /// Evicted dirty realms whose snapshot is not written yet.
    pending_snapshots: AtomicU64,
}

/// Node-level statistics.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeStats {
    /// Acknowledged appends since start.
    pub appends: u64,
    /// Appends the plugins rejected.
    pub rejections: u64,
    /// Appends that failed otherwise (traps, storage, quarantine).
    pub failures: u64,
    /// Snapshots written.
    pub snapshots: u64,
    /// Realms loaded from storage on demand (lazy loads).
    pub loads: u64,
    /// Realms loaded from storage at start (lazy loading off).
    #[serde(default)]
    pub preloaded: u64,
    /// Loads whose snapshot was unreadable and fell back to full replay.
    pub load_fallbacks: u64,
    /// Realms rebuilt because their plugin version changed.
    pub rebuilds: u64,
    /// The store.
    pub sharding: ShardingStats,
    /// The shard monitor.
    pub monitor: ShardMonitorSnapshot,
}

/// A running realmhost node.
pub struct Node {
    config: NodeConfig,
    registry: PluginRegistry,
    store: Arc<ShardedStore<RealmState>>,
    storage: Arc<dyn Storage>,
    monitor: Arc<ShardMonitor>,
    locks: Box<[AsyncMutex<()>]>,
    counters: Arc<Counters>,
    eviction: parking_lot::Mutex<Option<crate::store::EvictionTasks>>,
    snapshot_task: parking_lot::Mutex<Option<tokio::task::JoinHandle<()>>>,
    shutting_down: std::sync::atomic::AtomicBool,
    /// Set at start when lazy loading is off.
    preloaded: std::sync::OnceLock<preload::Preloaded>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("data_dir", &self.config.data_dir)
            .finish_non_exhaustive()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn hash_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

impl Node {
    /// Open (or create) a node on `config.data_dir`: storage, plugins, store,
    /// monitor (with its persisted record) and the eviction tasks. With lazy
    /// loading off, every stored realm is loaded before this returns (see
    /// [`Node::preload_report`]). Needs a running tokio runtime.
    pub async fn open(config: NodeConfig) -> Result<Arc<Self>, NodeError> {
        config
            .validate()
            .map_err(|e| NodeError::Setup(e.to_string()))?;
        std::fs::create_dir_all(&config.data_dir).map_err(|e| {
            NodeError::Setup(format!("cannot create {}: {e}", config.data_dir.display()))
        })?;
        let storage: Arc<dyn Storage> = Arc::new(RedbStorage::open_with(
            &config.data_dir,
            config.storage.clone(),
        )?);
        Self::open_with_storage(config, storage).await
    }

    /// Open a node over any [`Storage`] backend.
    pub async fn open_with_storage(
        config: NodeConfig,
        storage: Arc<dyn Storage>,
    ) -> Result<Arc<Self>, NodeError> {
        config
            .validate()
            .map_err(|e| NodeError::Setup(e.to_string()))?;

        let runtime_cfg = RuntimeConfig {
            cache_dir: config
                .runtime
                .cache_dir
                .clone()
                .or_else(|| Some(config.data_dir.join("plugin-cache"))),
            ..config.runtime.clone()
        };
        let runtime = Arc::new(PluginRuntime::new(runtime_cfg)?);
        let registry = PluginRegistry::new(runtime);
        if config.builtin_plugins {
            for (_, bytes) in realmhost_plugin_artifacts::EXAMPLES {
                registry.load(bytes, true)?;
            }
        }
        if let Some(dir) = config.plugins_dir.as_deref().filter(|d| d.is_dir()) {
            for (file, result) in registry.load_dir(dir)? {
                match result {
                    Ok(r) => {
                        tracing::info!(file, realm_type = %r.info.realm_type, version = %r.info.version, "plugin loaded")
                    }
                    Err(e) => tracing::error!(file, error = %e, "plugin refused"),
                }
            }
        }

        let monitor = Arc::new(
            ShardMonitor::new(config.sharding.num_shards, config.monitor.clone())
                .map_err(NodeError::Monitor)?,
        );
        if let Some(bytes) = storage.get_meta(MONITOR_META_KEY).await? {
            match monitor.import_state(&bytes) {
                Ok(()) => tracing::info!("shard monitor record restored"),
                Err(e) => tracing::warn!(error = %e, "shard monitor record not restored"),
            }
        }

        let (hook_tx, snapshot_rx) = tokio::sync::mpsc::unbounded_channel::<Evicted<RealmState>>();
        let counters = Arc::new(Counters::default());
        let hook_counters = counters.clone();
        let store = Arc::new(
            ShardedStore::new(config.sharding.clone())
                .map_err(|e| NodeError::Setup(e.to_string()))?
                .with_eviction_hook(move |ev: Evicted<RealmState>| {
                    if ev.value.is_dirty() {
                        hook_counters
                            .pending_snapshots
                            .fetch_add(1, Ordering::AcqRel);
                        if hook_tx.send(ev).is_err() {
                            hook_counters
                                .pending_snapshots
                                .fetch_sub(1, Ordering::AcqRel);
                        }
                    }
                }),
        );
        let snapshot_task = tokio::spawn(snapshot_evicted(
            storage.clone(),
            counters.clone(),
            snapshot_rx,
        ));
        let eviction = store
            .clone()
            .spawn_eviction_tasks()
            .map_err(|e| NodeError::Setup(e.to_string()))?;

        let node = Arc::new(Self {
            config,
            registry,
            store,
            storage,
            monitor,
            locks: (0..LOCK_STRIPES).map(|_| AsyncMutex::new(())).collect(),
            counters,
            eviction: parking_lot::Mutex::new(Some(eviction)),
            snapshot_task: parking_lot::Mutex::new(Some(snapshot_task)),
            shutting_down: std::sync::atomic::AtomicBool::new(false),
            preloaded: std::sync::OnceLock::new(),
        });
        if !node.config.sharding.lazy_loading_enabled {
            let preloaded = node.preload().await?;
            let _ = node.preloaded.set(preloaded);
        }
        Ok(node)
    }

    /// What loading every stored realm at start found; `None` when lazy
    /// loading is on (realms are then loaded on demand).
    pub fn preload_report(&self) -> Option<&PreloadReport> {
        self.preloaded.get().map(|p| &p.report)
    }

    /// The configuration.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// The plugin registry (load, swap, rollback, list).
    pub fn plugins(&self) -> &PluginRegistry {
        &self.registry
    }

    /// The shard monitor.
    pub fn monitor(&self) -> &ShardMonitor {
        &self.monitor
    }

    /// The in-memory store.
    pub fn store(&self) -> &ShardedStore<RealmState> {
        &self.store
    }

    /// The durable storage.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// Shard of a realm id under the current configuration.
    pub fn shard_of(&self, realm_id: &str) -> usize {
        shard_of(realm_id, self.config.sharding.num_shards)
    }

    fn lock_for(&self, realm_id: &str) -> &AsyncMutex<()> {
        let i = shard_of(realm_id, LOCK_STRIPES);
        &self.locks[i]
    }

    fn validate(&self, ev: &NewEvent) -> Result<(), NodeError> {
        let l = &self.config.limits;
        let bad = |m: String| Err(NodeError::InvalidInput(m));
        if ev.payload.len() > l.max_payload_bytes {
            return bad(format!(
                "payload is {} bytes; the limit is {}",
                ev.payload.len(),
                l.max_payload_bytes
            ));
        }
        if ev.kind.len() > l.max_kind_bytes || ev.kind.chars().any(char::is_control) {
            return bad(format!(
                "kind must be at most {} bytes without control characters",
                l.max_kind_bytes
            ));
        }
        if ev.source.is_empty()
            || ev.source.len() > l.max_source_bytes
            || ev.source.chars().any(char::is_control)
        {
            return bad(format!(
                "source must be 1..={} bytes without control characters",
                l.max_source_bytes
            ));
        }
        Ok(())
    }

    /// Append one event; returns after it is durable.
    #[tracing::instrument(name = "node.append", skip_all, fields(realm = %ev.realm_id, realm_type = %ev.realm_type))]
    pub async fn append(&self, ev: NewEvent) -> Result<AppendReceipt, NodeError> {
        let result = self.append_inner(ev).await;
        match &result {
            Ok(_) => self.counters.appends.fetch_add(1, Ordering::Relaxed),
            Err(NodeError::Rejected { .. }) => {
                self.counters.rejections.fetch_add(1, Ordering::Relaxed)
            }
            Err(_) => self.counters.failures.fetch_add(1, Ordering::Relaxed),
        };
        result
    }

    async fn append_inner(&self, ev: NewEvent) -> Result<AppendReceipt, NodeError> {
        if self.shutting_down.load(Ordering::Acquire) {
            return Err(NodeError::ShuttingDown);
        }
        self.validate(&ev)?;
        let plugin = self.registry.get(&ev.realm_type)?;
        let shard = self.shard_of(ev.realm_id.as_str());
        let crossing_shard = ev
            .source_realm
            .as_ref()
            .map(|r| self.shard_of(r.as_str()))
            .filter(|&s| s != shard);
        let watch = self.config.monitor_enabled;
        if let Some(src) = crossing_shard.filter(|_| watch) {
            self.monitor
                .check_crossing(src)
                .map_err(NodeError::Quarantined)?;
        }
        let source_shard = crossing_shard.unwrap_or(shard);

        let _guard = self.lock_for(ev.realm_id.as_str()).lock().await;
        let current = match self.current(&ev.realm_id).await {
            Ok(s) => Some(s),
            Err(NodeError::RealmNotFound(_)) => None,
            Err(e) => return Err(e),
        };
        // A new realm gets its room in memory before its first event is
        // durable: with lazy loading off the store evicts nothing and refuses
        // realms beyond its limits, and a durable realm it could not hold
        // would be unreachable. Held until the state is published.
        let _room = match current {
            None => Some(self.store.reserve(ev.realm_id.as_str())?),
            Some(_) => None,
        };
        let (base_state, base_seq, snapshot_seq) = match &current {
            Some(s) if s.realm_type() != ev.realm_type => {
                return Err(NodeError::RealmTypeMismatch {
                    realm: ev.realm_id.clone(),
                    actual: s.realm_type().to_owned(),
                    requested: ev.realm_type.clone(),
                });
            }
            Some(s) => {
                let s = self
                    .ensure_version(&ev.realm_id, s.clone(), &plugin)
                    .await?;
                (s.state().to_vec(), s.seq(), s.snapshot_seq())
            }
            None => (plugin.init(ev.realm_id.as_str())?.value, 0, 0),
        };

        let reputation = if watch {
            self.monitor.reputation(source_shard)
        } else {
            1.0
        };
        let record = EventRecord {
            seq: base_seq + 1,
            kind: ev.kind,
            payload: ev.payload,
            source: ev.source,
            source_realm: ev.source_realm.map(String::from),
            timestamp_ms: now_ms(),
            source_reputation: reputation,
        };
        // A refused or failed crossing counts against its source shard.
        let crossing_failed = || {
            if watch && crossing_shard.is_some() {
                self.monitor.record_crossing(source_shard, false);
            }
        };
        let metered = plugin
            .apply(&base_state, &record)
            .inspect_err(|_| crossing_failed())?;
        let gas = if watch {
            self.monitor.record_gas(source_shard, metered.fuel)
        } else {
            metered.fuel
        };
        let realm_type = || plugin.realm_type().to_owned();
        let new_state = match metered.value {
            ApplyOutcome::Applied(s) => s,
            ApplyOutcome::Rejected(rejection) => {
                crossing_failed();
                return Err(NodeError::Rejected {
                    realm_type: realm_type(),
                    rejection,
                });
            }
            ApplyOutcome::Invalid(message) => {
                crossing_failed();
                return Err(NodeError::PluginInvalid {
                    realm_type: realm_type(),
                    message,
                });
            }
        };

        let seq = record.seq;
        let timestamp_ms = record.timestamp_ms;
        let source = record.source.clone();
        self.storage
            .append(AppendRequest {
                realm_id: ev.realm_id.clone(),
                realm_type: plugin.realm_type().to_owned(),
                plugin_version: plugin.version(),
                events: vec![record],
            })
            .await?;

        // Durable: publish.
        let mut snapshot_seq = snapshot_seq;
        if seq - snapshot_seq >= self.config.snapshot_every {
            match self
                .storage
                .put_snapshot(
                    &ev.realm_id,
                    blob_snapshot(seq, plugin.version(), &new_state),
                )
                .await
            {
                Ok(()) => {
                    snapshot_seq = seq;
                    self.counters.snapshots.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    self.counters
                        .snapshot_failures
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(realm = %ev.realm_id, error = %e, "snapshot failed; the log still holds every event");
                }
            }
        }
        let state = RealmState::new(
            plugin.realm_type(),
            seq,
            snapshot_seq,
            plugin.version(),
            new_state,
        );
        self.store.upsert(ev.realm_id.as_str(), state);
        if watch {
            self.monitor.record_event(shard, &source);
            if crossing_shard.is_some() {
                self.monitor.record_crossing(source_shard, true);
            }
        }
        Ok(AppendReceipt {
            realm_id: ev.realm_id.to_string(),
            seq,
            shard,
            plugin_version: plugin.version(),
            fuel: metered.fuel,
            gas,
            timestamp_ms,
        })
    }

    /// Append an event given as JSON: the realm type's plugin encodes it.
    pub async fn append_json(
        &self,
        realm_id: RealmId,
        realm_type: &str,
        kind: &str,
        json: &str,
        source: &str,
        source_realm: Option<RealmId>,
    ) -> Result<AppendReceipt, NodeError> {
        if json.len() > self.config.limits.max_payload_bytes {
            return Err(NodeError::InvalidInput(format!(
                "event JSON is {} bytes; the limit is {}",
                json.len(),
                self.config.limits.max_payload_bytes
            )));
        }
        let plugin = self.registry.get(realm_type)?;
        let payload =
            plugin
                .encode_event(kind, json)?
                .map_err(|message| NodeError::PluginInvalid {
                    realm_type: realm_type.to_owned(),
                    message,
                })?;
        self.append(NewEvent {
            realm_id,
            realm_type: realm_type.to_owned(),
            kind: kind.to_owned(),
            payload,
            source: source.to_owned(),
            source_realm,
        })
        .await
    }

    /// The realm's current state, loading it on a miss.
    async fn current(&self, id: &RealmId) -> Result<Arc<RealmState>, NodeError> {
        let storage = self.storage.clone();
        let counters = self.counters.clone();
        let replay_batch = self.config.replay_batch;
        let replay = self.config.sharding.event_replay_on_load;
        let registry = &self.registry;
        let r = self
            .store
            .get_or_load(id.as_str(), || {
                let storage = storage.clone();
                let counters = counters.clone();
                async move {
                    counters.loads.fetch_add(1, Ordering::Relaxed);
                    state::load_realm(
                        &*storage,
                        registry,
                        id,
                        replay_batch,
                        replay,
                        &counters.load_fallbacks,
                    )
                    .await
                    .map_err(|e| Box::new(e) as crate::store::BoxError)
                }
            })
            .await;
        match r {
            Ok(s) => Ok(s),
            Err(LoadError::NotFound(_)) => Err(NodeError::RealmNotFound(id.clone())),
            // Without lazy loading a miss cannot be filled from storage; a
            // realm storage has never seen is simply new. One that failed to
            // load at start answers with the reason.
            Err(e @ LoadError::LoadingDisabled(_)) => match self.storage.realm_meta(id).await? {
                None => Err(NodeError::RealmNotFound(id.clone())),
                Some(_) => match self.preloaded.get().and_then(|p| p.failed.get(id.as_str())) {
                    Some(source) => Err(LoadError::Loader {
                        realm: Arc::from(id.as_str()),
                        source: Arc::clone(source),
                    }
                    .into()),
                    None => Err(e.into()),
                },
            },
            Err(e) => Err(e.into()),
        }
    }

    /// Rebuild a state built by another plugin version with `plugin`.
    async fn ensure_version(
        &self,
        id: &RealmId,
        s: Arc<RealmState>,
        plugin: &Arc<Plugin>,
    ) -> Result<Arc<RealmState>, NodeError> {
        if s.plugin_version() == plugin.version() {
            return Ok(s);
        }
        let rebuilt = state::rebuild(
            &*self.storage,
            plugin,
            id,
            s.seq(),
            self.config.replay_batch,
        )
        .await?;
        self.counters.rebuilds.fetch_add(1, Ordering::Relaxed);
        let rebuilt = Arc::new(rebuilt);
        self.store.upsert_arc(id.as_str(), rebuilt.clone());
        Ok(rebuilt)
    }

    /// A realm's state as of its last acknowledged event.
    pub async fn get(&self, id: &RealmId) -> Result<(RealmView, Arc<RealmState>), NodeError> {
        let s = self.current(id).await?;
        let plugin = self.registry.get(s.realm_type())?;
        let s = if s.plugin_version() != plugin.version() {
            let _guard = self.lock_for(id.as_str()).lock().await;
            let s = self.current(id).await?;
            self.ensure_version(id, s, &plugin).await?
        } else {
            s
        };
        Ok((self.view(id, &s), s))
    }

    fn view(&self, id: &RealmId, s: &RealmState) -> RealmView {
        RealmView {
            realm_id: id.to_string(),
            realm_type: s.realm_type().to_owned(),
            shard: self.shard_of(id.as_str()),
            seq: s.seq(),
            plugin_version: s.plugin_version(),
            snapshot_seq: s.snapshot_seq(),
            state_bytes: s.state().len(),
            state_hash: hash_hex(s.state()),
        }
    }

    /// Run the realm type's `query` on a realm.
    pub async fn query(&self, id: &RealmId, request: &str) -> Result<String, NodeError> {
        if request.len() > self.config.limits.max_query_bytes {
            return Err(NodeError::InvalidInput(format!(
                "query is {} bytes; the limit is {}",
                request.len(),
                self.config.limits.max_query_bytes
            )));
        }
        let (_, s) = self.get(id).await?;
        let plugin = self.registry.get(s.realm_type())?;
        plugin
            .query(s.state(), request)?
            .map_err(|message| NodeError::PluginInvalid {
                realm_type: s.realm_type().to_owned(),
                message,
            })
    }

    /// Rebuild a realm from its full log with the active plugin and compare
    /// it with the live state by hash.
    pub async fn verify(&self, id: &RealmId) -> Result<VerifyReport, NodeError> {
        let (_, live) = self.get(id).await?;
        let plugin = self.registry.get(live.realm_type())?;
        let t = Instant::now();
        let events = self.storage.events_since(id, 0).await?;
        let events: Vec<_> = events
            .into_iter()
            .take_while(|e| e.seq <= live.seq())
            .collect();
        let init = plugin.init(id.as_str())?.value;
        let replayed = match plugin
            .replay(init, &events, self.config.replay_batch)?
            .value
        {
            Ok(s) => s,
            Err((seq, e)) => {
                return Err(NodeError::PluginInvalid {
                    realm_type: plugin.realm_type().to_owned(),
                    message: format!("replay failed at seq {seq}: {e:?}"),
                });
            }
        };
        let live_hash = hash_hex(live.state());
        let replay_hash = hash_hex(&replayed);
        Ok(VerifyReport {
            realm_id: id.to_string(),
            events: events.len() as u64,
            matches: live_hash == replay_hash,
            live_hash,
            replay_hash,
            micros: t.elapsed().as_micros() as u64,
        })
    }

    /// Realms of one type, in id order, after `after`.
    pub async fn list_realms(
        &self,
        realm_type: &str,
        after: Option<&RealmId>,
        limit: usize,
    ) -> Result<Vec<RealmId>, NodeError> {
        Ok(self
            .storage
            .list_realms(realm_type, after, limit.clamp(1, 10_000))
            .await?)
    }

    /// Shadow replay: rebuild a sample of the realm type's realms (all of them
    /// with `sample = None`) from their full logs through the candidate
    /// version, and read their snapshots back with it. Nothing is written;
    /// live traffic keeps using the active version.
    #[tracing::instrument(name = "node.shadow", skip(self), fields(%version))]
    pub async fn shadow(
        &self,
        realm_type: &str,
        version: PluginVersion,
        sample: Option<usize>,
    ) -> Result<ShadowReport, NodeError> {
        let t = Instant::now();
        let candidate = self.registry.get_version(realm_type, version)?;
        // The inventory, not the log: ids only.
        let mut ids = Vec::new();
        let mut after: Option<RealmId> = None;
        loop {
            let page = self
                .storage
                .list_realms(realm_type, after.as_ref(), 10_000)
                .await?;
            let done = page.len() < 10_000;
            after = page.last().cloned();
            ids.extend(page);
            if done {
                break;
            }
        }
        let total = ids.len();
        let chosen: Vec<RealmId> = match sample {
            Some(n) if n < total => (0..n).map(|i| ids[i * total / n.max(1)].clone()).collect(),
            _ => ids,
        };
        let mut report = ShadowReport {
            realm_type: realm_type.to_owned(),
            candidate: version,
            realms_total: total as u64,
            realms_checked: 0,
            events_replayed: 0,
            failures: Vec::new(),
            millis: 0,
        };
        for id in chosen {
            report.realms_checked += 1;
            let fail = |seq: u64, reason: String| ShadowFailure {
                realm_id: id.to_string(),
                seq,
                reason,
            };
            let Some(load) = self.storage.load_realm(&id).await? else {
                continue;
            };
            let events = if load.snapshot.is_some() {
                self.storage.events_since(&id, 0).await?
            } else {
                load.tail
            };
            report.events_replayed += events.len() as u64;
            let init = match candidate.init(id.as_str()) {
                Ok(m) => m.value,
                Err(e) => {
                    report.failures.push(fail(0, format!("init failed: {e}")));
                    continue;
                }
            };
            match candidate.replay(init, &events, self.config.replay_batch) {
                Ok(m) => {
                    if let Err((seq, e)) = m.value {
                        let reason = match e {
                            ApplyOutcome::Rejected(r) => format!("rejected: {r}"),
                            ApplyOutcome::Invalid(m) => format!("invalid: {m}"),
                            ApplyOutcome::Applied(_) => "unexpected".to_owned(),
                        };
                        report.failures.push(fail(seq, reason));
                        continue;
                    }
                }
                Err(e) => {
                    report.failures.push(fail(0, format!("fault: {e}")));
                    continue;
                }
            }
            if let Some(snap) = &load.snapshot {
                let Some(blob) = snapshot_blob(snap) else {
                    report.failures.push(fail(
                        snap.seq,
                        "snapshot unreadable: not a state blob".into(),
                    ));
                    continue;
                };
                match candidate.restore(blob) {
                    Ok(m) if m.value.is_ok() => {}
                    Ok(m) => report.failures.push(fail(
                        snap.seq,
                        format!("snapshot unreadable: {}", m.value.err().unwrap_or_default()),
                    )),
                    Err(e) => report
                        .failures
                        .push(fail(snap.seq, format!("restore fault: {e}"))),
                }
            }
        }
        report.millis = t.elapsed().as_millis() as u64;
        tracing::info!(
            realm_type,
            checked = report.realms_checked,
            failures = report.failures.len(),
            millis = report.millis,
            "shadow replay done"
        );
        Ok(report)
    }

    /// Make `version` the active version of its realm type. Unless `force`
    /// is set, a shadow replay over `sample` realms must pass first; on
    /// failure nothing changes and the report explains why.
    pub async fn promote(
        &self,
        realm_type: &str,
        version: PluginVersion,
        sample: Option<usize>,
        force: bool,
    ) -> Result<(crate::runtime::PluginInfo, Option<ShadowReport>), NodeError> {
        let report = if force {
            None
        } else {
            Some(self.shadow(realm_type, version, sample).await?)
        };
        if let Some(r) = report.as_ref().filter(|r| !r.passed()) {
            return Err(NodeError::ShadowFailed(Box::new(r.clone())));
        }
        let info = self.registry.swap(realm_type, version)?;
        Ok((info, report))
    }

    /// Roll the realm type back to its previous version.
    pub fn rollback(&self, realm_type: &str) -> Result<crate::runtime::PluginInfo, NodeError> {
        Ok(self.registry.rollback(realm_type)?)
    }

    /// Statistics of the node, the store and the monitor.
    pub fn stats(&self) -> NodeStats {
        let c = &self.counters;
        NodeStats {
            appends: c.appends.load(Ordering::Relaxed),
            rejections: c.rejections.load(Ordering::Relaxed),
            failures: c.failures.load(Ordering::Relaxed),
            snapshots: c.snapshots.load(Ordering::Relaxed),
            loads: c.loads.load(Ordering::Relaxed),
            preloaded: c.preloaded.load(Ordering::Relaxed),
            load_fallbacks: c.load_fallbacks.load(Ordering::Relaxed),
            rebuilds: c.rebuilds.load(Ordering::Relaxed),
            sharding: self.store.stats(),
            monitor: self.monitor.snapshot(),
        }
    }

    /// Analysis of one shard.
    pub fn analyze(&self, shard: usize) -> Result<ShardAnalysis, NodeError> {
        self.monitor.analyze(shard).map_err(NodeError::Monitor)
    }

    /// Quarantine a shard by hand (persisted).
    pub async fn quarantine(&self, shard: usize) -> Result<bool, NodeError> {
        let changed = self.monitor.quarantine(shard).map_err(NodeError::Monitor)?;
        self.persist_monitor().await?;
        Ok(changed)
    }

    /// Release a quarantined shard (persisted).
    pub async fn release(&self, shard: usize) -> Result<bool, NodeError> {
        let changed = self.monitor.release(shard).map_err(NodeError::Monitor)?;
        self.persist_monitor().await?;
        Ok(changed)
    }

    /// Evict every realm beyond each shard's limit... and with `all`, every
    /// realm: dirty ones are snapshotted first. Refused with
    /// [`NodeError::EvictionDisabled`] when lazy loading is off (an evicted
    /// realm could not come back).
    pub async fn evict(&self, all: bool) -> Result<usize, NodeError> {
        if !self.config.sharding.lazy_loading_enabled {
            tracing::warn!(
                all,
                "eviction refused: lazy loading is off, so an evicted realm could not be loaded again"
            );
            return Err(NodeError::EvictionDisabled);
        }
        let n = if all {
            self.store.evict_down_to(0)
        } else {
            self.store.evict_all()
        };
        tracing::info!(evicted = n, all, "eviction requested");
        Ok(n)
    }

    /// Write the shard monitor's record to storage.
    pub async fn persist_monitor(&self) -> Result<(), NodeError> {
        self.storage
            .put_meta(MONITOR_META_KEY, Some(self.monitor.export_state()))
            .await?;
        Ok(())
    }

    /// Graceful shutdown: refuse new appends, wait for those in flight, stop
    /// the eviction tasks, snapshot dirty realms and persist the monitor.
    pub async fn shutdown(&self) -> Result<(), NodeError> {
        self.shutting_down.store(true, Ordering::Release);
        // Taking every stripe waits for appends in flight.
        for l in self.locks.iter() {
            drop(l.lock().await);
        }
        let tasks = self.eviction.lock().take();
        if let Some(t) = tasks {
            t.shutdown().await;
        }
        // Snapshot dirty realms by evicting everything through the hook, and
        // wait (bounded) for the snapshot task to write them.
        self.store.evict_down_to(0);
        let deadline = Instant::now() + std::time::Duration::from_secs(30);
        while self.counters.pending_snapshots.load(Ordering::Acquire) > 0
            && Instant::now() < deadline
        {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let task = self.snapshot_task.lock().take();
        if let Some(t) = task {
            t.abort();
            // Wait for the task to drop its handle on the storage, so the
            // database closes when the node does.
            let _ = t.await;
        }
        self.persist_monitor().await?;
        Ok(())
    }
}

/// Contract 0.1 bridge until the node keeps keyed state: a plugin's opaque
/// state blob, stored as a full snapshot whose only entry is the blob under
/// the empty key (state version 0).
fn blob_snapshot(seq: u64, plugin_version: PluginVersion, state: &[u8]) -> SnapshotWrite {
    SnapshotWrite {
        seq,
        plugin_version,
        state_version: 0,
        body: SnapshotBody::Full(vec![(Arc::from(&[][..]), Arc::from(state))]),
    }
}

/// The blob of a snapshot written by [`blob_snapshot`]; `None` for any other
/// map, which a contract 0.1 plugin cannot restore.
pub(crate) fn snapshot_blob(snap: &Snapshot) -> Option<&[u8]> {
    match snap.entries.as_slice() {
        [(key, blob)] if key.is_empty() && snap.state_version == 0 => Some(blob),
        _ => None,
    }
}

/// Writes snapshots of dirty realms the store evicted.
async fn snapshot_evicted(
    storage: Arc<dyn Storage>,
    counters: Arc<Counters>,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Evicted<RealmState>>,
) {
    while let Some(ev) = rx.recv().await {
        let Ok(id) = RealmId::new(&*ev.realm_id) else {
            counters.pending_snapshots.fetch_sub(1, Ordering::AcqRel);
            continue;
        };
        let s = &ev.value;
        let snap = blob_snapshot(s.seq(), s.plugin_version(), s.state());
        match storage.put_snapshot(&id, snap).await {
            Ok(()) => {
                counters.snapshots.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                counters.snapshot_failures.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(realm = %id, error = %e, "snapshot on eviction skipped");
            }
        }
        counters.pending_snapshots.fetch_sub(1, Ordering::AcqRel);
    }
}
