//! The node as a library: lazy loading after eviction, snapshot fallback,
//! monitor persistence, hot swap under load, shadow replay, and a node
//! without lazy loading (every realm loaded at start, nothing evicted).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use realmhost::EventRecord;
use realmhost::node::{Node, NodeConfig, NodeError, RealmView};
use realmhost::realm::{NewEvent, RealmId};
use realmhost::runtime::LoadOptions;
use realmhost::state::Bytes;
use realmhost::storage::{AppendRequest, SnapshotBody, SnapshotWrite};
use realmhost::store::{LoadError, ShardingConfig, StoreError};
use realmhost_guest::encode_payload;
use realmhost_plugin_artifacts::fixtures;
use realmhost_plugin_counter::Op;
use realmhost_plugin_ledger::Tx;
use realmhost_tests::ledger_event;

/// Load a second build of a semantic version that is already loaded.
const FORCE: LoadOptions = LoadOptions {
    activate: false,
    force: true,
};

fn config(dir: &std::path::Path) -> NodeConfig {
    let mut c = NodeConfig::with_data_dir(dir);
    c.plugins_dir = None;
    c.snapshot_every = 10;
    c
}

/// [`config`] with the `minimal` sharding profile: lazy loading off.
fn minimal_config(dir: &std::path::Path) -> NodeConfig {
    let mut c = config(dir);
    c.sharding = ShardingConfig::minimal();
    c.monitor.expected_shards = c.sharding.num_shards;
    c
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
    assert!(node.evict(true).await.unwrap() >= 1);
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
    // Replace the stored snapshot with one the plugin cannot use (written
    // by a newer state version, with garbage entries), then force a reload.
    let version = good.plugin_version;
    node.storage()
        .put_snapshot(
            &RealmId::new("r").unwrap(),
            SnapshotWrite {
                seq: 15,
                plugin_version: version,
                state_version: 99,
                body: SnapshotBody::Full(vec![(
                    Bytes::from(&b"garbage"[..]),
                    Bytes::from(&[0xff, 0xff][..]),
                )]),
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
        .load_plugin(fixtures::ledger_next_version(), FORCE)
        .await
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
    let swapped = node.promote("ledger", v2, None, false).await.unwrap();
    assert!(swapped.shadow.unwrap().passed());
    assert_eq!(swapped.from, v1);
    assert_eq!(node.plugins().get("ledger").unwrap().version(), v2);
    // The next access rebuilds a state made by v1 with v2.
    let (view, _) = node.get(&RealmId::new("swap-0-0").unwrap()).await.unwrap();
    assert_eq!(
        view.plugin_version, v2,
        "state not rebuilt with the new version"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    node.rollback("ledger", None, false).await.unwrap();
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
    let strict = node
        .load_plugin(fixtures::LEDGER_STRICT.to_vec(), LoadOptions::default())
        .await
        .unwrap();
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
    node.rollback("ledger", None, false).await.unwrap();
    assert_ne!(
        node.plugins().get("ledger").unwrap().version(),
        strict.info.version
    );
}

/// With lazy loading off (the `minimal` profile) new realms can still be
/// created and used; a realm that is only on disk is reported, not invented,
/// and not appended to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minimal_profile_without_lazy_loading() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::open(minimal_config(dir.path())).await.unwrap();
    assert_eq!(node.preload_report().map(|r| r.realms), Some(0));
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
        Err(NodeError::Load(LoadError::LoadingDisabled(_))) => {}
        other => panic!("expected a load error with lazy loading off, got {other:?}"),
    }
    match node.append(ledger_event("m", &deposit(1))).await {
        Err(NodeError::Load(LoadError::LoadingDisabled(_))) => {}
        other => panic!("an append to a realm not in memory must fail, got {other:?}"),
    }
    let meta = node
        .storage()
        .realm_meta(&RealmId::new("m").unwrap())
        .await
        .unwrap();
    assert_eq!(meta.map(|m| m.last_seq), Some(2), "the log was changed");
}

/// Views of `ids`, read from a node.
async fn views(node: &Node, ids: &[String]) -> Vec<RealmView> {
    let mut out = Vec::new();
    for id in ids {
        out.push(node.get(&RealmId::new(id).unwrap()).await.unwrap().0);
    }
    out
}

/// Without lazy loading, a restarted node has every stored realm in memory
/// when `open` returns — more ledger realms than one inventory page, and
/// counters — each equal to its state before the restart, and nothing was
/// loaded on demand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_lazy_loading_a_restart_loads_every_stored_realm() {
    const LEDGERS: usize = 1_100;
    const COUNTERS: usize = 20;
    let dir = tempfile::tempdir().unwrap();
    let cfg = || {
        let mut c = minimal_config(dir.path());
        // Room for more realms than the profile's 4 × 150; nothing else changes.
        c.sharding.lru_capacity_per_shard = 600;
        c
    };
    let ledgers: Vec<String> = (0..LEDGERS).map(|i| format!("pre/ledger-{i:04}")).collect();
    let counters: Vec<String> = (0..COUNTERS)
        .map(|i| format!("pre/counter-{i:02}"))
        .collect();
    let before = {
        let node = Node::open(cfg()).await.unwrap();
        let mut tasks = Vec::new();
        for w in 0..16 {
            let node = node.clone();
            let mine: Vec<(usize, String)> = ledgers
                .iter()
                .cloned()
                .enumerate()
                .skip(w)
                .step_by(16)
                .collect();
            tasks.push(tokio::spawn(async move {
                for (i, id) in mine {
                    // 1..=12 deposits: some realms get a snapshot (every 10).
                    open_and_deposit(&node, &id, (i % 12) as u64 + 1).await;
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        for (i, id) in counters.iter().enumerate() {
            for n in 0..=i as i64 {
                node.append(NewEvent {
                    realm_id: RealmId::new(id).unwrap(),
                    realm_type: "counter".into(),
                    kind: "op".into(),
                    payload: encode_payload(&Op::Add(n)),
                    source: "tester".into(),
                    source_realm: None,
                })
                .await
                .unwrap();
            }
        }
        let all: Vec<String> = ledgers.iter().chain(&counters).cloned().collect();
        let before = views(&node, &all).await;
        node.shutdown().await.unwrap();
        before
    };

    let node = Node::open(cfg()).await.unwrap();
    let report = node.preload_report().expect("lazy loading is off").clone();
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert_eq!(report.realms, (LEDGERS + COUNTERS) as u64);
    assert_eq!(report.loaded, report.realms);
    assert!(report.realm_types.iter().any(|t| t == "ledger"));
    assert!(report.realm_types.iter().any(|t| t == "counter"));
    // In memory before anyone asked for them.
    assert_eq!(node.store().len(), LEDGERS + COUNTERS);
    for id in ledgers.iter().chain(&counters) {
        assert!(node.store().contains(id), "{id} not loaded at start");
    }
    let all: Vec<String> = ledgers.iter().chain(&counters).cloned().collect();
    let after = views(&node, &all).await;
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(
            (&a.realm_id, a.seq, &a.state_hash),
            (&b.realm_id, b.seq, &b.state_hash),
            "realm differs after the restart"
        );
    }
    for (i, id) in ledgers.iter().enumerate().step_by(97) {
        let n = (i % 12) as u64 + 1;
        assert_eq!(balance(&node, id).await, n * (n + 1) / 2);
    }
    let stats = node.stats();
    assert_eq!(stats.loads, 0, "a realm was loaded on demand");
    assert_eq!(stats.sharding.total_loads, 0);
    assert_eq!(stats.preloaded, (LEDGERS + COUNTERS) as u64);
    // They keep taking events.
    node.append(ledger_event(&ledgers[0], &deposit(100)))
        .await
        .unwrap();
    assert_eq!(balance(&node, &ledgers[0]).await, 101);
}

/// Ids that land in `shard` under the node's shard count.
fn ids_in_shard(node: &Node, shard: usize, prefix: &str, n: usize) -> Vec<String> {
    (0..)
        .map(|i| format!("{prefix}-{i}"))
        .filter(|id| node.shard_of(id) == shard)
        .take(n)
        .collect()
}

/// Without lazy loading nothing is evicted: not by the periodic pass, not by
/// `evict_all`, not at the hard cap, and the admin eviction is refused. A
/// shard at its hard cap refuses new realms with a typed error before
/// anything is stored, and keeps serving the realms it has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_lazy_loading_nothing_is_evicted_and_a_full_shard_refuses_new_realms() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = minimal_config(dir.path());
    cfg.sharding.eviction_interval_secs = 1;
    let cap = cfg.sharding.hard_cap();
    assert!(cap > cfg.sharding.max_per_shard);
    let node = Node::open(cfg).await.unwrap();
    // Fill shard 0 to its hard cap: well past `max_per_shard`.
    let ids = ids_in_shard(&node, 0, "full", cap + 1);
    let (ids, extra) = ids.split_at(cap);
    let mut tasks = Vec::new();
    for chunk in ids.chunks(cap / 8 + 1) {
        let (node, chunk) = (node.clone(), chunk.to_vec());
        tasks.push(tokio::spawn(async move {
            for id in chunk {
                node.append(ledger_event(
                    &id,
                    &Tx::Open {
                        account: "a".into(),
                    },
                ))
                .await
                .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let loaded = |node: &Node| node.stats().sharding.shards[0].loaded_count;
    assert_eq!(loaded(&node), cap);
    // Two periodic passes' worth of time.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(node.store().evict_all(), 0);
    for all in [false, true] {
        match node.evict(all).await {
            Err(NodeError::EvictionDisabled) => {}
            other => panic!("evict(all: {all}) must be refused, got {other:?}"),
        }
    }
    assert_eq!(loaded(&node), cap);
    assert_eq!(node.stats().sharding.total_evictions, 0);
    for id in ids {
        assert!(node.store().contains(id), "{id} was evicted");
    }

    // One more realm in the full shard: refused, and nothing stored.
    match node
        .append(ledger_event(
            &extra[0],
            &Tx::Open {
                account: "a".into(),
            },
        ))
        .await
    {
        Err(NodeError::Store(StoreError::ShardFull { shard: 0, cap: c })) => assert_eq!(c, cap),
        other => panic!("expected a full shard, got {other:?}"),
    }
    let extra_id = RealmId::new(&extra[0]).unwrap();
    assert!(
        node.storage()
            .realm_meta(&extra_id)
            .await
            .unwrap()
            .is_none()
    );
    assert!(matches!(
        node.get(&extra_id).await,
        Err(NodeError::RealmNotFound(_))
    ));
    // The realms it holds keep working, and other shards take new realms.
    node.append(ledger_event(&ids[0], &deposit(5)))
        .await
        .unwrap();
    assert_eq!(balance(&node, &ids[0]).await, 5);
    let elsewhere = ids_in_shard(&node, 1, "other", 1);
    node.append(ledger_event(
        &elsewhere[0],
        &Tx::Open {
            account: "a".into(),
        },
    ))
    .await
    .unwrap();
    assert_eq!(loaded(&node), cap);
    assert_eq!(node.stats().loads, 0);
}

/// The admin eviction (`POST /v1/admin/evict`, what `shard evict --all`
/// sends) is refused with a typed error when lazy loading is off, and no
/// realm leaves memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_lazy_loading_admin_evict_is_refused_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = minimal_config(dir.path());
    cfg.http.admin_token = Some("secret-token".into());
    let node = Node::open(cfg).await.unwrap();
    open_and_deposit(&node, "kept", 2).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1/admin/evict", listener.local_addr().unwrap());
    let server = tokio::spawn(
        axum::serve(listener, realmhost::node::api::router(node.clone())).into_future(),
    );
    let responses = tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        [false, true].map(|all| {
            let mut resp = agent
                .post(&url)
                .header("Authorization", "Bearer secret-token")
                .send_json(serde_json::json!({ "all": all }))
                .unwrap();
            let body: serde_json::Value = resp.body_mut().read_json().unwrap();
            (resp.status().as_u16(), body)
        })
    })
    .await
    .unwrap();
    server.abort();
    for (status, body) in responses {
        assert_eq!(status, 409, "{body}");
        assert_eq!(body["error"]["code"], "eviction_disabled", "{body}");
    }
    assert!(node.store().contains("kept"));
    assert_eq!(balance(&node, "kept").await, 3);
}

/// Without lazy loading a realm that cannot be loaded at start — here its
/// log has an event after its snapshot and the `minimal` profile does not
/// replay — is reported and answers with a typed error, while the other
/// realms load; it is never re-created from nothing. With replay on, the
/// next start loads it, tail included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_lazy_loading_a_realm_that_fails_to_load_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    {
        let node = Node::open(minimal_config(dir.path())).await.unwrap();
        for id in ["good-1", "bad", "good-2"] {
            open_and_deposit(&node, id, 2).await;
        }
        // A clean shutdown snapshots every realm...
        node.shutdown().await.unwrap();
        // ...then one more event reaches the log of `bad` (as after a crash
        // between an append and its snapshot).
        let version = node.plugins().get("ledger").unwrap().version();
        node.storage()
            .append(AppendRequest {
                realm_id: RealmId::new("bad").unwrap(),
                realm_type: "ledger".into(),
                plugin_version: version,
                events: vec![EventRecord {
                    seq: 4,
                    kind: "tx".into(),
                    payload: encode_payload(&deposit(7)),
                    source: "tester".into(),
                    source_realm: None,
                    timestamp_ms: 1,
                    source_reputation: 1.0,
                    message: None,
                }],
            })
            .await
            .unwrap();
    }

    let node = Node::open(minimal_config(dir.path())).await.unwrap();
    let report = node.preload_report().unwrap().clone();
    assert_eq!((report.realms, report.loaded), (3, 2));
    assert_eq!(report.failures.len(), 1, "{report:?}");
    assert_eq!(report.failures[0].realm_id, "bad");
    assert!(
        report.failures[0].reason.contains("replay"),
        "{:?}",
        report.failures[0]
    );
    assert_eq!(balance(&node, "good-1").await, 3);
    assert_eq!(balance(&node, "good-2").await, 3);
    let bad = RealmId::new("bad").unwrap();
    match node.get(&bad).await {
        Err(NodeError::Load(e @ LoadError::Loader { .. })) => {
            assert!(e.to_string().contains("replay"), "{e}");
        }
        other => panic!("expected the start-up load error, got {other:?}"),
    }
    assert!(matches!(
        node.append(ledger_event("bad", &deposit(1))).await,
        Err(NodeError::Load(_))
    ));
    let meta = node.storage().realm_meta(&bad).await.unwrap().unwrap();
    assert_eq!(meta.last_seq, 4, "the failed realm's log was changed");
    node.shutdown().await.unwrap();
    drop(node);

    let mut cfg = minimal_config(dir.path());
    cfg.sharding.event_replay_on_load = true;
    let node = Node::open(cfg).await.unwrap();
    let report = node.preload_report().unwrap();
    assert!(report.failures.is_empty(), "{report:?}");
    assert_eq!(report.loaded, 3);
    assert_eq!(balance(&node, "bad").await, 3 + 7);
    assert_eq!(node.stats().loads, 0);
}
