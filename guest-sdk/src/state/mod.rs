//! Raw access to the state of the realm in scope: an ordered map of byte
//! keys to byte values owned by the host.
//!
//! These functions are the `state` interface of `wit/realm.wit`. In a
//! component they call the host; on native targets they act on the
//! [`MemoryState`] that an [`crate::entry`] driver (or
//! [`MemoryState::enter`]) has installed for the current call. The semantics
//! are the same on both:
//!
//! - a call reads the realm's committed entries plus its own writes;
//! - writes are buffered and kept only if the call succeeds;
//! - in `query` the state is read-only and a write traps (natively: panics);
//! - with no realm in scope (`describe`, `encode-event`, or natively outside
//!   any driver) every function traps (natively: panics);
//! - keys are ordered bytewise; [`scan`] and [`range`] return entries in that
//!   order (or its reverse).
//!
//! Most plugins use the typed [`crate::Item`] and [`crate::Map`] instead,
//! which encode keys and values for you.

mod cache;
mod memory;
mod page;

use std::ops::Bound;

pub use cache::WRITE_BATCH_DELETE;
pub use memory::MemoryState;
pub(crate) use memory::{Frame, FrameGuard};
pub use page::{Page, PageBuilder, PageFormatError, PageIter};

use cache::{Cache, Remote};
use memory::{Backend, Served, with_scope};

/// Entries fetched per host call by [`range`] unless
/// [`Range::page_size`] says otherwise.
pub const DEFAULT_PAGE_SIZE: u32 = 128;

#[cold]
fn closed(op: &str) -> ! {
    panic!(
        "state::{op} with no realm in scope: state is only reachable during init, apply, \
         apply-batch, migrate and query"
    )
}

// `$served` runs on whichever frame is installed: the expression is expanded
// once per frame type, so each arm calls its own type's method directly.
macro_rules! dispatch {
    ($op:literal, |$scope:ident| $served:expr, $host:expr) => {
        match with_scope(|frame| match frame {
            Served::Memory($scope) => $served,
            Served::Cached($scope) => $served,
        }) {
            Backend::Served(r) => r,
            Backend::Closed => closed($op),
            Backend::Host => host_or_closed!($op, $host),
        }
    };
}

#[cfg(target_arch = "wasm32")]
macro_rules! host_or_closed {
    ($op:literal, $host:expr) => {
        $host
    };
}

#[cfg(not(target_arch = "wasm32"))]
macro_rules! host_or_closed {
    ($op:literal, $host:expr) => {
        closed($op)
    };
}

#[cfg(target_arch = "wasm32")]
mod host {
    pub(super) use crate::bindings::realmhost::realm::state as wit;
    use crate::bindings::realmhost::realm::types::Bound as WitBound;
    use std::ops::Bound;

    pub(super) fn bound(b: Bound<&[u8]>) -> WitBound {
        match b {
            Bound::Unbounded => WitBound::Unbounded,
            Bound::Included(k) => WitBound::Included(k.to_vec()),
            Bound::Excluded(k) => WitBound::Excluded(k.to_vec()),
        }
    }

    pub(super) fn scan(
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
        limit: u32,
        reverse: bool,
    ) -> super::Page {
        let page = wit::scan(&bound(lower), &bound(upper), limit, reverse);
        match super::Page::from_packed(page.entries, page.count, page.resume) {
            Ok(page) => page,
            Err(e) => panic!("the host returned a malformed scan page: {e}"),
        }
    }
}

/// Run one export call `f` with a write-back cache over `remote` in scope
/// (see the `cache` module): its buffered writes reach `remote` only if `f`
/// returns `Ok`.
#[cfg_attr(not(any(target_arch = "wasm32", test)), allow(dead_code))]
pub(crate) fn cached<T, E>(
    remote: Box<dyn Remote>,
    read_only: bool,
    f: impl FnOnce() -> Result<T, E>,
) -> Result<T, E> {
    let guard = FrameGuard::install(Frame::Cached(Cache::new(remote, read_only)));
    let r = f();
    if let Some(Frame::Cached(mut cache)) = guard.finish()
        && r.is_ok()
    {
        cache.flush();
    }
    r
}

/// [`cached`] over the host: how a component runs its exports.
#[cfg(target_arch = "wasm32")]
pub(crate) fn host_call<T, E>(read_only: bool, f: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
    cached(Box::new(cache::HostRemote), read_only, f)
}

