//! One loaded plugin version: its compiled component, a pool of warm
//! instances, and the metered, limited calls into it.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use wasmtime::component::HasSelf;
use wasmtime::{Store, StoreLimits, StoreLimitsBuilder, Trap};

use super::bindings::{
    self, ApplyError as WitApplyError, EventContext, LogLevel, RealmLogic, RealmLogicPre,
};
use super::{RuntimeConfig, RuntimeError, TrapCause};
use crate::realm::EventRecord;

/// Longest log line a plugin may write; longer lines are cut.
const MAX_LOG_LINE: usize = 4096;
/// Log lines a plugin may write per call; the rest are dropped.
const MAX_LOG_LINES_PER_CALL: u32 = 64;

/// A plugin version: the SHA-256 of its component bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PluginVersion(pub [u8; 32]);

impl PluginVersion {
    /// Hash component bytes.
    pub fn of(bytes: &[u8]) -> Self {
        use sha2::Digest;
        Self(sha2::Sha256::digest(bytes).into())
    }

    /// Full lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parse full hex (64 characters).
    pub fn from_hex(s: &str) -> Option<Self> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(Self(out))
    }

    /// The first 12 hex characters: enough to tell versions apart in logs.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..6])
    }
}

impl fmt::Display for PluginVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.short())
    }
}

impl fmt::Debug for PluginVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PluginVersion({})", self.short())
    }
}

impl Serialize for PluginVersion {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for PluginVersion {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::from_hex(&s)
            .ok_or_else(|| serde::de::Error::custom("plugin version must be 64 hex characters"))
    }
}

/// What a plugin says about itself (`describe`), plus its content hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginInfo {
    /// Realm type the plugin implements.
    pub realm_type: String,
    /// The plugin's semantic version.
    pub semver: String,
    /// One line for operators.
    pub description: String,
    /// Content hash of the component.
    pub version: PluginVersion,
    /// Size of the component in bytes.
    pub size_bytes: usize,
}

/// A domain rejection returned by a plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    /// Stable reason, e.g. `overdraft`.
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// Result of applying one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// The new state.
    Applied(Vec<u8>),
    /// The plugin refused the event (a domain "no").
    Rejected(Rejection),
    /// The plugin could not understand its input (bad payload or state).
    Invalid(String),
}

/// Result of an `apply-batch` call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOutcome {
    /// The state after every event of the batch.
    Applied(Vec<u8>),
    /// Event `index` failed; no state was produced.
    Failed {
        /// Index in the batch of the failing event.
        index: u32,
        /// [`ApplyOutcome::Rejected`] or [`ApplyOutcome::Invalid`].
        error: ApplyOutcome,
    },
}

/// A call's result and the fuel it burned (for gas accounting).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metered<T> {
    /// The result.
    pub value: T,
    /// Fuel consumed by the guest.
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
}

/// Per-store host state: what the host functions see.
pub(crate) struct HostCtx {
    label: Arc<str>,
    limits: StoreLimits,
    last_panic: Option<String>,
    pub(crate) exited: bool,
    log_lines: u32,
}

impl bindings::realmhost::realm::types::Host for HostCtx {}

