//! The append path: validate, serialize per realm, apply in the sandbox,
//! commit durably, snapshot when due, publish. See the module docs of
//! [`super`] for the steps and why they are in this order.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};

use super::messaging::Pending;
use super::messaging::send::{SendRefused, Sending, outbox_records};
use super::pipeline::Base;
use super::state::RealmState;
use super::{Node, NodeError, now_ms};
use crate::message::Inbound;
use crate::realm::{EventRecord, NewEvent, RealmId};
use crate::runtime::{ApplyOutcome, PluginVersion, Scope};
use crate::storage::{
    AppendExtras, AppendRequest, DeliveryRecord, IdempotencyRecord, OutboxKey, SettleRecord,
    Storage, StorageError,
};

/// What an append made by the message machinery carries besides its event.
#[derive(Debug, Clone)]
pub(crate) struct MessageCtx {
    /// The origin (and reply) the event records and the plugin sees.
    pub inbound: Inbound,
    /// Set for a delivery: the target's inbox cursor moves in the same
    /// commit.
    pub delivery: Option<DeliveryRecord>,
    /// Set for a reply: the sender's outbox row goes in the same commit.
    pub settle: Option<SettleRecord>,
}

/// What an acknowledged append reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendReceipt {
    /// The realm.
    pub realm_id: String,
    /// Seq assigned to the event.
    pub seq: u64,
    /// The realm's shard.
    pub shard: usize,
    /// Plugin version that applied the event.
    pub plugin_version: PluginVersion,
    /// Fuel the plugin burned.
    pub fuel: u64,
    /// Gas charged to the source shard (fuel × penalty multiplier).
    pub gas: u64,
    /// Host timestamp of the event.
    pub timestamp_ms: u64,
    /// This receipt is the one an earlier append with the same idempotency
    /// key got: nothing was appended now.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replayed: bool,
}

/// Conditions of an append ([`Node::append_with`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendOptions {
    /// Makes retries safe: an append whose key the realm has already seen
    /// within `idempotency_window_secs` (also across restarts) appends
    /// nothing and returns the original receipt (`replayed` set). Keys are
    /// per realm: 1 to [`MAX_IDEMPOTENCY_KEY_BYTES`] bytes without control
    /// characters.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// Optimistic concurrency: append only if the realm's last seq (0 for a
    /// realm without events) is this one, else fail with
    /// [`NodeError::SeqConflict`]. Events still being committed count.
    #[serde(default)]
    pub expected_seq: Option<u64>,
}

/// Longest idempotency key.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 128;

impl Node {
    fn validate(&self, ev: &NewEvent) -> Result<(), NodeError> {
        let l = &self.config.limits;
        let bad = |m: String| Err(NodeError::InvalidInput(m));
        if ev.payload.len() > l.max_payload_bytes {
            return bad(format!(
                "payload is {} bytes; the limit is {}",
                ev.payload.len(),
                l.max_payload_bytes
            ));
        }
        if ev.kind.len() > l.max_kind_bytes || ev.kind.chars().any(char::is_control) {
            return bad(format!(
                "kind must be at most {} bytes without control characters",
                l.max_kind_bytes
            ));
        }
        if ev.source.is_empty()
            || ev.source.len() > l.max_source_bytes
            || ev.source.chars().any(char::is_control)
        {
            return bad(format!(
                "source must be 1..={} bytes without control characters",
                l.max_source_bytes
            ));
        }
        Ok(())
    }

    /// Append one event; returns after it is durable.
    pub async fn append(&self, ev: NewEvent) -> Result<AppendReceipt, NodeError> {
        self.append_with(ev, AppendOptions::default()).await
    }

    /// Append one event under `options` (an idempotency key, an expected
    /// seq); returns after it is durable.
    #[tracing::instrument(name = "node.append", skip_all, fields(realm = %ev.realm_id, realm_type = %ev.realm_type))]
    pub async fn append_with(
        &self,
        ev: NewEvent,
        options: AppendOptions,
    ) -> Result<AppendReceipt, NodeError> {
        self.append_counted(ev, options, None).await
    }

