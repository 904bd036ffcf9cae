//! [`RedbStorage`]: the embedded default backend, one redb file per node.
//!
//! Layout (format version 2; the full rationale and the crash invariants are
//! in `docs/design-storage.md`):
//!
//! | table            | key                     | value                                   |
//! |------------------|-------------------------|-----------------------------------------|
//! | `sys`            | `&str`                  | `u64` (`format_version`, `next_realm_no`, `index_floor`) |
//! | `log`            | `u64` log position      | realm no ‖ version no ‖ postcard event  |
//! | `log_index`      | `(realm_no, first_seq)` | run: count, version no, position deltas |
//! | `realms`         | realm id                | postcard [`RealmRow`]                   |
//! | `realms_by_type` | `(realm_type, realm id)`| `()`                                    |
//! | `snapshots`      | `realm_no`              | seq ‖ plugin version ‖ state            |
//! | `versions`       | `u32` version no        | plugin version (32 bytes)               |
//! | `meta`           | `&str`                  | bytes (other modules' records)          |
//!
//! **An append writes only at the right edge of the log.** The log is keyed by
//! a global position that only grows, so every group commit appends to the
//! end of one B-tree. Nothing keyed by realm is written per append: an index
//! insert or a metadata rewrite keyed by realm lands on a random B-tree page,
//! and copying, checksumming and writing one page per event is what limited
//! throughput (measured: 256 one-event appends per commit ran at ~34k
//! events/s with a per-append index insert, ~230k without).
//!
//! **The index is written by checkpoints.** The events not yet in `log_index`
//! (the *unindexed tail*, per realm) are kept in memory. When the tail grows
//! past `checkpoint_events`, the committer folds the oldest realms' tails into
//! `log_index` — one entry per realm holding all its tail positions — in the
//! same transaction as the next group commit, and advances `index_floor`, the
//! log position below which every entry is indexed. On open, the tail is
//! rebuilt by scanning the log from `index_floor`; a clean shutdown folds the
//! whole tail in, so that scan is empty.
//!
//! All writes go through one committer thread that drains a channel and
//! commits everything it found in one `Durability::Immediate` transaction
//! (group commit). Requests are validated one by one inside that transaction;
//! a rejected request is skipped before it writes anything, so it never
//! spoils the batch for the others. Events are encoded on the callers'
//! threads, before they reach the committer.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;

use futures::future::BoxFuture;
use parking_lot::RwLock;
use redb::{
    Database, Durability, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition,
    WriteTransaction,
};
use rustc_hash::FxHashMap;
use tokio::sync::oneshot;

use super::codec::{self, RealmRow};
use super::{
    AppendAck, AppendRequest, RealmLoad, RealmMeta, RealmPage, Snapshot, SnapshotBody,
    SnapshotWrite, Storage, StorageError,
};
use crate::realm::{EventRecord, RealmId};
use crate::runtime::PluginVersion;

/// The on-disk format this build writes, and the newest it reads.
pub const FORMAT_VERSION: u64 = 2;

/// Name of the database file inside the data directory.
pub const DB_FILE_NAME: &str = "realmhost.redb";

const SYS: TableDefinition<&str, u64> = TableDefinition::new("sys");
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const INDEX: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("log_index");
const REALMS: TableDefinition<&str, &[u8]> = TableDefinition::new("realms");
const BY_TYPE: TableDefinition<(&str, &str), ()> = TableDefinition::new("realms_by_type");
const SNAPSHOTS: TableDefinition<u64, &[u8]> = TableDefinition::new("snapshots");
const VERSIONS: TableDefinition<u32, &[u8]> = TableDefinition::new("versions");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

const KEY_FORMAT: &str = "format_version";
const KEY_NEXT_REALM: &str = "next_realm_no";
const KEY_INDEX_FLOOR: &str = "index_floor";

