//! Messages between realms: what an event sends, and the reply it gets back.
//!
//! Logic that runs inside [`crate::Realm::apply`] sends a message with
//! [`send`]:
//!
//! ```
//! # use realmhost_guest::{send, Message, ReplyWanted};
//! send(
//!     Message::to("bank-b", "ledger")
//!         .kind("credit")
//!         .payload(&("bob", 5u64))
//!         .reply(ReplyWanted::Always)
//!         .correlation("t-1"),
//! );
//! ```
//!
//! Sending is a value, not a call out: the message is buffered for the call
//! in progress, and the export glue returns the buffer as the `effects` of
//! `apply` only when the call succeeds. So a message follows the same rule
//! as a write: a rejection, an `invalid` answer or a panic sends nothing, and
//! `apply` may send first and reject later. The host stores the messages in
//! the same commit as the event and delivers each exactly once, in send order
//! per target realm.
//!
//! Messages are kept only by `apply`. Everywhere else [`send`] drops them:
//! in `apply-batch` (the replay path: the events' messages were sent when
//! they were first applied, and replay never re-sends, so the same logic
//! serves both), and in `init`, `migrate` and `query`, which have no way to
//! return messages.
//!
//! A **timer** is a message to the sending realm itself with a
//! [`Message::delay_ms`]: the host keeps it durably and delivers it no
//! earlier than the delay after the sending event's timestamp.
//!
//! A delivered message reaches the target's `apply` as an event whose
//! [`crate::Event::origin`] says where it came from (set by the host; a
//! client cannot forge it). When the sender asked for one, the outcome comes
//! back as a **reply** event, which the SDK hands to
//! [`crate::Realm::on_reply`] as a [`Reply`] instead of decoding it as an
//! event of the realm type: its payload is the host's, not the plugin's.

use std::cell::RefCell;

use serde::Serialize;

use crate::Realm;
use crate::batch::{EventRef, Origin, Outcome};

/// When the sender wants to hear back about a message (the WIT
/// `reply-wanted`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ReplyWanted {
    /// Fire and forget (the default).
    #[default]
    Never,
    /// Only if it was not accepted.
    OnFailure,
    /// Always: the reply carries the outcome, accepted or not.
    Always,
}

/// A message an event sends (the WIT `outgoing`), built with [`Message::to`]
/// and the builder methods, sent with [`send`].
///
/// The host checks every message (target id and type, sizes, the sender's
/// undelivered messages) when `apply` returns; one it refuses fails the
/// whole call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The target realm (created by the delivery if it does not exist).
    pub target_realm: String,
    /// The target realm's type.
    pub target_type: String,
    /// The event kind at the target.
    pub kind: String,
    /// The event payload, in the target plugin's format.
    pub payload: Vec<u8>,
    /// Whether and when to reply.
    pub reply: ReplyWanted,
    /// Carried back in the reply (and in the target's [`Origin`]).
    pub correlation: Option<String>,
    /// Deliver no earlier than this many ms after the sending event's
    /// timestamp (0: now). To the sending realm itself, a durable timer.
    pub delay_ms: u64,
    /// Expire if not delivered within this many ms of the sending event's
    /// timestamp.
    pub ttl_ms: Option<u64>,
}

impl Message {
    /// A message to `realm` of type `realm_type`: kind `message`, empty
    /// payload, no reply, no correlation, no delay, no time-to-live.
    pub fn to(realm: impl Into<String>, realm_type: impl Into<String>) -> Self {
        Self {
            target_realm: realm.into(),
            target_type: realm_type.into(),
            kind: "message".to_owned(),
            payload: Vec::new(),
            reply: ReplyWanted::Never,
            correlation: None,
            delay_ms: 0,
            ttl_ms: None,
        }
    }

    /// A message to `realm` of the realm type `P`, carrying `event` encoded
    /// as `P` reads its payloads (with its event version, see
    /// [`crate::event`]): the typed way to message a realm type whose crate
    /// you can name, including your own (a timer).
    pub fn to_realm<P: Realm + ?Sized>(realm: impl Into<String>, event: &P::Event) -> Self {
        Self::to(realm, P::REALM_TYPE).payload_bytes(crate::event::encode::<P>(event))
    }

    /// An answer to a delivered message: addressed to the realm that sent
    /// it (`origin`, from [`crate::Event::origin`]), carrying its correlation
    /// id so the sender can match it. Set the kind and payload as for any
    /// message. (The host's own reply — the outcome of a delivery, to
    /// [`crate::Realm::on_reply`] — needs nothing from the target; this is
    /// for an answer with content, e.g. a quote or a balance.)
    pub fn reply_to(origin: &Origin<'_>) -> Self {
        let to = Self::to(origin.source_realm, origin.source_type);
        match origin.correlation {
            Some(c) => to.correlation(c),
            None => to,
        }
    }

