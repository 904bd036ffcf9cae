//! A shard's replicated log: one JetStream stream per shard, holding every
//! write to the shard's realms in order, and the node's local copy of it.
//!
//! **Writes.** The owner publishes each write with the stream's expected
//! last sequence and the expected id of the last entry
//! (`Nats-Expected-Last-Sequence`, `Nats-Expected-Last-Msg-Id`): it is the
//! only writer, so it knows both for each publish and keeps many in flight
//! (pipelined, in call order, over one connection). The moment another node
//! claims the shard its claim entry becomes the stream's last entry, and
//! every later publish of the old owner fails there: whatever the old owner
//! believes, none of its writes lands after a takeover (fencing in the log
//! itself). The id matters: when one write in flight fails, the next one's
//! expected *position* may well be the claim's, but its expected *id* is
//! the failed write's, which is nowhere in the stream.
//! A write is applied to the local storage only after JetStream acknowledged
//! it durably, and answered after that: the log, replicated, is never
//! behind an acknowledged write.
//!
//! **Failures.** A publish the log refuses (fenced, timed out) fails that
//! write and every write behind it (their expected sequences can no longer
//! match); the log is then marked failed and the coordinator gives the
//! shard up, to claim it again (catching up from the log) if it is still
//! the right owner.
//!
//! **The local copy** is the node's storage (redb), caught up from the log
//! when the node claims the shard: [`catch_up`] applies the entries after
//! the last one the copy holds. Applying is idempotent: an entry already in
//! the copy is refused by the copy's own checks (duplicate seq, settled
//! message, stale snapshot) and skipped, so the cursor of applied entries
//! may lag without harm.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use async_nats::jetstream;
use async_nats::jetstream::context::PublishAckFuture;
use async_nats::jetstream::message::PublishMessage;
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use super::ClusterError;
use crate::message::Inbound;
use crate::realm::{EventRecord, RealmId};
use crate::runtime::PluginVersion;
use crate::storage::{
    AppendAck, AppendExtras, AppendRequest, OutboxChange, SnapshotWrite, Storage, StorageError,
};

/// One write to a shard, as its log holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum LogEntry {
    /// A node took the shard (fences the previous owner's writes).
    Claim {
        /// The claiming node.
        node: String,
        /// Its lease revision.
        epoch: u64,
    },
    /// Events of one realm, with their messages, delivery, settle, key.
    Append {
        /// The events.
        req: WireAppend,
        /// What goes in the same transaction.
        extras: AppendExtras,
    },
    /// A change to a message in an outbox.
    Outbox {
        /// The sending realm.
        sender: RealmId,
        /// Seq of the sending event.
        seq: u64,
        /// Index within that event's messages.
        index: u32,
        /// The change.
        change: OutboxChange,
    },
    /// A realm's snapshot.
    Snapshot {
        /// The realm.
        realm: RealmId,
        /// The snapshot.
        write: SnapshotWrite,
    },
}

/// An [`AppendRequest`] as the log holds it: postcard needs every field
/// written, so the events are carried without the JSON-only attributes of
/// [`EventRecord`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct WireAppend {
    realm_id: RealmId,
    realm_type: String,
    plugin_version: PluginVersion,
    events: Vec<WireEvent>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct WireEvent {
    seq: u64,
    kind: String,
    payload: Vec<u8>,
    source: String,
    source_realm: Option<String>,
    timestamp_ms: u64,
    source_reputation: f64,
    message: Option<Box<Inbound>>,
}

impl From<AppendRequest> for WireAppend {
    fn from(r: AppendRequest) -> Self {
        Self {
            realm_id: r.realm_id,
            realm_type: r.realm_type,
            plugin_version: r.plugin_version,
            events: r
                .events
                .into_iter()
                .map(|e| WireEvent {
                    seq: e.seq,
                    kind: e.kind,
                    payload: e.payload,
                    source: e.source,
                    source_realm: e.source_realm,
                    timestamp_ms: e.timestamp_ms,
                    source_reputation: e.source_reputation,
                    message: e.message,
                })
                .collect(),
        }
    }
}

