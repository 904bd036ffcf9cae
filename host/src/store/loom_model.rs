//! Loom model of the store's hand-written synchronization between a load in
//! flight and a removal of the same realm (`get_or_load` vs `remove` /
//! eviction), reduced to one realm.
//!
//! The map is a `RwLock<Option<seq>>`, the flight registry a `Mutex` with a
//! `stale` flag plus the `inflight` counter that removals read first. The
//! steps and lock order are those of `ShardedStore`: the leader registers its
//! flight, then looks the realm up again, loads, and inserts under the map
//! write lock *then* the flights lock unless marked stale; a removal holds the
//! map write lock, reads `inflight`, and marks a registered flight stale.
//!
//! Property: once both threads are done, the realm in memory is never older
//! than the durable state.
//!
//! The model uses loom's primitives directly (no `--cfg loom` switch), so it
//! runs with the ordinary test suite: `cargo test -p realmhost --lib
//! store::loom_model`. A second test removes the stale check and expects loom
//! to find the interleaving that resurrects an old state, which proves the
//! model is able to fail.

use loom::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use loom::sync::{Arc, Mutex, RwLock};
use loom::thread;

struct Model {
    map: RwLock<Option<u64>>,
    durable: AtomicU64,
    flights: Mutex<Option<Arc<AtomicBool>>>,
    inflight: AtomicUsize,
}

impl Model {
    fn mark_removed(&self) {
        if self.inflight.load(Ordering::SeqCst) > 0
            && let Some(stale) = self.flights.lock().expect("lock").as_ref()
        {
            stale.store(true, Ordering::SeqCst);
        }
    }

    /// The leader's side. `check_stale: false` is the broken variant without
    /// the stale check, kept to prove the model can catch the bug.
    fn load(&self, check_stale: bool) {
        let stale = Arc::new(AtomicBool::new(false));
        *self.flights.lock().expect("lock") = Some(Arc::clone(&stale));
        self.inflight.fetch_add(1, Ordering::SeqCst);
        if self.map.read().expect("lock").is_none() {
            for _ in 0..2 {
                let loaded = self.durable.load(Ordering::SeqCst);
                let mut map = self.map.write().expect("lock");
                if map.is_some() {
                    break;
                }
                let _flights = self.flights.lock().expect("lock");
                if check_stale && stale.swap(false, Ordering::SeqCst) {
                    continue;
                }
                *map = Some(loaded);
                break;
            }
        }
        *self.flights.lock().expect("lock") = None;
        self.inflight.fetch_sub(1, Ordering::SeqCst);
    }

    /// The node's append: durable first, then into memory; then eviction.
    fn append_then_evict(&self) {
        self.durable.store(2, Ordering::SeqCst);
        *self.map.write().expect("lock") = Some(2);
        let mut map = self.map.write().expect("lock");
        self.mark_removed();
        *map = None;
    }
}

fn run(check_stale: bool) {
    loom::model(move || {
        let m = Arc::new(Model {
            map: RwLock::new(None),
            durable: AtomicU64::new(1),
            flights: Mutex::new(None),
            inflight: AtomicUsize::new(0),
        });
        let loader = {
            let m = Arc::clone(&m);
            thread::spawn(move || m.load(check_stale))
        };
        m.append_then_evict();
        loader.join().expect("join");
        let in_memory = *m.map.read().expect("lock");
        assert!(
            in_memory.is_none() || in_memory == Some(2),
            "stale state {in_memory:?} in memory"
        );
    });
}

#[test]
fn a_load_never_resurrects_a_removed_older_state() {
    run(true);
}

#[test]
#[should_panic(expected = "stale state")]
fn without_the_stale_check_loom_finds_a_resurrection() {
    run(false);
}
