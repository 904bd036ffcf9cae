//! The plugin-execution pool: every sandbox call the node makes runs here,
//! never on a tokio async worker.
//!
//! ## Why
//! A plugin call is synchronous CPU work that may burn up to
//! `runtime.fuel_per_call` fuel (tens of milliseconds), and a replay runs a
//! whole log. Run inline on an async worker, one such call stalls every
//! request that worker was about to poll — unrelated realms included. Here
//! the call runs on tokio's blocking threads, and the pool bounds how many
//! run at once, how many wait, and how much of the pool one realm type may
//! hold.
//!
//! ## How
//! - **Slots**: a [`Semaphore`] of [`ExecConfig::threads`] permits (default:
//!   the machine's available parallelism). A call holds one while it runs on
//!   a [`tokio::task::spawn_blocking`] thread; the permit moves into the
//!   closure, so a caller that gives up (a timed-out HTTP request) does not
//!   free the slot before the work is really done.
//! - **Fairness**: each realm type has its own semaphore of
//!   [`ExecConfig::max_per_type`] permits (default: all slots but one), taken
//!   *before* a slot. A realm type whose every call burns its whole fuel thus
//!   holds at most that many slots, and its surplus callers wait on their
//!   own type's semaphore rather than in the shared slot queue: other types'
//!   calls always find a slot within one call's time.
//! - **Light calls in place**: the single plugin calls of the append and
//!   query paths ([`ExecPool::call`]) of a *light* type — its recent calls
//!   averaged under [`ExecConfig::heavy_call_micros`] — run where they are
//!   asked for: they end within microseconds, and a hop to a pool thread
//!   costs more than the call (measured: with every append's `apply` on the
//!   pool, durable appends through the node fell from ~110k/s to ~33k/s on
//!   2 cores; semaphore wake-ups serialize the calls). A call's duration
//!   feeds its type's average either way, so a type whose calls grow long
//!   (a plugin starting to burn its fuel) turns heavy after a call or two
//!   and from then on runs on the pool, capped, at low priority. Replays,
//!   loads and batch decoding always run on the pool ([`ExecPool::run`]).
//!   With `heavy_call_micros = 0` nothing runs in place.
//! - **Back-pressure**: callers that cannot start at once wait in a bounded
//!   queue ([`ExecConfig::max_queued`] in all, [`ExecConfig::max_queued_per_type`]
//!   per type). Past either bound the call fails at once with
//!   [`NodeError::Overloaded`] (HTTP 503 with `Retry-After`), so a flood
//!   turns into fast refusals instead of unbounded memory and latency.
//! - **CPU priority**: slots bound how many calls run, not how much CPU a
//!   type takes; on a small machine one type's share of the slots is a
//!   large share of the cores. So a realm type whose recent calls averaged
//!   at least [`ExecConfig::heavy_call_micros`] (a plugin burning its fuel,
//!   a long replay) runs on the pool's background threads, which the OS
//!   schedules at a lower priority (`SCHED_IDLE` on Linux): they use the
//!   idle CPU, and yield it to the async workers, the committer and light
//!   calls whenever those wake up. Priority alone was not enough: a woken
//!   thread sometimes waited a whole scheduler tick behind a running call,
//!   so calls on these threads also give up the CPU every 500 µs
//!   (`runtime::yield_in_calls`, through wasmtime's epoch interruption).
//!   Light calls run on tokio's blocking threads.
//! - **Panics**: a panicking closure fails its own call with
//!   [`NodeError::ExecPanicked`]; permits are released by unwinding, and the
//!   pool carries on.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::NodeError;

/// Sizing of the plugin-execution pool (`[exec]` in the node's TOML).
///
/// | field | default |
/// |---|---|
/// | `threads` | 0: the machine's available parallelism |
/// | `max_per_type` | 0: `threads - 1` (at least 1), so one realm type never holds every slot |
/// | `max_queued` | 4096 calls waiting in all; more answer `Overloaded` |
/// | `max_queued_per_type` | 0: half of `max_queued` (at least 1) |
/// | `heavy_call_micros` | 2000: a type whose calls average this long runs at a lower CPU priority (0: never) |
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExecConfig {
    /// Plugin calls that run at once (0: available parallelism).
    pub threads: usize,
    /// Slots one realm type may hold at once (0: `threads - 1`, at least 1).
    pub max_per_type: usize,
    /// Calls that may wait for a slot, across all types.
    pub max_queued: usize,
    /// Calls of one realm type that may wait (0: half of `max_queued`).
    pub max_queued_per_type: usize,
    /// A realm type whose recent calls averaged at least this many µs runs
    /// on the lower-priority background threads (0: never).
    pub heavy_call_micros: u64,
}

