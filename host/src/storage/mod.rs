//! The durable layer: the event log, per-realm snapshots, realm metadata, a
//! realm inventory by type, and a small key/value table for other modules.
//!
//! [`Storage`] is the contract the node programs against; [`RedbStorage`] is
//! one redb file with its own committer, and [`PartitionedStorage`], the
//! embedded default, splits the log by realm over one or more of them so
//! that write throughput grows with cores. The trait is
//! object-safe and every method returns a boxed future so a distributed
//! backend (where a read is a network round trip) fits behind the same
//! `Arc<dyn Storage>` without changing callers.
//!
//! The contract, whatever the backend:
//! - [`Storage::append`] resolves only once the events are durable; a crash at
//!   any instant after the ack loses none of them.
//! - Per realm, seqs are `1, 2, 3, ...` without gaps. A request that would
//!   break that is rejected with a typed error and stores nothing; other
//!   requests are unaffected.
//! - The caller serializes appends per realm (one in flight per realm); the
//!   backend still checks continuity so a caller bug cannot corrupt a log.
//! - Everything is keyed by realm id, never by shard, so the shard count can
//!   change between restarts without moving data.
//! - A snapshot is a realm's state — an ordered map of byte keys to byte
//!   values — as of a seq. It is written whole ([`SnapshotBody::Full`]) or as
//!   the keys changed since the stored one ([`SnapshotBody::Delta`]), which
//!   costs in proportion to those keys, not to the map; it is read back
//!   whole. It never runs ahead of the realm's log, and the log remains the
//!   source of truth: a full replay can always rebuild the state.
//!
//! The on-disk layout and the crash invariants are in `docs/design-storage.md`.

mod codec;
mod error;
mod health;
mod messages;
pub mod partitioned;
mod redb_store;

#[cfg(test)]
mod tests;

use std::fmt;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

pub use error::StorageError;
pub use health::StorageHealth;
pub use messages::{
    AppendExtras, DeadLetter, DeliveryRecord, InboxCursor, OutboxChange, OutboxKey, OutboxRecord,
    PendingMessage, SettleRecord,
};
pub use partitioned::PartitionedStorage;
pub use partitioned::layout::{LAYOUT_FILE_NAME, MAX_PARTITIONS, partition_of};
pub use redb_store::{
    CommitterStats, DB_FILE_NAME, FORMAT_VERSION, FaultInjector, INLINE_SNAPSHOT_BYTES,
    RedbStorage, StorageConfig, check,
};

use crate::realm::{EventRecord, RealmId};
use crate::runtime::PluginVersion;
use crate::state::Bytes;

/// One append: consecutive events of one realm, stored atomically (all or
/// none).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppendRequest {
    /// Target realm; created by its first append (which must start at seq 1).
    pub realm_id: RealmId,
    /// The realm's type; must equal the stored type once the realm exists.
    pub realm_type: String,
    /// The plugin version that applied these events, recorded in the realm's
    /// metadata so a later load can tell whether its snapshot is still
    /// readable by the current plugin.
    pub plugin_version: PluginVersion,
    /// Events with seqs `last_seq + 1, last_seq + 2, ...`; at least one.
    pub events: Vec<EventRecord>,
}

/// An idempotency key stored with an append, in the same transaction (see
/// [`Storage::append_idempotent`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    /// The caller's key, unique per realm while unexpired.
    pub key: String,
    /// When the key expires (ms since the Unix epoch); after that a lookup
    /// ignores it and the key may be used again.
    pub expires_ms: u64,
    /// What the caller wants back on a retry (opaque to storage).
    pub receipt: Vec<u8>,
}

/// A stored, unexpired idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyHit {
    /// Seq of the event stored with the key (the last, for a batch).
    pub seq: u64,
    /// The receipt stored with it.
    pub receipt: Vec<u8>,
}

/// What a successful append reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendAck {
    /// The realm's last seq after the append.
    pub last_seq: u64,
    /// Whether this append created the realm.
    pub created: bool,
}

/// A realm's metadata, kept in step with its log in the same transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RealmMeta {
    /// The realm type (names the plugin).
    pub realm_type: String,
    /// Seq of the last stored event (at least 1: a realm exists from its
    /// first event on).
    pub last_seq: u64,
    /// Seq of the stored snapshot, 0 if none.
    pub last_snapshot_seq: u64,
    /// Plugin version of the last append.
    pub plugin_version: PluginVersion,
}

/// A realm's state as of `seq`, read back from storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The last event folded into `entries`.
    pub seq: u64,
    /// The plugin that wrote it; a different plugin may not be able to read
    /// it, in which case the loader replays from scratch.
    pub plugin_version: PluginVersion,
    /// The plugin's state (entry-layout) version that wrote it.
    pub state_version: u32,
    /// Every entry of the map, in ascending key order, no duplicates.
    pub entries: Vec<(Bytes, Bytes)>,
}

