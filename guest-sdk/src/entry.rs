//! The entry points behind every export, as plain Rust functions.
//!
//! The component exports (see [`crate::export_realm!`]) run the same code as
//! these drivers. The drivers are public so that a plugin's logic can be run
//! natively on a [`MemoryState`] with exactly the bytes and the semantics of
//! the host, in unit tests and in benchmarks that measure the sandbox's
//! overhead against native code:
//!
//! - the realm is in scope for the duration of the call, and only then;
//! - a call's writes reach the [`MemoryState`] only if it succeeds (an
//!   `Err`, or a panic, keeps nothing), like the host's buffered writes;
//! - [`query`] is read-only (a write panics, as it traps in the host);
//! - [`describe`] and [`encode_event`] run with no realm in scope;
//! - [`apply`] returns the messages the call sent ([`Effects`]), and only
//!   if it succeeds; [`apply_batch`] (replay) and the other calls send
//!   nothing.
//!
//! Host limits (entry sizes, entry counts, fuel) are not modelled.

use crate::batch::{BatchReader, EventRef};
use crate::error::{ApplyError, BatchError};
use crate::message::{self, Effects, Reply};
use crate::state::{Frame, FrameGuard, MemoryState};
use crate::{Event, Realm};

/// Who a plugin is (mirrors the WIT `plugin-info`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginInfo {
    /// Realm type.
    pub realm_type: String,
    /// Semantic version.
    pub version: String,
    /// One line for operators.
    pub description: String,
    /// Version of the layout of the plugin's entries.
    pub state_version: u32,
}

/// `describe`: plugin identity.
pub fn describe<P: Realm>() -> PluginInfo {
    let _closed = FrameGuard::install(Frame::Closed);
    run::describe::<P>()
}

/// `init`: write the initial entries of a new realm into `state`.
pub fn init<P: Realm>(state: &mut MemoryState, realm_id: &str) -> Result<(), String> {
    state.transact(|| run::init::<P>(realm_id))
}

/// `apply`: one event (a reply goes to [`Realm::on_reply`]); returns the
/// messages it sent. On `Err` the state is unchanged and nothing is sent.
pub fn apply<P: Realm>(
    state: &mut MemoryState,
    event: &EventRef<'_>,
) -> Result<Effects, ApplyError> {
    state.transact(|| run::apply::<P>(event))
}

/// `apply-batch`: every event of a packed batch ([`crate::batch`]) in order.
/// All or nothing: on `Err` the state is unchanged. The events' messages are
/// dropped: replay never re-sends.
pub fn apply_batch<P: Realm>(state: &mut MemoryState, batch: &[u8]) -> Result<(), BatchError> {
    state.transact(|| run::apply_batch::<P>(batch))
}

/// `migrate`: bring a realm written with `from_state_version` to the
/// plugin's state version. The same version is a no-op; a newer one is an
/// error. On `Err` the state is unchanged.
pub fn migrate<P: Realm>(state: &mut MemoryState, from_state_version: u32) -> Result<(), String> {
    state.transact(|| run::migrate::<P>(from_state_version))
}

/// `query`: a read-only view of the realm.
pub fn query<P: Realm>(state: &MemoryState, request: &str) -> Result<String, String> {
    state.read(|| run::query::<P>(request))
}

/// `encode-event`: JSON event to payload bytes (no realm in scope).
pub fn encode_event<P: Realm>(kind: &str, json: &str) -> Result<Vec<u8>, String> {
    let _closed = FrameGuard::install(Frame::Closed);
    run::encode_event::<P>(kind, json)
}

/// `decode-event`: a stored payload as JSON, for operators (no realm in
/// scope).
pub fn event_json<P: Realm>(kind: &str, payload: &[u8]) -> Result<String, String> {
    let _closed = FrameGuard::install(Frame::Closed);
    run::event_json::<P>(kind, payload)
}

/// The state of a whole-state plugin ([`crate::RealmLogic`]), decoded from
/// `state`: what its tests inspect.
pub fn whole_state<P: crate::RealmLogic>(state: &MemoryState) -> Result<P::State, String> {
    state.read(crate::whole::load::<P>)
}

/// Decode an event's payload and pair it with its context.
pub fn decode_event<'a, P: Realm + ?Sized>(
    ev: &EventRef<'a>,
) -> Result<Event<'a, P::Event>, ApplyError> {
    let payload = crate::event::decode::<P>(ev.payload).map_err(|e| {
        ApplyError::Invalid(format!("undecodable payload of event {}: {e}", ev.seq))
    })?;
    Ok(Event {
        seq: ev.seq,
        kind: ev.kind,
        payload,
        source: ev.source,
        source_realm: ev.source_realm,
        timestamp_ms: ev.timestamp_ms,
        source_reputation: ev.source_reputation,
        origin: ev.origin.clone(),
    })
}

/// Route one event of the realm in scope: a reply to [`Realm::on_reply`]
/// (its payload is the host's, so it is not decoded), anything else decoded
/// and passed to [`Realm::apply`]. What `apply` and the default
/// [`Realm::apply_batch`] run for each event; an `apply_batch` override
/// should call it too.
pub fn dispatch<P: Realm + ?Sized>(ev: &EventRef<'_>) -> Result<(), ApplyError> {
    match Reply::from_event(ev) {
        Some(reply) => P::on_reply(reply),
        None => P::apply(decode_event::<P>(ev)?),
    }
}

