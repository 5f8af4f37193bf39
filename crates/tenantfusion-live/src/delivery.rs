//! Getting rows to subscribers: one bounded queue per subscriber, a policy
//! for slow ones, and per-topic slices of upstream batches that every
//! subscriber of the topic shares.
//!
//! A queue is bounded twice: by deliveries (`queue_capacity`) and by the
//! bytes they keep alive (`queue_bytes`). A delivery's bytes are what it
//! keeps alive, not what it shows: a zero-copy slice of an upstream batch
//! keeps the whole batch's buffers. Slices stay zero-copy while a queue
//! keeps up; a queue counts each upstream batch its slices pin once (all
//! the topics of one batch pin the same buffers), and once it pins
//! [`PINNED_BATCHES`] batches, a further slice's rows are copied out as it
//! is queued, so a slow reader of one topic among thousands holds its own
//! rows, not the batches around them. Only lagging queues copy, and at most
//! [`COPIES_PER_BATCH`] slices of one batch: the copies are made on the
//! pool's delivery path, which every subscriber waits on, so a lagging
//! reader of many topics of a batch pins the batch (counted in full)
//! rather than have thousands of slices copied for it.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{LiveError, Result};
use arrow::array::{Array, AsArray, UInt32Array};
use arrow::compute::take_record_batch;
use arrow::record_batch::RecordBatch;
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::source::Topic;

/// Upstream batches one queue may keep alive through zero-copy slices
/// before it copies the rows of further slices out (see the module docs).
pub const PINNED_BATCHES: usize = 8;

/// Slices of one upstream batch a queue copies out at most; the rest of
/// the batch's slices pin it (see the module docs).
pub const COPIES_PER_BATCH: usize = 16;

/// The memory a queued item takes.
///
/// ```
/// use tenantfusion_live::Weight;
/// assert_eq!(7u64.own_bytes(), 8);
/// ```
pub trait Weight {
    /// Bytes of its own rows: what a copy of it would take.
    fn own_bytes(&self) -> usize;

    /// Bytes it keeps alive: its own, or more where it shares the buffers
    /// of a larger batch it is a slice of.
    fn held_bytes(&self) -> usize {
        self.own_bytes()
    }

    /// Copies its rows out of the larger batch it is a slice of, so that
    /// batch can be freed. Nothing to do by default.
    fn compact(&mut self) {}
}

impl Weight for RecordBatch {
    fn own_bytes(&self) -> usize {
        self.columns()
            .iter()
            .map(|c| {
                c.to_data()
                    .get_slice_memory_size()
                    .unwrap_or_else(|_| c.get_array_memory_size())
            })
            .sum()
    }

    fn held_bytes(&self) -> usize {
        self.get_array_memory_size()
    }

    fn compact(&mut self) {
        let rows: UInt32Array = (0..self.num_rows() as u32).collect();
        // `take` of every row in order: new buffers of just these rows.
        if let Ok(copy) = take_record_batch(self, &rows) {
            *self = copy;
        }
    }
}

impl<A> Weight for (A, RecordBatch) {
    fn own_bytes(&self) -> usize {
        self.1.own_bytes()
    }

    fn held_bytes(&self) -> usize {
        self.1.held_bytes()
    }

    fn compact(&mut self) {
        self.1.compact();
    }
}

macro_rules! weighs_its_size {
    ($($t:ty),*) => {$(
        impl Weight for $t {
            fn own_bytes(&self) -> usize {
                std::mem::size_of::<$t>()
            }
        }
    )*};
}
weighs_its_size!(u8, u16, u32, u64, usize, i8, i16, i32, i64, isize);

/// What a pusher knows of an item's memory, worked out once for every
/// queue it goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Weighed {
    /// Its own bytes.
    own: usize,
    /// The upstream batch it is a zero-copy slice of (a number unique to
    /// that batch) and the bytes that batch holds; `None` when it holds
    /// little beyond its own.
    pin: Option<(u64, usize)>,
}

impl Weighed {
    /// The weight of `item`, which came from the upstream batch numbered
    /// `origin` (the route estimates instead: [`of_part`](Self::of_part)).
    #[cfg(test)]
    fn of(item: &impl Weight, origin: u64) -> Self {
        Self::from_sizes(item.own_bytes(), item.held_bytes(), origin)
    }

