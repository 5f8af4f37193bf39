//! One partition in memory: its manifest, its rows not flushed yet, and
//! what each logged write does to them. A write applies its record here
//! once it is durable, and replay applies the same record the same way:
//! there is one path from a record to the partition's rows.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use datafusion::arrow::array::BooleanArray;
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::Result as DFResult;
use parking_lot::RwLock;
use tenantfusion_core::TenantError;
use tenantfusion_tables::{RowMatcher, append_coalesced, rows_at};

use super::records::Record;
use crate::codec::Decoder;
use crate::manifest::{Manifest, SegmentEntry};

/// What applying a log record did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Applied {
    /// The manifest reflected it already.
    Flushed,
    Changed,
    /// It dropped the partition's rows.
    Dropped,
}

#[derive(Debug, Default)]
pub(super) struct Partition {
    /// Held from logging a write until it is applied, and over a flush: a
    /// partition's writes are applied in log order and none lands while
    /// its rows are being flushed.
    pub(super) writer: tokio::sync::Mutex<()>,
    pub(super) state: RwLock<PartitionState>,
    /// A write that filled the partition is flushing it.
    pub(super) flush_queued: AtomicBool,
    /// Why the partition cannot be used (its manifest is damaged).
    pub(super) damaged: Option<TenantError>,
}

#[derive(Debug, Default)]
pub(super) struct PartitionState {
    pub(super) manifest: Arc<Manifest>,
    /// Rows logged but not flushed, oldest first.
    pub(super) hot: Vec<RecordBatch>,
    pub(super) hot_rows: u64,
    /// Rows of the segments that UPDATE or DELETE took out since the last
    /// flush; scans leave them out, the next flush rewrites the segments
    /// without them. Shared with readers, copied only when changed while
    /// one holds it.
    pub(super) pending: Arc<TakenRows>,
    /// First and last LSN of the writes not in the manifest yet (rows in
    /// `hot`, rows in `pending`).
    pub(super) hot_lsns: Option<(u64, u64)>,
    /// When the oldest of those writes was applied (in this process).
    pub(super) hot_since: Option<Instant>,
    /// Segments no manifest lists any more, deleted once no scan reads them.
    pub(super) retired: Vec<Arc<SegmentEntry>>,
}

impl PartitionState {
    pub(super) fn with_manifest(manifest: Manifest) -> Self {
        Self {
            manifest: Arc::new(manifest),
            ..Self::default()
        }
    }

    pub(super) fn logged(&mut self, lsn: u64) {
        let first = self.hot_lsns.map_or(lsn, |(first, _)| first);
        self.hot_lsns = Some((first, lsn));
        self.hot_since.get_or_insert_with(Instant::now);
    }

    pub(super) fn append(&mut self, lsn: u64, batches: Vec<RecordBatch>) -> DFResult<u64> {
        let added = append_coalesced(&mut self.hot, batches)?;
        if added > 0 {
            self.hot_rows += added;
            self.logged(lsn);
        }
        Ok(added)
    }

    /// Takes `removed` out (from the rows in memory first, the rest from
    /// the segments) and adds `added`: the effect of a logged UPDATE or
    /// DELETE, the same when it is replayed. `located` (live writes only)
    /// says where the write found each row; without it (replay), rows are
    /// looked for by value in memory and taken out of the segments by
    /// value: the same multiset of rows goes either way.
    pub(super) fn replace(
        &mut self,
        lsn: u64,
        removed: &RecordBatch,
        added: Option<RecordBatch>,
        located: Option<Located>,
    ) -> DFResult<()> {
        match located {
            // The writer lock held since the write looked keeps the rows in
            // memory as it saw them; should they differ, the rows are
            // looked for again rather than taken out at stale positions.
            Some(located)
                if located.rows.len() == removed.num_rows()
                    && same_rows(&located.hot, &self.hot) =>
            {
                self.take_out_at(&located.rows)?
            }
            located => {
                let places: Option<Vec<Option<Place>>> = located.map(|located| {
                    located
                        .rows
                        .into_iter()
                        .map(|found| match found {
                            Found::Segment(place) => Some(place),
                            Found::Hot { .. } => None,
                        })
                        .collect()
                });
                self.take_out_by_value(removed, places.as_deref())?
            }
        }
        if let Some(added) = added {
            self.hot_rows += append_coalesced(&mut self.hot, vec![added])?;
        }
        self.logged(lsn);
        Ok(())
    }

