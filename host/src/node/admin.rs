//! Operator actions on realms and plugin versions: verify, shadow replay and
//! parked realms. Loading, swapping, rolling back and unloading plugin
//! versions are in `plugins` (they are stored).

use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::jobs::{self, Job, JobKind};
use super::parking::ParkedRealm;
use super::state;
use super::{Node, NodeError, exec};
use crate::realm::{EventRecord, RealmId};
use crate::runtime::{Plugin, PluginVersion, Scope};
use crate::state::StateMap;
use crate::storage::RealmLoad;

/// `apply-batch` calls per pool call in a tracked replay: a cancel is seen,
/// and the slot offered to others, this often.
const REPLAY_CHUNK_BATCHES: usize = 10;

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

impl Node {
    /// A realm's whole log, read on a blocking thread (it may be long, and
    /// the read may touch the disk).
    async fn read_log(&self, id: &RealmId) -> Result<Vec<EventRecord>, NodeError> {
        let (storage, rid) = (self.storage.clone(), id.clone());
        let handle = tokio::runtime::Handle::current();
        Ok(exec::blocking_io("log read", move || {
            handle.block_on(storage.events_since(&rid, 0))
        })
        .await??)
    }

    /// What storage holds for a realm (snapshot included) and its whole
    /// log, read on a blocking thread; `None` if it has no events.
    async fn read_load_and_log(
        &self,
        id: &RealmId,
    ) -> Result<Option<(RealmLoad, Vec<EventRecord>)>, NodeError> {
        let (storage, rid) = (self.storage.clone(), id.clone());
        let handle = tokio::runtime::Handle::current();
        exec::blocking_io("realm read", move || {
            handle.block_on(async {
                let Some(mut load) = storage.load_realm(&rid).await? else {
                    return Ok(None);
                };
                let events = if load.snapshot.is_some() {
                    storage.events_since(&rid, 0).await?
                } else {
                    std::mem::take(&mut load.tail)
                };
                Ok(Some((load, events)))
            })
        })
        .await?
    }

    /// Realms parked after repeated faults.
    pub fn parked_realms(&self) -> Vec<ParkedRealm> {
        self.parking.list()
    }

    /// Release a parked realm; returns whether it was parked.
    pub fn release_realm(&self, id: &RealmId) -> bool {
        let released = self.parking.release(id.as_str());
        if released {
            tracing::info!(realm = %id, "parked realm released by an operator");
        }
        released
    }

    /// Replay `events` from `init` with `plugin` on the pool, a chunk of
    /// [`REPLAY_CHUNK_BATCHES`] `apply-batch` calls at a time: between chunks
    /// the job's progress moves and a cancel is seen, and other calls get
    /// the slot. The outer error stops the job (cancelled, overloaded); the
    /// inner one is the realm's (its plugin refused an event).
    async fn replay_tracked(
        &self,
        plugin: &Arc<Plugin>,
        id: &RealmId,
        events: Vec<EventRecord>,
        job: &Job,
    ) -> Result<Result<StateMap, state::LoadFailure>, NodeError> {
        job.check()?;
        let batch = self.config.replay_batch;
        let chunk = batch.saturating_mul(REPLAY_CHUNK_BATCHES).max(1);
        let events = Arc::new(events);
        let (p, rid) = (plugin.clone(), id.clone());
        let mut map = match self
            .run_plugin(plugin.realm_type(), move || state::init_map(&p, &rid))
            .await?
        {
            Ok(m) => m,
            Err(e) => return Ok(Err(e)),
        };
        let mut from = 0;
        while from < events.len() {
            job.check()?;
            let to = (from + chunk).min(events.len());
            let (p, rid, ev) = (plugin.clone(), id.clone(), events.clone());
            let m = map;
            map = match self
                .run_plugin(plugin.realm_type(), move || {
                    state::replay_part(&p, &rid, m, &ev[from..to], batch)
                })
                .await?
            {
                Ok(m) => m,
                Err(e) => return Ok(Err(e)),
            };
            job.add_events_replayed((to - from) as u64);
            from = to;
        }
        Ok(Ok(map))
    }

    /// Rebuild a realm from its full log with the active plugin and compare
    /// it with the live state by hash. Runs as a job (see
    /// [`Node::start_verify`] to start one without waiting).
    pub async fn verify(&self, id: &RealmId) -> Result<VerifyReport, NodeError> {
        let job = self.jobs.create(JobKind::Verify, id.to_string());
        jobs::tracked(job.clone(), self.verify_job(id, &job)).await
    }

