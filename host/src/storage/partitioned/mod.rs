//! [`PartitionedStorage`]: the durable log split over several redb files,
//! each with its own committer, so that write throughput grows with cores.
//!
//! Every write of one [`RedbStorage`] ends on its committer thread: however
//! many cores the machine has, one file takes at most `1 s / (committer CPU
//! per event)` events per second (`docs/BENCHMARKS.md`, "Serial work per
//! event"). Splitting the log by realm removes that ceiling: each partition
//! commits, fsyncs and acknowledges on its own threads, and a realm's whole
//! record (log, index, snapshot, metadata, idempotency keys) lives in exactly
//! one partition, so every per-realm guarantee of [`Storage`] holds
//! unchanged. Records of other modules (`put_meta`) live in partition 0.
//!
//! What is *not* ordered across partitions: two writes to realms in
//! different partitions (or a realm write and a `put_meta`) may become
//! durable in either order, even when issued in order from one task. Nothing
//! in the node relies on such an order; per realm and per partition the
//! enqueue order is the commit order as before.
//!
//! The number of partitions is fixed when the data directory is created and
//! recorded in its manifest (see [`layout`]); placement is a fixed hash of
//! the realm id, independent of the shard count.

pub mod layout;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use futures::future::BoxFuture;

use self::layout::{Layout, partition_dir, partition_file, partition_of};
use super::redb_store::check::{self, CheckReport};
use super::{
    AppendAck, AppendExtras, AppendRequest, CommitterStats, DeadLetter, IdempotencyHit,
    IdempotencyRecord, InboxCursor, OutboxChange, OutboxKey, PendingMessage, RealmLoad, RealmMeta,
    RealmPage, RedbStorage, Snapshot, SnapshotWrite, Storage, StorageConfig, StorageError,
    StorageHealth,
};
use crate::realm::{EventRecord, RealmId};

/// The embedded default [`Storage`]: one [`RedbStorage`] per partition.
///
/// With one partition (the default on machines with fewer than 4 cores, and
/// any directory created by a release without partitions) it is exactly the
/// single-file layout.
#[derive(Debug)]
pub struct PartitionedStorage {
    dir: PathBuf,
    parts: Vec<RedbStorage>,
}

