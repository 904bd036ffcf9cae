//! `realmhost cluster …`: the state of a cluster (`status`, from any node)
//! and a local cluster to try it (`dev`: NATS servers and nodes on loopback
//! ports, until Ctrl-C).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};

use super::client::{Client, Conn, print_json};
use crate::cluster::ClusterStatus;
use crate::cluster::dev::{NatsServers, free_port};

/// `realmhost cluster …`
#[derive(Debug, Subcommand)]
pub enum ClusterCmd {
    /// Nodes, the shards each serves (epoch, log lag) and unowned shards, as a node of the cluster sees them.
    Status {
        #[command(flatten)]
        conn: Conn,
    },
    /// Start a local cluster: NATS servers and nodes on loopback ports, until Ctrl-C.
    Dev(DevArgs),
}

impl ClusterCmd {
    pub(super) fn json(&self) -> bool {
        match self {
            Self::Status { conn } => conn.json(),
            Self::Dev(_) => false,
        }
    }
}

/// Options of `realmhost cluster dev`.
#[derive(Debug, Args)]
pub struct DevArgs {
    /// Nodes to start.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// NATS servers: 3 (a JetStream cluster, streams with 3 replicas) or 1.
    #[arg(long, default_value_t = 3)]
    nats: usize,
    /// Where the servers' and nodes' data and logs go (default: a new
    /// directory under the system's temporary directory).
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// Run a `cluster` command.
pub fn run(cmd: ClusterCmd) -> Result<()> {
    match cmd {
        ClusterCmd::Status { conn } => status(&conn),
        ClusterCmd::Dev(args) => dev(args),
    }
}

fn status(conn: &Conn) -> Result<()> {
    let v = Client::new(conn).get("/v1/cluster")?;
    if conn.json() {
        return print_json(&v);
    }
    let s: ClusterStatus = serde_json::from_value(v).context("unexpected cluster status")?;
    print!("{}", status_text(&s));
    Ok(())
}

/// The table `cluster status` prints.
pub fn status_text(s: &ClusterStatus) -> String {
    use std::fmt::Write;
    let mut out = format!(
        "cluster {} · {} shards · {} replica(s) · {} node(s) · {} log entries (answered by {})\n",
        s.cluster,
        s.shards,
        s.replicas,
        s.nodes.len(),
        s.log_entries,
        s.this_node
    );
    let _ = writeln!(
        out,
        "{:<16} {:<28} {:>6} {:>10}  shards (epoch, lag)",
        "node", "http", "shards", "max lag"
    );
    for n in &s.nodes {
        let max_lag = n.shards.iter().map(|h| h.lag).max().unwrap_or(0);
        let mut mark = String::new();
        if !n.healthy {
            mark.push_str(" [storage degraded]");
        }
        if n.leaving {
            mark.push_str(" [leaving]");
        }
        let list = n
            .shards
            .iter()
            .map(|h| format!("{}({},{})", h.shard, h.epoch, h.lag))
            .collect::<Vec<_>>()
            .join(" ");
        let _ = writeln!(
            out,
            "{:<16} {:<28} {:>6} {:>10}  {list}{mark}",
            n.id,
            n.http,
            n.shards.len(),
            max_lag
        );
    }
    if s.unowned.is_empty() {
        out.push_str("every shard is served\n");
    } else {
        let _ = writeln!(out, "unowned shards: {:?}", s.unowned);
    }
    out
}

fn dev(args: DevArgs) -> Result<()> {
    if args.nodes == 0 {
        bail!("--nodes must be at least 1");
    }
    if !matches!(args.nats, 1 | 3) {
        bail!("--nats must be 1 or 3");
    }
    let dir = args.dir.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("realmhost-cluster-{}", std::process::id()))
    });
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    eprintln!(
        "starting {} NATS server(s) under {}",
        args.nats,
        dir.display()
    );
    let nats = NatsServers::start(args.nats, &dir.join("nats"))?;
    let exe = std::env::current_exe().context("cannot find the realmhost binary")?;
    let mut nodes: Vec<(Child, String)> = Vec::new();
    for i in 0..args.nodes {
        let port = free_port()?;
        let log = std::fs::File::create(dir.join(format!("node-{i}.log")))?;
        let mut child = Command::new(&exe)
            .arg("serve")
            .arg("--data-dir")
            .arg(dir.join(format!("node-{i}")))
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--cluster")
            .arg(nats.urls())
            .arg("--cluster-replicas")
            .arg(args.nats.to_string())
            .arg("--cluster-node-id")
            .arg(format!("node-{i}"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .context("cannot start a node")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let url = line
            .trim()
            .strip_prefix("realmhost listening on ")
            .map(str::to_owned)
            .with_context(|| {
                format!(
                    "node {i} did not start (log: {})",
                    dir.join(format!("node-{i}.log")).display()
                )
            })?;
        nodes.push((child, url));
    }
    println!("NATS: {}", nats.urls());
    for (i, (_, url)) in nodes.iter().enumerate() {
        println!("node-{i}: {url}");
    }
    println!(
        "status: realmhost cluster status --node {}\nlogs and data: {}\nCtrl-C stops everything",
        nodes[0].1,
        dir.display()
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let _ = tokio::signal::ctrl_c().await;
    });
    eprintln!("stopping the nodes (each hands its shards over)…");
    for (child, _) in &nodes {
        // SIGTERM: a graceful leave.
        // SAFETY: kill(2) with a pid we spawned and a valid signal.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
    }
    for (mut child, _) in nodes {
        let _ = child.wait();
    }
    drop(nats);
    eprintln!("stopped");
    Ok(())
}
