//! Getting rows to subscribers: one bounded queue per subscriber, a policy
//! for slow ones, and per-topic slices of upstream batches that every
//! subscriber of the topic shares.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{LiveError, Result};
use arrow::array::{Array, AsArray, UInt32Array};
use arrow::compute::take_record_batch;
use arrow::record_batch::RecordBatch;
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::source::Topic;

/// What happens when a subscriber's queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SlowConsumer {
    /// The oldest queued delivery is dropped; the subscriber is told how many
    /// it missed ([`LiveEvent::Lagged`]).
    #[default]
    DropOldest,
    /// The subscription ends with `SLOW_CONSUMER`.
    Disconnect,
}

/// How a subscription is delivered to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscribeOptions {
    /// Deliveries (per-topic batches) queued at most.
    pub queue_capacity: usize,
    /// What to do when the queue is full.
    pub slow_consumer: SlowConsumer,
}

impl Default for SubscribeOptions {
    fn default() -> Self {
        Self {
            queue_capacity: 1024,
            slow_consumer: SlowConsumer::DropOldest,
        }
    }
}

/// What a [`Subscription`] receives.
#[derive(Debug, Clone)]
pub enum LiveEvent {
    /// New rows of one topic. The batch is shared with every other
    /// subscriber of the topic, not copied.
    Rows {
        /// The topic.
        topic: Topic,
        /// Its rows, in the source's schema.
        batch: RecordBatch,
    },
    /// The queue was full and this many deliveries were dropped (oldest
    /// first) since the last event.
    Lagged {
        /// Deliveries dropped.
        missed: u64,
    },
}

/// A bounded queue from one producer side to one consumer, with the
/// [`SlowConsumer`] policy applied when it is full: the producer never
/// waits. The pool uses one per subscriber; live queries use one each.
///
/// ```
/// use tenantfusion_live::{DeliveryQueue, Delivery, SlowConsumer, SubscribeOptions};
/// let queue = DeliveryQueue::new(SubscribeOptions { queue_capacity: 2, slow_consumer: SlowConsumer::DropOldest });
/// for n in 0..5 {
///     queue.push(n);
/// }
/// assert!(matches!(queue.try_recv().unwrap(), Some(Delivery::Lagged(3))));
/// assert!(matches!(queue.try_recv().unwrap(), Some(Delivery::Item(3))));
/// ```
#[derive(Debug)]
pub struct DeliveryQueue<T> {
    state: Mutex<QueueState<T>>,
    ready: Notify,
    /// Set by the first push since the last wake: a delivery round wakes
    /// each subscriber once, however many of its topics it pushed.
    wake_pending: AtomicBool,
    options: SubscribeOptions,
}

/// What a [`DeliveryQueue`] hands out.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery<T> {
    /// The next item.
    Item(T),
    /// This many items were dropped (oldest first) since the last one taken.
    Lagged(u64),
}

#[derive(Debug)]
struct QueueState<T> {
    items: VecDeque<T>,
    /// Dropped and not reported yet.
    lagged: u64,
    delivered: u64,
    dropped: u64,
    disconnected: bool,
    closed: bool,
}

/// A point-in-time view of one subscriber's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueStats {
    /// Deliveries waiting.
    pub queued: usize,
    /// Deliveries pushed so far.
    pub delivered: u64,
    /// Deliveries dropped because the queue was full.
    pub dropped: u64,
    /// Whether it was disconnected as a slow consumer.
    pub disconnected: bool,
}

impl<T> DeliveryQueue<T> {
    /// An empty queue (a capacity of 0 is taken as 1).
    pub fn new(options: SubscribeOptions) -> Self {
        Self {
            state: Mutex::new(QueueState {
                items: VecDeque::new(),
                lagged: 0,
                delivered: 0,
                dropped: 0,
                disconnected: false,
                closed: false,
            }),
            ready: Notify::new(),
            wake_pending: AtomicBool::new(false),
            options: SubscribeOptions {
                queue_capacity: options.queue_capacity.max(1),
                ..options
            },
        }
    }

    /// Queues one item and wakes the consumer; `false` when the consumer
    /// is (now) disconnected as a slow consumer and should be forgotten.
    pub fn push(&self, item: T) -> bool {
        let queued = self.push_quietly(item);
        self.wake();
        queued
    }

