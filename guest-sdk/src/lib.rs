//! # realmhost-guest: write realm logic for realmhost
//!
//! A realmhost node keeps millions of *realms*; what an event *does* to a realm
//! is decided by a plugin: a WebAssembly component, one per realm type. This
//! crate is everything a plugin author needs. You implement one trait,
//! [`RealmLogic`], with ordinary serde types for the state and the event
//! payload, and export it with one macro, [`export_realm!`]. Encoding (postcard),
//! state versioning, batch decoding and the WIT glue are this crate's job.
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
//! // In a plugin crate this line makes the component's exports. It expands to
//! // nothing on native targets, so the same crate is unit-tested natively.
//! export_realm!(Tally);
//!
//! // Native unit test through the very entry points the component uses:
//! use realmhost_guest::{entry, encode_payload, EventRef};
//! let state = entry::init::<Tally>("realm-1");
//! let payload = encode_payload(&Op::Add(5));
//! let event = EventRef::new(1, "add", &payload, "alice");
//! let state = entry::apply::<Tally>(&state, &event).unwrap();
//! assert_eq!(entry::decode_state::<Tally>(&state).unwrap().total, 5);
//! ```
//!
//! ## The contract
//! - **Determinism.** `apply` must be a pure function of the state and the
//!   event: no clock (use [`Event::timestamp_ms`], set by the host), no
//!   randomness, no I/O. The host refuses components that import clocks,
//!   randomness, files or sockets, so replaying a realm's log always rebuilds
//!   the same state.
//! - **Rejections are values.** Return a [`Rejection`] for a domain "no"
//!   (overdraft, not a member). A panic is a fault: the host fails that call,
//!   discards the instance and counts it against the plugin version.
//! - **State versions.** Encoded states start with [`RealmLogic::STATE_VERSION`].
//!   When you change the shape of `State`, bump it and teach
//!   [`RealmLogic::migrate`] to read the older bytes: snapshots written by
//!   older versions come back through it (the `restore` export).
//!
//! ## Other languages
//! Anything that compiles to a component exporting the `realm-logic` world of
//! `wit/realm.wit` is a valid plugin. Batches use the packed format of the
//! [`batch`] module.

#![warn(missing_docs)]

pub mod batch;
pub mod entry;

#[doc(hidden)]
pub mod __private;

/// Generated WIT bindings. Not part of the stable API: use [`RealmLogic`].
#[doc(hidden)]
#[allow(missing_docs, missing_debug_implementations, unsafe_op_in_unsafe_fn)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "realm-logic",
        pub_export_macro: true,
        export_macro_name: "__export_realm_logic",
        default_bindings_module: "realmhost_guest::bindings",
    });
}

pub use batch::EventRef;
pub use entry::{ApplyError, BatchError, PluginInfo};

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
    /// Set when the event crosses over from another realm.
    pub source_realm: Option<&'a str>,
    /// Host time at append, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// Reputation of the source's shard in `[0, 1]`; damp trust-like updates by it.
    pub source_reputation: f64,
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

/// The logic of one realm type. Implement it, then call [`export_realm!`].
pub trait RealmLogic: 'static {
    /// The realm type this plugin implements (the registry key), e.g. `ledger`.
    const REALM_TYPE: &'static str;
    /// Semantic version of the logic.
    const VERSION: &'static str;
    /// One line for operators.
    const DESCRIPTION: &'static str;
    /// Version of the state encoding. Bump it when `State` changes shape and
    /// handle the older versions in [`RealmLogic::migrate`].
    const STATE_VERSION: u8 = 1;

    /// The realm state.
    type State: Serialize + DeserializeOwned;
    /// The event payload.
    type Event: Serialize + DeserializeOwned;

    /// The state of a realm with no events.
    fn init(realm_id: &str) -> Self::State;

    /// Apply one event. On `Err` the host keeps the previous state, so a
    /// partly mutated `state` is harmless.
    fn apply(state: &mut Self::State, event: Event<'_, Self::Event>) -> Result<(), Rejection>;

    /// Read a state written with an older [`RealmLogic::STATE_VERSION`].
    /// The default knows no older versions.
    fn migrate(version: u8, bytes: &[u8]) -> Result<Self::State, String> {
        let _ = bytes;
        Err(format!(
            "state version {version} is not supported by {} {} (current state version {})",
            Self::REALM_TYPE,
            Self::VERSION,
            Self::STATE_VERSION
        ))
    }

    /// Parse an event given as JSON (from the HTTP API or the CLI). The default
    /// reads the serde JSON form of `Event` and ignores `kind`.
    fn event_from_json(kind: &str, json: &str) -> Result<Self::Event, String> {
        let _ = kind;
        serde_json::from_str(json).map_err(|e| format!("invalid event JSON: {e}"))
    }

    /// A read-only view of the state. The default returns the whole state as
    /// JSON and ignores the request.
    fn query(state: &Self::State, request: &str) -> Result<String, String> {
        let _ = request;
        serde_json::to_string(state).map_err(|e| e.to_string())
    }
}

/// Encode an event payload the way the SDK decodes it (postcard).
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

/// Export a [`RealmLogic`] implementation as the plugin's component exports.
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
