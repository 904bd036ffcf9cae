//! Shared helpers for the integration tests in `tests/tests/`.

use std::time::{Duration, Instant};

use realmhost::node::{MessageStats, Node};
use realmhost::realm::{NewEvent, RealmId};
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
