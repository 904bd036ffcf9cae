//! The shard monitor: source-diversity entropy, bias alarms, cross-shard
//! reputation, quarantine and gas penalties, one record per shard.
//!
//! The append path calls four cheap methods per event —
//! [`ShardMonitor::record_event`], [`ShardMonitor::is_quarantined`] /
//! [`ShardMonitor::check_crossing`], [`ShardMonitor::reputation`] and, for a
//! crossing, [`ShardMonitor::record_crossing`] and
//! [`ShardMonitor::record_gas`]. None of them takes a lock shared between
//! shards: every shard has its own cache-line-aligned cell of atomics and one
//! small mutex that guards only that shard's entropy window. Operators read
//! [`ShardMonitor::snapshot`] and [`ShardMonitor::analyze`]; the storage layer
//! persists [`ShardMonitor::export_state`] and feeds it back through
//! [`ShardMonitor::import_state`] after a restart.
//!
//! # Entropy: exactly how it is computed
//!
//! * **Source identity.** Each event's `source` string is hashed with FxHash
//!   to a `u64`. Two sources that collide count as one, which can only lower
//!   a shard's entropy; it cannot hide a flood.
//! * **Window.** Each shard collects the hashes of its events in *tumbling*
//!   windows of `W = entropy_window` events (default 256). When the W-th event
//!   arrives the window closes, yields one sample, and starts empty again.
//!   Tumbling (not sliding) windows keep the per-event cost at "push one
//!   `u64`"; the sort-and-count happens once per W events.
//! * **Sample.** With `c_i` the number of events from source `i` in the window,
//!   `H = ln W − (1/W)·Σ c_i ln c_i` (Shannon entropy, nats) and the sample is
//!   `H / ln W`. Normalizing by the *window size*, not by the number of
//!   distinct sources, is deliberate: three sources taking turns are perfectly
//!   "balanced" among themselves (they would score 1 under `ln(distinct)`),
//!   but they are still only three. Under `ln W` the sample is 1 when every
//!   event in the window has its own source, `ln k / ln W` for `k` equally
//!   active sources (3 sources: 0.198; 10: 0.415; 50: 0.705 with W = 256),
//!   and 0 for a single source. See [`normalized_entropy`].
//! * **Smoothing.** The shard's entropy is an EWMA over samples:
//!   `e ← d·e + (1 − d)·sample` with `d = entropy_decay` (0.9). The first
//!   sample initializes `e` directly, so a shard flooded from the start is
//!   recognized after one window instead of drifting down from a made-up
//!   prior.
//! * **Little traffic.** A shard is *judged* only once it has seen at least
//!   `min_events_for_entropy` events in total (default 1024) **and** closed a
//!   window. Until then its entropy is reported as `None`, it does not count
//!   towards the global entropy and it never raises an alarm. A shard whose
//!   traffic stops keeps its last value (entropy is a per-event, not a
//!   per-second, measure).
//! * **Global entropy** is the *median* of the smoothed entropies of all
//!   judged shards (`None` while no shard is judged). The median, not the
//!   mean, so that an attacker who floods a minority of shards cannot drag the
//!   reference down far enough to hide them. It is recomputed when a window
//!   closes (at most once per `max(1, num_shards / 16)` window closes across
//!   the monitor, which bounds its O(num_shards) cost per event), and fresh
//!   for every snapshot and analysis.
//! * **Bias alarm.** When a judged shard's window closes, the shard is biased
//!   if `e < bias_threshold × global`. Each such evaluation increments its
//!   `bias_alarms` counter and sets `alarm_active`; an evaluation that finds
//!   it unbiased clears `alarm_active`. An alarm is a signal for operators
//!   (and for damping elsewhere), not a quarantine.
//!
//! # Reputation and gas
//!
//! Every shard starts at reputation 1. A failed crossing *from* the shard
//! subtracts `reputation_penalty_per_failure`, a successful one adds
//! `reputation_bonus_per_success`, clamped to `[0, 1]` after every step.
//! Reputation is kept in fixed point (10⁻¹² units) so that ten failures of 0.1
//! land on exactly 0 and concurrent updates are a lock-free integer CAS.
//! Plugin fuel burned on behalf of a shard is charged as
//! `ceil(fuel × (1 + (1 − reputation) × (max_penalty_multiplier − 1)))` gas.
//!
//! # Quarantine: how it triggers and lifts
//!
//! * **Automatic** (when `auto_quarantine`, i.e. not in `relaxed()`): when a
//!   shard's failed crossings *since its last release* (or since the start)
//!   reach `quarantine_failure_threshold`. Counting since the last release,
//!   not in total, means a released shard gets a fresh allowance instead of
//!   being re-quarantined by its first failure; its history is not forgiven,
//!   though: the reputation (and so the gas penalty) carries over and the
//!   total failure count keeps growing.
//! * An automatic quarantine is lifted at `since + quarantine_cooldown_ms`
//!   (never, if the cool-down is `None`). Lifting is lazy — checked when
//!   [`ShardMonitor::is_quarantined`], a snapshot, an analysis or
//!   [`ShardMonitor::lift_expired`] looks at the shard — so no timer task is
//!   needed, and the check is one atomic load until the shard is quarantined.
//! * **Manual** ([`ShardMonitor::quarantine`]) quarantines never expire and
//!   replace an automatic one; only [`ShardMonitor::release`] lifts them.
//!   Releasing (by hand or by cool-down) resets the since-release failure
//!   count.
//! * While quarantined, the append path refuses the shard's crossings (see
//!   [`ShardMonitor::check_crossing`]); crossings reported anyway are still
//!   counted.
//!
//! # Shard indices
//!
//! Hot-path methods treat a shard index `>= num_shards` (a caller bug: shards
//! come from [`crate::shard_of`] with the same count) as neutral — nothing is
//! recorded, reputation 1, not quarantined — rather than panicking in the
//! append path. Operator methods return [`MonitorError::UnknownShard`].

