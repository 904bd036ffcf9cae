//! What `realmhost cluster status` and `GET /v1/cluster` show: the live
//! nodes, the shards each serves with its epoch and how far its local copy
//! is behind the shard's log, and the shards nobody serves.

use serde::{Deserialize, Serialize};

use super::{Cluster, ClusterError, Names};

/// The cluster as one node sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// The cluster's name.
    pub cluster: String,
    /// The node that answered.
    pub this_node: String,
    /// Shards in all.
    pub shards: usize,
    /// Stream and bucket replicas.
    pub replicas: usize,
    /// Live nodes, by id.
    pub nodes: Vec<NodeStatus>,
    /// Shards no node serves now (moving, or no node alive for them).
    pub unowned: Vec<usize>,
    /// Entries in all shard logs.
    pub log_entries: u64,
}

/// One live node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// Its id.
    pub id: String,
    /// Its HTTP address.
    pub http: String,
    /// Whether its storage takes writes.
    pub healthy: bool,
    /// Whether it is leaving.
    pub leaving: bool,
    /// When it started, ms since the Unix epoch.
    pub started_ms: u64,
    /// The shards it serves.
    pub shards: Vec<ShardStatus>,
}

/// One served shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardStatus {
    /// The shard.
    pub shard: usize,
    /// Its owner's epoch (the lease revision at the claim).
    pub epoch: u64,
    /// The last log entry the owner applied (as of its last report).
    pub applied: u64,
    /// The log's last entry.
    pub log_last: u64,
    /// `log_last - applied`: entries the owner had not applied yet when it
    /// last reported (writes in flight, or a catch-up).
    pub lag: u64,
}

impl Cluster {
    /// The cluster's state, read from the buckets and the shard logs.
    pub async fn status(&self) -> Result<ClusterStatus, ClusterError> {
        let names = Names::new(&self.config.name);
        let live = self.nodes.live().await?;
        let leases = self.leases.read_all(self.shards).await?;
        let mut last = vec![0u64; self.shards];
        for (s, l) in last.iter_mut().enumerate() {
            let mut stream = self
                .js_quick
                .get_stream(names.stream(s))
                .await
                .map_err(|e| ClusterError::js(format!("stream of shard {s}"), e))?;
            *l = stream
                .info()
                .await
                .map_err(|e| ClusterError::js(format!("stream of shard {s}"), e))?
                .state
                .last_sequence;
        }
        let nodes = live
            .into_iter()
            .map(|n| NodeStatus {
                shards: n
                    .shards
                    .iter()
                    .filter(|h| h.shard < self.shards)
                    .map(|h| ShardStatus {
                        shard: h.shard,
                        epoch: h.epoch,
                        applied: h.applied,
                        log_last: last[h.shard],
                        lag: last[h.shard].saturating_sub(h.applied),
                    })
                    .collect(),
                id: n.id,
                http: n.http,
                healthy: n.healthy,
                leaving: n.leaving,
                started_ms: n.started_ms,
            })
            .collect::<Vec<_>>();
        let unowned = (0..self.shards).filter(|&s| leases[s].is_none()).collect();
        Ok(ClusterStatus {
            cluster: self.config.name.clone(),
            this_node: self.node_id.clone(),
            shards: self.shards,
            replicas: self.config.replicas,
            nodes,
            unowned,
            log_entries: last.iter().sum(),
        })
    }
}
