//! The sharded in-memory realm store (the seed's `LazyShardedRealmState`).
//!
//! A node keeps millions of realms in memory, each under its id. The store
//! splits them over `num_shards` shards (`shard_of(id, num_shards)`, FxHash);
//! each shard is a [`DashMap`] from id to a *slot* holding the realm's value
//! behind an [`Arc`] plus an atomic *access stamp*.
//!
//! # Reads never wait for bookkeeping
//! The seed write-locked a per-shard LRU list on every hit, which made reads
//! about 3× slower than a bare map lookup. Here a hit only takes the map's
//! internal read lock, copies the shard's logical clock into the slot's stamp
//! (and only when it changed, so hot realms do not bounce a cache line between
//! cores), bumps the calling thread's own hit counter (a plain store, no
//! atomic read-modify-write) and clones the `Arc`. Nothing is allocated.
//!
//! The LRU order is brought up to date off the hot path: when a shard has to
//! shed realms, the evictor scans the shard's stamps, picks the oldest ones and
//! queues them, oldest first, in the shard's [`lru::LruCache`] of eviction
//! candidates. Each candidate is removed only if its stamp is still the one
//! seen at scan time — a realm read after the scan survives.
//!
//! The logical clock of a shard advances on every insert and on every sweep;
//! a hit copies it, so a realm read after another realm was inserted is
//! strictly newer than that realm.
//!
//! # What may be evicted
//! A value decides through [`StoreValue::is_evictable`], asked under the
//! shard's write lock at the moment of removal. The node answers `false` while
//! the realm's newest state is not durable yet (an append in flight); such a
//! realm is never evicted. Evicted values go to the eviction hook
//! ([`ShardedStore::with_eviction_hook`]) so the node can snapshot dirty ones.
//!
//! # Loading
//! [`ShardedStore::get_or_load`] runs the caller's loader on a miss. Callers
//! for the same cold realm share one load (single flight); at most
//! `max_concurrent_loads` loads run at once, the rest queue in FIFO order, and
//! a load that outlasts `load_timeout_ms` fails with [`LoadError::Timeout`].
//! A load that raced with a removal of the same realm (its result may predate
//! the removed state) is retried instead of being inserted. That handshake
//! (flight registry, `inflight` counter, stale flag, lock order) is checked
//! exhaustively by a loom model in `store/loom_model.rs`, which runs with the
//! unit tests; a variant without the stale check must fail there.
//!
//! # Bounded memory
//! The periodic sweep ([`ShardedStore::spawn_eviction_tasks`]) trims every
//! shard to `max_per_shard`. Between sweeps, an insert that pushes its shard
//! past the hard cap, or the whole store past `memory_budget_bytes`, sheds the
//! coldest realms of that shard at once.
//!
//! # Without lazy loading
//! With `lazy_loading_enabled` off a realm that left memory could not come
//! back, so the store never evicts: [`spawn_eviction_tasks`] starts no task,
//! inserts shed nothing, and [`evict_all`] returns 0 (each logged). Memory is
//! bounded by refusing new realms instead: [`reserve`] grants room for one
//! more realm only while its shard holds fewer than the hard cap (rooms
//! granted and not yet released included) and the store is below its memory
//! budget, and otherwise fails with [`StoreError::ShardFull`] or
//! [`StoreError::MemoryFull`]. A caller reserves *before* making a new realm
//! durable, so that a refusal leaves nothing behind. Explicit
//! [`remove`](ShardedStore::remove) and [`evict_down_to`] still work.
//!
//! [`spawn_eviction_tasks`]: ShardedStore::spawn_eviction_tasks
//! [`evict_all`]: ShardedStore::evict_all
//! [`reserve`]: ShardedStore::reserve
//! [`evict_down_to`]: ShardedStore::evict_down_to

mod config;
mod error;
mod evict;
mod load;
mod stats;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use lru::LruCache;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tracing::Instrument;

pub use config::{ConfigError, ShardingConfig, ShardingConfigBuilder};
pub use error::{BoxError, LoadError, StoreError};
pub use evict::EvictionTasks;
pub use stats::{ShardStats, ShardingStats};

use crate::realm::shard_of;
use stats::{HitCounters, ShardCounters};

/// A value the store can hold: the node's realm state.
pub trait StoreValue: Send + Sync + 'static {
    /// Bytes this value accounts for against the memory budget (typically the
    /// state bytes). Must not change while the value is in the store.
    fn size_bytes(&self) -> usize;

    /// Whether the store may drop this value from memory. Answer `false`
    /// while the newest state is not durable (an append in flight): eviction
    /// must never lose an event. Asked under the shard's write lock.
    fn is_evictable(&self) -> bool {
        true
    }
}