mod clock;
mod config;
mod persist;
mod report;
#[cfg(test)]
mod tests;

use std::fmt;
use std::hash::Hasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{MAX_ENTROPY_WINDOW, ShardMonitorConfig};
pub use persist::STATE_FORMAT_VERSION;
pub use report::{
    ShardAnalysis, ShardMonitorSnapshot, ShardSecuritySnapshot, Verdict, WATCH_REPUTATION,
};

/// Fixed-point scale of reputations: 1.0 is `REPUTATION_SCALE` units.
const REPUTATION_SCALE: u64 = 1_000_000_000_000;

/// Bit pattern stored for "no entropy sample yet".
const NO_ENTROPY: u64 = f64::NAN.to_bits();

/// Errors of the shard monitor.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MonitorError {
    /// A configuration field is out of range.
    #[error("invalid shard monitor config: {0}")]
    InvalidConfig(String),
    /// A monitor needs at least one shard.
    #[error("a shard monitor needs at least one shard")]
    NoShards,
    /// The shard index is not below the monitor's shard count.
    #[error("shard {shard} does not exist (the monitor has {num_shards} shards)")]
    UnknownShard {
        /// The index asked for.
        shard: usize,
        /// The monitor's shard count.
        num_shards: usize,
    },
    /// The shard is quarantined; its crossings are refused.
    #[error("shard {shard} is quarantined ({reason}); its crossings are refused")]
    Quarantined {
        /// The quarantined shard.
        shard: usize,
        /// Set by an operator or by the failure threshold.
        reason: QuarantineReason,
    },
    /// The bytes do not start with the monitor-state magic.
    #[error("not a shard monitor state (bad magic or too short)")]
    NotMonitorState,
    /// The state was written by a format this build does not read.
    #[error("shard monitor state format {found} is not supported (this build reads {supported})")]
    UnsupportedVersion {
        /// Version in the bytes.
        found: u16,
        /// Version this build reads.
        supported: u16,
    },
    /// The body does not decode.
    #[error("shard monitor state does not decode: {0}")]
    Decode(#[source] postcard::Error),
    /// The body decodes but holds impossible values.
    #[error("shard monitor state is corrupt: {0}")]
    Corrupt(String),
    /// The state was exported by a monitor with a different shard count;
    /// shard indices would mean different realms, so it is not applied.
    #[error("shard monitor state holds {found} shards; this monitor has {expected}")]
    ShardCountMismatch {
        /// This monitor's shard count.
        expected: usize,
        /// Shard count in the state.
        found: usize,
    },
}

