//! The plugin registry: realm type → loaded versions, one of them active.
//!
//! Versions are identified by the content hash of their component; operators
//! may also name one by semantic version or hash prefix ([`VersionSelector`]).
//! Two different builds of a realm type with the same semantic version are
//! refused unless forced, so a version name always means one build.
//!
//! Swapping replaces the active version atomically: a caller that already
//! holds an `Arc<Plugin>` finishes its call on the old version, every later
//! lookup gets the new one. The previous active version is remembered, so
//! rollback is one call and follows the same rule.
//!
//! The registry is in memory. The node keeps it durable (see
//! `node::plugins`): it persists every change and restores the registry at
//! start through [`PluginRegistry::restore_type`]; checks that need stored
//! realms (shadow replay before a swap or a rollback) live there too.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use parking_lot::RwLock;
use serde::Serialize;

mod select;

pub use select::{InvalidSelector, MIN_PREFIX as MIN_HASH_PREFIX, VersionSelector};

use super::{Plugin, PluginInfo, PluginRuntime, PluginVersion, RuntimeError};

/// Errors of the registry.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// No plugin is registered for this realm type.
    #[error("unknown realm type {}", crate::quote::Quoted(.0))]
    UnknownRealmType(String),
    /// The realm type has no loaded version with this hash.
    #[error("realm type {} has no loaded version {version}", crate::quote::Quoted(.realm_type))]
    UnknownVersion {
        /// Realm type.
        realm_type: String,
        /// Requested version.
        version: PluginVersion,
    },
    /// No loaded version of the realm type matches the selector.
    #[error("realm type {} has no loaded version {selector}", crate::quote::Quoted(.realm_type))]
    NoSuchVersion {
        /// Realm type.
        realm_type: String,
        /// What was asked for.
        selector: String,
    },
    /// More than one loaded version matches the selector.
    #[error("{selector} is ambiguous for realm type {realm_type:?}: it names {}; give more of the hash", .candidates.join(", "))]
    AmbiguousVersion {
        /// Realm type.
        realm_type: String,
        /// What was asked for.
        selector: String,
        /// `semver (hash)` of every match.
        candidates: Vec<String>,
    },
    /// A selector that is not a version name.
    #[error(transparent)]
    InvalidSelector(#[from] InvalidSelector),
    /// Another build of the realm type already carries this semantic version.
    #[error(
        "{realm_type} {semver} is already loaded as {existing} and this build is {candidate}: give the new build its own version (or force the load)"
    )]
    DuplicateSemver {
        /// Realm type.
        realm_type: String,
        /// The semantic version both builds carry.
        semver: String,
        /// Hash of the loaded build.
        existing: PluginVersion,
        /// Hash of the refused build.
        candidate: PluginVersion,
    },
    /// The version is in use and cannot be unloaded.
    #[error("{realm_type} {semver} ({version}) cannot be unloaded: {reason}")]
    VersionInUse {
        /// Realm type.
        realm_type: String,
        /// Its semantic version.
        semver: String,
        /// Its hash.
        version: PluginVersion,
        /// Why.
        reason: String,
    },
    /// There is no previous version to roll back to.
    #[error("realm type {} has no previous version to roll back to", crate::quote::Quoted(.0))]
    NothingToRollBack(String),
    /// The active version faulted too often and is out of service.
    #[error(
        "plugin {realm_type}@{version} is quarantined after repeated faults (last: {last_fault}); swap, roll back or release it"
    )]
    Quarantined {
        /// Realm type.
        realm_type: String,
        /// The quarantined version.
        version: PluginVersion,
        /// The last fault.
        last_fault: String,
    },
    /// Loading the component failed.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// A plugin file could not be read.
    #[error("cannot read plugin {path}: {source}")]
    Io {
        /// File path.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// One realm type's versions: the unit the node persists and restores.
#[derive(Clone)]
pub struct TypeState {
    /// The version serving new calls.
    pub active: Arc<Plugin>,
    /// The version a rollback returns to.
    pub previous: Option<Arc<Plugin>>,
    /// Every loaded version (including `active` and `previous`).
    pub versions: Vec<Arc<Plugin>>,
}

impl std::fmt::Debug for TypeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TypeState")
            .field("active", &self.active.version())
            .field("previous", &self.previous.as_ref().map(|p| p.version()))
            .field(
                "versions",
                &self
                    .versions
                    .iter()
                    .map(|p| p.version())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

struct TypeEntry {
    active: Arc<Plugin>,
    previous: Option<Arc<Plugin>>,
    versions: HashMap<PluginVersion, Arc<Plugin>>,
}

impl TypeEntry {
    fn version(
        &self,
        realm_type: &str,
        version: PluginVersion,
    ) -> Result<Arc<Plugin>, RegistryError> {
        self.versions
            .get(&version)
            .cloned()
            .ok_or_else(|| RegistryError::UnknownVersion {
                realm_type: realm_type.to_owned(),
                version,
            })
    }

    fn resolve(
        &self,
        realm_type: &str,
        selector: &VersionSelector,
    ) -> Result<Arc<Plugin>, RegistryError> {
        let mut hits: Vec<&Arc<Plugin>> = self
            .versions
            .values()
            .filter(|p| selector.matches(p.info()))
            .collect();
        match hits.len() {
            0 => Err(RegistryError::NoSuchVersion {
                realm_type: realm_type.to_owned(),
                selector: selector.to_string(),
            }),
            1 => Ok(hits[0].clone()),
            _ => {
                hits.sort_by_key(|p| p.version());
                Err(RegistryError::AmbiguousVersion {
                    realm_type: realm_type.to_owned(),
                    selector: selector.to_string(),
                    candidates: hits
                        .iter()
                        .map(|p| format!("{} ({})", p.info().semver, p.version().to_hex()))
                        .collect(),
                })
            }
        }
    }

    fn state(&self) -> TypeState {
        let mut versions: Vec<_> = self.versions.values().cloned().collect();
        versions.sort_by_key(|p| p.version());
        TypeState {
            active: self.active.clone(),
            previous: self.previous.clone(),
            versions,
        }
    }
}

/// How [`PluginRegistry::load`] treats a new build.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// Make it the active version of its realm type (the first version of a
    /// type is always activated).
    pub activate: bool,
    /// Accept a build whose semantic version another loaded build of the
    /// type already carries.
    pub force: bool,
}

impl LoadOptions {
    /// Load and activate.
    pub fn activate() -> Self {
        Self {
            activate: true,
            force: false,
        }
    }
}

/// Per file of a directory: its name and what became of it.
pub type PerFile<T> = Vec<(String, Result<T, RegistryError>)>;

/// One row of [`PluginRegistry::list`].
#[derive(Debug, Clone, Serialize)]
pub struct PluginListing {
    /// The plugin's identity.
    pub info: PluginInfo,
    /// True for the version that serves new calls.
    pub active: bool,
    /// True for the version a rollback would return to.
    pub previous: bool,
    /// Calls made to this version.
    pub calls: u64,
    /// Calls that trapped or broke the contract.
    pub faults: u64,
    /// Fuel burned by this version.
    pub fuel: u64,
    /// The last fault, while this version is quarantined.
    pub quarantined: Option<String>,
}

/// Realm type → plugin versions.
pub struct PluginRegistry {
    runtime: Arc<PluginRuntime>,
    types: RwLock<BTreeMap<String, TypeEntry>>,
}

impl std::fmt::Debug for PluginRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginRegistry")
            .field("types", &self.types.read().keys().collect::<Vec<_>>())
            .finish()
    }
}

