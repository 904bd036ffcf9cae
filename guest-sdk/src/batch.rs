//! The packed batch format of `apply-batch`.
//!
//! Replaying a realm means applying hundreds of events in one call. Passed as a
//! WIT `list<record>`, every string and byte list inside every record would be
//! one allocation in the guest while the arguments are lifted; measured, that
//! was half the cost of a replay. So a batch crosses the boundary as **one**
//! byte buffer, and the guest decodes it in place, borrowing every string and
//! payload from the buffer (zero copies, zero allocations).
//!
//! Layout, version 2 (contract 0.3):
//!
//! ```text
//! +---------+-----------------+----------------------------------------+
//! | 0x02    | count: u32 LE   | count × postcard(EventRef), back to back |
//! +---------+-----------------+----------------------------------------+
//! ```
//!
//! Version 1 (contract 0.2) is the same without an event's `origin` and
//! `reply`; the host sends it to 0.2 components, and [`BatchReader`] reads
//! both.
//!
//! The host encodes with [`BatchEncoder`] and the guest decodes with
//! [`BatchReader`]; both live here so they cannot drift apart.

use serde::{Deserialize, Serialize};

/// Current version of the batch layout (first byte of every batch).
pub const BATCH_FORMAT_VERSION: u8 = 2;

/// The layout of contract 0.2: events without `origin` and `reply`.
pub const BATCH_FORMAT_V1: u8 = 1;

const HEADER_LEN: usize = 5;

/// One event with borrowed fields: the unit of the batch format and the
/// argument of [`crate::entry::apply`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRef<'a> {
    /// Position in the realm's log.
    pub seq: u64,
    /// Label chosen by the appender.
    #[serde(borrow)]
    pub kind: &'a str,
    /// Encoded payload.
    #[serde(borrow)]
    pub payload: &'a [u8],
    /// The entity that caused the event.
    #[serde(borrow)]
    pub source: &'a str,
    /// Set for crossings from another realm.
    #[serde(borrow)]
    pub source_realm: Option<&'a str>,
    /// Host time at append, ms since the Unix epoch.
    pub timestamp_ms: u64,
    /// Reputation of the source's shard, in `[0, 1]`.
    pub source_reputation: f64,
    /// Set when the event is a delivered message: where it came from.
    #[serde(borrow)]
    pub origin: Option<Origin<'a>>,
    /// Set when the event is the reply to a message this realm sent.
    #[serde(borrow)]
    pub reply: Option<ReplyRef<'a>>,
}

/// Where a delivered message came from (the WIT `message-origin`); every
/// field is set by the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin<'a> {
    /// The sending realm.
    #[serde(borrow)]
    pub source_realm: &'a str,
    /// The sending realm's type.
    #[serde(borrow)]
    pub source_type: &'a str,
    /// The message's id, `<sender realm>@<seq>.<index>`.
    #[serde(borrow)]
    pub message_id: &'a str,
    /// The id of the first message of the chain.
    #[serde(borrow)]
    pub chain_id: &'a str,
    /// Messages on the way, this one included (1 for a message sent by an
    /// event a client appended).
    pub hop: u32,
    /// The correlation id the sender attached.
    #[serde(borrow)]
    pub correlation: Option<&'a str>,
}

/// How a message's delivery ended (the WIT `outcome`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome<'a> {
    /// The message is an event in the target's log.
    Accepted,
    /// The target refused it.
    Rejected {
        /// Stable reason.
        #[serde(borrow)]
        code: &'a str,
        /// Explanation.
        #[serde(borrow)]
        message: &'a str,
    },
    /// The target could not understand it.
    Invalid(#[serde(borrow)] &'a str),
    /// Its time-to-live passed before delivery.
    Expired,
    /// It could not be delivered: why.
    DeadLettered(#[serde(borrow)] &'a str),
}

impl Outcome<'_> {
    /// Whether the message was accepted.
    pub fn is_accepted(&self) -> bool {
        matches!(self, Self::Accepted)
    }
}

