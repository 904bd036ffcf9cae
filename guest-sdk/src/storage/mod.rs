//! Typed entries over the realm's byte map: [`Item`] (one value) and [`Map`]
//! (values under ordered keys), in the spirit of cw-storage-plus.
//!
//! ```
//! use realmhost_guest::{Bound, Item, Map, MemoryState, Order, StateError};
//!
//! /// Balance per account.
//! const BALANCES: Map<&str, u64> = Map::new("balances");
//! /// Members per (guild, member name), with their rank.
//! const MEMBERS: Map<(&str, &str), u8> = Map::new("members");
//! const TX_COUNT: Item<u64> = Item::new("tx_count");
//!
//! let mut realm = MemoryState::new();
//! realm.enter(|| -> Result<(), StateError> {
//!     BALANCES.save("bob", &5)?;
//!     BALANCES.save("alice", &7)?;
//!     let account = String::from("carol");
//!     assert_eq!(BALANCES.may_load(&account)?, None);
//!     assert!(BALANCES.load(&account).is_err());
//!     BALANCES.update(&account, |b| -> Result<u64, StateError> { Ok(b.unwrap_or(0) + 1) })?;
//!
//!     let all: Vec<(String, u64)> = BALANCES
//!         .range(Bound::Unbounded, Bound::Unbounded, Order::Ascending)
//!         .collect::<Result<_, _>>()?;
//!     assert_eq!(all, [("alice".into(), 7), ("bob".into(), 5), ("carol".into(), 1)]);
//!     let from_b: Vec<String> = BALANCES
//!         .keys(Bound::Included("b"), Bound::Unbounded, Order::Descending)
//!         .collect::<Result<_, _>>()?;
//!     assert_eq!(from_b, ["carol", "bob"]);
//!
//!     MEMBERS.save(("red", "zed"), &1)?;
//!     MEMBERS.save(("red", "amy"), &2)?;
//!     MEMBERS.save(("redder", "bo"), &3)?;
//!     let red: Vec<(String, u8)> = MEMBERS
//!         .prefix("red")
//!         .range(Bound::Unbounded, Bound::Unbounded, Order::Ascending)
//!         .collect::<Result<_, _>>()?;
//!     assert_eq!(red, [("amy".into(), 2), ("zed".into(), 1)]);
//!
//!     TX_COUNT.save(&1)?;
//!     assert!(BALANCES.remove("bob"));
//!     Ok(())
//! })
//! .unwrap();
//! assert_eq!(realm.len(), 6); // 2 balances, 3 members, 1 counter
//! ```
//!
//! ## Layout
//! An item lives at `namespace`, a map's entry at `namespace ++ key`, where
//! the namespace is written as its length (`u16`, big-endian) followed by
//! its bytes, so two namespaces never share keys (`"a"` with key `"bc"` is
//! not `"ab"` with key `"c"`). Use each namespace for one item or one map
//! only, and keep raw [`crate::state`] keys out of the way (they should not
//! start with a `0x00` byte). Keys are encoded by [`Key`], which keeps byte
//! order equal to logical order; values are postcard-encoded.
//!
//! A range reads the map a page at a time as it is iterated (see
//! [`crate::state::range`]), so breaking out early costs one page, and the
//! iterator holds no borrow of the state: it may be interleaved with writes.

mod key;

use core::marker::PhantomData;
use std::ops::Bound;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::StateError;
use crate::state;

pub use key::{Key, decode_key, encode_key};

/// Direction of a range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Order {
    /// Smallest key first.
    Ascending,
    /// Largest key first.
    Descending,
}

/// The encoded namespace: `u16` big-endian length, then the bytes.
fn namespace_key(namespace: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(namespace.len() + 2);
    push_namespace(&mut out, namespace);
    out
}

fn push_namespace(out: &mut Vec<u8>, namespace: &str) {
    out.extend_from_slice(&(namespace.len() as u16).to_be_bytes());
    out.extend_from_slice(namespace.as_bytes());
}

thread_local! {
    /// A buffer for building raw keys, reused from one state access to the
    /// next (an access builds its key, uses it and gives the buffer back).
    static KEY_BUF: core::cell::Cell<Vec<u8>> = const { core::cell::Cell::new(Vec::new()) };
}

/// The key buffer, empty. A nested access (say from the closure of an
/// `update`) finds the slot empty and builds its key in a new buffer.
fn key_buf() -> Vec<u8> {
    let mut buf = KEY_BUF.with(core::cell::Cell::take);
    buf.clear();
    buf
}

