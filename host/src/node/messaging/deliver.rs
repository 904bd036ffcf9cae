//! Delivery: the task that takes each pair's head to its target and
//! settles its outcome at the sender. See the module docs of [`super`].
//!
//! One attempt at a message, in two durable steps:
//! 1. **deliver** — unless its outcome is already decided (hop limit, no
//!    plugin for its type, a quarantined sender; expired, unless the
//!    target's cursor shows it was delivered before), append it to
//!    the target with the host-set origin and the target's inbox cursor in
//!    the same commit. A cursor already past it (the message was delivered
//!    before a crash) answers with the recorded outcome instead. A rejection
//!    or an `invalid` answer changes nothing at the target. A fault (trap,
//!    parked target, overload, storage) is retried with backoff, and
//!    dead-lettered after `max_attempts`.
//! 2. **settle** — at the sender: the reply event, when the sender asked
//!    for one, appended in the same commit as the outbox row's removal (or
//!    its move to the dead letters); else the removal alone. Either is
//!    refused if the row is gone, so the outcome is settled, replied and
//!    counted once.

use std::sync::{Arc, Weak};

use tokio::sync::Semaphore;

use super::{Messenger, Pending, Step};
use crate::message::{Inbound, Origin, Outcome, ReplyInfo, decode_outcome, encode_outcome};
use crate::node::append::MessageCtx;
use crate::node::{Node, NodeError, now_ms};
use crate::realm::NewEvent;
use crate::runtime::Rejection;
use crate::storage::{DeliveryRecord, OutboxChange, SettleRecord, StorageError};

/// Start the delivery task of `node`: it loads every message without an
/// outcome from storage, then delivers until the node shuts down (or is
/// dropped).
pub(crate) async fn spawn_delivery(
    node: &Arc<Node>,
) -> Result<tokio::task::JoinHandle<()>, NodeError> {
    let mut after = None;
    let mut loaded = 0usize;
    loop {
        let page = node.storage.pending_messages(after.as_ref(), 1024).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.key());
        let mut queued = Vec::with_capacity(page.len());
        for p in page {
            match crate::message::StoredMessage::decode(&p.message) {
                Ok(m) => queued.push(Pending {
                    id: p.key(),
                    message: Arc::new(m),
                }),
                Err(e) => {
                    tracing::error!(sender = %p.sender, seq = p.seq, index = p.index, error = %e, "undecodable outbox message left in place")
                }
            }
        }
        loaded += queued.len();
        node.messenger.enqueue(queued);
    }
    if loaded > 0 {
        tracing::info!(messages = loaded, "undelivered messages queued");
    }
    let weak = Arc::downgrade(node);
    let messenger = Arc::clone(&node.messenger);
    Ok(tokio::spawn(run(weak, messenger)))
}

async fn run(node: Weak<Node>, messenger: Arc<Messenger>) {
    let slots = Arc::new(Semaphore::new(messenger.config.max_in_flight));
    loop {
        // Registered before looking, so a wake between the look and the
        // wait is not lost.
        let woken = messenger.wake.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        match node.upgrade() {
            Some(n) if !n.shutting_down.load(std::sync::atomic::Ordering::Acquire) => {}
            _ => return,
        }
        let free = slots.available_permits();
        let (due, next) = messenger.take_due(now_ms(), free);
        for due in due {
            let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
                // Cannot happen (at most `free` were taken); put it back.
                messenger.finish(&due.key, Step::Retry("no delivery slot".into()), now_ms());
                continue;
            };
            let (node, messenger) = (node.clone(), Arc::clone(&messenger));
            tokio::spawn(async move {
                let step = match node.upgrade() {
                    Some(n) => n.attempt(&due).await,
                    None => Step::Retry("node closed".into()),
                };
                drop(permit);
                messenger.finish(&due.key, step, now_ms());
            });
        }
        let wait = next.map(|at| at.saturating_sub(now_ms()).max(1));
        match wait {
            Some(ms) if free > 0 => {
                tokio::select! {
                    () = &mut woken => {}
                    () = tokio::time::sleep(std::time::Duration::from_millis(ms)) => {}
                }
            }
            _ => woken.await,
        }
    }
}

/// How step 1 ended (also the answer of a delivery made on another node
/// of a cluster).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) enum Delivered {
    /// An outcome to settle.
    Outcome(Outcome),
    /// A redelivery: the target's cursor holds the outcome.
    Already(Outcome),
    /// Not delivered; retry.
    Failed(String),
}

