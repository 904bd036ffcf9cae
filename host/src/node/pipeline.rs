//! Pipelined appends: the speculative head of each realm with events in
//! flight.
//!
//! Without pipelining a realm takes one append per group commit: each event
//! waits for the previous one to be durable before it is applied. Here, while
//! event *n* of a realm waits for its commit, event *n + 1* is applied to the
//! state *n* left (the realm's **speculative tip**) and queued behind it; the
//! storage committer takes requests in order, so *n + 1* joins the same group
//! commit or the next one.
//!
//! Invariants (the append path in `append.rs` relies on them):
//! - **Readers see only durable states.** A tip lives here, never in the
//!   store; a state is published to the store only after its event is
//!   durable, and never over a newer one (`published` below), so the store's
//!   state of a realm only moves forward.
//! - **Acknowledged in seq order.** Storage commits one realm's requests in
//!   the order they were enqueued (under the realm's append lock) and refuses
//!   an event whose predecessor is not stored (`Gap`), so *n + 1* can only be
//!   durable if *n* is.
//! - **A failed commit fails its successors.** When an event of a flight
//!   fails, the flight is marked failed: its queued successors fail in
//!   storage (a gap, or the same failed batch) and are answered with
//!   [`NodeError::PipelineAborted`]; no new event extends the flight. The
//!   next append waits until every event of the flight has settled, then
//!   starts again from the realm's last durable state in the store.
//! - A flight ends (its entry is removed) only once every one of its events
//!   has settled, after their states were published: whoever starts the next
//!   flight from the store sees every durable event.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;
use rustc_hash::FxBuildHasher;
use tokio::sync::Notify;

use super::state::RealmState;
use crate::realm::RealmId;

/// What an append builds on.
pub(super) enum Base {
    /// No event of the realm is in flight: its state in the store (or in
    /// storage) is current.
    Durable,
    /// The speculative tip of the realm's flight.
    Tip(Arc<RealmState>),
    /// The realm's flight failed, or was built by another plugin version
    /// than the one now active: wait until it has settled, then look again.
    Drain(Arc<Notify>),
}

/// The events of one realm in flight.
struct Flight {
    /// Unique per flight, so a settling event never touches a later flight.
    id: u64,
    /// The state after the last event enqueued.
    tip: Arc<RealmState>,
    /// Events enqueued and not settled yet.
    in_flight: u32,
    /// Seq of the newest state published to the store by this flight.
    published: u64,
    /// Seq of the first event of this flight that failed.
    failed_at: Option<u64>,
    /// Idempotency keys of the flight's events: a retry with one of them
    /// waits for the flight to settle, then finds the key in storage (or
    /// not, if its event failed).
    keys: Vec<String>,
    /// Woken when the flight ends.
    drained: Arc<Notify>,
}

/// The speculative tips of every realm with events in flight.
#[derive(Default)]
pub(super) struct Pipeline {
    flights: DashMap<RealmId, Flight, FxBuildHasher>,
    next_id: AtomicU64,
    /// Appends answered `PipelineAborted` (counted by the append path, which
    /// also learns of aborts from storage's gap check).
    pub(super) aborted: AtomicU64,
    /// Appends that found a flight in progress and were applied to its tip.
    pub(super) pipelined: AtomicU64,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("realms_in_flight", &self.flights.len())
            .finish_non_exhaustive()
    }
}

impl Pipeline {
    /// Realms with events in flight.
    pub(super) fn realms_in_flight(&self) -> usize {
        self.flights.len()
    }

    /// What the next append to `realm` builds on. Call with the realm's
    /// append lock held. `version_ok` tells whether a tip's plugin version
    /// is the active one (a tip built by another version cannot be extended:
    /// the rebuild reads the stored log, which does not hold the tip yet).
    /// An append whose idempotency `key` is in flight waits for the flight.
    pub(super) fn base(
        &self,
        realm: &RealmId,
        key: Option<&str>,
        version_ok: impl Fn(&RealmState) -> bool,
    ) -> Base {
        let Some(f) = self.flights.get(realm) else {
            return Base::Durable;
        };
        let key_in_flight = key.is_some_and(|k| f.keys.iter().any(|x| x == k));
        if f.failed_at.is_none() && !key_in_flight && version_ok(&f.tip) {
            self.pipelined.fetch_add(1, Ordering::Relaxed);
            return Base::Tip(Arc::clone(&f.tip));
        }
        Base::Drain(Arc::clone(&f.drained))
    }

