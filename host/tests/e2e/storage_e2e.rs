//! End to end: readiness, the storage scrub over HTTP and as the offline
//! `realmhost storage check`, and a node on a damaged file answering typed
//! errors instead of dropping connections.

use crate::common;

use std::process::Command;

use common::{NodeProc, TOKEN};
use serde_json::json;

fn storage_check(dir: &std::path::Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_realmhost"))
        .args(["storage", "check", "--data-dir"])
        .arg(dir)
        .env("REALMHOST_LOG", "error")
        .output()
        .expect("run realmhost");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn ready_scrub_and_offline_check() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProc::start(dir.path(), &[]);
    for i in 0..20 {
        let (s, r) = node.post(
            "/v1/events",
            &json!({ "realm_id": format!("bank-{i}"), "realm_type": "ledger", "kind": "t",
                     "payload": {"open": {"account": "alice"}}, "source": "tester" }),
            None,
        );
        assert_eq!(s, 200, "{r}");
    }
    let (s, r) = node.get("/ready");
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["ready"], true);
    assert_eq!(r["storage"]["writable"], true);
    assert_eq!(node.get("/health").0, 200);

    let (s, r) = node.post("/v1/admin/storage/check", &json!({}), None);
    assert_eq!(s, 401, "{r}");
    let (s, r) = node.post("/v1/admin/storage/check", &json!({}), Some(TOKEN));
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["clean"], true, "{r}");
    assert_eq!(r["realms"], 20, "{r}");
    assert_eq!(r["integrity"], "skipped", "{r}");

    // The offline check refuses a file a running node holds.
    let (ok, out) = storage_check(dir.path());
    assert!(!ok, "{out}");
    assert!(node.stop().success());

    let (ok, out) = storage_check(dir.path());
    assert!(ok, "{out}");
    assert!(out.contains("integrity: ok"), "{out}");
    assert!(out.contains("damage:    0"), "{out}");

    // Damage the middle of the file: the check exits non-zero.
    let path = dir.path().join(realmhost::storage::DB_FILE_NAME);
    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len();
    for b in &mut bytes[n / 4..n * 3 / 4] {
        *b = 0xa5;
    }
    std::fs::write(&path, &bytes).unwrap();
    let (ok, out) = storage_check(dir.path());
    assert!(!ok, "damage not reported: {out}");
}
