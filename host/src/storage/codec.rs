//! Byte encodings of the stored records. Every decoder returns
//! [`StorageError::Corrupt`] on bad input instead of panicking: the bytes come
//! from disk.

use serde::{Deserialize, Serialize};

use super::StorageError;
use crate::realm::EventRecord;
use crate::runtime::PluginVersion;
use crate::state::Bytes;

/// A realm's row in the `realms` table: what does not change with every
/// append. The last seq and the plugin version of the last append are derived
/// from `log_index` and the unindexed tail, so an append never rewrites this
/// row (a random-order B-tree update per event is what limited throughput).
///
/// `no` is a dense number assigned at creation; the log index and snapshots
/// are keyed by it rather than by the id string, so index keys are a fixed
/// 16 bytes and compare as integers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RealmRow {
    pub no: u64,
    pub realm_type: String,
    pub last_snapshot_seq: u64,
}

pub(crate) fn encode_realm(row: &RealmRow) -> Result<Vec<u8>, StorageError> {
    postcard::to_allocvec(row)
        .map_err(|e| StorageError::Backend(format!("encoding realm row: {e}")))
}

pub(crate) fn decode_realm(bytes: &[u8]) -> Result<RealmRow, StorageError> {
    postcard::from_bytes(bytes).map_err(|e| StorageError::Corrupt(format!("realm row: {e}")))
}

/// Length of the fixed header of a log entry: realm number (u64 LE) and
/// plugin version number (u32 LE).
pub(crate) const ENTRY_HEADER: usize = 12;

/// The stored form of an event's fields before `message`: the layout of
/// every entry written before messages existed. An entry is this, followed
/// (for a delivered message or a reply only) by `postcard(Inbound)`; an
/// entry without the tail is an event without a message, so older logs read
/// unchanged.
#[derive(Serialize)]
struct StoredEvent<'a> {
    seq: u64,
    kind: &'a str,
    payload: &'a [u8],
    source: &'a str,
    source_realm: Option<&'a str>,
    timestamp_ms: u64,
    source_reputation: f64,
}

/// [`StoredEvent`], owned, for decoding.
#[derive(Deserialize)]
struct StoredEventOwned {
    seq: u64,
    kind: String,
    payload: Vec<u8>,
    source: String,
    source_realm: Option<String>,
    timestamp_ms: u64,
    source_reputation: f64,
}

/// Encode an event as a log entry with a zeroed header, which the committer
/// fills in with [`set_entry_header`] once it knows the realm's number.
/// Encoding runs on the caller's thread, not on the single committer.
pub(crate) fn encode_entry(event: &EventRecord) -> Result<Vec<u8>, StorageError> {
    let mut buf = Vec::with_capacity(ENTRY_HEADER + 48 + event.payload.len());
    buf.resize(ENTRY_HEADER, 0);
    let unencodable =
        |e: postcard::Error| StorageError::InvalidRequest(format!("unencodable event: {e}"));
    let buf = postcard::to_extend(
        &StoredEvent {
            seq: event.seq,
            kind: &event.kind,
            payload: &event.payload,
            source: &event.source,
            source_realm: event.source_realm.as_deref(),
            timestamp_ms: event.timestamp_ms,
            source_reputation: event.source_reputation,
        },
        buf,
    )
    .map_err(unencodable)?;
    match &event.message {
        None => Ok(buf),
        Some(m) => postcard::to_extend(&**m, buf).map_err(unencodable),
    }
}

/// Fill in the header of an entry made by [`encode_entry`].
pub(crate) fn set_entry_header(entry: &mut [u8], realm_no: u64, version_no: u32) {
    entry[..8].copy_from_slice(&realm_no.to_le_bytes());
    entry[8..ENTRY_HEADER].copy_from_slice(&version_no.to_le_bytes());
}

/// A log entry: the owning realm's number, the number of the plugin version
/// that applied it, and the event. The realm number makes every entry
/// self-describing, so reads check the index against the log and a restart
/// rebuilds the unindexed tail from the log alone.
pub(crate) struct Entry {
    pub realm_no: u64,
    pub version_no: u32,
    pub event: EventRecord,
}