/// Tuning of [`RedbStorage`]; the `[storage]` section of the node's TOML
/// config, every field optional.
///
/// | field | default |
/// |---|---|
/// | `cache_bytes` | 256 MiB |
/// | `quick_repair` | true |
/// | `verify_on_open` | false |
/// | `max_batch` | 8192 requests |
/// | `checkpoint_events` | 65 536 |
/// | `checkpoint_realms` | 1024 |
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// redb page cache, bytes.
    pub cache_bytes: usize,
    /// Save redb's allocator state with every commit (two fsyncs per commit
    /// instead of one) so that reopening after a crash needs no full repair
    /// scan — restart time stays flat however large the file grows. Group
    /// commit amortizes the extra fsync over the whole batch.
    pub quick_repair: bool,
    /// Verify every page checksum when opening (reads the whole file). Off by
    /// default: crash recovery does not need it, and a damaged file is still
    /// reported as a typed error rather than a panic.
    pub verify_on_open: bool,
    /// Most requests folded into one commit; bounds commit latency under a
    /// flood of small requests.
    pub max_batch: usize,
    /// Unindexed events kept in memory before a checkpoint folds the oldest
    /// realms' tails into `log_index`. Larger: fewer, bigger index entries
    /// and more log to scan on open after a crash (about 1 s per few million
    /// events); smaller: more index writes per event.
    pub checkpoint_events: usize,
    /// Most realms one checkpoint step indexes, bounding the extra latency a
    /// checkpoint adds to the group commit it rides in.
    pub checkpoint_realms: usize,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            cache_bytes: 256 << 20,
            quick_repair: true,
            verify_on_open: false,
            max_batch: 8192,
            checkpoint_events: 64 * 1024,
            checkpoint_realms: 1024,
        }
    }
}

impl StorageConfig {
    /// Check the values; the message names the offending field.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_batch == 0 {
            return Err("storage.max_batch must be > 0".into());
        }
        if self.checkpoint_realms == 0 {
            return Err("storage.checkpoint_realms must be > 0".into());
        }
        if self.cache_bytes < (1 << 20) {
            return Err("storage.cache_bytes must be at least 1 MiB".into());
        }
        Ok(())
    }
}

type Reply<T> = oneshot::Sender<Result<T, StorageError>>;

/// An append, checked and encoded on the caller's thread.
struct EncodedAppend {
    realm_id: RealmId,
    realm_type: String,
    version: PluginVersion,
    first_seq: u64,
    /// Log entries with a zeroed header ([`codec::encode_entry`]).
    entries: Vec<Vec<u8>>,
}

/// A write waiting for the committer.
enum Op {
    Append(EncodedAppend, Reply<AppendAck>),
    Snapshot(RealmId, SnapshotWrite, Reply<()>),
    Meta(String, Option<Vec<u8>>, Reply<()>),
}

/// One realm's events that are in the log but not yet in `log_index`.
#[derive(Debug, Clone)]
struct Tail {
    /// Seq of the first unindexed event; the rest follow without gaps.
    first_seq: u64,
    /// Log positions of seqs `first_seq, first_seq + 1, ...` (increasing).
    positions: Vec<u64>,
    /// Plugin version number of the last event.
    version_no: u32,
}

impl Tail {
    fn last_seq(&self) -> u64 {
        self.first_seq + self.positions.len() as u64 - 1
    }
}

/// The unindexed tails of all realms: written by the committer after each
/// commit, read by readers together with their read transaction.
#[derive(Debug, Default)]
struct Unindexed {
    realms: FxHashMap<u64, Tail>,
    /// Realm numbers by their oldest unindexed position: checkpoint order.
    by_age: BTreeMap<u64, u64>,
    /// Total unindexed events.
    events: usize,
}

/// The embedded, durable default [`Storage`].
///
/// Reads run on the caller's thread against an MVCC read transaction (they
/// never wait for a commit); writes are answered by the committer thread.
/// Dropping the storage finishes queued writes, folds the unindexed tail into
/// the index, then closes the file.
pub struct RedbStorage {
    db: Arc<Database>,
    path: PathBuf,
    unindexed: Arc<RwLock<Unindexed>>,
    tx: Option<mpsc::Sender<Op>>,
    committer: Option<JoinHandle<()>>,
    /// Tells the committer to stop without the final checkpoint (tests of the
    /// recovery scan).
    skip_final_checkpoint: Arc<AtomicBool>,
    repaired: bool,
    recovered_events: usize,
}

impl fmt::Debug for RedbStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedbStorage")
            .field("path", &self.path)
            .field("repaired", &self.repaired)
            .field("recovered_events", &self.recovered_events)
            .finish()
    }
}

impl Drop for RedbStorage {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(h) = self.committer.take()
            && h.join().is_err()
        {
            tracing::error!("storage committer panicked");
        }
    }
}

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

