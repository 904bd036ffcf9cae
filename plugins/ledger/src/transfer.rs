//! Transfers between banks: a saga of messages (design-messaging §6).
//!
//! A bank is a `ledger` realm. Moving money from `alice` at `bank-a` to
//! `bob` at `bank-b` takes four events and two messages:
//!
//! 1. A client appends [`Tx::TransferOut`] to `bank-a`. It debits `alice`
//!    into a **pending transfer** (an entry of [`PENDING`] keyed by the
//!    transfer id; the amount is counted in [`RESERVED`]) and sends two
//!    messages, in one commit with the event:
//!    - [`Tx::Credit`] to `bank-b` (kind [`CREDIT_KIND`]), with
//!      `reply: always`, correlation = the transfer id and a time-to-live of
//!      `timeout_ms`;
//!    - [`Tx::TransferTimeout`] to `bank-a` itself (kind [`TIMEOUT_KIND`]),
//!      delayed by `timeout_ms`: the timer.
//! 2. `bank-b` applies the credit: `bob` is credited, or the credit is
//!    rejected (unknown account, overflow), leaving `bank-b` unchanged.
//!    `bank-b` only accepts a credit that is a message from a `ledger` realm
//!    ([`realmhost_guest::Event::origin`], set by the host): a client cannot
//!    mint money by appending a credit.
//! 3. The reply comes back to `bank-a` (`Realm::on_reply`): on `accepted` the
//!    pending transfer is confirmed (dropped: the money now lives at
//!    `bank-b`); on any other outcome (rejected, invalid, expired,
//!    dead-lettered) it is **compensated**: the amount goes back to `alice`.
//! 4. The timer reaches `bank-a`: if the transfer is still pending it is
//!    marked **overdue** (visible in the `transfers` queries); otherwise it
//!    does nothing.
//!
//! ## Conservation: only the reply moves the reserved money
//!
//! Money is neither created nor lost: once every reply is in, the sum over
//! all banks of balances plus reserved amounts is what it was before the
//! transfer (while an accepted credit's reply is on its way, its amount is
//! counted both at the target and in the source's reserve).
//! The timer alone cannot know whether the credit was accepted (an accepted
//! credit's reply can still be on its way when the timer fires), so refunding
//! on the timer could pay the amount twice: once at `bank-b`, once back to
//! `alice`. So the **timer never moves money**; the reply settles the
//! transfer, and a reply always comes: every message ends in exactly one
//! outcome, and the credit asks for a reply whatever it is. The timeout still
//! bounds the wait, through the host: the credit carries a time-to-live of
//! `timeout_ms`, so a credit not delivered by then can no longer be accepted
//! and is answered `expired`, which refunds. Every interleaving conserves:
//!
//! | order | result |
//! |---|---|
//! | accepted reply, then timer | confirmed; the timer finds nothing pending |
//! | failure reply, then timer | refunded once; the timer finds nothing pending |
//! | timer, then accepted reply | marked overdue, then confirmed |
//! | timer, then failure reply (e.g. expired) | marked overdue, then refunded once |
//!
//! A reply that finds no pending transfer (already settled, or not ours) is
//! ignored; a timer that does not match the pending transfer (another
//! transfer that reused the id after this one settled, or a timer sent from
//! another realm) is ignored too. A transfer id is unique among a bank's
//! pending transfers; it can be reused once its transfer has settled.

use realmhost_guest::{
    ApplyError, Bound, Event, Item, Level, Map, Message, Order, Origin, Realm, Rejection, Reply,
    ReplyWanted, log, send,
};
use serde::{Deserialize, Serialize};

use crate::{ACCOUNTS, Ledger, TOTALS, Tx, balance, overflow, positive, totals};

/// Pending outgoing transfers, keyed by transfer id.
pub const PENDING: Map<&str, Pending> = Map::new("transfers");
/// Number and sum of the pending outgoing transfers.
pub const RESERVED: Item<Reserved> = Item::new("reserved");

/// Timeout of a transfer when [`Tx::TransferOut`] names none: 30 s.
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;
/// Event kind of the credit message.
pub const CREDIT_KIND: &str = "credit";
/// Event kind of the timer message.
pub const TIMEOUT_KIND: &str = "transfer_timeout";
/// Longest transfer id, in bytes.
pub const MAX_TRANSFER_ID: usize = 64;

