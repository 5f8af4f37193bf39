//! One wanted topic's route: its subscribers' queues, sequence numbers
//! (duplicates dropped, gaps counted) and the fan-out of upstream batches.
//!
//! A connection delivers only the topics it carries: a row for another
//! topic, even one somebody subscribed to, is a foreign row, counted on
//! its source and dropped, so one source cannot feed (or, with a huge
//! sequence number, silence) a topic another source carries. And a
//! sequence number may move the topic's high-water mark only within the
//! pool's `sequence_window` of it: a row beyond is delivered and counted
//! as a jump without moving the mark, so one bad number cannot make every
//! later row a "duplicate"; two consecutive rows beyond it (a feed that
//! restarted its numbering) set the mark anew.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use arrow::array::{AsArray, BooleanArray};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{Int64Type, UInt64Type};
use arrow::record_batch::RecordBatch;
use parking_lot::{Mutex, RwLock};

use crate::delivery::{Weighed, split_by_topic};
use crate::metrics::{Counter, Traffic};
use crate::registry::SubscriberId;
use crate::source::{Topic, now_us};

use super::PoolInner;
use super::source_entry::SourceEntry;
use super::subscription::Queue;

/// One wanted topic: its subscribers and what has passed through.
#[derive(Debug)]
pub(super) struct Route {
    pub(super) topic: Topic,
    pub(super) subscribers: RwLock<Vec<(SubscriberId, Arc<Queue>)>>,
    pub(super) sequence: Mutex<Numbering>,
    pub(super) traffic: Traffic,
    pub(super) gaps: Counter,
    pub(super) interruptions: Counter,
    pub(super) duplicates: Counter,
    /// Rows whose sequence number was beyond the window.
    pub(super) jumps: Counter,
}

/// Where a topic's numbering is.
#[derive(Debug, Default)]
pub(super) struct Numbering {
    /// The high-water mark: the highest number delivered within the window.
    last: Option<u64>,
    /// The last number beyond the window, delivered without moving the
    /// mark; its successor next sets the mark there.
    jumped: Option<u64>,
}

impl Numbering {
    /// What to do with a row numbered `n`, given `window`.
    fn take(&mut self, n: u64, window: u64) -> Step {
        let Some(last) = self.last else {
            self.last = Some(n);
            return Step::Fresh { skipped: 0 };
        };
        if n.abs_diff(last) <= window {
            self.jumped = None;
            if n > last {
                self.last = Some(n);
                return Step::Fresh {
                    skipped: n - last - 1,
                };
            }
            return Step::Duplicate;
        }
        if self.jumped.is_some_and(|j| j.checked_add(1) == Some(n)) {
            // Two in a row agree: the numbering restarted there.
            self.last = Some(n);
            self.jumped = None;
            return Step::Fresh { skipped: 0 };
        }
        self.jumped = Some(n);
        Step::Jump
    }
}

/// [`Numbering::take`]'s verdict on one row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Delivered; `skipped` numbers were never seen.
    Fresh { skipped: u64 },
    /// Seen already: dropped.
    Duplicate,
    /// Beyond the window: delivered, the mark unmoved.
    Jump,
}

impl Route {
    pub(super) fn new(topic: Topic) -> Self {
        Self {
            topic,
            subscribers: RwLock::default(),
            sequence: Mutex::default(),
            traffic: Traffic::default(),
            gaps: Counter::default(),
            interruptions: Counter::default(),
            duplicates: Counter::default(),
            jumps: Counter::default(),
        }
    }

