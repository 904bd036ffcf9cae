//! `ledger`: accounts and transfers.
//!
//! A realm is a small bank: accounts are opened, credited, debited and linked
//! by transfers. Balances never go negative: an overdraft, an unknown account
//! or an arithmetic overflow is a [`Rejection`], and the state is unchanged.
//!
//! State version 2 added the transaction counter; version-1 snapshots are
//! migrated on restore (see [`RealmLogic::migrate`]).

use std::collections::BTreeMap;

use realmhost_guest::{Event, RealmLogic, Rejection, export_realm};
use serde::{Deserialize, Serialize};

/// The `ledger` realm type.
#[derive(Debug)]
pub struct Ledger;

/// A ledger realm's state (state version 2).
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Balance per account, in the smallest unit.
    pub accounts: BTreeMap<String, u64>,
    /// Number of accepted transactions.
    pub tx_count: u64,
}

/// State version 1, kept to read old snapshots.
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
    /// `"total"` → `{"total":..., "accounts":...}`.
    Total,
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

impl State {
    fn balance(&self, account: &str) -> Result<u64, Rejection> {
        self.accounts
            .get(account)
            .copied()
            .ok_or_else(|| unknown(account))
    }

    fn set(&mut self, account: &str, balance: u64) {
        if let Some(b) = self.accounts.get_mut(account) {
            *b = balance;
        }
    }

    fn apply_tx(&mut self, tx: Tx) -> Result<(), Rejection> {
        match tx {
            Tx::Open { account } => {
                if account.is_empty() || account.len() > 64 {
                    return Err(Rejection::new(
                        "bad_account",
                        "account names are 1..=64 bytes",
                    ));
                }
                if self.accounts.contains_key(&account) {
                    return Err(Rejection::new(
                        "account_exists",
                        format!("{account:?} is already open"),
                    ));
                }
                self.accounts.insert(account, 0);
            }
            Tx::Deposit { account, amount } => {
                let new = self
                    .balance(&account)?
                    .checked_add(positive(amount)?)
                    .ok_or_else(|| Rejection::new("overflow", "balance would overflow"))?;
                self.set(&account, new);
            }
            Tx::Withdraw { account, amount } => {
                let bal = self.balance(&account)?;
                let new = bal.checked_sub(positive(amount)?).ok_or_else(|| {
                    Rejection::new(
                        "overdraft",
                        format!("{account:?} holds {bal}, cannot pay {amount}"),
                    )
                })?;
                self.set(&account, new);
            }
            Tx::Transfer { from, to, amount } => {
                positive(amount)?;
                if from == to {
                    return Err(Rejection::new(
                        "self_transfer",
                        "from and to are the same account",
                    ));
                }
                let src = self.balance(&from)?;
                let dst = self.balance(&to)?;
                let src = src.checked_sub(amount).ok_or_else(|| {
                    Rejection::new(
                        "overdraft",
                        format!("{from:?} holds {src}, cannot pay {amount}"),
                    )
                })?;
                let dst = dst
                    .checked_add(amount)
                    .ok_or_else(|| Rejection::new("overflow", "balance would overflow"))?;
                self.set(&from, src);
                self.set(&to, dst);
            }
        }
        self.tx_count += 1;
        Ok(())
    }
}

impl RealmLogic for Ledger {
    const REALM_TYPE: &'static str = "ledger";
    const VERSION: &'static str = "2.0.0";
    const DESCRIPTION: &'static str =
        "Accounts and transfers; rejects overdrafts and unknown accounts";
    const STATE_VERSION: u8 = 2;
    type State = State;
    type Event = Tx;

    fn init(_realm_id: &str) -> State {
        State::default()
    }

    fn apply(state: &mut State, event: Event<'_, Tx>) -> Result<(), Rejection> {
        state.apply_tx(event.payload)
    }

    fn migrate(version: u8, bytes: &[u8]) -> Result<State, String> {
        match version {
            1 => {
                let v1: StateV1 = realmhost_guest::entry::decode_postcard(bytes)?;
                Ok(State {
                    accounts: v1.accounts,
                    tx_count: 0,
                })
            }
            v => Err(format!("ledger cannot read state version {v}")),
        }
    }

