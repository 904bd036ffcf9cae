//! `realmhost new plugin`, end to end: scaffold a crate into a temporary
//! directory, run its own unit tests, build it to a component with the one
//! documented command, load the component into a node from a plugins
//! directory, append events and query.
//!
//! The native `cargo test` uses `<workspace target>/scaffold`, so that later
//! runs reuse its compiled dependencies. The component build uses the target
//! directory in which the workspace build compiled the plugins for
//! `wasm32-wasip2` (`<workspace target>/wasm-plugins`): the scaffold's lock
//! file and release profile are the workspace's, so every registry crate
//! (wit-bindgen, serde, postcard) is reused from there and only the vendored
//! SDK and the new crate compile (measured: 5 s instead of 35 s). They run
//! `--offline` first: the workspace build has already fetched every crate the
//! scaffold's lock file (seeded from the workspace's) names. If cargo says it
//! needs the network, they run again without it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use realmhost::cli::new::{BUILD_COMMAND, new_plugin};
use realmhost::node::{Node, NodeConfig, NodeError};
use realmhost::realm::{NewEvent, RealmId};
use realmhost_guest::encode_payload;

/// A realm type with both separators, so the crate and file names are exercised.
const REALM_TYPE: &str = "stock-count_v2";

/// `<workspace target>/<name>`, from `<workspace target>/tmp`.
fn workspace_target_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target dir")
        .join(name)
}

/// Where the native `cargo test` of the scaffold builds.
fn native_target_dir() -> PathBuf {
    workspace_target_dir("scaffold")
}

/// Where the component is built: the plugins' nested build directory.
fn wasm_target_dir() -> PathBuf {
    PathBuf::from(realmhost_plugin_artifacts::WASM_TARGET_DIR)
}

/// Run `cargo <args>` in `dir` as a plugin author would, with the host
/// build's flags and target settings cleared, building in `target_dir`.
fn cargo(dir: &Path, args: &[&str], target_dir: &Path) {
    let started = Instant::now();
    eprintln!("scaffold: cargo {} (in {})", args.join(" "), dir.display());
    let run = |offline: bool| {
        let mut cmd = Command::new("cargo");
        cmd.current_dir(dir).args(args);
        if offline {
            cmd.arg("--offline");
        }
        for var in realmhost_plugin_artifacts::HOST_BUILD_VARS {
            cmd.env_remove(var);
        }
        cmd.env("CARGO_TARGET_DIR", target_dir);
        cmd.output().expect("run cargo")
    };
    let mut out = run(true);
    if !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("offline") {
        eprintln!("scaffold: offline run failed; trying again with the network");
        out = run(false);
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "cargo {} failed in {}:\n{stderr}\n{}",
        args.join(" "),
        dir.display(),
        String::from_utf8_lossy(&out.stdout)
    );
    eprintln!(
        "scaffold: cargo {} done in {:.1} s",
        args.join(" "),
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaffolded_plugin_builds_loads_and_serves() {
    let started = Instant::now();
    // Inside the workspace's target directory on purpose: the scaffold must
    // build as its own workspace even under another workspace's directory.
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let crate_dir = tmp.path().join("plugin");
    let scaffold = new_plugin(REALM_TYPE, &crate_dir, false).unwrap();
    assert_eq!(scaffold.crate_name, "stock-count_v2-plugin");
    eprintln!("scaffold: wrote {} files", scaffold.files.len());

    // The generated crate's own unit tests, natively.
    cargo(&crate_dir, &["test"], &native_target_dir());

    // The one documented command.
    let build: Vec<&str> = BUILD_COMMAND.split_whitespace().skip(1).collect();
    cargo(&crate_dir, &build, &wasm_target_dir());
    let built = wasm_target_dir().join(
        scaffold
            .wasm_path()
            .strip_prefix("target")
            .expect("the component is under target/"),
    );
    assert!(built.is_file(), "{} is missing", built.display());

    // Load it as a node operator would: from the plugins directory at start.
    let plugins = tmp.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::copy(&built, plugins.join(built.file_name().unwrap())).unwrap();
    let mut config = NodeConfig::with_data_dir(tmp.path().join("data"));
    config.plugins_dir = Some(plugins);
    config.builtin_plugins = false;
    let node = Node::open(config).await.unwrap();
    eprintln!("scaffold: node open");

    let realm = RealmId::new("depot-1").unwrap();
    // A payload encoded by hand: postcard is positional, so `Op::Add { key,
    // amount }` (variant 0) is the tuple (0, key, amount).
    node.append(NewEvent {
        realm_id: realm.clone(),
        realm_type: REALM_TYPE.into(),
        kind: "op".into(),
        payload: encode_payload(&(0u32, "apples", 3u64)),
        source: "tester".into(),
        source_realm: None,
    })
    .await
    .unwrap();
    // Events as JSON, encoded by the plugin.
    for json in [
        r#"{"add":{"key":"pears","amount":5}}"#,
        r#"{"take":{"key":"apples","amount":1}}"#,
    ] {
        node.append_json(realm.clone(), REALM_TYPE, "op", json, "tester", None)
            .await
            .unwrap();
    }
    // A rejection is an answer, and changes nothing.
    let err = node
        .append_json(
            realm.clone(),
            REALM_TYPE,
            "op",
            r#"{"take":{"key":"pears","amount":6}}"#,
            "tester",
            None,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, NodeError::Rejected { .. }),
        "expected a rejection, got {err:?}"
    );

    assert_eq!(
        node.query(&realm, "").await.unwrap(),
        r#"{"total":7,"keys":2}"#
    );
    assert_eq!(
        node.query(&realm, r#"{"get":"apples"}"#).await.unwrap(),
        r#"{"key":"apples","amount":2}"#
    );
    assert_eq!(
        node.query(&realm, r#""list""#).await.unwrap(),
        r#"{"apples":2,"pears":5}"#
    );
    let (view, _) = node.get(&realm).await.unwrap();
    assert_eq!(view.seq, 3);
    assert_eq!(view.realm_type, REALM_TYPE);
    node.shutdown().await.unwrap();
    eprintln!("scaffold: done in {:.1} s", started.elapsed().as_secs_f64());
}
