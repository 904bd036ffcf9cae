//! On-disk cache of compiled components.
//!
//! Compiling a component with Cranelift takes tens to hundreds of
//! milliseconds; loading a serialized one takes well under one. The cache
//! file name is a hash of the component's content hash, the engine's
//! compatibility hash (its compiler settings and target) and the wasmtime
//! version, so a cached artifact is only ever loaded by an engine that could
//! have produced it. Files are written to a temporary name and renamed, so a
//! crash never leaves a half-written artifact under a real name.
//!
//! Loading a serialized artifact is `unsafe` in wasmtime: the bytes are
//! trusted machine code. The cache directory must therefore be writable only
//! by the node; an unreadable or incompatible file is ignored and rebuilt.
//!
//! Before the disk, every runtime of the process looks in one shared memory
//! cache ([`SharedCompiled`]) of the artifacts this process compiled itself:
//! a process that opens several nodes or runtimes (an embedder with one node
//! per data directory, a test binary), or loads the same bytes again (a
//! rollback to an earlier version, a re-upload), compiles each component
//! once. Its artifacts never leave the process, so loading them is as safe
//! as the compilation that produced them; it is bounded in bytes and drops
//! the least recently used artifact first.

use std::hash::{Hash, Hasher};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};

use lru::LruCache;
use parking_lot::Mutex;
use sha2::Digest;
use wasmtime::Engine;
use wasmtime::component::Component;

use super::{PluginVersion, WASMTIME_VERSION};

/// The engine half of every cache key: the engine's compatibility hash
/// (compiler settings, target, memory layout) and the wasmtime version.
pub(crate) type EngineKey = [u8; 32];

pub(crate) struct ComponentCache {
    dir: PathBuf,
    engine_key: EngineKey,
}

/// Feeds `Hash` output into SHA-256 (the compatibility hash only offers `Hash`).
struct ShaHasher(sha2::Sha256);

impl Hasher for ShaHasher {
    fn finish(&self) -> u64 {
        0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

/// The cache key of `engine`.
pub(crate) fn engine_key(engine: &Engine) -> EngineKey {
    let mut h = ShaHasher(sha2::Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut h);
    h.write(WASMTIME_VERSION.as_bytes());
    h.0.finalize().into()
}

/// The key of one component compiled by one kind of engine.
fn artifact_key(version: PluginVersion, engine_key: &EngineKey) -> [u8; 32] {
    let mut h = sha2::Sha256::new();
    h.update(version.0);
    h.update(engine_key);
    h.finalize().into()
}

/// Compiled artifacts shared by every runtime of the process, bounded in
/// bytes (see the module docs).
pub(crate) struct SharedCompiled {
    artifacts: LruCache<[u8; 32], Arc<[u8]>>,
    bytes: usize,
    max_bytes: usize,
}

/// Bytes of serialized artifacts the process keeps (a built-in plugin's
/// artifact is a few hundred KiB to a few MiB).
const SHARED_MAX_BYTES: usize = 256 << 20;

static SHARED: LazyLock<Mutex<SharedCompiled>> =
    LazyLock::new(|| Mutex::new(SharedCompiled::new(SHARED_MAX_BYTES)));

impl SharedCompiled {
    fn new(max_bytes: usize) -> Self {
        Self {
            artifacts: LruCache::unbounded(),
            bytes: 0,
            max_bytes,
        }
    }

    fn get(&mut self, key: &[u8; 32]) -> Option<Arc<[u8]>> {
        self.artifacts.get(key).cloned()
    }

    fn put(&mut self, key: [u8; 32], artifact: Arc<[u8]>) {
        if artifact.len() > self.max_bytes {
            return;
        }
        if let Some(old) = self.artifacts.put(key, artifact.clone()) {
            self.bytes -= old.len();
        }
        self.bytes += artifact.len();
        while self.bytes > self.max_bytes {
            match self.artifacts.pop_lru() {
                Some((_, old)) => self.bytes -= old.len(),
                None => break,
            }
        }
    }
}

/// A component this process compiled before with an engine like `engine`,
/// and its serialized artifact.
pub(crate) fn shared_get(
    engine: &Engine,
    engine_key: &EngineKey,
    version: PluginVersion,
) -> Option<(Component, Arc<[u8]>)> {
    let artifact = SHARED.lock().get(&artifact_key(version, engine_key))?;
    // SAFETY: the artifact was serialized in this process by `shared_put`
    // from a component compiled by an engine with the same compatibility
    // hash and wasmtime version (both in the key); it never left memory.
    match unsafe { Component::deserialize(engine, &artifact) } {
        Ok(c) => Some((c, artifact)),
        Err(e) => {
            tracing::warn!(error = %e, "ignoring an unusable compiled component");
            None
        }
    }
}

/// Keep `component`'s serialized artifact for the process's other runtimes;
/// returns it so the disk cache can write the same bytes.
pub(crate) fn shared_put(
    engine_key: &EngineKey,
    version: PluginVersion,
    component: &Component,
) -> Option<Arc<[u8]>> {
    let artifact: Arc<[u8]> = match component.serialize() {
        Ok(bytes) => bytes.into(),
        Err(e) => {
            tracing::warn!(error = %e, "could not serialize a compiled component");
            return None;
        }
    };
    SHARED
        .lock()
        .put(artifact_key(version, engine_key), artifact.clone());
    Some(artifact)
}

impl ComponentCache {
    pub(crate) fn open(dir: &Path, engine_key: EngineKey) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(Self {
            dir: dir.to_owned(),
            engine_key,
        })
    }

    fn path(&self, version: PluginVersion) -> PathBuf {
        let key = artifact_key(version, &self.engine_key);
        self.dir.join(format!("{}.cwasm", hex::encode(&key[..16])))
    }

    pub(crate) fn get(&self, engine: &Engine, version: PluginVersion) -> Option<Component> {
        let path = self.path(version);
        if !path.exists() {
            return None;
        }
        // SAFETY: the file was written by `put` with an engine of identical
        // configuration and version (both are part of its name), into a
        // directory the node owns. wasmtime additionally checks the header.
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "ignoring unusable cached component");
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    /// Write `artifact` (a serialized component) for `version`.
    pub(crate) fn put(&self, version: PluginVersion, artifact: &[u8]) -> io::Result<()> {
        let path = self.path(version);
        if path.exists() {
            return Ok(());
        }
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, artifact)?;
        std::fs::rename(&tmp, &path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn artifact(n: usize, fill: u8) -> Arc<[u8]> {
        vec![fill; n].into()
    }

    #[test]
    fn the_shared_cache_stays_within_its_bytes_and_drops_the_least_recent() {
        let mut c = SharedCompiled::new(100);
        c.put([1; 32], artifact(40, 1));
        c.put([2; 32], artifact(40, 2));
        assert!(c.get(&[1; 32]).is_some()); // 1 is now the most recent
        c.put([3; 32], artifact(40, 3));
        assert_eq!(c.bytes, 80);
        assert!(c.get(&[2; 32]).is_none(), "the least recent goes first");
        assert!(c.get(&[1; 32]).is_some() && c.get(&[3; 32]).is_some());
        // Replacing an entry counts its bytes once; one bigger than the
        // whole budget is not kept.
        c.put([3; 32], artifact(50, 3));
        assert_eq!(c.bytes, 90);
        c.put([4; 32], artifact(101, 4));
        assert!(c.get(&[4; 32]).is_none());
        assert_eq!(c.bytes, 90);
    }
}
