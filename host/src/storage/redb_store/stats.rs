//! How much CPU the committer spends per event: the serial work that bounds
//! write throughput however many cores the machine has.
//!
//! Every request is checked and encoded on its caller's thread, but what is
//! left runs on the one committer thread, so `1 s / (committer CPU per
//! event)` is the most events per second this storage can take. The
//! committer measures its own thread CPU time per batch (time blocked in
//! fsync or waiting for requests is not CPU time), publishes the totals as
//! `realmhost_storage_committer_*` counters, and hands them to the bench
//! through [`RedbStorage::committer_stats`](super::RedbStorage::committer_stats).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Totals of the committer's work since the storage was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitterStats {
    /// Thread CPU time of the committer spent on batches: checking and
    /// writing requests, committing, publishing the tail and answering.
    /// Waiting for requests or for the disk is not included.
    pub busy: Duration,
    /// Of [`Self::busy`], the part inside redb's commit (page checksums and
    /// writes, the CPU side of the fsyncs).
    pub commit: Duration,
    /// Thread CPU time of the acknowledger, which answers committed
    /// batches beside the committer (waking the waiting tasks, freeing the
    /// requests): a second serial stage, overlapping the first.
    pub acks: Duration,
    /// Events committed.
    pub events: u64,
    /// Group commits that succeeded.
    pub batches: u64,
}

impl CommitterStats {
    /// Acknowledger CPU per event, microseconds (`None` before any event).
    pub fn acks_us_per_event(&self) -> Option<f64> {
        (self.events > 0).then(|| self.acks.as_secs_f64() * 1e6 / self.events as f64)
    }

    /// Committer CPU per event, microseconds (`None` before any event).
    pub fn busy_us_per_event(&self) -> Option<f64> {
        (self.events > 0).then(|| self.busy.as_secs_f64() * 1e6 / self.events as f64)
    }

    /// The difference `self - earlier`, for a measurement window.
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            busy: self.busy.saturating_sub(earlier.busy),
            commit: self.commit.saturating_sub(earlier.commit),
            acks: self.acks.saturating_sub(earlier.acks),
            events: self.events.saturating_sub(earlier.events),
            batches: self.batches.saturating_sub(earlier.batches),
        }
    }
}

/// The committer's running totals, shared with [`RedbStorage`](super::RedbStorage).
#[derive(Debug, Default)]
pub(super) struct StatsCell {
    busy_ns: AtomicU64,
    commit_ns: AtomicU64,
    acks_ns: AtomicU64,
    events: AtomicU64,
    batches: AtomicU64,
}

impl StatsCell {
    /// Add one batch's figures (the committer is the only writer).
    pub(super) fn record(&self, busy: Duration, commit: Duration, events: u64, committed: bool) {
        let busy_ns = u64::try_from(busy.as_nanos()).unwrap_or(u64::MAX);
        let commit_ns = u64::try_from(commit.as_nanos()).unwrap_or(u64::MAX);
        self.busy_ns.fetch_add(busy_ns, Ordering::Relaxed);
        self.commit_ns.fetch_add(commit_ns, Ordering::Relaxed);
        metrics::counter!("realmhost_storage_committer_busy_ns_total").increment(busy_ns);
        if committed {
            self.events.fetch_add(events, Ordering::Relaxed);
            self.batches.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("realmhost_storage_committed_events_total").increment(events);
        }
    }

    /// Add the acknowledger's CPU time for one batch.
    pub(super) fn record_acks(&self, cpu: Duration) {
        let ns = u64::try_from(cpu.as_nanos()).unwrap_or(u64::MAX);
        self.acks_ns.fetch_add(ns, Ordering::Relaxed);
        metrics::counter!("realmhost_storage_acker_busy_ns_total").increment(ns);
    }

    pub(super) fn snapshot(&self) -> CommitterStats {
        CommitterStats {
            busy: Duration::from_nanos(self.busy_ns.load(Ordering::Relaxed)),
            commit: Duration::from_nanos(self.commit_ns.load(Ordering::Relaxed)),
            acks: Duration::from_nanos(self.acks_ns.load(Ordering::Relaxed)),
            events: self.events.load(Ordering::Relaxed),
            batches: self.batches.load(Ordering::Relaxed),
        }
    }
}

/// CPU time the calling thread has used so far. One `clock_gettime` call
/// (a fraction of a microsecond), taken a few times per batch, not per
/// event. Zero where the clock is unavailable, which turns the figures off
/// rather than failing a commit.
pub(super) fn thread_cpu() -> Duration {
    #[cfg(unix)]
    {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec for the duration of the
        // call, and CLOCK_THREAD_CPUTIME_ID is a clock id every supported
        // unix accepts; on failure `ts` stays zero.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        if rc != 0 {
            return Duration::ZERO;
        }
        Duration::new(
            u64::try_from(ts.tv_sec).unwrap_or(0),
            u32::try_from(ts.tv_nsec).unwrap_or(0),
        )
    }
    #[cfg(not(unix))]
    {
        Duration::ZERO
    }
}
