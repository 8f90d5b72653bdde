//! Prometheus metrics (prometheus-client, text exposition format) of a storage server or view
//! leader: requests and their latency by operation, 2PC outcomes by reason, and gauges that are
//! read from the live state at scrape time (keys held, copies moved, epoch, crashed).

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use crate::error::Result;
use crate::fasthash::FastBuildHasher;
use crate::net::Clock;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Latency buckets: 10 µs doubling to about 5 s.
const LATENCY_BUCKET_START_S: f64 = 0.000_01;
const LATENCY_BUCKETS: u16 = 20;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabel {
    pub op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
    pub reason: &'static str,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(
        LATENCY_BUCKET_START_S,
        2.0,
        LATENCY_BUCKETS,
    ))
}

/// Handles on the series of one operation (they share their values with the families), so that
/// counting a request costs one lookup instead of one per series, each hashing the label.
#[derive(Clone)]
struct OpSeries {
    requests: Counter,
    latency: Histogram,
}

/// Where a `'static` name is (address and length): a key for it that is hashed and compared
/// without reading the text.
type StaticName = (usize, usize);

fn static_name(name: &'static str) -> StaticName {
    (name.as_ptr() as usize, name.len())
}

/// The metrics of one process.
pub struct Metrics {
    registry: Mutex<Registry>,
    /// Keyed by where the operation's name is (address and length): names are `'static`
    /// literals, and should one name be at two places it just gets two entries naming the same
    /// series.
    op_series: RwLock<HashMap<StaticName, OpSeries, FastBuildHasher>>,
    /// The same for the transaction outcomes, keyed by outcome and reason.
    transaction_series: RwLock<HashMap<(StaticName, StaticName), Counter, FastBuildHasher>>,
    requests: Family<OpLabel, Counter>,
    errors: Family<OpLabel, Counter>,
    latency: Family<OpLabel, Histogram, fn() -> Histogram>,
    transactions: Family<OutcomeLabel, Counter>,
    pub keys: Gauge,
    pub copies_sent: Gauge,
    pub keys_dropped: Gauge,
    pub epoch: Gauge,
    pub servers: Gauge,
    pub crashed: Gauge,
    /// A view-leader member's place in its Raft group (registered by [`Metrics::with_raft`]).
    pub raft_term: Gauge,
    pub raft_leader: Gauge,
    pub raft_last_log_index: Gauge,
    pub raft_committed: Gauge,
    pub raft_applied: Gauge,
    pub raft_snapshot: Gauge,
}

impl Metrics {
    pub fn new() -> Self {
        let metrics = Self {
            registry: Mutex::new(Registry::with_prefix("ringleader")),
            op_series: RwLock::new(HashMap::default()),
            transaction_series: RwLock::new(HashMap::default()),
            requests: Family::default(),
            errors: Family::default(),
            latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            transactions: Family::default(),
            keys: Gauge::default(),
            copies_sent: Gauge::default(),
            keys_dropped: Gauge::default(),
            epoch: Gauge::default(),
            servers: Gauge::default(),
            crashed: Gauge::default(),
            raft_term: Gauge::default(),
            raft_leader: Gauge::default(),
            raft_last_log_index: Gauge::default(),
            raft_committed: Gauge::default(),
            raft_applied: Gauge::default(),
            raft_snapshot: Gauge::default(),
        };
        if let Ok(mut registry) = metrics.registry.lock() {
            registry.register(
                "requests",
                "Requests handled, by operation",
                metrics.requests.clone(),
            );
            registry.register(
                "request_errors",
                "Requests answered with an error, by operation",
                metrics.errors.clone(),
            );
            registry.register(
                "request_latency_seconds",
                "Time to handle a request, by operation",
                metrics.latency.clone(),
            );
            registry.register(
                "transactions",
                "2PC transactions decided at this participant, by outcome and reason",
                metrics.transactions.clone(),
            );
            registry.register("keys", "Keys held by this server", metrics.keys.clone());
            registry.register(
                "rebalance_copies_sent",
                "Copies sent to new owners by rebalancing",
                metrics.copies_sent.clone(),
            );
            registry.register(
                "rebalance_keys_dropped",
                "Keys dropped after their new owners confirmed them",
                metrics.keys_dropped.clone(),
            );
            registry.register(
                "epoch",
                "The view epoch this process is at",
                metrics.epoch.clone(),
            );
            registry.register(
                "servers",
                "Storage servers in the view",
                metrics.servers.clone(),
            );
            registry.register(
                "crashed",
                "1 while in a simulated crash",
                metrics.crashed.clone(),
            );
        }
        metrics
    }

    /// The metrics of a view-leader member: these and its Raft gauges (-1 for an index it has
    /// none of yet).
    pub fn with_raft() -> Self {
        let metrics = Self::new();
        if let Ok(mut registry) = metrics.registry.lock() {
            for (name, help, gauge) in [
                (
                    "raft_term",
                    "The Raft term this member is in",
                    &metrics.raft_term,
                ),
                (
                    "raft_leader",
                    "1 while this member leads",
                    &metrics.raft_leader,
                ),
                (
                    "raft_last_log_index",
                    "Index of the last entry in this member's log",
                    &metrics.raft_last_log_index,
                ),
                (
                    "raft_committed_index",
                    "Index of the last entry this member knows committed",
                    &metrics.raft_committed,
                ),
                (
                    "raft_applied_index",
                    "Index of the last entry this member applied",
                    &metrics.raft_applied,
                ),
                (
                    "raft_snapshot_index",
                    "Index of the last entry this member's snapshot covers",
                    &metrics.raft_snapshot,
                ),
            ] {
                registry.register(name, help, gauge.clone());
            }
        }
        metrics
    }

    /// Runs `work`, one request of `op`, and counts it with the time it took on `clock`.
    pub async fn observed<R>(
        &self,
        op: &'static str,
        clock: &dyn Clock,
        work: impl std::future::Future<Output = Result<R>>,
    ) -> Result<R> {
        let started = clock.now();
        let reply = work.await;
        self.observe(op, clock.now().duration_since(started), reply.is_ok());
        reply
    }

    /// Counts one request of `op` that took `elapsed`.
    pub fn observe(&self, op: &'static str, elapsed: Duration, ok: bool) {
        let record = |series: &OpSeries| {
            series.requests.inc();
            series.latency.observe(elapsed.as_secs_f64());
        };
        let key = static_name(op);
        let known = self
            .op_series
            .read()
            .ok()
            .and_then(|all| all.get(&key).map(record))
            .is_some();
        if !known {
            let label = OpLabel { op };
            let series = OpSeries {
                requests: self.requests.get_or_create(&label).clone(),
                latency: self.latency.get_or_create(&label).clone(),
            };
            record(&series);
            if let Ok(mut all) = self.op_series.write() {
                all.insert(key, series);
            }
        }
        if !ok {
            // Rare, and its series appears only once there is an error to count.
            self.errors.get_or_create(&OpLabel { op }).inc();
        }
    }

    /// Counts one transaction decided here.
    pub fn transaction(&self, outcome: &'static str, reason: &'static str) {
        let key = (static_name(outcome), static_name(reason));
        let known = self
            .transaction_series
            .read()
            .ok()
            .and_then(|all| all.get(&key).map(|counter| counter.inc()))
            .is_some();
        if !known {
            let counter = self
                .transactions
                .get_or_create(&OutcomeLabel { outcome, reason })
                .clone();
            counter.inc();
            if let Ok(mut all) = self.transaction_series.write() {
                all.insert(key, counter);
            }
        }
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        if let Ok(registry) = self.registry.lock() {
            let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
        }
        text
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
