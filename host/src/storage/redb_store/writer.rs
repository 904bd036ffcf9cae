//! One group commit's writes against the tables of one write transaction:
//! appends and checkpoints here, snapshots in `snapshots.rs`.

use redb::{ReadableTable, WriteTransaction};

use super::committer::BatchState;
use super::idempotency::KeyTables;
use super::messages::MessageTables;
use super::read::last_indexed;
use super::realm_cache::{Learned, RealmCache};
use super::{
    BY_TYPE, Counters, DEAD_LETTERS, EncodedAppend, IDEMPOTENCY, IDEMPOTENCY_TTL, INBOX, INDEX,
    KEY_INDEX_FLOOR, LOG, META, OUTBOX, REALMS, SNAPSHOT_ENTRIES, SNAPSHOTS, SYS, StorageConfig,
    Tail, Unindexed, VERSIONS,
};
use crate::realm::RealmId;
use crate::runtime::PluginVersion;
use crate::storage::codec::{self, RealmRow};
use crate::storage::{AppendAck, StorageError};

/// The tables of one write transaction, and the committed state it builds on.
pub(super) struct Writer<'t, 'c> {
    pub(super) sys: redb::Table<'t, &'static str, u64>,
    pub(super) log: redb::Table<'t, u64, &'static [u8]>,
    pub(super) index: redb::Table<'t, (u64, u64), &'static [u8]>,
    pub(super) realms: redb::Table<'t, &'static str, &'static [u8]>,
    pub(super) by_type: redb::Table<'t, (&'static str, &'static str), ()>,
    pub(super) snapshots: redb::Table<'t, u64, &'static [u8]>,
    pub(super) snapshot_entries: redb::Table<'t, (u64, &'static [u8]), &'static [u8]>,
    pub(super) versions: redb::Table<'t, u32, &'static [u8]>,
    pub(super) meta: redb::Table<'t, &'static str, &'static [u8]>,
    /// Idempotency keys of appends.
    pub(super) keys: KeyTables<'t>,
    /// Outboxes and inbox cursors.
    pub(super) messages: MessageTables<'t>,
    pub(super) counters: &'c Counters,
    pub(super) unindexed: &'c Unindexed,
    pub(super) cache: &'c RealmCache,
    /// Largest map stored inline in its snapshot header.
    pub(super) inline_snapshot_bytes: u64,
}

/// Inner result: `Err` is fatal to the batch (a backend error mid-write), the
/// nested `Err` rejects only this request (nothing was written for it).
pub(super) type Step<T> = Result<Result<T, StorageError>, StorageError>;

impl<'t, 'c> Writer<'t, 'c> {
    pub(super) fn open(
        txn: &'t WriteTransaction,
        counters: &'c Counters,
        unindexed: &'c Unindexed,
        cache: &'c RealmCache,
        config: &StorageConfig,
    ) -> Result<Self, StorageError> {
        Ok(Self {
            sys: txn.open_table(SYS)?,
            log: txn.open_table(LOG)?,
            index: txn.open_table(INDEX)?,
            realms: txn.open_table(REALMS)?,
            by_type: txn.open_table(BY_TYPE)?,
            snapshots: txn.open_table(SNAPSHOTS)?,
            snapshot_entries: txn.open_table(SNAPSHOT_ENTRIES)?,
            versions: txn.open_table(VERSIONS)?,
            meta: txn.open_table(META)?,
            keys: KeyTables {
                keys: txn.open_table(IDEMPOTENCY)?,
                ttl: txn.open_table(IDEMPOTENCY_TTL)?,
            },
            messages: MessageTables {
                outbox: txn.open_table(OUTBOX)?,
                inbox: txn.open_table(INBOX)?,
                dead: txn.open_table(DEAD_LETTERS)?,
            },
            counters,
            unindexed,
            cache,
            inline_snapshot_bytes: config.inline_snapshot_bytes,
        })
    }

    pub(super) fn row(&self, realm: &RealmId) -> Result<Option<RealmRow>, StorageError> {
        let v = self.realms.get(realm.as_str())?;
        v.map(|v| codec::decode_realm(v.value())).transpose()
    }