/// Which message a reply answers and how its delivery ended (the WIT
/// `reply-context`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyRef<'a> {
    /// The id of the message answered.
    #[serde(borrow)]
    pub message_id: &'a str,
    /// The correlation id the message carried.
    #[serde(borrow)]
    pub correlation: Option<&'a str>,
    /// The outcome.
    #[serde(borrow)]
    pub outcome: Outcome<'a>,
}

/// An event in batch layout 1: the fields before `origin`.
#[derive(Serialize, Deserialize)]
struct EventV1<'a> {
    seq: u64,
    #[serde(borrow)]
    kind: &'a str,
    #[serde(borrow)]
    payload: &'a [u8],
    #[serde(borrow)]
    source: &'a str,
    #[serde(borrow)]
    source_realm: Option<&'a str>,
    timestamp_ms: u64,
    source_reputation: f64,
}

impl<'a> From<EventV1<'a>> for EventRef<'a> {
    fn from(e: EventV1<'a>) -> Self {
        Self {
            seq: e.seq,
            kind: e.kind,
            payload: e.payload,
            source: e.source,
            source_realm: e.source_realm,
            timestamp_ms: e.timestamp_ms,
            source_reputation: e.source_reputation,
            origin: None,
            reply: None,
        }
    }
}

impl<'a> EventRef<'a> {
    /// An event with no source realm, timestamp 0 and full reputation:
    /// convenient in tests.
    pub fn new(seq: u64, kind: &'a str, payload: &'a [u8], source: &'a str) -> Self {
        Self {
            seq,
            kind,
            payload,
            source,
            source_realm: None,
            timestamp_ms: 0,
            source_reputation: 1.0,
            origin: None,
            reply: None,
        }
    }
}

/// Why a batch buffer could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchFormatError {
    /// Shorter than the header.
    Truncated,
    /// First byte is not a known layout version.
    UnknownVersion(u8),
    /// Event `index` could not be decoded.
    BadEvent {
        /// Position of the undecodable event.
        index: u32,
    },
    /// Bytes remain after the last event.
    TrailingBytes,
}

impl core::fmt::Display for BatchFormatError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Truncated => write!(f, "batch buffer is shorter than its header"),
            Self::UnknownVersion(v) => write!(f, "unknown batch format version {v}"),
            Self::BadEvent { index } => write!(f, "event {index} of the batch is malformed"),
            Self::TrailingBytes => write!(f, "bytes remain after the last event of the batch"),
        }
    }
}

impl std::error::Error for BatchFormatError {}

/// Builds a batch buffer, one event at a time.
#[derive(Debug, Clone)]
pub struct BatchEncoder {
    buf: Vec<u8>,
    count: u32,
}

fn extend<T: Serialize>(buf: Vec<u8>, value: &T) -> Vec<u8> {
    // Writing into a Vec only fails on allocation failure, which aborts anyway.
    match postcard::to_extend(value, buf) {
        Ok(buf) => buf,
        Err(_) => unreachable!("postcard cannot fail writing to a Vec"),
    }
}

impl Default for BatchEncoder {
    fn default() -> Self {
        Self::new()
    }
}

impl BatchEncoder {
    /// An empty batch.
    pub fn new() -> Self {
        Self::with_capacity(256)
    }

    /// An empty batch with room for `bytes` bytes.
    pub fn with_capacity(bytes: usize) -> Self {
        Self::with_version(BATCH_FORMAT_VERSION, bytes)
    }

