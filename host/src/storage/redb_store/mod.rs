//! [`RedbStorage`]: the embedded default backend, one redb file per node.
//!
//! Layout (format version 3; the full rationale and the crash invariants are
//! in `docs/design-storage.md`):
//!
//! | table              | key                     | value                                   |
//! |--------------------|-------------------------|-----------------------------------------|
//! | `sys`              | `&str`                  | `u64` (`format_version`, `next_realm_no`, `index_floor`) |
//! | `log`              | `u64` log position      | realm no ‖ version no ‖ postcard event  |
//! | `log_index`        | `(realm_no, first_seq)` | run: count, version no, position deltas |
//! | `realms`           | realm id                | postcard `RealmRow`                     |
//! | `realms_by_type`   | `(realm_type, realm id)`| `()`                                    |
//! | `snapshots`        | `realm_no`              | header: seq, plugin and state version, entry count and bytes; small maps inline |
//! | `snapshot_entries` | `(realm_no, key)`       | value (maps too large to be inline)     |
//! | `versions`         | `u32` version no        | plugin version (32 bytes)               |
//! | `meta`             | `&str`                  | bytes (other modules' records)          |
//! | `idempotency`, `idempotency_ttl` | see `idempotency.rs` | keys of idempotent appends       |
//! | `outbox`, `inbox`, `dead_letters` | see `messages.rs` | messages sent, deliveries taken, messages given up on |
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
//!
//! **A snapshot costs what changed.** A realm's snapshot is a keyed map. A
//! small one (at most [`INLINE_SNAPSHOT_BYTES`] of keys and values by
//! default) lives
//! packed in its header; a larger one is one row per entry in
//! `snapshot_entries`, keyed by `(realm_no, key)`, so a delta updates only the
//! rows it changes (O(changes · log n)) and reading a map back is one range
//! scan. The header counts the entries and their bytes, which tells the
//! committer when a delta moves a map between the two layouts.
//!
//! Files: `open` (creating, opening, recovering), `upgrade` (format checks and
//! the format 2 → 3 upgrade), `committer` (the write API and group commit),
//! `writer` (one transaction's appends and checkpoints), `realm_cache` (what
//! the committer remembers per realm so checking an append needs no lookup),
//! `stats` (the committer's CPU per event), `snapshots` (snapshot writes and
//! reads), `read` (the read path), `storage_impl` (the trait).

pub mod check;
mod committer;
mod faults;
mod idempotency;
mod messages;
mod open;
mod read;
mod realm_cache;
mod recovery;
mod snapshots;
mod stats;
mod storage_impl;
mod upgrade;
mod writer;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc;
use std::thread::JoinHandle;

use parking_lot::RwLock;
use redb::TableDefinition;
use rustc_hash::FxHashMap;
use tokio::sync::oneshot;

pub use self::faults::FaultInjector;
use self::recovery::now_ms;
use self::snapshots::PreparedSnapshot;
pub use self::stats::CommitterStats;
use super::{AppendAck, StorageError};
use crate::realm::RealmId;
use crate::runtime::PluginVersion;

/// The on-disk format this build writes, and the newest it reads. Format 2
/// (opaque snapshot blobs) is upgraded on open; format 1 is refused.
pub const FORMAT_VERSION: u64 = 3;

/// Default of [`StorageConfig::inline_snapshot_bytes`]: the largest map, in
/// key plus value bytes, whose entries are stored inline in the snapshot
/// header rather than as rows of `snapshot_entries`.
pub const INLINE_SNAPSHOT_BYTES: u64 = 4096;

/// Name of the database file inside the data directory.
pub const DB_FILE_NAME: &str = "realmhost.redb";

const SYS: TableDefinition<&str, u64> = TableDefinition::new("sys");
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const INDEX: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("log_index");
const REALMS: TableDefinition<&str, &[u8]> = TableDefinition::new("realms");
const BY_TYPE: TableDefinition<(&str, &str), ()> = TableDefinition::new("realms_by_type");
const SNAPSHOTS: TableDefinition<u64, &[u8]> = TableDefinition::new("snapshots");
const SNAPSHOT_ENTRIES: TableDefinition<(u64, &[u8]), &[u8]> =
    TableDefinition::new("snapshot_entries");
const VERSIONS: TableDefinition<u32, &[u8]> = TableDefinition::new("versions");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const IDEMPOTENCY: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("idempotency");
const IDEMPOTENCY_TTL: TableDefinition<(u64, &str, &str), ()> =
    TableDefinition::new("idempotency_ttl");

