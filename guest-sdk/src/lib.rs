//! # realmhost-guest: write realm logic for realmhost
//!
//! A realmhost node keeps millions of *realms*; what an event *does* to a realm
//! is decided by a plugin: a WebAssembly component, one per realm type. This
//! crate is everything a plugin author needs: a trait to implement, typed
//! storage helpers, one export macro, and native drivers to unit-test the
//! logic without a host.
//!
//! ## The model: a host-owned ordered map
//!
//! A realm's state is an **ordered map of byte keys to byte values, owned by
//! the host**. The plugin never receives the whole state: during a call it
//! reads and writes the entries it needs through the [`state`] module (the
//! imported `state` interface of `wit/realm.wit`), which is scoped to the realm
//! being called.
//!
//! - **Cost per touched key.** An event costs what it reads and writes, not
//!   what the realm holds: a deposit into one of a million accounts reads and
//!   writes two entries. Lay your state out so that an event touches few keys
//!   (one key per account, per member, ...), and keep aggregates you need in
//!   O(1) (a running total) in their own entry instead of summing on demand.
//!   Reading a key from the host crosses the sandbox boundary: cheap, but
//!   not free. Within one export call the SDK remembers what it read and
//!   buffers what you write (see [`state`]), so touching the same key again,
//!   in this event or a later one of the same `apply-batch`, costs no host
//!   call, and a call's writes reach the host in one `write-batch`.
//! - **Buffered writes, all or nothing.** The host buffers a call's writes and
//!   keeps them only if the call succeeds. A [`Rejection`], an `invalid`
//!   answer or a trap (a panic) leaves the realm exactly as it was, so `apply`
//!   may write first and reject later. A call reads its own writes.
//! - **Determinism.** A call sees only its realm's committed entries plus its
//!   own writes; there is no clock (use [`Event::timestamp_ms`], set by the
//!   host), no randomness, no files. The host refuses components that import
//!   clocks, randomness, files or sockets, so replaying a realm's log always
//!   rebuilds the same map. Iteration order is byte order of the keys.
//! - **Limits.** The node operator sets per-realm limits: key length, value
//!   length, number of entries, total bytes, state operations per call, plus
//!   fuel and memory per call. A call that goes past one is stopped by the
//!   host (it traps with an error naming the realm and the limit) and keeps
//!   nothing. A realm that must grow large grows over many events.
//! - **Scope.** State is in scope in `init`, `apply`, `migrate` and `query`
//!   (read-only: a write traps). In `describe` and `encode-event` no realm is
//!   in scope and any state call traps.
//!
//! ## Two ways to write a plugin
//!
//! **Keyed mode** (the primary one): implement [`Realm`] and keep your state
//! in typed entries with [`Item`] (one value) and [`Map`] (many values under
//! ordered keys, including composite keys and prefixes), modelled on
//! cw-storage-plus. Values are postcard-encoded; a key's encoding keeps byte
//! order equal to the key's logical order, so ranges come back sorted.
//!
//! ```
//! use realmhost_guest::{export_realm, ApplyError, Bound, Event, Item, Map, Order, Realm, Rejection};
//! use serde::{Deserialize, Serialize};
//!
//! /// Points per player.
//! pub struct Scores;
//!
//! /// Points of one player (a key per player: an event touches one entry).
//! const POINTS: Map<&str, u64> = Map::new("points");
//! /// Sum over all players, kept up to date so that reading it is O(1).
//! const TOTAL: Item<u64> = Item::new("total");
//!
//! #[derive(Debug, Serialize, Deserialize)]
//! pub enum Op {
//!     Score { player: String, points: u64 },
//! }
//!
//! impl Realm for Scores {
//!     const REALM_TYPE: &'static str = "scores";
//!     const VERSION: &'static str = "1.0.0";
//!     const DESCRIPTION: &'static str = "Points per player";
//!     type Event = Op;
//!
//!     fn apply(event: Event<'_, Op>) -> Result<(), ApplyError> {
//!         let Op::Score { player, points } = event.payload;
//!         let old = POINTS.may_load(&player)?.unwrap_or(0);
//!         let new = old
//!             .checked_add(points)
//!             .ok_or_else(|| Rejection::new("overflow", "too many points"))?;
//!         POINTS.save(&player, &new)?;
//!         TOTAL.update(|t| -> Result<u64, ApplyError> {
//!             Ok(t.unwrap_or(0).saturating_add(points))
//!         })?;
//!         Ok(())
//!     }
//!
//!     fn query(request: &str) -> Result<String, String> {
//!         if request == "total" {
//!             return Ok(TOTAL.may_load()?.unwrap_or(0).to_string());
//!         }
//!         // The leaders, in key order: the map is paged through on demand.
//!         let mut out = Vec::new();
//!         for entry in POINTS.range(Bound::Unbounded, Bound::Unbounded, Order::Ascending) {
//!             let (player, points) = entry?;
//!             out.push(format!("{player}={points}"));
//!         }
//!         Ok(out.join(","))
//!     }
//! }
//!
//! // In a plugin crate this line makes the component's exports. It expands to
//! // nothing on native targets, so the same crate is unit-tested natively.
//! export_realm!(Scores);
//!
//! // Native unit test through the very entry points the component uses, on
//! // an in-memory map with the host's semantics.
//! use realmhost_guest::{encode_payload, entry, EventRef, MemoryState};
//! let mut realm = MemoryState::new();
//! entry::init::<Scores>(&mut realm, "game-1").unwrap();
//! for (seq, (player, points)) in [("bob", 3), ("alice", 5), ("bob", 1)].into_iter().enumerate() {
//!     let payload = encode_payload(&Op::Score { player: player.into(), points });
//!     let event = EventRef::new(seq as u64 + 1, "score", &payload, "referee");
//!     entry::apply::<Scores>(&mut realm, &event).unwrap();
//! }
//! assert_eq!(entry::query::<Scores>(&realm, "total").unwrap(), "9");
//! assert_eq!(entry::query::<Scores>(&realm, "").unwrap(), "alice=5,bob=4");
//! assert_eq!(realm.len(), 3); // two players and the total
//! ```
//!
//! **Whole-state mode**, for small realms: implement [`RealmLogic`] with one
//! serde type for the whole state. The SDK stores it under a single key
//! ([`whole::STATE_KEY`]) together with its state version, loads it before
//! each event and saves it after. Every event then costs the size of the
//! whole state, so keep it to realms that stay small (a counter, a config).
//!
//! ```
//! use realmhost_guest::{export_realm, Event, RealmLogic, Rejection};
//! use serde::{Deserialize, Serialize};
//!
//! /// A tally that only ever goes up.
//! pub struct Tally;
//!
//! #[derive(Debug, Default, Serialize, Deserialize)]
//! pub struct State {
//!     pub total: u64,
//! }
//!
//! #[derive(Debug, Serialize, Deserialize)]
//! pub enum Op {
//!     Add(u64),
//! }
//!
//! impl RealmLogic for Tally {
//!     const REALM_TYPE: &'static str = "tally";
//!     const VERSION: &'static str = "1.0.0";
//!     const DESCRIPTION: &'static str = "A tally that only ever goes up";
//!     type State = State;
//!     type Event = Op;
//!
//!     fn init(_realm_id: &str) -> State {
//!         State::default()
//!     }
//!
//!     fn apply(state: &mut State, event: Event<'_, Op>) -> Result<(), Rejection> {
//!         match event.payload {
//!             Op::Add(n) => {
//!                 state.total = state
//!                     .total
//!                     .checked_add(n)
//!                     .ok_or_else(|| Rejection::new("overflow", "the tally is full"))?;
//!             }
//!         }
//!         Ok(())
//!     }
//! }
//!
//! export_realm!(Tally);
//!
//! use realmhost_guest::{encode_payload, entry, EventRef, MemoryState};
//! let mut realm = MemoryState::new();
//! entry::init::<Tally>(&mut realm, "realm-1").unwrap();
//! let payload = encode_payload(&Op::Add(5));
//! entry::apply::<Tally>(&mut realm, &EventRef::new(1, "add", &payload, "alice")).unwrap();
//! assert_eq!(entry::whole_state::<Tally>(&realm).unwrap().total, 5);
//! // A failed call keeps nothing.
//! let payload = encode_payload(&Op::Add(u64::MAX));
//! assert!(entry::apply::<Tally>(&mut realm, &EventRef::new(2, "add", &payload, "eve")).is_err());
//! assert_eq!(entry::query::<Tally>(&realm, "").unwrap(), r#"{"total":5}"#);
//! ```
//!
//! ## Rules of the road
//! - **Rejections are values.** Return a [`Rejection`] for a domain "no"
//!   (overdraft, not a member); in keyed mode `?` turns it into an
//!   [`ApplyError`]. A [`StateError`] (an entry that does not decode, a
//!   missing entry you `load`ed) becomes an `invalid` answer through `?`. A
//!   panic is a fault: the host fails that call, discards the instance and
//!   counts it against the plugin version.
//! - **State versions.** [`Realm::STATE_VERSION`] names the layout of your
//!   entries; the host records it with every snapshot. When the layout
//!   changes, bump it and implement [`Realm::migrate`]: a realm written with
//!   an older version is passed through it when it is loaded (if `migrate`
//!   fails, the host rebuilds the realm by replaying its events instead).
//! - **Messages between realms.** `apply` sends messages with [`send`]
//!   ([`Message::to`]`(realm, type).kind(..).payload(&value)...`); like
//!   writes, they are kept only if the call succeeds, and replay never
//!   re-sends (see [`message`]). A delivered message arrives as an event
//!   with [`Event::origin`] set; a reply arrives in [`Realm::on_reply`].
//! - **Trust.** [`Event::source_reputation`] is the source
//!   shard's reputation in `[0, 1]`; damp trust-like updates by it.
//!
//! ## Testing natively
//! On native targets the [`state`] functions run against a thread-local
//! [`MemoryState`] that the [`entry`] drivers install for the duration of a
//! call, with the host's semantics (writes kept only on success, read-only
//! queries, nothing in scope in `describe`). So the same code is unit-tested
//! and benchmarked natively through exactly the API it uses in the sandbox.
//! Host-enforced limits (sizes, fuel) are not modelled natively.
//!
//! ## Other languages
//! Anything that compiles to a component exporting the `realm-logic` world of
//! `wit/realm.wit` is a valid plugin. Batches use the packed format of the
//! [`batch`] module, scan pages the one of [`state::Page`].

