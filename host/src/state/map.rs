//! [`StateMap`]: one immutable version of a realm's keyed state.
//!
//! Two representations, chosen by size, invisible to callers (iteration
//! order, equality and the content hash do not depend on them):
//!
//! - **Packed** — most realms are small (a counter, a handful of members).
//!   Their entries live back to back in one shared buffer,
//!   `varint key length ‖ key ‖ varint value length ‖ value`, sorted by key:
//!   one allocation per realm and a few bytes of framing per entry, which is
//!   what keeps a million small realms cheap. Lookups scan the buffer; it is
//!   at most [`PACKED_MAX_BYTES`] long.
//! - **Layered** — past that size, two layers: a sorted, shared array of
//!   entries (the *base*, as a snapshot load produces it) and a persistent
//!   B+tree (`imbl::OrdMap`) of the changes made since (the *overlay*: new
//!   values and deletions of base keys). A new version made by an event
//!   shares the base and every untouched overlay node with the old one, so
//!   applying an event costs O(keys written · log n) however large the realm,
//!   and a reader holding the old version keeps a consistent view while the
//!   next event is applied. Loading a realm of n entries is one O(n) copy
//!   into the base — no tree to build, which is what keeps a cold load of a
//!   large realm close to the cost of reading its bytes. When the overlay
//!   outgrows a quarter of the base, the two are merged into a new base
//!   (amortized O(1) per write).
//!
//! A map moves to the layered form when it outgrows the packed limits and
//! back when it shrinks well below them (hysteresis, so a realm at the
//! border does not flip on every event).

use std::fmt;
use std::ops::Bound;
use std::sync::Arc;

use super::Bytes;

/// A packed map holds at most this many bytes (framing included)…
pub const PACKED_MAX_BYTES: usize = 1024;
/// …and at most this many entries.
pub const PACKED_MAX_ENTRIES: usize = 32;
/// A layered map smaller than this (in packed bytes and entries) is packed again.
const REPACK_BYTES: usize = PACKED_MAX_BYTES / 2;
const REPACK_ENTRIES: usize = PACKED_MAX_ENTRIES / 2;
/// The overlay is merged into the base once it holds more than a quarter of
/// the base's entries, and at least this many.
const MIN_COMPACT: usize = if cfg!(test) { 8 } else { 4096 };

/// Heap bytes a base entry costs beyond its key and value bytes: the array
/// slot (two shared-slice handles) and the two shared-slice headers, with
/// allocator rounding.
pub const BASE_ENTRY_OVERHEAD: usize = 72;
/// Heap bytes an overlay entry costs beyond its key and value bytes: a
/// B+tree slot, the shared-slice headers and the nodes' share.
pub const OVERLAY_ENTRY_OVERHEAD: usize = 120;

type Overlay = imbl::OrdMap<Bytes, Option<Bytes>>;

/// One immutable version of a realm's state: an ordered map of byte keys to
/// byte values. Cloning is O(1).
#[derive(Clone, Default)]
pub struct StateMap(Repr);

#[derive(Clone, Default)]
enum Repr {
    /// No entries.
    #[default]
    Empty,
    /// Sorted, framed entries in one buffer (see the module docs).
    Packed(Bytes),
    /// A sorted base plus a persistent overlay of changes.
    Layered(Arc<Layered>),
}

#[derive(Clone)]
struct Layered {
    /// Sorted by key, unique.
    base: Arc<[(Bytes, Bytes)]>,
    /// Changes since `base`: `Some` = the current value, `None` = a base key
    /// deleted. Holds no tombstone for a key the base lacks.
    overlay: Overlay,
    len: u64,
    data_bytes: u64,
}

impl Layered {
    fn base_get(&self, key: &[u8]) -> Option<&Bytes> {
        self.base
            .binary_search_by(|(k, _)| (**k).cmp(key))
            .ok()
            .and_then(|i| self.base.get(i))
            .map(|(_, v)| v)
    }

    fn get(&self, key: &[u8]) -> Option<&Bytes> {
        match self.overlay.get(key) {
            Some(v) => v.as_ref(),
            None => self.base_get(key),
        }
    }

