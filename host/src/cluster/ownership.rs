//! Which shards this node serves, read on every request: a shard is served
//! while its lease is held *and* was renewed less than half a lease ago, so
//! a node that cannot renew (NATS unreachable, the process paused) stops
//! serving by itself before the lease can expire and pass to another node.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::RwLock;

/// Per shard: served until when, and who owns it as far as this node knows.
#[derive(Debug)]
pub(crate) struct Ownership {
    base: Instant,
    /// Ms since `base` until which this node serves the shard; 0: it does
    /// not.
    until: Box<[AtomicU64]>,
    /// The owner of each shard (node id) as of the last lease read.
    owners: RwLock<Vec<Option<String>>>,
}

impl Ownership {
    pub(crate) fn new(shards: usize) -> Self {
        Self {
            base: Instant::now(),
            until: (0..shards).map(|_| AtomicU64::new(0)).collect(),
            owners: RwLock::new(vec![None; shards]),
        }
    }

    fn ms(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.base).as_millis() as u64 + 1
    }

    /// Whether this node serves `shard` now.
    pub(crate) fn owns(&self, shard: usize) -> bool {
        self.until
            .get(shard)
            .is_some_and(|u| u.load(Ordering::Acquire) > self.ms(Instant::now()))
    }

    /// Serve `shard` until `until`.
    pub(crate) fn grant(&self, shard: usize, until: Instant) {
        if let Some(u) = self.until.get(shard) {
            u.store(self.ms(until), Ordering::Release);
        }
    }

    /// Stop serving `shard` now.
    pub(crate) fn revoke(&self, shard: usize) {
        if let Some(u) = self.until.get(shard) {
            u.store(0, Ordering::Release);
        }
    }

    /// The shards served now.
    pub(crate) fn served(&self) -> Vec<usize> {
        (0..self.until.len()).filter(|&s| self.owns(s)).collect()
    }

    /// The owner of `shard` as of the last lease read.
    pub(crate) fn owner_of(&self, shard: usize) -> Option<String> {
        self.owners.read().get(shard).cloned().flatten()
    }

    /// Record the owners read from the leases.
    pub(crate) fn set_owners(&self, owners: Vec<Option<String>>) {
        *self.owners.write() = owners;
    }

    /// Record one shard's owner.
    pub(crate) fn set_owner(&self, shard: usize, owner: Option<String>) {
        if let Some(o) = self.owners.write().get_mut(shard) {
            *o = owner;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_grant_lapses_by_itself_and_a_revoke_is_immediate() {
        let o = Ownership::new(4);
        assert!(!o.owns(1));
        o.grant(1, Instant::now() + Duration::from_secs(60));
        o.grant(2, Instant::now());
        assert!(o.owns(1));
        assert!(!o.owns(2), "a grant until now has already lapsed");
        assert_eq!(o.served(), vec![1]);
        o.revoke(1);
        assert!(!o.owns(1));
        assert!(!o.owns(99));
    }
}
