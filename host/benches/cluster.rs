//! Cluster benchmarks, each against the embedded single node in the same
//! run (`cargo bench -p realmhost --bench cluster`; needs `nats-server`,
//! which it installs with pip if missing):
//! - durable appends/s through three nodes on three NATS servers (R3,
//!   `sync_interval: always`), 64 writers on distinct realms, each calling
//!   the realm's owner; against one embedded node with the same writers;
//! - one shard's pipelined appends/s: the 64 writers' realms all in one
//!   shard, so every append goes through that shard's log;
//! - graceful handoff: a fourth node joins and gets its share, then leaves
//!   and hands it back; time per shard moved.
//!
//! `REALMHOST_CLUSTER_BENCH_SECS` sets each measurement's length (default 5).
//! Failover after a SIGKILL is measured by the end-to-end test
//! (`REALMHOST_CLUSTER_KILLS=10 cargo test -p realmhost --test e2e cluster::`).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use realmhost::cluster::dev::{NatsServers, ensure_nats_server};
use realmhost::cluster::{Cluster, ClusterConfig};
use realmhost::node::{Node, NodeConfig};
use realmhost::{NewEvent, RealmId};
use realmhost_guest::encode_payload;

const WRITERS: usize = 64;
const SHARDS: usize = 16;

fn counter_event(realm: &RealmId, w: usize) -> NewEvent {
    NewEvent {
        realm_id: realm.clone(),
        realm_type: "counter".into(),
        kind: "add".into(),
        payload: encode_payload(&realmhost_plugin_counter::Op::Add(1)),
        source: format!("writer-{w}"),
        source_realm: None,
    }
}

fn node_config(dir: &Path) -> NodeConfig {
    let mut cfg = NodeConfig::with_data_dir(dir);
    cfg.plugins_dir = None;
    cfg.sharding.num_shards = SHARDS;
    cfg.monitor.expected_shards = SHARDS;
    cfg
}

/// `WRITERS` tasks appending to `realms` (one each) for `d` after a warm-up,
/// each through `pick(realm)`; events/s.
async fn run_writers(
    realms: Vec<RealmId>,
    pick: impl Fn(&RealmId) -> Arc<Node> + Send + Sync + 'static,
    d: Duration,
) -> f64 {
    let pick = Arc::new(pick);
    let stop = Arc::new(AtomicBool::new(false));
    let warm = Duration::from_millis(500);
    let mut tasks = Vec::new();
    for (w, realm) in realms.into_iter().enumerate() {
        let (stop, pick) = (stop.clone(), pick.clone());
        tasks.push(tokio::spawn(async move {
            let start = Instant::now();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let node = pick(&realm);
                node.append(counter_event(&realm, w)).await.unwrap();
                if start.elapsed() > warm {
                    n += 1;
                }
            }
            n
        }));
    }
    tokio::time::sleep(warm + d).await;
    stop.store(true, Ordering::Relaxed);
    let mut n = 0;
    for t in tasks {
        n += t.await.unwrap();
    }
    n as f64 / d.as_secs_f64()
}

fn realms(filter: impl Fn(&str) -> bool) -> Vec<RealmId> {
    (0..)
        .map(|i| format!("bench-{i:06}"))
        .filter(|r| filter(r))
        .take(WRITERS)
        .map(|r| RealmId::new(r).unwrap())
        .collect()
}

async fn embedded(d: Duration, one_shard: bool) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::open(node_config(dir.path())).await.unwrap();
    let rs = realms(|r| !one_shard || realmhost::shard_of(r, SHARDS) == 0);
    let n = node.clone();
    let rate = run_writers(rs, move |_| n.clone(), d).await;
    node.shutdown().await.unwrap();
    rate
}

struct Members {
    nodes: Vec<(Arc<Cluster>, Arc<Node>)>,
}

