//! The read path: a consistent view of one realm (read transaction, row and
//! unindexed tail), and the reads built on it.

use redb::{ReadTransaction, ReadableTable};

use super::open::guarded;
use super::snapshots::snapshot_of;
use super::{BY_TYPE, INDEX, LOG, META, REALMS, RedbStorage, Tail, VERSIONS};
use crate::realm::{EventRecord, RealmId};
use crate::runtime::PluginVersion;
use crate::storage::codec::{self, RealmRow};
use crate::storage::{IdempotencyHit, RealmLoad, RealmMeta, RealmPage, Snapshot, StorageError};

impl RedbStorage {
    /// A consistent view of one realm: a read transaction, the realm's row,
    /// and its unindexed tail.
    ///
    /// The tail is copied under the lock the committer takes to publish, and
    /// the transaction begins under the same lock. So every tail event is in
    /// the transaction (the committer publishes only after a commit), and an
    /// event missing from the copied tail because a checkpoint indexed it was
    /// indexed by a commit the transaction sees. The view may overlap (an
    /// event both indexed and in the tail; readers skip the duplicate) but
    /// never has a hole.
    fn view(&self, realm: &RealmId) -> Result<Option<View>, StorageError> {
        let unindexed = self.unindexed.read();
        let txn = self.db.begin_read()?;
        let Some(row) = realm_row(&txn, realm)? else {
            return Ok(None);
        };
        let tail = unindexed.realms.get(&row.no).cloned();
        drop(unindexed);
        Ok(Some(View { txn, row, tail }))
    }

    /// The realm's metadata.
    pub fn realm_meta(&self, realm: &RealmId) -> Result<Option<RealmMeta>, StorageError> {
        guarded_read(Some(realm), || {
            self.view(realm)?.map(|v| v.meta()).transpose()
        })
    }

    /// The realm's snapshot: its whole map, read with one range scan (or
    /// from the header, for a small map).
    pub fn load_snapshot(&self, realm: &RealmId) -> Result<Option<Snapshot>, StorageError> {
        guarded_read(Some(realm), || match self.view(realm)? {
            Some(v) => {
                let (last_seq, _) = v.last()?;
                v.snapshot(realm, last_seq)
            }
            None => Ok(None),
        })
    }

    /// Events after `after_seq`, in seq order.
    pub fn events_since(
        &self,
        realm: &RealmId,
        after_seq: u64,
    ) -> Result<Vec<EventRecord>, StorageError> {
        guarded_read(Some(realm), || match self.view(realm)? {
            Some(v) => {
                let (last_seq, _) = v.last()?;
                v.events(after_seq, last_seq)
            }
            None => Ok(Vec::new()),
        })
    }

