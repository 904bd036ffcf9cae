//! The plugin-execution pool and background jobs through the whole node:
//! a plugin burning its whole fuel budget on many concurrent calls does not
//! keep a healthy realm type from being served, and verify / shadow jobs
//! report progress and can be cancelled.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use realmhost::node::{JobKind, JobState, Node, NodeConfig, NodeError};
use realmhost::realm::{EventRecord, RealmId};
use realmhost::runtime::{LoadOptions, Scope};
use realmhost::storage::AppendRequest;
use realmhost_plugin_artifacts::fixtures;
use realmhost_plugin_ledger::Tx;
use realmhost_tests::ledger_event;

fn config(dir: &std::path::Path) -> NodeConfig {
    let mut c = NodeConfig::with_data_dir(dir);
    c.plugins_dir = None;
    // Two slots, one per realm type, on any machine.
    c.exec.threads = 2;
    c.exec.max_per_type = 1;
    // The hostile realms fault on every call: keep them in service.
    c.parking.faults = 0;
    c.runtime.quarantine_faults = 0;
    c
}

fn id(s: &str) -> RealmId {
    RealmId::new(s).unwrap()
}

fn loop_event() -> EventRecord {
    EventRecord {
        seq: 1,
        kind: "loop".into(),
        payload: Vec::new(),
        source: "noisy".into(),
        source_realm: None,
        timestamp_ms: 1_700_000_000_000,
        source_reputation: 1.0,
        message: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_realms_are_served_while_a_plugin_burns_its_fuel() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::open(config(dir.path())).await.unwrap();
    node.load_plugin(fixtures::HOSTILE.to_vec(), LoadOptions::activate())
        .await
        .unwrap();
    let hostile = node.plugins().get("hostile").unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    // 16 callers, each looping the hostile plugin to its fuel limit.
    let mut noisy = Vec::new();
    for c in 0..16 {
        let (node, stop, p) = (node.clone(), stop.clone(), hostile.clone());
        noisy.push(tokio::spawn(async move {
            let realm = format!("hostile-{c}");
            let base = p.init(&realm).unwrap().value.unwrap().map;
            let mut burned = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let (p, r, m) = (p.clone(), realm.clone(), base.clone());
                let out = node
                    .run_plugin("hostile", move || {
                        p.apply(Scope::new(&r, &m), &loop_event())
                    })
                    .await
                    .unwrap();
                assert!(out.is_err(), "a loop runs out of fuel");
                burned += 1;
            }
            burned
        }));
    }
    // Wait (no timing) until the hostile type holds its share and has
    // callers queued behind it.
    loop {
        let s = node.stats().exec;
        let h = s.by_type.iter().find(|t| t.realm_type == "hostile");
        if h.is_some_and(|h| h.busy == 1 && h.queued > 0) {
            break;
        }
        tokio::task::yield_now().await;
    }
    // Healthy appends, queries and loads keep completing meanwhile.
    let realm = "healthy-ledger";
    node.append(ledger_event(
        realm,
        &Tx::Open {
            account: "a".into(),
        },
    ))
    .await
    .unwrap();
    for i in 0..40u64 {
        let r = node
            .append(ledger_event(
                realm,
                &Tx::Deposit {
                    account: "a".into(),
                    amount: 1,
                },
            ))
            .await
            .unwrap();
        assert_eq!(r.seq, i + 2);
        if i % 10 == 0 {
            node.query(&id(realm), "\"total\"").await.unwrap();
            // A cold load replays on the pool too.
            node.store().remove(realm);
            assert_eq!(node.state(&id(realm)).await.unwrap().seq(), i + 2);
        }
        let s = node.stats().exec;
        let h = s
            .by_type
            .iter()
            .find(|t| t.realm_type == "hostile")
            .unwrap();
        assert!(h.busy <= 1, "the hostile type holds at most its share");
    }
    stop.store(true, Ordering::Relaxed);
    let mut burned = 0;
    for t in noisy {
        burned += t.await.unwrap();
    }
    assert!(burned > 0);
    let report = node.verify(&id(realm)).await.unwrap();
    assert!(report.matches);
    node.shutdown().await.unwrap();
}

