//! Messages between realms on a node (`docs/design-messaging.md`).
//!
//! - **Sending** ([`send`]): the messages an event's `apply` returns are
//!   checked against [`MessagingConfig`] and written into the sender's outbox
//!   in the same commit as the event.
//! - **Queues** ([`Messenger`]): every message without an outcome, in memory,
//!   per (sender, target) pair in send order. Rebuilt from the outboxes when
//!   the node opens. Only a pair's head is in flight, so each pair is FIFO;
//!   pairs progress independently, so a failing target holds up nobody else.
//! - **Delivery** ([`deliver`]): the head is appended to its target through
//!   the normal append path with the host-set origin, the target's inbox
//!   cursor moving in the same commit (so a redelivery after a crash is
//!   recognised, without a time window). Its outcome is then **settled** at
//!   the sender: the outbox row goes, in the same commit as the reply event
//!   when a reply is wanted, so the reply and the outcome happen once.
//!
//! The in-memory state is a cache of storage: losing it (a crash) loses
//! nothing, since the outboxes and cursors are durable and each step checks
//! them.

mod admin;
mod deliver;
pub(crate) mod send;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::message::{Outcome, StoredMessage};
use crate::realm::RealmId;
use crate::storage::OutboxKey;

pub use admin::{ChainView, MAX_MESSAGES_PAGE, MessageView, RealmMessages, SettledMessage};
pub(crate) use deliver::{Delivered, spawn_delivery};

/// Limits and pacing of messages between realms (`[messaging]`).
///
/// | field | default |
/// |---|---|
/// | `hop_limit` | 32 hops; a message past it is dead-lettered (ends loops) |
/// | `max_messages_per_call` | 64 messages one event may send |
/// | `max_payload_bytes` | 65 536 bytes per message payload |
/// | `max_kind_bytes` | 128 bytes per message kind |
/// | `max_correlation_bytes` | 256 bytes per correlation id |
/// | `max_pending_per_sender` | 1 024 undelivered messages per sender realm; beyond, the event is rejected with `outbox_full` |
/// | `max_in_flight` | 256 deliveries at once on the node |
/// | `retry_min_ms`, `retry_max_ms` | 100 ms doubling to 30 s between attempts at a failing target |
/// | `max_attempts` | 12 failed attempts (a trapping or parked target) dead-letter the message |
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MessagingConfig {
    /// Hops a message may take (a message sent by a client-appended event
    /// is hop 1; each message sent while handling one adds one).
    pub hop_limit: u32,
    /// Messages one event may send.
    pub max_messages_per_call: usize,
    /// Bytes of one message's payload.
    pub max_payload_bytes: usize,
    /// Bytes of one message's kind.
    pub max_kind_bytes: usize,
    /// Bytes of one correlation id.
    pub max_correlation_bytes: usize,
    /// Undelivered messages one sender realm may have.
    pub max_pending_per_sender: usize,
    /// Deliveries running at once.
    pub max_in_flight: usize,
    /// First wait before retrying a failed delivery.
    pub retry_min_ms: u64,
    /// Longest wait between attempts.
    pub retry_max_ms: u64,
    /// Failed attempts after which a message is dead-lettered.
    pub max_attempts: u32,
}

impl Default for MessagingConfig {
    fn default() -> Self {
        Self {
            hop_limit: 32,
            max_messages_per_call: 64,
            max_payload_bytes: 64 * 1024,
            max_kind_bytes: 128,
            max_correlation_bytes: 256,
            max_pending_per_sender: 1024,
            max_in_flight: 256,
            retry_min_ms: 100,
            retry_max_ms: 30_000,
            max_attempts: 12,
        }
    }
}

