//! Per-realm state limits and the typed error for going past one.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Limits on one realm's state, enforced by the host inside every call.
///
/// A call that goes past one is stopped at the offending operation; none of
/// its writes are kept and the call fails with [`StateLimitError`], which
/// names the realm. Only that realm is affected.
///
/// | field | default | why |
/// |---|---|---|
/// | `max_key_bytes` | 1 KiB | keys are identifiers, not data |
/// | `max_value_bytes` | 1 MiB | one entry must fit comfortably in a call's memory |
/// | `max_entries` | 4 194 304 | bounds the realm's index |
/// | `max_total_bytes` | 64 MiB | keys + values of one realm: bounds its memory and snapshot |
/// | `max_ops_per_call` | 10 000 | state operations per event (a batch of n events gets n ×) |
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StateLimits {
    /// Longest key, in bytes.
    pub max_key_bytes: usize,
    /// Longest value, in bytes.
    pub max_value_bytes: usize,
    /// Most entries one realm may hold.
    pub max_entries: u64,
    /// Most key + value bytes one realm may hold.
    pub max_total_bytes: u64,
    /// Most state operations (get, contains, set, delete, scan, len) per event.
    pub max_ops_per_call: u32,
}

impl Default for StateLimits {
    fn default() -> Self {
        Self {
            max_key_bytes: 1024,
            max_value_bytes: 1 << 20,
            max_entries: 4 << 20,
            max_total_bytes: 64 << 20,
            max_ops_per_call: 10_000,
        }
    }
}

impl StateLimits {
    /// Check that the limits make sense.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_key_bytes == 0 || self.max_value_bytes == 0 {
            return Err("state limits: max_key_bytes and max_value_bytes must be > 0".into());
        }
        if self.max_entries == 0 || self.max_total_bytes == 0 || self.max_ops_per_call == 0 {
            return Err(
                "state limits: max_entries, max_total_bytes and max_ops_per_call must be > 0"
                    .into(),
            );
        }
        Ok(())
    }
}

/// Which limit a call went past.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum StateLimit {
    /// A key longer than `max_key_bytes`.
    KeyBytes,
    /// A value longer than `max_value_bytes`.
    ValueBytes,
    /// More entries than `max_entries`.
    Entries,
    /// More key + value bytes than `max_total_bytes`.
    TotalBytes,
    /// More state operations than the call's allowance.
    OpsPerCall,
    /// A write where only reads are allowed (`query`).
    ReadOnly,
    /// A state operation where no realm is in scope (`describe`, `encode-event`).
    NoRealm,
}

impl fmt::Display for StateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::KeyBytes => "max_key_bytes",
            Self::ValueBytes => "max_value_bytes",
            Self::Entries => "max_entries",
            Self::TotalBytes => "max_total_bytes",
            Self::OpsPerCall => "max_ops_per_call",
            Self::ReadOnly => "read-only",
            Self::NoRealm => "no realm in scope",
        })
    }
}

/// A call went past a state limit of its realm.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("realm {realm}: state limit {limit} exceeded ({actual} > {max})")]
pub struct StateLimitError {
    /// The realm whose call was stopped.
    pub realm: String,
    /// Which limit.
    pub limit: StateLimit,
    /// What the call asked for (length, count, bytes or operations).
    pub actual: u64,
    /// The configured limit.
    pub max: u64,
}