impl Members {
    fn owner(&self, realm: &RealmId) -> Arc<Node> {
        let shard = realmhost::shard_of(realm.as_str(), SHARDS);
        self.nodes
            .iter()
            .find(|(_, n)| n.serves_shard(shard))
            .map_or_else(|| self.nodes[0].1.clone(), |(_, n)| n.clone())
    }

    fn served(&self) -> Vec<usize> {
        self.nodes
            .iter()
            .map(|(c, _)| c.served_shards().len())
            .collect()
    }

    async fn wait_balanced(&self) {
        let t = Instant::now();
        loop {
            let s = self.served();
            let (min, sum) = (
                s.iter().min().copied().unwrap_or(0),
                s.iter().sum::<usize>(),
            );
            if sum == SHARDS && min >= SHARDS / s.len() {
                return;
            }
            assert!(t.elapsed() < Duration::from_secs(60), "not balanced: {s:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn join(urls: &str, dir: &Path, i: usize) -> (Arc<Cluster>, Arc<Node>) {
    let cc = ClusterConfig::builder()
        .nats(urls)
        .node_id(format!("bench-{i}"))
        .replicas(3)
        .lease(Duration::from_millis(2000))
        .tick(Duration::from_millis(200))
        .build()
        .unwrap();
    Cluster::open(
        cc,
        node_config(&dir.join(format!("node-{i}"))),
        "http://bench",
    )
    .await
    .unwrap()
}

fn main() {
    ensure_nats_server().expect("nats-server");
    let secs: u64 = std::env::var("REALMHOST_CLUSTER_BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let d = Duration::from_secs(secs);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServers::start(3, &dir.path().join("nats")).expect("nats servers");
    let urls = nats.urls();
    rt.block_on(async {
        let base = embedded(d, false).await;
        let mut m = Members { nodes: Vec::new() };
        for i in 0..3 {
            m.nodes.push(join(&urls, dir.path(), i).await);
        }
        m.wait_balanced().await;
        let m = Arc::new(m);
        let mm = m.clone();
        let spread = run_writers(realms(|_| true), move |r| mm.owner(r), d).await;
        let mm = m.clone();
        let one = run_writers(
            realms(|r| realmhost::shard_of(r, SHARDS) == 0),
            move |r| mm.owner(r),
            d,
        )
        .await;
        let base_one = embedded(d, true).await;
        println!("durable appends, {WRITERS} writers on distinct counter realms, {secs} s each:");
        println!("  embedded single node:                {base:>8.0} events/s");
        println!(
            "  cluster, 3 nodes, 3 NATS servers R3: {spread:>8.0} events/s ({:.2}× embedded: the price of replication)",
            spread / base
        );
        println!("  one shard, embedded:                 {base_one:>8.0} events/s");
        println!(
            "  one shard, cluster (its log pipelined): {one:>6.0} events/s ({:.2}× embedded)",
            one / base_one
        );

        let mut m = Arc::try_unwrap(m).ok().expect("writers done");
        let before = m.served();
        let t = Instant::now();
        m.nodes.push(join(&urls, dir.path(), 3).await);
        m.wait_balanced().await;
        let joined = t.elapsed();
        let moved = m.served()[3];
        let (c, n) = m.nodes.pop().unwrap();
        let t = Instant::now();
        c.leave(&n).await;
        m.wait_balanced().await;
        let left = t.elapsed();
        println!("graceful handoff ({SHARDS} shards; before the join {before:?}):");
        println!(
            "  a fourth node joins: {moved} shards moved to it in {joined:.2?} ({:.0} ms per shard, claims in parallel)",
            joined.as_millis() as f64 / moved.max(1) as f64
        );
        println!(
            "  it leaves: {moved} shards handed back in {left:.2?} ({:.0} ms per shard)",
            left.as_millis() as f64 / moved.max(1) as f64
        );
        n.shutdown().await.unwrap();
        for (c, n) in m.nodes {
            c.leave(&n).await;
            n.shutdown().await.unwrap();
        }
    });
    drop(nats);
}
