//! The node's configuration: one TOML file, every section optional.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::monitor::ShardMonitorConfig;
use crate::runtime::RuntimeConfig;
use crate::storage::StorageConfig;
use crate::store::ShardingConfig;

use super::ParkingConfig;

/// Limits on what a client may send.
///
/// | field | default |
/// |---|---|
/// | `max_payload_bytes` | 64 KiB |
/// | `max_kind_bytes` | 64 |
/// | `max_source_bytes` | 256 |
/// | `max_query_bytes` | 16 KiB |
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InputLimits {
    /// Largest event payload.
    pub max_payload_bytes: usize,
    /// Longest event kind.
    pub max_kind_bytes: usize,
    /// Longest source name.
    pub max_source_bytes: usize,
    /// Longest query request.
    pub max_query_bytes: usize,
}

impl Default for InputLimits {
    fn default() -> Self {
        Self {
            max_payload_bytes: 64 << 10,
            max_kind_bytes: 64,
            max_source_bytes: 256,
            max_query_bytes: 16 << 10,
        }
    }
}

/// The HTTP API.
///
/// | field | default |
/// |---|---|
/// | `listen` | `127.0.0.1:7878` |
/// | `admin_token` | none: mutating admin routes are refused |
/// | `max_body_bytes` | 256 KiB |
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Bearer token required by mutating admin routes.
    pub admin_token: Option<String>,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Largest plugin upload (`POST /admin/plugins`).
    pub max_plugin_bytes: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7878)),
            admin_token: None,
            max_body_bytes: 256 << 10,
            max_plugin_bytes: 32 << 20,
        }
    }
}

/// Everything a node needs.
///
/// | field | default |
/// |---|---|
/// | `data_dir` | `./data` |
/// | `plugins_dir` | `./plugins` (if it exists; the built-in example plugins are always loaded first) |
/// | `snapshot_every` | 100 events |
/// | `replay_batch` | 1000 events per `apply-batch` call |
/// | `monitor_enabled` | true (false: no entropy, reputation, quarantine or gas accounting) |
/// | `sharding` | `ShardingConfig::default()` (64 shards) |
/// | `monitor` | `ShardMonitorConfig::default()` |
/// | `storage` | `StorageConfig::default()` (redb cache, group commit, checkpoints) |
/// | `parking` | `ParkingConfig::default()` (3 faults in 300 s park a realm) |
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// Where the database and the compiled-plugin cache live.
    pub data_dir: PathBuf,
    /// Directory of `*.wasm` plugins loaded at start.
    pub plugins_dir: Option<PathBuf>,
    /// Load the example plugins built into the binary.
    pub builtin_plugins: bool,
    /// A snapshot is written every this many events of a realm.
    pub snapshot_every: u64,
    /// Events per `apply-batch` call when replaying.
    pub replay_batch: usize,
    /// Run the shard monitor on the append path.
    pub monitor_enabled: bool,
    /// Input limits.
    pub limits: InputLimits,
    /// The sharded store.
    pub sharding: ShardingConfig,
    /// The shard monitor.
    pub monitor: ShardMonitorConfig,
    /// The plugin runtime.
    pub runtime: RuntimeConfig,
    /// The HTTP API.
    pub http: HttpConfig,
    /// The embedded database.
    pub storage: StorageConfig,
    /// When a realm whose events keep faulting is parked.
    pub parking: ParkingConfig,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("data"),
            plugins_dir: Some(PathBuf::from("plugins")),
            builtin_plugins: true,
            snapshot_every: 100,
            replay_batch: 1000,
            monitor_enabled: true,
            limits: InputLimits::default(),
            sharding: ShardingConfig::default(),
            monitor: ShardMonitorConfig::default(),
            runtime: RuntimeConfig::default(),
            http: HttpConfig::default(),
            storage: StorageConfig::default(),
            parking: ParkingConfig::default(),
        }
    }
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// File path.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("invalid config: {0}")]
    Parse(String),
    /// A value is out of range.
    #[error("invalid config: {0}")]
    Invalid(String),
}

impl NodeConfig {
    /// A config for a given data directory, other fields default.
    pub fn with_data_dir(dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: dir.into(),
            ..Self::default()
        }
    }

    /// Parse TOML text and validate it.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        let c: Self = toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        c.validate()?;
        Ok(c)
    }

    /// Read a TOML file and validate it.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml_str(&text)
    }

    /// Check every section.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.snapshot_every == 0 {
            return bad("snapshot_every must be > 0".into());
        }
        if self.replay_batch == 0 {
            return bad("replay_batch must be > 0".into());
        }
        if self.limits.max_payload_bytes == 0
            || self.limits.max_payload_bytes > self.http.max_body_bytes
        {
            return bad("limits.max_payload_bytes must be in 1..=http.max_body_bytes".into());
        }
        self.sharding
            .validate()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        self.monitor
            .validate()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        self.runtime.validate().map_err(ConfigError::Invalid)?;
        self.storage.validate().map_err(ConfigError::Invalid)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_section_is_read_and_checked() {
        let c = NodeConfig::from_toml_str(
            "[storage]\ncheckpoint_events = 1000\nquick_repair = false\n",
        )
        .unwrap();
        assert_eq!(c.storage.checkpoint_events, 1000);
        assert!(!c.storage.quick_repair);
        assert_eq!(c.storage.max_batch, StorageConfig::default().max_batch);
        let err = NodeConfig::from_toml_str("[storage]\ncheckpoint_realms = 0\n").unwrap_err();
        assert!(err.to_string().contains("checkpoint_realms"), "{err}");
        assert!(NodeConfig::from_toml_str("[storage]\ncache = 1\n").is_err());
    }
}
