//! The coordinator: every tick a node renews its leases, reports itself
//! alive, reads the live nodes and the leases, computes placement, claims
//! the free shards placed on it and hands over the shards placed elsewhere.
//!
//! **Claim** (the only way to start serving a shard): take the lease
//! (`create`: fails if held), append a claim entry to the shard's log at
//! the log's current end (`Nats-Expected-Last-Sequence`: this fences every
//! later write of the previous owner), catch the local copy up to the
//! entry before the claim, renew the lease (it must still be this node's
//! after the catch-up), open the log writer at the claim, and serve.
//!
//! **Step down**: stop serving at once, let the writes in flight finish,
//! record how far the local copy is, forget the shard's realms in memory,
//! and (for a handover) delete the lease so the next owner can claim it at
//! once rather than after it expires.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::message::PublishMessage;
use serde::{Deserialize, Serialize};

use super::lease::{HeldShard, LeaseValue, NodeRecord, Renewal};
use super::log::{LogEntry, catch_up};
use super::{Cluster, ClusterError, placement};
use crate::node::Node;
use crate::storage::Storage;

/// A shard this node holds.
#[derive(Debug, Clone)]
pub(crate) struct Held {
    /// The lease's current revision.
    pub rev: u64,
    /// The revision at the claim.
    pub epoch: u64,
    /// The log stream's creation time (identifies its incarnation).
    pub created: u64,
}

/// What the coordinator keeps between ticks.
#[derive(Debug, Default)]
pub(crate) struct State {
    pub held: HashMap<usize, Held>,
    pub claiming: HashSet<usize>,
    /// Ticks in a row each node was seen alive.
    pub seen: HashMap<String, u32>,
}

/// How far the local copy of a shard is, stored in the node's meta table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Cursor {
    created: u64,
    seq: u64,
}

fn cursor_key(cluster: &str, shard: usize) -> String {
    format!("cluster/{cluster}/shard/{shard}")
}

impl Cluster {
    fn lease_value(&self) -> LeaseValue {
        LeaseValue {
            node: self.node_id.clone(),
            http: self.http.clone(),
        }
    }

    async fn read_cursor(&self, shard: usize) -> Result<Option<Cursor>, ClusterError> {
        let raw = self
            .storage
            .local()
            .get_meta(&cursor_key(&self.config.name, shard))
            .await?;
        Ok(raw.and_then(|b| serde_json::from_slice(&b).ok()))
    }

    async fn write_cursor(&self, shard: usize, c: Cursor) -> Result<(), ClusterError> {
        let bytes = serde_json::to_vec(&c).expect("cursor encodes");
        self.storage
            .local()
            .put_meta(&cursor_key(&self.config.name, shard), Some(bytes))
            .await?;
        Ok(())
    }

