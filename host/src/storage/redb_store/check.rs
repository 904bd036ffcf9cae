//! The scrub: read the whole database and report everything that is damaged.
//!
//! Reads find damage only where they look (one realm, one page of its log).
//! The scrub looks everywhere, in one read transaction:
//!
//! - `sys`: the format record and counters are present;
//! - `versions`: every plugin version is 32 bytes;
//! - `realms` / `realms_by_type`: every row decodes, its id is valid, its
//!   number is unique and below `next_realm_no`, and the two tables agree;
//! - `log`: every entry decodes and names a known realm; per realm the seqs
//!   are `1, 2, 3, ...` in log order without gaps or repeats, and the entry's
//!   plugin version number is known;
//! - `log_index`: every run decodes, its positions hold exactly the seqs it
//!   claims for its realm, and runs are continuous from seq 1;
//! - `snapshots` / `snapshot_entries`: every header decodes, is not ahead of
//!   its realm's log, matches its row's snapshot seq, and a row-layout map
//!   has the rows and bytes its header counts; no orphans.
//!
//! Offline ([`check`]), redb's own integrity check (page checksums, the
//! allocator state) runs first; it needs the file to itself, so a running
//! node's admin route ([`RedbStorage::scrub`]) does only the logical part.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use redb::{ReadTransaction, ReadableDatabase, ReadableTable};

use super::open::guarded;
use super::snapshots::snapshot_of;
use super::{
    BY_TYPE, DB_FILE_NAME, INDEX, KEY_FORMAT, KEY_INDEX_FLOOR, KEY_NEXT_REALM, LOG, REALMS,
    RedbStorage, SNAPSHOT_ENTRIES, SNAPSHOTS, SYS, VERSIONS, upgrade,
};
use crate::realm::RealmId;
use crate::storage::StorageError;
use crate::storage::codec::{self, RealmRow};

/// Most damage records kept in a report; the summary still counts them all.
const MAX_DAMAGE: usize = 1000;

/// One damaged record.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Damage {
    /// The partition (database file) it was found in, for a data directory
    /// of more than one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<usize>,
    /// The table it was found in (`redb` for the file-level check).
    pub table: String,
    /// The realm it belongs to, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub realm: Option<String>,
    /// The event seq, when it concerns one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// What is wrong.
    pub reason: String,
}

/// What a scrub found.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CheckReport {
    /// redb's page-level integrity check: `ok`, `repaired`, `skipped`
    /// (online) or the error.
    pub integrity: String,
    /// Realms found.
    pub realms: u64,
    /// Log entries read.
    pub events: u64,
    /// Snapshots read.
    pub snapshots: u64,
    /// Damage found (at most 1000 records are listed).
    pub damage: Vec<Damage>,
    /// Damage records found in all (may exceed the list).
    pub damage_count: u64,
    /// Realms with at least one damage record.
    pub damaged_realms: Vec<String>,
}

impl CheckReport {
    /// Whether nothing is damaged.
    pub fn is_clean(&self) -> bool {
        self.damage_count == 0
    }

    pub(super) fn add(
        &mut self,
        table: &str,
        realm: Option<&str>,
        seq: Option<u64>,
        reason: String,
    ) {
        self.damage_count += 1;
        if let Some(r) = realm
            && !self.damaged_realms.iter().any(|d| d == r)
        {
            self.damaged_realms.push(r.to_owned());
        }
        if self.damage.len() < MAX_DAMAGE {
            self.damage.push(Damage {
                partition: None,
                table: table.to_owned(),
                realm: realm.map(str::to_owned),
                seq,
                reason,
            });
        }
    }

    /// Fold partition `i`'s report into this one (of a data directory of
    /// `n` partitions): counts add up, damage records name the partition.
    pub(crate) fn merge_partition(&mut self, i: usize, n: usize, other: CheckReport) {
        self.realms += other.realms;
        self.events += other.events;
        self.snapshots += other.snapshots;
        self.damage_count += other.damage_count;
        for mut d in other.damage {
            if self.damage.len() >= MAX_DAMAGE {
                break;
            }
            d.partition = (n > 1).then_some(i);
            self.damage.push(d);
        }
        for r in other.damaged_realms {
            if !self.damaged_realms.contains(&r) {
                self.damaged_realms.push(r);
            }
        }
    }
}

/// Scrub the data directory `dir` of a stopped node: for every partition
/// (database file), redb's integrity check, then every table, then whether
/// each realm is in the partition its id hashes to. An error means the
/// directory could not be checked at all (missing, locked by a running node,
/// not a database, a damaged layout manifest); damage found is in the
/// report.
pub fn check(dir: &Path) -> Result<CheckReport, StorageError> {
    crate::storage::partitioned::check_dir(dir)
}

