//! A node over a storage whose disk fills up: appends fail with a typed
//! answer (507 `storage_full`, `Retry-After`), `/ready` turns 503 while
//! `/health` stays 200, and everything heals without a restart once space
//! returns — no acknowledged event lost or duplicated.

use std::sync::Arc;
use std::time::{Duration, Instant};

use realmhost::node::{Node, NodeConfig};
use realmhost::realm::RealmId;
use realmhost::storage::{RedbStorage, Storage, StorageConfig};
use realmhost_guest::encode_payload;
use realmhost_plugin_ledger::Tx;
use realmhost_tests::ledger_event;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

struct Http {
    agent: ureq::Agent,
    base: String,
}

impl Http {
    fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let mut r = self
            .agent
            .get(format!("{}{path}", self.base))
            .call()
            .unwrap();
        (r.status().as_u16(), r.body_mut().read_json().unwrap())
    }

    /// POST a deposit; status, body and the Retry-After header.
    fn deposit(&self, realm: &str, amount: u64) -> (u16, serde_json::Value, Option<String>) {
        let tx = Tx::Deposit {
            account: "a".into(),
            amount,
        };
        let mut r = self
            .agent
            .post(format!("{}/v1/events", self.base))
            .send_json(serde_json::json!({
                "realm_id": realm, "realm_type": "ledger", "kind": "tx",
                "payload_hex": hex(&encode_payload(&tx)), "source": "tester",
            }))
            .unwrap();
        let retry = r
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        (
            r.status().as_u16(),
            r.body_mut().read_json().unwrap(),
            retry,
        )
    }

    fn check(&self) -> (u16, serde_json::Value) {
        let mut r = self
            .agent
            .post(format!("{}/v1/admin/storage/check", self.base))
            .header("Authorization", "Bearer secret-token")
            .send_empty()
            .unwrap();
        (r.status().as_u16(), r.body_mut().read_json().unwrap())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_degrades_readiness_and_heals_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Arc::new(
        RedbStorage::open_with(
            dir.path(),
            StorageConfig {
                retry_ms: 20,
                ..StorageConfig::default()
            },
        )
        .unwrap(),
    );
    let faults = storage.fault_injector();
    let mut cfg = NodeConfig::with_data_dir(dir.path());
    cfg.plugins_dir = None;
    cfg.snapshot_every = 4;
    cfg.http.admin_token = Some("secret-token".into());
    let node = Node::open_with_storage(cfg, storage.clone() as Arc<dyn Storage>)
        .await
        .unwrap();
    node.append(ledger_event(
        "acct",
        &Tx::Open {
            account: "a".into(),
        },
    ))
    .await
    .unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(
        axum::serve(listener, realmhost::node::api::router(node.clone())).into_future(),
    );
    let http = Http {
        agent: ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into(),
        base,
    };

    let acked = tokio::task::spawn_blocking(move || {
        let mut acked = 0u64;
        let (status, ready) = http.get("/ready");
        assert_eq!(status, 200, "{ready}");
        assert_eq!(ready["ready"], true);
        for amount in 1..=5 {
            let (status, body, _) = http.deposit("acct", amount);
            assert_eq!(status, 200, "{body}");
            acked += amount;
        }

        faults.set_disk_full(true);
        for amount in [100, 200] {
            let (status, body, retry) = http.deposit("acct", amount);
            assert_eq!(status, 507, "{body}");
            assert_eq!(body["error"]["code"], "storage_full", "{body}");
            assert!(retry.is_some(), "no Retry-After");
        }
        let (status, ready) = http.get("/ready");
        assert_eq!(status, 503, "{ready}");
        assert_eq!(ready["ready"], false);
        assert_eq!(ready["storage"]["writable"], false);
        assert!(
            ready["degraded"][0].as_str().unwrap().contains("full"),
            "{ready}"
        );
        assert_eq!(http.get("/health").0, 200);
        let (_, stats) = http.get("/v1/stats");
        assert_eq!(stats["storage"]["writable"], false, "{stats}");

        // Space returns: readiness recovers by itself, appends continue.
        faults.set_disk_full(false);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (status, ready) = http.get("/ready");
            if status == 200 {
                break;
            }
            assert!(Instant::now() < deadline, "never ready again: {ready}");
            std::thread::sleep(Duration::from_millis(20));
        }
        for amount in 6..=9 {
            let (status, body, _) = http.deposit("acct", amount);
            assert_eq!(status, 200, "{body}");
            acked += amount;
        }
        let (status, report) = http.check();
        assert_eq!(status, 200, "{report}");
        assert_eq!(report["clean"], true, "{report}");
        acked
    })
    .await
    .unwrap();
    server.abort();

    // Every acknowledged event exactly once: 1 open + 9 deposits, seqs
    // 1..=10, and the state agrees. (The storage tests restart the file.)
    let id = RealmId::new("acct").unwrap();
    let r = node.query(&id, r#"{"balance":"a"}"#).await.unwrap();
    let v: serde_json::Value = serde_json::from_str(&r).unwrap();
    assert_eq!(v["balance"].as_u64(), Some(acked), "{v}");
    let events = storage.events_since(&id, 0).unwrap();
    assert_eq!(
        events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=10).collect::<Vec<_>>()
    );
    node.shutdown().await.unwrap();
}