impl PartitionedStorage {
    /// Open (or create) the data directory `dir` with default tuning.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, StorageError> {
        Self::open_with(dir, StorageConfig::default())
    }

    /// Open (or create) the data directory `dir`.
    ///
    /// A new directory gets `config.partitions` partitions (0: half the
    /// cores, at least one); an existing one keeps the count recorded when
    /// it was created, and a differently configured count is logged and
    /// ignored. `cache_bytes` and `realm_cache` are totals, shared out
    /// evenly. Partitions are opened (and recovered) in parallel. Errors are
    /// those of [`RedbStorage::open_with`] for any partition, and
    /// [`StorageError::Layout`] for a damaged manifest or a missing
    /// partition file.
    #[tracing::instrument(name = "storage.open_partitioned", skip_all, fields(dir = %dir.as_ref().display()))]
    pub fn open_with(dir: impl AsRef<Path>, config: StorageConfig) -> Result<Self, StorageError> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir)?;
        let configured = match config.partitions {
            0 => layout::auto_partitions(),
            n => n,
        };
        let (n, first) = match Layout::read(dir)? {
            Some(recorded) => {
                if config.partitions != 0 && config.partitions != recorded.partitions {
                    tracing::warn!(
                        configured = config.partitions,
                        recorded = recorded.partitions,
                        dir = %dir.display(),
                        "storage.partitions differs from the count this data directory was created with; keeping the recorded count"
                    );
                }
                for i in 0..recorded.partitions {
                    let file = partition_file(dir, i);
                    if !file.exists() {
                        return Err(StorageError::Layout {
                            path: file.display().to_string(),
                            reason: format!(
                                "partition {i} of {} is missing; restore it from a backup (an empty file would lose its realms)",
                                recorded.partitions
                            ),
                        });
                    }
                }
                (recorded.partitions, None)
            }
            None if partition_file(dir, 0).exists() => {
                // Either a single-file directory of an earlier release, or
                // a creation that stopped before its manifest.
                let p0 = RedbStorage::open_with(dir, config.clone())?;
                if !p0.realm_types()?.is_empty() || configured == 1 {
                    Layout::new(1).write(dir)?;
                    return Ok(Self {
                        dir: dir.to_path_buf(),
                        parts: vec![p0],
                    });
                }
                drop(p0);
                (configured, Some(()))
            }
            None => (configured, Some(())),
        };
        let share = config_share(&config, n);
        let parts = open_parts(dir, n, &share)?;
        if first.is_some() {
            Layout::new(n).write(dir)?;
            tracing::info!(partitions = n, dir = %dir.display(), "created the storage layout");
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            parts,
        })
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// How many partitions the log is split into.
    pub fn partitions(&self) -> usize {
        self.parts.len()
    }

    /// Partition `i` (tests, benches and diagnostics).
    ///
    /// # Panics
    /// If `i` is not below [`Self::partitions`].
    pub fn partition(&self, i: usize) -> &RedbStorage {
        &self.parts[i]
    }

    /// The partition holding `realm`.
    pub fn partition_of(&self, realm: &RealmId) -> usize {
        partition_of(realm.as_str(), self.parts.len())
    }

    fn part(&self, realm: &RealmId) -> &RedbStorage {
        &self.parts[self.partition_of(realm)]
    }

    /// Each partition's committer totals, in partition order. The serial
    /// work per event is the busiest committer's CPU over all events.
    pub fn committer_stats(&self) -> Vec<CommitterStats> {
        self.parts
            .iter()
            .map(RedbStorage::committer_stats)
            .collect()
    }

    /// Unindexed events opening had to rebuild, over all partitions.
    pub fn recovered_events(&self) -> usize {
        self.parts.iter().map(RedbStorage::recovered_events).sum()
    }

    /// Whether opening any partition needed redb's full repair.
    pub fn opened_with_repair(&self) -> bool {
        self.parts.iter().any(RedbStorage::opened_with_repair)
    }

    /// Close every partition as a crash would leave it (see
    /// [`RedbStorage::close_without_checkpoint`]).
    #[doc(hidden)]
    pub fn close_without_checkpoint(self) {
        for p in self.parts {
            p.close_without_checkpoint();
        }
    }

    /// The worst partition's health: not writable if any is not, with the
    /// failure counts summed.
    pub fn health(&self) -> StorageHealth {
        let mut all = self.parts.iter().map(RedbStorage::health);
        let mut worst = all.next().unwrap_or_default();
        for h in all {
            let (failed, reopens) = (
                worst.failed_commits + h.failed_commits,
                worst.reopens + h.reopens,
            );
            if worst.writable && !h.writable {
                worst = h;
            } else if worst.last_error.is_none() {
                worst.last_error = h.last_error;
            }
            worst.failed_commits = failed;
            worst.reopens = reopens;
        }
        worst
    }

    /// Scrub every partition (see [`check`]), also reporting realms stored
    /// in a partition their id does not hash to. Blocking and long.
    pub fn scrub(&self) -> Result<CheckReport, StorageError> {
        let n = self.parts.len();
        let mut report = CheckReport::default();
        for (i, p) in self.parts.iter().enumerate() {
            let r = p.scrub_placed(Some((i, n)))?;
            report.merge_partition(i, n, r);
        }
        report.integrity = "skipped".into();
        Ok(report)
    }

    /// Realms of one type in id order after `after`: each partition's page,
    /// merged.
    pub fn list_realms(
        &self,
        realm_type: &str,
        after: Option<&RealmId>,
        limit: usize,
    ) -> Result<RealmPage, StorageError> {
        self.merged_page(
            limit,
            |p| p.list_realms(realm_type, after, limit),
            |r| r.as_str().to_owned(),
        )
    }

    /// Messages still in outboxes after `after`, in key order: each
    /// partition's page, merged (a sender's messages are all in its
    /// partition).
    pub fn pending_messages(
        &self,
        after: Option<&OutboxKey>,
        limit: usize,
    ) -> Result<Vec<PendingMessage>, StorageError> {
        self.merged_page(
            limit,
            |p| p.pending_messages(after, limit),
            PendingMessage::key,
        )
    }

    /// One page of a listing kept in key order in every partition: each
    /// partition's first `limit` items, merged by `key`, the first `limit`
    /// of those. One partition's page is returned as it is.
    fn merged_page<T, K: Ord>(
        &self,
        limit: usize,
        page: impl Fn(&RedbStorage) -> Result<Vec<T>, StorageError>,
        key: impl Fn(&T) -> K,
    ) -> Result<Vec<T>, StorageError> {
        if let [only] = self.parts.as_slice() {
            return page(only);
        }
        let mut all = Vec::new();
        for p in &self.parts {
            all.extend(page(p)?);
        }
        all.sort_by_cached_key(|t| key(t));
        all.truncate(limit);
        Ok(all)
    }

    /// Every realm type stored in any partition, in order.
    pub fn realm_types(&self) -> Result<Vec<String>, StorageError> {
        let mut types = BTreeSet::new();
        for p in &self.parts {
            types.extend(p.realm_types()?);
        }
        Ok(types.into_iter().collect())
    }
}

