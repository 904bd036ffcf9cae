//! The native backend of [`crate::state`]: an in-memory realm, installed in a
//! thread-local slot for the duration of a call, with the host's semantics.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use super::cache::Cache;
use super::page::{Page, PageBuilder};

type Entries = BTreeMap<Vec<u8>, Vec<u8>>;

/// A realm's state held in memory: an ordered map of byte keys to byte
/// values, the native stand-in for the host's map.
///
/// The [`crate::entry`] drivers install it as the realm in scope for the
/// duration of one call, so the [`crate::state`] functions (and the typed
/// helpers on top of them) read and write it. Like the host, they buffer the
/// call's writes and apply them only if the call succeeds.
///
/// Cloning is O(1): clones share the entries until one of them is written
/// (copy on write), which keeps "run this on a copy" tests cheap.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct MemoryState {
    entries: Arc<Entries>,
    page_cap: Option<u32>,
}

impl core::fmt::Debug for MemoryState {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        struct Bytes<'a>(&'a [u8]);
        impl core::fmt::Debug for Bytes<'_> {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                write!(f, "\"{}\"", self.0.escape_ascii())
            }
        }
        f.debug_map()
            .entries(self.iter().map(|(k, v)| (Bytes(k), Bytes(v))))
            .finish()
    }
}

impl MemoryState {
    /// An empty realm.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when the realm holds no entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The value stored under `key`.
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.entries.get(key).map(Vec::as_slice)
    }

    /// Whether `key` holds a value.
    pub fn contains(&self, key: &[u8]) -> bool {
        self.entries.contains_key(key)
    }

    /// Store `value` under `key` directly (no call in progress); returns the
    /// previous value.
    pub fn insert(
        &mut self,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
    ) -> Option<Vec<u8>> {
        Arc::make_mut(&mut self.entries).insert(key.into(), value.into())
    }

    /// Remove `key` directly; returns its value.
    pub fn remove(&mut self, key: &[u8]) -> Option<Vec<u8>> {
        Arc::make_mut(&mut self.entries).remove(key)
    }

    /// All entries in key order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&[u8], &[u8])> + '_ {
        self.entries
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_slice()))
    }

    /// All keys in order.
    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &[u8]> + '_ {
        self.entries.keys().map(Vec::as_slice)
    }

    /// Sum of the lengths of every key and value.
    pub fn total_bytes(&self) -> usize {
        self.entries.iter().map(|(k, v)| k.len() + v.len()).sum()
    }

    /// The entries as a map.
    pub fn as_map(&self) -> &BTreeMap<Vec<u8>, Vec<u8>> {
        &self.entries
    }

    /// Take the entries out.
    pub fn into_map(self) -> BTreeMap<Vec<u8>, Vec<u8>> {
        Arc::unwrap_or_clone(self.entries)
    }

    /// Cap every scan page at `cap` entries (`None`: only the caller's
    /// `limit`), the way the host returns short pages when a page would
    /// exceed its output cap. Tests use it to exercise resumed scans on small
    /// realms.
    pub fn set_scan_page_cap(&mut self, cap: Option<u32>) {
        self.page_cap = cap;
    }

    /// Run `f` with this realm in scope and keep its writes.
    ///
    /// A panic in `f` discards them (the panic continues).
    pub fn enter<R>(&mut self, f: impl FnOnce() -> R) -> R {
        let (r, writes) = self.run(false, f);
        self.commit(writes);
        r
    }

    /// Run `f` with this realm in scope and keep its writes only if it
    /// returns `Ok`: a call, as the host runs it.
    pub fn transact<T, E>(&mut self, f: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
        let (r, writes) = self.run(false, f);
        if r.is_ok() {
            self.commit(writes);
        }
        r
    }

    /// Run `f` with this realm in scope, read-only (a write panics, as it
    /// traps in the host's `query`).
    pub fn read<R>(&self, f: impl FnOnce() -> R) -> R {
        let scope = Scope::new(self, true);
        let guard = FrameGuard::install(Frame::Memory(scope));
        let r = f();
        drop(guard.finish());
        r
    }

    fn run<R>(&self, read_only: bool, f: impl FnOnce() -> R) -> (R, Writes) {
        let guard = FrameGuard::install(Frame::Memory(Scope::new(self, read_only)));
        let r = f();
        let writes = match guard.finish() {
            Some(Frame::Memory(scope)) => scope.writes,
            // The frame is only replaced by nested calls, which restore it.
            _ => Writes::new(),
        };
        (r, writes)
    }

    fn commit(&mut self, writes: Writes) {
        if writes.is_empty() {
            return;
        }
        let entries = Arc::make_mut(&mut self.entries);
        for (key, value) in writes {
            match value {
                Some(value) => entries.insert(key, value),
                None => entries.remove(&key),
            };
        }
    }
}

