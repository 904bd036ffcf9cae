//! Tests of the accounts and the layouts (the transfer saga has its own).

use super::*;
use realmhost_guest::batch::BatchEncoder;
use realmhost_guest::{EventRef, MemoryState, encode_payload, entry};

fn open(a: &str) -> Tx {
    Tx::Open { account: a.into() }
}
fn dep(a: &str, amount: u64) -> Tx {
    Tx::Deposit {
        account: a.into(),
        amount,
    }
}
fn xfer(from: &str, to: &str, amount: u64) -> Tx {
    Tx::Transfer {
        from: from.into(),
        to: to.into(),
        amount,
    }
}

fn run(realm: &mut MemoryState, txs: &[Tx]) -> Result<(), ApplyError> {
    for (i, tx) in txs.iter().enumerate() {
        let p = encode_payload(tx);
        entry::apply::<Ledger>(realm, &EventRef::new(i as u64 + 1, "tx", &p, "teller"))?;
    }
    Ok(())
}

fn fresh(txs: &[Tx]) -> MemoryState {
    let mut realm = MemoryState::new();
    entry::init::<Ledger>(&mut realm, "l").unwrap();
    run(&mut realm, txs).unwrap();
    realm
}

fn batch(txs: &[Tx], first_seq: u64) -> Vec<u8> {
    let payloads: Vec<_> = txs.iter().map(encode_payload).collect();
    let mut enc = BatchEncoder::new();
    for (i, p) in payloads.iter().enumerate() {
        enc.push(&EventRef::new(first_seq + i as u64, "tx", p, "teller"));
    }
    enc.finish()
}

fn q(realm: &MemoryState, request: &str) -> String {
    entry::query::<Ledger>(realm, request).unwrap()
}

#[test]
fn transfers_move_money() {
    let realm = fresh(&[open("a"), open("b"), dep("a", 10), xfer("a", "b", 4)]);
    realm.read(|| {
        assert_eq!(ACCOUNTS.load("a").unwrap(), 6);
        assert_eq!(ACCOUNTS.load("b").unwrap(), 4);
        assert_eq!(TX_COUNT.load().unwrap(), 4);
    });
    // Two accounts, the totals, the counter: nothing else.
    assert_eq!(realm.len(), 4);
}

#[test]
fn rejects_overdraft_unknown_and_duplicates_and_keeps_nothing() {
    let base = fresh(&[open("a"), open("b"), dep("a", 10)]);
    let code = |tx: Tx| {
        let mut realm = base.clone();
        match run(&mut realm, &[tx]) {
            Err(ApplyError::Rejected(r)) => {
                assert_eq!(realm, base, "a rejected event must keep nothing");
                r.code
            }
            other => panic!("expected a rejection, got {other:?}"),
        }
    };
    assert_eq!(code(xfer("a", "b", 11)), "overdraft");
    assert_eq!(
        code(Tx::Withdraw {
            account: "b".into(),
            amount: 1
        }),
        "overdraft"
    );
    assert_eq!(code(xfer("a", "zz", 1)), "unknown_account");
    assert_eq!(code(dep("zz", 1)), "unknown_account");
    assert_eq!(code(dep("zz", 0)), "unknown_account");
    assert_eq!(code(open("a")), "account_exists");
    assert_eq!(code(open("")), "bad_account");
    assert_eq!(code(dep("a", 0)), "zero_amount");
    assert_eq!(code(xfer("a", "a", 1)), "self_transfer");
    assert_eq!(code(xfer("a", "a", 0)), "zero_amount");
    assert_eq!(code(dep("a", u64::MAX)), "overflow");
}

#[test]
fn batch_equals_single_applies() {
    let txs = [
        open("a"),
        open("b"),
        dep("a", 100),
        xfer("a", "b", 30),
        xfer("b", "a", 5),
        Tx::Withdraw {
            account: "a".into(),
            amount: 1,
        },
    ];
    let single = fresh(&txs);
    let mut batched = MemoryState::new();
    entry::init::<Ledger>(&mut batched, "l").unwrap();
    entry::apply_batch::<Ledger>(&mut batched, &batch(&txs, 1)).unwrap();
    assert_eq!(single, batched);
}

#[test]
fn batch_reports_the_failing_index_and_keeps_nothing() {
    let mut realm = fresh(&[]);
    let err = entry::apply_batch::<Ledger>(
        &mut realm,
        &batch(&[open("a"), dep("a", 1), xfer("a", "nobody", 1)], 1),
    )
    .unwrap_err();
    assert_eq!(err.index, 2);
    assert!(realm.is_empty());
}