/// Partition `i`'s share of the tuning: the memory budgets are totals.
fn config_share(config: &StorageConfig, n: usize) -> StorageConfig {
    StorageConfig {
        cache_bytes: (config.cache_bytes / n).max(1 << 20),
        realm_cache: config.realm_cache.div_ceil(n),
        ..config.clone()
    }
}

/// Open (creating where missing) partitions `0..n`, in parallel: each may
/// have a log tail to rebuild after a crash.
fn open_parts(
    dir: &Path,
    n: usize,
    config: &StorageConfig,
) -> Result<Vec<RedbStorage>, StorageError> {
    let opened: Vec<Result<RedbStorage, StorageError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let pdir = partition_dir(dir, i);
                let config = config.clone();
                s.spawn(move || RedbStorage::open_with(pdir, config))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(StorageError::Backend("opening a partition panicked".into()))
                })
            })
            .collect()
    });
    opened.into_iter().collect()
}

/// Scrub a stopped node's data directory: every partition's file (redb's
/// page checks, then every table), and each realm's placement. A directory
/// without a manifest is one partition.
pub fn check_dir(dir: &Path) -> Result<CheckReport, StorageError> {
    let n = Layout::read(dir)?.map_or(1, |l| l.partitions);
    if n == 1 {
        return check::check_file(dir, None);
    }
    let mut report = CheckReport::default();
    let mut integrity = Vec::new();
    for i in 0..n {
        let r = check::check_file(&partition_dir(dir, i), Some((i, n)))?;
        integrity.push(r.integrity.clone());
        report.merge_partition(i, n, r);
    }
    report.integrity = if integrity.iter().all(|s| s == "ok") {
        "ok".into()
    } else {
        integrity
            .iter()
            .enumerate()
            .map(|(i, s)| format!("partition {i}: {s}"))
            .collect::<Vec<_>>()
            .join("; ")
    };
    Ok(report)
}