/// Why a realm left memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EvictionReason {
    /// Periodic sweep or [`ShardedStore::evict_all`]: beyond `max_per_shard`.
    Sweep,
    /// An insert pushed the shard past its hard cap.
    HardCap,
    /// The store exceeded its memory budget.
    MemoryBudget,
    /// An explicit [`ShardedStore::evict_down_to`] call.
    Explicit,
}

/// A realm the store evicted, handed to the eviction hook.
#[derive(Debug)]
pub struct Evicted<V> {
    /// The realm id.
    pub realm_id: Arc<str>,
    /// Its shard.
    pub shard: usize,
    /// The value as it was in memory.
    pub value: Arc<V>,
    /// Why it was evicted.
    pub reason: EvictionReason,
}

type Hook<V> = Arc<dyn Fn(Evicted<V>) + Send + Sync>;

/// A realm in memory: its value and when it was last used.
struct Slot<V> {
    value: Arc<V>,
    /// Shard clock at the last access; the LRU order is by this stamp.
    stamp: AtomicU64,
}

impl<V> Slot<V> {
    fn new(value: Arc<V>, stamp: u64) -> Self {
        Self {
            value,
            stamp: AtomicU64::new(stamp),
        }
    }

    /// Record an access. Writes only when the stamp changes, so realms read
    /// over and over by several cores keep their cache line shared.
    #[inline]
    fn touch(&self, now: u64) {
        if self.stamp.load(Ordering::Relaxed) < now {
            self.stamp.store(now, Ordering::Relaxed);
        }
    }
}

/// Padding so that counters written on every hit do not share a cache line
/// with the read-mostly map handle and clock.
#[repr(align(128))]
#[derive(Debug, Default)]
struct Padded<T>(T);

/// What a load ends with, as shared with every caller waiting on it.
type Outcome<V> = Option<Result<Arc<V>, LoadError>>;

/// One in-flight load; followers wait on `rx`.
struct Flight<V> {
    /// Set by a removal of the realm while the load runs: the loaded value
    /// may predate the removed state, so it must not be inserted.
    stale: AtomicBool,
    rx: watch::Receiver<Outcome<V>>,
}

/// `repr(C)` so that what a hit reads — the map handle and the clock — comes
/// first and shares one cache line; left to itself the compiler put the
/// padded counters first and spread `map` and `clock` over three lines.
#[repr(C)]
struct Shard<V> {
    /// Keyed with foldhash's per-process random seed: several times
    /// faster than SipHash on short ids, and still resistant to ids chosen
    /// to collide (FxHash, which picks the shard, is not).
    map: DashMap<Arc<str>, Slot<V>, foldhash::fast::RandomState>,
    /// Logical clock: advanced by inserts and sweeps, copied by hits.
    clock: AtomicU64,
    counters: Padded<ShardCounters>,
    /// Realms in the map (kept beside the map: `DashMap::len` locks every
    /// internal shard).
    len: AtomicUsize,
    /// Sum of `size_bytes` of the realms in the map.
    bytes: AtomicU64,
    /// Eviction candidates, least recently used first. Only evictors touch it.
    queue: Mutex<LruCache<Arc<str>, u64>>,
    queue_len: AtomicUsize,
    /// Loads in flight, by realm id. Lock order: map write lock, then this.
    flights: Mutex<HashMap<Arc<str>, Arc<Flight<V>>>>,
    /// `flights.len()`, readable without the lock (removals check it).
    inflight: AtomicUsize,
    /// Rooms granted by [`ShardedStore::reserve`] and not released yet.
    reserved: AtomicUsize,
}

impl<V> Shard<V> {
    fn new(inner_shards: usize) -> Self {
        Self {
            map: DashMap::with_hasher_and_shard_amount(
                foldhash::fast::RandomState::default(),
                inner_shards,
            ),
            clock: AtomicU64::new(1),
            counters: Padded::default(),
            len: AtomicUsize::new(0),
            bytes: AtomicU64::new(0),
            queue: Mutex::new(LruCache::unbounded()),
            queue_len: AtomicUsize::new(0),
            flights: Mutex::new(HashMap::new()),
            inflight: AtomicUsize::new(0),
            reserved: AtomicUsize::new(0),
        }
    }

    /// Called with the map's write lock held for `key`, right before the
    /// realm is removed: a load in flight for it must not insert its result.
    fn mark_removed(&self, key: &str) {
        if self.inflight.load(Ordering::SeqCst) > 0
            && let Some(flight) = self.flights.lock().get(key)
        {
            flight.stale.store(true, Ordering::SeqCst);
        }
    }
}

