//! End to end: the real `realmhost` binary, driven over HTTP and through the
//! operator CLI, including every kind of bad input.

use crate::common;

use common::{NodeProc, TOKEN};
use serde_json::{Value, json};

fn append(node: &NodeProc, realm: &str, ty: &str, payload: Value) -> (u16, Value) {
    node.post(
        "/v1/events",
        &json!({ "realm_id": realm, "realm_type": ty, "kind": "t", "payload": payload, "source": "tester" }),
        None,
    )
}

/// Upload the hostile fixture through the CLI.
fn load_hostile(node: &NodeProc) {
    let (ok, out, err) = node.cli(&[
        "plugin",
        "load",
        realmhost_plugin_artifacts::fixtures::HOSTILE_PATH,
    ]);
    assert!(ok, "{out}{err}");
}

/// Append to a hostile realm; `kind` selects the misbehaviour.
fn hostile_event(node: &NodeProc, realm: &str, kind: &str) -> (u16, Value) {
    node.post(
        "/v1/events",
        &json!({"realm_id": realm, "realm_type": "hostile", "kind": kind, "payload": "", "source": "t"}),
        None,
    )
}

#[test]
fn http_api_and_cli_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProc::start(dir.path(), &[]);

    // Appends through the API.
    let (s, r) = append(
        &node,
        "bank/eu-1",
        "ledger",
        json!({"open": {"account": "alice"}}),
    );
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["seq"], 1);
    assert_eq!(
        append(
            &node,
            "bank/eu-1",
            "ledger",
            json!({"open": {"account": "bob"}})
        )
        .0,
        200
    );
    assert_eq!(
        append(
            &node,
            "bank/eu-1",
            "ledger",
            json!({"deposit": {"account": "alice", "amount": 100}})
        )
        .0,
        200
    );
    let (s, r) = append(
        &node,
        "bank/eu-1",
        "ledger",
        json!({"transfer": {"from": "alice", "to": "bob", "amount": 30}}),
    );
    assert_eq!((s, r["seq"].as_u64()), (200, Some(4)), "{r}");

    // A domain rejection: 422 with the plugin's code; nothing stored.
    let (s, r) = append(
        &node,
        "bank/eu-1",
        "ledger",
        json!({"withdraw": {"account": "bob", "amount": 31}}),
    );
    assert_eq!(s, 422, "{r}");
    assert_eq!(r["error"]["code"], "rejected");
    assert_eq!(r["error"]["detail"]["rejection"], "overdraft");

    // Read, query, verify, list.
    let (s, v) = node.get("/v1/realm?id=bank%2Feu-1");
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["seq"], 4);
    assert_eq!(v["realm_type"], "ledger");
    let (s, q) = node.post(
        "/v1/query",
        &json!({"realm_id": "bank/eu-1", "request": {"balance": "bob"}}),
        None,
    );
    assert_eq!((s, &q["response"]["balance"]), (200, &json!(30)), "{q}");
    let (s, ver) = node.get("/v1/verify?id=bank%2Feu-1");
    assert_eq!((s, &ver["matches"]), (200, &json!(true)), "{ver}");
    for i in 0..5 {
        assert_eq!(
            append(&node, &format!("c-{i}"), "counter", json!({"add": i})).0,
            200
        );
    }
    let (s, l) = node.get("/v1/realms?type=counter&limit=3");
    assert_eq!(s, 200);
    assert_eq!(l["realms"].as_array().unwrap().len(), 3);
    let next = l["next"].as_str().unwrap().to_owned();
    let (_, l2) = node.get(&format!("/v1/realms?type=counter&limit=3&after={next}"));
    assert_eq!(l2["realms"].as_array().unwrap().len(), 2);
    assert!(l2["next"].is_null());

    // Metrics.
    let body = ureq::get(&format!("{}/metrics", node.url))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    assert!(body.contains("realmhost_shard_loaded_realms"), "{body}");
    assert!(body.contains("realmhost_append_seconds"), "{body}");
    assert!(body.contains("realmhost_commit_batch_events"), "{body}");
    assert!(body.contains("realmhost_plugin_fuel"), "{body}");
    assert!(body.contains("realmhost_shard_reputation"), "{body}");

    // The operator CLI.
    let (ok, out, err) = node.cli(&["shard", "status"]);
    assert!(ok, "{err}");
    assert!(
        out.starts_with("Shards: 64\nTotal Loaded Realms: "),
        "{out}"
    );
    assert!(
        out.contains("Cache Hit Rate: ") && out.contains("Cross-Shard Success Rate: 100.0%"),
        "{out}"
    );
    assert!(out.contains("Quarantined Shards: 0"), "{out}");
    let (ok, out, _) = node.cli(&["shard", "list"]);
    assert!(ok);
    assert_eq!(out.lines().count(), 65, "header + 64 rows");
    let (ok, out, _) = node.cli(&["shard", "analyze", "3"]);
    assert!(ok && out.contains("Recommendation:"), "{out}");
    let (ok, out, _) = node.cli(&["shard", "analyze", "999"]);
    assert!(!ok, "{out}");
    let (ok, out, err) = node.cli(&[
        "realm",
        "append",
        "bank/eu-1",
        "--type",
        "ledger",
        "--event",
        r#"{"deposit":{"account":"bob","amount":5}}"#,
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("seq 5"), "{out}");
    let (ok, out, _) = node.cli(&["realm", "query", "bank/eu-1", r#"{"balance":"bob"}"#]);
    assert!(ok && out.contains("35"), "{out}");
    let (ok, out, _) = node.cli(&["realm", "verify", "bank/eu-1"]);
    assert!(ok && out.contains("OK"), "{out}");
    let (ok, out, _) = node.cli(&["realm", "get", "bank/eu-1", "--json"]);
    assert!(ok);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["seq"], 5);
    let (ok, out, _) = node.cli(&["plugin", "list"]);
    assert!(
        ok && out.contains("ledger") && out.contains("active"),
        "{out}"
    );
    let (ok, out, _) = node.cli(&["realm", "list", "--type", "counter", "--limit", "2"]);
    assert!(ok && out.contains("c-0") && out.contains("more"), "{out}");

    // Quarantine by hand: crossings from that shard are refused before any plugin runs.
    let src = "visitor-realm";
    let (_, v) = append(&node, src, "counter", json!({"add": 1}));
    let src_shard = v["shard"].as_u64().unwrap();
    let target = (0..100)
        .map(|i| format!("club-{i}"))
        .find(|t| {
            let (_, r) = append(&node, t, "membership", json!({"join": {"member": "x"}}));
            r["shard"].as_u64() != Some(src_shard)
        })
        .unwrap();
    let (ok, out, err) = node.cli(&["shard", "quarantine", &src_shard.to_string()]);
    assert!(ok && out.contains("quarantined"), "{out}{err}");
    let crossing = json!({ "realm_id": target, "realm_type": "membership", "kind": "t",
        "payload": {"arrive": {"member": "v"}}, "source": "s", "source_realm": src });
    // A client cannot claim an event came from another realm: crossings are
    // messages the host delivers.
    let (s, r) = node.post("/v1/events", &crossing, None);
    assert_eq!(
        (s, r["error"]["code"].as_str()),
        (400, Some("invalid_input")),
        "{r}"
    );
    // An operator's import (admin token) may set it; it is not a crossing,
    // so the quarantine of the source shard does not refuse it.
    let (s, r) = node.post("/v1/events", &crossing, Some(common::TOKEN));
    assert_eq!(s, 200, "{r}");
    let (ok, _, _) = node.cli(&["shard", "release", &src_shard.to_string()]);
    assert!(ok);

    // Graceful shutdown keeps everything; a restart serves the same state.
    assert!(node.stop().success());
    let node = NodeProc::start(dir.path(), &[]);
    let (s, v) = node.get("/v1/realm?id=bank%2Feu-1");
    assert_eq!((s, v["seq"].as_u64()), (200, Some(5)), "{v}");
    let (_, ver) = node.get("/v1/verify?id=bank%2Feu-1");
    assert_eq!(ver["matches"], true);
}

#[test]
fn bad_input_gets_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProc::start(dir.path(), &[]);
    let code = |r: &Value| r["error"]["code"].as_str().unwrap_or("").to_owned();

    // Malformed JSON.
    let (s, r) = node.post_raw("/v1/events", b"{not json", "application/json");
    assert_eq!(s, 400, "{r}");
    assert_eq!(code(&r), "invalid_json");
    // Wrong shape.
    let (s, r) = node.post("/v1/events", &json!({"realm_id": 5}), None);
    assert!(s == 400 || s == 422, "{s} {r}");
    // Oversized body.
    let big = format!(
        r#"{{"realm_id":"a","realm_type":"counter","source":"s","payload":"{}"}}"#,
        "x".repeat(300_000)
    );
    let (s, r) = node.post_raw("/v1/events", big.as_bytes(), "application/json");
    assert_eq!(s, 413, "{r}");
    // Unknown realm type.
    let (s, r) = append(&node, "a", "no-such-type", json!({}));
    assert_eq!((s, code(&r)), (400, "unknown_realm_type".into()), "{r}");
    // Bad ids.
    let (s, r) = append(&node, "", "counter", json!({"add": 1}));
    assert_eq!((s, code(&r)), (400, "invalid_realm_id".into()), "{r}");
    let (s, r) = append(&node, "a\u{7}b", "counter", json!({"add": 1}));
    assert_eq!((s, code(&r)), (400, "invalid_realm_id".into()), "{r}");
    let (s, r) = append(&node, &"x".repeat(300), "counter", json!({"add": 1}));
    assert_eq!((s, code(&r)), (400, "invalid_realm_id".into()), "{r}");
    // An event the plugin cannot read.
    let (s, r) = append(&node, "a", "counter", json!({"multiply": 3}));
    assert_eq!((s, code(&r)), (422, "invalid_event".into()), "{r}");
    // Raw payload bytes that are not a counter event.
    let raw =
        json!({"realm_id": "a", "realm_type": "counter", "payload_hex": "ffffff", "source": "s"});
    let (s, r) = node.post("/v1/events", &raw, None);
    assert_eq!((s, code(&r)), (422, "invalid_event".into()), "{r}");
    let (s, r) = node.post(
        "/v1/events",
        &json!({"realm_id": "a", "realm_type": "counter", "payload_hex": "zz", "source": "s"}),
        None,
    );
    assert_eq!((s, code(&r)), (400, "invalid_input".into()), "{r}");
    // Type mismatch on an existing realm.
    assert_eq!(append(&node, "a", "counter", json!({"add": 1})).0, 200);
    let (s, r) = append(&node, "a", "ledger", json!({"open": {"account": "x"}}));
    assert_eq!((s, code(&r)), (409, "realm_type_mismatch".into()), "{r}");
    // Unknown realm, unknown route, bad query string.
    let (s, r) = node.get("/v1/realm?id=never-seen");
    assert_eq!((s, code(&r)), (404, "realm_not_found".into()), "{r}");
    let (s, r) = node.get("/v1/nothing-here");
    assert_eq!((s, code(&r)), (404, "not_found".into()), "{r}");
    // Every extractor failure is typed JSON too: a bad path number, a wrong
    // method, a missing content type.
    let (s, r) = node.get("/v1/shards/abc");
    assert_eq!((s, code(&r)), (400, "invalid_path".into()), "{r}");
    let (s, r) = node.get("/v1/events");
    assert_eq!((s, code(&r)), (405, "method_not_allowed".into()), "{r}");
    let (s, r) = node.post_raw("/v1/events", b"{}", "text/plain");
    assert_eq!((s, code(&r)), (415, "unsupported_media_type".into()), "{r}");
    // Routes that replay logs need a token (read scope), checked before
    // anything runs.
    let (s, r) = node.get_as("/v1/verify?id=a", None);
    assert_eq!((s, code(&r)), (401, "missing_token".into()), "{r}");
    let (s, r) = node.post(
        "/v1/plugins/counter/shadow",
        &json!({"version": "1.0.0"}),
        None,
    );
    assert_eq!((s, code(&r)), (401, "missing_token".into()), "{r}");
    let (s, r) = node.get_as("/v1/admin/realms/parked", Some("wrong-token"));
    assert_eq!((s, code(&r)), (401, "bad_token".into()), "{r}");
    let (s, r) = node.get("/v1/realm");
    assert_eq!((s, code(&r)), (400, "invalid_query".into()), "{r}");
    // Admin routes: missing token, wrong token, right token.
    let (s, r) = node.post("/v1/admin/shards/1/quarantine", &json!({}), None);
    assert_eq!((s, code(&r)), (401, "missing_token".into()), "{r}");
    let (s, r) = node.post("/v1/admin/shards/1/quarantine", &json!({}), Some("wrong"));
    assert_eq!((s, code(&r)), (401, "bad_token".into()), "{r}");
    let (s, r) = node.post("/v1/admin/shards/9999/quarantine", &json!({}), Some(TOKEN));
    assert_eq!((s, code(&r)), (404, "unknown_shard".into()), "{r}");
    let (s, r) = node.post("/v1/admin/evict", &json!({"all": true}), Some(TOKEN));
    assert_eq!(s, 200, "{r}");
    // A garbage plugin upload is refused with a typed error and changes nothing.
    let mut req = NodeProc::agent().post(&format!("{}/v1/admin/plugins?activate=true", node.url));
    req = req.header("Authorization", &format!("Bearer {TOKEN}"));
    let mut resp = req.send(&b"\0asm\x0d\0\x01\0garbage"[..]).unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let body: Value = resp.body_mut().read_json().unwrap();
    assert_eq!(code(&body), "invalid_plugin", "{body}");
    // The node is still fine.
    let (s, v) = node.get("/v1/realm?id=a");
    assert_eq!((s, v["seq"].as_u64()), (200, Some(1)), "{v}");
}