/// Give a key buffer back for the next access.
fn recycle(buf: Vec<u8>) {
    KEY_BUF.with(|slot| slot.set(buf));
}

/// Run `f` on the raw key `build` writes, in the reused key buffer.
fn with_key<R>(build: impl FnOnce(&mut Vec<u8>), f: impl FnOnce(&[u8]) -> R) -> R {
    let mut buf = key_buf();
    build(&mut buf);
    let r = f(&buf);
    recycle(buf);
    r
}

const fn check_namespace(namespace: &str) {
    assert!(
        namespace.len() <= u16::MAX as usize,
        "namespaces are at most 65535 bytes"
    );
}

fn encode_value<V: Serialize + ?Sized>(
    namespace: &'static str,
    key: &[u8],
    value: &V,
) -> Result<Vec<u8>, StateError> {
    postcard::to_allocvec(value).map_err(|e| StateError::Encode {
        namespace,
        key: key.to_vec(),
        message: e.to_string(),
    })
}

fn decode_value<V: DeserializeOwned>(
    namespace: &'static str,
    key: &[u8],
    bytes: &[u8],
) -> Result<V, StateError> {
    postcard::from_bytes(bytes).map_err(|e| StateError::Decode {
        namespace,
        key: key.to_vec(),
        message: e.to_string(),
    })
}

/// One value of type `T` under a namespace of its own.
///
/// ```
/// use realmhost_guest::Item;
/// const CONFIG_VERSION: Item<u32> = Item::new("config_version");
/// ```
pub struct Item<T> {
    namespace: &'static str,
    value: PhantomData<fn() -> T>,
}

impl<T> Item<T> {
    /// An item stored under `namespace` (at most 65535 bytes).
    pub const fn new(namespace: &'static str) -> Self {
        check_namespace(namespace);
        Self {
            namespace,
            value: PhantomData,
        }
    }

    /// The item's namespace.
    pub const fn namespace(&self) -> &'static str {
        self.namespace
    }

    /// The raw key of the item in the realm's map.
    pub fn key(&self) -> Vec<u8> {
        namespace_key(self.namespace)
    }

    /// Run `f` on the item's raw key (built in the reused key buffer).
    fn with_raw<R>(&self, f: impl FnOnce(&[u8]) -> R) -> R {
        with_key(|out| push_namespace(out, self.namespace), f)
    }

    /// Whether the item holds a value.
    pub fn exists(&self) -> bool {
        self.with_raw(state::contains)
    }

    /// Remove the value; returns whether there was one.
    pub fn remove(&self) -> bool {
        self.with_raw(state::delete)
    }
}

impl<T: Serialize + DeserializeOwned> Item<T> {
    /// The value, or [`StateError::NotFound`].
    pub fn load(&self) -> Result<T, StateError> {
        self.may_load()?.ok_or(StateError::NotFound {
            namespace: self.namespace,
            key: Vec::new(),
        })
    }

    /// The value, if there is one.
    pub fn may_load(&self) -> Result<Option<T>, StateError> {
        self.with_raw(|raw| {
            state::get_with(raw, |b| {
                b.map(|bytes| decode_value(self.namespace, &[], bytes))
                    .transpose()
            })
        })
    }

    /// Store `value`.
    pub fn save(&self, value: &T) -> Result<(), StateError> {
        let bytes = encode_value(self.namespace, &[], value)?;
        self.with_raw(|raw| state::set_owned(raw, bytes));
        Ok(())
    }

    /// Load the value (if any), pass it to `f` and save what `f` returns.
    /// Nothing is saved when `f` fails.
    pub fn update<E: From<StateError>>(
        &self,
        f: impl FnOnce(Option<T>) -> Result<T, E>,
    ) -> Result<T, E> {
        let new = f(self.may_load()?)?;
        self.save(&new)?;
        Ok(new)
    }
}

impl<T> Clone for Item<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Item<T> {}

impl<T> core::fmt::Debug for Item<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_tuple("Item").field(&self.namespace).finish()
    }
}

/// Values of type `V` under ordered keys of type `K`, in a namespace of
/// their own.
///
/// `K` is a [`Key`]: an integer, a string or byte string (`&str`, `&[u8]`,
/// `String`, `Vec<u8>`), a byte array, a bool, or a tuple of these. With a
/// tuple key, [`Map::prefix`] ranges over the entries that share the first
/// component(s).
///
/// In a `const`, `Map<&str, V>` means `Map<&'static str, V>`; the methods
/// still accept short-lived `&str` keys (the type is covariant in `K`).
pub struct Map<K, V> {
    namespace: &'static str,
    types: PhantomData<fn() -> (K, V)>,
}

