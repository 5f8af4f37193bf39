//! Source-bound stream tables and the live provider pool that feeds them:
//! which topics are held upstream, and why.
//!
//! A topic of a stream table is subscribed upstream while something needs
//! it: a declared interest (`WITH (TOPICS = ...)`, `ALTER STREAM TABLE ...
//! ADD TOPICS`) or a live query on it. When the last live query leaves, the
//! upstream subscription lingers for [`EngineConfig::stream_linger`] before
//! it is released, so a client that comes straight back finds rows flowing.
//!
//! [`EngineConfig::stream_linger`]: crate::EngineConfig::stream_linger

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use dashmap::DashMap;
use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, new_null_array};
use datafusion::arrow::compute::kernels::boolean::{and, is_not_null};
use datafusion::arrow::compute::{can_cast_types, cast, concat_batches, filter_record_batch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;
use parking_lot::Mutex;
use tenantfusion_core::{BaseTableProvider, Result, TableId, TenantError};
use tenantfusion_live::{
    LiveError, LiveEvent, LivePool, PoolConfig, Request, SlowConsumer, Source, SubscribeOptions,
};
use tenantfusion_tables::StreamTableProvider;
use tokio::task::JoinHandle;

/// The engine's error for one of the pool's: same code, same message.
pub(crate) fn from_live(err: LiveError) -> TenantError {
    match err {
        LiveError::SourceNotFound(m) => TenantError::SourceNotFound(m),
        LiveError::NoHealthyProvider(m) => TenantError::NoHealthyProvider(m),
        LiveError::CapabilityMismatch(m) => TenantError::CapabilityMismatch(m),
        LiveError::InvalidConfig { key, message } => TenantError::InvalidConfig { key, message },
        LiveError::UpstreamUnavailable(m) => TenantError::UpstreamUnavailable(m),
        LiveError::SlowConsumer { capacity, missed } => {
            TenantError::SlowConsumer { capacity, missed }
        }
        LiveError::InvalidArgument(m) => TenantError::InvalidArgument(m),
        LiveError::SchemaMismatch(m) => TenantError::SchemaMismatch(m),
        LiveError::ResourcesExhausted(m) => TenantError::ResourcesExhausted(m),
        LiveError::Internal(m) => TenantError::Internal(m),
    }
}

/// Deliveries a topic's feeder may fall behind before the oldest are
/// dropped (and at most the pool's default bytes of them).
const FEED_QUEUE: usize = 4096;

/// The pool, started on first use, and the feeds of source-bound tables.
#[derive(Debug)]
pub(crate) struct LiveSources {
    pool_config: PoolConfig,
    pool: Mutex<Option<Arc<LivePool>>>,
    linger: Duration,
    feeds: DashMap<TableId, Arc<SourceTopics>>,
    /// Feeders of dropped tables, told to stop: each gives up its pool
    /// subscription when it has stopped.
    stopping: Mutex<Vec<JoinHandle<()>>>,
}

impl LiveSources {
    /// Starts the pool at once when `sources` is not empty (which needs a
    /// tokio runtime), else on the first `CREATE SOURCE`.
    pub(crate) fn new(
        pool_config: PoolConfig,
        sources: &[Arc<dyn Source>],
        linger: Duration,
    ) -> Result<Self> {
        let live_sources = Self {
            pool_config,
            pool: Mutex::new(None),
            linger,
            feeds: DashMap::new(),
            stopping: Mutex::default(),
        };
        for source in sources {
            live_sources
                .pool()?
                .add_source(Arc::clone(source))
                .map_err(from_live)?;
        }
        Ok(live_sources)
    }

    /// The pool, started now if it was not.
    pub(crate) fn pool(&self) -> Result<Arc<LivePool>> {
        let mut pool = self.pool.lock();
        if let Some(pool) = pool.as_ref() {
            return Ok(Arc::clone(pool));
        }
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(TenantError::NotSupported(
                "live sources need a tokio runtime; create the engine inside one".into(),
            ));
        }
        let started = Arc::new(LivePool::new(self.pool_config.clone()).map_err(from_live)?);
        *pool = Some(Arc::clone(&started));
        Ok(started)
    }

    /// The pool if it has started.
    pub(crate) fn started_pool(&self) -> Option<Arc<LivePool>> {
        self.pool.lock().clone()
    }

    /// Starts feeding `table` from its source, its declared topics
    /// subscribed now; the feed is known to nothing until
    /// [`install`](Self::install)ed. Errors when the source is unknown,
    /// its rows cannot fill the table's columns, or a topic cannot be had.
    pub(crate) fn start(
        &self,
        table: Arc<StreamTableProvider>,
        topics: &[String],
    ) -> Result<Arc<SourceTopics>> {
        let source = table
            .source()
            .ok_or_else(|| TenantError::Internal("attach of a user-fed stream table".into()))?
            .to_string();
        let pool = self.pool()?;
        let spec = pool
            .source_spec(&source)
            .ok_or_else(|| TenantError::SourceNotFound(format!("no source named '{source}'")))?;
        let mapping = RowMapping::new(&table, &source, &spec.capabilities.schema)?;
        let feed = Arc::new(SourceTopics {
            table,
            source,
            mapping: Arc::new(mapping),
            counts: Arc::default(),
            pool: Arc::downgrade(&pool),
            linger: self.linger,
            topics: Mutex::new(HashMap::new()),
        });
        for topic in topics {
            if let Err(err) = feed.declare(topic) {
                self.discard(&feed);
                return Err(err);
            }
        }
        Ok(feed)
    }

    /// Makes a started feed the one of its table.
    pub(crate) fn install(&self, feed: Arc<SourceTopics>) {
        self.feeds
            .insert(feed.table.core().table_id.as_ref().clone(), feed);
    }

    /// Stops a started feed that was never installed.
    pub(crate) fn discard(&self, feed: &SourceTopics) {
        self.stopping.lock().extend(feed.stop());
    }

    /// Stops feeding a dropped table: its upstream topics are released
    /// (see [`LiveSources::settle`]).
    pub(crate) fn detach(&self, table: &TableId) {
        if let Some((_, feed)) = self.feeds.remove(table) {
            self.stopping.lock().extend(feed.stop());
        }
    }

    /// Waits until the feeders of dropped tables have stopped, so the
    /// topics they held are released in the pool (before `DROP SOURCE`).
    pub(crate) async fn settle(&self) {
        let stopping = std::mem::take(&mut *self.stopping.lock());
        for feeder in stopping {
            // Aborted: the error says so, and nothing else is to be had.
            let _ = feeder.await;
        }
    }

    /// The feed of a source-bound table.
    pub(crate) fn feed(&self, table: &TableId) -> Option<Arc<SourceTopics>> {
        self.feeds.get(table).map(|f| Arc::clone(f.value()))
    }

    /// Rows rejected and deliveries dropped by the feeds from `source`.
    pub(crate) fn counts_of(&self, source: &str) -> (u64, u64) {
        self.feeds
            .iter()
            .filter(|f| f.value().source == source)
            .fold((0, 0), |(rejected, dropped), f| {
                let counts = &f.value().counts;
                (
                    rejected + counts.rejected.load(Ordering::Relaxed),
                    dropped + counts.dropped.load(Ordering::Relaxed),
                )
            })
    }

    /// The tables a source feeds, by name.
    pub(crate) fn tables_of(&self, source: &str) -> Vec<String> {
        let mut tables: Vec<String> = self
            .feeds
            .iter()
            .filter(|f| f.value().source == source)
            .map(|f| f.key().to_string())
            .collect();
        tables.sort();
        tables
    }
}