impl Default for ExecConfig {
    fn default() -> Self {
        Self {
            threads: 0,
            max_per_type: 0,
            max_queued: 4096,
            max_queued_per_type: 0,
            heavy_call_micros: 2_000,
        }
    }
}

/// [`ExecConfig`] with every automatic value decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ExecLimits {
    pub(crate) threads: usize,
    pub(crate) max_per_type: usize,
    pub(crate) max_queued: usize,
    pub(crate) max_queued_per_type: usize,
    pub(crate) heavy_call_micros: u64,
}

impl ExecConfig {
    /// Check the values (before the automatic ones are decided).
    pub fn validate(&self) -> Result<(), String> {
        if self.max_queued == 0 {
            return Err("exec.max_queued must be > 0".into());
        }
        if self.threads != 0 && self.max_per_type > self.threads {
            return Err(format!(
                "exec.max_per_type ({}) cannot exceed exec.threads ({})",
                self.max_per_type, self.threads
            ));
        }
        if self.max_queued_per_type > self.max_queued {
            return Err("exec.max_queued_per_type cannot exceed exec.max_queued".into());
        }
        Ok(())
    }

    /// Decide the automatic values for this machine.
    pub(crate) fn limits(&self) -> ExecLimits {
        let threads = match self.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let max_per_type = match self.max_per_type {
            0 => threads.saturating_sub(1).max(1),
            n => n.min(threads),
        };
        let max_queued_per_type = match self.max_queued_per_type {
            0 => (self.max_queued / 2).max(1),
            n => n,
        };
        ExecLimits {
            threads,
            max_per_type,
            max_queued: self.max_queued,
            max_queued_per_type,
            heavy_call_micros: self.heavy_call_micros,
        }
    }
}

/// One realm type's share of the pool.
#[derive(Debug)]
struct Lane {
    slots: Arc<Semaphore>,
    queued: AtomicUsize,
    busy: AtomicUsize,
    completed: AtomicU64,
    rejected: AtomicU64,
    /// How long its calls take (µs): jumps up to a longer call at once,
    /// decays by 1/8 per shorter one. See [`Lane::record`].
    avg_micros: AtomicU64,
}

impl Lane {
    /// Fold one call's duration into the lane's estimate. It rises to a long
    /// call at once and falls slowly: a type mixes short calls (encoding,
    /// `init`) with its `apply`, and a plain average of them let a plugin
    /// that burns its fuel on every `apply` look light after a few short
    /// calls, so its next fuel-limit `apply` ran inline on an async worker
    /// (measured: healthy appends' p99 rose 11x instead of under 2x).
    fn record(&self, micros: u64) {
        let old = self.avg_micros.load(Ordering::Relaxed);
        let new = if micros > old {
            micros
        } else {
            old - old / 8 + micros / 8
        };
        self.avg_micros.store(new, Ordering::Relaxed);
    }
}

/// Counters shared by the pool and the guards its calls hold.
#[derive(Debug, Default)]
struct Totals {
    queued: AtomicUsize,
    busy: AtomicUsize,
    completed: AtomicU64,
    rejected: AtomicU64,
    panicked: AtomicU64,
    background: AtomicU64,
    /// Light calls run where they were asked for.
    inline: AtomicU64,
}

/// What the pool is doing, for `/v1/stats` and `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecStats {
    /// Calls that may run at once.
    pub threads: usize,
    /// Slots one realm type may hold.
    pub max_per_type: usize,
    /// Calls that may wait, in all.
    pub max_queued: usize,
    /// Calls running now.
    pub busy: usize,
    /// Calls waiting for a slot now.
    pub queued: usize,
    /// Calls finished since start.
    pub completed: u64,
    /// Calls refused with `Overloaded` since start.
    pub rejected: u64,
    /// Calls whose closure panicked since start.
    pub panicked: u64,
    /// Calls run on the lower-priority background threads since start.
    #[serde(default)]
    pub background: u64,
    /// Light calls run where they were asked for (not on a pool thread)
    /// since start.
    #[serde(default)]
    pub inline: u64,
    /// Per realm type (those that used the pool), by name.
    pub by_type: Vec<ExecTypeStats>,
}

