//! # realmhost
//!
//! A WebAssembly-pluggable shard host. A node keeps millions of *realms*
//! (tenants, worlds, ledgers, ...) in a sharded in-memory store, persists every
//! realm's events in an embedded database (redb), rebuilds a realm on a cache
//! miss from its last snapshot plus the events since, evicts cold realms in the
//! background, and watches every shard for abuse. What an event *does* to a
//! realm lives in a sandboxed WebAssembly component per realm type, written
//! with the `realmhost-guest` SDK and hot-swappable at run time.
//!
//! Modules, one concern each:
//! - [`realm`]: realm ids, events, shard selection — the shared vocabulary.
//! - [`runtime`]: the wasmtime engine, plugin loading, limits, instance pools.
//! - [`store`]: the sharded in-memory realm store with LRU eviction.
//! - [`storage`]: the durable event log and snapshots.
//! - [`monitor`]: the shard monitor (entropy, reputation, quarantine, gas).
//! - [`node`]: the host that ties them together, its HTTP API and metrics.
//! - `cluster`: cluster mode on NATS JetStream (shard leases, replicated
//!   shard logs, forwarding between nodes).
//! - `cli`: the `realmhost` command line.
//! - [`quote`]: bounded quoting of untrusted text in errors.
//!
//! ## Features
//! - `server` (default): the HTTP API (`node::api`, axum) and the Prometheus
//!   exporter (`node::metrics`).
//! - `builtin-plugins` (default): the example plugins compiled in, loaded when
//!   `NodeConfig::builtin_plugins` is set; building them needs the
//!   `wasm32-wasip2` target.
//! - `cluster` (default through `cli`; implies `server`): cluster mode.
//! - `cli` (default; implies the others): the `realmhost` binary's command line.
//!
//! An embedder that only calls the node takes
//! `realmhost = { version = "...", default-features = false }`: everything
//! above except the HTTP server, the command line and the example plugins.

#[cfg(feature = "cli")]
pub mod cli;
#[cfg(feature = "cluster")]
pub mod cluster;
pub mod message;
pub mod monitor;
pub mod node;
pub mod quote;
pub mod realm;
pub mod runtime;
pub mod state;
pub mod storage;
pub mod store;

pub use realm::{EventRecord, InvalidRealmId, NewEvent, RealmId, shard_of};
pub use runtime::{
    ApplyOutcome, PluginInfo, PluginRuntime, PluginVersion, Rejection, RuntimeConfig, RuntimeError,
};
