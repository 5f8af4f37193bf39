//! The in-process source: deterministic synthetic market ticks, no network.
//! The default for examples and benchmarks.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use datafusion::arrow::array::{
    ArrayRef, Float64Array, Int64Array, StringArray, TimestampMillisecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use tenantfusion_core::{Result, TenantError};

use crate::source::{Capabilities, Connection, Source, SourceKind, SourceSpec, Topic};

/// The rows the generator produces: `topic`, `price`, `volume`, `ts`.
pub fn tick_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("topic", DataType::Utf8, false),
        Field::new("price", DataType::Float64, false),
        Field::new("volume", DataType::Int64, false),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Millisecond, None),
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
    /// Time between two rounds of ticks (one row per subscribed topic each).
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

/// Synthetic market ticks: for topic `t` and its `n`-th tick, price and
/// volume are a pure function of `(seed, t, n)`.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use tenantfusion_live::{GeneratorConfig, GeneratorSource, Source};
/// let source = GeneratorSource::new(GeneratorConfig::default());
/// let mut conn = source.connect().await.unwrap();
/// conn.subscribe(&["AAPL".into(), "MSFT".into()]).await.unwrap();
/// let batch = conn.next_batch().await.unwrap().unwrap();
/// assert_eq!(batch.num_rows(), 2);
/// # });
/// ```
#[derive(Debug)]
pub struct GeneratorSource {
    spec: SourceSpec,
    config: GeneratorConfig,
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
            },
        };
        Self { spec, config }
    }
}

#[async_trait]
impl Source for GeneratorSource {
    fn spec(&self) -> &SourceSpec {
        &self.spec
    }

    async fn connect(&self) -> Result<Box<dyn Connection>> {
        Ok(Box::new(GeneratorConnection {
            config: self.config.clone(),
            topics: BTreeMap::new(),
            closed: false,
        }))
    }
}

#[derive(Debug)]
struct GeneratorConnection {
    config: GeneratorConfig,
    /// Subscribed topics and how many ticks each has had.
    topics: BTreeMap<Topic, u64>,
    closed: bool,
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
            return Err(TenantError::ResourcesExhausted(format!(
                "source '{}' carries at most {cap} topics per connection; \
                 this one has {} and was asked for {} more",
                self.config.name,
                self.topics.len(),
                new.len()
            )));
        }
        for topic in new {
            self.topics.insert(Arc::clone(topic), 0);
        }
        Ok(())
    }

    async fn unsubscribe(&mut self, topics: &[Topic]) -> Result<()> {
        for topic in topics {
            self.topics.remove(topic);
        }
        Ok(())
    }

    async fn next_batch(&mut self) -> Option<Result<RecordBatch>> {
        if self.closed {
            return None;
        }
        tokio::time::sleep(self.config.interval).await;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let seed = self.config.seed;
        let mut names = Vec::with_capacity(self.topics.len());
        let mut prices = Vec::with_capacity(self.topics.len());
        let mut volumes = Vec::with_capacity(self.topics.len());
        for (topic, seq) in &mut self.topics {
            let bits = mix(seed ^ fnv1a(topic.as_bytes()) ^ mix(*seq));
            names.push(topic.to_string());
            prices.push(100.0 + (bits % 10_000) as f64 / 100.0);
            volumes.push(((bits >> 20) % 1_000) as i64 + 1);
            *seq += 1;
        }
        let rows = names.len();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(names)),
            Arc::new(Float64Array::from(prices)),
            Arc::new(Int64Array::from(volumes)),
            Arc::new(TimestampMillisecondArray::from(vec![now; rows])),
        ];
        Some(
            RecordBatch::try_new(tick_schema(), columns)
                .map_err(|e| TenantError::Internal(format!("generator batch: {e}"))),
        )
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
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::Float64Type;

    use super::*;

    async fn prices(seed: u64, topics: &[&str], rounds: usize) -> Vec<f64> {
        let source = GeneratorSource::new(GeneratorConfig {
            interval: Duration::from_millis(1),
            seed,
            ..GeneratorConfig::default()
        });
        let mut conn = source.connect().await.unwrap();
        let topics: Vec<Topic> = topics.iter().map(|t| Topic::from(*t)).collect();
        conn.subscribe(&topics).await.unwrap();
        let mut out = Vec::new();
        for _ in 0..rounds {
            let batch = conn.next_batch().await.unwrap().unwrap();
            out.extend(
                batch
                    .column(1)
                    .as_primitive::<Float64Type>()
                    .values()
                    .iter(),
            );
        }
        out
    }

    #[tokio::test]
    async fn same_seed_same_ticks_other_seed_other_ticks() {
        let a = prices(7, &["AAPL", "MSFT"], 3).await;
        assert_eq!(a.len(), 6);
        assert_eq!(a, prices(7, &["AAPL", "MSFT"], 3).await);
        assert_ne!(a, prices(8, &["AAPL", "MSFT"], 3).await);
        // A topic's ticks do not depend on which other topics share the connection.
        let alone = prices(7, &["AAPL"], 3).await;
        assert_eq!(alone, [a[0], a[2], a[4]]);
        assert!(a.iter().all(|p| (100.0..200.0).contains(p)));
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
        let batch = conn.next_batch().await.unwrap().unwrap();
        let topics = batch.column(0).as_string::<i32>();
        assert_eq!(topics.iter().flatten().collect::<Vec<_>>(), ["B", "C"]);
        conn.close().await.unwrap();
        assert!(conn.next_batch().await.is_none());
    }
}
