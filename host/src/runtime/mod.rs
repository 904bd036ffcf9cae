//! The plugin runtime: realm logic as sandboxed WebAssembly components.
//!
//! A realm type's logic is a component that exports the `realm-logic` world of
//! `wit/realm.wit`. The runtime owns **one** wasmtime [`Engine`] for the whole
//! process; each component is compiled once (kept in memory for every runtime
//! of the process, and cached on disk, keyed by its content hash, the
//! engine's configuration and the wasmtime version) and
//! becomes a [`Plugin`]: a pre-linked component plus a pool of warm instances.
//!
//! ## Sandboxing
//! - **Contract.** A component must be built against `realmhost:realm@0.3.0`
//!   (or 0.2.0, served without messages, so uploaded plugins stay loadable
//!   across an upgrade); one built against another version is refused with
//!   [`RuntimeError::ContractVersion`] naming the version it needs.
//! - **State.** A realm's state is a keyed map owned by the host; a call sees
//!   it through the `realmhost:realm/state` import, scoped to the realm being
//!   called, with buffered writes kept only if the call succeeds and
//!   per-realm limits ([`crate::state::StateLimits`]) checked on every
//!   operation.
//! - **Capabilities.** A component may import only the `realmhost:realm`
//!   interfaces and the WASI interfaces Rust's std links into every
//!   component, served with no capabilities (see `imports`). A component that
//!   imports clocks, randomness, files or sockets is refused at load time with
//!   [`RuntimeError::ForbiddenImport`] naming the import.
//! - **Limits.** Every call runs with a fuel budget, a linear-memory cap and a
//!   cap on the bytes it may return ([`RuntimeConfig`]).
//! - **Faults.** A trap — panic, endless loop, memory exhaustion, stack
//!   overflow, malformed canonical-ABI data — fails that one call with
//!   [`RuntimeError::Trap`] naming the plugin and the cause. The instance is
//!   discarded (a store is unusable after a trap); the host and every other
//!   realm carry on.
//! - **Determinism.** NaNs are canonicalized and relaxed SIMD is
//!   deterministic, so a replay on another machine yields the same state.
//!
//! ## Performance
//! The engine uses wasmtime's minimal feature set and the pooling allocator:
//! a call costs a fraction of a microsecond, an instantiation tens of
//! microseconds. Batches cross the boundary as one packed buffer
//! (`realmhost_guest::batch`). See `docs/BENCHMARKS.md`.

mod bindings;
mod cache;
mod config;
mod convert;
mod error;
mod faults;
mod host_ctx;
mod imports;
mod plugin;
mod registry;
mod slices;
mod stdio;
mod version;

use std::sync::Arc;

use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

pub use config::RuntimeConfig;
pub use error::{RuntimeError, TrapCause, import_hint};
pub(crate) use plugin::valid_realm_type;
pub use plugin::{
    ApplyOutcome, BatchOutcome, EventFailure, Metered, Plugin, PluginStats, ReplayResult, Replayed,
    Scope,
};
pub use registry::{
    InvalidSelector, LoadOptions, LoadReport, MIN_HASH_PREFIX, PerFile, PluginListing,
    PluginRegistry, RegistryError, TypeState, VersionSelector, read_wasm_dir,
};
pub use slices::yield_in_calls;
pub use stdio::MAX_OUTPUT_BYTES_PER_CALL;
pub use version::{PluginInfo, PluginTag, PluginVersion, Rejection};

use bindings::{Contract, LogicPre};
use host_ctx::HostCtx;

/// The wasmtime version compiled in; part of the compiled-component cache key.
pub const WASMTIME_VERSION: &str = "48.0.8";

/// The version of the `realmhost:realm` WIT package this host implements
/// (what the guest SDK builds against).
pub const CONTRACT_VERSION: &str = "0.3.0";

/// Every version of the package this host loads: the current one, and 0.2.0
/// (components built before messages, which send none).
pub const CONTRACT_VERSIONS: &[&str] = &["0.3.0", "0.2.0"];

/// One engine and the shared linker; loads components into [`Plugin`]s.
pub struct PluginRuntime {
    engine: Engine,
    linker: Linker<HostCtx>,
    config: Arc<RuntimeConfig>,
    engine_key: cache::EngineKey,
    cache: Option<cache::ComponentCache>,
}

