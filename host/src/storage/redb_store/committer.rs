//! The write path: requests are checked and encoded on the caller's thread,
//! queued, and committed by one committer thread in group commits.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use parking_lot::RwLock;
use rustc_hash::FxHashMap;
use tokio::sync::oneshot;

use super::open::{guarded, recover};
use super::realm_cache::{Learned, RealmCache};
use super::recovery::{self, DbCell};
use super::snapshots::prepare_snapshot;
use super::stats::{StatsCell, thread_cpu};
use super::writer::{Step, Writer};
use super::{
    Counters, EncodedAppend, KEY_NEXT_REALM, Op, RedbStorage, Reply, StorageConfig, Tail, Unindexed,
};
use crate::realm::RealmId;
use crate::runtime::PluginVersion;
use crate::storage::{
    AppendAck, AppendExtras, AppendRequest, IdempotencyRecord, SnapshotWrite, StorageError, codec,
};

impl RedbStorage {
    fn submit(&self, op: Op) -> Result<(), StorageError> {
        self.tx
            .as_ref()
            .ok_or(StorageError::Closed)?
            .send(op)
            .map_err(|_| StorageError::Closed)
    }

    /// Enqueue an append; the returned future resolves after the commit.
    ///
    /// The request is checked (events, realm type, consecutive seqs) and
    /// encoded here, on the caller's thread; only the checks against stored
    /// state run on the committer.
    pub fn append(
        &self,
        req: AppendRequest,
    ) -> impl Future<Output = Result<AppendAck, StorageError>> + Send + 'static {
        let (reply, rx) = oneshot::channel();
        let sent = encode_append(req).and_then(|req| self.submit(Op::Append(req, reply)));
        async move {
            sent?;
            rx.await.map_err(|_| StorageError::Closed)?
        }
    }

    /// [`Self::append`] with an idempotency key stored in the same
    /// transaction (see [`crate::storage::Storage::append_idempotent`]).
    pub fn append_idempotent(
        &self,
        req: AppendRequest,
        key: IdempotencyRecord,
    ) -> impl Future<Output = Result<AppendAck, StorageError>> + Send + 'static {
        let (reply, rx) = oneshot::channel();
        let sent = encode_append(req).and_then(|mut req| {
            req.idempotency = Some(key);
            self.submit(Op::Append(req, reply))
        });
        async move {
            sent?;
            rx.await.map_err(|_| StorageError::Closed)?
        }
    }

    /// [`Self::append`] with everything in `extras` in the same transaction
    /// (see [`crate::storage::Storage::append_with`]).
    pub fn append_with(
        &self,
        req: AppendRequest,
        extras: AppendExtras,
    ) -> impl Future<Output = Result<AppendAck, StorageError>> + Send + 'static {
        let (reply, rx) = oneshot::channel();
        let sent = encode_append(req).and_then(|mut req| {
            let last_seq = req.first_seq + req.entries.len() as u64 - 1;
            super::messages::validate(&req.realm_id, req.first_seq, last_seq, &extras.outbox)?;
            req.idempotency = extras.idempotency;
            req.outbox = extras.outbox;
            req.delivery = extras.delivery;
            req.settle = extras.settle;
            self.submit(Op::Append(req, reply))
        });
        async move {
            sent?;
            rx.await.map_err(|_| StorageError::Closed)?
        }
    }

    /// Settle, dead-letter, revive or drop message `(sender, seq, index)`
    /// (see [`crate::storage::Storage::change_outbox`]); resolves after the
    /// commit.
    pub fn change_outbox(
        &self,
        sender: &RealmId,
        seq: u64,
        index: u32,
        change: crate::storage::OutboxChange,
    ) -> impl Future<Output = Result<(), StorageError>> + Send + 'static {
        let (reply, rx) = oneshot::channel();
        let sent = self.submit(Op::ChangeOutbox(sender.clone(), seq, index, change, reply));
        async move {
            sent?;
            rx.await.map_err(|_| StorageError::Closed)?
        }
    }

    /// [`Self::append_with`] for synchronous callers.
    pub fn append_with_blocking(
        &self,
        req: AppendRequest,
        extras: AppendExtras,
    ) -> Result<AppendAck, StorageError> {
        futures::executor::block_on(self.append_with(req, extras))
    }

    /// [`Self::append_idempotent`] for synchronous callers.
    pub fn append_idempotent_blocking(
        &self,
        req: AppendRequest,
        key: IdempotencyRecord,
    ) -> Result<AppendAck, StorageError> {
        futures::executor::block_on(self.append_idempotent(req, key))
    }

    /// Enqueue a snapshot write; resolves after the commit.
    ///
    /// A full map's key order is checked, and a delta's changes sorted, here
    /// on the caller's thread; the checks against the stored snapshot run on
    /// the committer.
    pub fn put_snapshot(
        &self,
        realm: &RealmId,
        snapshot: SnapshotWrite,
    ) -> impl Future<Output = Result<(), StorageError>> + Send + 'static {
        let (reply, rx) = oneshot::channel();
        let sent = prepare_snapshot(realm, snapshot)
            .and_then(|snap| self.submit(Op::Snapshot(realm.clone(), snap, reply)));
        async move {
            sent?;
            rx.await.map_err(|_| StorageError::Closed)?
        }
    }

    /// Enqueue a meta record write (`None` deletes); resolves after the commit.
    pub fn put_meta(
        &self,
        key: &str,
        value: Option<Vec<u8>>,
    ) -> impl Future<Output = Result<(), StorageError>> + Send + 'static {
        let (reply, rx) = oneshot::channel();
        let sent = self.submit(Op::Meta(key.to_owned(), value, reply));
        async move {
            sent?;
            rx.await.map_err(|_| StorageError::Closed)?
        }
    }

    /// [`Self::append`] for synchronous callers. Must not be called from
    /// inside an async runtime (it blocks the thread until the commit).
    pub fn append_blocking(&self, req: AppendRequest) -> Result<AppendAck, StorageError> {
        futures::executor::block_on(self.append(req))
    }

    /// [`Self::put_snapshot`] for synchronous callers.
    pub fn put_snapshot_blocking(
        &self,
        realm: &RealmId,
        snapshot: SnapshotWrite,
    ) -> Result<(), StorageError> {
        futures::executor::block_on(self.put_snapshot(realm, snapshot))
    }

    /// [`Self::put_meta`] for synchronous callers.
    pub fn put_meta_blocking(&self, key: &str, value: Option<Vec<u8>>) -> Result<(), StorageError> {
        futures::executor::block_on(self.put_meta(key, value))
    }
}