/// What a table's feeders could not store, so that no upstream row is lost
/// without a trace.
#[derive(Debug, Default)]
pub(crate) struct FeedCounts {
    /// Rows whose values do not fit the table's columns (a NULL for a NOT
    /// NULL column, also where a value does not fit the column's type).
    pub(crate) rejected: AtomicU64,
    /// Deliveries dropped because a feeder fell behind its source.
    pub(crate) dropped: AtomicU64,
}

impl FeedCounts {
    fn reject(&self, rows: usize) {
        self.rejected.fetch_add(rows as u64, Ordering::Relaxed);
    }
}

/// One source-bound table's upstream topics.
#[derive(Debug)]
pub(crate) struct SourceTopics {
    table: Arc<StreamTableProvider>,
    source: String,
    mapping: Arc<RowMapping>,
    counts: Arc<FeedCounts>,
    pool: Weak<LivePool>,
    linger: Duration,
    topics: Mutex<HashMap<Arc<str>, Demand>>,
}

/// Why a topic is held, and the task moving its rows into the table.
#[derive(Debug)]
struct Demand {
    /// Live queries on the topic.
    queries: usize,
    /// Declared by `TOPICS` / `ADD TOPICS`: held until dropped.
    declared: bool,
    /// Taken out when the table is dropped, to wait for it to end.
    feeder: Option<JoinHandle<()>>,
    /// The pending release after the last live query left.
    release: Option<JoinHandle<()>>,
}

