//! The operator command line as a script or a pipe sees it: which options
//! each command takes, JSON errors with `--json`, no escape codes when the
//! output is not a terminal, what a 401 tells the user to do, and the
//! `messages` commands against a node with a dead letter.

use crate::common;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::NodeProc;
use serde_json::{Value, json};

/// Run the binary with `args`, without a token in the environment and with
/// stdout and stderr captured (pipes, not a terminal).
fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_realmhost"))
        .args(args)
        .env_remove("REALMHOST_ADMIN_TOKEN")
        .env_remove("REALMHOST_NODE")
        .env_remove("NO_COLOR")
        .env("REALMHOST_LOG", "error")
        .output()
        .expect("run realmhost")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The JSON error a failed `--json` command printed on stderr.
fn json_error(out: &Output) -> Value {
    assert!(!out.status.success(), "expected a failure");
    let err = text(&out.stderr);
    let v: Value = serde_json::from_str(err.trim())
        .unwrap_or_else(|e| panic!("stderr is not one JSON value ({e}): {err}"));
    assert!(v["error"]["code"].is_string(), "{v}");
    assert!(v["error"]["message"].is_string(), "{v}");
    v
}

#[test]
fn serve_and_demo_list_only_their_own_options() {
    for cmd in ["serve", "demo", "inspect", "storage"] {
        let out = run(&[cmd, "--help"]);
        assert!(out.status.success());
        let help = text(&out.stdout);
        for flag in ["--node", "--token", "--json"] {
            // `storage check` has a `--json` of its own, not `storage`.
            assert!(!help.contains(flag), "`{cmd} --help` lists {flag}:\n{help}");
        }
    }
    // The commands that talk to a node take all three, before or after the
    // subcommand.
    for args in [
        &["shard", "status", "--help"][..],
        &["realm", "get", "--help"],
        &["plugin", "list", "--help"],
        &["jobs", "--help"],
        &["messages", "dead", "--help"],
    ] {
        let help = text(&run(args).stdout);
        for flag in ["--node", "--token", "--json"] {
            assert!(help.contains(flag), "`{args:?}` lacks {flag}:\n{help}");
        }
    }
    // They are not accepted by `serve`.
    let out = run(&["serve", "--token", "x"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

#[test]
fn json_errors_are_json_on_stderr_with_a_failing_exit_code() {
    // Nothing listens on port 9 of localhost (discard; never served here).
    for args in [
        &["shard", "status", "--json", "--node", "http://127.0.0.1:9"][..],
        &["shard", "--json", "--node", "http://127.0.0.1:9", "status"],
    ] {
        let out = run(args);
        let v = json_error(&out);
        assert_eq!(v["error"]["code"], "unreachable", "{v}");
        assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
    }
    // Without --json the same failure is one line of text.
    let out = run(&["shard", "status", "--node", "http://127.0.0.1:9"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).starts_with("error: cannot reach the node at http://127.0.0.1:9"),
        "{}",
        text(&out.stderr)
    );
    // A command line that does not parse, with --json.
    let out = run(&["shard", "analyze", "many", "--json"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(json_error(&out)["error"]["code"], "usage");
    // A local failure of an offline command.
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let out = run(&[
        "storage",
        "check",
        "--json",
        "--data-dir",
        missing.to_str().unwrap(),
    ]);
    assert_eq!(json_error(&out)["error"]["code"], "failed");
}

#[test]
fn against_a_node_json_errors_carry_its_code_and_a_401_names_the_token_flag() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProc::start(dir.path(), &[]);
    let url = node.url.as_str();

    let out = run(&["realm", "get", "no-such-realm", "--json", "--node", url]);
    let v = json_error(&out);
    assert_eq!(
        (v["error"]["code"].as_str(), v["error"]["status"].as_u64()),
        (Some("realm_not_found"), Some(404)),
        "{v}"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no-such-realm"),
        "{v}"
    );

    // An admin command without a token.
    let out = run(&["shard", "quarantine", "1", "--node", url]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("401"), "{err}");
    assert!(
        err.contains("--token") && err.contains("REALMHOST_ADMIN_TOKEN"),
        "{err}"
    );
    // With the wrong one.
    let out = run(&[
        "shard",
        "quarantine",
        "1",
        "--node",
        url,
        "--token",
        "wrong-token",
    ]);
    let err = text(&out.stderr);
    assert!(
        err.contains("bad_token") && err.contains("--token"),
        "{err}"
    );
    // And as JSON.
    let out = run(&["shard", "quarantine", "1", "--json", "--node", url]);
    let v = json_error(&out);
    assert_eq!(v["error"]["status"], 401, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("--token"),
        "{v}"
    );
}

#[test]
fn messages_commands_list_retry_and_drop_a_dead_letter() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProc::start(dir.path(), &[]);
    // A transfer from a bank to a counter realm: its credit is dead-lettered.
    for (realm, ty, payload) in [
        ("c-1", "counter", json!({"add": 1})),
        ("bank-a", "ledger", json!({"open": {"account": "alice"}})),
        (
            "bank-a",
            "ledger",
            json!({"deposit": {"account": "alice", "amount": 100}}),
        ),
        (
            "bank-a",
            "ledger",
            json!({"transfer_out": {"from_bank": "bank-a", "account": "alice", "to_bank": "c-1",
                                    "to_account": "x", "amount": 5, "transfer_id": "t-1"}}),
        ),
    ] {
        let (s, r) = node.post(
            "/v1/events",
            &json!({"realm_id": realm, "realm_type": ty, "kind": "tx", "payload": payload,
                    "source": "teller"}),
            None,
        );
        assert_eq!(s, 200, "{r}");
    }
    let dead = |node: &NodeProc| {
        let (ok, out, err) = node.cli(&["messages", "dead", "--json"]);
        assert!(ok, "{err}");
        let v: Value = serde_json::from_str(&out).unwrap();
        v["dead_letters"].as_array().cloned().unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while dead(&node).is_empty() {
        assert!(Instant::now() < deadline, "no dead letter in time");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Listings as tables.
    let (ok, out, err) = node.cli(&["messages", "dead"]);
    assert!(ok, "{err}");
    assert!(out.starts_with("Dead letters: 1\n"), "{out}");
    assert!(
        out.contains("bank-a@3.0") && out.contains("c-1") && out.contains("counter"),
        "{out}"
    );
    let (ok, out, err) = node.cli(&["messages", "realm", "bank-a"]);
    assert!(ok, "{err}");
    assert!(out.starts_with("bank-a: 1 undelivered messages\n"), "{out}");
    assert!(out.contains("bank-a@3.1"), "the timer: {out}");
    let (ok, out, err) = node.cli(&["messages", "chain", "bank-a@3.0"]);
    assert!(ok, "{err}");
    assert!(out.contains("dead-lettered"), "{out}");
    // Retry: dead-lettered again; drop: gone.
    let (ok, out, err) = node.cli(&["messages", "retry", "bank-a@3.0"]);
    assert!(ok, "{err}");
    assert!(out.contains("back in its sender's outbox"), "{out}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while dead(&node).is_empty() {
        assert!(Instant::now() < deadline, "not dead-lettered again in time");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (ok, out, err) = node.cli(&["messages", "drop", "bank-a@3.0", "--json"]);
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["dropped"], true, "{v}");
    assert!(dead(&node).is_empty());
    // Dropping it again: the node's typed error, as JSON.
    let out = run(&[
        "messages",
        "drop",
        "bank-a@3.0",
        "--json",
        "--node",
        &node.url,
        "--token",
        common::TOKEN,
    ]);
    let v = json_error(&out);
    assert_eq!(
        (v["error"]["code"].as_str(), v["error"]["status"].as_u64()),
        (Some("dead_letter_not_found"), Some(404)),
        "{v}"
    );
    // Without a token: 401 and the hint.
    let out = run(&["messages", "dead", "--node", &node.url]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--token"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn piped_output_has_no_escape_codes() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_realmhost"))
        .args([
            "demo",
            "--realms",
            "60",
            "--events",
            "600",
            "--clients",
            "4",
            "--verify",
            "5",
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .env_remove("NO_COLOR")
        // Log lines at info level, so there are some to colour.
        .env("REALMHOST_LOG", "info")
        .output()
        .expect("run realmhost demo");
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("shard status"), "{stdout}");
    assert!(stderr.contains("INFO"), "no log lines to check:\n{stderr}");
    for (name, s) in [("stdout", &stdout), ("stderr", &stderr)] {
        assert!(!s.contains('\x1b'), "escape codes on {name}:\n{s:?}");
    }
}
