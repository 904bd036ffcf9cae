//! `ledger`: accounts and transfers.
//!
//! A realm is a small bank: accounts are opened, credited, debited and linked
//! by transfers. Balances never go negative: an overdraft, an unknown account
//! or an arithmetic overflow is a [`Rejection`], and the realm is unchanged.
//!
//! ## Layout (state version 3)
//! One entry per account, so an event touches what it names and nothing
//! else, however many accounts the realm holds:
//!
//! | entry | type | what |
//! |---|---|---|
//! | [`ACCOUNTS`] `[name]` | `u64` | balance of one account |
//! | [`TOTALS`] | [`Totals`] | number of accounts and sum of balances, kept up to date so `"total"` stays O(1) |
//! | [`TX_COUNT`] | `u64` | accepted transactions |
//!
//! A fresh realm holds no entry; missing totals read as zero.
//!
//! ## Older layouts and `migrate`
//! Ledger 1.x and 2.x kept the whole state as one value (whole-state mode,
//! under [`realmhost_guest::whole::STATE_KEY`]): state version 1 was
//! [`StateV1`] (balances only), state version 2 was [`StateV2`] (balances and
//! the transaction counter). [`Realm::migrate`] reads either, writes the
//! keyed entries above (a version-1 realm starts with a transaction count of
//! 0, as ledger 2.x did) and removes the old entry. A migration writes one
//! entry per account in one call; if a very large realm runs past a per-call
//! limit, the host falls back to replaying its events, which gives the same
//! entries.

use std::collections::BTreeMap;

use realmhost_guest::{
    ApplyError, Bound, Event, Item, Map, Order, Realm, Rejection, export_realm, whole,
};
use serde::{Deserialize, Serialize};

/// The `ledger` realm type.
#[derive(Debug)]
pub struct Ledger;

/// Balance per account, in the smallest unit.
pub const ACCOUNTS: Map<&str, u64> = Map::new("accounts");
/// Number of accounts and sum of their balances.
pub const TOTALS: Item<Totals> = Item::new("totals");
/// Number of accepted transactions.
pub const TX_COUNT: Item<u64> = Item::new("tx_count");

/// Aggregates kept up to date by every event that changes them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// Number of open accounts.
    pub accounts: u64,
    /// Sum of all balances.
    pub total: u128,
}

/// The whole state of ledger 2.x (state version 2), read by `migrate`.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateV2 {
    /// Balance per account.
    pub accounts: BTreeMap<String, u64>,
    /// Number of accepted transactions.
    pub tx_count: u64,
}

/// The whole state of ledger 1.x (state version 1), read by `migrate`.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateV1 {
    /// Balance per account.
    pub accounts: BTreeMap<String, u64>,
}

/// What can happen to a ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tx {
    /// Open an empty account.
    Open {
        /// Account name.
        account: String,
    },
    /// Credit an account.
    Deposit {
        /// Account name.
        account: String,
        /// Amount (> 0).
        amount: u64,
    },
    /// Debit an account.
    Withdraw {
        /// Account name.
        account: String,
        /// Amount (> 0).
        amount: u64,
    },
    /// Move money between two accounts.
    Transfer {
        /// Debited account.
        from: String,
        /// Credited account.
        to: String,
        /// Amount (> 0).
        amount: u64,
    },
}

/// Requests understood by `query` (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Query {
    /// `{"balance":"alice"}` → `{"balance":42}`.
    Balance(String),
    /// `"total"` (or an empty request) → `{"total":...,"accounts":...,"tx_count":...}`.
    Total,
    /// `{"accounts":{"after":"bob","limit":2}}` → one page of accounts in
    /// name order, `{"accounts":[{"account":"carol","balance":5},...],"next":"dave"}`;
    /// `next` (the last account of the page, or `null` at the end) is the
    /// `after` of the following page. Both fields are optional; `limit`
    /// defaults to 100 and is capped at 1000.
    Accounts {
        /// Start after this account.
        #[serde(default)]
        after: Option<String>,
        /// Accounts per page.
        #[serde(default)]
        limit: Option<u32>,
    },
}

/// Default page size of the `accounts` query.
pub const DEFAULT_PAGE: u32 = 100;
/// Largest page of the `accounts` query.
pub const MAX_PAGE: u32 = 1000;

/// One row of the `accounts` query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountRow {
    /// Account name.
    pub account: String,
    /// Its balance.
    pub balance: u64,
}

/// Answer to the `accounts` query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountsPage {
    /// Accounts in name order.
    pub accounts: Vec<AccountRow>,
    /// The `after` of the next page, `None` at the end.
    pub next: Option<String>,
}

fn unknown(account: &str) -> Rejection {
    Rejection::new("unknown_account", format!("no account named {account:?}"))
}

fn positive(amount: u64) -> Result<u64, Rejection> {
    if amount == 0 {
        Err(Rejection::new("zero_amount", "amounts must be positive"))
    } else {
        Ok(amount)
    }
}

fn overflow() -> Rejection {
    Rejection::new("overflow", "balance would overflow")
}

fn balance(account: &str) -> Result<u64, ApplyError> {
    Ok(ACCOUNTS
        .may_load(account)?
        .ok_or_else(|| unknown(account))?)
}

fn totals() -> Result<Totals, ApplyError> {
    Ok(TOTALS.may_load()?.unwrap_or_default())
}

