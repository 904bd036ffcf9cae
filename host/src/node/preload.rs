//! Loading every stored realm at start, for nodes without lazy loading.
//!
//! With `lazy_loading_enabled` off a realm that is not in memory cannot be
//! loaded on demand, so [`Node::open`](super::Node::open) loads them all
//! before it returns: for every realm type with an active plugin, the
//! storage inventory is read page by page ([`Storage::list_realms`], never
//! the log), and each realm is built by the same code as a lazy load —
//! snapshot entries (`migrate`d if older), then replay of the tail when `event_replay_on_load`
//! allows it — and inserted into the store after reserving room for it.
//!
//! # When a realm cannot be loaded
//! One realm that fails (its tail cannot be replayed with replay off, its
//! plugin refuses the log, the store is full) does not stop the others: it is
//! logged, listed in the [`PreloadReport`], and until the next start every
//! request for it fails with the typed load error that stopped it — the node
//! never answers for it with a state rebuilt from nothing, and never appends
//! to it. Refusing to start would turn one bad realm into an outage of all
//! of them. What does stop the start is an unreadable inventory: then the
//! node cannot know which realms exist.
//!
//! Realms of a type with no active plugin are not loaded (they could not be
//! served either); requests for them fail as before.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::jobs::JobKind;
use super::{Node, NodeError, state};
use crate::realm::RealmId;
use crate::store::BoxError;

/// Realm ids read from the inventory per page.
const PAGE: usize = 1000;
/// Minimum time between two progress lines.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// What loading every stored realm at start found; see
/// [`Node::preload_report`](super::Node::preload_report).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreloadReport {
    /// Realm types whose inventories were read (those with an active plugin).
    pub realm_types: Vec<String>,
    /// Realms listed in those inventories.
    pub realms: u64,
    /// Realms now in memory.
    pub loaded: u64,
    /// Every realm that could not be loaded, in id order.
    pub failures: Vec<PreloadFailure>,
    /// Wall time in milliseconds.
    pub millis: u64,
}

/// One realm that could not be loaded at start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreloadFailure {
    /// The realm.
    pub realm_id: String,
    /// Its type.
    pub realm_type: String,
    /// Why it could not be loaded.
    pub reason: String,
}

/// The report, plus the errors requests for the failed realms get.
#[derive(Debug)]
pub(super) struct Preloaded {
    pub(super) report: PreloadReport,
    pub(super) failed: HashMap<String, Arc<dyn std::error::Error + Send + Sync + 'static>>,
}

type Outcome = (RealmId, Result<(), BoxError>);

impl Node {
    /// Load every stored realm into the store (lazy loading off).
    pub(super) async fn preload(self: &Arc<Self>) -> Result<Preloaded, NodeError> {
        let start = Instant::now();
        let mut realm_types = self.registry.realm_types();
        realm_types.sort();
        let workers = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(self.config.sharding.max_concurrent_loads)
            .max(1);
        tracing::info!(
            ?realm_types,
            workers,
            "lazy loading is off: loading every stored realm"
        );
        let mut report = PreloadReport {
            realm_types: realm_types.clone(),
            realms: 0,
            loaded: 0,
            failures: Vec::new(),
            millis: 0,
        };
        let mut failed = HashMap::new();
        let mut last_progress = Instant::now();
        // Shown in `/v1/admin/jobs` once the API is up.
        let job = self.jobs.create(JobKind::Preload, realm_types.join(","));
        for realm_type in &realm_types {
            let mut after: Option<RealmId> = None;
            loop {
                let page = self
                    .storage
                    .list_realms(realm_type, after.as_ref(), PAGE)
                    .await
                    .map_err(NodeError::from)
                    .inspect_err(|e| job.fail(e))?;
                let done = page.len() < PAGE;
                after = page.last().cloned();
                report.realms += page.len() as u64;
                job.add_realms_total(page.len() as u64);
                let outcomes = self
                    .load_page(page, workers)
                    .await
                    .inspect_err(|e| job.fail(e))?;
                for (id, outcome) in outcomes {
                    job.realm_done();
                    match outcome {
                        Ok(()) => report.loaded += 1,
                        Err(error) => {
                            tracing::error!(realm = %id, realm_type, %error, "realm not loaded at start");
                            report.failures.push(PreloadFailure {
                                realm_id: id.to_string(),
                                realm_type: realm_type.clone(),
                                reason: error.to_string(),
                            });
                            failed.insert(id.to_string(), Arc::from(error));
                        }
                    }
                }
                if last_progress.elapsed() >= PROGRESS_EVERY {
                    last_progress = Instant::now();
                    tracing::info!(
                        realm_type,
                        listed = report.realms,
                        loaded = report.loaded,
                        failed = report.failures.len(),
                        elapsed_ms = start.elapsed().as_millis() as u64,
                        "loading stored realms"
                    );
                }
                if done {
                    break;
                }
            }
        }
        report.failures.sort_by(|a, b| a.realm_id.cmp(&b.realm_id));
        report.millis = start.elapsed().as_millis() as u64;
        if report.failures.is_empty() {
            tracing::info!(
                loaded = report.loaded,
                realm_types = report.realm_types.len(),
                millis = report.millis,
                "loaded every stored realm"
            );
        } else {
            tracing::error!(
                loaded = report.loaded,
                failed = report.failures.len(),
                realm_types = report.realm_types.len(),
                millis = report.millis,
                "loaded stored realms; the failed ones answer with a load error until a restart loads them"
            );
        }
        job.finish(&Ok::<_, NodeError>(&report));
        Ok(Preloaded { report, failed })
    }

    /// Load one inventory page on `workers` tasks.
    async fn load_page(
        self: &Arc<Self>,
        page: Vec<RealmId>,
        workers: usize,
    ) -> Result<Vec<Outcome>, NodeError> {
        let chunk = page.len().div_ceil(workers).max(1);
        let mut tasks = tokio::task::JoinSet::new();
        for ids in page.chunks(chunk) {
            let node = Arc::clone(self);
            let ids = ids.to_vec();
            tasks.spawn(async move {
                let mut out = Vec::with_capacity(ids.len());
                for id in ids {
                    let outcome = node.preload_one(&id).await;
                    out.push((id, outcome));
                }
                out
            });
        }
        let mut outcomes = Vec::with_capacity(page.len());
        while let Some(done) = tasks.join_next().await {
            outcomes.extend(done.map_err(|e| NodeError::Setup(format!("preload task: {e}")))?);
        }
        Ok(outcomes)
    }

    /// Build one realm like a lazy load does and insert it.
    async fn preload_one(&self, id: &RealmId) -> Result<(), BoxError> {
        let room = self.store.reserve(id.as_str())?;
        let loaded = state::load_realm(
            &self.storage,
            &self.registry,
            &self.exec,
            id,
            self.config.replay_batch,
            self.config.sharding.event_replay_on_load,
            &self.counters.load_fallbacks,
        )
        .await?;
        let Some(realm) = loaded else {
            return Err(format!("realm {id} is listed in the inventory but has no events").into());
        };
        self.store.register(id.as_str(), realm);
        drop(room);
        self.counters.preloaded.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}