#![warn(missing_docs)]

pub mod batch;
pub mod entry;
pub mod event;
pub mod message;
pub mod state;
pub mod storage;
pub mod whole;

mod error;

#[doc(hidden)]
pub mod __private;

/// Generated WIT bindings. Not part of the stable API: use [`Realm`].
#[doc(hidden)]
#[allow(
    missing_docs,
    missing_debug_implementations,
    unsafe_op_in_unsafe_fn,
    clippy::all
)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "realm-logic",
        pub_export_macro: true,
        export_macro_name: "__export_realm_logic",
        default_bindings_module: "realmhost_guest::bindings",
    });
}

pub use batch::{BatchReader, EventRef, Origin, Outcome, ReplyRef};
pub use core::ops::Bound;
pub use entry::PluginInfo;
pub use error::{ApplyError, BatchError, StateError};
pub use message::{Effects, Message, Reply, ReplyWanted, send};
pub use state::MemoryState;
pub use storage::{Item, Key, Map, Order, Prefix};
pub use whole::RealmLogic;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// One event as the logic sees it: the decoded payload plus its context.
#[derive(Debug, Clone, PartialEq)]
pub struct Event<'a, E> {
    /// Position in the realm's log (1, 2, 3, ... without gaps).
    pub seq: u64,
    /// Label chosen by the appender.
    pub kind: &'a str,
    /// The decoded payload.
    pub payload: E,
    /// The entity that caused the event.
    pub source: &'a str,
    /// Set when the event is a message delivered from another realm (the
    /// same as `origin.source_realm`).
    pub source_realm: Option<&'a str>,
    /// Host time at append, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// Reputation of the source's shard in `[0, 1]`; damp trust-like updates by it.
    pub source_reputation: f64,
    /// Set when the event is a message delivered from a realm (another one,
    /// or this one: a timer): where it came from. Only the host sets it, so
    /// logic that must not be reachable by clients (a credit from another
    /// bank) checks it. Replies never reach [`Realm::apply`]: they go to
    /// [`Realm::on_reply`].
    pub origin: Option<Origin<'a>>,
}

