//! Properties of the typed storage helpers: key encoding order equals
//! logical order, and Map ranges and prefixes, paged through the state's
//! scans, agree with a BTreeMap model.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::Bound;

use proptest::prelude::*;
use realmhost_guest::storage::{Key, decode_key, encode_key};
use realmhost_guest::{Item, Map, MemoryState, Order, StateError};

/// Encoded order equals logical order, and the encoding reads back.
fn check_order<K>(a: &K, b: &K) -> Result<(), TestCaseError>
where
    K: Key<Owned = K> + Ord + Debug,
{
    let (ea, eb) = (encode_key(a), encode_key(b));
    prop_assert_eq!(
        a.cmp(b),
        ea.cmp(&eb),
        "{:?} vs {:?}: {:?} vs {:?}",
        a,
        b,
        ea,
        eb
    );
    prop_assert_eq!(&decode_key::<K>(&ea).unwrap(), a);
    prop_assert_eq!(&decode_key::<K>(&eb).unwrap(), b);
    Ok(())
}

/// Strings rich in the bytes the escaping cares about.
fn tricky_string() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::collection::vec(
            prop::sample::select(vec![
                '\0',
                '\u{1}',
                'a',
                'b',
                '\u{ff}',
                '\u{100}',
                '\u{10ffff}'
            ]),
            0..6
        )
        .prop_map(|cs| cs.into_iter().collect()),
        any::<String>(),
    ]
}

fn tricky_bytes() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(prop::sample::select(vec![0u8, 1, 2, 0xfe, 0xff]), 0..6)
}

macro_rules! int_props {
    ($($name:ident: $t:ty),*) => {$(
        proptest! {
            #[test]
            fn $name(a: $t, b: $t) {
                check_order(&a, &b)?;
                check_order(&(a, b), &(b, a))?;
            }
        }
    )*};
}

int_props!(
    order_u8: u8, order_u16: u16, order_u32: u32, order_u64: u64, order_u128: u128,
    order_i8: i8, order_i16: i16, order_i32: i32, order_i64: i64, order_i128: i128
);

proptest! {
    #[test]
    fn order_strings(a in tricky_string(), b in tricky_string(), x: u8, y: u8) {
        check_order(&a, &b)?;
        check_order(&(a.clone(), x), &(b.clone(), y))?;
        check_order(&(a.clone(), b.clone()), &(b.clone(), a.clone()))?;
        check_order(&(x, a.clone(), b.clone()), &(y, b, a))?;
    }

    #[test]
    fn order_bytes(a in tricky_bytes(), b in tricky_bytes(), c in tricky_bytes(), x: i16, y: i16) {
        check_order(&a, &b)?;
        check_order(&(a.clone(), x, c.clone()), &(b.clone(), y, c.clone()))?;
        check_order(&(a.clone(), c.clone()), &(b.clone(), c))?;
        check_order(&(true, a), &(false, b))?;
    }

    /// Decoding arbitrary bytes never panics.
    #[test]
    fn decoding_garbage_is_an_error_not_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..24)) {
        let _ = decode_key::<(String, u32, Vec<u8>)>(&bytes);
        let _ = decode_key::<(i64, bool)>(&bytes);
        let _ = decode_key::<(Vec<u8>, String)>(&bytes);
    }
}

/// Composite-keyed map under test and its model.
const M: Map<(u8, &str), u32> = Map::new("m");
/// A second map, to check namespaces keep their entries apart.
const N: Map<i64, u8> = Map::new("n");
/// An item with the empty namespace (its key sorts before both maps).
const I: Item<u32> = Item::new("");

#[derive(Debug, Clone)]
enum Op {
    SaveM(u8, String, u32),
    RemoveM(u8, String),
    SaveN(i64, u8),
    RemoveN(i64),
}

fn small_string() -> impl Strategy<Value = String> + Clone {
    prop::sample::select(vec!["", "a", "a\0", "ab", "b", "ba", "\u{e9}"]).prop_map(String::from)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..4, small_string(), any::<u32>()).prop_map(|(a, s, v)| Op::SaveM(a, s, v)),
        1 => (0u8..4, small_string()).prop_map(|(a, s)| Op::RemoveM(a, s)),
        2 => (-3i64..3, any::<u8>()).prop_map(|(k, v)| Op::SaveN(k, v)),
        1 => (-3i64..3).prop_map(Op::RemoveN),
    ]
}

fn bound<T: Clone>(b: &Bound<T>) -> Bound<T> {
    b.clone()
}

fn arb_bound<T: Debug + Clone + 'static>(
    s: impl Strategy<Value = T> + Clone,
) -> impl Strategy<Value = Bound<T>> {
    prop_oneof![
        Just(Bound::Unbounded),
        s.clone().prop_map(Bound::Included),
        s.prop_map(Bound::Excluded),
    ]
}

fn in_bounds<T: Ord>(k: &T, min: &Bound<T>, max: &Bound<T>) -> bool {
    let above = match min {
        Bound::Unbounded => true,
        Bound::Included(m) => k >= m,
        Bound::Excluded(m) => k > m,
    };
    let below = match max {
        Bound::Unbounded => true,
        Bound::Included(m) => k <= m,
        Bound::Excluded(m) => k < m,
    };
    above && below
}

fn expected<K: Ord + Clone, V: Clone>(
    model: &BTreeMap<K, V>,
    min: &Bound<K>,
    max: &Bound<K>,
    order: Order,
) -> Vec<(K, V)> {
    let mut v: Vec<_> = model
        .iter()
        .filter(|(k, _)| in_bounds(*k, min, max))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if order == Order::Descending {
        v.reverse();
    }
    v
}

