//! Limits and settings of the plugin runtime.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::state::StateLimits;

/// Settings of the plugin runtime. Every plugin call runs under these limits.
///
/// | field | default | why |
/// |---|---|---|
/// | `fuel_per_call` | 50 000 000 | bounds a single `apply`/`query`/`init` (~tens of ms of guest work) |
/// | `fuel_per_batch_event` | 2 000 000 | `apply-batch` gets `fuel_per_call + n × this` |
/// | `max_memory_bytes` | 64 MiB | linear-memory cap per instance |
/// | `max_output_bytes` | 4 MiB | cap on a returned state or query answer |
/// | `max_idle_instances` | 32 | warm instances kept per plugin version |
/// | `pool_slots` | 256 | pooling-allocator slots (instances alive at once, all plugins) |
/// | `cache_dir` | none | where compiled components are cached (`None`: no disk cache) |
/// | `quarantine_faults` | 20 | a version faulting more often than this… |
/// | `quarantine_realms` | 5 | …in at least this many distinct realms… |
/// | `quarantine_window_secs` | 60 | …within this window is taken out of service (0 faults: never) |
/// | `state_limits` | see [`StateLimits`] | per-realm limits on keyed state, enforced in every call |
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Fuel for one call.
    pub fuel_per_call: u64,
    /// Extra fuel per event of an `apply-batch` call.
    pub fuel_per_batch_event: u64,
    /// Linear-memory cap per instance, in bytes.
    pub max_memory_bytes: usize,
    /// Cap on bytes returned by a call.
    pub max_output_bytes: usize,
    /// Warm instances kept per plugin version.
    pub max_idle_instances: usize,
    /// Pooling-allocator slots shared by all plugins.
    pub pool_slots: u32,
    /// Directory for compiled components; `None` disables the disk cache.
    pub cache_dir: Option<PathBuf>,
    /// Faults within the window that quarantine a plugin version (0: never).
    pub quarantine_faults: u32,
    /// Distinct realms the faults must span to quarantine the version (one
    /// realm that keeps faulting is parked instead, see the node).
    pub quarantine_realms: u32,
    /// Length of the fault window, in seconds.
    pub quarantine_window_secs: u64,
    /// Limits on one realm's keyed state (TOML: `[runtime.state_limits]`).
    pub state_limits: StateLimits,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            fuel_per_call: 50_000_000,
            fuel_per_batch_event: 2_000_000,
            max_memory_bytes: 64 << 20,
            max_output_bytes: 4 << 20,
            max_idle_instances: 32,
            pool_slots: 256,
            cache_dir: None,
            quarantine_faults: 20,
            quarantine_realms: 5,
            quarantine_window_secs: 60,
            state_limits: StateLimits::default(),
        }
    }
}

impl RuntimeConfig {
    /// Check that the limits make sense.
    pub fn validate(&self) -> Result<(), String> {
        if self.fuel_per_call == 0 {
            return Err("runtime.fuel_per_call must be > 0".into());
        }
        if self.max_memory_bytes < (1 << 20) {
            return Err("runtime.max_memory_bytes must be at least 1 MiB".into());
        }
        if self.max_output_bytes == 0 || self.max_output_bytes > self.max_memory_bytes {
            return Err("runtime.max_output_bytes must be in 1..=max_memory_bytes".into());
        }
        if self.pool_slots == 0 {
            return Err("runtime.pool_slots must be > 0".into());
        }
        self.state_limits
            .validate()
            .map_err(|e| format!("runtime.{e}"))?;
        Ok(())
    }
}