/// Internal shards (locks) of each shard's `DashMap`.
///
/// DashMap's default is 4 × CPUs per map, so the store would hold
/// `num_shards` × 4 × CPUs locks, each padded to 128 bytes: 64 KiB for 64
/// shards on 2 CPUs, 2 MiB on 64 CPUs, and a hit rarely finds its lock's line
/// still in L1. The store's own sharding already spreads the locks, so this
/// keeps as many locks in total as one plain DashMap has (4 × CPUs), with at
/// least 2 per map (DashMap's minimum).
fn inner_shards(num_shards: usize) -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    (4 * cpus)
        .div_ceil(num_shards.max(1))
        .next_power_of_two()
        .max(2)
}

/// How many loads of one realm are tried when each raced with a removal.
const MAX_LOAD_ATTEMPTS: u32 = 8;

/// The sharded realm store. See the [module documentation](self).
pub struct ShardedStore<V> {
    shards: Box<[Shard<V>]>,
    config: ShardingConfig,
    total_bytes: AtomicU64,
    hits: HitCounters,
    load_slots: Semaphore,
    hook: Option<Hook<V>>,
}

/// The seed's name for the store.
pub type LazyShardedRealmState<V> = ShardedStore<V>;

impl<V> fmt::Debug for ShardedStore<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShardedStore")
            .field("num_shards", &self.shards.len())
            .field(
                "len",
                &self
                    .shards
                    .iter()
                    .map(|s| s.len.load(Ordering::Relaxed))
                    .sum::<usize>(),
            )
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl<V: StoreValue> ShardedStore<V> {
    /// An empty store; fails if the configuration does not validate.
    pub fn new(config: ShardingConfig) -> Result<Self, StoreError> {
        config.validate()?;
        let inner = inner_shards(config.num_shards);
        let shards = (0..config.num_shards).map(|_| Shard::new(inner)).collect();
        Ok(Self {
            shards,
            load_slots: Semaphore::new(config.max_concurrent_loads),
            hits: HitCounters::new(config.num_shards),
            config,
            total_bytes: AtomicU64::new(0),
            hook: None,
        })
    }

    /// Call `hook` with every evicted realm (outside the store's locks), so
    /// that the node can snapshot states that changed since their last
    /// snapshot. Explicit [`remove`](Self::remove)s do not go through it.
    pub fn with_eviction_hook(mut self, hook: impl Fn(Evicted<V>) + Send + Sync + 'static) -> Self {
        self.hook = Some(Arc::new(hook));
        self
    }

    /// The configuration in use.
    pub fn config(&self) -> &ShardingConfig {
        &self.config
    }

    /// The shard of a realm id.
    #[inline]
    pub fn shard_index(&self, realm_id: &str) -> usize {
        shard_of(realm_id, self.shards.len())
    }

    #[inline]
    fn shard(&self, realm_id: &str) -> (usize, &Shard<V>) {
        let idx = self.shard_index(realm_id);
        (idx, &self.shards[idx])
    }

    /// Realms in memory.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.len.load(Ordering::Relaxed))
            .sum()
    }

    /// Whether no realm is in memory.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sum of `size_bytes` over all realms in memory.
    pub fn state_bytes(&self) -> u64 {
        self.total_bytes.load(Ordering::Relaxed)
    }

    /// Whether realms may leave memory other than by explicit calls; false
    /// when lazy loading is off (see the [module documentation](self)).
    #[inline]
    fn evicts(&self) -> bool {
        self.config.lazy_loading_enabled
    }

    /// Room for `realm_id` in memory, asked for *before* the caller makes a
    /// new realm durable, so that a refusal leaves nothing behind.
    ///
    /// With lazy loading on, inserts make room by evicting: this always
    /// succeeds and holds nothing. With it off (nothing is ever evicted), it
    /// fails with [`StoreError::ShardFull`] when the realm's shard holds its
    /// hard cap of realms, counting rooms granted and not released yet, or
    /// with [`StoreError::MemoryFull`] when the store has reached its memory
    /// budget. A realm already in memory needs no room.
    ///
    /// Insert the realm, then drop the [`Reservation`] (dropping it without
    /// inserting gives the room back).
    pub fn reserve(&self, realm_id: &str) -> Result<Reservation<'_>, StoreError> {
        let none = Reservation { reserved: None };
        if self.evicts() {
            return Ok(none);
        }
        let (idx, shard) = self.shard(realm_id);
        if shard.map.contains_key(realm_id) {
            return Ok(none);
        }
        if let Some(budget) = self.config.memory_budget_bytes {
            let bytes = self.total_bytes.load(Ordering::Relaxed);
            if bytes >= budget {
                return Err(StoreError::MemoryFull { bytes, budget });
            }
        }
        let cap = self.config.hard_cap();
        let mut reserved = shard.reserved.load(Ordering::Relaxed);
        loop {
            if shard.len.load(Ordering::Relaxed) + reserved >= cap {
                return Err(StoreError::ShardFull { shard: idx, cap });
            }
            match shard.reserved.compare_exchange_weak(
                reserved,
                reserved + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    return Ok(Reservation {
                        reserved: Some(&shard.reserved),
                    });
                }
                Err(now) => reserved = now,
            }
        }
    }

    /// The realm if it is in memory (never loads). Counts a hit or a miss and
    /// marks the realm as recently used. Lock-free apart from the map's
    /// internal read lock; allocates nothing.
    #[inline]
    pub fn get_cached(&self, realm_id: &str) -> Option<Arc<V>> {
        self.lookup(self.shard_index(realm_id), realm_id, true)
    }

    #[inline]
    fn lookup(&self, idx: usize, realm_id: &str, count: bool) -> Option<Arc<V>> {
        let shard = &self.shards[idx];
        match shard.map.get(realm_id) {
            Some(slot) => {
                slot.touch(shard.clock.load(Ordering::Relaxed));
                if count {
                    self.hits.hit(idx);
                }
                Some(Arc::clone(&slot.value))
            }
            None => {
                if count {
                    ShardCounters::add(&shard.counters.0.misses, 1);
                }
                None
            }
        }
    }

    /// Whether the realm is in memory (does not count as an access).
    pub fn contains(&self, realm_id: &str) -> bool {
        self.shard(realm_id).1.map.contains_key(realm_id)
    }

    /// Insert the realm if it is not in memory yet; `false` if it was.
    pub fn register(&self, realm_id: &str, value: V) -> bool {
        self.register_arc(realm_id, Arc::new(value))
    }

    /// [`register`](Self::register) with a shared value.
    pub fn register_arc(&self, realm_id: &str, value: Arc<V>) -> bool {
        let (idx, shard) = self.shard(realm_id);
        if shard.map.contains_key(realm_id) {
            return false;
        }
        let size = value.size_bytes() as u64;
        let inserted = match shard.map.entry(Arc::from(realm_id)) {
            Entry::Occupied(_) => false,
            Entry::Vacant(vacant) => {
                let stamp = shard.clock.fetch_add(1, Ordering::Relaxed);
                vacant.insert(Slot::new(value, stamp));
                self.account_insert(shard, size);
                true
            }
        };
        if inserted {
            self.after_insert(idx);
        }
        inserted
    }

    /// Insert or replace the realm's value; returns the previous one.
    ///
    /// The node calls this after an append is durable, so a newer state
    /// always wins over a concurrent load of an older one.
    pub fn upsert(&self, realm_id: &str, value: V) -> Option<Arc<V>> {
        self.upsert_arc(realm_id, Arc::new(value))
    }

    /// [`upsert`](Self::upsert) with a shared value.
    pub fn upsert_arc(&self, realm_id: &str, value: Arc<V>) -> Option<Arc<V>> {
        let (idx, shard) = self.shard(realm_id);
        let new_size = value.size_bytes() as u64;
        if let Some(mut slot) = shard.map.get_mut(realm_id) {
            let stamp = shard.clock.fetch_add(1, Ordering::Relaxed);
            slot.stamp.store(stamp, Ordering::Relaxed);
            let old = std::mem::replace(&mut slot.value, value);
            drop(slot);
            self.account_replace(shard, old.size_bytes() as u64, new_size);
            if new_size > old.size_bytes() as u64 {
                self.after_insert(idx);
            }
            return Some(old);
        }
        let old = match shard.map.entry(Arc::from(realm_id)) {
            Entry::Occupied(mut occupied) => {
                let stamp = shard.clock.fetch_add(1, Ordering::Relaxed);
                let slot = occupied.get_mut();
                slot.stamp.store(stamp, Ordering::Relaxed);
                let old = std::mem::replace(&mut slot.value, value);
                self.account_replace(shard, old.size_bytes() as u64, new_size);
                Some(old)
            }
            Entry::Vacant(vacant) => {
                let stamp = shard.clock.fetch_add(1, Ordering::Relaxed);
                vacant.insert(Slot::new(value, stamp));
                self.account_insert(shard, new_size);
                None
            }
        };
        self.after_insert(idx);
        old
    }

    /// Drop the realm from memory (not through the eviction hook, and
    /// regardless of [`StoreValue::is_evictable`]: the caller decides).
    pub fn remove(&self, realm_id: &str) -> Option<Arc<V>> {
        let (_, shard) = self.shard(realm_id);
        let (_, slot) = shard.map.remove_if(realm_id, |key, _| {
            shard.mark_removed(key);
            true
        })?;
        self.account_remove(shard, slot.value.size_bytes() as u64);
        Some(slot.value)
    }

    /// Drop every realm of shard `idx` from memory (not through the eviction
    /// hook); returns how many went. Cluster mode calls it when the shard
    /// moves between nodes: the other node's writes make these states
    /// stale, and snapshots of them could no longer be written here.
    pub fn clear_shard(&self, idx: usize) -> usize {
        let Some(shard) = self.shards.get(idx) else {
            return 0;
        };
        let ids: Vec<Arc<str>> = shard.map.iter().map(|e| Arc::clone(e.key())).collect();
        ids.iter().filter(|id| self.remove(id).is_some()).count()
    }

    fn account_insert(&self, shard: &Shard<V>, size: u64) {
        shard.len.fetch_add(1, Ordering::Relaxed);
        shard.bytes.fetch_add(size, Ordering::Relaxed);
        self.total_bytes.fetch_add(size, Ordering::Relaxed);
    }

    fn account_replace(&self, shard: &Shard<V>, old: u64, new: u64) {
        shard.bytes.fetch_add(new, Ordering::Relaxed);
        shard.bytes.fetch_sub(old, Ordering::Relaxed);
        self.total_bytes.fetch_add(new, Ordering::Relaxed);
        self.total_bytes.fetch_sub(old, Ordering::Relaxed);
    }

    fn account_remove(&self, shard: &Shard<V>, size: u64) {
        shard.len.fetch_sub(1, Ordering::Relaxed);
        shard.bytes.fetch_sub(size, Ordering::Relaxed);
        self.total_bytes.fetch_sub(size, Ordering::Relaxed);
    }

    /// Shed at insert time: past the hard cap down to `max_per_shard`; past
    /// the memory budget down to 15/16 of it (hysteresis, so that a store at
    /// its budget does not scan on every insert). Skipped when another thread
    /// is already shedding this shard.
    fn after_insert(&self, idx: usize) {
        let shard = &self.shards[idx];
        if !self.evicts() {
            // Callers that reserve never get here past the cap; say so once
            // per crossing when one did not.
            let cap = self.config.hard_cap();
            if shard.len.load(Ordering::Relaxed) == cap + 1 {
                tracing::warn!(
                    shard = idx,
                    cap,
                    "shard went past its hard cap without a reservation; nothing is evicted while lazy loading is off"
                );
            }
            return;
        }
        if shard.len.load(Ordering::Relaxed) > self.config.hard_cap() {
            self.evict_shard(
                idx,
                EvictionReason::HardCap,
                self.config.max_per_shard,
                None,
                false,
            );
        }
        if let Some(budget) = self.config.memory_budget_bytes
            && self.total_bytes.load(Ordering::Relaxed) > budget
        {
            let target = budget - budget / 16;
            self.evict_shard(
                idx,
                EvictionReason::MemoryBudget,
                usize::MAX,
                Some(target),
                false,
            );
        }
    }

    /// Current statistics.
    pub fn stats(&self) -> ShardingStats {
        let rows = self
            .shards
            .iter()
            .enumerate()
            .map(|(index, shard)| {
                let c = &shard.counters.0;
                ShardStats {
                    index,
                    loaded_count: shard.len.load(Ordering::Relaxed),
                    lru_size: shard.queue_len.load(Ordering::Relaxed),
                    state_bytes: shard.bytes.load(Ordering::Relaxed),
                    cache_hits: self.hits.read(index),
                    cache_misses: ShardCounters::read(&c.misses),
                    loads: ShardCounters::read(&c.loads),
                    evictions: ShardCounters::read(&c.evictions),
                    last_eviction_ms: ShardCounters::read(&c.last_eviction_ms),
                }
            })
            .collect();
        ShardingStats::from_shards(self.shards.len(), self.config.max_per_shard, rows)
    }
}

/// Room for one realm, from [`ShardedStore::reserve`]; released on drop.
#[must_use = "the room is released when the reservation is dropped"]
#[derive(Debug)]
pub struct Reservation<'a> {
    /// The shard's count of granted rooms; `None` when nothing was reserved.
    reserved: Option<&'a AtomicUsize>,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if let Some(reserved) = self.reserved {
            reserved.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod loom_model;
#[cfg(test)]
mod tests;