    fn range<'a>(
        &'a self,
        lower: Bound<&'a [u8]>,
        upper: Bound<&'a [u8]>,
        reverse: bool,
    ) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + 'a {
        let start = match lower {
            Bound::Included(l) => self.base.partition_point(|(k, _)| &k[..] < l),
            Bound::Excluded(l) => self.base.partition_point(|(k, _)| &k[..] <= l),
            Bound::Unbounded => 0,
        };
        let end = match upper {
            Bound::Included(u) => self.base.partition_point(|(k, _)| &k[..] <= u),
            Bound::Excluded(u) => self.base.partition_point(|(k, _)| &k[..] < u),
            Bound::Unbounded => self.base.len(),
        };
        let base = self
            .base
            .get(start..end.max(start))
            .unwrap_or(&[])
            .iter()
            .map(|(k, v)| (&k[..], &v[..]));
        let over = self
            .overlay
            .range::<_, [u8]>((lower, upper))
            .map(|(k, v)| (&k[..], v.as_deref()));
        if reverse {
            merge(Box::new(base.rev()), Box::new(over.rev()), true)
        } else {
            merge(Box::new(base), Box::new(over), false)
        }
    }

    /// Merge the overlay into a new base.
    fn compact(&mut self) {
        let mut out = Vec::with_capacity(self.len as usize);
        let mut base = self.base.iter().peekable();
        for (key, value) in self.overlay.iter() {
            while let Some(entry) = base.next_if(|(k, _)| k < key) {
                out.push(entry.clone());
            }
            base.next_if(|(k, _)| k == key);
            if let Some(v) = value {
                out.push((key.clone(), v.clone()));
            }
        }
        out.extend(base.cloned());
        self.base = Arc::from(out);
        self.overlay = Overlay::new();
    }
}

/// Entries in scan order, borrowed from a map version.
pub(crate) type Entries<'a> = Box<dyn Iterator<Item = (&'a [u8], &'a [u8])> + 'a>;
/// Changes in scan order (`None` = deleted), borrowed from a write buffer.
pub(crate) type Changes<'a> = Box<dyn Iterator<Item = (&'a [u8], Option<&'a [u8]>)> + 'a>;

/// Merge two ordered sources — committed entries and changes over them
/// (`None` = deleted) — into the live entries, in ascending order or, with
/// `reverse`, descending (both sources must then be descending). A change
/// hides the committed entry with the same key.
pub(crate) fn merge<'a>(base: Entries<'a>, over: Changes<'a>, reverse: bool) -> Entries<'a> {
    let mut base = base.peekable();
    let mut over = over.peekable();
    let first = move |a: &[u8], b: &[u8]| if reverse { a > b } else { a < b };
    Box::new(std::iter::from_fn(move || {
        loop {
            match (base.peek(), over.peek()) {
                (None, None) => return None,
                (Some(&(bk, _)), Some(&(ok, _))) if first(bk, ok) => return base.next(),
                (Some(&(bk, _)), Some(&(ok, _))) => {
                    if bk == ok {
                        base.next();
                    }
                    if let Some((k, Some(v))) = over.next() {
                        return Some((k, v));
                    }
                }
                (Some(_), None) => return base.next(),
                (None, Some(_)) => {
                    if let Some((k, Some(v))) = over.next() {
                        return Some((k, v));
                    }
                }
            }
        }
    }))
}

/// A change to one key: `Some(value)` sets it, `None` deletes it.
pub type Change = (Bytes, Option<Bytes>);

impl StateMap {
    /// The empty map.
    pub fn new() -> Self {
        Self(Repr::Empty)
    }

    /// Build from entries in strictly ascending key order (as storage returns
    /// them). Returns `None` if the order is violated.
    pub fn from_sorted(entries: Vec<(Bytes, Bytes)>) -> Option<Self> {
        if entries.windows(2).any(|w| w[0].0 >= w[1].0) {
            return None;
        }
        if entries.is_empty() {
            return Some(Self::new());
        }
        let packed_len: usize = entries.iter().map(|(k, v)| framed_len(k, v)).sum();
        if entries.len() <= PACKED_MAX_ENTRIES && packed_len <= PACKED_MAX_BYTES {
            return Some(Self(Repr::Packed(pack(
                entries.iter().map(|(k, v)| (&k[..], &v[..])),
                packed_len,
            ))));
        }
        let data_bytes = entries
            .iter()
            .map(|(k, v)| (k.len() + v.len()) as u64)
            .sum();
        Some(Self(Repr::Layered(Arc::new(Layered {
            len: entries.len() as u64,
            data_bytes,
            base: Arc::from(entries),
            overlay: Overlay::new(),
        }))))
    }