/// What [`PluginRegistry::load`] did.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    /// The loaded plugin.
    pub info: PluginInfo,
    /// True when this version now serves new calls.
    pub activated: bool,
    /// True when this exact version was already loaded.
    pub already_loaded: bool,
    /// The version that served new calls before, when this load replaced it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replaced: Option<PluginVersion>,
}

impl PluginRegistry {
    /// An empty registry over a runtime.
    pub fn new(runtime: Arc<PluginRuntime>) -> Self {
        Self {
            runtime,
            types: RwLock::new(BTreeMap::new()),
        }
    }

    /// The runtime plugins are loaded with.
    pub fn runtime(&self) -> &Arc<PluginRuntime> {
        &self.runtime
    }

    /// Compile a component, or return the loaded plugin with the same bytes.
    /// Takes milliseconds (or more for a cold cache): never under the lock.
    pub fn compile(&self, bytes: &[u8]) -> Result<Arc<Plugin>, RegistryError> {
        match self.get_loaded(PluginVersion::of(bytes)) {
            Some(p) => Ok(p),
            None => Ok(Arc::new(self.runtime.load(bytes)?)),
        }
    }

    /// Load a component. The first version of a realm type becomes active;
    /// a further version becomes active only if `opts.activate` is set. A
    /// second build with the semantic version of a loaded one is refused
    /// with [`RegistryError::DuplicateSemver`] unless `opts.force`.
    pub fn load(&self, bytes: &[u8], opts: LoadOptions) -> Result<LoadReport, RegistryError> {
        let plugin = self.compile(bytes)?;
        self.insert(plugin, opts)
    }