impl std::fmt::Debug for PluginRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginRuntime")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl PluginRuntime {
    /// Build the engine and linker.
    pub fn new(config: RuntimeConfig) -> Result<Self, RuntimeError> {
        config.validate().map_err(RuntimeError::Config)?;
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(config.pool_slots)
            .total_core_instances(config.pool_slots)
            .total_memories(config.pool_slots)
            .total_tables(config.pool_slots)
            .max_memory_size(config.max_memory_bytes);
        let mut wcfg = Config::new();
        wcfg.wasm_component_model(true)
            .consume_fuel(true)
            // Long calls on the node's background threads yield the CPU
            // every few hundred microseconds (`slices`).
            .epoch_interruption(true)
            .cranelift_nan_canonicalization(true)
            .relaxed_simd_deterministic(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&wcfg).map_err(|e| RuntimeError::Config(format!("{e:#}")))?;
        slices::register(&engine);

        let mut linker = Linker::new(&engine);
        host_ctx::add_host_imports(&mut linker)
            .map_err(|e| RuntimeError::Config(format!("{e:#}")))?;

        let engine_key = cache::engine_key(&engine);
        let cache =
            match &config.cache_dir {
                Some(dir) => Some(cache::ComponentCache::open(dir, engine_key).map_err(
                    |source| RuntimeError::Cache {
                        path: dir.clone(),
                        source,
                    },
                )?),
                None => None,
            };
        Ok(Self {
            engine,
            linker,
            config: Arc::new(config),
            engine_key,
            cache,
        })
    }

    /// The runtime's limits.
    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// The shared engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Compile (or fetch from the cache), check and link a component, and
    /// call its `describe`.
    #[tracing::instrument(name = "runtime.load", skip_all, fields(bytes = bytes.len(), version))]
    pub fn load(&self, bytes: &[u8]) -> Result<Plugin, RuntimeError> {
        let version = PluginVersion::of(bytes);
        tracing::Span::current().record("version", tracing::field::display(version));
        let component = self.compile(bytes, version)?;
        let contract = imports::check_contract(&self.engine, &component)?;
        imports::check_imports(&self.engine, &component)?;

        let mut linker = self.linker.clone();
        for v in imports::wasi_versions(&self.engine, &component) {
            imports::add_wasi(&mut linker, &v).map_err(|e| RuntimeError::Incompatible {
                reason: format!("{e:#}"),
            })?;
        }
        linker
            .define_unknown_imports_as_traps(&component)
            .map_err(|e| RuntimeError::Incompatible {
                reason: format!("{e:#}"),
            })?;
        let instance_pre =
            linker
                .instantiate_pre(&component)
                .map_err(|e| RuntimeError::Incompatible {
                    reason: format!("{e:#}"),
                })?;
        // Told by the imports, else by which world's exports match.
        let pre = match contract {
            Some(Contract::V2) => bindings::v2::RealmLogicPre::new(instance_pre).map(LogicPre::V2),
            Some(Contract::V3) => bindings::v3::RealmLogicPre::new(instance_pre).map(LogicPre::V3),
            None => bindings::v3::RealmLogicPre::new(instance_pre.clone())
                .map(LogicPre::V3)
                .or_else(|_| bindings::v2::RealmLogicPre::new(instance_pre).map(LogicPre::V2)),
        }
        .map_err(|e| RuntimeError::Incompatible {
            reason: format!("{e:#}"),
        })?;
        let plugin = Plugin::new(
            self.engine.clone(),
            pre,
            self.config.clone(),
            version,
            bytes.len(),
        )?;
        tracing::info!(realm_type = plugin.realm_type(), semver = %plugin.info().semver, %version, "plugin loaded");
        Ok(plugin)
    }

    /// The compiled component for `bytes`: from the process's shared memory
    /// cache, the disk cache, or Cranelift (then kept in both).
    fn compile(&self, bytes: &[u8], version: PluginVersion) -> Result<Component, RuntimeError> {
        if let Some((c, artifact)) = cache::shared_get(&self.engine, &self.engine_key, version) {
            // Also on this runtime's disk, so its next process starts warm.
            if let Some(cache) = &self.cache
                && let Err(e) = cache.put(version, &artifact)
            {
                tracing::warn!(error = %e, "could not write the compiled-component cache");
            }
            return Ok(c);
        }
        if let Some(cache) = &self.cache
            && let Some(c) = cache.get(&self.engine, version)
        {
            return Ok(c);
        }
        let component =
            Component::new(&self.engine, bytes).map_err(|e| RuntimeError::InvalidComponent {
                reason: format!("{e:#}"),
            })?;
        let artifact = cache::shared_put(&self.engine_key, version, &component);
        if let Some(cache) = &self.cache
            && let Some(artifact) = &artifact
            && let Err(e) = cache.put(version, artifact)
        {
            tracing::warn!(error = %e, "could not write the compiled-component cache");
        }
        Ok(component)
    }
}
