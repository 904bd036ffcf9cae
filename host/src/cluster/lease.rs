//! Shard leases and node liveness in JetStream key/value buckets.
//!
//! - `<cluster>_leases`: key `s<shard>`, value the owner ([`LeaseValue`]).
//!   A lease is taken with `create` (fails if someone holds it), renewed
//!   with `update` at the revision last seen (fails if it changed hands),
//!   released with a delete at that revision. The bucket's `max_age` is the
//!   lease length: a lease nobody renews disappears by itself, and only
//!   then can another node `create` it. The revision at the claim is the
//!   owner's **epoch**, written into the shard's log by its claim entry.
//! - `<cluster>_nodes`: key the node id, value a [`NodeRecord`], put every
//!   tick; `max_age` is the lease length too, so a dead node drops out of
//!   placement when its leases expire.

use async_nats::jetstream::kv;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::ClusterError;

/// Who holds a shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseValue {
    /// The owning node's id.
    pub node: String,
    /// Its HTTP address.
    pub http: String,
}

/// A held lease as read from the bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Lease {
    pub value: LeaseValue,
    pub revision: u64,
}

/// A shard a node serves, as it reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldShard {
    /// The shard.
    pub shard: usize,
    /// The lease revision at the claim (the owner's epoch).
    pub epoch: u64,
    /// The last log entry applied locally.
    pub applied: u64,
}

/// What a node reports about itself every tick.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// The node id.
    pub id: String,
    /// Its HTTP address.
    pub http: String,
    /// Whether its storage takes writes (a node whose storage is degraded
    /// gets no shards).
    pub healthy: bool,
    /// Leaving: it hands its shards over and takes none.
    #[serde(default)]
    pub leaving: bool,
    /// The shards it serves.
    pub shards: Vec<HeldShard>,
    /// When it started, ms since the Unix epoch.
    pub started_ms: u64,
}

/// How a renewal went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Renewal {
    /// Still ours, at this revision.
    Renewed(u64),
    /// No longer ours.
    Lost,
}

/// The lease bucket.
#[derive(Debug, Clone)]
pub(crate) struct Leases {
    kv: kv::Store,
}

pub(crate) fn lease_key(shard: usize) -> String {
    format!("s{shard}")
}

impl Leases {
    pub(crate) fn new(kv: kv::Store) -> Self {
        Self { kv }
    }

    /// The lease of `shard`, if held.
    pub(crate) async fn read(&self, shard: usize) -> Result<Option<Lease>, ClusterError> {
        let e = self
            .kv
            .entry(lease_key(shard))
            .await
            .map_err(|e| ClusterError::js(format!("reading lease of shard {shard}"), e))?;
        Ok(e.filter(|e| e.operation == kv::Operation::Put)
            .and_then(|e| {
                serde_json::from_slice(&e.value).ok().map(|value| Lease {
                    value,
                    revision: e.revision,
                })
            }))
    }

    /// Every shard's lease, concurrently.
    pub(crate) async fn read_all(&self, shards: usize) -> Result<Vec<Option<Lease>>, ClusterError> {
        let reads = futures::stream::iter((0..shards).map(|s| self.read(s)))
            .buffered(32)
            .collect::<Vec<_>>()
            .await;
        reads.into_iter().collect()
    }

    /// Take `shard`'s lease; `None` if another node holds it.
    pub(crate) async fn claim(
        &self,
        shard: usize,
        value: &LeaseValue,
    ) -> Result<Option<u64>, ClusterError> {
        let bytes = serde_json::to_vec(value).expect("lease value encodes");
        match self.kv.create(lease_key(shard), bytes.into()).await {
            Ok(rev) => Ok(Some(rev)),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(None),
            Err(e) => Err(ClusterError::js(format!("claiming shard {shard}"), e)),
        }
    }

    /// Renew `shard`'s lease held at `revision`: the new revision, or
    /// [`Renewal::Lost`] if the lease is no longer at that revision (it
    /// expired, or another node holds it).
    pub(crate) async fn renew(
        &self,
        shard: usize,
        value: &LeaseValue,
        revision: u64,
    ) -> Result<Renewal, ClusterError> {
        let bytes = serde_json::to_vec(value).expect("lease value encodes");
        match self
            .kv
            .update(lease_key(shard), bytes.into(), revision)
            .await
        {
            Ok(rev) => Ok(Renewal::Renewed(rev)),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(Renewal::Lost),
            Err(e) => Err(ClusterError::js(format!("renewing shard {shard}"), e)),
        }
    }

    /// Wake `notify` whenever a lease is released (deleted), so that its
    /// next owner claims it at once instead of at its next tick. Ends when
    /// the watch does (a reconnect starts a new one at the next call).
    pub(crate) async fn watch_releases(&self, notify: std::sync::Arc<tokio::sync::Notify>) {
        let Ok(mut w) = self.kv.watch_all().await else {
            return;
        };
        while let Some(Ok(e)) = w.next().await {
            if e.operation != kv::Operation::Put {
                notify.notify_one();
            }
        }
    }

    /// Give `shard`'s lease up (if still held at `revision`).
    pub(crate) async fn release(&self, shard: usize, revision: u64) -> Result<(), ClusterError> {
        self.kv
            .delete_expect_revision(lease_key(shard), Some(revision))
            .await
            .map_err(|e| ClusterError::js(format!("releasing shard {shard}"), e))
    }
}

/// The node bucket.
#[derive(Debug, Clone)]
pub(crate) struct Nodes {
    kv: kv::Store,
}

impl Nodes {
    pub(crate) fn new(kv: kv::Store) -> Self {
        Self { kv }
    }

    /// Report this node alive.
    pub(crate) async fn put(&self, record: &NodeRecord) -> Result<(), ClusterError> {
        let bytes = serde_json::to_vec(record).expect("node record encodes");
        self.kv
            .put(&record.id, bytes.into())
            .await
            .map(|_| ())
            .map_err(|e| ClusterError::js("reporting this node alive", e))
    }

    /// Remove this node (a graceful leave).
    pub(crate) async fn remove(&self, id: &str) -> Result<(), ClusterError> {
        self.kv
            .delete(id)
            .await
            .map_err(|e| ClusterError::js("removing this node", e))
    }

    /// Every node that reported itself within the lease length, by id.
    pub(crate) async fn live(&self) -> Result<Vec<NodeRecord>, ClusterError> {
        let mut keys = self
            .kv
            .keys()
            .await
            .map_err(|e| ClusterError::js("listing nodes", e))?;
        let mut ids = Vec::new();
        while let Some(k) = keys.next().await {
            ids.push(k.map_err(|e| ClusterError::js("listing nodes", e))?);
        }
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let e = self
                .kv
                .entry(id.clone())
                .await
                .map_err(|e| ClusterError::js(format!("reading node {id}"), e))?;
            if let Some(e) = e.filter(|e| e.operation == kv::Operation::Put)
                && let Ok(r) = serde_json::from_slice::<NodeRecord>(&e.value)
            {
                out.push(r);
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }
}
