//! The node: the host that ties the runtime, the store, the storage and the
//! shard monitor together.
//!
//! ## The append path
//! `append(event)` (or `append_with(event, options)`):
//! 1. **validate** — id, sizes, known realm type, the idempotency key (typed
//!    errors, nothing stored);
//! 2. **refuse quarantined crossings** — an event whose `source_realm` lives in
//!    a quarantined shard is refused before any plugin runs;
//! 3. **serialize per realm** — a striped async lock orders appends to one
//!    realm (different realms proceed concurrently); it is held while the
//!    event is applied and enqueued, not while it commits;
//! 4. **base state** — the realm's speculative tip if it has events being
//!    committed ([`pipeline`]), else its durable state from memory, or
//!    loaded (snapshot + tail replay); a state built by an older plugin
//!    version is rebuilt with the active one;
//! 5. **conditions** — an idempotency key already stored for the realm
//!    answers with the original receipt; an expected seq that is not the
//!    base's seq answers [`NodeError::SeqConflict`];
//! 6. **apply** — the plugin runs with the source shard's reputation in the
//!    event context and a fuel budget; a rejection is returned and nothing is
//!    stored;
//! 7. **enqueue** — the event (with its idempotency key, and the realm's
//!    snapshot when due) goes to storage's committer, in the realm's order;
//!    the result becomes the realm's speculative tip and the lock is
//!    released, so the realm's next event can be applied;
//! 8. **durable commit** — group commit in storage; the ack waits for it;
//! 9. **publish** — the new state replaces the old in the store (never a
//!    newer one), the monitor records the event, the crossing outcome and the
//!    gas. A failed commit fails the events queued behind it
//!    ([`NodeError::PipelineAborted`]) and the realm goes back to its last
//!    durable state;
//! 10. **acknowledge**.
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

mod admin;
#[cfg(feature = "server")]
pub mod api;
mod append;
mod config;
mod error;
mod events;
mod exec;
mod health;
mod jobs;
mod messaging;
#[cfg(feature = "server")]
pub mod metrics;
mod ownership;
mod parking;
mod pipeline;
mod plugins;
mod preload;
mod state;
mod stats;
mod unservable;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::Mutex as AsyncMutex;

pub use admin::{ShadowFailure, ShadowReport, VerifyReport};
pub use append::{AppendOptions, AppendReceipt, MAX_IDEMPOTENCY_KEY_BYTES};
pub use config::{ConfigError, HttpConfig, InputLimits, NodeConfig, RateLimitConfig};
pub use error::{NodeError, Unservable};
pub use events::{EventView, EventsPage, MAX_EVENTS_PAGE};
pub use exec::{ExecConfig, ExecStats, ExecTypeStats};
pub use health::Readiness;
pub use jobs::{JobKind, JobProgress, JobState, JobView};
#[cfg(feature = "cluster")]
pub(crate) use messaging::Delivered;
pub use messaging::{
    ChainView, LATENCY_SAMPLES, MAX_MESSAGES_PAGE, MessageStats, MessageView, MessagingConfig,
    PairView, RealmMessages, SettledMessage,
};
#[cfg(feature = "cluster")]
pub(crate) use ownership::ShardOwnership;
pub use parking::{ParkedRealm, ParkingConfig};
pub use plugins::{
    Activation, HistoryEntry, MAX_HISTORY, PluginAction, PluginStartup, Plugins, SeedConflict,
};
pub use preload::{PreloadFailure, PreloadReport};
pub use state::RealmState;
use stats::Counters;
pub use stats::NodeStats;
pub use unservable::UnservableRealm;

use crate::monitor::{ShardAnalysis, ShardMonitor};
use crate::realm::{RealmId, shard_of};
use crate::runtime::Scope;
use crate::runtime::{
    Plugin, PluginRegistry, PluginRuntime, PluginVersion, RuntimeConfig, RuntimeError,
};
use crate::storage::{PartitionedStorage, Storage};
use crate::store::{Evicted, LoadError, ShardedStore};

