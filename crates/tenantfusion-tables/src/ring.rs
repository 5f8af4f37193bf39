//! Bounded, ephemeral partitions: the rows of stream tables.
//!
//! Each partition (a topic of a source-bound stream table, a user of a
//! user-fed one) is a ring of batches with the arrival time of every row,
//! cut by age ([`Retention::ttl`]) and by count ([`Retention::max_rows`]).
//! One ring per partition serves every reader: nothing is copied per user.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use dashmap::DashMap;
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::Result;
use parking_lot::Mutex;
use tenantfusion_core::Clock;

use crate::store::{PartitionKey, PartitionStore};

/// How long and how many rows a stream partition keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Retention {
    /// Rows older than this (by arrival) are dropped; `None` keeps them.
    pub ttl: Option<Duration>,
    /// At most this many rows per partition, newest kept; `None`: no limit.
    pub max_rows: Option<usize>,
}

/// Small batches at the end of a ring are merged once this many have
/// gathered, so a partition fed one row at a time is scanned as a few
/// batches, and each row is copied a bounded number of times.
const MERGE_RUN: usize = 64;
/// Batches of at least this many rows are left alone.
const SMALL_ROWS: usize = 1024;

/// Partitions bounded by a [`Retention`], evicted on every write and read.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use std::sync::Arc;
/// use std::time::Duration;
/// use datafusion::arrow::array::Int64Array;
/// use datafusion::arrow::datatypes::{DataType, Field, Schema};
/// use datafusion::arrow::record_batch::RecordBatch;
/// use tenantfusion_core::ManualClock;
/// use tenantfusion_tables::{PartitionKey, PartitionStore, Retention, RingStore};
///
/// let clock = Arc::new(ManualClock::new(0));
/// let ring = RingStore::new(Retention { ttl: Some(Duration::from_secs(60)), max_rows: Some(2) }, clock.clone());
/// let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
/// let rows = RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![1, 2, 3]))]).unwrap();
/// let key = PartitionKey::Topic("AAPL".into());
/// ring.append(&key, vec![rows]).await.unwrap();
/// assert_eq!(ring.read(&key).await.unwrap()[0].num_rows(), 2); // the newest two
/// clock.advance(Duration::from_secs(61));
/// assert!(ring.read(&key).await.unwrap().is_empty());            // expired
/// # });
/// ```
#[derive(Debug)]
pub struct RingStore {
    retention: Retention,
    clock: Arc<dyn Clock>,
    partitions: DashMap<PartitionKey, Arc<Mutex<Ring>>>,
}

#[derive(Debug, Default)]
struct Ring {
    chunks: VecDeque<Chunk>,
    /// How many chunks at the end are small (under [`SMALL_ROWS`]): kept
    /// as they change rather than counted on every push.
    small_tail: usize,
    rows: usize,
    /// Arrival of the newest row: arrivals never go backwards, even when
    /// the clock does, so every chunk's arrivals stay sorted.
    latest: i64,
}

#[derive(Debug)]
struct Chunk {
    batch: RecordBatch,
    /// Arrival time (µs) of each row, non-decreasing.
    arrived: Vec<i64>,
}

impl RingStore {
    /// An empty store keeping rows by `retention`, aged by `clock`.
    pub fn new(retention: Retention, clock: Arc<dyn Clock>) -> Self {
        Self {
            retention,
            clock,
            partitions: DashMap::new(),
        }
    }

    /// The bounds every partition keeps.
    pub fn retention(&self) -> Retention {
        self.retention
    }

    /// Rows held across all partitions, after eviction.
    pub fn row_count(&self) -> usize {
        let now = self.clock.now_us();
        self.partitions
            .iter()
            .map(|e| {
                let mut ring = e.value().lock();
                ring.evict(now, self.retention);
                ring.rows
            })
            .sum()
    }

    fn ring(&self, key: &PartitionKey) -> Arc<Mutex<Ring>> {
        if let Some(ring) = self.partitions.get(key) {
            return Arc::clone(ring.value());
        }
        Arc::clone(self.partitions.entry(key.clone()).or_default().value())
    }
}

