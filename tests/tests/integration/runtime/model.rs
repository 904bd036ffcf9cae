//! Property: keyed state through the real sandbox equals a BTreeMap model.

#[allow(unused_imports)]
use super::*;

/// One call of the hostile fixture, by kind.
#[derive(Debug, Clone)]
pub(super) enum Hostile {
    /// `ok`: read `n`, write `n + 1` (`invalid` if `n` is not 8 bytes).
    Ok,
    /// `garbage`: `n` becomes 3 bytes.
    Garbage,
    /// `grow`: `n` keys `g/seq/i` (the same seq overwrites).
    Grow { seq: u64, n: u32 },
    /// `many`: `n` keys `m/seq/i` (past the operation limit when large).
    Many { seq: u64, n: u32 },
    /// `scan`: pages through every entry, writes nothing.
    Scan,
    /// `reject`: a rejection, no writes.
    Reject,
    /// 10 000 writes and `n = u64::MAX`, then a rejection.
    RejectAfterWrites { seq: u64 },
    /// 10 000 writes and `n = u64::MAX`, then a panic.
    PanicAfterWrites { seq: u64 },
    /// An 8 MiB value: past the value limit.
    Huge,
    /// A 1 MiB key: past the key limit.
    HugeKey,
    /// A panic before any write.
    Panic,
    /// `cached` (`cached-reject` with `reject`): checks run through the
    /// SDK's write-back cache, then `n` keys `x/seq/i`.
    Cached { seq: u64, n: u32, reject: bool },
}

impl Hostile {
    fn event(&self, seq: u64) -> EventRecord {
        let (kind, payload, seq) = match self {
            Self::Ok => ("ok", String::new(), seq),
            Self::Garbage => ("garbage", String::new(), seq),
            Self::Grow { seq, n } => ("grow", n.to_string(), *seq),
            Self::Many { seq, n } => ("many", n.to_string(), *seq),
            Self::Scan => ("scan", String::new(), seq),
            Self::Reject => ("reject", String::new(), seq),
            Self::RejectAfterWrites { seq } => ("reject-after-writes", String::new(), *seq),
            Self::PanicAfterWrites { seq } => ("panic-after-writes", String::new(), *seq),
            Self::Huge => ("huge", String::new(), seq),
            Self::HugeKey => ("huge-key", String::new(), seq),
            Self::Panic => ("panic", String::new(), seq),
            Self::Cached { seq, n, reject } => {
                let kind = if *reject { "cached-reject" } else { "cached" };
                (kind, n.to_string(), *seq)
            }
        };
        event(seq, kind, payload.into_bytes())
    }
}

/// A membership change: the only example logic that deletes entries (the
/// hostile fixture has no kind that deletes).
#[derive(Debug, Clone)]
pub(super) enum Member {
    Join(u8),
    Leave(u8),
    Ban(u8),
    Unban(u8),
}

impl Member {
    fn event(&self, seq: u64) -> EventRecord {
        use realmhost_plugin_membership::Change;
        let c = match self {
            Self::Join(i) => Change::Join {
                member: format!("m{i}"),
            },
            Self::Leave(i) => Change::Leave {
                member: format!("m{i}"),
            },
            Self::Ban(i) => Change::Ban {
                realm: format!("r{i}"),
            },
            Self::Unban(i) => Change::Unban {
                realm: format!("r{i}"),
            },
        };
        event(seq, "change", encode_payload(&c))
    }
}

#[derive(Debug, Clone)]
pub(super) enum Step {
    Hostile(Hostile),
    /// `apply-batch` of hostile events: all or nothing.
    Batch(Vec<Hostile>),
    /// A membership event on the same realm.
    Member(Member),
    /// Queries `len`, `count` and the counter.
    Read,
    /// A query that tries to write.
    QueryWrite,
}

pub(super) type Violation = (StateLimit, u64, u64);

/// Why a modelled call keeps nothing.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Stop {
    Limit(Violation),
    Rejected(String),
    Invalid,
    Panic,
}

impl From<Violation> for Stop {
    fn from(v: Violation) -> Self {
        Self::Limit(v)
    }
}

