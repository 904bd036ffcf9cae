//! [`ShardingConfig`]: how many shards, how many realms each may hold, how
//! often the background sweep runs, and the guards against memory blow-up and
//! recovery storms.
//!
//! The five profiles come from the specification's table; every knob that the
//! table does not name has its default documented on the field and set in
//! [`ShardingConfig::with_shape`].

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Why a [`ShardingConfig`] cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `num_shards` is zero: no realm would have a home.
    #[error("num_shards must be at least 1")]
    ZeroShards,
    /// `max_per_shard` is zero: every realm would be evicted at once.
    #[error("max_per_shard must be at least 1")]
    ZeroMaxPerShard,
    /// The LRU tracking capacity cannot hold the realms a shard may keep.
    #[error("lru_capacity_per_shard ({lru}) is below max_per_shard ({max})")]
    LruBelowMax {
        /// Configured LRU capacity per shard.
        lru: usize,
        /// Configured target size per shard.
        max: usize,
    },
    /// The hard cap would shed realms before the periodic target is reached.
    #[error("hard_cap_per_shard ({cap}) is below max_per_shard ({max})")]
    HardCapBelowMax {
        /// Configured hard cap per shard.
        cap: usize,
        /// Configured target size per shard.
        max: usize,
    },
    /// The periodic sweep would never run (or spin).
    #[error("eviction_interval_secs must be at least 1")]
    ZeroEvictionInterval,
    /// No load could ever start.
    #[error("max_concurrent_loads must be at least 1")]
    ZeroConcurrentLoads,
    /// Every load would time out immediately.
    #[error("load_timeout_ms must be at least 1")]
    ZeroLoadTimeout,
    /// A memory budget of zero bytes would shed every realm on insert.
    #[error("memory_budget_bytes must be at least 1 when set")]
    ZeroMemoryBudget,
    /// The TOML text did not parse into a configuration.
    #[error("invalid sharding configuration TOML: {0}")]
    Toml(String),
}

/// Configuration of the sharded realm store.
///
/// Build one from a profile ([`ShardingConfig::production`], ...), adjust it
/// with [`ShardingConfig::builder`], or read it from TOML with
/// [`ShardingConfig::from_toml_str`]; fields missing from the TOML take the
/// values of [`ShardingConfig::default`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShardingConfig {
    /// Number of shards; a realm lives in `shard_of(id, num_shards)`.
    pub num_shards: usize,
    /// Target size of a shard: the periodic sweep evicts the least recently
    /// used realms beyond this many.
    pub max_per_shard: usize,
    /// Seconds between two sweeps of one shard.
    pub eviction_interval_secs: u64,
    /// How many realms a shard tracks for LRU ordering; also the default hard
    /// cap (a shard never holds more realms than it can order).
    pub lru_capacity_per_shard: usize,
    /// Whether realms come and go: `get_or_load` calls the loader on a miss,
    /// and realms beyond the limits are evicted.
    ///
    /// When off, the store holds the complete set of realms its owner put in
    /// (the node loads every stored realm at start): a miss is answered with
    /// `LoadError::LoadingDisabled`, and *nothing is evicted* — no periodic
    /// sweep, no shedding at the hard cap or the memory budget, and
    /// `evict_all` does nothing — because an evicted realm could not come
    /// back. Instead, `ShardedStore::reserve` refuses room for a new realm
    /// once its shard holds `hard_cap()` realms or the store reaches
    /// `memory_budget_bytes` (`StoreError::ShardFull` / `MemoryFull`);
    /// `max_per_shard` is not enforced. Only explicit `remove` and
    /// `evict_down_to` calls drop realms.
    pub lazy_loading_enabled: bool,
    /// Whether loaders should replay events after the snapshot. The store only
    /// carries this flag for the loader; it does not replay anything itself.
    pub event_replay_on_load: bool,
    /// Size at which an insert sheds the coldest realms of its shard right
    /// away (down to `max_per_shard`) instead of waiting for the sweep.
    /// `None` (default) means `lru_capacity_per_shard`.
    pub hard_cap_per_shard: Option<usize>,
    /// Optional budget for the sum of `StoreValue::size_bytes` over all
    /// realms; when exceeded, inserts shed the coldest realms of their shard.
    /// Default `None` (no budget).
    pub memory_budget_bytes: Option<u64>,
    /// Loads that may run at once across the whole store; further loads wait
    /// in FIFO order. Default 64.
    pub max_concurrent_loads: usize,
    /// Time a load may take, waiting for a load slot included, before its
    /// callers get `LoadError::Timeout`. Default 30 000 ms.
    pub load_timeout_ms: u64,
}