impl bindings::realmhost::realm::host::Host for HostCtx {
    fn log(&mut self, level: LogLevel, mut message: String) {
        if message.len() > MAX_LOG_LINE {
            let mut cut = MAX_LOG_LINE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        if matches!(level, LogLevel::Error) && message.starts_with("panic: ") {
            self.last_panic = Some(message.clone());
        }
        self.log_lines += 1;
        if self.log_lines > MAX_LOG_LINES_PER_CALL {
            return;
        }
        let plugin = &*self.label;
        match level {
            LogLevel::Trace => tracing::trace!(target: "realmhost::plugin", plugin, "{message}"),
            LogLevel::Debug => tracing::debug!(target: "realmhost::plugin", plugin, "{message}"),
            LogLevel::Info => tracing::info!(target: "realmhost::plugin", plugin, "{message}"),
            LogLevel::Warn => tracing::warn!(target: "realmhost::plugin", plugin, "{message}"),
            LogLevel::Error => tracing::error!(target: "realmhost::plugin", plugin, "{message}"),
        }
    }
}

pub(crate) fn add_host_imports(
    linker: &mut wasmtime::component::Linker<HostCtx>,
) -> wasmtime::Result<()> {
    RealmLogic::add_to_linker::<HostCtx, HasSelf<HostCtx>>(linker, |ctx| ctx)
}

struct Instance {
    store: Store<HostCtx>,
    bindings: RealmLogic,
}

/// One loaded, ready-to-call plugin version.
///
/// Calls are synchronous and CPU-bound (bounded by fuel); each takes a warm
/// instance from the pool, or instantiates one (~tens of µs with the pooling
/// allocator). A call that traps discards its instance — a wasmtime store is
/// unusable after a trap — and the next call gets a fresh one.
pub struct Plugin {
    info: PluginInfo,
    label: Arc<str>,
    pre: RealmLogicPre<HostCtx>,
    engine: wasmtime::Engine,
    config: Arc<RuntimeConfig>,
    idle: Mutex<Vec<Instance>>,
    stats: PluginStats,
    faults: Mutex<FaultLog>,
    /// Mirror of `faults.quarantined`, so the per-call check takes no lock.
    quarantined: std::sync::atomic::AtomicBool,
}

/// Recent faults of one version, for plugin quarantine.
#[derive(Debug, Default)]
struct FaultLog {
    recent: VecDeque<Instant>,
    last: Option<String>,
    quarantined: bool,
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
        pre: RealmLogicPre<HostCtx>,
        config: Arc<RuntimeConfig>,
        version: PluginVersion,
        size_bytes: usize,
    ) -> Result<Self, RuntimeError> {
        let mut plugin = Self {
            info: PluginInfo {
                realm_type: String::new(),
                semver: String::new(),
                description: String::new(),
                version,
                size_bytes,
            },
            label: Arc::from(format!("?@{}", version.short())),
            pre,
            engine,
            config,
            idle: Mutex::new(Vec::new()),
            stats: PluginStats::default(),
            faults: Mutex::new(FaultLog::default()),
            quarantined: std::sync::atomic::AtomicBool::new(false),
        };
        let fuel = plugin.config.fuel_per_call;
        let described = plugin.call(fuel, |b, s| b.call_describe(s))?.value;
        if described.realm_type.is_empty() || described.realm_type.len() > 64 {
            return Err(RuntimeError::Incompatible {
                reason: format!(
                    "describe returned an invalid realm type {:?}",
                    described.realm_type
                ),
            });
        }
        plugin.label = Arc::from(format!("{}@{}", described.realm_type, version.short()));
        plugin.info.realm_type = described.realm_type;
        plugin.info.semver = described.version;
        plugin.info.description = described.description;
        // Instances made before the label was known carry the old label.
        plugin.idle.lock().clear();
        Ok(plugin)
    }

    /// Who the plugin is.
    pub fn info(&self) -> &PluginInfo {
        &self.info
    }

    /// Realm type the plugin implements.
    pub fn realm_type(&self) -> &str {
        &self.info.realm_type
    }

    /// Content hash of the component.
    pub fn version(&self) -> PluginVersion {
        self.info.version
    }

    /// Call counters.
    pub fn stats(&self) -> &PluginStats {
        &self.stats
    }

    /// `init`: the state of a realm with no events.
    pub fn init(&self, realm_id: &str) -> Result<Metered<Vec<u8>>, RuntimeError> {
        let m = self.call(self.config.fuel_per_call, |b, s| b.call_init(s, realm_id))?;
        self.check_len(m.value.len())?;
        Ok(m)
    }

    /// `apply`: one event.
    pub fn apply(
        &self,
        state: &[u8],
        event: &EventRecord,
    ) -> Result<Metered<ApplyOutcome>, RuntimeError> {
        self.apply_with_fuel(state, event, self.config.fuel_per_call)
    }

    /// `apply` with an explicit fuel budget instead of `fuel_per_call`
    /// (for embedders that give some callers more or less headroom; the
    /// shard monitor charges gas on the fuel burned, it does not change the
    /// budget).
    #[tracing::instrument(name = "plugin.apply", level = "trace", skip_all, fields(plugin = %self.label, seq = event.seq))]
    pub fn apply_with_fuel(
        &self,
        state: &[u8],
        event: &EventRecord,
        fuel: u64,
    ) -> Result<Metered<ApplyOutcome>, RuntimeError> {
        let ctx = EventContext {
            seq: event.seq,
            kind: &event.kind,
            payload: &event.payload,
            source: &event.source,
            source_realm: event.source_realm.as_deref(),
            timestamp_ms: event.timestamp_ms,
            source_reputation: event.source_reputation,
        };
        let m = self.call(fuel, |b, s| b.call_apply(s, state, ctx))?;
        let value = match m.value {
            Ok(state) => {
                self.check_len(state.len())?;
                ApplyOutcome::Applied(state)
            }
            Err(e) => from_wit(e),
        };
        Ok(Metered {
            value,
            fuel: m.fuel,
        })
    }