/// Number of per-realm append lock stripes.
const LOCK_STRIPES: usize = 4096;
/// Snapshots of evicted realms written at once (they share group commits).
const SNAPSHOTS_IN_FLIGHT: usize = 64;
/// Key under which the shard monitor's record is persisted.
const MONITOR_META_KEY: &str = "monitor/state";

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
    /// Number of entries in the realm's state.
    pub entries: u64,
    /// Key + value bytes of the realm's state.
    pub state_bytes: u64,
    /// SHA-256 over every entry in key order (hex; see
    /// [`crate::state::StateMap::content_hash`]).
    pub state_hash: String,
}

/// A running realmhost node.
pub struct Node {
    config: NodeConfig,
    registry: PluginRegistry,
    store: Arc<ShardedStore<RealmState>>,
    storage: Arc<dyn Storage>,
    monitor: Arc<ShardMonitor>,
    locks: Box<[AsyncMutex<()>]>,
    /// Speculative tips of realms with events in flight.
    pipeline: pipeline::Pipeline,
    counters: Arc<Counters>,
    eviction: parking_lot::Mutex<Option<crate::store::EvictionTasks>>,
    snapshot_task: parking_lot::Mutex<Option<tokio::task::JoinHandle<()>>>,
    shutting_down: std::sync::atomic::AtomicBool,
    /// Realms whose events keep faulting.
    parking: parking::Parking,
    /// Set at start when lazy loading is off.
    preloaded: std::sync::OnceLock<preload::Preloaded>,
    /// The stored plugin registry; its lock serializes plugin changes.
    lifecycle: tokio::sync::Mutex<plugins::Manifest>,
    /// What the node found about its plugins at start.
    plugin_startup: PluginStartup,
    /// Realms the active version of their type cannot rebuild.
    unservable: unservable::Unservable,
    /// Authentication and client limits of the HTTP API.
    #[cfg(feature = "server")]
    http_guard: api::guard::Guard,
    /// Where every plugin call runs (never on an async worker).
    exec: exec::ExecPool,
    /// Verify, shadow and preload jobs: progress, results, cancellation.
    jobs: jobs::Jobs,
    /// Messages between realms: queues and counters.
    messenger: Arc<messaging::Messenger>,
    /// The delivery task.
    delivery_task: parking_lot::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Cluster mode: which shards this node serves (unset: all of them).
    cluster: std::sync::OnceLock<Arc<dyn ownership::ShardOwnership>>,
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
        let storage: Arc<dyn Storage> = Arc::new(PartitionedStorage::open_with(
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
        let (manifest, plugin_startup) =
            plugins::open_registry(&config, &*storage, &registry).await?;

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

        let config_parking = config.parking.clone();
        #[cfg(feature = "server")]
        let config_http = config.http.clone();
        let config_exec = config.exec.clone();
        let messenger = Arc::new(messaging::Messenger::new(config.messaging.clone()));
        let node = Arc::new(Self {
            config,
            registry,
            store,
            storage,
            monitor,
            locks: (0..LOCK_STRIPES).map(|_| AsyncMutex::new(())).collect(),
            pipeline: pipeline::Pipeline::default(),
            counters,
            eviction: parking_lot::Mutex::new(Some(eviction)),
            snapshot_task: parking_lot::Mutex::new(Some(snapshot_task)),
            shutting_down: std::sync::atomic::AtomicBool::new(false),
            parking: parking::Parking::new(config_parking),
            preloaded: std::sync::OnceLock::new(),
            lifecycle: tokio::sync::Mutex::new(manifest),
            plugin_startup,
            unservable: unservable::Unservable::default(),
            #[cfg(feature = "server")]
            http_guard: api::guard::Guard::new(&config_http),
            exec: exec::ExecPool::new(&config_exec),
            jobs: jobs::Jobs::default(),
            messenger,
            delivery_task: parking_lot::Mutex::new(None),
            cluster: std::sync::OnceLock::new(),
        });
        if !node.config.sharding.lazy_loading_enabled {
            let preloaded = node.preload().await?;
            let _ = node.preloaded.set(preloaded);
        }
        let delivery = messaging::spawn_delivery(&node).await?;
        *node.delivery_task.lock() = Some(delivery);
        Ok(node)
    }

    /// What loading every stored realm at start found; `None` when lazy
    /// loading is on (realms are then loaded on demand).
    pub fn preload_report(&self) -> Option<&PreloadReport> {
        self.preloaded.get().map(|p| &p.report)
    }

    /// The HTTP API's authentication and client limits.
    #[cfg(feature = "server")]
    pub fn http_guard(&self) -> &api::guard::Guard {
        &self.http_guard
    }

    /// Run `f` — a plugin call, or a replay — on the plugin-execution pool
    /// on behalf of `realm_type`, never on an async worker.
    ///
    /// Waits (without blocking a worker) for one of the pool's slots, within
    /// the realm type's share of them ([`ExecConfig::max_per_type`]); the
    /// result is `f`'s. Fails at once with [`NodeError::Overloaded`] when the
    /// wait queue is full (in all, or for this realm type); fails with
    /// [`NodeError::ExecPanicked`] if `f` panics (only this call; the pool
    /// carries on). If the returned future is dropped while `f` runs, `f`
    /// still runs to its end and keeps its slot until then, so the bound
    /// holds. `f` must own what it uses: move in clones (`Arc<Plugin>`,
    /// `Arc<RealmState>`, a `StateMap` — a cheap persistent-map clone).
    pub async fn run_plugin<R: Send + 'static>(
        &self,
        realm_type: &str,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, NodeError> {
        self.exec.run(realm_type, f).await
    }

    /// One plugin call on the append and query paths: in place if the realm
    /// type's calls are light (they average under
    /// [`ExecConfig::heavy_call_micros`], so they end within microseconds
    /// and a thread hop would cost more than the call), on the pool like
    /// [`Self::run_plugin`] once they are heavy. `f` must not block on the
    /// runtime.
    pub(crate) async fn call_plugin<R: Send + 'static>(
        &self,
        realm_type: &str,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, NodeError> {
        self.exec.call(realm_type, f).await
    }

    /// The configuration.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// The loaded plugins, read-only. Change them through the node
    /// ([`Node::load_plugin`], [`Node::promote`], [`Node::rollback`],
    /// [`Node::unload_plugin`]), which stores every change.
    pub fn plugins(&self) -> Plugins<'_> {
        Plugins::new(&self.registry)
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

    /// The realm's current state, loading it on a miss.
    async fn current(&self, id: &RealmId) -> Result<Arc<RealmState>, NodeError> {
        self.check_owner(id)?;
        let storage = self.storage.clone();
        let counters = self.counters.clone();
        let replay_batch = self.config.replay_batch;
        let replay = self.config.sharding.event_replay_on_load;
        let registry = &self.registry;
        let exec = &self.exec;
        let r = self
            .store
            .get_or_load(id.as_str(), || {
                let storage = storage.clone();
                let counters = counters.clone();
                async move {
                    counters.loads.fetch_add(1, Ordering::Relaxed);
                    state::load_realm(
                        &storage,
                        registry,
                        exec,
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
        if let Err(LoadError::Loader { source, .. }) = &r
            && let Some(state::LoadFailure::Node(NodeError::Plugin(e))) =
                source.downcast_ref::<state::LoadFailure>()
            && let Some(t) = e.realm_type()
        {
            self.note_fault(id, t, e);
        }
        if let Err(LoadError::Loader { source, .. }) = &r
            && let Some(f) = source.downcast_ref::<state::LoadFailure>()
        {
            if let Some(e) = f.unservable(id) {
                self.note_unservable(&e);
                return Err(e);
            }
            // The pool refused the rebuild: the node is busy, not the realm
            // broken.
            if let state::LoadFailure::Node(NodeError::Overloaded {
                realm_type,
                queued,
                limit,
            }) = f
            {
                return Err(NodeError::Overloaded {
                    realm_type: realm_type.clone(),
                    queued: *queued,
                    limit: *limit,
                });
            }
            // A stored realm whose type has no plugin (reported at start).
            if let state::LoadFailure::Node(NodeError::UnknownRealmType(t)) = f {
                return Err(NodeError::UnknownRealmType(t.clone()));
            }
        }
        match r {
            Ok(s) => {
                self.unservable.clear(id.as_str());
                Ok(s)
            }
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
            &self.storage,
            &self.exec,
            plugin,
            id,
            s.seq(),
            self.config.replay_batch,
        )
        .await
        .inspect_err(|e| self.note_unservable(e))?;
        self.unservable.clear(id.as_str());
        self.counters.rebuilds.fetch_add(1, Ordering::Relaxed);
        let rebuilt = Arc::new(rebuilt);
        self.store.upsert_arc(id.as_str(), rebuilt.clone());
        Ok(rebuilt)
    }

    /// Refuse a parked realm before any plugin runs for it.
    fn check_parked(&self, id: &RealmId) -> Result<(), NodeError> {
        match self.parking.parked(id.as_str()) {
            Some(last_fault) => Err(NodeError::RealmParked {
                realm: id.clone(),
                last_fault,
            }),
            None => Ok(()),
        }
    }

    /// Attribute a plugin fault to the realm it happened in (parking it when
    /// its faults repeat).
    fn note_fault(&self, id: &RealmId, realm_type: &str, e: &RuntimeError) {
        if e.is_plugin_fault() {
            self.parking
                .record_fault(id.as_str(), realm_type, e.to_string(), now_ms());
        }
    }

    /// A realm's state as of its last acknowledged event, with its view
    /// (which hashes every entry: O(realm)).
    pub async fn get(&self, id: &RealmId) -> Result<(RealmView, Arc<RealmState>), NodeError> {
        let s = self.state(id).await?;
        Ok((self.view(id, &s), s))
    }

    /// A realm's state as of its last acknowledged event, built by the active
    /// plugin version. Unlike [`Node::get`] it does no work proportional to
    /// the realm's size when the realm is in memory.
    pub async fn state(&self, id: &RealmId) -> Result<Arc<RealmState>, NodeError> {
        self.check_parked(id)?;
        let s = self.current(id).await?;
        let plugin = self.registry.get(s.realm_type())?;
        if s.plugin_version() == plugin.version() {
            return Ok(s);
        }
        let _guard = self.lock_for(id.as_str()).lock().await;
        let s = self.current(id).await?;
        self.ensure_version(id, s, &plugin).await
    }

    fn view(&self, id: &RealmId, s: &RealmState) -> RealmView {
        RealmView {
            realm_id: id.to_string(),
            realm_type: s.realm_type().to_owned(),
            shard: self.shard_of(id.as_str()),
            seq: s.seq(),
            plugin_version: s.plugin_version(),
            snapshot_seq: s.snapshot_seq(),
            entries: s.map().len(),
            state_bytes: s.map().data_bytes(),
            state_hash: hex::encode(s.map().content_hash()),
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
        let s = self.state(id).await?;
        let plugin = self.registry.get(s.realm_type())?;
        let (rid, request, state) = (id.clone(), request.to_owned(), s.clone());
        self.call_plugin(s.realm_type(), move || {
            plugin.query(Scope::new(rid.as_str(), state.map()), &request)
        })
        .await?
        .inspect_err(|e| self.note_fault(id, s.realm_type(), e))?
        .map_err(|message| NodeError::PluginInvalid {
            realm: id.clone(),
            realm_type: s.realm_type().to_owned(),
            message,
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
        // Deliveries stop; undelivered messages stay in their outboxes.
        let delivery = self.delivery_task.lock().take();
        if let Some(t) = delivery {
            t.abort();
            let _ = t.await;
        }
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

/// Writes snapshots of dirty realms the store evicted.
async fn snapshot_evicted(
    storage: Arc<dyn Storage>,
    counters: Arc<Counters>,
    rx: tokio::sync::mpsc::UnboundedReceiver<Evicted<RealmState>>,
) {
    use futures::StreamExt;
    // Many at once, so they share group commits: one at a time, an
    // eviction of 25 000 dirty realms (and a shutdown) waited for 25 000
    // fsyncs. A stale snapshot of a realm (an older seq than the stored one)
    // is refused by storage, so their order does not matter.
    let evicted =
        futures::stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|ev| (ev, rx)) },
        );
    evicted
        .for_each_concurrent(SNAPSHOTS_IN_FLIGHT, |ev| {
            let (storage, counters) = (&storage, &counters);
            async move {
                if let Ok(id) = RealmId::new(&*ev.realm_id) {
                    match append::write_snapshot(&**storage, &id, &ev.value).await {
                        Ok(()) => {
                            counters.snapshots.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            counters.snapshot_failures.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(realm = %id, error = %e, "snapshot on eviction skipped");
                        }
                    }
                }
                counters.pending_snapshots.fetch_sub(1, Ordering::AcqRel);
            }
        })
        .await;
}
