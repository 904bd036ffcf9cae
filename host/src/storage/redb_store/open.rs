//! Opening a database: creating a new file atomically, checking the format
//! record, and recovering the committer's counters and the unindexed tail.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;

use parking_lot::RwLock;
use redb::{Database, Durability, ReadableDatabase, ReadableTable};
use rustc_hash::FxHashMap;

use super::committer::Committer;
use super::faults::FaultInjector;
use super::read::last_indexed;
use super::realm_cache::RealmCache;
use super::recovery::{self, DbCell};
use super::stats::{CommitterStats, StatsCell};
use super::upgrade;
use super::{
    BY_TYPE, Counters, DB_FILE_NAME, FORMAT_VERSION, INDEX, KEY_FORMAT, KEY_INDEX_FLOOR,
    KEY_NEXT_REALM, LOG, META, REALMS, Recovered, RedbStorage, SNAPSHOT_ENTRIES, SNAPSHOTS, SYS,
    StorageConfig, Unindexed, VERSIONS,
};
use crate::runtime::PluginVersion;
use crate::storage::{StorageError, codec};

/// Create a new database under a temporary name, write its format record,
/// and only then rename it into place (and sync the directory), so that a
/// crash during creation leaves either no database or a complete one — never
/// a half-initialized file that a restart would have to repair. A leftover
/// temporary file from such a crash is discarded.
fn create_atomically(path: &Path, config: &StorageConfig) -> Result<(), StorageError> {
    let tmp = path.with_extension("creating");
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    {
        let mut builder = Database::builder();
        builder.set_cache_size(config.cache_bytes.min(16 << 20));
        let db = guarded("creating", || Ok(builder.create(&tmp)?))?;
        init_format(&db)?;
    }
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}
impl RedbStorage {
    /// Open (or create) the database in `dir` with default tuning.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, StorageError> {
        Self::open_with(dir, StorageConfig::default())
    }

    /// Open (or create) the database in `dir`.
    ///
    /// Errors: [`StorageError::NewerFormat`] for a file written by a newer
    /// format, [`StorageError::UnsupportedFormat`] for an older one,
    /// [`StorageError::Corrupt`] for a damaged or truncated file,
    /// [`StorageError::NotRealmhost`] for a foreign redb file,
    /// [`StorageError::AlreadyOpen`] if another handle holds it. In none of
    /// these cases is the file modified. Each of them (and an I/O error)
    /// comes wrapped in [`StorageError::Open`], which names the file;
    /// [`StorageError::cause`] unwraps it. `NotRealmhost` names the file
    /// itself and comes as it is.
    ///
    /// A file of format 2 is upgraded to the current format first, in one
    /// transaction: its snapshots (opaque contract 0.1 blobs) are dropped and
    /// the realms are rebuilt from their logs when next loaded.
    #[tracing::instrument(name = "storage.open", skip_all, fields(dir = %dir.as_ref().display()))]
    pub fn open_with(dir: impl AsRef<Path>, config: StorageConfig) -> Result<Self, StorageError> {
        let dir = dir.as_ref();
        Self::open_in(dir, config).map_err(|e| match e {
            e @ StorageError::NotRealmhost(_) => e,
            e => StorageError::Open {
                path: dir.join(DB_FILE_NAME),
                source: Box::new(e),
            },
        })
    }

    fn open_in(dir: &Path, config: StorageConfig) -> Result<Self, StorageError> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(DB_FILE_NAME);
        let fresh = match std::fs::metadata(&path) {
            Ok(m) => m.len() == 0,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
            Err(e) => return Err(e.into()),
        };
        if fresh {
            create_atomically(&path, &config)?;
        }

        let repaired = Arc::new(AtomicBool::new(false));
        let faults = Arc::new(FaultInjector::default());
        // redb documents that a plain open of a file altered outside redb may
        // panic; a damaged file is input like any other and gets a typed error.
        let db = guarded("opening", || {
            recovery::open_database(&path, &config, &faults, Some(repaired.clone()))
        })?;
        let format = guarded("reading", || upgrade::check_format(&db, &path))?;
        if format < FORMAT_VERSION {
            let done = guarded("upgrading", || upgrade::upgrade(&db, format, &config))?;
            tracing::info!(
                from = format,
                to = FORMAT_VERSION,
                dropped_snapshots = done.snapshots,
                realms_reset = done.realms,
                "upgraded the database format; the dropped snapshots are rebuilt from the realms' logs"
            );
        }
        let Recovered {
            counters,
            unindexed,
        } = guarded("reading", || recover(&db, &path))?;
        let repaired = repaired.load(Ordering::Relaxed);
        if repaired {
            tracing::warn!(path = %path.display(), "database was not shut down cleanly; redb ran a full repair");
        }
        let recovered_events = unindexed.events;
        if recovered_events > 0 {
            tracing::info!(
                events = recovered_events,
                realms = unindexed.realms.len(),
                "rebuilt the unindexed log tail after an unclean shutdown"
            );
        }

        let db = Arc::new(DbCell::new(db, path.clone(), faults));
        let unindexed = Arc::new(RwLock::new(unindexed));
        let skip_final_checkpoint = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let stats = Arc::new(StatsCell::default());
        let committer = {
            let committer = Committer {
                db: db.clone(),
                unindexed: unindexed.clone(),
                counters,
                cache: RealmCache::new(config.realm_cache),
                config,
                stats: stats.clone(),
                acker: None,
            };
            let skip = skip_final_checkpoint.clone();
            std::thread::Builder::new()
                .name("storage-committer".into())
                .spawn(move || committer.run(&rx, &skip))?
        };
        Ok(Self {
            db,
            path,
            unindexed,
            tx: Some(tx),
            committer: Some(committer),
            stats,
            skip_final_checkpoint,
            repaired,
            recovered_events,
        })
    }

    /// Whether opening had to run redb's full repair scan (an unclean shutdown
    /// with `quick_repair` off, or a damaged allocator state). With
    /// `quick_repair` on, a crash does not require it.
    pub fn opened_with_repair(&self) -> bool {
        self.repaired
    }

    /// How many unindexed log events opening had to rebuild from the log
    /// (zero after a clean shutdown).
    pub fn recovered_events(&self) -> usize {
        self.recovered_events
    }

    /// Events in the log not yet folded into `log_index` (what a crash now
    /// would leave for the next open to rebuild).
    pub fn unindexed_events(&self) -> usize {
        self.unindexed.read().events
    }

    /// The committer thread's CPU time and the events it committed since
    /// open: CPU per event is the serial work that bounds write throughput
    /// (see `stats.rs`).
    pub fn committer_stats(&self) -> CommitterStats {
        self.stats.snapshot()
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether writes are being accepted, and since when they fail if not.
    pub fn health(&self) -> crate::storage::StorageHealth {
        self.db.health()
    }

    /// The switch that simulates a full disk under this storage (tests of
    /// the failure paths; see `faults.rs`).
    #[doc(hidden)]
    pub fn fault_injector(&self) -> Arc<FaultInjector> {
        self.db.faults().clone()
    }

    /// Close as a crash would leave the file: queued writes are committed, but
    /// the unindexed tail is not folded into the index, so the next open has
    /// to rebuild it from the log.
    #[doc(hidden)]
    pub fn close_without_checkpoint(self) {
        self.skip_final_checkpoint.store(true, Ordering::SeqCst);
    }
}