/// What the committer carries from one commit to the next. Every field
/// advances only after a commit succeeds.
struct Counters {
    next_pos: u64,
    next_realm_no: u64,
    /// Plugin version → its number in `versions`.
    versions: HashMap<PluginVersion, u32>,
}

/// Everything recovered at open.
struct Recovered {
    counters: Counters,
    unindexed: Unindexed,
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
    /// these cases is the file modified.
    #[tracing::instrument(name = "storage.open", skip_all, fields(dir = %dir.as_ref().display()))]
    pub fn open_with(dir: impl AsRef<Path>, config: StorageConfig) -> Result<Self, StorageError> {
        let dir = dir.as_ref();
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
        let mut builder = Database::builder();
        builder
            .set_cache_size(config.cache_bytes)
            .set_check_integrity_on_open(config.verify_on_open);
        {
            let repaired = repaired.clone();
            builder.set_repair_callback(move |_| repaired.store(true, Ordering::Relaxed));
        }
        // redb documents that a plain open of a file altered outside redb may
        // panic; a damaged file is input like any other and gets a typed error.
        let db = guarded("opening", || {
            builder
                .create(&path)
                .map_err(|e| match StorageError::from(e) {
                    // redb reports a file that is not a database as invalid data.
                    StorageError::Io(io) if io.kind() == std::io::ErrorKind::InvalidData => {
                        StorageError::Corrupt(io.to_string())
                    }
                    other => other,
                })
        })?;
        let db = Arc::new(db);
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

        let unindexed = Arc::new(RwLock::new(unindexed));
        let skip_final_checkpoint = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let committer = {
            let committer = Committer {
                db: db.clone(),
                unindexed: unindexed.clone(),
                counters,
                config,
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

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Close as a crash would leave the file: queued writes are committed, but
    /// the unindexed tail is not folded into the index, so the next open has
    /// to rebuild it from the log.
    #[doc(hidden)]
    pub fn close_without_checkpoint(self) {
        self.skip_final_checkpoint.store(true, Ordering::SeqCst);
    }

    fn submit(&self, op: Op) -> Result<(), StorageError> {
        self.tx
            .as_ref()
            .ok_or(StorageError::Closed)?
            .send(op)
            .map_err(|_| StorageError::Closed)
    }

    /// Enqueue an append; the returned future resolves after the commit.
    ///
    /// The request is checked (events, realm type, consecutive seqs) and
    /// encoded here, on the caller's thread; only the checks against stored
    /// state run on the committer.
    pub fn append(
        &self,
        req: AppendRequest,
    ) -> impl Future<Output = Result<AppendAck, StorageError>> + Send + 'static {
        let (reply, rx) = oneshot::channel();
        let sent = encode_append(req).and_then(|req| self.submit(Op::Append(req, reply)));
        async move {
            sent?;
            rx.await.map_err(|_| StorageError::Closed)?
        }
    }

    /// Enqueue a snapshot write; resolves after the commit.
    pub fn put_snapshot(
        &self,
        realm: &RealmId,
        snapshot: SnapshotWrite,
    ) -> impl Future<Output = Result<(), StorageError>> + Send + 'static {
        let (reply, rx) = oneshot::channel();
        let sent = self.submit(Op::Snapshot(realm.clone(), snapshot, reply));
        async move {
            sent?;
            rx.await.map_err(|_| StorageError::Closed)?
        }
    }

    /// Enqueue a meta record write (`None` deletes); resolves after the commit.
    pub fn put_meta(
        &self,
        key: &str,
        value: Option<Vec<u8>>,
    ) -> impl Future<Output = Result<(), StorageError>> + Send + 'static {
        let (reply, rx) = oneshot::channel();
        let sent = self.submit(Op::Meta(key.to_owned(), value, reply));
        async move {
            sent?;
            rx.await.map_err(|_| StorageError::Closed)?
        }
    }

    /// [`Self::append`] for synchronous callers. Must not be called from
    /// inside an async runtime (it blocks the thread until the commit).
    pub fn append_blocking(&self, req: AppendRequest) -> Result<AppendAck, StorageError> {
        futures::executor::block_on(self.append(req))
    }

    /// [`Self::put_snapshot`] for synchronous callers.
    pub fn put_snapshot_blocking(
        &self,
        realm: &RealmId,
        snapshot: SnapshotWrite,
    ) -> Result<(), StorageError> {
        futures::executor::block_on(self.put_snapshot(realm, snapshot))
    }

