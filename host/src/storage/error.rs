//! Typed storage errors.
//!
//! Everything that comes from outside the process (the file on disk, a
//! caller's request) ends in one of these variants; nothing read from disk is
//! unwrapped.

use crate::realm::RealmId;

/// Why a storage operation failed.
///
/// Request errors (`Duplicate`, `Gap`, `RealmTypeMismatch`, ...) reject one
/// request and leave everything else — including other requests committed in
/// the same group commit — untouched. Open errors (`NewerFormat`, `Corrupt`,
/// ...) mean the database was not opened and nothing was written to it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The first event's seq is at or below the realm's last stored seq: the
    /// event (or a prefix of the batch) is already stored.
    #[error("realm {realm}: seq {seq} is already stored (last seq {last_seq})")]
    Duplicate {
        /// The realm.
        realm: RealmId,
        /// The offending seq.
        seq: u64,
        /// The realm's last stored seq.
        last_seq: u64,
    },
    /// The append carries an idempotency key that an earlier, unexpired
    /// append of the realm already stored: nothing was appended.
    #[error("realm {realm}: idempotency key {} was used by event {seq}", crate::quote::Quoted(.key))]
    IdempotencyKeyUsed {
        /// The realm.
        realm: RealmId,
        /// The key.
        key: String,
        /// The event stored with it.
        seq: u64,
    },
    /// A seq is not the successor of the one before it (the realm's last
    /// stored seq, or the previous event in the same request).
    #[error("realm {realm}: expected seq {expected}, got {found}")]
    Gap {
        /// The realm.
        realm: RealmId,
        /// The seq that would have been accepted.
        expected: u64,
        /// The seq that was offered.
        found: u64,
    },
    /// The realm exists with another realm type.
    #[error("realm {realm} has type {stored:?}, not {requested:?}")]
    RealmTypeMismatch {
        /// The realm.
        realm: RealmId,
        /// Type on disk.
        stored: String,
        /// Type in the request.
        requested: String,
    },
    /// The append delivers a message the realm already took from that sender
    /// (at or below its inbox cursor). Nothing was written; `cursor` is
    /// what was recorded, outcome included.
    #[error("realm {realm}: message {sender}@{seq}.{index} was already delivered (cursor at {}.{})", .cursor.seq, .cursor.index)]
    AlreadyDelivered {
        /// The target realm.
        realm: RealmId,
        /// The sender.
        sender: RealmId,
        /// Seq of the sender's producing event.
        seq: u64,
        /// Index of the message in that event.
        index: u32,
        /// The target's cursor for this sender.
        cursor: crate::storage::InboxCursor,
    },
    /// The message is not where a settle, a dead-lettering or an operator's
    /// change expected it: its change already happened.
    #[error(
        "realm {realm}: message {realm}@{seq}.{index} is not in the expected place (already settled?)"
    )]
    NotInOutbox {
        /// The sending realm.
        realm: RealmId,
        /// Seq of its producing event.
        seq: u64,
        /// Index of the message in that event.
        index: u32,
    },
    /// A request that can never succeed (no events, empty realm type, ...).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The realm has never been appended to.
    #[error("unknown realm {0}")]
    UnknownRealm(RealmId),
    /// A snapshot claims a seq beyond the realm's last stored event.
    #[error("realm {realm}: snapshot at seq {seq} is ahead of the log (last seq {last_seq})")]
    SnapshotAhead {
        /// The realm.
        realm: RealmId,
        /// The snapshot's seq.
        seq: u64,
        /// The realm's last stored seq.
        last_seq: u64,
    },
    /// A snapshot is older than the one already stored.
    #[error("realm {realm}: snapshot at seq {seq} is older than the stored one at {stored_seq}")]
    StaleSnapshot {
        /// The realm.
        realm: RealmId,
        /// The snapshot's seq.
        seq: u64,
        /// The stored snapshot's seq.
        stored_seq: u64,
    },
    /// A snapshot delta names a base other than the stored snapshot (0 when
    /// the realm has none). Nothing was written.
    #[error(
        "realm {realm}: snapshot delta onto seq {base_seq}, but the stored snapshot is at seq {stored_seq}"
    )]
    SnapshotBaseMismatch {
        /// The realm.
        realm: RealmId,
        /// The delta's base seq.
        base_seq: u64,
        /// The stored snapshot's seq, 0 if none.
        stored_seq: u64,
    },
    /// A full snapshot's keys are not strictly ascending (out of order or
    /// repeated). Nothing was written.
    #[error("realm {realm}: snapshot entry {index} is not after the one before it")]
    UnsortedSnapshot {
        /// The realm.
        realm: RealmId,
        /// Position of the first entry whose key is not greater than its
        /// predecessor's.
        index: usize,
    },
    /// The database was written by a newer release with a format this one
    /// cannot read. Nothing was modified.
    #[error("database format version {found} is newer than the supported {supported}")]
    NewerFormat {
        /// Version on disk.
        found: u64,
        /// Newest version this build reads.
        supported: u64,
    },
    /// The database was written by an older release in a format this one no
    /// longer reads. Nothing was modified.
    #[error(
        "database format version {found} is older than the supported {supported} and cannot be read by this release"
    )]
    UnsupportedFormat {
        /// Version on disk.
        found: u64,
        /// The version this build reads.
        supported: u64,
    },
    /// The data directory's storage layout manifest is damaged or names
    /// something this release cannot read, or a partition file it lists is
    /// missing. Nothing was modified.
    #[error("storage layout {path}: {reason}")]
    Layout {
        /// The manifest or partition file concerned.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The file is a redb database but not one of ours (no format record).
    #[error("{0} is not a realmhost database")]
    NotRealmhost(String),
    /// The file (or a record in it) is damaged, truncated or not a database.
    #[error("database is corrupt: {0}")]
    Corrupt(String),
    /// A record of one realm is damaged (found by a read of that realm: load,
    /// replay, verify, shadow). Other realms are unaffected; `realmhost
    /// storage check` lists everything that is damaged.
    #[error("realm {realm}: stored data is corrupt: {reason}")]
    RealmCorrupt {
        /// The realm whose data is damaged.
        realm: RealmId,
        /// What is wrong.
        reason: String,
    },
    /// The disk (or the user's quota) is full: a group commit failed and none
    /// of its requests is stored. The storage keeps retrying and accepts
    /// writes again by itself once space is freed; no restart is needed.
    #[error("storage is full: {0}")]
    NoSpace(String),
    /// The database is being reopened after a failed write (or reopening it
    /// failed so far); the request was not served. Retry later.
    #[error("storage is unavailable: {0}")]
    Unavailable(String),
    /// Another process (or handle) has the database open.
    #[error("database is already open")]
    AlreadyOpen,
    /// Opening the database file failed: `source` says why (a newer or older
    /// format, damage, another handle holding it, an I/O error). Returned by
    /// [`crate::storage::RedbStorage::open`] so that the message names the
    /// file, which matters when a node has several data directories or runs
    /// in a container; [`StorageError::cause`] gives the reason to match on.
    #[error("cannot open the database {}: {source}", .path.display())]
    Open {
        /// The database file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: Box<StorageError>,
    },
    /// A group commit failed (I/O error, full disk, ...); every request in it
    /// was rejected and none of them is stored.
    #[error("commit failed: {0}")]
    CommitFailed(String),
    /// The storage was shut down (or its committer died) before the request
    /// was answered; the request may or may not be durable.
    #[error("storage is closed")]
    Closed,
    /// I/O error outside a commit (creating the directory, opening the file).
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// Any other error from the backend.
    #[error("backend error: {0}")]
    Backend(String),
    /// Cluster mode: this node does not own the realm's shard (another node
    /// does, or the shard is moving between nodes). Nothing was written; the
    /// request may be retried, on the owner.
    #[error("shard {shard} is not owned by this node{}", .owner.as_ref().map(|o| format!(" (owner: {o})")).unwrap_or_default())]
    NotOwner {
        /// The realm's shard.
        shard: usize,
        /// The owning node's id, when known.
        owner: Option<String>,
    },
}