    /// The realm's last seq as of this transaction: this batch's entries, the
    /// committed tail, or the index.
    pub(super) fn last_seq(&self, no: u64, batch: &BatchState) -> Result<u64, StorageError> {
        if let Some(t) = batch.tails.get(&no) {
            return Ok(t.last_seq());
        }
        if let Some(t) = self.unindexed.realms.get(&no) {
            return Ok(t.last_seq());
        }
        Ok(last_indexed(&self.index, no)?.map_or(0, |(seq, _)| seq))
    }

    fn version_no(
        &mut self,
        version: PluginVersion,
        batch: &mut BatchState,
    ) -> Result<u32, StorageError> {
        if let Some(&n) = self.counters.versions.get(&version) {
            return Ok(n);
        }
        if let Some(&(_, n)) = batch.new_versions.iter().find(|(v, _)| *v == version) {
            return Ok(n);
        }
        let n = u32::try_from(self.counters.versions.len() + batch.new_versions.len())
            .map_err(|_| StorageError::Backend("too many plugin versions".into()))?;
        self.versions.insert(n, version.0.as_slice())?;
        batch.new_versions.push((version, n));
        Ok(n)
    }

    pub(super) fn append(
        &mut self,
        req: &mut EncodedAppend,
        batch: &mut BatchState,
    ) -> Step<AppendAck> {
        // Everything that can reject the request happens before the first
        // write, so a rejection leaves the transaction as it found it.
        let realm = &req.realm_id;
        // The realm's number and last seq: from the committer's cache when
        // it knows the realm (no B-tree lookup, no row decode), else from
        // the tables.
        let (no, new_row, cached_last, miss) = match self.cache.get(realm) {
            Some(c) if *c.realm_type != *req.realm_type => {
                return Ok(Err(StorageError::RealmTypeMismatch {
                    realm: realm.clone(),
                    stored: c.realm_type.to_string(),
                    requested: req.realm_type.clone(),
                }));
            }
            Some(c) => (c.no, None, Some(c.last_seq), false),
            None => match self.row(realm)? {
                Some(row) if row.realm_type != req.realm_type => {
                    return Ok(Err(StorageError::RealmTypeMismatch {
                        realm: realm.clone(),
                        stored: row.realm_type,
                        requested: req.realm_type.clone(),
                    }));
                }
                Some(row) => (row.no, None, None, true),
                None => {
                    let row = RealmRow {
                        no: batch.next_realm_no,
                        realm_type: req.realm_type.clone(),
                        last_snapshot_seq: 0,
                    };
                    (row.no, Some(row), None, true)
                }
            },
        };
        let created = new_row.is_some();
        // This batch's own appends come first (they are in `tails` until
        // the checkpoint, which runs after the last append); then the
        // cached committed seq; then the tables.
        let last_seq = if created {
            0
        } else if let Some(t) = batch.tails.get(&no) {
            t.last_seq()
        } else if let Some(last) = cached_last {
            last
        } else {
            self.last_seq(no, batch)?
        };
        if req.first_seq <= last_seq {
            return Ok(Err(StorageError::Duplicate {
                realm: realm.clone(),
                seq: req.first_seq,
                last_seq,
            }));
        }
        if req.first_seq != last_seq + 1 {
            return Ok(Err(StorageError::Gap {
                realm: realm.clone(),
                expected: last_seq + 1,
                found: req.first_seq,
            }));
        }
        if let Some(rec) = &req.idempotency
            && let Some(seq) = self.keys.existing(realm, &rec.key, super::now_ms())?
        {
            return Ok(Err(StorageError::IdempotencyKeyUsed {
                realm: realm.clone(),
                key: rec.key.clone(),
                seq,
            }));
        }
        if let Some(d) = &req.delivery
            && let Some(refused) = self.messages.refuse_delivery(realm, d)?
        {
            return Ok(Err(refused));
        }
        if let Some(s) = &req.settle
            && self
                .messages
                .outbox
                .get((realm.as_str(), s.seq, s.index))?
                .is_none()
        {
            return Ok(Err(StorageError::NotInOutbox {
                realm: realm.clone(),
                seq: s.seq,
                index: s.index,
            }));
        }
        let row_bytes = match &new_row {
            Some(row) => match codec::encode_realm(row) {
                Ok(b) => Some(b),
                Err(e) => return Ok(Err(e)),
            },
            None => None,
        };

        let version_no = self.version_no(req.version, batch)?;
        let count = req.entries.len() as u64;
        let first_pos = batch.next_pos;
        for (i, entry) in req.entries.iter_mut().enumerate() {
            codec::set_entry_header(entry, no, version_no);
            self.log.insert(first_pos + i as u64, entry.as_slice())?;
        }
        if let Some(row_bytes) = row_bytes {
            self.realms.insert(realm.as_str(), row_bytes.as_slice())?;
            self.by_type
                .insert((req.realm_type.as_str(), realm.as_str()), ())?;
            batch.next_realm_no += 1;
        }
        let tail = batch.tails.entry(no).or_insert_with(|| Tail {
            first_seq: req.first_seq,
            positions: Vec::new(),
            version_no,
        });
        if let Some(rec) = &req.idempotency {
            self.keys.insert(realm, last_seq + count, rec)?;
        }
        if !req.outbox.is_empty() || req.delivery.is_some() {
            self.messages
                .write(realm, &req.outbox, req.delivery.as_ref())?;
        }
        if let Some(s) = &req.settle {
            let change = match &s.dead_letter {
                Some(reason) => crate::storage::OutboxChange::DeadLetter(reason.clone()),
                None => crate::storage::OutboxChange::Settle,
            };
            // Checked above, in this transaction: the row is there.
            let _ = self.messages.change(realm, s.seq, s.index, change)?;
        }
        tail.positions.extend(first_pos..first_pos + count);
        tail.version_no = version_no;
        batch.next_pos += count;
        batch.events += req.entries.len();
        batch.learned.push(Learned {
            realm: req.realm_id.clone(),
            no,
            last_seq: last_seq + count,
            realm_type: miss.then(|| req.realm_type.clone()),
        });
        Ok(Ok(AppendAck {
            last_seq: last_seq + count,
            created,
        }))
    }

