//! The node's configuration: one TOML file, every section optional.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::monitor::ShardMonitorConfig;
use crate::runtime::RuntimeConfig;
use crate::storage::StorageConfig;
use crate::store::ShardingConfig;

use super::{ExecConfig, ParkingConfig};

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

/// The HTTP API and what it lets anonymous clients cost.
///
/// | field | default |
/// |---|---|
/// | `listen` | `127.0.0.1:7878` |
/// | `admin_token` | none: admin routes are refused |
/// | `read_token` | none: read-scope routes (verify, shadow, admin lists) need the admin token |
/// | `max_body_bytes` | 256 KiB per request |
/// | `max_plugin_bytes` | 32 MiB per upload (admin only, after authentication) |
/// | `max_concurrent_requests` | 512 in flight; more answer 503 `overloaded` |
/// | `max_buffered_body_bytes` | 32 MiB of unauthenticated request bodies at once |
/// | `request_timeout_secs` | 30 s for unauthenticated routes; then 503 `timeout` |
/// | `rate_limit` | see [`RateLimitConfig`] |
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Bearer token of the admin scope: every route.
    pub admin_token: Option<String>,
    /// Bearer token of the read scope: routes that replay logs or list
    /// operator state without changing anything (verify, shadow, parked and
    /// unservable realms).
    pub read_token: Option<String>,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Largest plugin upload (`POST /admin/plugins`).
    pub max_plugin_bytes: usize,
    /// Requests served at once; the rest are refused at once (503).
    pub max_concurrent_requests: usize,
    /// Bytes of unauthenticated request bodies the node buffers at once (each
    /// request reserves its `Content-Length`, or `max_body_bytes` when it
    /// has none, before its body is read).
    pub max_buffered_body_bytes: usize,
    /// Longest an unauthenticated request may take, in seconds.
    pub request_timeout_secs: u64,
    /// Token buckets per client address and per event source.
    pub rate_limit: RateLimitConfig,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7878)),
            admin_token: None,
            read_token: None,
            max_body_bytes: 256 << 10,
            max_plugin_bytes: 32 << 20,
            max_concurrent_requests: 512,
            max_buffered_body_bytes: 32 << 20,
            request_timeout_secs: 30,
            rate_limit: RateLimitConfig::default(),
        }
    }
}

/// Token buckets: a client address (and an event `source`) may make
/// `per_sec` requests (appends) per second on average and `burst` at once;
/// past that it gets 429 `rate_limited` with `Retry-After`. Authenticated
/// requests are not limited.
///
/// | field | default |
/// |---|---|
/// | `enabled` | true (the `minimal` profile turns it off) |
/// | `per_client_per_sec` / `per_client_burst` | 2 000 / 4 000 requests |
/// | `per_source_per_sec` / `per_source_burst` | 1 000 / 2 000 appends |
/// | `max_tracked` | 100 000 clients or sources remembered; past that, new ones are refused until idle ones are forgotten |
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Whether the buckets apply at all.
    pub enabled: bool,
    /// Sustained requests per second per client address.
    pub per_client_per_sec: u32,
    /// Requests a client address may make at once.
    pub per_client_burst: u32,
    /// Sustained appends per second per event source.
    pub per_source_per_sec: u32,
    /// Appends a source may make at once.
    pub per_source_burst: u32,
    /// Clients (and, separately, sources) remembered at most.
    pub max_tracked: usize,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            per_client_per_sec: 2_000,
            per_client_burst: 4_000,
            per_source_per_sec: 1_000,
            per_source_burst: 2_000,
            max_tracked: 100_000,
        }
    }
}