    /// `apply-batch` on a packed batch (see `realmhost_guest::batch`) of `count` events.
    #[tracing::instrument(name = "plugin.apply_batch", level = "debug", skip_all, fields(plugin = %self.label, count))]
    pub fn apply_batch(
        &self,
        state: &[u8],
        batch: &[u8],
        count: u32,
    ) -> Result<Metered<BatchOutcome>, RuntimeError> {
        let fuel = self.config.fuel_per_call.saturating_add(
            self.config
                .fuel_per_batch_event
                .saturating_mul(u64::from(count)),
        );
        let m = self.call(fuel, |b, s| b.call_apply_batch(s, state, batch))?;
        let value = match m.value {
            Ok(state) => {
                self.check_len(state.len())?;
                BatchOutcome::Applied(state)
            }
            Err(e) if e.index < count.max(1) => BatchOutcome::Failed {
                index: e.index,
                error: from_wit(e.error),
            },
            Err(e) => {
                return Err(self.malformed(format!(
                    "batch error index {} outside a batch of {count}",
                    e.index
                )));
            }
        };
        Ok(Metered {
            value,
            fuel: m.fuel,
        })
    }

    /// Apply `events` in order through `apply-batch`, `chunk` events per call.
    /// Returns the final state, or the failing event's seq and error.
    pub fn replay(
        &self,
        mut state: Vec<u8>,
        events: &[EventRecord],
        chunk: usize,
    ) -> Result<Metered<Result<Vec<u8>, (u64, ApplyOutcome)>>, RuntimeError> {
        let mut fuel = 0;
        let mut enc = realmhost_guest::batch::BatchEncoder::with_capacity(4096);
        for part in events.chunks(chunk.max(1)) {
            enc.clear();
            for e in part {
                enc.push(&e.as_event_ref());
            }
            let count = enc.len();
            let m = self.apply_batch(&state, enc.as_bytes(), count)?;
            fuel += m.fuel;
            match m.value {
                BatchOutcome::Applied(s) => state = s,
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
            value: Ok(state),
            fuel,
        })
    }

    /// `restore`: read back a snapshot (possibly written by an older version).
    #[tracing::instrument(name = "plugin.restore", level = "debug", skip_all, fields(plugin = %self.label, bytes = snapshot.len()))]
    pub fn restore(
        &self,
        snapshot: &[u8],
    ) -> Result<Metered<Result<Vec<u8>, String>>, RuntimeError> {
        let m = self.call(self.config.fuel_per_call, |b, s| {
            b.call_restore(s, snapshot)
        })?;
        if let Ok(state) = &m.value {
            self.check_len(state.len())?;
        }
        Ok(m)
    }

    /// `encode-event`: JSON to payload bytes.
    pub fn encode_event(
        &self,
        kind: &str,
        json: &str,
    ) -> Result<Result<Vec<u8>, String>, RuntimeError> {
        let m = self.call(self.config.fuel_per_call, |b, s| {
            b.call_encode_event(s, kind, json)
        })?;
        if let Ok(bytes) = &m.value {
            self.check_len(bytes.len())?;
        }
        Ok(m.value)
    }

    /// `query`: a read-only JSON view.
    pub fn query(
        &self,
        state: &[u8],
        request: &str,
    ) -> Result<Result<String, String>, RuntimeError> {
        let m = self.call(self.config.fuel_per_call, |b, s| {
            b.call_query(s, state, request)
        })?;
        match &m.value {
            Ok(s) => self.check_len(s.len())?,
            Err(s) => self.check_len(s.len())?,
        }
        Ok(m.value)
    }