    fn query(state: &State, request: &str) -> Result<String, String> {
        let q: Query = if request.trim().is_empty() {
            Query::Total
        } else {
            realmhost_guest::entry::decode_json(request)?
        };
        Ok(match q {
            Query::Balance(account) => match state.accounts.get(&account) {
                Some(b) => format!(r#"{{"balance":{b}}}"#),
                None => return Err(format!("no account named {account:?}")),
            },
            Query::Total => {
                let total: u128 = state.accounts.values().map(|&b| u128::from(b)).sum();
                format!(
                    r#"{{"total":{total},"accounts":{},"tx_count":{}}}"#,
                    state.accounts.len(),
                    state.tx_count
                )
            }
        })
    }
}

export_realm!(Ledger);

#[cfg(test)]
mod tests {
    use super::*;
    use realmhost_guest::{ApplyError, EventRef, encode_payload, entry};

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

    fn run(state: Vec<u8>, txs: &[Tx]) -> Result<Vec<u8>, ApplyError> {
        let mut s = state;
        for (i, tx) in txs.iter().enumerate() {
            let p = encode_payload(tx);
            s = entry::apply::<Ledger>(&s, &EventRef::new(i as u64 + 1, "tx", &p, "teller"))?;
        }
        Ok(s)
    }

    #[test]
    fn transfers_move_money() {
        let s = run(
            entry::init::<Ledger>("l"),
            &[open("a"), open("b"), dep("a", 10), xfer("a", "b", 4)],
        )
        .unwrap();
        let s = entry::decode_state::<Ledger>(&s).unwrap();
        assert_eq!(s.accounts["a"], 6);
        assert_eq!(s.accounts["b"], 4);
        assert_eq!(s.tx_count, 4);
    }

    #[test]
    fn rejects_overdraft_unknown_and_duplicates() {
        let base = run(
            entry::init::<Ledger>("l"),
            &[open("a"), open("b"), dep("a", 10)],
        )
        .unwrap();
        let code = |tx: Tx| match run(base.clone(), &[tx]) {
            Err(ApplyError::Rejected(r)) => r.code,
            other => panic!("expected a rejection, got {other:?}"),
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
        assert_eq!(code(open("a")), "account_exists");
        assert_eq!(code(dep("a", 0)), "zero_amount");
        assert_eq!(code(xfer("a", "a", 1)), "self_transfer");
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
        ];
        let single = run(entry::init::<Ledger>("l"), &txs).unwrap();
        let payloads: Vec<_> = txs.iter().map(encode_payload).collect();
        let mut enc = realmhost_guest::batch::BatchEncoder::new();
        for (i, p) in payloads.iter().enumerate() {
            enc.push(&EventRef::new(i as u64 + 1, "tx", p, "teller"));
        }
        let batch =
            entry::apply_batch::<Ledger>(&entry::init::<Ledger>("l"), &enc.finish()).unwrap();
        assert_eq!(single, batch);
    }

    #[test]
    fn batch_reports_the_failing_index() {
        let txs = [open("a"), dep("a", 1), xfer("a", "nobody", 1)];
        let mut enc = realmhost_guest::batch::BatchEncoder::new();
        let payloads: Vec<_> = txs.iter().map(encode_payload).collect();
        for (i, p) in payloads.iter().enumerate() {
            enc.push(&EventRef::new(i as u64 + 1, "tx", p, "teller"));
        }
        let err =
            entry::apply_batch::<Ledger>(&entry::init::<Ledger>("l"), &enc.finish()).unwrap_err();
        assert_eq!(err.index, 2);
    }

    #[test]
    fn restores_version_1_snapshots() {
        let mut v1 = StateV1::default();
        v1.accounts.insert("old".into(), 77);
        let mut bytes = vec![1u8];
        bytes.extend(encode_payload(&v1));
        let restored = entry::restore::<Ledger>(&bytes).unwrap();
        let s = entry::decode_state::<Ledger>(&restored).unwrap();
        assert_eq!(s.accounts["old"], 77);
        assert_eq!(s.tx_count, 0);
        // A snapshot from the future is refused, not misread.
        assert!(entry::restore::<Ledger>(&[9, 0]).is_err());
        assert!(entry::restore::<Ledger>(&[]).is_err());
    }

    #[test]
    fn queries() {
        let s = run(entry::init::<Ledger>("l"), &[open("a"), dep("a", 10)]).unwrap();
        assert_eq!(
            entry::query::<Ledger>(&s, r#"{"balance":"a"}"#).unwrap(),
            r#"{"balance":10}"#
        );
        assert_eq!(
            entry::query::<Ledger>(&s, "").unwrap(),
            r#"{"total":10,"accounts":1,"tx_count":2}"#
        );
        assert!(entry::query::<Ledger>(&s, r#"{"balance":"x"}"#).is_err());
        assert!(entry::query::<Ledger>(&s, "nonsense").is_err());
    }
}