    /// An empty batch in layout `version` ([`BATCH_FORMAT_VERSION`], or
    /// [`BATCH_FORMAT_V1`] for a contract 0.2 component, which drops every
    /// event's `origin` and `reply`), with room for `bytes` bytes.
    ///
    /// # Panics
    /// On an unknown version: that is a bug in the caller.
    pub fn with_version(version: u8, bytes: usize) -> Self {
        assert!(
            version == BATCH_FORMAT_VERSION || version == BATCH_FORMAT_V1,
            "unknown batch format version {version}"
        );
        let mut buf = Vec::with_capacity(bytes.max(HEADER_LEN));
        buf.push(version);
        buf.extend_from_slice(&[0; 4]);
        Self { buf, count: 0 }
    }

    /// Append one event.
    pub fn push(&mut self, event: &EventRef<'_>) {
        let buf = core::mem::take(&mut self.buf);
        self.buf = if buf[0] == BATCH_FORMAT_V1 {
            extend(
                buf,
                &EventV1 {
                    seq: event.seq,
                    kind: event.kind,
                    payload: event.payload,
                    source: event.source,
                    source_realm: event.source_realm,
                    timestamp_ms: event.timestamp_ms,
                    source_reputation: event.source_reputation,
                },
            )
        } else {
            extend(buf, event)
        };
        self.count += 1;
    }

    /// Number of events pushed so far.
    pub fn len(&self) -> u32 {
        self.count
    }

    /// True when no event was pushed.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Finish the batch and return its bytes.
    pub fn finish(mut self) -> Vec<u8> {
        self.buf[1..HEADER_LEN].copy_from_slice(&self.count.to_le_bytes());
        self.buf
    }

    /// Start over, keeping the allocation.
    pub fn clear(&mut self) {
        self.buf.truncate(HEADER_LEN);
        self.count = 0;
    }

    /// The finished bytes without consuming the encoder.
    pub fn as_bytes(&mut self) -> &[u8] {
        self.buf[1..HEADER_LEN].copy_from_slice(&self.count.to_le_bytes());
        &self.buf
    }
}

/// Reads a batch buffer in place; iterate it to get the events.
#[derive(Debug, Clone)]
pub struct BatchReader<'a> {
    rest: &'a [u8],
    remaining: u32,
    index: u32,
    version: u8,
}

impl<'a> BatchReader<'a> {
    /// Check the header and prepare to iterate.
    pub fn new(bytes: &'a [u8]) -> Result<Self, BatchFormatError> {
        let (header, rest) = bytes
            .split_at_checked(HEADER_LEN)
            .ok_or(BatchFormatError::Truncated)?;
        let version = header[0];
        if version != BATCH_FORMAT_VERSION && version != BATCH_FORMAT_V1 {
            return Err(BatchFormatError::UnknownVersion(version));
        }
        let count = u32::from_le_bytes([header[1], header[2], header[3], header[4]]);
        Ok(Self {
            rest,
            remaining: count,
            index: 0,
            version,
        })
    }

    /// Number of events not yet read.
    pub fn remaining(&self) -> u32 {
        self.remaining
    }
}