    /// Takes out the rows at `rows`, as a live write found them.
    fn take_out_at(&mut self, rows: &[Found]) -> DFResult<()> {
        let mut in_memory: Vec<Vec<usize>> = vec![Vec::new(); self.hot.len()];
        for found in rows {
            match found {
                Found::Hot { batch, row } => in_memory[*batch].push(*row),
                Found::Segment(place) => Arc::make_mut(&mut self.pending).locate(place.clone()),
            }
        }
        let mut taken = 0;
        let hot = std::mem::take(&mut self.hot);
        for (batch, at) in hot.into_iter().zip(in_memory) {
            if at.is_empty() {
                self.hot.push(batch);
                continue;
            }
            let mut keep = vec![true; batch.num_rows()];
            for row in at {
                taken += u64::from(std::mem::replace(&mut keep[row], false));
            }
            let batch = filter_record_batch(&batch, &BooleanArray::from(keep))?;
            if batch.num_rows() > 0 {
                self.hot.push(batch);
            }
        }
        self.hot_rows -= taken;
        Ok(())
    }

    /// Takes `removed` out by value: from the rows in memory first, the
    /// rest from the segments, at `places` where known (one per row of
    /// `removed`), by value otherwise.
    fn take_out_by_value(
        &mut self,
        removed: &RecordBatch,
        places: Option<&[Option<Place>]>,
    ) -> DFResult<()> {
        let mut matcher = RowMatcher::new(std::slice::from_ref(removed))?;
        (self.hot, _) = matcher.take_all(std::mem::take(&mut self.hot))?;
        self.hot_rows -= matcher.found().len() as u64;
        if matcher.is_done() {
            return Ok(());
        }
        let pending = Arc::make_mut(&mut self.pending);
        let mut by_value = Vec::new();
        for row in matcher.missing() {
            match places
                .and_then(|places| places.get(row as usize))
                .cloned()
                .flatten()
            {
                Some(place) => pending.locate(place),
                None => by_value.push(row),
            }
        }
        if !by_value.is_empty() {
            pending.by_value.push(rows_at(removed, &by_value)?);
            pending.count += by_value.len() as u64;
        }
        Ok(())
    }

    /// Forgets what the manifest now holds.
    pub(super) fn flushed(&mut self, manifest: Manifest) {
        self.manifest = Arc::new(manifest);
        self.hot.clear();
        self.hot_rows = 0;
        self.pending = Arc::default();
        self.hot_lsns = None;
        self.hot_since = None;
    }

    /// The rows a scan reads now: the segments', less those UPDATE/DELETE
    /// took out of them since, plus the rows not flushed.
    pub(super) fn rows(&self) -> u64 {
        (self.hot_rows + self.manifest.rows()).saturating_sub(self.pending.count)
    }

    /// Empties the partition for a drop logged at `lsn`; returns the rows
    /// it held.
    pub(super) fn drop_rows(&mut self, lsn: u64) -> u64 {
        let rows = self.rows();
        let old = Arc::clone(&self.manifest);
        self.retired.extend(old.segments.iter().cloned());
        self.flushed(old.dropped(lsn));
        rows
    }