impl From<BTreeMap<Vec<u8>, Vec<u8>>> for MemoryState {
    fn from(entries: BTreeMap<Vec<u8>, Vec<u8>>) -> Self {
        Self {
            entries: Arc::new(entries),
            page_cap: None,
        }
    }
}

impl FromIterator<(Vec<u8>, Vec<u8>)> for MemoryState {
    fn from_iter<I: IntoIterator<Item = (Vec<u8>, Vec<u8>)>>(iter: I) -> Self {
        Self::from(iter.into_iter().collect::<Entries>())
    }
}

/// Buffered writes of a call: `None` is a deletion.
type Writes = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// The realm in scope during a native call: the committed entries (shared,
/// never written during the call) plus the call's buffered writes.
#[derive(Debug)]
pub(crate) struct Scope {
    base: Arc<Entries>,
    writes: Writes,
    len: u64,
    read_only: bool,
    page_cap: Option<u32>,
}

impl Scope {
    fn new(state: &MemoryState, read_only: bool) -> Self {
        Self {
            base: Arc::clone(&state.entries),
            writes: Writes::new(),
            len: state.entries.len() as u64,
            read_only,
            page_cap: state.page_cap,
        }
    }

    pub(crate) fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.get_with(key, |v| v.map(<[u8]>::to_vec))
    }

    /// The value under `key`, lent to `f`.
    pub(crate) fn get_with<R>(&self, key: &[u8], f: impl FnOnce(Option<&[u8]>) -> R) -> R {
        match self.writes.get(key) {
            Some(w) => f(w.as_deref()),
            None => f(self.base.get(key).map(Vec::as_slice)),
        }
    }

    pub(crate) fn contains(&self, key: &[u8]) -> bool {
        match self.writes.get(key) {
            Some(w) => w.is_some(),
            None => self.base.contains_key(key),
        }
    }

    fn writable(&self, op: &str) {
        if self.read_only {
            panic!("state::{op} in a read-only call: query cannot write the realm's state");
        }
    }

    pub(crate) fn set(&mut self, key: &[u8], value: &[u8]) {
        self.set_owned(key, value.to_vec());
    }

    pub(crate) fn set_owned(&mut self, key: &[u8], value: Vec<u8>) {
        self.writable("set");
        if !self.contains(key) {
            self.len += 1;
        }
        self.writes.insert(key.to_vec(), Some(value));
    }

    pub(crate) fn delete(&mut self, key: &[u8]) -> bool {
        self.writable("delete");
        let present = self.contains(key);
        if present {
            self.len -= 1;
            self.writes.insert(key.to_vec(), None);
        }
        present
    }

    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    pub(crate) fn scan(
        &self,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
        limit: u32,
        reverse: bool,
    ) -> Page {
        let mut page = PageBuilder::new();
        if is_empty_range(lower, upper) {
            return page.finish(None);
        }
        let limit = self.page_cap.map_or(limit, |cap| limit.min(cap.max(1)));
        let range = (lower, upper);
        let base = self.base.range::<[u8], _>(range);
        let writes = self.writes.range::<[u8], _>(range);
        let mut merged: Box<dyn Iterator<Item = (&[u8], &[u8])>> = if reverse {
            Box::new(Merge::new(base.rev(), writes.rev(), true))
        } else {
            Box::new(Merge::new(base, writes, false))
        };
        let mut last: Option<&[u8]> = None;
        while page.len() < limit {
            match merged.next() {
                Some((k, v)) => {
                    page.push(k, v);
                    last = Some(k);
                }
                None => return page.finish(None),
            }
        }
        let resume = match merged.next() {
            Some(_) => last.map(<[u8]>::to_vec),
            None => None,
        };
        page.finish(resume)
    }
}

