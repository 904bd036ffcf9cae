//! `realmhost plugin …`: the plugin lifecycle on a running node. Every change
//! is stored by the node and survives its restart.
//!
//! Versions are named by semantic version (`3.0.0`, when one build of the
//! realm type carries it), by full hash, or by an unambiguous hash prefix
//! (at least 4 hex characters, as `plugin list` shows them).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use serde_json::{Value, json};

use super::client::{Client, Conn, enc, print_json};

/// `realmhost plugin …`
#[derive(Debug, Subcommand)]
pub enum PluginCmd {
    /// Loaded versions per realm type.
    List,
    /// Upload a component (stored by the node); with --activate it becomes active (after a passing shadow replay when it replaces a version).
    Load {
        /// `.wasm` component.
        path: PathBuf,
        /// Make it the active version of its realm type.
        #[arg(long)]
        activate: bool,
        /// Accept a second build of a semantic version that is already loaded.
        #[arg(long)]
        force: bool,
    },
    /// Replay realms through a loaded candidate version and report failures (read-only).
    Shadow {
        /// Realm type.
        realm_type: String,
        /// Candidate version: semantic version, hash or hash prefix.
        version: String,
        /// Realms to check (default: all).
        #[arg(long)]
        sample: Option<usize>,
    },
    /// Make a loaded version active, after a passing shadow replay.
    Swap {
        /// Realm type.
        realm_type: String,
        /// Version: semantic version, hash or hash prefix.
        version: String,
        /// Realms to shadow-replay first (default: all).
        #[arg(long)]
        sample: Option<usize>,
        /// Promote without shadow replay (realms the version cannot rebuild become unservable).
        #[arg(long)]
        force: bool,
    },
    /// Return to the previous version, after a passing shadow replay.
    Rollback {
        /// Realm type.
        realm_type: String,
        /// Realms to shadow-replay first (default: all).
        #[arg(long)]
        sample: Option<usize>,
        /// Roll back without shadow replay (realms the version cannot rebuild become unservable).
        #[arg(long)]
        force: bool,
    },
    /// Remove a version that serves nothing (never the active one).
    Unload {
        /// Realm type.
        realm_type: String,
        /// Version: semantic version, hash or hash prefix.
        version: String,
        /// Also unload the version a rollback would return to.
        #[arg(long)]
        force: bool,
    },
    /// Loads, activations, swaps, rollbacks and unloads, oldest first.
    History,
}

/// Run a `plugin` command.
pub fn plugin(conn: &Conn, cmd: PluginCmd) -> Result<()> {
    let c = Client::new(conn);
    let v = match cmd {
        PluginCmd::List => c.get("/v1/plugins")?,
        PluginCmd::Load {
            path,
            activate,
            force,
        } => {
            let bytes =
                std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
            c.post_bytes(
                &format!("/v1/admin/plugins?activate={activate}&force={force}"),
                &bytes,
            )?
        }
        PluginCmd::Shadow {
            realm_type,
            version,
            sample,
        } => {
            let v = c.post(
                &format!("/v1/plugins/{}/shadow", enc(&realm_type)),
                &json!({ "version": version, "sample": sample }),
            )?;
            if !conn.json() {
                print_shadow(&v);
                if !v["failures"].as_array().is_none_or(Vec::is_empty) {
                    bail!("the candidate failed shadow replay");
                }
                return Ok(());
            }
            v
        }
        PluginCmd::Swap {
            realm_type,
            version,
            sample,
            force,
        } => c.post(
            &format!("/v1/admin/plugins/{}/swap", enc(&realm_type)),
            &json!({ "version": version, "sample": sample, "force": force }),
        )?,
        PluginCmd::Rollback {
            realm_type,
            sample,
            force,
        } => c.post(
            &format!("/v1/admin/plugins/{}/rollback", enc(&realm_type)),
            &json!({ "sample": sample, "force": force }),
        )?,
        PluginCmd::Unload {
            realm_type,
            version,
            force,
        } => c.delete(&format!(
            "/v1/admin/plugins/{}/{}?force={force}",
            enc(&realm_type),
            enc(&version)
        ))?,
        PluginCmd::History => {
            let v = c.get("/v1/plugins/history")?;
            if !conn.json() {
                print_history(&v);
                return Ok(());
            }
            v
        }
    };
    if conn.json() {
        return print_json(&v);
    }
    if let Some(list) = v["plugins"].as_array() {
        print_list(list);
        return Ok(());
    }
    if v["shadow"].is_object() {
        print_shadow(&v["shadow"]);
    }
    if let Some(w) = v["warning"].as_str() {
        eprintln!("warning: {w}");
    }
    let info = if v["info"].is_object() {
        &v["info"]
    } else {
        &v
    };
    println!(
        "{} {} version {}{}",
        info["realm_type"].as_str().unwrap_or("?"),
        info["semver"].as_str().unwrap_or("?"),
        info["version"].as_str().unwrap_or("?"),
        if v["activated"].as_bool() == Some(true) || v["from"].is_string() {
            " (active)"
        } else {
            ""
        }
    );
    Ok(())
}

