//! Byte encodings of the stored records. Every decoder returns
//! [`StorageError::Corrupt`] on bad input instead of panicking: the bytes come
//! from disk.

use serde::{Deserialize, Serialize};

use super::{Snapshot, StorageError};
use crate::realm::EventRecord;
use crate::runtime::PluginVersion;

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

/// Encode an event as a log entry with a zeroed header, which the committer
/// fills in with [`set_entry_header`] once it knows the realm's number.
/// Encoding runs on the caller's thread, not on the single committer.
pub(crate) fn encode_entry(event: &EventRecord) -> Result<Vec<u8>, StorageError> {
    let mut buf = Vec::with_capacity(ENTRY_HEADER + 48 + event.payload.len());
    buf.resize(ENTRY_HEADER, 0);
    postcard::to_extend(event, buf)
        .map_err(|e| StorageError::InvalidRequest(format!("unencodable event: {e}")))
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
    let event =
        postcard::from_bytes(body).map_err(|e| StorageError::Corrupt(format!("log entry: {e}")))?;
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

/// Snapshot record: postcard of (seq, plugin version, state version, entries).
pub(crate) fn encode_snapshot(s: &Snapshot) -> Vec<u8> {
    let entries: Vec<(&[u8], &[u8])> = s.entries.iter().map(|(k, v)| (&k[..], &v[..])).collect();
    postcard::to_allocvec(&(s.seq, s.plugin_version.0, s.state_version, entries))
        .unwrap_or_default()
}

pub(crate) fn decode_snapshot(bytes: &[u8]) -> Result<Snapshot, StorageError> {
    type Raw<'a> = (u64, [u8; 32], u32, Vec<(&'a [u8], &'a [u8])>);
    let (seq, v, state_version, entries): Raw<'_> = postcard::from_bytes(bytes)
        .map_err(|e| StorageError::Corrupt(format!("snapshot record: {e}")))?;
    Ok(Snapshot {
        seq,
        plugin_version: PluginVersion(v),
        state_version,
        entries: entries
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect(),
    })
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
