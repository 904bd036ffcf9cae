//! Errors of the plugin runtime.

use std::fmt;

use super::PluginVersion;
use crate::state::StateLimitError;

/// Why a plugin call trapped.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TrapCause {
    /// The call used up its fuel (an endless or too-long computation).
    OutOfFuel,
    /// Linear memory hit the configured cap.
    OutOfMemory,
    /// The guest's call stack was exhausted (unbounded recursion).
    StackOverflow,
    /// The guest panicked; the message is what its panic hook reported.
    Panic(String),
    /// The guest called `exit`.
    Exit,
    /// Any other trap (out-of-bounds access, unreachable, bad canonical-ABI data, ...).
    Other(String),
}

impl fmt::Display for TrapCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OutOfFuel => f.write_str("out of fuel (the call ran too long)"),
            Self::OutOfMemory => f.write_str("out of memory (linear-memory cap reached)"),
            Self::StackOverflow => f.write_str("stack overflow"),
            Self::Panic(m) => write!(f, "{m}"),
            Self::Exit => f.write_str("the plugin called exit"),
            Self::Other(m) => write!(f, "{m}"),
        }
    }
}

/// Errors of the plugin runtime. A domain rejection is *not* an error: see
/// [`super::ApplyOutcome`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// The bytes are not a valid WebAssembly component.
    #[error("invalid component: {reason}")]
    InvalidComponent {
        /// What the compiler said.
        reason: String,
    },
    /// The component imports a capability the host refuses to provide.
    #[error(
        "plugin imports {}, which realmhost does not provide (plugins may not use clocks, randomness, files or sockets, so that replay is deterministic). {} See the README, \"Writing a plugin\".",
        crate::quote::Quoted(.import),
        import_hint(.import)
    )]
    ForbiddenImport {
        /// The first forbidden import, e.g. `wasi:clocks/wall-clock@0.2.0`.
        import: String,
        /// Every forbidden import of the component.
        all: Vec<String>,
    },
    /// The component was built against another version of the contract.
    #[error(
        "component was built against contract {found}; this host needs realmhost:realm@{required} (or 0.2.0; rebuild the plugin with the current realmhost-guest)"
    )]
    ContractVersion {
        /// The contract version the component names (e.g. `realmhost:realm@0.1.0`).
        found: String,
        /// The version this host implements.
        required: &'static str,
    },
    /// The component does not implement the `realm-logic` world.
    #[error("component does not implement the realm-logic world: {reason}")]
    Incompatible {
        /// What is missing or mistyped.
        reason: String,
    },
    /// The call trapped. The instance was discarded; the host carries on.
    #[error("plugin {realm_type}@{version} trapped{}: {cause}", in_realm(realm))]
    Trap {
        /// Realm type of the plugin.
        realm_type: String,
        /// Version (content hash) of the plugin.
        version: PluginVersion,
        /// The realm in scope when it trapped, if any.
        realm: Option<String>,
        /// Why.
        cause: TrapCause,
    },
    /// The call went past a state limit of its realm and was stopped; none
    /// of its writes were kept.
    #[error("plugin {realm_type}@{version}: {error}")]
    StateLimit {
        /// Realm type of the plugin.
        realm_type: String,
        /// Version (content hash) of the plugin.
        version: PluginVersion,
        /// The limit, the realm and the sizes.
        error: StateLimitError,
    },
    /// The call returned more bytes than the output cap allows.
    #[error("plugin {realm_type}@{version} returned {size} bytes; the cap is {limit}")]
    OutputTooLarge {
        /// Realm type of the plugin.
        realm_type: String,
        /// Version (content hash) of the plugin.
        version: PluginVersion,
        /// Bytes returned.
        size: usize,
        /// Configured cap.
        limit: usize,
    },
    /// The plugin returned something that breaks the contract (e.g. a batch
    /// error index outside the batch, or a `describe` that changed).
    #[error("plugin {realm_type}@{version} broke the contract: {reason}")]
    MalformedOutput {
        /// Realm type of the plugin.
        realm_type: String,
        /// Version (content hash) of the plugin.
        version: PluginVersion,
        /// What was wrong.
        reason: String,
    },
    /// The compiled-component cache directory could not be created.
    #[error("compiled-component cache {}: {source}", .path.display())]
    Cache {
        /// The cache directory (`RuntimeConfig::cache_dir`).
        path: std::path::PathBuf,
        /// What the file system said.
        #[source]
        source: std::io::Error,
    },
    /// Engine set-up failed (bad runtime configuration).
    #[error("runtime configuration: {0}")]
    Config(String),
}

fn in_realm(realm: &Option<String>) -> String {
    realm
        .as_ref()
        .map_or_else(String::new, |r| format!(" in realm {r}"))
}

impl RuntimeError {
    /// True when the failure is the plugin's fault (counts towards plugin
    /// quarantine and, with a realm in scope, towards parking that realm).
    pub fn is_plugin_fault(&self) -> bool {
        matches!(
            self,
            Self::Trap { .. }
                | Self::StateLimit { .. }
                | Self::OutputTooLarge { .. }
                | Self::MalformedOutput { .. }
        )
    }

    /// The realm type of the plugin that failed, for plugin faults.
    pub fn realm_type(&self) -> Option<&str> {
        match self {
            Self::Trap { realm_type, .. }
            | Self::StateLimit { realm_type, .. }
            | Self::OutputTooLarge { realm_type, .. }
            | Self::MalformedOutput { realm_type, .. } => Some(realm_type),
            _ => None,
        }
    }

    /// The realm a fault happened in, when one was in scope.
    pub fn realm(&self) -> Option<&str> {
        match self {
            Self::Trap { realm, .. } => realm.as_deref(),
            Self::StateLimit { error, .. } => Some(&error.realm),
            _ => None,
        }
    }
}

/// What usually makes a plugin import `import`, and what to use instead.
pub fn import_hint(import: &str) -> &'static str {
    let name = import.split_once('@').map_or(import, |(n, _)| n);
    match name {
        "wasi:random/random" | "wasi:random/insecure" | "wasi:random/insecure-seed" => {
            "Usually std's HashMap or HashSet with the default hasher (RandomState seeds itself from randomness), or a random-number crate: use BTreeMap/BTreeSet or a hasher with a fixed seed, and derive any randomness from the event (seq, payload)."
        }
        "wasi:clocks/wall-clock" | "wasi:clocks/monotonic-clock" => {
            "Usually std::time::SystemTime or Instant (or a crate that reads them, e.g. for logging or timeouts): use event.timestamp_ms, which the host sets when the event is appended."
        }
        n if n.starts_with("wasi:filesystem/") => {
            "Usually std::fs, std::env::current_dir or a crate that reads configuration files: put what you need into the plugin at build time (include_str!/include_bytes!) or into events."
        }
        n if n.starts_with("wasi:sockets/") || n.starts_with("wasi:http/") => {
            "Plugins cannot reach the network: anything from outside must arrive as an event."
        }
        _ => {
            "Remove the dependency that needs it; plugins get only their arguments and their realm's state."
        }
    }
}
