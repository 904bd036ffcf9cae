//! Cluster configuration: where NATS is, who this node is, how long leases
//! last. Built with [`ClusterConfig::builder`] or read from the `[cluster]`
//! section of a node's TOML file; [`ClusterConfig::validate`] says what is
//! wrong with a typed error.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How a node joins a cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// NATS server URLs, comma-separated (`nats://127.0.0.1:4222,...`).
    pub nats: String,
    /// The cluster's name: prefixes its streams, buckets and subjects, so
    /// several clusters may share one NATS system. `[A-Za-z0-9_-]`, at most
    /// 32 bytes.
    pub name: String,
    /// This node's id, unique in the cluster (`[A-Za-z0-9_-]`, at most 64
    /// bytes). Empty: a fresh random id each start (a restarted node is a
    /// new member; its old leases expire).
    pub node_id: String,
    /// The HTTP address other nodes and `realmhost cluster status` show for
    /// this node (e.g. `http://10.0.0.5:8080`). Empty: the listen address.
    pub advertise: String,
    /// Replicas of every stream and bucket: 1 (a single NATS server: no
    /// copy survives losing it) or 3 (the production setting).
    pub replicas: usize,
    /// How long a shard lease lasts without renewal, ms. A node that cannot
    /// renew stops serving the shard after half of it; another node may
    /// take the shard once all of it passed. The failover time of a dead
    /// node is about this.
    pub lease_ms: u64,
    /// How often the node renews its leases, reports itself alive and
    /// checks placement, ms.
    pub tick_ms: u64,
    /// How long a forwarded request may wait for the realm's owner
    /// (including while its shard moves), ms.
    pub forward_timeout_ms: u64,
    /// Largest entry written to a shard's log, bytes (the NATS servers'
    /// `max_payload` must be at least this). Snapshots above it stay local
    /// (another owner replays instead); a bigger append is refused.
    pub max_entry_bytes: usize,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            nats: "nats://127.0.0.1:4222".into(),
            name: "realmhost".into(),
            node_id: String::new(),
            advertise: String::new(),
            replicas: 1,
            lease_ms: 6_000,
            tick_ms: 500,
            forward_timeout_ms: 10_000,
            max_entry_bytes: 1024 * 1024,
        }
    }
}

/// What is wrong with a [`ClusterConfig`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterConfigError {
    /// No NATS URL.
    #[error("cluster.nats: at least one NATS URL is needed")]
    NoNats,
    /// A name or id with characters NATS subjects and stream names refuse.
    #[error("cluster.{field} {value:?}: use 1 to {max} characters of A-Z a-z 0-9 _ -")]
    BadName {
        /// The field.
        field: &'static str,
        /// Its value.
        value: String,
        /// Longest allowed.
        max: usize,
    },
    /// Replicas other than 1 or 3.
    #[error("cluster.replicas is {0}: use 1 (one NATS server) or 3")]
    Replicas(usize),
    /// Timing that cannot work.
    #[error("cluster.{field}: {reason}")]
    Timing {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
}

impl ClusterConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> ClusterConfigBuilder {
        ClusterConfigBuilder(Self::default())
    }

    /// Check every field.
    pub fn validate(&self) -> Result<(), ClusterConfigError> {
        if self.nats_urls().is_empty() {
            return Err(ClusterConfigError::NoNats);
        }
        check_name("name", &self.name, 32)?;
        if !self.node_id.is_empty() {
            check_name("node_id", &self.node_id, 64)?;
        }
        if !matches!(self.replicas, 1 | 3) {
            return Err(ClusterConfigError::Replicas(self.replicas));
        }
        if self.tick_ms < 10 {
            return Err(timing("tick_ms", "at least 10 ms"));
        }
        if self.lease_ms < 4 * self.tick_ms {
            return Err(timing(
                "lease_ms",
                "at least 4 ticks (a lease is renewed every tick and given up after half of it)",
            ));
        }
        if self.forward_timeout_ms == 0 {
            return Err(timing("forward_timeout_ms", "more than 0"));
        }
        if self.max_entry_bytes < 64 * 1024 {
            return Err(timing("max_entry_bytes", "at least 64 KiB"));
        }
        Ok(())
    }

    /// The NATS URLs, trimmed, empty ones dropped.
    pub fn nats_urls(&self) -> Vec<String> {
        self.nats
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect()
    }

    /// The lease length.
    pub fn lease(&self) -> Duration {
        Duration::from_millis(self.lease_ms)
    }

    /// The tick.
    pub fn tick(&self) -> Duration {
        Duration::from_millis(self.tick_ms)
    }
}

