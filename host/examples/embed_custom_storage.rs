//! A node over a storage backend of your own: anything that implements
//! `realmhost::storage::Storage`. This one wraps the embedded redb backend
//! and counts what the node asks of it — the shape of a metrics, tracing or
//! replication layer.
//!
//! ```sh
//! cargo run -p realmhost-examples --example embed_custom_storage
//! ```
//!
//! The contract a backend must keep (ordering of writes enqueued from one
//! task, atomic appends, seq continuity) is on the `Storage` trait.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::future::BoxFuture;
use realmhost::EventRecord;
use realmhost::node::{Node, NodeConfig};
use realmhost::realm::RealmId;
use realmhost::runtime::LoadOptions;
use realmhost::storage::{
    AppendAck, AppendRequest, IdempotencyHit, IdempotencyRecord, RealmLoad, RealmMeta, RealmPage,
    RedbStorage, Snapshot, SnapshotWrite, Storage, StorageError, StorageHealth,
};

/// Counts appends and snapshot writes, forwards everything.
#[derive(Debug)]
struct Counting {
    inner: Box<dyn Storage>,
    appends: AtomicU64,
    snapshots: AtomicU64,
}

impl Storage for Counting {
    fn append(&self, req: AppendRequest) -> BoxFuture<'_, Result<AppendAck, StorageError>> {
        self.appends.fetch_add(1, Ordering::Relaxed);
        self.inner.append(req)
    }
    fn append_idempotent(
        &self,
        req: AppendRequest,
        key: IdempotencyRecord,
    ) -> BoxFuture<'_, Result<AppendAck, StorageError>> {
        self.appends.fetch_add(1, Ordering::Relaxed);
        self.inner.append_idempotent(req, key)
    }
    fn idempotency_lookup(
        &self,
        realm: &RealmId,
        key: &str,
        now_ms: u64,
    ) -> BoxFuture<'_, Result<Option<IdempotencyHit>, StorageError>> {
        self.inner.idempotency_lookup(realm, key, now_ms)
    }
    fn put_snapshot(
        &self,
        realm: &RealmId,
        snapshot: SnapshotWrite,
    ) -> BoxFuture<'_, Result<(), StorageError>> {
        self.snapshots.fetch_add(1, Ordering::Relaxed);
        self.inner.put_snapshot(realm, snapshot)
    }
    fn load_snapshot(
        &self,
        realm: &RealmId,
    ) -> BoxFuture<'_, Result<Option<Snapshot>, StorageError>> {
        self.inner.load_snapshot(realm)
    }
    fn events_since(
        &self,
        realm: &RealmId,
        after_seq: u64,
    ) -> BoxFuture<'_, Result<Vec<EventRecord>, StorageError>> {
        self.inner.events_since(realm, after_seq)
    }
    fn events_page(
        &self,
        realm: &RealmId,
        after_seq: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<EventRecord>, StorageError>> {
        self.inner.events_page(realm, after_seq, limit)
    }
    fn realm_meta(
        &self,
        realm: &RealmId,
    ) -> BoxFuture<'_, Result<Option<RealmMeta>, StorageError>> {
        self.inner.realm_meta(realm)
    }
    fn load_realm(
        &self,
        realm: &RealmId,
    ) -> BoxFuture<'_, Result<Option<RealmLoad>, StorageError>> {
        self.inner.load_realm(realm)
    }
    fn list_realms(
        &self,
        realm_type: &str,
        after: Option<&RealmId>,
        limit: usize,
    ) -> BoxFuture<'_, Result<RealmPage, StorageError>> {
        self.inner.list_realms(realm_type, after, limit)
    }
    fn realm_types(&self) -> BoxFuture<'_, Result<Vec<String>, StorageError>> {
        self.inner.realm_types()
    }
    fn put_meta(
        &self,
        key: &str,
        value: Option<Vec<u8>>,
    ) -> BoxFuture<'_, Result<(), StorageError>> {
        self.inner.put_meta(key, value)
    }
    fn get_meta(&self, key: &str) -> BoxFuture<'_, Result<Option<Vec<u8>>, StorageError>> {
        self.inner.get_meta(key)
    }
    fn health(&self) -> StorageHealth {
        self.inner.health()
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let storage = Arc::new(Counting {
        inner: Box::new(RedbStorage::open(dir.path())?),
        appends: AtomicU64::new(0),
        snapshots: AtomicU64::new(0),
    });
    let mut config = NodeConfig::with_data_dir(dir.path());
    config.builtin_plugins = false;
    config.plugins_dir = None;
    config.snapshot_every = 10;
    let node = Node::open_with_storage(config, storage.clone() as Arc<dyn Storage>).await?;
    // The counter example plugin, from the component bytes the workspace builds.
    node.load_plugin(
        realmhost_plugin_artifacts::COUNTER.to_vec(),
        LoadOptions::activate(),
    )
    .await?;

    let realm = RealmId::new("tally")?;
    for _ in 0..25 {
        node.append_json(
            realm.clone(),
            "counter",
            "add",
            r#"{"add":2}"#,
            "example",
            None,
        )
        .await?;
    }
    println!("{}", node.query(&realm, "").await?);
    node.shutdown().await?;
    println!(
        "storage saw {} appends and {} snapshot writes",
        storage.appends.load(Ordering::Relaxed),
        storage.snapshots.load(Ordering::Relaxed)
    );
    Ok(())
}
