//! The vocabulary of messages between realms (`docs/design-messaging.md`):
//! what a plugin sends ([`Outgoing`]), how the host stores it in the
//! sender's outbox ([`StoredMessage`]), what the target's event records of
//! its origin ([`Inbound`]), and how a delivery ends ([`Outcome`]).
//!
//! A message's identity is the position of the event that sent it: the
//! sender realm, that event's seq and the message's index among the event's
//! messages ([`MessageId`]). It is the same however often the event is
//! applied, which is what makes delivery exactly-once without a window.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::realm::RealmId;
use crate::runtime::Rejection;

/// A message's identity: `<sender>@<seq>.<index>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MessageId {
    /// The sending realm.
    pub sender: RealmId,
    /// Seq of the event that sent it.
    pub seq: u64,
    /// Its index among that event's messages.
    pub index: u32,
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}.{}", self.sender, self.seq, self.index)
    }
}

impl std::str::FromStr for MessageId {
    type Err = String;

    /// Parses `<sender>@<seq>.<index>`; the sender may itself contain `@`,
    /// so the last one separates it.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("message id {s:?} is not <realm>@<seq>.<index>");
        let (sender, pos) = s.rsplit_once('@').ok_or_else(bad)?;
        let (seq, index) = pos.split_once('.').ok_or_else(bad)?;
        Ok(Self {
            sender: RealmId::new(sender).map_err(|e| format!("{}: {e}", bad()))?,
            seq: seq.parse().map_err(|_| bad())?,
            index: index.parse().map_err(|_| bad())?,
        })
    }
}

/// When the sender wants to hear back about a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplyWanted {
    /// Fire and forget.
    #[default]
    Never,
    /// Only if it was not accepted.
    OnFailure,
    /// Whatever the outcome.
    Always,
}

impl ReplyWanted {
    /// Whether `outcome` calls for a reply.
    pub fn wants(self, outcome: &Outcome) -> bool {
        match self {
            Self::Never => false,
            Self::OnFailure => !outcome.is_accepted(),
            Self::Always => true,
        }
    }
}

/// A message as a plugin's `apply` returned it, before the host checked it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// Target realm id (unchecked).
    pub target_realm: String,
    /// Target realm type (unchecked).
    pub target_type: String,
    /// Event kind at the target.
    pub kind: String,
    /// Event payload in the target plugin's format.
    pub payload: Vec<u8>,
    /// Whether to reply.
    pub reply: ReplyWanted,
    /// Carried back in the reply.
    pub correlation: Option<String>,
    /// Deliver no earlier than this many ms after the sending event.
    pub delay_ms: u64,
    /// Expire this many ms after the sending event if still undelivered.
    pub ttl_ms: Option<u64>,
}

/// How the delivery of a message ended. Every message ends in exactly one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The message is an event in the target's log.
    Accepted,
    /// The target's plugin refused it; nothing changed there.
    Rejected {
        /// The plugin's rejection.
        rejection: Rejection,
    },
    /// The target's plugin could not understand it; nothing changed there.
    Invalid {
        /// The plugin's explanation.
        message: String,
    },
    /// Its time-to-live passed before delivery.
    Expired,
    /// It could not be delivered.
    DeadLettered {
        /// Why.
        reason: String,
    },
}

impl Outcome {
    /// Whether the message was accepted.
    pub fn is_accepted(&self) -> bool {
        matches!(self, Self::Accepted)
    }

    /// A short name: `accepted`, `rejected`, `invalid`, `expired`,
    /// `dead_lettered` (metrics, logs).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Rejected { .. } => "rejected",
            Self::Invalid { .. } => "invalid",
            Self::Expired => "expired",
            Self::DeadLettered { .. } => "dead_lettered",
        }
    }

    /// The outcome as the SDK's borrowed view (what the plugin sees).
    pub fn as_ref(&self) -> realmhost_guest::Outcome<'_> {
        match self {
            Self::Accepted => realmhost_guest::Outcome::Accepted,
            Self::Rejected { rejection } => realmhost_guest::Outcome::Rejected {
                code: &rejection.code,
                message: &rejection.message,
            },
            Self::Invalid { message } => realmhost_guest::Outcome::Invalid(message),
            Self::Expired => realmhost_guest::Outcome::Expired,
            Self::DeadLettered { reason } => realmhost_guest::Outcome::DeadLettered(reason),
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Accepted => f.write_str("accepted"),
            Self::Rejected { rejection } => write!(f, "rejected ({rejection})"),
            Self::Invalid { message } => write!(f, "invalid ({message})"),
            Self::Expired => f.write_str("expired"),
            Self::DeadLettered { reason } => write!(f, "dead-lettered ({reason})"),
        }
    }
}

