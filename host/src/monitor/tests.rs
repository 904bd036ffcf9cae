//! Formula pins, attack simulations, quarantine life cycle, persistence.

use std::sync::Arc;

use proptest::prelude::*;

use super::*;

const EPS: f64 = 1e-9;

fn monitor(num_shards: usize, config: ShardMonitorConfig) -> (ShardMonitor, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(1_000));
    let m = ShardMonitor::with_clock(num_shards, config, clock.clone()).expect("valid config");
    (m, clock)
}

#[test]
fn config_profiles_match_the_spec() {
    let d = ShardMonitorConfig::default();
    assert_eq!(d.expected_shards, 64);
    assert_eq!(d.bias_threshold, 0.5);
    assert_eq!(d.entropy_decay, 0.9);
    assert_eq!(d.quarantine_failure_threshold, 100);
    assert_eq!(d.reputation_penalty_per_failure, 0.1);
    assert_eq!(d.reputation_bonus_per_success, 0.01);
    assert_eq!(d.max_penalty_multiplier, 5.0);
    assert!(d.auto_quarantine);
    assert!(!ShardMonitorConfig::relaxed().auto_quarantine);
    let s = ShardMonitorConfig::strict();
    assert_eq!(s.quarantine_failure_threshold, 50);
    assert_eq!(s.max_penalty_multiplier, 10.0);
    for c in [d, ShardMonitorConfig::relaxed(), s] {
        c.validate().expect("profiles are valid");
    }
}

#[test]
fn config_validation_names_the_bad_field() {
    let cases: Vec<(&str, ShardMonitorConfig)> = vec![
        (
            "bias_threshold",
            ShardMonitorConfig {
                bias_threshold: f64::NAN,
                ..Default::default()
            },
        ),
        (
            "entropy_decay",
            ShardMonitorConfig {
                entropy_decay: 1.0,
                ..Default::default()
            },
        ),
        (
            "quarantine_failure_threshold",
            ShardMonitorConfig {
                quarantine_failure_threshold: 0,
                ..Default::default()
            },
        ),
        (
            "max_penalty_multiplier",
            ShardMonitorConfig {
                max_penalty_multiplier: 0.5,
                ..Default::default()
            },
        ),
        (
            "entropy_window",
            ShardMonitorConfig {
                entropy_window: 1,
                ..Default::default()
            },
        ),
        (
            "quarantine_cooldown_ms",
            ShardMonitorConfig {
                quarantine_cooldown_ms: Some(0),
                ..Default::default()
            },
        ),
        (
            "reputation_penalty_per_failure",
            ShardMonitorConfig {
                reputation_penalty_per_failure: -0.1,
                ..Default::default()
            },
        ),
    ];
    for (field, c) in cases {
        match c.validate() {
            Err(MonitorError::InvalidConfig(msg)) => assert!(msg.contains(field), "{msg}"),
            other => panic!("{field}: expected InvalidConfig, got {other:?}"),
        }
        assert!(ShardMonitor::new(4, c).is_err());
    }
    assert!(matches!(
        ShardMonitor::new(0, ShardMonitorConfig::default()),
        Err(MonitorError::NoShards)
    ));
}

