//! `realmhost jobs …`: background verify and shadow jobs on a running node.

use anyhow::{Result, bail};
use clap::Subcommand;
use serde_json::{Value, json};

use super::client::{Client, Conn, print_json};
use crate::node::{JobState, JobView};

/// `realmhost jobs …`
#[derive(Debug, Subcommand)]
pub enum JobsCmd {
    /// Every job the node keeps: running ones and the last finished.
    List,
    /// One job: state, progress and result.
    Show {
        /// Job id.
        id: u64,
        /// Wait until it finishes, printing progress.
        #[arg(long)]
        wait: bool,
    },
    /// Cancel a running job (it stops between replay chunks).
    Cancel {
        /// Job id.
        id: u64,
    },
    /// Start a verify of one realm in the background; prints the job id.
    Verify {
        /// Realm id.
        realm_id: String,
    },
    /// Start a shadow replay of a candidate version in the background.
    Shadow {
        /// Realm type.
        realm_type: String,
        /// Semantic version, hash or hash prefix.
        version: String,
        /// Realms to replay (default: all).
        #[arg(long)]
        sample: Option<usize>,
    },
}

fn state_word(s: JobState) -> &'static str {
    match s {
        JobState::Running => "running",
        JobState::Done => "done",
        JobState::Failed => "FAILED",
        JobState::Cancelled => "cancelled",
    }
}

fn line(j: &JobView) -> String {
    let p = &j.progress;
    format!(
        "{:>5}  {:<8} {:<9} realms {}/{}  events {}/{}  {}",
        j.id,
        format!("{:?}", j.kind).to_lowercase(),
        state_word(j.state),
        p.realms_done,
        p.realms_total,
        p.events_replayed,
        p.events_total,
        j.target
    )
}

fn show(v: Value) -> Result<JobView> {
    let j: JobView = serde_json::from_value(v)?;
    println!("{}", line(&j));
    if let Some(e) = &j.error {
        println!("       {e}");
    }
    if let Some(r) = &j.result {
        println!("{}", serde_json::to_string_pretty(r)?);
    }
    Ok(j)
}

/// Run a `jobs` command.
pub fn jobs(conn: &Conn, cmd: JobsCmd) -> Result<()> {
    let c = Client::new(conn);
    let v = match cmd {
        JobsCmd::List => {
            let v = c.get("/v1/admin/jobs")?;
            if conn.json() {
                return print_json(&v);
            }
            let jobs: Vec<JobView> = serde_json::from_value(v["jobs"].clone())?;
            println!("Jobs: {}", jobs.len());
            for j in &jobs {
                println!("{}", line(j));
            }
            return Ok(());
        }
        JobsCmd::Show { id, wait } => {
            let mut v = c.get(&format!("/v1/admin/jobs/{id}"))?;
            while wait && v["state"] == "running" {
                if !conn.json() {
                    let j: JobView = serde_json::from_value(v.clone())?;
                    eprintln!("{}", line(&j));
                }
                std::thread::sleep(std::time::Duration::from_millis(500));
                v = c.get(&format!("/v1/admin/jobs/{id}"))?;
            }
            v
        }
        JobsCmd::Cancel { id } => c.delete(&format!("/v1/admin/jobs/{id}"))?,
        JobsCmd::Verify { realm_id } => c.post(
            "/v1/admin/jobs",
            &json!({ "kind": "verify", "realm_id": realm_id }),
        )?,
        JobsCmd::Shadow {
            realm_type,
            version,
            sample,
        } => c.post(
            "/v1/admin/jobs",
            &json!({ "kind": "shadow", "realm_type": realm_type, "version": version, "sample": sample }),
        )?,
    };
    if conn.json() {
        return print_json(&v);
    }
    let j = show(v)?;
    if j.state == JobState::Failed {
        bail!("job {} failed", j.id);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use crate::cli::Cli;

    #[test]
    fn jobs_commands_parse() {
        Cli::command().debug_assert();
        for args in [
            &["realmhost", "jobs", "list"][..],
            &["realmhost", "jobs", "show", "3", "--wait"],
            &["realmhost", "jobs", "cancel", "3"],
            &["realmhost", "jobs", "verify", "some/realm"],
            &[
                "realmhost",
                "jobs",
                "shadow",
                "ledger",
                "1.2.0",
                "--sample",
                "10",
            ],
        ] {
            assert!(Cli::try_parse_from(args).is_ok(), "{args:?}");
        }
        assert!(Cli::try_parse_from(["realmhost", "jobs", "show", "x"]).is_err());
    }
}
