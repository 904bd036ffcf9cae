//! The file backend the database runs on: redb's own [`FileBackend`] behind a
//! thin wrapper that can simulate a full disk.
//!
//! A real full filesystem is hard to arrange on CI (it needs root for a loop
//! device or a tmpfs of the right size), so the write-failure paths — a group
//! commit failing, the committer reopening the file, readiness turning
//! degraded and back — are exercised through this wrapper instead. In
//! production the switch is never turned on and the wrapper costs one relaxed
//! atomic load per file operation (next to a `pwrite` or `fsync`).

use std::fs::File;
use std::io;
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};

/// `ENOSPC` on Linux and the BSDs: what a write to a full filesystem returns.
const ENOSPC: i32 = 28;

/// Shared switch of a [`FaultyBackend`]: while on, every write, growth and
/// sync of the database file fails with `ENOSPC`, as on a full disk. Reads
/// keep working. The same switch survives the committer reopening the file.
#[derive(Debug, Default)]
pub struct FaultInjector {
    disk_full: AtomicBool,
    /// File operations failed on purpose so far.
    injected: AtomicU64,
}

impl FaultInjector {
    /// Simulate a full disk (`true`) or free space again (`false`).
    pub fn set_disk_full(&self, full: bool) {
        self.disk_full.store(full, Ordering::SeqCst);
    }

    /// Whether the full disk is being simulated.
    pub fn disk_full(&self) -> bool {
        self.disk_full.load(Ordering::Relaxed)
    }

    /// How many file operations failed on purpose so far.
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::Relaxed)
    }

    fn check(&self) -> io::Result<()> {
        if self.disk_full.load(Ordering::Relaxed) {
            self.injected.fetch_add(1, Ordering::Relaxed);
            return Err(io::Error::from_raw_os_error(ENOSPC));
        }
        Ok(())
    }
}

/// redb's [`FileBackend`], failing writes while its [`FaultInjector`] says the
/// disk is full. Everything else (reads, locks, close) is forwarded as is.
#[derive(Debug)]
pub(super) struct FaultyBackend {
    inner: FileBackend,
    faults: Arc<FaultInjector>,
}

impl FaultyBackend {
    /// Open `path` the way `redb::Builder::create` does (read/write, created
    /// if missing, never truncated).
    pub(super) fn open(
        path: &std::path::Path,
        faults: Arc<FaultInjector>,
    ) -> Result<Self, crate::storage::StorageError> {
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        Ok(Self {
            inner: FileBackend::new(file)?,
            faults,
        })
    }
}

impl StorageBackend for FaultyBackend {
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        if len > self.inner.len()? {
            self.faults.check()?;
        }
        self.inner.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.faults.check()?;
        self.inner.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.faults.check()?;
        self.inner.write(offset, data)
    }

    fn close(&self) -> io::Result<()> {
        self.inner.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.query_lock_range(start, end)
    }
}