    /// [`of`](Self::of) for `part`, a piece of an upstream batch of
    /// `batch_rows` rows and `batch_bytes` bytes numbered `origin`, without
    /// walking its buffers: its own bytes are taken as its share of the
    /// batch's rows. Work done for every topic of every upstream batch.
    pub(crate) fn of_part(
        part: &RecordBatch,
        origin: u64,
        batch_rows: usize,
        batch_bytes: usize,
    ) -> Self {
        let own = batch_bytes.saturating_mul(part.num_rows()) / batch_rows.max(1);
        Self::from_sizes(own, part.get_array_memory_size(), origin)
    }

    /// A slice when it holds well over its own bytes (buffers are rounded
    /// up to 64 bytes, so a little over is not a slice of something
    /// larger); otherwise it holds what it is.
    fn from_sizes(own: usize, held: usize, origin: u64) -> Self {
        if held > own.saturating_mul(2).saturating_add(1024) {
            Self {
                own,
                pin: Some((origin, held)),
            }
        } else {
            Self {
                own: held,
                pin: None,
            }
        }
    }

    /// An item that holds what it is (nothing of a larger batch).
    fn alone(item: &impl Weight) -> Self {
        Self {
            own: item.held_bytes(),
            pin: None,
        }
    }
}

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
    /// Bytes the queued deliveries may keep alive at most (see
    /// [`Weight`]); one delivery is always taken, however large.
    pub queue_bytes: usize,
    /// What to do when the queue is full.
    pub slow_consumer: SlowConsumer,
}

