//! The queues: FIFO per pair with one head in flight, pairs independent,
//! due times and backoff respected, counts kept.

use std::sync::Arc;

use super::*;
use crate::message::{ReplyWanted, STORED_MESSAGE_FORMAT};

fn pending(sender: &str, seq: u64, target: &str, due_ms: u64) -> Pending {
    Pending {
        id: OutboxKey {
            sender: RealmId::new(sender).unwrap(),
            seq,
            index: 0,
        },
        message: Arc::new(StoredMessage {
            format: STORED_MESSAGE_FORMAT,
            sender_type: "ledger".into(),
            target: RealmId::new(target).unwrap(),
            target_type: "ledger".into(),
            kind: "k".into(),
            payload: Vec::new(),
            reply: ReplyWanted::Never,
            correlation: None,
            sent_ms: 0,
            due_ms,
            expires_ms: None,
            chain_id: format!("{sender}@{seq}.0"),
            hop: 1,
        }),
    }
}

fn taken(m: &Messenger, now: u64) -> Vec<(String, u64)> {
    m.take_due(now, 100)
        .0
        .into_iter()
        .map(|d| (d.head.id.sender.to_string(), d.head.id.seq))
        .collect()
}

#[test]
fn one_head_per_pair_in_send_order_and_pairs_are_independent() {
    let m = Messenger::new(MessagingConfig::default());
    m.enqueue(vec![
        pending("a", 1, "x", 0),
        pending("a", 2, "x", 0),
        pending("a", 3, "y", 0),
        pending("b", 1, "x", 0),
    ]);
    assert_eq!(m.stats().pending, 4);
    assert_eq!(m.pending_of(&RealmId::new("a").unwrap()), 3);
    let mut first = taken(&m, 10);
    first.sort();
    // a→x's head, a→y's and b→x's: three pairs, one head each.
    assert_eq!(first, [("a".into(), 1), ("a".into(), 3), ("b".into(), 1)]);
    assert!(taken(&m, 10).is_empty(), "heads in flight block their pair");
    let a = RealmId::new("a").unwrap();
    let ax = (a.clone(), RealmId::new("x").unwrap());
    // a→x fails: a→y settles regardless, and a→x is retried after backoff.
    m.finish(&ax, Step::Retry("trap".into()), 10);
    m.finish(&(a.clone(), RealmId::new("y").unwrap()), Step::Settled, 10);
    assert!(taken(&m, 10).is_empty(), "backing off");
    assert_eq!(m.pairs_of(&a)[0].last_error.as_deref(), Some("trap"));
    assert_eq!(
        taken(&m, 10 + 100),
        [("a".into(), 1)],
        "the same head again"
    );
    m.finish(&ax, Step::Settled, 200);
    assert_eq!(taken(&m, 200), [("a".into(), 2)], "then the next in order");
    m.finish(&ax, Step::Settled, 200);
    assert_eq!(m.pending_of(&a), 0);
    assert_eq!(m.stats().pending, 1, "b→x's head is still in flight");
    assert_eq!(m.stats().retries, 1);
}

#[test]
fn delayed_messages_wait_for_their_time_and_hold_their_pair() {
    let m = Messenger::new(MessagingConfig::default());
    m.enqueue(vec![pending("a", 1, "a", 1_000), pending("a", 2, "a", 0)]);
    let (due, next) = m.take_due(999, 10);
    assert!(due.is_empty());
    assert_eq!(next, Some(1_000));
    assert_eq!(taken(&m, 1_000), [("a".into(), 1)]);
}

/// Messages queue in send order when their events are staged, whatever
/// order the commits are confirmed in; a withdrawn event's messages go.
#[test]
fn staged_messages_wait_for_their_commit_and_keep_send_order() {
    let m = Messenger::new(MessagingConfig::default());
    let a = RealmId::new("a").unwrap();
    let (one, two, three) = (
        vec![pending("a", 1, "b", 0)],
        vec![pending("a", 2, "b", 0)],
        vec![pending("a", 3, "b", 0)],
    );
    m.stage(&one);
    m.stage(&two);
    m.stage(&three);
    assert_eq!(m.pending_of(&a), 3, "counted against the limit at once");
    m.confirm(&two);
    assert!(taken(&m, 10).is_empty(), "event 1 is not durable yet");
    m.withdraw(&three);
    m.confirm(&one);
    assert_eq!(taken(&m, 10), [("a".into(), 1)]);
    m.finish(&(a.clone(), RealmId::new("b").unwrap()), Step::Settled, 10);
    assert_eq!(taken(&m, 10), [("a".into(), 2)]);
    assert_eq!(m.pending_of(&a), 1);
    assert_eq!(m.stats().sent, 2);
    // A message inserted later with a smaller id (a revived dead letter)
    // takes its place in order, never before the head in flight.
    m.enqueue(vec![pending("a", 0, "b", 0), pending("a", 5, "b", 0)]);
    m.finish(&(a, RealmId::new("b").unwrap()), Step::Settled, 10);
    assert_eq!(taken(&m, 10), [("a".into(), 0)]);
}

#[test]
fn backoff_doubles_up_to_its_cap() {
    let c = MessagingConfig {
        retry_min_ms: 100,
        retry_max_ms: 1_000,
        ..MessagingConfig::default()
    };
    let waits: Vec<u64> = (1..=6).map(|n| c.backoff_ms(n)).collect();
    assert_eq!(waits, [100, 200, 400, 800, 1_000, 1_000]);
    assert!(MessagingConfig::default().validate().is_ok());
    let bad = MessagingConfig {
        retry_max_ms: 1,
        ..MessagingConfig::default()
    };
    assert!(bad.validate().is_err());
}

