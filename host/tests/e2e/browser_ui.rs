//! The `/ui` page in headless Chromium, through `cargo test`.
//!
//! Starts the real `realmhost serve`, populates it over HTTP (events in many
//! shards, a second `ledger` version to swap to), then runs
//! `node tests/browser/ui.test.mjs` (playwright-core driving Debian's
//! Chromium), which checks the page itself.
//!
//! Needs Node.js, `npm ci --prefix tests/browser` and `/usr/bin/chromium`
//! (or `$CHROMIUM`). Without them the test prints why it is skipped and
//! passes, unless `REALMHOST_BROWSER_TEST=1` (CI sets it), where a missing
//! piece fails it. `REALMHOST_UI_SCREENSHOT=/path.png` saves a screenshot.

use crate::common;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{NodeProc, TOKEN};
use serde_json::json;

/// The whole browser script may take this long.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(180);

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/browser")
}

/// What is missing to run the browser test, if anything.
fn missing(chromium: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let node_ok = Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !node_ok {
        out.push("Node.js (`node`) is not on PATH".to_owned());
    }
    if !browser_dir()
        .join("node_modules/playwright-core/package.json")
        .is_file()
    {
        out.push(
            "tests/browser/node_modules is missing (run `npm ci --prefix tests/browser`)"
                .to_owned(),
        );
    }
    if !chromium.is_file() {
        out.push(format!(
            "{} is missing (run `apt-get install -y chromium`, or set CHROMIUM)",
            chromium.display()
        ));
    }
    out
}

/// Events in many realms (so most shards have some), a few hot realms for
/// the busiest-realm list, and a ledger realm for the swap's shadow replay,
/// whose transfer to a counter realm becomes a dead letter.
fn populate(node: &NodeProc) {
    for i in 0..200 {
        let (s, r) = node.post(
            "/v1/events",
            &json!({"realm_id": format!("c-{i}"), "realm_type": "counter", "kind": "t",
                    "payload": {"add": 1}, "source": format!("client-{}", i % 17)}),
            None,
        );
        assert_eq!(s, 200, "{r}");
    }
    for round in 0..30 {
        for hot in ["hot-a", "hot-b"] {
            let (s, r) = node.post(
                "/v1/events",
                &json!({"realm_id": hot, "realm_type": "counter", "kind": "t",
                        "payload": {"add": round}, "source": "hot-client"}),
                None,
            );
            assert_eq!(s, 200, "{r}");
        }
    }
    let (s, r) = node.post(
        "/v1/events",
        &json!({"realm_id": "bank/eu-1", "realm_type": "ledger", "kind": "t",
                "payload": {"open": {"account": "alice"}}, "source": "teller"}),
        None,
    );
    assert_eq!(s, 200, "{r}");
    // A dead letter: a transfer to a realm of another type (a counter).
    for tx in [
        json!({"deposit": {"account": "alice", "amount": 100}}),
        json!({"transfer_out": {"from_bank": "bank/eu-1", "account": "alice", "to_bank": "c-0",
                                "to_account": "x", "amount": 5, "transfer_id": "t-ui"}}),
    ] {
        let (s, r) = node.post(
            "/v1/events",
            &json!({"realm_id": "bank/eu-1", "realm_type": "ledger", "kind": "t",
                    "payload": tx, "source": "teller"}),
            None,
        );
        assert_eq!(s, 200, "{r}");
    }
    // A second ledger build (same logic, another hash), loaded inactive.
    let mut r = NodeProc::agent()
        .post(&format!("{}/v1/admin/plugins?force=true", node.url))
        .header("Authorization", &format!("Bearer {TOKEN}"))
        .header("Content-Type", "application/wasm")
        .send(&realmhost_plugin_artifacts::fixtures::ledger_next_version()[..])
        .expect("upload");
    let status = r.status().as_u16();
    let body = r.body_mut().read_to_string().unwrap_or_default();
    assert_eq!(status, 200, "{body}");
}

#[test]
fn the_ui_page_in_headless_chromium() {
    let required = std::env::var("REALMHOST_BROWSER_TEST").is_ok_and(|v| v == "1");
    let chromium = std::env::var_os("CHROMIUM")
        .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
    let missing = missing(&chromium);
    if !missing.is_empty() {
        let why = missing.join("; ");
        assert!(
            !required,
            "REALMHOST_BROWSER_TEST=1 but the browser test cannot run: {why}"
        );
        // Straight to stderr, past the test harness's capture: a skip must
        // be seen even when the test passes.
        let _ = writeln!(
            std::io::stderr(),
            "browser_ui skipped: run npm ci in tests/browser and install chromium ({why}); \
             set REALMHOST_BROWSER_TEST=1 to make this a failure"
        );
        return;
    }

    let dir = tempfile::tempdir().unwrap();
    let node = NodeProc::start(dir.path(), &[]);
    populate(&node);

    let mut cmd = Command::new("node");
    cmd.current_dir(browser_dir())
        .args(["ui.test.mjs", "--url", &node.url, "--token", TOKEN])
        .env("CHROMIUM", &chromium);
    if let Some(shot) = std::env::var_os("REALMHOST_UI_SCREENSHOT") {
        cmd.arg("--screenshot").arg(shot);
    }
    let mut child = cmd.spawn().expect("run node ui.test.mjs");
    let deadline = Instant::now() + SCRIPT_TIMEOUT;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for the browser script") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the browser script took longer than {SCRIPT_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        status.success(),
        "the browser script failed ({status}); its output is above"
    );
    node.stop();
}
