//! [`CallState`]: what the `state` interface sees during one plugin call.
//!
//! A call reads its realm's committed map plus its own writes; the writes go
//! to a buffer (an ordered map of key → new value or tombstone) and reach the
//! realm only when the call succeeds ([`CallState::finish`]). A rejection, an
//! `invalid` answer, a trap or a limit violation drops the buffer, so nothing
//! from a failed call leaks. Every operation is checked against the realm's
//! [`StateLimits`] as it happens and charged as gas, so the host's own work
//! for a call is bounded and paid for like the guest's.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use super::Bytes;
use super::limits::{StateLimit, StateLimitError, StateLimits};
use super::map::{Change, Changes, StateMap, is_empty_range, merge};

/// Fuel charged per state operation (host work not metered by wasm fuel).
pub const STATE_OP_FUEL: u64 = 500;
/// Fuel charged per key or value byte moved across the sandbox.
pub const STATE_BYTE_FUEL: u64 = 1;

/// In a `write-batch` buffer, the value length that marks a deletion (no
/// value bytes follow). Every other entry is
/// `u32 LE key length ‖ key ‖ u32 LE value length ‖ value`.
pub const WRITE_BATCH_DELETE: u32 = u32::MAX;

/// Why a `write-batch` stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteBatchError {
    /// The buffer does not parse: the write at `index` (0-based) is cut short.
    Malformed {
        /// Index of the write that does not parse.
        index: u32,
        /// What is missing.
        what: &'static str,
    },
    /// A write went past a limit, exactly as the single `set` or `delete`
    /// would have.
    Limit(StateLimitError),
}

impl From<StateLimitError> for WriteBatchError {
    fn from(e: StateLimitError) -> Self {
        Self::Limit(e)
    }
}

impl std::fmt::Display for WriteBatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Malformed { index, what } => {
                write!(f, "malformed state write-batch: write {index}: {what}")
            }
            Self::Limit(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for WriteBatchError {}

fn take_u32(b: &mut &[u8]) -> Option<u32> {
    let (head, rest) = b.split_first_chunk::<4>()?;
    *b = rest;
    Some(u32::from_le_bytes(*head))
}

fn take<'a>(b: &mut &'a [u8], n: u32) -> Option<&'a [u8]> {
    let n = usize::try_from(n).ok()?;
    if b.len() < n {
        return None;
    }
    let (head, rest) = b.split_at(n);
    *b = rest;
    Some(head)
}

/// What a call may do with the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Reads and buffered writes (`init`, `apply`, `apply-batch`, `migrate`),
    /// with an allowance of state operations for the whole call.
    ReadWrite {
        /// State operations the call may make.
        max_ops: u64,
    },
    /// Reads only (`query`).
    ReadOnly {
        /// State operations the call may make.
        max_ops: u64,
    },
}

/// One scan page, packed as the WIT `scan-page` describes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanPage {
    /// `u32 LE key length ‖ key ‖ u32 LE value length ‖ value`, per entry.
    pub entries: Vec<u8>,
    /// Entries in `entries`.
    pub count: u32,
    /// Key of the last entry returned, when more remain.
    pub resume: Option<Vec<u8>>,
}

/// The outcome of a successful call: the realm's next map and the keys the
/// call wrote (for incremental snapshots).
#[derive(Debug, Clone)]
pub struct Written {
    /// The map with the call's writes applied.
    pub map: StateMap,
    /// Every key the call set or deleted, ascending.
    pub changes: Vec<Change>,
}

/// The state of one realm as seen from inside one call.
#[derive(Debug)]
pub struct CallState {
    realm: Arc<str>,
    base: StateMap,
    writes: BTreeMap<Bytes, Option<Bytes>>,
    entries: u64,
    data_bytes: u64,
    ops: u64,
    max_ops: u64,
    read_only: bool,
    limits: Arc<StateLimits>,
    max_page_bytes: usize,
    gas: u64,
    violation: Option<StateLimitError>,
}