/// [`check`] of the one database file in `dir`. `placement`, `(i, n)` for
/// partition `i` of `n`, adds the check that each realm hashes to it.
#[tracing::instrument(name = "storage.check", skip_all, fields(dir = %dir.display()))]
pub(crate) fn check_file(
    dir: &Path,
    placement: Option<(usize, usize)>,
) -> Result<CheckReport, StorageError> {
    let path = dir.join(DB_FILE_NAME);
    if !path.exists() {
        return Err(StorageError::Io(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("no database at {}", path.display()),
        )));
    }
    let mut db = guarded("opening", || Ok(redb::Database::builder().open(&path)?))?;
    let integrity = match guarded("checking", || Ok(db.check_integrity()?)) {
        Ok(true) => "ok".to_owned(),
        Ok(false) => "repaired".to_owned(),
        Err(e) => e.to_string(),
    };
    let mut report = guarded("reading", || {
        upgrade::check_format(&db, &path)?;
        let txn = db.begin_read()?;
        Ok(scrub(&txn, placement))
    })
    .unwrap_or_else(|e| {
        let mut r = CheckReport::default();
        r.add("redb", None, None, format!("cannot read the tables: {e}"));
        r
    });
    if integrity != "ok" && integrity != "repaired" {
        report.add("redb", None, None, integrity.clone());
    }
    report.integrity = integrity;
    Ok(report)
}

impl RedbStorage {
    /// Scrub the open database (the logical checks of [`check`]; redb's
    /// page-level check needs the file to itself). Reads the whole file in
    /// one read transaction: run it off the async workers.
    #[tracing::instrument(name = "storage.scrub", skip_all)]
    pub fn scrub(&self) -> Result<CheckReport, StorageError> {
        self.scrub_placed(None)
    }

    /// [`Self::scrub`] of partition `i` of `n` (`placement`), which also
    /// checks that each realm hashes to it.
    pub(crate) fn scrub_placed(
        &self,
        placement: Option<(usize, usize)>,
    ) -> Result<CheckReport, StorageError> {
        let mut report = guarded("reading", || Ok(scrub(&self.db.begin_read()?, placement)))?;
        report.integrity = "skipped".into();
        Ok(report)
    }
}

/// Per-realm facts gathered from the `realms` table.
struct RealmInfo {
    id: String,
    row: RealmRow,
    /// Seqs seen in the log, with their positions, in log order.
    log: Vec<(u64, u64)>,
}

/// The logical scrub over one read transaction. Never fails: what cannot be
/// read is damage.
fn scrub(txn: &ReadTransaction, placement: Option<(usize, usize)>) -> CheckReport {
    let mut report = CheckReport::default();
    let mut realms: HashMap<u64, RealmInfo> = HashMap::new();
    let step = |report: &mut CheckReport, table: &str, r: Result<(), StorageError>| {
        if let Err(e) = r {
            report.add(table, None, None, format!("cannot be read: {e}"));
        }
    };

    let mut next_realm_no = u64::MAX;
    let r = (|| -> Result<(), StorageError> {
        let sys = txn.open_table(SYS)?;
        for key in [KEY_FORMAT, KEY_NEXT_REALM, KEY_INDEX_FLOOR] {
            match sys.get(key)? {
                Some(v) if key == KEY_NEXT_REALM => next_realm_no = v.value(),
                Some(_) => {}
                None => report.add("sys", None, None, format!("missing {key}")),
            }
        }
        Ok(())
    })();
    step(&mut report, "sys", r);

    let mut versions = HashSet::new();
    let r = (|| -> Result<(), StorageError> {
        for item in txn.open_table(VERSIONS)?.iter()? {
            let (k, v) = item?;
            if v.value().len() == 32 {
                versions.insert(k.value());
            } else {
                let reason = format!("plugin version #{} is {} bytes", k.value(), v.value().len());
                report.add("versions", None, None, reason);
            }
        }
        Ok(())
    })();
    step(&mut report, "versions", r);

    let r = scrub_realms(txn, next_realm_no, placement, &mut realms, &mut report);
    step(&mut report, "realms", r);
    let r = scrub_log(txn, &versions, &mut realms, &mut report);
    step(&mut report, "log", r);
    let r = scrub_index(txn, &realms, &mut report);
    step(&mut report, "log_index", r);
    let r = scrub_snapshots(txn, &realms, &mut report);
    step(&mut report, "snapshots", r);
    let last_seqs: HashMap<&str, u64> = realms
        .values()
        .map(|r| {
            (
                r.id.as_str(),
                r.log.iter().map(|&(seq, _)| seq).max().unwrap_or(0),
            )
        })
        .collect();
    let r = super::messages::scrub(txn, &last_seqs, &mut report);
    step(&mut report, "outbox", r);
    report.realms = realms.len() as u64;
    report
}

