//! Read side: snapshots for status/list output and metrics, and the
//! per-shard analysis behind `realmhost shard analyze N`.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};

use super::{MonitorError, QuarantineReason, ShardCell, ShardMonitor, health_score};

/// Reputation below which [`ShardMonitor::analyze`] says "watch".
pub const WATCH_REPUTATION: f64 = 0.8;

/// One shard's security record at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardSecuritySnapshot {
    /// Shard index.
    pub shard: usize,
    /// Events recorded for the shard.
    pub activity: u64,
    /// Smoothed normalized source entropy; `None` while the shard has too
    /// little traffic to be judged (see the module docs).
    pub entropy: Option<f64>,
    /// Window evaluations that found the shard biased.
    pub bias_alarms: u64,
    /// Whether the latest evaluation found it biased.
    pub alarm_active: bool,
    /// Accepted crossings from this shard.
    pub successes: u64,
    /// Rejected or trapped crossings from this shard.
    pub failures: u64,
    /// Failures since the last release (what the automatic quarantine counts).
    pub failures_since_release: u64,
    /// Reputation in `[0, 1]`.
    pub reputation: f64,
    /// Whether crossings from the shard are refused.
    pub quarantined: bool,
    /// Manual or automatic, when quarantined.
    pub quarantine_reason: Option<QuarantineReason>,
    /// When the quarantine started (clock ms), when quarantined.
    pub quarantined_since_ms: Option<u64>,
    /// When an automatic quarantine lifts (clock ms); `None` for manual ones.
    pub quarantine_lifts_at_ms: Option<u64>,
    /// Plugin fuel burned on behalf of the shard.
    pub fuel: u64,
    /// Gas charged for that fuel (fuel × penalty multiplier at the time).
    pub gas: u64,
    /// Current gas multiplier.
    pub penalty_multiplier: f64,
}

/// The whole monitor at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardMonitorSnapshot {
    /// Clock time of the snapshot (ms).
    pub taken_at_ms: u64,
    /// Number of shards.
    pub num_shards: usize,
    /// Median entropy of the judged shards; `None` while none is judged.
    pub global_entropy: Option<f64>,
    /// Events recorded across all shards.
    pub total_events: u64,
    /// Crossings recorded across all shards.
    pub total_crossings: u64,
    /// Accepted crossings.
    pub total_successes: u64,
    /// Failed crossings.
    pub total_failures: u64,
    /// `successes / crossings`; 1 when there were no crossings.
    pub cross_shard_success_rate: f64,
    /// Shards currently quarantined.
    pub quarantined_count: usize,
    /// Shards whose latest entropy evaluation raised an alarm.
    pub alarm_active_count: usize,
    /// 0..=100, see [`health_score`](super::health_score).
    pub health_score: f64,
    /// One row per shard, by index.
    pub shards: Vec<ShardSecuritySnapshot>,
}

/// What [`ShardMonitor::analyze`] concludes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    /// Nothing unusual.
    Healthy,
    /// Low entropy or low reputation: keep an eye on it.
    Watch,
    /// Failures reached the threshold but automatic quarantine is off.
    QuarantineRecommended,
    /// Already quarantined.
    Quarantined,
}

/// One shard's record plus a verdict and a human-readable recommendation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardAnalysis {
    /// The shard's record.
    pub shard: ShardSecuritySnapshot,
    /// The reference the entropy is judged against.
    pub global_entropy: Option<f64>,
    /// Summary.
    pub verdict: Verdict,
    /// E.g. `"watch: entropy 0.21 below 0.5 × global 0.88"`.
    pub recommendation: String,
}

impl ShardMonitor {
    fn row(&self, shard: usize, cell: &ShardCell) -> ShardSecuritySnapshot {
        // Lift an expired automatic quarantine before reading it.
        let quarantined = self.is_quarantined(shard);
        let q = if quarantined {
            *cell.quarantine.lock()
        } else {
            None
        };
        let reputation = cell.reputation();
        ShardSecuritySnapshot {
            shard,
            activity: cell.activity.load(Ordering::Relaxed),
            entropy: self.judged_entropy(cell),
            bias_alarms: cell.bias_alarms.load(Ordering::Relaxed),
            alarm_active: cell.alarm_active.load(Ordering::Relaxed),
            successes: cell.successes.load(Ordering::Relaxed),
            failures: cell.failures.load(Ordering::Relaxed),
            failures_since_release: cell.failures_since_release.load(Ordering::Relaxed),
            reputation,
            quarantined: q.is_some(),
            quarantine_reason: q.map(|q| q.reason),
            quarantined_since_ms: q.map(|q| q.since_ms),
            quarantine_lifts_at_ms: q.and_then(|q| q.until_ms),
            fuel: cell.fuel.load(Ordering::Relaxed),
            gas: cell.gas.load(Ordering::Relaxed),
            penalty_multiplier: self.config.penalty_multiplier(reputation),
        }
    }

