//! The in-process source: deterministic synthetic market ticks, no network.
//! The default for examples and benchmarks.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::error::{LiveError, Result};
use arrow::array::{
    ArrayRef, Float64Array, Int64Array, StringArray, TimestampMicrosecondArray, UInt64Array,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use parking_lot::Mutex;

use crate::source::{
    Capabilities, Connection, Source, SourceKind, SourceSpec, Topic, Upstream, now_us,
};

/// The rows the generator produces: `topic`, `seq` (the tick number, the
/// same for a topic on every connection), `price`, `volume`, `ts` (when the
/// tick was due).
pub fn tick_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("topic", DataType::Utf8, false),
        Field::new("seq", DataType::UInt64, false),
        Field::new("price", DataType::Float64, false),
        Field::new("volume", DataType::Int64, false),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            false,
        ),
    ]))
}

/// Settings of a [`GeneratorSource`].
#[derive(Debug, Clone)]
pub struct GeneratorConfig {
    /// Source name.
    pub name: String,
    /// Topics one connection may carry (`None`: no limit); the generator
    /// refuses more, as a capped upstream would.
    pub max_topics_per_connection: Option<usize>,
    /// Time between two ticks of a topic. Tick `n` is due at `n * interval`
    /// after the Unix epoch, on every connection, so a topic's ticks have
    /// the same numbers wherever it is carried.
    pub interval: Duration,
    /// Seed: the same seed gives the same prices and volumes per topic.
    pub seed: u64,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        Self {
            name: "generator".into(),
            max_topics_per_connection: None,
            interval: Duration::from_millis(10),
            seed: 42,
        }
    }
}

/// Most ticks a connection that fell behind catches up on in one batch;
/// older ones are skipped, as an upstream would drop them (the pool counts
/// them as the topic's gap).
const MAX_CATCH_UP: u64 = 64;

/// Synthetic market ticks: for topic `t` and tick `n`, price and volume are
/// a pure function of `(seed, t, n)`. A connection carries a topic from the
/// first tick due after it subscribed.
///
/// Faults can be injected ([`drop_connections`](Self::drop_connections),
/// [`refuse_connections`](Self::refuse_connections)) so failover can be
/// exercised without a network.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use tenantfusion_live::{GeneratorConfig, GeneratorSource, Source, Upstream};
/// let source = GeneratorSource::new(GeneratorConfig::default());
/// let mut conn = source.connect().await.unwrap();
/// conn.subscribe(&["AAPL".into(), "MSFT".into()]).await.unwrap();
/// let Upstream::Rows(batch) = conn.next_event().await.unwrap() else { panic!() };
/// assert_eq!(batch.num_rows() % 2, 0);
/// # });
/// ```
#[derive(Debug)]
pub struct GeneratorSource {
    spec: SourceSpec,
    config: GeneratorConfig,
    faults: Arc<Faults>,
}

/// Injected failures, shared by a source and its connections.
#[derive(Debug, Default)]
struct Faults {
    /// Kill switches of the connections opened so far.
    connections: Mutex<Vec<Weak<AtomicBool>>>,
    refuse: AtomicBool,
}

impl GeneratorSource {
    /// A generator with `config`.
    pub fn new(config: GeneratorConfig) -> Self {
        let spec = SourceSpec {
            name: config.name.clone(),
            kind: SourceKind::Generator,
            weight: 1,
            priority: 0,
            capabilities: Capabilities {
                max_topics_per_connection: config.max_topics_per_connection,
                max_connections: None,
                batch_subscribe: true,
                topic_prefixes: vec![String::new()],
                schema: tick_schema(),
                sequence_column: Some("seq".into()),
                timestamp_column: Some("ts".into()),
            },
        };
        Self {
            spec,
            config,
            faults: Arc::default(),
        }
    }

