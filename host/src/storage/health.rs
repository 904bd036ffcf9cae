//! What the storage reports about itself for readiness and metrics.

/// Whether the storage is accepting writes, and if not since when and why.
///
/// A failed group commit (full disk, I/O error) makes the storage *degraded*:
/// the committer reopens the file and retries on its own, and the first
/// commit that succeeds again clears the state. The node's `/ready` and
/// metrics report it; `/health` (liveness) does not.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StorageHealth {
    /// Whether the last write attempt succeeded.
    pub writable: bool,
    /// Since when (ms since the Unix epoch) writes have been failing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_since_ms: Option<u64>,
    /// The last write failure (kept after recovery, for the operator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Whether the last failure was a full disk (or quota).
    #[serde(default)]
    pub no_space: bool,
    /// Group commits that failed since the storage was opened.
    #[serde(default)]
    pub failed_commits: u64,
    /// Times the database file was reopened after a failed write.
    #[serde(default)]
    pub reopens: u64,
}

impl StorageHealth {
    /// A storage with nothing to report.
    pub fn healthy() -> Self {
        Self {
            writable: true,
            failing_since_ms: None,
            last_error: None,
            no_space: false,
            failed_commits: 0,
            reopens: 0,
        }
    }
}

impl Default for StorageHealth {
    fn default() -> Self {
        Self::healthy()
    }
}