fn scrub_realms(
    txn: &ReadTransaction,
    next_realm_no: u64,
    placement: Option<(usize, usize)>,
    realms: &mut HashMap<u64, RealmInfo>,
    report: &mut CheckReport,
) -> Result<(), StorageError> {
    let mut by_id: HashMap<String, String> = HashMap::new();
    for item in txn.open_table(REALMS)?.iter()? {
        let (k, v) = item?;
        let id = k.value().to_owned();
        if let Err(e) = RealmId::new(&id) {
            report.add("realms", Some(&id), None, format!("invalid realm id: {e}"));
        }
        if let Some((i, n)) = placement {
            let home = crate::storage::partitioned::layout::partition_of(&id, n);
            if home != i {
                let reason =
                    format!("stored in partition {i}, but its id hashes to partition {home}");
                report.add("realms", Some(&id), None, reason);
            }
        }
        let row = match codec::decode_realm(v.value()) {
            Ok(row) => row,
            Err(e) => {
                report.add("realms", Some(&id), None, e.to_string());
                continue;
            }
        };
        if row.no == 0 || row.no >= next_realm_no {
            let reason = format!("realm number {} is out of range", row.no);
            report.add("realms", Some(&id), None, reason);
        }
        if let Some(other) = realms.get(&row.no) {
            let reason = format!("realm number {} is also used by {}", row.no, other.id);
            report.add("realms", Some(&id), None, reason);
            continue;
        }
        by_id.insert(id.clone(), row.realm_type.clone());
        realms.insert(
            row.no,
            RealmInfo {
                id,
                row,
                log: Vec::new(),
            },
        );
    }
    let mut listed = HashSet::new();
    for item in txn.open_table(BY_TYPE)?.iter()? {
        let (k, _) = item?;
        let (ty, id) = k.value();
        match by_id.get(id) {
            Some(t) if t == ty => {
                listed.insert(id.to_owned());
            }
            Some(t) => {
                let reason = format!("listed under type {ty:?}, its row says {t:?}");
                report.add("realms_by_type", Some(id), None, reason);
            }
            None => {
                let reason = format!("listed under type {ty:?} but has no row");
                report.add("realms_by_type", Some(id), None, reason);
            }
        }
    }
    for id in by_id.keys().filter(|id| !listed.contains(*id)) {
        report.add(
            "realms_by_type",
            Some(id),
            None,
            "missing from the inventory".into(),
        );
    }
    Ok(())
}

fn scrub_log(
    txn: &ReadTransaction,
    versions: &HashSet<u32>,
    realms: &mut HashMap<u64, RealmInfo>,
    report: &mut CheckReport,
) -> Result<(), StorageError> {
    for item in txn.open_table(LOG)?.iter()? {
        let (k, v) = item?;
        let pos = k.value();
        report.events += 1;
        let entry = match codec::decode_entry(v.value()) {
            Ok(e) => e,
            Err(e) => {
                report.add("log", None, None, format!("position {pos}: {e}"));
                continue;
            }
        };
        let seq = entry.event.seq;
        let Some(info) = realms.get_mut(&entry.realm_no) else {
            let reason = format!("position {pos} names unknown realm #{}", entry.realm_no);
            report.add("log", None, Some(seq), reason);
            continue;
        };
        if !versions.contains(&entry.version_no) {
            let reason = format!(
                "position {pos}: unknown plugin version #{}",
                entry.version_no
            );
            report.add("log", Some(&info.id), Some(seq), reason);
        }
        let expected = info.log.last().map_or(1, |&(s, _)| s + 1);
        if seq != expected {
            let reason = format!("position {pos} holds seq {seq}, expected {expected}");
            report.add("log", Some(&info.id), Some(seq), reason);
        }
        info.log.push((seq, pos));
    }
    for info in realms.values().filter(|i| i.log.is_empty()) {
        report.add(
            "log",
            Some(&info.id),
            None,
            "realm has a row but no events".into(),
        );
    }
    Ok(())
}

