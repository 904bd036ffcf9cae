//! `realmhost demo`: a node on a fresh data directory under a realistic load.
//!
//! 1. A node opens on a fresh data directory (redb, the built-in example
//!    plugins, the `default` sharding profile).
//! 2. Hundreds of concurrent clients append events to realms of the three
//!    example types, picked with Zipf(0.99) popularity: counters are bumped,
//!    ledgers open accounts and move money (some overdraw and are rejected),
//!    membership realms admit members. Ledgers also move money to other
//!    banks with the transfer saga: a `credit` **message** to the target bank
//!    (usually in another shard: a *crossing*), a timer, and the reply that
//!    confirms or refunds (see `realmhost_plugin_ledger::transfer`).
//! 3. One shard misbehaves: the realms in it are flooded by a handful of bots
//!    (low source diversity → bias alarm), and its banks keep sending credits
//!    that the targets reject. Those outcomes are its crossings' failures:
//!    reputation falls, the gas multiplier rises, and past the threshold the
//!    shard is quarantined and its messages are refused before any plugin
//!    runs (and refunded through their replies).
//! 4. Half-way, every realm is evicted (dirty ones snapshotted); the second
//!    half reloads them from snapshot + event replay.
//! 5. A sample of realms is verified: the live state equals a replay from
//!    scratch, byte for byte.
//!
//! It waits for every message to reach its outcome, and ends with `shard
//! status`, the busiest rows of `shard list`, the analysis of the
//! misbehaving shard, the messages' outcomes and the measured throughput.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use indicatif::ProgressStyle;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::node::{Node, NodeConfig, NodeError};
use crate::realm::{NewEvent, RealmId, shard_of};
use crate::store::ShardingConfig;

/// Options of `realmhost demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Number of realms, spread over the three example realm types.
    #[arg(long, default_value_t = 100_000)]
    realms: usize,
    /// Number of events to append.
    #[arg(long, default_value_t = 300_000)]
    events: u64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 256)]
    clients: usize,
    /// Seed of the workload generator.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Realms verified against a replay from scratch at the end.
    #[arg(long, default_value_t = 200)]
    verify: usize,
    /// Data directory (default: a fresh temporary directory, removed at the end).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

const TYPES: [&str; 3] = ["counter", "ledger", "membership"];

/// Zipf(s) sampler over `0..n` by inverse CDF.
struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, s: f64) -> Self {
        let mut acc = 0.0;
        let mut cdf: Vec<f64> = (1..=n)
            .map(|k| {
                acc += 1.0 / (k as f64).powf(s);
                acc
            })
            .collect();
        for c in &mut cdf {
            *c /= acc;
        }
        Self { cdf }
    }

    fn sample(&self, rng: &mut StdRng) -> usize {
        let u: f64 = rng.random();
        self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1)
    }
}

/// The workload: realm ids, popularity, the misbehaving shard.
struct Workload {
    ids: Vec<RealmId>,
    zipf: Zipf,
    num_shards: usize,
    bad_shard: usize,
    /// Banks of the misbehaving shard (senders of its failing credits).
    bad_banks: Vec<usize>,
    /// The most popular banks, with accounts opened up front: the targets
    /// of transfers.
    top_banks: Vec<usize>,
}

/// Popular banks whose accounts are opened before the load.
const TOP_BANKS: usize = 32;
/// Banks of the misbehaving shard that send its failing credits.
const BAD_BANKS: usize = 8;
/// How long a transfer's credit may take (its time-to-live) before it is
/// answered `expired` and refunded.
const TRANSFER_TIMEOUT_MS: u64 = 2_000;

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    rejected: AtomicU64,
    failed: AtomicU64,
}