fn print_list(list: &[Value]) {
    println!(
        "{:<12} {:<14} {:<14} {:>9} {:>7}  STATE",
        "REALM TYPE", "SEMVER", "VERSION", "CALLS", "FAULTS"
    );
    for p in list {
        let state = match (p["active"].as_bool(), p["previous"].as_bool()) {
            (Some(true), _) => "active",
            (_, Some(true)) => "previous",
            _ => "loaded",
        };
        let version = p["info"]["version"].as_str().unwrap_or("");
        println!(
            "{:<12} {:<14} {:<14} {:>9} {:>7}  {}",
            p["info"]["realm_type"].as_str().unwrap_or(""),
            p["info"]["semver"].as_str().unwrap_or(""),
            &version[..version.len().min(12)],
            p["calls"],
            p["faults"],
            state
        );
    }
}

fn print_history(v: &Value) {
    let list = v["history"].as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        println!("no plugin history");
    }
    for e in &list {
        let version = e["version"].as_str().unwrap_or("");
        let from = e["from"]
            .as_str()
            .map(|f| format!(" from {}", &f[..f.len().min(12)]))
            .unwrap_or_default();
        println!(
            "{:>13}  {:<12} {:<11} {:<14} {}{}{}{}",
            e["at_ms"],
            e["realm_type"].as_str().unwrap_or(""),
            e["action"].as_str().unwrap_or(""),
            e["semver"].as_str().unwrap_or(""),
            &version[..version.len().min(12)],
            from,
            if e["forced"].as_bool() == Some(true) {
                " FORCED"
            } else {
                ""
            },
            e["origin"]
                .as_str()
                .filter(|o| !o.is_empty())
                .map(|o| format!("  ({o})"))
                .unwrap_or_default()
        );
    }
}

fn print_shadow(v: &Value) {
    println!(
        "shadow replay of {} candidate {}: {} of {} realms checked, {} events, {} ms",
        v["realm_type"].as_str().unwrap_or("?"),
        v["candidate"]
            .as_str()
            .map_or("?", |s| &s[..s.len().min(12)]),
        v["realms_checked"],
        v["realms_total"],
        v["events_replayed"],
        v["millis"]
    );
    let failures = v["failures"].as_array().cloned().unwrap_or_default();
    if failures.is_empty() {
        println!("passed: every checked realm rebuilt cleanly");
    }
    for f in failures.iter().take(20) {
        println!(
            "  FAIL {} at seq {}: {}",
            f["realm_id"].as_str().unwrap_or(""),
            f["seq"],
            f["reason"].as_str().unwrap_or("")
        );
    }
    if failures.len() > 20 {
        println!("  … and {} more", failures.len() - 20);
    }
}
