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

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::admin::ShadowReport;
use super::{Node, NodeConfig, NodeError, now_ms};
use crate::runtime::{
    LoadOptions, LoadReport, Plugin, PluginInfo, PluginRegistry, PluginRuntime, PluginVersion,
    TypeState, VersionSelector, read_wasm_dir,
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

/// Restore the stored registry, add the seeds, report unserved realm types.
pub(crate) async fn open_registry(
    config: &NodeConfig,
    storage: &dyn Storage,
    registry: &PluginRegistry,
) -> Result<(Manifest, PluginStartup), NodeError> {
    let mut report = PluginStartup::default();
    let mut manifest = match storage.get_meta(MANIFEST_KEY).await? {
        Some(bytes) => {
            let m: Manifest = serde_json::from_slice(&bytes).map_err(|e| {
                NodeError::Setup(format!("the stored plugin registry is unreadable: {e}"))
            })?;
            if m.format != MANIFEST_FORMAT {
                return Err(NodeError::Setup(format!(
                    "the stored plugin registry has format {}, this build reads {MANIFEST_FORMAT}",
                    m.format
                )));
            }
            m
        }
        None => Manifest {
            format: MANIFEST_FORMAT,
            ..Manifest::default()
        },
    };
    let mut changed = false;
    restore(storage, registry, &mut manifest, &mut report, &mut changed).await?;
    seed(
        config,
        storage,
        registry,
        &mut manifest,
        &mut report,
        &mut changed,
    )
    .await?;
    if changed {
        persist_manifest(storage, &manifest).await?;
    }
    let served: BTreeSet<String> = registry.realm_types().into_iter().collect();
    for t in storage.realm_types().await? {
        if !served.contains(&t) {
            tracing::warn!(realm_type = %t, "stored realms of this type have no plugin: they answer unknown_realm_type until one is loaded");
            report.unserved_types.push(t);
        }
    }
    Ok((manifest, report))
}

async fn restore(
    storage: &dyn Storage,
    registry: &PluginRegistry,
    manifest: &mut Manifest,
    report: &mut PluginStartup,
    changed: &mut bool,
) -> Result<(), NodeError> {
    let mut by_type: BTreeMap<String, Vec<Arc<Plugin>>> = BTreeMap::new();
    let mut lost = Vec::new();
    for (version, rec) in &manifest.versions {
        let Some(bytes) = storage.get_meta(&component_key(version)).await? else {
            report.problems.push(format!(
                "{} {} ({version}): component missing from storage",
                rec.realm_type, rec.semver
            ));
            lost.push(*version);
            continue;
        };
        if PluginVersion::of(&bytes) != *version {
            report.problems.push(format!(
                "{} {} ({version}): stored component does not match its hash",
                rec.realm_type, rec.semver
            ));
            lost.push(*version);
            continue;
        }
        match compile(registry.runtime(), Arc::from(bytes)).await {
            Ok(p) => by_type
                .entry(rec.realm_type.clone())
                .or_default()
                .push(Arc::new(p)),
            Err(e) => {
                report.problems.push(format!(
                    "{} {} ({version}): {e}",
                    rec.realm_type, rec.semver
                ));
                lost.push(*version);
            }
        }
    }
    for (realm_type, versions) in by_type {
        let find = |v: Option<&PluginVersion>| {
            v.and_then(|v| versions.iter().find(|p| p.version() == *v).cloned())
        };
        let Some(active) = find(manifest.active.get(&realm_type)) else {
            report.problems.push(format!(
                "{realm_type}: the active version could not be restored; no version of the type is active"
            ));
            continue;
        };
        let previous = find(manifest.previous.get(&realm_type));
        report.restored += versions.len();
        registry.restore_type(
            &realm_type,
            Some(TypeState {
                active,
                previous,
                versions,
            }),
        );
    }
    for p in &report.problems {
        tracing::error!(problem = %p, "plugin registry: version not restored");
    }
    // Lost versions stay in the manifest (the history needs their names) only
    // as long as nothing refers to them: drop them, and a type whose active
    // version is lost loses its active entry.
    for v in lost {
        manifest.versions.remove(&v);
        *changed = true;
    }
    for t in manifest.active.keys().cloned().collect::<Vec<_>>() {
        manifest.sync_type(registry, &t);
    }
    Ok(())
}

struct Seed {
    origin: String,
    bytes: Arc<[u8]>,
    plugin: Arc<Plugin>,
}

fn semver_key(s: &str) -> Option<semver::Version> {
    semver::Version::parse(s).ok()
}

async fn seed(
    config: &NodeConfig,
    storage: &dyn Storage,
    registry: &PluginRegistry,
    manifest: &mut Manifest,
    report: &mut PluginStartup,
    changed: &mut bool,
) -> Result<(), NodeError> {
    let mut inputs: Vec<(String, Arc<[u8]>)> = Vec::new();
    if config.builtin_plugins {
        for (name, bytes) in realmhost_plugin_artifacts::EXAMPLES {
            inputs.push((format!("builtin:{name}"), Arc::from(*bytes)));
        }
    }
    if let Some(dir) = config.plugins_dir.as_deref().filter(|d| d.is_dir()) {
        for (file, bytes) in read_wasm_dir(dir).map_err(NodeError::from)? {
            match bytes {
                Ok(b) => inputs.push((format!("file:{file}"), Arc::from(b))),
                Err(e) => {
                    tracing::error!(file, error = %e, "plugin refused");
                    report.skipped.push(format!("file:{file}: {e}"));
                }
            }
        }
    }
    // Compile every distinct build once.
    let mut seeds: Vec<Seed> = Vec::new();
    for (origin, bytes) in inputs {
        let version = PluginVersion::of(&bytes);
        if seeds.iter().any(|s| s.plugin.version() == version) {
            continue;
        }
        let plugin = match registry.get_loaded(version) {
            Some(p) => p,
            None => match compile(registry.runtime(), bytes.clone()).await {
                Ok(p) => Arc::new(p),
                Err(e) => {
                    tracing::error!(origin, error = %e, "plugin refused");
                    report.skipped.push(format!("{origin}: {e}"));
                    continue;
                }
            },
        };
        seeds.push(Seed {
            origin,
            bytes,
            plugin,
        });
    }
    // Conflicts among the new seeds refuse the start (a build already stored
    // is the registry's, so it is no candidate).
    let mut names: BTreeMap<(String, String), Vec<&Seed>> = BTreeMap::new();
    for s in seeds
        .iter()
        .filter(|s| registry.get_loaded(s.plugin.version()).is_none())
    {
        let i = s.plugin.info();
        names
            .entry((i.realm_type.clone(), i.semver.clone()))
            .or_default()
            .push(s);
    }
    let conflicts: Vec<SeedConflict> = names
        .into_iter()
        .filter(|(_, v)| v.len() > 1)
        .map(|((realm_type, semver), v)| SeedConflict {
            realm_type,
            semver,
            builds: v
                .iter()
                .map(|s| format!("{} ({})", s.origin, s.plugin.version()))
                .collect(),
        })
        .collect();
    if !conflicts.is_empty() {
        return Err(NodeError::PluginConflict(conflicts));
    }
    // Highest semantic version first, so the first seed of a new type (which
    // the registry activates) is the one that should be active.
    seeds.sort_by(|a, b| {
        let (a, b) = (a.plugin.info(), b.plugin.info());
        a.realm_type
            .cmp(&b.realm_type)
            .then_with(|| semver_key(&b.semver).cmp(&semver_key(&a.semver)))
    });
    for s in seeds {
        let info = s.plugin.info().clone();
        if registry.get_loaded(info.version).is_some() {
            continue;
        }
        let twin = registry.type_state(&info.realm_type).and_then(|t| {
            t.versions
                .into_iter()
                .find(|p| p.info().semver == info.semver)
        });
        if let Some(twin) = twin {
            let why = format!(
                "{}: {} {} is already stored as {} and this build is {}; the stored build stays (give the new build its own version)",
                s.origin,
                info.realm_type,
                info.semver,
                twin.version(),
                info.version
            );
            tracing::warn!("{why}");
            report.skipped.push(why);
            continue;
        }
        storage
            .put_meta(&component_key(&info.version), Some(s.bytes.to_vec()))
            .await?;
        let r = registry
            .insert(s.plugin.clone(), LoadOptions::default())
            .map_err(NodeError::from)?;
        manifest.record(&info, &s.origin);
        manifest.push(HistoryEntry {
            at_ms: now_ms(),
            realm_type: info.realm_type.clone(),
            action: if r.activated {
                PluginAction::Activated
            } else {
                PluginAction::Loaded
            },
            version: info.version,
            semver: info.semver.clone(),
            from: None,
            forced: false,
            origin: s.origin.clone(),
        });
        manifest.sync_type(registry, &info.realm_type);
        *changed = true;
        if !r.activated {
            let active = registry.get_active_info(&info.realm_type);
            tracing::info!(
                origin = %s.origin,
                realm_type = %info.realm_type,
                version = %info.semver,
                active = active.as_ref().map_or("", |a| a.semver.as_str()),
                "plugin loaded, not active (promote it with `realmhost plugin swap`)"
            );
        }
        report
            .seeded
            .push(format!("{}: {} {}", s.origin, info.realm_type, info.semver));
    }
    Ok(())
}

impl Node {
    /// What the node found about its plugins at start.
    pub fn plugin_startup(&self) -> &PluginStartup {
        &self.plugin_startup
    }

    /// The registry's history, oldest first.
    pub async fn plugin_history(&self) -> Vec<HistoryEntry> {
        self.lifecycle
            .lock()
            .await
            .history
            .iter()
            .cloned()
            .collect()
    }

    /// Run `change` on one realm type of the registry, persist the result,
    /// and undo the change if it cannot be persisted.
    async fn persisted<T>(
        &self,
        manifest: &mut Manifest,
        realm_type: &str,
        change: impl FnOnce(&PluginRegistry, &mut Manifest) -> Result<T, NodeError>,
    ) -> Result<T, NodeError> {
        let before_state = self.registry.type_state(realm_type);
        let before = manifest.clone();
        let out = change(&self.registry, manifest)?;
        manifest.sync_type(&self.registry, realm_type);
        if let Err(e) = persist_manifest(&*self.storage, manifest).await {
            tracing::error!(realm_type, error = %e, "plugin registry change not persisted; undone");
            self.registry.restore_type(realm_type, before_state);
            *manifest = before;
            return Err(e);
        }
        Ok(out)
    }

    /// Load a plugin component (`activate`: make it the active version of
    /// its realm type; `force`: accept a second build of a semantic version
    /// that is already loaded). The component is stored, so it survives a
    /// restart. Activating a version in place of another is a swap: it runs
    /// the shadow check first, and if that fails the version stays loaded
    /// but inactive and the error carries the report. A newly active version
    /// releases the realms of its type that were parked or unservable.
    pub async fn load_plugin(
        &self,
        bytes: Vec<u8>,
        opts: LoadOptions,
    ) -> Result<LoadReport, NodeError> {
        let version = PluginVersion::of(&bytes);
        let bytes: Arc<[u8]> = Arc::from(bytes);
        let plugin = match self.registry.get_loaded(version) {
            Some(p) => p,
            None => Arc::new(compile(self.registry.runtime(), bytes.clone()).await?),
        };
        let info = plugin.info().clone();
        let mut manifest = self.lifecycle.lock().await;
        let before = self.registry.type_state(&info.realm_type);
        // Replacing an active version is a swap: load it inactive, then
        // activate it through the shadow check below.
        let swap = opts.activate
            && before
                .as_ref()
                .is_some_and(|t| t.active.version() != version);
        let insert_opts = LoadOptions {
            activate: opts.activate && !swap,
            ..opts
        };
        // In memory first: a refused load (a duplicate semantic version)
        // stores nothing.
        let mut report = self.registry.insert(plugin.clone(), insert_opts)?;
        if !manifest.versions.contains_key(&version)
            && let Err(e) = self
                .storage
                .put_meta(&component_key(&version), Some(bytes.to_vec()))
                .await
        {
            self.registry.restore_type(&info.realm_type, before);
            return Err(e.into());
        }
        let r = report.clone();
        self.persisted(&mut manifest, &info.realm_type, |_, m| {
            m.record(&info, "upload");
            if !r.already_loaded || r.replaced.is_some() {
                m.push(HistoryEntry {
                    at_ms: now_ms(),
                    realm_type: info.realm_type.clone(),
                    action: if r.activated {
                        PluginAction::Activated
                    } else {
                        PluginAction::Loaded
                    },
                    version,
                    semver: info.semver.clone(),
                    from: r.replaced,
                    forced: opts.force,
                    origin: "upload".to_owned(),
                });
            }
            Ok(())
        })
        .await
        .inspect_err(|_| self.registry.restore_type(&info.realm_type, before.clone()))?;
        if swap && let Some(from) = before.map(|t| t.active.version()) {
            // Stored and loaded either way; active only if the shadow check
            // passes (the error then carries its report).
            let a = self
                .activate(
                    &mut manifest,
                    &info.realm_type,
                    plugin,
                    from,
                    None,
                    false,
                    PluginAction::Swapped,
                )
                .await?;
            report.activated = true;
            report.replaced = Some(a.from);
            return Ok(report);
        }
        if report.activated {
            self.activated(&info.realm_type);
        }
        Ok(report)
    }

    /// Make the version `selector` names the active version of its realm
    /// type. Unless `force` is set, a shadow replay over `sample` realms
    /// (all with `None`) must pass first; on failure nothing changes and the
    /// error carries the report. The choice is stored.
    pub async fn promote(
        &self,
        realm_type: &str,
        selector: impl Into<VersionSelector>,
        sample: Option<usize>,
        force: bool,
    ) -> Result<Activation, NodeError> {
        let selector = selector.into();
        let mut manifest = self.lifecycle.lock().await;
        let target = self.registry.resolve(realm_type, &selector)?;
        let from = self.registry.get_active_version(realm_type)?;
        self.activate(
            &mut manifest,
            realm_type,
            target,
            from,
            sample,
            force,
            PluginAction::Swapped,
        )
        .await
    }

    /// Roll the realm type back to the version that was active before the
    /// last swap. Like a swap, a shadow replay of the realms the target must
    /// serve (`sample` of them, all with `None`) must pass first, unless
    /// `force`. The choice is stored.
    pub async fn rollback(
        &self,
        realm_type: &str,
        sample: Option<usize>,
        force: bool,
    ) -> Result<Activation, NodeError> {
        let mut manifest = self.lifecycle.lock().await;
        let target = self.registry.previous(realm_type)?;
        let from = self.registry.get_active_version(realm_type)?;
        self.activate(
            &mut manifest,
            realm_type,
            target,
            from,
            sample,
            force,
            PluginAction::RolledBack,
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn activate(
        &self,
        manifest: &mut Manifest,
        realm_type: &str,
        target: Arc<Plugin>,
        from: PluginVersion,
        sample: Option<usize>,
        force: bool,
        action: PluginAction,
    ) -> Result<Activation, NodeError> {
        let version = target.version();
        let (shadow, warning) = if force {
            let w = format!(
                "{action:?} of {realm_type} to {} ({version}) forced without a shadow check: realms it cannot rebuild will answer realm_unservable",
                target.info().semver
            );
            tracing::warn!("{w}");
            (None, Some(w))
        } else {
            let report = self.shadow(realm_type, version, sample).await?;
            if !report.passed() {
                return Err(NodeError::ShadowFailed(Box::new(report)));
            }
            (Some(report), None)
        };
        let rolled_back = action == PluginAction::RolledBack;
        let info = self
            .persisted(manifest, realm_type, |registry, m| {
                let info = if rolled_back {
                    registry.rollback(realm_type)?
                } else {
                    registry.swap(realm_type, version)?
                };
                m.push(HistoryEntry {
                    at_ms: now_ms(),
                    realm_type: realm_type.to_owned(),
                    action,
                    version,
                    semver: info.semver.clone(),
                    from: Some(from),
                    forced: force,
                    origin: m
                        .versions
                        .get(&version)
                        .map_or_else(String::new, |v| v.origin.clone()),
                });
                Ok(info)
            })
            .await?;
        self.activated(realm_type);
        Ok(Activation {
            info,
            from,
            shadow,
            warning,
        })
    }

    /// Unload a version no realm depends on: never the active one; the
    /// rollback target only with `force`. Its stored component is deleted.
    pub async fn unload_plugin(
        &self,
        realm_type: &str,
        selector: impl Into<VersionSelector>,
        force: bool,
    ) -> Result<PluginInfo, NodeError> {
        let selector = selector.into();
        let mut manifest = self.lifecycle.lock().await;
        let target = self.registry.resolve(realm_type, &selector)?;
        let version = target.version();
        let info = self
            .persisted(&mut manifest, realm_type, |registry, m| {
                let info = registry.unload(realm_type, version, force)?;
                m.versions.remove(&version);
                m.push(HistoryEntry {
                    at_ms: now_ms(),
                    realm_type: realm_type.to_owned(),
                    action: PluginAction::Unloaded,
                    version,
                    semver: info.semver.clone(),
                    from: None,
                    forced: force,
                    origin: String::new(),
                });
                Ok(info)
            })
            .await?;
        // The manifest no longer names it; a failure here leaves an orphan
        // component, never a dangling reference.
        if let Err(e) = self.storage.put_meta(&component_key(&version), None).await {
            tracing::warn!(realm_type, %version, error = %e, "unloaded component not deleted from storage");
        }
        Ok(info)
    }

    /// A version of `realm_type` is newly active: parked and unservable
    /// realms of the type get a new chance.
    fn activated(&self, realm_type: &str) {
        self.parking.release_type(realm_type);
        self.unservable.clear_type(realm_type);
    }
}

/// The node's loaded plugins, read-only (see [`Node::plugins`]).
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
