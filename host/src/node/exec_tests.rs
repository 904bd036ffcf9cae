//! Unit tests of the plugin-execution pool.

use std::sync::Arc;
use std::sync::mpsc;

use super::*;

fn pool(threads: usize, max_per_type: usize, max_queued: usize) -> Arc<ExecPool> {
    Arc::new(ExecPool::new(&ExecConfig {
        threads,
        max_per_type,
        max_queued,
        max_queued_per_type: max_queued,
        heavy_call_micros: 2_000,
    }))
}

/// Occupy one slot of `realm_type` until the returned sender is dropped or
/// sent to; returns once the call is running.
async fn hold(
    pool: &Arc<ExecPool>,
    realm_type: &'static str,
) -> (
    mpsc::Sender<()>,
    tokio::task::JoinHandle<Result<(), NodeError>>,
) {
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
    let p = pool.clone();
    let task = tokio::spawn(async move {
        p.run(realm_type, move || {
            let _ = started_tx.send(());
            let _ = release_rx.recv();
        })
        .await
    });
    started_rx.await.expect("the held call started");
    (release_tx, task)
}

/// Yield until the pool shows `n` waiting calls (they enqueue on their first
/// poll; no timing involved).
async fn until_queued(pool: &ExecPool, n: usize) {
    while pool.stats().queued < n {
        tokio::task::yield_now().await;
    }
}

