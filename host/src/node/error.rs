//! Errors of the node's operations.

use crate::monitor::MonitorError;
use crate::realm::{InvalidRealmId, RealmId};
use crate::runtime::{RegistryError, Rejection, RuntimeError};
use crate::storage::StorageError;
use crate::store::{LoadError, StoreError};

use super::{SeedConflict, ShadowReport};
use crate::runtime::PluginVersion;

/// Errors of the node's operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The realm id is not valid.
    #[error(transparent)]
    InvalidRealmId(#[from] InvalidRealmId),
    /// A field of the request is not acceptable.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// No dead letter has this message id (never dead-lettered, or already
    /// retried or dropped).
    #[error("no dead letter {0}")]
    DeadLetterNotFound(String),
    /// No plugin serves this realm type.
    #[error("unknown realm type {}", crate::quote::Quoted(.0))]
    UnknownRealmType(String),
    /// The realm exists with another type.
    #[error("realm {realm} has type {actual:?}, not {}", crate::quote::Quoted(.requested))]
    RealmTypeMismatch {
        /// The realm.
        realm: RealmId,
        /// Its type.
        actual: String,
        /// The type the request named.
        requested: String,
    },
    /// The realm has no events.
    #[error("realm {0} does not exist")]
    RealmNotFound(RealmId),
    /// The realm's events kept faulting, so it is parked: nothing runs for it
    /// until an operator releases it or a new version of its type is loaded.
    #[error(
        "realm {realm} is parked after repeated faults (last: {last_fault}); release it or load a fixed plugin version"
    )]
    RealmParked {
        /// The realm.
        realm: RealmId,
        /// The fault that parked it (or the latest one).
        last_fault: String,
    },
    /// The active plugin version of the realm's type cannot rebuild the
    /// realm: it refuses one of the realm's stored events (or `init`). The
    /// realm's data is intact; activating a version that can read it (a swap
    /// or a rollback) serves it again.
    #[error(transparent)]
    RealmUnservable(Box<Unservable>),
    /// Two different builds among the plugins the node starts with (built-in
    /// and plugins directory) carry the same realm type and semantic version;
    /// the node does not guess which one is meant.
    #[error("plugin conflict: {}; remove one build or give it its own version", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    PluginConflict(Vec<SeedConflict>),
    /// The plugin rejected the event (a domain "no"); nothing was stored.
    #[error("realm {realm}: rejected by {realm_type}: {rejection}")]
    Rejected {
        /// The realm the event was for.
        realm: RealmId,
        /// Realm type.
        realm_type: String,
        /// The plugin's reason.
        rejection: Rejection,
    },
    /// The plugin could not understand the event or state.
    #[error("realm {realm}: invalid for {realm_type}: {message}")]
    PluginInvalid {
        /// The realm the event, query or rebuild was for.
        realm: RealmId,
        /// Realm type.
        realm_type: String,
        /// The plugin's message.
        message: String,
    },
    /// The crossing comes from a quarantined shard; no plugin ran.
    #[error(transparent)]
    Quarantined(MonitorError),
    /// A shard index or monitor operation was refused.
    #[error(transparent)]
    Monitor(MonitorError),
    /// The plugin failed (trap, limits).
    #[error(transparent)]
    Plugin(#[from] RuntimeError),
    /// Plugin registry operation failed.
    #[error(transparent)]
    Registry(RegistryError),
    /// The durable layer failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A conditional append named a seq the realm is not at (optimistic
    /// concurrency: another event was appended since the caller looked).
    /// Nothing was stored.
    #[error("realm {realm} is at seq {actual}, not the expected {expected}")]
    SeqConflict {
        /// The realm.
        realm: RealmId,
        /// The seq the append expected the realm to be at.
        expected: u64,
        /// The realm's seq (including events being committed).
        actual: u64,
    },
    /// The event was applied behind an earlier event of the same realm that
    /// was still being committed (pipelining), and that earlier event's
    /// commit failed: this one is not stored either. The realm is back at
    /// its last durable state; retrying is safe.
    #[error(
        "event {seq} of realm {realm} was not stored: the commit of an earlier event{} failed; retry",
        .failed_seq.map(|s| format!(" ({s})")).unwrap_or_default()
    )]
    PipelineAborted {
        /// The realm.
        realm: RealmId,
        /// The seq this event would have had.
        seq: u64,
        /// Seq of the earlier event whose commit failed (`None`: storage
        /// found an earlier event missing).
        failed_seq: Option<u64>,
    },
    /// Loading the realm failed.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The store refused a new realm (lazy loading is off, so nothing is
    /// evicted, and the realm's shard or the memory budget is full); nothing
    /// was stored.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Eviction was requested, but lazy loading is off: an evicted realm
    /// could not be loaded again.
    #[error(
        "eviction is disabled: lazy loading is off, so an evicted realm could not be loaded again"
    )]
    EvictionDisabled,
    /// Shadow replay found realms the candidate cannot rebuild; not promoted.
    #[error("candidate {} refused: {} of {} realms failed shadow replay", .0.candidate, .0.failures.len(), .0.realms_checked)]
    ShadowFailed(Box<ShadowReport>),
    /// The plugin-execution pool is full: too many calls wait for a slot
    /// (in all, or of this realm type). Nothing ran and nothing was stored;
    /// retry shortly.
    #[error("overloaded: {queued} plugin calls already wait for {}; the limit is {limit}", crate::quote::Quoted(.realm_type))]
    Overloaded {
        /// The realm type the call was for.
        realm_type: String,
        /// Calls waiting when this one was refused.
        queued: usize,
        /// The bound that was reached.
        limit: usize,
    },
    /// Host code run on the plugin-execution pool panicked (a bug, not a
    /// plugin fault: plugin traps are [`NodeError::Plugin`]). Only this call
    /// failed; the pool carries on.
    #[error("internal error running work for {}: {message}", crate::quote::Quoted(.realm_type))]
    ExecPanicked {
        /// The realm type the call was for (empty for storage reads).
        realm_type: String,
        /// The panic message.
        message: String,
    },
    /// The job doing this work (a verify, a shadow replay) was cancelled by
    /// an operator before it finished.
    #[error("job {job} was cancelled")]
    Cancelled {
        /// The job.
        job: u64,
    },
    /// The node is shutting down.
    #[error("the node is shutting down")]
    ShuttingDown,
    /// Setting up the node failed.
    #[error("node set-up: {0}")]
    Setup(String),
}

/// The details of [`NodeError::RealmUnservable`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "realm {realm} cannot be served by {realm_type} {semver} ({version}): {}: {reason}; activate a version that can read it (plugin swap or rollback)",
    refused_at(.seq)
)]
pub struct Unservable {
    /// The realm.
    pub realm: RealmId,
    /// Its realm type.
    pub realm_type: String,
    /// Semantic version of the active version.
    pub semver: String,
    /// Hash of the active version.
    pub version: PluginVersion,
    /// The refused event (0: `init`).
    pub seq: u64,
    /// The plugin's reason.
    pub reason: String,
}

fn refused_at(seq: &u64) -> String {
    if *seq == 0 {
        "its init failed".to_owned()
    } else {
        format!("it refuses stored event {seq}")
    }
}

impl From<RegistryError> for NodeError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::UnknownRealmType(t) => Self::UnknownRealmType(t),
            RegistryError::Runtime(r) => Self::Plugin(r),
            other => Self::Registry(other),
        }
    }
}