pub(crate) fn decode_entry(bytes: &[u8]) -> Result<Entry, StorageError> {
    if bytes.len() < ENTRY_HEADER {
        return Err(StorageError::Corrupt(format!(
            "log entry of {} bytes",
            bytes.len()
        )));
    }
    let (head, body) = bytes.split_at(ENTRY_HEADER);
    let mut no = [0u8; 8];
    no.copy_from_slice(&head[..8]);
    let mut version = [0u8; 4];
    version.copy_from_slice(&head[8..]);
    let corrupt = |e: postcard::Error| StorageError::Corrupt(format!("log entry: {e}"));
    let (e, tail) = postcard::take_from_bytes::<StoredEventOwned>(body).map_err(corrupt)?;
    let message = if tail.is_empty() {
        None
    } else {
        Some(Box::new(postcard::from_bytes(tail).map_err(corrupt)?))
    };
    let event = EventRecord {
        seq: e.seq,
        kind: e.kind,
        payload: e.payload,
        source: e.source,
        source_realm: e.source_realm,
        timestamp_ms: e.timestamp_ms,
        source_reputation: e.source_reputation,
        message,
    };
    Ok(Entry {
        realm_no: u64::from_le_bytes(no),
        version_no: u32::from_le_bytes(version),
        event,
    })
}

/// Head of a `log_index` run, decodable without the positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RunHead {
    /// Events in the run: seqs `first_seq .. first_seq + count`.
    pub count: u64,
    /// Plugin version number of the run's last event.
    pub version_no: u32,
}

/// A `log_index` value: the head, then the log positions of the run's events
/// as varint deltas (the first delta is the first position). Positions only
/// grow, so a run of a realm that appended once per group commit costs one or
/// two bytes per event.
pub(crate) fn encode_run(version_no: u32, positions: &[u64]) -> Result<Vec<u8>, StorageError> {
    let head = RunHead {
        count: positions.len() as u64,
        version_no,
    };
    let mut prev = 0u64;
    let deltas: Vec<u64> = positions
        .iter()
        .map(|&p| {
            let d = p - prev;
            prev = p;
            d
        })
        .collect();
    let encoding = |e: postcard::Error| StorageError::Backend(format!("encoding index run: {e}"));
    let buf = postcard::to_allocvec(&head).map_err(encoding)?;
    postcard::to_extend(&deltas, buf).map_err(encoding)
}

/// Decode only the head of a run.
pub(crate) fn decode_run_head(bytes: &[u8]) -> Result<RunHead, StorageError> {
    let (head, _) = postcard::take_from_bytes::<RunHead>(bytes)
        .map_err(|e| StorageError::Corrupt(format!("index run: {e}")))?;
    if head.count == 0 {
        return Err(StorageError::Corrupt("empty index run".into()));
    }
    Ok(head)
}

/// Decode a run: its head and the log positions of its events, checked to be
/// strictly increasing and as many as the head says.
pub(crate) fn decode_run(bytes: &[u8]) -> Result<(RunHead, Vec<u64>), StorageError> {
    let corrupt = |what: &str| StorageError::Corrupt(format!("index run: {what}"));
    let (head, rest) = postcard::take_from_bytes::<RunHead>(bytes)
        .map_err(|e| StorageError::Corrupt(format!("index run: {e}")))?;
    let deltas: Vec<u64> =
        postcard::from_bytes(rest).map_err(|e| StorageError::Corrupt(format!("index run: {e}")))?;
    if deltas.is_empty() || deltas.len() as u64 != head.count {
        return Err(corrupt("count does not match its positions"));
    }
    let mut pos = 0u64;
    let mut out = Vec::with_capacity(deltas.len());
    for d in deltas {
        if d == 0 {
            return Err(corrupt("positions do not increase"));
        }
        pos = pos
            .checked_add(d)
            .ok_or_else(|| corrupt("position overflow"))?;
        out.push(pos);
    }
    Ok((head, out))
}

/// Length of the fixed part of a snapshot header: layout tag (1), seq (8),
/// plugin version (32), state version (4), entry count (8), entry bytes (8).
pub(crate) const SNAPSHOT_HEAD: usize = 1 + 8 + 32 + 4 + 8 + 8;

/// Layout tag: the entries are rows of `snapshot_entries`.
const LAYOUT_ROWS: u8 = 1;
/// Layout tag: the entries follow the fixed header, packed.
const LAYOUT_INLINE: u8 = 2;

