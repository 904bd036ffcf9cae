//! The shared vocabulary: realm ids, events, and which shard a realm lives in.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::message::Inbound;

/// Longest realm id, in bytes.
pub const MAX_REALM_ID_LEN: usize = 256;

/// A validated realm id: UTF-8, 1..=256 bytes, no control characters.
///
/// `/` separates child partitions (`eu-realm-gaming-001/partition-0`); each
/// partition is a realm of its own and hashes to its own shard.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RealmId(Arc<str>);

/// Why a string is not a valid realm id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidRealmId {
    /// The id is empty.
    #[error("realm id is empty")]
    Empty,
    /// The id is longer than [`MAX_REALM_ID_LEN`] bytes.
    #[error("realm id is {0} bytes long; the limit is {MAX_REALM_ID_LEN}")]
    TooLong(usize),
    /// The id contains a control character.
    #[error("realm id contains a control character at byte {0}")]
    ControlCharacter(usize),
    /// A `/`-separated part is empty (leading, trailing or doubled `/`).
    #[error("realm id has an empty partition segment")]
    EmptySegment,
}

impl RealmId {
    /// Validate and wrap an id.
    pub fn new(id: impl AsRef<str>) -> Result<Self, InvalidRealmId> {
        let id = id.as_ref();
        Self::validate(id)?;
        Ok(Self(Arc::from(id)))
    }

