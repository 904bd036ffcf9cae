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
        .map(|(_, p, _)| (p.id.sender.to_string(), p.id.seq))
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