impl MessagingConfig {
    /// Check the values.
    pub fn validate(&self) -> Result<(), String> {
        if self.hop_limit == 0
            || self.max_messages_per_call == 0
            || self.max_pending_per_sender == 0
            || self.max_in_flight == 0
            || self.max_attempts == 0
        {
            return Err("messaging: hop_limit, max_messages_per_call, max_pending_per_sender, max_in_flight and max_attempts must be > 0".into());
        }
        if self.retry_min_ms == 0 || self.retry_max_ms < self.retry_min_ms {
            return Err("messaging: retry_min_ms must be > 0 and at most retry_max_ms".into());
        }
        Ok(())
    }

    /// The wait after `attempts` failed attempts.
    fn backoff_ms(&self, attempts: u32) -> u64 {
        let factor = 1u64 << attempts.saturating_sub(1).min(30);
        self.retry_min_ms
            .saturating_mul(factor)
            .min(self.retry_max_ms)
    }
}

/// Message counters of the node, since it started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageStats {
    /// Messages without an outcome (in outboxes).
    pub pending: u64,
    /// Deliveries running now.
    pub in_flight: u64,
    /// Messages stored with their sending events.
    pub sent: u64,
    /// Outcomes settled: accepted.
    pub accepted: u64,
    /// Outcomes settled: rejected by the target.
    pub rejected: u64,
    /// Outcomes settled: invalid at the target.
    pub invalid: u64,
    /// Outcomes settled: expired.
    pub expired: u64,
    /// Outcomes settled: dead-lettered.
    pub dead_lettered: u64,
    /// Reply events appended to senders.
    pub replies: u64,
    /// Failed delivery attempts (retried).
    pub retries: u64,
    /// Deliveries found already made (after a crash or a lost settle).
    pub redelivered: u64,
    /// Time from send to outcome of settled messages, sum in ms (with
    /// `accepted + rejected + ...` gives the mean).
    pub latency_ms_sum: u64,
    /// The longest such time seen, ms.
    pub latency_ms_max: u64,
    /// Median time from due to outcome over the last
    /// [`LATENCY_SAMPLES`] settled messages, ms.
    #[serde(default)]
    pub latency_ms_p50: u64,
    /// 99th percentile of the same, ms.
    #[serde(default)]
    pub latency_ms_p99: u64,
}

/// Settled messages whose latency the percentiles cover.
pub const LATENCY_SAMPLES: usize = 4096;

#[derive(Debug, Default)]
struct Counters {
    sent: AtomicU64,
    accepted: AtomicU64,
    rejected: AtomicU64,
    invalid: AtomicU64,
    expired: AtomicU64,
    dead_lettered: AtomicU64,
    replies: AtomicU64,
    retries: AtomicU64,
    redelivered: AtomicU64,
    latency_ms_sum: AtomicU64,
    latency_ms_max: AtomicU64,
}

/// A message waiting for its outcome.
#[derive(Debug, Clone)]
pub(crate) struct Pending {
    pub id: OutboxKey,
    pub message: Arc<StoredMessage>,
}

type PairKey = (RealmId, RealmId);

/// A queued message, and whether its sending event is durable yet: a
/// message is queued (in send order) when its event is enqueued for commit,
/// under the sender's lock, and delivered only once that commit succeeded.
#[derive(Debug)]
struct Slot {
    pending: Pending,
    durable: bool,
}

#[derive(Debug, Default)]
struct Pair {
    queue: VecDeque<Slot>,
    busy: bool,
    attempts: u32,
    retry_at: u64,
    last_error: Option<String>,
    /// The head's outcome, once decided but not yet settled (its settle
    /// failed): the next attempt only settles.
    outcome: Option<Outcome>,
}

impl Pair {
    /// When the head may go: `None` if there is none, or if its event is
    /// still being committed.
    fn due(&self) -> Option<u64> {
        let head = self.queue.front().filter(|s| s.durable)?;
        Some(head.pending.message.due_ms.max(self.retry_at))
    }
}

#[derive(Debug, Default)]
struct Queues {
    pairs: HashMap<PairKey, Pair>,
    /// Idle pairs with a message, by when their head is due.
    schedule: BTreeSet<(u64, PairKey)>,
    /// Undelivered messages per sender (including reserved ones of events
    /// being committed).
    per_sender: HashMap<RealmId, usize>,
    pending: usize,
    in_flight: usize,
}

