//! Outboxes and inbox cursors: atomic with their append, ordered, acked,
//! deduplicated without a window, routed by partition, kept across reopen.

use proptest::prelude::*;

use super::*;

fn out(seq: u64, index: u32, body: &str) -> OutboxRecord {
    OutboxRecord {
        seq,
        index,
        message: body.as_bytes().to_vec(),
    }
}

fn delivery(sender: &str, seq: u64, index: u32) -> DeliveryRecord {
    DeliveryRecord {
        sender: rid(sender),
        seq,
        index,
        outcome: format!("accepted {seq}.{index}").into_bytes(),
    }
}

fn sends(outbox: Vec<OutboxRecord>) -> AppendExtras {
    AppendExtras {
        outbox,
        ..AppendExtras::default()
    }
}

fn delivers(d: DeliveryRecord) -> AppendExtras {
    AppendExtras {
        delivery: Some(d),
        ..AppendExtras::default()
    }
}

fn ids(p: &[PendingMessage]) -> Vec<(String, u64, u32)> {
    p.iter()
        .map(|m| (m.sender.to_string(), m.seq, m.index))
        .collect()
}

#[test]
fn messages_are_stored_with_their_event_listed_in_order_and_acked() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = RedbStorage::open(dir.path()).unwrap();
        s.append_with_blocking(
            req("bank-a", "ledger", 1..=2),
            sends(vec![out(1, 0, "x"), out(2, 0, "y"), out(2, 1, "z")]),
        )
        .unwrap();
        s.append_with_blocking(req("bank-b", "ledger", 1..=1), sends(vec![out(1, 0, "w")]))
            .unwrap();
        // A refused append stores none of its messages.
        let e = s
            .append_with_blocking(
                req("bank-a", "ledger", 4..=4),
                sends(vec![out(4, 0, "lost")]),
            )
            .unwrap_err();
        assert!(matches!(e, StorageError::Gap { .. }), "{e}");
        let all = s.pending_messages(None, 100).unwrap();
        assert_eq!(
            ids(&all),
            [
                ("bank-a".into(), 1, 0),
                ("bank-a".into(), 2, 0),
                ("bank-a".into(), 2, 1),
                ("bank-b".into(), 1, 0)
            ]
        );
        assert_eq!(all[2].message, b"z");
        // Paging resumes after a key.
        let page = s.pending_messages(Some(&all[1].key()), 2).unwrap();
        assert_eq!(ids(&page), ids(&all[2..4]));
        // Settled one at a time (a sender's messages to different targets
        // end in any order): only bank-a's 2.1 and bank-b remain.
        for (seq, index) in [(2, 0), (1, 0)] {
            run(s.change_outbox(&rid("bank-a"), seq, index, OutboxChange::Settle)).unwrap();
        }
        assert_eq!(
            ids(&s.pending_messages(None, 100).unwrap()),
            ids(&all[2..4])
        );
        // A change happens once.
        let again = run(s.change_outbox(&rid("bank-a"), 2, 0, OutboxChange::Settle));
        assert!(
            matches!(
                again,
                Err(StorageError::NotInOutbox {
                    seq: 2,
                    index: 0,
                    ..
                })
            ),
            "{again:?}"
        );
        assert!(s.scrub().unwrap().is_clean());
    }
    let s = RedbStorage::open(dir.path()).unwrap();
    assert_eq!(s.pending_messages(None, 100).unwrap().len(), 2);
}

#[test]
fn messages_must_name_the_appends_events_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let s = RedbStorage::open(dir.path()).unwrap();
    for bad in [
        vec![out(3, 0, "past the events")],
        vec![out(1, 1, "b"), out(1, 0, "a")],
        vec![out(1, 0, "a"), out(1, 0, "again")],
    ] {
        let e = s
            .append_with_blocking(req("r", "ledger", 1..=2), sends(bad.clone()))
            .unwrap_err();
        assert!(matches!(e, StorageError::InvalidRequest(_)), "{bad:?}: {e}");
    }
    assert_eq!(s.realm_meta(&rid("r")).unwrap(), None, "nothing stored");
}