/// Why a shard is quarantined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum QuarantineReason {
    /// Set by an operator; lifted only by [`ShardMonitor::release`].
    Manual,
    /// Set by the failure threshold; lifted by the cool-down or by hand.
    Automatic,
}

impl fmt::Display for QuarantineReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Manual => "manual",
            Self::Automatic => "automatic",
        })
    }
}

/// A shard's current quarantine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Quarantine {
    reason: QuarantineReason,
    since_ms: u64,
    /// When an automatic quarantine lifts; `None` = only by hand.
    until_ms: Option<u64>,
}

/// Everything the monitor keeps about one shard.
///
/// Aligned to 128 bytes (two cache lines, the adjacent-line prefetch unit on
/// x86) so that threads appending to neighbouring shards do not invalidate
/// each other's counters.
#[repr(align(128))]
struct ShardCell {
    activity: AtomicU64,
    /// Source hashes of the current, not yet full, entropy window.
    window: Mutex<Vec<u64>>,
    /// Smoothed entropy as f64 bits; [`NO_ENTROPY`] before the first sample.
    entropy: AtomicU64,
    bias_alarms: AtomicU64,
    alarm_active: AtomicBool,
    successes: AtomicU64,
    failures: AtomicU64,
    failures_since_release: AtomicU64,
    /// Reputation in units of 1 / [`REPUTATION_SCALE`].
    reputation: AtomicU64,
    /// Fast-path mirror of `quarantine.is_some()`.
    quarantined: AtomicBool,
    /// Mirror of the quarantine's `until_ms` (`u64::MAX` when it has none), so
    /// that `is_quarantined` on a quarantined shard needs no lock either.
    quarantine_until: AtomicU64,
    quarantine: Mutex<Option<Quarantine>>,
    gas: AtomicU64,
    fuel: AtomicU64,
}

impl ShardCell {
    fn new(window: usize) -> Self {
        Self {
            activity: AtomicU64::new(0),
            window: Mutex::new(Vec::with_capacity(window)),
            entropy: AtomicU64::new(NO_ENTROPY),
            bias_alarms: AtomicU64::new(0),
            alarm_active: AtomicBool::new(false),
            successes: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            failures_since_release: AtomicU64::new(0),
            reputation: AtomicU64::new(REPUTATION_SCALE),
            quarantined: AtomicBool::new(false),
            quarantine_until: AtomicU64::new(u64::MAX),
            quarantine: Mutex::new(None),
            gas: AtomicU64::new(0),
            fuel: AtomicU64::new(0),
        }
    }

    fn reputation(&self) -> f64 {
        self.reputation.load(Ordering::Relaxed) as f64 / REPUTATION_SCALE as f64
    }

    /// The smoothed entropy, if a sample exists.
    fn entropy(&self) -> Option<f64> {
        let e = f64::from_bits(self.entropy.load(Ordering::Relaxed));
        (!e.is_nan()).then_some(e)
    }

    /// Set the quarantine and its lock-free mirrors; caller holds the lock.
    fn set_quarantine(&self, slot: &mut Option<Quarantine>, q: Option<Quarantine>) {
        *slot = q;
        match q {
            Some(q) => {
                self.quarantine_until
                    .store(q.until_ms.unwrap_or(u64::MAX), Ordering::Relaxed);
                self.quarantined.store(true, Ordering::Release);
            }
            None => {
                self.quarantined.store(false, Ordering::Release);
                self.quarantine_until.store(u64::MAX, Ordering::Relaxed);
                self.failures_since_release.store(0, Ordering::Relaxed);
            }
        }
    }
}