#[test]
fn automatic_limits_leave_a_slot_for_other_types() {
    let l = ExecConfig {
        threads: 4,
        ..ExecConfig::default()
    }
    .limits();
    assert_eq!((l.threads, l.max_per_type), (4, 3));
    assert_eq!(l.max_queued_per_type, 2048);
    let one = ExecConfig {
        threads: 1,
        ..ExecConfig::default()
    }
    .limits();
    assert_eq!(one.max_per_type, 1, "a single slot is still usable");
    assert!(ExecConfig::default().limits().threads >= 1);
    let bad = ExecConfig {
        threads: 2,
        max_per_type: 3,
        ..ExecConfig::default()
    };
    assert!(bad.validate().is_err());
    assert!(
        ExecConfig {
            max_queued: 0,
            ..ExecConfig::default()
        }
        .validate()
        .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_with_overloaded() {
    let pool = pool(1, 1, 2);
    pool.mark_heavy("a");
    let (release, held) = hold(&pool, "a").await;
    // Two callers wait (the queue's bound)…
    let mut waiting = Vec::new();
    for i in 0..2u32 {
        let p = pool.clone();
        waiting.push(tokio::spawn(async move { p.run("a", move || i).await }));
    }
    until_queued(&pool, 2).await;
    // …the third is refused at once.
    match pool.run("a", || ()).await {
        Err(NodeError::Overloaded {
            realm_type,
            queued,
            limit,
        }) => {
            assert_eq!((realm_type.as_str(), queued, limit), ("a", 2, 2));
        }
        other => panic!("expected Overloaded, got {other:?}"),
    }
    assert_eq!(pool.stats().rejected, 1);
    release.send(()).unwrap();
    held.await.unwrap().unwrap();
    let mut got = Vec::new();
    for w in waiting {
        got.push(w.await.unwrap().unwrap());
    }
    got.sort_unstable();
    assert_eq!(got, vec![0, 1]);
    let s = pool.stats();
    assert_eq!((s.busy, s.queued, s.completed), (0, 0, 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_type_at_its_cap_leaves_room_for_another() {
    // Two slots, one per type: a type that holds its slot (as a plugin
    // burning its fuel does) and has more callers waiting does not keep
    // another type from running.
    let pool = pool(2, 1, 16);
    assert_eq!(pool.limits().max_per_type, 1);
    pool.mark_heavy("noisy");
    let (release, held) = hold(&pool, "noisy").await;
    let p = pool.clone();
    let noisy_waiter = tokio::spawn(async move { p.run("noisy", || "second").await });
    until_queued(&pool, 1).await;
    for i in 0..20u32 {
        assert_eq!(pool.run("quiet", move || i * 2).await.unwrap(), i * 2);
    }
    let s = pool.stats();
    let noisy = s.by_type.iter().find(|t| t.realm_type == "noisy").unwrap();
    assert_eq!((noisy.busy, noisy.queued), (1, 1));
    release.send(()).unwrap();
    held.await.unwrap().unwrap();
    assert_eq!(noisy_waiter.await.unwrap().unwrap(), "second");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_type_queue_bound_spares_other_types() {
    let pool = Arc::new(ExecPool::new(&ExecConfig {
        threads: 2,
        max_per_type: 1,
        max_queued: 8,
        max_queued_per_type: 1,
        heavy_call_micros: 2_000,
    }));
    pool.mark_heavy("noisy");
    let (release, held) = hold(&pool, "noisy").await;
    let p = pool.clone();
    let waiter = tokio::spawn(async move { p.run("noisy", || ()).await });
    until_queued(&pool, 1).await;
    assert!(matches!(
        pool.run("noisy", || ()).await,
        Err(NodeError::Overloaded { limit: 1, .. })
    ));
    assert_eq!(pool.run("quiet", || 7).await.unwrap(), 7);
    release.send(()).unwrap();
    held.await.unwrap().unwrap();
    waiter.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_panicking_call_fails_alone() {
    let pool = pool(1, 1, 4);
    let r = pool
        .run("boom", || -> u32 { panic!("deliberate test panic") })
        .await;
    match r {
        Err(NodeError::ExecPanicked {
            realm_type,
            message,
        }) => {
            assert_eq!(realm_type, "boom");
            assert!(message.contains("deliberate"), "{message}");
        }
        other => panic!("expected ExecPanicked, got {other:?}"),
    }
    // The pool still runs calls of every type.
    assert_eq!(pool.run("boom", || 1).await.unwrap(), 1);
    assert_eq!(pool.run("other", || 2).await.unwrap(), 2);
    let s = pool.stats();
    assert_eq!((s.busy, s.queued, s.panicked, s.completed), (0, 0, 1, 3));
    // A light call that panics in place fails alone too.
    let r = pool
        .call("light", || -> u32 { panic!("deliberate test panic") })
        .await;
    assert!(matches!(r, Err(NodeError::ExecPanicked { .. })), "{r:?}");
    assert_eq!(pool.stats().panicked, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_types_move_to_the_background_threads() {
    let pool = Arc::new(ExecPool::new(&ExecConfig {
        threads: 2,
        heavy_call_micros: 1,
        ..ExecConfig::default()
    }));
    let spin = || {
        let t = std::time::Instant::now();
        while t.elapsed() < std::time::Duration::from_micros(200) {
            std::hint::spin_loop();
        }
        std::thread::current().name().map(str::to_owned)
    };
    // The first call has no history: a blocking thread (`run` is always on
    // the pool; `call` would have run it in place).
    let first = pool.run("heavy", spin).await.unwrap();
    assert_ne!(
        first.as_deref().map(|n| n.starts_with("realmhost-bg")),
        Some(true)
    );
    // Past the threshold, its calls run on the background threads.
    let mut on_bg = false;
    for _ in 0..4 {
        let name = pool.run("heavy", spin).await.unwrap();
        on_bg |= name.is_some_and(|n| n.starts_with("realmhost-bg"));
    }
    assert!(on_bg);
    assert!(pool.stats().background > 0);
    // A panic there fails one call too, and the threads carry on.
    let r = pool
        .run("heavy", || -> u32 { panic!("deliberate background panic") })
        .await;
    assert!(matches!(r, Err(NodeError::ExecPanicked { .. })), "{r:?}");
    assert_eq!(pool.run("heavy", || 5).await.unwrap(), 5);
    assert_eq!(pool.stats().busy, 0);
}

#[tokio::test]
async fn a_light_type_runs_in_place_and_turns_heavy_when_its_calls_grow() {
    let pool = Arc::new(ExecPool::new(&ExecConfig {
        threads: 2,
        heavy_call_micros: 1_000,
        ..ExecConfig::default()
    }));
    // Light calls take no slot: they run where they are asked for.
    let here = std::thread::current().id();
    for _ in 0..4 {
        let id = pool
            .call("t", || std::thread::current().id())
            .await
            .unwrap();
        assert_eq!(id, here);
    }
    assert_eq!(pool.stats().inline, 4);
    // One long call lifts the type's average past the threshold…
    pool.call("t", || {
        let t = std::time::Instant::now();
        while t.elapsed() < std::time::Duration::from_millis(20) {
            std::hint::spin_loop();
        }
    })
    .await
    .unwrap();
    // …so its next calls run on the pool, capped.
    let id = pool
        .call("t", || std::thread::current().id())
        .await
        .unwrap();
    assert_ne!(id, here);
    let s = pool.stats();
    assert_eq!((s.inline, s.completed), (5, 1));
}

/// A type that mixes short calls with fuel-limit ones stays heavy: one long
/// call caps the lane at once, and a few short calls (encoding, `init`) in
/// between do not bring its next long call back onto the async worker.
#[test]
fn one_long_call_caps_a_lane_and_short_calls_do_not_uncap_it() {
    let p = pool(2, 1, 16);
    let lane = p.lane("noisy");
    assert!(!p.capped(&lane));
    for _ in 0..100 {
        lane.record(5);
    }
    lane.record(30_000);
    assert!(p.capped(&lane), "one fuel-limit call caps the lane");
    for _ in 0..5 {
        lane.record(10);
        assert!(p.capped(&lane), "short calls in between keep it capped");
    }
    // A type whose calls stay short for good becomes light again.
    for _ in 0..40 {
        lane.record(10);
    }
    assert!(!p.capped(&lane));
}