    /// One tick; see the module docs.
    pub(crate) async fn tick(self: &Arc<Self>, node: &Arc<Node>) -> Result<(), ClusterError> {
        let leaving = self.leaving.load(std::sync::atomic::Ordering::Acquire);
        self.renew_all(node).await;
        let record = {
            let st = self.state.lock().await;
            let logs = self.storage.logs();
            NodeRecord {
                id: self.node_id.clone(),
                http: self.http.clone(),
                healthy: self.storage.health().writable,
                leaving,
                shards: {
                    let mut v: Vec<HeldShard> = st
                        .held
                        .iter()
                        .map(|(&shard, h)| HeldShard {
                            shard,
                            epoch: h.epoch,
                            applied: logs[shard].applied(),
                        })
                        .collect();
                    v.sort_by_key(|h| h.shard);
                    v
                },
                started_ms: self.started_ms,
            }
        };
        metrics::gauge!("realmhost_cluster_shards_served").set(record.shards.len() as f64);
        for h in &record.shards {
            metrics::gauge!("realmhost_cluster_shard_applied", "shard" => h.shard.to_string())
                .set(h.applied as f64);
        }
        self.nodes.put(&record).await?;
        let live = self.nodes.live().await?;
        metrics::gauge!("realmhost_cluster_live_nodes").set(live.len() as f64);
        let leases = self.leases.read_all(self.shards).await?;
        self.ownership.set_owners(
            leases
                .iter()
                .map(|l| l.as_ref().map(|l| l.value.node.clone()))
                .collect(),
        );
        let candidates = placement::candidates(&live);
        let desired = placement::assign(self.shards, &candidates);
        let me = candidates.iter().position(|n| *n == self.node_id);

        let mut to_claim = Vec::new();
        let mut to_release = Vec::new();
        let mut stale = Vec::new();
        {
            let mut st = self.state.lock().await;
            let live_ids: HashSet<&str> = live.iter().map(|n| n.id.as_str()).collect();
            st.seen.retain(|id, _| live_ids.contains(id.as_str()));
            for n in &live {
                *st.seen.entry(n.id.clone()).or_default() += 1;
            }
            for shard in 0..self.shards {
                let want_me = me.is_some() && desired[shard] == me;
                let lease = &leases[shard];
                let held = st.held.contains_key(&shard);
                if held {
                    let settled = desired[shard]
                        .and_then(|i| st.seen.get(&candidates[i]))
                        .is_some_and(|&ticks| ticks >= 2);
                    if leaving || (!want_me && settled) {
                        to_release.push(shard);
                    }
                } else if st.claiming.contains(&shard) {
                } else if let Some(l) = lease {
                    if l.value.node == self.node_id {
                        // Ours from an earlier run with the same id: give
                        // it up so that it can be claimed properly.
                        stale.push((shard, l.revision));
                    }
                } else if want_me && !leaving {
                    to_claim.push(shard);
                }
            }
            for s in &to_claim {
                st.claiming.insert(*s);
            }
        }
        for (shard, rev) in stale {
            let _ = self.leases.release(shard, rev).await;
        }
        for shard in to_release {
            self.step_down(node, shard, true).await;
        }
        for shard in to_claim {
            let (c, n) = (Arc::clone(self), Arc::clone(node));
            tokio::spawn(async move {
                let r = c.claim(&n, shard).await;
                let mut st = c.state.lock().await;
                st.claiming.remove(&shard);
                match r {
                    Ok(Some(h)) => {
                        st.held.insert(shard, h);
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!(shard, error = %e, "claiming the shard failed"),
                }
            });
        }
        Ok(())
    }

    /// Renew every held lease; give up the shards whose renewal was refused
    /// or whose log failed.
    async fn renew_all(self: &Arc<Self>, node: &Arc<Node>) {
        let held: Vec<(usize, Held)> = {
            let st = self.state.lock().await;
            st.held.iter().map(|(s, h)| (*s, h.clone())).collect()
        };
        let value = self.lease_value();
        let renewals = held.iter().map(|(shard, h)| {
            let value = value.clone();
            async move {
                let sent = Instant::now();
                let r = self.leases.renew(*shard, &value, h.rev).await;
                (*shard, sent, r)
            }
        });
        let results = futures::future::join_all(renewals).await;
        let mut lost = Vec::new();
        {
            let mut st = self.state.lock().await;
            for (shard, sent, r) in results {
                let failed_log = self.storage.logs()[shard].has_failed();
                match r {
                    Ok(Renewal::Renewed(rev)) => {
                        if let Some(h) = st.held.get_mut(&shard) {
                            h.rev = rev;
                        }
                        if failed_log {
                            // Give it up, to claim it again with a catch-up.
                            lost.push((shard, true));
                        } else {
                            self.ownership.grant(shard, sent + self.config.lease() / 2);
                        }
                    }
                    Ok(Renewal::Lost) => {
                        tracing::warn!(shard, "the lease was lost (expired or taken over)");
                        lost.push((shard, false));
                    }
                    Err(e) => {
                        // Serving lapses by itself half a lease after the
                        // last renewal; until then the next tick retries.
                        tracing::warn!(shard, error = %e, "renewing the lease failed");
                        if !self.ownership.owns(shard) {
                            lost.push((shard, false));
                        }
                    }
                }
            }
        }
        for (shard, release) in lost {
            self.step_down(node, shard, release).await;
        }
    }

    /// Stop serving `shard` (see the module docs); `release` deletes the
    /// lease for the next owner.
    pub(crate) async fn step_down(&self, node: &Arc<Node>, shard: usize, release: bool) {
        self.ownership.revoke(shard);
        let held = self.state.lock().await.held.remove(&shard);
        let log = &self.storage.logs()[shard];
        let applied = log.close().await;
        if let Some(h) = &held
            && applied > 0
            && let Err(e) = self
                .write_cursor(
                    shard,
                    Cursor {
                        created: h.created,
                        seq: applied,
                    },
                )
                .await
        {
            tracing::warn!(shard, error = %e, "recording the shard's local copy failed");
        }
        node.shard_lost(shard);
        metrics::counter!("realmhost_cluster_step_downs_total", "release" => release.to_string())
            .increment(1);
        if release
            && let Some(h) = held
            && let Err(e) = self.leases.release(shard, h.rev).await
        {
            tracing::info!(shard, error = %e, "releasing the lease failed (it expires by itself)");
        }
        tracing::info!(shard, release, "stopped serving shard");
    }

    /// Take `shard`: `None` if another node holds its lease.
    async fn claim(&self, node: &Arc<Node>, shard: usize) -> Result<Option<Held>, ClusterError> {
        let t0 = Instant::now();
        let Some(rev) = self.leases.claim(shard, &self.lease_value()).await? else {
            return Ok(None);
        };
        match self.take_over(node, shard, rev, t0).await {
            Ok(h) => Ok(Some(h)),
            Err(e) => {
                self.ownership.revoke(shard);
                let _ = self.leases.release(shard, rev).await;
                Err(e)
            }
        }
    }

    async fn take_over(
        &self,
        node: &Arc<Node>,
        shard: usize,
        rev: u64,
        t0: Instant,
    ) -> Result<Held, ClusterError> {
        let log = &self.storage.logs()[shard];
        let mut stream = self
            .js_quick
            .get_stream(&log.stream)
            .await
            .map_err(|e| ClusterError::js(format!("stream {}", log.stream), e))?;
        let claim = LogEntry::Claim {
            node: self.node_id.clone(),
            epoch: rev,
        }
        .encode();
        let mut attempt = 0;
        let (created, claim_seq, claim_id) = loop {
            let info = stream
                .info()
                .await
                .map_err(|e| ClusterError::js(format!("stream {}", log.stream), e))?;
            let created = info.created.unix_timestamp_nanos() as u64;
            let last = info.state.last_sequence;
            let claim_id = format!("{}.{rev}.claim{attempt}", self.node_id);
            let msg = PublishMessage::build()
                .payload(claim.clone().into())
                .expected_last_sequence(last)
                .message_id(&claim_id);
            let acked = match self.js_quick.send_publish(log.subject.clone(), msg).await {
                Ok(f) => f.await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match acked {
                Ok(a) => break (created, a.sequence, claim_id),
                // The old owner wrote between the read and the claim.
                Err(e) if attempt < 5 => {
                    tracing::debug!(shard, error = %e, "claim entry refused; reading the log's end again");
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => {
                    return Err(ClusterError::js(
                        format!("claiming shard {shard} in its log"),
                        e,
                    ));
                }
            }
        };
        let after = match self.read_cursor(shard).await? {
            Some(c) if c.created == created => c.seq,
            Some(_) => {
                return Err(ClusterError::Unsupported(format!(
                    "shard {shard}: this node's data directory holds a copy of another incarnation of the shard's log (the cluster's streams were recreated); start the node on an empty data directory"
                )));
            }
            None => 0,
        };
        let local: &dyn Storage = &**self.storage.local();
        let applied = catch_up(
            &self.js_quick,
            shard,
            &log.stream,
            local,
            after,
            claim_seq - 1,
        )
        .await?;
        self.write_cursor(
            shard,
            Cursor {
                created,
                seq: claim_seq,
            },
        )
        .await?;
        // Still ours after the catch-up?
        let t1 = Instant::now();
        let Renewal::Renewed(rev_now) = self.leases.renew(shard, &self.lease_value(), rev).await?
        else {
            return Err(ClusterError::LeaseLost { shard });
        };
        log.open(claim_seq, &claim_id, &self.node_id, rev);
        node.shard_gained(shard).await?;
        self.ownership.set_owner(shard, Some(self.node_id.clone()));
        self.ownership.grant(shard, t1 + self.config.lease() / 2);
        metrics::counter!("realmhost_cluster_claims_total").increment(1);
        metrics::histogram!("realmhost_cluster_claim_seconds").record(t0.elapsed().as_secs_f64());
        tracing::info!(
            shard,
            epoch = rev,
            claim = claim_seq,
            caught_up = applied,
            ms = t0.elapsed().as_millis() as u64,
            "serving shard"
        );
        Ok(Held {
            rev: rev_now,
            epoch: rev,
            created,
        })
    }
}