/// Normalized Shannon entropy of a window given the number of events per
/// source: `(ln N − (1/N)·Σ cᵢ ln cᵢ) / ln N` with `N = Σ cᵢ`.
///
/// 1 when every event has its own source, `ln k / ln N` for `k` equally
/// active sources, 0 for one source. Fewer than two events carry no
/// information about diversity and yield 0 — the monitor never asks, since
/// its windows hold at least two events. Zero counts are ignored.
pub fn normalized_entropy(counts: impl IntoIterator<Item = u64>) -> f64 {
    let mut n = 0.0_f64;
    let mut sum_c_ln_c = 0.0_f64;
    for c in counts {
        if c > 0 {
            let c = c as f64;
            n += c;
            sum_c_ln_c += c * c.ln();
        }
    }
    if n < 2.0 {
        return 0.0;
    }
    let ln_n = n.ln();
    ((ln_n - sum_c_ln_c / n) / ln_n).clamp(0.0, 1.0)
}

/// Entropy of a window of source hashes (sorted in place).
fn window_entropy(hashes: &mut [u64]) -> f64 {
    hashes.sort_unstable();
    normalized_entropy(hashes.chunk_by(|a, b| a == b).map(|run| run.len() as u64))
}

/// Hash of an event source; stable within the process.
#[inline]
fn source_hash(source: &str) -> u64 {
    let mut h = rustc_hash::FxHasher::default();
    h.write(source.as_bytes());
    h.finish()
}

/// Health score 0..=100 from the quarantined-shard count and the cross-shard
/// success rate: −15 per quarantined shard, −10 if the rate is below 0.9,
/// a further −20 if below 0.7, clamped at 0. A NaN rate counts as below both.
pub fn health_score(quarantined_shards: usize, cross_shard_success_rate: f64) -> f64 {
    let mut score = 100.0 - 15.0 * quarantined_shards as f64;
    let rate_ok = |limit: f64| cross_shard_success_rate >= limit;
    if !rate_ok(0.9) {
        score -= 10.0;
    }
    if !rate_ok(0.7) {
        score -= 20.0;
    }
    score.clamp(0.0, 100.0)
}

/// Per-shard security monitor; share it as `Arc<ShardMonitor>`.
pub struct ShardMonitor {
    config: ShardMonitorConfig,
    shards: Box<[ShardCell]>,
    clock: Arc<dyn Clock>,
    /// Cached median of judged shards' entropies (f64 bits; NaN = none).
    global_entropy: AtomicU64,
    /// Window closes across all shards, to rate-limit the global recompute.
    window_closes: AtomicU64,
    global_every: u64,
    penalty_units: u64,
    bonus_units: u64,
}

impl fmt::Debug for ShardMonitor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShardMonitor")
            .field("num_shards", &self.shards.len())
            .field("config", &self.config)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

impl ShardMonitor {
    /// A monitor for `num_shards` shards on the wall clock.
    pub fn new(num_shards: usize, config: ShardMonitorConfig) -> Result<Self, MonitorError> {
        Self::with_clock(num_shards, config, Arc::new(SystemClock))
    }

    /// A monitor for `config.expected_shards` shards on the wall clock.
    pub fn from_config(config: ShardMonitorConfig) -> Result<Self, MonitorError> {
        Self::new(config.expected_shards, config)
    }