impl Default for SubscribeOptions {
    fn default() -> Self {
        Self {
            queue_capacity: 1024,
            queue_bytes: 64 << 20,
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
/// let queue = DeliveryQueue::new(SubscribeOptions { queue_capacity: 2, ..SubscribeOptions::default() });
/// for n in 0..5u64 {
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

/// A queued item and what it adds to the queue's bytes. Consecutive
/// slices of one upstream batch (a run) count the batch once: its bytes
/// ride on the run's oldest item and move to the next as that one is taken,
/// so they are released with the run's last.
#[derive(Debug)]
struct Queued<T> {
    item: T,
    bytes: usize,
    /// The upstream batch it pins ([`NOT_PINNED`] for an item that holds
    /// only itself).
    origin: u64,
}

/// The origin of an item that pins no upstream batch.
const NOT_PINNED: u64 = u64::MAX;

#[derive(Debug)]
struct QueueState<T> {
    items: VecDeque<Queued<T>>,
    /// Upstream batches the items keep alive (runs).
    pinned: usize,
    /// The batch whose slices were copied last, and how many of them.
    copied: (u64, usize),
    /// What the items keep alive.
    bytes: usize,
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
    /// Bytes they keep alive.
    pub queued_bytes: usize,
    /// Deliveries pushed so far.
    pub delivered: u64,
    /// Deliveries dropped because the queue was full.
    pub dropped: u64,
    /// Whether it was disconnected as a slow consumer.
    pub disconnected: bool,
}

impl<T: Weight> DeliveryQueue<T> {
    /// An empty queue (a capacity of 0 is taken as 1).
    pub fn new(options: SubscribeOptions) -> Self {
        Self {
            state: Mutex::new(QueueState {
                items: VecDeque::new(),
                pinned: 0,
                copied: (NOT_PINNED, 0),
                bytes: 0,
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
        let weighed = Weighed::alone(&item);
        let queued = self.push_quietly(item, weighed);
        self.wake();
        queued
    }

    /// Queues one item of `weighed` memory (worked out once by a caller
    /// that pushes it to many queues) without waiting and without waking
    /// the consumer; `false` when the consumer is (now) disconnected. The
    /// caller wakes it with [`wake`](Self::wake) when
    /// [`needs_wake`](Self::needs_wake) said so.
    pub(crate) fn push_quietly(&self, mut item: T, weighed: Weighed) -> bool {
        let mut state = self.state.lock();
        if state.disconnected || state.closed {
            return !state.disconnected;
        }
        // A slice of a batch not pinned yet, with enough pinned: copy its
        // rows out rather than keep one more batch alive, for the first
        // few slices of the batch; past them, pinning it costs less than
        // copying every slice on the path every subscriber waits on.
        let (mut origin, mut own, held) = match weighed.pin {
            Some((origin, held)) => (origin, 0, held),
            None => (NOT_PINNED, weighed.own, 0),
        };
        if origin != NOT_PINNED && !state.joins(origin) && state.pinned >= PINNED_BATCHES {
            let copies = match state.copied {
                (batch, copies) if batch == origin => copies,
                _ => 0,
            };
            if copies < COPIES_PER_BATCH {
                item.compact();
                state.copied = (origin, copies + 1);
                (origin, own) = (NOT_PINNED, item.held_bytes());
            }
        }
        // A slice joining the run at the back adds nothing; the first of a
        // run adds its batch.
        let cost = |state: &QueueState<T>| match origin {
            NOT_PINNED => own,
            _ if state.joins(origin) => 0,
            _ => held,
        };
        // Room by count and by bytes; an empty queue takes any one item.
        while !state.items.is_empty()
            && (state.items.len() >= self.options.queue_capacity
                || state.bytes.saturating_add(cost(&state)) > self.options.queue_bytes)
        {
            state.dropped += 1;
            match self.options.slow_consumer {
                SlowConsumer::DropOldest => {
                    state.pop_front();
                    state.lagged += 1;
                }
                SlowConsumer::Disconnect => {
                    state.disconnected = true;
                    state.items.clear();
                    state.pinned = 0;
                    state.bytes = 0;
                    return false;
                }
            }
        }
        let bytes = cost(&state);
        if origin != NOT_PINNED && bytes > 0 {
            state.pinned += 1;
        }
        state.items.push_back(Queued {
            item,
            bytes,
            origin,
        });
        state.bytes += bytes;
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
            queued_bytes: state.bytes,
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
        if let Some(item) = state.pop_front() {
            return Ok(Some(Some(Delivery::Item(item))));
        }
        Ok(state.closed.then_some(None))
    }
}

impl<T> QueueState<T> {
    /// Whether a slice of upstream batch `origin` joins the run at the back.
    fn joins(&self, origin: u64) -> bool {
        self.items.back().is_some_and(|q| q.origin == origin)
    }

    /// Takes the oldest item off, and its bytes; a run's bytes move on to
    /// its next item and go with its last.
    fn pop_front(&mut self) -> Option<T> {
        let queued = self.items.pop_front()?;
        if queued.origin != NOT_PINNED
            && let Some(next) = self.items.front_mut()
            && next.origin == queued.origin
        {
            next.bytes += queued.bytes;
            return Some(queued.item);
        }
        if queued.origin != NOT_PINNED {
            self.pinned -= 1;
        }
        self.bytes -= queued.bytes;
        Some(queued.item)
    }
}

/// Cuts `batch` into one batch per topic (topic in column 0, `Utf8`).
/// Where a topic's rows are contiguous the piece is a zero-copy slice;
/// rows with a null topic are left out. Errors when column 0 is not `Utf8`.
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
            ..SubscribeOptions::default()
        });
        let topic: Topic = "A".into();
        let one = batch(&[Some("A")]);
        let weighed = Weighed { own: 10, pin: None };
        for _ in 0..5 {
            assert!(queue.push_quietly((Arc::clone(&topic), one.clone()), weighed));
        }
        assert_eq!(
            queue.stats(),
            QueueStats {
                queued: 2,
                queued_bytes: 20,
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
            ..SubscribeOptions::default()
        });
        let topic: Topic = "A".into();
        let b = batch(&[Some("A")]);
        let weighed = Weighed { own: 1, pin: None };
        assert!(queue.push_quietly((Arc::clone(&topic), b.clone()), weighed));
        assert!(!queue.push_quietly((topic, b), weighed));
        let err = queue.take().unwrap_err();
        assert_eq!(err.code(), "SLOW_CONSUMER");
        assert!(queue.stats().disconnected);
    }

    #[test]
    fn a_queue_is_bounded_in_bytes_too() {
        let queue = DeliveryQueue::<u64>::new(SubscribeOptions {
            queue_bytes: 100,
            ..SubscribeOptions::default()
        });
        let weighing = |own| Weighed { own, pin: None };
        for n in 0..3 {
            assert!(queue.push_quietly(n, weighing(40)));
        }
        // 3 x 40 > 100: the oldest went.
        assert_eq!(queue.stats().queued, 2);
        assert_eq!(queue.stats().queued_bytes, 80);
        // One item over the whole bound empties the queue and is taken.
        assert!(queue.push_quietly(9, weighing(1_000)));
        assert_eq!(queue.stats().queued, 1);
        assert!(matches!(
            queue.take().unwrap(),
            Some(Some(Delivery::Lagged(3)))
        ));
        assert!(matches!(
            queue.take().unwrap(),
            Some(Some(Delivery::Item(9)))
        ));
        assert_eq!(queue.stats().queued_bytes, 0);
    }

    /// A stand-in for a slice: `compact` marks it copied.
    #[derive(Debug, PartialEq)]
    struct Slice {
        copied: bool,
    }

    impl Weight for Slice {
        fn own_bytes(&self) -> usize {
            10
        }

        fn held_bytes(&self) -> usize {
            if self.copied { 10 } else { 10_000 }
        }

        fn compact(&mut self) {
            self.copied = true;
        }
    }

    /// Queues a fresh slice of upstream batch `origin`.
    fn push_slice(queue: &DeliveryQueue<Slice>, origin: u64) -> bool {
        let slice = Slice { copied: false };
        let weighed = Weighed::of(&slice, origin);
        queue.push_quietly(slice, weighed)
    }

    #[test]
    fn slices_count_their_batch_once_and_past_the_pinned_bound_are_copied() {
        let queue = DeliveryQueue::<Slice>::new(SubscribeOptions::default());
        let push = |origin| {
            let weighed = Weighed::of(&Slice { copied: false }, origin);
            assert_eq!(weighed.pin, Some((origin, 10_000)));
            assert!(push_slice(&queue, origin));
        };
        // Three topics of one upstream batch: the batch counts once.
        for _ in 0..3 {
            push(1);
        }
        assert_eq!(queue.stats().queued_bytes, 10_000);
        // One topic of each of 20 more batches: 8 batches pinned in all,
        // the rest copied out as they came.
        for origin in 2..22 {
            push(origin);
        }
        let stats = queue.stats();
        assert_eq!(stats.queued, 23);
        assert_eq!(stats.queued_bytes, PINNED_BATCHES * 10_000 + 13 * 10);
        let mut copied = Vec::new();
        while let Some(Delivery::Item(slice)) = queue.try_recv().unwrap() {
            copied.push(slice.copied);
        }
        assert_eq!(copied.iter().filter(|c| !**c).count(), 3 + 7);
        assert!(copied[10..].iter().all(|c| *c));
        // Each batch's bytes went with its last slice.
        assert_eq!(queue.stats().queued_bytes, 0);
    }

    /// What a queue of `items` (origin, copied) keeps alive, worked out
    /// from scratch: each run of uncopied slices of one batch holds the
    /// batch (10,000 bytes, as [`Slice`] says), a copied slice its own 10.
    fn model_bytes(items: &[(u64, bool)]) -> usize {
        let mut bytes = 0;
        let mut back: Option<u64> = None;
        for (origin, copied) in items {
            if *copied {
                bytes += 10;
                back = None;
            } else {
                if back != Some(*origin) {
                    bytes += 10_000;
                }
                back = Some(*origin);
            }
        }
        bytes
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(
            tenantfusion_test_support::fuzz_cases(256)
        ))]

        /// Pushes of slices of a few batches (as a pool's rounds push them,
        /// or in any order) and takes in between: the queue's bytes are
        /// always what its items keep alive, within the bound whenever it
        /// holds more than one item, and zero once drained.
        #[test]
        fn queued_bytes_are_what_the_items_keep_alive(
            ops in proptest::collection::vec(proptest::option::of(0u64..12), 1..200),
            queue_bytes in 15_000usize..120_000,
        ) {
            let queue = DeliveryQueue::<Slice>::new(SubscribeOptions {
                queue_capacity: 64,
                queue_bytes,
                ..SubscribeOptions::default()
            });
            // The model: (origin, copied) of every queued item, in order,
            // and the slices of the last batch copied.
            let mut model: std::collections::VecDeque<(u64, bool)> = Default::default();
            let mut copied_last: (u64, usize) = (u64::MAX, 0);
            let pinned = |model: &std::collections::VecDeque<(u64, bool)>| {
                let items: Vec<(u64, bool)> = model.iter().copied().collect();
                let mut runs = 0;
                let mut back = None;
                for (origin, copied) in items {
                    if copied { back = None; continue; }
                    if back != Some(origin) { runs += 1; }
                    back = Some(origin);
                }
                runs
            };
            for op in ops {
                match op {
                    Some(origin) => {
                        proptest::prop_assert!(push_slice(&queue, origin));
                        let joins = model.back().is_some_and(|(o, c)| *o == origin && !c);
                        let mut copied = false;
                        if !joins && pinned(&model) >= PINNED_BATCHES {
                            let copies = if copied_last.0 == origin { copied_last.1 } else { 0 };
                            copied = copies < COPIES_PER_BATCH;
                            if copied {
                                copied_last = (origin, copies + 1);
                            }
                        }
                        // Room by count and by bytes, oldest first.
                        loop {
                            let mut with: Vec<(u64, bool)> = model.iter().copied().collect();
                            with.push((origin, copied));
                            if model.is_empty() || (model.len() < 64 && model_bytes(&with) <= queue_bytes) {
                                break;
                            }
                            model.pop_front();
                        }
                        model.push_back((origin, copied));
                    }
                    None => {
                        let taken = loop {
                            match queue.try_recv().unwrap() {
                                Some(Delivery::Lagged(_)) => continue,
                                Some(Delivery::Item(slice)) => break Some(slice),
                                None => break None,
                            }
                        };
                        let expected = model.pop_front();
                        proptest::prop_assert_eq!(taken.map(|s| s.copied), expected.map(|(_, c)| c));
                    }
                }
                let items: Vec<(u64, bool)> = model.iter().copied().collect();
                let stats = queue.stats();
                proptest::prop_assert_eq!(stats.queued, items.len());
                proptest::prop_assert_eq!(stats.queued_bytes, model_bytes(&items));
                if items.len() > 1 {
                    proptest::prop_assert!(stats.queued_bytes <= queue_bytes);
                }
            }
            while let Some(Delivery::Item(_) | Delivery::Lagged(_)) = queue.try_recv().unwrap() {}
            proptest::prop_assert_eq!(queue.stats().queued_bytes, 0);
        }
    }