impl<E> Event<'_, E> {
    /// Whether the event is a message delivered from a realm (or a timer),
    /// rather than appended by a client.
    pub fn is_message(&self) -> bool {
        self.origin.is_some()
    }

    /// The correlation id the sender attached to the message, if any.
    pub fn correlation(&self) -> Option<&str> {
        self.origin.as_ref().and_then(|o| o.correlation)
    }
}

/// A domain "no": the event is understood but not allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Stable machine-readable reason, e.g. `overdraft`.
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
}

impl Rejection {
    /// A rejection with a code and a message.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
        }
    }
}

impl core::fmt::Display for Rejection {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for Rejection {}

/// The logic of one realm type, reading and writing the realm's entries
/// through [`state`] (or the typed [`Item`] and [`Map`]). Implement it, then
/// call [`export_realm!`].
///
/// Every function that runs with a realm in scope (`init`, `apply`,
/// `migrate`, `query`) has its writes kept only if it returns `Ok`.
pub trait Realm: 'static {
    /// The realm type this plugin implements (the registry key), e.g. `ledger`:
    /// 1..=64 bytes of `[a-z0-9_-]`.
    const REALM_TYPE: &'static str;
    /// Semantic version of the logic.
    const VERSION: &'static str;
    /// One line for operators.
    const DESCRIPTION: &'static str;
    /// Version of the layout of the realm's entries. The host records it with
    /// every snapshot; bump it when the layout changes and handle the older
    /// versions in [`Realm::migrate`].
    const STATE_VERSION: u32 = 1;

