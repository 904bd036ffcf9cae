//! Cluster errors.

use super::ClusterConfigError;
use crate::node::NodeError;
use crate::storage::StorageError;

/// What can go wrong joining or running a cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ClusterConfigError),
    /// The NATS servers could not be reached.
    #[error("cannot connect to NATS at {urls}: {reason}")]
    Connect {
        /// The URLs tried.
        urls: String,
        /// Why.
        reason: String,
    },
    /// A JetStream call failed (stream, bucket, consumer, publish).
    #[error("JetStream {what}: {reason}")]
    JetStream {
        /// What was being done.
        what: String,
        /// Why.
        reason: String,
    },
    /// The cluster was created with another shard count than this node's.
    #[error(
        "cluster {cluster} has {cluster_shards} shards but this node is configured with {node_shards}: use the same `sharding.num_shards` on every node"
    )]
    ShardCount {
        /// The cluster's name.
        cluster: String,
        /// Shards the cluster was created with.
        cluster_shards: usize,
        /// This node's setting.
        node_shards: usize,
    },
    /// A claim lost its lease before it could serve (the catch-up took
    /// longer than the lease); it is tried again later.
    #[error("shard {shard}: the lease expired before the claim completed")]
    LeaseLost {
        /// The shard.
        shard: usize,
    },
    /// A setting the cluster cannot run with.
    #[error("{0}")]
    Unsupported(String),
    /// A log entry could not be read.
    #[error("shard {shard}: log entry {seq} is unreadable: {reason}")]
    BadEntry {
        /// The shard.
        shard: usize,
        /// The stream sequence.
        seq: u64,
        /// Why.
        reason: String,
    },
    /// The local copy refused a log entry for a reason of its own (I/O,
    /// full disk): it is not in step with the log.
    #[error("shard {shard}: applying log entry {seq} locally failed: {source}")]
    Apply {
        /// The shard.
        shard: usize,
        /// The stream sequence.
        seq: u64,
        /// Why.
        #[source]
        source: StorageError,
    },
    /// The node failed.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// The local storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl ClusterError {
    pub(crate) fn js(what: impl Into<String>, e: impl std::fmt::Display) -> Self {
        Self::JetStream {
            what: what.into(),
            reason: e.to_string(),
        }
    }
}