impl Workload {
    fn realm_type(i: usize) -> &'static str {
        TYPES[i % 3]
    }

    /// Ledger realms are the indices `i` with `i % 3 == 1`.
    fn banks(n: usize) -> impl Iterator<Item = usize> {
        (0..n).filter(|i| i % 3 == 1)
    }

    /// A transfer saga started at bank `from`: to a popular bank's account,
    /// or, from the misbehaving shard, to an account that does not exist.
    fn transfer(&self, rng: &mut StdRng, n: u64, from: usize, failing: bool) -> NewEvent {
        use realmhost_plugin_ledger::Tx;
        let to = self.top_banks[rng.random_range(0..self.top_banks.len())];
        let tx = Tx::TransferOut {
            from_bank: self.ids[from].to_string(),
            account: format!("acct-{}", if failing { 0 } else { rng.random_range(0..3) }),
            to_bank: self.ids[to].to_string(),
            to_account: if failing {
                format!("ghost-{n}")
            } else {
                format!("acct-{}", rng.random_range(3..6))
            },
            amount: rng.random_range(1..50),
            transfer_id: format!("t-{n}"),
            timeout_ms: Some(TRANSFER_TIMEOUT_MS),
        };
        NewEvent {
            realm_id: self.ids[from].clone(),
            realm_type: "ledger".into(),
            kind: "demo".into(),
            payload: realmhost_guest::encode_payload(&tx),
            source: format!("client-{}", rng.random_range(0..20_000)),
            source_realm: None,
        }
    }

    fn event(&self, rng: &mut StdRng, n: u64) -> NewEvent {
        // Two in a hundred events: a bank of the misbehaving shard sends a
        // credit its target will reject.
        if !self.bad_banks.is_empty() && rng.random_bool(0.02) {
            let from = self.bad_banks[rng.random_range(0..self.bad_banks.len())];
            return self.transfer(rng, n, from, true);
        }
        let target = self.zipf.sample(rng);
        let id = self.ids[target].clone();
        let ty = Self::realm_type(target);
        let in_bad_shard = shard_of(id.as_str(), self.num_shards) == self.bad_shard;
        // The misbehaving shard is flooded by three bots; everyone else by many clients.
        let source = if in_bad_shard {
            format!("bot-{}", rng.random_range(0..3))
        } else {
            format!("client-{}", rng.random_range(0..20_000))
        };
        let payload = match ty {
            "counter" => realmhost_guest::encode_payload(&realmhost_plugin_counter::Op::Add(
                rng.random_range(-5..=10),
            )),
            "ledger" => {
                use realmhost_plugin_ledger::Tx;
                let acct = |i: u32| format!("acct-{i}");
                let tx = match rng.random_range(0..10) {
                    0..=1 => Tx::Open {
                        account: acct(rng.random_range(0..6)),
                    },
                    2..=5 => Tx::Deposit {
                        account: acct(rng.random_range(0..6)),
                        amount: rng.random_range(1..100),
                    },
                    6 => Tx::Withdraw {
                        account: acct(rng.random_range(0..6)),
                        amount: rng.random_range(1..150),
                    },
                    7 => return self.transfer(rng, n, target, false),
                    _ => Tx::Transfer {
                        from: acct(rng.random_range(0..3)),
                        to: acct(rng.random_range(3..6)),
                        amount: rng.random_range(1..80),
                    },
                };
                realmhost_guest::encode_payload(&tx)
            }
            _ => {
                use realmhost_plugin_membership::Change;
                let change = match rng.random_range(0..10) {
                    0..=2 => Change::Join {
                        member: format!("member-{}", rng.random_range(0..40)),
                    },
                    3..=5 => Change::Trust {
                        member: format!("member-{}", rng.random_range(0..40)),
                        delta: rng.random_range(-0.2..0.3),
                    },
                    _ => Change::Join {
                        member: format!("visitor-{n}"),
                    },
                };
                realmhost_guest::encode_payload(&change)
            }
        };
        NewEvent {
            realm_id: id,
            realm_type: ty.to_owned(),
            kind: "demo".into(),
            payload,
            source,
            source_realm: None,
        }
    }

    /// Open the accounts transfers use: the popular banks' six accounts
    /// (with funds in the first three), and a funded account at each bank
    /// of the misbehaving shard.
    async fn open_banks(&self, node: &Node) -> Result<()> {
        use realmhost_plugin_ledger::Tx;
        let mut setup = Vec::new();
        for &b in &self.top_banks {
            for a in 0..6 {
                setup.push((
                    b,
                    Tx::Open {
                        account: format!("acct-{a}"),
                    },
                ));
            }
            for a in 0..3 {
                setup.push((
                    b,
                    Tx::Deposit {
                        account: format!("acct-{a}"),
                        amount: 1_000,
                    },
                ));
            }
        }
        for &b in &self.bad_banks {
            setup.push((
                b,
                Tx::Open {
                    account: "acct-0".into(),
                },
            ));
            setup.push((
                b,
                Tx::Deposit {
                    account: "acct-0".into(),
                    amount: 1_000_000_000,
                },
            ));
        }
        for (b, tx) in setup {
            node.append(NewEvent {
                realm_id: self.ids[b].clone(),
                realm_type: "ledger".into(),
                kind: "setup".into(),
                payload: realmhost_guest::encode_payload(&tx),
                source: "operator".into(),
                source_realm: None,
            })
            .await?;
        }
        Ok(())
    }
}

