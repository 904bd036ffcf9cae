//! Eviction: trimming shards to their limits and the memory budget, least
//! recently used first, by hand or from the background tasks.

use super::*;

impl<V: StoreValue> ShardedStore<V> {
    /// Trim every shard to `max_per_shard` (and the memory budget, if set),
    /// least recently used first; returns how many realms were evicted.
    /// With lazy loading off nothing is evicted (and 0 returned).
    pub fn evict_all(&self) -> usize {
        if !self.evicts() {
            tracing::info!(
                realms = self.len(),
                "eviction pass skipped: lazy loading is off, so nothing is evicted"
            );
            return 0;
        }
        (0..self.shards.len())
            .map(|idx| self.sweep_shard(idx))
            .sum()
    }

    /// Trim every shard to at most `per_shard` realms (only evictable ones
    /// go), least recently used first. `evict_down_to(0)` empties the store
    /// of everything evictable. An explicit call, like
    /// [`remove`](Self::remove): it works with lazy loading off too.
    pub fn evict_down_to(&self, per_shard: usize) -> usize {
        (0..self.shards.len())
            .map(|idx| self.evict_shard(idx, EvictionReason::Explicit, per_shard, None, true))
            .sum()
    }

    /// One periodic pass over a shard.
    fn sweep_shard(&self, idx: usize) -> usize {
        let shard = &self.shards[idx];
        // Reads after this pass must be newer than reads before it.
        shard.clock.fetch_add(1, Ordering::Relaxed);
        let byte_limit = self.config.memory_budget_bytes;
        self.evict_shard(
            idx,
            EvictionReason::Sweep,
            self.config.max_per_shard,
            byte_limit,
            true,
        )
    }

    /// Evict the least recently used evictable realms of shard `idx` until it
    /// holds at most `target_len` realms and (with `byte_limit`) the store
    /// holds at most that many state bytes. `wait` says whether to wait for
    /// another evictor of this shard or skip.
    pub(super) fn evict_shard(
        &self,
        idx: usize,
        reason: EvictionReason,
        target_len: usize,
        byte_limit: Option<u64>,
        wait: bool,
    ) -> usize {
        let shard = &self.shards[idx];
        let over = || {
            shard.len.load(Ordering::Relaxed) > target_len
                || byte_limit.is_some_and(|limit| self.total_bytes.load(Ordering::Relaxed) > limit)
        };
        if !over() {
            return 0;
        }
        let span = tracing::debug_span!(
            "store.evict",
            shard = idx,
            ?reason,
            evicted = tracing::field::Empty
        );
        let _entered = span.enter();
        let mut queue = if wait {
            shard.queue.lock()
        } else {
            match shard.queue.try_lock() {
                Some(queue) => queue,
                None => return 0,
            }
        };
        let slack = self.config.max_per_shard / 16 + 1;
        let mut evicted = Vec::new();
        let mut refills = 0;
        while over() {
            let Some((key, stamp)) = queue.pop_lru() else {
                // Two scans per call at most: the second one only matters
                // when the first one's candidates were all touched meanwhile.
                if refills == 2 {
                    break;
                }
                refills += 1;
                let excess = shard.len.load(Ordering::Relaxed).saturating_sub(target_len);
                let want = (excess + slack).min(self.config.lru_capacity_per_shard);
                self.refill(shard, &mut queue, want);
                if queue.is_empty() {
                    break;
                }
                continue;
            };
            let removed = shard.map.remove_if(&*key, |key, slot| {
                let cold = slot.stamp.load(Ordering::Relaxed) == stamp && slot.value.is_evictable();
                if cold {
                    shard.mark_removed(key);
                }
                cold
            });
            if let Some((key, slot)) = removed {
                self.account_remove(shard, slot.value.size_bytes() as u64);
                evicted.push((key, slot.value));
            }
        }
        // Keep a few candidates for the next insert-time shed; release the
        // memory of a large refill.
        if queue.len() > slack {
            let mut kept = LruCache::unbounded();
            while kept.len() < slack
                && let Some((key, stamp)) = queue.pop_lru()
            {
                kept.push(key, stamp);
            }
            *queue = kept;
        }
        shard.queue_len.store(queue.len(), Ordering::Relaxed);
        drop(queue);

        let count = evicted.len();
        span.record("evicted", count);
        if count > 0 {
            ShardCounters::add(&shard.counters.0.evictions, count as u64);
            shard
                .counters
                .0
                .last_eviction_ms
                .store(now_ms(), Ordering::Relaxed);
            tracing::debug!(
                shard = idx,
                ?reason,
                count,
                remaining = shard.len.load(Ordering::Relaxed),
                "evicted"
            );
        }
        if let Some(hook) = &self.hook {
            for (realm_id, value) in evicted {
                hook(Evicted {
                    realm_id,
                    shard: idx,
                    value,
                    reason,
                });
            }
        }
        count
    }