impl Default for ShardingConfig {
    /// The `default` profile: 64 shards × 20 000 realms, sweep every 600 s.
    fn default() -> Self {
        Self::with_shape(64, 20_000, 600, 25_000, true, true)
    }
}

impl ShardingConfig {
    /// A profile row of the specification's table, with the documented
    /// defaults for the knobs the table does not name.
    const fn with_shape(
        num_shards: usize,
        max_per_shard: usize,
        eviction_interval_secs: u64,
        lru_capacity_per_shard: usize,
        lazy_loading_enabled: bool,
        event_replay_on_load: bool,
    ) -> Self {
        Self {
            num_shards,
            max_per_shard,
            eviction_interval_secs,
            lru_capacity_per_shard,
            lazy_loading_enabled,
            event_replay_on_load,
            hard_cap_per_shard: None,
            memory_budget_bytes: None,
            max_concurrent_loads: 64,
            load_timeout_ms: 30_000,
        }
    }

    /// Tests: 4 shards × 100 realms, sweep every 60 s, LRU 150, no lazy
    /// loading and no replay (simpler debugging). Without lazy loading nothing
    /// is evicted, so each shard holds up to its hard cap (150 realms).
    pub const fn minimal() -> Self {
        Self::with_shape(4, 100, 60, 150, false, false)
    }

    /// Development: 64 shards × 20 000 realms, sweep every 600 s, LRU 25 000.
    pub fn development() -> Self {
        Self::default()
    }

    /// One node: 128 shards × 50 000 realms, sweep every 300 s, LRU 60 000.
    pub const fn production() -> Self {
        Self::with_shape(128, 50_000, 300, 60_000, true, true)
    }

    /// Sized to the machine: 4 shards per CPU × 30 000 realms, sweep every
    /// 600 s, LRU 36 000.
    pub fn auto_scaled() -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self::with_shape(cpus * 4, 30_000, 600, 36_000, true, true)
    }

    /// Multi-node: 256 shards × 25 000 realms, sweep every 180 s, LRU 30 000.
    pub const fn high_security() -> Self {
        Self::with_shape(256, 25_000, 180, 30_000, true, true)
    }

    /// Start a builder from the `default` profile.
    pub fn builder() -> ShardingConfigBuilder {
        ShardingConfigBuilder(Self::default())
    }

    /// Parse from TOML (missing fields take `default` values) and validate.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text).map_err(|e| ConfigError::Toml(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Check the invariants the store relies on.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.num_shards == 0 {
            return Err(ConfigError::ZeroShards);
        }
        if self.max_per_shard == 0 {
            return Err(ConfigError::ZeroMaxPerShard);
        }
        if self.lru_capacity_per_shard < self.max_per_shard {
            return Err(ConfigError::LruBelowMax {
                lru: self.lru_capacity_per_shard,
                max: self.max_per_shard,
            });
        }
        if let Some(cap) = self.hard_cap_per_shard
            && cap < self.max_per_shard
        {
            return Err(ConfigError::HardCapBelowMax {
                cap,
                max: self.max_per_shard,
            });
        }
        if self.eviction_interval_secs == 0 {
            return Err(ConfigError::ZeroEvictionInterval);
        }
        if self.max_concurrent_loads == 0 {
            return Err(ConfigError::ZeroConcurrentLoads);
        }
        if self.load_timeout_ms == 0 {
            return Err(ConfigError::ZeroLoadTimeout);
        }
        if self.memory_budget_bytes == Some(0) {
            return Err(ConfigError::ZeroMemoryBudget);
        }
        Ok(())
    }

    /// The effective hard cap per shard.
    pub fn hard_cap(&self) -> usize {
        self.hard_cap_per_shard
            .unwrap_or(self.lru_capacity_per_shard)
    }

    /// The sweep interval as a duration.
    pub fn eviction_interval(&self) -> Duration {
        Duration::from_secs(self.eviction_interval_secs)
    }

    /// The load timeout as a duration.
    pub fn load_timeout(&self) -> Duration {
        Duration::from_millis(self.load_timeout_ms)
    }
}

/// Builder for [`ShardingConfig`]; [`ShardingConfigBuilder::build`] validates.
#[derive(Debug, Clone)]
pub struct ShardingConfigBuilder(ShardingConfig);

macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident: $ty:ty),* $(,)?) => {
        $(
            $(#[$doc])*
            pub fn $name(mut self, value: $ty) -> Self {
                self.0.$name = value;
                self
            }
        )*
    };
}

impl ShardingConfigBuilder {
    /// Start from a given profile instead of `default`.
    pub fn from_profile(profile: ShardingConfig) -> Self {
        Self(profile)
    }