/// A snapshot's header: the `snapshots` table's value without the inline
/// entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SnapshotHead {
    pub seq: u64,
    pub plugin_version: PluginVersion,
    pub state_version: u32,
    /// Entries in the map.
    pub count: u64,
    /// Key plus value bytes of every entry.
    pub bytes: u64,
}

/// A decoded `snapshots` value: the head, and the entries when they are
/// stored inline (`None`: they are rows of `snapshot_entries`).
pub(crate) type DecodedSnapshot = (SnapshotHead, Option<Vec<(Bytes, Bytes)>>);

fn put_head(out: &mut Vec<u8>, layout: u8, head: &SnapshotHead) {
    out.push(layout);
    out.extend_from_slice(&head.seq.to_le_bytes());
    out.extend_from_slice(&head.plugin_version.0);
    out.extend_from_slice(&head.state_version.to_le_bytes());
    out.extend_from_slice(&head.count.to_le_bytes());
    out.extend_from_slice(&head.bytes.to_le_bytes());
}

/// The header of a snapshot whose entries are rows of `snapshot_entries`.
pub(crate) fn encode_snapshot_rows(head: &SnapshotHead) -> Vec<u8> {
    let mut out = Vec::with_capacity(SNAPSHOT_HEAD);
    put_head(&mut out, LAYOUT_ROWS, head);
    out
}

/// The header of a snapshot stored inline, with its entries packed after it
/// (`varint key length ‖ key ‖ varint value length ‖ value`, ascending keys).
/// `head.count` and `head.bytes` are ignored: they are computed from
/// `entries`, so the header always agrees with what it holds.
pub(crate) fn encode_snapshot_inline<'a>(
    head: &SnapshotHead,
    entries: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(SNAPSHOT_HEAD + 256);
    put_head(&mut out, LAYOUT_INLINE, head);
    let (mut count, mut bytes) = (0u64, 0u64);
    for (k, v) in entries {
        put_varint(&mut out, k.len() as u64);
        out.extend_from_slice(k);
        put_varint(&mut out, v.len() as u64);
        out.extend_from_slice(v);
        count += 1;
        bytes += (k.len() + v.len()) as u64;
    }
    out[SNAPSHOT_HEAD - 16..SNAPSHOT_HEAD - 8].copy_from_slice(&count.to_le_bytes());
    out[SNAPSHOT_HEAD - 8..SNAPSHOT_HEAD].copy_from_slice(&bytes.to_le_bytes());
    out
}