impl Queues {
    fn reschedule(&mut self, key: &PairKey) {
        if let Some(p) = self.pairs.get(key) {
            if p.busy {
                return;
            }
            match p.due() {
                Some(at) => {
                    self.schedule.insert((at, key.clone()));
                }
                None if p.queue.is_empty() => {
                    self.pairs.remove(key);
                }
                // The head's event is being committed: `confirm` schedules it.
                None => {}
            }
        }
    }

    fn unschedule(&mut self, key: &PairKey) {
        if let Some(at) = self.pairs.get(key).and_then(Pair::due) {
            self.schedule.remove(&(at, key.clone()));
        }
    }
}

/// What a finished delivery attempt reports back to the queues.
#[derive(Debug)]
pub(crate) enum Step {
    /// The outcome is settled at the sender: the head goes.
    Settled,
    /// Not delivered; try again later (the error, for operators).
    Retry(String),
    /// The outcome is decided but settling it failed: settle it again later.
    Unsettled(Outcome, String),
}

/// A head taken for an attempt.
#[derive(Debug)]
pub(crate) struct Due {
    pub key: PairKey,
    pub head: Pending,
    /// Failed attempts so far.
    pub attempts: u32,
    /// Set when an earlier attempt decided the outcome.
    pub outcome: Option<Outcome>,
}

/// The node's message queues and counters.
#[derive(Debug)]
pub(crate) struct Messenger {
    config: MessagingConfig,
    queues: Mutex<Queues>,
    counters: Counters,
    wake: tokio::sync::Notify,
    /// The last settled outcomes, for following chains.
    recent: Mutex<admin::Recent>,
    /// The latencies of the last [`LATENCY_SAMPLES`] settled messages, ms.
    latencies: Mutex<VecDeque<u64>>,
}

impl Messenger {
    pub(crate) fn new(config: MessagingConfig) -> Self {
        Self {
            config,
            queues: Mutex::new(Queues::default()),
            counters: Counters::default(),
            wake: tokio::sync::Notify::new(),
            recent: Mutex::new(admin::Recent::default()),
            latencies: Mutex::new(VecDeque::with_capacity(LATENCY_SAMPLES)),
        }
    }

    pub(crate) fn config(&self) -> &MessagingConfig {
        &self.config
    }

    /// Undelivered messages of `sender`, reserved ones included.
    pub(crate) fn pending_of(&self, sender: &RealmId) -> usize {
        self.queues
            .lock()
            .per_sender
            .get(sender)
            .copied()
            .unwrap_or(0)
    }

    /// Queue the messages of an event being committed, in send order (the
    /// caller holds the sender's lock, so events stage in seq order), and
    /// count them against the sender's limit. They are delivered only after
    /// [`Self::confirm`]; [`Self::withdraw`] them if the commit fails.
    pub(crate) fn stage(&self, messages: &[Pending]) {
        // Most events send nothing: no lock on the append path for them.
        if !messages.is_empty() {
            self.insert(messages.iter().cloned(), false);
        }
    }

    /// The staged `messages` are durable: deliver them.
    pub(crate) fn confirm(&self, messages: &[Pending]) {
        if messages.is_empty() {
            return;
        }
        self.counters
            .sent
            .fetch_add(messages.len() as u64, Ordering::Relaxed);
        let mut q = self.queues.lock();
        for m in messages {
            let key = (m.id.sender.clone(), m.message.target.clone());
            if let Some(p) = q.pairs.get_mut(&key)
                && let Some(slot) = p.queue.iter_mut().find(|s| s.pending.id == m.id)
            {
                slot.durable = true;
            }
            q.reschedule(&key);
        }
        drop(q);
        self.wake.notify_one();
    }