const OUTBOX: TableDefinition<(&str, u64, u32), &[u8]> = TableDefinition::new("outbox");
const INBOX: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("inbox");
const DEAD_LETTERS: TableDefinition<(&str, u64, u32), &[u8]> = TableDefinition::new("dead_letters");

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
/// | `inline_snapshot_bytes` | 4096 ([`INLINE_SNAPSHOT_BYTES`]) |
/// | `retry_ms` | 1000 |
/// | `commit_linger_us` | 1000 (0: never wait) |
/// | `realm_cache` | 262 144 realms |
/// | `partitions` | 0: half the cores, at least 1 (fixed when the data directory is created) |
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
    /// Largest snapshot map, in key plus value bytes, packed into its header
    /// instead of stored as one row per entry. Every snapshot write decides
    /// the layout afresh and reads handle both, so changing it between
    /// restarts is safe; at most 1 MiB.
    pub inline_snapshot_bytes: u64,
    /// After a failed write (full disk, I/O error), how often the committer
    /// tries to reopen the file and commit again while no request arrives
    /// (every request also tries). Milliseconds.
    pub retry_ms: u64,
    /// Longest the committer waits for a batch to fill before it starts
    /// writing, in microseconds; it waits only when far fewer requests are
    /// queued than the previous batch held (at least 8), and never longer
    /// than half the previous commit took. Closed-loop writers acknowledged
    /// by one commit otherwise miss the next one, which starts at once with
    /// the few requests that made it: commits alternate full and nearly
    /// empty (measured on one hot realm pipelined from 64 writers).
    pub commit_linger_us: u64,
    /// Most realms whose number, type and last seq the committer keeps in
    /// memory (about 80 bytes each), so that checking an append needs no
    /// table lookup on the one thread all writes go through. Beyond it the
    /// cache is emptied and refills; 0 turns it off.
    pub realm_cache: usize,
    /// How many files ([`PartitionedStorage`](crate::storage::PartitionedStorage)
    /// partitions) a *new* data directory splits the log into, each with
    /// its own committer thread; 0 picks half the cores (at least 1). An
    /// existing directory keeps the count it was created with. A single
    /// [`RedbStorage`] ignores it.
    pub partitions: usize,
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
            inline_snapshot_bytes: INLINE_SNAPSHOT_BYTES,
            retry_ms: 1000,
            commit_linger_us: 1000,
            realm_cache: 256 * 1024,
            partitions: 0,
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
        if self.retry_ms == 0 {
            return Err("storage.retry_ms must be > 0".into());
        }
        if self.commit_linger_us > 100_000 {
            return Err("storage.commit_linger_us must be at most 100000 (0.1 s)".into());
        }
        if self.partitions > crate::storage::MAX_PARTITIONS {
            return Err(format!(
                "storage.partitions must be at most {}",
                crate::storage::MAX_PARTITIONS
            ));
        }
        if self.inline_snapshot_bytes > (1 << 20) {
            return Err("storage.inline_snapshot_bytes must be at most 1 MiB".into());
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
    /// Stored with the events, in the same transaction.
    idempotency: Option<super::IdempotencyRecord>,
    /// The messages the events send (checked by `messages::validate`).
    outbox: Vec<super::OutboxRecord>,
    /// The delivery this append takes.
    delivery: Option<super::DeliveryRecord>,
    /// The realm's own message this append settles.
    settle: Option<super::SettleRecord>,
}

/// A write waiting for the committer.
enum Op {
    Append(EncodedAppend, Reply<AppendAck>),
    Snapshot(RealmId, PreparedSnapshot, Reply<()>),
    Meta(String, Option<Vec<u8>>, Reply<()>),
    /// Settle, dead-letter, revive or drop one message.
    ChangeOutbox(RealmId, u64, u32, super::OutboxChange, Reply<()>),
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

/// The embedded, durable default [`Storage`](crate::storage::Storage).
///
/// Reads run on the caller's thread against an MVCC read transaction (they
/// never wait for a commit); writes are answered by the committer thread.
/// Dropping the storage finishes queued writes, folds the unindexed tail into
/// the index, then closes the file.
pub struct RedbStorage {
    db: Arc<recovery::DbCell>,
    path: PathBuf,
    unindexed: Arc<RwLock<Unindexed>>,
    tx: Option<mpsc::Sender<Op>>,
    committer: Option<JoinHandle<()>>,
    /// The committer's CPU totals ([`RedbStorage::committer_stats`]).
    stats: Arc<stats::StatsCell>,
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

    /// [`Self::push`] of a whole tail, moving its positions when the realm
    /// has no tail yet (the common case: no copy on the committer).
    fn push_tail(&mut self, no: u64, tail: Tail) {
        let Some(&oldest) = tail.positions.first() else {
            return;
        };
        match self.realms.entry(no) {
            std::collections::hash_map::Entry::Occupied(mut o) => {
                self.events += tail.positions.len();
                let t = o.get_mut();
                t.positions.extend_from_slice(&tail.positions);
                t.version_no = tail.version_no;
            }
            std::collections::hash_map::Entry::Vacant(v) => {
                self.events += tail.positions.len();
                v.insert(tail);
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
