//! `realmhost storage …`: offline operations on a stopped node's data
//! directory.

use std::path::PathBuf;

use clap::Subcommand;

use crate::storage::check::{self, CheckReport};

/// Storage operations (offline: the node must be stopped).
#[derive(Debug, Subcommand)]
pub(super) enum StorageCmd {
    /// Scrub every database file (partition) of the data directory: redb's
    /// page checks, then every table (rows decode, each realm's log is
    /// continuous and matches its index, metadata and snapshot, and the realm
    /// is in the partition its id hashes to). Exits non-zero when anything is damaged. A
    /// running node answers the same (without the page checks) at
    /// `POST /v1/admin/storage/check`.
    Check {
        /// The node's data directory.
        #[arg(long, default_value = "data")]
        data_dir: PathBuf,
        /// Print the report as JSON; a failure is then JSON too, on stderr:
        /// {"error":{"code":…,"message":…}}.
        #[arg(long)]
        json: bool,
    },
}

impl StorageCmd {
    /// Whether the report (and so a failure) is to be printed as JSON.
    pub(super) fn json(&self) -> bool {
        match self {
            Self::Check { json, .. } => *json,
        }
    }
}

pub(super) fn run(cmd: StorageCmd) -> anyhow::Result<()> {
    match cmd {
        StorageCmd::Check { data_dir, json } => {
            let report = check::check(&data_dir)
                .map_err(|e| anyhow::anyhow!("cannot check {}: {e}", data_dir.display()))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report_text(&report));
            }
            if report.is_clean() {
                Ok(())
            } else {
                Err(anyhow::anyhow!(
                    "{} damaged record(s) in {} realm(s)",
                    report.damage_count,
                    report.damaged_realms.len()
                ))
            }
        }
    }
}

/// The report for a terminal: summary, then one line per damaged record.
pub fn report_text(r: &CheckReport) -> String {
    let mut out = format!(
        "integrity: {}\nrealms:    {}\nevents:    {}\nsnapshots: {}\ndamage:    {}\n",
        r.integrity, r.realms, r.events, r.snapshots, r.damage_count
    );
    for d in &r.damage {
        out.push_str(&format!(
            "  [{}] realm {} seq {}: {}\n",
            d.table,
            d.realm.as_deref().unwrap_or("-"),
            d.seq.map_or("-".to_owned(), |s| s.to_string()),
            d.reason
        ));
    }
    if r.damage_count as usize > r.damage.len() {
        out.push_str(&format!(
            "  … and {} more\n",
            r.damage_count as usize - r.damage.len()
        ));
    }
    out
}