impl From<WireAppend> for AppendRequest {
    fn from(r: WireAppend) -> Self {
        Self {
            realm_id: r.realm_id,
            realm_type: r.realm_type,
            plugin_version: r.plugin_version,
            events: r
                .events
                .into_iter()
                .map(|e| EventRecord {
                    seq: e.seq,
                    kind: e.kind,
                    payload: e.payload,
                    source: e.source,
                    source_realm: e.source_realm,
                    timestamp_ms: e.timestamp_ms,
                    source_reputation: e.source_reputation,
                    message: e.message,
                })
                .collect(),
        }
    }
}

/// Leading byte of every entry: the encoding's version.
const ENTRY_FORMAT: u8 = 1;

impl LogEntry {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = vec![ENTRY_FORMAT];
        // Encoding plain data into a Vec cannot fail.
        postcard::to_io(self, &mut out).expect("log entry encodes");
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, String> {
        match bytes.split_first() {
            Some((&ENTRY_FORMAT, rest)) => postcard::from_bytes(rest).map_err(|e| e.to_string()),
            Some((v, _)) => Err(format!("entry format {v} is not known to this release")),
            None => Err("empty entry".into()),
        }
    }
}

/// What applying an entry locally answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Applied {
    /// An append's acknowledgement.
    Ack(AppendAck),
    /// Anything else.
    Done,
}

/// Apply `entry` to the local copy. The write is enqueued when this is
/// called (the [`Storage`] contract), so calls made in log order commit in
/// log order.
pub(crate) fn apply(
    local: &dyn Storage,
    entry: LogEntry,
) -> BoxFuture<'_, Result<Applied, StorageError>> {
    match entry {
        LogEntry::Claim { .. } => Box::pin(std::future::ready(Ok(Applied::Done))),
        LogEntry::Append { req, extras } => {
            let f = local.append_with(req.into(), extras);
            Box::pin(async move { f.await.map(Applied::Ack) })
        }
        LogEntry::Outbox {
            sender,
            seq,
            index,
            change,
        } => {
            let f = local.change_outbox(&sender, seq, index, change);
            Box::pin(async move { f.await.map(|()| Applied::Done) })
        }
        LogEntry::Snapshot { realm, write } => {
            let f = local.put_snapshot(&realm, write);
            Box::pin(async move { f.await.map(|()| Applied::Done) })
        }
    }
}

/// Whether a refusal is the entry's own (every copy refuses it alike), so
/// the copy is still in step with the log.
pub(crate) fn is_deterministic(e: &StorageError) -> bool {
    e.is_rejection()
        || matches!(
            e,
            StorageError::AlreadyDelivered { .. } | StorageError::NotInOutbox { .. }
        )
}

/// The answer to one write.
pub(crate) type Reply = oneshot::Sender<Result<Applied, StorageError>>;

enum Cmd {
    Write {
        entry: Box<LogEntry>,
        reply: Reply,
    },
    Open {
        last: u64,
        last_id: String,
        node: String,
        epoch: u64,
    },
    Close {
        done: oneshot::Sender<u64>,
    },
}

enum Stage {
    Apply {
        ack: PublishAckFuture,
        seq: u64,
        entry: Box<LogEntry>,
        reply: Reply,
    },
    Flush(oneshot::Sender<u64>),
}

/// The writer of one shard's log on this node.
#[derive(Debug)]
pub(crate) struct ShardLog {
    pub stream: String,
    pub subject: String,
    tx: mpsc::UnboundedSender<Cmd>,
    /// Last stream sequence applied locally (and every one before it).
    applied: Arc<AtomicU64>,
    /// A write failed at the log or in the local copy since the last open.
    failed: Arc<AtomicBool>,
}