    /// Version of the event payload format. 0 (the default): plain postcard.
    /// Raise it when an event type changes shape, and decode the older
    /// payloads in [`Realm::upgrade_event`]; see [`event`] for the rule.
    const EVENT_VERSION: u32 = 0;

    /// The event payload (postcard-encoded on the wire; see [`event`]).
    type Event: Serialize + DeserializeOwned;

    /// Decode a stored payload written with the older event version
    /// `from_version` (untagged payloads are version 0). The default knows no
    /// older versions.
    fn upgrade_event(from_version: u32, payload: &[u8]) -> Result<Self::Event, String> {
        let _ = payload;
        Err(format!(
            "{} {} cannot read events of event version {from_version} (its event version is {})",
            Self::REALM_TYPE,
            Self::VERSION,
            Self::EVENT_VERSION
        ))
    }

    /// The JSON form of a stored event, for operators (`realmhost realm
    /// events`). The default is the serde JSON form of `Event`, the same form
    /// [`Realm::event_from_json`] reads.
    fn event_to_json(kind: &str, event: &Self::Event) -> Result<String, String> {
        let _ = kind;
        serde_json::to_string(event).map_err(|e| format!("cannot show the event as JSON: {e}"))
    }

    /// Write the initial entries of a new realm (the realm is empty). The
    /// default writes nothing.
    fn init(realm_id: &str) -> Result<(), String> {
        let _ = realm_id;
        Ok(())
    }

