//! Background jobs: verify, shadow replay and the preload at start, with
//! progress and cancellation.
//!
//! These replay whole logs, which may take minutes on a large node. Each
//! runs as a [`Job`]: the registry shows its state, its progress (realms and
//! events replayed against the totals known so far) and, at the end, its
//! result or error; an operator may cancel it. The replay runs on the
//! plugin-execution pool a chunk of events at a time, so a cancel is seen
//! between chunks and a long replay never holds a pool slot for long.
//!
//! The synchronous calls ([`Node::verify`], [`Node::shadow`], and the shadow
//! check of a swap) run as jobs too, tracked while their caller waits; a
//! caller that goes away (a dropped request) leaves the job cancelled.
//! [`Node::start_verify`] and [`Node::start_shadow`] start one in the
//! background and return its id at once.
//!
//! Jobs are in memory: the last [`MAX_FINISHED`] finished ones are kept.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use super::{Node, NodeError, now_ms};
use crate::realm::RealmId;
use crate::runtime::PluginVersion;

/// Finished jobs kept for inspection.
pub const MAX_FINISHED: usize = 100;

/// What a job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// Rebuild one realm from its log and compare with the live state.
    Verify,
    /// Replay a realm type's realms through a candidate version.
    Shadow,
    /// Load every stored realm at start (lazy loading off).
    Preload,
}

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Still working.
    Running,
    /// Finished; see the result.
    Done,
    /// Stopped by an error; see the error.
    Failed,
    /// Cancelled by an operator, or abandoned by the caller waiting for it.
    Cancelled,
}

/// How far a job is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobProgress {
    /// Realms finished.
    pub realms_done: u64,
    /// Realms the job covers.
    pub realms_total: u64,
    /// Events replayed so far.
    pub events_replayed: u64,
    /// Events of the realms read so far (grows as a shadow replay reads each
    /// realm's log).
    pub events_total: u64,
}

/// A job, as operators see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobView {
    /// Its id.
    pub id: u64,
    /// What it does.
    pub kind: JobKind,
    /// What it works on: a realm id, or `type@version`.
    pub target: String,
    /// Where it is.
    pub state: JobState,
    /// How far it is.
    pub progress: JobProgress,
    /// Start, ms since the Unix epoch.
    pub started_ms: u64,
    /// End, ms since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_ms: Option<u64>,
    /// The report (a [`super::VerifyReport`], [`super::ShadowReport`] or
    /// [`super::PreloadReport`]) once done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    /// Why it failed or was cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// How a job ended.
#[derive(Debug, Clone)]
struct Ending {
    state: JobState,
    finished_ms: u64,
    result: Option<serde_json::Value>,
    error: Option<String>,
}

/// One job's live record; the code doing the work holds it to report
/// progress and see a cancel.
#[derive(Debug)]
pub(crate) struct Job {
    id: u64,
    kind: JobKind,
    target: String,
    started_ms: u64,
    cancel: AtomicBool,
    realms_done: AtomicU64,
    realms_total: AtomicU64,
    events_replayed: AtomicU64,
    events_total: AtomicU64,
    ending: parking_lot::Mutex<Option<Ending>>,
    finished: tokio::sync::Notify,
}

impl Job {
    /// The job's id.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// `Err(Cancelled)` once an operator asked it to stop.
    pub(crate) fn check(&self) -> Result<(), NodeError> {
        if self.cancel.load(Ordering::Acquire) {
            Err(NodeError::Cancelled { job: self.id })
        } else {
            Ok(())
        }
    }

