//! The transfer saga over the SDK's native drivers: two banks and a tiny
//! stand-in for the host's delivery (origins, replies, expiry), driven in
//! every order the host may deliver in.

use std::collections::BTreeMap;

use realmhost_guest::batch::{BatchEncoder, Origin, Outcome, ReplyRef};
use realmhost_guest::{
    Effects, EventRef, MemoryState, Message, ReplyWanted, encode_payload, entry,
};

use super::*;
use crate::transfer::{CREDIT_KIND, DEFAULT_TIMEOUT_MS, TIMEOUT_KIND};

/// What a bank's log holds, to replay it: (kind, payload, origin, reply).
type Logged = (
    String,
    Vec<u8>,
    Option<OwnedOrigin>,
    Option<(String, String, bool)>,
);

#[derive(Clone)]
struct OwnedOrigin {
    realm: String,
    message_id: String,
    correlation: Option<String>,
}

/// A message on its way: who sent it, its id, the message.
#[derive(Clone, Debug)]
struct Envelope {
    from: String,
    id: String,
    msg: Message,
}

/// A reply on its way to `to`.
#[derive(Clone, Debug)]
struct ReplyEnv {
    to: String,
    message_id: String,
    correlation: Option<String>,
    accepted: bool,
}

#[derive(Default)]
struct Net {
    banks: BTreeMap<String, MemoryState>,
    logs: BTreeMap<String, Vec<Logged>>,
}

impl Net {
    fn new(banks: &[(&str, &[Tx])]) -> Self {
        let mut net = Self::default();
        for (bank, txs) in banks {
            let mut realm = MemoryState::new();
            entry::init::<Ledger>(&mut realm, bank).unwrap();
            net.banks.insert(bank.to_string(), realm);
            net.logs.insert(bank.to_string(), Vec::new());
            for tx in *txs {
                net.client(bank, tx).unwrap();
            }
        }
        net
    }

    fn seq(&self, bank: &str) -> u64 {
        self.logs[bank].len() as u64 + 1
    }

    fn apply(&mut self, bank: &str, logged: Logged) -> Result<Effects, ApplyError> {
        let seq = self.seq(bank);
        let (kind, payload, origin, reply) = &logged;
        let outcome = |accepted: bool| {
            if accepted {
                Outcome::Accepted
            } else {
                Outcome::Rejected {
                    code: "x",
                    message: "x",
                }
            }
        };
        let ev = EventRef {
            source_realm: origin.as_ref().map(|o| o.realm.as_str()),
            origin: origin.as_ref().map(|o| Origin {
                source_realm: &o.realm,
                source_type: "ledger",
                message_id: &o.message_id,
                chain_id: &o.message_id,
                hop: 1,
                correlation: o.correlation.as_deref(),
            }),
            reply: reply.as_ref().map(|(id, corr, ok)| ReplyRef {
                message_id: id,
                correlation: Some(corr),
                outcome: outcome(*ok),
            }),
            ..EventRef::new(seq, kind, payload, "test")
        };
        let r = entry::apply::<Ledger>(self.banks.get_mut(bank).unwrap(), &ev);
        if r.is_ok() {
            self.logs.get_mut(bank).unwrap().push(logged);
        }
        r
    }

    fn client(&mut self, bank: &str, tx: &Tx) -> Result<Vec<Envelope>, ApplyError> {
        let seq = self.seq(bank);
        let fx = self.apply(bank, ("tx".into(), encode_payload(tx), None, None))?;
        Ok(envelopes(bank, seq, fx))
    }

    /// Deliver a message; returns the reply it asks for, if any.
    fn deliver(&mut self, env: &Envelope) -> Option<ReplyEnv> {
        let origin = OwnedOrigin {
            realm: env.from.clone(),
            message_id: env.id.clone(),
            correlation: env.msg.correlation.clone(),
        };
        let r = self.apply(
            &env.msg.target_realm,
            (
                env.msg.kind.clone(),
                env.msg.payload.clone(),
                Some(origin),
                None,
            ),
        );
        let fx = r.as_ref().ok();
        assert!(
            fx.is_none_or(Effects::is_empty),
            "a credit or a timer sends nothing"
        );
        self.reply_for(env, r.is_ok())
    }

    fn reply_for(&self, env: &Envelope, accepted: bool) -> Option<ReplyEnv> {
        let wanted = match env.msg.reply {
            ReplyWanted::Never => false,
            ReplyWanted::OnFailure => !accepted,
            ReplyWanted::Always => true,
        };
        wanted.then(|| ReplyEnv {
            to: env.from.clone(),
            message_id: env.id.clone(),
            correlation: env.msg.correlation.clone(),
            accepted,
        })
    }

