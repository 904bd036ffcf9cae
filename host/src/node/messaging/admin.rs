//! What operators see of messages and what they may do: a realm's outbox
//! and queues, recent outcomes by chain, dead letters (list, retry, drop).

use std::collections::VecDeque;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{PairView, Pending};
use crate::message::{MessageId, Outcome, StoredMessage};
use crate::node::{Node, NodeError};
use crate::realm::RealmId;
use crate::storage::{OutboxChange, OutboxKey};

/// Most messages one listing returns.
pub const MAX_MESSAGES_PAGE: usize = 1000;

/// Settled outcomes kept in memory for following chains.
pub(super) const RECENT_OUTCOMES: usize = 10_000;

/// A message without an outcome (or a dead letter), as operators see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageView {
    /// `<sender>@<seq>.<index>`.
    pub message_id: String,
    /// The sending realm.
    pub sender: String,
    /// The target realm.
    pub target: String,
    /// The target realm type.
    pub target_type: String,
    /// Event kind at the target.
    pub kind: String,
    /// Payload size in bytes.
    pub payload_bytes: usize,
    /// The chain it belongs to.
    pub chain_id: String,
    /// Its hop count.
    pub hop: u32,
    /// The correlation id.
    pub correlation: Option<String>,
    /// When it was sent, ms since the epoch.
    pub sent_ms: u64,
    /// Not delivered before, ms since the epoch.
    pub due_ms: u64,
    /// Expires at, ms since the epoch.
    pub expires_ms: Option<u64>,
    /// Why it was dead-lettered (dead letters only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_reason: Option<String>,
}

impl MessageView {
    fn new(key: &OutboxKey, m: &StoredMessage, dead_reason: Option<String>) -> Self {
        Self {
            message_id: format!("{}@{}.{}", key.sender, key.seq, key.index),
            sender: key.sender.to_string(),
            target: m.target.to_string(),
            target_type: m.target_type.clone(),
            kind: m.kind.clone(),
            payload_bytes: m.payload.len(),
            chain_id: m.chain_id.clone(),
            hop: m.hop,
            correlation: m.correlation.clone(),
            sent_ms: m.sent_ms,
            due_ms: m.due_ms,
            expires_ms: m.expires_ms,
            dead_reason,
        }
    }
}

/// A realm's messages: its undelivered ones and the queues it is part of.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RealmMessages {
    /// The realm.
    pub realm_id: String,
    /// Its messages without an outcome, in send order.
    pub outbox: Vec<MessageView>,
    /// The (sender, target) queues with undelivered messages from or to it.
    pub queues: Vec<PairView>,
}

/// A settled message, as remembered for following its chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettledMessage {
    /// `<sender>@<seq>.<index>`.
    pub message_id: String,
    /// The target realm.
    pub target: String,
    /// The chain.
    pub chain_id: String,
    /// Its hop count.
    pub hop: u32,
    /// How it ended.
    pub outcome: Outcome,
    /// When the outcome was settled, ms since the epoch.
    pub settled_ms: u64,
}

/// The most recent settled outcomes (bounded), for [`Node::message_chain`].
#[derive(Debug, Default)]
pub(super) struct Recent(VecDeque<SettledMessage>);

impl Recent {
    pub(super) fn push(&mut self, m: SettledMessage) {
        if self.0.len() >= RECENT_OUTCOMES {
            self.0.pop_front();
        }
        self.0.push_back(m);
    }
}

/// A chain: its settled messages (as far as remembered) and those still
/// pending.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChainView {
    /// The chain id (its first message's id).
    pub chain_id: String,
    /// Settled messages of the chain among the node's recent outcomes, in
    /// settle order.
    pub settled: Vec<SettledMessage>,
    /// Its messages without an outcome.
    pub pending: Vec<MessageView>,
}

fn parse_id(id: &str) -> Result<MessageId, NodeError> {
    id.parse().map_err(NodeError::InvalidInput)
}

