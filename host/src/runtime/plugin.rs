//! One loaded plugin version: its compiled component, a pool of warm
//! instances, and the metered, limited calls into it.
//!
//! Every call that touches a realm runs with that realm **in scope**: the
//! instance's host context holds a [`CallState`] over the realm's committed
//! map, the guest reads and writes entries through the `state` import, and
//! only a successful call yields the realm's next map ([`Written`]). The
//! write buffer of a failed call is dropped with it.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use wasmtime::{Store, StoreLimitsBuilder, Trap};

use super::bindings::{Contract, Logic, LogicPre};
use super::convert;
use super::faults::{FaultLog, QuarantinePolicy, realm_key};
use super::host_ctx::HostCtx;
use super::{
    PluginInfo, PluginTag, PluginVersion, Rejection, RuntimeConfig, RuntimeError, TrapCause,
};
use crate::message::Outgoing;
use crate::realm::EventRecord;
use crate::state::{Access, CallState, Change, StateLimits, StateMap, Written};

/// Result of applying one event.
#[derive(Debug, Clone)]
pub enum ApplyOutcome {
    /// The event was applied: the realm's next map and what changed, and
    /// the messages it sends (in order; unchecked: the node checks them
    /// against its limits before anything is stored).
    Applied(Written, Vec<Outgoing>),
    /// The plugin refused the event (a domain "no").
    Rejected(Rejection),
    /// The plugin could not understand its input (bad payload or entry).
    Invalid(String),
}

/// A failed event: [`ApplyOutcome::Rejected`] or [`ApplyOutcome::Invalid`]
/// without the success case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventFailure {
    /// The plugin refused the event.
    Rejected(Rejection),
    /// The plugin could not understand its input.
    Invalid(String),
}

impl fmt::Display for EventFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Rejected(r) => write!(f, "rejected: {r}"),
            Self::Invalid(m) => write!(f, "invalid: {m}"),
        }
    }
}

/// Result of an `apply-batch` call.
#[derive(Debug, Clone)]
pub enum BatchOutcome {
    /// The map after every event of the batch.
    Applied(Written),
    /// Event `index` failed; nothing of the batch was kept.
    Failed {
        /// Index in the batch of the failing event.
        index: u32,
        /// Why.
        error: EventFailure,
    },
}

/// A replay's result: the final map and every key it changed.
#[derive(Debug, Clone)]
pub struct Replayed {
    /// The map after the last event.
    pub map: StateMap,
    /// Keys changed along the way, ascending (value `None` if the key ended
    /// up deleted).
    pub changes: Vec<Change>,
}

/// What a replay ends with: the final map, or the seq of the event that
/// failed and why.
pub type ReplayResult = Result<Replayed, (u64, EventFailure)>;

/// A call's result and the fuel it burned (for gas accounting).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metered<T> {
    /// The result.
    pub value: T,
    /// Fuel consumed: the guest's instructions plus the host's state
    /// operations (see [`crate::state::call::STATE_OP_FUEL`]).
    pub fuel: u64,
}

/// Counters of one plugin version.
#[derive(Debug, Default)]
pub struct PluginStats {
    /// Calls made.
    pub calls: AtomicU64,
    /// Calls that trapped or broke the contract.
    pub faults: AtomicU64,
    /// Fuel burned in total.
    pub fuel: AtomicU64,
    /// Instances created (pool misses).
    pub instantiations: AtomicU64,
    /// State operations served.
    pub state_ops: AtomicU64,
}

/// The realm a call runs on: its id and committed map.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    /// The realm id.
    pub realm: &'a str,
    /// Its committed map.
    pub state: &'a StateMap,
}

impl<'a> Scope<'a> {
    /// A scope on `realm` with committed map `state`.
    pub fn new(realm: &'a str, state: &'a StateMap) -> Self {
        Self { realm, state }
    }
}

struct Instance {
    store: Store<HostCtx>,
    bindings: Logic,
}

/// One loaded, ready-to-call plugin version.
///
/// Calls are synchronous and CPU-bound (bounded by fuel and state limits);
/// each takes a warm instance from the pool, or instantiates one (~tens of
/// µs with the pooling allocator). A call that traps discards its instance —
/// a wasmtime store is unusable after a trap — and the next call gets a
/// fresh one.
pub struct Plugin {
    info: PluginInfo,
    tag: Arc<PluginTag>,
    label: Arc<str>,
    pre: LogicPre<HostCtx>,
    engine: wasmtime::Engine,
    config: Arc<RuntimeConfig>,
    state_limits: Arc<StateLimits>,
    idle: Mutex<Vec<Instance>>,
    stats: PluginStats,
    faults: Mutex<FaultLog>,
    /// Mirror of `faults.quarantined`, so the per-call check takes no lock.
    quarantined: AtomicBool,
}

