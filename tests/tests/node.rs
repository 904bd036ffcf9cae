//! The node as a library: lazy loading after eviction, snapshot fallback,
//! monitor persistence, hot swap under load, shadow replay.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use realmhost::node::{Node, NodeConfig, NodeError};
use realmhost::realm::{NewEvent, RealmId};
use realmhost::storage::Snapshot;
use realmhost_guest::encode_payload;
use realmhost_plugin_artifacts::fixtures;
use realmhost_plugin_ledger::Tx;

fn config(dir: &std::path::Path) -> NodeConfig {
    let mut c = NodeConfig::with_data_dir(dir);
    c.plugins_dir = None;
    c.snapshot_every = 10;
    c
}

fn ledger_event(realm: &str, tx: &Tx) -> NewEvent {
    NewEvent {
        realm_id: RealmId::new(realm).unwrap(),
        realm_type: "ledger".into(),
        kind: "tx".into(),
        payload: encode_payload(tx),
        source: "tester".into(),
        source_realm: None,
    }
}

fn deposit(amount: u64) -> Tx {
    Tx::Deposit {
        account: "a".into(),
        amount,
    }
}

/// Open account `a` in `realm`, then deposit 1, 2, …, `n` into it.
async fn open_and_deposit(node: &Node, realm: &str, n: u64) {
    node.append(ledger_event(
        realm,
        &Tx::Open {
            account: "a".into(),
        },
    ))
    .await
    .unwrap();
    for i in 1..=n {
        node.append(ledger_event(realm, &deposit(i))).await.unwrap();
    }
}

