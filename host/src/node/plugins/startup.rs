//! Start: restore the stored registry, add the seeds by the rule in the
//! module docs of `plugins`, report realm types without a plugin.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::{
    HistoryEntry, MANIFEST_FORMAT, MANIFEST_KEY, Manifest, PluginAction, PluginStartup,
    SeedConflict, compile, component_key, persist_manifest,
};
use crate::node::{NodeConfig, NodeError, now_ms};
use crate::runtime::{
    LoadOptions, Plugin, PluginRegistry, PluginVersion, TypeState, read_wasm_dir,
};
use crate::storage::Storage;

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

/// The example plugins compiled into this build: none without the
/// `builtin-plugins` feature (where [`NodeConfig::validate`] refuses
/// `builtin_plugins = true`, so a node never starts without plugins it was
/// told to have).
fn builtin_examples() -> &'static [(&'static str, &'static [u8])] {
    #[cfg(feature = "builtin-plugins")]
    return realmhost_plugin_artifacts::EXAMPLES;
    #[cfg(not(feature = "builtin-plugins"))]
    return &[];
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
        for (name, bytes) in builtin_examples() {
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