fn style() -> Result<ProgressStyle> {
    Ok(
        ProgressStyle::with_template("{msg:>14} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})")
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .progress_chars("=> "),
    )
}

async fn drive(
    node: &Arc<Node>,
    w: &Arc<Workload>,
    range: std::ops::Range<u64>,
    clients: usize,
    seed: u64,
    msg: &'static str,
) -> Result<(Tally, Duration)> {
    let bar = super::term::progress_bar(range.end - range.start)
        .with_style(style()?)
        .with_message(msg);
    let next = Arc::new(AtomicU64::new(range.start));
    let tally = Arc::new(Tally::default());
    let t = Instant::now();
    let mut tasks = Vec::with_capacity(clients);
    for c in 0..clients {
        let (node, w, next, tally, bar) = (
            node.clone(),
            w.clone(),
            next.clone(),
            tally.clone(),
            bar.clone(),
        );
        let end = range.end;
        tasks.push(tokio::spawn(async move {
            let mut rng =
                StdRng::seed_from_u64(seed ^ (c as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= end {
                    break;
                }
                let ev = w.event(&mut rng, n);
                match node.append(ev).await {
                    Ok(_) => tally.ok.fetch_add(1, Ordering::Relaxed),
                    Err(NodeError::Rejected { .. } | NodeError::PluginInvalid { .. }) => {
                        tally.rejected.fetch_add(1, Ordering::Relaxed)
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "append failed");
                        tally.failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
                bar.inc(1);
            }
        }));
    }
    for t in tasks {
        t.await.context("client task")?;
    }
    bar.finish();
    let tally = Arc::try_unwrap(tally).unwrap_or_default();
    Ok((tally, t.elapsed()))
}

/// Run the demo.
pub fn run(args: DemoArgs) -> Result<()> {
    if args.realms < 3 || args.clients == 0 {
        bail!("--realms must be at least 3 and --clients at least 1");
    }
    let (data_dir, temporary) = match &args.data_dir {
        Some(d) => (d.clone(), false),
        None => (
            std::env::temp_dir().join(format!("realmhost-demo-{}", std::process::id())),
            true,
        ),
    };
    if data_dir.exists()
        && std::fs::read_dir(&data_dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(false)
    {
        bail!(
            "{} is not empty: the demo needs a fresh data directory",
            data_dir.display()
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(run_async(&args, data_dir.clone()));
    if temporary {
        let _ = std::fs::remove_dir_all(&data_dir);
    }
    result
}

async fn run_async(args: &DemoArgs, data_dir: PathBuf) -> Result<()> {
    let mut cfg = NodeConfig::with_data_dir(&data_dir);
    cfg.plugins_dir = None;
    cfg.sharding = ShardingConfig::default();
    cfg.monitor.expected_shards = cfg.sharding.num_shards;
    let num_shards = cfg.sharding.num_shards;
    println!(
        "realmhost demo — {} realms, {} events, {} clients",
        args.realms, args.events, args.clients
    );
    println!("data directory: {}\n", data_dir.display());

    let t = Instant::now();
    let node = Node::open(cfg).await?;
    for p in node.plugins().list() {
        println!(
            "  plugin {:<11} {:<6} {}",
            p.info.realm_type, p.info.semver, p.info.version
        );
    }
    println!("  node opened in {:.2?}\n", t.elapsed());

    let ids: Vec<RealmId> = (0..args.realms)
        .map(|i| RealmId::new(format!("{}-{:07}", Workload::realm_type(i), i)))
        .collect::<Result<_, _>>()?;
    // The misbehaving shard: the one holding the second-most popular membership realm.
    let bad_shard = shard_of(ids[5.min(args.realms - 1)].as_str(), num_shards);
    let bad_banks: Vec<usize> = Workload::banks(args.realms)
        .filter(|&i| shard_of(ids[i].as_str(), num_shards) == bad_shard)
        .take(BAD_BANKS)
        .collect();
    let top_banks: Vec<usize> = Workload::banks(args.realms)
        .filter(|&i| shard_of(ids[i].as_str(), num_shards) != bad_shard)
        .take(TOP_BANKS)
        .collect();
    let w = Arc::new(Workload {
        ids,
        zipf: Zipf::new(args.realms, 0.99),
        num_shards,
        bad_shard,
        bad_banks,
        top_banks,
    });
    w.open_banks(&node).await?;

    let half = args.events / 2;
    let (t1, d1) = drive(&node, &w, 0..half, args.clients, args.seed, "append (1/2)").await?;

    let t = Instant::now();
    let loaded = node.store().len();
    let evicted = node.evict(true).await?;
    println!(
        "  evicted {evicted} of {loaded} realms in {:.2?} (dirty ones snapshotted); reloading on demand\n",
        t.elapsed()
    );

    let loads_before = node.stats().loads;
    let (t2, d2) = drive(
        &node,
        &w,
        half..args.events,
        args.clients,
        args.seed + 1,
        "append (2/2)",
    )
    .await?;
    let reloads = node.stats().loads - loads_before;

    // Verify a sample: live state == replay from scratch.
    let sample: Vec<RealmId> = w.ids.iter().take(args.verify).cloned().collect();
    let bar = super::term::progress_bar(sample.len() as u64)
        .with_style(style()?)
        .with_message("verify");
    let t = Instant::now();
    let (mut verified, mut replayed) = (0, 0);
    for id in &sample {
        match node.verify(id).await {
            Ok(r) if r.matches => {
                verified += 1;
                replayed += r.events;
            }
            Ok(r) => bail!(
                "{}: live state differs from a replay from scratch",
                r.realm_id
            ),
            Err(NodeError::RealmNotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
        bar.inc(1);
    }
    bar.finish();
    let verify_time = t.elapsed();

    // Every saga ends: wait for the last messages (timers included) to
    // reach their outcomes.
    let t = Instant::now();
    let deadline = t + Duration::from_millis(TRANSFER_TIMEOUT_MS * 10);
    while node.stats().messages.pending > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let settle_time = t.elapsed();
    node.persist_monitor().await?;

    let stats = node.stats();
    println!("\n$ realmhost shard status");
    print!("{}", super::status_text(&stats));
    println!("\n$ realmhost shard list --top 8");
    print!("{}", super::list_text(&stats, Some(8)));
    println!("\n$ realmhost shard analyze {bad_shard}   # the misbehaving shard");
    print!("{}", super::analysis_text(&node.analyze(bad_shard)?));

    let ok = t1.ok.load(Ordering::Relaxed) + t2.ok.load(Ordering::Relaxed);
    let rejected = t1.rejected.load(Ordering::Relaxed) + t2.rejected.load(Ordering::Relaxed);
    let failed = t1.failed.load(Ordering::Relaxed) + t2.failed.load(Ordering::Relaxed);
    let total = ok + rejected + failed;
    let secs = (d1 + d2).as_secs_f64();
    println!("\nThroughput");
    println!(
        "  {total} appends in {secs:.2} s: {:.0} appends/s ({:.0} acknowledged-durable events/s)",
        total as f64 / secs,
        ok as f64 / secs
    );
    println!(
        "  first half {:.0}/s (realms created), second half {:.0}/s (after evicting everything; {reloads} realms reloaded from snapshot + replay)",
        (t1.ok.load(Ordering::Relaxed) + t1.rejected.load(Ordering::Relaxed)) as f64
            / d1.as_secs_f64(),
        (t2.ok.load(Ordering::Relaxed) + t2.rejected.load(Ordering::Relaxed)) as f64
            / d2.as_secs_f64()
    );
    println!("  acknowledged {ok}, rejected by plugins {rejected}, failed {failed}");
    println!(
        "  snapshots written {}, loads {} ({} fell back to full replay)",
        stats.snapshots, stats.loads, stats.load_fallbacks
    );
    let m = &stats.messages;
    let settled = m.accepted + m.rejected + m.invalid + m.expired + m.dead_lettered;
    println!("\nMessages between realms (transfer sagas: credit, reply, timer)");
    println!(
        "  sent {}, settled {settled}: accepted {}, rejected {}, invalid {}, expired {}, dead-lettered {}; replies {}",
        m.sent, m.accepted, m.rejected, m.invalid, m.expired, m.dead_lettered, m.replies
    );
    println!(
        "  still pending {} after waiting {settle_time:.2?} for the last ones; mean send-to-outcome {:.1} ms (max {} ms); {} retries",
        m.pending,
        m.latency_ms_sum as f64 / settled.max(1) as f64,
        m.latency_ms_max,
        m.retries
    );
    println!("\nReplay check");
    println!(
        "  {verified} realms rebuilt from {replayed} events in {verify_time:.2?}: every live state equals a replay from scratch"
    );

    node.shutdown().await?;
    if failed > 0 {
        bail!("{failed} appends failed");
    }
    Ok(())
}