impl StorageError {
    /// Whether this is a failure of the storage that goes away by itself
    /// (full disk, a reopen after a failed write, shutdown): the request was
    /// not served and may be retried later.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::NoSpace(_)
                | Self::CommitFailed(_)
                | Self::Unavailable(_)
                | Self::Closed
                | Self::NotOwner { .. }
        )
    }

    /// A copy of a write failure for each waiter of a failed batch (the
    /// error type holds an `io::Error`, which does not clone): the same
    /// variant for the transient kinds, `CommitFailed` with the message
    /// otherwise.
    pub(crate) fn clone_transient(&self) -> Self {
        match self {
            Self::NoSpace(m) => Self::NoSpace(m.clone()),
            Self::Unavailable(m) => Self::Unavailable(m.clone()),
            Self::Closed => Self::Closed,
            Self::NotOwner { shard, owner } => Self::NotOwner {
                shard: *shard,
                owner: owner.clone(),
            },
            Self::CommitFailed(m) => Self::CommitFailed(m.clone()),
            other => Self::CommitFailed(other.to_string()),
        }
    }

    /// Whether the error reports damaged data.
    pub fn is_corrupt(&self) -> bool {
        matches!(self.cause(), Self::Corrupt(_) | Self::RealmCorrupt { .. })
    }

    /// The reason without the file: the `source` of [`StorageError::Open`],
    /// else the error itself.
    pub fn cause(&self) -> &StorageError {
        match self {
            Self::Open { source, .. } => source.cause(),
            other => other,
        }
    }

    /// Name the realm in a corruption error found while reading it (other
    /// errors are returned as they are).
    pub fn in_realm(self, realm: &RealmId) -> Self {
        match self {
            Self::Corrupt(reason) => Self::RealmCorrupt {
                realm: realm.clone(),
                reason,
            },
            other => other,
        }
    }

    /// Whether the error reports a full disk or quota.
    pub(crate) fn io_is_no_space(io: &std::io::Error) -> bool {
        // ENOSPC and EDQUOT on Linux.
        matches!(
            io.kind(),
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
        ) || matches!(io.raw_os_error(), Some(28 | 122))
    }

    /// Whether this error rejects the caller's request (as opposed to a
    /// failure of the storage itself): retrying the same request will fail
    /// the same way.
    pub fn is_rejection(&self) -> bool {
        matches!(
            self,
            Self::Duplicate { .. }
                | Self::IdempotencyKeyUsed { .. }
                | Self::Gap { .. }
                | Self::RealmTypeMismatch { .. }
                | Self::InvalidRequest(_)
                | Self::UnknownRealm(_)
                | Self::SnapshotAhead { .. }
                | Self::StaleSnapshot { .. }
                | Self::SnapshotBaseMismatch { .. }
                | Self::UnsortedSnapshot { .. }
        )
    }
}

