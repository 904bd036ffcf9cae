//! [`Storage`] for [`RedbStorage`]: the trait methods forward to the inherent
//! ones, boxing their futures.

use futures::future::BoxFuture;

use super::RedbStorage;
use crate::realm::{EventRecord, RealmId};
use crate::storage::{
    AppendAck, AppendExtras, AppendRequest, DeadLetter, IdempotencyHit, IdempotencyRecord,
    InboxCursor, OutboxChange, OutboxKey, PendingMessage, RealmLoad, RealmMeta, RealmPage,
    Snapshot, SnapshotWrite, Storage, StorageError,
};

impl Storage for RedbStorage {
    fn append(&self, req: AppendRequest) -> BoxFuture<'_, Result<AppendAck, StorageError>> {
        Box::pin(RedbStorage::append(self, req))
    }

    fn append_idempotent(
        &self,
        req: AppendRequest,
        key: IdempotencyRecord,
    ) -> BoxFuture<'_, Result<AppendAck, StorageError>> {
        Box::pin(RedbStorage::append_idempotent(self, req, key))
    }

    fn append_with(
        &self,
        req: AppendRequest,
        extras: AppendExtras,
    ) -> BoxFuture<'_, Result<AppendAck, StorageError>> {
        Box::pin(RedbStorage::append_with(self, req, extras))
    }

    fn change_outbox(
        &self,
        sender: &RealmId,
        seq: u64,
        index: u32,
        change: OutboxChange,
    ) -> BoxFuture<'_, Result<(), StorageError>> {
        Box::pin(RedbStorage::change_outbox(self, sender, seq, index, change))
    }

    fn dead_letters(
        &self,
        after: Option<&OutboxKey>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<DeadLetter>, StorageError>> {
        Box::pin(std::future::ready(RedbStorage::dead_letters(
            self, after, limit,
        )))
    }

    fn pending_messages(
        &self,
        after: Option<&OutboxKey>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<PendingMessage>, StorageError>> {
        Box::pin(std::future::ready(RedbStorage::pending_messages(
            self, after, limit,
        )))
    }

    fn inbox_cursor(
        &self,
        target: &RealmId,
        sender: &RealmId,
    ) -> BoxFuture<'_, Result<Option<InboxCursor>, StorageError>> {
        Box::pin(std::future::ready(RedbStorage::inbox_cursor(
            self, target, sender,
        )))
    }

    fn idempotency_lookup(
        &self,
        realm: &RealmId,
        key: &str,
        now_ms: u64,
    ) -> BoxFuture<'_, Result<Option<IdempotencyHit>, StorageError>> {
        Box::pin(std::future::ready(RedbStorage::idempotency_lookup(
            self, realm, key, now_ms,
        )))
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

    fn events_page(
        &self,
        realm: &RealmId,
        after_seq: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<EventRecord>, StorageError>> {
        Box::pin(std::future::ready(RedbStorage::events_page(
            self, realm, after_seq, limit,
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

    fn realm_types(&self) -> BoxFuture<'_, Result<Vec<String>, StorageError>> {
        Box::pin(std::future::ready(RedbStorage::realm_types(self)))
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

    fn health(&self) -> crate::storage::StorageHealth {
        RedbStorage::health(self)
    }

    fn scrub(&self) -> Result<super::check::CheckReport, StorageError> {
        RedbStorage::scrub(self)
    }
}