impl ShardLog {
    /// Start the writer tasks of `shard` (closed until [`ShardLog::open`]).
    pub(crate) fn spawn(
        js: jetstream::Context,
        local: Arc<dyn Storage>,
        shard: usize,
        stream: String,
        subject: String,
        max_entry_bytes: usize,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let (stage_tx, stage_rx) = mpsc::unbounded_channel();
        let applied = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicBool::new(false));
        tokio::spawn(publish_loop(
            js,
            subject.clone(),
            shard,
            max_entry_bytes,
            rx,
            stage_tx,
            failed.clone(),
        ));
        tokio::spawn(apply_loop(
            local,
            shard,
            stage_rx,
            applied.clone(),
            failed.clone(),
        ));
        Self {
            stream,
            subject,
            tx,
            applied,
            failed,
        }
    }

    /// Queue a write; it is published in call order.
    pub(crate) fn write(
        &self,
        entry: LogEntry,
    ) -> oneshot::Receiver<Result<Applied, StorageError>> {
        let (reply, rx) = oneshot::channel();
        if let Err(mpsc::error::SendError(Cmd::Write { reply, .. })) = self.tx.send(Cmd::Write {
            entry: Box::new(entry),
            reply,
        }) {
            let _ = reply.send(Err(StorageError::Closed));
        }
        rx
    }

    /// Take writes again: the stream's last entry is `last`, with message
    /// id `last_id` (the owner's claim entry), and everything up to it is
    /// applied locally.
    pub(crate) fn open(&self, last: u64, last_id: &str, node: &str, epoch: u64) {
        self.applied.store(last, Ordering::Release);
        self.failed.store(false, Ordering::Release);
        let _ = self.tx.send(Cmd::Open {
            last,
            last_id: last_id.to_owned(),
            node: node.to_owned(),
            epoch,
        });
    }

    /// Stop taking writes, wait for those in flight, and answer the last
    /// sequence applied locally.
    pub(crate) async fn close(&self) -> u64 {
        let (done, rx) = oneshot::channel();
        if self.tx.send(Cmd::Close { done }).is_err() {
            return self.applied();
        }
        rx.await.unwrap_or_else(|_| self.applied())
    }

    /// Last stream sequence applied locally.
    pub(crate) fn applied(&self) -> u64 {
        self.applied.load(Ordering::Acquire)
    }

    /// Whether a write failed since the last open (the shard must be given
    /// up and claimed again).
    pub(crate) fn has_failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }
}

struct Open {
    last: u64,
    last_id: String,
    node: String,
    epoch: u64,
}

async fn publish_loop(
    js: jetstream::Context,
    subject: String,
    shard: usize,
    max_entry_bytes: usize,
    mut rx: mpsc::UnboundedReceiver<Cmd>,
    stage: mpsc::UnboundedSender<Stage>,
    failed: Arc<AtomicBool>,
) {
    let mut open: Option<Open> = None;
    while let Some(cmd) = rx.recv().await {
        match cmd {
            Cmd::Open {
                last,
                last_id,
                node,
                epoch,
            } => {
                open = Some(Open {
                    last,
                    last_id,
                    node,
                    epoch,
                });
            }
            Cmd::Close { done } => {
                open = None;
                let _ = stage.send(Stage::Flush(done));
            }
            Cmd::Write { entry, reply } => {
                let Some(o) = open.as_mut() else {
                    let _ = reply.send(Err(StorageError::NotOwner { shard, owner: None }));
                    continue;
                };
                let bytes = entry.encode();
                if bytes.len() > max_entry_bytes {
                    let _ = reply.send(Err(StorageError::InvalidRequest(format!(
                        "the write is {} bytes; a cluster log entry may be at most {max_entry_bytes}",
                        bytes.len()
                    ))));
                    continue;
                }
                let expected = o.last;
                let id = format!("{}.{}.{}", o.node, o.epoch, expected + 1);
                // Both the position and the identity of the entry before:
                // should an earlier write in flight fail, the position
                // alone could match again (another node's claim took that
                // place), the identity cannot.
                let msg = PublishMessage::build()
                    .payload(bytes.into())
                    .expected_last_sequence(expected)
                    .expected_last_message_id(&o.last_id)
                    .message_id(&id);
                match js.send_publish(subject.clone(), msg).await {
                    Ok(ack) => {
                        o.last += 1;
                        o.last_id = id;
                        let _ = stage.send(Stage::Apply {
                            ack,
                            seq: expected + 1,
                            entry,
                            reply,
                        });
                    }
                    Err(e) => {
                        tracing::warn!(shard, error = %e, "publishing to the shard log failed; giving the shard up");
                        failed.store(true, Ordering::Release);
                        open = None;
                        let _ = reply.send(Err(StorageError::Unavailable(format!(
                            "shard {shard}: the cluster log did not take the write: {e}"
                        ))));
                    }
                }
            }
        }
    }
}