/// What [`Storage::put_snapshot`] writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotWrite {
    /// The last event folded into the map.
    pub seq: u64,
    /// The plugin that produced it.
    pub plugin_version: PluginVersion,
    /// The plugin's state (entry-layout) version.
    pub state_version: u32,
    /// The map, whole or as the changes since the stored snapshot.
    pub body: SnapshotBody,
}

/// The map of a [`SnapshotWrite`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapshotBody {
    /// The whole map (ascending, unique keys); replaces whatever was stored.
    /// Keys out of order or repeated are refused with
    /// [`StorageError::UnsortedSnapshot`].
    Full(Vec<(Bytes, Bytes)>),
    /// The keys changed since the stored snapshot at `base_seq`: `Some(value)`
    /// sets a key, `None` deletes it (deleting an absent key does nothing).
    /// Changes apply in order, so if a key appears more than once the last
    /// change wins. `base_seq` must be the stored snapshot's seq, or 0 for a
    /// realm without a snapshot (the changes then apply to the empty map);
    /// anything else is refused with [`StorageError::SnapshotBaseMismatch`].
    /// Costs in proportion to the changes, not to the map.
    Delta {
        /// Seq of the snapshot these changes apply to.
        base_seq: u64,
        /// The changed keys.
        changes: Vec<(Bytes, Option<Bytes>)>,
    },
}

/// Everything a lazy load needs, read in one consistent transaction: a
/// concurrent append is either wholly in it or wholly absent.
#[derive(Debug, Clone, PartialEq)]
pub struct RealmLoad {
    /// The realm's metadata.
    pub meta: RealmMeta,
    /// The latest snapshot, if any.
    pub snapshot: Option<Snapshot>,
    /// Events after the snapshot (or all events), in seq order.
    pub tail: Vec<EventRecord>,
}

/// A page of realm ids from [`Storage::list_realms`].
pub type RealmPage = Vec<RealmId>;

/// The durable store the node talks to. See the module docs for the contract.
///
/// Futures borrow `self`; hold the storage in an `Arc` to move work into
/// spawned tasks. `append`, `put_snapshot` and `put_meta` enqueue their write
/// when called (not when first polled), so two calls made in order from one
/// task are committed in that order even if their futures are awaited later.
pub trait Storage: Send + Sync + fmt::Debug {
    /// Append events to one realm; resolves after they are durable.
    fn append(&self, req: AppendRequest) -> BoxFuture<'_, Result<AppendAck, StorageError>>;