    /// Number of entries.
    pub fn len(&self) -> u64 {
        match &self.0 {
            Repr::Empty => 0,
            Repr::Packed(buf) => Unpack::new(buf).count() as u64,
            Repr::Layered(t) => t.len,
        }
    }

    /// True when the map has no entries.
    pub fn is_empty(&self) -> bool {
        matches!(self.0, Repr::Empty)
    }

    /// Sum of key and value lengths: the realm's data, what limits count.
    pub fn data_bytes(&self) -> u64 {
        match &self.0 {
            Repr::Empty => 0,
            Repr::Packed(buf) => Unpack::new(buf)
                .map(|(k, v)| (k.len() + v.len()) as u64)
                .sum(),
            Repr::Layered(t) => t.data_bytes,
        }
    }

    /// Heap bytes held by this version (shared structure counted in full):
    /// what the store's memory budget and eviction count.
    pub fn heap_bytes(&self) -> usize {
        match &self.0 {
            Repr::Empty => 0,
            // Shared-slice header (two counters) plus the buffer.
            Repr::Packed(buf) => 16 + buf.len(),
            Repr::Layered(t) => {
                t.data_bytes as usize
                    + t.base.len() * BASE_ENTRY_OVERHEAD
                    + t.overlay.len() * OVERLAY_ENTRY_OVERHEAD
            }
        }
    }

    /// True when stored in the compact packed form (small realms).
    pub fn is_packed(&self) -> bool {
        !matches!(self.0, Repr::Layered(_))
    }