    /// The host's answer to a message whose time-to-live passed undelivered.
    fn expire(&self, env: &Envelope) -> Option<ReplyEnv> {
        self.reply_for(env, false)
    }

    fn reply(&mut self, r: &ReplyEnv) {
        let logged = (
            "reply".into(),
            Vec::new(),
            None,
            Some((
                r.message_id.clone(),
                r.correlation.clone().unwrap(),
                r.accepted,
            )),
        );
        let fx = self.apply(&r.to, logged).expect("replies are accepted");
        assert!(fx.is_empty());
    }

    fn q(&self, bank: &str, request: &str) -> String {
        entry::query::<Ledger>(&self.banks[bank], request).unwrap()
    }

    fn balance(&self, bank: &str, account: &str) -> u64 {
        self.banks[bank].read(|| ACCOUNTS.load(account).unwrap())
    }

    /// Balances plus reserved amounts over every bank: constant once every
    /// reply is in.
    fn money(&self) -> u128 {
        self.banks
            .values()
            .map(|b| {
                b.read(|| {
                    let t = TOTALS.may_load().unwrap().unwrap_or_default();
                    let r = transfer::RESERVED.may_load().unwrap().unwrap_or_default();
                    t.total + r.amount
                })
            })
            .sum()
    }

    /// Replaying each bank's log in one batch rebuilds it exactly.
    fn assert_replays(&self) {
        for (bank, log) in &self.logs {
            let origins: Vec<_> = log.iter().map(|l| l.2.clone()).collect();
            let mut enc = BatchEncoder::new();
            for (i, (kind, payload, _, reply)) in log.iter().enumerate() {
                let o = origins[i].as_ref();
                enc.push(&EventRef {
                    source_realm: o.map(|o| o.realm.as_str()),
                    origin: o.map(|o| Origin {
                        source_realm: &o.realm,
                        source_type: "ledger",
                        message_id: &o.message_id,
                        chain_id: &o.message_id,
                        hop: 1,
                        correlation: o.correlation.as_deref(),
                    }),
                    reply: reply.as_ref().map(|(id, corr, ok)| ReplyRef {
                        message_id: id,
                        correlation: Some(corr),
                        outcome: if *ok {
                            Outcome::Accepted
                        } else {
                            Outcome::Expired
                        },
                    }),
                    ..EventRef::new(i as u64 + 1, kind, payload, "test")
                });
            }
            let mut replayed = MemoryState::new();
            entry::init::<Ledger>(&mut replayed, bank).unwrap();
            entry::apply_batch::<Ledger>(&mut replayed, &enc.finish()).unwrap();
            assert_eq!(&replayed, &self.banks[bank], "replay of {bank}");
        }
    }
}

fn envelopes(from: &str, seq: u64, fx: Effects) -> Vec<Envelope> {
    fx.messages
        .into_iter()
        .enumerate()
        .map(|(i, msg)| Envelope {
            from: from.into(),
            id: format!("{from}@{seq}.{i}"),
            msg,
        })
        .collect()
}

fn open(a: &str) -> Tx {
    Tx::Open { account: a.into() }
}

fn dep(a: &str, amount: u64) -> Tx {
    Tx::Deposit {
        account: a.into(),
        amount,
    }
}

fn out(to_account: &str, amount: u64, id: &str) -> Tx {
    Tx::TransferOut {
        from_bank: "bank-a".into(),
        account: "alice".into(),
        to_bank: "bank-b".into(),
        to_account: to_account.into(),
        amount,
        transfer_id: id.into(),
        timeout_ms: None,
    }
}

fn banks() -> Net {
    Net::new(&[
        ("bank-a", &[open("alice"), dep("alice", 100)]),
        ("bank-b", &[open("bob")]),
    ])
}

/// Start a transfer of 30 to `to_account`: returns (credit, timer).
fn start(net: &mut Net, to_account: &str) -> (Envelope, Envelope) {
    let sent = net.client("bank-a", &out(to_account, 30, "t-1")).unwrap();
    let [credit, timer] = <[Envelope; 2]>::try_from(sent).unwrap();
    (credit, timer)
}

