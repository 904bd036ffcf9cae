//! Outboxes and inbox cursors (see `storage/messages.rs` and
//! `docs/design-messaging.md`), written in the transaction of the append
//! they belong to.
//!
//! | table     | key                          | value |
//! |-----------|------------------------------|-------|
//! | `outbox`  | `(sender id, seq, index)`    | the message (node-encoded) |
//! | `inbox`   | `(target id, sender id)`     | postcard [`Stored`]: seq, index, outcome |
//!
//! Both are keyed by realm, so an append that sends or delivers messages
//! writes a realm-keyed page more than a plain one; plain appends pay
//! nothing. A sender's messages are contiguous and in send order, so
//! removing the delivered ones is one range delete.

use redb::{ReadTransaction, ReadableTable};
use serde::{Deserialize, Serialize};

use super::{DEAD_LETTERS, INBOX, OUTBOX};
use crate::realm::RealmId;
use crate::storage::{
    DeadLetter, DeliveryRecord, InboxCursor, OutboxChange, OutboxKey, OutboxRecord, PendingMessage,
    StorageError,
};

/// A stored cursor.
#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    seq: u64,
    index: u32,
    outcome: Vec<u8>,
}

/// The tables a write transaction uses for messages.
pub(super) struct MessageTables<'t> {
    pub(super) outbox: redb::Table<'t, (&'static str, u64, u32), &'static [u8]>,
    pub(super) inbox: redb::Table<'t, (&'static str, &'static str), &'static [u8]>,
    pub(super) dead: redb::Table<'t, (&'static str, u64, u32), &'static [u8]>,
}

/// A stored dead letter.
#[derive(Debug, Serialize, Deserialize)]
struct Dead {
    message: Vec<u8>,
    reason: Vec<u8>,
}

impl MessageTables<'_> {
    /// `Some(AlreadyDelivered)` if `target` already took `d` (or a later
    /// message of the same sender).
    pub(super) fn refuse_delivery(
        &self,
        target: &RealmId,
        d: &DeliveryRecord,
    ) -> Result<Option<StorageError>, StorageError> {
        let Some(v) = self.inbox.get((target.as_str(), d.sender.as_str()))? else {
            return Ok(None);
        };
        let cursor = decode(target, v.value())?;
        Ok(((d.seq, d.index) <= (cursor.seq, cursor.index)).then(|| {
            StorageError::AlreadyDelivered {
                realm: target.clone(),
                sender: d.sender.clone(),
                seq: d.seq,
                index: d.index,
                cursor,
            }
        }))
    }

    /// Store `realm`'s outgoing messages and the delivery it takes.
    pub(super) fn write(
        &mut self,
        realm: &RealmId,
        outbox: &[OutboxRecord],
        delivery: Option<&DeliveryRecord>,
    ) -> Result<(), StorageError> {
        for m in outbox {
            self.outbox
                .insert((realm.as_str(), m.seq, m.index), m.message.as_slice())?;
        }
        if let Some(d) = delivery {
            let value = postcard::to_allocvec(&Stored {
                seq: d.seq,
                index: d.index,
                outcome: d.outcome.clone(),
            })
            .map_err(|e| StorageError::Backend(format!("encoding an inbox cursor: {e}")))?;
            self.inbox
                .insert((realm.as_str(), d.sender.as_str()), value.as_slice())?;
        }
        Ok(())
    }

    /// Apply `change` to message `(sender, seq, index)`: the request's
    /// outcome is `NotInOutbox` if the message is not where the change
    /// expects it (the outer result is the transaction's).
    pub(super) fn change(
        &mut self,
        sender: &RealmId,
        seq: u64,
        index: u32,
        change: OutboxChange,
    ) -> Result<Result<(), StorageError>, StorageError> {
        let key = (sender.as_str(), seq, index);
        let missing = || {
            Ok(Err(StorageError::NotInOutbox {
                realm: sender.clone(),
                seq,
                index,
            }))
        };
        match change {
            OutboxChange::Settle => {
                if self.outbox.remove(key)?.is_none() {
                    return missing();
                }
            }
            OutboxChange::DeadLetter(reason) => {
                let Some(message) = self.outbox.remove(key)?.map(|v| v.value().to_vec()) else {
                    return missing();
                };
                let value = postcard::to_allocvec(&Dead { message, reason })
                    .map_err(|e| StorageError::Backend(format!("encoding a dead letter: {e}")))?;
                self.dead.insert(key, value.as_slice())?;
            }
            OutboxChange::Revive => {
                let Some(bytes) = self.dead.remove(key)?.map(|v| v.value().to_vec()) else {
                    return missing();
                };
                let dead = decode_dead(sender, &bytes)?;
                self.outbox.insert(key, dead.message.as_slice())?;
            }
            OutboxChange::DropDead => {
                if self.dead.remove(key)?.is_none() {
                    return missing();
                }
            }
        }
        Ok(Ok(()))
    }
}