    /// The value under `key`.
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        match &self.0 {
            Repr::Empty => None,
            Repr::Packed(buf) => {
                for (k, v) in Unpack::new(buf) {
                    match k.cmp(key) {
                        std::cmp::Ordering::Less => {}
                        std::cmp::Ordering::Equal => return Some(v),
                        std::cmp::Ordering::Greater => return None,
                    }
                }
                None
            }
            Repr::Layered(t) => t.get(key).map(|v| &v[..]),
        }
    }

    /// The shared value under `key` (no copy for layered maps).
    pub fn get_shared(&self, key: &[u8]) -> Option<Bytes> {
        match &self.0 {
            Repr::Layered(t) => t.get(key).cloned(),
            _ => self.get(key).map(Bytes::from),
        }
    }

    /// Entries with keys within `(lower, upper)`, ascending, or descending
    /// with `reverse`. An empty or inverted range yields nothing.
    pub fn range<'a>(
        &'a self,
        lower: Bound<&'a [u8]>,
        upper: Bound<&'a [u8]>,
        reverse: bool,
    ) -> Entries<'a> {
        if is_empty_range(lower, upper) {
            return Box::new(std::iter::empty());
        }
        match &self.0 {
            Repr::Empty => Box::new(std::iter::empty()),
            Repr::Packed(buf) => {
                let it = Unpack::new(buf).filter(move |(k, _)| in_range(k, lower, upper));
                if reverse {
                    // At most PACKED_MAX_ENTRIES entries.
                    let all: Vec<_> = it.collect();
                    Box::new(all.into_iter().rev())
                } else {
                    Box::new(it)
                }
            }
            Repr::Layered(t) => Box::new(t.range(lower, upper, reverse)),
        }
    }

    /// Every entry, ascending.
    pub fn iter(&self) -> Entries<'_> {
        self.range(Bound::Unbounded, Bound::Unbounded, false)
    }

    /// Every entry as shared byte strings, ascending (for a full snapshot).
    pub fn to_entries(&self) -> Vec<(Bytes, Bytes)> {
        match &self.0 {
            Repr::Layered(t) if t.overlay.is_empty() => t.base.to_vec(),
            Repr::Layered(t) => {
                let mut t = (**t).clone();
                t.compact();
                t.base.to_vec()
            }
            _ => self
                .iter()
                .map(|(k, v)| (Bytes::from(k), Bytes::from(v)))
                .collect(),
        }
    }

    /// A new version with `changes` applied (keys ascending and unique, as a
    /// call's write buffer yields them). `self` is untouched.
    pub fn with_changes<'c>(&self, changes: impl IntoIterator<Item = &'c Change>) -> Self {
        let mut t = match &self.0 {
            Repr::Layered(t) => (**t).clone(),
            Repr::Empty | Repr::Packed(_) => return self.merge_small(changes),
        };
        for (k, v) in changes {
            let old = t.get(k).map(|o| o.len());
            if let Some(old) = old {
                t.len -= 1;
                t.data_bytes -= (k.len() + old) as u64;
            }
            match v {
                Some(v) => {
                    t.len += 1;
                    t.data_bytes += (k.len() + v.len()) as u64;
                    t.overlay.insert(k.clone(), Some(v.clone()));
                }
                None if old.is_none() => {}
                None if t.base_get(k).is_some() => {
                    t.overlay.insert(k.clone(), None);
                }
                None => {
                    t.overlay.remove::<[u8]>(k);
                }
            }
        }
        if t.len == 0 {
            return Self(Repr::Empty);
        }
        let packed_len = t.data_bytes as usize + t.len as usize * 2;
        if t.len as usize <= REPACK_ENTRIES && packed_len <= REPACK_BYTES {
            let entries: Vec<(&[u8], &[u8])> =
                t.range(Bound::Unbounded, Bound::Unbounded, false).collect();
            let len = entries.iter().map(|(k, v)| framed_len(k, v)).sum();
            return Self(Repr::Packed(pack(entries.into_iter(), len)));
        }
        if t.overlay.len() > MIN_COMPACT.max(t.base.len() / 4) {
            t.compact();
        }
        Self(Repr::Layered(Arc::new(t)))
    }

    fn merge_small<'c>(&self, changes: impl IntoIterator<Item = &'c Change>) -> Self {
        let changes: Vec<(&[u8], Option<&[u8]>)> = changes
            .into_iter()
            .map(|(k, v)| (&k[..], v.as_deref()))
            .collect();
        let out: Vec<(Bytes, Bytes)> = merge(self.iter(), Box::new(changes.into_iter()), false)
            .map(|(k, v)| (Bytes::from(k), Bytes::from(v)))
            .collect();
        // Sorted and unique by construction.
        Self::from_sorted(out).unwrap_or_default()
    }

    /// SHA-256 over every entry in key order, each framed as
    /// `u32 LE key length ‖ key ‖ u32 LE value length ‖ value`: the same for
    /// equal maps whatever their representation (verify, shadow, tests).
    pub fn content_hash(&self) -> [u8; 32] {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        for (k, v) in self.iter() {
            h.update((k.len() as u32).to_le_bytes());
            h.update(k);
            h.update((v.len() as u32).to_le_bytes());
            h.update(v);
        }
        h.finalize().into()
    }
}

impl PartialEq for StateMap {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for StateMap {}

impl fmt::Debug for StateMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateMap")
            .field("entries", &self.len())
            .field("data_bytes", &self.data_bytes())
            .field("packed", &self.is_packed())
            .finish()
    }
}

/// True when no key can lie within the bounds.
pub(crate) fn is_empty_range(lower: Bound<&[u8]>, upper: Bound<&[u8]>) -> bool {
    match (lower, upper) {
        (Bound::Included(l), Bound::Included(u)) => l > u,
        (Bound::Included(l), Bound::Excluded(u))
        | (Bound::Excluded(l), Bound::Included(u))
        | (Bound::Excluded(l), Bound::Excluded(u)) => l >= u,
        _ => false,
    }
}

/// Whether `key` lies within the bounds.
pub(crate) fn in_range(key: &[u8], lower: Bound<&[u8]>, upper: Bound<&[u8]>) -> bool {
    let above = match lower {
        Bound::Included(l) => key >= l,
        Bound::Excluded(l) => key > l,
        Bound::Unbounded => true,
    };
    let below = match upper {
        Bound::Included(u) => key <= u,
        Bound::Excluded(u) => key < u,
        Bound::Unbounded => true,
    };
    above && below
}