impl Drop for Demand {
    fn drop(&mut self) {
        // The feeder owns the pool subscription: ending it unsubscribes.
        if let Some(feeder) = &self.feeder {
            feeder.abort();
        }
        if let Some(release) = &self.release {
            release.abort();
        }
    }
}

/// A live query's hold on one topic; released (after the linger) on drop.
#[derive(Debug)]
pub(crate) struct TopicLease {
    feed: Weak<SourceTopics>,
    topic: Arc<str>,
}

impl Drop for TopicLease {
    fn drop(&mut self) {
        if let Some(feed) = self.feed.upgrade() {
            feed.release(&self.topic);
        }
    }
}

impl SourceTopics {
    /// Holds `topic` until [`undeclare`](Self::undeclare).
    pub(crate) fn declare(self: &Arc<Self>, topic: &str) -> Result<()> {
        self.hold(topic, |demand| demand.declared = true)
    }

    /// Whether `topic` is declared (held by the table itself).
    pub(crate) fn is_declared(&self, topic: &str) -> bool {
        self.topics.lock().get(topic).is_some_and(|d| d.declared)
    }

    /// Stops holding a declared topic; it stays while live queries use it.
    pub(crate) fn undeclare(&self, topic: &str) {
        let mut topics = self.topics.lock();
        if let Some(demand) = topics.get_mut(topic) {
            demand.declared = false;
            if demand.queries == 0 {
                topics.remove(topic);
            }
        }
    }

    /// Holds `topic` for a live query until the lease is dropped.
    pub(crate) fn lease(self: &Arc<Self>, topic: &str) -> Result<TopicLease> {
        self.hold(topic, |demand| demand.queries += 1)?;
        Ok(TopicLease {
            feed: Arc::downgrade(self),
            topic: Arc::from(topic),
        })
    }

    /// The table's topic column.
    pub(crate) fn topic_column(&self) -> &str {
        self.table.topic_column().unwrap_or_default()
    }

    fn hold(self: &Arc<Self>, topic: &str, mark: impl FnOnce(&mut Demand)) -> Result<()> {
        if topic.is_empty() {
            return Err(TenantError::InvalidArgument(format!(
                "stream table '{}': a topic must not be empty",
                self.table.core().table_id
            )));
        }
        let mut topics = self.topics.lock();
        if let Some(demand) = topics.get_mut(topic) {
            if let Some(release) = demand.release.take() {
                release.abort();
            }
            mark(demand);
            return Ok(());
        }
        let topic: Arc<str> = Arc::from(topic);
        let feeder = self.start_feeder(&topic)?;
        let mut demand = Demand {
            queries: 0,
            declared: false,
            feeder: Some(feeder),
            release: None,
        };
        mark(&mut demand);
        topics.insert(topic, demand);
        Ok(())
    }