    /// One shard's record.
    pub fn shard_snapshot(&self, shard: usize) -> Result<ShardSecuritySnapshot, MonitorError> {
        let cell = self.cell(shard)?;
        Ok(self.row(shard, cell))
    }

    /// Every shard's record plus totals and the health score. Reads atomics
    /// shard by shard (no global pause), so under load the rows are each
    /// consistent-ish but not taken at one instant.
    pub fn snapshot(&self) -> ShardMonitorSnapshot {
        let global_entropy = self.recompute_global_entropy();
        let shards: Vec<_> = self
            .shards
            .iter()
            .enumerate()
            .map(|(i, c)| self.row(i, c))
            .collect();
        let sum = |f: fn(&ShardSecuritySnapshot) -> u64| {
            shards.iter().map(f).fold(0u64, u64::saturating_add)
        };
        let total_events = sum(|s| s.activity);
        let total_successes = sum(|s| s.successes);
        let total_failures = sum(|s| s.failures);
        let total_crossings = total_successes.saturating_add(total_failures);
        let rate = if total_crossings == 0 {
            1.0
        } else {
            total_successes as f64 / total_crossings as f64
        };
        let quarantined_count = shards.iter().filter(|s| s.quarantined).count();
        ShardMonitorSnapshot {
            taken_at_ms: self.clock.now_ms(),
            num_shards: shards.len(),
            global_entropy,
            total_events,
            total_crossings,
            total_successes,
            total_failures,
            cross_shard_success_rate: rate,
            quarantined_count,
            alarm_active_count: shards.iter().filter(|s| s.alarm_active).count(),
            health_score: health_score(quarantined_count, rate),
            shards,
        }
    }

    /// Health score 0..=100 of the monitor right now.
    pub fn health_score(&self) -> f64 {
        self.snapshot().health_score
    }

    /// One shard's record, judged: quarantined → why and until when;
    /// failures at the threshold with automatic quarantine off → recommend
    /// quarantine; entropy below `bias_threshold × global` or reputation
    /// below [`WATCH_REPUTATION`] → watch; otherwise healthy.
    pub fn analyze(&self, shard: usize) -> Result<ShardAnalysis, MonitorError> {
        let global = self.recompute_global_entropy();
        let row = self.shard_snapshot(shard)?;
        let threshold = self.config.quarantine_failure_threshold;
        let mut watch = Vec::new();
        if let (Some(e), Some(g)) = (row.entropy, global)
            && e < self.config.bias_threshold * g
        {
            watch.push(format!(
                "entropy {e:.2} below {} × global {g:.2} ({} bias alarms)",
                self.config.bias_threshold, row.bias_alarms
            ));
        }
        if row.reputation < WATCH_REPUTATION {
            watch.push(format!(
                "reputation {:.2} after {} failures (gas ×{:.2})",
                row.reputation, row.failures, row.penalty_multiplier
            ));
        }
        let (verdict, mut text) = if row.quarantined {
            let mut t = format!(
                "quarantined ({}): crossings refused",
                row.quarantine_reason.unwrap_or(QuarantineReason::Manual)
            );
            match row.quarantine_lifts_at_ms {
                Some(at) => {
                    let _ = write!(
                        t,
                        "; lifts at {at} ms (in {} ms)",
                        at.saturating_sub(self.now_ms())
                    );
                }
                None => t.push_str("; release by hand"),
            }
            (Verdict::Quarantined, t)
        } else if row.failures_since_release >= threshold {
            (
                Verdict::QuarantineRecommended,
                format!(
                    "quarantine: failures {} ≥ threshold {threshold}",
                    row.failures_since_release
                ),
            )
        } else if !watch.is_empty() {
            (Verdict::Watch, format!("watch: {}", watch.join("; ")))
        } else {
            (Verdict::Healthy, "healthy".to_owned())
        };
        if matches!(
            verdict,
            Verdict::Quarantined | Verdict::QuarantineRecommended
        ) && !watch.is_empty()
        {
            let _ = write!(text, "; also {}", watch.join("; "));
        }
        Ok(ShardAnalysis {
            shard: row,
            global_entropy: global,
            verdict,
            recommendation: text,
        })
    }
}
