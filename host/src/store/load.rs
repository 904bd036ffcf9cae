//! Loading a realm on a miss: one load per realm at a time, shared by every
//! caller that waits for it, bounded by the load limits and a timeout.

use super::*;

impl<V: StoreValue> ShardedStore<V> {
    /// Return the realm from memory or load it with `loader`.
    ///
    /// `loader` returns `Ok(Some(value))` for a known realm, `Ok(None)` for an
    /// unknown one ([`LoadError::NotFound`]) or an error
    /// ([`LoadError::Loader`]). Concurrent callers for the same cold realm
    /// share one load and all receive its outcome. The loader may be called
    /// again if the realm was removed while it ran. Needs a tokio runtime
    /// with the time driver (for the timeout).
    pub async fn get_or_load<F, Fut>(
        &self,
        realm_id: &str,
        mut loader: F,
    ) -> Result<Arc<V>, LoadError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Option<V>, BoxError>>,
    {
        let (idx, shard) = self.shard(realm_id);
        let mut count = true;
        loop {
            if let Some(value) = self.lookup(idx, realm_id, count) {
                return Ok(value);
            }
            count = false;
            if !self.config.lazy_loading_enabled {
                return Err(LoadError::LoadingDisabled(Arc::from(realm_id)));
            }
            // Join a load in flight, or become the one who loads.
            let joined = {
                let mut flights = shard.flights.lock();
                match flights.get(realm_id) {
                    Some(flight) => Ok(flight.rx.clone()),
                    None => {
                        let key: Arc<str> = Arc::from(realm_id);
                        let (tx, rx) = watch::channel(None);
                        let flight = Arc::new(Flight {
                            stale: AtomicBool::new(false),
                            rx,
                        });
                        flights.insert(Arc::clone(&key), Arc::clone(&flight));
                        shard.inflight.fetch_add(1, Ordering::SeqCst);
                        Err(Leader {
                            shard,
                            key,
                            flight,
                            tx: Some(tx),
                        })
                    }
                }
            };
            match joined {
                Ok(mut rx) => match rx.wait_for(Option::is_some).await {
                    Ok(outcome) => {
                        if let Some(outcome) = outcome.as_ref() {
                            return outcome.clone();
                        }
                    }
                    // The leader was cancelled: try again (one of us leads).
                    Err(_) => continue,
                },
                Err(leader) => {
                    let span = tracing::debug_span!("store.load", realm = realm_id, shard = idx);
                    return self.lead_load(leader, &mut loader).instrument(span).await;
                }
            }
        }
    }

    async fn lead_load<F, Fut>(
        &self,
        mut leader: Leader<'_, V>,
        loader: &mut F,
    ) -> Result<Arc<V>, LoadError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Option<V>, BoxError>>,
    {
        let shard = leader.shard;
        let key = Arc::clone(&leader.key);
        // Registered first, looked up second: a value inserted before the
        // registration is seen here, a removal after it marks the flight.
        if let Some(value) = self.lookup(self.shard_index(&key), &key, false) {
            leader.finish(Ok(Arc::clone(&value)));
            return Ok(value);
        }
        let timeout = self.config.load_timeout();
        let deadline = tokio::time::Instant::now() + timeout;
        let mut attempts = 0;
        let outcome = loop {
            attempts += 1;
            if attempts > MAX_LOAD_ATTEMPTS {
                break Err(LoadError::Contended {
                    realm: Arc::clone(&key),
                    attempts: MAX_LOAD_ATTEMPTS,
                });
            }
            let loaded = tokio::time::timeout_at(deadline, async {
                let _permit = self.load_slots.acquire().await;
                ShardCounters::add(&shard.counters.0.loads, 1);
                loader().await
            })
            .await;
            let value = match loaded {
                Err(_) => {
                    break Err(LoadError::Timeout {
                        realm: Arc::clone(&key),
                        timeout,
                    });
                }
                Ok(Err(source)) => {
                    break Err(LoadError::Loader {
                        realm: Arc::clone(&key),
                        source: Arc::from(source),
                    });
                }
                Ok(Ok(None)) => break Err(LoadError::NotFound(Arc::clone(&key))),
                Ok(Ok(Some(value))) => Arc::new(value),
            };
            match self.insert_loaded(&leader, value) {
                Some(value) => break Ok(value),
                None => {
                    tracing::debug!(
                        realm = &*key,
                        attempts,
                        "realm removed during load; loading again"
                    );
                }
            }
        };
        match &outcome {
            Ok(_) => tracing::debug!(realm = &*key, attempts, "realm loaded"),
            Err(error) => tracing::debug!(realm = &*key, %error, "realm load failed"),
        }
        leader.finish(outcome.clone());
        if outcome.is_ok() {
            self.after_insert(self.shard_index(&key));
        }
        outcome
    }

    /// Insert a loaded value unless the realm was removed during the load
    /// (`None`: load again). A value already in memory (an `upsert` during
    /// the load) wins over the loaded one.
    fn insert_loaded(&self, leader: &Leader<'_, V>, value: Arc<V>) -> Option<Arc<V>> {
        let shard = leader.shard;
        let size = value.size_bytes() as u64;
        // Map write lock first, flights lock second: the order removals use.
        match shard.map.entry(Arc::clone(&leader.key)) {
            Entry::Occupied(occupied) => {
                let slot = occupied.get();
                slot.touch(shard.clock.load(Ordering::Relaxed));
                Some(Arc::clone(&slot.value))
            }
            Entry::Vacant(vacant) => {
                let _flights = shard.flights.lock();
                if leader.flight.stale.swap(false, Ordering::SeqCst) {
                    return None;
                }
                let stamp = shard.clock.fetch_add(1, Ordering::Relaxed);
                vacant.insert(Slot::new(Arc::clone(&value), stamp));
                self.account_insert(shard, size);
                Some(value)
            }
        }
    }
}

/// The caller that runs a load. Dropping it without [`Leader::finish`]
/// (the caller was cancelled) wakes the followers, who then retry.
struct Leader<'a, V> {
    shard: &'a Shard<V>,
    key: Arc<str>,
    flight: Arc<Flight<V>>,
    tx: Option<watch::Sender<Outcome<V>>>,
}

impl<V> Leader<'_, V> {
    fn deregister(&self) {
        let mut flights = self.shard.flights.lock();
        if flights
            .get(&*self.key)
            .is_some_and(|f| Arc::ptr_eq(f, &self.flight))
        {
            flights.remove(&*self.key);
            self.shard.inflight.fetch_sub(1, Ordering::SeqCst);
        }
    }

    fn finish(&mut self, outcome: Result<Arc<V>, LoadError>) {
        self.deregister();
        if let Some(tx) = self.tx.take() {
            tx.send_replace(Some(outcome));
        }
    }
}

impl<V> Drop for Leader<'_, V> {
    fn drop(&mut self) {
        if self.tx.is_some() {
            self.deregister();
        }
    }
}