    #[tracing::instrument(name = "node.verify", skip_all, fields(realm = %id, job = job.id()))]
    pub(super) async fn verify_job(
        &self,
        id: &RealmId,
        job: &Job,
    ) -> Result<VerifyReport, NodeError> {
        let live = self.state(id).await?;
        let plugin = self.registry.get(live.realm_type())?;
        job.set_realms_total(1);
        let t = Instant::now();
        let events = self.read_log(id).await?;
        let events: Vec<_> = events
            .into_iter()
            .take_while(|e| e.seq <= live.seq())
            .collect();
        let n_events = events.len() as u64;
        job.add_events_total(n_events);
        let replayed = self
            .replay_tracked(&plugin, id, events, job)
            .await?
            .map_err(|e| state::load_failure_to_node(e, &plugin, id))?;
        // Hashing reads every entry of both maps: on the pool too.
        let (live_hash, replay_hash) = self
            .run_plugin(plugin.realm_type(), move || {
                (
                    hex::encode(live.map().content_hash()),
                    hex::encode(replayed.content_hash()),
                )
            })
            .await?;
        job.realm_done();
        Ok(VerifyReport {
            realm_id: id.to_string(),
            events: n_events,
            matches: live_hash == replay_hash,
            live_hash,
            replay_hash,
            micros: t.elapsed().as_micros() as u64,
        })
    }

    /// Shadow replay: rebuild a sample of the realm type's realms (all of them
    /// with `sample = None`) from their full logs through the candidate
    /// version, and read their snapshots back with it. Nothing is written;
    /// live traffic keeps using the active version. Runs as a job (see
    /// [`Node::start_shadow`] to start one without waiting).
    pub async fn shadow(
        &self,
        realm_type: &str,
        version: PluginVersion,
        sample: Option<usize>,
    ) -> Result<ShadowReport, NodeError> {
        let job = self
            .jobs
            .create(JobKind::Shadow, format!("{realm_type}@{}", version.short()));
        jobs::tracked(
            job.clone(),
            self.shadow_job(realm_type, version, sample, &job),
        )
        .await
    }

    #[tracing::instrument(name = "node.shadow", skip(self, job), fields(%version, job = job.id()))]
    pub(super) async fn shadow_job(
        &self,
        realm_type: &str,
        version: PluginVersion,
        sample: Option<usize>,
        job: &Job,
    ) -> Result<ShadowReport, NodeError> {
        let t = Instant::now();
        let candidate = self.registry.get_version(realm_type, version)?;
        // The inventory, not the log: ids only.
        let mut ids = Vec::new();
        let mut after: Option<RealmId> = None;
        loop {
            job.check()?;
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
        job.set_realms_total(chosen.len() as u64);
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
            job.check()?;
            report.realms_checked += 1;
            if let Some(f) = self.shadow_one(&candidate, &id, job, &mut report).await? {
                report.failures.push(f);
            }
            job.realm_done();
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

    /// Replay one realm through the candidate and check its snapshot still
    /// reads; the failure, if any.
    async fn shadow_one(
        &self,
        candidate: &Arc<Plugin>,
        id: &RealmId,
        job: &Job,
        report: &mut ShadowReport,
    ) -> Result<Option<ShadowFailure>, NodeError> {
        let fail = |seq: u64, reason: String| {
            Ok(Some(ShadowFailure {
                realm_id: id.to_string(),
                seq,
                reason,
            }))
        };
        let Some((load, events)) = self.read_load_and_log(id).await? else {
            return Ok(None);
        };
        report.events_replayed += events.len() as u64;
        job.add_events_total(events.len() as u64);
        match self.replay_tracked(candidate, id, events, job).await? {
            Ok(_) => {}
            Err(state::LoadFailure::Replay(f)) => return fail(f.seq, f.reason),
            Err(e) => return fail(0, format!("fault: {e}")),
        }
        // The stored snapshot must still be usable: written with an older
        // state version, it goes through the candidate's `migrate`.
        let Some(snap) = load
            .snapshot
            .filter(|s| s.state_version < candidate.state_version())
        else {
            return Ok(None);
        };
        let (seq, from) = (snap.seq, snap.state_version);
        let (c, rid) = (candidate.clone(), id.clone());
        let migrated = self
            .run_plugin(candidate.realm_type(), move || {
                let map = StateMap::from_sorted(snap.entries)?;
                Some(c.migrate(Scope::new(rid.as_str(), &map), from))
            })
            .await?;
        match migrated {
            None => fail(seq, "snapshot entries out of order".to_owned()),
            Some(Ok(m)) => match m.value {
                Ok(_) => Ok(None),
                Err(reason) => fail(seq, format!("migrate from state version {from}: {reason}")),
            },
            Some(Err(e)) => fail(seq, format!("migrate fault: {e}")),
        }
    }
}