/// A transfer debited here and not yet settled by its reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// This bank, as the transfer named it (where its timer was sent).
    pub from_bank: String,
    /// The debited account.
    pub account: String,
    /// The target bank realm.
    pub to_bank: String,
    /// The account credited there.
    pub to_account: String,
    /// Amount reserved.
    pub amount: u64,
    /// Position of the `transfer_out` event (its timer carries it).
    pub seq: u64,
    /// Set when the timer fired before the reply came.
    pub overdue: bool,
}

/// Number and sum of pending transfers (a missing entry reads as zero).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reserved {
    /// Pending transfers.
    pub transfers: u64,
    /// Sum of their amounts.
    pub amount: u128,
}

/// One row of the `transfers` query: a pending transfer and its id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferRow {
    /// The transfer id.
    pub transfer_id: String,
    /// The pending transfer.
    #[serde(flatten)]
    pub pending: Pending,
}

/// Answer to the `transfers` query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransfersPage {
    /// Pending transfers in id order.
    pub transfers: Vec<TransferRow>,
    /// The `after` of the next page, `None` at the end.
    pub next: Option<String>,
}

fn reserved() -> Result<Reserved, ApplyError> {
    Ok(RESERVED.may_load()?.unwrap_or_default())
}

fn name(what: &str, value: &str, max: usize) -> Result<(), Rejection> {
    if value.is_empty() || value.len() > max {
        return Err(Rejection::new(
            format!("bad_{what}"),
            format!("{what} must be 1..={max} bytes"),
        ));
    }
    Ok(())
}

/// The fields of [`Tx::TransferOut`].
#[derive(Debug)]
pub(crate) struct TransferOut {
    pub from_bank: String,
    pub account: String,
    pub to_bank: String,
    pub to_account: String,
    pub amount: u64,
    pub transfer_id: String,
    pub timeout_ms: Option<u64>,
}

/// Reserve the amount and send the credit and the timer.
pub(crate) fn transfer_out(seq: u64, t: TransferOut) -> Result<(), ApplyError> {
    positive(t.amount)?;
    name("transfer_id", &t.transfer_id, MAX_TRANSFER_ID)?;
    name("bank", &t.from_bank, 256)?;
    name("bank", &t.to_bank, 256)?;
    name("account", &t.to_account, 64)?;
    let timeout = t.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
    if timeout == 0 {
        return Err(Rejection::new("bad_timeout", "timeout_ms must be positive").into());
    }
    if PENDING.has(&t.transfer_id) {
        return Err(Rejection::new(
            "transfer_exists",
            format!("transfer {:?} is still pending", t.transfer_id),
        )
        .into());
    }
    let bal = balance(&t.account)?;
    let new = bal.checked_sub(t.amount).ok_or_else(|| {
        Rejection::new(
            "overdraft",
            format!("{:?} holds {bal}, cannot pay {}", t.account, t.amount),
        )
    })?;
    ACCOUNTS.save(&t.account, &new)?;
    let mut tot = totals()?;
    tot.total = tot.total.saturating_sub(u128::from(t.amount));
    TOTALS.save(&tot)?;
    let mut r = reserved()?;
    r.transfers += 1;
    r.amount += u128::from(t.amount);
    RESERVED.save(&r)?;

    let credit = Tx::Credit {
        account: t.to_account.clone(),
        amount: t.amount,
        transfer_id: t.transfer_id.clone(),
    };
    send(
        Message::to_realm::<Ledger>(&t.to_bank, &credit)
            .kind(CREDIT_KIND)
            .reply(ReplyWanted::Always)
            .correlation(&t.transfer_id)
            .ttl_ms(timeout),
    );
    let timer = Tx::TransferTimeout {
        transfer_id: t.transfer_id.clone(),
        seq,
    };
    send(
        Message::to_realm::<Ledger>(&t.from_bank, &timer)
            .kind(TIMEOUT_KIND)
            .correlation(&t.transfer_id)
            .delay_ms(timeout),
    );
    PENDING.save(
        &t.transfer_id,
        &Pending {
            from_bank: t.from_bank,
            account: t.account,
            to_bank: t.to_bank,
            to_account: t.to_account,
            amount: t.amount,
            seq,
            overdue: false,
        },
    )?;
    Ok(())
}

