//! The plugin lifecycle is durable and guarded: uploads, activations and
//! history survive restarts; the plugins directory seeds the registry by a
//! rule (conflicts are refused, never guessed); rollback runs the same shadow
//! check as a swap; a realm the active version cannot rebuild answers a typed
//! error and is listed; versions are named by semantic version, hash or hash
//! prefix; unused versions can be unloaded.

use std::path::Path;
use std::sync::Arc;

use realmhost::EventRecord;
use realmhost::node::{Node, NodeConfig, NodeError, PluginAction};
use realmhost::realm::RealmId;
use realmhost::runtime::{LoadOptions, PluginVersion, RegistryError, VersionSelector};
use realmhost::storage::{AppendRequest, RedbStorage};
use realmhost_plugin_artifacts::{LEDGER, fixtures};
use realmhost_plugin_ledger::Tx;
use realmhost_tests::ledger_event;

const FORCE: LoadOptions = LoadOptions {
    activate: false,
    force: true,
};

fn config(dir: &Path) -> NodeConfig {
    let mut c = NodeConfig::with_data_dir(dir);
    c.plugins_dir = None;
    c
}

async fn open_with_deposit(node: &Node, realm: &str, amount: u64) {
    node.append(ledger_event(
        realm,
        &Tx::Open {
            account: "a".into(),
        },
    ))
    .await
    .unwrap();
    node.append(ledger_event(
        realm,
        &Tx::Deposit {
            account: "a".into(),
            amount,
        },
    ))
    .await
    .unwrap();
}

/// Balance of account `a` (the strict fixture answers every query with the
/// totals; with one account the total is that balance).
async fn balance(node: &Node, realm: &str) -> Result<u64, NodeError> {
    let r = node
        .query(&RealmId::new(realm).unwrap(), r#"{"balance":"a"}"#)
        .await?;
    let v: serde_json::Value = serde_json::from_str(&r).unwrap();
    Ok(v["balance"].as_u64().or(v["total"].as_u64()).unwrap())
}

async fn restart(node: Arc<Node>, cfg: NodeConfig) -> Arc<Node> {
    node.shutdown().await.unwrap();
    drop(node);
    Node::open(cfg).await.unwrap()
}

/// Load a component into `node` and return its version.
async fn loaded(node: &Node, bytes: Vec<u8>, opts: LoadOptions) -> PluginVersion {
    node.load_plugin(bytes, opts).await.unwrap().info.version
}

fn active(node: &Node, realm_type: &str) -> PluginVersion {
    node.plugins().get(realm_type).unwrap().version()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_activations_and_history_survive_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let node = Node::open(cfg.clone()).await.unwrap();
    let v1 = active(&node, "ledger");
    open_with_deposit(&node, "bank", 7).await;
    let v2 = loaded(&node, fixtures::ledger_next_version(), FORCE).await;
    let strict = loaded(
        &node,
        fixtures::LEDGER_STRICT.to_vec(),
        LoadOptions::default(),
    )
    .await;
    let swapped = node.promote("ledger", v2, None, false).await.unwrap();
    assert_eq!(swapped.from, v1);
    assert!(swapped.shadow.unwrap().passed());

    let node = restart(node, cfg.clone()).await;
    assert_eq!(active(&node, "ledger"), v2, "the swap was not kept");
    let listed: Vec<_> = node
        .plugins()
        .list()
        .into_iter()
        .filter(|l| l.info.realm_type == "ledger")
        .collect();
    assert_eq!(listed.len(), 3, "uploads were not kept: {listed:?}");
    assert!(listed.iter().any(|l| l.info.version == v1 && l.previous));
    assert!(listed.iter().any(|l| l.info.version == strict && !l.active));
    assert_eq!(balance(&node, "bank").await.unwrap(), 7);
    let history = node.plugin_history().await;
    let ledger: Vec<_> = history
        .iter()
        .filter(|h| h.realm_type == "ledger")
        .map(|h| (h.action, h.version))
        .collect();
    assert_eq!(
        ledger,
        vec![
            (PluginAction::Activated, v1),
            (PluginAction::Loaded, v2),
            (PluginAction::Loaded, strict),
            (PluginAction::Swapped, v2),
        ],
        "{history:#?}"
    );
    assert!(history.iter().all(|h| h.at_ms > 0));
    // A restart with the same seeds changes nothing.
    assert!(node.plugin_startup().seeded.is_empty());
    assert_eq!(
        node.plugin_startup().restored,
        5,
        "{:?}",
        node.plugin_startup()
    );

    // A rollback is kept too.
    let back = node.rollback("ledger", None, false).await.unwrap();
    assert_eq!(back.info.version, v1);
    let node = restart(node, cfg.clone()).await;
    assert_eq!(active(&node, "ledger"), v1, "the rollback was not kept");
    assert_eq!(
        node.plugin_history().await.last().map(|h| h.action),
        Some(PluginAction::RolledBack)
    );
    node.shutdown().await.unwrap();
}

/// Without the built-in plugins, a realm type that only exists because it was
/// uploaded keeps working after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uploaded_plugin_serves_its_realms_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.builtin_plugins = false;
    let node = Node::open(cfg.clone()).await.unwrap();
    assert!(node.plugins().realm_types().is_empty());
    let r = node
        .load_plugin(LEDGER.to_vec(), LoadOptions::default())
        .await
        .unwrap();
    assert!(r.activated, "the first version of a type is active");
    open_with_deposit(&node, "uploaded", 5).await;
    let node = restart(node, cfg.clone()).await;
    assert_eq!(node.plugins().realm_types(), vec!["ledger"]);
    assert_eq!(balance(&node, "uploaded").await.unwrap(), 5);
    assert!(node.plugin_startup().unserved_types.is_empty());
    node.shutdown().await.unwrap();
}