impl<K, V> Map<K, V> {
    /// A map stored under `namespace` (at most 65535 bytes).
    pub const fn new(namespace: &'static str) -> Self {
        check_namespace(namespace);
        Self {
            namespace,
            types: PhantomData,
        }
    }

    /// The map's namespace.
    pub const fn namespace(&self) -> &'static str {
        self.namespace
    }
}

impl<K, V> Clone for Map<K, V> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<K, V> Copy for Map<K, V> {}

impl<K, V> core::fmt::Debug for Map<K, V> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_tuple("Map").field(&self.namespace).finish()
    }
}

impl<K: Key, V: Serialize + DeserializeOwned> Map<K, V> {
    /// The raw key of `key` in the realm's map.
    pub fn key(&self, key: K) -> Vec<u8> {
        let mut out = namespace_key(self.namespace);
        key.encode_key(&mut out, true);
        out
    }

    /// The raw key of `key`, built in the reused key buffer (give it back
    /// with [`recycle`]).
    fn raw(&self, key: K) -> Vec<u8> {
        let mut out = key_buf();
        push_namespace(&mut out, self.namespace);
        key.encode_key(&mut out, true);
        out
    }

    fn suffix<'a>(&self, raw: &'a [u8]) -> &'a [u8] {
        raw.get(self.namespace.len() + 2..).unwrap_or_default()
    }

    /// The value under `key`, or [`StateError::NotFound`].
    pub fn load(&self, key: K) -> Result<V, StateError> {
        let raw = self.raw(key);
        let r = state::get_with(&raw, |b| match b {
            Some(bytes) => decode_value(self.namespace, self.suffix(&raw), bytes),
            None => Err(StateError::NotFound {
                namespace: self.namespace,
                key: self.suffix(&raw).to_vec(),
            }),
        });
        recycle(raw);
        r
    }

    /// The value under `key`, if any.
    pub fn may_load(&self, key: K) -> Result<Option<V>, StateError> {
        let raw = self.raw(key);
        let r = state::get_with(&raw, |b| {
            b.map(|bytes| decode_value(self.namespace, self.suffix(&raw), bytes))
                .transpose()
        });
        recycle(raw);
        r
    }

    /// Whether `key` holds a value (without reading it).
    pub fn has(&self, key: K) -> bool {
        let raw = self.raw(key);
        let r = state::contains(&raw);
        recycle(raw);
        r
    }

    /// Store `value` under `key`.
    pub fn save(&self, key: K, value: &V) -> Result<(), StateError> {
        let raw = self.raw(key);
        let r = encode_value(self.namespace, self.suffix(&raw), value)
            .map(|bytes| state::set_owned(&raw, bytes));
        recycle(raw);
        r
    }

    /// Remove `key`; returns whether it held a value.
    pub fn remove(&self, key: K) -> bool {
        let raw = self.raw(key);
        let r = state::delete(&raw);
        recycle(raw);
        r
    }

    /// Load the value under `key` (if any), pass it to `f` and save what `f`
    /// returns. Nothing is saved when `f` fails.
    pub fn update<E: From<StateError>>(
        &self,
        key: K,
        f: impl FnOnce(Option<V>) -> Result<V, E>,
    ) -> Result<V, E> {
        let raw = self.raw(key);
        let r = self.update_raw(&raw, f);
        recycle(raw);
        r
    }

    fn update_raw<E: From<StateError>>(
        &self,
        raw: &[u8],
        f: impl FnOnce(Option<V>) -> Result<V, E>,
    ) -> Result<V, E> {
        let suffix = self.suffix(raw);
        let old = state::get_with(raw, |b| {
            b.map(|bytes| decode_value(self.namespace, suffix, bytes))
                .transpose()
        })?;
        let new = f(old)?;
        state::set_owned(raw, encode_value(self.namespace, suffix, &new)?);
        Ok(new)
    }

    /// The entries with keys between `min` and `max`, in `order`.
    pub fn range(&self, min: Bound<K>, max: Bound<K>, order: Order) -> MapRange<K::Owned, V> {
        Prefix::<K, V>::root(self.namespace).range(min, max, order)
    }

    /// The keys between `min` and `max`, in `order` (the host sends the
    /// values along; they are not decoded).
    pub fn keys(&self, min: Bound<K>, max: Bound<K>, order: Order) -> MapKeys<K::Owned> {
        Prefix::<K, V>::root(self.namespace).keys(min, max, order)
    }

    /// True when the map holds no entry (reads at most one).
    pub fn is_empty(&self) -> bool {
        Prefix::<K, V>::root(self.namespace).is_empty()
    }

    /// Remove every entry of the map; returns how many there were. Costs one
    /// write per entry: on a large realm, a per-call limit may stop it.
    pub fn clear(&self) -> u64 {
        Prefix::<K, V>::root(self.namespace).clear()
    }
}