/// True for ranges that hold no key at all (and on which `BTreeMap::range`
/// would panic): lower above upper, or equal with one end excluded.
fn is_empty_range(lower: Bound<&[u8]>, upper: Bound<&[u8]>) -> bool {
    use Bound::{Excluded, Included};
    match (lower, upper) {
        (Included(l), Included(u)) => l > u,
        (Included(l) | Excluded(l), Included(u) | Excluded(u)) => l >= u,
        _ => false,
    }
}

/// Merges the committed entries with the buffered writes, in scan order: a
/// write shadows the committed entry under the same key, a deletion hides it.
struct Merge<'a, B, W>
where
    B: Iterator<Item = (&'a Vec<u8>, &'a Vec<u8>)>,
    W: Iterator<Item = (&'a Vec<u8>, &'a Option<Vec<u8>>)>,
{
    base: std::iter::Peekable<B>,
    writes: std::iter::Peekable<W>,
    reverse: bool,
}

impl<'a, B, W> Merge<'a, B, W>
where
    B: Iterator<Item = (&'a Vec<u8>, &'a Vec<u8>)>,
    W: Iterator<Item = (&'a Vec<u8>, &'a Option<Vec<u8>>)>,
{
    fn new(base: B, writes: W, reverse: bool) -> Self {
        Self {
            base: base.peekable(),
            writes: writes.peekable(),
            reverse,
        }
    }
}

impl<'a, B, W> Iterator for Merge<'a, B, W>
where
    B: Iterator<Item = (&'a Vec<u8>, &'a Vec<u8>)>,
    W: Iterator<Item = (&'a Vec<u8>, &'a Option<Vec<u8>>)>,
{
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        use std::cmp::Ordering;
        loop {
            let order = match (self.base.peek(), self.writes.peek()) {
                (None, None) => return None,
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (Some((b, _)), Some((w, _))) if self.reverse => w.cmp(b),
                (Some((b, _)), Some((w, _))) => b.cmp(w),
            };
            // Less: the committed entry comes first; otherwise the write does
            // (and on equal keys it shadows the committed entry).
            if order == Ordering::Less {
                let (k, v) = self.base.next()?;
                return Some((k, v));
            }
            if order == Ordering::Equal {
                self.base.next();
            }
            let (k, w) = self.writes.next()?;
            if let Some(v) = w {
                return Some((k, v));
            }
        }
    }
}

/// What the thread-local slot holds.
#[derive(Debug)]
pub(crate) enum Frame {
    /// A native call on a [`MemoryState`].
    Memory(Scope),
    /// A call served by the host through the write-back cache.
    #[cfg_attr(not(any(target_arch = "wasm32", test)), allow(dead_code))]
    Cached(Cache),
    /// A call with no realm in scope (`describe`, `encode-event`).
    Closed,
}

thread_local! {
    static FRAME: RefCell<Option<Frame>> = const { RefCell::new(None) };
}

/// Installs a frame and restores the previous one when dropped, also when
/// the call unwinds.
pub(crate) struct FrameGuard {
    prev: Option<Option<Frame>>,
}

impl FrameGuard {
    pub(crate) fn install(frame: Frame) -> Self {
        let prev = FRAME.with_borrow_mut(|slot| slot.replace(frame));
        Self { prev: Some(prev) }
    }

    /// Restore the previous frame and return the one this guard installed.
    pub(crate) fn finish(mut self) -> Option<Frame> {
        self.restore()
    }

    fn restore(&mut self) -> Option<Frame> {
        let prev = self.prev.take()?;
        FRAME.with_borrow_mut(|slot| core::mem::replace(slot, prev))
    }
}

impl Drop for FrameGuard {
    fn drop(&mut self) {
        drop(self.restore());
    }
}