impl fmt::Debug for Plugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plugin")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl Plugin {
    pub(crate) fn new(
        engine: wasmtime::Engine,
        pre: LogicPre<HostCtx>,
        config: Arc<RuntimeConfig>,
        version: PluginVersion,
        size_bytes: usize,
    ) -> Result<Self, RuntimeError> {
        let mut plugin = Self {
            info: PluginInfo {
                realm_type: String::new(),
                semver: String::new(),
                description: String::new(),
                state_version: 0,
                version,
                size_bytes,
            },
            tag: Arc::new(PluginTag {
                realm_type: Arc::from(""),
                version,
                state_version: 0,
            }),
            label: Arc::from(format!("?@{}", version.short())),
            pre,
            engine,
            state_limits: Arc::new(config.state_limits.clone()),
            config,
            idle: Mutex::new(Vec::new()),
            stats: PluginStats::default(),
            faults: Mutex::new(FaultLog::default()),
            quarantined: AtomicBool::new(false),
        };
        let fuel = plugin.config.fuel_per_call;
        let described = plugin.call(None, fuel, |b, s| b.call_describe(s))?.value.0;
        if !valid_realm_type(&described.realm_type) {
            return Err(RuntimeError::Incompatible {
                reason: format!(
                    "describe returned an invalid realm type {} (1..=64 bytes of [a-z0-9_-])",
                    crate::quote::Quoted(&described.realm_type)
                ),
            });
        }
        if semver::Version::parse(&described.version).is_err() {
            return Err(RuntimeError::Incompatible {
                reason: format!(
                    "describe returned the version {}, which is not a semantic version (like 1.2.0 or 1.2.0-beta.1): operators select versions by it",
                    crate::quote::Quoted(&described.version)
                ),
            });
        }
        plugin.label = Arc::from(format!("{}@{}", described.realm_type, version.short()));
        plugin.info.realm_type = described.realm_type;
        plugin.info.semver = described.version;
        plugin.info.description = bounded_description(described.description);
        plugin.info.state_version = described.state_version;
        plugin.tag = Arc::new(PluginTag {
            realm_type: Arc::from(plugin.info.realm_type.as_str()),
            version,
            state_version: plugin.info.state_version,
        });
        // Instances made before the label was known carry the old label.
        plugin.idle.lock().clear();
        Ok(plugin)
    }

    /// Who the plugin is.
    pub fn info(&self) -> &PluginInfo {
        &self.info
    }

    /// The shared tag realm states built by this version carry.
    pub fn tag(&self) -> &Arc<PluginTag> {
        &self.tag
    }

    /// Realm type the plugin implements.
    pub fn realm_type(&self) -> &str {
        &self.info.realm_type
    }

    /// Content hash of the component.
    pub fn version(&self) -> PluginVersion {
        self.info.version
    }

    /// The plugin's state (entry layout) version.
    pub fn state_version(&self) -> u32 {
        self.info.state_version
    }

    /// Call counters.
    pub fn stats(&self) -> &PluginStats {
        &self.stats
    }

    /// The per-realm state limits its calls run under.
    pub fn state_limits(&self) -> &StateLimits {
        &self.state_limits
    }

    fn ops(&self, events: u64) -> u64 {
        u64::from(self.state_limits.max_ops_per_call).saturating_mul(events.max(1))
    }

    /// `init`: the initial entries of a new realm (its map starts empty).
    #[tracing::instrument(name = "plugin.init", level = "trace", skip_all, fields(plugin = %self.label, realm))]
    pub fn init(&self, realm: &str) -> Result<Metered<Result<Written, String>>, RuntimeError> {
        let empty = StateMap::new();
        let scope = Scope::new(realm, &empty);
        let access = Access::ReadWrite {
            max_ops: self.ops(1),
        };
        let m = self.call(Some((scope, access)), self.config.fuel_per_call, |b, s| {
            b.call_init(s, realm)
        })?;
        self.check_err_len(realm, &m.value.0)?;
        Ok(Metered {
            value: m.value.0.map(|()| m.value.1.finish_written()),
            fuel: m.fuel,
        })
    }

    /// `apply`: one event on the realm in `scope`.
    pub fn apply(
        &self,
        scope: Scope<'_>,
        event: &EventRecord,
    ) -> Result<Metered<ApplyOutcome>, RuntimeError> {
        self.apply_with_fuel(scope, event, self.config.fuel_per_call)
    }

    /// `apply` with an explicit fuel budget instead of `fuel_per_call`
    /// (for embedders that give some callers more or less headroom; the
    /// shard monitor charges gas on the fuel burned, it does not change the
    /// budget).
    #[tracing::instrument(name = "plugin.apply", level = "trace", skip_all, fields(plugin = %self.label, realm = scope.realm, seq = event.seq))]
    pub fn apply_with_fuel(
        &self,
        scope: Scope<'_>,
        event: &EventRecord,
        fuel: u64,
    ) -> Result<Metered<ApplyOutcome>, RuntimeError> {
        let ctx = convert::event_context(event);
        let access = Access::ReadWrite {
            max_ops: self.ops(1),
        };
        let m = self.call(Some((scope, access)), fuel, |b, s| b.call_apply(s, ctx))?;
        let (result, state) = m.value;
        let value = match result {
            Ok(effects) => ApplyOutcome::Applied(
                state.finish_written(),
                effects.messages.into_iter().map(convert::message).collect(),
            ),
            Err(e) => {
                let e = convert::failure(e);
                self.check_failure_len(scope.realm, &e)?;
                match e {
                    EventFailure::Rejected(r) => ApplyOutcome::Rejected(r),
                    EventFailure::Invalid(m) => ApplyOutcome::Invalid(m),
                }
            }
        };
        Ok(Metered {
            value,
            fuel: m.fuel,
        })
    }

    /// `apply-batch` on a packed batch (see `realmhost_guest::batch`) of
    /// `count` events, all or nothing.
    #[tracing::instrument(name = "plugin.apply_batch", level = "debug", skip_all, fields(plugin = %self.label, realm = scope.realm, count))]
    pub fn apply_batch(
        &self,
        scope: Scope<'_>,
        batch: &[u8],
        count: u32,
    ) -> Result<Metered<BatchOutcome>, RuntimeError> {
        let fuel = self.config.fuel_per_call.saturating_add(
            self.config
                .fuel_per_batch_event
                .saturating_mul(u64::from(count)),
        );
        let access = Access::ReadWrite {
            max_ops: self.ops(u64::from(count)),
        };
        let m = self.call(Some((scope, access)), fuel, |b, s| {
            b.call_apply_batch(s, batch)
        })?;
        let (result, state) = m.value;
        let value = match result {
            Ok(()) => BatchOutcome::Applied(state.finish_written()),
            Err(e) if e.index < count.max(1) => {
                let error = convert::failure(e.error);
                self.check_failure_len(scope.realm, &error)?;
                BatchOutcome::Failed {
                    index: e.index,
                    error,
                }
            }
            Err(e) => {
                return Err(self.malformed(
                    Some(scope.realm),
                    format!("batch error index {} outside a batch of {count}", e.index),
                ));
            }
        };
        Ok(Metered {
            value,
            fuel: m.fuel,
        })
    }

    /// Apply `events` in order to `state` through `apply-batch`, `chunk`
    /// events per call. Returns the final map and every key changed, or the
    /// failing event's seq and why.
    pub fn replay(
        &self,
        realm: &str,
        state: StateMap,
        events: &[EventRecord],
        chunk: usize,
    ) -> Result<Metered<ReplayResult>, RuntimeError> {
        let mut fuel = 0;
        let mut map = state;
        let mut changed: std::collections::BTreeMap<
            crate::state::Bytes,
            Option<crate::state::Bytes>,
        > = std::collections::BTreeMap::new();
        let layout = match self.pre.contract() {
            Contract::V2 => realmhost_guest::batch::BATCH_FORMAT_V1,
            Contract::V3 => realmhost_guest::batch::BATCH_FORMAT_VERSION,
        };
        let mut enc = realmhost_guest::batch::BatchEncoder::with_version(layout, 4096);
        for part in events.chunks(chunk.max(1)) {
            enc.clear();
            for e in part {
                enc.push(&e.as_event_ref());
            }
            let count = enc.len();
            let m = self.apply_batch(Scope::new(realm, &map), enc.as_bytes(), count)?;
            fuel += m.fuel;
            match m.value {
                BatchOutcome::Applied(w) => {
                    map = w.map;
                    changed.extend(w.changes);
                }
                BatchOutcome::Failed { index, error } => {
                    let seq = part.get(index as usize).map_or(0, |e| e.seq);
                    return Ok(Metered {
                        value: Err((seq, error)),
                        fuel,
                    });
                }
            }
        }
        Ok(Metered {
            value: Ok(Replayed {
                map,
                changes: changed.into_iter().collect(),
            }),
            fuel,
        })
    }

    /// `migrate`: bring a map written with `from_state_version` to this
    /// plugin's state version. Its budget grows with the realm, since a
    /// migration may rewrite every entry.
    #[tracing::instrument(name = "plugin.migrate", level = "debug", skip_all, fields(plugin = %self.label, realm = scope.realm, from = from_state_version))]
    pub fn migrate(
        &self,
        scope: Scope<'_>,
        from_state_version: u32,
    ) -> Result<Metered<Result<Written, String>>, RuntimeError> {
        let entries = scope.state.len();
        let fuel = self
            .config
            .fuel_per_call
            .saturating_add((self.config.fuel_per_batch_event / 16).saturating_mul(entries));
        let access = Access::ReadWrite {
            max_ops: self.ops(1).saturating_add(entries.saturating_mul(3)),
        };
        let m = self.call(Some((scope, access)), fuel, |b, s| {
            b.call_migrate(s, from_state_version)
        })?;
        self.check_err_len(scope.realm, &m.value.0)?;
        Ok(Metered {
            value: m.value.0.map(|()| m.value.1.finish_written()),
            fuel: m.fuel,
        })
    }

    /// `encode-event`: JSON to payload bytes (no realm in scope).
    pub fn encode_event(
        &self,
        kind: &str,
        json: &str,
    ) -> Result<Result<Vec<u8>, String>, RuntimeError> {
        let m = self.call(None, self.config.fuel_per_call, |b, s| {
            b.call_encode_event(s, kind, json)
        })?;
        match &m.value.0 {
            Ok(bytes) => self.check_len(None, bytes.len())?,
            Err(e) => self.check_len(None, e.len())?,
        }
        Ok(m.value.0)
    }

    /// `decode-event`: a stored payload as JSON (no realm in scope).
    pub fn decode_event(
        &self,
        kind: &str,
        payload: &[u8],
    ) -> Result<Result<String, String>, RuntimeError> {
        let m = self.call(None, self.config.fuel_per_call, |b, s| {
            b.call_decode_event(s, kind, payload)
        })?;
        match &m.value.0 {
            Ok(s) | Err(s) => self.check_len(None, s.len())?,
        }
        Ok(m.value.0)
    }

    /// `query`: a read-only JSON view of the realm in `scope`.
    pub fn query(
        &self,
        scope: Scope<'_>,
        request: &str,
    ) -> Result<Result<String, String>, RuntimeError> {
        let access = Access::ReadOnly {
            max_ops: self.ops(1),
        };
        let m = self.call(Some((scope, access)), self.config.fuel_per_call, |b, s| {
            b.call_query(s, request)
        })?;
        match &m.value.0 {
            Ok(s) | Err(s) => self.check_len(Some(scope.realm), s.len())?,
        }
        Ok(m.value.0)
    }

    fn check_len(&self, realm: Option<&str>, size: usize) -> Result<(), RuntimeError> {
        if size > self.config.max_output_bytes {
            let e = RuntimeError::OutputTooLarge {
                realm_type: self.info.realm_type.clone(),
                version: self.info.version,
                size,
                limit: self.config.max_output_bytes,
            };
            self.record_fault(realm, &e);
            return Err(e);
        }
        Ok(())
    }

    fn check_err_len(&self, realm: &str, r: &Result<(), String>) -> Result<(), RuntimeError> {
        match r {
            Err(e) => self.check_len(Some(realm), e.len()),
            Ok(()) => Ok(()),
        }
    }

    fn check_failure_len(&self, realm: &str, e: &EventFailure) -> Result<(), RuntimeError> {
        let n = match e {
            EventFailure::Rejected(r) => r.code.len() + r.message.len(),
            EventFailure::Invalid(m) => m.len(),
        };
        self.check_len(Some(realm), n)
    }

    fn malformed(&self, realm: Option<&str>, reason: String) -> RuntimeError {
        let e = RuntimeError::MalformedOutput {
            realm_type: self.info.realm_type.clone(),
            version: self.info.version,
            reason,
        };
        self.record_fault(realm, &e);
        e
    }

    /// Count a fault of the realm in scope; see [`super::faults`] for when
    /// the version is quarantined.
    fn record_fault(&self, realm: Option<&str>, e: &RuntimeError) {
        self.stats.faults.fetch_add(1, Ordering::Relaxed);
        let policy = QuarantinePolicy {
            faults: self.config.quarantine_faults,
            realms: self.config.quarantine_realms,
            window: Duration::from_secs(self.config.quarantine_window_secs),
        };
        let mut f = self.faults.lock();
        if f.record(Instant::now(), realm_key(realm), e.to_string(), policy) {
            self.quarantined.store(true, Ordering::Release);
            tracing::error!(plugin = %self.label, realms = f.distinct_realms(), last = ?f.last, "plugin version quarantined: faults span many realms");
        }
    }

    /// `Some(last fault)` while this version is quarantined for faulting.
    pub fn quarantined(&self) -> Option<String> {
        if !self.quarantined.load(Ordering::Acquire) {
            return None;
        }
        let f = self.faults.lock();
        f.quarantined.then(|| f.last.clone().unwrap_or_default())
    }

    /// Put the version back in service and forget its recent faults.
    pub fn release(&self) {
        let mut f = self.faults.lock();
        f.clear();
        self.quarantined.store(false, Ordering::Release);
    }

    fn instantiate(&self) -> Result<Instance, RuntimeError> {
        self.stats.instantiations.fetch_add(1, Ordering::Relaxed);
        let limits = StoreLimitsBuilder::new()
            .memory_size(self.config.max_memory_bytes)
            .trap_on_grow_failure(true)
            .build();
        let mut store = Store::new(&self.engine, HostCtx::new(self.label.clone(), limits));
        store.limiter(|ctx| &mut ctx.limits);
        store.epoch_deadline_callback(|_| Ok(super::slices::on_deadline()));
        store
            .set_fuel(self.config.fuel_per_call)
            .map_err(|e| RuntimeError::Config(e.to_string()))?;
        let bindings = self.pre.instantiate(&mut store).map_err(|e| {
            // Instantiation runs the guest's start code; a failure there is the plugin's.
            let err = RuntimeError::Trap {
                realm_type: self.info.realm_type.clone(),
                version: self.info.version,
                realm: None,
                cause: classify(&e, store.data()),
            };
            self.record_fault(None, &err);
            err
        })?;
        Ok(Instance { store, bindings })
    }

    /// Run `f` on a pooled instance under `fuel`, with `scope`'s realm in
    /// scope, classifying any trap. Returns the call's result and its state
    /// view (empty when no realm was in scope).
    fn call<R>(
        &self,
        scope: Option<(Scope<'_>, Access)>,
        fuel: u64,
        f: impl FnOnce(&Logic, &mut Store<HostCtx>) -> wasmtime::Result<R>,
    ) -> Result<Metered<(R, CallOutput)>, RuntimeError> {
        let pooled = self.idle.lock().pop();
        let mut inst = match pooled {
            Some(i) => i,
            None => self.instantiate()?,
        };
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        let realm = scope.map(|(s, _)| s.realm);
        let ctx = inst.store.data_mut();
        ctx.last_panic = None;
        ctx.log_lines = 0;
        ctx.no_realm = false;
        ctx.call = scope.map(|(s, access)| {
            CallState::new(
                Arc::from(s.realm),
                s.state,
                self.state_limits.clone(),
                access,
                self.config.max_output_bytes,
            )
        });
        inst.store
            .set_fuel(fuel)
            .map_err(|e| RuntimeError::Config(e.to_string()))?;
        inst.store.set_epoch_deadline(1);
        let slices = super::slices::enter();
        let result = f(&inst.bindings, &mut inst.store);
        drop(slices);
        inst.store.data_mut().flush_output();
        let wasm_fuel = fuel.saturating_sub(inst.store.get_fuel().unwrap_or(0));
        let call = inst.store.data_mut().call.take();
        let (state_fuel, ops) = call.as_ref().map_or((0, 0), |c| (c.gas(), c.ops()));
        let used = wasm_fuel.saturating_add(state_fuel);
        self.stats.fuel.fetch_add(used, Ordering::Relaxed);
        self.stats.state_ops.fetch_add(ops, Ordering::Relaxed);
        let err = match result {
            Ok(value) if used <= fuel => {
                let mut idle = self.idle.lock();
                if idle.len() < self.config.max_idle_instances {
                    idle.push(inst);
                }
                return Ok(Metered {
                    value: (value, CallOutput(call)),
                    fuel: used,
                });
            }
            // The guest finished, but its state operations took the call
            // past its budget: the same as running out of fuel.
            Ok(_) => RuntimeError::Trap {
                realm_type: self.info.realm_type.clone(),
                version: self.info.version,
                realm: realm.map(str::to_owned),
                cause: TrapCause::OutOfFuel,
            },
            Err(e) => match call.as_ref().and_then(CallState::violation) {
                Some(v) => RuntimeError::StateLimit {
                    realm_type: self.info.realm_type.clone(),
                    version: self.info.version,
                    error: v.clone(),
                },
                None => {
                    let cause = if inst.store.data().no_realm {
                        TrapCause::Other(format!("state operation with no realm in scope: {e:#}"))
                    } else {
                        classify(&e, inst.store.data())
                    };
                    tracing::warn!(plugin = %self.label, realm, %cause, "plugin call trapped; instance discarded");
                    RuntimeError::Trap {
                        realm_type: self.info.realm_type.clone(),
                        version: self.info.version,
                        realm: realm.map(str::to_owned),
                        cause,
                    }
                }
            },
        };
        // The instance is dropped: a trapped store is unusable.
        self.record_fault(realm, &err);
        Err(err)
    }
}