fn as_str(b: &Bound<String>) -> Bound<&str> {
    b.as_ref().map(String::as_str)
}

fn as_ref_bound(b: &Bound<(u8, String)>) -> Bound<(u8, &str)> {
    match b {
        Bound::Unbounded => Bound::Unbounded,
        Bound::Included((a, s)) => Bound::Included((*a, s.as_str())),
        Bound::Excluded((a, s)) => Bound::Excluded((*a, s.as_str())),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn map_ranges_and_prefixes_match_a_btreemap(
        ops in proptest::collection::vec(op(), 0..60),
        page_cap in 1u32..5,
        page_size in 1u32..6,
        min in arb_bound((0u8..4, small_string())),
        max in arb_bound((0u8..4, small_string())),
        prefix in 0u8..4,
        pmin in arb_bound(small_string()),
        pmax in arb_bound(small_string()),
        nmin in arb_bound(-4i64..4),
        nmax in arb_bound(-4i64..4),
        descending: bool,
    ) {
        let order = if descending { Order::Descending } else { Order::Ascending };
        let mut m_model: BTreeMap<(u8, String), u32> = BTreeMap::new();
        let mut n_model: BTreeMap<i64, u8> = BTreeMap::new();
        let mut realm = MemoryState::new();
        realm.set_scan_page_cap(Some(page_cap));
        realm.enter(|| -> Result<(), StateError> {
            I.save(&7)?;
            for op in &ops {
                match op {
                    Op::SaveM(a, s, v) => {
                        M.save((*a, s), v)?;
                        m_model.insert((*a, s.clone()), *v);
                    }
                    Op::RemoveM(a, s) => {
                        assert_eq!(M.remove((*a, s)), m_model.remove(&(*a, s.clone())).is_some());
                    }
                    Op::SaveN(k, v) => {
                        N.save(*k, v)?;
                        n_model.insert(*k, *v);
                    }
                    Op::RemoveN(k) => {
                        assert_eq!(N.remove(*k), n_model.remove(k).is_some());
                    }
                }
            }
            Ok(())
        }).unwrap();
        prop_assert_eq!(realm.len(), m_model.len() + n_model.len() + 1);

        realm.read(|| -> Result<(), TestCaseError> {
            let got: Vec<((u8, String), u32)> = M
                .range(as_ref_bound(&min), as_ref_bound(&max), order)
                .page_size(page_size)
                .collect::<Result<_, _>>()
                .unwrap();
            prop_assert_eq!(got, expected(&m_model, &min, &max, order));

            let keys: Vec<(u8, String)> = M
                .keys(as_ref_bound(&min), as_ref_bound(&max), order)
                .collect::<Result<_, _>>()
                .unwrap();
            let want: Vec<_> = expected(&m_model, &min, &max, order).into_iter().map(|(k, _)| k).collect();
            prop_assert_eq!(keys, want);

            let p_model: BTreeMap<String, u32> = m_model
                .iter()
                .filter(|((a, _), _)| *a == prefix)
                .map(|((_, s), v)| (s.clone(), *v))
                .collect();
            let got: Vec<(String, u32)> = M
                .prefix(prefix)
                .range(as_str(&pmin), as_str(&pmax), order)
                .page_size(page_size)
                .collect::<Result<_, _>>()
                .unwrap();
            prop_assert_eq!(got, expected(&p_model, &pmin, &pmax, order));
            prop_assert_eq!(M.prefix(prefix).is_empty(), p_model.is_empty());

            let got: Vec<(i64, u8)> = N
                .range(bound(&nmin), bound(&nmax), order)
                .page_size(page_size)
                .collect::<Result<_, _>>()
                .unwrap();
            prop_assert_eq!(got, expected(&n_model, &nmin, &nmax, order));
            prop_assert_eq!(M.is_empty(), m_model.is_empty());
            prop_assert_eq!(I.load().unwrap(), 7);
            Ok(())
        })?;

        // Clearing one map leaves the other and the item alone.
        let removed = realm.enter(|| M.clear());
        prop_assert_eq!(removed, m_model.len() as u64);
        prop_assert_eq!(realm.len(), n_model.len() + 1);
    }
}

#[test]
fn errors_name_the_entry() {
    const BAL: Map<&str, u64> = Map::new("balances");
    const COUNT: Item<u64> = Item::new("count");
    let mut realm = MemoryState::new();
    realm.enter(|| {
        let err = BAL.load("alice").unwrap_err();
        assert_eq!(err.to_string(), r#"no entry at "balances"["alice"]"#);
        let err = COUNT.load().unwrap_err();
        assert_eq!(err.to_string(), r#"no entry at "count""#);
        // A value of the wrong shape.
        realmhost_guest::state::set(&BAL.key("bob"), &[0xff; 12]);
        let err = BAL.may_load("bob").unwrap_err();
        assert!(
            err.to_string()
                .starts_with(r#"cannot decode "balances"["bob"]"#),
            "{err}"
        );
        let apply: realmhost_guest::ApplyError = err.into();
        assert!(matches!(apply, realmhost_guest::ApplyError::Invalid(m) if m.contains("bob")));
        // update does not save when the closure fails.
        let r: Result<u64, StateError> = BAL.update("carol", |_| Err(COUNT.load().unwrap_err()));
        assert!(r.is_err());
        assert!(!BAL.has("carol"));
        // A range stops on the undecodable entry with an error, not a panic.
        let all: Vec<_> = BAL
            .range(Bound::Unbounded, Bound::Unbounded, Order::Ascending)
            .collect();
        assert_eq!(all.len(), 1);
        assert!(all[0].is_err());
    });
}
