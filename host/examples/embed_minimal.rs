//! The smallest embedding: open a node on a data directory, load a plugin
//! from its component bytes, append, query, shut down.
//!
//! ```sh
//! cargo run -p realmhost-examples --example embed_minimal
//! ```
//!
//! The node is async (tokio, multi-threaded runtime) and every fallible call
//! returns a typed error (`NodeError`, which names the realm or path it
//! concerns); here they are all passed up with `?`.

use realmhost::node::{AppendOptions, Node, NodeConfig, NodeError};
use realmhost::runtime::LoadOptions;
use realmhost::{NewEvent, RealmId};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let mut config = NodeConfig::with_data_dir(dir.path());
    // Only the plugins this program loads itself.
    config.builtin_plugins = false;
    config.plugins_dir = None;
    let node = Node::open(config).await?;

    // A plugin is a WebAssembly component: bytes from a file, an upload, or
    // (here) the ledger example the workspace builds. It is stored, so it is
    // still there after a restart.
    let report = node
        .load_plugin(
            realmhost_plugin_artifacts::LEDGER.to_vec(),
            LoadOptions::activate(),
        )
        .await?;
    println!("loaded {report:?}");

    // Events as JSON (the plugin encodes them) ...
    let bank = RealmId::new("bank-1")?;
    node.append_json(
        bank.clone(),
        "ledger",
        "tx",
        r#"{"open":{"account":"alice"}}"#,
        "example",
        None,
    )
    .await?;
    // ... or as payload bytes, here with an idempotency key: sending the same
    // event again with the same key appends nothing.
    let payload = node
        .encode_json(
            &bank,
            "ledger",
            "tx",
            r#"{"deposit":{"account":"alice","amount":40}}"#,
        )
        .await?;
    let deposit = NewEvent {
        realm_id: bank.clone(),
        realm_type: "ledger".into(),
        kind: "tx".into(),
        payload,
        source: "example".into(),
        source_realm: None,
    };
    let options = AppendOptions {
        idempotency_key: Some("deposit-1".into()),
        expected_seq: None,
    };
    let first = node.append_with(deposit.clone(), options.clone()).await?;
    let retry = node.append_with(deposit, options).await?;
    assert!(retry.replayed && retry.seq == first.seq);

    println!("{}", node.query(&bank, r#"{"balance":"alice"}"#).await?);

    // Typed errors: a domain rejection by the plugin is one of them.
    match node
        .append_json(
            bank.clone(),
            "ledger",
            "tx",
            r#"{"withdraw":{"account":"alice","amount":1000}}"#,
            "example",
            None,
        )
        .await
    {
        Err(NodeError::Rejected { rejection, .. }) => println!("rejected: {rejection}"),
        other => println!("unexpected: {other:?}"),
    }

    // Flushes the store's dirty realms and closes the database cleanly.
    node.shutdown().await?;
    Ok(())
}
