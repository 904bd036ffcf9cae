//! A realm's state: an ordered map of byte keys to byte values, owned by the
//! host (contract `realmhost:realm@0.2.0`).
//!
//! The plugin never holds a realm's state. During a call it reads and writes
//! single entries through the `state` interface; the host answers from the
//! realm's committed [`StateMap`] plus the call's own buffered writes
//! ([`CallState`]) and, if the call succeeds, publishes a new map version that
//! shares every untouched entry with the old one. So an event costs what it
//! touches, readers keep a consistent view while the next event is applied,
//! and a failed call leaves nothing behind.
//!
//! - [`map`]: the immutable map versions (packed for small realms, a
//!   persistent B+tree for large ones).
//! - [`call`]: one call's view, write buffer, limits and gas.
//! - [`limits`]: [`StateLimits`] and the typed [`StateLimitError`].

pub mod call;
pub mod limits;
pub mod map;

use std::sync::Arc;

pub use call::{Access, CallState, ScanPage, WRITE_BATCH_DELETE, WriteBatchError, Written};
pub use limits::{StateLimit, StateLimitError, StateLimits};
pub use map::{Change, StateMap};

/// An immutable, cheaply cloned byte string: a key or a value of a realm's
/// state. Clones share the bytes (a reference-count increment), which is what
/// lets a new version of a map share every untouched entry with the old one.
pub type Bytes = Arc<[u8]>;