    /// The staged `messages` were not stored: forget them.
    pub(crate) fn withdraw(&self, messages: &[Pending]) {
        if messages.is_empty() {
            return;
        }
        let mut q = self.queues.lock();
        for m in messages {
            let key = (m.id.sender.clone(), m.message.target.clone());
            q.unschedule(&key);
            if let Some(p) = q.pairs.get_mut(&key) {
                p.queue.retain(|s| s.pending.id != m.id);
            }
            Self::uncount(&mut q, &m.id.sender, 1);
            q.reschedule(&key);
        }
    }

    fn uncount(q: &mut Queues, sender: &RealmId, n: usize) {
        if let Some(c) = q.per_sender.get_mut(sender) {
            *c = c.saturating_sub(n);
            if *c == 0 {
                q.per_sender.remove(sender);
            }
        }
        q.pending = q.pending.saturating_sub(n);
    }

    /// Drop the queues of every sender `filter` picks; returns how many
    /// messages went. Cluster mode: the senders' shard moved to another
    /// node, which loads their outboxes and delivers them from now on.
    #[cfg(feature = "cluster")]
    pub(crate) fn forget_senders(&self, filter: impl Fn(&RealmId) -> bool) -> usize {
        let mut q = self.queues.lock();
        let keys: Vec<PairKey> = q.pairs.keys().filter(|k| filter(&k.0)).cloned().collect();
        let mut n = 0;
        for key in keys {
            q.unschedule(&key);
            if let Some(p) = q.pairs.remove(&key) {
                n += p.queue.len();
                Self::uncount(&mut q, &key.0, p.queue.len());
            }
        }
        n
    }

    /// Queue durable messages (loaded at start, or revived dead letters).
    pub(crate) fn enqueue(&self, messages: Vec<Pending>) {
        self.insert(messages.into_iter(), true);
        self.wake.notify_one();
    }

    /// Insert each message at its place in its pair's queue (in
    /// `(seq, index)` order, never before a head in flight) and count it.
    fn insert(&self, messages: impl Iterator<Item = Pending>, durable: bool) {
        let mut q = self.queues.lock();
        for m in messages {
            *q.per_sender.entry(m.id.sender.clone()).or_default() += 1;
            q.pending += 1;
            let key = (m.id.sender.clone(), m.message.target.clone());
            q.unschedule(&key);
            let pair = q.pairs.entry(key.clone()).or_default();
            let floor = usize::from(pair.busy);
            let at = pair
                .queue
                .iter()
                .rposition(|s| s.pending.id < m.id)
                .map_or(0, |i| i + 1)
                .max(floor.min(pair.queue.len()));
            pair.queue.insert(
                at,
                Slot {
                    pending: m,
                    durable,
                },
            );
            q.reschedule(&key);
        }
    }

    /// Pairs whose head is due at `now`, marked busy (at most `max`), and
    /// when the next one is due.
    fn take_due(&self, now: u64, max: usize) -> (Vec<Due>, Option<u64>) {
        let mut q = self.queues.lock();
        let mut out = Vec::new();
        while out.len() < max {
            let Some((at, _)) = q.schedule.first() else {
                break;
            };
            if *at > now {
                break;
            }
            let Some((_, key)) = q.schedule.pop_first() else {
                break;
            };
            if let Some(p) = q.pairs.get_mut(&key)
                && let Some(head) = p.queue.front().map(|s| s.pending.clone())
            {
                p.busy = true;
                out.push(Due {
                    attempts: p.attempts,
                    outcome: p.outcome.clone(),
                    key,
                    head,
                });
            }
        }
        q.in_flight += out.len();
        let next = q.schedule.first().map(|(at, _)| *at);
        (out, next)
    }

