//! Cluster mode: shards spread over nodes that share a NATS JetStream
//! system (feature `cluster`; `realmhost serve --cluster nats://...`).
//!
//! - **Ownership** ([`lease`], [`coordinator`]): each shard is served by
//!   one node, which holds its lease in a JetStream key/value bucket and
//!   renews it every tick; a node that cannot renew stops serving the shard
//!   by itself after half a lease, before the lease can expire.
//! - **Replicated log** ([`log`]): every write to a shard is a message in
//!   the shard's stream (R3 and `sync_interval: always` in production),
//!   published with the stream's expected last sequence, and acknowledged
//!   to the client only after JetStream acknowledged it and the local copy
//!   applied it. A new owner's claim entry fences the previous owner: its
//!   later publishes fail in the stream itself, so no paused or
//!   partitioned node can write after a takeover.
//! - **Local copy**: each node's redb storage holds the shards it serves,
//!   caught up from the log when it claims one; realms are then loaded
//!   lazily from snapshot + tail as on a single node. It is a cache of the
//!   log, never the only copy of an acknowledged write.
//! - **Placement** ([`placement`]): rendezvous hashing with bounded loads
//!   over the live, healthy nodes; a joining node gets its share, a leaving
//!   node hands its shards over (release, then the new owner claims), a dead
//!   node's shards move when its leases expire.
//! - **Routing** ([`http`], [`rpc`]): a request for a realm served
//!   elsewhere is forwarded to its owner; messages between realms on
//!   different nodes are delivered by the target's owner.
//!
//! The design and the argument that a shard never has two writers are in
//! `docs/design.md` ("Cluster").
//!
//! Metrics (Prometheus, per node): gauges `realmhost_cluster_shards_served`,
//! `realmhost_cluster_live_nodes`, `realmhost_cluster_shard_applied{shard}`
//! (the last log entry applied locally); counters
//! `realmhost_cluster_claims_total`, `realmhost_cluster_step_downs_total
//! {release}`, `realmhost_cluster_log_writes_total`,
//! `realmhost_cluster_log_refused_total` (fenced or unanswered publishes),
//! `realmhost_cluster_forwarded_total{ok}`; histogram
//! `realmhost_cluster_claim_seconds`.

mod config;
mod coordinator;
pub mod dev;
mod error;
pub mod http;
pub mod lease;
mod log;
mod ownership;
mod placement;
mod rpc;
mod status;
mod storage;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream;
use futures::StreamExt;
use futures::future::BoxFuture;

pub use config::{ClusterConfig, ClusterConfigBuilder, ClusterConfigError};
pub use error::ClusterError;
pub use lease::{HeldShard, LeaseValue, NodeRecord};
pub use rpc::FORWARDED_HEADER;
pub use status::{ClusterStatus, NodeStatus, ShardStatus};

use self::log::ShardLog;
use self::ownership::Ownership;
use self::storage::ClusterStorage;
use crate::node::{Delivered, Node, NodeConfig, ShardOwnership};
use crate::storage::{OutboxKey, PartitionedStorage, Storage};