    #[test]
    fn a_lagging_queue_copies_a_few_slices_of_a_batch_and_pins_it_for_the_rest() {
        let queue = DeliveryQueue::<Slice>::new(SubscribeOptions::default());
        let push = |origin| assert!(push_slice(&queue, origin));
        for origin in 0..PINNED_BATCHES as u64 {
            push(origin);
        }
        // A reader of 100 topics of the next batch: the first slices are
        // copied, the rest pin the batch, which counts once.
        for _ in 0..100 {
            push(99);
        }
        let stats = queue.stats();
        assert_eq!(
            stats.queued_bytes,
            (PINNED_BATCHES + 1) * 10_000 + COPIES_PER_BATCH * 10
        );
        let mut copied = 0;
        while let Some(Delivery::Item(slice)) = queue.try_recv().unwrap() {
            copied += usize::from(slice.copied);
        }
        assert_eq!(copied, COPIES_PER_BATCH);
        assert_eq!(queue.stats().queued_bytes, 0);
    }

    #[test]
    fn a_dropped_run_frees_its_batch() {
        let one_slice_each_of_5_batches = |options| {
            let queue = DeliveryQueue::<Slice>::new(options);
            for origin in 0..5 {
                assert!(push_slice(&queue, origin));
            }
            queue.stats()
        };
        let stats = one_slice_each_of_5_batches(SubscribeOptions {
            queue_capacity: 2,
            ..SubscribeOptions::default()
        });
        assert_eq!(stats.queued_bytes, 2 * 10_000);
        // One batch's worth fits: each new batch drops the oldest.
        let stats = one_slice_each_of_5_batches(SubscribeOptions {
            queue_bytes: 15_000,
            ..SubscribeOptions::default()
        });
        assert_eq!(
            (stats.queued, stats.queued_bytes, stats.dropped),
            (1, 10_000, 4)
        );
    }