impl<'a> Iterator for BatchReader<'a> {
    type Item = Result<EventRef<'a>, BatchFormatError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            if self.rest.is_empty() {
                return None;
            }
            self.rest = &[];
            return Some(Err(BatchFormatError::TrailingBytes));
        }
        let index = self.index;
        let decoded = if self.version == BATCH_FORMAT_V1 {
            postcard::take_from_bytes::<EventV1<'a>>(self.rest).map(|(e, r)| (e.into(), r))
        } else {
            postcard::take_from_bytes::<EventRef<'a>>(self.rest)
        };
        match decoded {
            Ok((event, rest)) => {
                self.rest = rest;
                self.remaining -= 1;
                self.index += 1;
                Some(Ok(event))
            }
            Err(_) => {
                self.remaining = 0;
                self.rest = &[];
                Some(Err(BatchFormatError::BadEvent { index }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_event() -> impl Strategy<Value = (u64, String, Vec<u8>, String, Option<String>, u64, f64)>
    {
        (
            any::<u64>(),
            ".{0,16}",
            proptest::collection::vec(any::<u8>(), 0..64),
            ".{0,16}",
            proptest::option::of(".{0,16}"),
            any::<u64>(),
            0.0f64..=1.0,
        )
    }

    proptest! {
        #[test]
        fn roundtrip(events in proptest::collection::vec(arb_event(), 0..40)) {
            let mut enc = BatchEncoder::new();
            for (seq, kind, payload, source, realm, ts, rep) in &events {
                enc.push(&EventRef {
                    seq: *seq, kind, payload, source,
                    source_realm: realm.as_deref(), timestamp_ms: *ts, source_reputation: *rep,
                    origin: None, reply: None,
                });
            }
            let bytes = enc.finish();
            let decoded: Vec<_> = BatchReader::new(&bytes).unwrap().collect::<Result<_, _>>().unwrap();
            prop_assert_eq!(decoded.len(), events.len());
            for (d, (seq, kind, payload, source, realm, ts, rep)) in decoded.iter().zip(&events) {
                prop_assert_eq!(d.seq, *seq);
                prop_assert_eq!(d.kind, kind.as_str());
                prop_assert_eq!(d.payload, payload.as_slice());
                prop_assert_eq!(d.source, source.as_str());
                prop_assert_eq!(d.source_realm, realm.as_deref());
                prop_assert_eq!(d.timestamp_ms, *ts);
                prop_assert_eq!(d.source_reputation.to_bits(), rep.to_bits());
            }
        }

        /// Arbitrary bytes never panic the reader: they decode or fail cleanly.
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let Ok(reader) = BatchReader::new(&bytes) {
                for item in reader.take(10_000) {
                    let _ = item;
                }
            }
        }
    }

    /// Both layouts carry the 0.2 fields; only version 2 carries a
    /// message's origin and reply.
    #[test]
    fn both_layouts_round_trip() {
        let origin = Origin {
            source_realm: "bank-a",
            source_type: "ledger",
            message_id: "bank-a@7.0",
            chain_id: "bank-a@7.0",
            hop: 1,
            correlation: Some("t-1"),
        };
        let reply = ReplyRef {
            message_id: "bank-b@3.1",
            correlation: None,
            outcome: Outcome::Rejected {
                code: "overdraft",
                message: "no",
            },
        };
        let event = EventRef {
            source_realm: Some("bank-a"),
            origin: Some(origin),
            reply: Some(reply),
            ..EventRef::new(8, "credit", b"x", "bank-a")
        };
        for version in [BATCH_FORMAT_V1, BATCH_FORMAT_VERSION] {
            let mut enc = BatchEncoder::with_version(version, 64);
            enc.push(&event);
            enc.push(&EventRef::new(9, "plain", b"", "c"));
            let bytes = enc.finish();
            assert_eq!(bytes[0], version);
            let got: Vec<_> = BatchReader::new(&bytes)
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            let want = if version == BATCH_FORMAT_V1 {
                EventRef {
                    origin: None,
                    reply: None,
                    ..event.clone()
                }
            } else {
                event.clone()
            };
            assert_eq!(got, vec![want, EventRef::new(9, "plain", b"", "c")]);
        }
    }

    #[test]
    fn header_errors() {
        assert_eq!(
            BatchReader::new(&[1, 0]).unwrap_err(),
            BatchFormatError::Truncated
        );
        assert_eq!(
            BatchReader::new(&[9, 0, 0, 0, 0]).unwrap_err(),
            BatchFormatError::UnknownVersion(9)
        );
        // Claims one event, holds none.
        let mut r = BatchReader::new(&[2, 1, 0, 0, 0]).unwrap();
        assert_eq!(r.next(), Some(Err(BatchFormatError::BadEvent { index: 0 })));
        assert_eq!(r.next(), None);
        // Claims zero events, holds a byte.
        let mut r = BatchReader::new(&[2, 0, 0, 0, 0, 7]).unwrap();
        assert_eq!(r.next(), Some(Err(BatchFormatError::TrailingBytes)));
    }
}
