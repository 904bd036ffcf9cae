//! [`RedbStorage`]: the embedded default backend, one redb file per node.
//!
//! Layout (format version 1; the full rationale is in
//! `docs/design-storage.md`):
//!
//! | table            | key                     | value                                   |
//! |------------------|-------------------------|-----------------------------------------|
//! | `sys`            | `&str`                  | `u64` (`format_version`, `next_realm_no`) |
//! | `log`            | `u64` log position      | postcard `(realm_no, EventRecord)`      |
//! | `log_index`      | `(realm_no, first_seq)` | `(first_pos, count)` — one run per append |
//! | `realms`         | realm id                | postcard [`RealmRow`]                   |
//! | `realms_by_type` | `(realm_type, realm id)`| `()`                                    |
//! | `snapshots`      | `realm_no`              | seq ‖ plugin version ‖ state            |
//! | `meta`           | `&str`                  | bytes (other modules' records)          |
//!
//! The log is keyed by a global position that only grows, so every commit
//! appends at the right edge of the B-tree (the cheap case; inserting keyed by
//! `(realm, seq)` was measured 2–18× slower). Reading one realm goes through
//! `log_index`, which stores one 16-byte key per *append request*, not per
//! event, and whose runs point at contiguous log positions.
//!
//! All writes go through one committer thread that drains a channel and
//! commits everything it found in one `Durability::Immediate` transaction
//! (group commit). Requests are validated one by one inside that transaction;
//! a rejected request is skipped before it writes anything, so it never
//! spoils the batch for the others.

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;

use futures::future::BoxFuture;
use redb::{
    Database, Durability, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition,
    WriteTransaction,
};
use tokio::sync::oneshot;

use super::codec::{self, RealmRow};
use super::{
    AppendAck, AppendRequest, RealmLoad, RealmMeta, RealmPage, Snapshot, Storage, StorageError,
};
use crate::realm::{EventRecord, RealmId};

/// The on-disk format this build writes, and the newest it reads.
pub const FORMAT_VERSION: u64 = 1;

/// Name of the database file inside the data directory.
pub const DB_FILE_NAME: &str = "realmhost.redb";

const SYS: TableDefinition<&str, u64> = TableDefinition::new("sys");
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const INDEX: TableDefinition<(u64, u64), (u64, u64)> = TableDefinition::new("log_index");
const REALMS: TableDefinition<&str, &[u8]> = TableDefinition::new("realms");
const BY_TYPE: TableDefinition<(&str, &str), ()> = TableDefinition::new("realms_by_type");
const SNAPSHOTS: TableDefinition<u64, &[u8]> = TableDefinition::new("snapshots");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

const KEY_FORMAT: &str = "format_version";
const KEY_NEXT_REALM: &str = "next_realm_no";

/// Tuning of [`RedbStorage`].
#[derive(Debug, Clone)]
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
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            cache_bytes: 256 << 20,
            quick_repair: true,
            verify_on_open: false,
            max_batch: 8192,
        }
    }
}

type Reply<T> = oneshot::Sender<Result<T, StorageError>>;

/// A write waiting for the committer.
enum Op {
    Append(AppendRequest, Reply<AppendAck>),
    Snapshot(RealmId, Snapshot, Reply<()>),
    Meta(String, Option<Vec<u8>>, Reply<()>),
}

/// The embedded, durable default [`Storage`].
///
/// Reads run on the caller's thread against an MVCC read transaction (they
/// never wait for a commit); writes are answered by the committer thread.
/// Dropping the storage finishes queued writes, then closes the file.
pub struct RedbStorage {
    db: Arc<Database>,
    path: PathBuf,
    tx: Option<mpsc::Sender<Op>>,
    committer: Option<JoinHandle<()>>,
    repaired: bool,
}

impl fmt::Debug for RedbStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedbStorage")
            .field("path", &self.path)
            .field("repaired", &self.repaired)
            .finish()
    }
}

impl Drop for RedbStorage {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(h) = self.committer.take() {
            if h.join().is_err() {
                tracing::error!("storage committer panicked");
            }
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
        let db = Arc::new(guarded("creating", || Ok(builder.create(&tmp)?))?);
        init_format(&db)?;
    }
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// The committer's view of counters that live in memory between commits.
/// They only advance after a commit succeeds.
struct Counters {
    next_pos: u64,
    next_realm_no: u64,
}

impl RedbStorage {
    /// Open (or create) the database in `dir` with default tuning.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, StorageError> {
        Self::open_with(dir, StorageConfig::default())
    }

