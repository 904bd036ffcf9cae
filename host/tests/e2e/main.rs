//! End-to-end tests of the `realmhost` binary: each module starts real node
//! processes (HTTP, CLI, SIGKILL crash and restart, the operator page in a
//! browser) or, for plugin authoring, real cargo builds. One test binary, so the host is linked once for all of them:
//! `cargo test -p realmhost --test e2e` runs them all, `--test e2e crash::`
//! one module.

mod common;

// Plugin authoring (`realmhost new`, then cargo builds of the new crate) is
// among the longest tests; libtest starts tests in name order, so its name
// sorts first and it runs beside the others rather than after them.
mod authoring;
mod browser_ui;
mod cli_e2e;
mod cluster;
mod crash;
mod crash_messages;
mod node_e2e;
mod storage_e2e;