/// Run `f`, turning a panic inside redb (which it documents for files altered
/// outside redb) into [`StorageError::Corrupt`].
pub(super) fn guarded<T>(
    what: &str,
    f: impl FnOnce() -> Result<T, StorageError>,
) -> Result<T, StorageError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("panic");
            Err(StorageError::Corrupt(format!(
                "{what} the database failed: {msg}"
            )))
        }
    }
}

/// First open of a new file: create every table and the format record in one
/// durable transaction, so a crash leaves either an empty file (recreated
/// next time) or a complete, versioned database.
fn init_format(db: &Database) -> Result<(), StorageError> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    {
        let mut sys = txn.open_table(SYS)?;
        if sys.get(KEY_FORMAT)?.is_none() {
            sys.insert(KEY_FORMAT, FORMAT_VERSION)?;
            sys.insert(KEY_NEXT_REALM, 1)?;
            sys.insert(KEY_INDEX_FLOOR, 1)?;
        }
        txn.open_table(LOG)?;
        txn.open_table(INDEX)?;
        txn.open_table(REALMS)?;
        txn.open_table(BY_TYPE)?;
        txn.open_table(SNAPSHOTS)?;
        txn.open_table(SNAPSHOT_ENTRIES)?;
        txn.open_table(VERSIONS)?;
        txn.open_table(META)?;
        txn.open_table(super::IDEMPOTENCY)?;
        txn.open_table(super::IDEMPOTENCY_TTL)?;
        txn.open_table(super::OUTBOX)?;
        txn.open_table(super::INBOX)?;
        txn.open_table(super::DEAD_LETTERS)?;
    }
    txn.commit()?;
    Ok(())
}