impl CallState {
    /// A call on `realm`, whose committed map is `base`. `max_page_bytes`
    /// caps one scan page (the runtime's output cap).
    pub fn new(
        realm: Arc<str>,
        base: &StateMap,
        limits: Arc<StateLimits>,
        access: Access,
        max_page_bytes: usize,
    ) -> Self {
        let (max_ops, read_only) = match access {
            Access::ReadWrite { max_ops } => (max_ops, false),
            Access::ReadOnly { max_ops } => (max_ops, true),
        };
        Self {
            realm,
            entries: base.len(),
            data_bytes: base.data_bytes(),
            base: base.clone(),
            writes: BTreeMap::new(),
            ops: 0,
            max_ops,
            read_only,
            limits,
            max_page_bytes: max_page_bytes.max(64),
            gas: 0,
            violation: None,
        }
    }

    /// The realm in scope.
    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// Fuel charged so far for state operations.
    pub fn gas(&self) -> u64 {
        self.gas
    }

    /// Operations made so far.
    pub fn ops(&self) -> u64 {
        self.ops
    }

    /// The limit the call went past, if it did (the call then trapped).
    pub fn violation(&self) -> Option<&StateLimitError> {
        self.violation.as_ref()
    }

    fn fail(&mut self, limit: StateLimit, actual: u64, max: u64) -> StateLimitError {
        let e = StateLimitError {
            realm: self.realm.to_string(),
            limit,
            actual,
            max,
        };
        // The first violation is the one reported.
        self.violation.get_or_insert_with(|| e.clone());
        e
    }

    fn op(&mut self, bytes: usize) -> Result<(), StateLimitError> {
        self.ops += 1;
        self.gas = self
            .gas
            .saturating_add(STATE_OP_FUEL + STATE_BYTE_FUEL * bytes as u64);
        if self.ops > self.max_ops {
            return Err(self.fail(StateLimit::OpsPerCall, self.ops, self.max_ops));
        }
        Ok(())
    }

    fn check_key(&mut self, key: &[u8]) -> Result<(), StateLimitError> {
        let max = self.limits.max_key_bytes;
        if key.len() > max {
            return Err(self.fail(StateLimit::KeyBytes, key.len() as u64, max as u64));
        }
        Ok(())
    }

    fn current(&self, key: &[u8]) -> Option<&[u8]> {
        match self.writes.get(key) {
            Some(w) => w.as_deref(),
            None => self.base.get(key),
        }
    }

    /// `state.get`.
    pub fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, StateLimitError> {
        self.check_key(key)?;
        let value = self.current(key).map(<[u8]>::to_vec);
        self.op(key.len() + value.as_ref().map_or(0, Vec::len))?;
        Ok(value)
    }

    /// `state.contains`.
    pub fn contains(&mut self, key: &[u8]) -> Result<bool, StateLimitError> {
        self.check_key(key)?;
        self.op(key.len())?;
        Ok(self.current(key).is_some())
    }

    /// `state.set`.
    pub fn set(&mut self, key: &[u8], value: &[u8]) -> Result<(), StateLimitError> {
        if self.read_only {
            return Err(self.fail(StateLimit::ReadOnly, 1, 0));
        }
        self.check_key(key)?;
        let max_value = self.limits.max_value_bytes;
        if value.len() > max_value {
            return Err(self.fail(StateLimit::ValueBytes, value.len() as u64, max_value as u64));
        }
        self.op(key.len() + value.len())?;
        let old = self.current(key).map(<[u8]>::len);
        let entries = self.entries + u64::from(old.is_none());
        let data_bytes = self.data_bytes - old.map_or(0, |v| (key.len() + v) as u64)
            + (key.len() + value.len()) as u64;
        if entries > self.limits.max_entries {
            let max = self.limits.max_entries;
            return Err(self.fail(StateLimit::Entries, entries, max));
        }
        if data_bytes > self.limits.max_total_bytes {
            let max = self.limits.max_total_bytes;
            return Err(self.fail(StateLimit::TotalBytes, data_bytes, max));
        }
        self.entries = entries;
        self.data_bytes = data_bytes;
        self.writes
            .insert(Bytes::from(key), Some(Bytes::from(value)));
        Ok(())
    }