    /// Subscribes `topic` at the source and spawns the task that appends
    /// its rows to the table.
    fn start_feeder(&self, topic: &Arc<str>) -> Result<JoinHandle<()>> {
        let pool = self
            .pool
            .upgrade()
            .ok_or_else(|| TenantError::UpstreamUnavailable("the live pool has stopped".into()))?;
        let request = Request {
            name: Some(&self.source),
            topics: &[&**topic],
            ..Request::default()
        };
        let options = SubscribeOptions {
            queue_capacity: FEED_QUEUE,
            slow_consumer: SlowConsumer::DropOldest,
            ..SubscribeOptions::default()
        };
        let mut subscription = pool.subscribe(&request, options).map_err(from_live)?;
        let table = Arc::clone(&self.table);
        let mapping = Arc::clone(&self.mapping);
        let topic = Arc::clone(topic);
        let counts = Arc::clone(&self.counts);
        Ok(tokio::spawn(async move {
            // Ends when the pool stops; aborted when the topic is released.
            while let Ok(Some(event)) = subscription.recv().await {
                // What queued up meanwhile goes with it: one cast and one
                // append per wake-up, not per upstream delivery, so a
                // feeder that falls behind catches up in bigger steps.
                let drained = Drained::of(event, || subscription.try_recv().ok().flatten());
                counts.dropped.fetch_add(drained.missed, Ordering::Relaxed);
                let (received, conformed) = match drained.rows {
                    None => continue,
                    Some(Err(count)) => (count, None),
                    Some(Ok(batch)) => (batch.num_rows(), mapping.conform(&batch).ok()),
                };
                match conformed {
                    Some(rows) => {
                        counts.reject(received - rows.num_rows());
                        if rows.num_rows() > 0 && table.append_topic(&topic, rows).await.is_err() {
                            counts.reject(received);
                        }
                    }
                    None => counts.reject(received),
                }
            }
        }))
    }

    fn release(self: &Arc<Self>, topic: &Arc<str>) {
        let mut topics = self.topics.lock();
        let Some(demand) = topics.get_mut(topic) else {
            return;
        };
        demand.queries = demand.queries.saturating_sub(1);
        if demand.queries > 0 || demand.declared {
            return;
        }
        let feed = Arc::downgrade(self);
        let topic = Arc::clone(topic);
        let linger = self.linger;
        demand.release = Some(tokio::spawn(async move {
            tokio::time::sleep(linger).await;
            if let Some(feed) = feed.upgrade() {
                let mut topics = feed.topics.lock();
                if topics
                    .get(&topic)
                    .is_some_and(|d| d.queries == 0 && !d.declared)
                {
                    // Not aborted by its own drop: it is finishing here.
                    if let Some(mut demand) = topics.remove(&topic) {
                        demand.release = None;
                    }
                }
            }
        }));
    }

    /// Stops every feeder; returns them, aborted, to be waited for.
    fn stop(&self) -> Vec<JoinHandle<()>> {
        let mut feeders = Vec::new();
        for (_, mut demand) in self.topics.lock().drain() {
            if let Some(feeder) = demand.feeder.take() {
                feeder.abort();
                feeders.push(feeder);
            }
        }
        feeders
    }
}

/// Deliveries a feeder takes in one step at most.
const DRAIN: usize = 1024;

/// A feeder's deliveries of one wake-up: the first, and what was queued
/// behind it (up to [`DRAIN`]).
#[derive(Debug)]
struct Drained {
    /// Their rows in one batch (`Err` with their count when they could not
    /// be put together); `None` when only lag was reported.
    rows: Option<std::result::Result<RecordBatch, usize>>,
    /// Deliveries the queue dropped before them.
    missed: u64,
}

impl Drained {
    /// `first`, then events from `next` until it has none.
    fn of(first: LiveEvent, mut next: impl FnMut() -> Option<LiveEvent>) -> Self {
        let mut batches = Vec::new();
        let mut missed = 0;
        let mut event = Some(first);
        while let Some(taken) = event.take() {
            match taken {
                LiveEvent::Rows { batch, .. } => batches.push(batch),
                LiveEvent::Lagged { missed: m } => missed += m,
            }
            if batches.len() < DRAIN {
                event = next();
            }
        }
        let rows = match batches.len() {
            0 => None,
            1 => batches.pop().map(Ok),
            _ => {
                let count = batches.iter().map(RecordBatch::num_rows).sum();
                // One source's deliveries share its schema.
                Some(concat_batches(&batches[0].schema(), &batches).map_err(|_| count))
            }
        };
        Self { rows, missed }
    }
}