    /// Check an id without allocating.
    pub fn validate(id: &str) -> Result<(), InvalidRealmId> {
        if id.is_empty() {
            return Err(InvalidRealmId::Empty);
        }
        if id.len() > MAX_REALM_ID_LEN {
            return Err(InvalidRealmId::TooLong(id.len()));
        }
        if let Some((i, _)) = id.char_indices().find(|(_, c)| c.is_control()) {
            return Err(InvalidRealmId::ControlCharacter(i));
        }
        if id.split('/').any(str::is_empty) {
            return Err(InvalidRealmId::EmptySegment);
        }
        Ok(())
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The shared string.
    pub fn as_arc(&self) -> &Arc<str> {
        &self.0
    }
}

impl TryFrom<String> for RealmId {
    type Error = InvalidRealmId;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl From<RealmId> for String {
    fn from(id: RealmId) -> String {
        id.0.to_string()
    }
}

impl std::str::FromStr for RealmId {
    type Err = InvalidRealmId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl AsRef<str> for RealmId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for RealmId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RealmId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RealmId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

/// The shard a realm belongs to: `FxHash(realm_id) % num_shards`.
///
/// The hash is `rustc_hash::FxHasher` over the id's `str` hash (bytes plus a
/// terminator), which is stable across processes and restarts on every 64-bit
/// platform; a unit test pins known ids to their shards so a dependency update
/// cannot silently move realms. Storage is keyed by realm, never by shard, so
/// changing `num_shards` between restarts moves nothing on disk.
///
/// This is on the store's read path: for a power-of-two shard count (every
/// profile but `auto_scaled` on some machines) the remainder is taken with a
/// mask, which is the same number without a 64-bit division.
///
/// # Panics
/// Never: `num_shards` of 0 is treated as 1.
#[inline]
pub fn shard_of(realm_id: &str, num_shards: usize) -> usize {
    let mut h = rustc_hash::FxHasher::default();
    realm_id.hash(&mut h);
    let hash = h.finish();
    let n = num_shards.max(1) as u64;
    if n.is_power_of_two() {
        (hash & (n - 1)) as usize
    } else {
        (hash % n) as usize
    }
}

/// An event as the caller hands it to the host (seq and time are assigned by
/// the host at append).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewEvent {
    /// Target realm.
    pub realm_id: RealmId,
    /// Realm type (names the plugin); must match the realm's type if it exists.
    pub realm_type: String,
    /// Free-form label.
    pub kind: String,
    /// Plugin-specific encoded body.
    pub payload: Vec<u8>,
    /// The entity that caused the event (feeds the shard monitor).
    pub source: String,
    /// Set when the event crosses over from another realm.
    pub source_realm: Option<RealmId>,
}

/// An event as stored in the log.
///
/// `source_reputation` is recorded because the plugin saw it: replay must hand
/// the plugin exactly what it saw at append, or trust-like state would drift.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    /// Position in the realm's log: 1, 2, 3, ... without gaps.
    pub seq: u64,
    /// Free-form label.
    pub kind: String,
    /// Plugin-specific encoded body.
    pub payload: Vec<u8>,
    /// The entity that caused the event.
    pub source: String,
    /// Set for crossings.
    pub source_realm: Option<String>,
    /// Host wall-clock time at append, ms since the Unix epoch.
    pub timestamp_ms: u64,
    /// Reputation of the source shard that the plugin saw, in `[0, 1]`.
    pub source_reputation: f64,
    /// Set when the event is a message delivered from another realm, or a
    /// reply (see [`crate::message`]). Boxed: most events are neither.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<Box<Inbound>>,
}

impl EventRecord {
    /// Borrow as the SDK's event view (what the plugin receives).
    pub fn as_event_ref(&self) -> realmhost_guest::EventRef<'_> {
        let message = self.message.as_deref();
        realmhost_guest::EventRef {
            seq: self.seq,
            kind: &self.kind,
            payload: &self.payload,
            source: &self.source,
            source_realm: self.source_realm.as_deref(),
            timestamp_ms: self.timestamp_ms,
            source_reputation: self.source_reputation,
            origin: message.map(|m| realmhost_guest::Origin {
                source_realm: m.origin.source_realm.as_str(),
                source_type: &m.origin.source_type,
                message_id: &m.origin.message_id,
                chain_id: &m.origin.chain_id,
                hop: m.origin.hop,
                correlation: m.origin.correlation.as_deref(),
            }),
            reply: message.and_then(|m| {
                let r = m.reply.as_ref()?;
                Some(realmhost_guest::ReplyRef {
                    message_id: &r.message_id,
                    correlation: r.correlation.as_deref(),
                    outcome: r.outcome.as_ref(),
                })
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_validated() {
        assert!(RealmId::new("eu-realm-gaming-001/partition-0").is_ok());
        assert_eq!(RealmId::new(""), Err(InvalidRealmId::Empty));
        assert_eq!(
            RealmId::new("a".repeat(257)),
            Err(InvalidRealmId::TooLong(257))
        );
        assert!(RealmId::new("a".repeat(256)).is_ok());
        assert_eq!(
            RealmId::new("a\nb"),
            Err(InvalidRealmId::ControlCharacter(1))
        );
        assert_eq!(RealmId::new("a//b"), Err(InvalidRealmId::EmptySegment));
        assert_eq!(RealmId::new("/a"), Err(InvalidRealmId::EmptySegment));
        assert!(RealmId::new("ünïcødé-realm").is_ok());
        let id: RealmId = serde_json::from_str("\"ok\"").unwrap();
        assert_eq!(id.as_str(), "ok");
        assert!(serde_json::from_str::<RealmId>("\"\"").is_err());
    }

    /// Pinned: if these change, every deployed node would look for its realms
    /// in the wrong shard after an upgrade.
    #[test]
    fn shard_mapping_is_pinned() {
        let pinned: Vec<(usize, usize)> = [
            "realm-0",
            "eu-realm-gaming-001/partition-0",
            "ledger-42",
            "x",
        ]
        .iter()
        .map(|id| (shard_of(id, 64), shard_of(id, 128)))
        .collect();
        assert_eq!(pinned, PINNED);
    }

    const PINNED: &[(usize, usize)] = &[(22, 22), (16, 16), (59, 59), (14, 14)];

    /// The mask taken for power-of-two counts gives the remainder, for
    /// every count: no realm moves.
    #[test]
    fn shard_of_is_the_fxhash_remainder() {
        for n in [1, 2, 3, 4, 6, 8, 24, 64, 100, 128, 256, 4096] {
            for i in 0..2_000 {
                let id = format!("realm-{i}");
                let mut h = rustc_hash::FxHasher::default();
                id.as_str().hash(&mut h);
                assert_eq!(
                    shard_of(&id, n),
                    (h.finish() % n as u64) as usize,
                    "{id} with {n} shards"
                );
            }
        }
    }

    #[test]
    fn partitions_spread_over_shards() {
        let shards: std::collections::HashSet<_> = (0..64)
            .map(|p| shard_of(&format!("eu-realm-gaming-001/partition-{p}"), 64))
            .collect();
        assert!(
            shards.len() > 30,
            "partitions landed on only {} shards",
            shards.len()
        );
        assert_eq!(shard_of("anything", 0), 0);
    }
}
