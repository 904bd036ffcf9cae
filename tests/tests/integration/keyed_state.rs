//! Keyed state through the whole node: realms far larger than the old
//! whole-state contract allowed keep working, their snapshots are deltas that
//! reload to the same state, state limits fail one realm with a typed error,
//! and a realm whose events keep faulting is parked alone — its realm type
//! keeps serving every other realm.

use std::sync::atomic::Ordering;

use realmhost::node::{Node, NodeConfig, NodeError};
use realmhost::realm::RealmId;
use realmhost::runtime::{LoadOptions, RuntimeError};
use realmhost::state::StateLimit;
use realmhost_plugin_artifacts::fixtures;

fn config(dir: &std::path::Path) -> NodeConfig {
    let mut c = NodeConfig::with_data_dir(dir);
    c.plugins_dir = None;
    c.snapshot_every = 3;
    // `grow` writes many keys in one event.
    c.runtime.state_limits.max_ops_per_call = 60_000;
    // `verify` replays the two 50 000-key events in one `apply-batch`:
    // ~100 000 writes at ~720 fuel each (500 of it state gas) sat right at
    // the default budget (50M + 11 × 2M), so small changes to the fixture's
    // code tipped it over. Room for them.
    c.runtime.fuel_per_call = 80_000_000;
    c
}

async fn hostile_node(c: NodeConfig) -> std::sync::Arc<Node> {
    let node = Node::open(c).await.unwrap();
    node.load_plugin(fixtures::HOSTILE.to_vec(), LoadOptions::activate())
        .await
        .unwrap();
    node
}

async fn hostile(node: &Node, realm: &str, kind: &str, payload: &str) -> Result<u64, NodeError> {
    node.append_json(
        RealmId::new(realm).unwrap(),
        "hostile",
        kind,
        payload,
        "tester",
        None,
    )
    .await
    .map(|r| r.seq)
}

fn id(s: &str) -> RealmId {
    RealmId::new(s).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_realm_past_100k_keys_keeps_taking_appends_and_reloads_from_deltas() {
    let dir = tempfile::tempdir().unwrap();
    let node = hostile_node(config(dir.path())).await;
    for _ in 0..2 {
        hostile(&node, "big", "grow", "50000").await.unwrap();
    }
    hostile(&node, "big", "grow", "1000").await.unwrap(); // seq 3: first snapshot (whole map)
    let (view, _) = node.get(&id("big")).await.unwrap();
    // 101 000 grown keys plus the event counter `n`.
    assert_eq!(view.entries, 101_001);
    assert_eq!(view.snapshot_seq, 3);
    // Small events keep working at this size; each later snapshot is a delta.
    for _ in 0..7 {
        hostile(&node, "big", "ok", "").await.unwrap();
    }
    hostile(&node, "big", "grow", "10").await.unwrap();
    let (view, live) = node.get(&id("big")).await.unwrap();
    assert_eq!(view.seq, 11);
    assert_eq!(view.snapshot_seq, 9);
    assert_eq!(view.entries, 101_011);
    assert_eq!(node.query(&id("big"), "len").await.unwrap(), "101011");
    // Reload from the stored snapshot (one whole map plus two deltas) and the
    // tail: the same entries as the live state and as a full replay.
    let snapshots = node.stats().snapshots;
    assert!(snapshots >= 3, "{snapshots} snapshots");
    node.store().remove("big");
    let (reloaded, _) = node.get(&id("big")).await.unwrap();
    assert_eq!(reloaded.state_hash, view.state_hash);
    assert_eq!(reloaded.entries, live.map().len());
    let verify = node.verify(&id("big")).await.unwrap();
    assert!(verify.matches, "{verify:?}");
    // And after a restart.
    node.shutdown().await.unwrap();
    drop(node);
    let node = hostile_node(config(dir.path())).await;
    let (after, _) = node.get(&id("big")).await.unwrap();
    assert_eq!(after.state_hash, view.state_hash);
    hostile(&node, "big", "ok", "").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_limit_fails_one_call_of_one_realm_with_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let node = hostile_node(config(dir.path())).await;
    hostile(&node, "r", "ok", "").await.unwrap();
    let before = node.get(&id("r")).await.unwrap().0;
    for (kind, limit) in [
        ("huge", StateLimit::ValueBytes),
        ("huge-key", StateLimit::KeyBytes),
    ] {
        match hostile(&node, "r", kind, "").await {
            Err(NodeError::Plugin(RuntimeError::StateLimit { error, .. })) => {
                assert_eq!(error.realm, "r");
                assert_eq!(error.limit, limit);
            }
            other => panic!("{kind}: expected a state limit error, got {other:?}"),
        }
    }
    // Nothing of the failed calls was kept.
    let after = node.get(&id("r")).await.unwrap().0;
    assert_eq!(
        (after.seq, &after.state_hash),
        (before.seq, &before.state_hash)
    );
    // Writes in a query are refused; the realm still works.
    assert!(matches!(
        node.query(&id("r"), "write").await,
        Err(NodeError::Plugin(RuntimeError::StateLimit { .. }))
    ));
    node.release_realm(&id("r"));
    assert_eq!(hostile(&node, "r", "ok", "").await.unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_realm_that_keeps_faulting_is_parked_and_never_stops_its_type() {
    let dir = tempfile::tempdir().unwrap();
    let node = hostile_node(config(dir.path())).await;
    hostile(&node, "bad", "ok", "").await.unwrap();
    hostile(&node, "good", "ok", "").await.unwrap();
    let plugin = node.plugins().get("hostile").unwrap();
    // Three faults park the realm (the default policy).
    for _ in 0..3 {
        assert!(matches!(
            hostile(&node, "bad", "panic", "").await,
            Err(NodeError::Plugin(RuntimeError::Trap { .. }))
        ));
    }
    let calls = plugin.stats().calls.load(Ordering::Relaxed);
    // A client that keeps feeding the parked realm costs no plugin work and
    // cannot take the realm type offline.
    for _ in 0..200 {
        match hostile(&node, "bad", "panic", "").await {
            Err(NodeError::RealmParked { realm, last_fault }) => {
                assert_eq!(realm.as_str(), "bad");
                assert!(last_fault.contains("panic"), "{last_fault}");
            }
            other => panic!("expected a parked realm, got {other:?}"),
        }
    }
    assert_eq!(plugin.stats().calls.load(Ordering::Relaxed), calls);
    assert!(
        node.plugins().get("hostile").is_ok(),
        "the type was quarantined"
    );
    assert!(matches!(
        node.query(&id("bad"), "").await,
        Err(NodeError::RealmParked { .. })
    ));
    for i in 0..20 {
        assert_eq!(hostile(&node, "good", "ok", "").await.unwrap(), 2 + i);
    }
    let parked = node.parked_realms();
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].realm_id, "bad");
    assert_eq!(node.stats().parked_realms, 1);
    // An operator releases it; its state is what it was before the faults.
    assert!(node.release_realm(&id("bad")));
    assert!(!node.release_realm(&id("bad")));
    assert_eq!(hostile(&node, "bad", "ok", "").await.unwrap(), 2);
    assert_eq!(node.query(&id("bad"), "").await.unwrap(), "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_across_many_realms_quarantine_the_version() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.runtime.quarantine_faults = 5;
    c.runtime.quarantine_realms = 4;
    let node = hostile_node(c).await;
    for r in 0..6 {
        let _ = hostile(&node, &format!("r{r}"), "panic", "").await;
    }
    assert!(
        node.plugins().get("hostile").is_err(),
        "faults in 6 realms should quarantine the version"
    );
}