/// The installed frame that serves a state call.
pub(crate) enum Served<'a> {
    /// A native call's memory scope.
    Memory(&'a mut Scope),
    /// The write-back cache over the host.
    Cached(&'a mut Cache),
}

/// How a state call is served.
pub(crate) enum Backend<R> {
    /// By the installed memory scope or cache.
    Served(R),
    /// No frame installed: by the host (on wasm32).
    Host,
    /// A frame says no realm is in scope.
    Closed,
}

/// Serve a state call from the installed memory scope or cache, if any.
#[inline]
pub(crate) fn with_scope<R>(f: impl FnOnce(Served<'_>) -> R) -> Backend<R> {
    FRAME.with_borrow_mut(|slot| match slot {
        Some(Frame::Memory(scope)) => Backend::Served(f(Served::Memory(scope))),
        Some(Frame::Cached(cache)) => Backend::Served(f(Served::Cached(cache))),
        Some(Frame::Closed) => Backend::Closed,
        None => Backend::Host,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_all(s: &Scope, reverse: bool) -> Vec<(Vec<u8>, Vec<u8>)> {
        s.scan(Bound::Unbounded, Bound::Unbounded, u32::MAX, reverse)
            .iter()
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect()
    }

    #[test]
    fn writes_shadow_and_deletions_hide() {
        let mem: MemoryState = [(b"a", b"1"), (b"b", b"2"), (b"c", b"3")]
            .into_iter()
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect();
        let mut s = Scope::new(&mem, false);
        s.set(b"b", b"20");
        assert!(s.delete(b"c"));
        assert!(!s.delete(b"zz"));
        s.set(b"d", b"4");
        assert_eq!(s.len(), 3);
        let kv = |k: &[u8], v: &[u8]| (k.to_vec(), v.to_vec());
        assert_eq!(
            scan_all(&s, false),
            vec![kv(b"a", b"1"), kv(b"b", b"20"), kv(b"d", b"4")]
        );
        assert_eq!(
            scan_all(&s, true),
            vec![kv(b"d", b"4"), kv(b"b", b"20"), kv(b"a", b"1")]
        );
        let page = s.scan(Bound::Unbounded, Bound::Unbounded, 2, false);
        assert_eq!(page.len(), 2);
        assert_eq!(page.resume(), Some(&b"b"[..]));
        let page = s.scan(Bound::Excluded(b"b"), Bound::Unbounded, 1, false);
        assert_eq!(page.len(), 1);
        assert_eq!(page.resume(), None);
        // Inverted and empty ranges are empty, not a panic.
        assert!(
            s.scan(Bound::Included(b"c"), Bound::Included(b"a"), 9, false)
                .is_empty()
        );
        assert!(
            s.scan(Bound::Excluded(b"a"), Bound::Excluded(b"a"), 9, false)
                .is_empty()
        );
        assert!(
            s.scan(Bound::Included(b"a"), Bound::Excluded(b"a"), 9, false)
                .is_empty()
        );
        assert_eq!(
            s.scan(Bound::Included(b"a"), Bound::Included(b"a"), 9, false)
                .len(),
            1
        );
        // The committed entries are untouched until commit.
        assert_eq!(mem.get(b"c"), Some(&b"3"[..]));
    }

    #[test]
    fn transact_keeps_writes_only_on_ok() {
        let mut mem = MemoryState::new();
        let r: Result<(), ()> = mem.transact(|| {
            super::super::set(b"k", b"v");
            Err(())
        });
        assert!(r.is_err());
        assert!(mem.is_empty());
        mem.enter(|| super::super::set(b"k", b"v"));
        assert_eq!(mem.get(b"k"), Some(&b"v"[..]));
        let copy = mem.clone();
        mem.enter(|| super::super::delete(b"k"));
        assert!(mem.is_empty());
        assert_eq!(copy.len(), 1);
    }

    #[test]
    fn panics_discard_writes_and_restore_the_slot() {
        let mut mem = MemoryState::new();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            mem.enter(|| {
                super::super::set(b"k", b"v");
                panic!("boom");
            })
        }));
        assert!(r.is_err());
        assert!(mem.is_empty());
        assert!(matches!(with_scope(|_| ()), Backend::Host));
    }

    #[test]
    #[should_panic(expected = "read-only")]
    fn read_only_scope_refuses_writes() {
        let mem = MemoryState::new();
        mem.read(|| super::super::set(b"k", b"v"));
    }
}