/// What a call must do.
#[derive(Clone, PartialEq)]
pub(super) enum Expected {
    /// Succeed with exactly these changes (`None`: do not compare the list).
    Applied(Changes, bool),
    Rejected(String),
    Invalid,
    BatchFailed(u32, Option<String>),
    Limit(Violation),
    Panic,
}

/// Short enough to read in a failure report: a call may write 10 000 keys.
impl std::fmt::Debug for Expected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Applied(changes, _) => {
                let show = |k: &[u8], v: &Option<Vec<u8>>| {
                    format!(
                        "{}={}",
                        k.escape_ascii(),
                        v.as_ref()
                            .map_or("<deleted>".to_owned(), |v| v.escape_ascii().to_string())
                    )
                };
                write!(f, "Applied({} changes", changes.len())?;
                for (k, v) in changes.iter().take(3) {
                    write!(f, ", {}", show(k, v))?;
                }
                if let Some((k, v)) = changes.iter().next_back().filter(|_| changes.len() > 3) {
                    write!(f, ", …, {}", show(k, v))?;
                }
                f.write_str(")")
            }
            Self::Rejected(c) => write!(f, "Rejected({c})"),
            Self::Invalid => f.write_str("Invalid"),
            Self::BatchFailed(i, c) => write!(f, "BatchFailed(index {i}, {c:?})"),
            Self::Limit((l, actual, max)) => write!(f, "Limit({l}: {actual} > {max})"),
            Self::Panic => f.write_str("Panic"),
        }
    }
}

/// The model of one call's view of the state, with the limits the host
/// enforces (in the host's order: key, value, operations, entries, bytes).
pub(super) struct Sim<'a> {
    base: &'a Entries,
    limits: &'a StateLimits,
    writes: Changes,
    entries: u64,
    bytes: u64,
    ops: u64,
    max_ops: u64,
}

impl<'a> Sim<'a> {
    fn new(base: &'a Entries, limits: &'a StateLimits, events: u64) -> Self {
        Self {
            base,
            limits,
            writes: Changes::new(),
            entries: base.len() as u64,
            bytes: base.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum(),
            ops: 0,
            max_ops: u64::from(limits.max_ops_per_call) * events,
        }
    }

    fn current(&self, k: &[u8]) -> Option<&Vec<u8>> {
        match self.writes.get(k) {
            Some(w) => w.as_ref(),
            None => self.base.get(k),
        }
    }

    fn key(&self, k: &[u8]) -> Result<(), Violation> {
        let max = self.limits.max_key_bytes;
        if k.len() > max {
            return Err((StateLimit::KeyBytes, k.len() as u64, max as u64));
        }
        Ok(())
    }

    fn op(&mut self) -> Result<(), Violation> {
        self.ops += 1;
        if self.ops > self.max_ops {
            return Err((StateLimit::OpsPerCall, self.ops, self.max_ops));
        }
        Ok(())
    }

    fn contains(&mut self, k: &[u8]) -> Result<bool, Violation> {
        self.key(k)?;
        self.op()?;
        Ok(self.current(k).is_some())
    }

    fn get(&mut self, k: &[u8]) -> Result<Option<Vec<u8>>, Violation> {
        self.key(k)?;
        self.op()?;
        Ok(self.current(k).cloned())
    }

    fn set(&mut self, k: &[u8], v: &[u8]) -> Result<(), Violation> {
        self.key(k)?;
        let max_value = self.limits.max_value_bytes;
        if v.len() > max_value {
            return Err((StateLimit::ValueBytes, v.len() as u64, max_value as u64));
        }
        self.op()?;
        let old = self.current(k).map(Vec::len);
        let entries = self.entries + u64::from(old.is_none());
        let bytes =
            self.bytes - old.map_or(0, |o| (k.len() + o) as u64) + (k.len() + v.len()) as u64;
        if entries > self.limits.max_entries {
            return Err((StateLimit::Entries, entries, self.limits.max_entries));
        }
        if bytes > self.limits.max_total_bytes {
            return Err((StateLimit::TotalBytes, bytes, self.limits.max_total_bytes));
        }
        self.entries = entries;
        self.bytes = bytes;
        self.writes.insert(k.to_vec(), Some(v.to_vec()));
        Ok(())
    }