/// Check an append on the caller's thread and encode its events: everything
/// that does not need the stored state.
fn encode_append(req: AppendRequest) -> Result<EncodedAppend, StorageError> {
    let realm = &req.realm_id;
    let Some(first) = req.events.first() else {
        return Err(StorageError::InvalidRequest(format!(
            "append to {realm} has no events"
        )));
    };
    if req.realm_type.is_empty() {
        return Err(StorageError::InvalidRequest(format!(
            "append to {realm} has an empty realm type"
        )));
    }
    let first_seq = first.seq;
    let mut entries = Vec::with_capacity(req.events.len());
    for (i, ev) in req.events.iter().enumerate() {
        let expected = first_seq.saturating_add(i as u64);
        if ev.seq != expected {
            return Err(StorageError::Gap {
                realm: realm.clone(),
                expected,
                found: ev.seq,
            });
        }
        entries.push(codec::encode_entry(ev)?);
    }
    Ok(EncodedAppend {
        realm_id: req.realm_id,
        realm_type: req.realm_type,
        version: req.plugin_version,
        first_seq,
        entries,
        idempotency: None,
        outbox: Vec::new(),
        delivery: None,
        settle: None,
    })
}

/// The single writer: owns the counters, publishes the unindexed tail.
pub(super) struct Committer {
    pub(super) db: Arc<DbCell>,
    pub(super) unindexed: Arc<RwLock<Unindexed>>,
    pub(super) counters: Counters,
    pub(super) config: StorageConfig,
    pub(super) stats: Arc<StatsCell>,
    /// Realms seen, so that checking an append needs no table lookup.
    pub(super) cache: RealmCache,
    /// The thread that answers committed batches (set by [`Self::run`]).
    pub(super) acker: Option<Acker>,
}

