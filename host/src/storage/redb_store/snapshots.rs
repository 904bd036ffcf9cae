//! Snapshots: checking a write on the caller's thread, applying it inside a
//! group commit, and reading a map back.
//!
//! A snapshot is a header in `snapshots` (seq, plugin and state version,
//! entry count, key plus value bytes) and, for a map larger than
//! `StorageConfig::inline_snapshot_bytes` (4 KiB by default), one row per
//! entry in `snapshot_entries`; a smaller map is packed into the header
//! itself. Every write re-decides the
//! layout from the map's new size, so a realm never has both.

use std::collections::BTreeMap;
use std::ops::Bound;

use redb::{ReadTransaction, ReadableTable};

use super::committer::BatchState;
use super::writer::{Step, Writer};
use super::{SNAPSHOT_ENTRIES, SNAPSHOTS};
use crate::realm::RealmId;
use crate::runtime::PluginVersion;
use crate::state::Bytes;
use crate::storage::codec::{self, RealmRow, SnapshotHead};
use crate::storage::{Snapshot, SnapshotBody, SnapshotWrite, StorageError};

/// Largest key plus value of one entry: what redb stores as one value.
const MAX_ENTRY_BYTES: usize = 3 << 30;

/// The smallest `snapshot_entries` key part: rows of a realm start at
/// `(realm_no, EMPTY)`.
const EMPTY: &[u8] = &[];

/// A snapshot write, checked and normalized on the caller's thread.
pub(super) struct PreparedSnapshot {
    seq: u64,
    plugin_version: PluginVersion,
    state_version: u32,
    body: Prepared,
}

enum Prepared {
    /// Strictly ascending entries and their key plus value bytes.
    Full {
        entries: Vec<(Bytes, Bytes)>,
        bytes: u64,
    },
    /// Strictly ascending keys, one change each (the last one given).
    Delta {
        base_seq: u64,
        changes: Vec<(Bytes, Option<Bytes>)>,
    },
}

/// Check what needs no stored state: a full map's keys are strictly
/// ascending, no entry exceeds what redb can store. A delta's changes are
/// sorted by key with the last change of a key winning, so the committer
/// walks the B-tree in order.
pub(super) fn prepare_snapshot(
    realm: &RealmId,
    w: SnapshotWrite,
) -> Result<PreparedSnapshot, StorageError> {
    let too_large = |index: usize| {
        StorageError::InvalidRequest(format!(
            "snapshot of {realm}: entry {index} is larger than {MAX_ENTRY_BYTES} bytes"
        ))
    };
    let body = match w.body {
        SnapshotBody::Full(entries) => {
            let mut bytes = 0u64;
            for (i, (k, v)) in entries.iter().enumerate() {
                if i > 0 && entries[i - 1].0 >= *k {
                    return Err(StorageError::UnsortedSnapshot {
                        realm: realm.clone(),
                        index: i,
                    });
                }
                let len = k.len() + v.len();
                if len > MAX_ENTRY_BYTES {
                    return Err(too_large(i));
                }
                bytes += len as u64;
            }
            Prepared::Full { entries, bytes }
        }
        SnapshotBody::Delta { base_seq, changes } => {
            for (i, (k, v)) in changes.iter().enumerate() {
                if k.len() + v.as_ref().map_or(0, |v| v.len()) > MAX_ENTRY_BYTES {
                    return Err(too_large(i));
                }
            }
            let sorted = changes.windows(2).all(|w| w[0].0 < w[1].0);
            let changes = if sorted {
                changes
            } else {
                changes
                    .into_iter()
                    .collect::<BTreeMap<_, _>>()
                    .into_iter()
                    .collect()
            };
            Prepared::Delta { base_seq, changes }
        }
    };
    Ok(PreparedSnapshot {
        seq: w.seq,
        plugin_version: w.plugin_version,
        state_version: w.state_version,
        body,
    })
}

/// The `snapshot_entries` key range holding realm `no`'s rows.
type RowRange = (Bound<(u64, &'static [u8])>, Bound<(u64, &'static [u8])>);