    /// [`PluginRegistry::load`] for a compiled plugin.
    pub fn insert(
        &self,
        plugin: Arc<Plugin>,
        opts: LoadOptions,
    ) -> Result<LoadReport, RegistryError> {
        let version = plugin.version();
        let info = plugin.info().clone();
        let mut types = self.types.write();
        let mut replaced = None;
        let (activated, already_loaded) = match types.get_mut(&info.realm_type) {
            None => {
                types.insert(
                    info.realm_type.clone(),
                    TypeEntry {
                        active: plugin.clone(),
                        previous: None,
                        versions: HashMap::from([(version, plugin)]),
                    },
                );
                (true, false)
            }
            Some(entry) => {
                let already_loaded = entry.versions.contains_key(&version);
                if !already_loaded
                    && !opts.force
                    && let Some(twin) = entry
                        .versions
                        .values()
                        .find(|p| p.info().semver == info.semver)
                {
                    return Err(RegistryError::DuplicateSemver {
                        realm_type: info.realm_type.clone(),
                        semver: info.semver.clone(),
                        existing: twin.version(),
                        candidate: version,
                    });
                }
                entry
                    .versions
                    .entry(version)
                    .or_insert_with(|| plugin.clone());
                if opts.activate && entry.active.version() != version {
                    let old = std::mem::replace(&mut entry.active, plugin);
                    replaced = Some(old.version());
                    entry.previous = Some(old);
                    (true, already_loaded)
                } else {
                    (entry.active.version() == version, already_loaded)
                }
            }
        };
        if replaced.is_some() || (activated && !already_loaded) {
            tracing::info!(realm_type = %info.realm_type, version = %info.semver, hash = %info.version, "plugin version active");
        }
        Ok(LoadReport {
            info,
            activated,
            already_loaded,
            replaced,
        })
    }

    /// Load every `*.wasm` file of a directory (sorted by name), activating
    /// each in turn. Returns one result per file, so one bad file does not
    /// hide the others. The node seeds its durable registry differently (by
    /// semantic version, never by file name); this is for tools and tests.
    pub fn load_dir(&self, dir: &Path) -> Result<PerFile<LoadReport>, RegistryError> {
        Ok(read_wasm_dir(dir)?
            .into_iter()
            .map(|(name, bytes)| {
                let r = bytes.and_then(|b| self.load(&b, LoadOptions::activate()));
                (name, r)
            })
            .collect())
    }

    /// The active version of a realm type; fails fast while it is quarantined.
    pub fn get(&self, realm_type: &str) -> Result<Arc<Plugin>, RegistryError> {
        let p = self
            .types
            .read()
            .get(realm_type)
            .map(|t| t.active.clone())
            .ok_or_else(|| RegistryError::UnknownRealmType(realm_type.to_owned()))?;
        match p.quarantined() {
            None => Ok(p),
            Some(last_fault) => Err(RegistryError::Quarantined {
                realm_type: realm_type.to_owned(),
                version: p.version(),
                last_fault,
            }),
        }
    }