/// The value stored under `key`, if any.
pub fn get(key: &[u8]) -> Option<Vec<u8>> {
    dispatch!("get", |s| s.get(key), host::wit::get(key))
}

/// Whether `key` holds a value (without copying the value).
pub fn contains(key: &[u8]) -> bool {
    dispatch!("contains", |s| s.contains(key), host::wit::contains(key))
}

/// Store `value` under `key`, replacing what was there.
pub fn set(key: &[u8], value: &[u8]) {
    dispatch!("set", |s| s.set(key, value), host::wit::set(key, value))
}

/// Remove `key`; returns whether it held a value.
pub fn delete(key: &[u8]) -> bool {
    dispatch!("delete", |s| s.delete(key), host::wit::delete(key))
}

/// Number of entries in the realm (including this call's writes).
pub fn len() -> u64 {
    dispatch!("len", |s| s.len(), host::wit::len())
}

/// True when the realm holds no entry.
pub fn is_empty() -> bool {
    len() == 0
}

/// One page of the entries with keys between `lower` and `upper`, ascending
/// (or descending with `reverse`), at most `limit` of them.
///
/// The host may return fewer than `limit` (when a page would exceed its
/// output cap); [`Page::resume`] is set whenever the range holds more. An
/// inverted range, and `limit` 0, give an empty page. Most callers want the
/// auto-paging [`range`] instead.
pub fn scan(lower: Bound<&[u8]>, upper: Bound<&[u8]>, limit: u32, reverse: bool) -> Page {
    dispatch!(
        "scan",
        |s| s.scan(lower, upper, limit, reverse),
        host::scan(lower, upper, limit, reverse)
    )
}

/// Every entry with a key between `lower` and `upper`, ascending (or
/// descending with `reverse`), fetched from the host a page at a time as the
/// iterator advances.
///
/// The iterator holds no borrow of the state: writes made while iterating are
/// seen by the pages fetched after them (resuming after the last key seen).
pub fn range(lower: Bound<&[u8]>, upper: Bound<&[u8]>, reverse: bool) -> Range {
    Range {
        lower: lower.map(<[u8]>::to_vec),
        upper: upper.map(<[u8]>::to_vec),
        reverse,
        page_size: DEFAULT_PAGE_SIZE,
        page: None,
        pos: 0,
        done: false,
    }
}

/// Every entry whose key starts with `prefix`, in key order (or reversed).
pub fn prefix_range(prefix: &[u8], reverse: bool) -> Range {
    let upper = prefix_end(prefix);
    range(
        Bound::Included(prefix),
        upper.as_deref().map_or(Bound::Unbounded, Bound::Excluded),
        reverse,
    )
}

/// The smallest key greater than every key that starts with `prefix`, or
/// `None` when there is none (the prefix is empty or all `0xff`).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// The auto-paging iterator of [`range`]: yields `(key, value)` pairs.
#[derive(Debug)]
pub struct Range {
    lower: Bound<Vec<u8>>,
    upper: Bound<Vec<u8>>,
    reverse: bool,
    page_size: u32,
    page: Option<Page>,
    pos: usize,
    done: bool,
}

impl Range {
    /// Fetch `n` entries per host call (at least 1). Smaller pages cost more
    /// calls; larger ones copy entries that an early `break` never reads.
    pub fn page_size(mut self, n: u32) -> Self {
        self.set_page_size(n);
        self
    }

    pub(crate) fn set_page_size(&mut self, n: u32) {
        self.page_size = n.max(1);
    }

    fn fetch(&mut self) {
        let page = scan(
            self.lower.as_ref().map(Vec::as_slice),
            self.upper.as_ref().map(Vec::as_slice),
            self.page_size,
            self.reverse,
        );
        match page.resume() {
            Some(resume) => {
                if page.is_empty() {
                    panic!("the host returned an empty scan page with a resume point");
                }
                let resume = Bound::Excluded(resume.to_vec());
                if self.reverse {
                    self.upper = resume;
                } else {
                    self.lower = resume;
                }
            }
            None => self.done = true,
        }
        self.page = Some(page);
        self.pos = 0;
    }
}

impl Iterator for Range {
    type Item = (Vec<u8>, Vec<u8>);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(page) = &self.page {
                if let Some(((k, v), next)) = page.entry_at(self.pos) {
                    self.pos = next;
                    return Some((k.to_vec(), v.to_vec()));
                }
                self.page = None;
            }
            if self.done {
                return None;
            }
            self.fetch();
        }
    }
}

impl core::iter::FusedIterator for Range {}