fn varint_len(n: usize) -> usize {
    let bits = usize::BITS - (n | 1).leading_zeros();
    bits.div_ceil(7) as usize
}

fn framed_len(k: &[u8], v: &[u8]) -> usize {
    varint_len(k.len()) + k.len() + varint_len(v.len()) + v.len()
}

fn put_varint(out: &mut Vec<u8>, mut n: usize) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn pack<'a>(entries: impl Iterator<Item = (&'a [u8], &'a [u8])>, len: usize) -> Bytes {
    let mut out = Vec::with_capacity(len);
    for (k, v) in entries {
        put_varint(&mut out, k.len());
        out.extend_from_slice(k);
        put_varint(&mut out, v.len());
        out.extend_from_slice(v);
    }
    Bytes::from(out)
}

/// Iterator over a packed buffer. The buffer is written only by [`pack`], so
/// it is well formed; a malformed one (a bug) ends the iteration instead of
/// panicking.
struct Unpack<'a> {
    buf: &'a [u8],
}

impl<'a> Unpack<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    fn varint(&mut self) -> Option<usize> {
        let mut n = 0usize;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self.buf.split_first()?;
            self.buf = rest;
            n |= usize::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Some(n);
            }
        }
        None
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.varint()?;
        if n > self.buf.len() {
            self.buf = &[];
            return None;
        }
        let (b, rest) = self.buf.split_at(n);
        self.buf = rest;
        Some(b)
    }
}