    /// Fold the oldest realms' tails into `log_index` once more than
    /// `checkpoint_events` are unindexed (all of them with `full`), and move
    /// `index_floor` past everything indexed.
    ///
    /// Each realm gets one index entry covering its whole tail, this batch's
    /// entries included. Realms go oldest first, so the floor becomes the
    /// oldest position of the first realm left unindexed.
    pub(super) fn checkpoint(
        &mut self,
        batch: &mut BatchState,
        config: &StorageConfig,
        full: bool,
    ) -> Result<(), StorageError> {
        let total = self.unindexed.events + batch.events;
        if !full && total <= config.checkpoint_events {
            return Ok(());
        }
        let mut excess = if full {
            usize::MAX
        } else {
            total - config.checkpoint_events
        };
        let budget = if full {
            usize::MAX
        } else {
            config.checkpoint_realms.max(1)
        };
        let unindexed = self.unindexed;
        let mut floor = None;
        for (&oldest, &no) in &unindexed.by_age {
            if excess == 0 || batch.indexed.len() >= budget {
                floor = Some(oldest);
                break;
            }
            let Some(tail) = unindexed.realms.get(&no) else {
                continue;
            };
            let mut positions = tail.positions.clone();
            let mut version_no = tail.version_no;
            if let Some(mine) = batch.tails.remove(&no) {
                positions.extend(mine.positions);
                version_no = mine.version_no;
            }
            self.index.insert(
                (no, tail.first_seq),
                codec::encode_run(version_no, &positions)?.as_slice(),
            )?;
            batch.indexed.push(no);
            excess = excess.saturating_sub(positions.len());
        }
        if full {
            // Realms whose whole tail is this batch's (none at shutdown, but
            // keep the invariant whatever calls this).
            for (no, t) in batch.tails.drain() {
                self.index.insert(
                    (no, t.first_seq),
                    codec::encode_run(t.version_no, &t.positions)?.as_slice(),
                )?;
                batch.indexed.push(no);
            }
        }
        let floor = floor
            .or_else(|| {
                batch
                    .tails
                    .values()
                    .filter_map(|t| t.positions.first().copied())
                    .min()
            })
            .unwrap_or(batch.next_pos);
        self.sys.insert(KEY_INDEX_FLOOR, floor)?;
        Ok(())
    }
}
