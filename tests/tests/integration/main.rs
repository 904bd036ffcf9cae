//! Integration tests of the library: nodes, storage, the runtime and the
//! HTTP API driven in-process, plus child processes where a crash needs one.
//! One test binary, so the host is linked once for all of them:
//! `cargo test -p realmhost-tests --test integration` runs them all,
//! `--test integration messaging::` one module.

mod append_conditions;
mod decoder_props;
mod error_context;
mod exec_pool;
mod http_surface;
mod keyed_state;
mod messaging;
mod messaging_http;
mod node;
mod pipeline;
mod plugin_lifecycle;
mod runtime;
mod storage_crash;
mod storage_faults;
mod ui_snapshot;
