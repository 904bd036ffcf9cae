//! The plugin registry: realm type → loaded versions, one of them active.
//!
//! Versions are identified by the content hash of their component. Swapping
//! replaces the active version atomically: a caller that already holds an
//! `Arc<Plugin>` finishes its call on the old version, every later lookup gets
//! the new one. The previous active version is remembered, so rollback is one
//! call and follows the same rule.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use parking_lot::RwLock;
use serde::Serialize;

use super::{Plugin, PluginInfo, PluginRuntime, PluginVersion, RuntimeError};

/// Errors of the registry.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// No plugin is registered for this realm type.
    #[error("unknown realm type {0:?}")]
    UnknownRealmType(String),
    /// The realm type has no loaded version with this hash.
    #[error("realm type {realm_type:?} has no loaded version {version}")]
    UnknownVersion {
        /// Realm type.
        realm_type: String,
        /// Requested version.
        version: PluginVersion,
    },
    /// There is no previous version to roll back to.
    #[error("realm type {0:?} has no previous version to roll back to")]
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
}

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

    /// Load a component. The first version of a realm type becomes active;
    /// a further version becomes active only if `activate` is set.
    pub fn load(&self, bytes: &[u8], activate: bool) -> Result<LoadReport, RegistryError> {
        let version = PluginVersion::of(bytes);
        // Compile outside the lock: it takes milliseconds.
        let existing = self
            .types
            .read()
            .values()
            .find_map(|t| t.versions.get(&version).cloned());
        let (plugin, already_loaded) = match existing {
            Some(p) => (p, true),
            None => (Arc::new(self.runtime.load(bytes)?), false),
        };
        let info = plugin.info().clone();
        let mut types = self.types.write();
        let activated = match types.get_mut(&info.realm_type) {
            None => {
                types.insert(
                    info.realm_type.clone(),
                    TypeEntry {
                        active: plugin.clone(),
                        previous: None,
                        versions: HashMap::from([(version, plugin)]),
                    },
                );
                true
            }
            Some(entry) => {
                entry
                    .versions
                    .entry(version)
                    .or_insert_with(|| plugin.clone());
                if activate && entry.active.version() != version {
                    entry.previous = Some(std::mem::replace(&mut entry.active, plugin));
                    true
                } else {
                    entry.active.version() == version
                }
            }
        };
        if activated {
            tracing::info!(realm_type = %info.realm_type, version = %info.version, "plugin version active");
        }
        Ok(LoadReport {
            info,
            activated,
            already_loaded,
        })
    }

    /// Load every `*.wasm` file of a directory (sorted by name). Returns one
    /// result per file, so one bad file does not hide the others.
    pub fn load_dir(
        &self,
        dir: &Path,
    ) -> Result<Vec<(String, Result<LoadReport, RegistryError>)>, RegistryError> {
        let io = |source| RegistryError::Io {
            path: dir.display().to_string(),
            source,
        };
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .map_err(io)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
            .collect();
        files.sort();
        Ok(files
            .into_iter()
            .map(|path| {
                let name = path.display().to_string();
                let r = std::fs::read(&path)
                    .map_err(|source| RegistryError::Io {
                        path: name.clone(),
                        source,
                    })
                    .and_then(|bytes| self.load(&bytes, true));
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