/// Credit an account from another bank's transfer: only as a message from a
/// `ledger` realm.
pub(crate) fn credit(event_origin: bool, account: &str, amount: u64) -> Result<(), ApplyError> {
    if !event_origin {
        return Err(Rejection::new(
            "not_a_transfer",
            "a credit is only accepted as a message from a ledger realm's transfer",
        )
        .into());
    }
    let new = balance(account)?
        .checked_add(positive(amount)?)
        .ok_or_else(overflow)?;
    ACCOUNTS.save(account, &new)?;
    let mut t = totals()?;
    t.total += u128::from(amount);
    TOTALS.save(&t)?;
    Ok(())
}

/// Whether `event` is a message from a `ledger` realm.
pub(crate) fn from_ledger<E>(event: &Event<'_, E>) -> bool {
    event
        .origin
        .as_ref()
        .is_some_and(|o| o.source_type == Ledger::REALM_TYPE)
}

/// The timer: mark the transfer overdue if it is still pending (see the
/// module docs: it never moves money).
pub(crate) fn timeout(
    origin: Option<&Origin<'_>>,
    transfer_id: &str,
    seq: u64,
) -> Result<(), ApplyError> {
    let Some(origin) = origin else {
        return Err(Rejection::new(
            "not_a_timer",
            "a transfer timeout is only accepted as the bank's own timer message",
        )
        .into());
    };
    match PENDING.may_load(transfer_id)? {
        Some(mut p) if p.seq == seq && p.from_bank == origin.source_realm && !p.overdue => {
            log(
                Level::Warn,
                &format!("transfer {transfer_id:?} has had no reply yet: overdue"),
            );
            p.overdue = true;
            PENDING.save(transfer_id, &p)?;
        }
        // Settled already, already overdue, or not this transfer's timer.
        _ => {}
    }
    Ok(())
}

/// The reply to a credit: confirm on `accepted`, refund otherwise.
pub(crate) fn on_reply(reply: Reply<'_>) -> Result<(), ApplyError> {
    let Some(id) = reply.correlation else {
        return Ok(());
    };
    let Some(p) = PENDING.may_load(id)? else {
        // Settled already, or not a transfer of ours.
        return Ok(());
    };
    if !reply.is_accepted() {
        let new = balance(&p.account)?
            .checked_add(p.amount)
            .ok_or_else(overflow)?;
        ACCOUNTS.save(&p.account, &new)?;
        let mut t = totals()?;
        t.total += u128::from(p.amount);
        TOTALS.save(&t)?;
    }
    let mut r = reserved()?;
    r.transfers = r.transfers.saturating_sub(1);
    r.amount = r.amount.saturating_sub(u128::from(p.amount));
    RESERVED.save(&r)?;
    PENDING.remove(id);
    Ok(())
}

/// `{"transfers":{"after":..,"limit":..}}`: one page of pending transfers.
pub(crate) fn page(after: Option<String>, limit: u32) -> Result<TransfersPage, String> {
    let lower = after.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
    let mut page = TransfersPage {
        transfers: Vec::new(),
        next: None,
    };
    let rows = PENDING
        .range(lower, Bound::Unbounded, Order::Ascending)
        .page_size(limit + 1);
    for row in rows {
        let (transfer_id, pending) = row?;
        if page.transfers.len() == limit as usize {
            page.next = page.transfers.last().map(|r| r.transfer_id.clone());
            break;
        }
        page.transfers.push(TransferRow {
            transfer_id,
            pending,
        });
    }
    Ok(page)
}

/// `{"transfer":"t-1"}`: one pending transfer, or `null`.
pub(crate) fn one(transfer_id: String) -> Result<String, String> {
    let row = PENDING.may_load(&transfer_id)?.map(|pending| TransferRow {
        transfer_id,
        pending,
    });
    serde_json::to_string(&row).map_err(|e| e.to_string())
}

/// `"reserved"`: `{"transfers":N,"amount":M}`.
pub(crate) fn reserved_json() -> Result<String, String> {
    let r = RESERVED.may_load()?.unwrap_or_default();
    Ok(format!(
        r#"{{"transfers":{},"amount":{}}}"#,
        r.transfers, r.amount
    ))
}