/// Decode postcard bytes with a readable error (for migrations).
pub fn decode_postcard<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    postcard::from_bytes(bytes).map_err(|e| format!("undecodable bytes: {e}"))
}

/// Parse JSON with a readable error (for [`Realm::query`]).
pub fn decode_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, String> {
    serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))
}

/// The calls themselves, on whatever realm is in scope: the native drivers
/// above install a [`MemoryState`] first, the component exports run them
/// against the host.
pub(crate) mod run {
    use super::*;

    pub(crate) fn describe<P: Realm>() -> PluginInfo {
        PluginInfo {
            realm_type: P::REALM_TYPE.to_owned(),
            version: P::VERSION.to_owned(),
            description: P::DESCRIPTION.to_owned(),
            state_version: P::STATE_VERSION,
        }
    }

    pub(crate) fn init<P: Realm>(realm_id: &str) -> Result<(), String> {
        message::discard(|| P::init(realm_id))
    }

    pub(crate) fn apply<P: Realm>(event: &EventRef<'_>) -> Result<Effects, ApplyError> {
        message::collect(|| dispatch::<P>(event)).map(|((), effects)| effects)
    }

    pub(crate) fn apply_batch<P: Realm>(batch: &[u8]) -> Result<(), BatchError> {
        let reader = BatchReader::new(batch).map_err(|e| BatchError {
            index: 0,
            error: ApplyError::Invalid(e.to_string()),
        })?;
        message::discard(|| P::apply_batch(reader))
    }

    pub(crate) fn migrate<P: Realm>(from: u32) -> Result<(), String> {
        let current = P::STATE_VERSION;
        if from == current {
            return Ok(());
        }
        if from > current {
            return Err(format!(
                "the realm was written with state version {from}, newer than {} {}'s state version {current}",
                P::REALM_TYPE,
                P::VERSION
            ));
        }
        message::discard(|| P::migrate(from))
    }

    pub(crate) fn query<P: Realm>(request: &str) -> Result<String, String> {
        message::discard(|| P::query(request))
    }

    pub(crate) fn encode_event<P: Realm>(kind: &str, json: &str) -> Result<Vec<u8>, String> {
        let ev = P::event_from_json(kind, json)?;
        Ok(crate::event::encode::<P>(&ev))
    }

    pub(crate) fn event_json<P: Realm>(kind: &str, payload: &[u8]) -> Result<String, String> {
        let ev = crate::event::decode::<P>(payload)?;
        P::event_to_json(kind, &ev)
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use super::*;
    use crate::batch::{BatchEncoder, Origin, Outcome, ReplyRef};
    use crate::{Item, Message, RealmLogic, Rejection, ReplyWanted, encode_payload, send};

    /// Forwards `n` to the realm named in the event, and rejects after
    /// sending when `n` is 0; counts the replies it gets.
    struct Relay;

    #[derive(Debug, Serialize, Deserialize)]
    struct Fwd {
        to: String,
        n: u64,
    }

    const REPLIES: Item<Vec<String>> = Item::new("replies");

    impl Realm for Relay {
        const REALM_TYPE: &'static str = "relay";
        const VERSION: &'static str = "1.0.0";
        const DESCRIPTION: &'static str = "";
        type Event = Fwd;

        fn apply(event: Event<'_, Fwd>) -> Result<(), ApplyError> {
            send(
                Message::to(&event.payload.to, "relay")
                    .kind("fwd")
                    .payload(&event.payload.n)
                    .reply(ReplyWanted::Always)
                    .correlation(event.seq.to_string()),
            );
            if event.payload.n == 0 {
                return Err(Rejection::new("zero", "sent, then refused").into());
            }
            if event.payload.n == u64::MAX {
                panic!("sent, then panicked");
            }
            Ok(())
        }

        fn on_reply(reply: Reply<'_>) -> Result<(), ApplyError> {
            let mut seen = REPLIES.may_load()?.unwrap_or_default();
            seen.push(format!(
                "{}:{}",
                reply.correlation.unwrap_or("-"),
                reply.is_accepted()
            ));
            REPLIES.save(&seen)?;
            Ok(())
        }

        fn query(_: &str) -> Result<String, String> {
            Ok(REPLIES.may_load()?.unwrap_or_default().join(","))
        }
    }

    fn fwd(to: &str, n: u64) -> Vec<u8> {
        encode_payload(&Fwd { to: to.into(), n })
    }

    fn reply_to(
        seq: u64,
        correlation: &'static str,
        outcome: Outcome<'static>,
    ) -> EventRef<'static> {
        EventRef {
            reply: Some(ReplyRef {
                message_id: "x@1.0",
                correlation: Some(correlation),
                outcome,
            }),
            // A reply's payload is the host's: never decoded as `Fwd`.
            ..EventRef::new(seq, "reply", b"\xff", "host")
        }
    }