    /// `state.delete`: whether the key held a value.
    pub fn delete(&mut self, key: &[u8]) -> Result<bool, StateLimitError> {
        if self.read_only {
            return Err(self.fail(StateLimit::ReadOnly, 1, 0));
        }
        self.check_key(key)?;
        self.op(key.len())?;
        let Some(old) = self.current(key).map(<[u8]>::len) else {
            return Ok(false);
        };
        self.entries -= 1;
        self.data_bytes -= (key.len() + old) as u64;
        if self.base.get(key).is_some() {
            self.writes.insert(Bytes::from(key), None);
        } else {
            // Written by this call only: forget the write.
            self.writes.remove(key);
        }
        Ok(true)
    }

    /// `state.write-batch`: every write of a packed buffer (see
    /// [`WRITE_BATCH_DELETE`]), in order, each exactly as the `set` or
    /// `delete` it stands for: same checks, same limit errors, same gas, one
    /// operation each. A buffer that does not parse is an error of its own;
    /// the writes before the malformed one stay in the call's buffer, which
    /// the trap that follows drops.
    pub fn write_batch(&mut self, mut entries: &[u8]) -> Result<(), WriteBatchError> {
        let mut index = 0u32;
        while !entries.is_empty() {
            let malformed = |what: &'static str| WriteBatchError::Malformed { index, what };
            let key_len = take_u32(&mut entries).ok_or(malformed("truncated key length"))?;
            let key = take(&mut entries, key_len).ok_or(malformed("truncated key"))?;
            let value_len = take_u32(&mut entries).ok_or(malformed("truncated value length"))?;
            if value_len == WRITE_BATCH_DELETE {
                self.delete(key)?;
            } else {
                let value = take(&mut entries, value_len).ok_or(malformed("truncated value"))?;
                self.set(key, value)?;
            }
            index = index.saturating_add(1);
        }
        Ok(())
    }

    /// True when the realm has no entries (not a state operation: costs
    /// nothing and counts against no limit).
    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// `state.len`.
    pub fn len(&mut self) -> Result<u64, StateLimitError> {
        self.op(0)?;
        Ok(self.entries)
    }

    /// `state.scan`: at most `limit` entries (at least one is always allowed)
    /// and at most the page cap in bytes.
    pub fn scan(
        &mut self,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
        limit: u32,
        reverse: bool,
    ) -> Result<ScanPage, StateLimitError> {
        for b in [lower, upper] {
            if let Bound::Included(k) | Bound::Excluded(k) = b {
                self.check_key(k)?;
            }
        }
        let page = self.collect_page(lower, upper, limit.max(1), reverse);
        self.op(page.entries.len())?;
        Ok(page)
    }