fn timing(field: &'static str, reason: &str) -> ClusterConfigError {
    ClusterConfigError::Timing {
        field,
        reason: reason.into(),
    }
}

fn check_name(field: &'static str, value: &str, max: usize) -> Result<(), ClusterConfigError> {
    let ok = !value.is_empty()
        && value.len() <= max
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ClusterConfigError::BadName {
            field,
            value: value.into(),
            max,
        })
    }
}

/// Builds a [`ClusterConfig`]; [`ClusterConfigBuilder::build`] validates.
#[derive(Debug, Clone)]
pub struct ClusterConfigBuilder(ClusterConfig);

impl ClusterConfigBuilder {
    /// NATS URLs, comma-separated.
    pub fn nats(mut self, urls: impl Into<String>) -> Self {
        self.0.nats = urls.into();
        self
    }
    /// The cluster's name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.0.name = name.into();
        self
    }
    /// This node's id.
    pub fn node_id(mut self, id: impl Into<String>) -> Self {
        self.0.node_id = id.into();
        self
    }
    /// The HTTP address shown for this node.
    pub fn advertise(mut self, addr: impl Into<String>) -> Self {
        self.0.advertise = addr.into();
        self
    }
    /// Stream and bucket replicas (1 or 3).
    pub fn replicas(mut self, n: usize) -> Self {
        self.0.replicas = n;
        self
    }
    /// Lease length.
    pub fn lease(mut self, d: Duration) -> Self {
        self.0.lease_ms = d.as_millis() as u64;
        self
    }
    /// Tick.
    pub fn tick(mut self, d: Duration) -> Self {
        self.0.tick_ms = d.as_millis() as u64;
        self
    }
    /// Validate and build.
    pub fn build(self) -> Result<ClusterConfig, ClusterConfigError> {
        self.0.validate()?;
        Ok(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_errors_name_the_field() {
        ClusterConfig::default().validate().unwrap();
        let e = ClusterConfig::builder().name("a.b").build().unwrap_err();
        assert!(e.to_string().contains("cluster.name"), "{e}");
        let e = ClusterConfig::builder().replicas(2).build().unwrap_err();
        assert_eq!(e, ClusterConfigError::Replicas(2));
        let e = ClusterConfig::builder()
            .tick(Duration::from_millis(500))
            .lease(Duration::from_millis(1000))
            .build()
            .unwrap_err();
        assert!(matches!(
            e,
            ClusterConfigError::Timing {
                field: "lease_ms",
                ..
            }
        ));
        let e = ClusterConfig::builder().nats(" , ").build().unwrap_err();
        assert_eq!(e, ClusterConfigError::NoNats);
    }

    #[test]
    fn toml_section_reads_with_defaults() {
        let c: ClusterConfig =
            toml::from_str("nats = \"nats://a:1, nats://b:2\"\nreplicas = 3").unwrap();
        assert_eq!(c.nats_urls(), vec!["nats://a:1", "nats://b:2"]);
        assert_eq!(c.replicas, 3);
        assert_eq!(c.lease_ms, 6_000);
        assert!(toml::from_str::<ClusterConfig>("lease = 3").is_err());
    }
}