    /// A monitor reading time from `clock` (a [`ManualClock`] in tests).
    pub fn with_clock(
        num_shards: usize,
        config: ShardMonitorConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, MonitorError> {
        config.validate()?;
        if num_shards == 0 {
            return Err(MonitorError::NoShards);
        }
        if num_shards != config.expected_shards {
            tracing::debug!(
                num_shards,
                expected = config.expected_shards,
                "shard monitor shard count differs from expected_shards"
            );
        }
        let to_units = |v: f64| (v * REPUTATION_SCALE as f64).round() as u64;
        Ok(Self {
            shards: (0..num_shards)
                .map(|_| ShardCell::new(config.entropy_window))
                .collect(),
            clock,
            global_entropy: AtomicU64::new(NO_ENTROPY),
            window_closes: AtomicU64::new(0),
            global_every: (num_shards as u64 / 16).max(1),
            penalty_units: to_units(config.reputation_penalty_per_failure),
            bonus_units: to_units(config.reputation_bonus_per_success),
            config,
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &ShardMonitorConfig {
        &self.config
    }

    /// Number of shards monitored.
    pub fn num_shards(&self) -> usize {
        self.shards.len()
    }

    /// Current time on the monitor's clock.
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    fn cell(&self, shard: usize) -> Result<&ShardCell, MonitorError> {
        self.shards.get(shard).ok_or(MonitorError::UnknownShard {
            shard,
            num_shards: self.shards.len(),
        })
    }

    // ---------------------------------------------------------------- hot path

    /// Count one appended event of `shard` caused by `source`.
    ///
    /// Cost: two relaxed atomics, an FxHash of `source` and a push under the
    /// shard's own mutex; once per `entropy_window` events also a sort of the
    /// window and the bias check.
    pub fn record_event(&self, shard: usize, source: &str) {
        let Some(cell) = self.shards.get(shard) else {
            return;
        };
        let activity = cell.activity.fetch_add(1, Ordering::Relaxed) + 1;
        let hash = source_hash(source);
        let smoothed = {
            let mut window = cell.window.lock();
            window.push(hash);
            if window.len() < self.config.entropy_window {
                return;
            }
            let sample = window_entropy(&mut window);
            window.clear();
            // The EWMA update stays under the window lock so two closes of
            // the same shard cannot interleave their read-modify-write.
            let e = match cell.entropy() {
                Some(prev) => {
                    self.config.entropy_decay * prev + (1.0 - self.config.entropy_decay) * sample
                }
                None => sample,
            };
            cell.entropy.store(e.to_bits(), Ordering::Relaxed);
            e
        };
        self.evaluate_bias(shard, cell, smoothed, activity);
    }

    /// Bias check after `cell` closed a window (outside its window lock).
    fn evaluate_bias(&self, shard: usize, cell: &ShardCell, entropy: f64, activity: u64) {
        let closes = self.window_closes.fetch_add(1, Ordering::Relaxed);
        let cached = f64::from_bits(self.global_entropy.load(Ordering::Relaxed));
        let global = if cached.is_nan() || closes.is_multiple_of(self.global_every) {
            self.recompute_global_entropy()
        } else {
            Some(cached)
        };
        if activity < self.config.min_events_for_entropy {
            return;
        }
        let Some(global) = global else { return };
        let limit = self.config.bias_threshold * global;
        if entropy < limit {
            cell.bias_alarms.fetch_add(1, Ordering::Relaxed);
            if !cell.alarm_active.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    shard,
                    entropy,
                    global,
                    threshold = self.config.bias_threshold,
                    "shard bias alarm: source diversity below threshold"
                );
            }
        } else if cell.alarm_active.swap(false, Ordering::Relaxed) {
            tracing::info!(shard, entropy, global, "shard bias alarm cleared");
        }
    }

    /// Whether `shard` has enough traffic to be judged, and its entropy.
    fn judged_entropy(&self, cell: &ShardCell) -> Option<f64> {
        if cell.activity.load(Ordering::Relaxed) < self.config.min_events_for_entropy {
            return None;
        }
        cell.entropy()
    }

    /// Median of the judged shards' entropies; refreshes the cache.
    fn recompute_global_entropy(&self) -> Option<f64> {
        let mut values: Vec<f64> = self
            .shards
            .iter()
            .filter_map(|c| self.judged_entropy(c))
            .collect();
        let global = if values.is_empty() {
            None
        } else {
            let mid = values.len() / 2;
            let even = values.len().is_multiple_of(2);
            let (low, upper, _) = values.select_nth_unstable_by(mid, f64::total_cmp);
            let upper = *upper;
            Some(if even {
                // Even count: average the two middle values.
                let lower = low.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                (lower + upper) / 2.0
            } else {
                upper
            })
        };
        self.global_entropy
            .store(global.unwrap_or(f64::NAN).to_bits(), Ordering::Relaxed);
        global
    }

    /// Count a crossing *from* `source_shard`: `success` when the target
    /// plugin accepted it, `false` when it rejected or trapped. Updates the
    /// reputation and, on a failure that reaches the threshold, quarantines
    /// the shard automatically. Returns `true` if this call quarantined it.
    pub fn record_crossing(&self, source_shard: usize, success: bool) -> bool {
        let Some(cell) = self.shards.get(source_shard) else {
            return false;
        };
        if success {
            cell.successes.fetch_add(1, Ordering::Relaxed);
            let bonus = self.bonus_units;
            if bonus > 0 {
                let _ = cell
                    .reputation
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |r| {
                        (r < REPUTATION_SCALE)
                            .then(|| r.saturating_add(bonus).min(REPUTATION_SCALE))
                    });
            }
            return false;
        }
        cell.failures.fetch_add(1, Ordering::Relaxed);
        let penalty = self.penalty_units;
        let _ = cell
            .reputation
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |r| {
                (r > 0).then(|| r.saturating_sub(penalty))
            });
        let since_release = cell.failures_since_release.fetch_add(1, Ordering::Relaxed) + 1;
        if self.config.auto_quarantine
            && since_release >= self.config.quarantine_failure_threshold
            && !cell.quarantined.load(Ordering::Acquire)
        {
            return self.quarantine_automatically(source_shard, cell, since_release);
        }
        false
    }