/// A node's membership in a cluster. Made by [`Cluster::open`], which also
/// opens the node.
pub struct Cluster {
    config: ClusterConfig,
    node_id: String,
    http: String,
    shards: usize,
    started_ms: u64,
    nats: async_nats::Client,
    /// For the requests of a claim and of the status: a short timeout, so
    /// a request lost in a NATS leader change is retried at the next tick
    /// instead of holding the shard for the default timeout.
    js_quick: jetstream::Context,
    storage: Arc<ClusterStorage>,
    ownership: Arc<Ownership>,
    leases: lease::Leases,
    nodes: lease::Nodes,
    rpc: rpc::Client,
    router: Arc<rpc::RouterCell>,
    state: tokio::sync::Mutex<coordinator::State>,
    leaving: AtomicBool,
    /// Ticks at once (a lease was released).
    wake: Arc<tokio::sync::Notify>,
    tasks: parking_lot::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("name", &self.config.name)
            .field("node", &self.node_id)
            .field("shards", &self.shards)
            .finish_non_exhaustive()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Cluster {
    /// Join the cluster `config` names and open this node on
    /// `node_config.data_dir` as one of its members: connect to NATS, create
    /// the cluster's streams and buckets if this is its first node (or check
    /// that the shard count matches), open the local storage and the node,
    /// and start claiming shards. `http` is this node's HTTP address, shown
    /// to the other nodes and to operators. Needs a running tokio runtime.
    pub async fn open(
        mut config: ClusterConfig,
        node_config: NodeConfig,
        http: &str,
    ) -> Result<(Arc<Cluster>, Arc<Node>), ClusterError> {
        config.validate()?;
        if !node_config.sharding.lazy_loading_enabled {
            return Err(ClusterError::Unsupported(
                "cluster mode loads realms lazily: set sharding.lazy_loading_enabled = true".into(),
            ));
        }
        if config.node_id.is_empty() {
            config.node_id = format!(
                "n-{:x}{:04x}",
                now_ms() & 0xffff_ffff,
                std::process::id() & 0xffff
            );
        }
        let node_id = config.node_id.clone();
        let http = if config.advertise.is_empty() {
            http.to_owned()
        } else {
            config.advertise.clone()
        };
        let shards = node_config.sharding.num_shards;
        let urls = config.nats_urls();
        let nats = async_nats::ConnectOptions::new()
            .name(format!("realmhost {node_id}"))
            .connect(urls.clone())
            .await
            .map_err(|e| ClusterError::Connect {
                urls: urls.join(","),
                reason: e.to_string(),
            })?;
        let js = jetstream::new(nats.clone());
        let quick = (config.lease() / 3).clamp(Duration::from_secs(1), Duration::from_secs(5));
        let js_quick = jetstream::ContextBuilder::new()
            .timeout(quick)
            .build(nats.clone());
        // Joining retries until JetStream has settled (see `settled`); a
        // request sent before the NATS cluster has elected its meta leader
        // is never answered, so each attempt gives up after 2 s rather
        // than the default 5 s.
        let js_join = jetstream::ContextBuilder::new()
            .timeout(Duration::from_secs(2))
            .build(nats.clone());
        let names = Names::new(&config.name);
        check_shard_count(&js_join, &names, &config, shards).await?;
        // The coordinator's requests time out quickly: a tick must not stall
        // on one lost in a NATS leader change (renewals would lapse).
        let leases = lease::Leases::new(bucket(&js_quick, &names.leases, &config).await?);
        let nodes = lease::Nodes::new(bucket(&js_quick, &names.nodes, &config).await?);
        let created = futures::stream::iter((0..shards).map(|s| {
            let js = js_join.clone();
            let cfg = jetstream::stream::Config {
                name: names.stream(s),
                subjects: vec![names.subject(s)],
                num_replicas: config.replicas,
                storage: jetstream::stream::StorageType::File,
                duplicate_window: Duration::from_secs(120),
                allow_direct: true,
                ..Default::default()
            };
            async move {
                settled(&format!("stream of shard {s}"), || {
                    js.get_or_create_stream(cfg.clone())
                })
                .await
                .map(|_| ())
            }
        }))
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
        created.into_iter().collect::<Result<Vec<()>, _>>()?;

        std::fs::create_dir_all(&node_config.data_dir).map_err(|e| {
            ClusterError::Unsupported(format!(
                "cannot create {}: {e}",
                node_config.data_dir.display()
            ))
        })?;
        let local: Arc<dyn Storage> = Arc::new(PartitionedStorage::open_with(
            &node_config.data_dir,
            node_config.storage.clone(),
        )?);
        let ownership = Arc::new(Ownership::new(shards));
        let logs = (0..shards)
            .map(|s| {
                ShardLog::spawn(
                    js.clone(),
                    local.clone(),
                    s,
                    names.stream(s),
                    names.subject(s),
                    config.max_entry_bytes,
                )
            })
            .collect();
        let storage = Arc::new(ClusterStorage::new(
            local,
            logs,
            ownership.clone(),
            config.max_entry_bytes,
        ));
        let node = Node::open_with_storage(node_config, storage.clone()).await?;
        let rpc = rpc::Client {
            nats: nats.clone(),
            cluster: config.name.clone(),
            leases: leases.clone(),
            ownership: ownership.clone(),
            timeout: Duration::from_millis(config.forward_timeout_ms),
        };
        let cluster = Arc::new(Cluster {
            config,
            node_id,
            http,
            shards,
            started_ms: now_ms(),
            nats,
            js_quick,
            storage,
            ownership,
            leases,
            nodes,
            rpc,
            router: Arc::new(rpc::RouterCell::new()),
            state: tokio::sync::Mutex::new(coordinator::State::default()),
            leaving: AtomicBool::new(false),
            wake: Arc::new(tokio::sync::Notify::new()),
            tasks: parking_lot::Mutex::new(Vec::new()),
        });
        node.attach_cluster(cluster.clone())?;
        let sub = cluster
            .nats
            .subscribe(rpc::node_subject(&cluster.config.name, &cluster.node_id))
            .await
            .map_err(|e| ClusterError::js("subscribing to this node's requests", e))?;
        let serving = tokio::spawn(rpc::serve(
            sub,
            cluster.nats.clone(),
            Arc::downgrade(&node),
            cluster.router.clone(),
        ));
        let ticking = tokio::spawn(run(Arc::downgrade(&cluster), Arc::downgrade(&node)));
        let watching = {
            let (leases, wake) = (cluster.leases.clone(), cluster.wake.clone());
            tokio::spawn(async move {
                loop {
                    leases.watch_releases(wake.clone()).await;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            })
        };
        cluster.tasks.lock().extend([serving, ticking, watching]);
        tracing::info!(node = %cluster.node_id, cluster = %cluster.config.name, shards, "joined the cluster");
        Ok((cluster, node))
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The configuration (with the node id resolved).
    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    /// The shards this node serves now.
    pub fn served_shards(&self) -> Vec<usize> {
        self.ownership.served()
    }

    /// Give the node's HTTP router to the cluster, so requests forwarded
    /// from other nodes run through it (guard and all).
    pub fn set_router(&self, router: axum::Router) {
        let _ = self.router.set(router);
    }

    /// Forward an HTTP request for a realm of `shard` to its owner.
    pub(crate) async fn forward_http(
        &self,
        shard: usize,
        req: rpc::HttpRequest,
    ) -> Result<rpc::HttpResponse, String> {
        self.rpc.http(shard, req).await
    }

    /// Leave the cluster gracefully: hand every shard over (the next owners
    /// claim them at once) and stop. Call before [`Node::shutdown`].
    pub async fn leave(self: &Arc<Self>, node: &Arc<Node>) {
        self.leaving.store(true, Ordering::Release);
        // Tell the others first, so that they place the shards elsewhere.
        if let Err(e) = self.tick(node).await {
            tracing::warn!(error = %e, "announcing the leave failed");
        }
        let held: Vec<usize> = self.state.lock().await.held.keys().copied().collect();
        for shard in held {
            self.step_down(node, shard, true).await;
        }
        for t in self.tasks.lock().drain(..) {
            t.abort();
        }
        if let Err(e) = self.nodes.remove(&self.node_id).await {
            tracing::info!(error = %e, "removing this node's record failed (it expires by itself)");
        }
        tracing::info!(node = %self.node_id, "left the cluster");
    }
}

impl ShardOwnership for Cluster {
    fn owns(&self, shard: usize) -> bool {
        self.ownership.owns(shard)
    }

    fn owner_of(&self, shard: usize) -> Option<String> {
        self.ownership.owner_of(shard)
    }

    fn deliver_remote(
        &self,
        shard: usize,
        id: OutboxKey,
        message: Vec<u8>,
    ) -> BoxFuture<'static, Result<Delivered, String>> {
        let rpc = self.rpc.clone();
        Box::pin(async move { rpc.deliver(shard, id, message).await })
    }

    fn cluster(&self) -> &Cluster {
        self
    }
}

/// The coordinator's loop: a tick every `tick_ms`, and at once when a
/// lease is released, until the node or the cluster is gone.
async fn run(cluster: std::sync::Weak<Cluster>, node: std::sync::Weak<Node>) {
    let (period, wake) = match cluster.upgrade() {
        Some(c) => (c.config.tick(), c.wake.clone()),
        None => return,
    };
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            () = wake.notified() => {}
        }
        let (Some(c), Some(n)) = (cluster.upgrade(), node.upgrade()) else {
            return;
        };
        if let Err(e) = c.tick(&n).await {
            tracing::warn!(error = %e, "cluster tick failed");
        }
    }
}

