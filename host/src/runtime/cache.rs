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

use std::hash::{Hash, Hasher};
use std::io;
use std::path::{Path, PathBuf};

use sha2::Digest;
use wasmtime::Engine;
use wasmtime::component::Component;

use super::{PluginVersion, WASMTIME_VERSION};

pub(crate) struct ComponentCache {
    dir: PathBuf,
    engine_key: [u8; 32],
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

impl ComponentCache {
    pub(crate) fn open(dir: &Path, engine: &Engine) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut h = ShaHasher(sha2::Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut h);
        h.write(WASMTIME_VERSION.as_bytes());
        Ok(Self {
            dir: dir.to_owned(),
            engine_key: h.0.finalize().into(),
        })
    }

    fn path(&self, version: PluginVersion) -> PathBuf {
        let mut h = sha2::Sha256::new();
        h.update(version.0);
        h.update(self.engine_key);
        self.dir
            .join(format!("{}.cwasm", hex::encode(&h.finalize()[..16])))
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

    pub(crate) fn put(&self, version: PluginVersion, component: &Component) -> io::Result<()> {
        let bytes = component
            .serialize()
            .map_err(|e| io::Error::other(e.to_string()))?;
        let path = self.path(version);
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, &path)
    }
}
