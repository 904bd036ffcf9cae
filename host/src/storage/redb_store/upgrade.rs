//! The format record: which formats this build opens, and the in-place
//! upgrade from format 2.
//!
//! Format 2 stored a snapshot as one opaque blob in the plugin's own
//! encoding (contract 0.1); format 3 stores it as a keyed map. No contract
//! 0.2 plugin can read a 0.1 blob, so the upgrade drops the old snapshots
//! and resets every realm's `last_snapshot_seq`: those realms are rebuilt
//! from their logs (untouched) on their next load, and the node writes new
//! snapshots as it goes. Everything happens in one write transaction, so a
//! crash during the upgrade leaves the file in format 2 or in format 3,
//! never in between.

use std::path::Path;

use redb::{Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata};

use super::{FORMAT_VERSION, KEY_FORMAT, REALMS, SNAPSHOT_ENTRIES, SNAPSHOTS, SYS, StorageConfig};
use crate::storage::{StorageError, codec};

/// The oldest format this build upgrades in place; older ones are refused.
const OLDEST_UPGRADABLE: u64 = 2;

/// Read the format record and check this build can open the file, possibly
/// after [`upgrade`]. Read-only: a file refused here is left as it was.
pub(super) fn check_format(db: &Database, path: &Path) -> Result<u64, StorageError> {
    let txn = db.begin_read()?;
    let sys = match txn.open_table(SYS) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => {
            return Err(StorageError::NotRealmhost(path.display().to_string()));
        }
        Err(e) => return Err(e.into()),
    };
    match sys.get(KEY_FORMAT)?.map(|v| v.value()) {
        None => Err(StorageError::NotRealmhost(path.display().to_string())),
        Some(v) if v > FORMAT_VERSION => Err(StorageError::NewerFormat {
            found: v,
            supported: FORMAT_VERSION,
        }),
        Some(0) => Err(StorageError::Corrupt("format version 0".into())),
        Some(v) if v < OLDEST_UPGRADABLE => Err(StorageError::UnsupportedFormat {
            found: v,
            supported: FORMAT_VERSION,
        }),
        Some(v) => Ok(v),
    }
}

/// What an upgrade did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Upgraded {
    /// Snapshots dropped (format 2 blobs).
    pub snapshots: u64,
    /// Realms whose `last_snapshot_seq` was reset to 0.
    pub realms: u64,
}

/// Bring a file of format `from` (as returned by [`check_format`]) to
/// [`FORMAT_VERSION`] in one durable write transaction.
pub(super) fn upgrade(
    db: &Database,
    from: u64,
    config: &StorageConfig,
) -> Result<Upgraded, StorageError> {
    if from != 2 || FORMAT_VERSION != 3 {
        return Err(StorageError::UnsupportedFormat {
            found: from,
            supported: FORMAT_VERSION,
        });
    }
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    txn.set_quick_repair(config.quick_repair);
    let snapshots = txn.open_table(SNAPSHOTS)?.len()?;
    // Format 2's `snapshots` has the same key and value types as format 3's:
    // dropping and recreating it frees the blobs' pages in one step.
    txn.delete_table(SNAPSHOTS)?;
    txn.open_table(SNAPSHOTS)?;
    txn.open_table(SNAPSHOT_ENTRIES)?;
    let mut realms = 0u64;
    {
        let mut table = txn.open_table(REALMS)?;
        let mut reset = Vec::new();
        for item in table.iter()? {
            let (k, v) = item?;
            let mut row = codec::decode_realm(v.value()).map_err(|e| match e {
                StorageError::Corrupt(m) => {
                    StorageError::Corrupt(format!("realm {}: {m}", k.value()))
                }
                other => other,
            })?;
            if row.last_snapshot_seq != 0 {
                row.last_snapshot_seq = 0;
                reset.push((k.value().to_owned(), codec::encode_realm(&row)?));
            }
        }
        for (id, row) in reset {
            table.insert(id.as_str(), row.as_slice())?;
            realms += 1;
        }
        txn.open_table(SYS)?.insert(KEY_FORMAT, FORMAT_VERSION)?;
    }
    txn.commit()?;
    Ok(Upgraded { snapshots, realms })
}
