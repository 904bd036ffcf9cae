//! What the store's operations can fail with.

use std::sync::Arc;
use std::time::Duration;

use super::ConfigError;

/// Error type loaders return.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why [`ShardedStore::get_or_load`] produced no value. Cloned to every caller
/// that waited on the same load.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The loader does not know the realm.
    #[error("realm {0:?} is unknown")]
    NotFound(Arc<str>),
    /// `lazy_loading_enabled` is off and the realm is not in memory.
    #[error("realm {0:?} is not in memory and lazy loading is disabled")]
    LoadingDisabled(Arc<str>),
    /// Waiting for a load slot plus loading took longer than the timeout.
    #[error("loading realm {realm:?} timed out after {timeout:?}")]
    Timeout {
        /// The realm.
        realm: Arc<str>,
        /// The configured timeout.
        timeout: Duration,
    },
    /// The loader failed.
    #[error("loading realm {realm:?} failed: {source}")]
    Loader {
        /// The realm.
        realm: Arc<str>,
        /// The loader's error, shared by all waiters.
        #[source]
        source: Arc<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// The realm was removed again during every one of several loads.
    #[error("realm {realm:?} was removed during each of {attempts} loads")]
    Contended {
        /// The realm.
        realm: Arc<str>,
        /// Loads attempted.
        attempts: u32,
    },
}

/// Errors of store operations other than loading.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Background tasks need a tokio runtime and none is running.
    #[error("spawning eviction tasks needs a running tokio runtime")]
    NoRuntime,
    /// Eviction is suspended (lazy loading is off) and the realm's shard
    /// already holds its hard cap of realms: a new realm would need another
    /// one to leave memory for good.
    #[error(
        "store full: shard {shard} holds its hard cap of {cap} realms, and nothing is evicted while lazy loading is off"
    )]
    ShardFull {
        /// The shard.
        shard: usize,
        /// Its hard cap (`ShardingConfig::hard_cap`).
        cap: usize,
    },
    /// Eviction is suspended (lazy loading is off) and the realms in memory
    /// already use the whole memory budget.
    #[error(
        "store full: realms in memory use {bytes} bytes of the {budget}-byte budget, and nothing is evicted while lazy loading is off"
    )]
    MemoryFull {
        /// State bytes in memory.
        bytes: u64,
        /// `ShardingConfig::memory_budget_bytes`.
        budget: u64,
    },
}