/// How a source's rows become a stream table's: columns by name (the
/// table's topic column takes the source's topic), cast where the types
/// differ, NULL where the source has no such column.
#[derive(Debug)]
struct RowMapping {
    /// The table's schema as stored (every column nullable).
    schema: SchemaRef,
    /// Columns declared NOT NULL.
    not_null: Vec<usize>,
    columns: Vec<Option<usize>>,
}

impl RowMapping {
    fn new(table: &StreamTableProvider, source: &str, from: &SchemaRef) -> Result<Self> {
        let declared = &table.core().schema;
        let topic_column = table.topic_column().unwrap_or_default();
        let mut columns = Vec::with_capacity(declared.fields().len());
        for field in declared.fields() {
            let found = if field.name() == topic_column {
                Some(0)
            } else {
                from.index_of(field.name()).ok()
            };
            match found {
                Some(index) => {
                    let have = from.field(index).data_type();
                    if !can_cast_types(have, field.data_type()) {
                        return Err(TenantError::SchemaMismatch(format!(
                            "column '{}' of stream table '{}' is {}; source '{source}' gives {have}",
                            field.name(),
                            table.core().table_id,
                            field.data_type()
                        )));
                    }
                }
                None if !field.is_nullable() => {
                    return Err(TenantError::SchemaMismatch(format!(
                        "column '{}' of stream table '{}' is NOT NULL but source '{source}' has no such column (it has {})",
                        field.name(),
                        table.core().table_id,
                        from.fields()
                            .iter()
                            .map(|f| f.name().as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                }
                None => {}
            }
            columns.push(found);
        }
        Ok(Self {
            schema: Arc::clone(table.stored_schema()),
            not_null: declared
                .fields()
                .iter()
                .enumerate()
                .filter(|(_, f)| !f.is_nullable())
                .map(|(i, _)| i)
                .collect(),
            columns,
        })
    }

    /// `batch` in the table's columns, without the rows that hold a NULL in
    /// a NOT NULL column (which the caller counts as rejected).
    fn conform(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        let columns = self
            .schema
            .fields()
            .iter()
            .zip(&self.columns)
            .map(|(field, index)| -> Result<ArrayRef> {
                Ok(match index {
                    Some(i) => {
                        let column = batch.column(*i);
                        if column.data_type() == field.data_type() {
                            Arc::clone(column)
                        } else {
                            cast(column, field.data_type())
                                .map_err(|e| TenantError::SchemaMismatch(e.to_string()))?
                        }
                    }
                    None => new_null_array(field.data_type(), batch.num_rows()),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let mismatch = |e: ArrowError| TenantError::SchemaMismatch(e.to_string());
        let conformed =
            RecordBatch::try_new(Arc::clone(&self.schema), columns).map_err(mismatch)?;
        let mut keep: Option<BooleanArray> = None;
        for &i in &self.not_null {
            let column = conformed.column(i);
            if column.null_count() == 0 {
                continue;
            }
            let present = is_not_null(column).map_err(mismatch)?;
            keep = Some(match keep {
                Some(before) => and(&before, &present).map_err(mismatch)?,
                None => present,
            });
        }
        match keep {
            Some(keep) => filter_record_batch(&conformed, &keep).map_err(mismatch),
            None => Ok(conformed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{AsArray, Float64Array, Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Int8Type, Schema};
    use tenantfusion_core::{AccessLevel, SystemClock};
    use tenantfusion_tables::{Retention, StreamOrigin};

    #[test]
    fn a_feeder_takes_what_queued_up_in_one_step() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("topic", DataType::Utf8, false),
            Field::new("n", DataType::Int64, false),
        ]));
        let rows = |from: i64, n: i64| LiveEvent::Rows {
            topic: "A".into(),
            batch: RecordBatch::try_new(
                Arc::clone(&schema),
                vec![
                    Arc::new(StringArray::from(vec!["A"; n as usize])),
                    Arc::new(Int64Array::from_iter_values(from..from + n)),
                ],
            )
            .unwrap(),
        };
        let mut queued = vec![
            rows(1, 2),
            LiveEvent::Lagged { missed: 3 },
            rows(7, 1),
            LiveEvent::Lagged { missed: 1 },
        ]
        .into_iter();
        let drained = Drained::of(rows(0, 1), || queued.next());
        assert_eq!(drained.missed, 4);
        let batch = drained.rows.unwrap().unwrap();
        let n: Vec<i64> = batch
            .column(1)
            .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
            .values()
            .to_vec();
        assert_eq!(n, [0, 1, 2, 7]);
        // Only lag: nothing to append, the lag counted.
        let drained = Drained::of(LiveEvent::Lagged { missed: 5 }, || None);
        assert!(drained.rows.is_none());
        assert_eq!(drained.missed, 5);
        // A step ends at DRAIN deliveries; the rest wait for the next.
        let mut endless = std::iter::repeat_with(|| rows(0, 1));
        let drained = Drained::of(rows(0, 1), || endless.next());
        assert_eq!(drained.rows.unwrap().unwrap().num_rows(), DRAIN);
    }

    #[test]
    fn rows_are_cast_to_the_table_and_only_misfits_are_left_out() {
        let table = StreamTableProvider::new_stream(
            TableId::new("m", "t"),
            Arc::new(Schema::new(vec![
                Field::new("symbol", DataType::Utf8, false),
                Field::new("v", DataType::Int8, false),
                Field::new("w", DataType::Float64, true),
                Field::new("absent", DataType::Utf8, true),
            ])),
            StreamOrigin::Source {
                source: "s".into(),
                topic_column: "symbol".into(),
                access: AccessLevel::Public,
            },
            Retention::default(),
            Arc::new(SystemClock),
        )
        .unwrap();
        let from = Arc::new(Schema::new(vec![
            Field::new("topic", DataType::Utf8, false),
            Field::new("w", DataType::Int64, false),
            Field::new("v", DataType::Int64, false),
        ]));
        let mapping = RowMapping::new(&table, "s", &from).unwrap();
        let batch = RecordBatch::try_new(
            from,
            vec![
                Arc::new(StringArray::from(vec!["A", "A", "A"])),
                Arc::new(Int64Array::from(vec![10, 20, 30])),
                Arc::new(Int64Array::from(vec![1, 1000, 3])),
            ],
        )
        .unwrap();
        let rows = mapping.conform(&batch).unwrap();
        assert_eq!(rows.num_rows(), 2, "1000 does not fit a TINYINT NOT NULL");
        assert_eq!(rows.column(1).as_primitive::<Int8Type>().values(), &[1, 3]);
        let w = rows.column(2).as_any().downcast_ref::<Float64Array>();
        assert_eq!(w.unwrap().values(), &[10.0, 30.0]);
        assert_eq!(rows.column(3).null_count(), 2);
    }

    #[test]
    fn a_pool_error_keeps_its_code_and_message_in_the_engine() {
        // The two enums are written apart (the pool links no DataFusion);
        // this keeps them saying the same thing.
        let errors = [
            LiveError::SourceNotFound("no source 'x'".into()),
            LiveError::NoHealthyProvider("all open".into()),
            LiveError::CapabilityMismatch("no snapshots".into()),
            LiveError::InvalidConfig {
                key: "sources.feed.url".into(),
                message: "missing".into(),
            },
            LiveError::UpstreamUnavailable("refused".into()),
            LiveError::SlowConsumer {
                capacity: 4,
                missed: 9,
            },
            LiveError::InvalidArgument("bad".into()),
            LiveError::SchemaMismatch("bad column".into()),
            LiveError::ResourcesExhausted("frame too big".into()),
            LiveError::Internal("bug".into()),
        ];
        for err in errors {
            let engine = from_live(err.clone());
            assert_eq!(engine.code(), err.code());
            assert_eq!(engine.to_string(), err.to_string());
        }
    }
}
