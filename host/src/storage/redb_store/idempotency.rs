//! Idempotency keys: stored in the transaction of the append they belong to,
//! so a retry after any crash finds the key exactly when the event is there.
//!
//! | table              | key                             | value |
//! |--------------------|---------------------------------|-------|
//! | `idempotency`      | `(realm id, key)`               | postcard [`Stored`]: seq, expiry, the caller's receipt |
//! | `idempotency_ttl`  | `(expires_ms, realm id, key)`   | `()`  |
//!
//! Unlike the log, these tables are keyed by realm, so a keyed append writes
//! two B-tree pages more than an unkeyed one: only appends that carry a key
//! pay. Expired keys are removed a bounded number per group commit, oldest
//! first ([`prune`]), and a lookup ignores an expired key still present.

use redb::{ReadTransaction, ReadableTable};
use serde::{Deserialize, Serialize};

use super::IDEMPOTENCY;
use crate::realm::RealmId;
use crate::storage::{IdempotencyHit, IdempotencyRecord, StorageError};

/// Expired keys removed at most per group commit: bounds the serial work a
/// commit spends on housekeeping.
pub(super) const PRUNE_PER_COMMIT: usize = 256;

/// A stored key.
#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    seq: u64,
    expires_ms: u64,
    receipt: Vec<u8>,
}

/// The tables a write transaction uses for keys.
pub(super) struct KeyTables<'t> {
    pub(super) keys: redb::Table<'t, (&'static str, &'static str), &'static [u8]>,
    pub(super) ttl: redb::Table<'t, (u64, &'static str, &'static str), ()>,
}

impl KeyTables<'_> {
    /// The unexpired seq already stored under `key` of `realm`, if any.
    pub(super) fn existing(
        &self,
        realm: &RealmId,
        key: &str,
        now_ms: u64,
    ) -> Result<Option<u64>, StorageError> {
        let Some(v) = self.keys.get((realm.as_str(), key))? else {
            return Ok(None);
        };
        let s = decode(realm, v.value())?;
        Ok((s.expires_ms > now_ms).then_some(s.seq))
    }

    /// Store `rec` for the event `seq` of `realm` (replacing an expired one).
    pub(super) fn insert(
        &mut self,
        realm: &RealmId,
        seq: u64,
        rec: &IdempotencyRecord,
    ) -> Result<(), StorageError> {
        let old = self
            .keys
            .get((realm.as_str(), rec.key.as_str()))?
            .map(|v| decode(realm, v.value()))
            .transpose()?;
        if let Some(old) = old {
            self.ttl
                .remove((old.expires_ms, realm.as_str(), rec.key.as_str()))?;
        }
        let value = postcard::to_allocvec(&Stored {
            seq,
            expires_ms: rec.expires_ms,
            receipt: rec.receipt.clone(),
        })
        .map_err(|e| StorageError::Backend(format!("encoding an idempotency key: {e}")))?;
        self.keys
            .insert((realm.as_str(), rec.key.as_str()), value.as_slice())?;
        self.ttl
            .insert((rec.expires_ms, realm.as_str(), rec.key.as_str()), ())?;
        Ok(())
    }

    /// Remove up to [`PRUNE_PER_COMMIT`] keys expired at `now_ms`, oldest
    /// first.
    pub(super) fn prune(&mut self, now_ms: u64) -> Result<usize, StorageError> {
        let mut expired = Vec::new();
        for item in self.ttl.range((0u64, "", "")..(now_ms, "", ""))? {
            let (k, _) = item?;
            let (at, realm, key) = k.value();
            expired.push((at, realm.to_owned(), key.to_owned()));
            if expired.len() >= PRUNE_PER_COMMIT {
                break;
            }
        }
        for (at, realm, key) in &expired {
            self.ttl.remove((*at, realm.as_str(), key.as_str()))?;
            self.keys.remove((realm.as_str(), key.as_str()))?;
        }
        Ok(expired.len())
    }
}

/// The receipt stored under `key` of `realm`, unless absent or expired.
pub(super) fn lookup(
    txn: &ReadTransaction,
    realm: &RealmId,
    key: &str,
    now_ms: u64,
) -> Result<Option<IdempotencyHit>, StorageError> {
    let table = match txn.open_table(IDEMPOTENCY) {
        Ok(t) => t,
        // A file no keyed append has written to yet.
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let Some(v) = table.get((realm.as_str(), key))? else {
        return Ok(None);
    };
    let s = decode(realm, v.value())?;
    Ok((s.expires_ms > now_ms).then_some(IdempotencyHit {
        seq: s.seq,
        receipt: s.receipt,
    }))
}

fn decode(realm: &RealmId, bytes: &[u8]) -> Result<Stored, StorageError> {
    postcard::from_bytes(bytes).map_err(|e| StorageError::RealmCorrupt {
        realm: realm.clone(),
        reason: format!("idempotency record: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::realm::{EventRecord, RealmId};
    use crate::runtime::PluginVersion;
    use crate::storage::{AppendRequest, RedbStorage, StorageError};

    fn req(realm: &str, seq: u64) -> AppendRequest {
        AppendRequest {
            realm_id: RealmId::new(realm).unwrap(),
            realm_type: "t".into(),
            plugin_version: PluginVersion([1; 32]),
            events: vec![EventRecord {
                seq,
                kind: "k".into(),
                payload: vec![1, 2, 3],
                source: "s".into(),
                source_realm: None,
                timestamp_ms: 1,
                source_reputation: 1.0,
                message: None,
            }],
        }
    }

    fn rec(key: &str, expires_ms: u64) -> IdempotencyRecord {
        IdempotencyRecord {
            key: key.into(),
            expires_ms,
            receipt: key.as_bytes().to_vec(),
        }
    }

    #[test]
    fn keys_survive_reopen_refuse_duplicates_and_expire() {
        let dir = tempfile::tempdir().unwrap();
        let realm = RealmId::new("r").unwrap();
        let far = u64::MAX / 2;
        {
            let s = RedbStorage::open(dir.path()).unwrap();
            s.append_idempotent_blocking(req("r", 1), rec("k1", far))
                .unwrap();
            s.append_idempotent_blocking(req("r", 2), rec("k2", 10))
                .unwrap();
            // The same key again, unexpired: refused, nothing appended.
            match s.append_idempotent_blocking(req("r", 3), rec("k1", far)) {
                Err(StorageError::IdempotencyKeyUsed { seq: 1, .. }) => {}
                other => panic!("{other:?}"),
            }
            assert_eq!(s.realm_meta(&realm).unwrap().unwrap().last_seq, 2);
        }
        let s = RedbStorage::open(dir.path()).unwrap();
        let hit = s.idempotency_lookup(&realm, "k1", 100).unwrap().unwrap();
        assert_eq!((hit.seq, hit.receipt.as_slice()), (1, b"k1".as_slice()));
        // Expired: not found, and the key may be used again.
        assert!(s.idempotency_lookup(&realm, "k2", 100).unwrap().is_none());
        assert!(s.idempotency_lookup(&realm, "other", 0).unwrap().is_none());
        s.append_idempotent_blocking(req("r", 3), rec("k2", far))
            .unwrap();
        let hit = s.idempotency_lookup(&realm, "k2", 100).unwrap().unwrap();
        assert_eq!(hit.seq, 3);
    }
}
