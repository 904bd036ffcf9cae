//! The busiest realms, approximately, in bounded memory.
//!
//! The page lists the realms with the most recent appends. Counting every
//! realm exactly would cost memory per realm (millions of them) and a scan to
//! rank them; instead each of [`STRIPES`] stripes keeps at most
//! [`PER_STRIPE`] counters and, when full, gives the least counted slot to
//! the newcomer, which inherits that count (the *space-saving* algorithm): a
//! realm that appends often is never pushed out, and a count overestimates by
//! at most the inherited part, reported as `error`.
//!
//! Counts halve every [`HALF_LIFE`], so the list follows what is busy now
//! rather than since start. A realm's stripe is its shard's, so appends to
//! different shards rarely meet on one lock, and the work per append is one
//! short lock and a scan of at most [`PER_STRIPE`] hashes.

use std::hash::BuildHasher as _;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;

/// Independent stripes (by shard).
pub(crate) const STRIPES: usize = 16;
/// Counters per stripe.
pub(crate) const PER_STRIPE: usize = 32;
/// Counts halve after this long.
pub(crate) const HALF_LIFE: Duration = Duration::from_secs(30);

/// One realm in the ranking.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopRealm {
    /// The realm.
    pub realm_id: String,
    /// Its shard.
    pub shard: usize,
    /// Recent appends (decayed; may overestimate by up to `error`).
    pub appends: u64,
    /// How much of `appends` may belong to realms this slot held before.
    pub error: u64,
}

#[derive(Debug)]
struct Slot {
    hash: u64,
    realm: Box<str>,
    shard: usize,
    count: u64,
    error: u64,
}

#[derive(Debug, Default)]
struct Stripe {
    slots: Vec<Slot>,
    /// Half-lives since the tracker started, as of the last decay.
    epoch: u64,
}

impl Stripe {
    /// Halve the counts once per half-life elapsed since the last decay and
    /// forget the slots that reach zero.
    fn decay(&mut self, epoch: u64) {
        let halvings = epoch.saturating_sub(self.epoch);
        if halvings == 0 {
            return;
        }
        self.epoch = epoch;
        let shift = u32::try_from(halvings.min(63)).unwrap_or(63);
        for s in &mut self.slots {
            s.count >>= shift;
            s.error >>= shift;
        }
        self.slots.retain(|s| s.count > 0);
    }
}

/// The tracker: record appends, read the top K.
#[derive(Debug)]
pub struct TopRealms {
    stripes: Box<[Mutex<Stripe>]>,
    started: Instant,
    half_life: Duration,
}

impl Default for TopRealms {
    fn default() -> Self {
        Self::with_half_life(HALF_LIFE)
    }
}

impl TopRealms {
    /// A tracker whose counts halve every `half_life` (tests use short ones).
    pub(crate) fn with_half_life(half_life: Duration) -> Self {
        Self {
            stripes: (0..STRIPES)
                .map(|_| Mutex::new(Stripe::default()))
                .collect(),
            started: Instant::now(),
            half_life: half_life.max(Duration::from_millis(1)),
        }
    }

    fn epoch(&self) -> u64 {
        let elapsed = self.started.elapsed().as_nanos();
        u64::try_from(elapsed / self.half_life.as_nanos()).unwrap_or(u64::MAX)
    }

    /// Count one append to `realm` of `shard`.
    pub fn record(&self, realm: &str, shard: usize) {
        let hash = rustc_hash::FxBuildHasher.hash_one(realm);
        let epoch = self.epoch();
        let mut stripe = self.stripes[shard % STRIPES].lock();
        stripe.decay(epoch);
        if let Some(s) = stripe
            .slots
            .iter_mut()
            .find(|s| s.hash == hash && &*s.realm == realm)
        {
            s.count = s.count.saturating_add(1);
            return;
        }
        if stripe.slots.len() < PER_STRIPE {
            stripe.slots.push(Slot {
                hash,
                realm: realm.into(),
                shard,
                count: 1,
                error: 0,
            });
            return;
        }
        if let Some(min) = stripe.slots.iter_mut().min_by_key(|s| s.count) {
            let inherited = min.count;
            *min = Slot {
                hash,
                realm: realm.into(),
                shard,
                count: inherited.saturating_add(1),
                error: inherited,
            };
        }
    }

    /// The `k` realms with the highest counts, highest first (ties by id).
    /// Costs `STRIPES × PER_STRIPE` at most, whatever the number of realms.
    pub fn top(&self, k: usize) -> Vec<TopRealm> {
        let epoch = self.epoch();
        let mut all: Vec<TopRealm> = Vec::with_capacity(STRIPES * PER_STRIPE);
        for stripe in &*self.stripes {
            let mut stripe = stripe.lock();
            stripe.decay(epoch);
            all.extend(stripe.slots.iter().map(|s| TopRealm {
                realm_id: s.realm.to_string(),
                shard: s.shard,
                appends: s.count,
                error: s.error,
            }));
        }
        all.sort_by(|a, b| {
            b.appends
                .cmp(&a.appends)
                .then_with(|| a.realm_id.cmp(&b.realm_id))
        });
        all.truncate(k);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_the_busiest_realms() {
        let t = TopRealms::default();
        for i in 0..10 {
            for _ in 0..=i {
                t.record(&format!("r{i}"), i);
            }
        }
        let top = t.top(3);
        let ids: Vec<_> = top.iter().map(|r| r.realm_id.as_str()).collect();
        assert_eq!(ids, ["r9", "r8", "r7"]);
        assert_eq!((top[0].appends, top[0].error, top[0].shard), (10, 0, 9));
    }

    #[test]
    fn memory_is_bounded_and_a_heavy_realm_stays() {
        let t = TopRealms::default();
        for i in 0..100_000u64 {
            t.record("hot", 3);
            t.record(&format!("cold-{i}"), 3);
        }
        let stripe = t.stripes[3].lock();
        assert!(stripe.slots.len() <= PER_STRIPE);
        drop(stripe);
        let top = t.top(1);
        assert_eq!(top[0].realm_id, "hot");
        assert!(top[0].appends >= 100_000);
    }

    #[test]
    fn counts_decay() {
        let t = TopRealms::with_half_life(Duration::from_millis(20));
        for _ in 0..8 {
            t.record("a", 0);
        }
        std::thread::sleep(Duration::from_millis(200));
        assert!(t.top(5).is_empty(), "eight appends halve to nothing");
    }
}