    /// Applies the log record `lsn` of `kind` (the rest of it in
    /// `record`), unless the manifest reflects it already (then the record
    /// is not even decoded).
    pub(super) fn apply_record(
        &mut self,
        lsn: u64,
        kind: u8,
        record: &mut Decoder<'_>,
    ) -> Result<Applied, String> {
        if lsn <= self.manifest.flushed_through {
            return Ok(Applied::Flushed);
        }
        let unfit =
            |e: datafusion::error::DataFusionError| format!("rows do not fit the table: {e}");
        match Record::decode(kind, record)? {
            Record::Append(rows) => {
                self.append(lsn, rows).map_err(unfit)?;
                Ok(Applied::Changed)
            }
            Record::DropPartition => {
                self.drop_rows(lsn);
                Ok(Applied::Dropped)
            }
            Record::Replace { removed, added } => {
                self.replace(lsn, &removed, added, None).map_err(unfit)?;
                Ok(Applied::Changed)
            }
        }
    }

    pub(super) fn has_rows(&self) -> bool {
        self.hot_rows > 0 || !self.manifest.segments.is_empty()
    }

    /// What a reader needs, without holding the lock: the manifest, the
    /// rows in memory and the segment rows taken out.
    pub(super) fn snapshot(&self) -> (Arc<Manifest>, Vec<RecordBatch>, Arc<TakenRows>) {
        (
            Arc::clone(&self.manifest),
            self.hot.clone(),
            Arc::clone(&self.pending),
        )
    }

    /// Retired segments no scan holds any more, taken out of the list.
    pub(super) fn unreferenced(&mut self) -> Vec<Arc<SegmentEntry>> {
        let (free, busy) = std::mem::take(&mut self.retired)
            .into_iter()
            .partition(|segment| Arc::strong_count(segment) == 1);
        self.retired = busy;
        free
    }
}

impl Partition {
    pub(super) fn with_manifest(manifest: Manifest) -> Self {
        Self {
            state: RwLock::new(PartitionState::with_manifest(manifest)),
            ..Self::default()
        }
    }
}

/// Where a row is: its segment's file and its index among the segment's rows.
pub(super) type Place = (String, u64);

/// Where a live UPDATE or DELETE found a row it takes out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Found {
    /// Row `row` of batch `batch` of the rows in memory.
    Hot { batch: usize, row: usize },
    /// A segment's row.
    Segment(Place),
}

/// Where a live UPDATE or DELETE found the rows it takes out, one
/// [`Found`] per row, and the rows in memory it looked through (positions
/// there hold only for those very batches).
#[derive(Debug)]
pub(super) struct Located {
    pub(super) hot: Vec<RecordBatch>,
    pub(super) rows: Vec<Found>,
}

/// Whether `a` and `b` are the same batches (not merely equal ones): a
/// row's position found in one holds in the other.
fn same_rows(a: &[RecordBatch], b: &[RecordBatch]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(a, b)| {
            a.num_rows() == b.num_rows()
                && a.columns()
                    .iter()
                    .zip(b.columns())
                    .all(|(a, b)| Arc::ptr_eq(a, b))
        })
}

/// Rows of one segment, with the index in the segment of each.
pub(super) type Placed = (RecordBatch, Vec<u64>);

/// The segment rows UPDATE or DELETE took out since the last flush
/// ([`PartitionState::pending`]).
///
/// A live UPDATE or DELETE has just found its rows in the segments, so it
/// records where they are: a reader leaves those rows out by position,
/// reading only the columns it wants and comparing nothing. A write
/// replayed after a restart carries only the rows' values (its log record
/// is all there is): those rows are found by value by every reader, as
/// [`RowMatcher`] finds them, until the next flush.
#[derive(Debug, Default, Clone)]
pub(super) struct TakenRows {
    /// Segment file -> indices of its rows taken out, ascending.
    located: HashMap<String, Vec<u64>>,
    /// Rows taken out whose places are not known.
    by_value: Vec<RecordBatch>,
    /// Rows taken out, both kinds.
    count: u64,
}

impl TakenRows {
    fn locate(&mut self, (file, row): Place) {
        let rows = self.located.entry(file).or_default();
        if let Err(at) = rows.binary_search(&row) {
            rows.insert(at, row);
            self.count += 1;
        }
    }
}

