//! The durable plugin registry: which components are loaded, which version
//! of each realm type is active, and how it got there, kept in the node's
//! storage so that a restart restores exactly the state before it.
//!
//! ## What is stored
//! - every loaded component, once, by content hash
//!   (meta key `plugins/component/<hash>`);
//! - a manifest (meta key `plugins/registry`, JSON): each version's realm
//!   type, semantic version, origin and load time; the active and the
//!   rollback version per realm type; the history of loads, activations,
//!   swaps, rollbacks and unloads (the latest [`MAX_HISTORY`]).
//!
//! A change is made in memory, then persisted (component first, manifest
//! second); if persisting fails the in-memory change is undone and the
//! caller gets the storage error. Changes are serialized by one lock, so the
//! manifest always describes one consistent registry.
//!
//! ## Start
//! 1. The stored registry is restored as it was.
//! 2. The **seeds** — the built-in examples (`builtin_plugins`) and every
//!    `*.wasm` of `plugins_dir` — are added by this rule, never by file
//!    order:
//!    - a seed already stored (same hash) changes nothing;
//!    - two different builds among the other seeds with the same realm type
//!      and semantic version are a conflict: the node refuses to start
//!      ([`super::NodeError::PluginConflict`]) and names them;
//!    - a seed whose realm type and semantic version are stored under another
//!      hash is skipped with a warning: the stored build keeps its name
//!      (reported in [`PluginStartup::skipped`]);
//!    - any other seed is stored as a loaded version; it becomes active only
//!      if its realm type has no active version yet, and then the highest
//!      semantic version among the type's seeds wins. A seed never replaces
//!      an active version: promote it with `plugin swap`, which runs the
//!      shadow check.
//! 3. Every realm type that has stored realms but no plugin is reported
//!    ([`PluginStartup::unserved_types`], a warning in the log, the stats);
//!    its realms answer `unknown_realm_type` until a plugin is loaded.

mod ops;
mod startup;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub(crate) use startup::open_registry;

use super::admin::ShadowReport;
use super::{NodeError, now_ms};
use crate::runtime::{
    Plugin, PluginInfo, PluginRegistry, PluginRuntime, PluginVersion, VersionSelector,
};
use crate::storage::Storage;

/// Meta key of the manifest.
const MANIFEST_KEY: &str = "plugins/registry";
/// Version of the manifest's layout.
const MANIFEST_FORMAT: u32 = 1;
/// History entries kept (the oldest are dropped).
pub const MAX_HISTORY: usize = 1000;

fn component_key(v: &PluginVersion) -> String {
    format!("plugins/component/{}", v.to_hex())
}

/// What happened to a plugin version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PluginAction {
    /// Loaded, not active.
    Loaded,
    /// Loaded or seeded and made active.
    Activated,
    /// Made active by a swap.
    Swapped,
    /// Made active by a rollback.
    RolledBack,
    /// Removed.
    Unloaded,
}

/// One entry of the registry's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// When, ms since the Unix epoch.
    pub at_ms: u64,
    /// Realm type.
    pub realm_type: String,
    /// What happened.
    pub action: PluginAction,
    /// The version it happened to.
    pub version: PluginVersion,
    /// Its semantic version.
    pub semver: String,
    /// The version that was active before, for activations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<PluginVersion>,
    /// True when a failing (or skipped) shadow check was overridden.
    #[serde(default)]
    pub forced: bool,
    /// Where the component came from (`upload`, `builtin:ledger`,
    /// `file:/path/x.wasm`).
    pub origin: String,
}

/// What the manifest says of one version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct VersionRecord {
    realm_type: String,
    semver: String,
    origin: String,
    loaded_at_ms: u64,
}

/// The stored registry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Manifest {
    format: u32,
    versions: BTreeMap<PluginVersion, VersionRecord>,
    active: BTreeMap<String, PluginVersion>,
    previous: BTreeMap<String, PluginVersion>,
    history: VecDeque<HistoryEntry>,
}

impl Manifest {
    fn push(&mut self, e: HistoryEntry) {
        self.history.push_back(e);
        while self.history.len() > MAX_HISTORY {
            self.history.pop_front();
        }
    }

    fn record(&mut self, info: &PluginInfo, origin: &str) {
        self.versions
            .entry(info.version)
            .or_insert_with(|| VersionRecord {
                realm_type: info.realm_type.clone(),
                semver: info.semver.clone(),
                origin: origin.to_owned(),
                loaded_at_ms: now_ms(),
            });
    }