    fn delete(&mut self, k: &[u8]) -> Result<bool, Violation> {
        self.key(k)?;
        self.op()?;
        let Some(old) = self.current(k).map(Vec::len) else {
            return Ok(false);
        };
        self.entries -= 1;
        self.bytes -= (k.len() + old) as u64;
        if self.base.contains_key(k) {
            self.writes.insert(k.to_vec(), None);
        } else {
            self.writes.remove(k);
        }
        Ok(true)
    }

    fn write_keys(&mut self, prefix: &[u8], seq: u64, n: u32) -> Result<(), Violation> {
        for i in 0..n {
            let (k, v) = grow_entry(prefix, seq, i);
            self.set(&k, &v)?;
        }
        Ok(())
    }

    /// The hostile fixture's logic for one event, on this view.
    fn hostile(&mut self, h: &Hostile) -> Result<(), Stop> {
        match h {
            Hostile::Ok => {
                let n = match self.get(b"n")? {
                    None => 0,
                    Some(b) => u64::from_le_bytes(b.try_into().map_err(|_| Stop::Invalid)?),
                };
                self.set(b"n", &n.wrapping_add(1).to_le_bytes())?;
            }
            Hostile::Garbage => self.set(b"n", &[0xde, 0xad, 0xbe])?,
            Hostile::Grow { seq, n } => self.write_keys(b"g/", *seq, *n)?,
            Hostile::Many { seq, n } => self.write_keys(b"m/", *seq, *n)?,
            // Its page-by-page operations stay far below the limit here.
            Hostile::Scan => {}
            Hostile::Reject => return Err(Stop::Rejected("no".into())),
            Hostile::RejectAfterWrites { seq } => {
                self.write_keys(b"r/", *seq, 10_000)?;
                self.set(b"n", &u64::MAX.to_le_bytes())?;
                return Err(Stop::Rejected("no".into()));
            }
            Hostile::PanicAfterWrites { seq } => {
                self.write_keys(b"p/", *seq, 10_000)?;
                self.set(b"n", &u64::MAX.to_le_bytes())?;
                return Err(Stop::Panic);
            }
            Hostile::Huge => self.set(b"huge", &vec![1u8; 8 << 20])?,
            Hostile::HugeKey => self.set(&vec![b'k'; 1 << 20], b"v")?,
            Hostile::Panic => return Err(Stop::Panic),
            Hostile::Cached { seq, n, reject } => {
                // The host's operations, in the order the cache makes them:
                // len, two contains, the delete of a key it has never seen,
                // one write-batch (key 0, the tombstone of key 1, key 2) before
                // the scan, the scan, len, then the `x/` writes.
                let key = |i: u32| grow_entry(b"c/", *seq, i).0;
                let value = seq.to_le_bytes();
                self.op()?;
                self.contains(&key(0))?;
                self.contains(&key(2))?;
                self.delete(b"c/none")?;
                self.set(&key(0), &value)?;
                self.delete(&key(1))?;
                self.set(&key(2), &value)?;
                self.op()?;
                self.op()?;
                self.write_keys(b"x/", *seq, *n)?;
                if *reject {
                    return Err(Stop::Rejected("no".into()));
                }
            }
        }
        Ok(())
    }
}

pub(super) fn expect_single(r: Result<(), Stop>, sim: Sim<'_>) -> Expected {
    match r {
        Ok(()) => Expected::Applied(sim.writes, true),
        Err(Stop::Limit(v)) => Expected::Limit(v),
        Err(Stop::Rejected(c)) => Expected::Rejected(c),
        Err(Stop::Invalid) => Expected::Invalid,
        Err(Stop::Panic) => Expected::Panic,
    }
}