    /// Sets the weight and priority used by the selection strategies.
    pub fn with_balancing(mut self, weight: u32, priority: u32) -> Self {
        self.spec.weight = weight;
        self.spec.priority = priority;
        self
    }

    /// Breaks up to `count` open connections (oldest first): their next read
    /// fails as a lost network connection would. Returns how many broke.
    pub fn drop_connections(&self, count: usize) -> usize {
        let mut connections = self.faults.connections.lock();
        connections.retain(|c| c.strong_count() > 0);
        let mut dropped = 0;
        for killed in connections.iter().filter_map(Weak::upgrade) {
            if dropped == count {
                break;
            }
            if !killed.swap(true, Ordering::SeqCst) {
                dropped += 1;
            }
        }
        dropped
    }

    /// While `refuse` holds, `connect` fails as an unreachable upstream would.
    pub fn refuse_connections(&self, refuse: bool) {
        self.faults.refuse.store(refuse, Ordering::SeqCst);
    }

    /// Connections opened and not yet dropped or closed.
    pub fn open_connections(&self) -> usize {
        self.faults
            .connections
            .lock()
            .iter()
            .filter_map(Weak::upgrade)
            .filter(|k| !k.load(Ordering::SeqCst))
            .count()
    }
}

#[async_trait]
impl Source for GeneratorSource {
    fn spec(&self) -> &SourceSpec {
        &self.spec
    }

    async fn connect(&self) -> Result<Box<dyn Connection>> {
        if self.faults.refuse.load(Ordering::SeqCst) {
            return Err(LiveError::UpstreamUnavailable(format!(
                "generator '{}' refuses connections",
                self.config.name
            )));
        }
        let killed = Arc::new(AtomicBool::new(false));
        self.faults.connections.lock().push(Arc::downgrade(&killed));
        let interval_us = (self.config.interval.as_micros() as u64).max(1);
        Ok(Box::new(GeneratorConnection {
            config: self.config.clone(),
            interval_us,
            topics: BTreeMap::new(),
            next_tick: now_us() / interval_us + 1,
            killed,
            closed: false,
        }))
    }
}

#[derive(Debug)]
struct GeneratorConnection {
    config: GeneratorConfig,
    interval_us: u64,
    /// Subscribed topics and the first tick each is carried from.
    topics: BTreeMap<Topic, u64>,
    /// The first tick not emitted yet.
    next_tick: u64,
    killed: Arc<AtomicBool>,
    closed: bool,
}

impl GeneratorConnection {
    fn tick_now(&self) -> u64 {
        now_us() / self.interval_us
    }

    fn batch(&self, ticks: std::ops::RangeInclusive<u64>) -> Result<RecordBatch> {
        let rows = self.topics.len() * (ticks.end() - ticks.start() + 1) as usize;
        let mut names = Vec::with_capacity(rows);
        let mut seqs = Vec::with_capacity(rows);
        let mut prices = Vec::with_capacity(rows);
        let mut volumes = Vec::with_capacity(rows);
        let mut times = Vec::with_capacity(rows);
        for (topic, from) in &self.topics {
            let topic_bits = self.config.seed ^ fnv1a(topic.as_bytes());
            for tick in ticks.clone().filter(|t| t >= from) {
                let bits = mix(topic_bits ^ mix(tick));
                names.push(topic.as_ref());
                seqs.push(tick);
                prices.push(100.0 + (bits % 10_000) as f64 / 100.0);
                volumes.push(((bits >> 20) % 1_000) as i64 + 1);
                times.push((tick * self.interval_us) as i64);
            }
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(names)),
            Arc::new(UInt64Array::from(seqs)),
            Arc::new(Float64Array::from(prices)),
            Arc::new(Int64Array::from(volumes)),
            Arc::new(TimestampMicrosecondArray::from(times)),
        ];
        RecordBatch::try_new(tick_schema(), columns)
            .map_err(|e| LiveError::Internal(format!("generator batch: {e}")))
    }
}