/// Stored realms whose type has no plugin are reported at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realm_types_without_a_plugin_are_reported_at_start() {
    let dir = tempfile::tempdir().unwrap();
    {
        let storage = RedbStorage::open(dir.path()).unwrap();
        storage
            .append_blocking(AppendRequest {
                realm_id: RealmId::new("orphan-1").unwrap(),
                realm_type: "ghost".into(),
                plugin_version: PluginVersion([7; 32]),
                events: vec![EventRecord {
                    seq: 1,
                    kind: "x".into(),
                    payload: vec![],
                    source: "s".into(),
                    source_realm: None,
                    timestamp_ms: 1,
                    source_reputation: 1.0,
                    message: None,
                }],
            })
            .unwrap();
    }
    let node = Node::open(config(dir.path())).await.unwrap();
    assert_eq!(node.plugin_startup().unserved_types, vec!["ghost"]);
    assert_eq!(node.stats().unserved_realm_types, vec!["ghost"]);
    assert!(matches!(
        node.query(&RealmId::new("orphan-1").unwrap(), "{}").await,
        Err(NodeError::UnknownRealmType(t)) if t == "ghost"
    ));
    node.shutdown().await.unwrap();
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plugins_directory_seeds_by_rule_and_refuses_conflicts() {
    // Two builds of ledger 3.0.0 in the directory: refused, both named.
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    write(&plugins, "a-ledger.wasm", LEDGER);
    write(
        &plugins,
        "b-ledger-next.wasm",
        &fixtures::ledger_next_version(),
    );
    let mut cfg = config(&dir.path().join("data"));
    cfg.builtin_plugins = false;
    cfg.plugins_dir = Some(plugins.clone());
    match Node::open(cfg.clone()).await {
        Err(NodeError::PluginConflict(c)) => {
            assert_eq!(c.len(), 1, "{c:?}");
            assert_eq!(
                (c[0].realm_type.as_str(), c[0].semver.as_str()),
                ("ledger", "3.0.0")
            );
            assert!(c[0].builds.iter().any(|b| b.contains("a-ledger.wasm")));
            assert!(c[0].builds.iter().any(|b| b.contains("b-ledger-next.wasm")));
        }
        other => panic!("expected a conflict, got {:?}", other.map(|_| ())),
    }

    // The highest semantic version wins on a fresh registry, whatever the
    // file names say.
    std::fs::remove_file(plugins.join("b-ledger-next.wasm")).unwrap();
    write(&plugins, "0-strict.wasm", fixtures::LEDGER_STRICT);
    let node = Node::open(cfg.clone()).await.unwrap();
    let strict = PluginVersion::of(fixtures::LEDGER_STRICT);
    assert_eq!(active(&node, "ledger"), strict, "3.1.0-strict > 3.0.0");
    assert_eq!(node.plugin_startup().seeded.len(), 2);
    // Make 3.0.0 active; a restart with the same directory keeps that choice.
    node.promote(
        "ledger",
        "3.0.0".parse::<VersionSelector>().unwrap(),
        None,
        false,
    )
    .await
    .unwrap();
    let node = restart(node, cfg.clone()).await;
    assert_eq!(active(&node, "ledger"), PluginVersion::of(LEDGER));

    // A new file never replaces the active version; a build that reuses a
    // stored semantic version is skipped with a warning, not loaded.
    write(
        &plugins,
        "c-ledger-next.wasm",
        &fixtures::ledger_next_version(),
    );
    let node = restart(node, cfg.clone()).await;
    assert_eq!(active(&node, "ledger"), PluginVersion::of(LEDGER));
    let skipped = &node.plugin_startup().skipped;
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert!(skipped[0].contains("c-ledger-next.wasm") && skipped[0].contains("3.0.0"));
    assert!(
        node.plugins()
            .get_version(
                "ledger",
                PluginVersion::of(&fixtures::ledger_next_version())
            )
            .is_err()
    );
    node.shutdown().await.unwrap();
}