    fn check_len(&self, size: usize) -> Result<(), RuntimeError> {
        if size > self.config.max_output_bytes {
            let e = RuntimeError::OutputTooLarge {
                realm_type: self.info.realm_type.clone(),
                version: self.info.version,
                size,
                limit: self.config.max_output_bytes,
            };
            self.record_fault(&e);
            return Err(e);
        }
        Ok(())
    }

    fn malformed(&self, reason: String) -> RuntimeError {
        let e = RuntimeError::MalformedOutput {
            realm_type: self.info.realm_type.clone(),
            version: self.info.version,
            reason,
        };
        self.record_fault(&e);
        e
    }

    /// Count a fault; past `quarantine_faults` faults within
    /// `quarantine_window_secs` the version is taken out of service.
    fn record_fault(&self, e: &RuntimeError) {
        self.stats.faults.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let window = Duration::from_secs(self.config.quarantine_window_secs);
        let mut f = self.faults.lock();
        f.last = Some(e.to_string());
        f.recent.push_back(now);
        while f
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > window)
        {
            f.recent.pop_front();
        }
        if self.config.quarantine_faults > 0
            && f.recent.len() > self.config.quarantine_faults as usize
            && !f.quarantined
        {
            f.quarantined = true;
            self.quarantined.store(true, Ordering::Release);
            tracing::error!(plugin = %self.label, faults = f.recent.len(), last = ?f.last, "plugin version quarantined");
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
        f.quarantined = false;
        self.quarantined.store(false, Ordering::Release);
        f.recent.clear();
    }

    fn instantiate(&self) -> Result<Instance, RuntimeError> {
        self.stats.instantiations.fetch_add(1, Ordering::Relaxed);
        let limits = StoreLimitsBuilder::new()
            .memory_size(self.config.max_memory_bytes)
            .trap_on_grow_failure(true)
            .build();
        let mut store = Store::new(
            &self.engine,
            HostCtx {
                label: self.label.clone(),
                limits,
                last_panic: None,
                exited: false,
                log_lines: 0,
            },
        );
        store.limiter(|ctx| &mut ctx.limits);
        store
            .set_fuel(self.config.fuel_per_call)
            .map_err(|e| RuntimeError::Config(e.to_string()))?;
        let bindings = self.pre.instantiate(&mut store).map_err(|e| {
            // Instantiation runs the guest's start code; a failure there is the plugin's.
            let err = RuntimeError::Trap {
                realm_type: self.info.realm_type.clone(),
                version: self.info.version,
                cause: classify(&e, store.data()),
            };
            self.record_fault(&err);
            err
        })?;
        Ok(Instance { store, bindings })
    }

    /// Run `f` on a pooled instance under `fuel`, classifying any trap.
    fn call<R>(
        &self,
        fuel: u64,
        f: impl FnOnce(&RealmLogic, &mut Store<HostCtx>) -> wasmtime::Result<R>,
    ) -> Result<Metered<R>, RuntimeError> {
        let pooled = self.idle.lock().pop();
        let mut inst = match pooled {
            Some(i) => i,
            None => self.instantiate()?,
        };
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        let ctx = inst.store.data_mut();
        ctx.last_panic = None;
        ctx.log_lines = 0;
        inst.store
            .set_fuel(fuel)
            .map_err(|e| RuntimeError::Config(e.to_string()))?;
        let result = f(&inst.bindings, &mut inst.store);
        let used = fuel.saturating_sub(inst.store.get_fuel().unwrap_or(0));
        self.stats.fuel.fetch_add(used, Ordering::Relaxed);
        match result {
            Ok(value) => {
                let mut idle = self.idle.lock();
                if idle.len() < self.config.max_idle_instances {
                    idle.push(inst);
                }
                Ok(Metered { value, fuel: used })
            }
            Err(e) => {
                let cause = classify(&e, inst.store.data());
                tracing::warn!(plugin = %self.label, %cause, "plugin call trapped; instance discarded");
                let err = RuntimeError::Trap {
                    realm_type: self.info.realm_type.clone(),
                    version: self.info.version,
                    cause,
                };
                self.record_fault(&err);
                Err(err)
            }
        }
    }
}

fn from_wit(e: WitApplyError) -> ApplyOutcome {
    match e {
        WitApplyError::Rejected(r) => ApplyOutcome::Rejected(Rejection {
            code: r.code,
            message: r.message,
        }),
        WitApplyError::Invalid(m) => ApplyOutcome::Invalid(m),
    }
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
