//! The write-back cache in front of the host's state, installed for the
//! duration of every export call of a component (see `__private`).
//!
//! Every `state` import is a call across the sandbox boundary, which costs
//! several times a native map lookup. An event typically reads and writes the
//! same few keys (an account, a total, a counter), and a replayed batch
//! touches the same aggregates once per event. So, within one export call:
//!
//! - values read from the host are remembered, absence included, and served
//!   again without a host call;
//! - `set` and `delete` are buffered here; reads see them first;
//! - before `len` and `scan` the buffered writes are flushed, so that the
//!   host's merge of committed entries and writes stays the single source of
//!   truth for counts and ordering;
//! - when the call succeeds the remaining writes are flushed with one
//!   `write-batch` call before the export returns; when it fails (`Err`) they
//!   are dropped, and the host drops what was flushed earlier in the call, as
//!   it drops any failed call's writes. A trap loses both.
//!
//! The buffer is also flushed when it grows past [`FLUSH_ENTRIES`] writes or
//! [`FLUSH_BYTES`] bytes, so a call that writes without bound still meets the
//! host's limits (operations per call, entry and value sizes) early, and the
//! guest's memory stays bounded.
//!
//! In a read-only call (`query`) reads are cached and writes go straight to
//! the host, which refuses them (the call traps), as without the cache.
//!
//! The cache talks to the host through [`Remote`], so its semantics are
//! tested natively against an in-memory stand-in.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::ops::Bound;
use std::rc::Rc;

use super::page::Page;

/// Buffered writes that trigger a flush.
pub(crate) const FLUSH_ENTRIES: usize = 4096;
/// Buffered bytes (keys and values) that trigger a flush.
pub(crate) const FLUSH_BYTES: usize = 1 << 20;
/// Cached keys past which the cache is flushed and emptied.
pub(crate) const MAX_CACHED: usize = 16 * 1024;

/// In a `write-batch` buffer, the value length that marks a deletion.
pub const WRITE_BATCH_DELETE: u32 = u32::MAX;

/// The host's `state` interface, as the cache uses it.
pub(crate) trait Remote {
    fn get(&mut self, key: &[u8]) -> Option<Vec<u8>>;
    fn contains(&mut self, key: &[u8]) -> bool;
    fn set(&mut self, key: &[u8], value: &[u8]);
    fn delete(&mut self, key: &[u8]) -> bool;
    fn len(&mut self) -> u64;
    fn scan(&mut self, lower: Bound<&[u8]>, upper: Bound<&[u8]>, limit: u32, reverse: bool)
    -> Page;
    /// Apply a packed buffer of writes (see [`WriteBatch`]).
    fn write_batch(&mut self, entries: &[u8]);
}

/// What the cache knows about a key.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Known {
    /// The key holds no value.
    Absent,
    /// The key holds a value that has not been read (known from `contains`).
    Present,
    /// The key holds this value.
    Value(Vec<u8>),
}

#[derive(Debug)]
struct Slot {
    /// The key, shared with the hash index when there is one.
    key: Key,
    known: Known,
    /// Buffered: `known` (`Value` or `Absent`) is not yet at the host.
    dirty: bool,
}

/// Writes packed in the `write-batch` format: per write,
/// `u32 LE key length ‖ key`, then `u32 LE value length ‖ value` for a set or
/// [`WRITE_BATCH_DELETE`] for a delete.
#[derive(Debug, Default)]
pub(crate) struct WriteBatch(Vec<u8>);

impl WriteBatch {
    pub(crate) fn set(&mut self, key: &[u8], value: &[u8]) {
        self.key(key);
        self.0.extend_from_slice(&len32(value).to_le_bytes());
        self.0.extend_from_slice(value);
    }

    pub(crate) fn delete(&mut self, key: &[u8]) {
        self.key(key);
        self.0.extend_from_slice(&WRITE_BATCH_DELETE.to_le_bytes());
    }

    fn key(&mut self, key: &[u8]) {
        self.0.extend_from_slice(&len32(key).to_le_bytes());
        self.0.extend_from_slice(key);
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// A length as the packed formats carry it. Nothing near 4 GiB fits in a
/// component's memory next to a copy of it, and the host's value limits are
/// far below; `u32::MAX` itself is the delete marker, so it is refused too.
fn len32(b: &[u8]) -> u32 {
    match u32::try_from(b.len()) {
        Ok(n) if n != WRITE_BATCH_DELETE => n,
        _ => panic!("a state key or value of {} bytes is too long", b.len()),
    }
}

/// A small, fixed (so deterministic, and free of any import) hash for the
/// cache's keys, in the manner of FxHash: a word at a time, a rotate, a xor
/// and a multiply, then a finalizer that spreads every bit. Ordered maps cost more here: in wasm a byte-string
/// comparison is a byte loop, and a lookup makes several.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct KeyHasher(u64);

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl KeyHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for KeyHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().unwrap_or_default()));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut last = [0u8; 8];
            last[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(last));
        }
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        // The multiply leaves the low bits depending on the low bits of the
        // input only, and the table picks buckets by the low bits: mix every
        // bit into every other (murmur3's 64-bit finalizer).
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

