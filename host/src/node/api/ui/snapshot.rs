//! `GET /v1/ui/snapshot`: everything the page draws, in one compact body.
//!
//! The page polls this about once a second from every open tab, on a node
//! that may be busy, so building it must stay cheap and bounded:
//! - per-shard figures come from counters the store and the monitor already
//!   keep (`O(shards)`), never from a walk over realms;
//! - the busiest realms come from the bounded tracker in [`super::top`];
//! - parked realms come from the parking record, which is bounded by its
//!   `max_tracked`;
//! - message figures are the node's message counters; the dead letters
//!   themselves are a storage read, so the page asks for them separately
//!   (read scope) and not on every poll;
//! - a plugin change in progress holds the registry's lock for the whole
//!   shadow replay, so the history is read only if the lock is free at
//!   once, and the last known entry is shown meanwhile (with `changing`);
//! - one body is built at most every [`CACHE_FOR`] and shared by every
//!   caller in that time.
//!
//! Shard figures travel as columns (one array per figure, indexed by shard)
//! with floats rounded to three decimals: 256 shards cost a few kilobytes.
//! Rates are not computed here: the page divides the difference of two
//! snapshots' counters by the difference of their `taken_at_ms`.

use std::collections::BTreeMap;
use std::future::Future as _;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use parking_lot::Mutex;
use serde::Serialize;

use super::top::{TopRealm, TopRealms};
use crate::monitor::QuarantineReason;
use crate::node::{HistoryEntry, JobKind, JobState, JobView, MessageStats, Node, now_ms};

/// How long one built body is served to every caller.
pub(crate) const CACHE_FOR: Duration = Duration::from_millis(500);
/// Realms listed as the busiest.
pub(crate) const TOP_REALMS: usize = 10;

/// The whole page's data at one moment.
#[derive(Debug, Serialize)]
pub struct UiSnapshot {
    /// Wall-clock time of the snapshot, ms since the Unix epoch.
    pub taken_at_ms: u64,
    /// Node-wide figures.
    pub node: NodeSummary,
    /// Monotonic counters since start, for rates.
    pub counters: Counters,
    /// Per-shard figures, one entry per shard in each column.
    pub shards: ShardColumns,
    /// Plugin versions and their lifecycle, by realm type.
    pub plugins: Vec<PluginTypeView>,
    /// The busiest realms recently (appends through this API).
    pub top_realms: Vec<TopRealm>,
    /// Pending messages and dead letters.
    pub messaging: Messaging,
}

/// Node-wide figures.
#[derive(Debug, Serialize)]
pub struct NodeSummary {
    /// Shard count.
    pub num_shards: usize,
    /// Target realms in memory per shard.
    pub max_per_shard: usize,
    /// Realms in memory.
    pub loaded_realms: usize,
    /// Bytes of state in memory.
    pub state_bytes: u64,
    /// Monitor health score, 0..=100.
    pub health_score: f64,
    /// Median entropy of the judged shards.
    pub global_entropy: Option<f64>,
    /// Shards quarantined.
    pub quarantined_shards: usize,
    /// Shards whose last entropy check raised an alarm.
    pub alarmed_shards: usize,
    /// Realms parked after repeated faults.
    pub parked_realms: u64,
    /// Realms the active version of their type cannot rebuild.
    pub unservable_realms: u64,
    /// Realms with events being committed right now.
    pub realms_in_flight: u64,
    /// Whether storage accepts writes.
    pub storage_writable: bool,
    /// The last storage write failure, if any.
    pub storage_error: Option<String>,
    /// Plugin calls running / waiting on the execution pool.
    pub exec_busy: usize,
    /// Calls waiting for a pool slot.
    pub exec_queued: usize,
    /// Pool slots.
    pub exec_threads: usize,
    /// Whether admin actions are possible at all (an admin token is set).
    pub admin_enabled: bool,
}

/// Counters since start; the page turns them into rates.
#[derive(Debug, Serialize)]
pub struct Counters {
    /// Appends acknowledged: applied and durably committed.
    pub appends: u64,
    /// Appends a plugin rejected (a domain "no").
    pub rejections: u64,
    /// Appends that failed otherwise.
    pub failures: u64,
    /// Plugin calls.
    pub plugin_calls: u64,
    /// Plugin calls that trapped or broke the contract.
    pub plugin_faults: u64,
    /// Group commits that failed.
    pub failed_commits: u64,
    /// Snapshots written.
    pub snapshots: u64,
    /// Realms loaded from storage on demand.
    pub loads: u64,
    /// Realms evicted.
    pub evictions: u64,
    /// Messages stored with their sending events.
    pub messages_sent: u64,
    /// Messages whose delivery ended (any outcome).
    pub messages_settled: u64,
}