impl<A: Key, B: Key, V: Serialize + DeserializeOwned> Map<(A, B), V> {
    /// The entries whose key starts with `a`, keyed by the rest of their key.
    pub fn prefix(&self, a: A) -> Prefix<B, V> {
        Prefix::new(self.namespace, &a)
    }
}

impl<A: Key, B: Key, C: Key, V: Serialize + DeserializeOwned> Map<(A, B, C), V> {
    /// The entries whose key starts with `a`, keyed by the rest of their key.
    pub fn prefix(&self, a: A) -> Prefix<(B, C), V> {
        Prefix::new(self.namespace, &a)
    }

    /// The entries whose key starts with `(a, b)`, keyed by the last
    /// component.
    pub fn sub_prefix(&self, ab: (A, B)) -> Prefix<C, V> {
        Prefix::new(self.namespace, &ab)
    }
}

/// The entries of a [`Map`] that share the first component(s) of their key,
/// keyed by the remaining components `K`.
pub struct Prefix<K, V> {
    namespace: &'static str,
    prefix: Vec<u8>,
    types: PhantomData<fn() -> (K, V)>,
}

impl<K, V> Clone for Prefix<K, V> {
    fn clone(&self) -> Self {
        Self {
            namespace: self.namespace,
            prefix: self.prefix.clone(),
            types: PhantomData,
        }
    }
}

impl<K, V> core::fmt::Debug for Prefix<K, V> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Prefix")
            .field("namespace", &self.namespace)
            .field("prefix", &self.prefix.escape_ascii().to_string())
            .finish()
    }
}

impl<K: Key, V: Serialize + DeserializeOwned> Prefix<K, V> {
    fn root(namespace: &'static str) -> Self {
        Self {
            namespace,
            prefix: namespace_key(namespace),
            types: PhantomData,
        }
    }

    fn new<P: Key + ?Sized>(namespace: &'static str, components: &P) -> Self {
        let mut prefix = namespace_key(namespace);
        components.encode_key(&mut prefix, false);
        Self {
            namespace,
            prefix,
            types: PhantomData,
        }
    }

    fn bound(&self, b: Bound<K>) -> Option<Bound<Vec<u8>>> {
        let key = |k: K| {
            let mut out = self.prefix.clone();
            k.encode_key(&mut out, true);
            out
        };
        match b {
            Bound::Included(k) => Some(Bound::Included(key(k))),
            Bound::Excluded(k) => Some(Bound::Excluded(key(k))),
            Bound::Unbounded => None,
        }
    }

    fn raw(&self, min: Bound<K>, max: Bound<K>, order: Order) -> state::Range {
        let end = state::prefix_end(&self.prefix);
        let lower = self
            .bound(min)
            .unwrap_or_else(|| Bound::Included(self.prefix.clone()));
        let upper = self
            .bound(max)
            .unwrap_or_else(|| end.map_or(Bound::Unbounded, Bound::Excluded));
        state::range(
            lower.as_ref().map(Vec::as_slice),
            upper.as_ref().map(Vec::as_slice),
            order == Order::Descending,
        )
    }

    /// The entries with keys between `min` and `max` (bounds on the
    /// remaining components), in `order`.
    pub fn range(&self, min: Bound<K>, max: Bound<K>, order: Order) -> MapRange<K::Owned, V> {
        MapRange {
            inner: MapKeysInner::new(self, min, max, order),
            value: PhantomData,
        }
    }

    /// The keys between `min` and `max`, in `order`.
    pub fn keys(&self, min: Bound<K>, max: Bound<K>, order: Order) -> MapKeys<K::Owned> {
        MapKeys {
            inner: MapKeysInner::new(self, min, max, order),
        }
    }

