//! Live queries: `SUBSCRIBE TO t [WHERE ...] [OPTIONS (...)]`, a snapshot of
//! the rows the caller may see, then every row added to them. This module
//! holds the running queries and their events; the session's
//! `subscribe` (in `session/subscribe.rs`) checks access and starts one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use chrono::{DateTime, Utc};
use dashmap::DashMap;
use datafusion::arrow::array::AsArray;
use datafusion::arrow::compute::{concat_batches, filter_record_batch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::physical_expr::PhysicalExpr;
use futures::Stream;
use tenantfusion_core::{
    Access, BaseTableProvider, ChangeListener, Result, TableId, TenantError, UserContext, UserId,
    WatchGuard,
};
use tenantfusion_live::{
    Delivery, DeliveryQueue, QueueStats, SlowConsumer, SubscribeOptions, Weight,
};

use crate::live_sources::{TopicLease, from_live};

/// One event of a [`LiveQuery`].
#[derive(Debug, Clone)]
pub enum ChangeEvent {
    /// The matching rows when the query started (the newest `LAST_ROWS` of
    /// them when that option is set). Always the first event.
    Snapshot(Vec<RecordBatch>),
    /// Rows added since, in the table's schema, filtered by the query's WHERE.
    Insert(RecordBatch),
    /// Rows removed since (by DELETE; an UPDATE is the `Delete` of the
    /// rows' old values, then the `Insert` of their new ones), filtered by
    /// the query's WHERE. Rows are told apart by value.
    Delete(RecordBatch),
    /// The queue was full and this many events were dropped, oldest first.
    Lagged {
        /// Events dropped.
        missed: u64,
    },
}

/// What a live query's queue holds.
#[derive(Debug)]
enum Change {
    Snapshot(Vec<RecordBatch>),
    Insert(RecordBatch),
    Delete(RecordBatch),
    /// The query ends with this error (read access taken away, a WHERE
    /// that fails on some row).
    Ended(TenantError),
}

/// A queued change weighs the buffers its batches keep alive (shared with
/// the table's own rows, so the bound is on what a slow reader could keep
/// from being freed).
impl Weight for Change {
    fn own_bytes(&self) -> usize {
        self.held_bytes()
    }

    fn held_bytes(&self) -> usize {
        match self {
            Change::Snapshot(batches) => batches.iter().map(Weight::held_bytes).sum(),
            Change::Insert(batch) | Change::Delete(batch) => batch.held_bytes(),
            Change::Ended(_) => 0,
        }
    }
}

/// A running live query. Dropping it unsubscribes (and lets the topics it
/// needed upstream go, after the engine's linger period).
///
/// Read it with [`recv`](Self::recv), or as a [`Stream`] with
/// [`into_stream`](Self::into_stream).
#[derive(Debug)]
pub struct LiveQuery {
    id: u64,
    schema: SchemaRef,
    queue: Arc<DeliveryQueue<Change>>,
    ended: bool,
    // Dropped in this order: events stop, then the upstream topics go.
    _watch: WatchGuard,
    _leases: Vec<TopicLease>,
    _registered: Registered,
}

impl LiveQuery {
    /// The next event; `Ok(None)` after the query has ended.
    /// `SLOW_CONSUMER` when the query was disconnected for lagging (with
    /// `SLOW_CONSUMER = 'disconnect'`), `PERMISSION_DENIED` when the
    /// caller's read access was taken away since it started.
    pub async fn recv(&mut self) -> Result<Option<ChangeEvent>> {
        if self.ended {
            return Ok(None);
        }
        let delivery = self.queue.recv().await.map_err(from_live);
        self.event(delivery)
    }

    /// The next event if one is waiting, without waiting.
    pub fn try_recv(&mut self) -> Result<Option<ChangeEvent>> {
        if self.ended {
            return Ok(None);
        }
        let delivery = self.queue.try_recv().map_err(from_live);
        self.event(delivery)
    }

    fn event(&mut self, delivery: Result<Option<Delivery<Change>>>) -> Result<Option<ChangeEvent>> {
        match delivery {
            Ok(Some(Delivery::Item(Change::Snapshot(rows)))) => {
                Ok(Some(ChangeEvent::Snapshot(rows)))
            }
            Ok(Some(Delivery::Item(Change::Insert(rows)))) => Ok(Some(ChangeEvent::Insert(rows))),
            Ok(Some(Delivery::Item(Change::Delete(rows)))) => Ok(Some(ChangeEvent::Delete(rows))),
            Ok(Some(Delivery::Lagged(missed))) => Ok(Some(ChangeEvent::Lagged { missed })),
            Ok(Some(Delivery::Item(Change::Ended(err)))) => {
                self.ended = true;
                Err(err)
            }
            Ok(None) => Ok(None),
            Err(err) => {
                self.ended = true;
                Err(err)
            }
        }
    }

    /// The columns of every event's rows: the table's.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// This query's id, as in `system.live_subscriptions`.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Queue length and counters.
    pub fn stats(&self) -> QueueStats {
        self.queue.stats()
    }

    /// The events as a `Stream`; it ends after an error.
    pub fn into_stream(self) -> impl Stream<Item = Result<ChangeEvent>> + Send {
        futures::stream::unfold(self, |mut query| async move {
            match query.recv().await {
                Ok(Some(event)) => Some((Ok(event), query)),
                Ok(None) => None,
                Err(err) => Some((Err(err), query)),
            }
        })
    }
}

/// The most a live query may ask to keep queued (`QUEUE_BYTES`): a tenant
/// may lower the 64 MiB default, but not make one slow reader hold
/// gigabytes.
pub const MAX_QUEUE_BYTES: usize = 256 << 20;

/// How a live query is set up, from `SUBSCRIBE ... OPTIONS (...)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LiveOptions {
    pub(crate) last_rows: Option<usize>,
    pub(crate) queue: SubscribeOptions,
}

