//! What a node asks of a cluster it is part of (`crate::cluster`): which
//! shards it serves now, and how to take a message to a realm another node
//! serves. Without a cluster a node serves every shard.
//!
//! The node checks ownership before it loads or changes a realm, so a
//! request for a shard served elsewhere fails fast with
//! [`StorageError::NotOwner`] (the HTTP layer forwards it to the owner
//! first). That check is advisory: the cluster's storage refuses every write
//! to a shard it does not own, and the shard's replicated log refuses every
//! write of a node that lost it, whatever the node believed.

use std::fmt;
#[cfg(feature = "cluster")]
use std::sync::Arc;

use futures::future::BoxFuture;

use super::messaging::Delivered;
#[cfg(feature = "cluster")]
use super::messaging::Pending;
use super::{Node, NodeError};
#[cfg(feature = "cluster")]
use crate::message::StoredMessage;
use crate::realm::RealmId;
use crate::storage::{OutboxKey, StorageError};

/// The cluster's side of a node (implemented by `crate::cluster`).
pub(crate) trait ShardOwnership: Send + Sync + fmt::Debug {
    /// Whether this node serves `shard` now.
    fn owns(&self, shard: usize) -> bool;

    /// The node that serves `shard`, as far as this node knows.
    fn owner_of(&self, shard: usize) -> Option<String>;

    /// Deliver the message `id` (its stored bytes `message`) on the node
    /// serving the target's `shard`; `Err` says why it could not be asked
    /// (the delivery is then retried like any failed one).
    fn deliver_remote(
        &self,
        shard: usize,
        id: OutboxKey,
        message: Vec<u8>,
    ) -> BoxFuture<'static, Result<Delivered, String>>;

    /// The cluster itself (forwarding, status).
    #[cfg(feature = "cluster")]
    fn cluster(&self) -> &crate::cluster::Cluster;
}

impl Node {
    /// Join a cluster: from now on the node serves only the shards `cluster`
    /// says it owns. Set once, before the node takes requests.
    #[cfg(feature = "cluster")]
    pub(crate) fn attach_cluster(&self, cluster: Arc<dyn ShardOwnership>) -> Result<(), NodeError> {
        self.cluster
            .set(cluster)
            .map_err(|_| NodeError::Setup("the node is already part of a cluster".into()))?;
        // Nothing is served until claimed: the queues loaded at start wait
        // for their shard's claim (`shard_gained` loads them again).
        self.messenger
            .forget_senders(|s| !self.serves_shard(self.shard_of(s.as_str())));
        Ok(())
    }

    /// The cluster this node is part of, if any.
    #[cfg(feature = "cluster")]
    pub fn cluster_handle(&self) -> Option<&crate::cluster::Cluster> {
        self.cluster.get().map(|c| c.cluster())
    }

    /// Whether this node serves `shard` (always, outside a cluster).
    pub fn serves_shard(&self, shard: usize) -> bool {
        self.cluster.get().is_none_or(|c| c.owns(shard))
    }

    /// Fail with [`StorageError::NotOwner`] unless this node serves the
    /// realm's shard.
    pub(crate) fn check_owner(&self, id: &RealmId) -> Result<(), NodeError> {
        let Some(c) = self.cluster.get() else {
            return Ok(());
        };
        let shard = self.shard_of(id.as_str());
        if c.owns(shard) {
            Ok(())
        } else {
            Err(NodeError::Storage(StorageError::NotOwner {
                shard,
                owner: c.owner_of(shard),
            }))
        }
    }

    /// The cluster gave this node `shard` (its log is caught up in storage):
    /// drop whatever memory held of it (stale: another node wrote since)
    /// and queue its realms' undelivered messages.
    #[cfg(feature = "cluster")]
    pub(crate) async fn shard_gained(&self, shard: usize) -> Result<usize, NodeError> {
        self.store.clear_shard(shard);
        let mut after = None;
        let mut queued = 0usize;
        loop {
            let page = self.storage.pending_messages(after.as_ref(), 1024).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.key());
            let mine: Vec<Pending> = page
                .into_iter()
                .filter(|p| self.shard_of(p.sender.as_str()) == shard)
                .filter_map(|p| match StoredMessage::decode(&p.message) {
                    Ok(m) => Some(Pending {
                        id: p.key(),
                        message: Arc::new(m),
                    }),
                    Err(e) => {
                        tracing::error!(sender = %p.sender, seq = p.seq, index = p.index, error = %e, "undecodable outbox message left in place");
                        None
                    }
                })
                .collect();
            queued += mine.len();
            self.messenger.enqueue(mine);
        }
        Ok(queued)
    }

    /// The cluster took `shard` from this node: forget its realms and the
    /// queues of their messages (the new owner serves them).
    #[cfg(feature = "cluster")]
    pub(crate) fn shard_lost(&self, shard: usize) {
        let realms = self.store.clear_shard(shard);
        let messages = self
            .messenger
            .forget_senders(|s| self.shard_of(s.as_str()) == shard);
        tracing::info!(shard, realms, messages, "shard handed over");
    }

    /// A delivery asked for by the node that serves the sender: `message`
    /// is the stored message `id`.
    #[cfg(feature = "cluster")]
    pub(crate) async fn deliver_for_peer(&self, id: OutboxKey, message: &[u8]) -> Delivered {
        match StoredMessage::decode(message) {
            Ok(m) => {
                let p = Pending {
                    id,
                    message: Arc::new(m),
                };
                if let Err(e) = self.check_owner(&p.message.target) {
                    return Delivered::Failed(e.to_string());
                }
                self.deliver_here(&p).await
            }
            Err(e) => Delivered::Failed(format!("undecodable message: {e}")),
        }
    }
}