    /// Wait until the flight behind `drained` has ended. Returns at once if
    /// it already has (the realm's entry is gone or belongs to a later flight).
    pub(super) async fn drain(&self, realm: &RealmId, drained: Arc<Notify>) {
        let notified = drained.notified();
        tokio::pin!(notified);
        {
            // Registered while the entry is read-locked: the flight cannot
            // end (and notify) between the check and the registration.
            let f = self.flights.get(realm);
            let same = f
                .as_ref()
                .is_some_and(|f| Arc::ptr_eq(&f.drained, &drained));
            if !same {
                return;
            }
            notified.as_mut().enable();
        }
        notified.await;
    }

    /// An event was enqueued, leaving `tip`. Call with the realm's append
    /// lock held. Returns the flight the event belongs to: the realm's
    /// current one, or a new one.
    ///
    /// The flight an event was applied on may have ended while it was
    /// applied (its last event settled): the event then starts a new flight
    /// on that flight's last state, which is durable, or failed and then
    /// storage refuses the event (a gap) like any successor of a failure.
    pub(super) fn enqueued(&self, realm: &RealmId, tip: Arc<RealmState>, key: Option<&str>) -> u64 {
        let mut entry = self.flights.entry(realm.clone()).or_insert_with(|| Flight {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            tip: Arc::clone(&tip),
            in_flight: 0,
            published: 0,
            failed_at: None,
            keys: Vec::new(),
            drained: Arc::new(Notify::new()),
        });
        if let Some(k) = key {
            entry.keys.push(k.to_owned());
        }
        entry.tip = tip;
        entry.in_flight += 1;
        entry.id
    }

    /// An event of `flight` is durable: publish its state with `publish`
    /// unless a newer state of the flight is already published. Ends the
    /// flight if this was its last event in flight.
    pub(super) fn committed(
        &self,
        realm: &RealmId,
        flight: u64,
        state: &Arc<RealmState>,
        publish: impl FnOnce(Arc<RealmState>),
    ) {
        let mut ended = None;
        if let Some(mut f) = self.flights.get_mut(realm).filter(|f| f.id == flight) {
            if state.seq() > f.published {
                f.published = state.seq();
                publish(Arc::clone(state));
            }
            f.in_flight -= 1;
            if f.in_flight == 0 {
                ended = Some(f.id);
            }
        } else {
            // Not reachable while the flight has this event in flight; kept
            // total so a bookkeeping slip costs a publish, not a lost state.
            publish(Arc::clone(state));
        }
        if let Some(id) = ended {
            self.end(realm, id);
        }
    }

    /// An event of `flight` with `seq` failed (not stored). Marks the flight
    /// failed; returns the seq of the flight's first failure if an earlier
    /// event failed (this one was aborted because of it).
    pub(super) fn failed(&self, realm: &RealmId, flight: u64, seq: u64) -> Option<u64> {
        let mut ended = None;
        let mut earlier = None;
        if let Some(mut f) = self.flights.get_mut(realm).filter(|f| f.id == flight) {
            match f.failed_at {
                Some(first) if first < seq => earlier = Some(first),
                _ => f.failed_at = Some(seq),
            }
            f.in_flight -= 1;
            if f.in_flight == 0 {
                ended = Some(f.id);
            }
        }
        if let Some(id) = ended {
            self.end(realm, id);
        }
        earlier
    }

    fn end(&self, realm: &RealmId, id: u64) {
        if let Some((_, f)) = self
            .flights
            .remove_if(realm, |_, f| f.id == id && f.in_flight == 0)
        {
            f.drained.notify_waiters();
        }
    }
}
