//! Unit tests of the write-back cache, against an in-memory host.
use super::*;
use crate::state::{self as st, PageBuilder, cached};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

/// An in-memory host: the entries a call sees, and the calls it got.
#[derive(Debug, Default)]
struct Host {
    map: BTreeMap<Vec<u8>, Vec<u8>>,
    calls: Vec<String>,
}

#[derive(Debug, Clone, Default)]
struct Fake(Rc<RefCell<Host>>);

impl Fake {
    fn with(entries: &[(&[u8], &[u8])]) -> Self {
        let fake = Self::default();
        for (k, v) in entries {
            fake.0.borrow_mut().map.insert(k.to_vec(), v.to_vec());
        }
        fake
    }

    fn calls(&self) -> Vec<String> {
        std::mem::take(&mut self.0.borrow_mut().calls)
    }

    fn map(&self) -> BTreeMap<Vec<u8>, Vec<u8>> {
        self.0.borrow().map.clone()
    }

    fn log(&self, call: String) {
        self.0.borrow_mut().calls.push(call);
    }

    fn run<T, E>(&self, read_only: bool, f: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
        cached(Box::new(self.clone()), read_only, f)
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

impl Remote for Fake {
    fn get(&mut self, key: &[u8]) -> Option<Vec<u8>> {
        self.log(format!("get {}", text(key)));
        self.0.borrow().map.get(key).cloned()
    }
    fn contains(&mut self, key: &[u8]) -> bool {
        self.log(format!("contains {}", text(key)));
        self.0.borrow().map.contains_key(key)
    }
    fn set(&mut self, key: &[u8], value: &[u8]) {
        self.log(format!("set {}", text(key)));
        self.0.borrow_mut().map.insert(key.to_vec(), value.to_vec());
    }
    fn delete(&mut self, key: &[u8]) -> bool {
        self.log(format!("delete {}", text(key)));
        self.0.borrow_mut().map.remove(key).is_some()
    }
    fn len(&mut self) -> u64 {
        self.log("len".into());
        self.0.borrow().map.len() as u64
    }
    fn scan(
        &mut self,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
        limit: u32,
        reverse: bool,
    ) -> Page {
        self.log("scan".into());
        assert!(!reverse && limit == u32::MAX);
        let mut page = PageBuilder::new();
        for (k, v) in self.0.borrow().map.range::<[u8], _>((lower, upper)) {
            page.push(k, v);
        }
        page.finish(None)
    }
    fn write_batch(&mut self, mut entries: &[u8]) {
        fn take<'a>(b: &mut &'a [u8], n: usize) -> &'a [u8] {
            let (head, rest) = b.split_at(n);
            *b = rest;
            head
        }
        fn take_u32(b: &mut &[u8]) -> u32 {
            u32::from_le_bytes(take(b, 4).try_into().unwrap())
        }
        let mut log = Vec::new();
        while !entries.is_empty() {
            let n = take_u32(&mut entries) as usize;
            let key = take(&mut entries, n).to_vec();
            let n = take_u32(&mut entries);
            let mut host = self.0.borrow_mut();
            if n == WRITE_BATCH_DELETE {
                log.push(format!("-{}", text(&key)));
                host.map.remove(&key);
            } else {
                let value = take(&mut entries, n as usize).to_vec();
                log.push(format!("{}={}", text(&key), text(&value)));
                host.map.insert(key, value);
            }
        }
        self.log(format!("write-batch {}", log.join(" ")));
    }
}

fn all() -> Vec<(Vec<u8>, Vec<u8>)> {
    st::scan(Bound::Unbounded, Bound::Unbounded, u32::MAX, false)
        .iter()
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .collect()
}

type R = Result<(), ()>;

#[test]
fn reads_are_cached_and_see_own_writes() {
    let host = Fake::with(&[(b"a", b"1")]);
    host.run(false, || -> R {
        assert_eq!(st::get(b"a"), Some(b"1".to_vec()));
        assert_eq!(st::get(b"a"), Some(b"1".to_vec()));
        assert!(st::contains(b"a"));
        assert_eq!(st::get(b"b"), None);
        assert!(!st::contains(b"b"));
        st::set(b"b", b"2");
        assert_eq!(st::get(b"b"), Some(b"2".to_vec()));
        st::set(b"a", b"10");
        assert_eq!(st::get(b"a"), Some(b"10".to_vec()));
        // `contains` first, then the value: one host call each.
        assert!(!st::contains(b"c"));
        Ok(())
    })
    .unwrap();
    assert_eq!(
        host.calls(),
        ["get a", "get b", "contains c", "write-batch b=2 a=10"]
    );
    assert_eq!(host.map().get(&b"a"[..]), Some(&b"10".to_vec()));
}