    /// At most `limit` events after `after_seq`, in seq order.
    pub fn events_page(
        &self,
        realm: &RealmId,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<EventRecord>, StorageError> {
        guarded_read(Some(realm), || match self.view(realm)? {
            Some(v) => {
                let (last_seq, _) = v.last()?;
                let upto = last_seq.min(after_seq.saturating_add(limit as u64));
                if upto <= after_seq {
                    return Ok(Vec::new());
                }
                v.events(after_seq, upto)
            }
            None => Ok(Vec::new()),
        })
    }

    /// Metadata, snapshot and the events after it, from one read transaction.
    #[tracing::instrument(name = "storage.load", skip_all, fields(realm = %realm, snapshot_seq, tail))]
    pub fn load_realm(&self, realm: &RealmId) -> Result<Option<RealmLoad>, StorageError> {
        guarded_read(Some(realm), || self.load_realm_unguarded(realm))
    }

    fn load_realm_unguarded(&self, realm: &RealmId) -> Result<Option<RealmLoad>, StorageError> {
        let Some(v) = self.view(realm)? else {
            return Ok(None);
        };
        let meta = v.meta()?;
        let snapshot = v.snapshot(realm, meta.last_seq)?;
        let after = snapshot.as_ref().map_or(0, |s| s.seq);
        let tail = v.events(after, meta.last_seq)?;
        let span = tracing::Span::current();
        span.record("snapshot_seq", after);
        span.record("tail", tail.len());
        Ok(Some(RealmLoad {
            meta,
            snapshot,
            tail,
        }))
    }

    /// How many rows of `snapshot_entries` the realm has (0 for a snapshot
    /// stored inline, or none).
    #[cfg(test)]
    pub(crate) fn snapshot_rows(&self, realm: &RealmId) -> Result<usize, StorageError> {
        match self.view(realm)? {
            Some(v) => super::snapshots::count_rows(&v.txn, v.row.no),
            None => Ok(0),
        }
    }

    /// Realms of `realm_type` in id order after `after`, at most `limit`.
    pub fn list_realms(
        &self,
        realm_type: &str,
        after: Option<&RealmId>,
        limit: usize,
    ) -> Result<RealmPage, StorageError> {
        guarded_read(None, || {
            self.list_realms_unguarded(realm_type, after, limit)
        })
    }

    fn list_realms_unguarded(
        &self,
        realm_type: &str,
        after: Option<&RealmId>,
        limit: usize,
    ) -> Result<RealmPage, StorageError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(BY_TYPE)?;
        let mut out = Vec::with_capacity(limit.min(1024));
        let start = after.map_or("", RealmId::as_str);
        for item in table.range((realm_type, start)..)? {
            if out.len() >= limit {
                break;
            }
            let (key, _) = item?;
            let (t, id) = key.value();
            if t != realm_type {
                break;
            }
            if after.is_some() && id == start {
                continue;
            }
            out.push(
                RealmId::new(id)
                    .map_err(|e| StorageError::Corrupt(format!("stored realm id {id:?}: {e}")))?,
            );
        }
        Ok(out)
    }

    /// Every realm type with at least one stored realm, in order: one seek
    /// per type in the inventory, not a scan of it.
    pub fn realm_types(&self) -> Result<Vec<String>, StorageError> {
        guarded_read(None, || self.realm_types_unguarded())
    }

    fn realm_types_unguarded(&self) -> Result<Vec<String>, StorageError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(BY_TYPE)?;
        let mut out: Vec<String> = Vec::new();
        loop {
            // Realm types never contain NUL, so `type + "\0"` sorts after
            // every key of `type` and before the next type.
            let next = out.last().map(|t| format!("{t}\0"));
            let mut range = table.range((next.as_deref().unwrap_or(""), "")..)?;
            match range.next() {
                Some(item) => {
                    let (key, _) = item?;
                    out.push(key.value().0.to_owned());
                }
                None => return Ok(out),
            }
        }
    }

    /// The unexpired idempotency key `key` of `realm` at `now_ms`.
    pub fn idempotency_lookup(
        &self,
        realm: &RealmId,
        key: &str,
        now_ms: u64,
    ) -> Result<Option<IdempotencyHit>, StorageError> {
        guarded_read(Some(realm), || {
            let txn = self.db.begin_read()?;
            super::idempotency::lookup(&txn, realm, key, now_ms)
        })
    }

    /// Messages still in outboxes after `after`, at most `limit`, in key
    /// order (see [`crate::storage::Storage::pending_messages`]).
    pub fn pending_messages(
        &self,
        after: Option<&crate::storage::OutboxKey>,
        limit: usize,
    ) -> Result<Vec<crate::storage::PendingMessage>, StorageError> {
        guarded_read(after.map(|k| &k.sender), || {
            let txn = self.db.begin_read()?;
            super::messages::pending(&txn, after, limit)
        })
    }

    /// Dead letters after `after`, at most `limit`, in key order.
    pub fn dead_letters(
        &self,
        after: Option<&crate::storage::OutboxKey>,
        limit: usize,
    ) -> Result<Vec<crate::storage::DeadLetter>, StorageError> {
        guarded_read(after.map(|k| &k.sender), || {
            let txn = self.db.begin_read()?;
            super::messages::dead_letters(&txn, after, limit)
        })
    }

    /// `target`'s inbox cursor for `sender`.
    pub fn inbox_cursor(
        &self,
        target: &RealmId,
        sender: &RealmId,
    ) -> Result<Option<crate::storage::InboxCursor>, StorageError> {
        guarded_read(Some(target), || {
            let txn = self.db.begin_read()?;
            super::messages::cursor(&txn, target, sender)
        })
    }

    /// A record stored with [`Self::put_meta`].
    pub fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        guarded_read(None, || {
            let txn = self.db.begin_read()?;
            let table = txn.open_table(META)?;
            Ok(table.get(key)?.map(|v| v.value().to_vec()))
        })
    }
}

