//! Order-preserving key encoding.

/// A type usable as (part of) a [`crate::Map`] key.
///
/// The encoding keeps **byte order equal to logical order**, so the host's
/// bytewise ordered scans return entries sorted by key:
///
/// - unsigned integers: big-endian, fixed width;
/// - signed integers: big-endian with the sign bit flipped (so `-1 < 0`);
/// - `bool`: one byte, `0` or `1`;
/// - fixed-size byte arrays: as is;
/// - strings and byte strings: as is when they are the last component of the
///   key; otherwise escaped and terminated (every `0x00` byte becomes
///   `0x00 0xff`, and `0x00 0x00` ends the component). A length prefix would
///   sort `("b", 1)` before `("aa", 1)`; the terminator keeps the order
///   lexicographic and makes each component prefix-free, so the components
///   after it cannot disturb the order either;
/// - tuples: their components in order, each encoded as "not last" except
///   the tuple's own last component, which inherits `last`.
///
/// Implement it for your own key types by delegating to these (for example a
/// newtype around a `String`), keeping the same order guarantee.
pub trait Key {
    /// What range iteration gives back for this key type (`String` for
    /// `&str`, the tuple of owned components for a tuple, ...).
    type Owned;

    /// Append the encoding of `self`; `last` is true when nothing follows it
    /// in the key.
    fn encode_key(&self, out: &mut Vec<u8>, last: bool);

    /// Read one encoded component from the front of `input`, advancing it.
    fn decode_key(input: &mut &[u8], last: bool) -> Result<Self::Owned, String>;
}

/// The bytes of `key` as the last (or only) component of a key.
pub fn encode_key<K: Key + ?Sized>(key: &K) -> Vec<u8> {
    let mut out = Vec::new();
    key.encode_key(&mut out, true);
    out
}

/// Read back a whole key written by [`encode_key`].
pub fn decode_key<K: Key + ?Sized>(bytes: &[u8]) -> Result<K::Owned, String> {
    let mut input = bytes;
    let key = K::decode_key(&mut input, true)?;
    if input.is_empty() {
        Ok(key)
    } else {
        Err(format!("{} bytes remain after the key", input.len()))
    }
}

impl<T: Key + ?Sized> Key for &T {
    type Owned = T::Owned;

    fn encode_key(&self, out: &mut Vec<u8>, last: bool) {
        (**self).encode_key(out, last);
    }

    fn decode_key(input: &mut &[u8], last: bool) -> Result<Self::Owned, String> {
        T::decode_key(input, last)
    }
}

fn take<const N: usize>(input: &mut &[u8], what: &str) -> Result<[u8; N], String> {
    let (head, rest) = input
        .split_first_chunk::<N>()
        .ok_or_else(|| format!("key too short for {what}"))?;
    *input = rest;
    Ok(*head)
}

macro_rules! unsigned_keys {
    ($($t:ty),*) => {$(
        impl Key for $t {
            type Owned = $t;

            fn encode_key(&self, out: &mut Vec<u8>, _last: bool) {
                out.extend_from_slice(&self.to_be_bytes());
            }

            fn decode_key(input: &mut &[u8], _last: bool) -> Result<$t, String> {
                Ok(<$t>::from_be_bytes(take(input, stringify!($t))?))
            }
        }
    )*};
}

macro_rules! signed_keys {
    ($($t:ty => $u:ty),*) => {$(
        impl Key for $t {
            type Owned = $t;

            fn encode_key(&self, out: &mut Vec<u8>, _last: bool) {
                const SIGN: $u = 1 << (<$u>::BITS - 1);
                out.extend_from_slice(&((*self as $u) ^ SIGN).to_be_bytes());
            }

            fn decode_key(input: &mut &[u8], _last: bool) -> Result<$t, String> {
                const SIGN: $u = 1 << (<$u>::BITS - 1);
                Ok((<$u>::from_be_bytes(take(input, stringify!($t))?) ^ SIGN) as $t)
            }
        }
    )*};
}

unsigned_keys!(u8, u16, u32, u64, u128);
signed_keys!(i8 => u8, i16 => u16, i32 => u32, i64 => u64, i128 => u128);

impl Key for bool {
    type Owned = bool;

    fn encode_key(&self, out: &mut Vec<u8>, _last: bool) {
        out.push(u8::from(*self));
    }

    fn decode_key(input: &mut &[u8], _last: bool) -> Result<bool, String> {
        match take::<1>(input, "bool")? {
            [0] => Ok(false),
            [1] => Ok(true),
            [b] => Err(format!("{b} is not a bool")),
        }
    }
}

impl<const N: usize> Key for [u8; N] {
    type Owned = [u8; N];

    fn encode_key(&self, out: &mut Vec<u8>, _last: bool) {
        out.extend_from_slice(self);
    }

