//! The host side of a plugin's imports: one [`HostCtx`] per wasmtime store,
//! serving `realmhost:realm/state` (scoped to the realm of the current call)
//! and `realmhost:realm/host` (logging).

use std::ops::Bound as StdBound;
use std::sync::Arc;

use wasmtime::StoreLimits;
use wasmtime::component::HasSelf;

use super::bindings;
use crate::state::{CallState, StateLimit, WriteBatchError};

/// Longest log line a plugin may write; longer lines are cut.
const MAX_LOG_LINE: usize = 4096;
/// Log lines a plugin may write per call; the rest are dropped.
pub(crate) const MAX_LOG_LINES_PER_CALL: u32 = 64;

/// Per-store host state: what the host functions see.
pub(crate) struct HostCtx {
    pub(crate) label: Arc<str>,
    pub(crate) limits: StoreLimits,
    pub(crate) last_panic: Option<String>,
    pub(crate) exited: bool,
    pub(crate) log_lines: u32,
    /// The realm in scope during `init`, `apply`, `apply-batch`, `migrate`
    /// and `query`; `None` otherwise (state operations then trap).
    pub(crate) call: Option<CallState>,
    /// Set when a state operation was attempted with no realm in scope.
    pub(crate) no_realm: bool,
    /// What the guest wrote to stdout and stderr during this call.
    pub(crate) output: super::stdio::GuestOutput,
}

impl HostCtx {
    pub(crate) fn new(label: Arc<str>, limits: StoreLimits) -> Self {
        Self {
            label,
            limits,
            last_panic: None,
            exited: false,
            log_lines: 0,
            call: None,
            no_realm: false,
            output: super::stdio::GuestOutput::default(),
        }
    }

    fn scope(&mut self) -> wasmtime::Result<&mut CallState> {
        match self.call.as_mut() {
            Some(c) => Ok(c),
            None => {
                self.no_realm = true;
                Err(wasmtime::Error::msg(format!(
                    "state operation with no realm in scope ({})",
                    StateLimit::NoRealm
                )))
            }
        }
    }
}

/// The call's limit error becomes a trap; the runtime reads the typed error
/// back from the [`CallState`] when it classifies the trap.
fn trap<T>(r: Result<T, crate::state::StateLimitError>) -> wasmtime::Result<T> {
    r.map_err(wasmtime::Error::new)
}

/// Writes a plugin's log line to the host's log (see `log` in the WIT).
fn log(ctx: &mut HostCtx, level: tracing::Level, mut message: String) {
    if message.len() > MAX_LOG_LINE {
        let mut cut = MAX_LOG_LINE;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
    }
    if level == tracing::Level::ERROR && message.starts_with("panic: ") {
        ctx.last_panic = Some(message.clone());
    }
    ctx.log_lines += 1;
    if ctx.log_lines > MAX_LOG_LINES_PER_CALL {
        return;
    }
    let plugin = &*ctx.label;
    let realm = ctx.call.as_ref().map_or("", |c| c.realm());
    match level {
        tracing::Level::TRACE => {
            tracing::trace!(target: "realmhost::plugin", plugin, realm, "{message}")
        }
        tracing::Level::DEBUG => {
            tracing::debug!(target: "realmhost::plugin", plugin, realm, "{message}")
        }
        tracing::Level::INFO => {
            tracing::info!(target: "realmhost::plugin", plugin, realm, "{message}")
        }
        tracing::Level::WARN => {
            tracing::warn!(target: "realmhost::plugin", plugin, realm, "{message}")
        }
        _ => tracing::error!(target: "realmhost::plugin", plugin, realm, "{message}"),
    }
}

/// The same imports for every supported contract version: only the
/// generated types differ.
macro_rules! serve_imports {
    ($v:ident) => {
        impl bindings::$v::realmhost::realm::types::Host for HostCtx {}

        impl bindings::$v::realmhost::realm::state::Host for HostCtx {
            fn get(&mut self, key: Vec<u8>) -> wasmtime::Result<Option<Vec<u8>>> {
                trap(self.scope()?.get(&key))
            }

            fn contains(&mut self, key: Vec<u8>) -> wasmtime::Result<bool> {
                trap(self.scope()?.contains(&key))
            }

            fn set(&mut self, key: Vec<u8>, value: Vec<u8>) -> wasmtime::Result<()> {
                trap(self.scope()?.set(&key, &value))
            }

            fn delete(&mut self, key: Vec<u8>) -> wasmtime::Result<bool> {
                trap(self.scope()?.delete(&key))
            }

            fn scan(
                &mut self,
                lower: bindings::$v::realmhost::realm::types::Bound,
                upper: bindings::$v::realmhost::realm::types::Bound,
                limit: u32,
                reverse: bool,
            ) -> wasmtime::Result<bindings::$v::realmhost::realm::types::ScanPage> {
                use bindings::$v::realmhost::realm::types::Bound;
                fn bound(b: &Bound) -> StdBound<&[u8]> {
                    match b {
                        Bound::Unbounded => StdBound::Unbounded,
                        Bound::Included(k) => StdBound::Included(k),
                        Bound::Excluded(k) => StdBound::Excluded(k),
                    }
                }
                let page = trap(
                    self.scope()?
                        .scan(bound(&lower), bound(&upper), limit, reverse),
                )?;
                Ok(bindings::$v::realmhost::realm::types::ScanPage {
                    entries: page.entries,
                    count: page.count,
                    resume: page.resume,
                })
            }

            fn len(&mut self) -> wasmtime::Result<u64> {
                trap(self.scope()?.len())
            }

            fn write_batch(&mut self, entries: Vec<u8>) -> wasmtime::Result<()> {
                match self.scope()?.write_batch(&entries) {
                    Ok(()) => Ok(()),
                    Err(WriteBatchError::Limit(e)) => Err(wasmtime::Error::new(e)),
                    Err(e) => Err(wasmtime::Error::new(e)),
                }
            }
        }

        impl bindings::$v::realmhost::realm::host::Host for HostCtx {
            fn log(
                &mut self,
                level: bindings::$v::realmhost::realm::types::LogLevel,
                message: String,
            ) {
                use bindings::$v::realmhost::realm::types::LogLevel;
                let level = match level {
                    LogLevel::Trace => tracing::Level::TRACE,
                    LogLevel::Debug => tracing::Level::DEBUG,
                    LogLevel::Info => tracing::Level::INFO,
                    LogLevel::Warn => tracing::Level::WARN,
                    LogLevel::Error => tracing::Level::ERROR,
                };
                log(self, level, message);
            }
        }
    };
}

serve_imports!(v2);
serve_imports!(v3);

/// Serve the imports of every supported contract version (their names
/// carry the version, so both live in one linker).
pub(crate) fn add_host_imports(
    linker: &mut wasmtime::component::Linker<HostCtx>,
) -> wasmtime::Result<()> {
    bindings::v3::RealmLogic::add_to_linker::<HostCtx, HasSelf<HostCtx>>(linker, |ctx| ctx)?;
    bindings::v2::RealmLogic::add_to_linker::<HostCtx, HasSelf<HostCtx>>(linker, |ctx| ctx)
}