fn apply_tx(tx: Tx) -> Result<(), ApplyError> {
    match tx {
        Tx::Open { account } => {
            if account.is_empty() || account.len() > 64 {
                return Err(Rejection::new("bad_account", "account names are 1..=64 bytes").into());
            }
            if ACCOUNTS.has(&account) {
                return Err(Rejection::new(
                    "account_exists",
                    format!("{account:?} is already open"),
                )
                .into());
            }
            ACCOUNTS.save(&account, &0)?;
            let mut t = totals()?;
            t.accounts += 1;
            TOTALS.save(&t)?;
        }
        Tx::Deposit { account, amount } => {
            let new = balance(&account)?
                .checked_add(positive(amount)?)
                .ok_or_else(overflow)?;
            ACCOUNTS.save(&account, &new)?;
            let mut t = totals()?;
            t.total += u128::from(amount);
            TOTALS.save(&t)?;
        }
        Tx::Withdraw { account, amount } => {
            let bal = balance(&account)?;
            let new = bal.checked_sub(positive(amount)?).ok_or_else(|| {
                Rejection::new(
                    "overdraft",
                    format!("{account:?} holds {bal}, cannot pay {amount}"),
                )
            })?;
            ACCOUNTS.save(&account, &new)?;
            let mut t = totals()?;
            t.total = t.total.saturating_sub(u128::from(amount));
            TOTALS.save(&t)?;
        }
        Tx::Transfer { from, to, amount } => {
            positive(amount)?;
            if from == to {
                return Err(
                    Rejection::new("self_transfer", "from and to are the same account").into(),
                );
            }
            let src = balance(&from)?;
            let dst = balance(&to)?;
            let src = src.checked_sub(amount).ok_or_else(|| {
                Rejection::new(
                    "overdraft",
                    format!("{from:?} holds {src}, cannot pay {amount}"),
                )
            })?;
            let dst = dst.checked_add(amount).ok_or_else(overflow)?;
            ACCOUNTS.save(&from, &src)?;
            ACCOUNTS.save(&to, &dst)?;
        }
    }
    TX_COUNT.update(|n| -> Result<u64, ApplyError> { Ok(n.unwrap_or(0) + 1) })?;
    Ok(())
}

/// Write the keyed layout from the balances and counter of an older whole
/// state, and remove the old entry.
fn write_keyed(accounts: BTreeMap<String, u64>, tx_count: u64) -> Result<(), String> {
    let mut totals = Totals::default();
    for (account, balance) in &accounts {
        ACCOUNTS.save(account, balance)?;
        totals.accounts += 1;
        totals.total += u128::from(*balance);
    }
    TOTALS.save(&totals)?;
    TX_COUNT.save(&tx_count)?;
    whole::remove();
    Ok(())
}

impl Realm for Ledger {
    const REALM_TYPE: &'static str = "ledger";
    const VERSION: &'static str = "3.0.0";
    const DESCRIPTION: &'static str =
        "Accounts and transfers; rejects overdrafts and unknown accounts";
    const STATE_VERSION: u32 = 3;
    type Event = Tx;

    fn apply(event: Event<'_, Tx>) -> Result<(), ApplyError> {
        apply_tx(event.payload)
    }

    fn migrate(from_state_version: u32) -> Result<(), String> {
        let Some((version, body)) = whole::load_raw()? else {
            // Ledger 1.x and 2.x always wrote their whole-state entry; a
            // realm without one has nothing to migrate.
            return Ok(());
        };
        if version != from_state_version {
            return Err(format!(
                "the realm claims state version {from_state_version} but its state entry has version {version}"
            ));
        }
        let decode = |e: String| format!("ledger state version {version}: {e}");
        match version {
            1 => {
                let v1: StateV1 = realmhost_guest::entry::decode_postcard(&body).map_err(decode)?;
                write_keyed(v1.accounts, 0)
            }
            2 => {
                let v2: StateV2 = realmhost_guest::entry::decode_postcard(&body).map_err(decode)?;
                write_keyed(v2.accounts, v2.tx_count)
            }
            v => Err(format!("ledger cannot migrate from state version {v}")),
        }
    }

    fn query(request: &str) -> Result<String, String> {
        let q: Query = if request.trim().is_empty() {
            Query::Total
        } else {
            realmhost_guest::entry::decode_json(request)?
        };
        Ok(match q {
            Query::Balance(account) => match ACCOUNTS.may_load(&account)? {
                Some(b) => format!(r#"{{"balance":{b}}}"#),
                None => return Err(format!("no account named {account:?}")),
            },
            Query::Total => {
                let t = TOTALS.may_load()?.unwrap_or_default();
                format!(
                    r#"{{"total":{},"accounts":{},"tx_count":{}}}"#,
                    t.total,
                    t.accounts,
                    TX_COUNT.may_load()?.unwrap_or(0)
                )
            }
            Query::Accounts { after, limit } => {
                let limit = limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
                let lower = after.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
                let mut page = AccountsPage {
                    accounts: Vec::new(),
                    next: None,
                };
                let rows = ACCOUNTS
                    .range(lower, Bound::Unbounded, Order::Ascending)
                    .page_size(limit + 1);
                for row in rows {
                    let (account, balance) = row?;
                    if page.accounts.len() == limit as usize {
                        page.next = page.accounts.last().map(|r| r.account.clone());
                        break;
                    }
                    page.accounts.push(AccountRow { account, balance });
                }
                serde_json::to_string(&page).map_err(|e| e.to_string())?
            }
        })
    }
}

export_realm!(Ledger);

#[cfg(test)]
mod tests {
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
}