    /// Take the active and rollback versions of `realm_type` from the
    /// registry.
    fn sync_type(&mut self, registry: &PluginRegistry, realm_type: &str) {
        match registry.type_state(realm_type) {
            Some(s) => {
                self.active
                    .insert(realm_type.to_owned(), s.active.version());
                match &s.previous {
                    Some(p) => self.previous.insert(realm_type.to_owned(), p.version()),
                    None => self.previous.remove(realm_type),
                };
            }
            None => {
                self.active.remove(realm_type);
                self.previous.remove(realm_type);
            }
        }
    }
}

/// Two builds among the seeds with one realm type and semantic version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeedConflict {
    /// Realm type.
    pub realm_type: String,
    /// The semantic version they share.
    pub semver: String,
    /// `origin (hash)` of each build.
    pub builds: Vec<String>,
}

impl std::fmt::Display for SeedConflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} is built {} times: {}",
            self.realm_type,
            self.semver,
            self.builds.len(),
            self.builds.join(", ")
        )
    }
}

/// What the node found about its plugins at start.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginStartup {
    /// Versions restored from the stored registry.
    pub restored: usize,
    /// Seeds newly stored (`origin: type semver`).
    pub seeded: Vec<String>,
    /// Seeds left out, with why.
    pub skipped: Vec<String>,
    /// Stored versions that could not be restored, with why.
    pub problems: Vec<String>,
    /// Realm types with stored realms and no plugin.
    pub unserved_types: Vec<String>,
}

/// The outcome of a swap or a rollback.
#[derive(Debug, Clone, Serialize)]
pub struct Activation {
    /// The version now active.
    pub info: PluginInfo,
    /// The version active before.
    pub from: PluginVersion,
    /// The shadow check that let it through (`None` when forced).
    pub shadow: Option<ShadowReport>,
    /// Set when the check was skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

async fn persist_manifest(storage: &dyn Storage, m: &Manifest) -> Result<(), NodeError> {
    let json = serde_json::to_vec(m)
        .map_err(|e| NodeError::Setup(format!("cannot encode the plugin registry: {e}")))?;
    storage.put_meta(MANIFEST_KEY, Some(json)).await?;
    Ok(())
}

async fn compile(runtime: &Arc<PluginRuntime>, bytes: Arc<[u8]>) -> Result<Plugin, NodeError> {
    let rt = runtime.clone();
    tokio::task::spawn_blocking(move || rt.load(&bytes))
        .await
        .map_err(|e| NodeError::Setup(format!("plugin compilation panicked: {e}")))?
        .map_err(NodeError::Plugin)
}

/// The node's loaded plugins, read-only (see [`super::Node::plugins`]).
#[derive(Debug, Clone, Copy)]
pub struct Plugins<'a>(&'a PluginRegistry);

impl<'a> Plugins<'a> {
    pub(crate) fn new(registry: &'a PluginRegistry) -> Self {
        Self(registry)
    }

    /// The active version of a realm type; fails while it is quarantined.
    pub fn get(&self, realm_type: &str) -> Result<Arc<Plugin>, crate::runtime::RegistryError> {
        self.0.get(realm_type)
    }

    /// A loaded version by hash.
    pub fn get_version(
        &self,
        realm_type: &str,
        version: PluginVersion,
    ) -> Result<Arc<Plugin>, crate::runtime::RegistryError> {
        self.0.get_version(realm_type, version)
    }

    /// The loaded version a selector names (semantic version, hash, prefix).
    pub fn resolve(
        &self,
        realm_type: &str,
        selector: &VersionSelector,
    ) -> Result<Arc<Plugin>, crate::runtime::RegistryError> {
        self.0.resolve(realm_type, selector)
    }

    /// Every loaded version, grouped by realm type.
    pub fn list(&self) -> Vec<crate::runtime::PluginListing> {
        self.0.list()
    }

    /// Realm types with an active version.
    pub fn realm_types(&self) -> Vec<String> {
        self.0.realm_types()
    }

    /// Put a quarantined active version back in service (not stored: a
    /// quarantine does not survive a restart either).
    pub fn release(&self, realm_type: &str) -> Result<PluginInfo, crate::runtime::RegistryError> {
        self.0.release(realm_type)
    }
}