    /// Drops rows already delivered (a topic can briefly be carried by two
    /// connections while it moves) and counts sequence numbers skipped.
    /// A row without a usable number (null, or negative in an `Int64`
    /// column) is malformed: it is dropped and moves nothing, since taking
    /// `-1` for `u64::MAX` would make every later row look delivered.
    /// Numbers more than `window` from the mark are jumps (see the module
    /// docs).
    pub(super) fn sequence(
        &self,
        part: RecordBatch,
        column: Option<usize>,
        window: u64,
    ) -> Sequenced {
        let Some(column) = column else {
            return Sequenced::whole(part);
        };
        let array = part.column(column);
        let numbers: Vec<Option<u64>> = if let Some(a) = array.as_primitive_opt::<UInt64Type>() {
            a.iter().collect()
        } else if let Some(a) = array.as_primitive_opt::<Int64Type>() {
            a.iter()
                .map(|v| v.and_then(|v| u64::try_from(v).ok()))
                .collect()
        } else {
            return Sequenced::whole(part);
        };
        let mut numbering = self.sequence.lock();
        let mut keep = Vec::with_capacity(numbers.len());
        let mut malformed = 0;
        let mut duplicates = 0;
        let mut gaps = 0;
        for n in numbers {
            let Some(n) = n else {
                malformed += 1;
                keep.push(false);
                continue;
            };
            match numbering.take(n, window) {
                Step::Fresh { skipped } => {
                    self.gaps.add(skipped);
                    gaps += skipped;
                    keep.push(true);
                }
                Step::Duplicate => {
                    duplicates += 1;
                    keep.push(false);
                }
                Step::Jump => {
                    self.jumps.add(1);
                    keep.push(true);
                }
            }
        }
        drop(numbering);
        self.duplicates.add(duplicates);
        let all = part.num_rows() as u64;
        let rows = if malformed + duplicates == 0 {
            Ok(Some(part))
        } else if malformed + duplicates == keep.len() as u64 {
            Ok(None)
        } else {
            filter_record_batch(&part, &BooleanArray::from(keep)).map(Some)
        };
        match rows {
            Ok(rows) => Sequenced {
                rows,
                malformed,
                gaps,
            },
            // Filtering a batch by a mask of its own length does not fail;
            // if it ever did, the rows are dropped and counted, not hidden.
            Err(_) => Sequenced {
                rows: None,
                malformed: all,
                gaps,
            },
        }
    }
}

/// What [`Route::sequence`] kept of a batch.
#[derive(Debug)]
pub(super) struct Sequenced {
    /// The rows to deliver, if any.
    pub(super) rows: Option<RecordBatch>,
    /// Rows dropped for having no usable sequence number.
    pub(super) malformed: u64,
    /// Sequence numbers skipped (never seen).
    pub(super) gaps: u64,
}

impl Sequenced {
    pub(super) fn whole(part: RecordBatch) -> Self {
        Self {
            rows: Some(part),
            malformed: 0,
            gaps: 0,
        }
    }
}

