//! What storage keeps for messages between realms (`docs/design-messaging.md`):
//! a sender's **outbox**, written in the same transaction as the event that
//! produced the messages, and a target's **inbox cursors**, one per sender,
//! written in the same transaction as the delivered event.
//!
//! Storage does not interpret a message: it stores the bytes the node gives
//! it, keyed by the message's identity `(sender realm, producing event's
//! seq, index within the call)`. Because a sender's messages to one target
//! are delivered in that order, the highest identity delivered from each
//! sender is the whole deduplication state of a target: a delivery at or
//! below its cursor is refused with
//! [`StorageError::AlreadyDelivered`](super::StorageError::AlreadyDelivered),
//! which carries the recorded outcome, without any time window.

use serde::{Deserialize, Serialize};

use crate::realm::RealmId;

use super::IdempotencyRecord;

/// One message an event sends, stored in its realm's outbox atomically with
/// the event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxRecord {
    /// Seq of the producing event (one of the append's events).
    pub seq: u64,
    /// Position among that event's messages.
    pub index: u32,
    /// The message, encoded by the node (opaque to storage).
    pub message: Vec<u8>,
}

/// Marks an append as the delivery of message `(sender, seq, index)`: the
/// target's cursor for `sender` moves to it in the same transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    /// The realm that sent the message.
    pub sender: RealmId,
    /// Seq of the sender's event that produced it.
    pub seq: u64,
    /// Its index among that event's messages.
    pub index: u32,
    /// The outcome, encoded by the node (opaque to storage), returned to a
    /// later duplicate delivery.
    pub outcome: Vec<u8>,
}

/// The last message a target took from one sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxCursor {
    /// Seq of the sender's producing event.
    pub seq: u64,
    /// Index of the message in that event.
    pub index: u32,
    /// The outcome recorded with it.
    pub outcome: Vec<u8>,
}

/// A message still in its sender's outbox (its outcome is not yet recorded
/// as delivered).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingMessage {
    /// The sending realm.
    pub sender: RealmId,
    /// Seq of the producing event.
    pub seq: u64,
    /// Index among that event's messages.
    pub index: u32,
    /// The message as the node stored it.
    pub message: Vec<u8>,
}

impl PendingMessage {
    /// The message's identity, for paging ([`OutboxKey`]).
    pub fn key(&self) -> OutboxKey {
        OutboxKey {
            sender: self.sender.clone(),
            seq: self.seq,
            index: self.index,
        }
    }
}

/// A position in the outbox: `(sender realm id, seq, index)`, ordered that
/// way (so a sender's messages are contiguous and in send order).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct OutboxKey {
    /// The sending realm.
    pub sender: RealmId,
    /// Seq of the producing event.
    pub seq: u64,
    /// Index among that event's messages.
    pub index: u32,
}

/// Marks an append as the settling of the realm's own outbox message
/// `(seq, index)`: typically the reply that tells the realm how its message
/// ended. The outbox row goes in the same transaction (into the dead
/// letters with `dead_letter` set), and the append is refused with
/// [`StorageError::NotInOutbox`](super::StorageError::NotInOutbox) if the
/// row is no longer there, so a reply is appended at most once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettleRecord {
    /// Seq of the realm's event that sent the message.
    pub seq: u64,
    /// Index of the message in that event.
    pub index: u32,
    /// Move the message to the dead letters with this reason (node-encoded)
    /// instead of deleting it.
    pub dead_letter: Option<Vec<u8>>,
}

/// What [`Storage::change_outbox`](super::Storage::change_outbox) does to
/// one message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OutboxChange {
    /// Its outcome is durable: delete it from the outbox.
    Settle,
    /// Move it from the outbox to the dead letters, with a reason
    /// (node-encoded).
    DeadLetter(Vec<u8>),
    /// Move it from the dead letters back to the outbox (an operator's
    /// retry).
    Revive,
    /// Delete it from the dead letters (an operator's drop).
    DropDead,
}

/// A message that could not be delivered, kept for an operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The sending realm.
    pub sender: RealmId,
    /// Seq of the producing event.
    pub seq: u64,
    /// Index among that event's messages.
    pub index: u32,
    /// The message as the node stored it.
    pub message: Vec<u8>,
    /// Why (node-encoded).
    pub reason: Vec<u8>,
}

impl DeadLetter {
    /// The message's identity, for paging.
    pub fn key(&self) -> OutboxKey {
        OutboxKey {
            sender: self.sender.clone(),
            seq: self.seq,
            index: self.index,
        }
    }
}

/// Everything an append may carry besides its events, stored in the same
/// transaction (see [`Storage::append_with`](super::Storage::append_with)).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AppendExtras {
    /// An idempotency key (see
    /// [`Storage::append_idempotent`](super::Storage::append_idempotent)).
    pub idempotency: Option<IdempotencyRecord>,
    /// Messages the events send, in `(seq, index)` order, each naming one
    /// of the append's events.
    pub outbox: Vec<OutboxRecord>,
    /// Set when the append delivers a message.
    pub delivery: Option<DeliveryRecord>,
    /// Set when the append settles one of the realm's own messages.
    pub settle: Option<SettleRecord>,
}

impl AppendExtras {
    /// Whether only an idempotency key (or nothing) is set: what a backend
    /// without messages can store.
    pub fn without_messages(&self) -> bool {
        self.outbox.is_empty() && self.delivery.is_none() && self.settle.is_none()
    }
}
