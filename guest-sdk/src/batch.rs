//! The packed batch format of `apply-batch`.
//!
//! Replaying a realm means applying hundreds of events in one call. Passed as a
//! WIT `list<record>`, every string and byte list inside every record would be
//! one allocation in the guest while the arguments are lifted; measured, that
//! was half the cost of a replay. So a batch crosses the boundary as **one**
//! byte buffer, and the guest decodes it in place, borrowing every string and
//! payload from the buffer (zero copies, zero allocations).
//!
//! Layout, version 1:
//!
//! ```text
//! +---------+-----------------+----------------------------------------+
//! | 0x01    | count: u32 LE   | count × postcard(EventRef), back to back |
//! +---------+-----------------+----------------------------------------+
//! ```
//!
//! The host encodes with [`BatchEncoder`] and the guest decodes with
//! [`BatchReader`]; both live here so they cannot drift apart.

use serde::{Deserialize, Serialize};

/// Current version of the batch layout (first byte of every batch).
pub const BATCH_FORMAT_VERSION: u8 = 1;

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
        let mut buf = Vec::with_capacity(bytes.max(HEADER_LEN));
        buf.push(BATCH_FORMAT_VERSION);
        buf.extend_from_slice(&[0; 4]);
        Self { buf, count: 0 }
    }

    /// Append one event.
    pub fn push(&mut self, event: &EventRef<'_>) {
        let buf = core::mem::take(&mut self.buf);
        // Writing into a Vec only fails on allocation failure, which aborts anyway.
        self.buf = match postcard::to_extend(event, buf) {
            Ok(buf) => buf,
            Err(_) => unreachable!("postcard cannot fail writing to a Vec"),
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
}

impl<'a> BatchReader<'a> {
    /// Check the header and prepare to iterate.
    pub fn new(bytes: &'a [u8]) -> Result<Self, BatchFormatError> {
        let (header, rest) = bytes
            .split_at_checked(HEADER_LEN)
            .ok_or(BatchFormatError::Truncated)?;
        if header[0] != BATCH_FORMAT_VERSION {
            return Err(BatchFormatError::UnknownVersion(header[0]));
        }
        let count = u32::from_le_bytes([header[1], header[2], header[3], header[4]]);
        Ok(Self {
            rest,
            remaining: count,
            index: 0,
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
        match postcard::take_from_bytes::<EventRef<'a>>(self.rest) {
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
        let mut r = BatchReader::new(&[1, 1, 0, 0, 0]).unwrap();
        assert_eq!(r.next(), Some(Err(BatchFormatError::BadEvent { index: 0 })));
        assert_eq!(r.next(), None);
        // Claims zero events, holds a byte.
        let mut r = BatchReader::new(&[1, 0, 0, 0, 0, 7]).unwrap();
        assert_eq!(r.next(), Some(Err(BatchFormatError::TrailingBytes)));
    }
}