/// What the model says a step does to `model`.
pub(super) fn expected(step: &Step, model: &Entries, limits: &StateLimits, seq: u64) -> Expected {
    match step {
        Step::Hostile(h) => {
            let mut sim = Sim::new(model, limits, 1);
            let r = sim.hostile(h);
            expect_single(r, sim)
        }
        Step::Batch(hs) => {
            let mut sim = Sim::new(model, limits, hs.len() as u64);
            for (i, h) in hs.iter().enumerate() {
                match sim.hostile(h) {
                    Ok(()) => {}
                    Err(Stop::Rejected(c)) => return Expected::BatchFailed(i as u32, Some(c)),
                    Err(Stop::Invalid) => return Expected::BatchFailed(i as u32, None),
                    Err(Stop::Limit(v)) => return Expected::Limit(v),
                    Err(Stop::Panic) => return Expected::Panic,
                }
            }
            Expected::Applied(sim.writes, true)
        }
        Step::Member(m) => {
            // The native build on a copy gives the entries it writes; the
            // model checks them against the limits.
            let mut native = MemoryState::from(model.clone());
            match entry::apply::<realmhost_plugin_membership::Membership>(
                &mut native,
                &m.event(seq).as_event_ref(),
            ) {
                Err(ApplyError::Rejected(r)) => Expected::Rejected(r.code),
                Err(ApplyError::Invalid(_)) => Expected::Invalid,
                Ok(_effects) => {
                    let mut sim = Sim::new(model, limits, 1);
                    let after = native.as_map();
                    let mut r = Ok(());
                    for k in model.keys().filter(|k| !after.contains_key(*k)) {
                        r = r.and_then(|()| sim.delete(k).map(drop));
                    }
                    for (k, v) in after.iter().filter(|(k, v)| model.get(*k) != Some(*v)) {
                        r = r.and_then(|()| sim.set(k, v));
                    }
                    match r {
                        Ok(()) => Expected::Applied(sim.writes, false),
                        Err(v) => Expected::Limit(v),
                    }
                }
            }
        }
        Step::Read | Step::QueryWrite => unreachable!("queries are checked directly"),
    }
}

pub(super) fn hostile_strategy() -> impl Strategy<Value = Hostile> {
    // Few distinct seqs: grown keys are often overwritten, not only added.
    let seq = 1u64..=6;
    prop_oneof![
        6 => Just(Hostile::Ok),
        1 => Just(Hostile::Garbage),
        5 => (seq.clone(), 0u32..3000).prop_map(|(seq, n)| Hostile::Grow { seq, n }),
        1 => (seq.clone(), 0u32..40).prop_map(|(seq, n)| Hostile::Many { seq, n }),
        1 => (seq.clone(), 12_001u32..12_040).prop_map(|(seq, n)| Hostile::Many { seq, n }),
        1 => Just(Hostile::Scan),
        1 => Just(Hostile::Reject),
        1 => seq.clone().prop_map(|seq| Hostile::RejectAfterWrites { seq }),
        1 => seq.clone().prop_map(|seq| Hostile::PanicAfterWrites { seq }),
        1 => Just(Hostile::Huge),
        1 => Just(Hostile::HugeKey),
        1 => Just(Hostile::Panic),
        2 => (seq.clone(), 0u32..40, any::<bool>())
            .prop_map(|(seq, n, reject)| Hostile::Cached { seq, n, reject }),
        // Distinct keys through the cache still reach the operation limit.
        1 => (seq, 12_001u32..12_040)
            .prop_map(|(seq, n)| Hostile::Cached { seq, n, reject: false }),
    ]
}

pub(super) fn batch_item_strategy() -> impl Strategy<Value = Hostile> {
    prop_oneof![
        4 => Just(Hostile::Ok),
        1 => Just(Hostile::Garbage),
        3 => (1u64..=6, 0u32..800).prop_map(|(seq, n)| Hostile::Grow { seq, n }),
        1 => Just(Hostile::Reject),
        1 => Just(Hostile::Panic),
        1 => (1u64..=6, 0u32..40, any::<bool>())
            .prop_map(|(seq, n, reject)| Hostile::Cached { seq, n, reject }),
    ]
}

pub(super) fn step_strategy() -> impl Strategy<Value = Step> {
    // Two names each, so that leaves and unbans often find what a join or
    // a ban wrote.
    let member = (0u8..2, 0u8..4).prop_map(|(i, op)| {
        Step::Member(match op {
            0 => Member::Join(i),
            1 => Member::Leave(i),
            2 => Member::Ban(i),
            _ => Member::Unban(i),
        })
    });
    prop_oneof![
        12 => hostile_strategy().prop_map(Step::Hostile),
        3 => proptest::collection::vec(batch_item_strategy(), 1..4).prop_map(Step::Batch),
        6 => member,
        1 => Just(Step::Read),
        1 => Just(Step::QueryWrite),
    ]
}

