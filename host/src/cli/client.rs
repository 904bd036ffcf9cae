//! The operator commands: talk to a running node over its HTTP API.
//!
//! Human-readable tables by default; `--json` prints the node's JSON answer
//! unchanged for scripts.

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::error::ClientError;
use crate::monitor::ShardAnalysis;
use crate::node::{AppendReceipt, NodeStats, VerifyReport};

/// Where the node is and how to talk to it: the options of the commands
/// that talk to a running node (`shard`, `plugin`, `realm`, `jobs`,
/// `messages`), and of no other. They are global within those commands, so
/// they may come before or after the subcommand (`realmhost shard --json status` or
/// `realmhost shard status --json`).
#[derive(Debug, Args)]
pub struct Conn {
    /// Base URL of the node.
    #[arg(
        long,
        global = true,
        env = "REALMHOST_NODE",
        default_value = "http://127.0.0.1:7878"
    )]
    node: String,
    /// Bearer token: the admin token, or the read token for read-only operator commands (verify, shadow, parked, unservable, message listings).
    #[arg(
        long,
        global = true,
        env = super::error::TOKEN_ENV,
        hide_env_values = true
    )]
    token: Option<String>,
    /// Print the node's JSON instead of a table; a failure is then JSON too, on stderr: {"error":{"code":…,"message":…}} (and a non-zero exit code).
    #[arg(long, global = true)]
    json: bool,
}

/// `realmhost shard …`
#[derive(Debug, Subcommand)]
pub enum ShardCmd {
    /// Totals: shards, loaded realms, hit rate, cross-shard success, quarantines.
    Status,
    /// One row per shard; unhealthy shards are marked.
    List {
        /// Show only the N busiest shards (by loaded realms, then activity).
        #[arg(long)]
        top: Option<usize>,
    },
    /// Entropy, bias alarms, failures, reputation and a recommendation for shard N.
    Analyze {
        /// Shard index.
        shard: usize,
    },
    /// Quarantine shard N by hand: its crossings are refused.
    Quarantine {
        /// Shard index.
        shard: usize,
    },
    /// Release shard N from quarantine.
    Release {
        /// Shard index.
        shard: usize,
    },
    /// Evict realms from memory (dirty ones are snapshotted first). Refused
    /// by a node running without lazy loading.
    Evict {
        /// Evict every realm, not only those beyond each shard's limit.
        #[arg(long)]
        all: bool,
    },
}

/// `realmhost realm …`
#[derive(Debug, Subcommand)]
pub enum RealmCmd {
    /// A realm's seq, plugin version and state hash.
    Get {
        /// Realm id.
        id: String,
    },
    /// Append an event given as JSON.
    Append {
        /// Realm id.
        id: String,
        /// Realm type.
        #[arg(long = "type")]
        realm_type: String,
        /// Event JSON, e.g. '{"open":{"account":"alice"}}'.
        #[arg(long)]
        event: String,
        /// Event kind label.
        #[arg(long, default_value = "cli")]
        kind: String,
        /// Source entity.
        #[arg(long, default_value = "cli")]
        source: String,
        /// The realm an imported event came from: for an operator's import
        /// only (needs --token; messages between realms get it from the
        /// host, and it never counts as a crossing).
        #[arg(long)]
        source_realm: Option<String>,
        /// Makes a retry safe: the node appends an event with this key at
        /// most once per realm (within its idempotency window, across
        /// restarts) and answers a retry with the original receipt.
        #[arg(long)]
        idempotency_key: Option<String>,
        /// Append only if the realm is at this seq (0: no events yet);
        /// otherwise the node answers 409 `seq_conflict` with the actual seq.
        #[arg(long)]
        expected_seq: Option<u64>,
    },
    /// Run the realm type's query.
    Query {
        /// Realm id.
        id: String,
        /// Request JSON (default: the plugin's summary).
        request: Option<String>,
    },
    /// A realm's events: seq, kind, source, origin, time and the payload as
    /// its plugin decodes it.
    Events {
        /// Realm id.
        id: String,
        /// Start after this seq.
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// Events per page (at most 1000).
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Follow the pages to the last event.
        #[arg(long)]
        all: bool,
    },
    /// Rebuild from the full log and compare with the live state.
    Verify {
        /// Realm id.
        id: String,
    },
    /// Realms parked after repeated faults (their events keep trapping,
    /// running out of fuel or exceeding a state limit).
    Parked,
    /// Realms the active plugin version of their type cannot rebuild (it
    /// refuses one of their stored events); a swap or rollback to a version
    /// that can read them serves them again.
    Unservable,
    /// Release a parked realm so its events run again.
    Release {
        /// Realm id.
        id: String,
    },
    /// Realms of one type, paginated.
    List {
        /// Realm type.
        #[arg(long = "type")]
        realm_type: String,
        /// Start after this id.
        #[arg(long)]
        after: Option<String>,
        /// Page size.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
}

impl Conn {
    /// True when the node's JSON answer is to be printed as is.
    pub(super) fn json(&self) -> bool {
        self.json
    }
}

pub(super) struct Client<'a> {
    conn: &'a Conn,
    agent: ureq::Agent,
}