impl Node {
    /// One attempt at a pair's head (its `attempts` earlier ones failed).
    async fn attempt(&self, due: &super::Due) -> Step {
        let (p, attempts) = (&due.head, due.attempts);
        let delivered = match &due.outcome {
            // Decided before; only its settle failed.
            Some(o) => Delivered::Outcome(o.clone()),
            None => self.deliver(p).await,
        };
        let outcome = match delivered {
            Delivered::Outcome(o) => o,
            Delivered::Already(o) => {
                self.messenger
                    .counters
                    .redelivered
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                o
            }
            Delivered::Failed(e) if attempts + 1 >= self.messenger.config.max_attempts => {
                Outcome::DeadLettered {
                    reason: format!("the target kept failing ({} attempts): {e}", attempts + 1),
                }
            }
            Delivered::Failed(e) => {
                tracing::debug!(message = %message_id(p), target = %p.message.target, error = %e, "delivery failed; will retry");
                return Step::Retry(e);
            }
        };
        if let Outcome::DeadLettered { reason } = &outcome {
            tracing::warn!(message = %message_id(p), target = %p.message.target, %reason, "message dead-lettered");
        }
        // Past `max_attempts` a reply the sender keeps failing on is given
        // up: the message is settled without it.
        let with_reply = attempts < self.messenger.config.max_attempts;
        match self.settle(p, outcome.clone(), with_reply).await {
            Ok(()) => Step::Settled,
            Err(e) => {
                tracing::debug!(message = %message_id(p), error = %e, "settling failed; will retry");
                Step::Unsettled(outcome, format!("settling at the sender: {e}"))
            }
        }
    }

    /// Step 1: take `p` to its target.
    async fn deliver(&self, p: &Pending) -> Delivered {
        let m = &p.message;
        let cfg = &self.messenger.config;
        if m.hop > cfg.hop_limit {
            return Delivered::Outcome(Outcome::DeadLettered {
                reason: format!("hop limit {} reached (a message loop?)", cfg.hop_limit),
            });
        }
        if self.registry.get(&m.target_type).is_err() {
            return Delivered::Outcome(Outcome::DeadLettered {
                reason: format!("no plugin serves realm type {}", m.target_type),
            });
        }
        let (sender_shard, target_shard) = (
            self.shard_of(p.id.sender.as_str()),
            self.shard_of(m.target.as_str()),
        );
        if self.config.monitor_enabled
            && sender_shard != target_shard
            && let Err(e) = self.monitor.check_crossing(sender_shard)
        {
            return Delivered::Outcome(Outcome::Rejected {
                rejection: Rejection {
                    code: "source_quarantined".into(),
                    message: e.to_string(),
                },
            });
        }
        if let Some(cluster) = self.cluster.get()
            && !cluster.owns(target_shard)
        {
            // Served by another node: it appends (and answers with the same
            // outcomes as below); its inbox cursor keeps this exactly once.
            return cluster
                .deliver_remote(target_shard, p.id.clone(), p.message.encode())
                .await
                .unwrap_or_else(Delivered::Failed);
        }
        self.deliver_here(p).await
    }

    /// The append of step 1, on the node serving the target.
    pub(crate) async fn deliver_here(&self, p: &Pending) -> Delivered {
        let m = &p.message;
        if m.expires_ms.is_some_and(|at| now_ms() > at) {
            // Past its time-to-live — but it may have been delivered before
            // (a crash or a lost answer between delivery and settle): then
            // the target's cursor holds its outcome, and answering
            // `expired` would undo, at the sender, what the target did.
            return match self.storage.inbox_cursor(&m.target, &p.id.sender).await {
                Ok(Some(c)) if (c.seq, c.index) >= (p.id.seq, p.id.index) => {
                    self.already_delivered(p, &c)
                }
                Ok(_) => Delivered::Outcome(Outcome::Expired),
                Err(e) => Delivered::Failed(e.to_string()),
            };
        }
        let ev = NewEvent {
            realm_id: m.target.clone(),
            realm_type: m.target_type.clone(),
            kind: m.kind.clone(),
            payload: m.payload.clone(),
            source: p.id.sender.to_string(),
            source_realm: None,
        };
        let ctx = MessageCtx {
            inbound: Inbound {
                origin: Origin {
                    source_realm: p.id.sender.clone(),
                    source_type: m.sender_type.clone(),
                    message_id: message_id(p),
                    chain_id: m.chain_id.clone(),
                    hop: m.hop,
                    correlation: m.correlation.clone(),
                },
                reply: None,
            },
            delivery: Some(DeliveryRecord {
                sender: p.id.sender.clone(),
                seq: p.id.seq,
                index: p.id.index,
                outcome: encode_outcome(&Outcome::Accepted),
            }),
            settle: None,
        };
        match self.append_message(ev, ctx).await {
            Ok(_) => Delivered::Outcome(Outcome::Accepted),
            Err(NodeError::Rejected { rejection, .. }) => {
                Delivered::Outcome(Outcome::Rejected { rejection })
            }
            Err(NodeError::PluginInvalid { message, .. }) => {
                Delivered::Outcome(Outcome::Invalid { message })
            }
            Err(e @ NodeError::RealmTypeMismatch { .. }) => {
                Delivered::Outcome(Outcome::DeadLettered {
                    reason: e.to_string(),
                })
            }
            Err(NodeError::Storage(StorageError::AlreadyDelivered { cursor, .. })) => {
                self.already_delivered(p, &cursor)
            }
            Err(e) => Delivered::Failed(e.to_string()),
        }
    }