fn scrub_index(
    txn: &ReadTransaction,
    realms: &HashMap<u64, RealmInfo>,
    report: &mut CheckReport,
) -> Result<(), StorageError> {
    // Position of each (realm, seq) as the log has it.
    let mut next_seq: BTreeMap<u64, u64> = BTreeMap::new();
    for item in txn.open_table(INDEX)?.iter()? {
        let (k, v) = item?;
        let (no, first_seq) = k.value();
        let Some(info) = realms.get(&no) else {
            let reason = format!("run at seq {first_seq} of unknown realm #{no}");
            report.add("log_index", None, Some(first_seq), reason);
            continue;
        };
        let id = Some(info.id.as_str());
        let (_, positions) = match codec::decode_run(v.value()) {
            Ok(r) => r,
            Err(e) => {
                report.add("log_index", id, Some(first_seq), e.to_string());
                continue;
            }
        };
        let expected = next_seq.get(&no).copied().unwrap_or(1);
        if first_seq != expected {
            let reason = format!("run starts at seq {first_seq}, expected {expected}");
            report.add("log_index", id, Some(first_seq), reason);
        }
        for (i, pos) in positions.iter().enumerate() {
            let seq = first_seq.saturating_add(i as u64);
            // The log of a realm is in seq order from 1, so seq n is at n-1.
            let logged = usize::try_from(seq - 1)
                .ok()
                .and_then(|i| info.log.get(i))
                .copied();
            if logged != Some((seq, *pos)) {
                let reason =
                    format!("seq {seq} points at log position {pos}, which does not hold it");
                report.add("log_index", id, Some(seq), reason);
                break;
            }
        }
        next_seq.insert(no, first_seq.saturating_add(positions.len() as u64));
    }
    Ok(())
}