#[test]
fn a_delivery_is_taken_once_and_the_duplicate_gets_the_recorded_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let s = RedbStorage::open(dir.path()).unwrap();
    s.append_with_blocking(req("t", "ledger", 1..=1), delivers(delivery("s", 5, 0)))
        .unwrap();
    let cursor = s.inbox_cursor(&rid("t"), &rid("s")).unwrap().unwrap();
    assert_eq!((cursor.seq, cursor.index), (5, 0));
    for (seq, index) in [(5, 0), (4, 7), (1, 0)] {
        match s.append_with_blocking(
            req("t", "ledger", 2..=2),
            delivers(delivery("s", seq, index)),
        ) {
            Err(StorageError::AlreadyDelivered { cursor, .. }) => {
                assert_eq!(cursor.outcome, b"accepted 5.0");
            }
            other => panic!("{seq}.{index}: {other:?}"),
        }
    }
    // Later messages of the same sender, and any of another sender, go in.
    s.append_with_blocking(req("t", "ledger", 2..=2), delivers(delivery("s", 5, 1)))
        .unwrap();
    s.append_with_blocking(req("t", "ledger", 3..=3), delivers(delivery("other", 1, 0)))
        .unwrap();
    assert_eq!(s.realm_meta(&rid("t")).unwrap().unwrap().last_seq, 3);
    assert_eq!(s.inbox_cursor(&rid("t"), &rid("nobody")).unwrap(), None);
    assert!(s.scrub().unwrap().is_clean());
}

#[test]
fn concurrent_duplicate_deliveries_land_once() {
    let dir = tempfile::tempdir().unwrap();
    let s = RedbStorage::open(dir.path()).unwrap();
    s.append_blocking(req("t", "ledger", 1..=1)).unwrap();
    // Both enqueued before either commits: one batch, checked in order.
    let a = s.append_with(req("t", "ledger", 2..=2), delivers(delivery("s", 1, 0)));
    let b = s.append_with(req("t", "ledger", 2..=2), delivers(delivery("s", 1, 0)));
    let (a, b) = run(async { (a.await, b.await) });
    assert!(a.is_ok(), "{a:?}");
    assert!(
        matches!(
            b,
            Err(StorageError::AlreadyDelivered { .. } | StorageError::Duplicate { .. })
        ),
        "{b:?}"
    );
    assert_eq!(s.realm_meta(&rid("t")).unwrap().unwrap().last_seq, 2);
}

#[test]
fn partitions_route_outboxes_and_cursors_and_merge_the_listing() {
    let dir = tempfile::tempdir().unwrap();
    let config = StorageConfig {
        partitions: 3,
        ..StorageConfig::default()
    };
    let s = PartitionedStorage::open_with(dir.path(), config).unwrap();
    let senders: Vec<String> = (0..12).map(|i| format!("sender-{i:02}")).collect();
    for name in &senders {
        run(Storage::append_with(
            &s,
            req(name, "ledger", 1..=1),
            sends(vec![out(1, 0, name), out(1, 1, name)]),
        ))
        .unwrap();
    }
    let homes: std::collections::BTreeSet<usize> =
        senders.iter().map(|n| s.partition_of(&rid(n))).collect();
    assert!(homes.len() > 1, "senders all in one partition");
    let all = run(Storage::pending_messages(&s, None, 1000)).unwrap();
    let want: Vec<(String, u64, u32)> = senders
        .iter()
        .flat_map(|n| [(n.clone(), 1, 0), (n.clone(), 1, 1)])
        .collect();
    assert_eq!(ids(&all), want);
    let page = run(Storage::pending_messages(&s, Some(&all[4].key()), 3)).unwrap();
    assert_eq!(ids(&page), want[5..8]);
    run(Storage::change_outbox(
        &s,
        &rid("sender-03"),
        1,
        1,
        OutboxChange::Settle,
    ))
    .unwrap();
    assert_eq!(
        run(Storage::pending_messages(&s, None, 1000))
            .unwrap()
            .len(),
        23
    );
    // The cursor lives with the target.
    run(Storage::append_with(
        &s,
        req("target", "ledger", 1..=1),
        delivers(delivery("sender-03", 1, 0)),
    ))
    .unwrap();
    let c = run(Storage::inbox_cursor(&s, &rid("target"), &rid("sender-03"))).unwrap();
    assert_eq!(c.map(|c| (c.seq, c.index)), Some((1, 0)));
    let home = s.partition(s.partition_of(&rid("target")));
    assert!(
        home.inbox_cursor(&rid("target"), &rid("sender-03"))
            .unwrap()
            .is_some()
    );
    assert!(Storage::scrub(&s).unwrap().is_clean());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]
    /// Whatever order deliveries arrive in, a target takes a message of a
    /// sender exactly when it is past everything taken from that sender,
    /// and its cursor is the highest taken.
    #[test]
    fn cursors_take_each_sender_in_increasing_order(
        deliveries in proptest::collection::vec((0..3usize, 1..6u64, 0..3u32), 1..40),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let s = RedbStorage::open(dir.path()).unwrap();
        let mut taken: std::collections::HashMap<usize, (u64, u32)> = Default::default();
        let mut last_seq = 0;
        for (sender, seq, index) in deliveries {
            let name = format!("s{sender}");
            let r = s.append_with_blocking(
                req("t", "ledger", last_seq + 1..=last_seq + 1),
                delivers(delivery(&name, seq, index)),
            );
            let fresh = taken.get(&sender).is_none_or(|&t| (seq, index) > t);
            if fresh {
                prop_assert!(r.is_ok(), "{:?}", r);
                taken.insert(sender, (seq, index));
                last_seq += 1;
            } else {
                let dup = matches!(r, Err(StorageError::AlreadyDelivered { .. }));
                prop_assert!(dup, "{:?}", r);
            }
        }
        for (sender, &(seq, index)) in &taken {
            let c = s.inbox_cursor(&rid("t"), &rid(&format!("s{sender}"))).unwrap().unwrap();
            prop_assert_eq!((c.seq, c.index), (seq, index));
        }
    }
}