    #[test]
    fn a_slice_weighs_its_rows_and_holds_its_batch_until_compacted() {
        let mut topics = vec![Some("A"); 20_000];
        topics.push(Some("B"));
        let big = batch(&topics);
        let parts = split_by_topic(&big).unwrap();
        let mut b = parts[1].1.clone();
        assert_eq!(b.held_bytes(), big.get_array_memory_size());
        assert!(b.own_bytes() < 64, "{}", b.own_bytes());
        b.compact();
        assert_eq!(numbers(&b), vec![20_000]);
        assert!(b.held_bytes() < 1024, "{}", b.held_bytes());
        // A batch that is not a slice is not pinned; the estimate from the
        // batch's rows agrees.
        let (rows, bytes) = (big.num_rows(), big.get_array_memory_size());
        assert_eq!(Weighed::of(&big, 1).pin, None);
        assert_eq!(Weighed::of_part(&big, 1, rows, bytes).pin, None);
        assert_eq!(Weighed::of_part(&b, 1, rows, bytes).pin, None);
        let slice = &parts[1].1;
        assert_eq!(Weighed::of(slice, 1).pin, Some((1, bytes)));
        assert_eq!(
            Weighed::of_part(slice, 1, rows, bytes).pin,
            Some((1, bytes))
        );
        // A (the 20,000 rows) is nearly all of the batch: not pinned.
        assert_eq!(Weighed::of_part(&parts[0].1, 1, rows, bytes).pin, None);
    }
}
