//! `realmhost messages …`: messages between realms on a running node — a
//! realm's undelivered messages and queues, a chain, dead letters (list,
//! retry, drop). Listings take the read token (or the admin token), retry
//! and drop the admin token.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use clap::Subcommand;
use serde_json::{Value, json};

use super::client::{Client, Conn, enc, print_json};
use crate::node::{ChainView, MessageView, PairView, RealmMessages, SettledMessage};

/// `realmhost messages …`
#[derive(Debug, Subcommand)]
pub enum MessagesCmd {
    /// A realm's undelivered messages, in send order, and the (sender,
    /// target) queues it is part of, with their failed attempts.
    Realm {
        /// Realm id.
        id: String,
        /// Messages to list (at most 1000).
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// A chain by id (the id of its first message): its settled messages
    /// that the node still remembers, with their outcomes, and its pending
    /// ones.
    Chain {
        /// Chain id, `<realm>@<seq>.<index>`.
        id: String,
    },
    /// Dead letters: messages that could not be delivered, with why.
    Dead {
        /// Start after this message id.
        #[arg(long)]
        after: Option<String>,
        /// Page size (at most 1000).
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Put a dead letter back into its sender's outbox for another delivery
    /// (its time-to-live still counts from when it was sent).
    Retry {
        /// Message id, `<realm>@<seq>.<index>`.
        id: String,
    },
    /// Delete a dead letter for good.
    Drop {
        /// Message id, `<realm>@<seq>.<index>`.
        id: String,
    },
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A time relative to now: `now`, `in 3.2 s`, `12.0 s ago`.
fn when(ms: u64, now: u64) -> String {
    let secs = |d: u64| format!("{:.1} s", d as f64 / 1000.0);
    match ms.cmp(&now) {
        std::cmp::Ordering::Greater => format!("in {}", secs(ms - now)),
        _ if now - ms < 1000 => "now".to_owned(),
        _ => format!("{} ago", secs(now - ms)),
    }
}

/// The message table: one line per message.
pub(super) fn messages_text(list: &[MessageView], now: u64) -> String {
    let mut out = format!(
        "{:<32} {:<24} {:<10} {:<10} {:>7} {:>4}  {}\n",
        "MESSAGE", "TARGET", "TYPE", "KIND", "BYTES", "HOP", "DUE / REASON"
    );
    for m in list {
        let last = match &m.dead_reason {
            Some(r) => r.clone(),
            None => {
                let expires = m
                    .expires_ms
                    .map(|e| format!(", expires {}", when(e, now)))
                    .unwrap_or_default();
                format!("{}{expires}", when(m.due_ms, now))
            }
        };
        out.push_str(&format!(
            "{:<32} {:<24} {:<10} {:<10} {:>7} {:>4}  {}\n",
            m.message_id, m.target, m.target_type, m.kind, m.payload_bytes, m.hop, last
        ));
    }
    out
}

fn queues_text(list: &[PairView], now: u64) -> String {
    let mut out = format!(
        "{:<24} {:<24} {:>6} {:>8}  {}\n",
        "SENDER", "TARGET", "QUEUED", "ATTEMPTS", "NEXT / LAST ERROR"
    );
    for q in list {
        let next = q.next_attempt_ms.map_or("-".to_owned(), |t| when(t, now));
        let error = q
            .last_error
            .as_deref()
            .map(|e| format!("  ({e})"))
            .unwrap_or_default();
        out.push_str(&format!(
            "{:<24} {:<24} {:>6} {:>8}  {next}{error}\n",
            q.sender, q.target, q.queued, q.attempts
        ));
    }
    out
}

fn settled_text(list: &[SettledMessage], now: u64) -> String {
    let mut out = format!(
        "{:<32} {:<24} {:>4} {:>12}  {}\n",
        "MESSAGE", "TARGET", "HOP", "SETTLED", "OUTCOME"
    );
    for m in list {
        out.push_str(&format!(
            "{:<32} {:<24} {:>4} {:>12}  {}\n",
            m.message_id,
            m.target,
            m.hop,
            when(m.settled_ms, now),
            m.outcome
        ));
    }
    out
}

/// Retry or drop dead letter `id`.
fn change(c: &Client<'_>, conn: &Conn, verb: &str, id: &str) -> Result<()> {
    let v: Value = c.post(
        &format!("/v1/admin/messages/dead/{verb}"),
        &json!({ "id": id }),
    )?;
    if conn.json() {
        return print_json(&v);
    }
    if verb == "retry" {
        println!("{id}: back in its sender's outbox for another delivery");
    } else {
        println!("{id}: dropped");
    }
    Ok(())
}

/// Run a `messages` command.
pub fn messages(conn: &Conn, cmd: MessagesCmd) -> Result<()> {
    let c = Client::new(conn);
    let now = now_ms();
    match cmd {
        MessagesCmd::Realm { id, limit } => {
            let v = c.get(&format!(
                "/v1/admin/realms/messages?id={}&limit={limit}",
                enc(&id)
            ))?;
            if conn.json() {
                return print_json(&v);
            }
            let r: RealmMessages =
                serde_json::from_value(v).context("unexpected realm messages from the node")?;
            println!("{}: {} undelivered messages", r.realm_id, r.outbox.len());
            if !r.outbox.is_empty() {
                print!("{}", messages_text(&r.outbox, now));
            }
            println!("Queues: {}", r.queues.len());
            if !r.queues.is_empty() {
                print!("{}", queues_text(&r.queues, now));
            }
        }
        MessagesCmd::Chain { id } => {
            let v = c.get(&format!("/v1/admin/messages/chain?id={}", enc(&id)))?;
            if conn.json() {
                return print_json(&v);
            }
            let chain: ChainView =
                serde_json::from_value(v).context("unexpected chain from the node")?;
            println!(
                "Chain {}: {} settled (as far as remembered), {} pending",
                chain.chain_id,
                chain.settled.len(),
                chain.pending.len()
            );
            if !chain.settled.is_empty() {
                print!("{}", settled_text(&chain.settled, now));
            }
            if !chain.pending.is_empty() {
                println!("Pending:");
                print!("{}", messages_text(&chain.pending, now));
            }
        }
        MessagesCmd::Dead { after, limit } => {
            let mut path = format!("/v1/admin/messages/dead?limit={limit}");
            if let Some(a) = after {
                path.push_str(&format!("&after={}", enc(&a)));
            }
            let v = c.get(&path)?;
            if conn.json() {
                return print_json(&v);
            }
            let list: Vec<MessageView> = serde_json::from_value(v["dead_letters"].clone())
                .context("unexpected dead letters from the node")?;
            println!("Dead letters: {}", list.len());
            if !list.is_empty() {
                print!("{}", messages_text(&list, now));
            }
            if let Some(next) = v["next"].as_str() {
                println!("… more: --after {next}");
            }
        }
        MessagesCmd::Retry { id } => change(&c, conn, "retry", &id)?,
        MessagesCmd::Drop { id } => change(&c, conn, "drop", &id)?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;
    use crate::cli::Cli;

    #[test]
    fn messages_commands_parse() {
        Cli::command().debug_assert();
        for args in [
            &["realmhost", "messages", "realm", "bank/eu-1"][..],
            &["realmhost", "messages", "realm", "bank-a", "--limit", "5"],
            &["realmhost", "messages", "chain", "bank-a@3.0"],
            &["realmhost", "messages", "dead"],
            &[
                "realmhost",
                "messages",
                "dead",
                "--after",
                "bank-a@3.0",
                "--limit",
                "10",
                "--json",
            ],
            &["realmhost", "messages", "retry", "bank-a@3.0"],
            &["realmhost", "messages", "--json", "drop", "bank-a@3.0"],
        ] {
            assert!(Cli::try_parse_from(args).is_ok(), "{args:?}");
        }
        assert!(Cli::try_parse_from(["realmhost", "messages", "dead", "--limit", "x"]).is_err());
        assert!(Cli::try_parse_from(["realmhost", "messages", "retry"]).is_err());
    }

    #[test]
    fn tables_show_due_times_and_reasons() {
        let m = MessageView {
            message_id: "bank-a@3.0".into(),
            sender: "bank-a".into(),
            target: "bank-b".into(),
            target_type: "ledger".into(),
            kind: "tx".into(),
            payload_bytes: 42,
            chain_id: "bank-a@3.0".into(),
            hop: 1,
            correlation: None,
            sent_ms: 1_000,
            due_ms: 6_000,
            expires_ms: Some(61_000),
            dead_reason: None,
        };
        let text = messages_text(std::slice::from_ref(&m), 1_000);
        assert!(text.contains("bank-a@3.0"), "{text}");
        assert!(text.contains("in 5.0 s, expires in 60.0 s"), "{text}");
        let dead = MessageView {
            dead_reason: Some("bank-b is a counter".into()),
            ..m
        };
        let text = messages_text(&[dead], 70_000);
        assert!(text.contains("bank-b is a counter"), "{text}");
        assert_eq!(when(500, 1_000), "now");
        assert_eq!(when(1_000, 3_500), "2.5 s ago");
    }
}
