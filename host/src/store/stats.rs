//! Statistics: atomic counters per shard, read into plain serializable rows.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use serde::{Deserialize, Serialize};

/// Live counters of one shard. Relaxed atomics: the numbers are for
/// dashboards and tests, never for synchronization.
#[derive(Debug, Default)]
pub(crate) struct ShardCounters {
    pub(crate) misses: AtomicU64,
    pub(crate) loads: AtomicU64,
    pub(crate) evictions: AtomicU64,
    pub(crate) last_eviction_ms: AtomicU64,
}

impl ShardCounters {
    #[inline]
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn read(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Stripes of hit counters; a thread always writes the same stripe.
const STRIPES: usize = 64;
/// Unused counters between two stripes, so that two threads never write the
/// same cache line (16 × 8 bytes).
const STRIPE_GAP: usize = 16;

static NEXT_STRIPE: AtomicUsize = AtomicUsize::new(0);
/// Stripes given back by threads that ended, handed out again first, so that
/// up to 64 threads alive at once always own distinct stripes.
static FREE_STRIPES: Mutex<Vec<usize>> = Mutex::new(Vec::new());

/// A thread's stripe; returned to the free list when the thread ends.
struct StripeSlot(usize);

impl StripeSlot {
    fn acquire() -> Self {
        let reused = FREE_STRIPES
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        Self(reused.unwrap_or_else(|| NEXT_STRIPE.fetch_add(1, Ordering::Relaxed) % STRIPES))
    }
}

impl Drop for StripeSlot {
    fn drop(&mut self) {
        FREE_STRIPES
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(self.0);
    }
}

thread_local! {
    static STRIPE: StripeSlot = StripeSlot::acquire();
}

/// Hit counters for all shards, striped by thread.
///
/// Counting a hit is on the read path, where an atomic read-modify-write
/// costs as much as a tenth of the lookup. Each thread instead owns one
/// stripe and increments its counter with a plain load and store. Only with
/// more than 64 threads alive at once do two threads share a stripe, and then
/// a concurrent increment can occasionally be lost: hit counts are
/// statistics, not accounting.
#[derive(Debug)]
pub(crate) struct HitCounters {
    cells: Box<[AtomicU64]>,
    stride: usize,
}

impl HitCounters {
    pub(crate) fn new(num_shards: usize) -> Self {
        let stride = num_shards + STRIPE_GAP;
        Self {
            cells: (0..STRIPES * stride).map(|_| AtomicU64::new(0)).collect(),
            stride,
        }
    }

    #[inline]
    fn stripe() -> usize {
        // During thread teardown the slot may be gone: count on stripe 0.
        STRIPE.try_with(|s| s.0).unwrap_or(0)
    }

    #[inline]
    pub(crate) fn hit(&self, shard: usize) {
        if let Some(cell) = self.cells.get(Self::stripe() * self.stride + shard) {
            cell.store(
                cell.load(Ordering::Relaxed).wrapping_add(1),
                Ordering::Relaxed,
            );
        }
    }

    pub(crate) fn read(&self, shard: usize) -> u64 {
        (0..STRIPES)
            .filter_map(|stripe| self.cells.get(stripe * self.stride + shard))
            .map(|cell| cell.load(Ordering::Relaxed))
            .sum()
    }
}

/// One shard's statistics at the time of [`crate::store::ShardedStore::stats`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardStats {
    /// Shard index.
    pub index: usize,
    /// Realms currently in memory.
    pub loaded_count: usize,
    /// Eviction candidates currently held in the shard's LRU queue.
    pub lru_size: usize,
    /// Sum of `size_bytes` of the shard's realms.
    pub state_bytes: u64,
    /// Lookups answered from memory.
    pub cache_hits: u64,
    /// Lookups that found nothing in memory.
    pub cache_misses: u64,
    /// Loader runs (one per cold realm, however many callers waited).
    pub loads: u64,
    /// Realms evicted (sweeps, hard cap, memory budget, `evict_all`).
    pub evictions: u64,
    /// Wall-clock time of the last eviction that removed something, ms since
    /// the Unix epoch; 0 if none yet.
    pub last_eviction_ms: u64,
}

/// Statistics over all shards.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardingStats {
    /// Configured shard count.
    pub num_shards: usize,
    /// Configured target size per shard.
    pub max_per_shard: usize,
    /// Realms in memory.
    pub total_loaded_realms: usize,
    /// Sum of `size_bytes` over all realms in memory.
    pub total_state_bytes: u64,
    /// Lookups answered from memory.
    pub total_cache_hits: u64,
    /// Lookups that found nothing in memory.
    pub total_cache_misses: u64,
    /// Loader runs.
    pub total_loads: u64,
    /// Realms evicted.
    pub total_evictions: u64,
    /// `hits / (hits + misses)` in percent; 0 before the first lookup.
    pub cache_hit_rate_percent: f64,
    /// Population standard deviation of `loaded_count` across shards.
    pub load_distribution_stddev: f64,
    /// Per-shard rows, by index.
    pub shards: Vec<ShardStats>,
}

impl ShardingStats {
    /// Aggregate per-shard rows.
    pub fn from_shards(num_shards: usize, max_per_shard: usize, shards: Vec<ShardStats>) -> Self {
        let total_loaded_realms = shards.iter().map(|s| s.loaded_count).sum();
        let total_cache_hits: u64 = shards.iter().map(|s| s.cache_hits).sum();
        let total_cache_misses: u64 = shards.iter().map(|s| s.cache_misses).sum();
        let lookups = total_cache_hits + total_cache_misses;
        let cache_hit_rate_percent = if lookups == 0 {
            0.0
        } else {
            total_cache_hits as f64 * 100.0 / lookups as f64
        };
        let n = shards.len().max(1) as f64;
        let mean = total_loaded_realms as f64 / n;
        let variance = shards
            .iter()
            .map(|s| (s.loaded_count as f64 - mean).powi(2))
            .sum::<f64>()
            / n;
        Self {
            num_shards,
            max_per_shard,
            total_loaded_realms,
            total_state_bytes: shards.iter().map(|s| s.state_bytes).sum(),
            total_cache_hits,
            total_cache_misses,
            total_loads: shards.iter().map(|s| s.loads).sum(),
            total_evictions: shards.iter().map(|s| s.evictions).sum(),
            cache_hit_rate_percent,
            load_distribution_stddev: variance.sqrt(),
            shards,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(index: usize, loaded: usize, hits: u64, misses: u64) -> ShardStats {
        ShardStats {
            index,
            loaded_count: loaded,
            lru_size: 0,
            state_bytes: 0,
            cache_hits: hits,
            cache_misses: misses,
            loads: 0,
            evictions: 0,
            last_eviction_ms: 0,
        }
    }

    #[test]
    fn aggregates() {
        let s = ShardingStats::from_shards(2, 10, vec![row(0, 2, 3, 1), row(1, 4, 6, 0)]);
        assert_eq!(s.total_loaded_realms, 6);
        assert!((s.cache_hit_rate_percent - 90.0).abs() < 1e-9);
        assert!((s.load_distribution_stddev - 1.0).abs() < 1e-9);
        let json = serde_json::to_string(&s).expect("serializes");
        assert_eq!(
            serde_json::from_str::<ShardingStats>(&json).expect("parses"),
            s
        );
        assert_eq!(
            ShardingStats::from_shards(0, 1, vec![]).cache_hit_rate_percent,
            0.0
        );
    }
}