/// Rollback runs the shadow check; forcing it past a failure leaves the
/// realms the version cannot rebuild answering `RealmUnservable`, listed
/// until a version that can read them is active again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_is_shadow_checked_and_unservable_realms_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::open(config(dir.path())).await.unwrap();
    let v1 = active(&node, "ledger");
    let strict = loaded(
        &node,
        fixtures::LEDGER_STRICT.to_vec(),
        LoadOptions::default(),
    )
    .await;
    // strict refuses deposits above 50 and is active for a while …
    node.promote("ledger", strict, None, false).await.unwrap();
    open_with_deposit(&node, "small", 10).await;
    // … then the operator goes back to v1, and v1 takes a deposit strict
    // cannot read.
    node.promote("ledger", v1, None, false).await.unwrap();
    open_with_deposit(&node, "big", 60).await;

    // Rolling back to strict fails its shadow check: nothing changes.
    match node.rollback("ledger", None, false).await {
        Err(NodeError::ShadowFailed(r)) => {
            assert_eq!(r.candidate, strict);
            assert_eq!(r.failures.len(), 1, "{r:?}");
            assert_eq!(
                (r.failures[0].realm_id.as_str(), r.failures[0].seq),
                ("big", 2)
            );
        }
        other => panic!("expected a shadow failure, got {other:?}"),
    }
    assert_eq!(active(&node, "ledger"), v1);
    assert_eq!(balance(&node, "big").await.unwrap(), 60);

    // Forced: it goes through with a warning, and `big` is unservable.
    let forced = node.rollback("ledger", None, true).await.unwrap();
    assert_eq!(forced.info.version, strict);
    assert!(forced.shadow.is_none());
    assert!(forced.warning.unwrap().contains("without a shadow check"));
    assert_eq!(balance(&node, "small").await.unwrap(), 10);
    match balance(&node, "big").await {
        Err(NodeError::RealmUnservable(u)) => {
            assert_eq!(u.realm.as_str(), "big");
            assert_eq!(u.seq, 2);
            assert_eq!(u.version, strict);
            assert!(u.reason.contains("deposit_limit"), "{}", u.reason);
        }
        other => panic!("expected realm_unservable, got {other:?}"),
    }
    let listed = node.unservable_realms();
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].realm_id.as_str(), listed[0].seq), ("big", 2));
    assert_eq!(node.stats().unservable_realms, 1);
    // Appends to it are refused with the same code, nothing stored.
    assert!(matches!(
        node.append(ledger_event(
            "big",
            &Tx::Deposit {
                account: "a".into(),
                amount: 1
            }
        ))
        .await,
        Err(NodeError::RealmUnservable(_))
    ));
    let history = node.plugin_history().await;
    let last = history.last().unwrap();
    assert_eq!((last.action, last.forced), (PluginAction::RolledBack, true));

    // Back to v1 (the shadow check passes): served again, the list is empty.
    node.rollback("ledger", None, false).await.unwrap();
    assert_eq!(node.stats().unservable_realms, 0);
    assert_eq!(balance(&node, "big").await.unwrap(), 60);
    assert!(node.unservable_realms().is_empty());
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_are_named_by_semver_hash_or_prefix_and_unloaded_when_unused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let node = Node::open(cfg.clone()).await.unwrap();
    let v1 = active(&node, "ledger");
    let sel = |s: &str| s.parse::<VersionSelector>().unwrap();

    // A second build of 3.0.0 is refused unless forced.
    match node
        .load_plugin(fixtures::ledger_next_version(), LoadOptions::default())
        .await
    {
        Err(NodeError::Registry(RegistryError::DuplicateSemver { existing, .. })) => {
            assert_eq!(existing, v1);
        }
        other => panic!("expected a duplicate refusal, got {other:?}"),
    }
    let v2 = loaded(&node, fixtures::ledger_next_version(), FORCE).await;
    let strict = loaded(
        &node,
        fixtures::LEDGER_STRICT.to_vec(),
        LoadOptions::default(),
    )
    .await;

    // "3.0.0" now names two builds: ambiguous, both listed.
    match node.promote("ledger", sel("3.0.0"), None, false).await {
        Err(NodeError::Registry(RegistryError::AmbiguousVersion { candidates, .. })) => {
            assert_eq!(candidates.len(), 2, "{candidates:?}");
        }
        other => panic!("expected ambiguity, got {other:?}"),
    }
    // A unique semantic version and a hash prefix both work.
    let a = node
        .promote("ledger", sel("3.1.0-strict"), None, false)
        .await
        .unwrap();
    assert_eq!(a.info.version, strict);
    let prefix = &v2.to_hex()[..10];
    let b = node
        .promote("ledger", sel(prefix), None, false)
        .await
        .unwrap();
    assert_eq!(b.info.version, v2);
    assert!(matches!(
        node.promote("ledger", sel("9.9.9"), None, false).await,
        Err(NodeError::Registry(RegistryError::NoSuchVersion { .. }))
    ));
    assert!("xyz".parse::<VersionSelector>().is_err());

    // Unload: never the active version; the rollback target only forced.
    assert!(matches!(
        node.unload_plugin("ledger", v2, false).await,
        Err(NodeError::Registry(RegistryError::VersionInUse { .. }))
    ));
    assert!(matches!(
        node.unload_plugin("ledger", strict, false).await,
        Err(NodeError::Registry(RegistryError::VersionInUse { .. }))
    ));
    let gone = node.unload_plugin("ledger", v1, false).await.unwrap();
    assert_eq!(gone.version, v1);
    node.unload_plugin("ledger", strict, true).await.unwrap();
    assert!(matches!(
        node.rollback("ledger", None, false).await,
        Err(NodeError::Registry(RegistryError::NothingToRollBack(_)))
    ));
    // Kept across a restart: the unloaded builds do not come back (the
    // built-in ledger is a seed, but its build was unloaded on purpose and
    // its semantic version is now carried by v2, so it is skipped).
    let node = restart(node, cfg).await;
    let versions: Vec<_> = node
        .plugins()
        .list()
        .into_iter()
        .filter(|l| l.info.realm_type == "ledger")
        .map(|l| l.info.version)
        .collect();
    assert_eq!(versions, vec![v2]);
    node.shutdown().await.unwrap();
}