impl PoolInner {
    /// Fans `batch`, read by a connection that carries `carried`, out per
    /// topic to the subscribers' queues; rows of other topics are foreign
    /// (see the module docs).
    pub(super) fn deliver(
        &self,
        source: &SourceEntry,
        carried: &HashSet<Topic>,
        traffic: &Traffic,
        batch: &RecordBatch,
    ) {
        traffic.messages.add(1);
        traffic.rows.add(batch.num_rows() as u64);
        source.messages.add(1);
        source.rows.add(batch.num_rows() as u64);
        let batch_bytes = batch.get_array_memory_size();
        traffic.bytes.add(batch_bytes as u64);
        let parts = match split_by_topic(batch) {
            Ok(parts) => parts,
            Err(_) => {
                traffic.malformed.add(1);
                source.malformed.add(1);
                return;
            }
        };
        // Numbers this batch for the queues, which count the buffers its
        // slices share once.
        let origin = self.batches.fetch_add(1, Ordering::Relaxed);
        let batch_rows = batch.num_rows();
        let mut latencies = Vec::with_capacity(parts.len());
        let mut disconnected = Vec::new();
        let mut to_wake = Vec::new();
        let routes = self.routes.read();
        for (topic, part) in parts {
            if !carried.contains(topic) {
                source.foreign_rows.add(part.num_rows() as u64);
                continue;
            }
            let Some(route) = routes.get(topic) else {
                continue;
            };
            let window = self.config.sequence_window;
            let sequenced = route.sequence(part, source.sequence_column, window);
            source.gaps.add(sequenced.gaps);
            if sequenced.malformed > 0 {
                traffic.malformed.add(1);
                source.malformed.add(1);
            }
            let Some(part) = sequenced.rows else {
                continue;
            };
            if let Some(at) = source.event_time_us(&part) {
                latencies.push((now_us() as i64).saturating_sub(at).max(0) as u64);
            }
            route.traffic.messages.add(1);
            route.traffic.rows.add(part.num_rows() as u64);
            // Weighed once: every subscriber of the topic shares the batch.
            let weighed = Weighed::of_part(&part, origin, batch_rows, batch_bytes);
            for (id, queue) in route.subscribers.read().iter() {
                if !queue.push_quietly((Arc::clone(&route.topic), part.clone()), weighed) {
                    disconnected.push(*id);
                }
                if queue.needs_wake() {
                    to_wake.push(Arc::clone(queue));
                }
            }
        }
        drop(routes);
        // One wake per subscriber per upstream batch, not per topic in it.
        for queue in to_wake {
            queue.wake();
        }
        if !latencies.is_empty() {
            let mut histogram = source.latency.lock();
            for micros in latencies {
                histogram.record(micros);
            }
        }
        for id in disconnected {
            self.unsubscribe(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{Int64Array, StringArray, UInt64Array};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn batch(seqs: Vec<Option<i64>>) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("topic", DataType::Utf8, false),
            Field::new("seq", DataType::Int64, true),
        ]));
        let topics = StringArray::from(vec!["T"; seqs.len()]);
        RecordBatch::try_new(
            schema,
            vec![Arc::new(topics), Arc::new(Int64Array::from(seqs))],
        )
        .unwrap()
    }

    const WINDOW: u64 = 1_000;

    fn kept(sequenced: &Sequenced) -> Vec<i64> {
        sequenced.rows.as_ref().map_or_else(Vec::new, |rows| {
            rows.column(1).as_primitive::<Int64Type>().values().to_vec()
        })
    }

    #[test]
    fn a_negative_or_null_sequence_number_is_malformed_and_moves_nothing() {
        let route = Route::new(Arc::from("T"));
        let first = route.sequence(
            batch(vec![Some(5), Some(-1), None, Some(6)]),
            Some(1),
            WINDOW,
        );
        assert_eq!(kept(&first), [5, 6]);
        assert_eq!(first.malformed, 2);
        // Read as u64, -1 was u64::MAX: every later row was a "duplicate".
        let next = route.sequence(batch(vec![Some(7), Some(9)]), Some(1), WINDOW);
        assert_eq!(kept(&next), [7, 9]);
        assert_eq!(next.malformed, 0);
        assert_eq!(route.gaps.get(), 1, "8 skipped");
        assert_eq!(route.duplicates.get(), 0);
        let only_bad = route.sequence(batch(vec![Some(-5)]), Some(1), WINDOW);
        assert!(only_bad.rows.is_none());
        assert_eq!(only_bad.malformed, 1);
        let replayed = route.sequence(batch(vec![Some(9), Some(10)]), Some(1), WINDOW);
        assert_eq!(kept(&replayed), [10]);
        assert_eq!(route.duplicates.get(), 1);
    }

    #[test]
    fn unsigned_sequence_numbers_keep_their_nulls_out() {
        let route = Route::new(Arc::from("T"));
        let schema = Arc::new(Schema::new(vec![
            Field::new("topic", DataType::Utf8, false),
            Field::new("seq", DataType::UInt64, true),
        ]));
        let part = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec!["T"; 3])),
                Arc::new(UInt64Array::from(vec![Some(1), None, Some(2)])),
            ],
        )
        .unwrap();
        let sequenced = route.sequence(part, Some(1), WINDOW);
        assert_eq!(sequenced.malformed, 1);
        assert_eq!(sequenced.rows.unwrap().num_rows(), 2);
    }

    #[test]
    fn one_number_beyond_the_window_moves_no_mark_and_two_in_a_row_restart_it() {
        let route = Route::new(Arc::from("T"));
        let seq = |values: Vec<i64>| {
            let part = batch(values.into_iter().map(Some).collect());
            kept(&route.sequence(part, Some(1), WINDOW))
        };
        assert_eq!(seq(vec![10, 11]), [10, 11]);
        // A corrupt number from the carrier: delivered, counted, and the
        // rows after it are not taken for duplicates.
        assert_eq!(seq(vec![i64::MAX, 12, 13]), [i64::MAX, 12, 13]);
        assert_eq!(route.jumps.get(), 1);
        assert_eq!(route.duplicates.get(), 0);
        assert_eq!(route.gaps.get(), 0);
        // Within the window, behind the mark: duplicates, as before.
        assert_eq!(seq(vec![12, 14]), [14]);
        assert_eq!(route.duplicates.get(), 1);
        // The feed restarted from 1: the first row is a jump, the second
        // agrees with it and sets the mark there.
        assert_eq!(
            seq(vec![-1 + 1_000_000, 1_000_000, 1_000_001]),
            [999_999, 1_000_000, 1_000_001]
        );
        assert_eq!(route.jumps.get(), 2);
        assert_eq!(seq(vec![1_000_001, 1_000_003]), [1_000_003]);
        assert_eq!(route.gaps.get(), 1, "1,000,002 never came");
        // A restart below the mark, far back: the same.
        assert_eq!(seq(vec![1, 2, 3]), [1, 2, 3]);
        assert_eq!(seq(vec![2, 4]), [4]);
        assert_eq!(route.jumps.get(), 3);
    }
}
