//! The node's counters and the statistics it reports (`/v1/stats`,
//! `realmhost shard status`, the operator page).

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use super::{ExecStats, MessageStats, Node};
use crate::monitor::ShardMonitorSnapshot;
use crate::store::ShardingStats;

/// Node counters.
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) appends: AtomicU64,
    pub(super) rejections: AtomicU64,
    pub(super) failures: AtomicU64,
    pub(super) snapshots: AtomicU64,
    pub(super) snapshot_failures: AtomicU64,
    pub(super) loads: AtomicU64,
    pub(super) preloaded: AtomicU64,
    pub(super) load_fallbacks: AtomicU64,
    pub(super) rebuilds: AtomicU64,
    /// Evicted dirty realms whose snapshot is not written yet.
    pub(super) pending_snapshots: AtomicU64,
    /// Appends answered with the receipt of an earlier one (same key).
    pub(super) replays: AtomicU64,
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
    /// Appends applied behind an earlier event of their realm that was
    /// still being committed (pipelined).
    #[serde(default)]
    pub pipelined_appends: u64,
    /// Pipelined appends that failed because an earlier event's commit did.
    #[serde(default)]
    pub pipeline_aborts: u64,
    /// Realms with events being committed right now.
    #[serde(default)]
    pub realms_in_flight: u64,
    /// Appends answered with the receipt of an earlier append with the same
    /// idempotency key (nothing appended).
    #[serde(default)]
    pub idempotent_replays: u64,
    /// Realms parked after repeated faults.
    #[serde(default)]
    pub parked_realms: u64,
    /// Realms the active plugin version of their type cannot rebuild.
    #[serde(default)]
    pub unservable_realms: u64,
    /// Realm types with stored realms and no plugin (found at start).
    #[serde(default)]
    pub unserved_realm_types: Vec<String>,
    /// Whether storage accepts writes (failing since when, last error).
    #[serde(default)]
    pub storage: crate::storage::StorageHealth,
    /// The plugin-execution pool: slots, busy, queued, refusals.
    #[serde(default)]
    pub exec: ExecStats,
    /// The store.
    pub sharding: ShardingStats,
    /// The shard monitor.
    pub monitor: ShardMonitorSnapshot,
    /// Messages between realms.
    #[serde(default)]
    pub messages: MessageStats,
}

impl Node {
    /// Statistics of the node, the store and the monitor.
    pub fn stats(&self) -> NodeStats {
        let c = &self.counters;
        NodeStats {
            parked_realms: self.parking.count() as u64,
            unservable_realms: self.unservable.count() as u64,
            unserved_realm_types: self.plugin_startup.unserved_types.clone(),
            appends: c.appends.load(Ordering::Relaxed),
            rejections: c.rejections.load(Ordering::Relaxed),
            failures: c.failures.load(Ordering::Relaxed),
            snapshots: c.snapshots.load(Ordering::Relaxed),
            loads: c.loads.load(Ordering::Relaxed),
            preloaded: c.preloaded.load(Ordering::Relaxed),
            load_fallbacks: c.load_fallbacks.load(Ordering::Relaxed),
            rebuilds: c.rebuilds.load(Ordering::Relaxed),
            pipelined_appends: self.pipeline.pipelined.load(Ordering::Relaxed),
            pipeline_aborts: self.pipeline.aborted.load(Ordering::Relaxed),
            realms_in_flight: self.pipeline.realms_in_flight() as u64,
            idempotent_replays: c.replays.load(Ordering::Relaxed),
            storage: self.storage.health(),
            exec: self.exec.stats(),
            sharding: self.store.stats(),
            monitor: self.monitor.snapshot(),
            messages: self.messenger.stats(),
        }
    }
}