/// One realm type's use of the pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecTypeStats {
    /// The realm type.
    pub realm_type: String,
    /// Its calls running now.
    pub busy: usize,
    /// Its calls waiting now.
    pub queued: usize,
    /// Its calls finished since start.
    pub completed: u64,
    /// Its calls refused since start.
    pub rejected: u64,
    /// Moving average of its calls' duration, µs.
    #[serde(default)]
    pub avg_micros: u64,
}

/// The bounded pool; see the module docs.
#[derive(Debug)]
pub(crate) struct ExecPool {
    limits: ExecLimits,
    slots: Arc<Semaphore>,
    lanes: DashMap<String, Arc<Lane>>,
    totals: Arc<Totals>,
    background: Background,
}

/// A unit of work for the background threads.
type Task = Box<dyn FnOnce() + Send>;

/// Threads at a lower CPU priority for heavy realm types; they exit when
/// the pool (and so the sender) is dropped.
#[derive(Debug)]
struct Background {
    tx: parking_lot::Mutex<std::sync::mpsc::Sender<Task>>,
}

impl Background {
    fn start(threads: usize) -> Self {
        let (tx, rx) = std::sync::mpsc::channel::<Task>();
        let rx = Arc::new(parking_lot::Mutex::new(rx));
        for i in 0..threads {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("realmhost-bg-{i}"))
                .spawn(move || {
                    lower_priority();
                    // Priority alone left healthy threads waiting up to a
                    // scheduler tick behind a running call; calls here also
                    // yield every slice (`runtime::yield_in_calls`).
                    crate::runtime::yield_in_calls();
                    loop {
                        let task = rx.lock().recv();
                        match task {
                            Ok(task) => task(),
                            Err(_) => return,
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "background plugin thread not started");
            }
        }
        Self {
            tx: parking_lot::Mutex::new(tx),
        }
    }

    /// Queue `task`; false if no background thread is left.
    fn send(&self, task: Task) -> bool {
        self.tx.lock().send(task).is_ok()
    }
}

/// Lower the calling thread's CPU priority. Linux: `SCHED_IDLE` for this
/// thread only — any normal thread that wakes up preempts it at once, which
/// a nice value alone does not promise (a woken thread may wait out the
/// running one's slice) — falling back to nice +10. Best effort: a refusal
/// leaves the thread as it was.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: plain integers and a valid pointer to a local; `pid = 0`
        // is the calling thread on Linux.
        let idle = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } == 0;
        // SAFETY: as above.
        if !idle && unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 10) } != 0 {
            tracing::debug!("background plugin thread keeps its priority");
        }
    }
}

/// The panic message of a failed call.
fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-text panic".to_owned())
}

/// Leaves the wait queue when dropped (started, refused or abandoned).
struct Waiting<'a> {
    totals: &'a Totals,
    lane: &'a Lane,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.totals.queued.fetch_sub(1, Ordering::AcqRel);
        self.lane.queued.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Held by a running call (moved into its thread): counts it busy and
/// returns both permits when the call ends, panicking or not.
struct Running {
    totals: Arc<Totals>,
    lane: Arc<Lane>,
    started: std::time::Instant,
    _type_slot: OwnedSemaphorePermit,
    _slot: OwnedSemaphorePermit,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.totals.busy.fetch_sub(1, Ordering::AcqRel);
        self.lane.busy.fetch_sub(1, Ordering::AcqRel);
        self.totals.completed.fetch_add(1, Ordering::Relaxed);
        self.lane.completed.fetch_add(1, Ordering::Relaxed);
        self.lane
            .record(u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX));
    }
}

impl ExecPool {
    /// A pool sized by `config` (automatic values decided for this machine).
    pub(crate) fn new(config: &ExecConfig) -> Self {
        let limits = config.limits();
        Self {
            limits,
            slots: Arc::new(Semaphore::new(limits.threads)),
            lanes: DashMap::new(),
            totals: Arc::new(Totals::default()),
            background: Background::start(limits.threads),
        }
    }

    /// The decided limits.
    #[cfg(test)]
    pub(crate) fn limits(&self) -> ExecLimits {
        self.limits
    }