/// Answers committed batches on a thread of its own.
///
/// Waking a waiting task costs the committer up to a microsecond per
/// request (a tokio schedule, often a futex wake), and freeing a request
/// allocated on another thread takes that thread's allocator lock: a tenth
/// of the committer's time at 256 writers. Both happen after the commit and
/// after the tail is published, so they can run beside the next batch.
/// Batches are answered in commit order. Dropping the acker waits until
/// every batch handed to it is answered.
pub(super) struct Acker {
    tx: Option<mpsc::Sender<Acks>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

/// One committed batch for the [`Acker`]: its outcomes, and the requests it
/// consumed (freed there, not on the committer).
struct Acks {
    done: Vec<Done>,
    spent: Vec<EncodedAppend>,
}

impl Acker {
    /// Start the thread; `None` if it cannot be spawned (the committer then
    /// answers inline).
    fn spawn(stats: Arc<StatsCell>) -> Option<Self> {
        let (tx, rx) = mpsc::channel::<Acks>();
        let handle = std::thread::Builder::new()
            .name("storage-acks".into())
            .spawn(move || {
                for acks in rx {
                    let cpu = thread_cpu();
                    answer(acks.done);
                    drop(acks.spent);
                    stats.record_acks(thread_cpu().saturating_sub(cpu));
                }
            })
            .map_err(|e| tracing::warn!(error = %e, "no acknowledger thread; answering inline"))
            .ok()?;
        Some(Self {
            tx: Some(tx),
            handle: Some(handle),
        })
    }

    /// Hand a committed batch over; answers it here if the thread is gone.
    fn send(&self, done: Vec<Done>, spent: Vec<EncodedAppend>) {
        let acks = Acks { done, spent };
        if let Some(tx) = &self.tx
            && let Err(mpsc::SendError(acks)) = tx.send(acks)
        {
            answer(acks.done);
        }
    }
}

impl Drop for Acker {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(h) = self.handle.take()
            && h.join().is_err()
        {
            tracing::error!("storage acknowledger panicked");
        }
    }
}

/// Outcome of one request inside a batch, held until the commit decides.
enum Done {
    Append(Reply<AppendAck>, Result<AppendAck, StorageError>),
    Unit(Reply<()>, Result<(), StorageError>),
}

/// What one batch changes beyond its transaction: applied to the committer's
/// counters and the shared tail only if the commit succeeds.
pub(super) struct BatchState {
    pub(super) next_pos: u64,
    pub(super) next_realm_no: u64,
    pub(super) new_versions: Vec<(PluginVersion, u32)>,
    /// New log entries of this batch per realm (first seq, positions, version).
    pub(super) tails: FxHashMap<u64, Tail>,
    /// Realms whose whole tail (including this batch's entries) this batch's
    /// checkpoint indexed.
    pub(super) indexed: Vec<u64>,
    pub(super) events: usize,
    /// What this batch's appends tell the realm cache, if it commits.
    pub(super) learned: Vec<Learned>,
}

