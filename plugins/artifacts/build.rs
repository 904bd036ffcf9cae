//! Compiles the plugin crates to `wasm32-wasip2` components with a nested
//! `cargo build`, then exposes them to Rust code as byte constants and paths.
//!
//! - The nested build uses its own target directory (`<target>/wasm-plugins`):
//!   sharing the outer one would deadlock on cargo's build-directory lock.
//! - RUSTFLAGS & co. are cleared: flags meant for the host (e.g. a linker or
//!   `-C target-cpu=native`) must not leak into the wasm build.
//! - A missing `wasm32-wasip2` target is reported with the command that fixes
//!   it, rather than with a page of compiler errors.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// (crate name, constant prefix, public under `fixtures`?)
const PLUGINS: &[(&str, &str, bool)] = &[
    ("realmhost-plugin-counter", "COUNTER", false),
    ("realmhost-plugin-ledger", "LEDGER", false),
    ("realmhost-plugin-membership", "MEMBERSHIP", false),
    ("realmhost-fixture-hostile", "HOSTILE", true),
    ("realmhost-fixture-forbidden", "FORBIDDEN", true),
    ("realmhost-fixture-ledger-strict", "LEDGER_STRICT", true),
    ("realmhost-fixture-contract-v01", "CONTRACT_V01", true),
    ("realmhost-fixture-contract-v02", "CONTRACT_V02", true),
];

const TARGET: &str = "wasm32-wasip2";

/// Variables of the host build the nested cargo build must not inherit:
/// flags, target and target directory meant for the host, and the release
/// profile's debug setting (set below). Exported for other nested builds.
const HOST_BUILD_VARS: [&str; 8] = [
    "RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_BUILD_RUSTFLAGS",
    "CARGO_BUILD_TARGET",
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET_DIR",
    "RUSTC_WORKSPACE_WRAPPER",
    "CARGO_PROFILE_RELEASE_DEBUG",
];

fn main() {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let workspace = manifest_dir
        .join("../..")
        .canonicalize()
        .expect("workspace root");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));

    for dir in [
        "wit",
        "guest-sdk/src",
        "guest-sdk/Cargo.toml",
        "plugins/counter",
        "plugins/ledger",
        "plugins/membership",
        "tests/fixtures",
        "Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={}", workspace.join(dir).display());
    }
    println!("cargo:rerun-if-env-changed=REALMHOST_WASM_TARGET_DIR");

    check_target_installed();

    let target_dir = env::var_os("REALMHOST_WASM_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| wasm_target_dir(&out_dir));
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());

    let mut cmd = Command::new(cargo);
    cmd.current_dir(&workspace)
        .args(["build", "--release", "--target", TARGET, "--target-dir"])
        .arg(&target_dir);
    for (krate, _, _) in PLUGINS {
        cmd.args(["-p", krate]);
    }
    if env::var("CARGO_NET_OFFLINE").is_ok_and(|v| v == "true") {
        cmd.arg("--offline");
    }
    for var in HOST_BUILD_VARS {
        cmd.env_remove(var);
    }
    // Small, fast components: no debug info, and the whole plugin (SDK,
    // serde, postcard) optimised as one unit. Measured on the plugin-call
    // bench: about 7% less time per apply than the default profile.
    cmd.env("CARGO_PROFILE_RELEASE_DEBUG", "false");
    cmd.env("CARGO_PROFILE_RELEASE_LTO", "true");
    cmd.env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "1");

    let output = cmd
        .output()
        .expect("failed to run the nested cargo build for the plugins");
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        for line in stderr.lines() {
            println!("cargo:warning={line}");
        }
        panic!("building the plugin components for {TARGET} failed (see the warnings above)");
    }

    let mut code = format!(
        "/// The target directory of the nested `{TARGET}` build: a plugin crate\n\
         /// built with the same lock file and release profile reuses its compiled\n\
         /// dependencies.\npub const WASM_TARGET_DIR: &str = {:?};\n\
         /// Variables of the host build a nested cargo build of plugins must not\n\
         /// inherit (flags, target and target directory meant for the host).\n\
         pub const HOST_BUILD_VARS: &[&str] = &{HOST_BUILD_VARS:?};\n",
        target_dir.display().to_string()
    );
    for (krate, name, fixture) in PLUGINS {
        let file = format!("{}.wasm", krate.replace('-', "_"));
        let built = target_dir.join(TARGET).join("release").join(&file);
        let dest = out_dir.join(&file);
        std::fs::copy(&built, &dest).unwrap_or_else(|e| panic!("copy {}: {e}", built.display()));
        let vis = if *fixture { "pub(crate)" } else { "pub" };
        code.push_str(&format!(
            "/// The `{krate}` component.\n{vis} const {name}: &[u8] = include_bytes!({dest:?});\n\
             /// Path of the `{krate}` component.\n{vis} const {name}_PATH: &str = {dest:?};\n",
            dest = dest.display().to_string()
        ));
    }
    std::fs::write(out_dir.join("artifacts.rs"), code).expect("write artifacts.rs");
}

/// `<target>/wasm-plugins`, found from OUT_DIR (`<target>[/<triple>]/<profile>/build/<pkg>/out`),
/// so that debug, release and test builds share one nested build.
fn wasm_target_dir(out_dir: &Path) -> PathBuf {
    out_dir
        .ancestors()
        .find(|p| p.file_name().is_some_and(|n| n == "build"))
        .and_then(Path::parent)
        .and_then(Path::parent)
        .map(|t| t.join("wasm-plugins"))
        .unwrap_or_else(|| out_dir.join("wasm-plugins"))
}

fn check_target_installed() {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let sysroot = Command::new(rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    if let Some(sysroot) = sysroot
        && !sysroot.join("lib/rustlib").join(TARGET).exists()
    {
        panic!(
            "\n\nThe Rust target `{TARGET}` is not installed, and the plugins cannot be built without it.\n\
             Run this once, then build again:\n\n    rustup target add {TARGET}\n\n"
        );
    }
}