/// Dead letters leave the outbox, can be listed, revived (back into the
/// outbox) or dropped; each change happens once. A settling append removes
/// its message in the same transaction, at most once.
#[test]
fn dead_letters_and_settling_appends() {
    let dir = tempfile::tempdir().unwrap();
    let s = RedbStorage::open(dir.path()).unwrap();
    s.append_with_blocking(
        req("bank-a", "ledger", 1..=1),
        sends(vec![out(1, 0, "x"), out(1, 1, "y"), out(1, 2, "z")]),
    )
    .unwrap();
    let a = rid("bank-a");
    let change = |seq, index, c| run(s.change_outbox(&a, seq, index, c));
    change(1, 0, OutboxChange::DeadLetter(b"hop limit".to_vec())).unwrap();
    let dead = s.dead_letters(None, 10).unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!((dead[0].seq, dead[0].index), (1, 0));
    assert_eq!(dead[0].message, b"x");
    assert_eq!(dead[0].reason, b"hop limit");
    assert_eq!(s.pending_messages(None, 10).unwrap().len(), 2);
    assert!(change(1, 0, OutboxChange::DeadLetter(vec![])).is_err());
    // Revived: pending again, no longer dead.
    change(1, 0, OutboxChange::Revive).unwrap();
    assert!(s.dead_letters(None, 10).unwrap().is_empty());
    assert_eq!(s.pending_messages(None, 10).unwrap()[0].message, b"x");
    assert!(change(1, 0, OutboxChange::Revive).is_err());
    change(1, 0, OutboxChange::DeadLetter(vec![1])).unwrap();
    change(1, 0, OutboxChange::DropDead).unwrap();
    assert!(s.dead_letters(None, 10).unwrap().is_empty());
    assert!(change(1, 0, OutboxChange::DropDead).is_err());

    // A reply settles message 1.1 with the event that carries it.
    let settle = |index, dead_letter| AppendExtras {
        settle: Some(SettleRecord {
            seq: 1,
            index,
            dead_letter,
        }),
        ..AppendExtras::default()
    };
    s.append_with_blocking(req("bank-a", "ledger", 2..=2), settle(1, None))
        .unwrap();
    let e = s
        .append_with_blocking(req("bank-a", "ledger", 3..=3), settle(1, None))
        .unwrap_err();
    assert!(
        matches!(e, StorageError::NotInOutbox { index: 1, .. }),
        "{e}"
    );
    assert_eq!(s.realm_meta(&a).unwrap().map(|m| m.last_seq), Some(2));
    // A reply to a dead-lettered message moves it with the event.
    s.append_with_blocking(
        req("bank-a", "ledger", 3..=3),
        settle(2, Some(b"gone".to_vec())),
    )
    .unwrap();
    assert!(s.pending_messages(None, 10).unwrap().is_empty());
    assert_eq!(s.dead_letters(None, 10).unwrap()[0].reason, b"gone");
    assert!(s.scrub().unwrap().is_clean());
}
