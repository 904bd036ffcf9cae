//! Event payloads on the wire: how they are encoded, decoded and versioned.
//!
//! A payload is the postcard encoding of the realm type's [`Realm::Event`].
//! Postcard is **positional**: an enum variant is stored as its index and a
//! struct as its fields in order, with no names. Stored events are decoded
//! again on every replay, by every later version of the plugin, so:
//!
//! - add new enum variants **at the end**; never reorder, remove or change
//!   the fields of an existing variant, and never change a field's type;
//! - to change an event's shape anyway, version the event type: raise
//!   [`Realm::EVENT_VERSION`] and decode the older payloads in
//!   [`Realm::upgrade_event`] (keep the old types for that).
//!
//! With `EVENT_VERSION` 0 (the default) a payload is plain postcard, as it
//! always was. From version 1 on, [`encode`] writes [`VERSION_TAG`], the
//! version as a postcard varint, then the postcard body; [`decode`] reads a
//! tagged payload of the current version directly, hands a tagged payload of
//! an older version — and an untagged one, which is version 0 — to
//! `upgrade_event`, and refuses one from a newer version. (An untagged
//! version-0 payload starting with the tag bytes would be an enum variant
//! index of 16 255 or more: no real event type has that many variants.)
//!
//! A mistake here surfaces before it hurts: the host's shadow replay decodes
//! every stored event of a realm type through a new version before it is
//! swapped in.

use crate::Realm;

/// First bytes of a versioned payload.
pub const VERSION_TAG: [u8; 2] = [0xFF, 0xFE];

/// Encode `event` as `P` writes payloads (with the version tag once
/// `P::EVENT_VERSION` is 1 or more). Use this, not [`crate::encode_payload`],
/// for realm types with versioned events.
pub fn encode<P: Realm + ?Sized>(event: &P::Event) -> Vec<u8> {
    let body = crate::encode_payload(event);
    if P::EVENT_VERSION == 0 {
        return body;
    }
    let mut out = VERSION_TAG.to_vec();
    let mut buf = [0u8; 5];
    // A u32 varint is at most 5 bytes; the buffer always fits.
    if let Ok(v) = postcard::to_slice(&P::EVENT_VERSION, &mut buf) {
        out.extend_from_slice(v);
    }
    out.extend_from_slice(&body);
    out
}

/// Decode a stored payload of `P` (see the module docs).
pub fn decode<P: Realm + ?Sized>(payload: &[u8]) -> Result<P::Event, String> {
    let (version, body) = match payload.strip_prefix(&VERSION_TAG[..]) {
        Some(rest) => {
            let (v, body) = postcard::take_from_bytes::<u32>(rest)
                .map_err(|e| format!("unreadable event version: {e}"))?;
            (v, body)
        }
        None => (0, payload),
    };
    match version.cmp(&P::EVENT_VERSION) {
        core::cmp::Ordering::Equal => postcard::from_bytes(body).map_err(|e| e.to_string()),
        core::cmp::Ordering::Less => P::upgrade_event(version, body),
        core::cmp::Ordering::Greater => Err(format!(
            "the event was written with event version {version}, newer than {} {}'s event version {}",
            P::REALM_TYPE,
            P::VERSION,
            P::EVENT_VERSION
        )),
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use super::*;
    use crate::{ApplyError, Event};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum V0 {
        Add(u32),
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum V1 {
        Add { amount: u64, memo: String },
    }

    struct Old;
    struct New;

    impl Realm for Old {
        const REALM_TYPE: &'static str = "t";
        const VERSION: &'static str = "1.0.0";
        const DESCRIPTION: &'static str = "";
        type Event = V0;
        fn apply(_: Event<'_, V0>) -> Result<(), ApplyError> {
            Ok(())
        }
        fn query(_: &str) -> Result<String, String> {
            Ok(String::new())
        }
    }

    impl Realm for New {
        const REALM_TYPE: &'static str = "t";
        const VERSION: &'static str = "2.0.0";
        const DESCRIPTION: &'static str = "";
        const EVENT_VERSION: u32 = 1;
        type Event = V1;
        fn upgrade_event(from: u32, payload: &[u8]) -> Result<V1, String> {
            match from {
                0 => match postcard::from_bytes::<V0>(payload).map_err(|e| e.to_string())? {
                    V0::Add(n) => Ok(V1::Add {
                        amount: n.into(),
                        memo: String::new(),
                    }),
                },
                v => Err(format!("unknown event version {v}")),
            }
        }
        fn apply(_: Event<'_, V1>) -> Result<(), ApplyError> {
            Ok(())
        }
        fn query(_: &str) -> Result<String, String> {
            Ok(String::new())
        }
    }

    #[test]
    fn unversioned_payloads_stay_plain_postcard() {
        let bytes = encode::<Old>(&V0::Add(7));
        assert_eq!(bytes, crate::encode_payload(&V0::Add(7)));
        assert_eq!(decode::<Old>(&bytes), Ok(V0::Add(7)));
    }

    #[test]
    fn old_payloads_are_upgraded_and_new_ones_read_directly() {
        let old = encode::<Old>(&V0::Add(7));
        let upgraded = decode::<New>(&old).unwrap();
        assert_eq!(
            upgraded,
            V1::Add {
                amount: 7,
                memo: String::new()
            }
        );
        let new = encode::<New>(&V1::Add {
            amount: 9,
            memo: "m".into(),
        });
        assert_eq!(&new[..2], &VERSION_TAG);
        assert_eq!(
            decode::<New>(&new).unwrap(),
            V1::Add {
                amount: 9,
                memo: "m".into()
            }
        );
        // An older plugin refuses a newer payload instead of misreading it.
        let err = decode::<Old>(&new).unwrap_err();
        assert!(err.contains("newer"), "{err}");
    }
}
