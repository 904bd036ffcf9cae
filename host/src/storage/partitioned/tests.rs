//! Tests of [`PartitionedStorage`]: layout creation and recovery, routing,
//! merged listings, scrub and placement checks.

use std::collections::BTreeSet;

use super::layout::{LAYOUT_FILE_NAME, Layout, partition_dir};
use super::*;
use crate::runtime::PluginVersion;

fn config(partitions: usize) -> StorageConfig {
    StorageConfig {
        partitions,
        ..StorageConfig::default()
    }
}

fn ev(seq: u64) -> EventRecord {
    EventRecord {
        seq,
        kind: "add".into(),
        payload: seq.to_le_bytes().to_vec(),
        source: "test".into(),
        source_realm: None,
        timestamp_ms: 1,
        source_reputation: 1.0,
        message: None,
    }
}

fn req(realm: &str, realm_type: &str, first: u64, n: u64) -> AppendRequest {
    AppendRequest {
        realm_id: RealmId::new(realm).unwrap(),
        realm_type: realm_type.into(),
        plugin_version: PluginVersion::of(b"v1"),
        events: (first..first + n).map(ev).collect(),
    }
}

fn block<T>(f: impl std::future::Future<Output = T>) -> T {
    futures::executor::block_on(f)
}

fn id(s: &str) -> RealmId {
    RealmId::new(s).unwrap()
}

#[test]
fn a_new_directory_gets_its_partitions_and_keeps_every_realm_in_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let names: Vec<String> = (0..200).map(|i| format!("realm-{i}")).collect();
    {
        let s = PartitionedStorage::open_with(dir.path(), config(4)).unwrap();
        assert_eq!(s.partitions(), 4);
        for (i, name) in names.iter().enumerate() {
            let t = if i % 2 == 0 { "counter" } else { "ledger" };
            block(Storage::append(&s, req(name, t, 1, 2))).unwrap();
            block(Storage::append(&s, req(name, t, 3, 1))).unwrap();
        }
        block(Storage::put_meta(&s, "monitor", Some(b"m".to_vec()))).unwrap();
        // Every realm is in exactly the partition its id hashes to.
        for name in &names {
            let home = s.partition_of(&id(name));
            for p in 0..4 {
                let meta = s.partition(p).realm_meta(&id(name)).unwrap();
                assert_eq!(meta.is_some(), p == home, "{name} in partition {p}");
            }
        }
        let per: Vec<usize> = (0..4)
            .map(|p| {
                ["counter", "ledger"]
                    .iter()
                    .map(|t| s.partition(p).list_realms(t, None, 1000).unwrap().len())
                    .sum()
            })
            .collect();
        assert!(per.iter().all(|&c| c > 20), "uneven: {per:?}");
        assert_eq!(
            s.partition(0).get_meta("monitor").unwrap(),
            Some(b"m".to_vec())
        );
    }
    assert_eq!(Layout::read(dir.path()).unwrap(), Some(Layout::new(4)));
    for i in 1..4 {
        assert!(
            partition_dir(dir.path(), i)
                .join(crate::storage::DB_FILE_NAME)
                .exists()
        );
    }
    // Reopened with another configured count: the recorded one wins.
    let s = PartitionedStorage::open_with(dir.path(), config(2)).unwrap();
    assert_eq!(s.partitions(), 4);
    for name in &names {
        let events = block(Storage::events_since(&s, &id(name), 0)).unwrap();
        assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3]);
        let load = block(Storage::load_realm(&s, &id(name))).unwrap().unwrap();
        assert_eq!(load.meta.last_seq, 3);
    }
    assert_eq!(
        block(Storage::get_meta(&s, "monitor")).unwrap(),
        Some(b"m".to_vec())
    );
    let report = Storage::scrub(&s).unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.realms, 200);
    assert_eq!(report.events, 600);
}

#[test]
fn listings_merge_the_partitions_in_id_order() {
    let dir = tempfile::tempdir().unwrap();
    let s = PartitionedStorage::open_with(dir.path(), config(3)).unwrap();
    let mut expected = BTreeSet::new();
    for i in 0..97 {
        let name = format!("r/{i:03}");
        block(Storage::append(&s, req(&name, "counter", 1, 1))).unwrap();
        expected.insert(name);
    }
    block(Storage::append(&s, req("other", "ledger", 1, 1))).unwrap();
    assert_eq!(
        block(Storage::realm_types(&s)).unwrap(),
        ["counter", "ledger"]
    );
    // Page through with a small limit: every id once, in order.
    let mut seen = Vec::new();
    let mut after: Option<RealmId> = None;
    loop {
        let page = block(Storage::list_realms(&s, "counter", after.as_ref(), 10)).unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 10);
        after = page.last().cloned();
        seen.extend(page.into_iter().map(|r| r.as_str().to_owned()));
    }
    assert_eq!(seen, expected.into_iter().collect::<Vec<_>>());
}

