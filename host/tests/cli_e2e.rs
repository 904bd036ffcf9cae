//! The operator command line as a script or a pipe sees it: which options
//! each command takes, JSON errors with `--json`, no escape codes when the
//! output is not a terminal, and what a 401 tells the user to do.

mod common;

use std::process::{Command, Output};

use common::NodeProc;
use serde_json::Value;

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