impl LiveOptions {
    /// `LAST_ROWS = n`, `QUEUE_CAPACITY = n`, `QUEUE_BYTES = n` (at most
    /// [`MAX_QUEUE_BYTES`]), `SLOW_CONSUMER = 'drop_oldest' | 'disconnect'`.
    pub(crate) fn parse(options: &[(String, String)]) -> Result<Self> {
        let mut parsed = Self {
            last_rows: None,
            queue: SubscribeOptions::default(),
        };
        for (key, value) in options {
            let count = |min: usize| match value.parse::<usize>() {
                Ok(n) if n >= min => Ok(n),
                _ => Err(TenantError::InvalidArgument(format!(
                    "SUBSCRIBE option {key} must be a whole number of at least {min}, not '{value}'"
                ))),
            };
            match key.as_str() {
                "LAST_ROWS" => parsed.last_rows = Some(count(0)?),
                "QUEUE_CAPACITY" => parsed.queue.queue_capacity = count(1)?,
                "QUEUE_BYTES" => {
                    let bytes = count(1)?;
                    if bytes > MAX_QUEUE_BYTES {
                        return Err(TenantError::InvalidArgument(format!(
                            "SUBSCRIBE option QUEUE_BYTES may be at most {MAX_QUEUE_BYTES}, not {bytes}"
                        )));
                    }
                    parsed.queue.queue_bytes = bytes;
                }
                "SLOW_CONSUMER" => {
                    parsed.queue.slow_consumer = match value.to_ascii_lowercase().as_str() {
                        "drop_oldest" => SlowConsumer::DropOldest,
                        "disconnect" => SlowConsumer::Disconnect,
                        _ => {
                            return Err(TenantError::InvalidArgument(format!(
                                "SLOW_CONSUMER must be 'drop_oldest' or 'disconnect', not '{value}'"
                            )));
                        }
                    }
                }
                other => {
                    return Err(TenantError::InvalidArgument(format!(
                        "unknown SUBSCRIBE option '{other}' (supported: LAST_ROWS, QUEUE_CAPACITY, QUEUE_BYTES, SLOW_CONSUMER)"
                    )));
                }
            }
        }
        Ok(parsed)
    }
}

/// Every live query of an engine, for `system.live_subscriptions`.
#[derive(Debug, Default)]
pub(crate) struct LiveQueries {
    next_id: AtomicU64,
    running: DashMap<u64, LiveQueryInfo>,
}

/// What `system.live_subscriptions` shows of one live query.
#[derive(Debug, Clone)]
pub(crate) struct LiveQueryInfo {
    pub(crate) user: UserId,
    pub(crate) table: Arc<TableId>,
    /// Topics it narrowed a stream table to, if any.
    pub(crate) topics: Option<Vec<Arc<str>>>,
    pub(crate) created_at: DateTime<Utc>,
    queue: Arc<DeliveryQueue<Change>>,
}

impl LiveQueryInfo {
    pub(crate) fn stats(&self) -> QueueStats {
        self.queue.stats()
    }
}

/// Removes a live query from the registry when it is dropped.
#[derive(Debug)]
struct Registered {
    queries: Weak<LiveQueries>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        if let Some(queries) = self.queries.upgrade() {
            queries.running.remove(&self.id);
        }
    }
}

impl LiveQueries {
    /// The running live queries, by id.
    pub(crate) fn list(&self) -> Vec<(u64, LiveQueryInfo)> {
        let mut all: Vec<_> = self
            .running
            .iter()
            .map(|e| (*e.key(), e.value().clone()))
            .collect();
        all.sort_by_key(|(id, _)| *id);
        all
    }