impl Committer {
    pub(super) fn run(mut self, rx: &mpsc::Receiver<Op>, skip_final_checkpoint: &AtomicBool) {
        self.acker = Acker::spawn(self.stats.clone());
        let max_batch = self.config.max_batch.max(1);
        let retry = Duration::from_millis(self.config.retry_ms.max(1));
        let mut linger = Linger::new(self.config.commit_linger_us);
        loop {
            // While writes fail, wake up now and then to find out whether
            // the disk takes them again, so readiness recovers without
            // waiting for a request.
            let first = if self.db.writable() {
                match rx.recv() {
                    Ok(op) => op,
                    Err(_) => break,
                }
            } else {
                match rx.recv_timeout(retry) {
                    Ok(op) => op,
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        self.heal();
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            };
            // The first request, then everything that queued up while the
            // previous commit was syncing *and while this one is being
            // written*: the batch size adapts to the load by itself, with no
            // timer adding latency when the system is idle. Taking requests
            // until the queue is empty (rather than only those queued at the
            // start) lets closed-loop writers that were acknowledged by the
            // previous commit join this one instead of waiting for the next:
            // one fsync for all of them instead of two half-full commits.
            // When the writers need longer than the write to come back (one
            // hot realm applies its events one at a time), the committer
            // also lingers a little for them (`Linger`); an idle or lightly
            // loaded node never waits.
            let head = linger.gather(first, rx, max_batch);
            let taken = std::cell::Cell::new(0usize);
            let ops = head
                .into_iter()
                .chain(std::iter::from_fn(|| rx.try_recv().ok()))
                .take(max_batch)
                .inspect(|_| taken.set(taken.get() + 1));
            let started = std::time::Instant::now();
            self.commit_batch(ops, false);
            linger.committed(taken.get(), started.elapsed());
        }
        // Clean shutdown: fold the whole tail into the index so that the next
        // open has no log to scan.
        if !self.db.is_open() && self.reopen().is_err() {
            return;
        }
        if !skip_final_checkpoint.load(Ordering::SeqCst) && self.unindexed.read().events > 0 {
            self.commit_batch(std::iter::empty(), true);
        }
    }

    /// Process `ops` in one durable transaction; with `full_checkpoint`, also
    /// index every unindexed tail. `ops` is drained lazily, while the
    /// transaction is open.
    ///
    /// The thread CPU time of the whole batch, answering included, is
    /// recorded in [`StatsCell`]: it is the serial work that bounds
    /// throughput.
    fn commit_batch(&mut self, ops: impl Iterator<Item = Op>, full_checkpoint: bool) {
        let cpu = thread_cpu();
        let mut commit_cpu = Duration::ZERO;
        let committed = self.process_batch(ops, full_checkpoint, &mut commit_cpu);
        self.stats.record(
            thread_cpu().saturating_sub(cpu),
            commit_cpu,
            committed.unwrap_or(0) as u64,
            committed.is_some(),
        );
    }

    /// [`Self::commit_batch`] without the accounting: the number of events
    /// committed, `None` if the batch failed. `commit_cpu` receives the
    /// thread CPU time spent inside redb's commit.
    fn process_batch(
        &mut self,
        ops: impl Iterator<Item = Op>,
        full_checkpoint: bool,
        commit_cpu: &mut Duration,
    ) -> Option<usize> {
        let span = tracing::info_span!(
            "storage.commit",
            batch = tracing::field::Empty,
            realms = tracing::field::Empty,
            events = tracing::field::Empty,
            indexed = tracing::field::Empty,
        );
        let _enter = span.enter();
        let started = std::time::Instant::now();
        let mut batch = BatchState {
            next_pos: self.counters.next_pos,
            next_realm_no: self.counters.next_realm_no,
            new_versions: Vec::new(),
            tails: FxHashMap::default(),
            indexed: Vec::new(),
            events: 0,
            learned: Vec::new(),
        };
        let mut done = Vec::new();
        let mut spent = Vec::new();
        let mut ops = ops;
        let mut realms = 0usize;

        // After a failed write the file is closed until a reopen succeeds;
        // until then every request fails fast with the reason.
        if !self.db.is_open()
            && let Err(e) = self.reopen()
        {
            let e = self.db.mark_failed(&e);
            tracing::warn!(error = %e, "storage still failing; request refused");
            // Take what is queued now before answering any of it: answering
            // as we drain would let a sender enqueue its next request into
            // this same verdict, and a steady writer would never see the
            // next reopen attempt.
            let refused: Vec<Op> = ops.collect();
            for op in refused {
                fail_op(op, &e);
            }
            return None;
        }

        let result = (|| -> Result<(), StorageError> {
            let mut txn = self.db.begin_write()?;
            txn.set_quick_repair(self.config.quick_repair);
            {
                // Only this thread writes the tail, so reading it while
                // processing the batch races with nobody; readers share it.
                let unindexed = self.unindexed.read();
                let mut w =
                    Writer::open(&txn, &self.counters, &unindexed, &self.cache, &self.config)?;
                for op in ops.by_ref() {
                    // A fatal error still answers the request being processed
                    // (with the batch's error, below) before aborting.
                    let fatal = match op {
                        Op::Append(mut req, reply) => {
                            let (r, fatal) = split(w.append(&mut req, &mut batch));
                            spent.push(req);
                            if r.is_ok() {
                                realms += 1;
                            }
                            done.push(Done::Append(reply, r));
                            fatal
                        }
                        Op::Snapshot(realm, snap, reply) => {
                            let (r, fatal) = split(w.snapshot(&realm, snap, &batch));
                            done.push(Done::Unit(reply, r));
                            fatal
                        }
                        Op::ChangeOutbox(sender, seq, index, change, reply) => {
                            let (r, fatal) = split(w.messages.change(&sender, seq, index, change));
                            done.push(Done::Unit(reply, r));
                            fatal
                        }
                        Op::Meta(key, value, reply) => {
                            let r = match value {
                                Some(v) => w.meta.insert(key.as_str(), v.as_slice()).map(drop),
                                None => w.meta.remove(key.as_str()).map(drop),
                            };
                            let (r, fatal) = split(r.map(Ok).map_err(StorageError::from));
                            done.push(Done::Unit(reply, r));
                            fatal
                        }
                    };
                    if let Some(e) = fatal {
                        return Err(e);
                    }
                }
                w.checkpoint(&mut batch, &self.config, full_checkpoint)?;
                w.keys.prune(super::now_ms())?;
                if batch.next_realm_no != self.counters.next_realm_no {
                    w.sys.insert(KEY_NEXT_REALM, batch.next_realm_no)?;
                }
            }
            let cpu = thread_cpu();
            let committed = txn.commit();
            *commit_cpu = thread_cpu().saturating_sub(cpu);
            committed?;
            Ok(())
        })();
        span.record("batch", done.len());
        metrics::histogram!("realmhost_commit_batch_requests").record(done.len() as f64);
        span.record("realms", realms);
        span.record("events", batch.events);
        span.record("indexed", batch.indexed.len());
        metrics::histogram!("realmhost_commit_batch_events").record(batch.events as f64);
        metrics::histogram!("realmhost_commit_seconds").record(started.elapsed().as_secs_f64());

        match result {
            Ok(()) => {
                // Publish before answering: an acknowledged event is visible
                // to every read that starts after the ack.
                {
                    let mut unindexed = self.unindexed.write();
                    for no in &batch.indexed {
                        unindexed.remove(*no);
                    }
                    for (no, t) in batch.tails.drain() {
                        unindexed.push_tail(no, t);
                    }
                    metrics::gauge!("realmhost_storage_unindexed_events")
                        .set(unindexed.events as f64);
                }
                self.counters.next_pos = batch.next_pos;
                self.counters.next_realm_no = batch.next_realm_no;
                self.counters.versions.extend(batch.new_versions);
                self.cache.apply(batch.learned);
                self.db.mark_ok();
                match &self.acker {
                    Some(acker) => acker.send(done, spent),
                    None => answer(done),
                }
                Some(batch.events)
            }
            Err(e) if e.is_corrupt() => {
                // Damaged stored data met while checking a request (not a
                // failed write): redb is not latched, nothing to reopen, and
                // other realms keep committing. The batch fails as before.
                tracing::error!(error = %e, "storage commit aborted on damaged data");
                let msg = e.to_string();
                for d in done {
                    match d {
                        Done::Append(reply, _) => {
                            drop(reply.send(Err(StorageError::CommitFailed(msg.clone()))))
                        }
                        Done::Unit(reply, _) => {
                            drop(reply.send(Err(StorageError::CommitFailed(msg.clone()))))
                        }
                    }
                }
                None
            }
            Err(e) => {
                tracing::error!(error = %e, "storage commit failed");
                let failed = self.db.mark_failed(&e);
                // redb refuses every later transaction after a failed write:
                // reopen now. The reopened file also tells whether the
                // commit became durable after all (a failure after the
                // header was written): it is atomic, so either the whole
                // batch is there or none of it.
                let before = self.counters.next_pos;
                self.db.close();
                let landed = match self.reopen() {
                    Ok(()) => self.counters.next_pos == batch.next_pos && batch.next_pos != before,
                    Err(e2) => {
                        tracing::warn!(error = %e2, "reopening the database failed; retrying");
                        false
                    }
                };
                if landed {
                    tracing::warn!(
                        "the failed commit turned out durable; answering it as committed"
                    );
                    self.db.mark_ok();
                    answer(done);
                    return Some(batch.events);
                }
                // Nothing of this batch is stored; every waiter of it learns
                // that. Requests not taken from the queue yet go into the
                // next batch.
                for d in done {
                    match d {
                        Done::Append(reply, _) => drop(reply.send(Err(failed.clone_transient()))),
                        Done::Unit(reply, _) => drop(reply.send(Err(failed.clone_transient()))),
                    }
                }
                None
            }
        }
    }

    /// Open the file again after a failed write and rebuild the counters and
    /// the unindexed tail from it, as a restart would. Holds the tail's lock
    /// throughout (readers take it before the database), so no reader sees
    /// the new file with a stale tail.
    #[tracing::instrument(name = "storage.reopen", skip_all)]
    fn reopen(&mut self) -> Result<(), StorageError> {
        let mut unindexed = self.unindexed.write();
        self.cache.clear();
        self.db.close();
        self.db.reopen(&self.config)?;
        let recovered = self
            .db
            .with_db(|db| guarded("reading", || recover(db, self.db.path())))
            .unwrap_or_else(|| Err(self.db.unavailable()));
        let recovered = match recovered {
            Ok(r) => r,
            Err(e) => {
                self.db.close();
                return Err(e);
            }
        };
        *unindexed = recovered.unindexed;
        self.counters = recovered.counters;
        tracing::info!(next_pos = self.counters.next_pos, "database reopened");
        Ok(())
    }

    /// While degraded: reopen if needed, then commit an empty durable
    /// transaction to learn whether the disk takes writes again.
    fn heal(&mut self) {
        let _span = tracing::info_span!("storage.heal").entered();
        let result = if self.db.is_open() {
            Ok(())
        } else {
            self.reopen()
        }
        .and_then(|()| recovery::probe(&self.db));
        match result {
            Ok(()) => self.db.mark_ok(),
            Err(e) => {
                tracing::debug!(error = %e, "storage still refuses writes");
                if !matches!(e, StorageError::Unavailable(_)) {
                    // Keep the reason of the last real failure current.
                    self.db.mark_failed(&e);
                }
                self.db.close();
            }
        }
    }
}

/// When to wait for a batch to fill (see [`StorageConfig::commit_linger_us`]).
struct Linger {
    max: std::time::Duration,
    /// Requests the previous batch held.
    last_batch: usize,
    /// How long the previous batch took to commit.
    last_commit: std::time::Duration,
}

impl Linger {
    /// Batches smaller than this never make the next one wait.
    const MIN_BATCH: usize = 8;