type Key = Rc<[u8]>;

/// Cached keys up to which a lookup is a linear scan. An event touches a few
/// keys, and in wasm comparing a handful of short keys costs less than
/// hashing one; past this the slots get a hash index.
const LINEAR_SLOTS: usize = 16;

/// The cached keys, in the order they were first seen. Slots are never
/// removed one by one (only all at once, after a flush), so an index into
/// `list` stays valid for the whole time a key is cached.
#[derive(Debug, Default)]
struct Slots {
    list: Vec<Slot>,
    /// Built once `list` outgrows [`LINEAR_SLOTS`].
    index: Option<HashMap<Key, usize, BuildHasherDefault<KeyHasher>>>,
}

impl Slots {
    #[inline]
    fn find(&self, key: &[u8]) -> Option<usize> {
        match &self.index {
            Some(index) => index.get(key).copied(),
            None => self.list.iter().position(|s| *s.key == *key),
        }
    }

    #[inline]
    fn known(&self, key: &[u8]) -> Option<&Known> {
        self.find(key).map(|i| &self.list[i].known)
    }

    fn push(&mut self, slot: Slot) -> usize {
        let at = self.list.len();
        match &mut self.index {
            Some(index) => {
                index.insert(Rc::clone(&slot.key), at);
            }
            None if at >= LINEAR_SLOTS => {
                let mut index = HashMap::with_capacity_and_hasher(2 * at, Default::default());
                for (i, s) in self.list.iter().enumerate() {
                    index.insert(Rc::clone(&s.key), i);
                }
                index.insert(Rc::clone(&slot.key), at);
                self.index = Some(index);
            }
            None => {}
        }
        self.list.push(slot);
        at
    }

    fn len(&self) -> usize {
        self.list.len()
    }

    fn clear(&mut self) {
        self.list.clear();
        self.index = None;
    }
}

/// The cache of one export call.
pub(crate) struct Cache {
    remote: Box<dyn Remote>,
    slots: Slots,
    /// Slots with a buffered write, in the order they were first buffered
    /// (the order of the next flush).
    dirty: Vec<usize>,
    dirty_bytes: usize,
    read_only: bool,
}

impl core::fmt::Debug for Cache {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Cache")
            .field("cached", &self.slots.len())
            .field("dirty", &self.dirty.len())
            .field("read_only", &self.read_only)
            .finish_non_exhaustive()
    }
}

impl Cache {
    #[cfg_attr(not(any(target_arch = "wasm32", test)), allow(dead_code))]
    pub(crate) fn new(remote: Box<dyn Remote>, read_only: bool) -> Self {
        Self {
            remote,
            // Nothing allocated until the first key (a query may read none).
            slots: Slots::default(),
            dirty: Vec::new(),
            dirty_bytes: 0,
            read_only,
        }
    }

    /// Make room for one more slot: past [`MAX_CACHED`] keys the buffered
    /// writes are flushed and the cache starts over.
    fn make_room(&mut self) {
        if self.slots.len() >= MAX_CACHED {
            self.flush();
            self.slots.clear();
        }
    }

    fn remember(&mut self, key: &[u8], known: Known) {
        self.make_room();
        self.slots.push(Slot {
            key: Rc::from(key),
            known,
            dirty: false,
        });
    }

    #[inline(never)]
    pub(crate) fn get(&mut self, key: &[u8]) -> Option<Vec<u8>> {
        self.get_with(key, |v| v.map(<[u8]>::to_vec))
    }

    /// The value under `key`, lent to `f`: a cached value is not copied, and
    /// a value fetched from the host is cached without a copy.
    #[inline(never)]
    pub(crate) fn get_with<R>(&mut self, key: &[u8], f: impl FnOnce(Option<&[u8]>) -> R) -> R {
        let at = match self.slots.find(key) {
            Some(i) if self.slots.list[i].known != Known::Present => i,
            found => {
                let known = self.remote.get(key).map_or(Known::Absent, Known::Value);
                match found {
                    // Known present from `contains`: now its value is known too.
                    Some(i) => {
                        self.slots.list[i].known = known;
                        i
                    }
                    None => {
                        self.make_room();
                        self.slots.push(Slot {
                            key: Rc::from(key),
                            known,
                            dirty: false,
                        })
                    }
                }
            }
        };
        match &self.slots.list[at].known {
            Known::Value(v) => f(Some(v)),
            Known::Absent | Known::Present => f(None),
        }
    }

