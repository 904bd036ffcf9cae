//! The `realmhost` command line.
//!
//! - `realmhost demo` is the main job on the embedded default: a node on a
//!   fresh data directory under a realistic workload, with progress bars and a
//!   summary of what was measured.
//! - `realmhost serve` runs a node with its HTTP API.
//! - `realmhost shard|plugin|realm|jobs|messages|cluster status …` are the
//!   operator commands; they talk to a running node over HTTP.
//! - `realmhost cluster dev` starts a local cluster (NATS servers and nodes).
//!
//! Output: answers on stdout, failures on stderr with a non-zero exit code
//! (as JSON with `--json`: see the `error` module); colours and progress bars only on
//! a terminal (see the `term` module).

mod client;
mod cluster;
mod demo;
mod error;
mod jobs;
mod messages;
pub mod new;
mod plugin;
mod serve;
mod storage;
mod term;

pub use client::{analysis_text, list_text, status_text, thousands};

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// A WebAssembly-pluggable shard host.
#[derive(Debug, Parser)]
#[command(name = "realmhost", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a node on a fresh data directory under a realistic workload and report what was measured.
    Demo(demo::DemoArgs),
    /// Run a node with its HTTP API (embedded default: ./data, ./plugins).
    Serve(serve::ServeArgs),
    /// Shard operations on a running node.
    Shard(Remote<client::ShardCmd>),
    /// Plugin operations on a running node.
    Plugin(Remote<plugin::PluginCmd>),
    /// Realm operations on a running node.
    Realm(Remote<client::RealmCmd>),
    /// Background jobs (verify, shadow replay, preload) on a running node: list, show, cancel, start.
    Jobs(Remote<jobs::JobsCmd>),
    /// Messages between realms on a running node: a realm's undelivered messages, a chain, dead letters (list, retry, drop).
    Messages(Remote<messages::MessagesCmd>),
    /// A cluster: its state (status), or a local one to try (dev).
    #[command(subcommand)]
    Cluster(cluster::ClusterCmd),
    /// Inspect a plugin component: load it under the sandbox's rules and describe it.
    Inspect {
        /// Path of a `.wasm` component.
        path: std::path::PathBuf,
    },
    /// Write a new plugin crate.
    #[command(subcommand)]
    New(new::NewCmd),
    /// Offline storage operations on a stopped node's data directory.
    #[command(subcommand)]
    Storage(storage::StorageCmd),
}

/// A command group that talks to a running node: its subcommands, and the
/// connection options (`--node`, `--token`, `--json`) that only these
/// commands take, so `serve --help` and `demo --help` do not list them.
#[derive(Debug, Args)]
#[command(subcommand_required = true)]
struct Remote<C: Subcommand> {
    #[command(subcommand)]
    cmd: C,
    #[command(flatten)]
    conn: client::Conn,
}

impl Command {
    /// Whether the user asked for JSON output (and so JSON errors).
    fn json(&self) -> bool {
        match self {
            Self::Shard(r) => r.conn.json(),
            Self::Plugin(r) => r.conn.json(),
            Self::Realm(r) => r.conn.json(),
            Self::Jobs(r) => r.conn.json(),
            Self::Messages(r) => r.conn.json(),
            Self::Storage(cmd) => cmd.json(),
            Self::Cluster(cmd) => cmd.json(),
            Self::Demo(_) | Self::Serve(_) | Self::Inspect { .. } | Self::New(_) => false,
        }
    }
}

/// Parse the command line and run it. A failure is reported on stderr (as
/// JSON with `--json`, see the `error` module) with a non-zero exit code.
pub fn main() -> ExitCode {
    init_tracing();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // Help and version go to stdout as clap prints them; usage errors
        // are JSON when `--json` is among the arguments.
        Err(e) if e.use_stderr() && std::env::args_os().any(|a| a == "--json") => {
            eprintln!("{}", error::usage_json(&e));
            return ExitCode::from(2);
        }
        Err(e) => e.exit(),
    };
    let json = cli.command.json();
    let result = match cli.command {
        Command::Demo(args) => demo::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Shard(r) => client::shard(&r.conn, r.cmd),
        Command::Plugin(r) => plugin::plugin(&r.conn, r.cmd),
        Command::Realm(r) => client::realm(&r.conn, r.cmd),
        Command::Jobs(r) => jobs::jobs(&r.conn, r.cmd),
        Command::Messages(r) => messages::messages(&r.conn, r.cmd),
        Command::Inspect { path } => inspect(&path),
        Command::New(cmd) => new::run(cmd),
        Command::Storage(cmd) => storage::run(cmd),
        Command::Cluster(cmd) => cluster::run(cmd),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error::report(&e, json);
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr, with colours only on a terminal and without
/// `NO_COLOR` (piped or captured logs stay free of escape codes).
fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_env("REALMHOST_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(term::stderr_colours())
        .try_init();
}

fn inspect(path: &std::path::Path) -> anyhow::Result<()> {
    let bytes =
        std::fs::read(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let rt = crate::runtime::PluginRuntime::new(crate::runtime::RuntimeConfig::default())?;
    let p = rt.load(&bytes)?;
    let i = p.info();
    println!("realm type:  {}", i.realm_type);
    println!("version:     {}", i.semver);
    println!("content:     {}", i.version.to_hex());
    println!("size:        {} bytes", i.size_bytes);
    println!("description: {}", i.description);
    println!("state:       version {}", i.state_version);
    println!("imports:     only what the sandbox allows (stdout and stderr go to the host log)");
    Ok(())
}