#[test]
fn bad_config_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    // `serve` with `text` as its config file: (succeeded, stderr).
    let serve = |text: &str| {
        std::fs::write(&cfg, text).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_realmhost"))
            .args(["serve", "--config"])
            .arg(&cfg)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, err) = serve("snapshot_every = 0\n");
    assert!(!ok);
    assert!(err.contains("snapshot_every"), "{err}");
    let (ok, _) = serve("[sharding]\nnum_shards = 0\n");
    assert!(!ok);
    let (ok, err) = serve("[storage]\nmax_batch = 0\n");
    assert!(!ok);
    assert!(err.contains("storage.max_batch"), "{err}");
    let (ok, err) = serve("[storage]\nno_such_knob = 1\n");
    assert!(!ok);
    assert!(err.contains("no_such_knob"), "{err}");
    let (ok, err) = serve("this is = not toml [");
    assert!(!ok);
    assert!(err.contains("invalid config"), "{err}");
}

/// A realm whose events keep faulting is parked over HTTP (423), shown and
/// released by the CLI; the rest of its realm type is unaffected, and a
/// state limit is a typed 422.
#[test]
fn faulting_realm_is_parked_and_released_by_an_operator() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProc::start(dir.path(), &[]);
    load_hostile(&node);
    let hostile = |realm: &str, kind: &str| hostile_event(&node, realm, kind);
    assert_eq!(hostile("bad", "ok").0, 200);
    assert_eq!(hostile("good", "ok").0, 200);
    let (s, r) = hostile("bad", "huge");
    assert_eq!(
        (s, r["error"]["code"].as_str()),
        (422, Some("state_limit")),
        "{r}"
    );
    for _ in 0..2 {
        let (s, r) = hostile("bad", "panic");
        assert_eq!(
            (s, r["error"]["code"].as_str()),
            (500, Some("plugin_fault")),
            "{r}"
        );
    }
    let (s, r) = hostile("bad", "ok");
    assert_eq!(
        (s, r["error"]["code"].as_str()),
        (423, Some("realm_parked")),
        "{r}"
    );
    assert_eq!(
        hostile("good", "ok").0,
        200,
        "the realm type must keep serving"
    );
    let (ok, out, _) = node.cli(&["realm", "parked"]);
    assert!(
        ok && out.contains("Parked realms: 1") && out.contains("bad"),
        "{out}"
    );
    let (ok, out, err) = node.cli(&["realm", "release", "bad"]);
    assert!(ok && out.contains("released bad"), "{out}{err}");
    let (s, r) = hostile("bad", "ok");
    assert_eq!((s, r["seq"].as_u64()), (200, Some(2)), "{r}");
    let (_, stats) = node.get("/v1/stats");
    assert_eq!(stats["parked_realms"], 0);
}

