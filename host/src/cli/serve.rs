//! `realmhost serve`: run a node with its HTTP API until SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use crate::cluster::Cluster;
use crate::node::{Node, NodeConfig, api, metrics};
use crate::store::ShardingConfig;

/// Options of `realmhost serve`. Flags override the config file.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// TOML config file (every section optional).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Data directory (database, plugin cache).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Directory of extra `*.wasm` plugins.
    #[arg(long)]
    plugins_dir: Option<PathBuf>,
    /// Where compiled plugins are cached (overrides `[runtime] cache_dir`;
    /// default: `plugin-cache` in the data directory). Nodes of one machine
    /// may share it, so each plugin is compiled once; it holds machine code
    /// the node loads, so only the node's user may write to it.
    #[arg(long, env = "REALMHOST_PLUGIN_CACHE", value_name = "DIR")]
    plugin_cache: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Sharding profile: minimal, default, production, auto_scaled, high_security.
    #[arg(long)]
    profile: Option<String>,
    /// Admin token for mutating admin routes.
    #[arg(long, env = "REALMHOST_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Join a cluster: its NATS server URLs, comma-separated (overrides `[cluster] nats`).
    #[arg(long, value_name = "NATS_URLS")]
    cluster: Option<String>,
    /// Cluster name (streams, buckets and subjects are prefixed with it).
    #[arg(long, requires = "cluster")]
    cluster_name: Option<String>,
    /// Replicas of the cluster's streams and buckets: 1 or 3.
    #[arg(long, requires = "cluster")]
    cluster_replicas: Option<usize>,
    /// This node's id in the cluster (default: a fresh one each start).
    #[arg(long, requires = "cluster")]
    cluster_node_id: Option<String>,
    /// The HTTP address other nodes and operators see for this node (default: the listen address).
    #[arg(long, requires = "cluster")]
    advertise: Option<String>,
}

/// Resolve the config from the file and the flags.
pub fn resolve(args: &ServeArgs) -> Result<NodeConfig> {
    let mut cfg = match &args.config {
        Some(path) => NodeConfig::from_file(path)?,
        None => NodeConfig::default(),
    };
    if let Some(d) = &args.data_dir {
        cfg.data_dir = d.clone();
    }
    if let Some(d) = &args.plugins_dir {
        cfg.plugins_dir = Some(d.clone());
    }
    if let Some(d) = &args.plugin_cache {
        cfg.runtime.cache_dir = Some(d.clone());
    }
    if let Some(l) = args.listen {
        cfg.http.listen = l;
    }
    if let Some(t) = &args.admin_token {
        cfg.http.admin_token = Some(t.clone());
    }
    if let Some(p) = &args.profile {
        cfg.sharding = profile(p).with_context(|| format!("unknown profile {p:?}"))?;
        if p == "minimal" {
            // One trusted local client: no token buckets.
            cfg.http.rate_limit.enabled = false;
        }
    }
    if let Some(urls) = &args.cluster {
        let mut c = cfg.cluster.take().unwrap_or_default();
        c.nats = urls.clone();
        if let Some(n) = &args.cluster_name {
            c.name = n.clone();
        }
        if let Some(r) = args.cluster_replicas {
            c.replicas = r;
        }
        if let Some(id) = &args.cluster_node_id {
            c.node_id = id.clone();
        }
        if let Some(a) = &args.advertise {
            c.advertise = a.clone();
        }
        cfg.cluster = Some(c);
    }
    if let Some(c) = &cfg.cluster {
        c.validate()?;
    }
    cfg.monitor.expected_shards = cfg.sharding.num_shards;
    cfg.validate()?;
    Ok(cfg)
}

/// A sharding profile by name.
fn profile(name: &str) -> Option<ShardingConfig> {
    Some(match name {
        "minimal" => ShardingConfig::minimal(),
        "default" | "development" => ShardingConfig::default(),
        "production" => ShardingConfig::production(),
        "auto_scaled" | "auto-scaled" => ShardingConfig::auto_scaled(),
        "high_security" | "high-security" => ShardingConfig::high_security(),
        _ => return None,
    })
}

/// Run the node.
pub fn run(args: ServeArgs) -> Result<()> {
    let cfg = resolve(&args)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        metrics::install();
        // Bound first: a cluster node announces its address.
        let listener = tokio::net::TcpListener::bind(cfg.http.listen)
            .await
            .with_context(|| format!("cannot listen on {}", cfg.http.listen))?;
        let addr = listener.local_addr()?;
        let (node, cluster) = match cfg.cluster.clone() {
            Some(cc) => {
                let (c, n) = Cluster::open(cc, cfg.clone(), &format!("http://{addr}")).await?;
                (n, Some(c))
            }
            None => (Node::open(cfg.clone()).await?, None),
        };
        let startup = node.plugin_startup();
        for t in &startup.unserved_types {
            eprintln!(
                "warning: stored realms of type {t:?} have no plugin; they answer unknown_realm_type until one is loaded (realmhost plugin load)"
            );
        }
        for s in &startup.skipped {
            eprintln!("warning: plugin not loaded: {s}");
        }
        for p in &startup.problems {
            eprintln!("error: stored plugin not restored: {p}");
        }
        // One machine-readable line on stdout: tests and scripts wait for it.
        println!("realmhost listening on http://{addr}");
        eprintln!(
            "data: {} · shards: {} · plugins: {}",
            cfg.data_dir.display(),
            cfg.sharding.num_shards,
            node.plugins().realm_types().join(", ")
        );
        eprintln!("operator page: http://{addr}/ui");
        let router = api::router(node.clone());
        if let Some(c) = &cluster {
            c.set_router(router.clone());
            eprintln!(
                "cluster {}: node {} via {}",
                c.config().name,
                c.node_id(),
                c.config().nats
            );
        }
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
            .with_graceful_shutdown(shutdown_signal())
            .await?;
        if let Some(c) = &cluster {
            eprintln!("leaving the cluster: handing the shards over…");
            c.leave(&node).await;
        }
        eprintln!("shutting down: finishing appends, writing snapshots…");
        node.shutdown().await?;
        eprintln!("stopped cleanly");
        Ok(())
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