    /// Put a quarantined active version back in service.
    pub fn release(&self, realm_type: &str) -> Result<PluginInfo, RegistryError> {
        let types = self.types.read();
        let entry = types
            .get(realm_type)
            .ok_or_else(|| RegistryError::UnknownRealmType(realm_type.to_owned()))?;
        entry.active.release();
        Ok(entry.active.info().clone())
    }

    /// A specific loaded version of a realm type.
    pub fn get_version(
        &self,
        realm_type: &str,
        version: PluginVersion,
    ) -> Result<Arc<Plugin>, RegistryError> {
        let types = self.types.read();
        let entry = types
            .get(realm_type)
            .ok_or_else(|| RegistryError::UnknownRealmType(realm_type.to_owned()))?;
        entry.version(realm_type, version)
    }

    /// A loaded version of any realm type, by hash.
    pub fn get_loaded(&self, version: PluginVersion) -> Option<Arc<Plugin>> {
        self.types
            .read()
            .values()
            .find_map(|t| t.versions.get(&version).cloned())
    }

    /// The hash of a realm type's active version (quarantined or not).
    pub fn get_active_version(&self, realm_type: &str) -> Result<PluginVersion, RegistryError> {
        self.types
            .read()
            .get(realm_type)
            .map(|t| t.active.version())
            .ok_or_else(|| RegistryError::UnknownRealmType(realm_type.to_owned()))
    }

    /// Who a realm type's active version is (quarantined or not).
    pub fn get_active_info(&self, realm_type: &str) -> Option<PluginInfo> {
        self.types
            .read()
            .get(realm_type)
            .map(|t| t.active.info().clone())
    }

    /// The loaded version of a realm type that `selector` names: a semantic
    /// version carried by exactly one build, a full hash, or a hash prefix
    /// that matches exactly one.
    pub fn resolve(
        &self,
        realm_type: &str,
        selector: &VersionSelector,
    ) -> Result<Arc<Plugin>, RegistryError> {
        let types = self.types.read();
        let entry = types
            .get(realm_type)
            .ok_or_else(|| RegistryError::UnknownRealmType(realm_type.to_owned()))?;
        entry.resolve(realm_type, selector)
    }

    /// The version a rollback would return to.
    pub fn previous(&self, realm_type: &str) -> Result<Arc<Plugin>, RegistryError> {
        let types = self.types.read();
        let entry = types
            .get(realm_type)
            .ok_or_else(|| RegistryError::UnknownRealmType(realm_type.to_owned()))?;
        entry
            .previous
            .clone()
            .ok_or_else(|| RegistryError::NothingToRollBack(realm_type.to_owned()))
    }

    /// Make a loaded version active. Calls in flight finish on the old one.
    pub fn swap(
        &self,
        realm_type: &str,
        version: PluginVersion,
    ) -> Result<PluginInfo, RegistryError> {
        let mut types = self.types.write();
        let entry = types
            .get_mut(realm_type)
            .ok_or_else(|| RegistryError::UnknownRealmType(realm_type.to_owned()))?;
        let next = entry.version(realm_type, version)?;
        next.release();
        if entry.active.version() != version {
            entry.previous = Some(std::mem::replace(&mut entry.active, next));
        }
        tracing::info!(realm_type, %version, "plugin swapped");
        Ok(entry.active.info().clone())
    }

    /// Return to the previous active version.
    pub fn rollback(&self, realm_type: &str) -> Result<PluginInfo, RegistryError> {
        let mut types = self.types.write();
        let entry = types
            .get_mut(realm_type)
            .ok_or_else(|| RegistryError::UnknownRealmType(realm_type.to_owned()))?;
        let prev = entry
            .previous
            .take()
            .ok_or_else(|| RegistryError::NothingToRollBack(realm_type.to_owned()))?;
        prev.release();
        entry.previous = Some(std::mem::replace(&mut entry.active, prev));
        tracing::info!(realm_type, version = %entry.active.version(), "plugin rolled back");
        Ok(entry.active.info().clone())
    }

