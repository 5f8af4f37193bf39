//! Counters and latency histograms of the pool, and the snapshot types that
//! report them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::assignment::ConnectionId;
use crate::breaker::BreakerState;
use crate::delivery::QueueStats;
use crate::registry::SubscriberId;
use crate::source::{SourceKind, Topic};

/// A monotonic counter shared by the tasks that bump it.
#[derive(Debug, Default)]
pub(crate) struct Counter(AtomicU64);

impl Counter {
    pub(crate) fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Traffic through one connection or one topic.
#[derive(Debug, Default)]
pub(crate) struct Traffic {
    pub(crate) messages: Counter,
    pub(crate) rows: Counter,
    pub(crate) bytes: Counter,
    pub(crate) malformed: Counter,
}

/// Latencies from the upstream's event time to delivery, in microseconds.
/// (`None` only if the histogram's constant bounds were ever refused.)
#[derive(Debug)]
pub(crate) struct Latency(Option<Histogram<u64>>);

impl Default for Latency {
    fn default() -> Self {
        // 1 us .. 1 h at 3 significant digits: about 25 KiB per source.
        Self(Histogram::new_with_bounds(1, 3_600_000_000, 3).ok())
    }
}

impl Latency {
    pub(crate) fn record(&mut self, micros: u64) {
        if let Some(h) = &mut self.0 {
            h.saturating_record(micros.max(1));
        }
    }

    pub(crate) fn summary(&self) -> LatencySummary {
        let Some(h) = &self.0 else {
            return LatencySummary::default();
        };
        let at = |q: f64| Duration::from_micros(h.value_at_quantile(q));
        LatencySummary {
            count: h.len(),
            p50: at(0.50),
            p95: at(0.95),
            p99: at(0.99),
            max: Duration::from_micros(h.max()),
        }
    }
}

/// Percentiles of the time from an upstream event to its delivery into the
/// subscribers' queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LatencySummary {
    /// Deliveries measured.
    pub count: u64,
    /// Median.
    pub p50: Duration,
    /// 95th percentile.
    pub p95: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Largest.
    pub max: Duration,
}

/// One source in a [`PoolSnapshot`].
#[derive(Debug, Clone, PartialEq)]
pub struct SourceStats {
    /// Name.
    pub name: String,
    /// Kind.
    pub kind: SourceKind,
    /// Circuit breaker state.
    pub breaker: BreakerState,
    /// Connections (open or being opened).
    pub connections: usize,
    /// Topics carried.
    pub topics: usize,
    /// Successful connects.
    pub connects: u64,
    /// Failed connect attempts, and connections lost within the pool's
    /// `min_stable` of connecting (which count as failed connects).
    pub connect_failures: u64,
    /// Connections lost after they were up.
    pub lost: u64,
    /// Messages that could not be decoded (skipped).
    pub malformed: u64,
    /// Rows its connections sent for topics they do not carry (dropped).
    pub foreign_rows: u64,
    /// Batches its connections read.
    pub messages: u64,
    /// Rows in them.
    pub rows: u64,
    /// Messages known to be missed on its topics (sources with a sequence
    /// column only).
    pub gaps: u64,
    /// Why the last connect failed or the last connection was lost.
    pub last_error: Option<String>,
    /// Health checks run, and how many failed.
    pub health_checks: u64,
    /// Failed health checks among the last ones (at most 20), as a share.
    pub error_rate: f64,
    /// Time the last health check took.
    pub last_check_latency: Option<Duration>,
    /// Event time -> delivery.
    pub latency: LatencySummary,
}

/// One connection in a [`PoolSnapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionStats {
    /// The source.
    pub source: String,
    /// The connection.
    pub id: ConnectionId,
    /// Whether it is up (false while connecting or backing off).
    pub connected: bool,
    /// Topics assigned to it.
    pub topics: usize,
    /// Batches read.
    pub messages: u64,
    /// Rows read.
    pub rows: u64,
    /// Bytes of Arrow data read.
    pub bytes: u64,
    /// Undecodable messages skipped.
    pub malformed: u64,
}

/// One topic in a [`PoolSnapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicStats {
    /// The topic.
    pub topic: Topic,
    /// The source carrying it.
    pub source: String,
    /// The connection carrying it, if placed.
    pub connection: Option<ConnectionId>,
    /// Subscribers.
    pub subscribers: usize,
    /// Deliveries (per-topic batches) fanned out.
    pub messages: u64,
    /// Rows fanned out.
    pub rows: u64,
    /// Messages known to be missed: sequence numbers never seen (sources
    /// with a sequence column only).
    pub gaps: u64,
    /// Times the connection carrying the topic was lost.
    pub interruptions: u64,
    /// Rows seen twice (while moving between connections) and dropped.
    pub duplicates: u64,
    /// Rows whose sequence number was beyond the pool's window from the
    /// highest seen: delivered without moving it.
    pub jumps: u64,
}

/// One subscriber in a [`PoolSnapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriberStats {
    /// The subscriber.
    pub id: SubscriberId,
    /// Topics subscribed to.
    pub topics: usize,
    /// Queue counters.
    pub queue: QueueStats,
}

/// The pool's state and counters at one moment.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PoolSnapshot {
    /// Per source.
    pub sources: Vec<SourceStats>,
    /// Per connection.
    pub connections: Vec<ConnectionStats>,
    /// Per topic.
    pub topics: Vec<TopicStats>,
    /// Per subscriber.
    pub subscribers: Vec<SubscriberStats>,
}

impl PoolSnapshot {
    /// The source named `name`.
    pub fn source(&self, name: &str) -> Option<&SourceStats> {
        self.sources.iter().find(|s| s.name == name)
    }

    /// The topic `topic`.
    pub fn topic(&self, topic: &str) -> Option<&TopicStats> {
        self.topics.iter().find(|t| &*t.topic == topic)
    }
}
