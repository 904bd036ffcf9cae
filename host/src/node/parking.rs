//! Parked realms: a realm whose events keep faulting is set aside, alone.
//!
//! A fault — a trap, running out of fuel, a state limit — is attributed to
//! the realm whose call it happened in. Past `faults` faults within
//! `window_secs`, that realm is **parked**: its appends and queries answer
//! [`super::NodeError::RealmParked`] at once, before any plugin runs, so a
//! realm that cannot make progress stops costing the node work. Every other
//! realm, of the same type or not, carries on; the plugin version is only
//! quarantined when faults span many realms (see the runtime).
//!
//! An operator releases a parked realm by hand (`realmhost realm release
//! ID`), and loading, swapping or rolling back a version of its realm type
//! releases every parked realm of that type (the new logic gets its chance).
//! Parking is in memory: a restart releases everything.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use serde::{Deserialize, Serialize};

/// When a realm is parked.
///
/// | field | default |
/// |---|---|
/// | `faults` | 3 faults… |
/// | `window_secs` | …within 300 s park the realm (0 faults: never park) |
/// | `max_tracked` | 100 000 realms with recent faults remembered |
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ParkingConfig {
    /// Faults within the window that park a realm (0: never).
    pub faults: u32,
    /// Length of the window, in seconds.
    pub window_secs: u64,
    /// Realms with recent faults remembered at most (bounds memory under a
    /// flood of faulting realms; the oldest unparked ones are forgotten).
    pub max_tracked: usize,
}

impl Default for ParkingConfig {
    fn default() -> Self {
        Self {
            faults: 3,
            window_secs: 300,
            max_tracked: 100_000,
        }
    }
}

/// One parked realm, as operators see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParkedRealm {
    /// The realm.
    pub realm_id: String,
    /// Its realm type.
    pub realm_type: String,
    /// Faults counted when it was parked.
    pub faults: u32,
    /// The last fault.
    pub last_fault: String,
    /// When it was parked, ms since the Unix epoch.
    pub parked_at_ms: u64,
}

#[derive(Debug)]
struct Entry {
    realm_type: String,
    recent: VecDeque<Instant>,
    last_fault: String,
    parked_at_ms: Option<u64>,
}

/// The node's record of faulting and parked realms.
#[derive(Debug)]
pub(crate) struct Parking {
    config: ParkingConfig,
    realms: DashMap<String, Entry>,
}

impl Parking {
    pub(crate) fn new(config: ParkingConfig) -> Self {
        Self {
            config,
            realms: DashMap::new(),
        }
    }

    /// `Some(last fault)` while `realm` is parked.
    pub(crate) fn parked(&self, realm: &str) -> Option<String> {
        if self.realms.is_empty() {
            return None;
        }
        let e = self.realms.get(realm)?;
        e.parked_at_ms.map(|_| e.last_fault.clone())
    }

    /// Count a fault of `realm`; returns true when it parks the realm.
    pub(crate) fn record_fault(
        &self,
        realm: &str,
        realm_type: &str,
        fault: String,
        now_ms: u64,
    ) -> bool {
        if self.config.faults == 0 {
            return false;
        }
        if self.realms.len() >= self.config.max_tracked && !self.realms.contains_key(realm) {
            self.realms.retain(|_, e| e.parked_at_ms.is_some());
        }
        let now = Instant::now();
        let window = Duration::from_secs(self.config.window_secs);
        let mut e = self
            .realms
            .entry(realm.to_owned())
            .or_insert_with(|| Entry {
                realm_type: realm_type.to_owned(),
                recent: VecDeque::new(),
                last_fault: String::new(),
                parked_at_ms: None,
            });
        e.last_fault = fault;
        e.recent.push_back(now);
        while e
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > window)
            || e.recent.len() > self.config.faults as usize
        {
            e.recent.pop_front();
        }
        if e.parked_at_ms.is_none() && e.recent.len() >= self.config.faults as usize {
            e.parked_at_ms = Some(now_ms);
            tracing::warn!(realm, realm_type, faults = e.recent.len(), last = %e.last_fault, "realm parked: its events keep faulting");
            return true;
        }
        false
    }

    /// Release one realm; returns whether it was parked.
    pub(crate) fn release(&self, realm: &str) -> bool {
        self.realms
            .remove(realm)
            .is_some_and(|(_, e)| e.parked_at_ms.is_some())
    }

    /// Release every realm of a type (a new version is active); returns how
    /// many were parked.
    pub(crate) fn release_type(&self, realm_type: &str) -> usize {
        let mut released = 0;
        self.realms.retain(|_, e| {
            if e.realm_type == realm_type {
                released += usize::from(e.parked_at_ms.is_some());
                false
            } else {
                true
            }
        });
        if released > 0 {
            tracing::info!(realm_type, released, "parked realms released");
        }
        released
    }

    /// Parked realms, by id.
    pub(crate) fn list(&self) -> Vec<ParkedRealm> {
        let mut out: Vec<ParkedRealm> = self
            .realms
            .iter()
            .filter_map(|e| {
                e.parked_at_ms.map(|at| ParkedRealm {
                    realm_id: e.key().clone(),
                    realm_type: e.realm_type.clone(),
                    faults: e.recent.len() as u32,
                    last_fault: e.last_fault.clone(),
                    parked_at_ms: at,
                })
            })
            .collect();
        out.sort_by(|a, b| a.realm_id.cmp(&b.realm_id));
        out
    }

    /// Number of parked realms.
    pub(crate) fn count(&self) -> usize {
        self.realms
            .iter()
            .filter(|e| e.parked_at_ms.is_some())
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_realm_is_parked_after_repeated_faults_and_released() {
        let p = Parking::new(ParkingConfig::default());
        assert!(!p.record_fault("a", "ledger", "trap".into(), 1));
        assert!(!p.record_fault("a", "ledger", "trap".into(), 2));
        assert!(p.parked("a").is_none());
        assert!(p.record_fault("a", "ledger", "out of fuel".into(), 3));
        assert_eq!(p.parked("a").as_deref(), Some("out of fuel"));
        assert!(p.parked("b").is_none());
        assert_eq!(p.count(), 1);
        assert_eq!(p.list()[0].realm_type, "ledger");
        assert!(p.release("a"));
        assert!(p.parked("a").is_none());
        for i in 0..3 {
            p.record_fault("x", "ledger", "t".into(), i);
            p.record_fault("y", "counter", "t".into(), i);
        }
        assert_eq!(p.release_type("ledger"), 1);
        assert!(p.parked("y").is_some());
    }

    #[test]
    fn tracking_is_bounded_and_never_forgets_a_parked_realm() {
        let p = Parking::new(ParkingConfig {
            faults: 2,
            window_secs: 60,
            max_tracked: 10,
        });
        p.record_fault("bad", "t", "f".into(), 0);
        p.record_fault("bad", "t", "f".into(), 0);
        for i in 0..1000 {
            p.record_fault(&format!("r{i}"), "t", "f".into(), 0);
        }
        assert!(p.realms.len() <= 11);
        assert!(p.parked("bad").is_some());
        let never = Parking::new(ParkingConfig {
            faults: 0,
            ..ParkingConfig::default()
        });
        for _ in 0..10 {
            assert!(!never.record_fault("a", "t", "f".into(), 0));
        }
    }
}
