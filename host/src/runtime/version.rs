//! Who a plugin is: its content hash, what it says about itself, and the
//! domain rejection it may answer with.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// A plugin version: the SHA-256 of its component bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PluginVersion(pub [u8; 32]);

impl PluginVersion {
    /// Hash component bytes.
    pub fn of(bytes: &[u8]) -> Self {
        use sha2::Digest;
        Self(sha2::Sha256::digest(bytes).into())
    }

    /// Full lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parse full hex (64 characters).
    pub fn from_hex(s: &str) -> Option<Self> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(Self(out))
    }

    /// The first 12 hex characters: enough to tell versions apart in logs.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..6])
    }
}

impl fmt::Display for PluginVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.short())
    }
}

impl fmt::Debug for PluginVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PluginVersion({})", self.short())
    }
}

impl Serialize for PluginVersion {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for PluginVersion {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::from_hex(&s)
            .ok_or_else(|| serde::de::Error::custom("plugin version must be 64 hex characters"))
    }
}

/// What a plugin says about itself (`describe`), plus its content hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginInfo {
    /// Realm type the plugin implements.
    pub realm_type: String,
    /// The plugin's semantic version.
    pub semver: String,
    /// One line for operators.
    pub description: String,
    /// Version of the plugin's entry layout; snapshots written with an older
    /// one go through the plugin's `migrate` when loaded.
    pub state_version: u32,
    /// Content hash of the component.
    pub version: PluginVersion,
    /// Size of the component in bytes.
    pub size_bytes: usize,
}

/// A domain rejection returned by a plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    /// Stable reason, e.g. `overdraft`.
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// What a realm's state records about the plugin version that built it. One
/// shared value per loaded version, so a million realms cost one pointer each.
#[derive(Debug, PartialEq, Eq)]
pub struct PluginTag {
    /// Realm type.
    pub realm_type: Arc<str>,
    /// Content hash.
    pub version: PluginVersion,
    /// State (entry layout) version.
    pub state_version: u32,
}