#[test]
fn a_single_file_directory_stays_one_partition() {
    let dir = tempfile::tempdir().unwrap();
    {
        let old = RedbStorage::open(dir.path()).unwrap();
        old.append_blocking(req("kept", "counter", 1, 2)).unwrap();
    }
    let s = PartitionedStorage::open_with(dir.path(), config(4)).unwrap();
    assert_eq!(s.partitions(), 1);
    assert_eq!(
        block(Storage::realm_meta(&s, &id("kept")))
            .unwrap()
            .unwrap()
            .last_seq,
        2
    );
    drop(s);
    assert_eq!(Layout::read(dir.path()).unwrap(), Some(Layout::new(1)));
    assert!(!partition_dir(dir.path(), 1).exists());
}

#[test]
fn a_creation_cut_short_before_the_manifest_is_finished_on_the_next_open() {
    let dir = tempfile::tempdir().unwrap();
    // Partition 0 exists (empty), partition 1's directory too, no manifest.
    drop(RedbStorage::open(dir.path()).unwrap());
    drop(RedbStorage::open(partition_dir(dir.path(), 1)).unwrap());
    let s = PartitionedStorage::open_with(dir.path(), config(3)).unwrap();
    assert_eq!(s.partitions(), 3);
    drop(s);
    assert_eq!(Layout::read(dir.path()).unwrap(), Some(Layout::new(3)));
}

#[test]
fn a_missing_partition_file_is_refused_not_recreated() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = PartitionedStorage::open_with(dir.path(), config(2)).unwrap();
        for i in 0..20 {
            block(Storage::append(&s, req(&format!("r{i}"), "counter", 1, 1))).unwrap();
        }
    }
    std::fs::remove_dir_all(partition_dir(dir.path(), 1)).unwrap();
    let e = PartitionedStorage::open_with(dir.path(), config(2)).unwrap_err();
    assert!(
        matches!(&e, StorageError::Layout { path, .. } if path.contains("partition-1")),
        "{e}"
    );
    assert!(!partition_dir(dir.path(), 1).exists(), "nothing recreated");
    // A damaged manifest is refused too, naming the file.
    std::fs::write(dir.path().join(LAYOUT_FILE_NAME), "partitions = \"x\"").unwrap();
    let e = PartitionedStorage::open_with(dir.path(), config(2)).unwrap_err();
    assert!(e.to_string().contains(LAYOUT_FILE_NAME), "{e}");
}

#[test]
fn the_offline_check_reports_a_realm_in_the_wrong_partition() {
    let dir = tempfile::tempdir().unwrap();
    let misplaced = {
        let s = PartitionedStorage::open_with(dir.path(), config(2)).unwrap();
        for i in 0..10 {
            block(Storage::append(&s, req(&format!("r{i}"), "counter", 1, 1))).unwrap();
        }
        // A realm whose home is partition 1, written into partition 0.
        let name = (0..)
            .map(|i| format!("stray-{i}"))
            .find(|n| s.partition_of(&id(n)) == 1)
            .unwrap();
        s.partition(0)
            .append_blocking(req(&name, "counter", 1, 1))
            .unwrap();
        name
    };
    let report = check::check(dir.path()).unwrap();
    assert_eq!(report.integrity, "ok");
    assert_eq!(report.realms, 11);
    assert_eq!(report.damage_count, 1, "{report:?}");
    let d = &report.damage[0];
    assert_eq!(d.partition, Some(0));
    assert_eq!(d.realm.as_deref(), Some(misplaced.as_str()));
    assert!(d.reason.contains("hashes to partition 1"), "{}", d.reason);
}

#[test]
fn health_is_the_worst_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let s = PartitionedStorage::open_with(dir.path(), config(2)).unwrap();
    assert!(Storage::health(&s).writable);
    let name = (0..)
        .map(|i| format!("h-{i}"))
        .find(|n| s.partition_of(&id(n)) == 1)
        .unwrap();
    s.partition(1).fault_injector().set_disk_full(true);
    let e = block(Storage::append(&s, req(&name, "counter", 1, 1))).unwrap_err();
    assert!(e.is_transient(), "{e}");
    let h = Storage::health(&s);
    assert!(!h.writable && h.no_space, "{h:?}");
    // The other partition still takes writes.
    let other = (0..)
        .map(|i| format!("h-{i}"))
        .find(|n| s.partition_of(&id(n)) == 0)
        .unwrap();
    block(Storage::append(&s, req(&other, "counter", 1, 1))).unwrap();
    s.partition(1).fault_injector().set_disk_full(false);
}

/// The model test's realms (`m/0` … `m/3`) land in more than one partition
/// for every count it draws, so it exercises the routing.
#[test]
fn the_model_tests_realms_spread_over_partitions() {
    for n in 2..4 {
        let homes: BTreeSet<usize> = (0..4)
            .map(|r| super::layout::partition_of(&format!("m/{r}"), n))
            .collect();
        assert!(homes.len() > 1, "{n} partitions: all in {homes:?}");
    }
}