/// Which limits a property-test case runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PropLimits {
    /// Room for the 10 001 writes of the write-then-reject/panic kinds, so
    /// they are rejected or panic (unless the realm already holds many
    /// entries).
    Roomy,
    /// The entry count binds first (every grown entry is 22 bytes).
    Entries,
    /// The byte total binds first (at ~5 400 grown entries).
    Bytes,
}

impl PropLimits {
    const ALL: [Self; 3] = [Self::Roomy, Self::Entries, Self::Bytes];

    fn limits(self) -> StateLimits {
        let (max_entries, max_total_bytes) = match self {
            Self::Roomy => (14_000, 64 << 20),
            Self::Entries => (6_000, 64 << 20),
            Self::Bytes => (1_000_000, 120_000),
        };
        StateLimits {
            max_key_bytes: 256,
            max_value_bytes: 64 << 10,
            max_entries,
            max_total_bytes,
            // Room for 10 001 writes in one call; `many` with more hits it.
            max_ops_per_call: 12_000,
        }
    }

    /// (hostile, membership) under these limits, loaded once per process.
    fn plugins(self) -> &'static (Plugin, Plugin) {
        static PLUGINS: OnceLock<Vec<(Plugin, Plugin)>> = OnceLock::new();
        let all = PLUGINS.get_or_init(|| {
            let cache = tempfile::tempdir().unwrap();
            PropLimits::ALL
                .iter()
                .map(|l| {
                    let rt = PluginRuntime::new(RuntimeConfig {
                        max_memory_bytes: 64 << 20,
                        max_output_bytes: 1 << 20,
                        cache_dir: Some(cache.path().to_owned()),
                        state_limits: l.limits(),
                        ..RuntimeConfig::default()
                    })
                    .unwrap();
                    (
                        rt.load(fixtures::HOSTILE).unwrap(),
                        rt.load(MEMBERSHIP).unwrap(),
                    )
                })
                .collect()
        });
        &all[self as usize]
    }
}

pub(super) const PROP_REALM: &str = "prop-realm";

pub(super) fn prop_cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32)
}

