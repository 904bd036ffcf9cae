//! The committer's memory of realms it has seen: number, type and last
//! committed seq.
//!
//! Checking an append needs the realm's number and type (a B-tree lookup
//! in `realms` and a row decode that allocates) and its last seq (for a
//! realm with no unindexed tail, a range lookup in `log_index`). Both run
//! on the one committer thread, once per append: with 100 000 realms they
//! were a fifth of its CPU. A realm's number and type never change once it
//! exists, and its last seq changes only through the committer, so the
//! committer can remember all three exactly.
//!
//! Only committed facts enter the cache: what a batch learns is applied
//! after its commit succeeds (a realm created by a batch that fails must not
//! be remembered). The cache is bounded; when full it is emptied and refills
//! from the tables, which stay the source of truth.

use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::realm::RealmId;

/// What the committer knows about one realm, as of the last commit.
#[derive(Debug, Clone)]
pub(super) struct CachedRealm {
    pub(super) no: u64,
    pub(super) realm_type: Arc<str>,
    pub(super) last_seq: u64,
}

/// A realm's state after an append of this batch, applied to the cache if
/// the batch commits. `realm_type` is set when the realm was not cached.
#[derive(Debug)]
pub(super) struct Learned {
    pub(super) realm: RealmId,
    pub(super) no: u64,
    pub(super) last_seq: u64,
    pub(super) realm_type: Option<String>,
}

/// Realm id → number, type and last committed seq, at most `cap` realms.
#[derive(Debug)]
pub(super) struct RealmCache {
    realms: FxHashMap<RealmId, CachedRealm>,
    /// Realm types, shared by every realm of the type (there are few).
    types: FxHashMap<Arc<str>, ()>,
    cap: usize,
}

impl RealmCache {
    pub(super) fn new(cap: usize) -> Self {
        Self {
            realms: FxHashMap::default(),
            types: FxHashMap::default(),
            cap,
        }
    }

    pub(super) fn get(&self, realm: &RealmId) -> Option<&CachedRealm> {
        self.realms.get(realm)
    }

    /// Apply what a committed batch learned, in append order (a later append
    /// of the same realm carries its later last seq).
    pub(super) fn apply(&mut self, learned: Vec<Learned>) {
        if self.cap == 0 {
            return;
        }
        for l in learned {
            match l.realm_type {
                Some(ty) => {
                    if self.realms.len() >= self.cap {
                        self.realms.clear();
                    }
                    let realm_type = self.intern(ty);
                    self.realms.insert(
                        l.realm,
                        CachedRealm {
                            no: l.no,
                            realm_type,
                            last_seq: l.last_seq,
                        },
                    );
                }
                None => {
                    // Absent only if the cache was emptied since the lookup.
                    if let Some(c) = self.realms.get_mut(&l.realm) {
                        debug_assert_eq!(c.no, l.no);
                        c.last_seq = l.last_seq;
                    }
                }
            }
        }
    }

    /// Forget everything (after a reopen the file is the only truth).
    pub(super) fn clear(&mut self) {
        self.realms.clear();
    }

    fn intern(&mut self, ty: String) -> Arc<str> {
        if let Some((k, ())) = self.types.get_key_value(ty.as_str()) {
            return k.clone();
        }
        if self.types.len() >= 4096 {
            // Realm types come from loaded plugins; this only guards memory
            // against a caller inventing a type per realm.
            self.types.clear();
        }
        let k: Arc<str> = ty.into();
        self.types.insert(k.clone(), ());
        k
    }
}