/// `Node::events` pages through a realm's log with each payload decoded by
/// the plugin; what cannot be decoded is shown raw, with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_listed_with_decoded_payloads() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::open(config(dir.path())).await.unwrap();
    open_with_deposit(&node, "bank", 9).await;
    let id = RealmId::new("bank").unwrap();
    let first = node.events(&id, 0, 1).await.unwrap();
    assert_eq!((first.realm_type.as_str(), first.last_seq), ("ledger", 2));
    assert_eq!(first.events.len(), 1);
    assert_eq!(first.next_after, Some(1));
    let e = &first.events[0];
    assert_eq!(
        (e.seq, e.kind.as_str(), e.source.as_str()),
        (1, "tx", "tester")
    );
    assert!(e.timestamp_ms > 0);
    assert_eq!(
        e.payload,
        Some(serde_json::json!({ "open": { "account": "a" } }))
    );
    let rest = node.events(&id, 1, 100).await.unwrap();
    assert_eq!(rest.next_after, None);
    assert_eq!(
        rest.events[0].payload,
        Some(serde_json::json!({ "deposit": { "account": "a", "amount": 9 } }))
    );
    assert!(node.events(&id, 2, 100).await.unwrap().events.is_empty());
    assert!(matches!(
        node.events(&RealmId::new("nope").unwrap(), 0, 10).await,
        Err(NodeError::RealmNotFound(_))
    ));
    // A payload the plugin cannot decode is shown raw, with the reason: a
    // ledger event whose bytes no ledger version wrote, and an event of a
    // realm type without a plugin.
    let raw = |realm: &str, realm_type: &str, payload: Vec<u8>| AppendRequest {
        realm_id: RealmId::new(realm).unwrap(),
        realm_type: realm_type.into(),
        plugin_version: PluginVersion([1; 32]),
        events: vec![EventRecord {
            seq: 1,
            kind: "tx".into(),
            payload,
            source: "s".into(),
            source_realm: Some("elsewhere".into()),
            timestamp_ms: 5,
            source_reputation: 0.5,
            message: None,
        }],
    };
    node.storage()
        .append(raw("junk", "ledger", vec![0xff; 6]))
        .await
        .unwrap();
    node.storage()
        .append(raw("ghostly", "ghost", b"boo".to_vec()))
        .await
        .unwrap();
    let junk = node
        .events(&RealmId::new("junk").unwrap(), 0, 10)
        .await
        .unwrap();
    let e = &junk.events[0];
    assert_eq!(e.payload, None);
    assert_eq!(e.payload_hex.as_deref(), Some("ffffffffffff"));
    assert!(e.decode_error.is_some());
    assert_eq!(e.source_realm.as_deref(), Some("elsewhere"));
    let ghost = node
        .events(&RealmId::new("ghostly").unwrap(), 0, 10)
        .await
        .unwrap();
    assert!(
        ghost.events[0]
            .decode_error
            .as_deref()
            .is_some_and(|e| e.contains("ghost")),
        "{ghost:?}"
    );
    node.shutdown().await.unwrap();
}