/// Where a delivered message came from; set by the host only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// The sending realm (for a reply: the realm that took the message).
    pub source_realm: RealmId,
    /// The message's id, `<sender>@<seq>.<index>` ([`MessageId`]).
    pub message_id: String,
    /// The sender's realm type.
    pub source_type: String,
    /// The id of the first message of the chain.
    pub chain_id: String,
    /// Messages on the way, this one included.
    pub hop: u32,
    /// The sender's correlation id.
    pub correlation: Option<String>,
}

/// Which of the realm's messages a reply answers and how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyInfo {
    /// The id of the message answered (one this realm sent).
    pub message_id: String,
    /// The correlation id it carried.
    pub correlation: Option<String>,
    /// How its delivery ended.
    pub outcome: Outcome,
}

/// What an event in a realm's log records when it is a delivered message
/// or a reply. Stored with the event, so a replay hands the plugin exactly
/// the context the live call saw. (Stored with postcard, which is
/// positional: fields are only ever added at the end, and never skipped.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inbound {
    /// Where it came from. For a reply: the realm that took the message.
    pub origin: Origin,
    /// Set when the event is a reply.
    pub reply: Option<ReplyInfo>,
}

/// A message as stored in its sender's outbox, with everything delivery
/// needs (the sender and the position come from the outbox key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMessage {
    /// Format version of this record (1).
    pub format: u8,
    /// The sender's realm type.
    pub sender_type: String,
    /// Target realm.
    pub target: RealmId,
    /// Target realm type.
    pub target_type: String,
    /// Event kind at the target.
    pub kind: String,
    /// Event payload.
    pub payload: Vec<u8>,
    /// Whether to reply.
    pub reply: ReplyWanted,
    /// Carried back in the reply.
    pub correlation: Option<String>,
    /// When the sending event was appended (ms since the epoch).
    pub sent_ms: u64,
    /// Not delivered before this time.
    pub due_ms: u64,
    /// Expires at this time if undelivered.
    pub expires_ms: Option<u64>,
    /// The chain it belongs to.
    pub chain_id: String,
    /// Its hop count.
    pub hop: u32,
}

/// Current [`StoredMessage::format`].
pub const STORED_MESSAGE_FORMAT: u8 = 1;

impl StoredMessage {
    /// Encode for the outbox.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Decode an outbox value.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let m: Self = postcard::from_bytes(bytes).map_err(|e| format!("outbox message: {e}"))?;
        if m.format != STORED_MESSAGE_FORMAT {
            return Err(format!("outbox message of unknown format {}", m.format));
        }
        Ok(m)
    }
}

/// Encode an outcome for an inbox cursor.
pub(crate) fn encode_outcome(outcome: &Outcome) -> Vec<u8> {
    postcard::to_allocvec(outcome).unwrap_or_default()
}

/// Decode an inbox cursor's outcome.
pub(crate) fn decode_outcome(bytes: &[u8]) -> Result<Outcome, String> {
    postcard::from_bytes(bytes).map_err(|e| format!("recorded outcome: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_print_and_parse() {
        let id = MessageId {
            sender: RealmId::new("bank@eu").unwrap(),
            seq: 7,
            index: 2,
        };
        assert_eq!(id.to_string(), "bank@eu@7.2");
        assert_eq!(id.to_string().parse::<MessageId>().unwrap(), id);
        for bad in ["bank", "bank@7", "bank@x.1", "@7.1", "bank@7.-1"] {
            assert!(bad.parse::<MessageId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn replies_follow_what_was_asked() {
        let rejected = Outcome::Rejected {
            rejection: Rejection {
                code: "no".into(),
                message: "no".into(),
            },
        };
        assert!(!ReplyWanted::Never.wants(&rejected));
        assert!(ReplyWanted::OnFailure.wants(&rejected));
        assert!(!ReplyWanted::OnFailure.wants(&Outcome::Accepted));
        assert!(ReplyWanted::Always.wants(&Outcome::Accepted));
    }

    #[test]
    fn stored_messages_and_outcomes_round_trip() {
        let m = StoredMessage {
            format: STORED_MESSAGE_FORMAT,
            sender_type: "ledger".into(),
            target: RealmId::new("b").unwrap(),
            target_type: "ledger".into(),
            kind: "credit".into(),
            payload: vec![1, 2],
            reply: ReplyWanted::Always,
            correlation: Some("t".into()),
            sent_ms: 5,
            due_ms: 6,
            expires_ms: Some(9),
            chain_id: "a@1.0".into(),
            hop: 1,
        };
        assert_eq!(StoredMessage::decode(&m.encode()).unwrap(), m);
        let o = Outcome::DeadLettered {
            reason: "hop limit".into(),
        };
        assert_eq!(decode_outcome(&encode_outcome(&o)).unwrap(), o);
        assert!(StoredMessage::decode(&[9, 9]).is_err());
    }
}