/// Run one step on the host and check it against the model; returns the
/// host's next committed map.
pub(super) fn run_step(
    step: &Step,
    seq: u64,
    map: &StateMap,
    model: &mut Entries,
    limits: PropLimits,
) -> Result<Option<StateMap>, TestCaseError> {
    let (hostile, membership) = limits.plugins();
    let limits = limits.limits();
    let scope = Scope::new(PROP_REALM, map);
    let mut written = None;
    let got: Result<Expected, RuntimeError> = match step {
        Step::Read => {
            let n = model
                .get(&b"n"[..])
                .and_then(|b| <[u8; 8]>::try_from(&b[..]).ok())
                .map_or(0, u64::from_le_bytes);
            let len = model.len().to_string();
            for (q, want) in [("len", &len), ("count", &len), ("", &n.to_string())] {
                prop_assert_eq!(
                    &hostile.query(scope, q).unwrap().unwrap(),
                    want,
                    "query {:?}",
                    q
                );
            }
            return Ok(None);
        }
        Step::QueryWrite => {
            match hostile.query(scope, "write") {
                Err(RuntimeError::StateLimit { error, .. }) => {
                    prop_assert_eq!(error.limit, StateLimit::ReadOnly);
                    prop_assert_eq!(error.realm, PROP_REALM);
                }
                other => prop_assert!(false, "query write: {:?}", other),
            }
            return Ok(None);
        }
        Step::Hostile(h) => hostile.apply(scope, &h.event(seq)).map(|m| match m.value {
            ApplyOutcome::Applied(w, _) => {
                let c = changes_of(&w);
                written = Some(w.map);
                Expected::Applied(c, true)
            }
            ApplyOutcome::Rejected(r) => Expected::Rejected(r.code),
            ApplyOutcome::Invalid(_) => Expected::Invalid,
        }),
        Step::Batch(hs) => {
            let mut enc = BatchEncoder::new();
            let events: Vec<_> = hs
                .iter()
                .enumerate()
                .map(|(i, h)| h.event(seq + i as u64))
                .collect();
            for e in &events {
                enc.push(&e.as_event_ref());
            }
            hostile
                .apply_batch(scope, &enc.finish(), hs.len() as u32)
                .map(|m| match m.value {
                    BatchOutcome::Applied(w) => {
                        let c = changes_of(&w);
                        written = Some(w.map);
                        Expected::Applied(c, true)
                    }
                    BatchOutcome::Failed { index, error } => Expected::BatchFailed(
                        index,
                        match error {
                            EventFailure::Rejected(r) => Some(r.code),
                            EventFailure::Invalid(_) => None,
                        },
                    ),
                })
        }
        Step::Member(m) => membership
            .apply(scope, &m.event(seq))
            .map(|m| match m.value {
                ApplyOutcome::Applied(w, _) => {
                    let c = changes_of(&w);
                    written = Some(w.map);
                    Expected::Applied(c, false)
                }
                ApplyOutcome::Rejected(r) => Expected::Rejected(r.code),
                ApplyOutcome::Invalid(_) => Expected::Invalid,
            }),
    };
    let want = expected(step, model, &limits, seq);
    let got = match got {
        Ok(g) => g,
        Err(RuntimeError::StateLimit { error, .. }) => {
            prop_assert_eq!(&error.realm, PROP_REALM);
            Expected::Limit((error.limit, error.actual, error.max))
        }
        Err(RuntimeError::Trap {
            cause: TrapCause::Panic(m),
            realm,
            ..
        }) => {
            prop_assert_eq!(realm.as_deref(), Some(PROP_REALM));
            prop_assert!(m.contains("deliberate panic"), "{}", m);
            Expected::Panic
        }
        Err(e) => return Err(TestCaseError::fail(format!("{step:?}: unexpected {e}"))),
    };
    match (&want, &got) {
        (Expected::Applied(w, check), Expected::Applied(g, _)) => {
            if *check && w != g {
                let first = w.iter().zip(g.iter()).find(|(a, b)| a != b);
                return Err(TestCaseError::fail(format!(
                    "changes of {step:?}: model {want:?}, host {got:?}, first difference {first:?}"
                )));
            }
            for (k, v) in w {
                match v {
                    Some(v) => model.insert(k.clone(), v.clone()),
                    None => model.remove(k),
                };
            }
            let map = written.expect("an applied call writes a map");
            prop_assert_eq!(map.len(), model.len() as u64);
            prop_assert!(
                map.iter().eq(model.iter().map(|(k, v)| (&k[..], &v[..]))),
                "after {:?} the host's map differs from the model",
                step
            );
            Ok(Some(map))
        }
        _ => {
            prop_assert_eq!(&want, &got, "{:?}", step);
            Ok(None)
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: prop_cases(),
        max_shrink_iters: 2000,
        max_shrink_time: 120_000,
        ..ProptestConfig::default()
    })]

    /// Random sequences of calls through the real sandbox — sets, scans,
    /// deletes (membership), rejections after writes, panics after writes,
    /// writes past each limit, all-or-nothing batches, queries that write —
    /// against a `BTreeMap` model of the realm: after each call the host's
    /// committed map (from `Written.map` of successful calls only) equals the
    /// model, each call's reported changes equal the model's, every failure
    /// has the model's typed cause, and nothing from a failed call leaks into
    /// later calls.
    #[test]
    fn keyed_state_matches_a_btreemap_model(
        limits in proptest::sample::select(PropLimits::ALL.to_vec()),
        steps in proptest::collection::vec(step_strategy(), 1..24),
    ) {
        let (hostile, _) = limits.plugins();
        let mut map = init_map(hostile, PROP_REALM);
        let mut model: Entries = entries(&map);
        prop_assert_eq!(model.len(), 1);
        for (i, step) in steps.iter().enumerate() {
            let seq = 100 + 10 * i as u64;
            if let Some(next) = run_step(step, seq, &map, &mut model, limits)? {
                map = next;
            } else {
                // A failed call or a query: the committed map is what it was
                // and the model did not move.
                prop_assert!(
                    map.iter().eq(model.iter().map(|(k, v)| (&k[..], &v[..]))),
                    "after {:?} the committed map differs from the model",
                    step
                );
            }
        }
        // Nothing of the failed calls shows in a final full read.
        run_step(&Step::Read, 0, &map, &mut model, limits)?;
    }
}