    fn new(max_us: u64) -> Self {
        Self {
            max: std::time::Duration::from_micros(max_us),
            last_batch: 0,
            last_commit: std::time::Duration::ZERO,
        }
    }

    /// `first` and what is queued; if that is under half the previous batch,
    /// also what arrives until the batch is as large as the previous one or
    /// the wait is over.
    fn gather(&self, first: Op, rx: &mpsc::Receiver<Op>, max_batch: usize) -> Vec<Op> {
        let mut head = vec![first];
        head.extend(std::iter::from_fn(|| rx.try_recv().ok()).take(max_batch - 1));
        let wait = self.max.min(self.last_commit / 2);
        if wait.is_zero() || self.last_batch < Self::MIN_BATCH || head.len() * 2 > self.last_batch {
            return head;
        }
        let deadline = std::time::Instant::now() + wait;
        while head.len() < self.last_batch.min(max_batch) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(op) => head.push(op),
                Err(_) => break,
            }
        }
        head
    }

    fn committed(&mut self, batch: usize, took: std::time::Duration) {
        self.last_batch = batch;
        self.last_commit = took;
    }
}

/// Send every outcome of a committed batch. A dropped receiver means the
/// caller stopped waiting; the data is durable either way.
fn answer(done: Vec<Done>) {
    for d in done {
        match d {
            Done::Append(reply, r) => drop(reply.send(r)),
            Done::Unit(reply, r) => drop(reply.send(r)),
        }
    }
}

/// Refuse a request without opening a transaction.
fn fail_op(op: Op, e: &StorageError) {
    match op {
        Op::Append(_, reply) => drop(reply.send(Err(e.clone_transient()))),
        Op::Snapshot(_, _, reply) => drop(reply.send(Err(e.clone_transient()))),
        Op::Meta(_, _, reply) => drop(reply.send(Err(e.clone_transient()))),
        Op::ChangeOutbox(_, _, _, _, reply) => drop(reply.send(Err(e.clone_transient()))),
    }
}

/// Separate a fatal batch error from the request's own outcome; the request
/// is then answered by the batch's failure path.
fn split<T>(step: Step<T>) -> (Result<T, StorageError>, Option<StorageError>) {
    match step {
        Ok(r) => (r, None),
        Err(e) => (Err(StorageError::Closed), Some(e)),
    }
}
