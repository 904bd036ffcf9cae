//! The `realmhost` command line.
//!
//! - `realmhost demo` is the main job on the embedded default: a node on a
//!   fresh data directory under a realistic workload, with progress bars and a
//!   summary of what was measured.
//! - `realmhost serve` runs a node with its HTTP API.
//! - `realmhost shard|plugin|realm|jobs …` are the operator commands; they talk to
//!   a running node over HTTP.

mod client;
mod demo;
mod jobs;
pub mod new;
mod plugin;
mod serve;
mod storage;

pub use client::{analysis_text, list_text, status_text, thousands};

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// A WebAssembly-pluggable shard host.
#[derive(Debug, Parser)]
#[command(name = "realmhost", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    conn: client::Conn,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a node on a fresh data directory under a realistic workload and report what was measured.
    Demo(demo::DemoArgs),
    /// Run a node with its HTTP API (embedded default: ./data, ./plugins).
    Serve(serve::ServeArgs),
    /// Shard operations on a running node.
    #[command(subcommand)]
    Shard(client::ShardCmd),
    /// Plugin operations on a running node.
    #[command(subcommand)]
    Plugin(plugin::PluginCmd),
    /// Realm operations on a running node.
    #[command(subcommand)]
    Realm(client::RealmCmd),
    /// Background jobs (verify, shadow replay, preload) on a running node: list, show, cancel, start.
    #[command(subcommand)]
    Jobs(jobs::JobsCmd),
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

/// Parse the command line and run it.
pub fn main() -> ExitCode {
    init_tracing();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(args) => demo::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Shard(cmd) => client::shard(&cli.conn, cmd),
        Command::Plugin(cmd) => plugin::plugin(&cli.conn, cmd),
        Command::Realm(cmd) => client::realm(&cli.conn, cmd),
        Command::Jobs(cmd) => jobs::jobs(&cli.conn, cmd),
        Command::Inspect { path } => inspect(&path),
        Command::New(cmd) => new::run(cmd),
        Command::Storage(cmd) => storage::run(cmd),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_env("REALMHOST_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
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