#[test]
fn delete_says_whether_the_key_held_a_value() {
    let host = Fake::with(&[(b"a", b"1"), (b"b", b"2"), (b"c", b"3")]);
    host.run(false, || -> R {
        // Known present (read), known absent, unknown (asked of the host).
        assert_eq!(st::get(b"a"), Some(b"1".to_vec()));
        assert!(st::delete(b"a"));
        assert!(!st::delete(b"a"));
        assert_eq!(st::get(b"a"), None);
        assert!(st::delete(b"b"));
        assert!(!st::delete(b"zz"));
        assert!(!st::contains(b"b"));
        // Written in this call, then deleted.
        st::set(b"n", b"new");
        assert!(st::delete(b"n"));
        assert!(!st::contains(b"n"));
        // Known from `contains` only.
        assert!(st::contains(b"c"));
        assert!(st::delete(b"c"));
        Ok(())
    })
    .unwrap();
    assert_eq!(
        host.calls(),
        [
            "get a",
            "delete b",
            "delete zz",
            "contains c",
            "write-batch -a -n -c"
        ]
    );
    assert!(host.map().is_empty());
}

#[test]
fn len_and_scan_flush_first() {
    let host = Fake::with(&[(b"a", b"1"), (b"c", b"3")]);
    host.run(false, || -> R {
        st::set(b"b", b"2");
        assert!(st::delete(b"c"));
        assert_eq!(
            all(),
            [
                (b"a".to_vec(), b"1".to_vec()),
                (b"b".to_vec(), b"2".to_vec())
            ]
        );
        assert_eq!(st::len(), 2);
        st::set(b"d", b"4");
        assert_eq!(st::len(), 3);
        // Nothing left to flush: the next scan goes straight to the host.
        assert_eq!(all().len(), 3);
        Ok(())
    })
    .unwrap();
    assert_eq!(
        host.calls(),
        [
            "delete c",
            "write-batch b=2",
            "scan",
            "len",
            "write-batch d=4",
            "len",
            "scan"
        ]
    );
}

#[test]
fn a_failed_call_sends_no_buffered_write() {
    let host = Fake::with(&[(b"a", b"1")]);
    let r = host.run(false, || -> R {
        st::set(b"a", b"2");
        st::set(b"b", b"2");
        assert!(st::delete(b"a"));
        Err(())
    });
    assert!(r.is_err());
    assert_eq!(host.calls(), Vec::<String>::new());
    assert_eq!(host.map().len(), 1);
}

#[test]
fn repeated_keys_cost_one_read_and_one_write_per_call() {
    let host = Fake::with(&[(b"total", &5u64.to_le_bytes())]);
    host.run(false, || -> R {
        for i in 0..100u64 {
            let t = st::get(b"total").map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap()));
            st::set(b"total", &(t + i).to_le_bytes());
        }
        Ok(())
    })
    .unwrap();
    let calls = host.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[0], "get total");
    assert_eq!(
        host.map().get(&b"total"[..]),
        Some(&(5 + 4950u64).to_le_bytes().to_vec())
    );
}

#[test]
fn read_only_calls_pass_writes_to_the_host() {
    let host = Fake::with(&[(b"a", b"1")]);
    host.run(true, || -> R {
        assert_eq!(st::get(b"a"), Some(b"1".to_vec()));
        st::set(b"q", b"x");
        Ok(())
    })
    .unwrap();
    // The real host refuses the write and traps; the fake records it.
    assert_eq!(host.calls(), ["get a", "set q"]);
}

#[test]
fn large_buffers_are_flushed_as_they_grow() {
    let host = Fake::default();
    host.run(false, || -> R {
        for i in 0..(FLUSH_ENTRIES as u32 + 10) {
            st::set(&i.to_be_bytes(), b"");
        }
        Ok(())
    })
    .unwrap();
    let calls = host.calls();
    assert_eq!(calls.len(), 2);
    assert!(calls.iter().all(|c| c.starts_with("write-batch")));
    assert_eq!(host.map().len(), FLUSH_ENTRIES + 10);
    // Past the cached-key bound, the cache starts over (and stays right).
    let host = Fake::default();
    host.run(false, || -> R {
        for i in 0..(MAX_CACHED as u32 + 10) {
            assert_eq!(st::get(&i.to_be_bytes()), None);
            st::set(&i.to_be_bytes(), b"v");
        }
        assert_eq!(st::get(&0u32.to_be_bytes()), Some(b"v".to_vec()));
        Ok(())
    })
    .unwrap();
    assert_eq!(host.map().len(), MAX_CACHED + 10);
}

#[test]
fn native_drivers_are_not_cached() {
    let mut mem = crate::MemoryState::new();
    mem.enter(|| {
        st::set(b"k", b"v");
        assert!(matches!(
            crate::state::memory::with_scope(|f| matches!(
                f,
                crate::state::memory::Served::Memory(_)
            )),
            crate::state::memory::Backend::Served(true)
        ));
    });
    assert_eq!(mem.get(b"k"), Some(&b"v"[..]));
}

#[test]
fn key_hashes_spread_over_the_low_bits() {
    use std::hash::BuildHasher;
    // Keys that differ only in a few middle bytes, as typed keys do.
    let build = BuildHasherDefault::<KeyHasher>::default();
    let mut buckets = std::collections::BTreeSet::new();
    for i in 0..1024u32 {
        let mut key = b"x/".to_vec();
        key.extend_from_slice(&7u64.to_be_bytes());
        key.extend_from_slice(&i.to_be_bytes());
        buckets.insert(build.hash_one(&key[..]) & 1023);
    }
    assert!(buckets.len() > 600, "{} buckets of 1024", buckets.len());
}
