//! Realms the active plugin version cannot serve.
//!
//! A realm is *unservable* when the active version of its realm type refuses
//! one of the realm's stored events while rebuilding it (after a forced swap
//! or rollback to a version that does not understand newer events, say). That
//! is not the client's fault and not a fault of the call: the realm answers
//! [`super::NodeError::RealmUnservable`] (HTTP 503 `realm_unservable`) and is
//! listed here, in the node's stats and in the metric
//! `realmhost_unservable_realms` until a version that can serve it is
//! activated (loading, swapping or rolling back a version of its type clears
//! the list for that type; the next access tries again) or it loads cleanly.

use dashmap::DashMap;
use serde::{Deserialize, Serialize};

/// Most realms remembered; beyond it the list keeps the first ones (the
/// count in the stats stays exact up to this bound).
const MAX_TRACKED: usize = 100_000;

/// One realm the active version could not rebuild, as operators see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnservableRealm {
    /// The realm.
    pub realm_id: String,
    /// Its realm type.
    pub realm_type: String,
    /// Semantic version of the active version that failed.
    pub semver: String,
    /// Hash of that version.
    pub version: String,
    /// The stored event it refused (0: `init` failed).
    pub seq: u64,
    /// Why.
    pub reason: String,
    /// When it was first seen, ms since the Unix epoch.
    pub since_ms: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Unservable {
    realms: DashMap<String, UnservableRealm>,
}

impl Unservable {
    pub(crate) fn record(&self, realm: UnservableRealm) {
        if self.realms.len() >= MAX_TRACKED && !self.realms.contains_key(&realm.realm_id) {
            return;
        }
        if !self.realms.contains_key(&realm.realm_id) {
            tracing::warn!(
                realm = %realm.realm_id,
                realm_type = %realm.realm_type,
                version = %realm.semver,
                seq = realm.seq,
                reason = %realm.reason,
                "realm unservable: the active plugin version cannot rebuild it"
            );
        }
        self.realms
            .entry(realm.realm_id.clone())
            .and_modify(|e| {
                e.seq = realm.seq;
                e.reason.clone_from(&realm.reason);
                e.version.clone_from(&realm.version);
                e.semver.clone_from(&realm.semver);
            })
            .or_insert(realm);
    }

    /// The realm loaded cleanly.
    pub(crate) fn clear(&self, realm: &str) {
        if !self.realms.is_empty() {
            self.realms.remove(realm);
        }
    }

    /// Another version of the type is active: every realm gets a new try.
    pub(crate) fn clear_type(&self, realm_type: &str) {
        self.realms.retain(|_, e| e.realm_type != realm_type);
    }

    pub(crate) fn list(&self) -> Vec<UnservableRealm> {
        let mut out: Vec<_> = self.realms.iter().map(|e| e.value().clone()).collect();
        out.sort_by(|a, b| a.realm_id.cmp(&b.realm_id));
        out
    }

    pub(crate) fn count(&self) -> usize {
        self.realms.len()
    }
}

impl super::Node {
    /// Record a realm the active version cannot rebuild.
    pub(super) fn note_unservable(&self, e: &super::NodeError) {
        if let super::NodeError::RealmUnservable(u) = e {
            self.unservable.record(UnservableRealm {
                realm_id: u.realm.to_string(),
                realm_type: u.realm_type.clone(),
                semver: u.semver.clone(),
                version: u.version.to_hex(),
                seq: u.seq,
                reason: u.reason.clone(),
                since_ms: super::now_ms(),
            });
        }
    }

    /// Realms the active version of their type cannot rebuild.
    pub fn unservable_realms(&self) -> Vec<UnservableRealm> {
        self.unservable.list()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn realm(id: &str, t: &str) -> UnservableRealm {
        UnservableRealm {
            realm_id: id.into(),
            realm_type: t.into(),
            semver: "1.0.0".into(),
            version: "ab".into(),
            seq: 3,
            reason: "unknown event".into(),
            since_ms: 1,
        }
    }

    #[test]
    fn records_clears_and_clears_by_type() {
        let u = Unservable::default();
        u.record(realm("a", "ledger"));
        u.record(realm("a", "ledger"));
        u.record(realm("b", "counter"));
        assert_eq!(u.count(), 2);
        u.clear("b");
        assert_eq!(u.list().len(), 1);
        u.record(realm("c", "ledger"));
        u.clear_type("ledger");
        assert_eq!(u.count(), 0);
    }
}
