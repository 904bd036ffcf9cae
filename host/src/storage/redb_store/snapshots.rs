//! Snapshots: writing them inside a group commit and reading them back.

use redb::ReadTransaction;

use super::SNAPSHOTS;
use crate::storage::codec::{self, RealmRow};
use crate::storage::{Snapshot, StorageError};

pub(super) fn snapshot_of(
    txn: &ReadTransaction,
    row: &RealmRow,
) -> Result<Option<Snapshot>, StorageError> {
    if row.last_snapshot_seq == 0 {
        return Ok(None);
    }
    let table = txn.open_table(SNAPSHOTS)?;
    let Some(bytes) = table.get(row.no)? else {
        return Err(StorageError::Corrupt(format!(
            "realm #{}: snapshot missing",
            row.no
        )));
    };
    let snap = codec::decode_snapshot(bytes.value())?;
    if snap.seq != row.last_snapshot_seq {
        return Err(StorageError::Corrupt(format!(
            "realm #{}: snapshot seq {} but metadata says {}",
            row.no, snap.seq, row.last_snapshot_seq
        )));
    }
    Ok(Some(snap))
}