#[async_trait]
impl Connection for GeneratorConnection {
    async fn subscribe(&mut self, topics: &[Topic]) -> Result<()> {
        let new: BTreeSet<&Topic> = topics
            .iter()
            .filter(|t| !self.topics.contains_key(*t))
            .collect();
        if let Some(cap) = self.config.max_topics_per_connection
            && self.topics.len() + new.len() > cap
        {
            return Err(LiveError::ResourcesExhausted(format!(
                "source '{}' carries at most {cap} topics per connection; \
                 this one has {} and was asked for {} more",
                self.config.name,
                self.topics.len(),
                new.len()
            )));
        }
        let from = self.tick_now() + 1;
        for topic in new {
            self.topics.insert(Arc::clone(topic), from);
        }
        Ok(())
    }

    async fn unsubscribe(&mut self, topics: &[Topic]) -> Result<()> {
        for topic in topics {
            self.topics.remove(topic);
        }
        Ok(())
    }

    async fn next_event(&mut self) -> Result<Upstream> {
        // Nothing changes before the sleep ends, so a dropped call loses nothing.
        loop {
            if self.closed {
                return Ok(Upstream::Closed);
            }
            if self.killed.load(Ordering::SeqCst) {
                return Err(LiveError::UpstreamUnavailable(format!(
                    "generator '{}': connection dropped",
                    self.config.name
                )));
            }
            let due = self.next_tick * self.interval_us;
            let now = now_us();
            if now < due {
                // Wake at least every 50 ms to notice a dropped connection.
                let wait = (due - now).min(50_000);
                tokio::time::sleep(Duration::from_micros(wait)).await;
                continue;
            }
            let last = now / self.interval_us;
            let first = self.next_tick.max(last.saturating_sub(MAX_CATCH_UP - 1));
            self.next_tick = last + 1;
            if !self.topics.is_empty() {
                return self.batch(first..=last).map(Upstream::Rows);
            }
        }
    }

    async fn close(&mut self) -> Result<()> {
        self.closed = true;
        self.topics.clear();
        Ok(())
    }
}

