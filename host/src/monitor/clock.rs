//! Injectable time source.
//!
//! The monitor reads the clock only when it starts a quarantine or checks
//! whether an automatic one has expired — never per event — so a wall-clock
//! call is not on the append hot path. Tests and simulations pass a
//! [`ManualClock`] to step through a cool-down without sleeping.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A source of "now" in milliseconds.
///
/// Quarantine start and lift times are stored in this clock's unit and
/// exported with the monitor state, so the clock must be meaningful across
/// restarts: [`SystemClock`] (milliseconds since the Unix epoch) is.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Current time in milliseconds.
    fn now_ms(&self) -> u64;
}

/// Wall clock: milliseconds since the Unix epoch (0 if the system clock is
/// set before 1970, rather than panicking).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }
}

/// A clock that only moves when told to; for tests and replays.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    /// A clock standing at `now_ms`.
    pub fn new(now_ms: u64) -> Self {
        Self(AtomicU64::new(now_ms))
    }

    /// Jump to `now_ms` (may go backwards; the monitor copes).
    pub fn set(&self, now_ms: u64) {
        self.0.store(now_ms, Ordering::Relaxed);
    }

    /// Move forward by `ms` (saturating).
    pub fn advance(&self, ms: u64) {
        // fetch_update never fails with a closure that always returns Some.
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                Some(t.saturating_add(ms))
            });
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}