    /// [`Self::put_meta`] for synchronous callers.
    pub fn put_meta_blocking(&self, key: &str, value: Option<Vec<u8>>) -> Result<(), StorageError> {
        futures::executor::block_on(self.put_meta(key, value))
    }

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
        self.view(realm)?.map(|v| v.meta()).transpose()
    }

    /// The realm's snapshot.
    pub fn load_snapshot(&self, realm: &RealmId) -> Result<Option<Snapshot>, StorageError> {
        match self.view(realm)? {
            Some(v) => snapshot_of(&v.txn, &v.row),
            None => Ok(None),
        }
    }

    /// Events after `after_seq`, in seq order.
    pub fn events_since(
        &self,
        realm: &RealmId,
        after_seq: u64,
    ) -> Result<Vec<EventRecord>, StorageError> {
        match self.view(realm)? {
            Some(v) => {
                let (last_seq, _) = v.last()?;
                v.events(after_seq, last_seq)
            }
            None => Ok(Vec::new()),
        }
    }

    /// Metadata, snapshot and the events after it, from one read transaction.
    #[tracing::instrument(name = "storage.load", skip_all, fields(realm = %realm, snapshot_seq, tail))]
    pub fn load_realm(&self, realm: &RealmId) -> Result<Option<RealmLoad>, StorageError> {
        let Some(v) = self.view(realm)? else {
            return Ok(None);
        };
        let meta = v.meta()?;
        let snapshot = snapshot_of(&v.txn, &v.row)?;
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

    /// Realms of `realm_type` in id order after `after`, at most `limit`.
    pub fn list_realms(
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

    /// A record stored with [`Self::put_meta`].
    pub fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(META)?;
        Ok(table.get(key)?.map(|v| v.value().to_vec()))
    }
}

/// Check an append on the caller's thread and encode its events: everything
/// that does not need the stored state.
fn encode_append(req: AppendRequest) -> Result<EncodedAppend, StorageError> {
    let realm = &req.realm_id;
    let Some(first) = req.events.first() else {
        return Err(StorageError::InvalidRequest(format!(
            "append to {realm} has no events"
        )));
    };
    if req.realm_type.is_empty() {
        return Err(StorageError::InvalidRequest(format!(
            "append to {realm} has an empty realm type"
        )));
    }
    let first_seq = first.seq;
    let mut entries = Vec::with_capacity(req.events.len());
    for (i, ev) in req.events.iter().enumerate() {
        let expected = first_seq.saturating_add(i as u64);
        if ev.seq != expected {
            return Err(StorageError::Gap {
                realm: realm.clone(),
                expected,
                found: ev.seq,
            });
        }
        entries.push(codec::encode_entry(ev)?);
    }
    Ok(EncodedAppend {
        realm_id: req.realm_id,
        realm_type: req.realm_type,
        version: req.plugin_version,
        first_seq,
        entries,
    })
}

/// Run `f`, turning a panic inside redb (which it documents for files altered
/// outside redb) into [`StorageError::Corrupt`].
fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T, StorageError>) -> Result<T, StorageError> {
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
        txn.open_table(VERSIONS)?;
        txn.open_table(META)?;
    }
    txn.commit()?;
    Ok(())
}

/// Check the format record, recover the committer's counters, and rebuild
/// the unindexed tail from the log after `index_floor`. Read-only: a file we
/// cannot handle is left exactly as it was.
fn recover(db: &Database, path: &Path) -> Result<Recovered, StorageError> {
    let txn = db.begin_read()?;
    let sys = match txn.open_table(SYS) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => {
            return Err(StorageError::NotRealmhost(path.display().to_string()));
        }
        Err(e) => return Err(e.into()),
    };
    match sys.get(KEY_FORMAT)?.map(|v| v.value()) {
        None => return Err(StorageError::NotRealmhost(path.display().to_string())),
        Some(v) if v > FORMAT_VERSION => {
            return Err(StorageError::NewerFormat {
                found: v,
                supported: FORMAT_VERSION,
            });
        }
        Some(0) => return Err(StorageError::Corrupt("format version 0".into())),
        Some(v) if v < FORMAT_VERSION => {
            return Err(StorageError::UnsupportedFormat {
                found: v,
                supported: FORMAT_VERSION,
            });
        }
        Some(_) => {}
    }
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

