//! [`ShardMonitorConfig`]: thresholds, penalties and the entropy window.

use serde::{Deserialize, Serialize};

use super::MonitorError;

/// Largest accepted [`ShardMonitorConfig::entropy_window`]. A window is a
/// buffer of one `u64` per event per shard, sorted when it closes; beyond this
/// the memory and the pause at window close stop being negligible.
pub const MAX_ENTROPY_WINDOW: usize = 65_536;

/// Tuning of the shard monitor.
///
/// `Default` is the production profile of the spec; [`relaxed`](Self::relaxed)
/// is for development (nothing is quarantined automatically) and
/// [`strict`](Self::strict) for exposed multi-node deployments.
///
/// Deserializing fills missing fields from `Default`, so a config file may
/// name only what it changes; unknown fields are rejected so a typo is an
/// error rather than a silently ignored setting. Call
/// [`validate`](Self::validate) (done by [`ShardMonitor::new`](super::ShardMonitor::new))
/// before use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShardMonitorConfig {
    /// Shard count used by [`ShardMonitor::from_config`](super::ShardMonitor::from_config).
    pub expected_shards: usize,
    /// A judged shard whose smoothed entropy is below
    /// `bias_threshold × global entropy` raises a bias alarm. In `[0, 1]`.
    pub bias_threshold: f64,
    /// EWMA weight of the previous value when a window's entropy sample
    /// arrives: `e ← decay·e + (1 − decay)·sample`. In `[0, 1)`.
    pub entropy_decay: f64,
    /// Failed crossings since the shard's last release (or since the start)
    /// at which it is quarantined automatically. At least 1.
    pub quarantine_failure_threshold: u64,
    /// Reputation lost per failed crossing. In `[0, 1]`.
    pub reputation_penalty_per_failure: f64,
    /// Reputation gained per successful crossing. In `[0, 1]`.
    pub reputation_bonus_per_success: f64,
    /// Gas multiplier at reputation 0 (1× at reputation 1, linear between).
    /// At least 1.
    pub max_penalty_multiplier: f64,
    /// Whether crossing failures quarantine a shard automatically. `false` in
    /// [`relaxed`](Self::relaxed); manual quarantine works either way.
    pub auto_quarantine: bool,
    /// How long an *automatic* quarantine lasts, in clock milliseconds;
    /// `None` keeps it until released by hand. A manual quarantine never
    /// expires. Default 5 minutes.
    pub quarantine_cooldown_ms: Option<u64>,
    /// Events per entropy window (per shard). Each full window yields one
    /// entropy sample. In `2..=`[`MAX_ENTROPY_WINDOW`]. Default 256.
    pub entropy_window: usize,
    /// Events a shard must have seen in total before its entropy is judged
    /// (counted into the global entropy and able to raise alarms). Guards
    /// against alarming on a shard that has barely been used. Default 1024
    /// (four default windows).
    pub min_events_for_entropy: u64,
}

impl Default for ShardMonitorConfig {
    fn default() -> Self {
        Self {
            expected_shards: 64,
            bias_threshold: 0.5,
            entropy_decay: 0.9,
            quarantine_failure_threshold: 100,
            reputation_penalty_per_failure: 0.1,
            reputation_bonus_per_success: 0.01,
            max_penalty_multiplier: 5.0,
            auto_quarantine: true,
            quarantine_cooldown_ms: Some(5 * 60 * 1000),
            entropy_window: 256,
            min_events_for_entropy: 1024,
        }
    }
}

impl ShardMonitorConfig {
    /// Development profile: as `Default`, but nothing is quarantined
    /// automatically (tests that provoke failures keep running).
    pub fn relaxed() -> Self {
        Self {
            auto_quarantine: false,
            ..Self::default()
        }
    }

    /// High-security profile: quarantine after 50 failures, gas up to 10× at
    /// reputation 0, and automatic quarantines last 15 minutes.
    pub fn strict() -> Self {
        Self {
            quarantine_failure_threshold: 50,
            max_penalty_multiplier: 10.0,
            quarantine_cooldown_ms: Some(15 * 60 * 1000),
            ..Self::default()
        }
    }

    /// `1 + (1 − reputation) × (max_penalty_multiplier − 1)`, with the
    /// reputation clamped into `[0, 1]` (NaN counts as 0: unknown is not
    /// trusted). 1 / 3 / 5 at reputation 1 / 0.5 / 0 with the defaults.
    pub fn penalty_multiplier(&self, reputation: f64) -> f64 {
        let r = if reputation.is_nan() {
            0.0
        } else {
            reputation.clamp(0.0, 1.0)
        };
        1.0 + (1.0 - r) * (self.max_penalty_multiplier - 1.0)
    }

    /// Check every field's range; the error names the first bad field.
    pub fn validate(&self) -> Result<(), MonitorError> {
        fn bad(msg: String) -> Result<(), MonitorError> {
            Err(MonitorError::InvalidConfig(msg))
        }
        let unit = |name: &str, v: f64| -> Result<(), MonitorError> {
            if v.is_finite() && (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                bad(format!("{name} must be in [0, 1], got {v}"))
            }
        };
        if self.expected_shards == 0 {
            return bad("expected_shards must be at least 1".into());
        }
        unit("bias_threshold", self.bias_threshold)?;
        if !(self.entropy_decay.is_finite() && (0.0..1.0).contains(&self.entropy_decay)) {
            return bad(format!(
                "entropy_decay must be in [0, 1), got {}",
                self.entropy_decay
            ));
        }
        if self.quarantine_failure_threshold == 0 {
            return bad("quarantine_failure_threshold must be at least 1".into());
        }
        unit(
            "reputation_penalty_per_failure",
            self.reputation_penalty_per_failure,
        )?;
        unit(
            "reputation_bonus_per_success",
            self.reputation_bonus_per_success,
        )?;
        if !(self.max_penalty_multiplier.is_finite() && self.max_penalty_multiplier >= 1.0) {
            return bad(format!(
                "max_penalty_multiplier must be a finite number ≥ 1, got {}",
                self.max_penalty_multiplier
            ));
        }
        if self.quarantine_cooldown_ms == Some(0) {
            return bad(
                "quarantine_cooldown_ms of 0 would lift every automatic quarantine at once; \
                 use a positive value, or null to keep it until released by hand"
                    .into(),
            );
        }
        if !(2..=MAX_ENTROPY_WINDOW).contains(&self.entropy_window) {
            return bad(format!(
                "entropy_window must be in 2..={MAX_ENTROPY_WINDOW}, got {}",
                self.entropy_window
            ));
        }
        Ok(())
    }
}
