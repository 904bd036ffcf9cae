//! End-to-end tests of the `realmhost` binary: each module starts real node
//! processes (HTTP, CLI, SIGKILL crash and restart, the operator page in a
//! browser). One test binary, so the host is linked once for all of them:
//! `cargo test -p realmhost --test e2e` runs them all, `--test e2e crash::`
//! one module.

mod common;

mod browser_ui;
mod cli_e2e;
mod cluster;
mod crash;
mod crash_messages;
mod node_e2e;
mod storage_e2e;