impl Unindexed {
    /// Add events `seq, seq + 1, ...` at `positions` to realm `no`'s tail.
    fn push(&mut self, no: u64, first_seq: u64, positions: &[u64], version_no: u32) {
        let Some(&oldest) = positions.first() else {
            return;
        };
        self.events += positions.len();
        match self.realms.entry(no) {
            std::collections::hash_map::Entry::Occupied(mut o) => {
                let t = o.get_mut();
                t.positions.extend_from_slice(positions);
                t.version_no = version_no;
            }
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(Tail {
                    first_seq,
                    positions: positions.to_vec(),
                    version_no,
                });
                self.by_age.insert(oldest, no);
            }
        }
    }

    /// Drop realm `no`'s tail (it was indexed).
    fn remove(&mut self, no: u64) {
        if let Some(t) = self.realms.remove(&no) {
            self.events -= t.positions.len();
            if let Some(oldest) = t.positions.first() {
                self.by_age.remove(oldest);
            }
        }
    }
}

/// The last indexed seq of realm `no` and the version number of that event.
fn last_indexed(
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

fn snapshot_of(txn: &ReadTransaction, row: &RealmRow) -> Result<Option<Snapshot>, StorageError> {
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

/// One realm as of one read transaction; see [`RedbStorage::view`].
struct View {
    txn: ReadTransaction,
    row: RealmRow,
    tail: Option<Tail>,
}

impl View {
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
                if seq >= next_seq {
                    wanted.push((seq, pos));
                    next_seq = seq + 1;
                }
            }
        }
        if let Some(t) = &self.tail {
            for (i, &pos) in t.positions.iter().enumerate() {
                let seq = t.first_seq + i as u64;
                if seq >= next_seq {
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

/// The single writer: owns the counters, publishes the unindexed tail.
struct Committer {
    db: Arc<Database>,
    unindexed: Arc<RwLock<Unindexed>>,
    counters: Counters,
    config: StorageConfig,
}

/// Outcome of one request inside a batch, held until the commit decides.
enum Done {
    Append(Reply<AppendAck>, Result<AppendAck, StorageError>),
    Unit(Reply<()>, Result<(), StorageError>),
}

/// What one batch changes beyond its transaction: applied to the committer's
/// counters and the shared tail only if the commit succeeds.
struct BatchState {
    next_pos: u64,
    next_realm_no: u64,
    new_versions: Vec<(PluginVersion, u32)>,
    /// New log entries of this batch per realm (first seq, positions, version).
    tails: FxHashMap<u64, Tail>,
    /// Realms whose whole tail (including this batch's entries) this batch's
    /// checkpoint indexed.
    indexed: Vec<u64>,
    events: usize,
}

impl Committer {
    fn run(mut self, rx: &mpsc::Receiver<Op>, skip_final_checkpoint: &AtomicBool) {
        let max_batch = self.config.max_batch.max(1);
        while let Ok(first) = rx.recv() {
            // The first request, then everything that queued up while the
            // previous commit was syncing *and while this one is being
            // written*: the batch size adapts to the load by itself, with no
            // timer adding latency when the system is idle. Taking requests
            // until the queue is empty (rather than only those queued at the
            // start) lets closed-loop writers that were acknowledged by the
            // previous commit join this one instead of waiting for the next:
            // one fsync for all of them instead of two half-full commits.
            let ops = std::iter::once(first)
                .chain(std::iter::from_fn(|| rx.try_recv().ok()))
                .take(max_batch);
            self.commit_batch(ops, false);
        }
        // Clean shutdown: fold the whole tail into the index so that the next
        // open has no log to scan.
        if !skip_final_checkpoint.load(Ordering::SeqCst) && self.unindexed.read().events > 0 {
            self.commit_batch(std::iter::empty(), true);
        }
    }

    /// Process `ops` in one durable transaction; with `full_checkpoint`, also
    /// index every unindexed tail. `ops` is drained lazily, while the
    /// transaction is open.
    fn commit_batch(&mut self, ops: impl Iterator<Item = Op>, full_checkpoint: bool) {
        let span = tracing::info_span!(
            "storage.commit",
            batch = tracing::field::Empty,
            realms = tracing::field::Empty,
            events = tracing::field::Empty,
            indexed = tracing::field::Empty,
        );
        let _enter = span.enter();
        let started = std::time::Instant::now();
        let mut batch = BatchState {
            next_pos: self.counters.next_pos,
            next_realm_no: self.counters.next_realm_no,
            new_versions: Vec::new(),
            tails: FxHashMap::default(),
            indexed: Vec::new(),
            events: 0,
        };
        let mut done = Vec::new();
        let mut ops = ops;
        let mut realms = 0usize;

        let result = (|| -> Result<(), StorageError> {
            let mut txn = self.db.begin_write()?;
            txn.set_durability(Durability::Immediate)?;
            txn.set_quick_repair(self.config.quick_repair);
            {
                // Only this thread writes the tail, so reading it while
                // processing the batch races with nobody; readers share it.
                let unindexed = self.unindexed.read();
                let mut w = Writer::open(&txn, &self.counters, &unindexed)?;
                for op in ops.by_ref() {
                    // A fatal error still answers the request being processed
                    // (with the batch's error, below) before aborting.
                    let fatal = match op {
                        Op::Append(req, reply) => {
                            let (r, fatal) = split(w.append(req, &mut batch));
                            if r.is_ok() {
                                realms += 1;
                            }
                            done.push(Done::Append(reply, r));
                            fatal
                        }
                        Op::Snapshot(realm, snap, reply) => {
                            let (r, fatal) = split(w.snapshot(&realm, &snap, &batch));
                            done.push(Done::Unit(reply, r));
                            fatal
                        }
                        Op::Meta(key, value, reply) => {
                            let r = match value {
                                Some(v) => w.meta.insert(key.as_str(), v.as_slice()).map(drop),
                                None => w.meta.remove(key.as_str()).map(drop),
                            };
                            let (r, fatal) = split(r.map(Ok).map_err(StorageError::from));
                            done.push(Done::Unit(reply, r));
                            fatal
                        }
                    };
                    if let Some(e) = fatal {
                        return Err(e);
                    }
                }
                w.checkpoint(&mut batch, &self.config, full_checkpoint)?;
                if batch.next_realm_no != self.counters.next_realm_no {
                    w.sys.insert(KEY_NEXT_REALM, batch.next_realm_no)?;
                }
            }
            txn.commit()?;
            Ok(())
        })();
        span.record("batch", done.len());
        metrics::histogram!("realmhost_commit_batch_requests").record(done.len() as f64);
        span.record("realms", realms);
        span.record("events", batch.events);
        span.record("indexed", batch.indexed.len());
        metrics::histogram!("realmhost_commit_batch_events").record(batch.events as f64);
        metrics::histogram!("realmhost_commit_seconds").record(started.elapsed().as_secs_f64());

        match result {
            Ok(()) => {
                // Publish before answering: an acknowledged event is visible
                // to every read that starts after the ack.
                {
                    let mut unindexed = self.unindexed.write();
                    for no in &batch.indexed {
                        unindexed.remove(*no);
                    }
                    for (no, t) in &batch.tails {
                        unindexed.push(*no, t.first_seq, &t.positions, t.version_no);
                    }
                    metrics::gauge!("realmhost_storage_unindexed_events")
                        .set(unindexed.events as f64);
                }
                self.counters.next_pos = batch.next_pos;
                self.counters.next_realm_no = batch.next_realm_no;
                self.counters.versions.extend(batch.new_versions);
                for d in done {
                    // A dropped receiver means the caller stopped waiting; the
                    // data is durable either way.
                    match d {
                        Done::Append(reply, r) => drop(reply.send(r)),
                        Done::Unit(reply, r) => drop(reply.send(r)),
                    }
                }
            }
            Err(e) => {
                // Nothing of this batch is stored (the transaction was dropped
                // uncommitted); every waiter of it learns that. Requests not
                // taken from the queue yet go into the next batch.
                tracing::error!(error = %e, "storage commit failed");
                let msg = e.to_string();
                let failed = || StorageError::CommitFailed(msg.clone());
                for d in done {
                    match d {
                        Done::Append(reply, _) => drop(reply.send(Err(failed()))),
                        Done::Unit(reply, _) => drop(reply.send(Err(failed()))),
                    }
                }
            }
        }
    }
}

/// Separate a fatal batch error from the request's own outcome; the request
/// is then answered by the batch's failure path.
fn split<T>(step: Step<T>) -> (Result<T, StorageError>, Option<StorageError>) {
    match step {
        Ok(r) => (r, None),
        Err(e) => (Err(StorageError::Closed), Some(e)),
    }
}

/// The tables of one write transaction, and the committed state it builds on.
struct Writer<'t, 'c> {
    sys: redb::Table<'t, &'static str, u64>,
    log: redb::Table<'t, u64, &'static [u8]>,
    index: redb::Table<'t, (u64, u64), &'static [u8]>,
    realms: redb::Table<'t, &'static str, &'static [u8]>,
    by_type: redb::Table<'t, (&'static str, &'static str), ()>,
    snapshots: redb::Table<'t, u64, &'static [u8]>,
    versions: redb::Table<'t, u32, &'static [u8]>,
    meta: redb::Table<'t, &'static str, &'static [u8]>,
    counters: &'c Counters,
    unindexed: &'c Unindexed,
}

/// Inner result: `Err` is fatal to the batch (a backend error mid-write), the
/// nested `Err` rejects only this request (nothing was written for it).
type Step<T> = Result<Result<T, StorageError>, StorageError>;

impl<'t, 'c> Writer<'t, 'c> {
    fn open(
        txn: &'t WriteTransaction,
        counters: &'c Counters,
        unindexed: &'c Unindexed,
    ) -> Result<Self, StorageError> {
        Ok(Self {
            sys: txn.open_table(SYS)?,
            log: txn.open_table(LOG)?,
            index: txn.open_table(INDEX)?,
            realms: txn.open_table(REALMS)?,
            by_type: txn.open_table(BY_TYPE)?,
            snapshots: txn.open_table(SNAPSHOTS)?,
            versions: txn.open_table(VERSIONS)?,
            meta: txn.open_table(META)?,
            counters,
            unindexed,
        })
    }

    fn row(&self, realm: &RealmId) -> Result<Option<RealmRow>, StorageError> {
        let v = self.realms.get(realm.as_str())?;
        v.map(|v| codec::decode_realm(v.value())).transpose()
    }

    /// The realm's last seq as of this transaction: this batch's entries, the
    /// committed tail, or the index.
    fn last_seq(&self, no: u64, batch: &BatchState) -> Result<u64, StorageError> {
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

    fn append(&mut self, mut req: EncodedAppend, batch: &mut BatchState) -> Step<AppendAck> {
        // Everything that can reject the request happens before the first
        // write, so a rejection leaves the transaction as it found it.
        let realm = &req.realm_id;
        let existing = self.row(realm)?;
        let created = existing.is_none();
        let row = match existing {
            Some(row) if row.realm_type != req.realm_type => {
                return Ok(Err(StorageError::RealmTypeMismatch {
                    realm: realm.clone(),
                    stored: row.realm_type,
                    requested: req.realm_type.clone(),
                }));
            }
            Some(row) => row,
            None => RealmRow {
                no: batch.next_realm_no,
                realm_type: req.realm_type.clone(),
                last_snapshot_seq: 0,
            },
        };
        let last_seq = if created {
            0
        } else {
            self.last_seq(row.no, batch)?
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
        let row_bytes = if created {
            match codec::encode_realm(&row) {
                Ok(b) => Some(b),
                Err(e) => return Ok(Err(e)),
            }
        } else {
            None
        };

        let version_no = self.version_no(req.version, batch)?;
        let count = req.entries.len() as u64;
        let first_pos = batch.next_pos;
        for (i, entry) in req.entries.iter_mut().enumerate() {
            codec::set_entry_header(entry, row.no, version_no);
            self.log.insert(first_pos + i as u64, entry.as_slice())?;
        }
        if let Some(row_bytes) = row_bytes {
            self.realms.insert(realm.as_str(), row_bytes.as_slice())?;
            self.by_type
                .insert((req.realm_type.as_str(), realm.as_str()), ())?;
            batch.next_realm_no += 1;
        }
        let tail = batch.tails.entry(row.no).or_insert_with(|| Tail {
            first_seq: req.first_seq,
            positions: Vec::new(),
            version_no,
        });
        tail.positions.extend(first_pos..first_pos + count);
        tail.version_no = version_no;
        batch.next_pos += count;
        batch.events += req.entries.len();
        Ok(Ok(AppendAck {
            last_seq: last_seq + count,
            created,
        }))
    }

    fn snapshot(&mut self, realm: &RealmId, snap: &SnapshotWrite, batch: &BatchState) -> Step<()> {
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
        let entries = match &snap.body {
            SnapshotBody::Full(e) => e.clone(),
            SnapshotBody::Delta { base_seq, changes } => {
                if *base_seq != row.last_snapshot_seq {
                    return Ok(Err(StorageError::SnapshotBaseMismatch {
                        realm: realm.clone(),
                        base_seq: *base_seq,
                        stored_seq: row.last_snapshot_seq,
                    }));
                }
                let mut m: BTreeMap<crate::state::Bytes, crate::state::Bytes> = BTreeMap::new();
                if row.last_snapshot_seq > 0
                    && let Some(old) = self.snapshots.get(row.no)?
                {
                    match codec::decode_snapshot(old.value()) {
                        Ok(o) => m.extend(o.entries),
                        Err(e) => return Ok(Err(e)),
                    }
                }
                for (k, v) in changes {
                    match v {
                        Some(v) => m.insert(k.clone(), v.clone()),
                        None => m.remove(k),
                    };
                }
                m.into_iter().collect()
            }
        };
        let record = Snapshot {
            seq: snap.seq,
            plugin_version: snap.plugin_version,
            state_version: snap.state_version,
            entries,
        };
        row.last_snapshot_seq = snap.seq;
        let row_bytes = match codec::encode_realm(&row) {
            Ok(b) => b,
            Err(e) => return Ok(Err(e)),
        };
        self.snapshots
            .insert(row.no, codec::encode_snapshot(&record).as_slice())?;
        self.realms.insert(realm.as_str(), row_bytes.as_slice())?;
        Ok(Ok(()))
    }

    /// Fold the oldest realms' tails into `log_index` once more than
    /// `checkpoint_events` are unindexed (all of them with `full`), and move
    /// `index_floor` past everything indexed.
    ///
    /// Each realm gets one index entry covering its whole tail, this batch's
    /// entries included. Realms go oldest first, so the floor becomes the
    /// oldest position of the first realm left unindexed.
    fn checkpoint(
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

impl Storage for RedbStorage {
    fn append(&self, req: AppendRequest) -> BoxFuture<'_, Result<AppendAck, StorageError>> {
        Box::pin(RedbStorage::append(self, req))
    }

    fn put_snapshot(
        &self,
        realm: &RealmId,
        snapshot: SnapshotWrite,
    ) -> BoxFuture<'_, Result<(), StorageError>> {
        Box::pin(RedbStorage::put_snapshot(self, realm, snapshot))
    }

    fn load_snapshot(
        &self,
        realm: &RealmId,
    ) -> BoxFuture<'_, Result<Option<Snapshot>, StorageError>> {
        Box::pin(std::future::ready(RedbStorage::load_snapshot(self, realm)))
    }

    fn events_since(
        &self,
        realm: &RealmId,
        after_seq: u64,
    ) -> BoxFuture<'_, Result<Vec<EventRecord>, StorageError>> {
        Box::pin(std::future::ready(RedbStorage::events_since(
            self, realm, after_seq,
        )))
    }

    fn realm_meta(
        &self,
        realm: &RealmId,
    ) -> BoxFuture<'_, Result<Option<RealmMeta>, StorageError>> {
        Box::pin(std::future::ready(RedbStorage::realm_meta(self, realm)))
    }

    fn load_realm(
        &self,
        realm: &RealmId,
    ) -> BoxFuture<'_, Result<Option<RealmLoad>, StorageError>> {
        Box::pin(std::future::ready(RedbStorage::load_realm(self, realm)))
    }

    fn list_realms(
        &self,
        realm_type: &str,
        after: Option<&RealmId>,
        limit: usize,
    ) -> BoxFuture<'_, Result<RealmPage, StorageError>> {
        Box::pin(std::future::ready(RedbStorage::list_realms(
            self, realm_type, after, limit,
        )))
    }

    fn put_meta(
        &self,
        key: &str,
        value: Option<Vec<u8>>,
    ) -> BoxFuture<'_, Result<(), StorageError>> {
        Box::pin(RedbStorage::put_meta(self, key, value))
    }

    fn get_meta(&self, key: &str) -> BoxFuture<'_, Result<Option<Vec<u8>>, StorageError>> {
        Box::pin(std::future::ready(RedbStorage::get_meta(self, key)))
    }
}
