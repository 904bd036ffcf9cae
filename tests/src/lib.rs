//! Shared helpers for the integration tests in `tests/tests/`.

use std::time::{Duration, Instant};

use realmhost::node::{MessageStats, Node};
use realmhost::realm::{NewEvent, RealmId, shard_of};
use realmhost_plugin_ledger::Tx;

/// A ledger event for `realm`, kind `tx`, source `tester`.
pub fn ledger_event(realm: &str, tx: &Tx) -> NewEvent {
    NewEvent {
        realm_id: RealmId::new(realm).expect("a valid realm id"),
        realm_type: "ledger".into(),
        kind: "tx".into(),
        payload: realmhost_guest::encode_payload(tx),
        source: "tester".into(),
        source_realm: None,
    }
}

/// Wait until the node's message counters satisfy `done` (delivery runs in
/// the background), failing after 20 s with `what` and the counters.
pub async fn until_messages(
    node: &Node,
    what: &str,
    done: impl Fn(&MessageStats) -> bool,
) -> MessageStats {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = node.stats().messages;
        if done(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Two banks (ledger realms) in different shards: `alice` at `bank-a` with
/// `funds`, `bob` at the other. Returns their ids.
pub async fn two_banks(node: &Node, funds: u64) -> (String, String) {
    let shards = node.config().sharding.num_shards;
    let a = "bank-a".to_owned();
    let b = (0..)
        .map(|i| format!("bank-b{i}"))
        .find(|b| shard_of(b, shards) != shard_of(&a, shards))
        .expect("a realm id in another shard");
    for (bank, account) in [(&a, "alice"), (&b, "bob")] {
        let open = Tx::Open {
            account: account.into(),
        };
        node.append(ledger_event(bank, &open)).await.unwrap();
    }
    let deposit = Tx::Deposit {
        account: "alice".into(),
        amount: funds,
    };
    node.append(ledger_event(&a, &deposit)).await.unwrap();
    (a, b)
}