/// Store a ledger log of `n` events straight into storage (no node work).
async fn seed(node: &Node, realm: &str, n: u64) {
    let version = node.plugins().get("ledger").unwrap().version();
    let tx = |seq: u64| {
        if seq == 1 {
            Tx::Open {
                account: "a".into(),
            }
        } else {
            Tx::Deposit {
                account: "a".into(),
                amount: 1,
            }
        }
    };
    let events = (1..=n)
        .map(|seq| EventRecord {
            seq,
            kind: "tx".into(),
            payload: realmhost_guest::encode_payload(&tx(seq)),
            source: "tester".into(),
            source_realm: None,
            timestamp_ms: 1_700_000_000_000 + seq,
            source_reputation: 1.0,
            message: None,
        })
        .collect();
    node.storage()
        .append(AppendRequest {
            realm_id: id(realm),
            realm_type: "ledger".into(),
            plugin_version: version,
            events,
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_report_progress_and_can_be_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    // Small batches: the replay takes many chunks, so progress moves and a
    // cancel lands between them.
    c.replay_batch = 10;
    c.exec.threads = 1;
    let node = Node::open(c).await.unwrap();
    seed(&node, "long", 2_000).await;
    seed(&node, "short", 50).await;

    // Done, with full progress and the report as result.
    let job = node.start_verify(id("long"));
    assert_eq!(job.kind, JobKind::Verify);
    let done = node.wait_job(job.id).await.unwrap();
    assert_eq!(done.state, JobState::Done, "{done:?}");
    assert_eq!(done.progress.events_replayed, 2_000);
    assert_eq!(done.progress.events_total, 2_000);
    assert_eq!(
        (done.progress.realms_done, done.progress.realms_total),
        (1, 1)
    );
    assert_eq!(done.result.as_ref().unwrap()["matches"], true);

    let ledger = node.plugins().get("ledger").unwrap().version();
    let shadow = node.start_shadow("ledger", ledger, None);
    let shadow = node.wait_job(shadow.id).await.unwrap();
    assert_eq!(shadow.state, JobState::Done, "{shadow:?}");
    assert_eq!(shadow.progress.realms_done, 2);
    assert_eq!(shadow.progress.events_replayed, 2_050);

    // Cancelled: the pool's one slot is held, so the job cannot get past
    // its first step before the cancel is in.
    let (release, held) = std::sync::mpsc::channel::<()>();
    let (started_tx, started) = tokio::sync::oneshot::channel();
    let holder = {
        let node = node.clone();
        tokio::spawn(async move {
            node.run_plugin("other", move || {
                started_tx.send(()).unwrap();
                held.recv().unwrap();
            })
            .await
        })
    };
    started.await.unwrap();
    node.store().remove("long");
    let job = node.start_shadow("ledger", ledger, None);
    let cancelled = node.cancel_job(job.id).unwrap();
    assert_eq!(cancelled.id, job.id);
    release.send(()).unwrap();
    holder.await.unwrap().unwrap();
    let end = node.wait_job(job.id).await.unwrap();
    assert_eq!(end.state, JobState::Cancelled, "{end:?}");
    assert!(end.progress.events_replayed < 2_050);
    assert!(node.jobs().iter().any(|j| j.id == job.id));

    // The synchronous calls still answer, and show up as jobs.
    assert!(node.verify(&id("short")).await.unwrap().matches);
    assert!(node.cancel_job(u64::MAX).is_none());
    assert!(matches!(
        node.verify(&id("missing")).await,
        Err(NodeError::RealmNotFound(_))
    ));
    let kinds: Vec<_> = node.jobs().iter().map(|j| (j.kind, j.state)).collect();
    assert!(
        kinds.contains(&(JobKind::Verify, JobState::Failed)),
        "{kinds:?}"
    );
    node.shutdown().await.unwrap();
}

async fn call(
    app: &axum::Router,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    use tower::ServiceExt;
    let req = axum::http::Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", "Bearer jobs-read-token")
        .header("content-type", "application/json")
        .body(axum::body::Body::from(
            body.map(|b| b.to_string()).unwrap_or_default(),
        ))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_over_http_start_show_list_and_cancel() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.http.read_token = Some("jobs-read-token".into());
    let node = Node::open(c).await.unwrap();
    seed(&node, "r", 30).await;
    let app = realmhost::node::api::router(node.clone());

    let (status, job) = call(
        &app,
        "POST",
        "/v1/admin/jobs",
        Some(serde_json::json!({ "kind": "verify", "realm_id": "r" })),
    )
    .await;
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_u64().unwrap();
    node.wait_job(id).await.unwrap();
    let (status, job) = call(&app, "GET", &format!("/v1/admin/jobs/{id}"), None).await;
    assert_eq!(status, 200);
    assert_eq!(job["state"], "done", "{job}");
    assert_eq!(job["result"]["matches"], true);
    assert_eq!(job["progress"]["events_replayed"], 30);

    let (status, job) = call(
        &app,
        "POST",
        "/v1/admin/jobs",
        Some(serde_json::json!({ "kind": "shadow", "realm_type": "ledger", "version": "ledger-no-such" })),
    )
    .await;
    assert!(matches!(status, 400 | 404), "{status} {job}");

    let (status, list) = call(&app, "GET", "/v1/admin/jobs", None).await;
    assert_eq!(status, 200);
    assert!(!list["jobs"].as_array().unwrap().is_empty());
    // Cancelling a finished job leaves it as it was.
    let (status, job) = call(&app, "DELETE", &format!("/v1/admin/jobs/{id}"), None).await;
    assert_eq!((status, job["state"].as_str()), (200, Some("done")));
    let (status, err) = call(&app, "GET", "/v1/admin/jobs/999999", None).await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (404, Some("job_not_found"))
    );
    node.shutdown().await.unwrap();
}
