//! The shard log against a real NATS server (one, on a free loopback port;
//! installed with pip if the machine lacks it): a claim fences the previous
//! owner in the log itself, catch-up is idempotent, pipelined writes keep
//! their order.

use std::sync::Arc;

use async_nats::jetstream;
use async_nats::jetstream::message::PublishMessage;

use super::dev::{NatsServers, ensure_nats_server};
use super::log::{Applied, LogEntry, ShardLog, catch_up};
use crate::realm::{EventRecord, RealmId};
use crate::runtime::PluginVersion;
use crate::storage::{
    AppendExtras, AppendRequest, PartitionedStorage, Storage, StorageConfig, StorageError,
};

const STREAM: &str = "RH_t_S0";
const SUBJECT: &str = "rh.t.log.0";

struct Setup {
    _nats: NatsServers,
    dir: tempfile::TempDir,
    js: jetstream::Context,
}

async fn setup() -> Setup {
    ensure_nats_server().expect("nats-server");
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServers::start(1, &dir.path().join("nats")).expect("start nats-server");
    let client = async_nats::connect(nats.urls()).await.unwrap();
    let js = jetstream::new(client);
    js.get_or_create_stream(jetstream::stream::Config {
        name: STREAM.into(),
        subjects: vec![SUBJECT.into()],
        ..Default::default()
    })
    .await
    .unwrap();
    Setup {
        _nats: nats,
        dir,
        js,
    }
}

fn local(s: &Setup, name: &str) -> Arc<dyn Storage> {
    Arc::new(
        PartitionedStorage::open_with(s.dir.path().join(name), StorageConfig::default()).unwrap(),
    )
}

fn append(realm: &str, seq: u64) -> LogEntry {
    LogEntry::Append {
        req: AppendRequest {
            realm_id: RealmId::new(realm).unwrap(),
            realm_type: "counter".into(),
            plugin_version: PluginVersion([1; 32]),
            events: vec![EventRecord {
                seq,
                kind: format!("e{seq}"),
                payload: vec![seq as u8],
                source: "test".into(),
                source_realm: None,
                timestamp_ms: seq,
                source_reputation: 0.5,
                message: None,
            }],
        }
        .into(),
        extras: AppendExtras::default(),
    }
}

async fn last_seq(js: &jetstream::Context) -> u64 {
    js.get_stream(STREAM)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .last_sequence
}

async fn realm_last(local: &Arc<dyn Storage>, realm: &str) -> u64 {
    local
        .realm_meta(&RealmId::new(realm).unwrap())
        .await
        .unwrap()
        .map_or(0, |m| m.last_seq)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_fences_the_previous_owner_in_the_log() {
    let s = setup().await;
    let local_a = local(&s, "a");
    let a = ShardLog::spawn(
        s.js.clone(),
        local_a.clone(),
        0,
        STREAM.into(),
        SUBJECT.into(),
        1 << 20,
    );
    a.open(0, "", "a", 1);
    let r = a.write(append("r", 1)).await.unwrap().unwrap();
    assert!(matches!(r, Applied::Ack(ack) if ack.last_seq == 1));

    // Node b claims the shard at the log's end.
    let claim = LogEntry::Claim {
        node: "b".into(),
        epoch: 2,
    };
    let ack =
        s.js.send_publish(
            SUBJECT,
            PublishMessage::build()
                .payload(claim.encode().into())
                .expected_last_sequence(1)
                .message_id("b.2.claim"),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(ack.sequence, 2);

    // a still believes it owns the shard (paused, partitioned): its write
    // is refused by the log, and nothing of it lands anywhere.
    let refused = a.write(append("r", 2)).await.unwrap();
    assert!(
        matches!(&refused, Err(StorageError::Unavailable(m)) if m.contains("refused")),
        "{refused:?}"
    );
    assert!(a.has_failed());
    assert_eq!(
        last_seq(&s.js).await,
        2,
        "the fenced write is not in the log"
    );
    assert_eq!(realm_last(&local_a, "r").await, 1, "nor in a's local copy");
    // Writes after a failure are refused too (until the shard is claimed again).
    let after = a.write(append("r", 2)).await.unwrap();
    assert!(after.is_err(), "{after:?}");
    assert_eq!(last_seq(&s.js).await, 2);

    // b's copy is built from the log; catching up twice changes nothing.
    let local_b = local(&s, "b");
    assert_eq!(
        catch_up(&s.js, 0, STREAM, &*local_b, 0, 2).await.unwrap(),
        2
    );
    assert_eq!(realm_last(&local_b, "r").await, 1);
    catch_up(&s.js, 0, STREAM, &*local_b, 0, 2).await.unwrap();
    assert_eq!(realm_last(&local_b, "r").await, 1);

    // b writes, pipelined: many in flight, each realm's in seq order.
    let b = ShardLog::spawn(
        s.js.clone(),
        local_b.clone(),
        0,
        STREAM.into(),
        SUBJECT.into(),
        1 << 20,
    );
    b.open(2, "b.2.claim", "b", 2);
    let mut pending = Vec::new();
    for seq in 1..=20u64 {
        for realm in ["p", "q", "r"] {
            let seq = if realm == "r" { seq + 1 } else { seq };
            pending.push(b.write(append(realm, seq)));
        }
    }
    for p in pending {
        p.await.unwrap().unwrap();
    }
    assert_eq!(last_seq(&s.js).await, 62);
    assert_eq!(realm_last(&local_b, "p").await, 20);
    assert_eq!(realm_last(&local_b, "r").await, 21);
    assert_eq!(b.applied(), 62);

    // a's copy catches up from where it was: the same events.
    catch_up(&s.js, 0, STREAM, &*local_a, 1, 62).await.unwrap();
    for realm in ["p", "q", "r"] {
        let id = RealmId::new(realm).unwrap();
        assert_eq!(
            local_a.events_since(&id, 0).await.unwrap(),
            local_b.events_since(&id, 0).await.unwrap(),
            "{realm}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_write_is_answered_and_the_log_goes_on() {
    let s = setup().await;
    let local_a = local(&s, "a");
    let a = ShardLog::spawn(
        s.js.clone(),
        local_a.clone(),
        0,
        STREAM.into(),
        SUBJECT.into(),
        64 * 1024,
    );
    a.open(0, "", "a", 1);
    a.write(append("r", 1)).await.unwrap().unwrap();
    // A gap is the entry's own fault: refused by the local copy, the same
    // on every copy, so the shard stays healthy.
    let gap = a.write(append("r", 5)).await.unwrap();
    assert!(matches!(gap, Err(StorageError::Gap { .. })), "{gap:?}");
    assert!(!a.has_failed());
    // Too big for a log entry: refused before it is published.
    let mut big = append("r", 2);
    if let LogEntry::Append { req, .. } = &mut big {
        let mut r: AppendRequest = req.clone().into();
        r.events[0].payload = vec![0; 100 * 1024];
        *req = r.into();
    }
    let refused = a.write(big).await.unwrap();
    assert!(
        matches!(refused, Err(StorageError::InvalidRequest(_))),
        "{refused:?}"
    );
    a.write(append("r", 2)).await.unwrap().unwrap();
    assert_eq!(realm_last(&local_a, "r").await, 2);
    assert_eq!(
        last_seq(&s.js).await,
        3,
        "the refused-by-copy entry is in the log, the big one not"
    );
    // Closing drains and reports the copy's position.
    assert_eq!(a.close().await, 3);
    let closed = a.write(append("r", 3)).await.unwrap();
    assert!(
        matches!(closed, Err(StorageError::NotOwner { .. })),
        "{closed:?}"
    );
}