    /// Record how the attempt at `key`'s head ended.
    fn finish(&self, key: &PairKey, step: Step, now: u64) {
        let mut q = self.queues.lock();
        q.in_flight = q.in_flight.saturating_sub(1);
        let Some(p) = q.pairs.get_mut(key) else {
            return;
        };
        p.busy = false;
        match step {
            Step::Settled => {
                p.queue.pop_front();
                p.attempts = 0;
                p.retry_at = 0;
                p.last_error = None;
                p.outcome = None;
                Self::uncount(&mut q, &key.0, 1);
            }
            step => {
                let error = match step {
                    Step::Unsettled(outcome, error) => {
                        p.outcome = Some(outcome);
                        error
                    }
                    Step::Retry(error) => error,
                    Step::Settled => String::new(),
                };
                p.attempts += 1;
                p.retry_at = now.saturating_add(self.config.backoff_ms(p.attempts));
                p.last_error = Some(error);
                self.counters.retries.fetch_add(1, Ordering::Relaxed);
            }
        }
        q.reschedule(key);
        drop(q);
        self.wake.notify_one();
    }

    /// The counters, with the queues' sizes.
    pub(crate) fn stats(&self) -> MessageStats {
        let (pending, in_flight) = {
            let q = self.queues.lock();
            (q.pending as u64, q.in_flight as u64)
        };
        let mut lat: Vec<u64> = self.latencies.lock().iter().copied().collect();
        lat.sort_unstable();
        let pct = |p: f64| {
            lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
                .copied()
                .unwrap_or(0)
        };
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        MessageStats {
            pending,
            in_flight,
            sent: get(&c.sent),
            accepted: get(&c.accepted),
            rejected: get(&c.rejected),
            invalid: get(&c.invalid),
            expired: get(&c.expired),
            dead_lettered: get(&c.dead_lettered),
            replies: get(&c.replies),
            retries: get(&c.retries),
            redelivered: get(&c.redelivered),
            latency_ms_sum: get(&c.latency_ms_sum),
            latency_ms_max: get(&c.latency_ms_max),
            latency_ms_p50: pct(0.5),
            latency_ms_p99: pct(0.99),
        }
    }

    /// Record a settled message's latency.
    fn record_latency(&self, ms: u64) {
        self.counters
            .latency_ms_sum
            .fetch_add(ms, Ordering::Relaxed);
        self.counters
            .latency_ms_max
            .fetch_max(ms, Ordering::Relaxed);
        let mut l = self.latencies.lock();
        if l.len() >= LATENCY_SAMPLES {
            l.pop_front();
        }
        l.push_back(ms);
    }

    /// Queued messages that match `filter`.
    pub(crate) fn queued(&self, filter: impl Fn(&Pending) -> bool) -> Vec<Pending> {
        let q = self.queues.lock();
        q.pairs
            .values()
            .flat_map(|p| p.queue.iter().map(|s| &s.pending))
            .filter(|p| filter(p))
            .cloned()
            .collect()
    }

    /// The pairs with undelivered messages from or to `realm`: target or
    /// sender, queued count, attempts and the last error.
    pub(crate) fn pairs_of(&self, realm: &RealmId) -> Vec<PairView> {
        let q = self.queues.lock();
        let mut out: Vec<PairView> = q
            .pairs
            .iter()
            .filter(|((s, t), _)| s == realm || t == realm)
            .map(|((s, t), p)| PairView {
                sender: s.to_string(),
                target: t.to_string(),
                queued: p.queue.len(),
                attempts: p.attempts,
                last_error: p.last_error.clone(),
                next_attempt_ms: p.due(),
            })
            .collect();
        out.sort_by(|a, b| (&a.sender, &a.target).cmp(&(&b.sender, &b.target)));
        out
    }
}

/// One (sender, target) queue, as operators see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairView {
    /// The sending realm.
    pub sender: String,
    /// The target realm.
    pub target: String,
    /// Messages queued (the head is the next to deliver).
    pub queued: usize,
    /// Failed attempts at the head.
    pub attempts: u32,
    /// The last failure, if the head failed.
    pub last_error: Option<String>,
    /// When the head is due (ms since the epoch).
    pub next_attempt_ms: Option<u64>,
}

#[cfg(test)]
mod tests;