    /// Remove a version that serves nothing. The active version is always
    /// refused; the rollback target is refused unless `force` (unloading it
    /// leaves nothing to roll back to).
    pub fn unload(
        &self,
        realm_type: &str,
        version: PluginVersion,
        force: bool,
    ) -> Result<PluginInfo, RegistryError> {
        let mut types = self.types.write();
        let entry = types
            .get_mut(realm_type)
            .ok_or_else(|| RegistryError::UnknownRealmType(realm_type.to_owned()))?;
        let plugin = entry.version(realm_type, version)?;
        let in_use = |reason: &str| RegistryError::VersionInUse {
            realm_type: realm_type.to_owned(),
            semver: plugin.info().semver.clone(),
            version,
            reason: reason.to_owned(),
        };
        if entry.active.version() == version {
            return Err(in_use(
                "it is the active version and serves every realm of its type; swap to another version first",
            ));
        }
        let is_previous = entry
            .previous
            .as_ref()
            .is_some_and(|p| p.version() == version);
        if is_previous && !force {
            return Err(in_use(
                "it is the version a rollback returns to; force the unload to give up the rollback",
            ));
        }
        if is_previous {
            entry.previous = None;
        }
        entry.versions.remove(&version);
        tracing::info!(realm_type, %version, "plugin version unloaded");
        Ok(plugin.info().clone())
    }

    /// A realm type's versions, to persist or to put back after a failed
    /// persist.
    pub fn type_state(&self, realm_type: &str) -> Option<TypeState> {
        self.types.read().get(realm_type).map(TypeEntry::state)
    }

    /// Replace a realm type's versions wholesale (`None` removes the type):
    /// the node restores its durable registry with this at start, and undoes
    /// a change it could not persist. `active` and `previous` are added to
    /// `versions` if missing.
    pub fn restore_type(&self, realm_type: &str, state: Option<TypeState>) {
        let mut types = self.types.write();
        match state {
            None => {
                types.remove(realm_type);
            }
            Some(s) => {
                let mut versions: HashMap<_, _> =
                    s.versions.into_iter().map(|p| (p.version(), p)).collect();
                versions
                    .entry(s.active.version())
                    .or_insert_with(|| s.active.clone());
                if let Some(p) = &s.previous {
                    versions.entry(p.version()).or_insert_with(|| p.clone());
                }
                types.insert(
                    realm_type.to_owned(),
                    TypeEntry {
                        active: s.active,
                        previous: s.previous,
                        versions,
                    },
                );
            }
        }
    }

    /// Every loaded version, grouped by realm type.
    pub fn list(&self) -> Vec<PluginListing> {
        use std::sync::atomic::Ordering::Relaxed;
        let types = self.types.read();
        let mut out = Vec::new();
        for entry in types.values() {
            let mut versions: Vec<_> = entry.versions.values().collect();
            versions.sort_by_key(|p| {
                (
                    p.version() != entry.active.version(),
                    p.info().semver.clone(),
                )
            });
            for p in versions {
                out.push(PluginListing {
                    info: p.info().clone(),
                    active: p.version() == entry.active.version(),
                    previous: entry
                        .previous
                        .as_ref()
                        .is_some_and(|q| q.version() == p.version()),
                    calls: p.stats().calls.load(Relaxed),
                    faults: p.stats().faults.load(Relaxed),
                    fuel: p.stats().fuel.load(Relaxed),
                    quarantined: p.quarantined(),
                });
            }
        }
        out
    }

    /// Realm types with an active version.
    pub fn realm_types(&self) -> Vec<String> {
        self.types.read().keys().cloned().collect()
    }
}

/// Every `*.wasm` file of `dir`, sorted by file name, with its bytes (or why
/// they could not be read).
pub fn read_wasm_dir(dir: &Path) -> Result<PerFile<Vec<u8>>, RegistryError> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(|source| RegistryError::Io {
            path: dir.display().to_string(),
            source,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
        .collect();
    files.sort();
    Ok(files
        .into_iter()
        .map(|path| {
            let name = path.display().to_string();
            let bytes = std::fs::read(&path).map_err(|source| RegistryError::Io {
                path: name.clone(),
                source,
            });
            (name, bytes)
        })
        .collect())
}