    /// [`Storage::append`] with an idempotency key stored in the same
    /// transaction. Refused with [`StorageError::IdempotencyKeyUsed`] (and
    /// nothing appended) if the realm already has that key unexpired. A
    /// backend without keys refuses every such append.
    fn append_idempotent(
        &self,
        req: AppendRequest,
        key: IdempotencyRecord,
    ) -> BoxFuture<'_, Result<AppendAck, StorageError>> {
        let _ = (req, key);
        Box::pin(std::future::ready(Err(StorageError::InvalidRequest(
            "this storage backend does not store idempotency keys".into(),
        ))))
    }

    /// [`Storage::append`] with everything in `extras` stored in the same
    /// transaction: an idempotency key, the messages the events send (the
    /// realm's outbox), the delivery the append makes (the realm's inbox
    /// cursor for the sender moves to it; a delivery at or below the cursor
    /// is refused with [`StorageError::AlreadyDelivered`]), the realm's own
    /// message it settles (refused with [`StorageError::NotInOutbox`] if
    /// already settled). All or nothing.
    /// A backend without messages refuses extras that carry any.
    fn append_with(
        &self,
        req: AppendRequest,
        extras: AppendExtras,
    ) -> BoxFuture<'_, Result<AppendAck, StorageError>> {
        if !extras.without_messages() {
            return Box::pin(std::future::ready(Err(StorageError::InvalidRequest(
                "this storage backend does not store messages".into(),
            ))));
        }
        match extras.idempotency {
            Some(key) => self.append_idempotent(req, key),
            None => self.append(req),
        }
    }

    /// Settle, dead-letter, revive or drop message `(sender, seq, index)`
    /// (see [`OutboxChange`]); resolves when durable. Refused with
    /// [`StorageError::NotInOutbox`] if the message is not where the change
    /// expects it (already settled, not dead), so each change happens once.
    /// A backend without messages holds none.
    fn change_outbox(
        &self,
        sender: &RealmId,
        seq: u64,
        index: u32,
        change: OutboxChange,
    ) -> BoxFuture<'_, Result<(), StorageError>> {
        let _ = change;
        Box::pin(std::future::ready(Err(StorageError::NotInOutbox {
            realm: sender.clone(),
            seq,
            index,
        })))
    }

    /// Dead letters, in [`OutboxKey`] order, starting after `after`
    /// (exclusive), at most `limit`.
    fn dead_letters(
        &self,
        after: Option<&OutboxKey>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<DeadLetter>, StorageError>> {
        let _ = (after, limit);
        Box::pin(std::future::ready(Ok(Vec::new())))
    }

    /// Messages still in outboxes, in [`OutboxKey`] order, starting after
    /// `after` (exclusive), at most `limit`.
    fn pending_messages(
        &self,
        after: Option<&OutboxKey>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<PendingMessage>, StorageError>> {
        let _ = (after, limit);
        Box::pin(std::future::ready(Ok(Vec::new())))
    }

    /// `target`'s inbox cursor for `sender`: the last message it took from
    /// it, `None` if none.
    fn inbox_cursor(
        &self,
        target: &RealmId,
        sender: &RealmId,
    ) -> BoxFuture<'_, Result<Option<InboxCursor>, StorageError>> {
        let _ = (target, sender);
        Box::pin(std::future::ready(Ok(None)))
    }

    /// The unexpired key `key` of `realm` at `now_ms`, if stored.
    fn idempotency_lookup(
        &self,
        realm: &RealmId,
        key: &str,
        now_ms: u64,
    ) -> BoxFuture<'_, Result<Option<IdempotencyHit>, StorageError>> {
        let _ = (realm, key, now_ms);
        Box::pin(std::future::ready(Ok(None)))
    }

    /// Store the realm's snapshot (durable on return), whole or as a delta
    /// onto the stored one. The realm must exist, `snapshot.seq` must be at
    /// least 1, not exceed its last seq, nor be older than the stored
    /// snapshot; a delta must name the stored snapshot's seq as its base. A
    /// refused write stores nothing.
    fn put_snapshot(
        &self,
        realm: &RealmId,
        snapshot: SnapshotWrite,
    ) -> BoxFuture<'_, Result<(), StorageError>>;

    /// The realm's latest snapshot.
    fn load_snapshot(
        &self,
        realm: &RealmId,
    ) -> BoxFuture<'_, Result<Option<Snapshot>, StorageError>>;

    /// Events with seq greater than `after_seq`, in seq order (empty for an
    /// unknown realm).
    fn events_since(
        &self,
        realm: &RealmId,
        after_seq: u64,
    ) -> BoxFuture<'_, Result<Vec<EventRecord>, StorageError>>;

    /// At most `limit` events with seq greater than `after_seq`, in seq order
    /// (empty for an unknown realm or past the end).
    fn events_page(
        &self,
        realm: &RealmId,
        after_seq: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<EventRecord>, StorageError>>;

    /// The realm's metadata, `None` if it has never been appended to.
    fn realm_meta(&self, realm: &RealmId)
    -> BoxFuture<'_, Result<Option<RealmMeta>, StorageError>>;

    /// Metadata, snapshot and tail in one consistent read.
    fn load_realm(&self, realm: &RealmId)
    -> BoxFuture<'_, Result<Option<RealmLoad>, StorageError>>;

    /// Realms of one type in id order, starting after `after` (exclusive), at
    /// most `limit`. Reads the inventory, never the log.
    fn list_realms(
        &self,
        realm_type: &str,
        after: Option<&RealmId>,
        limit: usize,
    ) -> BoxFuture<'_, Result<RealmPage, StorageError>>;

    /// Every realm type with at least one stored realm, in order. Reads the
    /// inventory, never the log.
    fn realm_types(&self) -> BoxFuture<'_, Result<Vec<String>, StorageError>>;

    /// Durably store (`Some`) or delete (`None`) a record of another module
    /// (e.g. the shard monitor's reputations) under `key`.
    fn put_meta(
        &self,
        key: &str,
        value: Option<Vec<u8>>,
    ) -> BoxFuture<'_, Result<(), StorageError>>;

    /// Read a record stored with [`Storage::put_meta`].
    fn get_meta(&self, key: &str) -> BoxFuture<'_, Result<Option<Vec<u8>>, StorageError>>;

    /// Whether writes are being accepted (readiness and metrics). A backend
    /// without failure tracking reports itself healthy.
    fn health(&self) -> StorageHealth {
        StorageHealth::healthy()
    }

    /// Read the whole store and report damaged records (see
    /// [`check`]). Blocking and long: call it from a blocking thread. A
    /// backend without a scrub refuses.
    fn scrub(&self) -> Result<check::CheckReport, StorageError> {
        Err(StorageError::InvalidRequest(
            "this storage backend has no scrub".into(),
        ))
    }
}