    fn collect_page(
        &self,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
        limit: u32,
        reverse: bool,
    ) -> ScanPage {
        let mut page = ScanPage::default();
        if is_empty_range(lower, upper) {
            return page;
        }
        let writes = self
            .writes
            .range::<[u8], _>((lower, upper))
            .map(|(k, v)| (&k[..], v.as_deref()));
        let writes: Changes<'_> = if reverse {
            Box::new(writes.rev())
        } else {
            Box::new(writes)
        };
        let live = merge(self.base.range(lower, upper, reverse), writes, reverse);
        let mut last_key: Option<&[u8]> = None;
        for (k, v) in live {
            let framed = 8 + k.len() + v.len();
            let full = page.count >= limit
                || (page.count > 0 && page.entries.len() + framed > self.max_page_bytes);
            if full {
                page.resume = last_key.map(<[u8]>::to_vec);
                break;
            }
            page.entries
                .extend_from_slice(&(k.len() as u32).to_le_bytes());
            page.entries.extend_from_slice(k);
            page.entries
                .extend_from_slice(&(v.len() as u32).to_le_bytes());
            page.entries.extend_from_slice(v);
            page.count += 1;
            last_key = Some(k);
        }
        page
    }

    /// The call succeeded: its realm's next map and the keys it changed.
    pub fn finish(self) -> Written {
        let changes: Vec<Change> = self.writes.into_iter().collect();
        let map = if changes.is_empty() {
            self.base
        } else {
            self.base.with_changes(&changes)
        };
        Written { map, changes }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Arc<StateLimits> {
        Arc::new(StateLimits {
            max_key_bytes: 8,
            max_value_bytes: 16,
            max_entries: 4,
            max_total_bytes: 40,
            max_ops_per_call: 100,
        })
    }

    fn call(base: &StateMap) -> CallState {
        CallState::new(
            Arc::from("r"),
            base,
            limits(),
            Access::ReadWrite { max_ops: 100 },
            1 << 20,
        )
    }

    fn decode(page: &ScanPage) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        let mut b = &page.entries[..];
        let take = |b: &mut &[u8]| {
            let n = u32::from_le_bytes(b[..4].try_into().unwrap()) as usize;
            let v = b[4..4 + n].to_vec();
            *b = &b[4 + n..];
            v
        };
        for _ in 0..page.count {
            let k = take(&mut b);
            let v = take(&mut b);
            out.push((k, v));
        }
        assert!(b.is_empty());
        out
    }

    #[test]
    fn reads_see_own_writes_and_the_base_is_untouched() {
        let base =
            StateMap::new().with_changes(&[(Bytes::from(&b"a"[..]), Some(Bytes::from(&b"1"[..])))]);
        let mut c = call(&base);
        assert_eq!(c.get(b"a").unwrap(), Some(b"1".to_vec()));
        c.set(b"b", b"2").unwrap();
        assert!(c.delete(b"a").unwrap());
        assert!(!c.delete(b"zz").unwrap());
        assert_eq!(c.get(b"a").unwrap(), None);
        assert_eq!(c.len().unwrap(), 1);
        let page = c
            .scan(Bound::Unbounded, Bound::Unbounded, 10, false)
            .unwrap();
        assert_eq!(decode(&page), vec![(b"b".to_vec(), b"2".to_vec())]);
        let w = c.finish();
        assert_eq!(w.map.len(), 1);
        assert_eq!(w.map.get(b"b"), Some(&b"2"[..]));
        assert_eq!(base.get(b"a"), Some(&b"1"[..]));
    }

    #[test]
    fn limits_are_typed_and_sticky() {
        let mut c = call(&StateMap::new());
        let e = c.set(b"123456789", b"").unwrap_err();
        assert_eq!(e.limit, StateLimit::KeyBytes);
        assert_eq!(e.realm, "r");
        assert_eq!(c.violation().unwrap().limit, StateLimit::KeyBytes);
        let mut c = call(&StateMap::new());
        assert_eq!(
            c.set(b"k", &[0; 17]).unwrap_err().limit,
            StateLimit::ValueBytes
        );
        let mut c = call(&StateMap::new());
        for k in [b"1", b"2", b"3", b"4"] {
            c.set(k, b"").unwrap();
        }
        assert_eq!(c.set(b"5", b"").unwrap_err().limit, StateLimit::Entries);
        // Replacing a key does not add an entry.
        c.set(b"4", b"x").unwrap();
        let mut c = call(&StateMap::new());
        c.set(b"a", &[0; 16]).unwrap();
        c.set(b"b", &[0; 16]).unwrap();
        assert_eq!(
            c.set(b"c", &[0; 16]).unwrap_err().limit,
            StateLimit::TotalBytes
        );
        let mut c = CallState::new(
            Arc::from("r"),
            &StateMap::new(),
            limits(),
            Access::ReadOnly { max_ops: 2 },
            1 << 20,
        );
        assert_eq!(c.set(b"a", b"").unwrap_err().limit, StateLimit::ReadOnly);
        let mut c = CallState::new(
            Arc::from("r"),
            &StateMap::new(),
            limits(),
            Access::ReadOnly { max_ops: 2 },
            1 << 20,
        );
        c.get(b"a").unwrap();
        c.get(b"a").unwrap();
        assert_eq!(c.get(b"a").unwrap_err().limit, StateLimit::OpsPerCall);
    }

    #[test]
    fn scans_merge_writes_page_and_resume() {
        let base = StateMap::from_sorted(
            [b"a", b"c", b"e", b"g"]
                .iter()
                .map(|k| (Bytes::from(&k[..]), Bytes::from(&b"base"[..])))
                .collect(),
        )
        .unwrap();
        let mut c = CallState::new(
            Arc::from("r"),
            &base,
            Arc::new(StateLimits::default()),
            Access::ReadWrite { max_ops: 100 },
            1 << 20,
        );
        c.set(b"b", b"new").unwrap();
        c.set(b"c", b"upd").unwrap();
        c.delete(b"e").unwrap();
        // Simple explicit paging.
        let p1 = c
            .scan(Bound::Unbounded, Bound::Unbounded, 2, false)
            .unwrap();
        assert_eq!(
            decode(&p1),
            vec![
                (b"a".to_vec(), b"base".to_vec()),
                (b"b".to_vec(), b"new".to_vec())
            ]
        );
        assert_eq!(p1.resume.as_deref(), Some(&b"b"[..]));
        let p2 = c
            .scan(Bound::Excluded(&b"b"[..]), Bound::Unbounded, 2, false)
            .unwrap();
        assert_eq!(
            decode(&p2),
            vec![
                (b"c".to_vec(), b"upd".to_vec()),
                (b"g".to_vec(), b"base".to_vec())
            ]
        );
        assert_eq!(p2.resume, None);
        let r1 = c.scan(Bound::Unbounded, Bound::Unbounded, 3, true).unwrap();
        let keys: Vec<_> = decode(&r1).into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, vec![b"g".to_vec(), b"c".to_vec(), b"b".to_vec()]);
        assert_eq!(r1.resume.as_deref(), Some(&b"b"[..]));
    }
    /// Pack writes as `write-batch` expects them (`None`: delete).
    fn pack(writes: &[(&[u8], Option<&[u8]>)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (k, v) in writes {
            out.extend_from_slice(&(k.len() as u32).to_le_bytes());
            out.extend_from_slice(k);
            match v {
                Some(v) => {
                    out.extend_from_slice(&(v.len() as u32).to_le_bytes());
                    out.extend_from_slice(v);
                }
                None => out.extend_from_slice(&WRITE_BATCH_DELETE.to_le_bytes()),
            }
        }
        out
    }

    #[test]
    fn write_batch_equals_single_writes_in_effect_ops_and_gas() {
        let base =
            StateMap::new().with_changes(&[(Bytes::from(&b"a"[..]), Some(Bytes::from(&b"1"[..])))]);
        let writes: &[(&[u8], Option<&[u8]>)] = &[
            (b"b", Some(b"2")),
            (b"a", None),
            (b"c", Some(b"")),
            (b"b", Some(b"22")),
            (b"zz", None),
        ];
        let mut single = call(&base);
        for (k, v) in writes {
            match v {
                Some(v) => single.set(k, v).unwrap(),
                None => {
                    single.delete(k).unwrap();
                }
            }
        }
        let mut batched = call(&base);
        batched.write_batch(&pack(writes)).unwrap();
        assert_eq!(batched.ops(), 5);
        assert_eq!(batched.ops(), single.ops());
        assert_eq!(batched.gas(), single.gas());
        assert_eq!(batched.len().unwrap(), 2);
        let (a, b) = (single.finish(), batched.finish());
        assert_eq!(a.changes, b.changes);
        assert_eq!(b.map.get(b"b"), Some(&b"22"[..]));
        assert_eq!(b.map.get(b"a"), None);
        // An empty batch is no operation at all.
        let mut c = call(&base);
        c.write_batch(&[]).unwrap();
        assert_eq!((c.ops(), c.gas()), (0, 0));
    }

    #[test]
    fn write_batch_hits_the_same_limits() {
        let limit = |writes: &[(&[u8], Option<&[u8]>)], access| {
            let mut c = CallState::new(Arc::from("r"), &StateMap::new(), limits(), access, 1 << 20);
            match c.write_batch(&pack(writes)).unwrap_err() {
                WriteBatchError::Limit(e) => {
                    assert_eq!(c.violation(), Some(&e));
                    e.limit
                }
                other => panic!("{other}"),
            }
        };
        let rw = Access::ReadWrite { max_ops: 100 };
        assert_eq!(
            limit(&[(b"123456789", Some(b""))], rw),
            StateLimit::KeyBytes
        );
        assert_eq!(limit(&[(b"123456789", None)], rw), StateLimit::KeyBytes);
        assert_eq!(limit(&[(b"k", Some(&[0; 17]))], rw), StateLimit::ValueBytes);
        let five: Vec<(&[u8], Option<&[u8]>)> = [b"1", b"2", b"3", b"4", b"5"]
            .iter()
            .map(|k| (&k[..], Some(&b""[..])))
            .collect();
        assert_eq!(limit(&five, rw), StateLimit::Entries);
        assert_eq!(
            limit(
                &[
                    (b"a", Some(&[0; 16])),
                    (b"b", Some(&[0; 16])),
                    (b"c", Some(&[0; 16]))
                ],
                rw
            ),
            StateLimit::TotalBytes
        );
        let ro = Access::ReadOnly { max_ops: 100 };
        assert_eq!(limit(&[(b"a", Some(b""))], ro), StateLimit::ReadOnly);
        assert_eq!(limit(&[(b"a", None)], ro), StateLimit::ReadOnly);
        // Each write is one operation: three writes with an allowance of two.
        let three: &[(&[u8], Option<&[u8]>)] = &[(b"a", Some(b"")), (b"a", None), (b"a", None)];
        assert_eq!(
            limit(three, Access::ReadWrite { max_ops: 2 }),
            StateLimit::OpsPerCall
        );
    }

    #[test]
    fn malformed_write_batches_are_refused() {
        let good = pack(&[(b"key", Some(b"value")), (b"gone", None)]);
        let mut c = call(&StateMap::new());
        c.write_batch(&good).unwrap();
        // Every proper prefix of a packed buffer, except the one that ends
        // exactly after the first write, is cut short somewhere.
        let first = 4 + 3 + 4 + 5;
        for cut in (1..good.len()).filter(|&n| n != first) {
            let mut c = call(&StateMap::new());
            let e = c.write_batch(&good[..cut]).unwrap_err();
            let WriteBatchError::Malformed { index, what } = e else {
                panic!("cut at {cut}: {e}");
            };
            assert_eq!(index, u32::from(cut > first), "cut at {cut}");
            assert!(what.starts_with("truncated"));
            assert!(e.to_string().contains("malformed state write-batch"));
            assert!(c.violation().is_none());
        }
        // A length far past the buffer.
        let mut c = call(&StateMap::new());
        let mut huge = (u32::MAX - 1).to_le_bytes().to_vec();
        huge.extend_from_slice(b"k");
        assert!(matches!(
            c.write_batch(&huge),
            Err(WriteBatchError::Malformed {
                index: 0,
                what: "truncated key"
            })
        ));
    }
}