    /// Queues one item without waiting and without waking the consumer;
    /// `false` when the consumer is (now) disconnected. The caller wakes
    /// it with [`wake`](Self::wake) when [`needs_wake`](Self::needs_wake)
    /// said so.
    pub(crate) fn push_quietly(&self, item: T) -> bool {
        let mut state = self.state.lock();
        if state.disconnected || state.closed {
            return !state.disconnected;
        }
        if state.items.len() >= self.options.queue_capacity {
            state.dropped += 1;
            match self.options.slow_consumer {
                SlowConsumer::DropOldest => {
                    state.items.pop_front();
                    state.lagged += 1;
                }
                SlowConsumer::Disconnect => {
                    state.disconnected = true;
                    state.items.clear();
                    return false;
                }
            }
        }
        state.items.push_back(item);
        state.delivered += 1;
        true
    }

    /// After a push: `true` for the first push since the last wake, whose
    /// pusher must call [`wake`](Self::wake) once its round is done.
    pub(crate) fn needs_wake(&self) -> bool {
        !self.wake_pending.swap(true, Ordering::SeqCst)
    }

    /// Wakes the consumer for everything pushed so far.
    pub(crate) fn wake(&self) {
        self.wake_pending.store(false, Ordering::SeqCst);
        self.ready.notify_one();
    }

    /// No more items will come: the consumer gets what is queued, then `None`.
    pub fn close(&self) {
        self.state.lock().closed = true;
        self.ready.notify_one();
    }

    /// Queue length and counters.
    pub fn stats(&self) -> QueueStats {
        let state = self.state.lock();
        QueueStats {
            queued: state.items.len(),
            delivered: state.delivered,
            dropped: state.dropped,
            disconnected: state.disconnected,
        }
    }

    /// The next delivery; `Ok(None)` once closed and drained, and
    /// `SLOW_CONSUMER` if the consumer was disconnected for lagging.
    pub async fn recv(&self) -> Result<Option<Delivery<T>>> {
        loop {
            if let Some(delivery) = self.take()? {
                return Ok(delivery);
            }
            self.ready.notified().await;
        }
    }

    /// The next delivery if one is queued, without waiting.
    pub fn try_recv(&self) -> Result<Option<Delivery<T>>> {
        Ok(self.take()?.flatten())
    }

    /// `None` when nothing is ready yet; `Some(None)` once closed and drained.
    fn take(&self) -> Result<Option<Option<Delivery<T>>>> {
        let mut state = self.state.lock();
        if state.disconnected {
            return Err(LiveError::SlowConsumer {
                capacity: self.options.queue_capacity,
                missed: state.dropped,
            });
        }
        if state.lagged > 0 {
            let missed = std::mem::take(&mut state.lagged);
            return Ok(Some(Some(Delivery::Lagged(missed))));
        }
        if let Some(item) = state.items.pop_front() {
            return Ok(Some(Some(Delivery::Item(item))));
        }
        Ok(state.closed.then_some(None))
    }
}