    pub(crate) fn add_realms_total(&self, n: u64) {
        self.realms_total.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn set_realms_total(&self, n: u64) {
        self.realms_total.store(n, Ordering::Relaxed);
    }

    pub(crate) fn realm_done(&self) {
        self.realms_done.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add_events_total(&self, n: u64) {
        self.events_total.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn add_events_replayed(&self, n: u64) {
        self.events_replayed.fetch_add(n, Ordering::Relaxed);
    }

    fn view(&self) -> JobView {
        let ending = self.ending.lock().clone();
        JobView {
            id: self.id,
            kind: self.kind,
            target: self.target.clone(),
            state: ending.as_ref().map_or(JobState::Running, |e| e.state),
            progress: JobProgress {
                realms_done: self.realms_done.load(Ordering::Relaxed),
                realms_total: self.realms_total.load(Ordering::Relaxed),
                events_replayed: self.events_replayed.load(Ordering::Relaxed),
                events_total: self.events_total.load(Ordering::Relaxed),
            },
            started_ms: self.started_ms,
            finished_ms: ending.as_ref().map(|e| e.finished_ms),
            result: ending.as_ref().and_then(|e| e.result.clone()),
            error: ending.and_then(|e| e.error),
        }
    }

    /// Record how it ended (the first ending wins).
    fn end(&self, state: JobState, result: Option<serde_json::Value>, error: Option<String>) {
        let mut ending = self.ending.lock();
        if ending.is_none() {
            *ending = Some(Ending {
                state,
                finished_ms: now_ms(),
                result,
                error,
            });
        }
        drop(ending);
        self.finished.notify_waiters();
    }

    fn is_finished(&self) -> bool {
        self.ending.lock().is_some()
    }

    /// Record `e` as the job's ending.
    pub(crate) fn fail(&self, e: &NodeError) {
        self.end(JobState::Failed, None, Some(e.to_string()));
    }

    /// Record `r` as the job's ending.
    pub(crate) fn finish<T: Serialize>(&self, r: &Result<T, NodeError>) {
        match r {
            Ok(v) => self.end(JobState::Done, serde_json::to_value(v).ok(), None),
            Err(NodeError::Cancelled { .. }) => self.end(
                JobState::Cancelled,
                None,
                Some("cancelled by an operator".to_owned()),
            ),
            Err(e) => self.end(JobState::Failed, None, Some(e.to_string())),
        }
    }
}

/// Ends a job that is dropped before it finished (its caller went away).
struct Abandon(Arc<Job>);

impl Drop for Abandon {
    fn drop(&mut self) {
        if !self.0.is_finished() {
            self.0.end(
                JobState::Cancelled,
                None,
                Some("abandoned: the caller waiting for it went away".to_owned()),
            );
        }
    }
}

/// The registry of jobs.
#[derive(Debug, Default)]
pub(crate) struct Jobs {
    next: AtomicU64,
    all: parking_lot::Mutex<BTreeMap<u64, Arc<Job>>>,
}

impl Jobs {
    /// Register a new running job.
    pub(crate) fn create(&self, kind: JobKind, target: String) -> Arc<Job> {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let job = Arc::new(Job {
            id,
            kind,
            target,
            started_ms: now_ms(),
            cancel: AtomicBool::new(false),
            realms_done: AtomicU64::new(0),
            realms_total: AtomicU64::new(0),
            events_replayed: AtomicU64::new(0),
            events_total: AtomicU64::new(0),
            ending: parking_lot::Mutex::new(None),
            finished: tokio::sync::Notify::new(),
        });
        let mut all = self.all.lock();
        all.insert(id, job.clone());
        // Forget the oldest finished jobs past the bound.
        let finished: Vec<u64> = all
            .iter()
            .filter(|(_, j)| j.is_finished())
            .map(|(&id, _)| id)
            .collect();
        for id in finished
            .iter()
            .take(finished.len().saturating_sub(MAX_FINISHED))
        {
            all.remove(id);
        }
        job
    }

    /// Every job kept, oldest first.
    pub(crate) fn list(&self) -> Vec<JobView> {
        self.all.lock().values().map(|j| j.view()).collect()
    }

    /// One job.
    pub(crate) fn get(&self, id: u64) -> Option<JobView> {
        self.all.lock().get(&id).map(|j| j.view())
    }

    /// Ask a job to stop; `None` if unknown. A finished job is left as is.
    pub(crate) fn cancel(&self, id: u64) -> Option<JobView> {
        let job = self.all.lock().get(&id).cloned()?;
        if !job.is_finished() {
            job.cancel.store(true, Ordering::Release);
            tracing::info!(job = id, kind = ?job.kind, target = %job.target, "job cancel requested");
        }
        Some(job.view())
    }

    /// Wait until job `id` has finished; `None` if unknown.
    pub(crate) async fn wait(&self, id: u64) -> Option<JobView> {
        let job = self.all.lock().get(&id).cloned()?;
        loop {
            let notified = job.finished.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if job.is_finished() {
                return Some(job.view());
            }
            notified.await;
        }
    }
}

/// Run `work` as job `job` in the caller's task: its ending is recorded,
/// and it is left cancelled if the caller drops the future first.
pub(crate) async fn tracked<T: Serialize>(
    job: Arc<Job>,
    work: impl std::future::Future<Output = Result<T, NodeError>>,
) -> Result<T, NodeError> {
    let guard = Abandon(job);
    let r = work.await;
    guard.0.finish(&r);
    r
}

impl Node {
    /// Every job kept (running ones and the last finished), oldest first.
    pub fn jobs(&self) -> Vec<JobView> {
        self.jobs.list()
    }

    /// One job.
    pub fn job(&self, id: u64) -> Option<JobView> {
        self.jobs.get(id)
    }

    /// Ask a running job to stop (seen between replay chunks); `None` if no
    /// such job is kept.
    pub fn cancel_job(&self, id: u64) -> Option<JobView> {
        self.jobs.cancel(id)
    }

    /// Wait until a job has finished; `None` if no such job is kept.
    pub async fn wait_job(&self, id: u64) -> Option<JobView> {
        self.jobs.wait(id).await
    }

    /// Start [`Node::verify`] in the background; returns the job at once.
    pub fn start_verify(self: &Arc<Self>, id: RealmId) -> JobView {
        let job = self.jobs.create(JobKind::Verify, id.to_string());
        let (node, j) = (self.clone(), job.clone());
        tokio::spawn(async move {
            let _ = tracked(j.clone(), node.verify_job(&id, &j)).await;
        });
        job.view()
    }

    /// Start [`Node::shadow`] in the background; returns the job at once.
    pub fn start_shadow(
        self: &Arc<Self>,
        realm_type: &str,
        version: PluginVersion,
        sample: Option<usize>,
    ) -> JobView {
        let job = self
            .jobs
            .create(JobKind::Shadow, format!("{realm_type}@{}", version.short()));
        let (node, j, t) = (self.clone(), job.clone(), realm_type.to_owned());
        tokio::spawn(async move {
            let _ = tracked(j.clone(), node.shadow_job(&t, version, sample, &j)).await;
        });
        job.view()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn jobs_end_once_and_are_bounded() {
        let jobs = Jobs::default();
        let j = jobs.create(JobKind::Verify, "r".into());
        assert_eq!(jobs.get(j.id()).unwrap().state, JobState::Running);
        assert!(jobs.cancel(j.id()).is_some());
        assert!(matches!(j.check(), Err(NodeError::Cancelled { .. })));
        let r: Result<u32, NodeError> = tracked(j.clone(), async { j.check().map(|()| 1) }).await;
        assert!(r.is_err());
        let v = jobs.wait(j.id()).await.unwrap();
        assert_eq!(v.state, JobState::Cancelled);
        // An abandoned job ends cancelled.
        let k = jobs.create(JobKind::Shadow, "t@v".into());
        drop(Abandon(k.clone()));
        assert_eq!(jobs.get(k.id()).unwrap().state, JobState::Cancelled);
        for _ in 0..MAX_FINISHED + 10 {
            let x = jobs.create(JobKind::Verify, "x".into());
            x.end(JobState::Done, None, None);
        }
        assert!(jobs.list().len() <= MAX_FINISHED + 1);
        assert!(jobs.cancel(u64::MAX).is_none());
    }
}
