//! Operator actions on realms and plugin versions: verify, shadow replay and
//! parked realms. Loading, swapping, rolling back and unloading plugin
//! versions are in `plugins` (they are stored).

use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::parking::ParkedRealm;
use super::state;
use super::{Node, NodeError};
use crate::realm::RealmId;
use crate::runtime::{PluginVersion, Scope};

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

    /// Rebuild a realm from its full log with the active plugin and compare
    /// it with the live state by hash.
    pub async fn verify(&self, id: &RealmId) -> Result<VerifyReport, NodeError> {
        let live = self.state(id).await?;
        let plugin = self.registry.get(live.realm_type())?;
        let t = Instant::now();
        let events = self.storage.events_since(id, 0).await?;
        let events: Vec<_> = events
            .into_iter()
            .take_while(|e| e.seq <= live.seq())
            .collect();
        let n_events = events.len() as u64;
        let batch = self.config.replay_batch;
        let (p, rid) = (plugin.clone(), id.clone());
        // The replay runs in the sandbox for the whole log: off the async
        // workers.
        let replayed =
            tokio::task::spawn_blocking(move || state::replay_from_init(&p, &rid, &events, batch))
                .await
                .map_err(|e| NodeError::Setup(format!("verify replay panicked: {e}")))?
                .map_err(|e| state::load_failure_to_node(e, &plugin, id))?;
        let live_hash = hex::encode(live.map().content_hash());
        let replay_hash = hex::encode(replayed.content_hash());
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
            let batch = self.config.replay_batch;
            let (c, rid) = (candidate.clone(), id.clone());
            let replayed = tokio::task::spawn_blocking(move || {
                state::replay_from_init(&c, &rid, &events, batch)
            })
            .await
            .map_err(|e| NodeError::Setup(format!("shadow replay panicked: {e}")))?;
            match replayed {
                Ok(_) => {}
                Err(state::LoadFailure::Replay(f)) => {
                    report.failures.push(fail(f.seq, f.reason));
                    continue;
                }
                Err(e) => {
                    report.failures.push(fail(0, format!("fault: {e}")));
                    continue;
                }
            }
            // The stored snapshot must still be usable: written with an older
            // state version, it goes through the candidate's `migrate`.
            if let Some(snap) = &load.snapshot
                && snap.state_version < candidate.state_version()
            {
                let Some(map) = crate::state::StateMap::from_sorted(snap.entries.clone()) else {
                    report
                        .failures
                        .push(fail(snap.seq, "snapshot entries out of order".to_owned()));
                    continue;
                };
                match candidate.migrate(Scope::new(id.as_str(), &map), snap.state_version) {
                    Ok(m) => {
                        if let Err(reason) = m.value {
                            report.failures.push(fail(
                                snap.seq,
                                format!(
                                    "migrate from state version {}: {reason}",
                                    snap.state_version
                                ),
                            ));
                        }
                    }
                    Err(e) => report
                        .failures
                        .push(fail(snap.seq, format!("migrate fault: {e}"))),
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
}
