//! The example realm types compiled to WebAssembly components.
//!
//! `build.rs` compiles the plugin crates for `wasm32-wasip2` during the normal
//! cargo build; this crate embeds the results. The host uses them as its
//! built-in plugins (the embedded default) and the tests load them.

include!(concat!(env!("OUT_DIR"), "/artifacts.rs"));

/// Every example plugin as (realm type, component bytes).
pub const EXAMPLES: &[(&str, &[u8])] = &[
    ("counter", COUNTER),
    ("ledger", LEDGER),
    ("membership", MEMBERSHIP),
];

/// Deliberately misbehaving components, for tests only.
pub mod fixtures {
    /// A plugin whose event `kind` selects a misbehaviour (loop, alloc, panic,
    /// oversized entries, very many writes, writes then reject, `grow`, ...).
    pub const HOSTILE: &[u8] = super::HOSTILE;
    /// Path of [`HOSTILE`].
    pub const HOSTILE_PATH: &str = super::HOSTILE_PATH;
    /// A plugin that imports `wasi:clocks`, which the host must refuse.
    pub const FORBIDDEN: &[u8] = super::FORBIDDEN;
    /// Path of [`FORBIDDEN`].
    pub const FORBIDDEN_PATH: &str = super::FORBIDDEN_PATH;
    /// A component built against contract 0.1 (`realmhost:realm@0.1.0`),
    /// which the host must refuse, naming the version it needs.
    pub const CONTRACT_V01: &[u8] = super::CONTRACT_V01;
    /// Path of [`CONTRACT_V01`].
    pub const CONTRACT_V01_PATH: &str = super::CONTRACT_V01_PATH;
    /// A component built against contract 0.2 (`realmhost:realm@0.2.0`, no
    /// messages), realm type `legacy-counter`: each event's payload (a u64
    /// LE) is added to one counter, `query` answers `{"value":N}`, and
    /// `apply-batch` reads batch layout 1. The host must still load, apply
    /// and replay it.
    pub const CONTRACT_V02: &[u8] = super::CONTRACT_V02;
    /// Path of [`CONTRACT_V02`].
    pub const CONTRACT_V02_PATH: &str = super::CONTRACT_V02_PATH;
    /// A broken candidate `ledger` (keyed layout, state version 3) that
    /// rejects deposits above 50.
    pub const LEDGER_STRICT: &[u8] = super::LEDGER_STRICT;
    /// The ledger component with an extra custom section: the same logic
    /// under a different content hash, i.e. a second *version* of the
    /// `ledger` realm type for swap and rollback tests.
    pub fn ledger_next_version() -> Vec<u8> {
        let mut bytes = super::LEDGER.to_vec();
        // Custom section (id 0), size 5, name "next" (length 4).
        bytes.extend_from_slice(&[0x00, 0x05, 0x04, b'n', b'e', b'x', b't']);
        bytes
    }

    /// Path of [`LEDGER_STRICT`].
    pub const LEDGER_STRICT_PATH: &str = super::LEDGER_STRICT_PATH;
}