    /// The event kind at the target.
    pub fn kind(mut self, kind: impl Into<String>) -> Self {
        self.kind = kind.into();
        self
    }

    /// The payload: `value` as plain postcard, what an SDK realm type with
    /// event version 0 decodes (see [`crate::encode_payload`]).
    pub fn payload<T: Serialize + ?Sized>(mut self, value: &T) -> Self {
        // Serializing plain serde data into a Vec cannot fail.
        self.payload = postcard::to_allocvec(value).unwrap_or_default();
        self
    }

    /// The payload as raw bytes, for a target whose format is not postcard.
    pub fn payload_bytes(mut self, payload: impl Into<Vec<u8>>) -> Self {
        self.payload = payload.into();
        self
    }

    /// Whether and when to reply.
    pub fn reply(mut self, reply: ReplyWanted) -> Self {
        self.reply = reply;
        self
    }

    /// A correlation id, carried back in the reply.
    pub fn correlation(mut self, correlation: impl Into<String>) -> Self {
        self.correlation = Some(correlation.into());
        self
    }

    /// Deliver no earlier than `ms` after the sending event's timestamp.
    pub fn delay_ms(mut self, ms: u64) -> Self {
        self.delay_ms = ms;
        self
    }

    /// Expire if not delivered within `ms` of the sending event's timestamp.
    pub fn ttl_ms(mut self, ms: u64) -> Self {
        self.ttl_ms = Some(ms);
        self
    }
}

/// What a successful `apply` asks the host to do besides its writes (the WIT
/// `effects`): what [`crate::entry::apply`] returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Effects {
    /// The messages sent, in send order.
    pub messages: Vec<Message>,
}

impl Effects {
    /// True when the call sent nothing.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }
}

/// A reply: how the delivery of a message this realm sent ended, handed to
/// [`crate::Realm::on_reply`] (and [`crate::RealmLogic::on_reply`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Reply<'a> {
    /// Position of the reply event in the realm's log.
    pub seq: u64,
    /// Host time at which the reply was appended, ms since the Unix epoch.
    pub timestamp_ms: u64,
    /// The id of the message answered (`<this realm>@<seq>.<index>`: the
    /// event that sent it and its index among that event's messages).
    pub message_id: &'a str,
    /// The correlation id the message carried.
    pub correlation: Option<&'a str>,
    /// How the delivery ended.
    pub outcome: Outcome<'a>,
    /// Where the reply came from (the realm the message was sent to), when
    /// the host says so.
    pub origin: Option<Origin<'a>>,
    /// The reply event's raw payload (the host's, usually empty).
    pub payload: &'a [u8],
}

impl<'a> Reply<'a> {
    /// The reply carried by `event`, if it is one.
    pub fn from_event(event: &EventRef<'a>) -> Option<Self> {
        let reply = event.reply.as_ref()?;
        Some(Self {
            seq: event.seq,
            timestamp_ms: event.timestamp_ms,
            message_id: reply.message_id,
            correlation: reply.correlation,
            outcome: reply.outcome.clone(),
            origin: event.origin.clone(),
            payload: event.payload,
        })
    }

    /// Whether the message was accepted (it is an event in the target's log).
    pub fn is_accepted(&self) -> bool {
        self.outcome.is_accepted()
    }
}

/// The messages of the call in progress: `Some` while `apply` collects
/// them, `None` (drop every message) otherwise.
type Outbox = Option<Vec<Message>>;

thread_local! {
    static OUTBOX: RefCell<Outbox> = const { RefCell::new(None) };
}

/// Send `message` when the call in progress succeeds (see the module docs):
/// buffered in `apply`, dropped in every other export and in `apply-batch`.
pub fn send(message: Message) {
    OUTBOX.with(|o| {
        if let Some(buf) = o.borrow_mut().as_mut() {
            buf.push(message);
        }
    });
}

/// Puts the previous outbox back when a call ends, however it ends (a
/// panicking native call drops its messages and leaves no outbox behind).
struct Restore(Outbox);

impl Drop for Restore {
    fn drop(&mut self) {
        let previous = self.0.take();
        OUTBOX.with(|o| *o.borrow_mut() = previous);
    }
}

fn with_outbox<R>(outbox: Outbox, f: impl FnOnce() -> R) -> (R, Vec<Message>) {
    let restore = Restore(OUTBOX.with(|o| o.replace(outbox)));
    let r = f();
    let sent = OUTBOX.with(|o| o.borrow_mut().take()).unwrap_or_default();
    drop(restore);
    (r, sent)
}