    #[inline(never)]
    pub(crate) fn contains(&mut self, key: &[u8]) -> bool {
        match self.slots.known(key) {
            Some(Known::Absent) => false,
            Some(Known::Present | Known::Value(_)) => true,
            None => {
                let present = self.remote.contains(key);
                let known = if present {
                    Known::Present
                } else {
                    Known::Absent
                };
                self.remember(key, known);
                present
            }
        }
    }

    /// Buffer `known` (a `Value` or `Absent`) as the key's next state.
    fn buffer(&mut self, key: &[u8], known: Known) {
        let bytes = key.len()
            + if let Known::Value(v) = &known {
                v.len()
            } else {
                0
            };
        match self.slots.find(key) {
            Some(i) => {
                let slot = &mut self.slots.list[i];
                slot.known = known;
                if !slot.dirty {
                    slot.dirty = true;
                    self.dirty.push(i);
                }
            }
            None => {
                self.make_room();
                let i = self.slots.push(Slot {
                    key: Rc::from(key),
                    known,
                    dirty: true,
                });
                self.dirty.push(i);
            }
        }
        self.dirty_bytes += bytes;
        if self.dirty.len() >= FLUSH_ENTRIES || self.dirty_bytes >= FLUSH_BYTES {
            self.flush();
        }
    }

    #[inline(never)]
    pub(crate) fn set(&mut self, key: &[u8], value: &[u8]) {
        if self.read_only {
            // The host refuses it and the call traps, as without the cache.
            return self.remote.set(key, value);
        }
        self.buffer(key, Known::Value(value.to_vec()));
    }

    #[inline(never)]
    pub(crate) fn set_owned(&mut self, key: &[u8], value: Vec<u8>) {
        if self.read_only {
            return self.remote.set(key, &value);
        }
        self.buffer(key, Known::Value(value));
    }

    #[inline(never)]
    pub(crate) fn delete(&mut self, key: &[u8]) -> bool {
        if self.read_only {
            return self.remote.delete(key);
        }
        match self.slots.known(key) {
            Some(Known::Absent) => false,
            Some(Known::Present | Known::Value(_)) => {
                self.buffer(key, Known::Absent);
                true
            }
            None => {
                // Unknown here, so nothing is buffered for it: the host can
                // delete it right away and say whether it held a value.
                let held = self.remote.delete(key);
                self.remember(key, Known::Absent);
                held
            }
        }
    }

    #[inline(never)]
    pub(crate) fn len(&mut self) -> u64 {
        self.flush();
        self.remote.len()
    }

    #[inline(never)]
    pub(crate) fn scan(
        &mut self,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
        limit: u32,
        reverse: bool,
    ) -> Page {
        self.flush();
        self.remote.scan(lower, upper, limit, reverse)
    }

    /// Send the buffered writes to the host in one `write-batch`.
    pub(crate) fn flush(&mut self) {
        if self.dirty.is_empty() {
            return;
        }
        let mut batch = WriteBatch(Vec::with_capacity(self.dirty_bytes + 8 * self.dirty.len()));
        for i in self.dirty.drain(..) {
            let slot = &mut self.slots.list[i];
            slot.dirty = false;
            match &slot.known {
                Known::Value(v) => batch.set(&slot.key, v),
                Known::Absent => batch.delete(&slot.key),
                Known::Present => {}
            }
        }
        self.dirty_bytes = 0;
        self.remote.write_batch(batch.as_bytes());
    }
}

/// The host itself, on wasm32.
#[cfg(target_arch = "wasm32")]
#[derive(Debug, Clone, Copy)]
pub(crate) struct HostRemote;

#[cfg(target_arch = "wasm32")]
impl Remote for HostRemote {
    fn get(&mut self, key: &[u8]) -> Option<Vec<u8>> {
        super::host::wit::get(key)
    }
    fn contains(&mut self, key: &[u8]) -> bool {
        super::host::wit::contains(key)
    }
    fn set(&mut self, key: &[u8], value: &[u8]) {
        super::host::wit::set(key, value)
    }
    fn delete(&mut self, key: &[u8]) -> bool {
        super::host::wit::delete(key)
    }
    fn len(&mut self) -> u64 {
        super::host::wit::len()
    }
    fn scan(
        &mut self,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
        limit: u32,
        reverse: bool,
    ) -> Page {
        super::host::scan(lower, upper, limit, reverse)
    }
    fn write_batch(&mut self, entries: &[u8]) {
        super::host::wit::write_batch(entries)
    }
}

#[cfg(test)]
#[path = "cache_tests.rs"]
mod tests;