mod model {
    use std::collections::{BTreeMap, BTreeSet};

    use proptest::prelude::*;

    use super::*;

    /// One step of the model: stage an event of sender `s` with messages to
    /// the given targets; confirm or withdraw the oldest unresolved staged
    /// event of some sender, or a random one; take the due heads and
    /// settle or fail some of them.
    #[derive(Debug, Clone)]
    enum Op {
        Stage(u8, Vec<u8>),
        Resolve(u8, bool),
        Deliver(Vec<bool>),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..3, proptest::collection::vec(0u8..3, 1..4)).prop_map(|(s, t)| Op::Stage(s, t)),
            (0u8..8, any::<bool>()).prop_map(|(i, ok)| Op::Resolve(i, ok)),
            proptest::collection::vec(any::<bool>(), 0..6).prop_map(Op::Deliver),
        ]
    }

    /// A message's identity, printable.
    type Id = (String, u64, u32);

    fn id(p: &Pending) -> Id {
        (p.id.sender.to_string(), p.id.seq, p.id.index)
    }

    proptest! {
        /// Whatever the order commits resolve in and deliveries end, each
        /// pair settles its confirmed messages in send order, each exactly
        /// once, and nothing withdrawn is ever delivered.
        #[test]
        fn pairs_settle_confirmed_messages_once_in_send_order(ops in proptest::collection::vec(op(), 1..80)) {
            let m = Messenger::new(MessagingConfig { retry_min_ms: 1, retry_max_ms: 1, ..MessagingConfig::default() });
            let mut seqs = [0u64; 3];
            let mut staged: Vec<Vec<Pending>> = Vec::new();
            let (mut confirmed, mut withdrawn) = (BTreeSet::new(), BTreeSet::new());
            let mut settled: BTreeMap<(String, String), Vec<Id>> = BTreeMap::new();
            let mut now = 0u64;
            let deliver = |m: &Messenger, now: u64, outcomes: &[bool], settled: &mut BTreeMap<_, Vec<_>>| {
                let (due, _) = m.take_due(now, 100);
                for (i, Due { key, head, .. }) in due.into_iter().enumerate() {
                    let ok = outcomes.get(i).copied().unwrap_or(true);
                    if ok {
                        settled.entry((key.0.to_string(), key.1.to_string())).or_default().push(id(&head));
                    }
                    m.finish(&key, if ok { Step::Settled } else { Step::Retry("x".into()) }, now);
                }
            };
            for op in ops {
                now += 5;
                match op {
                    Op::Stage(s, targets) => {
                        seqs[s as usize] += 1;
                        let msgs: Vec<Pending> = targets
                            .iter()
                            .enumerate()
                            .map(|(i, t)| {
                                let mut p = pending(&format!("s{s}"), seqs[s as usize], &format!("t{t}"), 0);
                                p.id.index = i as u32;
                                p
                            })
                            .collect();
                        m.stage(&msgs);
                        staged.push(msgs);
                    }
                    Op::Resolve(i, ok) if !staged.is_empty() => {
                        let msgs = staged.remove(i as usize % staged.len());
                        if ok {
                            m.confirm(&msgs);
                            confirmed.extend(msgs.iter().map(id));
                        } else {
                            m.withdraw(&msgs);
                            withdrawn.extend(msgs.iter().map(id));
                        }
                    }
                    Op::Resolve(..) => {}
                    Op::Deliver(outcomes) => deliver(&m, now, &outcomes, &mut settled),
                }
            }
            for msgs in staged.drain(..) {
                m.confirm(&msgs);
                confirmed.extend(msgs.iter().map(id));
            }
            for _ in 0..200 {
                now += 5;
                deliver(&m, now, &[], &mut settled);
            }
            let mut all = BTreeSet::new();
            for (pair, ids) in &settled {
                prop_assert!(ids.windows(2).all(|w| w[0] < w[1]), "{pair:?} out of order: {ids:?}");
                for i in ids {
                    prop_assert!(all.insert(i.clone()), "{i:?} settled twice");
                    prop_assert!(!withdrawn.contains(i), "{i:?} was withdrawn");
                }
            }
            prop_assert_eq!(all, confirmed);
            prop_assert_eq!(m.stats().pending, 0);
        }
    }
}

/// An outcome decided by an attempt whose settle failed is handed to the
/// next attempt, which then only settles (the target is not asked again).
#[test]
fn a_decided_outcome_is_kept_until_settled() {
    let m = Messenger::new(MessagingConfig {
        retry_min_ms: 1,
        ..MessagingConfig::default()
    });
    m.enqueue(vec![pending("a", 1, "b", 0)]);
    let due = m.take_due(0, 10).0;
    assert_eq!(due[0].outcome, None);
    let key = due[0].key.clone();
    m.finish(
        &key,
        Step::Unsettled(Outcome::Expired, "sender busy".into()),
        0,
    );
    let due = m.take_due(100, 10).0;
    assert_eq!(
        (due[0].attempts, due[0].outcome.clone()),
        (1, Some(Outcome::Expired))
    );
    m.finish(&key, Step::Settled, 100);
    assert_eq!(m.stats().pending, 0);
}