/// Run a read, turning a panic inside redb into [`StorageError::Corrupt`]
/// and naming `realm` in a corruption error.
///
/// redb checks page checksums only when asked (`verify_on_open`, or the
/// scrub) and documents that a file altered outside redb may make it panic:
/// a damaged page it trusts can send a B-tree walk out of bounds. Such a
/// panic must not take down the HTTP connection (or the worker) that asked
/// for the read, so every read runs under `catch_unwind` as a last resort;
/// the panic message still reaches the panic hook (stderr). Nothing the read
/// holds can be left inconsistent: a read transaction owns no shared state
/// that a panic could leave half-updated (the tail lock does not poison).
pub(super) fn guarded_read<T>(
    realm: Option<&RealmId>,
    f: impl FnOnce() -> Result<T, StorageError>,
) -> Result<T, StorageError> {
    let r = guarded("reading", f);
    match realm {
        Some(realm) => r.map_err(|e| e.in_realm(realm)),
        None => r,
    }
}

/// The last indexed seq of realm `no` and the version number of that event.
pub(super) fn last_indexed(
    index: &impl ReadableTable<(u64, u64), &'static [u8]>,
    no: u64,
) -> Result<Option<(u64, u32)>, StorageError> {
    let Some(item) = index.range((no, 0)..=(no, u64::MAX))?.next_back() else {
        return Ok(None);
    };
    let (k, v) = item?;
    let first_seq = k.value().1;
    let head = codec::decode_run_head(v.value())?;
    let last = first_seq
        .checked_add(head.count - 1)
        .ok_or_else(|| StorageError::Corrupt(format!("realm #{no}: index run overflows")))?;
    Ok(Some((last, head.version_no)))
}

fn realm_row(txn: &ReadTransaction, realm: &RealmId) -> Result<Option<RealmRow>, StorageError> {
    let realms = txn.open_table(REALMS)?;
    let row = realms.get(realm.as_str())?;
    row.map(|v| codec::decode_realm(v.value())).transpose()
}

/// One realm as of one read transaction; see [`RedbStorage::view`].
struct View {
    txn: ReadTransaction,
    row: RealmRow,
    tail: Option<Tail>,
}

impl View {
    /// The realm's snapshot, checked not to run ahead of its log.
    fn snapshot(&self, realm: &RealmId, last_seq: u64) -> Result<Option<Snapshot>, StorageError> {
        let snap = snapshot_of(&self.txn, realm, &self.row)?;
        if let Some(s) = &snap
            && s.seq > last_seq
        {
            return Err(StorageError::Corrupt(format!(
                "realm {realm}: snapshot at seq {} is ahead of the log (last seq {last_seq})",
                s.seq
            )));
        }
        Ok(snap)
    }