    #[test]
    fn apply_returns_what_it_sent_only_when_it_succeeds() {
        let mut realm = MemoryState::new();
        let p = fwd("bob", 3);
        let fx = apply::<Relay>(&mut realm, &EventRef::new(1, "fwd", &p, "c")).unwrap();
        assert_eq!(
            fx.messages,
            [Message::to("bob", "relay")
                .kind("fwd")
                .payload(&3u64)
                .reply(ReplyWanted::Always)
                .correlation("1")]
        );

        let p = fwd("bob", 0);
        let err = apply::<Relay>(&mut realm, &EventRef::new(2, "fwd", &p, "c")).unwrap_err();
        assert!(matches!(err, ApplyError::Rejected(r) if r.code == "zero"));

        let p = fwd("bob", u64::MAX);
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            apply::<Relay>(&mut realm, &EventRef::new(3, "fwd", &p, "c"))
        }));
        assert!(panicked.is_err());

        // Nothing of the failed calls leaks into the next one.
        let p = fwd("carol", 4);
        let fx = apply::<Relay>(&mut realm, &EventRef::new(4, "fwd", &p, "c")).unwrap();
        assert_eq!(fx.messages.len(), 1);
        assert_eq!(fx.messages[0].target_realm, "carol");
    }

    #[test]
    fn replay_and_the_other_calls_send_nothing() {
        let mut realm = MemoryState::new();
        let (a, b) = (fwd("bob", 1), fwd("carol", 2));
        let mut enc = BatchEncoder::new();
        enc.push(&EventRef::new(1, "fwd", &a, "c"));
        enc.push(&EventRef::new(2, "fwd", &b, "c"));
        enc.push(&reply_to(3, "1", Outcome::Accepted));
        apply_batch::<Relay>(&mut realm, &enc.finish()).unwrap();
        // The batch's reply reached `on_reply`, and no message survived
        // into a later call.
        let fx = apply::<Relay>(&mut realm, &reply_to(4, "2", Outcome::Expired)).unwrap();
        assert!(fx.is_empty());
        assert_eq!(query::<Relay>(&realm, "").unwrap(), "1:true,2:false");
    }

    #[test]
    fn replies_go_to_on_reply_and_messages_carry_their_origin() {
        let mut realm = MemoryState::new();
        apply::<Relay>(&mut realm, &reply_to(1, "7", Outcome::Invalid("?"))).unwrap();
        assert_eq!(query::<Relay>(&realm, "").unwrap(), "7:false");

        let p = fwd("bob", 1);
        let ev = EventRef {
            source_realm: Some("alice"),
            origin: Some(Origin {
                source_realm: "alice",
                source_type: "relay",
                message_id: "alice@3.0",
                chain_id: "alice@3.0",
                hop: 1,
                correlation: Some("3"),
            }),
            ..EventRef::new(2, "fwd", &p, "alice")
        };
        let decoded = decode_event::<Relay>(&ev).unwrap();
        assert!(decoded.is_message());
        assert_eq!(decoded.correlation(), Some("3"));
        assert_eq!(decoded.origin.unwrap().source_type, "relay");
    }

    /// Whole-state mode: the same rules, with the state in hand.
    struct Pinger;

    #[derive(Debug, Default, Serialize, Deserialize)]
    struct Pings {
        sent: u64,
        failed: u64,
    }

    impl RealmLogic for Pinger {
        const REALM_TYPE: &'static str = "pinger";
        const VERSION: &'static str = "1.0.0";
        const DESCRIPTION: &'static str = "";
        type State = Pings;
        type Event = String;

        fn init(_: &str) -> Pings {
            Pings::default()
        }

        fn apply(state: &mut Pings, event: Event<'_, String>) -> Result<(), Rejection> {
            state.sent += 1;
            send(Message::to(event.payload, "pinger").reply(ReplyWanted::OnFailure));
            Ok(())
        }

        fn on_reply(state: &mut Pings, reply: Reply<'_>) -> Result<(), Rejection> {
            if !reply.is_accepted() {
                state.failed += 1;
            }
            Ok(())
        }
    }

    #[test]
    fn whole_state_logic_sends_and_hears_back() {
        let mut realm = MemoryState::new();
        init::<Pinger>(&mut realm, "p").unwrap();
        let p = encode_payload(&"bob".to_owned());
        let fx = apply::<Pinger>(&mut realm, &EventRef::new(1, "ping", &p, "c")).unwrap();
        assert_eq!(fx.messages[0].target_realm, "bob");
        assert_eq!(fx.messages[0].reply, ReplyWanted::OnFailure);
        let dead = reply_to(2, "-", Outcome::DeadLettered("no such type"));
        assert!(apply::<Pinger>(&mut realm, &dead).unwrap().is_empty());

        let mut enc = BatchEncoder::new();
        enc.push(&EventRef::new(3, "ping", &p, "c"));
        enc.push(&reply_to(4, "-", Outcome::Expired));
        apply_batch::<Pinger>(&mut realm, &enc.finish()).unwrap();
        let s = whole_state::<Pinger>(&realm).unwrap();
        assert_eq!((s.sent, s.failed), (2, 2));
    }
}
