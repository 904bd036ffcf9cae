//! Section `hot` of the node bench: hot realms and skewed traffic, with the
//! baselines in the same run.
//!
//! - **One hot realm**: 64 closed-loop writers appending to one counter
//!   realm, with pipelining (the default) and without (`pipelining = false`:
//!   each append to the realm waits for the previous one to be durable).
//! - **Skew**: 256 closed-loop writers over 100 000 counter realms, each
//!   append to a realm drawn from Zipf(0.99) (rank 1 the hottest), against
//!   the same writers drawing realms uniformly. Rounds alternate
//!   (uniform, Zipf, uniform, Zipf, …) on fresh nodes so that disk and
//!   machine load hit both alike.

use rand_distr::{Distribution, Zipf};

use super::*;

/// Writers on the one hot realm.
const HOT_WRITERS: usize = 64;
/// Realms of the skew case.
const SKEW_REALMS: usize = 100_000;
/// Writers of the skew case.
const SKEW_WRITERS: usize = 256;
/// Zipf exponent of the skew case.
const ZIPF_S: f64 = 0.99;
/// Rounds of each case.
const ROUNDS: usize = 2;

/// One measured run: events/s and ack latency percentiles (ms).
#[derive(Clone, Copy)]
struct Run {
    rate: f64,
    p50: f64,
    p99: f64,
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:>8.0} events/s  ack p50 {:.2} ms  p99 {:.2} ms",
            self.rate, self.p50, self.p99
        )
    }
}

/// How a writer picks the realm of its next append.
#[derive(Clone, Copy)]
enum Pick {
    /// Always realm 0.
    One,
    /// Uniform over all realms.
    Uniform,
    /// Zipf(`ZIPF_S`) over all realms.
    Zipf,
}

/// `writers` closed-loop writers for `d` (after a 500 ms warm-up) on a
/// fresh node over `realms`.
async fn drive(
    writers: usize,
    realms: &Arc<Vec<RealmId>>,
    pick: Pick,
    pipelining: bool,
    d: Duration,
) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = NodeConfig::with_data_dir(dir.path());
    cfg.plugins_dir = None;
    cfg.pipelining = pipelining;
    let node = Node::open(cfg).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let warm = Duration::from_millis(500);
    let zipf = Zipf::new(realms.len() as f64, ZIPF_S).unwrap();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (node, stop, realms) = (node.clone(), stop.clone(), realms.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = SmallRng::seed_from_u64(w as u64);
            let start = Instant::now();
            let mut lat = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let i = match pick {
                    Pick::One => 0,
                    Pick::Uniform => rng.random_range(0..realms.len()),
                    // Samples are ranks 1..=n.
                    Pick::Zipf => (zipf.sample(&mut rng) as usize - 1).min(realms.len() - 1),
                };
                let t = Instant::now();
                node.append(counter_event(&realms[i], w)).await.unwrap();
                if start.elapsed() > warm {
                    lat.push(t.elapsed().as_secs_f64() * 1e3);
                }
            }
            lat
        }));
    }
    tokio::time::sleep(warm + d).await;
    stop.store(true, Ordering::Relaxed);
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    lat.sort_by(f64::total_cmp);
    node.shutdown().await.unwrap();
    Run {
        rate: lat.len() as f64 / d.as_secs_f64(),
        p50: pct(&lat, 0.5),
        p99: pct(&lat, 0.99),
    }
}

fn realms(n: usize) -> Arc<Vec<RealmId>> {
    Arc::new(
        (0..n)
            .map(|i| RealmId::new(format!("hot-{i:06}")).unwrap())
            .collect(),
    )
}

pub(super) async fn hot_section(d: Duration) {
    let one = realms(1);
    let mut on = Vec::new();
    let mut off = Vec::new();
    for _ in 0..ROUNDS {
        on.push(drive(HOT_WRITERS, &one, Pick::One, true, d).await);
        off.push(drive(HOT_WRITERS, &one, Pick::One, false, d).await);
    }
    println!("one hot counter realm, {HOT_WRITERS} writers:");
    for r in &on {
        println!("  pipelined    : {r}");
    }
    for r in &off {
        println!("  not pipelined: {r}");
    }
    let mut ratios: Vec<f64> = on.iter().zip(&off).map(|(a, b)| a.rate / b.rate).collect();
    println!("  pipelined / not (per round): {}", spread(&mut ratios));

    let many = realms(SKEW_REALMS);
    let mut uniform = Vec::new();
    let mut zipf = Vec::new();
    for _ in 0..ROUNDS {
        uniform.push(drive(SKEW_WRITERS, &many, Pick::Uniform, true, d).await);
        zipf.push(drive(SKEW_WRITERS, &many, Pick::Zipf, true, d).await);
    }
    println!("{SKEW_WRITERS} writers over {SKEW_REALMS} counter realms:");
    for r in &uniform {
        println!("  uniform    : {r}");
    }
    for r in &zipf {
        println!("  Zipf({ZIPF_S}): {r}");
    }
    let mut ratios: Vec<f64> = zipf
        .iter()
        .zip(&uniform)
        .map(|(z, u)| z.rate / u.rate)
        .collect();
    println!("  Zipf / uniform (per round): {}", spread(&mut ratios));
}
