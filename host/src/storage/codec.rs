//! Byte encodings of the stored records. Every decoder returns
//! [`StorageError::Corrupt`] on bad input instead of panicking: the bytes come
//! from disk.

use serde::{Deserialize, Serialize};

use super::{RealmMeta, Snapshot, StorageError};
use crate::realm::EventRecord;
use crate::runtime::PluginVersion;

/// A realm's row in the `realms` table.
///
/// `no` is a dense number assigned at creation; the log index is keyed by it
/// rather than by the id string so index keys are a fixed 16 bytes and compare
/// as integers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RealmRow {
    pub no: u64,
    pub realm_type: String,
    pub last_seq: u64,
    pub last_snapshot_seq: u64,
    pub plugin_version: [u8; 32],
}

impl RealmRow {
    pub fn meta(&self) -> RealmMeta {
        RealmMeta {
            realm_type: self.realm_type.clone(),
            last_seq: self.last_seq,
            last_snapshot_seq: self.last_snapshot_seq,
            plugin_version: PluginVersion(self.plugin_version),
        }
    }
}

pub(crate) fn encode_realm(row: &RealmRow) -> Result<Vec<u8>, StorageError> {
    postcard::to_allocvec(row)
        .map_err(|e| StorageError::Backend(format!("encoding realm row: {e}")))
}

pub(crate) fn decode_realm(bytes: &[u8]) -> Result<RealmRow, StorageError> {
    postcard::from_bytes(bytes).map_err(|e| StorageError::Corrupt(format!("realm row: {e}")))
}

/// A log entry: the owning realm's number plus the event. The realm number
/// makes every entry self-describing, so the index can be checked (and, if
/// ever needed, rebuilt) from the log alone.
pub(crate) fn encode_entry(realm_no: u64, event: &EventRecord) -> Result<Vec<u8>, StorageError> {
    postcard::to_allocvec(&(realm_no, event))
        .map_err(|e| StorageError::InvalidRequest(format!("unencodable event: {e}")))
}

pub(crate) fn decode_entry(bytes: &[u8]) -> Result<(u64, EventRecord), StorageError> {
    postcard::from_bytes(bytes).map_err(|e| StorageError::Corrupt(format!("log entry: {e}")))
}

const SNAPSHOT_HEADER: usize = 8 + 32;

/// Snapshot: `seq` (u64 LE) ‖ plugin version (32 bytes) ‖ state. A fixed
/// header instead of postcard so a large state is copied once, not encoded.
pub(crate) fn encode_snapshot(s: &Snapshot) -> Vec<u8> {
    let mut out = Vec::with_capacity(SNAPSHOT_HEADER + s.state.len());
    out.extend_from_slice(&s.seq.to_le_bytes());
    out.extend_from_slice(&s.plugin_version.0);
    out.extend_from_slice(&s.state);
    out
}

pub(crate) fn decode_snapshot(bytes: &[u8]) -> Result<Snapshot, StorageError> {
    if bytes.len() < SNAPSHOT_HEADER {
        return Err(StorageError::Corrupt(format!(
            "snapshot record of {} bytes",
            bytes.len()
        )));
    }
    let (seq, rest) = bytes.split_at(8);
    let (version, state) = rest.split_at(32);
    let mut seq_bytes = [0u8; 8];
    seq_bytes.copy_from_slice(seq);
    let mut v = [0u8; 32];
    v.copy_from_slice(version);
    Ok(Snapshot {
        seq: u64::from_le_bytes(seq_bytes),
        plugin_version: PluginVersion(v),
        state: state.to_vec(),
    })
}