#[test]
fn queries() {
    let realm = fresh(&[
        open("a"),
        dep("a", 10),
        open("b\"q"),
        dep("b\"q", 5),
        open("c"),
    ]);
    assert_eq!(q(&realm, r#"{"balance":"a"}"#), r#"{"balance":10}"#);
    assert_eq!(q(&realm, ""), r#"{"total":15,"accounts":3,"tx_count":5}"#);
    assert_eq!(q(&realm, r#""total""#), q(&realm, ""));
    assert!(entry::query::<Ledger>(&realm, r#"{"balance":"x"}"#).is_err());
    assert!(entry::query::<Ledger>(&realm, "nonsense").is_err());
    assert_eq!(
        q(&realm, r#"{"accounts":{"limit":2}}"#),
        r#"{"accounts":[{"account":"a","balance":10},{"account":"b\"q","balance":5}],"next":"b\"q"}"#
    );
    assert_eq!(
        q(&realm, r#"{"accounts":{"after":"b\"q"}}"#),
        r#"{"accounts":[{"account":"c","balance":0}],"next":null}"#
    );
    // A fresh realm answers like the old empty state did.
    assert_eq!(
        q(&fresh(&[]), ""),
        r#"{"total":0,"accounts":0,"tx_count":0}"#
    );
}

#[test]
fn json_events_keep_their_form() {
    let bytes =
        entry::encode_event::<Ledger>("tx", r#"{"transfer":{"from":"a","to":"b","amount":3}}"#)
            .unwrap();
    assert_eq!(bytes, encode_payload(&xfer("a", "b", 3)));
    let bytes = entry::encode_event::<Ledger>("tx", r#"{"open":{"account":"a"}}"#).unwrap();
    assert_eq!(bytes, encode_payload(&open("a")));
}

fn old_realm(version: u32, body: &impl Serialize) -> MemoryState {
    let mut realm = MemoryState::new();
    realm.enter(|| whole::save(version, body)).unwrap();
    realm
}

#[test]
fn migrates_whole_state_layouts_to_keyed_entries() {
    let mut v2 = StateV2::default();
    v2.accounts.insert("old".into(), 77);
    v2.accounts.insert("older".into(), 3);
    v2.tx_count = 12;
    let mut realm = old_realm(2, &v2);
    entry::migrate::<Ledger>(&mut realm, 2).unwrap();
    assert!(realm.get(whole::STATE_KEY).is_none());
    assert_eq!(q(&realm, ""), r#"{"total":80,"accounts":2,"tx_count":12}"#);
    assert_eq!(q(&realm, r#"{"balance":"old"}"#), r#"{"balance":77}"#);
    // And the migrated realm carries on like any other.
    run(&mut realm, &[xfer("old", "older", 7)]).unwrap();
    assert_eq!(q(&realm, r#"{"balance":"older"}"#), r#"{"balance":10}"#);

    let mut v1 = StateV1::default();
    v1.accounts.insert("old".into(), 5);
    let mut realm = old_realm(1, &v1);
    entry::migrate::<Ledger>(&mut realm, 1).unwrap();
    assert_eq!(q(&realm, ""), r#"{"total":5,"accounts":1,"tx_count":0}"#);

    // Migrating the old layout equals replaying the same history.
    // (Up to the transaction count, which version 1 did not keep.)
    let replayed = fresh(&[open("old"), dep("old", 5)]);
    realm.enter(|| TX_COUNT.save(&2)).unwrap();
    assert_eq!(realm, replayed);
}

#[test]
fn refuses_what_it_cannot_migrate_and_keeps_nothing() {
    // From the future.
    let mut realm = fresh(&[open("a")]);
    let before = realm.clone();
    let err = entry::migrate::<Ledger>(&mut realm, 4).unwrap_err();
    assert!(err.contains("newer"), "{err}");
    // Undecodable bytes.
    let mut realm = MemoryState::new();
    realm.insert(whole::STATE_KEY, vec![2, 0xff, 0xff, 0xff, 0xff]);
    let garbage = realm.clone();
    assert!(entry::migrate::<Ledger>(&mut realm, 2).is_err());
    assert_eq!(realm, garbage);
    // A version the entry does not claim.
    let mut realm = old_realm(1, &StateV1::default());
    assert!(entry::migrate::<Ledger>(&mut realm, 2).is_err());
    // The current version is a no-op.
    let mut realm = before.clone();
    entry::migrate::<Ledger>(&mut realm, 3).unwrap();
    assert_eq!(realm, before);
    assert_eq!(entry::describe::<Ledger>().state_version, 3);
}

/// A realm of 100 000 accounts, built natively through the batch path:
/// each event touches only the entries it names, and the answers stay
/// exact.
#[test]
fn hundred_thousand_accounts() {
    const N: u64 = 100_000;
    let name = |i: u64| format!("acct-{i:06}");
    let mut realm = fresh(&[]);
    let mut seq = 1;
    for chunk in (0..N).collect::<Vec<_>>().chunks(2_000) {
        let txs: Vec<Tx> = chunk
            .iter()
            .flat_map(|&i| [open(&name(i)), dep(&name(i), i + 1)])
            .collect();
        entry::apply_batch::<Ledger>(&mut realm, &batch(&txs, seq)).unwrap();
        seq += txs.len() as u64;
    }
    assert_eq!(realm.len() as u64, N + 2);
    let total = N * (N + 1) / 2;
    assert_eq!(
        q(&realm, ""),
        format!(r#"{{"total":{total},"accounts":{N},"tx_count":{}}}"#, 2 * N)
    );

    // One transfer in a big realm writes three entries.
    let p = encode_payload(&xfer(&name(0), &name(N - 1), 1));
    let before = realm.clone();
    entry::apply::<Ledger>(&mut realm, &EventRef::new(seq, "tx", &p, "t")).unwrap();
    let changed = realm
        .iter()
        .zip(before.iter())
        .filter(|(a, b)| a != b)
        .count();
    assert_eq!(changed, 3);
    assert_eq!(
        q(&realm, &format!(r#"{{"balance":"{}"}}"#, name(N - 1))),
        format!(r#"{{"balance":{}}}"#, N + 1)
    );

    // Paging through every account visits each once, in order.
    let mut after: Option<String> = None;
    let mut seen = 0u64;
    let mut sum = 0u128;
    loop {
        let request = match &after {
            Some(a) => format!(r#"{{"accounts":{{"after":"{a}","limit":1000}}}}"#),
            None => r#"{"accounts":{"limit":1000}}"#.to_owned(),
        };
        let page: AccountsPage = serde_json::from_str(&q(&realm, &request)).unwrap();
        for row in &page.accounts {
            assert_eq!(row.account, name(seen));
            seen += 1;
            sum += u128::from(row.balance);
        }
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, N);
    assert_eq!(sum, u128::from(total));
}