    /// Open (or create) the database in `dir`.
    ///
    /// Errors: [`StorageError::NewerFormat`] for a file written by a newer
    /// format, [`StorageError::Corrupt`] for a damaged or truncated file,
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
        let fresh = false;

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
        let counters = guarded("reading", || {
            if fresh {
                init_format(&db)
            } else {
                check_format(&db, &path)
            }
        })?;
        let repaired = repaired.load(Ordering::Relaxed);
        if repaired {
            tracing::warn!(path = %path.display(), "database was not shut down cleanly; redb ran a full repair");
        }

        let (tx, rx) = mpsc::channel();
        let committer = {
            let db = db.clone();
            std::thread::Builder::new()
                .name("storage-committer".into())
                .spawn(move || committer_loop(&db, &rx, counters, &config))?
        };
        Ok(Self {
            db,
            path,
            tx: Some(tx),
            committer: Some(committer),
            repaired,
        })
    }

    /// Whether opening had to run redb's full repair scan (an unclean shutdown
    /// with `quick_repair` off, or a damaged allocator state). With
    /// `quick_repair` on, a crash does not require it.
    pub fn opened_with_repair(&self) -> bool {
        self.repaired
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn submit(&self, op: Op) -> Result<(), StorageError> {
        self.tx
            .as_ref()
            .ok_or(StorageError::Closed)?
            .send(op)
            .map_err(|_| StorageError::Closed)
    }

    /// Enqueue an append; the returned future resolves after the commit.
    pub fn append(
        &self,
        req: AppendRequest,
    ) -> impl Future<Output = Result<AppendAck, StorageError>> + Send + 'static {
        let (reply, rx) = oneshot::channel();
        let sent = self.submit(Op::Append(req, reply));
        async move {
            sent?;
            rx.await.map_err(|_| StorageError::Closed)?
        }
    }

    /// Enqueue a snapshot write; resolves after the commit.
    pub fn put_snapshot(
        &self,
        realm: &RealmId,
        snapshot: Snapshot,
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
        snapshot: Snapshot,
    ) -> Result<(), StorageError> {
        futures::executor::block_on(self.put_snapshot(realm, snapshot))
    }

    /// [`Self::put_meta`] for synchronous callers.
    pub fn put_meta_blocking(&self, key: &str, value: Option<Vec<u8>>) -> Result<(), StorageError> {
        futures::executor::block_on(self.put_meta(key, value))
    }

    fn read(&self) -> Result<ReadTransaction, StorageError> {
        Ok(self.db.begin_read()?)
    }

    /// The realm's metadata.
    pub fn realm_meta(&self, realm: &RealmId) -> Result<Option<RealmMeta>, StorageError> {
        let txn = self.read()?;
        Ok(realm_row(&txn, realm)?.map(|r| r.meta()))
    }

    /// The realm's snapshot.
    pub fn load_snapshot(&self, realm: &RealmId) -> Result<Option<Snapshot>, StorageError> {
        let txn = self.read()?;
        match realm_row(&txn, realm)? {
            Some(row) => snapshot_of(&txn, &row),
            None => Ok(None),
        }
    }

    /// Events after `after_seq`, in seq order.
    pub fn events_since(
        &self,
        realm: &RealmId,
        after_seq: u64,
    ) -> Result<Vec<EventRecord>, StorageError> {
        let txn = self.read()?;
        match realm_row(&txn, realm)? {
            Some(row) => events_of(&txn, &row, after_seq),
            None => Ok(Vec::new()),
        }
    }

    /// Metadata, snapshot and the events after it, from one read transaction.
    #[tracing::instrument(name = "storage.load", skip_all, fields(realm = %realm, snapshot_seq, tail))]
    pub fn load_realm(&self, realm: &RealmId) -> Result<Option<RealmLoad>, StorageError> {
        let txn = self.read()?;
        let Some(row) = realm_row(&txn, realm)? else {
            return Ok(None);
        };
        let snapshot = snapshot_of(&txn, &row)?;
        let after = snapshot.as_ref().map_or(0, |s| s.seq);
        let tail = events_of(&txn, &row, after)?;
        let span = tracing::Span::current();
        span.record("snapshot_seq", after);
        span.record("tail", tail.len());
        Ok(Some(RealmLoad {
            meta: row.meta(),
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
        let txn = self.read()?;
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
        let txn = self.read()?;
        let table = txn.open_table(META)?;
        Ok(table.get(key)?.map(|v| v.value().to_vec()))
    }
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
fn init_format(db: &Database) -> Result<Counters, StorageError> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    {
        let mut sys = txn.open_table(SYS)?;
        if sys.get(KEY_FORMAT)?.is_none() {
            sys.insert(KEY_FORMAT, FORMAT_VERSION)?;
            sys.insert(KEY_NEXT_REALM, 1)?;
        }
        txn.open_table(LOG)?;
        txn.open_table(INDEX)?;
        txn.open_table(REALMS)?;
        txn.open_table(BY_TYPE)?;
        txn.open_table(SNAPSHOTS)?;
        txn.open_table(META)?;
    }
    txn.commit()?;
    check_format(db, Path::new(DB_FILE_NAME))
}

/// Check the format record and recover the committer's counters. Read-only:
/// a file we cannot handle is left exactly as it was.
fn check_format(db: &Database, path: &Path) -> Result<Counters, StorageError> {
    let txn = db.begin_read()?;
    let sys = match txn.open_table(SYS) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => {
            return Err(StorageError::NotRealmhost(path.display().to_string()));
        }
        Err(e) => return Err(e.into()),
    };
    let version = sys.get(KEY_FORMAT)?.map(|v| v.value());
    match version {
        None => return Err(StorageError::NotRealmhost(path.display().to_string())),
        Some(v) if v > FORMAT_VERSION => {
            return Err(StorageError::NewerFormat {
                found: v,
                supported: FORMAT_VERSION,
            });
        }
        Some(0) => return Err(StorageError::Corrupt("format version 0".into())),
        Some(_) => {}
    }
    let next_realm_no = sys
        .get(KEY_NEXT_REALM)?
        .map(|v| v.value())
        .ok_or_else(|| StorageError::Corrupt("missing next_realm_no".into()))?;
    let log = txn.open_table(LOG)?;
    let next_pos = match log.last()? {
        Some((k, _)) => k
            .value()
            .checked_add(1)
            .ok_or_else(|| StorageError::Corrupt("log position overflow".into()))?,
        None => 1,
    };
    Ok(Counters {
        next_pos,
        next_realm_no,
    })
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

/// Events of one realm after `after_seq`, checked against the metadata: every
/// seq from `after_seq + 1` to `last_seq` exactly once, in order, each entry
/// owned by this realm. Anything else is reported as corruption.
fn events_of(
    txn: &ReadTransaction,
    row: &RealmRow,
    after_seq: u64,
) -> Result<Vec<EventRecord>, StorageError> {
    if after_seq >= row.last_seq {
        return Ok(Vec::new());
    }
    let index = txn.open_table(INDEX)?;
    let log = txn.open_table(LOG)?;
    let start = after_seq + 1;
    let mut out = Vec::with_capacity(
        usize::try_from(row.last_seq - after_seq)
            .unwrap_or(0)
            .min(1 << 16),
    );

    // The run holding `start` is the last one beginning at or before it; the
    // rest begin after it.
    let mut runs = Vec::new();
    if let Some(item) = index.range((row.no, 0)..=(row.no, start))?.next_back() {
        let (k, v) = item?;
        runs.push((k.value().1, v.value()));
    }
    for item in index.range((row.no, start + 1)..=(row.no, u64::MAX))? {
        let (k, v) = item?;
        runs.push((k.value().1, v.value()));
    }

    let mut expected = start;
    for (first_seq, (first_pos, count)) in runs {
        let end_seq = first_seq.saturating_add(count);
        if end_seq <= start {
            continue;
        }
        let skip = expected.saturating_sub(first_seq);
        let from = first_pos.saturating_add(skip);
        let to = first_pos.saturating_add(count);
        for item in log.range(from..to)? {
            let (_, v) = item?;
            let (no, ev) = codec::decode_entry(v.value())?;
            if no != row.no || ev.seq != expected {
                return Err(StorageError::Corrupt(format!(
                    "realm #{}: expected seq {expected}, found realm #{no} seq {}",
                    row.no, ev.seq
                )));
            }
            out.push(ev);
            expected += 1;
        }
    }
    if expected != row.last_seq + 1 {
        return Err(StorageError::Corrupt(format!(
            "realm #{}: log ends at seq {} but metadata says {}",
            row.no,
            expected - 1,
            row.last_seq
        )));
    }
    Ok(out)
}

fn committer_loop(
    db: &Database,
    rx: &mpsc::Receiver<Op>,
    mut counters: Counters,
    config: &StorageConfig,
) {
    let max_batch = config.max_batch.max(1);
    while let Ok(first) = rx.recv() {
        // Everything that queued up while the previous commit was syncing
        // goes into this one: the batch size adapts to the load by itself,
        // with no timer adding latency when the system is idle.
        let mut ops = vec![first];
        while ops.len() < max_batch {
            match rx.try_recv() {
                Ok(op) => ops.push(op),
                Err(_) => break,
            }
        }
        commit_batch(db, &mut counters, ops, config);
    }
}

/// Outcome of one request inside a batch, held until the commit decides.
enum Done {
    Append(Reply<AppendAck>, Result<AppendAck, StorageError>),
    Unit(Reply<()>, Result<(), StorageError>),
}

fn commit_batch(db: &Database, counters: &mut Counters, ops: Vec<Op>, config: &StorageConfig) {
    let span = tracing::info_span!(
        "storage.commit",
        batch = ops.len(),
        realms = tracing::field::Empty,
        events = tracing::field::Empty
    );
    let _enter = span.enter();
    // Group-commit batch sizes, for the node's Prometheus metrics.
    metrics::histogram!("realmhost_commit_batch_requests").record(ops.len() as f64);
    let started = std::time::Instant::now();
    let mut next = Counters {
        next_pos: counters.next_pos,
        next_realm_no: counters.next_realm_no,
    };
    let mut done = Vec::with_capacity(ops.len());
    let mut ops = ops.into_iter();
    let mut realms = 0usize;
    let mut events = 0usize;

    let result = (|| -> Result<(), StorageError> {
        let mut txn = db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        txn.set_quick_repair(config.quick_repair);
        {
            let mut w = Writer::open(&txn)?;
            let start_realm_no = next.next_realm_no;
            for op in ops.by_ref() {
                // A fatal error still answers the request being processed
                // (with the batch's error, below) before aborting.
                let fatal = match op {
                    Op::Append(req, reply) => {
                        let n = req.events.len();
                        let (r, fatal) = split(w.append(&req, &mut next));
                        if r.is_ok() {
                            realms += 1;
                            events += n;
                        }
                        done.push(Done::Append(reply, r));
                        fatal
                    }
                    Op::Snapshot(realm, snap, reply) => {
                        let (r, fatal) = split(w.snapshot(&realm, &snap));
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
            if next.next_realm_no != start_realm_no {
                w.sys.insert(KEY_NEXT_REALM, next.next_realm_no)?;
            }
        }
        txn.commit()?;
        Ok(())
    })();
    span.record("realms", realms);
    span.record("events", events);
    metrics::histogram!("realmhost_commit_batch_events").record(events as f64);
    metrics::histogram!("realmhost_commit_seconds").record(started.elapsed().as_secs_f64());

    match result {
        Ok(()) => {
            *counters = next;
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
            // uncommitted); every waiter learns that, including requests that
            // were not reached yet.
            tracing::error!(error = %e, "storage commit failed");
            let msg = e.to_string();
            for d in done {
                match d {
                    Done::Append(reply, _) => {
                        drop(reply.send(Err(StorageError::CommitFailed(msg.clone()))))
                    }
                    Done::Unit(reply, _) => {
                        drop(reply.send(Err(StorageError::CommitFailed(msg.clone()))))
                    }
                }
            }
            for op in ops {
                let err = StorageError::CommitFailed(msg.clone());
                match op {
                    Op::Append(_, reply) => drop(reply.send(Err(err))),
                    Op::Snapshot(_, _, reply) | Op::Meta(_, _, reply) => drop(reply.send(Err(err))),
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

/// The tables of one write transaction.
struct Writer<'t> {
    sys: redb::Table<'t, &'static str, u64>,
    log: redb::Table<'t, u64, &'static [u8]>,
    index: redb::Table<'t, (u64, u64), (u64, u64)>,
    realms: redb::Table<'t, &'static str, &'static [u8]>,
    by_type: redb::Table<'t, (&'static str, &'static str), ()>,
    snapshots: redb::Table<'t, u64, &'static [u8]>,
    meta: redb::Table<'t, &'static str, &'static [u8]>,
}

/// Inner result: `Err` is fatal to the batch (a backend error mid-write), the
/// nested `Err` rejects only this request (nothing was written for it).
type Step<T> = Result<Result<T, StorageError>, StorageError>;

impl<'t> Writer<'t> {
    fn open(txn: &'t WriteTransaction) -> Result<Self, StorageError> {
        Ok(Self {
            sys: txn.open_table(SYS)?,
            log: txn.open_table(LOG)?,
            index: txn.open_table(INDEX)?,
            realms: txn.open_table(REALMS)?,
            by_type: txn.open_table(BY_TYPE)?,
            snapshots: txn.open_table(SNAPSHOTS)?,
            meta: txn.open_table(META)?,
        })
    }

    fn row(&self, realm: &RealmId) -> Result<Option<RealmRow>, StorageError> {
        let v = self.realms.get(realm.as_str())?;
        v.map(|v| codec::decode_realm(v.value())).transpose()
    }

    fn append(&mut self, req: &AppendRequest, next: &mut Counters) -> Step<AppendAck> {
        // Everything that can reject the request happens before the first
        // write, so a rejection leaves the transaction as it found it.
        let realm = &req.realm_id;
        let Some(first) = req.events.first() else {
            return Ok(Err(StorageError::InvalidRequest(format!(
                "append to {realm} has no events"
            ))));
        };
        if req.realm_type.is_empty() {
            return Ok(Err(StorageError::InvalidRequest(format!(
                "append to {realm} has an empty realm type"
            ))));
        }
        let existing = self.row(realm)?;
        let created = existing.is_none();
        let mut row = match existing {
            Some(row) if row.realm_type != req.realm_type => {
                return Ok(Err(StorageError::RealmTypeMismatch {
                    realm: realm.clone(),
                    stored: row.realm_type,
                    requested: req.realm_type.clone(),
                }));
            }
            Some(row) => row,
            None => RealmRow {
                no: next.next_realm_no,
                realm_type: req.realm_type.clone(),
                last_seq: 0,
                last_snapshot_seq: 0,
                plugin_version: req.plugin_version.0,
            },
        };
        if first.seq <= row.last_seq {
            return Ok(Err(StorageError::Duplicate {
                realm: realm.clone(),
                seq: first.seq,
                last_seq: row.last_seq,
            }));
        }
        let mut expected = row.last_seq + 1;
        let mut encoded = Vec::with_capacity(req.events.len());
        for ev in &req.events {
            if ev.seq != expected {
                return Ok(Err(StorageError::Gap {
                    realm: realm.clone(),
                    expected,
                    found: ev.seq,
                }));
            }
            match codec::encode_entry(row.no, ev) {
                Ok(bytes) => encoded.push(bytes),
                Err(e) => return Ok(Err(e)),
            }
            expected += 1;
        }
        let count = encoded.len() as u64;
        let first_pos = next.next_pos;
        let row_bytes = {
            row.last_seq = expected - 1;
            row.plugin_version = req.plugin_version.0;
            match codec::encode_realm(&row) {
                Ok(b) => b,
                Err(e) => return Ok(Err(e)),
            }
        };

        for (i, bytes) in encoded.iter().enumerate() {
            self.log.insert(first_pos + i as u64, bytes.as_slice())?;
        }
        self.index.insert((row.no, first.seq), (first_pos, count))?;
        self.realms.insert(realm.as_str(), row_bytes.as_slice())?;
        if created {
            self.by_type
                .insert((req.realm_type.as_str(), realm.as_str()), ())?;
            next.next_realm_no += 1;
        }
        next.next_pos += count;
        Ok(Ok(AppendAck {
            last_seq: row.last_seq,
            created,
        }))
    }

    fn snapshot(&mut self, realm: &RealmId, snap: &Snapshot) -> Step<()> {
        let Some(mut row) = self.row(realm)? else {
            return Ok(Err(StorageError::UnknownRealm(realm.clone())));
        };
        if snap.seq > row.last_seq {
            return Ok(Err(StorageError::SnapshotAhead {
                realm: realm.clone(),
                seq: snap.seq,
                last_seq: row.last_seq,
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
        row.last_snapshot_seq = snap.seq;
        let row_bytes = match codec::encode_realm(&row) {
            Ok(b) => b,
            Err(e) => return Ok(Err(e)),
        };
        self.snapshots
            .insert(row.no, codec::encode_snapshot(snap).as_slice())?;
        self.realms.insert(realm.as_str(), row_bytes.as_slice())?;
        Ok(Ok(()))
    }
}

impl Storage for RedbStorage {
    fn append(&self, req: AppendRequest) -> BoxFuture<'_, Result<AppendAck, StorageError>> {
        Box::pin(RedbStorage::append(self, req))
    }

    fn put_snapshot(
        &self,
        realm: &RealmId,
        snapshot: Snapshot,
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
