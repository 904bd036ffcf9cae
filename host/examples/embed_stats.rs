//! Reading a node's statistics from the library: the node's counters, the
//! store's shards and the shard monitor's verdicts — what `/v1/stats` and
//! `realmhost shard status` show.
//!
//! ```sh
//! cargo run -p realmhost-examples --example embed_stats
//! ```

use realmhost::RealmId;
use realmhost::node::{Node, NodeConfig};
use realmhost::runtime::LoadOptions;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let mut config = NodeConfig::with_data_dir(dir.path());
    config.builtin_plugins = false;
    config.plugins_dir = None;
    let node = Node::open(config).await?;
    node.load_plugin(
        realmhost_plugin_artifacts::COUNTER.to_vec(),
        LoadOptions::activate(),
    )
    .await?;
    for i in 0..200 {
        let realm = RealmId::new(format!("counter-{}", i % 20))?;
        node.append_json(
            realm,
            "counter",
            "add",
            r#"{"add":1}"#,
            &format!("client-{}", i % 7),
            None,
        )
        .await?;
    }

    let stats = node.stats();
    println!(
        "appends {}  rejections {}  failures {}  snapshots {}  pipelined {}",
        stats.appends, stats.rejections, stats.failures, stats.snapshots, stats.pipelined_appends
    );
    println!(
        "store: {} realms loaded in {} shards",
        stats.sharding.total_loaded_realms, stats.sharding.num_shards
    );
    // The busiest shards and what the monitor makes of them.
    let mut shards: Vec<_> = (0..stats.sharding.num_shards)
        .filter_map(|s| node.analyze(s).ok())
        .collect();
    shards.sort_by_key(|a| std::cmp::Reverse(a.shard.activity));
    for a in shards.iter().take(3) {
        println!(
            "shard {:>3}: {} events, entropy {}, reputation {:.2}, {:?}",
            a.shard.shard,
            a.shard.activity,
            a.shard
                .entropy
                .map_or("n/a".to_owned(), |e| format!("{e:.2}")),
            a.shard.reputation,
            a.verdict
        );
    }
    node.shutdown().await?;
    Ok(())
}