/// splitmix64's finaliser: a fixed, well-mixed function of its input.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// FNV-1a: a hash of a topic name that is the same in every process.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use arrow::array::AsArray;
    use arrow::datatypes::{Float64Type, UInt64Type};

    use super::*;

    fn fast(seed: u64) -> GeneratorSource {
        GeneratorSource::new(GeneratorConfig {
            interval: Duration::from_millis(1),
            seed,
            ..GeneratorConfig::default()
        })
    }

    async fn rows(conn: &mut Box<dyn Connection>) -> RecordBatch {
        match conn.next_event().await.unwrap() {
            Upstream::Rows(batch) => batch,
            other => panic!("expected rows, got {other:?}"),
        }
    }

    /// (topic, seq, price) of `rounds` batches.
    async fn ticks(
        source: &GeneratorSource,
        topics: &[&str],
        rounds: usize,
    ) -> Vec<(String, u64, f64)> {
        let mut conn = source.connect().await.unwrap();
        let topics: Vec<Topic> = topics.iter().map(|t| Topic::from(*t)).collect();
        conn.subscribe(&topics).await.unwrap();
        let mut out = Vec::new();
        for _ in 0..rounds {
            let batch = rows(&mut conn).await;
            let names = batch.column(0).as_string::<i32>();
            let seqs = batch.column(1).as_primitive::<UInt64Type>();
            let prices = batch.column(2).as_primitive::<Float64Type>();
            for i in 0..batch.num_rows() {
                out.push((names.value(i).to_string(), seqs.value(i), prices.value(i)));
            }
        }
        out
    }

    #[tokio::test]
    async fn a_tick_is_a_function_of_seed_topic_and_number() {
        let a = ticks(&fast(7), &["AAPL", "MSFT"], 3).await;
        let b = ticks(&fast(7), &["AAPL"], 3).await;
        let c = ticks(&fast(8), &["AAPL"], 3).await;
        assert!(a.iter().all(|(_, _, p)| (100.0..200.0).contains(p)));
        let price = |v: &[(String, u64, f64)], t: &str, n: u64| {
            v.iter().find(|(x, s, _)| x == t && *s == n).map(|r| r.2)
        };
        // Where two runs saw the same tick of AAPL, they saw the same price.
        let shared: Vec<u64> = a
            .iter()
            .filter(|r| r.0 == "AAPL")
            .map(|r| r.1)
            .filter(|n| price(&b, "AAPL", *n).is_some())
            .collect();
        for n in &shared {
            assert_eq!(price(&a, "AAPL", *n), price(&b, "AAPL", *n));
        }
        // Another seed gives other prices for the same ticks.
        let differ = c
            .iter()
            .filter(|(t, n, p)| price(&b, t, *n).is_some_and(|q| q != *p))
            .count();
        let common = c
            .iter()
            .filter(|(t, n, _)| price(&b, t, *n).is_some())
            .count();
        assert_eq!(differ, common);
        // Within a topic, tick numbers only go up, without holes.
        for t in ["AAPL", "MSFT"] {
            let seqs: Vec<u64> = a.iter().filter(|r| r.0 == t).map(|r| r.1).collect();
            assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{t}: {seqs:?}");
        }
    }

    #[tokio::test]
    async fn the_cap_is_enforced_and_close_ends_the_stream() {
        let source = GeneratorSource::new(GeneratorConfig {
            max_topics_per_connection: Some(2),
            interval: Duration::from_millis(1),
            ..GeneratorConfig::default()
        });
        let mut conn = source.connect().await.unwrap();
        conn.subscribe(&["A".into(), "B".into()]).await.unwrap();
        // Subscribing again to what is carried costs nothing.
        conn.subscribe(&["A".into()]).await.unwrap();
        let err = conn.subscribe(&["C".into()]).await.unwrap_err();
        assert_eq!(err.code(), "RESOURCES_EXHAUSTED");
        conn.unsubscribe(&["A".into()]).await.unwrap();
        conn.subscribe(&["C".into()]).await.unwrap();
        // Ticks made before the change (A and B, or B alone) may still be
        // queued: the first tick carrying C must carry exactly B and C.
        let topics_of = |batch: &RecordBatch| -> Vec<String> {
            let mut topics: Vec<String> = batch
                .column(0)
                .as_string::<i32>()
                .iter()
                .flatten()
                .map(str::to_string)
                .collect();
            topics.dedup();
            topics
        };
        let mut topics = topics_of(&rows(&mut conn).await);
        for _ in 0..1_000 {
            if topics.iter().any(|t| t == "C") {
                break;
            }
            topics = topics_of(&rows(&mut conn).await);
        }
        assert_eq!(topics, ["B", "C"]);
        conn.close().await.unwrap();
        assert!(matches!(conn.next_event().await.unwrap(), Upstream::Closed));
    }

    #[tokio::test]
    async fn injected_faults_drop_and_refuse_connections() {
        let source = fast(1);
        let mut a = source.connect().await.unwrap();
        let mut b = source.connect().await.unwrap();
        a.subscribe(&["X".into()]).await.unwrap();
        b.subscribe(&["X".into()]).await.unwrap();
        assert_eq!(source.open_connections(), 2);
        assert_eq!(source.drop_connections(1), 1);
        assert_eq!(
            a.next_event().await.unwrap_err().code(),
            "UPSTREAM_UNAVAILABLE"
        );
        rows(&mut b).await;
        assert_eq!(source.open_connections(), 1);
        source.refuse_connections(true);
        assert_eq!(
            source.connect().await.unwrap_err().code(),
            "UPSTREAM_UNAVAILABLE"
        );
        source.refuse_connections(false);
        assert!(source.connect().await.is_ok());
    }
}
