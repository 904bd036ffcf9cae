//! [`ClusterStorage`]: the [`Storage`] a cluster node runs on. Every write
//! goes through the realm's shard log (see [`super::log`]) and only then
//! into the local copy; every read is served by the local copy, which is
//! caught up for every shard this node owns. A write to a shard this node
//! does not own is refused with [`StorageError::NotOwner`].

use std::fmt;
use std::sync::Arc;

use futures::future::BoxFuture;

use super::log::{Applied, LogEntry, ShardLog};
use super::ownership::Ownership;
use crate::realm::{EventRecord, RealmId, shard_of};
use crate::storage::{
    AppendAck, AppendExtras, AppendRequest, DeadLetter, IdempotencyHit, IdempotencyRecord,
    InboxCursor, OutboxChange, OutboxKey, PendingMessage, RealmLoad, RealmMeta, RealmPage,
    Snapshot, SnapshotWrite, Storage, StorageError, StorageHealth, check,
};

/// The storage of a cluster node: the shard logs in front of a local copy.
pub(crate) struct ClusterStorage {
    local: Arc<dyn Storage>,
    logs: Vec<ShardLog>,
    ownership: Arc<Ownership>,
    max_entry_bytes: usize,
}

impl fmt::Debug for ClusterStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterStorage")
            .field("shards", &self.logs.len())
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

impl ClusterStorage {
    pub(crate) fn new(
        local: Arc<dyn Storage>,
        logs: Vec<ShardLog>,
        ownership: Arc<Ownership>,
        max_entry_bytes: usize,
    ) -> Self {
        Self {
            local,
            logs,
            ownership,
            max_entry_bytes,
        }
    }

    /// The local copy.
    pub(crate) fn local(&self) -> &Arc<dyn Storage> {
        &self.local
    }

    /// The shard logs, by shard.
    pub(crate) fn logs(&self) -> &[ShardLog] {
        &self.logs
    }

    fn shard(&self, realm: &RealmId) -> usize {
        shard_of(realm.as_str(), self.logs.len())
    }

    fn not_owner(&self, shard: usize) -> StorageError {
        StorageError::NotOwner {
            shard,
            owner: self.ownership.owner_of(shard),
        }
    }

    /// Log `entry` in `realm`'s shard, then apply it locally.
    fn write(
        &self,
        realm: &RealmId,
        entry: LogEntry,
    ) -> BoxFuture<'static, Result<Applied, StorageError>> {
        let shard = self.shard(realm);
        if !self.ownership.owns(shard) {
            return Box::pin(std::future::ready(Err(self.not_owner(shard))));
        }
        let rx = self.logs[shard].write(entry);
        Box::pin(async move { rx.await.map_err(|_| StorageError::Closed)? })
    }

    fn write_append(
        &self,
        req: AppendRequest,
        extras: AppendExtras,
    ) -> BoxFuture<'static, Result<AppendAck, StorageError>> {
        let realm = req.realm_id.clone();
        let f = self.write(
            &realm,
            LogEntry::Append {
                req: req.into(),
                extras,
            },
        );
        Box::pin(async move {
            match f.await? {
                Applied::Ack(a) => Ok(a),
                Applied::Done => Err(StorageError::Backend(
                    "an append applied without an ack".into(),
                )),
            }
        })
    }
}