    /// Append a delivered message or a reply (see `messaging`).
    #[tracing::instrument(name = "node.append_message", skip_all, fields(realm = %ev.realm_id, message = %ctx.inbound.origin.message_id, chain = %ctx.inbound.origin.chain_id))]
    pub(crate) async fn append_message(
        &self,
        ev: NewEvent,
        ctx: MessageCtx,
    ) -> Result<AppendReceipt, NodeError> {
        self.append_counted(ev, AppendOptions::default(), Some(ctx))
            .await
    }

    async fn append_counted(
        &self,
        ev: NewEvent,
        options: AppendOptions,
        msg: Option<MessageCtx>,
    ) -> Result<AppendReceipt, NodeError> {
        let (id, realm_type) = (ev.realm_id.clone(), ev.realm_type.clone());
        let result = self.append_inner(ev, options, msg).await;
        if matches!(&result, Ok(r) if r.replayed) {
            self.counters.replays.fetch_add(1, Ordering::Relaxed);
            return result;
        }
        if let Err(NodeError::Plugin(e)) = &result {
            self.note_fault(&id, &realm_type, e);
        }
        match &result {
            Ok(_) => self.counters.appends.fetch_add(1, Ordering::Relaxed),
            Err(NodeError::Rejected { .. }) => {
                self.counters.rejections.fetch_add(1, Ordering::Relaxed)
            }
            Err(e) => {
                if matches!(e, NodeError::PipelineAborted { .. }) {
                    self.pipeline.aborted.fetch_add(1, Ordering::Relaxed);
                }
                self.counters.failures.fetch_add(1, Ordering::Relaxed)
            }
        };
        result
    }