fn rows_of(no: u64) -> RowRange {
    let end = match no.checked_add(1) {
        Some(next) => Bound::Excluded((next, EMPTY)),
        None => Bound::Unbounded,
    };
    (Bound::Included((no, EMPTY)), end)
}

/// Every row of realm `no`, in key order, with their count and bytes.
fn read_rows(
    table: &impl ReadableTable<(u64, &'static [u8]), &'static [u8]>,
    no: u64,
    expected: u64,
) -> Result<(Vec<(Bytes, Bytes)>, u64), StorageError> {
    // The expected count comes from disk: cap what it may preallocate.
    let mut out = Vec::with_capacity(usize::try_from(expected.min(1 << 16)).unwrap_or(0));
    let mut bytes = 0u64;
    for item in table.range(rows_of(no))? {
        let (k, v) = item?;
        let (_, key) = k.value();
        let value = v.value();
        bytes += (key.len() + value.len()) as u64;
        out.push((Bytes::from(key), Bytes::from(value)));
    }
    Ok((out, bytes))
}

/// How many rows realm `no` has in `snapshot_entries`.
#[cfg(test)]
pub(super) fn count_rows(txn: &ReadTransaction, no: u64) -> Result<usize, StorageError> {
    let table = txn.open_table(SNAPSHOT_ENTRIES)?;
    let mut n = 0;
    for item in table.range(rows_of(no))? {
        item?;
        n += 1;
    }
    Ok(n)
}

/// Name the realm in a decoding error.
fn in_realm(realm: &RealmId, e: StorageError) -> StorageError {
    match e {
        StorageError::Corrupt(m) => StorageError::Corrupt(format!("realm {realm}: {m}")),
        other => other,
    }
}

fn corrupt(realm: &RealmId, what: impl std::fmt::Display) -> StorageError {
    StorageError::Corrupt(format!("realm {realm}: snapshot {what}"))
}

/// Decode a header and check it has the seq the realm's row names.
fn decode_header(
    realm: &RealmId,
    seq: u64,
    bytes: Option<&[u8]>,
) -> Result<codec::DecodedSnapshot, StorageError> {
    let Some(bytes) = bytes else {
        return Err(corrupt(realm, format_args!("at seq {seq} is missing")));
    };
    let decoded = codec::decode_snapshot(bytes).map_err(|e| in_realm(realm, e))?;
    if decoded.0.seq != seq {
        return Err(corrupt(
            realm,
            format_args!(
                "header has seq {} but the realm's row says {seq}",
                decoded.0.seq
            ),
        ));
    }
    Ok(decoded)
}

/// The realm's snapshot as of `txn`, checked: the header matches the realm's
/// row, and the rows (or inline entries) match the header's count and bytes.
pub(super) fn snapshot_of(
    txn: &ReadTransaction,
    realm: &RealmId,
    row: &RealmRow,
) -> Result<Option<Snapshot>, StorageError> {
    if row.last_snapshot_seq == 0 {
        return Ok(None);
    }
    let table = txn.open_table(SNAPSHOTS)?;
    let header = table.get(row.no)?;
    let (head, inline) = decode_header(
        realm,
        row.last_snapshot_seq,
        header.as_ref().map(|v| v.value()),
    )?;
    let entries = match inline {
        Some(entries) => entries,
        None => {
            let rows = txn.open_table(SNAPSHOT_ENTRIES)?;
            let (entries, bytes) = read_rows(&rows, row.no, head.count)?;
            if entries.len() as u64 != head.count || bytes != head.bytes {
                return Err(corrupt(
                    realm,
                    format_args!(
                        "has {} rows of {bytes} bytes, its header says {} of {}",
                        entries.len(),
                        head.count,
                        head.bytes
                    ),
                ));
            }
            entries
        }
    };
    Ok(Some(Snapshot {
        seq: head.seq,
        plugin_version: head.plugin_version,
        state_version: head.state_version,
        entries,
    }))
}

/// Apply sorted `changes` to an in-memory map.
fn apply(map: &mut BTreeMap<Bytes, Bytes>, changes: Vec<(Bytes, Option<Bytes>)>) {
    for (k, change) in changes {
        match change {
            Some(v) => {
                map.insert(k, v);
            }
            None => {
                map.remove(&k);
            }
        }
    }
}

fn map_bytes(map: &BTreeMap<Bytes, Bytes>) -> u64 {
    map.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum()
}

impl Writer<'_, '_> {
    /// Store a snapshot of `realm`. Everything that can refuse it (stored
    /// state, base seq, a damaged header or rows that disagree with it) is
    /// checked before the first write, so a refused snapshot leaves the
    /// transaction as it found it.
    pub(super) fn snapshot(
        &mut self,
        realm: &RealmId,
        snap: PreparedSnapshot,
        batch: &BatchState,
    ) -> Step<()> {
        let Some(mut row) = self.row(realm)? else {
            return Ok(Err(StorageError::UnknownRealm(realm.clone())));
        };
        let last_seq = self.last_seq(row.no, batch)?;
        if snap.seq > last_seq {
            return Ok(Err(StorageError::SnapshotAhead {
                realm: realm.clone(),
                seq: snap.seq,
                last_seq,
            }));
        }
        if snap.seq == 0 {
            return Ok(Err(StorageError::InvalidRequest(format!(
                "snapshot of {realm} at seq 0"
            ))));
        }
        if snap.seq < row.last_snapshot_seq {
            return Ok(Err(StorageError::StaleSnapshot {
                realm: realm.clone(),
                seq: snap.seq,
                stored_seq: row.last_snapshot_seq,
            }));
        }
        if let Prepared::Delta { base_seq, .. } = snap.body
            && base_seq != row.last_snapshot_seq
        {
            return Ok(Err(StorageError::SnapshotBaseMismatch {
                realm: realm.clone(),
                base_seq,
                stored_seq: row.last_snapshot_seq,
            }));
        }
        let no = row.no;
        let row_bytes = if row.last_snapshot_seq == snap.seq {
            None
        } else {
            row.last_snapshot_seq = snap.seq;
            match codec::encode_realm(&row) {
                Ok(b) => Some(b),
                Err(e) => return Ok(Err(e)),
            }
        };
        let head = SnapshotHead {
            seq: snap.seq,
            plugin_version: snap.plugin_version,
            state_version: snap.state_version,
            count: 0,
            bytes: 0,
        };
        let header = match snap.body {
            Prepared::Full { entries, bytes } => {
                self.write_map(no, head, entries.iter().map(|(k, v)| (&**k, &**v)), bytes)?
            }
            Prepared::Delta { base_seq, changes } => {
                let stored = if base_seq == 0 {
                    None
                } else {
                    let header = self.snapshots.get(no)?;
                    match decode_header(realm, base_seq, header.as_ref().map(|v| v.value())) {
                        Ok(decoded) => Some(decoded),
                        Err(e) => return Ok(Err(e)),
                    }
                };
                match stored {
                    None => self.delta_in_memory(no, head, BTreeMap::new(), changes)?,
                    Some((_, Some(inline))) => {
                        self.delta_in_memory(no, head, inline.into_iter().collect(), changes)?
                    }
                    Some((stored, None)) => {
                        match self.delta_on_rows(realm, no, stored, head, changes)? {
                            Ok(header) => header,
                            Err(e) => return Ok(Err(e)),
                        }
                    }
                }
            }
        };
        self.snapshots.insert(no, header.as_slice())?;
        if let Some(row_bytes) = row_bytes {
            self.realms.insert(realm.as_str(), row_bytes.as_slice())?;
        }
        Ok(Ok(()))
    }

    /// Replace realm `no`'s map with `pairs` (strictly ascending keys,
    /// `bytes` of keys and values): its rows are range-deleted (a cheap probe
    /// when it has none), then the map goes inline if small enough, else in
    /// as rows. Returns the header to write.
    fn write_map<'e>(
        &mut self,
        no: u64,
        head: SnapshotHead,
        pairs: impl IntoIterator<Item = (&'e [u8], &'e [u8])>,
        bytes: u64,
    ) -> Result<Vec<u8>, StorageError> {
        self.snapshot_entries.retain_in(rows_of(no), |_, _| false)?;
        if bytes <= self.inline_snapshot_bytes {
            return Ok(codec::encode_snapshot_inline(&head, pairs));
        }
        // The realm's range is empty now and the keys ascend: insert them
        // through one cursor, which fills leaves in order instead of
        // searching the tree for every entry.
        let mut count = 0u64;
        let mut cursor = self
            .snapshot_entries
            .lower_bound_mut(Bound::Included((no, EMPTY)))?;
        for (k, v) in pairs {
            cursor
                .insert_before((no, k), v)
                .map_err(|e| StorageError::from(redb::Error::from(e)))?;
            count += 1;
        }
        cursor.close()?;
        Ok(codec::encode_snapshot_rows(&SnapshotHead {
            count,
            bytes,
            ..head
        }))
    }

    /// A delta onto a map held in memory (none stored, or inline): apply it
    /// there and store the result in whichever layout its size calls for.
    fn delta_in_memory(
        &mut self,
        no: u64,
        head: SnapshotHead,
        mut map: BTreeMap<Bytes, Bytes>,
        changes: Vec<(Bytes, Option<Bytes>)>,
    ) -> Result<Vec<u8>, StorageError> {
        apply(&mut map, changes);
        let bytes = map_bytes(&map);
        self.write_map(no, head, map.iter().map(|(k, v)| (&**k, &**v)), bytes)
    }

    /// A delta onto a map stored as rows. Costs O(changes · log n) while the
    /// map stays large; when it shrinks to the inline size the remaining rows
    /// (at most a few KiB, plus what the delta deletes) move into the header.
    ///
    /// The new count and bytes are computed from the rows the changes touch
    /// before anything is written; rows that contradict the header refuse
    /// the snapshot as corrupt instead of writing a header that lies.
    fn delta_on_rows(
        &mut self,
        realm: &RealmId,
        no: u64,
        stored: SnapshotHead,
        head: SnapshotHead,
        changes: Vec<(Bytes, Option<Bytes>)>,
    ) -> Step<Vec<u8>> {
        let (mut count, mut bytes) = (i128::from(stored.count), i128::from(stored.bytes));
        for (k, change) in &changes {
            let old = self.snapshot_entries.get((no, &**k))?;
            let old = old.map(|v| (k.len() + v.value().len()) as i128);
            let new = change.as_ref().map(|v| (k.len() + v.len()) as i128);
            count += i128::from(new.is_some()) - i128::from(old.is_some());
            bytes += new.unwrap_or(0) - old.unwrap_or(0);
        }
        let (Ok(count), Ok(bytes)) = (u64::try_from(count), u64::try_from(bytes)) else {
            return Ok(Err(corrupt(
                realm,
                format_args!(
                    "header ({} entries of {} bytes) disagrees with its rows",
                    stored.count, stored.bytes
                ),
            )));
        };
        if bytes <= self.inline_snapshot_bytes {
            let (rows, row_bytes) = read_rows(&self.snapshot_entries, no, stored.count)?;
            if rows.len() as u64 != stored.count || row_bytes != stored.bytes {
                return Ok(Err(corrupt(
                    realm,
                    format_args!(
                        "has {} rows of {row_bytes} bytes, its header says {} of {}",
                        rows.len(),
                        stored.count,
                        stored.bytes
                    ),
                )));
            }
            self.snapshot_entries.retain_in(rows_of(no), |_, _| false)?;
            let mut map: BTreeMap<Bytes, Bytes> = rows.into_iter().collect();
            apply(&mut map, changes);
            return Ok(Ok(codec::encode_snapshot_inline(
                &head,
                map.iter().map(|(k, v)| (&**k, &**v)),
            )));
        }
        for (k, change) in changes {
            match change {
                Some(v) => {
                    self.snapshot_entries.insert((no, &*k), &*v)?;
                }
                None => {
                    self.snapshot_entries.remove((no, &*k))?;
                }
            }
        }
        Ok(Ok(codec::encode_snapshot_rows(&SnapshotHead {
            count,
            bytes,
            ..head
        })))
    }
}