    /// Last seq and the version number of its event.
    fn last(&self) -> Result<(u64, u32), StorageError> {
        let index = self.txn.open_table(INDEX)?;
        let indexed = last_indexed(&index, self.row.no)?;
        let last = match (&self.tail, indexed) {
            (Some(t), Some((seq, _))) if t.last_seq() <= seq => indexed,
            (Some(t), _) => Some((t.last_seq(), t.version_no)),
            (None, indexed) => indexed,
        };
        last.ok_or_else(|| {
            StorageError::Corrupt(format!("realm #{} has a row but no events", self.row.no))
        })
    }

    fn meta(&self) -> Result<RealmMeta, StorageError> {
        let (last_seq, version_no) = self.last()?;
        let versions = self.txn.open_table(VERSIONS)?;
        let version = versions.get(version_no)?.ok_or_else(|| {
            StorageError::Corrupt(format!("unknown plugin version #{version_no}"))
        })?;
        let bytes: [u8; 32] = version
            .value()
            .try_into()
            .map_err(|_| StorageError::Corrupt(format!("plugin version #{version_no}")))?;
        Ok(RealmMeta {
            realm_type: self.row.realm_type.clone(),
            last_seq,
            last_snapshot_seq: self.row.last_snapshot_seq,
            plugin_version: PluginVersion(bytes),
        })
    }

    /// Events after `after_seq`, checked against the index and the tail: every
    /// seq from `after_seq + 1` to `last_seq` (from [`Self::last`]) exactly
    /// once, in order, each entry owned by this realm. Anything else is
    /// reported as corruption.
    /// Events `after_seq + 1 ..= last_seq`; `last_seq` may be below the
    /// realm's last seq (a page).
    fn events(&self, after_seq: u64, last_seq: u64) -> Result<Vec<EventRecord>, StorageError> {
        let no = self.row.no;
        let index = self.txn.open_table(INDEX)?;
        let log = self.txn.open_table(LOG)?;
        let start = after_seq.saturating_add(1);

        // (seq, position) of every wanted event: indexed runs first (the run
        // holding `start` is the last one beginning at or before it), then
        // the unindexed tail beyond them.
        let mut wanted: Vec<(u64, u64)> = Vec::new();
        let mut runs = Vec::new();
        if let Some(item) = index.range((no, 0)..=(no, start))?.next_back() {
            runs.push(item?);
        }
        for item in index.range((no, start.saturating_add(1))..=(no, u64::MAX))? {
            runs.push(item?);
        }
        let mut next_seq = start;
        for (k, v) in runs {
            let first_seq = k.value().1;
            let (_, positions) = codec::decode_run(v.value())?;
            for (i, pos) in positions.into_iter().enumerate() {
                let seq = first_seq + i as u64;
                if seq >= next_seq && seq <= last_seq {
                    wanted.push((seq, pos));
                    next_seq = seq + 1;
                }
            }
        }
        if let Some(t) = &self.tail {
            for (i, &pos) in t.positions.iter().enumerate() {
                let seq = t.first_seq + i as u64;
                if seq >= next_seq && seq <= last_seq {
                    wanted.push((seq, pos));
                    next_seq = seq + 1;
                }
            }
        }

        let mut out = Vec::with_capacity(wanted.len());
        let mut expected = start;
        for (seq, pos) in wanted {
            let Some(v) = log.get(pos)? else {
                return Err(StorageError::Corrupt(format!(
                    "realm #{no}: seq {seq} points at missing log position {pos}"
                )));
            };
            let entry = codec::decode_entry(v.value())?;
            if entry.realm_no != no || entry.event.seq != expected || seq != expected {
                return Err(StorageError::Corrupt(format!(
                    "realm #{no}: expected seq {expected}, found realm #{} seq {} at position {pos}",
                    entry.realm_no, entry.event.seq
                )));
            }
            out.push(entry.event);
            expected += 1;
        }
        if after_seq < last_seq && expected != last_seq + 1 {
            return Err(StorageError::Corrupt(format!(
                "realm #{no}: log ends at seq {} but the realm's last seq is {last_seq}",
                expected - 1,
            )));
        }
        Ok(out)
    }
}