/// Per-shard figures as columns indexed by shard.
#[derive(Debug, Default, Serialize)]
pub struct ShardColumns {
    /// Realms in memory.
    pub loaded: Vec<usize>,
    /// Lookups answered from memory.
    pub hits: Vec<u64>,
    /// Lookups that missed.
    pub misses: Vec<u64>,
    /// Events recorded by the monitor.
    pub activity: Vec<u64>,
    /// Source entropy, `null` while too little traffic to judge.
    pub entropy: Vec<Option<f64>>,
    /// Reputation in `[0, 1]`.
    pub reputation: Vec<f64>,
    /// Quarantine reason, `null` when not quarantined.
    pub quarantine: Vec<Option<QuarantineReason>>,
    /// Whether the last entropy check raised an alarm.
    pub alarm: Vec<bool>,
    /// Parked realms.
    pub parked: Vec<u32>,
}

/// One version of a realm type.
#[derive(Debug, Serialize)]
pub struct VersionView {
    /// Semantic version.
    pub semver: String,
    /// Content hash (hex): what swap and unload accept.
    pub version: String,
    /// Serves new calls.
    pub active: bool,
    /// What a rollback returns to.
    pub previous: bool,
    /// Calls made to it.
    pub calls: u64,
    /// Calls that faulted.
    pub faults: u64,
    /// The last fault, while the version is quarantined.
    pub quarantined: Option<String>,
}

/// The latest shadow replay of a realm type.
#[derive(Debug, Serialize)]
pub struct ShadowView {
    /// Job id (`/v1/admin/jobs/{id}`).
    pub job: u64,
    /// The candidate, `type@short-hash`.
    pub target: String,
    /// Running, done, failed or cancelled.
    pub state: JobState,
    /// Realms replayed.
    pub realms_done: u64,
    /// Realms to replay.
    pub realms_total: u64,
    /// Whether every replayed realm rebuilt cleanly, once done.
    pub passed: Option<bool>,
}

/// A realm type's versions and lifecycle.
#[derive(Debug, Serialize)]
pub struct PluginTypeView {
    /// Realm type.
    pub realm_type: String,
    /// Every loaded version.
    pub versions: Vec<VersionView>,
    /// The latest load, activation, swap, rollback or unload.
    pub last_change: Option<HistoryEntry>,
    /// A swap or rollback of this type is checking its candidate now.
    pub changing: bool,
    /// The latest shadow replay.
    pub shadow: Option<ShadowView>,
}

/// Messages between realms: the node's message counters (`pending` and
/// `in_flight` are levels, the others count since start). The dead letters
/// themselves are listed by the page through the read-scope route
/// `/v1/admin/messages/dead`, with the token, not here.
#[derive(Debug, Serialize)]
pub struct Messaging {
    /// Always true: the node carries messages between realms (the page
    /// of an older node says otherwise).
    pub available: bool,
    /// The counters, flattened into this object.
    #[serde(flatten)]
    pub stats: MessageStats,
}

/// Round to three decimals: enough for a colour and a tooltip, and short.
fn r3(x: f64) -> f64 {
    if x.is_finite() {
        (x * 1000.0).round() / 1000.0
    } else {
        0.0
    }
}

/// Messages settled with any outcome.
fn settled(m: &MessageStats) -> u64 {
    m.accepted + m.rejected + m.invalid + m.expired + m.dead_lettered
}

/// State kept between snapshots: the busiest-realm tracker, the last body
/// and the last known plugin history per realm type.
#[derive(Debug, Default)]
pub struct UiState {
    /// Fed by the append route.
    pub(crate) top: TopRealms,
    cached: Mutex<Option<(Instant, Bytes)>>,
    last_change: Mutex<BTreeMap<String, HistoryEntry>>,
}

impl UiState {
    /// The serialized snapshot, rebuilt when the cached one is older than
    /// [`CACHE_FOR`]. Callers that arrive while it is rebuilt wait for that
    /// one build instead of starting their own.
    pub(crate) fn body(&self, node: &Node) -> Result<Bytes, serde_json::Error> {
        let mut cached = self.cached.lock();
        if let Some((at, body)) = &*cached
            && at.elapsed() < CACHE_FOR
        {
            return Ok(body.clone());
        }
        let body = Bytes::from(serde_json::to_vec(&self.build(node))?);
        *cached = Some((Instant::now(), body.clone()));
        Ok(body)
    }