impl Storage for ClusterStorage {
    fn append(&self, req: AppendRequest) -> BoxFuture<'_, Result<AppendAck, StorageError>> {
        self.write_append(req, AppendExtras::default())
    }

    fn append_idempotent(
        &self,
        req: AppendRequest,
        key: IdempotencyRecord,
    ) -> BoxFuture<'_, Result<AppendAck, StorageError>> {
        self.write_append(
            req,
            AppendExtras {
                idempotency: Some(key),
                ..AppendExtras::default()
            },
        )
    }

    fn append_with(
        &self,
        req: AppendRequest,
        extras: AppendExtras,
    ) -> BoxFuture<'_, Result<AppendAck, StorageError>> {
        self.write_append(req, extras)
    }

    fn change_outbox(
        &self,
        sender: &RealmId,
        seq: u64,
        index: u32,
        change: OutboxChange,
    ) -> BoxFuture<'_, Result<(), StorageError>> {
        let f = self.write(
            sender,
            LogEntry::Outbox {
                sender: sender.clone(),
                seq,
                index,
                change,
            },
        );
        Box::pin(async move { f.await.map(|_| ()) })
    }

    fn dead_letters(
        &self,
        after: Option<&OutboxKey>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<DeadLetter>, StorageError>> {
        self.local.dead_letters(after, limit)
    }

    fn pending_messages(
        &self,
        after: Option<&OutboxKey>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<PendingMessage>, StorageError>> {
        self.local.pending_messages(after, limit)
    }

    fn inbox_cursor(
        &self,
        target: &RealmId,
        sender: &RealmId,
    ) -> BoxFuture<'_, Result<Option<InboxCursor>, StorageError>> {
        self.local.inbox_cursor(target, sender)
    }

    fn idempotency_lookup(
        &self,
        realm: &RealmId,
        key: &str,
        now_ms: u64,
    ) -> BoxFuture<'_, Result<Option<IdempotencyHit>, StorageError>> {
        self.local.idempotency_lookup(realm, key, now_ms)
    }

    /// Logged like any write, so a node that takes the shard over starts
    /// from it; one too big for a log entry is kept locally only (another
    /// owner then replays further back: slower, not wrong).
    fn put_snapshot(
        &self,
        realm: &RealmId,
        snapshot: SnapshotWrite,
    ) -> BoxFuture<'_, Result<(), StorageError>> {
        let shard = self.shard(realm);
        if !self.ownership.owns(shard) {
            return Box::pin(std::future::ready(Err(self.not_owner(shard))));
        }
        let entry = LogEntry::Snapshot {
            realm: realm.clone(),
            write: snapshot,
        };
        // The encoded size decides; the entry is small next to the state.
        if entry.encode().len() > self.max_entry_bytes {
            let LogEntry::Snapshot { write, .. } = entry else {
                unreachable!("built above")
            };
            return self.local.put_snapshot(realm, write);
        }
        let f = self.write(realm, entry);
        Box::pin(async move { f.await.map(|_| ()) })
    }

    fn load_snapshot(
        &self,
        realm: &RealmId,
    ) -> BoxFuture<'_, Result<Option<Snapshot>, StorageError>> {
        self.local.load_snapshot(realm)
    }

    fn events_since(
        &self,
        realm: &RealmId,
        after_seq: u64,
    ) -> BoxFuture<'_, Result<Vec<EventRecord>, StorageError>> {
        self.local.events_since(realm, after_seq)
    }

    fn events_page(
        &self,
        realm: &RealmId,
        after_seq: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<EventRecord>, StorageError>> {
        self.local.events_page(realm, after_seq, limit)
    }

    fn realm_meta(
        &self,
        realm: &RealmId,
    ) -> BoxFuture<'_, Result<Option<RealmMeta>, StorageError>> {
        self.local.realm_meta(realm)
    }

    fn load_realm(
        &self,
        realm: &RealmId,
    ) -> BoxFuture<'_, Result<Option<RealmLoad>, StorageError>> {
        self.local.load_realm(realm)
    }

    fn list_realms(
        &self,
        realm_type: &str,
        after: Option<&RealmId>,
        limit: usize,
    ) -> BoxFuture<'_, Result<RealmPage, StorageError>> {
        self.local.list_realms(realm_type, after, limit)
    }

    fn realm_types(&self) -> BoxFuture<'_, Result<Vec<String>, StorageError>> {
        self.local.realm_types()
    }

    /// Node-local records (plugins, the shard monitor): not logged.
    fn put_meta(
        &self,
        key: &str,
        value: Option<Vec<u8>>,
    ) -> BoxFuture<'_, Result<(), StorageError>> {
        self.local.put_meta(key, value)
    }

    fn get_meta(&self, key: &str) -> BoxFuture<'_, Result<Option<Vec<u8>>, StorageError>> {
        self.local.get_meta(key)
    }

    fn health(&self) -> StorageHealth {
        self.local.health()
    }

    fn scrub(&self) -> Result<check::CheckReport, StorageError> {
        self.local.scrub()
    }
}