#[test]
fn transfer_out_reserves_and_sends_the_credit_and_the_timer() {
    let mut net = banks();
    let (credit, timer) = start(&mut net, "bob");
    assert_eq!(credit.msg.target_realm, "bank-b");
    assert_eq!(credit.msg.target_type, "ledger");
    assert_eq!(credit.msg.kind, CREDIT_KIND);
    assert_eq!(credit.msg.reply, ReplyWanted::Always);
    assert_eq!(credit.msg.correlation.as_deref(), Some("t-1"));
    assert_eq!(credit.msg.ttl_ms, Some(DEFAULT_TIMEOUT_MS));
    assert_eq!(credit.msg.delay_ms, 0);
    assert_eq!(
        credit.msg.payload,
        encode_payload(&Tx::Credit {
            account: "bob".into(),
            amount: 30,
            transfer_id: "t-1".into()
        })
    );
    assert_eq!(timer.msg.target_realm, "bank-a");
    assert_eq!(timer.msg.kind, TIMEOUT_KIND);
    assert_eq!(timer.msg.delay_ms, DEFAULT_TIMEOUT_MS);
    assert_eq!(timer.msg.reply, ReplyWanted::Never);
    assert_eq!(
        timer.msg.payload,
        encode_payload(&Tx::TransferTimeout {
            transfer_id: "t-1".into(),
            seq: 3
        })
    );

    assert_eq!(net.balance("bank-a", "alice"), 70);
    assert_eq!(
        net.q("bank-a", r#""reserved""#),
        r#"{"transfers":1,"amount":30}"#
    );
    assert_eq!(
        net.q("bank-a", r#"{"transfer":"t-1"}"#),
        r#"{"transfer_id":"t-1","from_bank":"bank-a","account":"alice","to_bank":"bank-b","to_account":"bob","amount":30,"seq":3,"overdue":false}"#
    );
    assert_eq!(net.q("bank-a", r#"{"transfer":"t-2"}"#), "null");
    assert_eq!(net.money(), 100);
}

/// Every outcome, in both orders of the reply and the timer: the transfer
/// settles once, and money is conserved at every step.
#[test]
fn every_interleaving_conserves_money() {
    #[derive(Debug, Clone, Copy)]
    enum Fate {
        Accepted,
        Rejected,
        Expired,
    }
    for fate in [Fate::Accepted, Fate::Rejected, Fate::Expired] {
        for timer_first in [false, true] {
            let mut net = banks();
            let to = if matches!(fate, Fate::Rejected) {
                "nobody"
            } else {
                "bob"
            };
            let (credit, timer) = start(&mut net, to);
            assert_eq!(net.money(), 100);
            let case = format!("{fate:?}, timer first: {timer_first}");
            if timer_first {
                assert!(net.deliver(&timer).is_none());
                let row = net.q("bank-a", r#"{"transfer":"t-1"}"#);
                assert!(row.contains(r#""overdue":true"#), "{case}: {row}");
                // The timer moved no money.
                assert_eq!(net.balance("bank-a", "alice"), 70, "{case}");
                assert_eq!(net.money(), 100, "{case}");
            }
            let reply = match fate {
                Fate::Expired => net.expire(&credit),
                _ => net.deliver(&credit),
            }
            .expect("the credit always asks for a reply");
            assert_eq!(reply.accepted, matches!(fate, Fate::Accepted), "{case}");
            // While an accepted credit's reply is on its way, its amount is
            // both at bank-b and reserved at bank-a.
            let in_flight = if reply.accepted { 30 } else { 0 };
            assert_eq!(net.money(), 100 + in_flight, "{case}");
            net.reply(&reply);
            assert_eq!(net.money(), 100, "{case}");
            if !timer_first {
                assert!(net.deliver(&timer).is_none());
            }
            // A duplicate reply (never sent by the host, but harmless) finds
            // nothing pending.
            net.reply(&reply);
            let (alice, bob) = match fate {
                Fate::Accepted => (70, 30),
                _ => (100, 0),
            };
            assert_eq!(net.balance("bank-a", "alice"), alice, "{case}");
            assert_eq!(net.balance("bank-b", "bob"), bob, "{case}");
            assert_eq!(
                net.q("bank-a", r#""reserved""#),
                r#"{"transfers":0,"amount":0}"#
            );
            assert_eq!(net.q("bank-a", r#"{"transfer":"t-1"}"#), "null");
            assert_eq!(net.money(), 100, "{case}");
            net.assert_replays();
        }
    }
}

#[test]
fn refusals_reserve_and_send_nothing() {
    let mut net = banks();
    let before = net.banks["bank-a"].clone();
    let code = |net: &mut Net, tx: Tx| match net.client("bank-a", &tx) {
        Err(ApplyError::Rejected(r)) => r.code,
        other => panic!("expected a rejection, got {other:?}"),
    };
    assert_eq!(code(&mut net, out("bob", 101, "t-1")), "overdraft");
    assert_eq!(code(&mut net, out("bob", 0, "t-1")), "zero_amount");
    assert_eq!(code(&mut net, out("bob", 1, "")), "bad_transfer_id");
    let mut no_timeout = out("bob", 1, "t-1");
    if let Tx::TransferOut { timeout_ms, .. } = &mut no_timeout {
        *timeout_ms = Some(0);
    }
    assert_eq!(code(&mut net, no_timeout), "bad_timeout");
    assert_eq!(net.banks["bank-a"], before);

    // An id is unique among the pending transfers; reusable once settled.
    let (credit, timer) = start(&mut net, "bob");
    assert_eq!(code(&mut net, out("bob", 1, "t-1")), "transfer_exists");
    let reply = net.deliver(&credit).unwrap();
    net.reply(&reply);
    let again = net.client("bank-a", &out("bob", 5, "t-1")).unwrap();
    // The first transfer's late timer does not touch the second one.
    assert!(net.deliver(&timer).is_none());
    assert!(
        net.q("bank-a", r#"{"transfer":"t-1"}"#)
            .contains(r#""overdue":false"#)
    );
    assert_eq!(again.len(), 2);
}

#[test]
fn clients_cannot_credit_or_fire_timers() {
    let mut net = banks();
    let code = |net: &mut Net, bank: &str, tx: Tx| match net.client(bank, &tx) {
        Err(ApplyError::Rejected(r)) => r.code,
        other => panic!("expected a rejection, got {other:?}"),
    };
    let credit = Tx::Credit {
        account: "bob".into(),
        amount: 1_000_000,
        transfer_id: "forged".into(),
    };
    assert_eq!(code(&mut net, "bank-b", credit), "not_a_transfer");
    let timer = Tx::TransferTimeout {
        transfer_id: "t-1".into(),
        seq: 3,
    };
    start(&mut net, "bob");
    assert_eq!(code(&mut net, "bank-a", timer), "not_a_timer");
    assert_eq!(net.money(), 100);
}

#[test]
fn transfers_are_listed_in_pages_and_start_from_json() {
    let mut net = banks();
    for id in ["t-1", "t-2", "t-3"] {
        net.client("bank-a", &out("bob", 1, id)).unwrap();
    }
    let page: TransfersPage =
        serde_json::from_str(&net.q("bank-a", r#"{"transfers":{"limit":2}}"#)).unwrap();
    let ids: Vec<_> = page
        .transfers
        .iter()
        .map(|r| r.transfer_id.as_str())
        .collect();
    assert_eq!(ids, ["t-1", "t-2"]);
    assert_eq!(page.next.as_deref(), Some("t-2"));
    assert_eq!(
        net.q("bank-a", r#"{"transfers":{"after":"t-2"}}"#),
        r#"{"transfers":[{"transfer_id":"t-3","from_bank":"bank-a","account":"alice","to_bank":"bank-b","to_account":"bob","amount":1,"seq":5,"overdue":false}],"next":null}"#
    );
    assert_eq!(
        net.q("bank-a", r#""reserved""#),
        r#"{"transfers":3,"amount":3}"#
    );

    let json = r#"{"transfer_out":{"from_bank":"bank-a","account":"alice","to_bank":"bank-b","to_account":"bob","amount":30,"transfer_id":"t-1"}}"#;
    let bytes = entry::encode_event::<Ledger>("tx", json).unwrap();
    assert_eq!(bytes, encode_payload(&out("bob", 30, "t-1")));
    let back = entry::event_json::<Ledger>("tx", &bytes).unwrap();
    assert_eq!(
        back,
        r#"{"transfer_out":{"from_bank":"bank-a","account":"alice","to_bank":"bank-b","to_account":"bob","amount":30,"transfer_id":"t-1","timeout_ms":null}}"#
    );
    let credit = r#"{"credit":{"account":"bob","amount":3,"transfer_id":"t-1"}}"#;
    assert!(entry::encode_event::<Ledger>(CREDIT_KIND, credit).is_ok());
    let timer = r#"{"transfer_timeout":{"transfer_id":"t-1","seq":3}}"#;
    assert!(entry::encode_event::<Ledger>(TIMEOUT_KIND, timer).is_ok());
}