impl Ring {
    fn evict(&mut self, now: i64, retention: Retention) {
        if let Some(ttl) = retention.ttl {
            let ttl = i64::try_from(ttl.as_micros()).unwrap_or(i64::MAX);
            let cutoff = now.saturating_sub(ttl);
            while let Some(first) = self.chunks.front_mut() {
                // Rows that arrived at or before the cutoff are `ttl` old.
                let expired = first.arrived.partition_point(|&at| at <= cutoff);
                if expired == 0 {
                    break;
                }
                self.rows -= expired;
                if expired == first.arrived.len() {
                    self.chunks.pop_front();
                } else {
                    first.drop_front(expired);
                    break;
                }
            }
        }
        if let Some(max) = retention.max_rows {
            while self.rows > max {
                let excess = self.rows - max;
                let Some(first) = self.chunks.front_mut() else {
                    break;
                };
                if first.arrived.len() <= excess {
                    self.rows -= first.arrived.len();
                    self.chunks.pop_front();
                } else {
                    first.drop_front(excess);
                    self.rows -= excess;
                }
            }
        }
        // Only the front changed: chunks of the small tail may be gone, and
        // a front chunk cut below SMALL_ROWS may now start it.
        self.small_tail = self.small_tail.min(self.chunks.len());
        if self.small_tail + 1 == self.chunks.len()
            && self.chunks.front().is_some_and(Chunk::is_small)
        {
            self.small_tail += 1;
        }
    }

    fn push(&mut self, batch: RecordBatch, now: i64) -> Result<()> {
        self.latest = self.latest.max(now);
        self.rows += batch.num_rows();
        self.chunks.push_back(Chunk {
            arrived: vec![self.latest; batch.num_rows()],
            batch,
        });
        self.small_tail = match self.chunks.back().is_some_and(Chunk::is_small) {
            true => self.small_tail + 1,
            false => 0,
        };
        if self.small_tail >= MERGE_RUN {
            let start = self.chunks.len() - self.small_tail;
            let tail: Vec<Chunk> = self.chunks.drain(start..).collect();
            let schema = tail[0].batch.schema();
            let batch = concat_batches(&schema, tail.iter().map(|c| &c.batch))?;
            let arrived = tail.into_iter().flat_map(|c| c.arrived).collect();
            let merged = Chunk { batch, arrived };
            self.small_tail = usize::from(merged.is_small());
            self.chunks.push_back(merged);
        }
        Ok(())
    }
}

impl Chunk {
    fn is_small(&self) -> bool {
        self.arrived.len() < SMALL_ROWS
    }

    fn drop_front(&mut self, n: usize) {
        self.batch = self.batch.slice(n, self.batch.num_rows() - n);
        self.arrived.drain(..n);
    }
}

#[async_trait]
impl PartitionStore for RingStore {
    async fn append(&self, partition: &PartitionKey, batches: Vec<RecordBatch>) -> Result<u64> {
        let now = self.clock.now_us();
        let ring = self.ring(partition);
        let mut ring = ring.lock();
        let mut added = 0;
        for batch in batches.into_iter().filter(|b| b.num_rows() > 0) {
            added += batch.num_rows() as u64;
            ring.push(batch, now)?;
        }
        ring.evict(now, self.retention);
        Ok(added)
    }

    async fn read(&self, partition: &PartitionKey) -> Result<Vec<RecordBatch>> {
        let Some(ring) = self
            .partitions
            .get(partition)
            .map(|r| Arc::clone(r.value()))
        else {
            return Ok(Vec::new());
        };
        let mut ring = ring.lock();
        ring.evict(self.clock.now_us(), self.retention);
        Ok(ring.chunks.iter().map(|c| c.batch.clone()).collect())
    }

    async fn drop_partition(&self, partition: &PartitionKey) -> Result<u64> {
        Ok(self
            .partitions
            .remove(partition)
            .map(|(_, ring)| ring.lock().rows as u64)
            .unwrap_or(0))
    }

    fn partition_count(&self) -> usize {
        self.partitions.len()
    }