type Finished = (u64, Result<Applied, StorageError>, Reply);

async fn apply_loop(
    local: Arc<dyn Storage>,
    shard: usize,
    mut rx: mpsc::UnboundedReceiver<Stage>,
    applied: Arc<AtomicU64>,
    failed: Arc<AtomicBool>,
) {
    let local: &dyn Storage = &*local;
    let mut inflight: FuturesOrdered<BoxFuture<'_, Finished>> = FuturesOrdered::new();
    let finish = |(seq, res, reply): Finished| {
        match &res {
            Err(e) if !is_deterministic(e) => {
                tracing::warn!(shard, seq, error = %e, "the local copy did not take a logged write; giving the shard up");
                failed.store(true, Ordering::Release);
            }
            _ if !failed.load(Ordering::Acquire) => {
                applied.fetch_max(seq, Ordering::AcqRel);
            }
            _ => {}
        }
        let _ = reply.send(res);
    };
    loop {
        tokio::select! {
            biased;
            Some(done) = inflight.next(), if !inflight.is_empty() => finish(done),
            stage = rx.recv() => match stage {
                None => break,
                Some(Stage::Apply { ack, seq, entry, reply }) => match ack.await {
                    Ok(a) if a.sequence == seq && !a.duplicate => {
                        metrics::counter!("realmhost_cluster_log_writes_total").increment(1);
                        let f = apply(local, *entry);
                        inflight.push_back(Box::pin(async move { (seq, f.await, reply) }));
                    }
                    Ok(a) => {
                        failed.store(true, Ordering::Release);
                        let _ = reply.send(Err(StorageError::Unavailable(format!(
                            "shard {shard}: the log stored the write at {} (duplicate: {}), not at {seq}",
                            a.sequence, a.duplicate
                        ))));
                    }
                    Err(e) => {
                        metrics::counter!("realmhost_cluster_log_refused_total").increment(1);
                        // Fenced (another node claimed the shard) or no
                        // answer: either way this node stops writing it.
                        tracing::info!(shard, seq, error = %e, "the shard log refused a write");
                        failed.store(true, Ordering::Release);
                        let _ = reply.send(Err(StorageError::Unavailable(format!(
                            "shard {shard}: the cluster log refused the write ({e}); the shard is being claimed again"
                        ))));
                    }
                },
                Some(Stage::Flush(done)) => {
                    while let Some(d) = inflight.next().await {
                        finish(d);
                    }
                    let _ = done.send(applied.load(Ordering::Acquire));
                }
            }
        }
    }
}

