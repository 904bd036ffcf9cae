//! `ledger`: accounts and transfers.
//!
//! A realm is a small bank: accounts are opened, credited, debited and linked
//! by transfers. Balances never go negative: an overdraft, an unknown account
//! or an arithmetic overflow is a [`Rejection`], and the realm is unchanged.
//! Banks also send money to each other with a saga of messages
//! ([`Tx::TransferOut`], [`Tx::Credit`], the reply and a timer): see
//! [`transfer`] for the message flow and why money is conserved.
//!
//! ## Events (JSON, as `realmhost realm append` takes them)
//! The kind is free (the payload says what happens); messages the ledger
//! sends use [`transfer::CREDIT_KIND`] and [`transfer::TIMEOUT_KIND`].
//! - `{"open":{"account":"alice"}}`
//! - `{"deposit":{"account":"alice","amount":10}}`,
//!   `{"withdraw":{"account":"alice","amount":3}}`
//! - `{"transfer":{"from":"alice","to":"bob","amount":2}}` (same bank)
//! - `{"transfer_out":{"from_bank":"bank-a","account":"alice","to_bank":"bank-b","to_account":"bob","amount":5,"transfer_id":"t-1","timeout_ms":30000}}`
//!   (`timeout_ms` optional): another bank
//! - `{"credit":{"account":"bob","amount":5,"transfer_id":"t-1"}}` and
//!   `{"transfer_timeout":{"transfer_id":"t-1","seq":3}}`: only accepted as
//!   messages (a client's are rejected), shown here for `decode-event`.
//!
//! ## Layout (state version 3)
//! One entry per account, so an event touches what it names and nothing
//! else, however many accounts the realm holds:
//!
//! | entry | type | what |
//! |---|---|---|
//! | [`ACCOUNTS`] `[name]` | `u64` | balance of one account |
//! | [`TOTALS`] | [`Totals`] | number of accounts and sum of balances, kept up to date so `"total"` stays O(1) |
//! | [`TX_COUNT`] | `u64` | accepted transactions (replies are not counted) |
//! | [`transfer::PENDING`] `[transfer id]` | [`Pending`] | an outgoing transfer awaiting its reply |
//! | [`transfer::RESERVED`] | [`Reserved`] | number and sum of pending transfers |
//!
//! A fresh realm holds no entry; missing totals read as zero. The transfer
//! entries came with the saga; realms written before it simply have none,
//! so the state version did not change.
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
    ApplyError, Bound, Event, Item, Map, Order, Realm, Rejection, Reply, export_realm, whole,
};

pub mod transfer;

use serde::{Deserialize, Serialize};
pub use transfer::{Pending, Reserved, TransferRow, TransfersPage};

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
    /// Start a transfer to an account of another bank (see [`transfer`]):
    /// debit `account` into a pending transfer, send [`Tx::Credit`] to
    /// `to_bank` and a timer to `from_bank`.
    TransferOut {
        /// This bank's realm id (where the timer goes).
        from_bank: String,
        /// Debited account.
        account: String,
        /// The target bank's realm id (a `ledger` realm).
        to_bank: String,
        /// The account credited there.
        to_account: String,
        /// Amount (> 0).
        amount: u64,
        /// Unique among this bank's pending transfers (1..=64 bytes); the
        /// correlation id of the saga's messages.
        transfer_id: String,
        /// How long the credit may take to be delivered, in ms (default
        /// [`transfer::DEFAULT_TIMEOUT_MS`]).
        #[serde(default)]
        timeout_ms: Option<u64>,
    },
    /// The credit of a transfer from another bank: accepted only as a
    /// message from a `ledger` realm.
    Credit {
        /// Credited account.
        account: String,
        /// Amount (> 0).
        amount: u64,
        /// The sender's transfer id (for operators).
        transfer_id: String,
    },
    /// The timer of a transfer, sent by the bank to itself: accepted only
    /// as a message.
    TransferTimeout {
        /// The transfer.
        transfer_id: String,
        /// Position of its `transfer_out` event.
        seq: u64,
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
    /// `{"transfer":"t-1"}` → the pending transfer
    /// `{"transfer_id":"t-1","from_bank":..,"account":..,"to_bank":..,"to_account":..,"amount":..,"seq":..,"overdue":false}`,
    /// or `null` when no transfer of that id is pending (settled or unknown).
    Transfer(String),
    /// `{"transfers":{"after":"t-1","limit":10}}` → one page of pending
    /// transfers in id order, `{"transfers":[...],"next":...}` (rows as in
    /// `transfer`; paging as in `accounts`).
    Transfers {
        /// Start after this transfer id.
        #[serde(default)]
        after: Option<String>,
        /// Transfers per page.
        #[serde(default)]
        limit: Option<u32>,
    },
    /// `"reserved"` → `{"transfers":N,"amount":M}`: the pending transfers
    /// and the money they hold. Money is conserved across banks: once every
    /// reply is in, the sum of every bank's `total` plus its reserved
    /// `amount` is unchanged by transfers.
    Reserved,
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

fn apply_tx(event: Event<'_, Tx>) -> Result<(), ApplyError> {
    let from_ledger = transfer::from_ledger(&event);
    let (seq, origin) = (event.seq, event.origin);
    match event.payload {
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
        Tx::TransferOut {
            from_bank,
            account,
            to_bank,
            to_account,
            amount,
            transfer_id,
            timeout_ms,
        } => transfer::transfer_out(
            seq,
            transfer::TransferOut {
                from_bank,
                account,
                to_bank,
                to_account,
                amount,
                transfer_id,
                timeout_ms,
            },
        )?,
        Tx::Credit {
            account, amount, ..
        } => transfer::credit(from_ledger, &account, amount)?,
        Tx::TransferTimeout {
            transfer_id,
            seq: of,
        } => transfer::timeout(origin.as_ref(), &transfer_id, of)?,
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
        apply_tx(event)
    }

    fn on_reply(reply: Reply<'_>) -> Result<(), ApplyError> {
        transfer::on_reply(reply)
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
            Query::Transfer(id) => transfer::one(id)?,
            Query::Transfers { after, limit } => {
                let limit = limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
                let page = transfer::page(after, limit)?;
                serde_json::to_string(&page).map_err(|e| e.to_string())?
            }
            Query::Reserved => transfer::reserved_json()?,
        })
    }
}

export_realm!(Ledger);

#[cfg(test)]
mod saga_tests;
#[cfg(test)]
mod tests;