/// Cuts `batch` into one batch per topic (topic in column 0, `Utf8`).
/// Where a topic's rows are contiguous the piece is a zero-copy slice; rows
/// with a null topic are left out. Errors when column 0 is not `Utf8`.
pub(crate) fn split_by_topic(batch: &RecordBatch) -> Result<Vec<(&str, RecordBatch)>> {
    if batch.num_columns() == 0 || batch.num_rows() == 0 {
        return Ok(Vec::new());
    }
    let Some(topics) = batch.column(0).as_string_opt::<i32>() else {
        return Err(LiveError::SchemaMismatch(format!(
            "the topic column must be Utf8, not {}",
            batch.column(0).data_type()
        )));
    };
    // Runs of equal topics: (topic, start, len).
    let mut runs: Vec<(&str, usize, usize)> = Vec::new();
    for row in 0..batch.num_rows() {
        if topics.is_null(row) {
            continue;
        }
        let topic = topics.value(row);
        match runs.last_mut() {
            Some((t, start, len)) if *t == topic && *start + *len == row => *len += 1,
            _ => runs.push((topic, row, 1)),
        }
    }
    let mut by_topic: HashMap<&str, Vec<(usize, usize)>> = HashMap::with_capacity(runs.len());
    let mut order = Vec::new();
    for (topic, start, len) in runs {
        by_topic
            .entry(topic)
            .or_insert_with(|| {
                order.push(topic);
                Vec::new()
            })
            .push((start, len));
    }
    order
        .into_iter()
        .map(|topic| {
            let pieces = &by_topic[topic];
            let part = match pieces.as_slice() {
                [(start, len)] => batch.slice(*start, *len),
                _ => {
                    let rows: UInt32Array = pieces
                        .iter()
                        .flat_map(|(s, l)| (*s..*s + *l).map(|r| r as u32))
                        .collect();
                    take_record_batch(batch, &rows)
                        .map_err(|e| LiveError::Internal(format!("split by topic: {e}")))?
                }
            };
            Ok((topic, part))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn batch(topics: &[Option<&str>]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("topic", DataType::Utf8, true),
            Field::new("n", DataType::Int64, false),
        ]));
        let n: Int64Array = (0..topics.len() as i64).collect();
        RecordBatch::try_new(
            schema,
            vec![Arc::new(StringArray::from(topics.to_vec())), Arc::new(n)],
        )
        .unwrap()
    }

    fn numbers(batch: &RecordBatch) -> Vec<i64> {
        batch
            .column(1)
            .as_primitive::<arrow::datatypes::Int64Type>()
            .values()
            .to_vec()
    }

    #[test]
    fn batches_split_per_topic_slicing_where_rows_are_contiguous() {
        let b = batch(&[Some("A"), Some("A"), Some("B"), None, Some("A"), Some("C")]);
        let parts = split_by_topic(&b).unwrap();
        let got: Vec<(&str, Vec<i64>)> = parts.iter().map(|(t, p)| (*t, numbers(p))).collect();
        assert_eq!(got, [("A", vec![0, 1, 4]), ("B", vec![2]), ("C", vec![5])]);
        // B (row 2) is a slice of the upstream batch: its values are the
        // upstream's memory, not a copy.
        let values = |batch: &RecordBatch| {
            batch
                .column(1)
                .as_primitive::<arrow::datatypes::Int64Type>()
                .values()
                .as_ptr()
        };
        assert!(std::ptr::eq(
            values(&parts[1].1),
            values(&b).wrapping_add(2)
        ));
        assert!(split_by_topic(&batch(&[])).unwrap().is_empty());
        let wrong = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)])),
            vec![Arc::new(Int64Array::from(vec![1]))],
        )
        .unwrap();
        assert_eq!(
            split_by_topic(&wrong).unwrap_err().code(),
            "SCHEMA_MISMATCH"
        );
    }

    #[test]
    fn a_full_queue_drops_the_oldest_and_reports_the_lag() {
        let queue = DeliveryQueue::<(Topic, RecordBatch)>::new(SubscribeOptions {
            queue_capacity: 2,
            slow_consumer: SlowConsumer::DropOldest,
        });
        let topic: Topic = "A".into();
        let one = batch(&[Some("A")]);
        for _ in 0..5 {
            assert!(queue.push_quietly((Arc::clone(&topic), one.clone())));
        }
        assert_eq!(
            queue.stats(),
            QueueStats {
                queued: 2,
                delivered: 5,
                dropped: 3,
                disconnected: false
            }
        );
        assert!(matches!(
            queue.take().unwrap(),
            Some(Some(Delivery::Lagged(3)))
        ));
        assert!(matches!(
            queue.take().unwrap(),
            Some(Some(Delivery::Item(_)))
        ));
        assert!(matches!(
            queue.take().unwrap(),
            Some(Some(Delivery::Item(_)))
        ));
        assert!(queue.take().unwrap().is_none());
        queue.close();
        assert!(matches!(queue.take().unwrap(), Some(None)));
    }

    #[test]
    fn a_full_queue_disconnects_when_asked_to() {
        let queue = DeliveryQueue::<(Topic, RecordBatch)>::new(SubscribeOptions {
            queue_capacity: 1,
            slow_consumer: SlowConsumer::Disconnect,
        });
        let topic: Topic = "A".into();
        let b = batch(&[Some("A")]);
        assert!(queue.push_quietly((Arc::clone(&topic), b.clone())));
        assert!(!queue.push_quietly((topic, b)));
        let err = queue.take().unwrap_err();
        assert_eq!(err.code(), "SLOW_CONSUMER");
        assert!(queue.stats().disconnected);
    }
}