/// The state view a call leaves behind.
struct CallOutput(Option<CallState>);

impl CallOutput {
    fn finish_written(self) -> Written {
        match self.0 {
            Some(c) => c.finish(),
            None => Written {
                map: StateMap::new(),
                changes: Vec::new(),
            },
        }
    }
}

/// `[a-z0-9_-]`, 1..=64 bytes: a realm type is used in paths, metrics and
/// URLs, so nothing else is accepted.
/// Longest description kept (characters); the rest is cut.
pub const MAX_DESCRIPTION_CHARS: usize = 256;

fn bounded_description(mut d: String) -> String {
    if let Some((cut, _)) = d.char_indices().nth(MAX_DESCRIPTION_CHARS) {
        d.truncate(cut);
        d.push('…');
    }
    d
}

pub(crate) fn valid_realm_type(t: &str) -> bool {
    (1..=64).contains(&t.len())
        && t.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Turn a wasmtime error into a cause an operator can act on.
fn classify(e: &wasmtime::Error, ctx: &HostCtx) -> TrapCause {
    if ctx.exited {
        return TrapCause::Exit;
    }
    let trap = e.downcast_ref::<Trap>();
    match trap {
        Some(Trap::OutOfFuel) => return TrapCause::OutOfFuel,
        Some(Trap::StackOverflow) => return TrapCause::StackOverflow,
        _ => {}
    }
    let text = format!("{e:#}");
    if text.contains("growing memory")
        || text.contains("memory minimum size")
        || text.contains("exceeds memory limits")
    {
        return TrapCause::OutOfMemory;
    }
    if let Some(p) = &ctx.last_panic {
        return TrapCause::Panic(p.clone());
    }
    TrapCause::Other(match trap {
        Some(t) => t.to_string(),
        None => e.root_cause().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::{MAX_DESCRIPTION_CHARS, bounded_description, valid_realm_type};

    #[test]
    fn realm_types_are_plain_names() {
        for ok in ["ledger", "a", "x_y-1", &"a".repeat(64)] {
            assert!(valid_realm_type(ok), "{ok}");
        }
        for bad in ["", "../ x", "Ledger", "a b", "ü", &"a".repeat(65)] {
            assert!(!valid_realm_type(bad), "{bad}");
        }
    }

    #[test]
    fn descriptions_are_bounded() {
        assert_eq!(bounded_description("short".into()), "short");
        let long = bounded_description("é".repeat(10_000));
        assert_eq!(long.chars().count(), MAX_DESCRIPTION_CHARS + 1);
        assert!(long.ends_with('…'));
    }
}
