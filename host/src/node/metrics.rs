//! Prometheus metrics.
//!
//! Counters and histograms on the hot path (append latency, outcomes) are
//! recorded where they happen through the `metrics` facade. Per-shard gauges
//! (loaded realms, hits, misses, evictions, reputation, quarantine) and
//! per-plugin counters (calls, faults, fuel) and the plugin-execution pool
//! (busy, queued, refused, per realm type) are refreshed from the node's
//! statistics at scrape time, so the hot path pays nothing for them.
//!
//! Messages between realms, from the node's message counters at scrape
//! time: gauges `realmhost_messages_pending` (without an outcome) and
//! `realmhost_messages_in_flight` (deliveries running); counters
//! `realmhost_messages_sent_total`, `realmhost_messages_settled_total` by
//! `outcome` (accepted, rejected, invalid, expired, dead_lettered),
//! `realmhost_message_replies_total`, `realmhost_message_retries_total`,
//! `realmhost_message_redelivered_total` and
//! `realmhost_message_latency_ms_total` (send to outcome, summed over
//! settled messages: divided by the settled total it is the mean); gauge
//! `realmhost_message_latency_ms_max` (the longest seen).

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use super::Node;

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Install the process-wide Prometheus recorder (idempotent). Returns false
/// when another recorder was installed first.
pub fn install() -> bool {
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .set_buckets(&[
                    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0,
                ])
                .ok()
                .and_then(|b| b.install_recorder().ok())
        })
        .is_some()
}

/// Refresh the gauges from `node` and render the exposition text.
pub fn render(node: &Node) -> Option<String> {
    let handle = HANDLE.get()?.as_ref()?;
    let stats = node.stats();
    for row in &stats.sharding.shards {
        let shard = row.index.to_string();
        metrics::gauge!("realmhost_shard_loaded_realms", "shard" => shard.clone())
            .set(row.loaded_count as f64);
        metrics::gauge!("realmhost_shard_hits", "shard" => shard.clone())
            .set(row.cache_hits as f64);
        metrics::gauge!("realmhost_shard_misses", "shard" => shard.clone())
            .set(row.cache_misses as f64);
        metrics::gauge!("realmhost_shard_evictions", "shard" => shard).set(row.evictions as f64);
    }
    for s in &stats.monitor.shards {
        let shard = s.shard.to_string();
        metrics::gauge!("realmhost_shard_reputation", "shard" => shard.clone()).set(s.reputation);
        metrics::gauge!("realmhost_shard_quarantined", "shard" => shard.clone())
            .set(if s.quarantined { 1.0 } else { 0.0 });
        metrics::gauge!("realmhost_shard_entropy", "shard" => shard.clone())
            .set(s.entropy.unwrap_or(f64::NAN));
        metrics::gauge!("realmhost_shard_gas", "shard" => shard).set(s.gas as f64);
    }
    metrics::gauge!("realmhost_health_score").set(stats.monitor.health_score);
    let ready = node.readiness();
    metrics::gauge!("realmhost_ready").set(if ready.ready { 1.0 } else { 0.0 });
    metrics::gauge!("realmhost_storage_degraded").set(if stats.storage.writable {
        0.0
    } else {
        1.0
    });
    metrics::gauge!("realmhost_realms_loaded").set(stats.sharding.total_loaded_realms as f64);
    metrics::gauge!("realmhost_snapshots_written").set(stats.snapshots as f64);
    metrics::gauge!("realmhost_realm_loads").set(stats.loads as f64);
    metrics::gauge!("realmhost_parked_realms").set(stats.parked_realms as f64);
    metrics::gauge!("realmhost_unservable_realms").set(stats.unservable_realms as f64);
    metrics::gauge!("realmhost_unserved_realm_types").set(stats.unserved_realm_types.len() as f64);
    let exec = &stats.exec;
    metrics::gauge!("realmhost_exec_threads").set(exec.threads as f64);
    metrics::gauge!("realmhost_exec_busy").set(exec.busy as f64);
    metrics::gauge!("realmhost_exec_queued").set(exec.queued as f64);
    metrics::gauge!("realmhost_exec_completed").set(exec.completed as f64);
    metrics::gauge!("realmhost_exec_rejected").set(exec.rejected as f64);
    metrics::gauge!("realmhost_exec_panicked").set(exec.panicked as f64);
    for t in &exec.by_type {
        let realm_type = t.realm_type.clone();
        metrics::gauge!("realmhost_exec_type_busy", "realm_type" => realm_type.clone())
            .set(t.busy as f64);
        metrics::gauge!("realmhost_exec_type_queued", "realm_type" => realm_type.clone())
            .set(t.queued as f64);
        metrics::gauge!("realmhost_exec_type_rejected", "realm_type" => realm_type)
            .set(t.rejected as f64);
    }
    let m = &stats.messages;
    metrics::gauge!("realmhost_messages_pending").set(m.pending as f64);
    metrics::gauge!("realmhost_messages_in_flight").set(m.in_flight as f64);
    metrics::counter!("realmhost_messages_sent_total").absolute(m.sent);
    for (outcome, n) in [
        ("accepted", m.accepted),
        ("rejected", m.rejected),
        ("invalid", m.invalid),
        ("expired", m.expired),
        ("dead_lettered", m.dead_lettered),
    ] {
        metrics::counter!("realmhost_messages_settled_total", "outcome" => outcome).absolute(n);
    }
    metrics::counter!("realmhost_message_replies_total").absolute(m.replies);
    metrics::counter!("realmhost_message_retries_total").absolute(m.retries);
    metrics::counter!("realmhost_message_redelivered_total").absolute(m.redelivered);
    metrics::counter!("realmhost_message_latency_ms_total").absolute(m.latency_ms_sum);
    metrics::gauge!("realmhost_message_latency_ms_max").set(m.latency_ms_max as f64);
    for p in node.plugins().list() {
        let labels = [
            ("realm_type", p.info.realm_type.clone()),
            ("version", p.info.version.short()),
        ];
        metrics::gauge!("realmhost_plugin_calls", &labels).set(p.calls as f64);
        metrics::gauge!("realmhost_plugin_faults", &labels).set(p.faults as f64);
        metrics::gauge!("realmhost_plugin_fuel", &labels).set(p.fuel as f64);
    }
    handle.run_upkeep();
    Some(handle.render())
}