    fn quarantine_automatically(&self, shard: usize, cell: &ShardCell, failures: u64) -> bool {
        let mut slot = cell.quarantine.lock();
        if slot.is_some() {
            return false;
        }
        let now = self.clock.now_ms();
        let until_ms = self
            .config
            .quarantine_cooldown_ms
            .map(|c| now.saturating_add(c));
        cell.set_quarantine(
            &mut slot,
            Some(Quarantine {
                reason: QuarantineReason::Automatic,
                since_ms: now,
                until_ms,
            }),
        );
        tracing::warn!(
            shard,
            failures,
            threshold = self.config.quarantine_failure_threshold,
            until_ms,
            "shard quarantined automatically: cross-shard failures reached the threshold"
        );
        true
    }

    /// Whether `shard`'s crossings must be refused. One atomic load for a
    /// shard that is not quarantined; lifts an expired automatic quarantine.
    #[inline]
    pub fn is_quarantined(&self, shard: usize) -> bool {
        match self.shards.get(shard) {
            Some(cell) if cell.quarantined.load(Ordering::Acquire) => {
                self.still_quarantined(shard, cell)
            }
            _ => false,
        }
    }

    /// Slow path of [`is_quarantined`](Self::is_quarantined).
    fn still_quarantined(&self, shard: usize, cell: &ShardCell) -> bool {
        if self.clock.now_ms() < cell.quarantine_until.load(Ordering::Relaxed) {
            return true;
        }
        let mut slot = cell.quarantine.lock();
        match *slot {
            Some(Quarantine {
                until_ms: Some(until),
                reason,
                since_ms,
            }) if self.clock.now_ms() >= until => {
                cell.set_quarantine(&mut slot, None);
                tracing::info!(
                    shard,
                    %reason,
                    since_ms,
                    "shard quarantine lifted after cool-down"
                );
                false
            }
            Some(_) => true,
            None => false,
        }
    }

    /// `Ok` if a crossing from `source_shard` may proceed, the typed refusal
    /// if the shard is quarantined (or does not exist).
    pub fn check_crossing(&self, source_shard: usize) -> Result<(), MonitorError> {
        let cell = self.cell(source_shard)?;
        if !cell.quarantined.load(Ordering::Acquire) || !self.still_quarantined(source_shard, cell)
        {
            return Ok(());
        }
        let reason = cell
            .quarantine
            .lock()
            .map_or(QuarantineReason::Automatic, |q| q.reason);
        Err(MonitorError::Quarantined {
            shard: source_shard,
            reason,
        })
    }