/// A plugin uploaded with the CLI survives a restart (even a SIGKILL): its
/// realms keep answering, the history shows the upload, and the events CLI
/// shows what was stored. A printing plugin works (its output goes to the
/// log).
#[test]
fn uploaded_plugin_survives_restarts_and_events_are_listed() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProc::start(dir.path(), &[]);
    load_hostile(&node);
    let hostile = |node: &NodeProc, kind: &str| hostile_event(node, "h-1", kind);
    assert_eq!(hostile(&node, "ok").0, 200);
    let (s, r) = hostile(&node, "print");
    assert_eq!((s, r["seq"].as_u64()), (200, Some(2)), "{r}");
    node.kill9();

    let node = NodeProc::start(dir.path(), &[]);
    let (s, r) = hostile(&node, "ok");
    assert_eq!((s, r["seq"].as_u64()), (200, Some(3)), "{r}");
    let (ok, out, err) = node.cli(&["plugin", "list"]);
    assert!(ok && out.contains("hostile"), "{out}{err}");
    let (ok, out, err) = node.cli(&["plugin", "history"]);
    assert!(
        ok && out.contains("hostile") && out.contains("activated"),
        "{out}{err}"
    );
    let (ok, out, err) = node.cli(&["realm", "events", "h-1"]);
    assert!(ok, "{out}{err}");
    assert_eq!(out.lines().count(), 3, "{out}");
    assert!(out.contains("print"), "{out}");
    let (s, r) = node.get("/v1/realm/events?id=h-1&after=1&limit=1");
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["events"][0]["seq"], 2);
    assert_eq!(r["next_after"], 2);
    // Unknown versions and bad names are typed errors.
    let (ok, _, err) = node.cli(&["plugin", "swap", "ledger", "9.9.9"]);
    assert!(!ok && err.contains("plugin_version"), "{err}");
    let (ok, _, err) = node.cli(&["plugin", "swap", "ledger", "zz"]);
    assert!(!ok && err.contains("invalid_input"), "{err}");
    let (ok, _, err) = node.cli(&["plugin", "rollback", "ledger"]);
    assert!(!ok && err.contains("plugin_version"), "{err}");
    let (ok, _, err) = node.cli(&["plugin", "unload", "hostile", "1.0.0"]);
    assert!(
        !ok && (err.contains("version_in_use") || err.contains("plugin_version")),
        "{err}"
    );
    node.stop();
}