/// [`TakenRows`] as a reader goes through the segments: every read of
/// segment rows goes through [`apply`](Self::apply), so scans, UPDATE,
/// DELETE, flushes and salvage agree on which rows are still there.
#[derive(Debug)]
pub(super) struct TakenOut {
    rows: Arc<TakenRows>,
    by_value: Option<RowMatcher>,
}

impl TakenOut {
    /// The rows `pending` lists as taken out.
    pub(super) fn new(pending: &Arc<TakenRows>) -> DFResult<Self> {
        let by_value = match pending.by_value.is_empty() {
            true => None,
            false => Some(RowMatcher::new(&pending.by_value)?),
        };
        Ok(Self {
            rows: Arc::clone(pending),
            by_value,
        })
    }

    /// Whether rows taken out by value are still to be met: a reader must
    /// then read whole rows (they are compared on every column).
    pub(super) fn needs_values(&self) -> bool {
        self.by_value.as_ref().is_some_and(|taken| !taken.is_done())
    }

    /// Whether reading `file` may meet rows taken out.
    pub(super) fn touches(&self, file: &str) -> bool {
        self.needs_values() || self.rows.located.contains_key(file)
    }

    /// The rows of segment `file` in `rows` (with each row's index in the
    /// segment) less those taken out: every column when
    /// [`needs_values`](Self::needs_values); and whether any was.
    pub(super) fn apply(&mut self, file: &str, rows: Vec<Placed>) -> DFResult<(Vec<Placed>, bool)> {
        let located = self.rows.located.get(file).map(Vec::as_slice);
        let mut kept = Vec::with_capacity(rows.len());
        let mut changed = false;
        for rows in rows {
            let mut rows = rows;
            if let Some(keep) = located.and_then(|located| taken_at(located, &rows.1)) {
                rows = keep_placed(rows, &BooleanArray::from(keep))?;
                changed = true;
            }
            if let Some(taken) = self.by_value.as_mut().filter(|taken| !taken.is_done()) {
                let keep = taken.take_from(&rows.0)?;
                if keep.false_count() > 0 {
                    rows = keep_placed(rows, &keep)?;
                    changed = true;
                }
            }
            if rows.0.num_rows() > 0 {
                kept.push(rows);
            }
        }
        Ok((kept, changed))
    }
}

/// Which of `places` to keep, `located` (ascending) leaving out; `None`
/// when it leaves out none. Places come ascending from a segment's reader,
/// so the rows taken out among them are one stretch of `located`, walked
/// beside them (looked up one by one otherwise).
fn taken_at(located: &[u64], places: &[u64]) -> Option<Vec<bool>> {
    let (first, last) = (places.first()?, places.last()?);
    let sorted = places.is_sorted();
    let stretch = match sorted {
        true => {
            let from = located.partition_point(|row| row < first);
            &located[from..located.partition_point(|row| row <= last)]
        }
        false => located,
    };
    if stretch.is_empty() {
        return None;
    }
    let mut keep = vec![true; places.len()];
    if sorted {
        let mut taken_out = stretch.iter().peekable();
        for (place, keep) in places.iter().zip(&mut keep) {
            while taken_out.next_if(|row| *row < place).is_some() {}
            *keep = taken_out.next_if(|row| *row == place).is_none();
        }
    } else {
        for (place, keep) in places.iter().zip(&mut keep) {
            *keep = stretch.binary_search(place).is_err();
        }
    }
    keep.contains(&false).then_some(keep)
}

