//! Surviving a failed write: the database handle the readers and the
//! committer share, and reopening it after a group commit failed.
//!
//! redb latches an I/O error: once a commit fails (a full disk, any write or
//! `fsync` error), every later transaction on that handle fails with
//! `PreviousIo` until the file is closed and opened again. So after a failed
//! commit the committer drops the handle and opens the file anew — redb then
//! recovers the last durable commit (with `quick_repair`, from the saved
//! allocator state) — and rebuilds its counters and the unindexed tail from
//! the file, exactly as a restart would. If reopening fails too (the disk is
//! still full), the storage stays *degraded*: reads and writes answer a typed
//! error, and the committer retries every `retry_ms` and before each batch,
//! until a reopen and a durable probe commit succeed.
//!
//! A commit is atomic, so a failed batch is either wholly durable or wholly
//! absent; the reopen tells which (the log's end position moved or not) and
//! the batch's waiters get that answer. So an acknowledged event is never
//! lost, and an event reported as failed is never stored.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::{Mutex, RwLock};
use redb::{Database, Durability, ReadTransaction, ReadableDatabase};

use super::StorageConfig;
use super::faults::{FaultInjector, FaultyBackend};
use crate::storage::{StorageError, StorageHealth};

/// The open database (or none, between a failed commit and a successful
/// reopen) and what is known about its health.
pub(super) struct DbCell {
    db: RwLock<Option<Database>>,
    path: PathBuf,
    faults: Arc<FaultInjector>,
    health: Mutex<StorageHealth>,
}

impl DbCell {
    pub(super) fn new(db: Database, path: PathBuf, faults: Arc<FaultInjector>) -> Self {
        Self {
            db: RwLock::new(Some(db)),
            path,
            faults,
            health: Mutex::new(StorageHealth::healthy()),
        }
    }

    /// A read transaction on the current database.
    pub(super) fn begin_read(&self) -> Result<ReadTransaction, StorageError> {
        let db = self.db.read();
        let db = db.as_ref().ok_or_else(|| self.unavailable())?;
        Ok(db.begin_read()?)
    }

    /// A durable write transaction on the current database (committer only).
    pub(super) fn begin_write(&self) -> Result<redb::WriteTransaction, StorageError> {
        let db = self.db.read();
        let db = db.as_ref().ok_or_else(|| self.unavailable())?;
        let mut txn = db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        Ok(txn)
    }

    /// Run `f` on the current database (None while it is closed).
    pub(super) fn with_db<T>(&self, f: impl FnOnce(&Database) -> T) -> Option<T> {
        self.db.read().as_ref().map(f)
    }

    pub(super) fn is_open(&self) -> bool {
        self.db.read().is_some()
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    pub(super) fn faults(&self) -> &Arc<FaultInjector> {
        &self.faults
    }

    /// The error for a request that finds the database closed: the full
    /// disk if that is what closed it.
    pub(super) fn unavailable(&self) -> StorageError {
        let h = self.health.lock();
        match (&h.last_error, h.no_space) {
            (Some(e), true) => StorageError::NoSpace(e.clone()),
            (Some(e), false) => StorageError::Unavailable(e.clone()),
            (None, _) => StorageError::Unavailable("the database is being reopened".into()),
        }
    }

    /// Drop the handle (closing the file) so it can be opened again.
    pub(super) fn close(&self) {
        self.db.write().take();
    }

    /// Open the file again (the handle must be closed) and install it.
    pub(super) fn reopen(&self, config: &StorageConfig) -> Result<(), StorageError> {
        let db = open_database(&self.path, config, &self.faults, None)?;
        *self.db.write() = Some(db);
        self.health.lock().reopens += 1;
        metrics::counter!("realmhost_storage_reopens").increment(1);
        Ok(())
    }

    pub(super) fn health(&self) -> StorageHealth {
        self.health.lock().clone()
    }

    /// Record a failed write; returns the typed error for its waiters.
    pub(super) fn mark_failed(&self, e: &StorageError) -> StorageError {
        let no_space = is_no_space(e);
        let msg = e.to_string();
        let mut h = self.health.lock();
        if h.writable {
            h.failing_since_ms = Some(now_ms());
        }
        h.writable = false;
        h.no_space = no_space;
        h.last_error = Some(msg.clone());
        h.failed_commits += 1;
        metrics::counter!("realmhost_storage_failed_commits").increment(1);
        metrics::gauge!("realmhost_storage_degraded").set(1.0);
        if no_space {
            StorageError::NoSpace(msg)
        } else {
            StorageError::CommitFailed(msg)
        }
    }

    /// Record a successful commit.
    pub(super) fn mark_ok(&self) {
        let mut h = self.health.lock();
        if !h.writable {
            let since = h.failing_since_ms.take().unwrap_or_default();
            tracing::warn!(
                failed_ms = now_ms().saturating_sub(since),
                "storage accepts writes again"
            );
            h.writable = true;
            metrics::gauge!("realmhost_storage_degraded").set(0.0);
        }
    }

    pub(super) fn writable(&self) -> bool {
        self.health.lock().writable
    }
}

/// Whether a commit failure is a full disk or quota, however it is wrapped.
fn is_no_space(e: &StorageError) -> bool {
    match e {
        StorageError::Io(io) => StorageError::io_is_no_space(io),
        StorageError::NoSpace(_) => true,
        _ => false,
    }
}

pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Open the database file through the fault-injecting backend.
/// `repaired` is set when redb had to run its repair on open.
pub(super) fn open_database(
    path: &Path,
    config: &StorageConfig,
    faults: &Arc<FaultInjector>,
    repaired: Option<Arc<AtomicBool>>,
) -> Result<Database, StorageError> {
    let mut builder = Database::builder();
    builder
        .set_cache_size(config.cache_bytes)
        .set_check_integrity_on_open(config.verify_on_open);
    if let Some(repaired) = repaired {
        builder.set_repair_callback(move |_| repaired.store(true, Ordering::Relaxed));
    }
    let backend = FaultyBackend::open(path, faults.clone())?;
    builder
        .create_with_backend(backend)
        .map_err(|e| match StorageError::from(e) {
            // redb reports a file that is not a database as invalid data.
            StorageError::Io(io) if io.kind() == std::io::ErrorKind::InvalidData => {
                StorageError::Corrupt(io.to_string())
            }
            other => other,
        })
}

/// Commit an empty durable transaction: whether the disk takes writes again.
pub(super) fn probe(cell: &DbCell) -> Result<(), StorageError> {
    let txn = cell.begin_write()?;
    txn.commit()?;
    Ok(())
}