    /// Starts a live query of `user` on `table`: registers a listener that
    /// filters by `filter`, and holds `leases` on upstream topics.
    pub(crate) async fn start(
        self: &Arc<Self>,
        user: &Arc<UserContext>,
        table: &Arc<dyn BaseTableProvider>,
        filter: Option<Arc<dyn PhysicalExpr>>,
        topics: Option<Vec<Arc<str>>>,
        leases: Vec<TopicLease>,
        options: LiveOptions,
    ) -> Result<LiveQuery> {
        let queue = Arc::new(DeliveryQueue::new(options.queue));
        let listener = Arc::new(Listener {
            queue: Arc::clone(&queue),
            filter,
            last_rows: options.last_rows,
            table: Arc::downgrade(table),
            user: Arc::clone(user),
        });
        let watch = table.watch_user(user, topics.clone(), listener).await?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        self.running.insert(
            id,
            LiveQueryInfo {
                user: user.user_id().clone(),
                table: Arc::clone(table.table_id()),
                topics,
                created_at: Utc::now(),
                queue: Arc::clone(&queue),
            },
        );
        Ok(LiveQuery {
            id,
            schema: table.schema(),
            queue,
            ended: false,
            _watch: watch,
            _leases: leases,
            _registered: Registered {
                queries: Arc::downgrade(self),
                id,
            },
        })
    }
}

/// Filters a table's new rows for one live query and queues them.
#[derive(Debug)]
struct Listener {
    queue: Arc<DeliveryQueue<Change>>,
    filter: Option<Arc<dyn PhysicalExpr>>,
    last_rows: Option<usize>,
    table: Weak<dyn BaseTableProvider>,
    user: Arc<UserContext>,
}

impl Listener {
    /// The rows of `batches` the WHERE keeps, as non-empty batches.
    fn matching(&self, batches: &[RecordBatch]) -> Result<Vec<RecordBatch>> {
        let Some(filter) = &self.filter else {
            return Ok(batches
                .iter()
                .filter(|b| b.num_rows() > 0)
                .cloned()
                .collect());
        };
        let mut kept = Vec::with_capacity(batches.len());
        for batch in batches {
            let mask = filter.evaluate(batch)?.into_array(batch.num_rows())?;
            let mask = mask
                .as_boolean_opt()
                .ok_or_else(|| TenantError::Plan("the WHERE of SUBSCRIBE is not boolean".into()))?;
            let batch = filter_record_batch(batch, mask).map_err(DataFusionError::from)?;
            if batch.num_rows() > 0 {
                kept.push(batch);
            }
        }
        Ok(kept)
    }

    /// Queues the rows of `rows` the query matches as one `change`; `false`
    /// when the query ended.
    fn tell(&self, rows: &[RecordBatch], change: fn(RecordBatch) -> Change) -> bool {
        // Access can be taken away while the query runs (REVOKE, a lower
        // access level): it then ends instead of reading on.
        if let Some(table) = self.table.upgrade()
            && let Err(err) = table.authorize(&self.user, Access::Select)
        {
            return self.end(err);
        }
        let matching = match self.matching(rows) {
            Ok(matching) => matching,
            Err(err) => return self.end(err),
        };
        let batch = match matching.as_slice() {
            [] => return true,
            [one] => one.clone(),
            many => match concat_batches(&many[0].schema(), many) {
                Ok(batch) => batch,
                Err(err) => return self.end(TenantError::Internal(err.to_string())),
            },
        };
        self.queue.push(change(batch))
    }

    /// Ends the query with `err`; `false`, for the feed to forget it.
    fn end(&self, err: TenantError) -> bool {
        self.queue.push(Change::Ended(err));
        self.queue.close();
        false
    }
}

impl ChangeListener for Listener {
    fn on_snapshot(&self, rows: Vec<RecordBatch>) {
        let mut matching = match self.matching(&rows) {
            Ok(matching) => matching,
            Err(err) => {
                self.end(err);
                return;
            }
        };
        if let Some(keep) = self.last_rows {
            let total: usize = matching.iter().map(RecordBatch::num_rows).sum();
            let mut skip = total.saturating_sub(keep);
            matching.retain_mut(|b| {
                if skip >= b.num_rows() {
                    skip -= b.num_rows();
                    return false;
                }
                *b = b.slice(skip, b.num_rows() - skip);
                skip = 0;
                true
            });
        }
        self.queue.push(Change::Snapshot(matching));
    }

    fn on_rows(&self, rows: &[RecordBatch]) -> bool {
        self.tell(rows, Change::Insert)
    }

    fn on_removed(&self, rows: &[RecordBatch]) -> bool {
        self.tell(rows, Change::Delete)
    }
}