    /// Apply one event. On `Err` none of its writes are kept and none of the
    /// messages it [`send`]s are sent.
    fn apply(event: Event<'_, Self::Event>) -> Result<(), ApplyError>;

    /// Handle a reply: how the delivery of a message this realm sent (with
    /// [`ReplyWanted::OnFailure`] or [`ReplyWanted::Always`]) ended. The SDK
    /// calls it instead of [`Realm::apply`] for every event that carries a
    /// reply, without decoding the payload as a [`Realm::Event`] (the
    /// payload of a reply is the host's). It runs like `apply`: its writes
    /// and messages are kept only if it returns `Ok`, and it is replayed in
    /// `apply-batch`. The default ignores the reply.
    ///
    /// Rejecting a reply does not reach the sender of anything (replies are
    /// never replied to): the host records a receipt and the reply is gone,
    /// so reject only what cannot be handled at all.
    fn on_reply(reply: Reply<'_>) -> Result<(), ApplyError> {
        let _ = reply;
        Ok(())
    }

    /// Apply every event of a packed batch in order (the replay path). The
    /// default decodes and applies them one by one; override it only to share
    /// work across the events of a batch, with the same outcome as applying
    /// them one by one. All or nothing: on `Err` none of the batch's writes
    /// are kept.
    fn apply_batch(batch: BatchReader<'_>) -> Result<(), BatchError> {
        for (index, item) in (0u32..).zip(batch) {
            let at = |error| BatchError { index, error };
            let raw = item.map_err(|e| at(ApplyError::Invalid(e.to_string())))?;
            entry::dispatch::<Self>(&raw).map_err(at)?;
        }
        Ok(())
    }

    /// Bring the entries of a realm written with the older state version
    /// `from_state_version` to [`Realm::STATE_VERSION`]. The default knows no
    /// older versions and fails, which makes the host rebuild the realm by
    /// replaying its events.
    fn migrate(from_state_version: u32) -> Result<(), String> {
        Err(format!(
            "{} {} cannot migrate a realm from state version {from_state_version} to state version {}",
            Self::REALM_TYPE,
            Self::VERSION,
            Self::STATE_VERSION
        ))
    }

    /// Parse an event given as JSON (from the HTTP API or the CLI). The
    /// default reads the serde JSON form of `Event` and ignores `kind`.
    fn event_from_json(kind: &str, json: &str) -> Result<Self::Event, String> {
        let _ = kind;
        serde_json::from_str(json).map_err(|e| format!("invalid event JSON: {e}"))
    }

    /// A read-only view of the realm: JSON (or any text) in and out. Writes
    /// trap here.
    fn query(request: &str) -> Result<String, String>;
}

/// Encode an event payload as plain postcard: what the SDK decodes for a
/// realm type whose [`Realm::EVENT_VERSION`] is 0. For versioned event types
/// use [`event::encode`].
pub fn encode_payload<E: Serialize>(event: &E) -> Vec<u8> {
    // Serializing plain serde data into a Vec cannot fail.
    postcard::to_allocvec(event).unwrap_or_default()
}

/// Severity of a [`log`] line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Very detailed.
    Trace,
    /// Detailed.
    Debug,
    /// Normal.
    Info,
    /// Something looks wrong.
    Warn,
    /// Something is wrong.
    Error,
}

/// Write a line to the host's log. On native targets (unit tests) it writes
/// to standard error.
pub fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    {
        use bindings::realmhost::realm::types::LogLevel;
        let level = match level {
            Level::Trace => LogLevel::Trace,
            Level::Debug => LogLevel::Debug,
            Level::Info => LogLevel::Info,
            Level::Warn => LogLevel::Warn,
            Level::Error => LogLevel::Error,
        };
        bindings::realmhost::realm::host::log(level, message);
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        eprintln!("[{level:?}] {message}");
    }
}

/// Route panic messages to the host's log before the instance traps, so the
/// host's trap error can say why. [`export_realm!`] installs it on every
/// entry; a plugin that implements the generated bindings by hand should call
/// it at the start of each export.
pub fn install_panic_hook() {
    #[cfg(target_arch = "wasm32")]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            std::panic::set_hook(Box::new(|info| {
                let msg = format!("panic: {info}");
                log(Level::Error, &msg);
            }));
        });
    }
}

/// Export a [`Realm`] implementation (including any [`RealmLogic`] one) as
/// the plugin's component exports.
///
/// Use it once per plugin crate, at the crate root. On non-wasm targets it
/// expands to nothing, so the crate's logic compiles natively for unit tests
/// and benchmarks.
#[macro_export]
macro_rules! export_realm {
    ($plugin:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            type __RealmhostExport = $crate::__private::Adapter<$plugin>;
            $crate::bindings::__export_realm_logic!(__RealmhostExport with_types_in $crate::bindings);
        };
    };
}