    async fn append_inner(
        &self,
        ev: NewEvent,
        options: AppendOptions,
        msg: Option<MessageCtx>,
    ) -> Result<AppendReceipt, NodeError> {
        if self.shutting_down.load(Ordering::Acquire) {
            return Err(NodeError::ShuttingDown);
        }
        self.validate(&ev)?;
        let key = options.idempotency_key.as_deref();
        if let Some(k) = key
            && (k.is_empty()
                || k.len() > MAX_IDEMPOTENCY_KEY_BYTES
                || k.chars().any(char::is_control))
        {
            return Err(NodeError::InvalidInput(format!(
                "idempotency key must be 1..={MAX_IDEMPOTENCY_KEY_BYTES} bytes without control characters"
            )));
        }
        self.check_parked(&ev.realm_id)?;
        let plugin = self.registry.get(&ev.realm_type)?;
        let shard = self.shard_of(ev.realm_id.as_str());
        // A delivered message is charged to its sender's shard: its
        // reputation damps the event, its gas is the sender's. (Crossings
        // are counted when the message's outcome is settled, once.)
        let source_shard = msg
            .as_ref()
            .filter(|m| m.delivery.is_some())
            .map_or(shard, |m| {
                self.shard_of(m.inbound.origin.source_realm.as_str())
            });
        let watch = self.config.monitor_enabled;

        let id = ev.realm_id.clone();
        let lock = self.lock_for(id.as_str()).lock().await;
        // What this event builds on: the speculative tip of the realm's
        // events in flight, else its durable state (see `pipeline`).
        let base = loop {
            match self
                .pipeline
                .base(&id, key, |s| s.plugin_version() == plugin.version())
            {
                Base::Tip(state) => break Some(state),
                Base::Drain(drained) => self.pipeline.drain(&id, drained).await,
                Base::Durable => {
                    let current = match self.current(&id).await {
                        Ok(s) => Some(s),
                        Err(NodeError::RealmNotFound(_)) => None,
                        Err(e) => return Err(e),
                    };
                    let current = match current {
                        Some(s) if s.realm_type() == ev.realm_type => {
                            Some(self.ensure_version(&id, s, &plugin).await?)
                        }
                        other => other,
                    };
                    break current;
                }
            }
        };
        // No event with this key is in flight now: it is stored, or was not.
        if let Some(k) = key
            && let Some(receipt) = self.stored_receipt(&id, k).await?
        {
            return Ok(receipt);
        }
        if let Some(s) = base.as_ref().filter(|s| s.realm_type() != ev.realm_type) {
            return Err(NodeError::RealmTypeMismatch {
                realm: id.clone(),
                actual: s.realm_type().to_owned(),
                requested: ev.realm_type.clone(),
            });
        }
        // A new realm gets its room in memory before its first event is
        // durable: with lazy loading off the store evicts nothing and refuses
        // realms beyond its limits, and a durable realm it could not hold
        // would be unreachable. Held until the state is published.
        let _room = match base {
            None => Some(self.store.reserve(id.as_str())?),
            Some(_) => None,
        };
        let base_seq = base.as_ref().map_or(0, |s| s.seq());
        if let Some(expected) = options.expected_seq
            && expected != base_seq
        {
            return Err(NodeError::SeqConflict {
                realm: id,
                expected,
                actual: base_seq,
            });
        }
        // A new realm starts from the entries its plugin's `init` writes.
        // Plugin calls run on the execution pool, never on this async worker.
        let base_map = match &base {
            Some(s) => s.map().clone(),
            None => {
                let (p, rid) = (Arc::clone(&plugin), id.clone());
                let init = self
                    .call_plugin(plugin.realm_type(), move || p.init(rid.as_str()))
                    .await??;
                match init.value {
                    Ok(w) => w.map,
                    Err(message) => {
                        return Err(NodeError::PluginInvalid {
                            realm: id.clone(),
                            realm_type: plugin.realm_type().to_owned(),
                            message: format!("init failed: {message}"),
                        });
                    }
                }
            }
        };

        let reputation = if watch {
            self.monitor.reputation(source_shard)
        } else {
            1.0
        };
        let (inbound, delivery, settle) = match msg {
            Some(m) => (Some(Box::new(m.inbound)), m.delivery, m.settle),
            None => (None, None, None),
        };
        let record = EventRecord {
            seq: base_seq + 1,
            kind: ev.kind,
            payload: ev.payload,
            source: ev.source,
            // Set by the host for a message; otherwise only the trusted
            // import path sets it (the HTTP API refuses it).
            source_realm: match &inbound {
                Some(i) => Some(i.origin.source_realm.to_string()),
                None => ev.source_realm.map(String::from),
            },
            timestamp_ms: now_ms(),
            source_reputation: reputation,
            message: inbound,
        };
        let (p, rid) = (Arc::clone(&plugin), id.clone());
        let (applied, record) = self
            .call_plugin(plugin.realm_type(), move || {
                let applied = p.apply(Scope::new(rid.as_str(), &base_map), &record);
                (applied, record)
            })
            .await?;
        let metered = applied?;
        let gas = if watch {
            self.monitor.record_gas(source_shard, metered.fuel)
        } else {
            metered.fuel
        };
        let realm_type = || plugin.realm_type().to_owned();
        let (written, sent) = match metered.value {
            ApplyOutcome::Applied(w, sent) => (w, sent),
            ApplyOutcome::Rejected(rejection) => {
                return Err(NodeError::Rejected {
                    realm: id.clone(),
                    realm_type: realm_type(),
                    rejection,
                });
            }
            ApplyOutcome::Invalid(message) => {
                return Err(NodeError::PluginInvalid {
                    realm: id.clone(),
                    realm_type: realm_type(),
                    message,
                });
            }
        };
        // The messages the event sends, checked against the limits: they
        // are stored with it or not at all.
        let outbox = if sent.is_empty() {
            Vec::new()
        } else {
            let from = Sending {
                sender: &id,
                sender_type: plugin.realm_type(),
                seq: record.seq,
                timestamp_ms: record.timestamp_ms,
                inbound: record.message.as_deref(),
            };
            let pending = self.messenger.pending_of(&id);
            match outbox_records(self.messenger.config(), &from, sent, pending) {
                Ok(o) => o,
                Err(SendRefused::Invalid(message)) => {
                    return Err(NodeError::PluginInvalid {
                        realm: id.clone(),
                        realm_type: realm_type(),
                        message: format!("refused message: {message}"),
                    });
                }
                Err(SendRefused::OutboxFull(rejection)) => {
                    return Err(NodeError::Rejected {
                        realm: id.clone(),
                        realm_type: realm_type(),
                        rejection,
                    });
                }
            }
        };

        let seq = record.seq;
        let timestamp_ms = record.timestamp_ms;
        let source = record.source.clone();
        let built_by = match &base {
            Some(s) if s.plugin_version() == plugin.version() => s.built_by(),
            _ => plugin.tag().clone(),
        };
        let state = match &base {
            Some(s) => s.next(built_by, seq, written.map, &written.changes),
            None => RealmState::new(built_by, seq, 0, written.map),
        };
        // Enqueued now, in this order, under the realm's lock: storage
        // commits them in that order (the `Storage` contract), so the next
        // event of this realm queues behind this one.
        let receipt = AppendReceipt {
            realm_id: id.to_string(),
            seq,
            shard,
            plugin_version: plugin.version(),
            fuel: metered.fuel,
            gas,
            timestamp_ms,
            replayed: false,
        };
        let request = AppendRequest {
            realm_id: id.clone(),
            realm_type: plugin.realm_type().to_owned(),
            plugin_version: plugin.version(),
            events: vec![record],
        };
        let idempotency = match key {
            None => None,
            Some(k) => {
                let window_ms = self.config.idempotency_window_secs.saturating_mul(1000);
                Some(IdempotencyRecord {
                    key: k.to_owned(),
                    expires_ms: timestamp_ms.saturating_add(window_ms),
                    receipt: serde_json::to_vec(&receipt)
                        .map_err(|e| NodeError::InvalidInput(format!("receipt encoding: {e}")))?,
                })
            }
        };
        let mut queued = Vec::with_capacity(outbox.len());
        let mut records = Vec::with_capacity(outbox.len());
        for (record, message) in outbox {
            queued.push(Pending {
                id: OutboxKey {
                    sender: id.clone(),
                    seq: record.seq,
                    index: record.index,
                },
                message: Arc::new(message),
            });
            records.push(record);
        }
        // Queued now, under the realm's lock, so the realm's messages queue
        // in send order; counted against its limit before the commit, so
        // pipelined events see each other's. Delivered once durable.
        self.messenger.stage(&queued);
        let append = if records.is_empty() && delivery.is_none() && settle.is_none() {
            match idempotency {
                None => self.storage.append(request),
                Some(k) => self.storage.append_idempotent(request, k),
            }
        } else {
            self.storage.append_with(
                request,
                AppendExtras {
                    idempotency,
                    outbox: records,
                    delivery,
                    settle,
                },
            )
        };
        let (tip, snapshot) = if seq - state.snapshot_seq() >= self.config.snapshot_every {
            let write = self.storage.put_snapshot(&id, state.snapshot_write(false));
            (state.snapshotted(), Some((write, state)))
        } else {
            (state, None)
        };
        let tip = Arc::new(tip);
        let flight = self.pipeline.enqueued(&id, Arc::clone(&tip), key);
        // Pipelining: the next event of this realm may be applied now.
        // Without it the lock is held until this event has settled.
        let lock = (!self.config.pipelining).then_some(lock);

        let result = append.await;
        if result.is_err() {
            self.messenger.withdraw(&queued);
        }
        match result {
            // Durable: publish (unless a later event of the realm already
            // published a newer state), and hand the messages to delivery.
            Ok(_) => {
                self.pipeline.committed(&id, flight, &tip, |s| {
                    self.store.upsert_arc(id.as_str(), s);
                });
                self.messenger.confirm(&queued);
            }
            Err(StorageError::IdempotencyKeyUsed { key, .. }) => {
                // Only when a key's event was stored by another path than
                // this node's flights (the check above runs under the
                // realm's lock): answer as for any retry.
                self.pipeline.failed(&id, flight, seq);
                return match self.stored_receipt(&id, &key).await? {
                    Some(r) => Ok(r),
                    None => Err(NodeError::PipelineAborted {
                        realm: id,
                        seq,
                        failed_seq: None,
                    }),
                };
            }
            Err(e) => {
                let earlier = self.pipeline.failed(&id, flight, seq);
                return Err(match (earlier, e) {
                    (Some(failed_seq), _) => NodeError::PipelineAborted {
                        realm: id,
                        seq,
                        failed_seq: Some(failed_seq),
                    },
                    // Storage found the event before this one missing: it was
                    // enqueued ahead of this one and its commit failed.
                    (None, StorageError::Gap { .. }) => NodeError::PipelineAborted {
                        realm: id,
                        seq,
                        failed_seq: None,
                    },
                    (None, e) => self.append_storage_failed(&id, e),
                });
            }
        }
        drop(lock);
        if let Some((write, state)) = snapshot {
            self.finish_snapshot(&id, write.await, &state).await;
        }
        if watch {
            self.monitor.record_event(shard, &source);
        }
        Ok(receipt)
    }