    /// What a delivery answers when the target's cursor is at or past `p`.
    fn already_delivered(&self, p: &Pending, cursor: &crate::storage::InboxCursor) -> Delivered {
        if (cursor.seq, cursor.index) == (p.id.seq, p.id.index) {
            // Delivered before a crash or a lost answer: the cursor holds
            // its outcome.
            Delivered::Already(decode_outcome(&cursor.outcome).unwrap_or(Outcome::Accepted))
        } else {
            // The target took later messages of this sender (this one was
            // revived from the dead letters after them): delivering it now
            // would break the pair's order.
            Delivered::Outcome(Outcome::DeadLettered {
                reason: format!(
                    "out of order: {} already took {}@{}.{}, sent after it",
                    p.message.target, p.id.sender, cursor.seq, cursor.index
                ),
            })
        }
    }

    /// Step 2: settle `outcome` at the sender, with the reply it asked for.
    async fn settle(
        &self,
        p: &Pending,
        outcome: Outcome,
        with_reply: bool,
    ) -> Result<(), NodeError> {
        let m = &p.message;
        let dead_letter = match &outcome {
            Outcome::DeadLettered { reason } => Some(reason.as_bytes().to_vec()),
            _ => None,
        };
        if m.reply.wants(&outcome) && !with_reply {
            tracing::warn!(realm = %p.id.sender, message = %message_id(p), "the sender kept failing on its reply; settled without it");
        }
        let settled = if m.reply.wants(&outcome) && with_reply {
            self.reply(p, &outcome, dead_letter.clone()).await?
        } else {
            false
        };
        if !settled {
            let change = match dead_letter {
                Some(reason) => OutboxChange::DeadLetter(reason),
                None => OutboxChange::Settle,
            };
            match self
                .storage
                .change_outbox(&p.id.sender, p.id.seq, p.id.index, change)
                .await
            {
                Ok(()) => {}
                // Settled by an earlier attempt whose answer was lost.
                Err(StorageError::NotInOutbox { .. }) => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
        self.count_outcome(p, &outcome);
        Ok(())
    }

    /// Append the reply to the sender, settling the message in the same
    /// commit. `Ok(false)` if the sender's plugin refused the reply (the
    /// message is then settled without one).
    async fn reply(
        &self,
        p: &Pending,
        outcome: &Outcome,
        dead_letter: Option<Vec<u8>>,
    ) -> Result<bool, NodeError> {
        let m = &p.message;
        let id = message_id(p);
        let ev = NewEvent {
            realm_id: p.id.sender.clone(),
            realm_type: m.sender_type.clone(),
            kind: m.kind.clone(),
            payload: Vec::new(),
            source: m.target.to_string(),
            source_realm: None,
        };
        let ctx = MessageCtx {
            inbound: Inbound {
                origin: Origin {
                    source_realm: m.target.clone(),
                    source_type: m.target_type.clone(),
                    message_id: id.clone(),
                    chain_id: m.chain_id.clone(),
                    hop: m.hop.saturating_add(1),
                    correlation: m.correlation.clone(),
                },
                reply: Some(ReplyInfo {
                    message_id: id,
                    correlation: m.correlation.clone(),
                    outcome: outcome.clone(),
                }),
            },
            delivery: None,
            settle: Some(SettleRecord {
                seq: p.id.seq,
                index: p.id.index,
                dead_letter,
            }),
        };
        match self.append_message(ev, ctx).await {
            Ok(_) => {
                self.messenger
                    .counters
                    .replies
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Ok(true)
            }
            Err(NodeError::Storage(StorageError::NotInOutbox { .. })) => Ok(true),
            Err(e @ (NodeError::Rejected { .. } | NodeError::PluginInvalid { .. })) => {
                tracing::warn!(realm = %p.id.sender, message = %message_id(p), error = %e, "the sender refused the reply to its message; settled without it");
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Count a settled outcome: the node's counters, and the shard monitor
    /// when the message crossed shards.
    fn count_outcome(&self, p: &Pending, outcome: &Outcome) {
        use std::sync::atomic::Ordering::Relaxed;
        let c = &self.messenger.counters;
        match outcome {
            Outcome::Accepted => &c.accepted,
            Outcome::Rejected { .. } => &c.rejected,
            Outcome::Invalid { .. } => &c.invalid,
            Outcome::Expired => &c.expired,
            Outcome::DeadLettered { .. } => &c.dead_lettered,
        }
        .fetch_add(1, Relaxed);
        let latency = now_ms().saturating_sub(p.message.due_ms.max(p.message.sent_ms));
        self.messenger.record_latency(latency);
        let (from, to) = (
            self.shard_of(p.id.sender.as_str()),
            self.shard_of(p.message.target.as_str()),
        );
        if self.config.monitor_enabled && from != to {
            self.monitor.record_crossing(from, outcome.is_accepted());
        }
        tracing::debug!(message = %message_id(p), chain = %p.message.chain_id, outcome = outcome.name(), "message settled");
        self.messenger.recent.lock().push(super::SettledMessage {
            message_id: message_id(p),
            target: p.message.target.to_string(),
            chain_id: p.message.chain_id.clone(),
            hop: p.message.hop,
            outcome: outcome.clone(),
            settled_ms: now_ms(),
        });
    }
}

fn message_id(p: &Pending) -> String {
    format!("{}@{}.{}", p.id.sender, p.id.seq, p.id.index)
}
