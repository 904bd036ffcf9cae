//! Shared helpers for the integration tests in `tests/tests/`.

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
