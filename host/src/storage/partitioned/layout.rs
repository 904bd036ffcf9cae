//! The data directory's storage layout: how many partitions (redb files) the
//! durable log is split into, where each lives, and which one holds a realm.
//!
//! The count is fixed when the directory is created and recorded in a small
//! manifest, [`LAYOUT_FILE_NAME`], because moving a realm between files would
//! mean rewriting its log: a node configured with another count keeps the
//! recorded one (and says so). A directory without a manifest but with a
//! database holding realms is the single-file layout of earlier releases,
//! i.e. one partition; it is never converted.
//!
//! Creation order makes a crash at any point harmless: every partition file
//! is created first (each atomically, see `RedbStorage::open_with`), the
//! manifest last (written to a temporary name, synced, renamed, the
//! directory synced). A directory without a manifest whose partition 0 holds
//! no realm is therefore still "being created" and is finished on the next
//! open, with the count configured then. Once the manifest exists, a missing
//! partition file is damage, reported as such, never silently recreated
//! empty.
//!
//! Placement is `xxh3_64(realm id bytes) % partitions`: a hash whose output
//! is fixed by its specification (not by a crate version), so a realm stays
//! in its file across releases. It is independent of the shard count, which
//! may still change between restarts.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::super::{DB_FILE_NAME, StorageError};

/// The manifest's file name inside the data directory.
pub const LAYOUT_FILE_NAME: &str = "storage-layout.toml";

/// Most partitions a data directory may have.
pub const MAX_PARTITIONS: usize = 64;

/// The only placement hash this release knows (recorded in the manifest so a
/// later release can tell).
const HASH_NAME: &str = "xxh3-64";

/// What the manifest records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Layout {
    /// Layout format; 1 today.
    pub format: u32,
    /// Number of partitions (redb files), at least 1.
    pub partitions: usize,
    /// The placement hash ([`HASH_NAME`]).
    pub hash: String,
}

impl Layout {
    pub(super) fn new(partitions: usize) -> Self {
        Self {
            format: 1,
            partitions,
            hash: HASH_NAME.to_owned(),
        }
    }

    /// Read the manifest of `dir`, `None` if there is none.
    pub(super) fn read(dir: &Path) -> Result<Option<Self>, StorageError> {
        let path = dir.join(LAYOUT_FILE_NAME);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(StorageError::Layout {
                    path: path.display().to_string(),
                    reason: format!("cannot be read: {e}"),
                });
            }
        };
        let bad = |reason: String| StorageError::Layout {
            path: path.display().to_string(),
            reason,
        };
        let layout: Layout = toml::from_str(&text).map_err(|e| bad(e.message().to_owned()))?;
        if layout.format != 1 {
            return Err(bad(format!(
                "layout format {} is not supported (this release reads 1)",
                layout.format
            )));
        }
        if layout.hash != HASH_NAME {
            return Err(bad(format!(
                "placement hash {:?} is not supported (this release uses {HASH_NAME:?})",
                layout.hash
            )));
        }
        if layout.partitions == 0 || layout.partitions > MAX_PARTITIONS {
            return Err(bad(format!(
                "{} partitions is out of range (1 to {MAX_PARTITIONS})",
                layout.partitions
            )));
        }
        Ok(Some(layout))
    }

    /// Write the manifest of `dir` atomically: temporary file, sync, rename,
    /// sync the directory.
    pub(super) fn write(&self, dir: &Path) -> Result<(), StorageError> {
        let path = dir.join(LAYOUT_FILE_NAME);
        let tmp = dir.join(format!("{LAYOUT_FILE_NAME}.tmp"));
        let text = format!(
            "# realmhost storage layout: fixed when this directory was created.\n\
             # Realms are placed by {HASH_NAME}(realm id) % partitions; do not edit.\n{}",
            toml::to_string(self).map_err(|e| StorageError::Layout {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?
        );
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(dir)?.sync_all()?;
        Ok(())
    }
}

/// The directory holding partition `i`'s database file: the data directory
/// itself for partition 0 (the single-file layout's place), `partition-<i>`
/// under it for the others.
pub fn partition_dir(dir: &Path, i: usize) -> PathBuf {
    if i == 0 {
        dir.to_path_buf()
    } else {
        dir.join(format!("partition-{i}"))
    }
}

/// Partition `i`'s database file.
pub(super) fn partition_file(dir: &Path, i: usize) -> PathBuf {
    partition_dir(dir, i).join(DB_FILE_NAME)
}

/// The partition holding `realm_id` among `partitions`.
#[inline]
pub fn partition_of(realm_id: &str, partitions: usize) -> usize {
    if partitions <= 1 {
        return 0;
    }
    (xxhash_rust::xxh3::xxh3_64(realm_id.as_bytes()) % partitions as u64) as usize
}

/// The count for a new directory when the configuration says "auto" (0):
/// half the cores, at least 1. Each partition has its own committer thread,
/// and measured on 2 cores more files cost more total CPU than their
/// parallelism saves (a commit has a fixed cost), so small machines keep
/// one.
pub(super) fn auto_partitions() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cores / 2).clamp(1, 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Placement must never change between releases: these values are
    /// xxh3-64 of the ids, as every implementation of it computes them.
    #[test]
    fn placement_is_pinned() {
        assert_eq!(xxhash_rust::xxh3::xxh3_64(b""), 0x2d06_8005_38d3_94c2);
        let pinned: Vec<usize> = (0..8)
            .map(|i| partition_of(&format!("realm-{i}"), 8))
            .collect();
        let again: Vec<usize> = (0..8)
            .map(|i| (xxhash_rust::xxh3::xxh3_64(format!("realm-{i}").as_bytes()) % 8) as usize)
            .collect();
        assert_eq!(pinned, again);
        assert_eq!(partition_of("anything", 1), 0);
        assert_eq!(partition_of("anything", 0), 0);
    }

    #[test]
    fn placement_spreads_realms() {
        let n = 8;
        let mut counts = vec![0usize; n];
        for i in 0..80_000 {
            counts[partition_of(&format!("tenant-{i}/ledger"), n)] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "uneven placement: {c}");
        }
    }

    #[test]
    fn manifest_round_trips_and_rejects_damage() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Layout::read(dir.path()).unwrap(), None);
        Layout::new(4).write(dir.path()).unwrap();
        assert_eq!(Layout::read(dir.path()).unwrap(), Some(Layout::new(4)));
        for bad in [
            "format = 1\npartitions = 0\nhash = \"xxh3-64\"\n",
            "format = 1\npartitions = 65\nhash = \"xxh3-64\"\n",
            "format = 2\npartitions = 2\nhash = \"xxh3-64\"\n",
            "format = 1\npartitions = 2\nhash = \"fx\"\n",
            "format = 1\npartitions = 2\n",
            "garbage",
        ] {
            std::fs::write(dir.path().join(LAYOUT_FILE_NAME), bad).unwrap();
            let e = Layout::read(dir.path()).unwrap_err();
            assert!(
                matches!(&e, StorageError::Layout { path, .. } if path.ends_with(LAYOUT_FILE_NAME)),
                "{bad:?}: {e}"
            );
        }
    }
}