impl<'a> Iterator for Unpack<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.is_empty() {
            return None;
        }
        let k = self.bytes()?;
        let v = self.bytes()?;
        Some((k, v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn b(s: &[u8]) -> Bytes {
        Bytes::from(s)
    }

    fn model_apply(m: &mut BTreeMap<Vec<u8>, Vec<u8>>, changes: &[Change]) {
        for (k, v) in changes {
            match v {
                Some(v) => m.insert(k.to_vec(), v.to_vec()),
                None => m.remove(&k[..]),
            };
        }
    }

    #[test]
    fn base_lookups_find_every_key_and_no_other() {
        // Shared prefixes, keys equal in their first bytes, different
        // lengths, a key that is a prefix of others.
        let mut keys: Vec<Vec<u8>> = Vec::new();
        for i in 0..300u32 {
            keys.push(format!("ns/acct-{i:04}").into_bytes());
            keys.push(format!("ns/acct-{i:04}-and-a-long-tail-{i}").into_bytes());
            keys.push([b"ns/same8by".as_slice(), &i.to_be_bytes()].concat());
        }
        keys.push(b"ns/".to_vec());
        keys.push(b"ns/same8by".to_vec());
        keys.push(b"ns/same8by\0".to_vec());
        keys.sort();
        keys.dedup();
        let entries: Vec<(Bytes, Bytes)> = keys.iter().map(|k| (b(k), b(k))).collect();
        let m = StateMap::from_sorted(entries).unwrap();
        assert!(!m.is_packed());
        for k in &keys {
            assert_eq!(m.get(k), Some(&k[..]), "{}", k.escape_ascii());
            let mut longer = k.clone();
            longer.push(0xff);
            if !keys.contains(&longer) {
                assert_eq!(m.get(&longer), None);
            }
            let mut shorter = k.clone();
            shorter.pop();
            if !keys.contains(&shorter) {
                assert_eq!(m.get(&shorter), None);
            }
        }
        for absent in [
            &b""[..],
            b"n",
            b"ns",
            b"nt/acct-0001",
            b"ns/acct-9999",
            b"ns/same8bz",
        ] {
            assert_eq!(m.get(absent), None, "{}", absent.escape_ascii());
        }
    }

    #[test]
    fn small_maps_are_packed_and_grow_into_trees() {
        let m = StateMap::new();
        assert!(m.is_empty());
        let m = m.with_changes(&[(b(b"a"), Some(b(b"1")))]);
        assert!(m.is_packed());
        assert_eq!(m.get(b"a"), Some(&b"1"[..]));
        assert_eq!(m.get(b"b"), None);
        let many: Vec<Change> = (0..100u32)
            .map(|i| (b(&i.to_be_bytes()), Some(b(b"value"))))
            .collect();
        let big = m.with_changes(&many);
        assert!(!big.is_packed());
        assert!(big.heap_bytes() > big.data_bytes() as usize);
        assert_eq!(big.len(), 101);
        assert_eq!(big.data_bytes(), 2 + 100 * 9);
        // Shrinking far enough packs it again.
        let dels: Vec<Change> = (0..100u32).map(|i| (b(&i.to_be_bytes()), None)).collect();
        let small = big.with_changes(&dels);
        assert!(small.is_packed());
        assert_eq!(small, m);
        assert_eq!(small.content_hash(), m.content_hash());
        // The old version is untouched.
        assert_eq!(big.len(), 101);
    }

    #[test]
    fn empty_and_inverted_ranges_yield_nothing() {
        let m = StateMap::from_sorted(vec![(b(b"a"), b(b"1")), (b(b"b"), b(b"2"))]).unwrap();
        let r = |l, u| m.range(l, u, false).count();
        assert_eq!(r(Bound::Included(&b"b"[..]), Bound::Included(&b"a"[..])), 0);
        assert_eq!(r(Bound::Excluded(&b"a"[..]), Bound::Excluded(&b"a"[..])), 0);
        assert_eq!(r(Bound::Included(&b"a"[..]), Bound::Included(&b"a"[..])), 1);
        assert!(StateMap::from_sorted(vec![(b(b"b"), b(b"")), (b(b"a"), b(b""))]).is_none());
        assert!(StateMap::from_sorted(vec![(b(b"a"), b(b"")), (b(b"a"), b(b""))]).is_none());
    }

    fn arb_changes() -> impl Strategy<Value = Vec<Change>> {
        prop::collection::btree_map(
            prop::collection::vec(0u8..6, 0..3),
            prop::option::of(prop::collection::vec(any::<u8>(), 0..80)),
            0..40,
        )
        .prop_map(|m| {
            m.into_iter()
                .map(|(k, v)| (b(&k), v.map(|v| b(&v))))
                .collect()
        })
    }

    proptest! {
        /// Any sequence of change sets gives the same entries as a BTreeMap,
        /// whichever representation the map passes through.
        #[test]
        fn matches_a_btreemap(steps in prop::collection::vec(arb_changes(), 1..12),
                              lo in prop::collection::vec(0u8..6, 0..3),
                              hi in prop::collection::vec(0u8..6, 0..3),
                              rev in any::<bool>()) {
            let mut model = BTreeMap::new();
            let mut m = StateMap::new();
            let mut versions = Vec::new();
            for changes in &steps {
                versions.push((m.clone(), model.clone()));
                m = m.with_changes(changes);
                model_apply(&mut model, changes);
                let got: Vec<_> = m.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
                let want: Vec<_> = model.clone().into_iter().collect();
                prop_assert_eq!(&got, &want);
                prop_assert_eq!(m.len(), model.len() as u64);
                prop_assert_eq!(m.data_bytes(), model.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum::<u64>());
                for k in model.keys() {
                    prop_assert_eq!(m.get(k), model.get(k).map(|v| &v[..]));
                }
                let lower = Bound::Included(&lo[..]);
                let upper = Bound::Excluded(&hi[..]);
                let got: Vec<_> = m.range(lower, upper, rev).map(|(k, _)| k.to_vec()).collect();
                let mut want: Vec<_> = if is_empty_range(lower, upper) { vec![] } else {
                    model.range::<[u8], _>((lower, upper)).map(|(k, _)| k.clone()).collect()
                };
                if rev { want.reverse(); }
                prop_assert_eq!(got, want);
                let rebuilt = StateMap::from_sorted(m.to_entries()).unwrap();
                prop_assert_eq!(rebuilt.content_hash(), m.content_hash());
            }
            // Older versions never change.
            for (old, old_model) in versions {
                let got: Vec<_> = old.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
                prop_assert_eq!(got, old_model.into_iter().collect::<Vec<_>>());
            }
        }
    }
}