impl From<redb::Error> for StorageError {
    fn from(e: redb::Error) -> Self {
        match e {
            redb::Error::Corrupted(s) => Self::Corrupt(s),
            redb::Error::UpgradeRequired(v) => {
                Self::Corrupt(format!("redb file format {v} needs an upgrade"))
            }
            redb::Error::DatabaseAlreadyOpen | redb::Error::LockProtocolMismatch => {
                Self::AlreadyOpen
            }
            // redb reports a foreign or mangled header (bad magic number) as
            // an `InvalidData` I/O error: that is damage, not an I/O fault.
            redb::Error::Io(io) if io.kind() == std::io::ErrorKind::InvalidData => {
                Self::Corrupt(io.to_string())
            }
            redb::Error::Io(io) => Self::Io(io),
            // A previous write failed (redb refuses every later operation
            // until the file is reopened) or the file was closed under a
            // reader by such a reopen.
            redb::Error::PreviousIo => {
                Self::Unavailable("a previous write failed; the database is being reopened".into())
            }
            redb::Error::DatabaseClosed => {
                Self::Unavailable("the database was closed to be reopened".into())
            }
            other => Self::Backend(other.to_string()),
        }
    }
}

macro_rules! via_redb_error {
    ($($t:ty),*) => {$(
        impl From<$t> for StorageError {
            fn from(e: $t) -> Self {
                redb::Error::from(e).into()
            }
        }
    )*};
}

via_redb_error!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);