/// The rows of `rows` that `keep` keeps (a NULL does not), each with its
/// place.
fn keep_placed((batch, places): Placed, keep: &BooleanArray) -> DFResult<Placed> {
    let places = places
        .into_iter()
        .zip(keep.iter())
        .filter_map(|(place, keep)| (keep == Some(true)).then_some(place))
        .collect();
    Ok((filter_record_batch(&batch, keep)?, places))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Array, Int64Array};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::record_batch::RecordBatch;

    use super::{Found, Located, PartitionState, taken_at};

    fn ids(values: &[i64]) -> RecordBatch {
        let schema = Schema::new(vec![Field::new("id", DataType::Int64, false)]);
        let column = Int64Array::from(values.to_vec());
        RecordBatch::try_new(Arc::new(schema), vec![Arc::new(column)]).unwrap()
    }

    fn hot_ids(state: &PartitionState) -> Vec<i64> {
        let values = state.hot.iter().flat_map(|batch| {
            let column = batch.column(0).as_any().downcast_ref::<Int64Array>();
            column.unwrap().values().to_vec()
        });
        values.collect()
    }

    /// Two batches in memory that appending does not merge (the later
    /// one is smaller).
    fn two_batches() -> PartitionState {
        let mut state = PartitionState::default();
        state.append(1, vec![ids(&[1, 2, 3])]).unwrap();
        state.append(2, vec![ids(&[4, 5])]).unwrap();
        assert_eq!(state.hot.len(), 2);
        state
    }

    #[test]
    fn a_live_write_takes_out_the_rows_where_it_found_them() {
        let mut state = two_batches();
        let located = Located {
            hot: state.hot.clone(),
            rows: vec![
                Found::Hot { batch: 1, row: 0 },
                Found::Segment(("s1.parquet".into(), 7)),
                Found::Hot { batch: 0, row: 0 },
            ],
        };
        // The rows' values say nothing of where they are: 99 is nowhere.
        let removed = ids(&[4, 99, 1]);
        state
            .replace(3, &removed, Some(ids(&[40])), Some(located))
            .unwrap();
        assert_eq!(hot_ids(&state), [2, 3, 5, 40]);
        assert_eq!(state.hot_rows, 4);
        assert_eq!(state.pending.count, 1);
        assert_eq!(state.pending.located["s1.parquet"], [7]);
        assert!(state.pending.by_value.is_empty());
    }

    #[test]
    fn rows_in_memory_other_than_the_write_saw_are_looked_for_by_value() {
        let mut state = two_batches();
        // The same values in other batches than those in memory now:
        // positions would not hold there, values do.
        let located = Located {
            hot: vec![ids(&[1, 2, 3]), ids(&[4, 5])],
            rows: vec![
                Found::Hot { batch: 0, row: 0 },
                Found::Segment(("s1.parquet".into(), 7)),
            ],
        };
        state
            .replace(3, &ids(&[2, 9]), None, Some(located))
            .unwrap();
        assert_eq!(hot_ids(&state), [1, 3, 4, 5]);
        assert_eq!(state.hot_rows, 4);
        // The row not in memory goes by its place, still known.
        assert_eq!(state.pending.located["s1.parquet"], [7]);
        assert!(state.pending.by_value.is_empty());
        // Replay knows values only.
        state.replace(4, &ids(&[5, 8]), None, None).unwrap();
        assert_eq!(hot_ids(&state), [1, 3, 4]);
        assert_eq!(state.pending.by_value.len(), 1);
        assert_eq!(state.pending.count, 2);
    }

    #[test]
    fn places_taken_out_are_found_walking_or_looking_up() {
        let located = [2, 5, 9, 40];
        // Ascending (as a reader gives them): only the stretch 5..9 counts.
        assert_eq!(
            taken_at(&located, &[4, 5, 6, 9]),
            Some(vec![true, false, true, false])
        );
        assert_eq!(taken_at(&located, &[10, 11, 39]), None);
        // Taken-out places around, none among them.
        assert_eq!(taken_at(&located, &[3, 4, 6]), None);
        assert_eq!(taken_at(&located, &[]), None);
        // Not ascending: looked up one by one, the same answer.
        assert_eq!(
            taken_at(&located, &[9, 4, 40, 2]),
            Some(vec![false, true, false, false])
        );
    }
}
