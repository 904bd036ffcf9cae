//! A realm's state: an ordered map of byte keys to byte values, owned by the
//! host.

use std::sync::Arc;

/// An immutable, cheaply cloned byte string: a key or a value of a realm's
/// state. Clones share the bytes (a reference-count increment), which is what
/// lets a new version of a map share every untouched entry with the old one.
pub type Bytes = Arc<[u8]>;
