//! Between the generated WIT types and the host's: the event context a call
//! sees (with a delivered message's origin and a reply's outcome), and what
//! `apply` answers (its messages, its failure).

use super::Rejection;
use super::bindings::{
    ApplyError as WitApplyError, EventContext, MessageOrigin, RejectionParam, ReplyContext,
    WitOutcome,
};
use super::plugin::EventFailure;
use crate::message::{Outcome, Outgoing, ReplyWanted};
use crate::realm::EventRecord;

/// The context `apply` gets for `event`, borrowing from it.
pub(super) fn event_context(event: &EventRecord) -> EventContext<'_> {
    let message = event.message.as_deref();
    let outcome = match message.and_then(|m| m.reply.as_ref()).map(|r| &r.outcome) {
        None => None,
        Some(Outcome::Accepted) => Some(WitOutcome::Accepted),
        Some(Outcome::Rejected { rejection: r }) => Some(WitOutcome::Rejected(RejectionParam {
            code: &r.code,
            message: &r.message,
        })),
        Some(Outcome::Invalid { message }) => Some(WitOutcome::Invalid(message)),
        Some(Outcome::Expired) => Some(WitOutcome::Expired),
        Some(Outcome::DeadLettered { reason }) => Some(WitOutcome::DeadLettered(reason)),
    };
    EventContext {
        seq: event.seq,
        kind: &event.kind,
        payload: &event.payload,
        source: &event.source,
        source_realm: event.source_realm.as_deref(),
        timestamp_ms: event.timestamp_ms,
        source_reputation: event.source_reputation,
        origin: message.map(|m| MessageOrigin {
            source_realm: m.origin.source_realm.as_str(),
            source_type: &m.origin.source_type,
            message_id: &m.origin.message_id,
            chain_id: &m.origin.chain_id,
            hop: m.origin.hop,
            correlation: m.origin.correlation.as_deref(),
        }),
        reply: message
            .and_then(|m| m.reply.as_ref())
            .zip(outcome)
            .map(|(r, outcome)| ReplyContext {
                message_id: &r.message_id,
                correlation: r.correlation.as_deref(),
                outcome,
            }),
    }
}

/// A message as the plugin returned it, in the host's terms.
pub(super) fn message(m: super::bindings::Outgoing) -> Outgoing {
    use super::bindings::ReplyWanted as Wit;
    Outgoing {
        target_realm: m.target_realm,
        target_type: m.target_type,
        kind: m.kind,
        payload: m.payload,
        reply: match m.reply {
            Wit::Never => ReplyWanted::Never,
            Wit::OnFailure => ReplyWanted::OnFailure,
            Wit::Always => ReplyWanted::Always,
        },
        correlation: m.correlation,
        delay_ms: m.delay_ms,
        ttl_ms: m.ttl_ms,
    }
}

/// A failed `apply`'s answer, in the host's terms.
pub(super) fn failure(e: WitApplyError) -> EventFailure {
    match e {
        WitApplyError::Rejected(r) => EventFailure::Rejected(Rejection {
            code: r.code,
            message: r.message,
        }),
        WitApplyError::Invalid(m) => EventFailure::Invalid(m),
    }
}