    /// Replace the candidate queue with the `want` least recently used
    /// evictable realms of the shard, oldest first.
    fn refill(&self, shard: &Shard<V>, queue: &mut LruCache<Arc<str>, u64>, want: usize) {
        let mut candidates: Vec<(u64, Arc<str>)> = shard
            .map
            .iter()
            .filter(|entry| entry.value().value.is_evictable())
            .map(|entry| {
                (
                    entry.value().stamp.load(Ordering::Relaxed),
                    Arc::clone(entry.key()),
                )
            })
            .collect();
        if candidates.len() > want {
            candidates.select_nth_unstable_by_key(want, |c| c.0);
            candidates.truncate(want);
        }
        candidates.sort_unstable_by_key(|c| c.0);
        queue.clear();
        for (stamp, key) in candidates {
            queue.push(key, stamp);
        }
    }

    /// Start one tokio task per shard that sweeps it every
    /// `eviction_interval_secs` (staggered so that shards do not all sweep at
    /// the same instant). The tasks stop when the returned guard is shut down
    /// or dropped. With lazy loading off no task is started (nothing is
    /// evicted) and the guard is empty.
    pub fn spawn_eviction_tasks(self: Arc<Self>) -> Result<EvictionTasks, StoreError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| StoreError::NoRuntime)?;
        let (stop, stopped) = watch::channel(false);
        if !self.evicts() {
            tracing::info!(
                shards = self.shards.len(),
                "periodic eviction off: lazy loading is off, so every realm stays in memory"
            );
            return Ok(EvictionTasks {
                stop,
                handles: Vec::new(),
            });
        }
        let interval = self.config.eviction_interval();
        let n = self.shards.len();
        let handles = (0..n)
            .map(|idx| {
                let store = Arc::clone(&self);
                let mut stopped = stopped.clone();
                let offset = interval.mul_f64(idx as f64 / n as f64);
                runtime.spawn(async move {
                    let start = tokio::time::Instant::now() + interval + offset;
                    let mut ticker = tokio::time::interval_at(start, interval);
                    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    loop {
                        tokio::select! {
                            biased;
                            _ = stopped.changed() => break,
                            _ = ticker.tick() => {
                                store.sweep_shard(idx);
                            }
                        }
                    }
                })
            })
            .collect();
        Ok(EvictionTasks { stop, handles })
    }
}

/// The background eviction tasks; see [`ShardedStore::spawn_eviction_tasks`].
#[derive(Debug)]
pub struct EvictionTasks {
    stop: watch::Sender<bool>,
    handles: Vec<JoinHandle<()>>,
}

impl EvictionTasks {
    /// Number of tasks (one per shard; none with lazy loading off).
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    /// Whether there are no tasks.
    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// Stop all tasks and wait until they have finished (a sweep in progress
    /// completes first).
    pub async fn shutdown(mut self) {
        self.stop.send_replace(true);
        for handle in std::mem::take(&mut self.handles) {
            if let Err(error) = handle.await {
                tracing::warn!(%error, "eviction task ended abnormally");
            }
        }
    }
}

impl Drop for EvictionTasks {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}