fn scrub_snapshots(
    txn: &ReadTransaction,
    realms: &HashMap<u64, RealmInfo>,
    report: &mut CheckReport,
) -> Result<(), StorageError> {
    let headers = txn.open_table(SNAPSHOTS)?;
    for item in headers.iter()? {
        let (k, _) = item?;
        if !realms.contains_key(&k.value()) {
            report.add(
                "snapshots",
                None,
                None,
                format!("header of unknown realm #{}", k.value()),
            );
        }
    }
    let mut with_rows = HashSet::new();
    for item in txn.open_table(SNAPSHOT_ENTRIES)?.iter()? {
        let (k, _) = item?;
        with_rows.insert(k.value().0);
    }
    for no in &with_rows {
        if !realms.contains_key(no) {
            report.add(
                "snapshot_entries",
                None,
                None,
                format!("rows of unknown realm #{no}"),
            );
        }
    }
    for info in realms.values() {
        let id = Some(info.id.as_str());
        let last_seq = info.log.last().map_or(0, |&(s, _)| s);
        if info.row.last_snapshot_seq == 0 {
            if headers.get(info.row.no)?.is_some() {
                report.add(
                    "snapshots",
                    id,
                    None,
                    "header of a realm without a snapshot".into(),
                );
            }
            continue;
        }
        let realm = match RealmId::new(&info.id) {
            Ok(r) => r,
            Err(_) => continue,
        };
        match guarded("reading", || snapshot_of(txn, &realm, &info.row)) {
            Ok(Some(s)) => {
                report.snapshots += 1;
                if s.seq > last_seq {
                    let reason = format!(
                        "snapshot at seq {} is ahead of the log (last seq {last_seq})",
                        s.seq
                    );
                    report.add("snapshots", id, Some(s.seq), reason);
                }
            }
            Ok(None) => {}
            Err(e) => report.add(
                "snapshots",
                id,
                Some(info.row.last_snapshot_seq),
                e.to_string(),
            ),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use redb::{Database, ReadableTable};

    use super::*;
    use crate::realm::EventRecord;
    use crate::runtime::PluginVersion;
    use crate::storage::{AppendRequest, SnapshotBody, SnapshotWrite};

    fn rid(s: &str) -> RealmId {
        RealmId::new(s).unwrap()
    }

    fn fill(dir: &Path) {
        let s = RedbStorage::open(dir).unwrap();
        for i in 0..8 {
            let events = (1..=12)
                .map(|seq| EventRecord {
                    seq,
                    kind: "k".into(),
                    payload: vec![i; 8],
                    source: "src".into(),
                    source_realm: None,
                    timestamp_ms: 1,
                    source_reputation: 1.0,
                    message: None,
                })
                .collect();
            s.append_blocking(AppendRequest {
                realm_id: rid(&format!("r{i}")),
                realm_type: "t".into(),
                plugin_version: PluginVersion([1; 32]),
                events,
            })
            .unwrap();
            let entries = (0..3u8)
                .map(|k| (vec![k].into(), vec![i; 4].into()))
                .collect();
            s.put_snapshot_blocking(
                &rid(&format!("r{i}")),
                SnapshotWrite {
                    seq: 10,
                    plugin_version: PluginVersion([1; 32]),
                    state_version: 1,
                    body: SnapshotBody::Full(entries),
                },
            )
            .unwrap();
        }
    }

    fn realm_no(db: &Database, realm: &str) -> u64 {
        let txn = db.begin_read().unwrap();
        let t = txn.open_table(REALMS).unwrap();
        codec::decode_realm(t.get(realm).unwrap().unwrap().value())
            .unwrap()
            .no
    }

    #[test]
    fn a_clean_file_is_reported_clean() {
        let dir = tempfile::tempdir().unwrap();
        fill(dir.path());
        let r = check(dir.path()).unwrap();
        assert!(r.is_clean(), "{r:?}");
        assert_eq!(
            (r.integrity.as_str(), r.realms, r.events, r.snapshots),
            ("ok", 8, 96, 8)
        );
        let s = RedbStorage::open(dir.path()).unwrap();
        assert!(s.scrub().unwrap().is_clean());
    }

    #[test]
    fn damaged_rows_are_reported_by_the_scrub_and_by_reads_naming_the_realm() {
        let dir = tempfile::tempdir().unwrap();
        fill(dir.path());
        {
            let db = Database::create(dir.path().join(DB_FILE_NAME)).unwrap();
            let (r2, r4) = (realm_no(&db, "r2"), realm_no(&db, "r4"));
            let txn = db.begin_write().unwrap();
            {
                // r2 loses one event from the middle of its log.
                let index = txn.open_table(INDEX).unwrap();
                let run = index.get((r2, 1)).unwrap().unwrap();
                let (_, positions) = codec::decode_run(run.value()).unwrap();
                drop(run);
                let mut log = txn.open_table(LOG).unwrap();
                log.remove(positions[5]).unwrap();
                // r4's snapshot header is garbage; r5's row too.
                let mut snaps = txn.open_table(SNAPSHOTS).unwrap();
                snaps.insert(r4, [7u8; 5].as_slice()).unwrap();
                let mut realms = txn.open_table(REALMS).unwrap();
                realms.insert("r5", [0xffu8; 3].as_slice()).unwrap();
            }
            txn.commit().unwrap();
        }
        let r = check(dir.path()).unwrap();
        assert!(!r.is_clean());
        for realm in ["r2", "r4", "r5"] {
            assert!(
                r.damaged_realms.iter().any(|d| d == realm),
                "{realm}: {r:#?}"
            );
        }
        assert!(
            r.damage
                .iter()
                .any(|d| d.table == "log" && d.realm.as_deref() == Some("r2") && d.seq == Some(7)),
            "{r:#?}"
        );
        assert!(
            r.damage
                .iter()
                .any(|d| d.table == "snapshots" && d.realm.as_deref() == Some("r4"))
        );
        assert!(
            r.damage
                .iter()
                .any(|d| d.table == "realms" && d.realm.as_deref() == Some("r5"))
        );

        // The node's reads find the same damage as typed errors naming the
        // realm; undamaged realms read fine.
        let s = RedbStorage::open(dir.path()).unwrap();
        for (realm, read) in [
            ("r2", s.events_since(&rid("r2"), 0).map(drop)),
            ("r2", s.events_page(&rid("r2"), 3, 5).map(drop)),
            ("r4", s.load_snapshot(&rid("r4")).map(drop)),
            ("r4", s.load_realm(&rid("r4")).map(drop)),
            ("r5", s.realm_meta(&rid("r5")).map(drop)),
        ] {
            match read {
                Err(StorageError::RealmCorrupt { realm: r, .. }) => assert_eq!(r.as_str(), realm),
                other => panic!("{realm}: expected RealmCorrupt, got {other:?}"),
            }
        }
        assert_eq!(s.events_since(&rid("r3"), 0).unwrap().len(), 12);
        let online = s.scrub().unwrap();
        assert_eq!(online.integrity, "skipped");
        assert_eq!(online.damaged_realms.len(), r.damaged_realms.len());
    }

    #[test]
    fn a_missing_or_locked_file_is_an_error_not_a_report() {
        let dir = tempfile::tempdir().unwrap();
        assert!(check(dir.path()).is_err());
        let _s = RedbStorage::open(dir.path()).unwrap();
        assert!(matches!(check(dir.path()), Err(StorageError::AlreadyOpen)));
    }
}