    /// `shard`'s reputation in `[0, 1]` (1 for an unknown shard).
    #[inline]
    pub fn reputation(&self, shard: usize) -> f64 {
        self.shards.get(shard).map_or(1.0, ShardCell::reputation)
    }

    /// `1 + (1 − reputation) × (max_penalty_multiplier − 1)` for `shard`.
    pub fn penalty_multiplier(&self, shard: usize) -> f64 {
        self.config.penalty_multiplier(self.reputation(shard))
    }

    /// Gas charged for `fuel` burned on behalf of `shard`:
    /// `ceil(fuel × penalty_multiplier(shard))`, saturating at `u64::MAX`.
    pub fn gas_cost(&self, fuel: u64, shard: usize) -> u64 {
        let gas = (fuel as f64 * self.penalty_multiplier(shard)).ceil();
        // `as` saturates for out-of-range floats.
        gas as u64
    }

    /// Account `fuel` burned on behalf of `shard`: adds the fuel and its
    /// [`gas_cost`](Self::gas_cost) to the shard's totals (saturating) and
    /// returns the gas charged.
    pub fn record_gas(&self, shard: usize, fuel: u64) -> u64 {
        let gas = self.gas_cost(fuel, shard);
        if let Some(cell) = self.shards.get(shard) {
            saturating_add(&cell.fuel, fuel);
            saturating_add(&cell.gas, gas);
        }
        gas
    }

    // ------------------------------------------------------------- operators

    /// Quarantine `shard` by hand. A manual quarantine never expires and
    /// replaces an automatic one. Returns `false` if it already was manual.
    pub fn quarantine(&self, shard: usize) -> Result<bool, MonitorError> {
        let cell = self.cell(shard)?;
        let mut slot = cell.quarantine.lock();
        if matches!(*slot, Some(q) if q.reason == QuarantineReason::Manual) {
            return Ok(false);
        }
        let now = self.clock.now_ms();
        cell.set_quarantine(
            &mut slot,
            Some(Quarantine {
                reason: QuarantineReason::Manual,
                since_ms: now,
                until_ms: None,
            }),
        );
        tracing::warn!(shard, "shard quarantined by hand");
        Ok(true)
    }

    /// Lift `shard`'s quarantine (manual or automatic) and reset its
    /// since-release failure count; reputation is kept. Returns `false` if
    /// it was not quarantined.
    pub fn release(&self, shard: usize) -> Result<bool, MonitorError> {
        let cell = self.cell(shard)?;
        let mut slot = cell.quarantine.lock();
        let was = slot.is_some();
        cell.set_quarantine(&mut slot, None);
        if was {
            tracing::info!(shard, "shard released from quarantine");
        }
        Ok(was)
    }

    /// Lift every automatic quarantine whose cool-down has passed; returns
    /// the shards released. For callers that want lifting on a timer rather
    /// than lazily.
    pub fn lift_expired(&self) -> Vec<usize> {
        (0..self.shards.len())
            .filter(|&s| {
                let cell = &self.shards[s];
                cell.quarantined.load(Ordering::Acquire) && !self.still_quarantined(s, cell)
            })
            .collect()
    }

    /// Shards currently quarantined (after lifting expired ones).
    pub fn quarantined_shards(&self) -> Vec<usize> {
        (0..self.shards.len())
            .filter(|&s| self.is_quarantined(s))
            .collect()
    }

    /// Global entropy, recomputed now: median over judged shards.
    pub fn global_entropy(&self) -> Option<f64> {
        self.recompute_global_entropy()
    }
}

/// `a += v`, saturating at `u64::MAX`.
fn saturating_add(a: &AtomicU64, v: u64) {
    let _ = a.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |x| {
        Some(x.saturating_add(v))
    });
}