/// Everything a node needs.
///
/// | field | default |
/// |---|---|
/// | `data_dir` | `./data` |
/// | `plugins_dir` | `./plugins` (if it exists; the built-in example plugins, when on, are loaded first) |
/// | `builtin_plugins` | true with the `builtin-plugins` cargo feature (a default one), false without |
/// | `snapshot_every` | 100 events |
/// | `replay_batch` | 1000 events per `apply-batch` call |
/// | `monitor_enabled` | true (false: no entropy, reputation, quarantine or gas accounting) |
/// | `pipelining` | true: a realm's next event is applied while the previous one commits (false: one event per commit per realm) |
/// | `idempotency_window_secs` | 86 400 (a day): how long an append's idempotency key is remembered |
/// | `sharding` | `ShardingConfig::default()` (64 shards) |
/// | `monitor` | `ShardMonitorConfig::default()` |
/// | `storage` | `StorageConfig::default()` (redb cache, group commit, checkpoints) |
/// | `parking` | `ParkingConfig::default()` (3 faults in 300 s park a realm) |
/// | `exec` | `ExecConfig::default()` (plugin calls: one slot per core, one realm type holds all but one) |
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// Where the database and the compiled-plugin cache live.
    pub data_dir: PathBuf,
    /// Directory of `*.wasm` plugins loaded at start.
    pub plugins_dir: Option<PathBuf>,
    /// Load the example plugins built into the binary. Needs the
    /// `builtin-plugins` cargo feature: without it the default is false and
    /// true is refused by [`NodeConfig::validate`].
    pub builtin_plugins: bool,
    /// A snapshot is written every this many events of a realm.
    pub snapshot_every: u64,
    /// Events per `apply-batch` call when replaying.
    pub replay_batch: usize,
    /// Run the shard monitor on the append path.
    pub monitor_enabled: bool,
    /// Apply a realm's next event to its speculative state while the
    /// previous event is being committed (see `node::pipeline`). Off, each
    /// append to a realm waits for the previous one to be durable: one
    /// event per group commit per realm.
    pub pipelining: bool,
    /// How long an idempotency key is remembered (across restarts): a retry
    /// with the same key within this window returns the original receipt.
    pub idempotency_window_secs: u64,
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
    /// The pool plugin calls run on (off the async workers).
    pub exec: ExecConfig,
    /// Messages between realms: limits and retry pacing.
    pub messaging: super::MessagingConfig,
    /// Cluster mode (`[cluster]`): `realmhost serve` joins the cluster this
    /// names instead of running alone (see `crate::cluster`).
    #[cfg(feature = "cluster")]
    pub cluster: Option<crate::cluster::ClusterConfig>,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("data"),
            plugins_dir: Some(PathBuf::from("plugins")),
            builtin_plugins: cfg!(feature = "builtin-plugins"),
            snapshot_every: 100,
            replay_batch: 1000,
            monitor_enabled: true,
            pipelining: true,
            idempotency_window_secs: 86_400,
            limits: InputLimits::default(),
            sharding: ShardingConfig::default(),
            monitor: ShardMonitorConfig::default(),
            runtime: RuntimeConfig::default(),
            http: HttpConfig::default(),
            storage: StorageConfig::default(),
            parking: ParkingConfig::default(),
            exec: ExecConfig::default(),
            messaging: super::MessagingConfig::default(),
            #[cfg(feature = "cluster")]
            cluster: None,
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
        if self.idempotency_window_secs == 0 {
            return bad("idempotency_window_secs must be > 0".into());
        }
        if self.replay_batch == 0 {
            return bad("replay_batch must be > 0".into());
        }
        self.messaging.validate().map_err(ConfigError::Invalid)?;
        if self.builtin_plugins && !cfg!(feature = "builtin-plugins") {
            return bad(
                "builtin_plugins is set, but realmhost was built without its `builtin-plugins` feature; load plugins from bytes or plugins_dir instead".into(),
            );
        }
        let h = &self.http;
        if h.max_concurrent_requests == 0 || h.request_timeout_secs == 0 {
            return bad(
                "http.max_concurrent_requests and http.request_timeout_secs must be > 0".into(),
            );
        }
        if h.max_buffered_body_bytes < h.max_body_bytes {
            return bad("http.max_buffered_body_bytes must be at least http.max_body_bytes".into());
        }
        let r = &h.rate_limit;
        if r.enabled
            && (r.per_client_per_sec == 0
                || r.per_client_burst == 0
                || r.per_source_per_sec == 0
                || r.per_source_burst == 0
                || r.max_tracked == 0)
        {
            return bad(
                "http.rate_limit: rates, bursts and max_tracked must be > 0 (or enabled = false)"
                    .into(),
            );
        }
        if [&h.admin_token, &h.read_token]
            .into_iter()
            .flatten()
            .any(|t| t.len() < 8)
        {
            return bad(
                "http.admin_token and http.read_token must be at least 8 characters".into(),
            );
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
        self.exec.validate().map_err(ConfigError::Invalid)?;
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
        let c = NodeConfig::from_toml_str("[storage]\npartitions = 8\n").unwrap();
        assert_eq!(c.storage.partitions, 8);
        let err = NodeConfig::from_toml_str("[storage]\npartitions = 65\n").unwrap_err();
        assert!(err.to_string().contains("partitions"), "{err}");
    }

    #[test]
    fn exec_section_is_read_and_checked() {
        let c = NodeConfig::from_toml_str("[exec]\nthreads = 3\nmax_per_type = 2\n").unwrap();
        assert_eq!((c.exec.threads, c.exec.max_per_type), (3, 2));
        assert_eq!(c.exec.max_queued, ExecConfig::default().max_queued);
        let err = NodeConfig::from_toml_str("[exec]\nthreads = 2\nmax_per_type = 3\n").unwrap_err();
        assert!(err.to_string().contains("max_per_type"), "{err}");
        assert!(NodeConfig::from_toml_str("[exec]\nmax_queued = 0\n").is_err());
        assert!(NodeConfig::from_toml_str("[exec]\nworkers = 1\n").is_err());
    }

    #[test]
    fn builtin_plugins_follow_the_cargo_feature() {
        let on = cfg!(feature = "builtin-plugins");
        assert_eq!(NodeConfig::default().builtin_plugins, on);
        // Asking for them without the feature is refused, naming it.
        match NodeConfig::from_toml_str("builtin_plugins = true\n") {
            Ok(c) => assert!(on && c.builtin_plugins),
            Err(e) => assert!(!on && e.to_string().contains("`builtin-plugins`"), "{e}"),
        }
    }
}
