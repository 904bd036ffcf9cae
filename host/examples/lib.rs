//! Runnable embeddings of the `realmhost` library.
//!
//! This package depends on `realmhost` as an embedding program does, with
//! `default-features = false` (no HTTP server, command line or built-in
//! plugins), so its examples show, and CI checks, what the lean library
//! offers:
//!
//! ```sh
//! cargo run -p realmhost-examples --example embed_minimal         # open, load a plugin from bytes, append, query, shut down
//! cargo run -p realmhost-examples --example embed_custom_storage  # a Storage backend of your own
//! cargo run -p realmhost-examples --example embed_stats           # node, store and monitor statistics
//! ```
//!
//! The examples are compiled (unoptimized) by `cargo test --workspace`; the
//! library they link is built with whatever profile the command names.