    /// The receipt stored with idempotency key `key` of realm `id`, if the
    /// key is stored and unexpired.
    async fn stored_receipt(
        &self,
        id: &RealmId,
        key: &str,
    ) -> Result<Option<AppendReceipt>, NodeError> {
        let Some(hit) = self.storage.idempotency_lookup(id, key, now_ms()).await? else {
            return Ok(None);
        };
        let mut receipt: AppendReceipt =
            serde_json::from_slice(&hit.receipt).map_err(|e| StorageError::RealmCorrupt {
                realm: id.clone(),
                reason: format!("idempotency receipt of event {}: {e}", hit.seq),
            })?;
        receipt.replayed = true;
        Ok(Some(receipt))
    }

    /// Count the outcome of a snapshot enqueued with an event. If storage
    /// holds another base than the delta was computed against (an eviction
    /// snapshot landed in between), the whole map of `state` is written.
    async fn finish_snapshot(
        &self,
        id: &RealmId,
        result: Result<(), StorageError>,
        state: &RealmState,
    ) {
        let result = match result {
            Err(StorageError::SnapshotBaseMismatch { stored_seq, .. })
                if stored_seq < state.seq() =>
            {
                self.storage
                    .put_snapshot(id, state.snapshot_write(true))
                    .await
            }
            other => other,
        };
        match result {
            Ok(()) => {
                self.counters.snapshots.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                self.counters
                    .snapshot_failures
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(realm = %id, error = %e, "snapshot failed; the log still holds every event");
            }
        }
    }