/// Check the format record, recover the committer's counters, and rebuild
/// the unindexed tail from the log after `index_floor`. Read-only: a file we
/// cannot handle is left exactly as it was.
pub(super) fn recover(db: &Database, path: &Path) -> Result<Recovered, StorageError> {
    let found = upgrade::check_format(db, path)?;
    if found != FORMAT_VERSION {
        return Err(StorageError::UnsupportedFormat {
            found,
            supported: FORMAT_VERSION,
        });
    }
    let txn = db.begin_read()?;
    let sys = txn.open_table(SYS)?;
    let sys_u64 = |key: &str| -> Result<u64, StorageError> {
        sys.get(key)?
            .map(|v| v.value())
            .ok_or_else(|| StorageError::Corrupt(format!("missing {key}")))
    };
    let next_realm_no = sys_u64(KEY_NEXT_REALM)?;
    let floor = sys_u64(KEY_INDEX_FLOOR)?;

    let mut versions = HashMap::new();
    let version_table = txn.open_table(VERSIONS)?;
    for item in version_table.iter()? {
        let (k, v) = item?;
        let bytes: [u8; 32] = v
            .value()
            .try_into()
            .map_err(|_| StorageError::Corrupt(format!("plugin version #{}", k.value())))?;
        versions.insert(PluginVersion(bytes), k.value());
    }

    let log = txn.open_table(LOG)?;
    let index = txn.open_table(INDEX)?;
    let next_pos = match log.last()? {
        Some((k, _)) => k
            .value()
            .checked_add(1)
            .ok_or_else(|| StorageError::Corrupt("log position overflow".into()))?,
        None => 1,
    };

    // Rebuild the unindexed tail: every entry at or after the floor whose seq
    // is beyond what `log_index` holds for its realm.
    let mut unindexed = Unindexed::default();
    let mut indexed_last: FxHashMap<u64, u64> = FxHashMap::default();
    for item in log.range(floor..)? {
        let (k, v) = item?;
        let pos = k.value();
        let entry = codec::decode_entry(v.value())?;
        let no = entry.realm_no;
        if no == 0 || no >= next_realm_no {
            return Err(StorageError::Corrupt(format!(
                "log position {pos} names unknown realm #{no}"
            )));
        }
        let indexed = match indexed_last.get(&no) {
            Some(&s) => s,
            None => {
                let s = last_indexed(&index, no)?.map_or(0, |(seq, _)| seq);
                indexed_last.insert(no, s);
                s
            }
        };
        let seq = entry.event.seq;
        if seq <= indexed {
            continue;
        }
        let expected = unindexed
            .realms
            .get(&no)
            .map_or(indexed + 1, |t| t.last_seq() + 1);
        if seq != expected {
            return Err(StorageError::Corrupt(format!(
                "realm #{no}: log position {pos} holds seq {seq}, expected {expected}"
            )));
        }
        unindexed.push(no, seq, &[pos], entry.version_no);
    }
    Ok(Recovered {
        counters: Counters {
            next_pos,
            next_realm_no,
            versions,
        },
        unindexed,
    })
}