    fn decode_key(input: &mut &[u8], _last: bool) -> Result<[u8; N], String> {
        take(input, "a byte array")
    }
}

fn encode_bytes(bytes: &[u8], out: &mut Vec<u8>, last: bool) {
    if last {
        out.extend_from_slice(bytes);
        return;
    }
    out.reserve(bytes.len() + 2);
    for &b in bytes {
        out.push(b);
        if b == 0 {
            out.push(0xff);
        }
    }
    out.extend_from_slice(&[0, 0]);
}

fn decode_bytes(input: &mut &[u8], last: bool) -> Result<Vec<u8>, String> {
    if last {
        let out = input.to_vec();
        *input = &[];
        return Ok(out);
    }
    let mut out = Vec::new();
    let mut rest = *input;
    loop {
        match rest {
            [0, 0, tail @ ..] => {
                *input = tail;
                return Ok(out);
            }
            [0, 0xff, tail @ ..] => {
                out.push(0);
                rest = tail;
            }
            [0, ..] => return Err("bad escape in a key component".to_owned()),
            [b, tail @ ..] => {
                out.push(*b);
                rest = tail;
            }
            [] => return Err("unterminated key component".to_owned()),
        }
    }
}

fn utf8(bytes: Vec<u8>) -> Result<String, String> {
    String::from_utf8(bytes).map_err(|_| "key component is not UTF-8".to_owned())
}

impl Key for [u8] {
    type Owned = Vec<u8>;

    fn encode_key(&self, out: &mut Vec<u8>, last: bool) {
        encode_bytes(self, out, last);
    }

    fn decode_key(input: &mut &[u8], last: bool) -> Result<Vec<u8>, String> {
        decode_bytes(input, last)
    }
}

impl Key for Vec<u8> {
    type Owned = Vec<u8>;

    fn encode_key(&self, out: &mut Vec<u8>, last: bool) {
        encode_bytes(self, out, last);
    }

    fn decode_key(input: &mut &[u8], last: bool) -> Result<Vec<u8>, String> {
        decode_bytes(input, last)
    }
}

impl Key for str {
    type Owned = String;

    fn encode_key(&self, out: &mut Vec<u8>, last: bool) {
        encode_bytes(self.as_bytes(), out, last);
    }

    fn decode_key(input: &mut &[u8], last: bool) -> Result<String, String> {
        utf8(decode_bytes(input, last)?)
    }
}

impl Key for String {
    type Owned = String;

    fn encode_key(&self, out: &mut Vec<u8>, last: bool) {
        encode_bytes(self.as_bytes(), out, last);
    }

    fn decode_key(input: &mut &[u8], last: bool) -> Result<String, String> {
        utf8(decode_bytes(input, last)?)
    }
}

impl<A: Key, B: Key> Key for (A, B) {
    type Owned = (A::Owned, B::Owned);

    fn encode_key(&self, out: &mut Vec<u8>, last: bool) {
        self.0.encode_key(out, false);
        self.1.encode_key(out, last);
    }

    fn decode_key(input: &mut &[u8], last: bool) -> Result<Self::Owned, String> {
        Ok((A::decode_key(input, false)?, B::decode_key(input, last)?))
    }
}

impl<A: Key, B: Key, C: Key> Key for (A, B, C) {
    type Owned = (A::Owned, B::Owned, C::Owned);

    fn encode_key(&self, out: &mut Vec<u8>, last: bool) {
        self.0.encode_key(out, false);
        self.1.encode_key(out, false);
        self.2.encode_key(out, last);
    }

    fn decode_key(input: &mut &[u8], last: bool) -> Result<Self::Owned, String> {
        Ok((
            A::decode_key(input, false)?,
            B::decode_key(input, false)?,
            C::decode_key(input, last)?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn examples() {
        assert_eq!(encode_key(&1u16), [0, 1]);
        assert_eq!(encode_key(&-1i8), [0x7f]);
        assert_eq!(encode_key(&0i8), [0x80]);
        assert_eq!(encode_key("a\0b"), b"a\0b");
        assert_eq!(encode_key(&("a\0", 7u8)), [b'a', 0, 0xff, 0, 0, 7]);
        assert!(encode_key(&("b", 1u8)) > encode_key(&("aa", 1u8)));
        assert_eq!(
            decode_key::<(&str, u8)>(&[b'a', 0, 0xff, 0, 0, 7]).unwrap(),
            ("a\0".to_owned(), 7)
        );
        assert!(decode_key::<(&str, u8)>(&[b'a', 0, 1, 0, 0, 7]).is_err());
        assert!(decode_key::<(&str, u8)>(b"abc").is_err());
        assert!(decode_key::<u32>(&[0, 0, 0, 1, 2]).is_err());
        assert!(decode_key::<bool>(&[2]).is_err());
        assert!(decode_key::<&str>(&[0xff]).is_err());
    }
}
