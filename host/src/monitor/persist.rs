//! Export and import of the monitor's record, so a restart does not wipe an
//! attacker's history.
//!
//! Layout: the 4-byte magic `RHSM`, the format version as a little-endian
//! `u16`, then a postcard body. The magic makes "these are not monitor
//! bytes" a clear error instead of a confusing decode failure; the version
//! lets a later build read (or refuse) older exports. Import decodes and
//! validates everything before changing anything, so a bad blob leaves the
//! monitor as it was.
//!
//! Exported per shard: activity, smoothed entropy, bias-alarm count, active
//! alarm, successes, failures, failures since release, reputation, the
//! quarantine (manual flag, since and until times), fuel and gas. Not
//! exported: the partly filled entropy window (at most `entropy_window − 1`
//! events of evidence).

use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};

use super::{
    MonitorError, NO_ENTROPY, Quarantine, QuarantineReason, REPUTATION_SCALE, ShardMonitor,
};

/// Format version written by [`ShardMonitor::export_state`].
pub const STATE_FORMAT_VERSION: u16 = 1;

const MAGIC: [u8; 4] = *b"RHSM";
const HEADER_LEN: usize = MAGIC.len() + 2;

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct StateV1 {
    exported_at_ms: u64,
    pub(super) shards: Vec<ShardV1>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct ShardV1 {
    activity: u64,
    pub(super) entropy: Option<f64>,
    bias_alarms: u64,
    alarm_active: bool,
    successes: u64,
    failures: u64,
    failures_since_release: u64,
    pub(super) reputation: f64,
    quarantine: Option<QuarantineV1>,
    fuel: u64,
    gas: u64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct QuarantineV1 {
    manual: bool,
    since_ms: u64,
    until_ms: Option<u64>,
}

impl ShardMonitor {
    /// The monitor's record as bytes for durable storage (see the module
    /// docs of `persist` for the layout). Never fails.
    pub fn export_state(&self) -> Vec<u8> {
        let shards = self
            .shards
            .iter()
            .map(|c| {
                let q = *c.quarantine.lock();
                ShardV1 {
                    activity: c.activity.load(Ordering::Relaxed),
                    entropy: c.entropy(),
                    bias_alarms: c.bias_alarms.load(Ordering::Relaxed),
                    alarm_active: c.alarm_active.load(Ordering::Relaxed),
                    successes: c.successes.load(Ordering::Relaxed),
                    failures: c.failures.load(Ordering::Relaxed),
                    failures_since_release: c.failures_since_release.load(Ordering::Relaxed),
                    reputation: c.reputation(),
                    quarantine: q.map(|q| QuarantineV1 {
                        manual: q.reason == QuarantineReason::Manual,
                        since_ms: q.since_ms,
                        until_ms: q.until_ms,
                    }),
                    fuel: c.fuel.load(Ordering::Relaxed),
                    gas: c.gas.load(Ordering::Relaxed),
                }
            })
            .collect();
        let state = StateV1 {
            exported_at_ms: self.clock.now_ms(),
            shards,
        };
        let mut out = Vec::with_capacity(HEADER_LEN + 64 * self.shards.len());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&STATE_FORMAT_VERSION.to_le_bytes());
        // Serializing plain structs into a Vec cannot fail; should it ever,
        // an export without a body is refused by `import_state`, not
        // silently accepted.
        match postcard::to_extend(&state, out) {
            Ok(out) => out,
            Err(e) => {
                tracing::error!(error = %e, "shard monitor state export failed");
                Vec::new()
            }
        }
    }

    /// Replace the monitor's record with an export. All-or-nothing: on any
    /// error nothing changes. The export must come from a monitor with the
    /// same shard count (indices would otherwise name other realms).
    pub fn import_state(&self, bytes: &[u8]) -> Result<(), MonitorError> {
        let state = decode(bytes)?;
        if state.shards.len() != self.shards.len() {
            return Err(MonitorError::ShardCountMismatch {
                expected: self.shards.len(),
                found: state.shards.len(),
            });
        }
        for (i, s) in state.shards.iter().enumerate() {
            validate_shard(i, s)?;
        }
        for (cell, s) in self.shards.iter().zip(&state.shards) {
            cell.window.lock().clear();
            cell.activity.store(s.activity, Ordering::Relaxed);
            cell.entropy.store(
                s.entropy.map_or(NO_ENTROPY, f64::to_bits),
                Ordering::Relaxed,
            );
            cell.bias_alarms.store(s.bias_alarms, Ordering::Relaxed);
            cell.alarm_active.store(s.alarm_active, Ordering::Relaxed);
            cell.successes.store(s.successes, Ordering::Relaxed);
            cell.failures.store(s.failures, Ordering::Relaxed);
            cell.reputation.store(
                (s.reputation * REPUTATION_SCALE as f64).round() as u64,
                Ordering::Relaxed,
            );
            cell.fuel.store(s.fuel, Ordering::Relaxed);
            cell.gas.store(s.gas, Ordering::Relaxed);
            let mut slot = cell.quarantine.lock();
            cell.set_quarantine(
                &mut slot,
                s.quarantine.map(|q| Quarantine {
                    reason: if q.manual {
                        QuarantineReason::Manual
                    } else {
                        QuarantineReason::Automatic
                    },
                    since_ms: q.since_ms,
                    until_ms: if q.manual { None } else { q.until_ms },
                }),
            );
            // After set_quarantine: releasing resets this counter.
            cell.failures_since_release
                .store(s.failures_since_release, Ordering::Relaxed);
        }
        self.recompute_global_entropy();
        tracing::info!(
            shards = state.shards.len(),
            exported_at_ms = state.exported_at_ms,
            "shard monitor state imported"
        );
        Ok(())
    }
}

fn decode(bytes: &[u8]) -> Result<StateV1, MonitorError> {
    let (header, body) = bytes
        .split_at_checked(HEADER_LEN)
        .ok_or(MonitorError::NotMonitorState)?;
    if header[..MAGIC.len()] != MAGIC {
        return Err(MonitorError::NotMonitorState);
    }
    let version = u16::from_le_bytes([header[4], header[5]]);
    if version != STATE_FORMAT_VERSION {
        return Err(MonitorError::UnsupportedVersion {
            found: version,
            supported: STATE_FORMAT_VERSION,
        });
    }
    let (state, rest) = postcard::take_from_bytes::<StateV1>(body).map_err(MonitorError::Decode)?;
    if !rest.is_empty() {
        return Err(MonitorError::Corrupt(format!(
            "{} trailing bytes after the state",
            rest.len()
        )));
    }
    Ok(state)
}

fn validate_shard(i: usize, s: &ShardV1) -> Result<(), MonitorError> {
    let corrupt = |what: String| Err(MonitorError::Corrupt(format!("shard {i}: {what}")));
    if !(s.reputation.is_finite() && (0.0..=1.0).contains(&s.reputation)) {
        return corrupt(format!("reputation {} outside [0, 1]", s.reputation));
    }
    if let Some(e) = s.entropy
        && !(e.is_finite() && (0.0..=1.0).contains(&e))
    {
        return corrupt(format!("entropy {e} outside [0, 1]"));
    }
    if s.failures_since_release > s.failures {
        return corrupt(format!(
            "{} failures since release but {} in total",
            s.failures_since_release, s.failures
        ));
    }
    if let Some(q) = s.quarantine
        && let Some(until) = q.until_ms
        && until < q.since_ms
    {
        return corrupt(format!(
            "quarantine ends ({until}) before it starts ({})",
            q.since_ms
        ));
    }
    Ok(())
}

/// Decode a valid export (test helper).
#[cfg(test)]
pub(super) fn decode_for_test(bytes: &[u8]) -> StateV1 {
    decode(bytes).expect("valid export")
}

/// Frame a state the way `export_state` does (test helper, so tests can
/// craft well-formed but impossible values).
#[cfg(test)]
pub(super) fn encode_for_test(state: &StateV1) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&STATE_FORMAT_VERSION.to_le_bytes());
    postcard::to_extend(state, out).expect("encodes")
}