/// Run `f` collecting what it sends; the messages are returned only if it
/// returns `Ok`.
pub(crate) fn collect<T, E>(f: impl FnOnce() -> Result<T, E>) -> Result<(T, Effects), E> {
    let (r, messages) = with_outbox(Some(Vec::new()), f);
    r.map(|t| (t, Effects { messages }))
}

/// Run `f` dropping whatever it sends (replay, and nested drivers).
pub(crate) fn discard<R>(f: impl FnOnce() -> R) -> R {
    with_outbox(None, f).0
}

#[cfg(target_arch = "wasm32")]
pub(crate) fn to_wit(effects: Effects) -> crate::bindings::realmhost::realm::types::Effects {
    use crate::bindings::realmhost::realm::types as wit;
    wit::Effects {
        messages: effects
            .messages
            .into_iter()
            .map(|m| wit::Outgoing {
                target_realm: m.target_realm,
                target_type: m.target_type,
                kind: m.kind,
                payload: m.payload,
                reply: match m.reply {
                    ReplyWanted::Never => wit::ReplyWanted::Never,
                    ReplyWanted::OnFailure => wit::ReplyWanted::OnFailure,
                    ReplyWanted::Always => wit::ReplyWanted::Always,
                },
                correlation: m.correlation,
                delay_ms: m.delay_ms,
                ttl_ms: m.ttl_ms,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    /// An answer goes back to the sender, with its correlation id.
    #[test]
    fn reply_to_addresses_the_sender_with_its_correlation() {
        let origin = super::Origin {
            source_realm: "bank-a",
            source_type: "ledger",
            message_id: "bank-a@3.0",
            chain_id: "bank-a@3.0",
            hop: 1,
            correlation: Some("t-1"),
        };
        let m = super::Message::reply_to(&origin).kind("quote");
        assert_eq!(
            (
                m.target_realm.as_str(),
                m.target_type.as_str(),
                m.kind.as_str()
            ),
            ("bank-a", "ledger", "quote")
        );
        assert_eq!(m.correlation.as_deref(), Some("t-1"));
        let none = super::Origin {
            correlation: None,
            ..origin
        };
        assert_eq!(super::Message::reply_to(&none).correlation, None);
    }

    use super::*;

    #[test]
    fn the_builder_fills_every_field() {
        let m = Message::to("bank-b", "ledger")
            .kind("credit")
            .payload(&7u64)
            .reply(ReplyWanted::Always)
            .correlation("t-1")
            .delay_ms(5)
            .ttl_ms(9);
        assert_eq!(
            m,
            Message {
                target_realm: "bank-b".into(),
                target_type: "ledger".into(),
                kind: "credit".into(),
                payload: vec![7],
                reply: ReplyWanted::Always,
                correlation: Some("t-1".into()),
                delay_ms: 5,
                ttl_ms: Some(9),
            }
        );
        assert_eq!(Message::to("r", "t").payload_bytes(*b"ab").payload, b"ab");
    }

    #[test]
    fn collect_keeps_messages_on_ok_only_and_restores_the_outbox() {
        let (_, fx) = collect(|| -> Result<(), ()> {
            send(Message::to("a", "t"));
            send(Message::to("b", "t"));
            Ok(())
        })
        .unwrap();
        let targets: Vec<_> = fx
            .messages
            .iter()
            .map(|m| m.target_realm.as_str())
            .collect();
        assert_eq!(targets, ["a", "b"]);

        assert!(
            collect(|| -> Result<(), ()> {
                send(Message::to("a", "t"));
                Err(())
            })
            .is_err()
        );
        // Outside any call nothing is buffered, and nothing leaked from the
        // failed call into the next one.
        send(Message::to("lost", "t"));
        let (_, fx) = collect(|| Ok::<_, ()>(())).unwrap();
        assert!(fx.is_empty());
    }

    #[test]
    fn discard_drops_even_inside_a_collecting_call() {
        let (_, fx) = collect(|| -> Result<(), ()> {
            send(Message::to("kept", "t"));
            discard(|| send(Message::to("replayed", "t")));
            send(Message::to("kept-too", "t"));
            Ok(())
        })
        .unwrap();
        let targets: Vec<_> = fx
            .messages
            .iter()
            .map(|m| m.target_realm.as_str())
            .collect();
        assert_eq!(targets, ["kept", "kept-too"]);
    }

    #[test]
    fn a_panicking_call_leaves_no_outbox_behind() {
        let r = std::panic::catch_unwind(|| {
            collect(|| -> Result<(), ()> {
                send(Message::to("a", "t"));
                panic!("boom")
            })
        });
        assert!(r.is_err());
        assert!(OUTBOX.with(|o| o.borrow().is_none()));
    }
}
