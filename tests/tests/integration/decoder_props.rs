//! Records other modules keep in the storage's meta table are read back from
//! disk too: the shard monitor's persisted state must survive random,
//! truncated and bit-flipped bytes with a typed error, never a panic.

use proptest::prelude::*;
use realmhost::monitor::{ShardMonitor, ShardMonitorConfig};

fn monitor() -> ShardMonitor {
    ShardMonitor::new(8, ShardMonitorConfig::default()).unwrap()
}

proptest! {
    #[test]
    fn monitor_state_survives_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
        let _ = monitor().import_state(&bytes);
    }

    #[test]
    fn monitor_state_survives_truncation_and_flips(
        at in any::<proptest::sample::Index>(),
        flip in 1..=255u8,
        cut in any::<proptest::sample::Index>(),
    ) {
        let m = monitor();
        m.record_gas(3, 1000);
        m.record_crossing(2, false);
        let good = m.export_state();
        prop_assert!(monitor().import_state(&good).is_ok());
        let mut bad = good.clone();
        bad[at.index(good.len())] ^= flip;
        let _ = monitor().import_state(&bad);
        let n = cut.index(good.len());
        prop_assert!(monitor().import_state(&good[..n]).is_err(), "a cut at {} of {} imported", n, good.len());
    }
}