/// Decode a `snapshots` value. Inline entries are checked against the head:
/// as many as it counts, as many bytes as it says, keys strictly ascending,
/// nothing left over.
pub(crate) fn decode_snapshot(bytes: &[u8]) -> Result<DecodedSnapshot, StorageError> {
    let corrupt = |what: &str| StorageError::Corrupt(format!("snapshot header: {what}"));
    let mut r = Reader(bytes);
    let layout = r.take(1).ok_or_else(|| corrupt("empty"))?[0];
    let fixed = r
        .take(SNAPSHOT_HEAD - 1)
        .ok_or_else(|| corrupt(&format!("{} bytes", bytes.len())))?;
    let u64_at = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&fixed[at..at + 8]);
        u64::from_le_bytes(b)
    };
    let mut version = [0u8; 32];
    version.copy_from_slice(&fixed[8..40]);
    let mut state_version = [0u8; 4];
    state_version.copy_from_slice(&fixed[40..44]);
    let head = SnapshotHead {
        seq: u64_at(0),
        plugin_version: PluginVersion(version),
        state_version: u32::from_le_bytes(state_version),
        count: u64_at(44),
        bytes: u64_at(52),
    };
    match layout {
        LAYOUT_ROWS if r.0.is_empty() => Ok((head, None)),
        LAYOUT_ROWS => Err(corrupt("trailing bytes after a row header")),
        LAYOUT_INLINE => {
            // Every entry takes at least two bytes, which bounds the
            // allocation whatever the stored count says.
            let mut entries: Vec<(Bytes, Bytes)> =
                Vec::with_capacity((head.count as usize).min(r.0.len() / 2));
            let mut total = 0u64;
            while !r.0.is_empty() {
                let k = r.slice().ok_or_else(|| corrupt("truncated key"))?;
                let v = r.slice().ok_or_else(|| corrupt("truncated value"))?;
                if entries.last().is_some_and(|(prev, _)| **prev >= *k) {
                    return Err(corrupt("keys out of order"));
                }
                total += (k.len() + v.len()) as u64;
                entries.push((Bytes::from(k), Bytes::from(v)));
            }
            if entries.len() as u64 != head.count || total != head.bytes {
                return Err(corrupt(&format!(
                    "holds {} entries of {total} bytes, its head says {} of {}",
                    entries.len(),
                    head.count,
                    head.bytes
                )));
            }
            Ok((head, Some(entries)))
        }
        other => Err(corrupt(&format!("unknown layout {other}"))),
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A checked cursor over stored bytes: every read returns `None` past the
/// end instead of panicking.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.0.len() {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.take(1)?[0];
            v |= u64::from(b & 0x7f).checked_shl(shift)?;
            if b & 0x80 == 0 {
                // Reject bits shifted out of a u64 (the tenth byte may only
                // carry one bit).
                return (shift < 63 || b <= 1).then_some(v);
            }
        }
        None
    }

    /// A length-prefixed byte string.
    fn slice(&mut self) -> Option<&'a [u8]> {
        let len = usize::try_from(self.varint()?).ok()?;
        self.take(len)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn runs_round_trip(version_no in any::<u32>(), gaps in proptest::collection::vec(1..1u64 << 40, 1..300)) {
            let mut pos = 0u64;
            let positions: Vec<u64> = gaps.iter().map(|g| { pos += g; pos }).collect();
            let bytes = encode_run(version_no, &positions).unwrap();
            let (head, back) = decode_run(&bytes).unwrap();
            prop_assert_eq!(head, RunHead { count: positions.len() as u64, version_no });
            prop_assert_eq!(decode_run_head(&bytes).unwrap(), head);
            prop_assert_eq!(back, positions);
        }

        #[test]
        fn damaged_runs_are_errors_not_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_run(&bytes);
            let _ = decode_run_head(&bytes);
            let _ = decode_entry(&bytes);
        }

        #[test]
        fn snapshot_headers_round_trip(
            head in snapshot_head(),
            map in proptest::collection::btree_map(
                proptest::collection::vec(any::<u8>(), 0..20),
                proptest::collection::vec(any::<u8>(), 0..300),
                0..24,
            ),
        ) {
            let rows = encode_snapshot_rows(&head);
            prop_assert_eq!(rows.len(), SNAPSHOT_HEAD);
            prop_assert_eq!(decode_snapshot(&rows).unwrap(), (head, None));

            let bytes = encode_snapshot_inline(&head, map.iter().map(|(k, v)| (k.as_slice(), v.as_slice())));
            let (back, entries) = decode_snapshot(&bytes).unwrap();
            let entries = entries.unwrap();
            let want: Vec<(Bytes, Bytes)> = map.iter().map(|(k, v)| (Bytes::from(k.as_slice()), Bytes::from(v.as_slice()))).collect();
            prop_assert_eq!(&entries, &want);
            prop_assert_eq!(back, SnapshotHead {
                count: map.len() as u64,
                bytes: map.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum(),
                ..head
            });
        }

        #[test]
        fn damaged_snapshot_headers_are_errors_not_panics(
            bytes in proptest::collection::vec(any::<u8>(), 0..200),
            layout in 0..4u8,
        ) {
            let _ = decode_snapshot(&bytes);
            // Mostly valid-looking heads with garbage after them.
            let mut framed = bytes.clone();
            if let Some(b) = framed.first_mut() {
                *b = layout;
            }
            let _ = decode_snapshot(&framed);
        }

        #[test]
        fn mangled_inline_snapshots_are_errors_not_panics(
            map in proptest::collection::btree_map(
                proptest::collection::vec(any::<u8>(), 0..8),
                proptest::collection::vec(any::<u8>(), 0..8),
                1..8,
            ),
            at in any::<proptest::sample::Index>(),
            flip in 1..=255u8,
            cut in any::<proptest::sample::Index>(),
        ) {
            let head = SnapshotHead { seq: 1, plugin_version: PluginVersion([0; 32]), state_version: 0, count: 0, bytes: 0 };
            let good = encode_snapshot_inline(&head, map.iter().map(|(k, v)| (k.as_slice(), v.as_slice())));
            let mut bad = good.clone();
            let i = SNAPSHOT_HEAD + at.index(good.len() - SNAPSHOT_HEAD);
            bad[i] ^= flip;
            let _ = decode_snapshot(&bad);
            let n = SNAPSHOT_HEAD + cut.index(good.len() - SNAPSHOT_HEAD);
            prop_assert!(decode_snapshot(&good[..n]).is_err(), "a cut at {} of {} decoded", n, good.len());
        }
    }

    proptest! {
        // Every decoder of bytes read from disk, fed random bytes and
        // truncated or bit-flipped valid encodings: a value or a typed
        // `Corrupt` error, never a panic (nor a huge allocation).
        #[test]
        fn every_decoder_survives_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            for r in [
                decode_realm(&bytes).map(drop),
                decode_entry(&bytes).map(drop),
                decode_run(&bytes).map(drop),
                decode_run_head(&bytes).map(drop),
                decode_snapshot(&bytes).map(drop),
            ] {
                if let Err(e) = r {
                    prop_assert!(matches!(e, StorageError::Corrupt(_)), "{e:?}");
                }
            }
        }

        #[test]
        fn realm_rows_survive_truncation_and_flips(
            no in any::<u64>(),
            realm_type in "[a-z]{0,40}",
            last_snapshot_seq in any::<u64>(),
            at in any::<proptest::sample::Index>(),
            flip in 1..=255u8,
        ) {
            let row = RealmRow { no, realm_type, last_snapshot_seq };
            let good = encode_realm(&row).unwrap();
            prop_assert_eq!(decode_realm(&good).unwrap(), row);
            for n in 0..good.len() {
                let _ = decode_realm(&good[..n]);
            }
            let mut bad = good.clone();
            bad[at.index(good.len())] ^= flip;
            let _ = decode_realm(&bad);
        }

        #[test]
        fn log_entries_survive_truncation_and_flips(
            seq in any::<u64>(),
            kind in ".{0,20}",
            payload in proptest::collection::vec(any::<u8>(), 0..200),
            source_realm in proptest::option::of("[a-z]{1,10}"),
            at in any::<proptest::sample::Index>(),
            flip in 1..=255u8,
        ) {
            let ev = EventRecord {
                seq,
                kind,
                payload,
                source: "s".into(),
                source_realm,
                timestamp_ms: 7,
                source_reputation: 0.5,
                message: None,
            };
            let mut good = encode_entry(&ev).unwrap();
            set_entry_header(&mut good, 3, 9);
            let back = decode_entry(&good).unwrap();
            prop_assert_eq!((back.realm_no, back.version_no), (3, 9));
            prop_assert_eq!(back.event, ev);
            for n in 0..good.len() {
                if let Err(e) = decode_entry(&good[..n]) {
                    prop_assert!(matches!(e, StorageError::Corrupt(_)));
                }
            }
            let mut bad = good.clone();
            bad[at.index(good.len())] ^= flip;
            let _ = decode_entry(&bad);
        }

        #[test]
        fn index_runs_survive_truncation_and_flips(
            gaps in proptest::collection::vec(1..1u64 << 20, 1..50),
            at in any::<proptest::sample::Index>(),
            flip in 1..=255u8,
        ) {
            let mut pos = 0u64;
            let positions: Vec<u64> = gaps.iter().map(|g| { pos += g; pos }).collect();
            let good = encode_run(4, &positions).unwrap();
            for n in 0..good.len() {
                prop_assert!(decode_run(&good[..n]).is_err(), "a cut at {} decoded", n);
                let _ = decode_run_head(&good[..n]);
            }
            let mut bad = good.clone();
            bad[at.index(good.len())] ^= flip;
            if let Ok((head, back)) = decode_run(&bad) {
                // Whatever decodes is at least self-consistent.
                prop_assert_eq!(head.count, back.len() as u64);
                prop_assert!(back.windows(2).all(|w| w[0] < w[1]));
            }
        }
    }

    fn snapshot_head() -> impl Strategy<Value = SnapshotHead> {
        (
            any::<u64>(),
            any::<[u8; 32]>(),
            any::<u32>(),
            any::<u64>(),
            any::<u64>(),
        )
            .prop_map(|(seq, v, state_version, count, bytes)| SnapshotHead {
                seq,
                plugin_version: PluginVersion(v),
                state_version,
                count,
                bytes,
            })
    }

    fn head(seq: u64) -> SnapshotHead {
        SnapshotHead {
            seq,
            plugin_version: PluginVersion([9; 32]),
            state_version: 3,
            count: 0,
            bytes: 0,
        }
    }

    #[test]
    fn inline_snapshots_that_disagree_with_their_head_are_corrupt() {
        let entries: [(&[u8], &[u8]); 2] = [(b"a", b"1"), (b"b", b"22")];
        let good = encode_snapshot_inline(&head(5), entries);
        assert!(decode_snapshot(&good).is_ok());
        let corrupt =
            |bytes: &[u8]| matches!(decode_snapshot(bytes), Err(StorageError::Corrupt(_)));

        // Count says 3.
        let mut bad = good.clone();
        bad[SNAPSHOT_HEAD - 16] = 3;
        assert!(corrupt(&bad));
        // Byte total off by one.
        let mut bad = good.clone();
        bad[SNAPSHOT_HEAD - 8] += 1;
        assert!(corrupt(&bad));
        // Keys out of order or repeated.
        let swapped: [(&[u8], &[u8]); 2] = [(b"b", b"1"), (b"a", b"22")];
        assert!(corrupt(&encode_snapshot_inline(&head(5), swapped)));
        let repeated: [(&[u8], &[u8]); 2] = [(b"a", b"1"), (b"a", b"22")];
        assert!(corrupt(&encode_snapshot_inline(&head(5), repeated)));
        // Trailing byte, truncated entry, unknown layout, row header with a tail.
        let mut bad = good.clone();
        bad.push(0);
        assert!(corrupt(&bad));
        assert!(corrupt(&good[..good.len() - 1]));
        let mut bad = good.clone();
        bad[0] = 7;
        assert!(corrupt(&bad));
        let mut bad = encode_snapshot_rows(&head(5));
        bad.push(1);
        assert!(corrupt(&bad));
        assert!(corrupt(
            &encode_snapshot_rows(&head(5))[..SNAPSHOT_HEAD - 1]
        ));
        assert!(corrupt(&[]));
        // A length that overflows a u64 or runs past the end.
        let mut bad = encode_snapshot_inline(&head(5), []);
        bad.extend_from_slice(&[0xff; 11]);
        assert!(corrupt(&bad));
        let mut bad = encode_snapshot_inline(&head(5), []);
        bad.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert!(corrupt(&bad));
    }

    #[test]
    fn varints_round_trip_at_the_edges() {
        for v in [0, 1, 127, 128, 300, u32::MAX as u64, u64::MAX - 1, u64::MAX] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            let mut r = Reader(&out);
            assert_eq!(r.varint(), Some(v));
            assert!(r.0.is_empty());
        }
        // Ten bytes whose last carries more than the 64th bit.
        let mut r = Reader(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]);
        assert_eq!(r.varint(), None);
    }

    #[test]
    fn entries_round_trip_with_their_header() {
        let event = EventRecord {
            seq: 7,
            kind: "k".into(),
            payload: vec![1, 2, 3],
            source: "s".into(),
            source_realm: None,
            timestamp_ms: 9,
            source_reputation: 0.5,
            message: None,
        };
        let mut bytes = encode_entry(&event).unwrap();
        set_entry_header(&mut bytes, 0x0102_0304_0506_0708, 42);
        let entry = decode_entry(&bytes).unwrap();
        assert_eq!(
            (entry.realm_no, entry.version_no),
            (0x0102_0304_0506_0708, 42)
        );
        assert_eq!(entry.event, event);
        assert!(matches!(
            decode_entry(&bytes[..5]),
            Err(StorageError::Corrupt(_))
        ));
    }

    #[test]
    fn runs_with_a_wrong_count_or_zero_delta_are_corrupt() {
        let mut bytes = postcard::to_allocvec(&RunHead {
            count: 3,
            version_no: 0,
        })
        .unwrap();
        bytes = postcard::to_extend(&vec![5u64, 1], bytes).unwrap();
        assert!(matches!(decode_run(&bytes), Err(StorageError::Corrupt(_))));
        let mut bytes = postcard::to_allocvec(&RunHead {
            count: 2,
            version_no: 0,
        })
        .unwrap();
        bytes = postcard::to_extend(&vec![5u64, 0], bytes).unwrap();
        assert!(matches!(decode_run(&bytes), Err(StorageError::Corrupt(_))));
    }
}