/// Apply the entries of `stream` with sequences `after + 1 ..= to` to the
/// local copy, in order; returns how many were applied (skipped ones —
/// already in the copy — included).
pub(crate) async fn catch_up(
    js: &jetstream::Context,
    shard: usize,
    stream: &str,
    local: &dyn Storage,
    after: u64,
    to: u64,
) -> Result<u64, ClusterError> {
    if after >= to {
        return Ok(0);
    }
    let s = js
        .get_stream(stream)
        .await
        .map_err(|e| ClusterError::js(format!("stream {stream}"), e))?;
    let consumer = s
        .create_consumer(jetstream::consumer::pull::OrderedConfig {
            deliver_policy: jetstream::consumer::DeliverPolicy::ByStartSequence {
                start_sequence: after + 1,
            },
            ..Default::default()
        })
        .await
        .map_err(|e| ClusterError::js(format!("catch-up consumer on {stream}"), e))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| ClusterError::js(format!("reading {stream}"), e))?;
    let mut inflight = FuturesOrdered::new();
    let mut count = 0u64;
    let check = |(seq, r): (u64, Result<Applied, StorageError>)| match r {
        Err(e) if !is_deterministic(&e) => Err(ClusterError::Apply {
            shard,
            seq,
            source: e,
        }),
        _ => Ok(()),
    };
    while let Some(m) = messages.next().await {
        let m = m.map_err(|e| ClusterError::js(format!("reading {stream}"), e))?;
        let seq = m
            .info()
            .map_err(|e| ClusterError::js(format!("reading {stream}"), e))?
            .stream_sequence;
        let entry = LogEntry::decode(&m.payload).map_err(|reason| ClusterError::BadEntry {
            shard,
            seq,
            reason,
        })?;
        let f = apply(local, entry);
        inflight.push_back(async move { (seq, f.await) });
        count += 1;
        if inflight.len() >= 256
            && let Some(done) = inflight.next().await
        {
            check(done)?;
        }
        if seq >= to {
            break;
        }
    }
    while let Some(done) = inflight.next().await {
        check(done)?;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_unknown_formats_are_refused() {
        let realm = RealmId::new("r-1").unwrap();
        let entries = [
            LogEntry::Claim {
                node: "n1".into(),
                epoch: 7,
            },
            LogEntry::Append {
                req: AppendRequest {
                    realm_id: realm.clone(),
                    realm_type: "counter".into(),
                    plugin_version: PluginVersion([3; 32]),
                    events: vec![EventRecord {
                        seq: 1,
                        kind: "add".into(),
                        payload: vec![1, 2],
                        source: "s".into(),
                        source_realm: None,
                        source_reputation: 0.5,
                        timestamp_ms: 9,
                        message: None,
                    }],
                }
                .into(),
                extras: AppendExtras {
                    idempotency: Some(crate::storage::IdempotencyRecord {
                        key: "k".into(),
                        expires_ms: 10,
                        receipt: vec![1],
                    }),
                    outbox: vec![crate::storage::OutboxRecord {
                        seq: 1,
                        index: 0,
                        message: vec![7],
                    }],
                    delivery: Some(crate::storage::DeliveryRecord {
                        sender: realm.clone(),
                        seq: 2,
                        index: 3,
                        outcome: vec![],
                    }),
                    settle: Some(crate::storage::SettleRecord {
                        seq: 1,
                        index: 0,
                        dead_letter: None,
                    }),
                },
            },
            LogEntry::Snapshot {
                realm: realm.clone(),
                write: SnapshotWrite {
                    seq: 3,
                    plugin_version: PluginVersion([1; 32]),
                    state_version: 2,
                    body: crate::storage::SnapshotBody::Delta {
                        base_seq: 1,
                        changes: vec![
                            (b"a"[..].into(), Some(b"b"[..].into())),
                            (b"c"[..].into(), None),
                        ],
                    },
                },
            },
            LogEntry::Outbox {
                sender: realm.clone(),
                seq: 4,
                index: 1,
                change: OutboxChange::DeadLetter(vec![5]),
            },
        ];
        for e in entries {
            assert_eq!(LogEntry::decode(&e.encode()).unwrap(), e);
        }
        assert!(LogEntry::decode(&[]).is_err());
        assert!(LogEntry::decode(&[9, 0]).unwrap_err().contains("format 9"));
    }
}
