//! Errors name what they concern: the file a node could not open, the realm
//! an event or a query was refused for. An operator reading a log line (or
//! an embedder reading `err.to_string()`) should not have to guess which of
//! several data directories or realms went wrong.

use realmhost::node::{Node, NodeConfig, NodeError};
use realmhost::realm::RealmId;
use realmhost::runtime::RuntimeError;
use realmhost::storage::{RedbStorage, StorageError};
use realmhost_plugin_ledger::Tx;
use realmhost_tests::ledger_event;

fn config(dir: &std::path::Path) -> NodeConfig {
    let mut c = NodeConfig::with_data_dir(dir);
    c.plugins_dir = None;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_cannot_be_opened_is_named() {
    let dir = tempfile::tempdir().unwrap();
    // Another handle holds the database.
    let _held = RedbStorage::open(dir.path()).unwrap();
    let err = Node::open(config(dir.path())).await.unwrap_err();
    let file = dir.path().join(realmhost::storage::DB_FILE_NAME);
    match &err {
        NodeError::Storage(e) => {
            assert!(matches!(e.cause(), StorageError::AlreadyOpen), "{e:?}")
        }
        other => panic!("expected a storage error, got {other:?}"),
    }
    let text = err.to_string();
    assert!(text.contains(&file.display().to_string()), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_cache_that_cannot_be_created_is_named() {
    let dir = tempfile::tempdir().unwrap();
    // A file where the cache directory should be.
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, b"x").unwrap();
    let mut c = config(dir.path());
    c.runtime.cache_dir = Some(blocker.join("cache"));
    let err = Node::open(c).await.unwrap_err();
    assert!(
        matches!(&err, NodeError::Plugin(RuntimeError::Cache { .. })),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains(&blocker.display().to_string()), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_of_an_event_or_a_query_name_the_realm() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::open(config(dir.path())).await.unwrap();
    let realm = "bank/eu-7";
    node.append(ledger_event(
        realm,
        &Tx::Open {
            account: "a".into(),
        },
    ))
    .await
    .unwrap();

    // A domain rejection (overdraft).
    let err = node
        .append(ledger_event(
            realm,
            &Tx::Withdraw {
                account: "a".into(),
                amount: 5,
            },
        ))
        .await
        .unwrap_err();
    match &err {
        NodeError::Rejected { realm: r, .. } => assert_eq!(r.as_str(), realm),
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert!(err.to_string().contains(realm), "{err}");

    // A query the plugin cannot read.
    let id = RealmId::new(realm).unwrap();
    let err = node.query(&id, "{not json").await.unwrap_err();
    assert!(
        matches!(&err, NodeError::PluginInvalid { realm: r, .. } if r == &id),
        "{err:?}"
    );
    assert!(err.to_string().contains(realm), "{err}");

    // An event JSON the plugin cannot encode.
    let err = node
        .encode_json(&id, "ledger", "tx", r#"{"no_such_tx":1}"#)
        .await
        .unwrap_err();
    assert!(err.to_string().contains(realm), "{err}");
    node.shutdown().await.unwrap();
}