    /// Build a snapshot now.
    pub fn build(&self, node: &Node) -> UiSnapshot {
        let stats = node.stats();
        let store = &stats.sharding;
        let monitor = &stats.monitor;
        let n = store.num_shards;
        let mut shards = ShardColumns::default();
        for s in &store.shards {
            shards.loaded.push(s.loaded_count);
            shards.hits.push(s.cache_hits);
            shards.misses.push(s.cache_misses);
        }
        for m in &monitor.shards {
            shards.activity.push(m.activity);
            shards.entropy.push(m.entropy.map(r3));
            shards.reputation.push(r3(m.reputation));
            shards
                .quarantine
                .push(m.quarantine_reason.filter(|_| m.quarantined));
            shards.alarm.push(m.alarm_active);
        }
        shards.parked = vec![0; n];
        if stats.parked_realms > 0 {
            for p in node.parked_realms() {
                if let Some(c) = shards.parked.get_mut(node.shard_of(&p.realm_id)) {
                    *c = c.saturating_add(1);
                }
            }
        }
        let listing = node.plugins().list();
        let plugin_calls = listing.iter().map(|p| p.calls).sum();
        let plugin_faults = listing.iter().map(|p| p.faults).sum();
        UiSnapshot {
            taken_at_ms: now_ms(),
            node: NodeSummary {
                num_shards: n,
                max_per_shard: store.max_per_shard,
                loaded_realms: store.total_loaded_realms,
                state_bytes: store.total_state_bytes,
                health_score: r3(monitor.health_score),
                global_entropy: monitor.global_entropy.map(r3),
                quarantined_shards: monitor.quarantined_count,
                alarmed_shards: monitor.alarm_active_count,
                parked_realms: stats.parked_realms,
                unservable_realms: stats.unservable_realms,
                realms_in_flight: stats.realms_in_flight,
                storage_writable: stats.storage.writable,
                storage_error: stats.storage.last_error.clone(),
                exec_busy: stats.exec.busy,
                exec_queued: stats.exec.queued,
                exec_threads: stats.exec.threads,
                admin_enabled: node.config().http.admin_token.is_some(),
            },
            counters: Counters {
                appends: stats.appends,
                rejections: stats.rejections,
                failures: stats.failures,
                plugin_calls,
                plugin_faults,
                failed_commits: stats.storage.failed_commits,
                snapshots: stats.snapshots,
                loads: store.total_loads,
                evictions: store.total_evictions,
                messages_sent: stats.messages.sent,
                messages_settled: settled(&stats.messages),
            },
            shards,
            plugins: self.plugins(node, listing),
            top_realms: self.top.top(TOP_REALMS),
            messaging: Messaging {
                available: true,
                stats: stats.messages.clone(),
            },
        }
    }

    fn plugins(
        &self,
        node: &Node,
        listing: Vec<crate::runtime::PluginListing>,
    ) -> Vec<PluginTypeView> {
        // The registry's lock is held through a whole swap (its shadow
        // replay included): never wait for it here. One poll takes the
        // history if the lock is free.
        let mut read = std::pin::pin!(node.plugin_history());
        let changing = match read.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(history) => {
                let mut last = self.last_change.lock();
                last.clear();
                for e in history {
                    last.insert(e.realm_type.clone(), e);
                }
                false
            }
            Poll::Pending => true,
        };
        let last = self.last_change.lock();
        let shadows = latest_shadows(node.jobs());
        let mut by_type: BTreeMap<String, PluginTypeView> = BTreeMap::new();
        for p in listing {
            let t = by_type
                .entry(p.info.realm_type.clone())
                .or_insert_with(|| PluginTypeView {
                    realm_type: p.info.realm_type.clone(),
                    versions: Vec::new(),
                    last_change: last.get(&p.info.realm_type).cloned(),
                    // A running shadow replay while the registry is locked
                    // is a swap's or rollback's check, not a lone replay.
                    changing: changing
                        && shadows
                            .get(&p.info.realm_type)
                            .is_some_and(|s| s.state == JobState::Running),
                    shadow: None,
                });
            t.versions.push(VersionView {
                semver: p.info.semver,
                version: p.info.version.to_hex(),
                active: p.active,
                previous: p.previous,
                calls: p.calls,
                faults: p.faults,
                quarantined: p.quarantined,
            });
        }
        for (ty, s) in shadows {
            if let Some(t) = by_type.get_mut(&ty) {
                t.shadow = Some(s);
            }
        }
        by_type.into_values().collect()
    }
}

/// The latest shadow job of each realm type.
fn latest_shadows(jobs: Vec<JobView>) -> BTreeMap<String, ShadowView> {
    let mut out = BTreeMap::new();
    for j in jobs.into_iter().filter(|j| j.kind == JobKind::Shadow) {
        let Some((ty, _)) = j.target.split_once('@') else {
            continue;
        };
        let passed = j.result.as_ref().and_then(|r| {
            r.get("failures")
                .and_then(serde_json::Value::as_array)
                .map(Vec::is_empty)
        });
        let view = ShadowView {
            job: j.id,
            target: j.target.clone(),
            state: j.state,
            realms_done: j.progress.realms_done,
            realms_total: j.progress.realms_total,
            passed,
        };
        // Jobs come oldest first: a later one replaces an earlier one.
        out.insert(ty.to_owned(), view);
    }
    out
}