impl Storage for PartitionedStorage {
    fn append(&self, req: AppendRequest) -> BoxFuture<'_, Result<AppendAck, StorageError>> {
        Box::pin(self.part(&req.realm_id).append(req))
    }

    fn append_idempotent(
        &self,
        req: AppendRequest,
        key: IdempotencyRecord,
    ) -> BoxFuture<'_, Result<AppendAck, StorageError>> {
        Box::pin(self.part(&req.realm_id).append_idempotent(req, key))
    }

    fn append_with(
        &self,
        req: AppendRequest,
        extras: AppendExtras,
    ) -> BoxFuture<'_, Result<AppendAck, StorageError>> {
        Box::pin(self.part(&req.realm_id).append_with(req, extras))
    }

    fn change_outbox(
        &self,
        sender: &RealmId,
        seq: u64,
        index: u32,
        change: OutboxChange,
    ) -> BoxFuture<'_, Result<(), StorageError>> {
        Box::pin(self.part(sender).change_outbox(sender, seq, index, change))
    }

    fn dead_letters(
        &self,
        after: Option<&OutboxKey>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<DeadLetter>, StorageError>> {
        Box::pin(std::future::ready(self.merged_page(
            limit,
            |p| p.dead_letters(after, limit),
            DeadLetter::key,
        )))
    }

    fn pending_messages(
        &self,
        after: Option<&OutboxKey>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<PendingMessage>, StorageError>> {
        Box::pin(std::future::ready(PartitionedStorage::pending_messages(
            self, after, limit,
        )))
    }

    fn inbox_cursor(
        &self,
        target: &RealmId,
        sender: &RealmId,
    ) -> BoxFuture<'_, Result<Option<InboxCursor>, StorageError>> {
        Box::pin(std::future::ready(
            self.part(target).inbox_cursor(target, sender),
        ))
    }

    fn idempotency_lookup(
        &self,
        realm: &RealmId,
        key: &str,
        now_ms: u64,
    ) -> BoxFuture<'_, Result<Option<IdempotencyHit>, StorageError>> {
        Box::pin(std::future::ready(
            self.part(realm).idempotency_lookup(realm, key, now_ms),
        ))
    }

    fn put_snapshot(
        &self,
        realm: &RealmId,
        snapshot: SnapshotWrite,
    ) -> BoxFuture<'_, Result<(), StorageError>> {
        Box::pin(self.part(realm).put_snapshot(realm, snapshot))
    }

    fn load_snapshot(
        &self,
        realm: &RealmId,
    ) -> BoxFuture<'_, Result<Option<Snapshot>, StorageError>> {
        Box::pin(std::future::ready(self.part(realm).load_snapshot(realm)))
    }

    fn events_since(
        &self,
        realm: &RealmId,
        after_seq: u64,
    ) -> BoxFuture<'_, Result<Vec<EventRecord>, StorageError>> {
        Box::pin(std::future::ready(
            self.part(realm).events_since(realm, after_seq),
        ))
    }

    fn events_page(
        &self,
        realm: &RealmId,
        after_seq: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<EventRecord>, StorageError>> {
        Box::pin(std::future::ready(
            self.part(realm).events_page(realm, after_seq, limit),
        ))
    }

    fn realm_meta(
        &self,
        realm: &RealmId,
    ) -> BoxFuture<'_, Result<Option<RealmMeta>, StorageError>> {
        Box::pin(std::future::ready(self.part(realm).realm_meta(realm)))
    }

    fn load_realm(
        &self,
        realm: &RealmId,
    ) -> BoxFuture<'_, Result<Option<RealmLoad>, StorageError>> {
        Box::pin(std::future::ready(self.part(realm).load_realm(realm)))
    }

    fn list_realms(
        &self,
        realm_type: &str,
        after: Option<&RealmId>,
        limit: usize,
    ) -> BoxFuture<'_, Result<RealmPage, StorageError>> {
        Box::pin(std::future::ready(PartitionedStorage::list_realms(
            self, realm_type, after, limit,
        )))
    }

    fn realm_types(&self) -> BoxFuture<'_, Result<Vec<String>, StorageError>> {
        Box::pin(std::future::ready(PartitionedStorage::realm_types(self)))
    }

    fn put_meta(
        &self,
        key: &str,
        value: Option<Vec<u8>>,
    ) -> BoxFuture<'_, Result<(), StorageError>> {
        Box::pin(self.parts[0].put_meta(key, value))
    }

    fn get_meta(&self, key: &str) -> BoxFuture<'_, Result<Option<Vec<u8>>, StorageError>> {
        Box::pin(std::future::ready(self.parts[0].get_meta(key)))
    }

    fn health(&self) -> StorageHealth {
        PartitionedStorage::health(self)
    }

    fn scrub(&self) -> Result<CheckReport, StorageError> {
        PartitionedStorage::scrub(self)
    }
}

#[cfg(test)]
mod tests;
