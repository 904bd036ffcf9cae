//! The sending side: the messages an event's `apply` returned are checked
//! against the node's limits and turned into outbox records, which storage
//! writes in the same transaction as the event.

use crate::message::{Inbound, MessageId, Outgoing, STORED_MESSAGE_FORMAT, StoredMessage};
use crate::realm::RealmId;
use crate::runtime::Rejection;
use crate::storage::OutboxRecord;

use super::MessagingConfig;

/// Why an event's messages were refused (the whole event then fails).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SendRefused {
    /// The plugin produced a message the host cannot store: the plugin's
    /// fault, answered like an `invalid` result.
    Invalid(String),
    /// The sender has too many undelivered messages: a domain "no" the
    /// plugin's caller sees as a rejection with code `outbox_full`.
    OutboxFull(Rejection),
}

/// The event that sends: where it is and what it carries.
pub(crate) struct Sending<'a> {
    pub sender: &'a RealmId,
    pub sender_type: &'a str,
    pub seq: u64,
    pub timestamp_ms: u64,
    /// Set when the sending event is itself a delivered message or a reply:
    /// its messages continue that chain.
    pub inbound: Option<&'a Inbound>,
}

/// Check `messages` and encode them as outbox records of the event at
/// `from.seq` (each with the message, for the queues once it is durable).
/// `pending` is the number of the sender's messages not yet settled (this
/// event's excluded).
pub(crate) fn outbox_records(
    config: &MessagingConfig,
    from: &Sending<'_>,
    messages: Vec<Outgoing>,
    pending: usize,
) -> Result<Vec<(OutboxRecord, StoredMessage)>, SendRefused> {
    if messages.is_empty() {
        return Ok(Vec::new());
    }
    let invalid = |m: String| Err(SendRefused::Invalid(m));
    if messages.len() > config.max_messages_per_call {
        return invalid(format!(
            "the event sends {} messages; the limit is {}",
            messages.len(),
            config.max_messages_per_call
        ));
    }
    if pending + messages.len() > config.max_pending_per_sender {
        return Err(SendRefused::OutboxFull(Rejection {
            code: "outbox_full".into(),
            message: format!(
                "realm {} has {pending} undelivered messages; {} more would pass the limit of {}",
                from.sender,
                messages.len(),
                config.max_pending_per_sender
            ),
        }));
    }
    let (chain, hop) = match from.inbound {
        Some(i) => (Some(i.origin.chain_id.as_str()), i.origin.hop + 1),
        None => (None, 1),
    };
    let mut out = Vec::with_capacity(messages.len());
    for (index, m) in (0u32..).zip(messages) {
        let n = index as usize;
        let target = RealmId::new(&m.target_realm)
            .map_err(|e| SendRefused::Invalid(format!("message {n}: target realm id: {e}")))?;
        if !crate::runtime::valid_realm_type(&m.target_type) {
            return invalid(format!(
                "message {n}: target realm type {:?} is not 1..=64 bytes of [a-z0-9_-]",
                m.target_type
            ));
        }
        if m.kind.len() > config.max_kind_bytes || m.kind.chars().any(char::is_control) {
            return invalid(format!(
                "message {n}: kind must be at most {} bytes without control characters",
                config.max_kind_bytes
            ));
        }
        if m.payload.len() > config.max_payload_bytes {
            return invalid(format!(
                "message {n}: payload is {} bytes; the limit is {}",
                m.payload.len(),
                config.max_payload_bytes
            ));
        }
        if m.correlation.as_ref().is_some_and(|c| {
            c.len() > config.max_correlation_bytes || c.chars().any(char::is_control)
        }) {
            return invalid(format!(
                "message {n}: correlation id must be at most {} bytes without control characters",
                config.max_correlation_bytes
            ));
        }
        let id = MessageId {
            sender: from.sender.clone(),
            seq: from.seq,
            index,
        };
        let stored = StoredMessage {
            format: STORED_MESSAGE_FORMAT,
            sender_type: from.sender_type.to_owned(),
            target,
            target_type: m.target_type,
            kind: m.kind,
            payload: m.payload,
            reply: m.reply,
            correlation: m.correlation,
            sent_ms: from.timestamp_ms,
            due_ms: from.timestamp_ms.saturating_add(m.delay_ms),
            expires_ms: m.ttl_ms.map(|t| from.timestamp_ms.saturating_add(t)),
            chain_id: chain.map_or_else(|| id.to_string(), str::to_owned),
            hop,
        };
        out.push((
            OutboxRecord {
                seq: from.seq,
                index,
                message: stored.encode(),
            },
            stored,
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Origin, ReplyWanted};

    fn msg(target: &str) -> Outgoing {
        Outgoing {
            target_realm: target.into(),
            target_type: "ledger".into(),
            kind: "credit".into(),
            payload: vec![1],
            reply: ReplyWanted::Always,
            correlation: Some("t-1".into()),
            delay_ms: 5,
            ttl_ms: Some(10),
        }
    }

    fn sending<'a>(sender: &'a RealmId, inbound: Option<&'a Inbound>) -> Sending<'a> {
        Sending {
            sender,
            sender_type: "ledger",
            seq: 7,
            timestamp_ms: 1000,
            inbound,
        }
    }

    #[test]
    fn records_carry_identity_times_and_chain() {
        let c = MessagingConfig::default();
        let a = RealmId::new("bank-a").unwrap();
        let recs = outbox_records(&c, &sending(&a, None), vec![msg("b"), msg("c")], 0).unwrap();
        assert_eq!(
            recs.iter()
                .map(|(r, _)| (r.seq, r.index))
                .collect::<Vec<_>>(),
            [(7, 0), (7, 1)]
        );
        let m = StoredMessage::decode(&recs[1].0.message).unwrap();
        assert_eq!(m, recs[1].1);
        assert_eq!(m.target.as_str(), "c");
        assert_eq!(
            (m.sent_ms, m.due_ms, m.expires_ms),
            (1000, 1005, Some(1010))
        );
        assert_eq!((m.chain_id.as_str(), m.hop), ("bank-a@7.1", 1));

        // A message sent while handling a message continues its chain.
        let inbound = Inbound {
            origin: Origin {
                source_realm: RealmId::new("x").unwrap(),
                source_type: "ledger".into(),
                message_id: "x@1.0".into(),
                chain_id: "root@1.0".into(),
                hop: 4,
                correlation: None,
            },
            reply: None,
        };
        let recs = outbox_records(&c, &sending(&a, Some(&inbound)), vec![msg("b")], 0).unwrap();
        let m = &recs[0].1;
        assert_eq!((m.chain_id.as_str(), m.hop), ("root@1.0", 5));
    }

    #[test]
    fn limits_are_typed() {
        let c = MessagingConfig {
            max_messages_per_call: 2,
            max_pending_per_sender: 3,
            max_payload_bytes: 4,
            ..MessagingConfig::default()
        };
        let a = RealmId::new("a").unwrap();
        let s = sending(&a, None);
        let too_many = outbox_records(&c, &s, vec![msg("b"); 3], 0);
        assert!(matches!(too_many, Err(SendRefused::Invalid(m)) if m.contains("3 messages")));
        match outbox_records(&c, &s, vec![msg("b"); 2], 2) {
            Err(SendRefused::OutboxFull(r)) => assert_eq!(r.code, "outbox_full"),
            other => panic!("{other:?}"),
        }
        let mut big = msg("b");
        big.payload = vec![0; 5];
        assert!(matches!(
            outbox_records(&c, &s, vec![big], 0),
            Err(SendRefused::Invalid(_))
        ));
        for (realm, ty) in [("", "ledger"), ("b", "Ledger"), ("a//b", "x")] {
            let mut m = msg(realm);
            m.target_type = ty.into();
            assert!(
                matches!(
                    outbox_records(&c, &s, vec![m], 0),
                    Err(SendRefused::Invalid(_))
                ),
                "{realm} {ty}"
            );
        }
        assert!(outbox_records(&c, &s, Vec::new(), 99).unwrap().is_empty());
    }
}