    /// Append an event given as JSON: the realm type's plugin encodes it.
    pub async fn append_json(
        &self,
        realm_id: RealmId,
        realm_type: &str,
        kind: &str,
        json: &str,
        source: &str,
        source_realm: Option<RealmId>,
    ) -> Result<AppendReceipt, NodeError> {
        let payload = self.encode_json(&realm_id, realm_type, kind, json).await?;
        self.append(NewEvent {
            realm_id,
            realm_type: realm_type.to_owned(),
            kind: kind.to_owned(),
            payload,
            source: source.to_owned(),
            source_realm,
        })
        .await
    }

    /// The payload bytes of an event given as JSON, encoded by the realm
    /// type's plugin (on the execution pool; for [`Self::append_with`]).
    pub async fn encode_json(
        &self,
        realm_id: &RealmId,
        realm_type: &str,
        kind: &str,
        json: &str,
    ) -> Result<Vec<u8>, NodeError> {
        if json.len() > self.config.limits.max_payload_bytes {
            return Err(NodeError::InvalidInput(format!(
                "event JSON is {} bytes; the limit is {}",
                json.len(),
                self.config.limits.max_payload_bytes
            )));
        }
        // A parked realm costs no plugin work, not even the encoding.
        self.check_parked(realm_id)?;
        let plugin = self.registry.get(realm_type)?;
        let (kind, json) = (kind.to_owned(), json.to_owned());
        let encoded = self
            .call_plugin(realm_type, move || plugin.encode_event(&kind, &json))
            .await??;
        encoded.map_err(|message| NodeError::PluginInvalid {
            realm: realm_id.clone(),
            realm_type: realm_type.to_owned(),
            message,
        })
    }
}

/// Write `state`'s snapshot: a delta against the stored one when possible.
/// If storage holds another base than the one the delta was computed
/// against (an eviction snapshot landed in between), the whole map is
/// written instead.
pub(super) async fn write_snapshot(
    storage: &dyn Storage,
    id: &RealmId,
    state: &RealmState,
) -> Result<(), StorageError> {
    match storage.put_snapshot(id, state.snapshot_write(false)).await {
        Err(StorageError::SnapshotBaseMismatch { stored_seq, .. }) if stored_seq < state.seq() => {
            storage.put_snapshot(id, state.snapshot_write(true)).await
        }
        other => other,
    }
}