/// A page of `table` (keyed by message identity) after `after`, at most
/// `limit` rows in key order, each turned into a `T` by `row`. `what` names
/// the table in errors.
fn page<T>(
    txn: &ReadTransaction,
    table: redb::TableDefinition<(&str, u64, u32), &[u8]>,
    what: &str,
    after: Option<&OutboxKey>,
    limit: usize,
    row: impl Fn(RealmId, u64, u32, &[u8]) -> Result<T, StorageError>,
) -> Result<Vec<T>, StorageError> {
    let table = match txn.open_table(table) {
        Ok(t) => t,
        // A file no message was written to yet.
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut out = Vec::with_capacity(limit.min(1024));
    let range = match after {
        Some(k) => table.range((k.sender.as_str(), k.seq, k.index)..)?,
        None => table.range::<(&str, u64, u32)>(..)?,
    };
    for item in range {
        if out.len() >= limit {
            break;
        }
        let (k, v) = item?;
        let (sender, seq, index) = k.value();
        if after.is_some_and(|a| (a.sender.as_str(), a.seq, a.index) == (sender, seq, index)) {
            continue;
        }
        let sender = RealmId::new(sender)
            .map_err(|e| StorageError::Corrupt(format!("{what} sender {sender:?}: {e}")))?;
        out.push(row(sender, seq, index, v.value())?);
    }
    Ok(out)
}

/// Messages in the outbox after `after`, at most `limit`, in key order.
pub(super) fn pending(
    txn: &ReadTransaction,
    after: Option<&OutboxKey>,
    limit: usize,
) -> Result<Vec<PendingMessage>, StorageError> {
    page(
        txn,
        OUTBOX,
        "outbox",
        after,
        limit,
        |sender, seq, index, v| {
            Ok(PendingMessage {
                sender,
                seq,
                index,
                message: v.to_vec(),
            })
        },
    )
}

fn decode_dead(sender: &RealmId, bytes: &[u8]) -> Result<Dead, StorageError> {
    postcard::from_bytes(bytes).map_err(|e| StorageError::RealmCorrupt {
        realm: sender.clone(),
        reason: format!("dead letter: {e}"),
    })
}

/// Dead letters after `after`, at most `limit`, in key order.
pub(super) fn dead_letters(
    txn: &ReadTransaction,
    after: Option<&OutboxKey>,
    limit: usize,
) -> Result<Vec<DeadLetter>, StorageError> {
    page(
        txn,
        DEAD_LETTERS,
        "dead letter",
        after,
        limit,
        |sender, seq, index, v| {
            let dead = decode_dead(&sender, v)?;
            Ok(DeadLetter {
                sender,
                seq,
                index,
                message: dead.message,
                reason: dead.reason,
            })
        },
    )
}

/// `target`'s cursor for `sender`.
pub(super) fn cursor(
    txn: &ReadTransaction,
    target: &RealmId,
    sender: &RealmId,
) -> Result<Option<InboxCursor>, StorageError> {
    let table = match txn.open_table(INBOX) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    table
        .get((target.as_str(), sender.as_str()))?
        .map(|v| decode(target, v.value()))
        .transpose()
}

fn decode(target: &RealmId, bytes: &[u8]) -> Result<InboxCursor, StorageError> {
    let s: Stored = postcard::from_bytes(bytes).map_err(|e| StorageError::RealmCorrupt {
        realm: target.clone(),
        reason: format!("inbox cursor: {e}"),
    })?;
    Ok(InboxCursor {
        seq: s.seq,
        index: s.index,
        outcome: s.outcome,
    })
}

/// The scrub's part (see `check.rs`): every outbox row belongs to a stored
/// realm and names one of its events; every inbox cursor belongs to a
/// stored realm, names a valid sender and decodes. `last_seqs` maps each
/// realm of this file to its last seq.
pub(super) fn scrub(
    txn: &ReadTransaction,
    last_seqs: &std::collections::HashMap<&str, u64>,
    report: &mut super::check::CheckReport,
) -> Result<(), StorageError> {
    match txn.open_table(OUTBOX) {
        Ok(table) => {
            for item in table.iter()? {
                let (k, _) = item?;
                let (sender, seq, index) = k.value();
                match last_seqs.get(sender) {
                    None => report.add(
                        "outbox",
                        Some(sender),
                        Some(seq),
                        format!("message {seq}.{index} of a realm that is not stored"),
                    ),
                    Some(&last) if seq == 0 || seq > last => report.add(
                        "outbox",
                        Some(sender),
                        Some(seq),
                        format!("message {seq}.{index} names no stored event (last seq {last})"),
                    ),
                    Some(_) => {}
                }
            }
        }
        Err(redb::TableError::TableDoesNotExist(_)) => {}
        Err(e) => return Err(e.into()),
    }
    match txn.open_table(INBOX) {
        Ok(table) => {
            for item in table.iter()? {
                let (k, v) = item?;
                let (target, sender) = k.value();
                if !last_seqs.contains_key(target) {
                    report.add(
                        "inbox",
                        Some(target),
                        None,
                        format!("cursor for sender {sender:?} of a realm that is not stored"),
                    );
                }
                if let Err(e) = RealmId::new(sender) {
                    report.add(
                        "inbox",
                        Some(target),
                        None,
                        format!("invalid sender id: {e}"),
                    );
                }
                if postcard::from_bytes::<Stored>(v.value()).is_err() {
                    report.add(
                        "inbox",
                        Some(target),
                        None,
                        format!("cursor for sender {sender:?} does not decode"),
                    );
                }
            }
        }
        Err(redb::TableError::TableDoesNotExist(_)) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

/// Check a request's messages on the caller's thread: each names one of the
/// append's events (`first_seq ..= last_seq`), in strictly increasing
/// `(seq, index)` order.
pub(super) fn validate(
    realm: &RealmId,
    first_seq: u64,
    last_seq: u64,
    outbox: &[OutboxRecord],
) -> Result<(), StorageError> {
    let mut prev: Option<(u64, u32)> = None;
    for m in outbox {
        if m.seq < first_seq || m.seq > last_seq {
            return Err(StorageError::InvalidRequest(format!(
                "append to {realm}: message {}.{} names no event of the append ({first_seq}..={last_seq})",
                m.seq, m.index
            )));
        }
        if prev.is_some_and(|p| p >= (m.seq, m.index)) {
            return Err(StorageError::InvalidRequest(format!(
                "append to {realm}: messages out of order at {}.{}",
                m.seq, m.index
            )));
        }
        prev = Some((m.seq, m.index));
    }
    Ok(())
}
