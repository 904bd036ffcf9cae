//! Changes to the registry through the node: load, swap, rollback, unload.
//! Each is persisted before it is acknowledged (see `persisted`).

use std::sync::Arc;

use super::{
    Activation, HistoryEntry, Manifest, PluginAction, PluginStartup, compile, component_key,
    persist_manifest,
};
use crate::node::{Node, NodeError, now_ms};
use crate::runtime::{
    LoadOptions, LoadReport, Plugin, PluginInfo, PluginRegistry, PluginVersion, VersionSelector,
};

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