/// Names of the cluster's streams, subjects and buckets.
struct Names {
    cluster: String,
    leases: String,
    nodes: String,
    config: String,
}

impl Names {
    fn new(cluster: &str) -> Self {
        Self {
            cluster: cluster.to_owned(),
            leases: format!("rh_{cluster}_leases"),
            nodes: format!("rh_{cluster}_nodes"),
            config: format!("rh_{cluster}_config"),
        }
    }

    fn stream(&self, shard: usize) -> String {
        format!("RH_{}_S{shard}", self.cluster)
    }

    fn subject(&self, shard: usize) -> String {
        format!("rh.{}.log.{shard}", self.cluster)
    }
}

/// How long joining waits for JetStream to settle. A NATS cluster that has
/// just started elects its meta leader within seconds, and a stream or
/// bucket just created — by this node or by another one starting beside it —
/// answers "no responders" or "no stream found" until its own leader is
/// elected and every server knows it.
const SETTLE: Duration = Duration::from_secs(30);

/// Run `op` until it succeeds or [`SETTLE`] has passed (then its last error,
/// as `what`): for the requests of joining, whose failures at a cluster's
/// start are transient.
async fn settled<T, E, Fut>(what: &str, mut op: impl FnMut() -> Fut) -> Result<T, ClusterError>
where
    Fut: std::future::Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let deadline = std::time::Instant::now() + SETTLE;
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if std::time::Instant::now() >= deadline => {
                return Err(ClusterError::js(what, e));
            }
            Err(e) => {
                tracing::debug!(what, error = %e, "JetStream not settled yet; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// The bucket `config` describes: opened, or created if missing (by
/// whichever node gets there first; creating it again with the same
/// configuration is harmless).
async fn open_or_create_bucket(
    js: &jetstream::Context,
    config: jetstream::kv::Config,
) -> Result<jetstream::kv::Store, ClusterError> {
    let name = config.bucket.clone();
    settled(&format!("bucket {name}"), || {
        let config = config.clone();
        async move {
            match js.get_key_value(&config.bucket).await {
                Ok(kv) => Ok(kv),
                Err(_) => js.create_key_value(config).await.map_err(|e| e.to_string()),
            }
        }
    })
    .await
}

/// A lease-length bucket (history 1), created if missing, once it takes
/// writes: a bucket just created in a NATS cluster refuses them ("no
/// stream found") until every server knows it.
async fn bucket(
    js: &jetstream::Context,
    name: &str,
    config: &ClusterConfig,
) -> Result<jetstream::kv::Store, ClusterError> {
    let kv = open_or_create_bucket(
        js,
        jetstream::kv::Config {
            bucket: name.to_owned(),
            history: 1,
            max_age: config.lease(),
            num_replicas: config.replicas,
            storage: jetstream::stream::StorageType::File,
            ..Default::default()
        },
    )
    .await?;
    settled(&format!("bucket {name} takes no writes"), || {
        kv.put("_ready", bytes::Bytes::from_static(b"1"))
    })
    .await?;
    Ok(kv)
}

/// The shard count is fixed when the cluster is created; every node must
/// use it.
async fn check_shard_count(
    js: &jetstream::Context,
    names: &Names,
    config: &ClusterConfig,
    shards: usize,
) -> Result<(), ClusterError> {
    let kv = open_or_create_bucket(
        js,
        jetstream::kv::Config {
            bucket: names.config.clone(),
            history: 1,
            num_replicas: config.replicas,
            storage: jetstream::stream::StorageType::File,
            ..Default::default()
        },
    )
    .await?;
    // The first node to get here writes its count; every node (the first
    // included) then reads whichever count won.
    let stored = settled("reading the cluster's shard count", || async {
        if let Err(e) = kv.create("shards", shards.to_string().into()).await
            && e.kind() != jetstream::kv::CreateErrorKind::AlreadyExists
        {
            return Err(e.to_string());
        }
        kv.get("shards").await.map_err(|e| e.to_string())
    })
    .await?
    .and_then(|b| std::str::from_utf8(&b).ok()?.parse::<usize>().ok());
    match stored {
        Some(n) if n == shards => Ok(()),
        Some(n) => Err(ClusterError::ShardCount {
            cluster: config.name.clone(),
            cluster_shards: n,
            node_shards: shards,
        }),
        None => Err(ClusterError::js(
            "reading the cluster's shard count",
            "missing or unreadable",
        )),
    }
}