impl<'a> Client<'a> {
    pub(super) fn new(conn: &'a Conn) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        Self { conn, agent }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.conn.node.trim_end_matches('/'), path)
    }

    fn finish(&self, resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Result<Value> {
        let mut resp = resp.map_err(|e| ClientError::Unreachable {
            node: self.conn.node.clone(),
            source: Box::new(e),
        })?;
        let status = resp.status();
        let body: Value = resp.body_mut().read_json().unwrap_or(Value::Null);
        if !status.is_success() {
            let field = |name: &str, none: &str| {
                body["error"][name]
                    .as_str()
                    .map_or_else(|| none.to_owned(), str::to_owned)
            };
            return Err(ClientError::Refused {
                status: status.as_u16(),
                code: field("code", "?"),
                message: field("message", "no error body"),
            }
            .into());
        }
        Ok(body)
    }

    pub(super) fn get(&self, path: &str) -> Result<Value> {
        let mut req = self.agent.get(&self.url(path));
        if let Some(t) = &self.conn.token {
            req = req.header("Authorization", &format!("Bearer {t}"));
        }
        self.finish(req.call())
    }

    pub(super) fn post(&self, path: &str, body: &Value) -> Result<Value> {
        let mut req = self.agent.post(&self.url(path));
        if let Some(t) = &self.conn.token {
            req = req.header("Authorization", &format!("Bearer {t}"));
        }
        self.finish(req.send_json(body))
    }

    pub(super) fn delete(&self, path: &str) -> Result<Value> {
        let mut req = self.agent.delete(&self.url(path));
        if let Some(t) = &self.conn.token {
            req = req.header("Authorization", &format!("Bearer {t}"));
        }
        self.finish(req.call())
    }

    pub(super) fn post_bytes(&self, path: &str, body: &[u8]) -> Result<Value> {
        let mut req = self
            .agent
            .post(&self.url(path))
            .header("Content-Type", "application/wasm");
        if let Some(t) = &self.conn.token {
            req = req.header("Authorization", &format!("Bearer {t}"));
        }
        self.finish(req.send(body))
    }
}

pub(super) fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub(super) fn print_json(v: &Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Group digits: 42150 → "42,150".
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `shard status` text, as in the product specification.
pub fn status_text(stats: &NodeStats) -> String {
    format!(
        "Shards: {}\nTotal Loaded Realms: {}\nCache Hit Rate: {:.1}%\nCross-Shard Success Rate: {:.1}%\nQuarantined Shards: {}\n",
        stats.sharding.num_shards,
        thousands(stats.sharding.total_loaded_realms as u64),
        stats.sharding.cache_hit_rate_percent,
        stats.monitor.cross_shard_success_rate * 100.0,
        stats.monitor.quarantined_count,
    )
}

/// `shard list` table. `top` limits it to the busiest shards.
pub fn list_text(stats: &NodeStats, top: Option<usize>) -> String {
    let mut rows: Vec<usize> = (0..stats.sharding.shards.len()).collect();
    if top.is_some() {
        rows.sort_by_key(|&i| {
            let act = stats.monitor.shards.get(i).map_or(0, |m| m.activity);
            std::cmp::Reverse((stats.sharding.shards[i].loaded_count, act))
        });
        rows.truncate(top.unwrap_or(usize::MAX));
    }
    let mut out = format!(
        "{:>5} {:>8} {:>10} {:>8} {:>9} {:>9} {:>8} {:>7}  {}\n",
        "SHARD", "LOADED", "HITS", "MISSES", "EVICTED", "ACTIVITY", "REPUT", "ENTROPY", "STATUS"
    );
    for i in rows {
        let s = &stats.sharding.shards[i];
        let m = stats.monitor.shards.get(i);
        let rep = m.map_or(1.0, |m| m.reputation);
        let entropy = m
            .and_then(|m| m.entropy)
            .map_or("-".to_owned(), |e| format!("{e:.2}"));
        let mark = match m {
            Some(m) if m.quarantined => "✗ quarantined",
            Some(m) if m.alarm_active => "! bias alarm",
            Some(m) if m.reputation < 0.8 => "! low reputation",
            _ => "ok",
        };
        out.push_str(&format!(
            "{:>5} {:>8} {:>10} {:>8} {:>9} {:>9} {:>8.3} {:>7}  {}\n",
            s.index,
            s.loaded_count,
            s.cache_hits,
            s.cache_misses,
            s.evictions,
            m.map_or(0, |m| m.activity),
            rep,
            entropy,
            mark
        ));
    }
    out
}

/// `shard analyze` text.
pub fn analysis_text(a: &ShardAnalysis) -> String {
    let s = &a.shard;
    let f = |v: Option<f64>| v.map_or("n/a (too little traffic)".to_owned(), |e| format!("{e:.3}"));
    format!(
        "Shard {}\n  Activity:          {} events\n  Entropy:           {}\n  Global entropy:    {}\n  Bias alarms:       {}{}\n  Crossings:         {} ok, {} failed ({} since release)\n  Reputation:        {:.3}  (gas multiplier {:.2}×)\n  Gas:               {} (fuel {})\n  Quarantined:       {}\n  Verdict:           {:?}\n  Recommendation:    {}\n",
        s.shard,
        s.activity,
        f(s.entropy),
        f(a.global_entropy),
        s.bias_alarms,
        if s.alarm_active { " (active)" } else { "" },
        s.successes,
        s.failures,
        s.failures_since_release,
        s.reputation,
        s.penalty_multiplier,
        s.gas,
        s.fuel,
        match (s.quarantined, s.quarantine_reason) {
            (true, Some(r)) => format!("yes ({r})"),
            (true, None) => "yes".to_owned(),
            _ => "no".to_owned(),
        },
        a.verdict,
        a.recommendation
    )
}

/// Run a `shard` command.
pub fn shard(conn: &Conn, cmd: ShardCmd) -> Result<()> {
    let c = Client::new(conn);
    match cmd {
        ShardCmd::Status | ShardCmd::List { .. } => {
            let v = c.get("/v1/stats")?;
            if conn.json {
                return print_json(&v);
            }
            let stats: NodeStats =
                serde_json::from_value(v).context("unexpected stats from the node")?;
            match cmd {
                ShardCmd::List { top } => print!("{}", list_text(&stats, top)),
                _ => print!("{}", status_text(&stats)),
            }
        }
        ShardCmd::Analyze { shard } => {
            let v = c.get(&format!("/v1/shards/{shard}"))?;
            if conn.json {
                return print_json(&v);
            }
            let a: ShardAnalysis =
                serde_json::from_value(v["analysis"].clone()).context("unexpected analysis")?;
            print!("{}", analysis_text(&a));
        }
        ShardCmd::Quarantine { shard } | ShardCmd::Release { shard } => {
            let verb = if matches!(cmd, ShardCmd::Quarantine { .. }) {
                "quarantine"
            } else {
                "release"
            };
            let v = c.post(&format!("/v1/admin/shards/{shard}/{verb}"), &json!({}))?;
            if conn.json {
                return print_json(&v);
            }
            let changed = v["changed"].as_bool().unwrap_or(false);
            println!(
                "shard {shard}: {}{}",
                if verb == "quarantine" {
                    "quarantined"
                } else {
                    "released"
                },
                if changed { "" } else { " (no change)" }
            );
        }
        ShardCmd::Evict { all } => {
            let v = c.post("/v1/admin/evict", &json!({ "all": all }))?;
            if conn.json {
                return print_json(&v);
            }
            println!("evicted {} realms", v["evicted"]);
        }
    }
    Ok(())
}

/// Run a `realm` command.
pub fn realm(conn: &Conn, cmd: RealmCmd) -> Result<()> {
    let c = Client::new(conn);
    match cmd {
        RealmCmd::Get { id } => {
            let v = c.get(&format!("/v1/realm?id={}", enc(&id)))?;
            if conn.json {
                return print_json(&v);
            }
            for (k, val) in v.as_object().into_iter().flatten() {
                println!(
                    "{k:<15} {}",
                    val.as_str().map_or_else(|| val.to_string(), str::to_owned)
                );
            }
        }
        RealmCmd::Append {
            id,
            realm_type,
            event,
            kind,
            source,
            source_realm,
            idempotency_key,
            expected_seq,
        } => {
            let payload: Value =
                serde_json::from_str(&event).context("--event is not valid JSON")?;
            let v = c.post(
                "/v1/events",
                &json!({ "realm_id": id, "realm_type": realm_type, "kind": kind, "payload": payload,
                         "source": source, "source_realm": source_realm,
                         "idempotency_key": idempotency_key, "expected_seq": expected_seq }),
            )?;
            if conn.json {
                return print_json(&v);
            }
            let r: AppendReceipt = serde_json::from_value(v)?;
            println!(
                "{} {} seq {} (shard {}, fuel {}, gas {})",
                if r.replayed {
                    "already appended (same idempotency key):"
                } else {
                    "appended"
                },
                r.realm_id,
                r.seq,
                r.shard,
                r.fuel,
                r.gas
            );
        }
        RealmCmd::Query { id, request } => {
            let request: Option<Value> = request
                .map(|r| serde_json::from_str(&r))
                .transpose()
                .context("request is not valid JSON")?;
            let v = c.post("/v1/query", &json!({ "realm_id": id, "request": request }))?;
            if conn.json {
                return print_json(&v);
            }
            print_json(&v["response"])?;
        }
        RealmCmd::Verify { id } => {
            let v = c.get(&format!("/v1/verify?id={}", enc(&id)))?;
            if conn.json {
                return print_json(&v);
            }
            let r: VerifyReport = serde_json::from_value(v)?;
            println!(
                "{}: {} ({} events replayed in {} µs; live {} replay {})",
                r.realm_id,
                if r.matches {
                    "OK, live state equals a replay from scratch"
                } else {
                    "MISMATCH"
                },
                r.events,
                r.micros,
                &r.live_hash[..12],
                &r.replay_hash[..12]
            );
            if !r.matches {
                bail!("verification failed");
            }
        }
        RealmCmd::Parked => {
            let v = c.get("/v1/admin/realms/parked")?;
            if conn.json {
                return print_json(&v);
            }
            let parked = v["parked"].as_array().cloned().unwrap_or_default();
            println!("Parked realms: {}", parked.len());
            for r in &parked {
                println!(
                    "  {:<40} {:<12} {} faults, last: {}",
                    r["realm_id"].as_str().unwrap_or(""),
                    r["realm_type"].as_str().unwrap_or(""),
                    r["faults"],
                    r["last_fault"].as_str().unwrap_or("")
                );
            }
        }
        RealmCmd::Events {
            id,
            mut after,
            limit,
            all,
        } => loop {
            let v = c.get(&format!(
                "/v1/realm/events?id={}&after={after}&limit={limit}",
                enc(&id)
            ))?;
            if conn.json {
                print_json(&v)?;
            } else {
                for e in v["events"].as_array().into_iter().flatten() {
                    let payload = match (&e["payload"], e["decode_error"].as_str()) {
                        (p, None) if !p.is_null() => p.to_string(),
                        (_, err) => format!(
                            "<{} bytes: {}> ({})",
                            e["payload_hex"].as_str().map_or(0, |h| h.len() / 2),
                            e["payload_hex"].as_str().unwrap_or(""),
                            err.unwrap_or("undecodable")
                        ),
                    };
                    let origin = e["source_realm"]
                        .as_str()
                        .map(|r| format!(" from {r}"))
                        .unwrap_or_default();
                    println!(
                        "{:>8}  {:>13}  {:<10} {}{}  {}",
                        e["seq"],
                        e["timestamp_ms"],
                        e["kind"].as_str().unwrap_or(""),
                        e["source"].as_str().unwrap_or(""),
                        origin,
                        payload
                    );
                }
            }
            match v["next_after"].as_u64() {
                Some(n) if all => after = n,
                Some(n) => {
                    if !conn.json {
                        println!("… more: --after {n} (or --all)");
                    }
                    break;
                }
                None => break,
            }
        },
        RealmCmd::Unservable => {
            let v = c.get("/v1/admin/realms/unservable")?;
            if conn.json {
                return print_json(&v);
            }
            let list = v["unservable"].as_array().cloned().unwrap_or_default();
            println!("Unservable realms: {}", list.len());
            for r in &list {
                println!(
                    "  {:<40} {:<12} {} refuses seq {}: {}",
                    r["realm_id"].as_str().unwrap_or(""),
                    r["realm_type"].as_str().unwrap_or(""),
                    r["semver"].as_str().unwrap_or(""),
                    r["seq"],
                    r["reason"].as_str().unwrap_or("")
                );
            }
        }
        RealmCmd::Release { id } => {
            let v = c.post(
                &format!("/v1/admin/realms/release?id={}", enc(&id)),
                &json!({}),
            )?;
            if conn.json {
                return print_json(&v);
            }
            if v["released"].as_bool() == Some(true) {
                println!("released {id}");
            } else {
                println!("{id} was not parked");
            }
        }
        RealmCmd::List {
            realm_type,
            after,
            limit,
        } => {
            let mut path = format!("/v1/realms?type={}&limit={limit}", enc(&realm_type));
            if let Some(a) = after {
                path.push_str(&format!("&after={}", enc(&a)));
            }
            let v = c.get(&path)?;
            if conn.json {
                return print_json(&v);
            }
            for r in v["realms"].as_array().into_iter().flatten() {
                println!(
                    "{:<40} shard {}",
                    r["realm_id"].as_str().unwrap_or(""),
                    r["shard"]
                );
            }
            if let Some(next) = v["next"].as_str() {
                println!("… more: --after {next}");
            }
        }
    }
    Ok(())
}