    setters! {
        /// Set `num_shards`.
        num_shards: usize,
        /// Set `max_per_shard`.
        max_per_shard: usize,
        /// Set `eviction_interval_secs`.
        eviction_interval_secs: u64,
        /// Set `lru_capacity_per_shard`.
        lru_capacity_per_shard: usize,
        /// Set `lazy_loading_enabled`.
        lazy_loading_enabled: bool,
        /// Set `event_replay_on_load`.
        event_replay_on_load: bool,
        /// Set `max_concurrent_loads`.
        max_concurrent_loads: usize,
        /// Set `load_timeout_ms`.
        load_timeout_ms: u64,
    }

    /// Set the hard cap per shard (default: `lru_capacity_per_shard`).
    pub fn hard_cap_per_shard(mut self, cap: usize) -> Self {
        self.0.hard_cap_per_shard = Some(cap);
        self
    }

    /// Set a memory budget in bytes of state (default: none).
    pub fn memory_budget_bytes(mut self, bytes: u64) -> Self {
        self.0.memory_budget_bytes = Some(bytes);
        self
    }

    /// Validate and return the configuration.
    pub fn build(self) -> Result<ShardingConfig, ConfigError> {
        self.0.validate()?;
        Ok(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_match_the_spec_table() {
        let rows = [
            (ShardingConfig::minimal(), 4, 100, 60, 150),
            (ShardingConfig::default(), 64, 20_000, 600, 25_000),
            (ShardingConfig::production(), 128, 50_000, 300, 60_000),
            (ShardingConfig::high_security(), 256, 25_000, 180, 30_000),
        ];
        for (c, shards, max, secs, lru) in rows {
            assert_eq!(
                (
                    c.num_shards,
                    c.max_per_shard,
                    c.eviction_interval_secs,
                    c.lru_capacity_per_shard
                ),
                (shards, max, secs, lru)
            );
            c.validate().expect("profile is valid");
        }
        let auto = ShardingConfig::auto_scaled();
        assert_eq!(auto.num_shards % 4, 0);
        assert_eq!(
            (auto.max_per_shard, auto.lru_capacity_per_shard),
            (30_000, 36_000)
        );
        auto.validate().expect("auto profile is valid");
        assert!(!ShardingConfig::minimal().lazy_loading_enabled);
        assert_eq!(ShardingConfig::development(), ShardingConfig::default());
    }

    #[test]
    fn validation_names_the_problem() {
        let b = || ShardingConfig::builder();
        assert_eq!(b().num_shards(0).build(), Err(ConfigError::ZeroShards));
        assert_eq!(
            b().max_per_shard(0).build(),
            Err(ConfigError::ZeroMaxPerShard)
        );
        assert_eq!(
            b().max_per_shard(10).lru_capacity_per_shard(5).build(),
            Err(ConfigError::LruBelowMax { lru: 5, max: 10 })
        );
        assert_eq!(
            b().max_per_shard(10).hard_cap_per_shard(9).build(),
            Err(ConfigError::HardCapBelowMax { cap: 9, max: 10 })
        );
        assert_eq!(
            b().eviction_interval_secs(0).build(),
            Err(ConfigError::ZeroEvictionInterval)
        );
        assert_eq!(
            b().max_concurrent_loads(0).build(),
            Err(ConfigError::ZeroConcurrentLoads)
        );
        assert_eq!(
            b().load_timeout_ms(0).build(),
            Err(ConfigError::ZeroLoadTimeout)
        );
        assert_eq!(
            b().memory_budget_bytes(0).build(),
            Err(ConfigError::ZeroMemoryBudget)
        );
        assert!(ConfigError::ZeroShards.to_string().contains("num_shards"));
    }

    #[test]
    fn toml_round_trip_and_defaults() {
        let c = ShardingConfig::from_toml_str(
            "num_shards = 8\nmax_per_shard = 10\nlru_capacity_per_shard = 12\n",
        )
        .expect("valid toml");
        assert_eq!((c.num_shards, c.max_per_shard, c.hard_cap()), (8, 10, 12));
        assert_eq!(c.eviction_interval_secs, 600);
        let text = toml::to_string(&ShardingConfig::production()).expect("serializes");
        assert_eq!(
            ShardingConfig::from_toml_str(&text),
            Ok(ShardingConfig::production())
        );
        assert!(matches!(
            ShardingConfig::from_toml_str("num_shards = 0"),
            Err(ConfigError::ZeroShards)
        ));
        assert!(matches!(
            ShardingConfig::from_toml_str("bogus = 1"),
            Err(ConfigError::Toml(_))
        ));
    }
}