impl Node {
    /// `realm`'s undelivered messages (at most `limit`) and its queues.
    pub async fn realm_messages(
        &self,
        realm: &RealmId,
        limit: usize,
    ) -> Result<RealmMessages, NodeError> {
        let limit = limit.clamp(1, MAX_MESSAGES_PAGE);
        let after = OutboxKey {
            sender: realm.clone(),
            seq: 0,
            index: 0,
        };
        let page = self.storage.pending_messages(Some(&after), limit).await?;
        let mut outbox = Vec::new();
        for p in page.iter().take_while(|p| &p.sender == realm) {
            if let Ok(m) = StoredMessage::decode(&p.message) {
                outbox.push(MessageView::new(&p.key(), &m, None));
            }
        }
        Ok(RealmMessages {
            realm_id: realm.to_string(),
            outbox,
            queues: self.messenger.pairs_of(realm),
        })
    }

    /// The messages of chain `chain_id`: those pending, and those settled
    /// that the node still remembers (the last 10 000 outcomes).
    pub fn message_chain(&self, chain_id: &str) -> ChainView {
        let settled = self
            .messenger
            .recent
            .lock()
            .0
            .iter()
            .filter(|m| m.chain_id == chain_id)
            .cloned()
            .collect();
        let pending = self
            .messenger
            .queued(|p| p.message.chain_id == chain_id)
            .iter()
            .map(|p| MessageView::new(&p.id, &p.message, None))
            .collect();
        ChainView {
            chain_id: chain_id.to_owned(),
            settled,
            pending,
        }
    }

    /// Dead letters after message `after` (exclusive), at most `limit`.
    pub async fn dead_letters(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<MessageView>, NodeError> {
        let after = after
            .map(|a| {
                parse_id(a).map(|id| OutboxKey {
                    sender: id.sender,
                    seq: id.seq,
                    index: id.index,
                })
            })
            .transpose()?;
        let page = self
            .storage
            .dead_letters(after.as_ref(), limit.clamp(1, MAX_MESSAGES_PAGE))
            .await?;
        Ok(page
            .iter()
            .filter_map(|d| {
                let m = StoredMessage::decode(&d.message).ok()?;
                let reason = String::from_utf8_lossy(&d.reason).into_owned();
                Some(MessageView::new(&d.key(), &m, Some(reason)))
            })
            .collect())
    }

    /// Put dead letter `id` back into its sender's outbox for another
    /// delivery (with fresh attempts; its time-to-live still counts from
    /// when it was sent).
    #[tracing::instrument(name = "node.retry_dead_letter", skip(self))]
    pub async fn retry_dead_letter(&self, id: &str) -> Result<(), NodeError> {
        let id = parse_id(id)?;
        let key = OutboxKey {
            sender: id.sender.clone(),
            seq: id.seq,
            index: id.index,
        };
        let dead = self
            .storage
            .dead_letters(Some(&key_before(&key)), 1)
            .await?;
        let Some(d) = dead.into_iter().next().filter(|d| d.key() == key) else {
            return Err(NodeError::DeadLetterNotFound(id.to_string()));
        };
        let message = StoredMessage::decode(&d.message).map_err(NodeError::InvalidInput)?;
        self.storage
            .change_outbox(&id.sender, id.seq, id.index, OutboxChange::Revive)
            .await?;
        self.messenger.enqueue(vec![Pending {
            id: key,
            message: Arc::new(message),
        }]);
        Ok(())
    }

    /// Delete dead letter `id` for good.
    #[tracing::instrument(name = "node.drop_dead_letter", skip(self))]
    pub async fn drop_dead_letter(&self, id: &str) -> Result<(), NodeError> {
        let id = parse_id(id)?;
        match self
            .storage
            .change_outbox(&id.sender, id.seq, id.index, OutboxChange::DropDead)
            .await
        {
            Err(crate::storage::StorageError::NotInOutbox { .. }) => {
                Err(NodeError::DeadLetterNotFound(id.to_string()))
            }
            other => Ok(other?),
        }
    }
}

/// The key just before `k` in outbox order, for listing from `k` itself.
fn key_before(k: &OutboxKey) -> OutboxKey {
    let (seq, index) = match (k.seq, k.index) {
        (s, 0) => (s.saturating_sub(1), u32::MAX),
        (s, i) => (s, i - 1),
    };
    OutboxKey {
        sender: k.sender.clone(),
        seq,
        index,
    }
}