/// Uploading with `activate` in place of an active version is a swap: the
/// shadow check runs, and a failing candidate stays loaded but inactive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activating_an_upload_is_shadow_checked() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::open(config(dir.path())).await.unwrap();
    let v1 = active(&node, "ledger");
    open_with_deposit(&node, "big", 60).await;
    let activate = LoadOptions {
        activate: true,
        force: false,
    };
    match node
        .load_plugin(fixtures::LEDGER_STRICT.to_vec(), activate)
        .await
    {
        Err(NodeError::ShadowFailed(r)) => assert_eq!(r.failures.len(), 1),
        other => panic!("expected a shadow failure, got {other:?}"),
    }
    assert_eq!(active(&node, "ledger"), v1);
    let strict = PluginVersion::of(fixtures::LEDGER_STRICT);
    assert!(node.plugins().get_version("ledger", strict).is_ok());
    // A candidate that passes is activated, and the history says how.
    let r = node
        .load_plugin(
            fixtures::ledger_next_version(),
            LoadOptions {
                activate: true,
                force: true,
            },
        )
        .await
        .unwrap();
    assert!(r.activated);
    assert_eq!(r.replaced, Some(v1));
    assert_eq!(active(&node, "ledger"), r.info.version);
    let actions: Vec<_> = node
        .plugin_history()
        .await
        .iter()
        .filter(|h| h.realm_type == "ledger")
        .map(|h| h.action)
        .collect();
    assert_eq!(
        actions,
        vec![
            PluginAction::Activated,
            PluginAction::Loaded,
            PluginAction::Loaded,
            PluginAction::Swapped
        ]
    );
    node.shutdown().await.unwrap();
}