    /// Every partition that exists, possibly emptied by age.
    fn keys(&self) -> Vec<PartitionKey> {
        self.partitions.iter().map(|e| e.key().clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{AsArray, Int64Array};
    use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema};
    use tenantfusion_core::ManualClock;

    fn batch(values: std::ops::Range<i64>) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(values.collect::<Int64Array>())]).unwrap()
    }

    fn values(batches: &[RecordBatch]) -> Vec<i64> {
        batches
            .iter()
            .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
            .collect()
    }

    #[tokio::test]
    async fn rows_expire_by_age_exactly_and_by_count_oldest_first() {
        let clock = Arc::new(ManualClock::new(1_000_000));
        let ring = RingStore::new(
            Retention {
                ttl: Some(Duration::from_secs(10)),
                max_rows: Some(250),
            },
            clock.clone(),
        );
        let key = PartitionKey::Topic("A".into());
        ring.append(&key, vec![batch(0..100)]).await.unwrap();
        clock.advance(Duration::from_secs(5));
        ring.append(&key, vec![batch(100..200)]).await.unwrap();
        // One row at a time: merged into few batches, order kept.
        for v in 200..300 {
            ring.append(&key, vec![batch(v..v + 1)]).await.unwrap();
        }
        let rows = ring.read(&key).await.unwrap();
        assert_eq!(values(&rows), (50..300).collect::<Vec<_>>());
        assert!(rows.len() < 50, "{} batches for 250 rows", rows.len());
        // At exactly 10 s the first rows' age reaches the TTL.
        clock.advance(Duration::from_secs(5));
        assert_eq!(
            values(&ring.read(&key).await.unwrap()),
            (100..300).collect::<Vec<_>>()
        );
        clock.advance(Duration::from_secs(5));
        assert!(ring.read(&key).await.unwrap().is_empty());
        assert_eq!(ring.row_count(), 0);
        assert_eq!(ring.partition_count(), 1);
        assert_eq!(ring.drop_partition(&key).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn the_small_tail_is_kept_as_a_count_would_find_it() {
        let clock = Arc::new(ManualClock::new(0));
        let ring = RingStore::new(
            Retention {
                ttl: Some(Duration::from_millis(900)),
                max_rows: Some(3_000),
            },
            clock.clone(),
        );
        let key = PartitionKey::Topic("A".into());
        // Appends of 1 to ~2,000 rows, time moving on, rows cut by count
        // and by age: after every one, the kept count matches a scan and
        // the rows are the newest, in order.
        let mut model: VecDeque<(i64, i64)> = VecDeque::new();
        let (mut next, mut seed) = (0i64, 7u64);
        for step in 0..2_500 {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            // Then only small appends, far apart: the whole ring is small
            // and its oldest chunks expire.
            let late = step >= 2_000;
            let n = match seed >> 61 {
                0 if !late => 1_000 + (seed >> 40) as i64 % 1_000,
                _ => 1 + (seed >> 40) as i64 % 40,
            };
            let pause = if late { 100 } else { (seed >> 33) % 7 };
            clock.advance(Duration::from_millis(pause));
            let now = clock.now_us();
            ring.append(&key, vec![batch(next..next + n)])
                .await
                .unwrap();
            model.extend((next..next + n).map(|v| (v, now)));
            next += n;
            while model.len() > 3_000 || model.front().is_some_and(|(_, at)| *at <= now - 900_000) {
                model.pop_front();
            }
            let ring_of = Arc::clone(ring.partitions.get(&key).unwrap().value());
            let ring_of = ring_of.lock();
            let counted = ring_of
                .chunks
                .iter()
                .rev()
                .take_while(|c| c.is_small())
                .count();
            assert_eq!(ring_of.small_tail, counted);
            assert!(counted < MERGE_RUN);
        }
        let kept: Vec<i64> = model.iter().map(|(v, _)| *v).collect();
        assert_eq!(values(&ring.read(&key).await.unwrap()), kept);
    }

    #[tokio::test]
    async fn a_clock_going_back_keeps_arrivals_ordered() {
        let clock = Arc::new(ManualClock::new(10_000_000));
        let ring = RingStore::new(
            Retention {
                ttl: Some(Duration::from_secs(1)),
                max_rows: None,
            },
            clock.clone(),
        );
        let key = PartitionKey::Topic("A".into());
        ring.append(&key, vec![batch(0..1)]).await.unwrap();
        let back = ManualClock::new(0);
        let ring_back = RingStore {
            retention: ring.retention,
            clock: Arc::new(back),
            partitions: ring.partitions.clone(),
        };
        ring_back.append(&key, vec![batch(1..2)]).await.unwrap();
        clock.advance(Duration::from_millis(500));
        assert_eq!(values(&ring.read(&key).await.unwrap()), vec![0, 1]);
        clock.advance(Duration::from_millis(500));
        assert!(ring.read(&key).await.unwrap().is_empty());
    }
}