    /// True when no entry has this prefix (reads at most one).
    pub fn is_empty(&self) -> bool {
        self.raw(Bound::Unbounded, Bound::Unbounded, Order::Ascending)
            .page_size(1)
            .next()
            .is_none()
    }

    /// Remove every entry with this prefix; returns how many there were.
    pub fn clear(&self) -> u64 {
        let mut n = 0;
        for (key, _) in self.raw(Bound::Unbounded, Bound::Unbounded, Order::Ascending) {
            state::delete(&key);
            n += 1;
        }
        n
    }
}

/// Shared part of [`MapRange`] and [`MapKeys`]: raw entries, with the key
/// decoded.
struct MapKeysInner<O> {
    raw: state::Range,
    namespace: &'static str,
    namespace_len: usize,
    prefix_len: usize,
    decode: fn(&mut &[u8], bool) -> Result<O, String>,
}

impl<O> MapKeysInner<O> {
    fn new<K: Key<Owned = O>, V: Serialize + DeserializeOwned>(
        prefix: &Prefix<K, V>,
        min: Bound<K>,
        max: Bound<K>,
        order: Order,
    ) -> Self {
        Self {
            raw: prefix.raw(min, max, order),
            namespace: prefix.namespace,
            namespace_len: prefix.namespace.len() + 2,
            prefix_len: prefix.prefix.len(),
            decode: K::decode_key,
        }
    }

    fn page_size(&mut self, n: u32) {
        self.raw.set_page_size(n);
    }

    /// Next raw entry with its decoded key.
    fn next_entry(&mut self) -> Option<Result<RawEntry<O>, StateError>> {
        let (raw_key, value) = self.raw.next()?;
        let err = |message: String| StateError::Decode {
            namespace: self.namespace,
            key: raw_key
                .get(self.namespace_len..)
                .unwrap_or_default()
                .to_vec(),
            message,
        };
        let Some(mut rest) = raw_key.get(self.prefix_len..) else {
            return Some(Err(err("key outside the map".to_owned())));
        };
        let key = match (self.decode)(&mut rest, true) {
            Ok(key) if rest.is_empty() => key,
            Ok(_) => return Some(Err(err("bytes remain after the key".to_owned()))),
            Err(e) => return Some(Err(err(format!("undecodable key: {e}")))),
        };
        Some(Ok(RawEntry {
            key,
            raw_key,
            value,
        }))
    }
}

/// An entry of a range: its decoded key, its raw key and its value bytes.
struct RawEntry<O> {
    key: O,
    raw_key: Vec<u8>,
    value: Vec<u8>,
}

/// Iterator over `(key, value)` entries of a [`Map`] or [`Prefix`], in
/// order; an entry that does not decode yields a [`StateError`].
pub struct MapRange<O, V> {
    inner: MapKeysInner<O>,
    value: PhantomData<fn() -> V>,
}

impl<O, V> MapRange<O, V> {
    /// Fetch `n` entries per host call (see [`state::Range::page_size`]).
    pub fn page_size(mut self, n: u32) -> Self {
        self.inner.page_size(n);
        self
    }
}

impl<O, V: DeserializeOwned> Iterator for MapRange<O, V> {
    type Item = Result<(O, V), StateError>;

    fn next(&mut self) -> Option<Self::Item> {
        Some(self.inner.next_entry()?.and_then(|e| {
            let suffix = e
                .raw_key
                .get(self.inner.namespace_len..)
                .unwrap_or_default();
            Ok((e.key, decode_value(self.inner.namespace, suffix, &e.value)?))
        }))
    }
}

impl<O, V> core::fmt::Debug for MapRange<O, V> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("MapRange")
            .field("namespace", &self.inner.namespace)
            .finish_non_exhaustive()
    }
}

/// Iterator over the keys of a [`Map`] or [`Prefix`], in order.
pub struct MapKeys<O> {
    inner: MapKeysInner<O>,
}

impl<O> MapKeys<O> {
    /// Fetch `n` entries per host call (see [`state::Range::page_size`]).
    pub fn page_size(mut self, n: u32) -> Self {
        self.inner.page_size(n);
        self
    }
}

impl<O> Iterator for MapKeys<O> {
    type Item = Result<O, StateError>;

    fn next(&mut self) -> Option<Self::Item> {
        Some(self.inner.next_entry()?.map(|e| e.key))
    }
}

impl<O> core::fmt::Debug for MapKeys<O> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("MapKeys")
            .field("namespace", &self.inner.namespace)
            .finish_non_exhaustive()
    }
}