async fn balance(node: &Node, realm: &str) -> u64 {
    let r = node
        .query(&RealmId::new(realm).unwrap(), r#"{"balance":"a"}"#)
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&r).unwrap();
    v["balance"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evicted_realms_reload_from_snapshot_and_tail() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::open(config(dir.path())).await.unwrap();
    open_and_deposit(&node, "r", 25).await;
    let before = node.get(&RealmId::new("r").unwrap()).await.unwrap().0;
    assert_eq!(before.seq, 26);
    assert_eq!(before.snapshot_seq, 20);
    assert!(node.evict(true).await >= 1);
    assert!(!node.store().contains("r"));
    let after = node.get(&RealmId::new("r").unwrap()).await.unwrap().0;
    assert_eq!(
        after.state_hash, before.state_hash,
        "reloaded state differs"
    );
    assert_eq!(balance(&node, "r").await, (1..=25).sum::<u64>());
    assert!(node.stats().loads >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_snapshot_falls_back_to_full_replay() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::open(config(dir.path())).await.unwrap();
    open_and_deposit(&node, "r", 14).await;
    let good = node.get(&RealmId::new("r").unwrap()).await.unwrap().0;
    // Corrupt the stored snapshot, then force a reload.
    let version = good.plugin_version;
    node.storage()
        .put_snapshot(
            &RealmId::new("r").unwrap(),
            Snapshot {
                seq: 15,
                plugin_version: version,
                state: vec![2, 0xff, 0xff, 0xff],
            },
        )
        .await
        .unwrap();
    node.store().remove("r");
    let reloaded = node.get(&RealmId::new("r").unwrap()).await.unwrap().0;
    assert_eq!(
        reloaded.state_hash, good.state_hash,
        "fallback produced a wrong state"
    );
    assert_eq!(node.stats().load_fallbacks, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_record_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let node = Node::open(config(dir.path())).await.unwrap();
        assert!(node.quarantine(7).await.unwrap());
        node.shutdown().await.unwrap();
    }
    let node = Node::open(config(dir.path())).await.unwrap();
    assert!(
        node.monitor().is_quarantined(7),
        "manual quarantine lost on restart"
    );
    assert!(node.release(7).await.unwrap());
    node.shutdown().await.unwrap();
    drop(node);
    let node = Node::open(config(dir.path())).await.unwrap();
    assert!(!node.monitor().is_quarantined(7));
}

/// Appends and reads run continuously while the ledger is swapped to a new
/// version and rolled back: no request fails, every acknowledged deposit is
/// applied exactly once, and every realm equals a replay from scratch with
/// the version in service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_swap_and_rollback_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::open(config(dir.path())).await.unwrap();
    // Version 2: the same logic, different bytes.
    let v2 = node
        .plugins()
        .load(&fixtures::ledger_next_version(), false)
        .unwrap()
        .info
        .version;
    let v1 = node.plugins().get("ledger").unwrap().version();

    const WRITERS: usize = 6;
    const REALMS: usize = 3;
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let (node, stop, failures) = (node.clone(), stop.clone(), failures.clone());
        tasks.push(tokio::spawn(async move {
            let mut sums = [0u64; REALMS];
            for r in 0..REALMS {
                node.append(ledger_event(
                    &format!("swap-{w}-{r}"),
                    &Tx::Open {
                        account: "a".into(),
                    },
                ))
                .await
                .unwrap();
            }
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let r = (i as usize) % REALMS;
                i += 1;
                let realm = format!("swap-{w}-{r}");
                match node.append(ledger_event(&realm, &deposit(i % 7 + 1))).await {
                    Ok(_) => sums[r] += i % 7 + 1,
                    Err(e) => {
                        eprintln!("append failed: {e}");
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
                if let Err(e) = node.get(&RealmId::new(&realm).unwrap()).await {
                    eprintln!("read failed: {e}");
                    failures.fetch_add(1, Ordering::Relaxed);
                }
            }
            sums
        }));
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (_, report) = node.promote("ledger", v2, None, false).await.unwrap();
    assert!(report.unwrap().passed());
    assert_eq!(node.plugins().get("ledger").unwrap().version(), v2);
    // The next access rebuilds a state made by v1 with v2.
    let (view, _) = node.get(&RealmId::new("swap-0-0").unwrap()).await.unwrap();
    assert_eq!(
        view.plugin_version, v2,
        "state not rebuilt with the new version"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    node.rollback("ledger").unwrap();
    assert_eq!(node.plugins().get("ledger").unwrap().version(), v1);
    tokio::time::sleep(Duration::from_millis(400)).await;
    stop.store(true, Ordering::Relaxed);

    let mut checked = 0;
    for (w, t) in tasks.into_iter().enumerate() {
        let sums = t.await.unwrap();
        for (r, sum) in sums.iter().enumerate() {
            let realm = format!("swap-{w}-{r}");
            assert_eq!(
                balance(&node, &realm).await,
                *sum,
                "{realm}: an acknowledged deposit was lost or doubled"
            );
            let report = node.verify(&RealmId::new(&realm).unwrap()).await.unwrap();
            assert!(
                report.matches,
                "{realm}: live state differs from a replay with the version in service"
            );
            let (view, _) = node.get(&RealmId::new(&realm).unwrap()).await.unwrap();
            assert_eq!(
                view.plugin_version, v1,
                "{realm} still built by the rolled-back version"
            );
            checked += 1;
        }
    }
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "requests failed during swap/rollback"
    );
    assert_eq!(checked, WRITERS * REALMS);
    assert!(
        node.stats().rebuilds > 0,
        "no state was rebuilt with the new version"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_replay_refuses_a_broken_candidate() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::open(config(dir.path())).await.unwrap();
    for r in 0..6 {
        let realm = format!("bank-{r}");
        node.append(ledger_event(
            &realm,
            &Tx::Open {
                account: "a".into(),
            },
        ))
        .await
        .unwrap();
        // Realms 0..3 hold a deposit the strict candidate refuses.
        let amount = if r < 3 { 60 } else { 10 };
        node.append(ledger_event(&realm, &deposit(amount)))
            .await
            .unwrap();
    }
    let strict = node.plugins().load(fixtures::LEDGER_STRICT, false).unwrap();
    assert!(!strict.activated);
    let report = node
        .shadow("ledger", strict.info.version, None)
        .await
        .unwrap();
    assert_eq!(report.realms_checked, 6);
    assert_eq!(report.failures.len(), 3, "{report:?}");
    assert!(
        report
            .failures
            .iter()
            .all(|f| f.seq == 2 && f.reason.contains("deposit_limit")),
        "{report:?}"
    );
    match node
        .promote("ledger", strict.info.version, None, false)
        .await
    {
        Err(NodeError::ShadowFailed(r)) => assert_eq!(r.failures.len(), 3),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_ne!(
        node.plugins().get("ledger").unwrap().version(),
        strict.info.version,
        "broken candidate was promoted"
    );
    // A sample checks fewer realms.
    let sampled = node
        .shadow("ledger", strict.info.version, Some(2))
        .await
        .unwrap();
    assert_eq!(sampled.realms_checked, 2);
    // Forced promotion is possible, and rollback undoes it.
    node.promote("ledger", strict.info.version, None, true)
        .await
        .unwrap();
    assert_eq!(
        node.plugins().get("ledger").unwrap().version(),
        strict.info.version
    );
    node.rollback("ledger").unwrap();
    assert_ne!(
        node.plugins().get("ledger").unwrap().version(),
        strict.info.version
    );
}

/// With lazy loading off (the `minimal` profile) new realms can still be
/// created and used; a realm that is only on disk is reported, not invented.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minimal_profile_without_lazy_loading() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.sharding = realmhost::store::ShardingConfig::minimal();
    cfg.monitor.expected_shards = cfg.sharding.num_shards;
    let node = Node::open(cfg).await.unwrap();
    node.append(ledger_event(
        "m",
        &Tx::Open {
            account: "a".into(),
        },
    ))
    .await
    .unwrap();
    node.append(ledger_event("m", &deposit(3))).await.unwrap();
    assert_eq!(balance(&node, "m").await, 3);
    node.store().remove("m");
    match node.get(&RealmId::new("m").unwrap()).await {
        Err(NodeError::Load(_)) => {}
        other => panic!("expected a load error with lazy loading off, got {other:?}"),
    }
}