    fn lane(&self, realm_type: &str) -> Arc<Lane> {
        if let Some(l) = self.lanes.get(realm_type) {
            return l.clone();
        }
        self.lanes
            .entry(realm_type.to_owned())
            .or_insert_with(|| {
                Arc::new(Lane {
                    slots: Arc::new(Semaphore::new(self.limits.max_per_type)),
                    queued: AtomicUsize::new(0),
                    busy: AtomicUsize::new(0),
                    completed: AtomicU64::new(0),
                    rejected: AtomicU64::new(0),
                    avg_micros: AtomicU64::new(0),
                })
            })
            .clone()
    }

    /// Run `f` on a pool thread on behalf of `realm_type`, waiting (bounded)
    /// for a slot. See the module docs for the bounds and what fails how.
    pub(crate) async fn run<R: Send + 'static>(
        &self,
        realm_type: &str,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, NodeError> {
        let lane = self.lane(realm_type);
        let (type_slot, slot) = self.acquire(realm_type, &lane).await?;
        self.totals.busy.fetch_add(1, Ordering::AcqRel);
        lane.busy.fetch_add(1, Ordering::AcqRel);
        let heavy = self.limits.heavy_call_micros > 0
            && lane.avg_micros.load(Ordering::Relaxed) >= self.limits.heavy_call_micros;
        let running = Running {
            totals: self.totals.clone(),
            lane,
            started: std::time::Instant::now(),
            _type_slot: type_slot,
            _slot: slot,
        };
        let span = tracing::Span::current();
        let outcome: Result<R, String> = if heavy {
            self.totals.background.fetch_add(1, Ordering::Relaxed);
            let (tx, rx) = tokio::sync::oneshot::channel();
            let task: Task = Box::new(move || {
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
                    let _running = running;
                    span.in_scope(f)
                }));
                let _ = tx.send(r.map_err(|p| panic_message(&*p)));
            });
            if self.background.send(task) {
                rx.await
                    .unwrap_or_else(|_| Err("the background thread is gone".to_owned()))
            } else {
                Err("no background thread is running".to_owned())
            }
        } else {
            tokio::task::spawn_blocking(move || {
                let _running = running;
                span.in_scope(f)
            })
            .await
            .map_err(|e| {
                if e.is_panic() {
                    panic_message(&*e.into_panic())
                } else {
                    "the runtime is shutting down".to_owned()
                }
            })
        };
        outcome.map_err(|message| {
            self.totals.panicked.fetch_add(1, Ordering::Relaxed);
            tracing::error!(realm_type, %message, "plugin call panicked on the pool");
            NodeError::ExecPanicked {
                realm_type: realm_type.to_owned(),
                message,
            }
        })
    }

    /// One plugin call (not a replay or anything else long by nature): a
    /// light type's call runs where it is asked for ([`Self::run_light`]),
    /// a heavy type's on the pool ([`Self::run`]).
    pub(crate) async fn call<R: Send + 'static>(
        &self,
        realm_type: &str,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, NodeError> {
        let lane = self.lane(realm_type);
        if self.capped(&lane) {
            self.run(realm_type, f).await
        } else {
            self.run_light(realm_type, &lane, f)
        }
    }

    /// A light type's call, run where it is asked for: it ends within
    /// microseconds, and moving it to another thread costs more than it
    /// does (measured: durable appends through the node fell from ~100k/s
    /// to ~33k/s on 2 cores with every call on the pool). Its duration still
    /// feeds the type's average, so a type whose calls grow long turns heavy
    /// and moves to the pool.
    fn run_light<R>(
        &self,
        realm_type: &str,
        lane: &Lane,
        f: impl FnOnce() -> R,
    ) -> Result<R, NodeError> {
        self.totals.inline.fetch_add(1, Ordering::Relaxed);
        let started = std::time::Instant::now();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        lane.record(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX));
        r.map_err(|p| {
            let message = panic_message(&*p);
            self.totals.panicked.fetch_add(1, Ordering::Relaxed);
            tracing::error!(realm_type, %message, "plugin call panicked");
            NodeError::ExecPanicked {
                realm_type: realm_type.to_owned(),
                message,
            }
        })
    }

    /// Whether the type's calls are heavy: they go to the pool even through
    /// [`Self::call`] (see the module docs).
    fn capped(&self, lane: &Lane) -> bool {
        let heavy = self.limits.heavy_call_micros;
        heavy == 0 || lane.avg_micros.load(Ordering::Relaxed) >= heavy
    }

    /// Take the type's permit, then a slot: at once when both are free,
    /// otherwise through the bounded queue.
    async fn acquire(
        &self,
        realm_type: &str,
        lane: &Lane,
    ) -> Result<(OwnedSemaphorePermit, OwnedSemaphorePermit), NodeError> {
        if let Ok(t) = lane.slots.clone().try_acquire_owned() {
            if let Ok(s) = self.slots.clone().try_acquire_owned() {
                return Ok((t, s));
            }
            drop(t);
        }
        let waiting = self.enqueue(realm_type, lane)?;
        let closed = |_| NodeError::ShuttingDown;
        let t = lane.slots.clone().acquire_owned().await.map_err(closed)?;
        let s = self.slots.clone().acquire_owned().await.map_err(closed)?;
        drop(waiting);
        Ok((t, s))
    }

    /// Count `realm_type` as heavy from now on (tests of the caps).
    #[cfg(test)]
    pub(crate) fn mark_heavy(&self, realm_type: &str) {
        let lane = self.lane(realm_type);
        lane.avg_micros
            .store(self.limits.heavy_call_micros.max(1) * 16, Ordering::Relaxed);
    }

    /// Join the wait queue, or refuse when it (or the type's share) is full.
    fn enqueue<'a>(&'a self, realm_type: &str, lane: &'a Lane) -> Result<Waiting<'a>, NodeError> {
        let total = self.totals.queued.fetch_add(1, Ordering::AcqRel) + 1;
        let mine = lane.queued.fetch_add(1, Ordering::AcqRel) + 1;
        let waiting = Waiting {
            totals: &self.totals,
            lane,
        };
        let over = if total > self.limits.max_queued {
            Some((total - 1, self.limits.max_queued))
        } else if mine > self.limits.max_queued_per_type {
            Some((mine - 1, self.limits.max_queued_per_type))
        } else {
            None
        };
        match over {
            None => Ok(waiting),
            Some((queued, limit)) => {
                drop(waiting);
                self.totals.rejected.fetch_add(1, Ordering::Relaxed);
                lane.rejected.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(realm_type, queued, limit, "plugin pool queue full");
                Err(NodeError::Overloaded {
                    realm_type: realm_type.to_owned(),
                    queued,
                    limit,
                })
            }
        }
    }

    /// What the pool is doing now.
    pub(crate) fn stats(&self) -> ExecStats {
        let t = &self.totals;
        let mut by_type: Vec<ExecTypeStats> = self
            .lanes
            .iter()
            .map(|e| ExecTypeStats {
                realm_type: e.key().clone(),
                busy: e.busy.load(Ordering::Relaxed),
                queued: e.queued.load(Ordering::Relaxed),
                completed: e.completed.load(Ordering::Relaxed),
                rejected: e.rejected.load(Ordering::Relaxed),
                avg_micros: e.avg_micros.load(Ordering::Relaxed),
            })
            .collect();
        by_type.sort_by(|a, b| a.realm_type.cmp(&b.realm_type));
        ExecStats {
            threads: self.limits.threads,
            max_per_type: self.limits.max_per_type,
            max_queued: self.limits.max_queued,
            busy: t.busy.load(Ordering::Relaxed),
            queued: t.queued.load(Ordering::Relaxed),
            completed: t.completed.load(Ordering::Relaxed),
            rejected: t.rejected.load(Ordering::Relaxed),
            panicked: t.panicked.load(Ordering::Relaxed),
            background: t.background.load(Ordering::Relaxed),
            inline: t.inline.load(Ordering::Relaxed),
            by_type,
        }
    }
}

/// Run blocking I/O (a storage read that may touch the disk) on tokio's
/// blocking threads rather than an async worker. Not bounded by the pool:
/// storage reads are short and bounded by the storage itself.
pub(crate) async fn blocking_io<R: Send + 'static>(
    what: &'static str,
    f: impl FnOnce() -> R + Send + 'static,
) -> Result<R, NodeError> {
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(f))
        .await
        .map_err(|e| NodeError::ExecPanicked {
            realm_type: String::new(),
            message: format!("{what}: {e}"),
        })
}

#[cfg(test)]
#[path = "exec_tests.rs"]
mod tests;