#[test]
fn config_serde_fills_defaults_and_rejects_unknown_fields() {
    let c: ShardMonitorConfig = serde_json::from_str(r#"{"bias_threshold":0.3}"#).unwrap();
    assert_eq!(c.bias_threshold, 0.3);
    assert_eq!(c.quarantine_failure_threshold, 100);
    assert!(serde_json::from_str::<ShardMonitorConfig>(r#"{"bias_treshold":0.3}"#).is_err());
    let back: ShardMonitorConfig =
        serde_json::from_str(&serde_json::to_string(&ShardMonitorConfig::strict()).unwrap())
            .unwrap();
    assert_eq!(back, ShardMonitorConfig::strict());
}

#[test]
fn penalty_multiplier_is_1_3_5_at_reputation_1_half_0() {
    let c = ShardMonitorConfig::default();
    assert!((c.penalty_multiplier(1.0) - 1.0).abs() < EPS);
    assert!((c.penalty_multiplier(0.5) - 3.0).abs() < EPS);
    assert!((c.penalty_multiplier(0.0) - 5.0).abs() < EPS);
    assert!((c.penalty_multiplier(f64::NAN) - 5.0).abs() < EPS);
    assert!((ShardMonitorConfig::strict().penalty_multiplier(0.0) - 10.0).abs() < EPS);

    // The same through a live monitor: 5 failures → 0.5 → 3×; 10 → 0 → 5×.
    let (m, _) = monitor(2, ShardMonitorConfig::default());
    assert_eq!(m.penalty_multiplier(0), 1.0);
    assert_eq!(m.gas_cost(100, 0), 100);
    for _ in 0..5 {
        m.record_crossing(0, false);
    }
    assert_eq!(m.reputation(0), 0.5);
    assert_eq!(m.penalty_multiplier(0), 3.0);
    assert_eq!(m.gas_cost(100, 0), 300);
    for _ in 0..5 {
        m.record_crossing(0, false);
    }
    assert_eq!(m.reputation(0), 0.0);
    assert_eq!(m.penalty_multiplier(0), 5.0);
    assert_eq!(m.record_gas(0, 100), 500);
    assert_eq!(m.record_gas(1, 100), 100);
    let s = m.shard_snapshot(0).unwrap();
    assert_eq!((s.fuel, s.gas), (100, 500));
}

#[test]
fn reputation_after_k_failures_and_m_successes() {
    let c = ShardMonitorConfig::relaxed();
    for k in 0..15u32 {
        for mm in [0u32, 1, 7, 30, 150] {
            let (m, _) = monitor(1, c.clone());
            for _ in 0..k {
                m.record_crossing(0, false);
            }
            for _ in 0..mm {
                m.record_crossing(0, true);
            }
            // Failures first: 1 − 0.1k floored at 0, then +0.01m capped at 1.
            let expected = ((1.0 - 0.1 * f64::from(k)).max(0.0) + 0.01 * f64::from(mm)).min(1.0);
            assert!(
                (m.reputation(0) - expected).abs() < EPS,
                "k={k} m={mm}: {} vs {expected}",
                m.reputation(0)
            );
            let s = m.shard_snapshot(0).unwrap();
            assert_eq!((s.failures, s.successes), (u64::from(k), u64::from(mm)));
        }
    }
    // Successes cannot bank credit above 1: 50 successes then 3 failures = 0.7.
    let (m, _) = monitor(1, c);
    for _ in 0..50 {
        m.record_crossing(0, true);
    }
    for _ in 0..3 {
        m.record_crossing(0, false);
    }
    assert!((m.reputation(0) - 0.7).abs() < EPS);
}

#[test]
fn health_score_deductions() {
    assert_eq!(health_score(0, 1.0), 100.0);
    assert_eq!(health_score(0, 0.9), 100.0);
    assert_eq!(health_score(0, 0.89), 90.0);
    assert_eq!(health_score(0, 0.7), 90.0);
    assert_eq!(health_score(0, 0.69), 70.0);
    assert_eq!(health_score(1, 1.0), 85.0);
    assert_eq!(health_score(2, 0.5), 40.0);
    assert_eq!(health_score(7, 1.0), 0.0);
    assert_eq!(health_score(0, f64::NAN), 70.0);

    // Through a monitor: one quarantined shard and 50% success → 100−15−10−20.
    let (m, _) = monitor(4, ShardMonitorConfig::relaxed());
    assert_eq!(m.health_score(), 100.0, "no crossings counts as rate 1");
    m.record_crossing(1, true);
    m.record_crossing(2, false);
    m.quarantine(3).unwrap();
    let s = m.snapshot();
    assert_eq!(s.cross_shard_success_rate, 0.5);
    assert_eq!(s.quarantined_count, 1);
    assert_eq!(s.health_score, 55.0);
}

#[test]
fn normalized_entropy_pins() {
    // k equal sources over N events: ln k / ln N.
    assert!((normalized_entropy([64, 64, 64, 64]) - 0.25).abs() < EPS);
    assert!((normalized_entropy(vec![1; 256]) - 1.0).abs() < EPS);
    assert_eq!(normalized_entropy([256]), 0.0);
    assert_eq!(normalized_entropy([1]), 0.0);
    assert_eq!(normalized_entropy(std::iter::empty()), 0.0);
    let three = normalized_entropy([86, 85, 85]);
    assert!((three - 3f64.ln() / 256f64.ln()).abs() < 1e-4, "{three}");
    let mut hashes: Vec<u64> = (0..256).map(|i| i % 4).collect();
    assert!((window_entropy(&mut hashes) - 0.25).abs() < EPS);
}

/// Deterministic pseudo-random numbers (xorshift) so the simulation does not
/// depend on a seed-less RNG.
struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn attack_flooded_shard_raises_bias_alarms_diverse_shards_do_not() {
    let (m, _) = monitor(11, ShardMonitorConfig::default());
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let attackers = ["sybil-a", "sybil-b", "sybil-c"];
    // Interleave: shard 0 is flooded by three sources, shards 1..=10 see
    // events from a population of 5000 independent users.
    for round in 0..4_000 {
        m.record_event(0, attackers[round % 3]);
        for shard in 1..=10 {
            let user = format!("user-{}", rng.next() % 5_000);
            m.record_event(shard, &user);
        }
    }
    let snap = m.snapshot();
    let global = snap.global_entropy.expect("all shards judged");
    assert!(global > 0.9, "diverse shards near 1: {global}");
    let flooded = &snap.shards[0];
    let e0 = flooded.entropy.unwrap();
    assert!((e0 - 3f64.ln() / 256f64.ln()).abs() < 0.01, "{e0}");
    assert!(
        flooded.bias_alarms > 0 && flooded.alarm_active,
        "{flooded:?}"
    );
    for s in &snap.shards[1..] {
        assert_eq!(s.bias_alarms, 0, "{s:?}");
        assert!(!s.alarm_active);
        assert!(s.entropy.unwrap() > 0.9);
    }
    assert_eq!(snap.alarm_active_count, 1);
    assert_eq!(snap.total_events, 44_000);

    let a = m.analyze(0).unwrap();
    assert_eq!(a.verdict, Verdict::Watch);
    assert!(
        a.recommendation
            .starts_with("watch: entropy 0.20 below 0.5 × global"),
        "{}",
        a.recommendation
    );
    let healthy = m.analyze(5).unwrap();
    assert_eq!(healthy.verdict, Verdict::Healthy);
    assert_eq!(healthy.recommendation, "healthy");
}

#[test]
fn low_traffic_shards_are_not_judged() {
    let (m, _) = monitor(2, ShardMonitorConfig::default());
    // One source, but fewer than min_events_for_entropy events.
    for _ in 0..1_000 {
        m.record_event(0, "only-one");
    }
    for i in 0..2_000 {
        m.record_event(1, &format!("u{i}"));
    }
    let s = m.snapshot();
    assert_eq!(s.shards[0].entropy, None);
    assert_eq!(s.shards[0].bias_alarms, 0);
    assert_eq!(s.global_entropy, s.shards[1].entropy);
    // Crossing the minimum makes it count — and alarm.
    for _ in 0..300 {
        m.record_event(0, "only-one");
    }
    let s = m.snapshot();
    assert_eq!(s.shards[0].entropy, Some(0.0));
    assert!(s.shards[0].alarm_active);
}

#[test]
fn attack_failing_crossings_quarantine_the_source_shard_only() {
    let (m, _) = monitor(8, ShardMonitorConfig::default());
    for i in 0..99 {
        assert!(!m.record_crossing(3, false), "crossing {i}");
        assert!(!m.is_quarantined(3));
        m.record_crossing(1, true);
    }
    assert!(m.record_crossing(3, false), "100th failure quarantines");
    assert!(m.is_quarantined(3));
    assert!(matches!(
        m.check_crossing(3),
        Err(MonitorError::Quarantined {
            shard: 3,
            reason: QuarantineReason::Automatic
        })
    ));
    assert!(!m.record_crossing(3, false), "already quarantined");
    for s in (0..8).filter(|&s| s != 3) {
        assert!(!m.is_quarantined(s));
        m.check_crossing(s).unwrap();
        assert_eq!(m.reputation(s), 1.0);
    }
    let row = m.shard_snapshot(3).unwrap();
    assert_eq!(row.quarantine_reason, Some(QuarantineReason::Automatic));
    assert_eq!(row.quarantined_since_ms, Some(1_000));
    assert_eq!(row.quarantine_lifts_at_ms, Some(1_000 + 300_000));
    assert_eq!(row.failures, 101);
    assert_eq!(m.quarantined_shards(), vec![3]);
    let a = m.analyze(3).unwrap();
    assert_eq!(a.verdict, Verdict::Quarantined);
    assert!(
        a.recommendation.starts_with("quarantined (automatic)"),
        "{}",
        a.recommendation
    );
}

#[test]
fn strict_quarantines_at_50_relaxed_never() {
    let (strict, _) = monitor(1, ShardMonitorConfig::strict());
    let (relaxed, _) = monitor(1, ShardMonitorConfig::relaxed());
    for _ in 0..49 {
        strict.record_crossing(0, false);
    }
    assert!(!strict.is_quarantined(0));
    strict.record_crossing(0, false);
    assert!(strict.is_quarantined(0));
    for _ in 0..500 {
        relaxed.record_crossing(0, false);
    }
    assert!(!relaxed.is_quarantined(0));
    let a = relaxed.analyze(0).unwrap();
    assert_eq!(a.verdict, Verdict::QuarantineRecommended);
    assert!(
        a.recommendation
            .starts_with("quarantine: failures 500 ≥ threshold 100"),
        "{}",
        a.recommendation
    );
}

#[test]
fn manual_quarantine_and_release() {
    let (m, clock) = monitor(4, ShardMonitorConfig::default());
    assert!(m.quarantine(2).unwrap());
    assert!(!m.quarantine(2).unwrap(), "already manual");
    assert!(m.is_quarantined(2));
    assert!(matches!(
        m.check_crossing(2),
        Err(MonitorError::Quarantined {
            shard: 2,
            reason: QuarantineReason::Manual
        })
    ));
    clock.advance(365 * 24 * 3_600_000);
    assert!(m.is_quarantined(2), "manual quarantines never expire");
    assert!(m.lift_expired().is_empty());
    assert!(m.release(2).unwrap());
    assert!(!m.release(2).unwrap());
    assert!(!m.is_quarantined(2));
    m.check_crossing(2).unwrap();
    assert!(matches!(
        m.quarantine(4),
        Err(MonitorError::UnknownShard {
            shard: 4,
            num_shards: 4
        })
    ));
    assert!(matches!(
        m.release(9),
        Err(MonitorError::UnknownShard { .. })
    ));
    assert!(matches!(
        m.analyze(9),
        Err(MonitorError::UnknownShard { .. })
    ));
}

#[test]
fn automatic_quarantine_lifts_after_cooldown_and_resets_allowance() {
    let config = ShardMonitorConfig {
        quarantine_failure_threshold: 10,
        quarantine_cooldown_ms: Some(60_000),
        ..Default::default()
    };
    let (m, clock) = monitor(2, config);
    for _ in 0..10 {
        m.record_crossing(0, false);
    }
    assert!(m.is_quarantined(0));
    clock.advance(59_999);
    assert!(m.is_quarantined(0));
    clock.advance(1);
    assert!(!m.is_quarantined(0), "lifted at since + cool-down");
    let row = m.shard_snapshot(0).unwrap();
    assert_eq!((row.failures, row.failures_since_release), (10, 0));
    assert_eq!(row.reputation, 0.0, "reputation is not forgiven");
    // A fresh allowance: 9 more failures do not re-quarantine, the 10th does.
    for _ in 0..9 {
        m.record_crossing(0, false);
    }
    assert!(!m.is_quarantined(0));
    m.record_crossing(0, false);
    assert!(m.is_quarantined(0));
    // lift_expired releases it on a timer, too.
    clock.advance(60_000);
    assert_eq!(m.lift_expired(), vec![0]);
    assert!(!m.is_quarantined(0));

    // A manual quarantine replaces an automatic one and does not expire.
    for _ in 0..10 {
        m.record_crossing(1, false);
    }
    assert!(m.is_quarantined(1));
    assert!(m.quarantine(1).unwrap());
    clock.advance(10 * 60_000);
    assert!(m.is_quarantined(1));
    assert_eq!(
        m.shard_snapshot(1).unwrap().quarantine_reason,
        Some(QuarantineReason::Manual)
    );

    // No cool-down: an automatic quarantine stays until released by hand.
    let (m, clock) = monitor(
        1,
        ShardMonitorConfig {
            quarantine_failure_threshold: 1,
            quarantine_cooldown_ms: None,
            ..Default::default()
        },
    );
    m.record_crossing(0, false);
    clock.advance(u64::MAX / 2);
    assert!(m.is_quarantined(0));
}

#[test]
fn out_of_range_shards_are_neutral_on_the_hot_path() {
    let (m, _) = monitor(2, ShardMonitorConfig::default());
    m.record_event(2, "x");
    assert!(!m.record_crossing(7, false));
    assert!(!m.is_quarantined(7));
    assert_eq!(m.reputation(7), 1.0);
    assert_eq!(m.record_gas(7, 10), 10);
    assert!(matches!(
        m.check_crossing(2),
        Err(MonitorError::UnknownShard { .. })
    ));
    assert_eq!(m.snapshot().total_events, 0);
}

#[test]
fn export_import_roundtrip_keeps_the_record() {
    let config = ShardMonitorConfig {
        quarantine_failure_threshold: 20,
        ..Default::default()
    };
    let (m, _) = monitor(6, config.clone());
    for i in 0..3_000 {
        m.record_event(0, ["a", "b", "c"][i % 3]);
        for s in 1..6 {
            m.record_event(s, &format!("user-{s}-{i}"));
        }
    }
    for _ in 0..25 {
        m.record_crossing(1, false);
    }
    for _ in 0..7 {
        m.record_crossing(2, false);
        m.record_crossing(2, true);
    }
    m.quarantine(4).unwrap();
    m.record_gas(2, 1_000);
    let before = m.snapshot();
    let bytes = m.export_state();

    // "Restart": a fresh monitor with the same shard count.
    let (fresh, _) = monitor(6, config.clone());
    fresh.import_state(&bytes).unwrap();
    let after = fresh.snapshot();
    assert_eq!(after.shards, before.shards);
    assert_eq!(after.global_entropy, before.global_entropy);
    assert!(fresh.is_quarantined(1) && fresh.is_quarantined(4));
    assert_eq!(fresh.reputation(1), 0.0);
    assert!(matches!(
        fresh.check_crossing(4),
        Err(MonitorError::Quarantined {
            reason: QuarantineReason::Manual,
            ..
        })
    ));
    assert_eq!(fresh.export_state()[..6], bytes[..6]);

    // Errors leave the monitor untouched.
    let (other, _) = monitor(5, config);
    assert!(matches!(
        other.import_state(&bytes),
        Err(MonitorError::ShardCountMismatch {
            expected: 5,
            found: 6
        })
    ));
    assert_eq!(other.snapshot().total_events, 0);
    assert!(matches!(
        fresh.import_state(b"nope"),
        Err(MonitorError::NotMonitorState)
    ));
    let mut v2 = bytes.clone();
    v2[4] = 2;
    assert!(matches!(
        fresh.import_state(&v2),
        Err(MonitorError::UnsupportedVersion {
            found: 2,
            supported: 1
        })
    ));
    let mut trailing = bytes.clone();
    trailing.push(0);
    assert!(matches!(
        fresh.import_state(&trailing),
        Err(MonitorError::Corrupt(_))
    ));
    assert!(matches!(
        fresh.import_state(&bytes[..bytes.len() - 1]),
        Err(MonitorError::Decode(_))
    ));
    assert_eq!(fresh.snapshot().shards, before.shards);
}

#[test]
fn import_rejects_impossible_values() {
    let (m, _) = monitor(1, ShardMonitorConfig::default());
    let mut state = persist_test_state();
    state.shards[0].reputation = 1.5;
    let bytes = persist::encode_for_test(&state);
    assert!(
        matches!(m.import_state(&bytes), Err(MonitorError::Corrupt(msg)) if msg.contains("reputation"))
    );
    let mut state = persist_test_state();
    state.shards[0].entropy = Some(f64::INFINITY);
    assert!(matches!(
        m.import_state(&persist::encode_for_test(&state)),
        Err(MonitorError::Corrupt(_))
    ));
}

fn persist_test_state() -> persist::StateV1 {
    let (m, _) = monitor(1, ShardMonitorConfig::default());
    persist::decode_for_test(&m.export_state())
}

#[test]
fn concurrent_updates_are_not_lost() {
    let m = Arc::new(monitor(4, ShardMonitorConfig::relaxed()).0);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let m = Arc::clone(&m);
            std::thread::spawn(move || {
                for i in 0..5_000 {
                    let shard = (i + t) % 4;
                    m.record_event(shard, &format!("s{}", i % 97));
                    m.record_crossing(shard, i % 10 != 0);
                    let _ = m.reputation(shard);
                    let _ = m.is_quarantined(shard);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let s = m.snapshot();
    assert_eq!(s.total_events, 20_000);
    assert_eq!(s.total_crossings, 20_000);
    assert_eq!(s.total_failures, 2_000);
    for row in &s.shards {
        assert!((0.0..=1.0).contains(&row.reputation));
    }
}

#[test]
fn snapshot_serializes() {
    let (m, _) = monitor(2, ShardMonitorConfig::default());
    m.quarantine(1).unwrap();
    let snap = m.snapshot();
    let json = serde_json::to_string(&snap).unwrap();
    let back: ShardMonitorSnapshot = serde_json::from_str(&json).unwrap();
    assert_eq!(back, snap);
    let bytes = postcard::to_allocvec(&m.analyze(1).unwrap()).unwrap();
    let a: ShardAnalysis = postcard::from_bytes(&bytes).unwrap();
    assert_eq!(a.verdict, Verdict::Quarantined);
}

proptest! {
    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let (m, _) = monitor(3, ShardMonitorConfig::default());
        let _ = m.import_state(&bytes);
        // Garbage behind a valid header reaches the postcard decoder.
        let mut framed = b"RHSM\x01\x00".to_vec();
        framed.extend_from_slice(&bytes);
        if m.import_state(&framed).is_ok() {
            // Whatever was accepted must be sane.
            for s in m.snapshot().shards {
                prop_assert!((0.0..=1.0).contains(&s.reputation));
            }
        }
    }

    #[test]
    fn flipped_export_bytes_never_panic(pos in 0usize..4096, bit in 0u8..8) {
        let (m, _) = monitor(3, ShardMonitorConfig::default());
        m.record_crossing(1, false);
        m.quarantine(2).unwrap();
        let mut bytes = m.export_state();
        let i = pos % bytes.len();
        bytes[i] ^= 1 << bit;
        let _ = m.import_state(&bytes);
    }

    #[test]
    fn reputation_stays_in_unit_interval(ops in proptest::collection::vec(any::<bool>(), 0..300)) {
        let (m, _) = monitor(1, ShardMonitorConfig::relaxed());
        for ok in ops {
            m.record_crossing(0, ok);
            let r = m.reputation(0);
            prop_assert!((0.0..=1.0).contains(&r));
            let p = m.penalty_multiplier(0);
            prop_assert!((1.0..=5.0).contains(&p));
        }
    }
}
