//! Recent faults of one plugin version, and when they quarantine it.
//!
//! A fault (trap, out of fuel, state limit, broken output) is attributed to
//! the realm whose call it happened in. One realm that keeps faulting is the
//! node's business (it parks that realm); it must not take its realm type
//! offline for everyone else. So a version is quarantined only when, within
//! the window, it faulted more than `quarantine_faults` times **and** those
//! faults span at least `quarantine_realms` distinct realms: the signature
//! of a broken version rather than of one bad realm.

use std::collections::VecDeque;
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

/// Most faults remembered per version, whatever the window.
const MAX_REMEMBERED: usize = 1024;

#[derive(Debug, Default)]
pub(crate) struct FaultLog {
    /// (when, hash of the realm; 0 when no realm was in scope).
    recent: VecDeque<(Instant, u64)>,
    pub(crate) last: Option<String>,
    pub(crate) quarantined: bool,
}

/// What decides quarantine.
#[derive(Debug, Clone, Copy)]
pub(crate) struct QuarantinePolicy {
    pub(crate) faults: u32,
    pub(crate) realms: u32,
    pub(crate) window: Duration,
}

pub(crate) fn realm_key(realm: Option<&str>) -> u64 {
    realm.map_or(0, |r| {
        let mut h = rustc_hash::FxHasher::default();
        r.hash(&mut h);
        h.finish() | 1
    })
}

impl FaultLog {
    /// Count a fault; returns true when it newly quarantines the version.
    pub(crate) fn record(
        &mut self,
        now: Instant,
        realm: u64,
        what: String,
        policy: QuarantinePolicy,
    ) -> bool {
        self.last = Some(what);
        self.recent.push_back((now, realm));
        while self
            .recent
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > policy.window)
            || self.recent.len() > MAX_REMEMBERED
        {
            self.recent.pop_front();
        }
        if policy.faults == 0 || self.quarantined {
            return false;
        }
        if self.recent.len() > policy.faults as usize
            && self.distinct_realms() >= policy.realms as usize
        {
            self.quarantined = true;
            return true;
        }
        false
    }

    /// Distinct realms among the remembered faults.
    pub(crate) fn distinct_realms(&self) -> usize {
        let mut keys: Vec<u64> = self.recent.iter().map(|(_, k)| *k).collect();
        keys.sort_unstable();
        keys.dedup();
        keys.len()
    }

    pub(crate) fn clear(&mut self) {
        self.quarantined = false;
        self.recent.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: QuarantinePolicy = QuarantinePolicy {
        faults: 5,
        realms: 3,
        window: Duration::from_secs(60),
    };

    #[test]
    fn one_realm_never_quarantines_a_version() {
        let mut log = FaultLog::default();
        let t = Instant::now();
        for _ in 0..500 {
            assert!(!log.record(t, realm_key(Some("bad")), "trap".into(), POLICY));
        }
        assert!(!log.quarantined);
    }

    #[test]
    fn faults_across_realms_do() {
        let mut log = FaultLog::default();
        let t = Instant::now();
        let mut hit = false;
        for i in 0..6 {
            hit |= log.record(
                t,
                realm_key(Some(&format!("r{}", i % 3))),
                "trap".into(),
                POLICY,
            );
        }
        assert!(hit && log.quarantined);
        log.clear();
        assert!(!log.quarantined);
        // Old faults leave the window.
        let later = t + Duration::from_secs(120);
        assert!(!log.record(later, realm_key(Some("r9")), "trap".into(), POLICY));
        assert_eq!(log.distinct_realms(), 1);
    }
}
