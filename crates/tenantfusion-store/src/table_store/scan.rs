//! Reads: a partition's segments (row groups the filters rule out skipped,
//! only the columns asked for decoded, rows the filters' plain comparisons
//! reject left out), less the rows UPDATE and DELETE took out, then its
//! rows in memory.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, UInt32Array};
use datafusion::arrow::compute::{concat_batches, prep_null_mask_filter, take, take_record_batch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result as DFResult};
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::expressions::{BinaryExpr, Column, Literal};
use datafusion::physical_expr::{PhysicalExpr, split_conjunction};
use datafusion::physical_optimizer::pruning::PruningStatistics;
use datafusion::physical_optimizer::pruning::{PruningPredicate, PruningPredicateBuilder};
use tenantfusion_core::Result;
use tenantfusion_tables::{PartitionKey, ReadRequest};

use super::Inner;
use super::partition_state::{Placed, TakenOut};
use crate::manifest::SegmentEntry;
use crate::parquet_segment;

impl Inner {
    /// Every row of partition `key`.
    pub(super) async fn read(self: &Arc<Self>, key: &PartitionKey) -> DFResult<Vec<RecordBatch>> {
        let schema = {
            let loaded = self.load().await?;
            let partition = self.partition(loaded, key).await?;
            let state = partition.state.read();
            state
                .hot
                .first()
                .map(RecordBatch::schema)
                .or_else(|| state.manifest.segments.first().map(|s| s.stats_schema()))
        };
        let Some(schema) = schema else {
            return Ok(Vec::new());
        };
        let request = ReadRequest {
            columns: None,
            schema,
            predicate: None,
        };
        self.scan(key, &request).await
    }

    /// The rows of partition `key` that `request` asks for: its segments'
    /// first, then those in memory.
    pub(super) async fn scan(
        self: &Arc<Self>,
        key: &PartitionKey,
        request: &ReadRequest,
    ) -> DFResult<Vec<RecordBatch>> {
        let loaded = self.load().await?;
        let partition = self.partition(loaded, key).await?;
        let (manifest, hot, pending) = partition.state.read().snapshot();
        let columns = request.columns.as_deref();
        let mut out = Vec::new();
        if !manifest.segments.is_empty() {
            let selection = Selection::of(&request.schema, request.predicate.as_ref());
            let mut taken = TakenOut::new(&pending)?;
            for segment in &manifest.segments {
                let (rows, _) = self
                    .live_rows(key, segment, &mut taken, columns, &selection)
                    .await?;
                for batch in rows {
                    out.push(conform(batch, &request.schema)?);
                }
            }
        }
        for batch in hot {
            out.push(match columns {
                Some(columns) => batch.project(columns)?,
                None => batch,
            });
        }
        Ok(out)
    }

    /// A segment's rows still in the partition: those `taken` does not
    /// take out, `columns` of them (all when `None`), among those
    /// `selection` selects; and whether `taken` took any out.
    pub(super) async fn live_rows(
        &self,
        key: &PartitionKey,
        segment: &SegmentEntry,
        taken: &mut TakenOut,
        columns: Option<&[usize]>,
        selection: &Selection,
    ) -> Result<(Vec<RecordBatch>, bool)> {
        if !taken.touches(&segment.file) {
            let (rows, _) = self.read_segment(key, segment, columns, selection).await?;
            let mut selected = Vec::with_capacity(rows.len());
            for batch in rows {
                let batch = selection.select(batch)?;
                if batch.num_rows() > 0 {
                    selected.push(batch);
                }
            }
            return Ok((selected, false));
        }
        let (rows, changed) = self
            .placed_live_rows(key, segment, taken, columns, selection)
            .await?;
        Ok((rows.into_iter().map(|(batch, _)| batch).collect(), changed))
    }

    /// [`live_rows`](Self::live_rows), each batch with the index in the
    /// segment of each of its rows.
    ///
    /// Rows taken out by value are matched on every column, so while some
    /// are still to be met the segment is read whole and projected
    /// afterwards. Selecting first still holds: a taken-out row in a
    /// skipped row group or rejected by the selection's comparisons fails
    /// them, so if it matches an equal row elsewhere instead, that row
    /// fails them too and is left out either way.
    pub(super) async fn placed_live_rows(
        &self,
        key: &PartitionKey,
        segment: &SegmentEntry,
        taken: &mut TakenOut,
        columns: Option<&[usize]>,
        selection: &Selection,
    ) -> Result<(Vec<Placed>, bool)> {
        let whole = taken.needs_values();
        let read = if whole { None } else { columns };
        let (batches, groups) = self.read_segment(key, segment, read, selection).await?;
        // Rows are selected before they are placed: a read by key places
        // the one row it keeps, not every row of its row group.
        let places = Places::of(&segment.row_group_rows, &groups);
        let mut rows = Vec::with_capacity(batches.len());
        let mut first = 0;
        for batch in batches {
            let count = batch.num_rows();
            let kept = match selection.compared.is_empty() {
                true => None,
                // The comparisons are over the columns asked for.
                false => match (whole, columns) {
                    (true, Some(columns)) => {
                        let asked = batch.project(columns).map_err(DataFusionError::from)?;
                        selection.rows(&asked)?
                    }
                    _ => selection.rows(&batch)?,
                },
            };
            let placed = match kept {
                None => (batch, places.range(first, count)),
                Some(kept) => {
                    let at = kept.values().iter().map(|&i| places.at(first + i as usize));
                    let batch = take_record_batch(&batch, &kept).map_err(DataFusionError::from)?;
                    (batch, at.collect())
                }
            };
            first += count;
            if placed.0.num_rows() > 0 {
                rows.push(placed);
            }
        }
        let (rows, changed) = taken.apply(&segment.file, rows)?;
        let rows = match (whole, columns) {
            (true, Some(columns)) => rows
                .into_iter()
                .map(|(batch, places)| Ok((batch.project(columns)?, places)))
                .collect::<std::result::Result<_, DataFusionError>>()?,
            _ => rows,
        };
        Ok((rows, changed))
    }

    /// Reads a segment's rows: `columns` of them (all when `None`), in
    /// the row groups `selection` cannot rule out; and which row groups
    /// those are, ascending.
    pub(super) async fn read_segment(
        &self,
        key: &PartitionKey,
        segment: &SegmentEntry,
        columns: Option<&[usize]>,
        selection: &Selection,
    ) -> Result<(Vec<RecordBatch>, Vec<usize>)> {
        let groups = segment.row_group_rows.len();
        let keep = selection.row_groups(segment);
        let kept: Vec<usize> = (0..groups).filter(|&g| keep[g]).collect();
        self.row_groups_skipped
            .fetch_add((groups - kept.len()) as u64, Ordering::Relaxed);
        if kept.is_empty() {
            return Ok((Vec::new(), kept));
        }
        self.row_groups_read
            .fetch_add(kept.len() as u64, Ordering::Relaxed);
        let dir = self.partition_dir(key);
        let path = dir.clone().join(segment.file.as_str());
        let cache = self.files.row_groups();
        let cached: Vec<Option<RecordBatch>> =
            kept.iter().map(|&g| cache.get(path.as_ref(), g)).collect();
        // None of them decoded already and only some columns wanted: one
        // read, as before there was a cache (such reads do not fill it).
        if columns.is_some() && cached.iter().all(Option::is_none) {
            let rows =
                parquet_segment::read(&self.files, &dir, segment, columns, kept.clone()).await?;
            return Ok((rows, kept));
        }
        let mut out = Vec::with_capacity(kept.len());
        for (&group, cached) in kept.iter().zip(cached) {
            match (cached, columns) {
                (Some(rows), Some(columns)) => {
                    out.push(rows.project(columns).map_err(DataFusionError::from)?)
                }
                (Some(rows), None) => out.push(rows),
                (None, Some(_)) => out.extend(
                    parquet_segment::read(&self.files, &dir, segment, columns, vec![group]).await?,
                ),
                (None, None) => {
                    let rows = parquet_segment::read(&self.files, &dir, segment, None, vec![group])
                        .await?;
                    if let Some(first) = rows.first() {
                        let whole = concat_batches(&first.schema(), &rows)
                            .map_err(DataFusionError::from)?;
                        cache.insert(path.as_ref(), group, whole.clone());
                        out.push(whole);
                    }
                }
            }
        }
        Ok((out, kept))
    }
}

/// `rows`, the rows of row groups `groups` of `segment` in order, each
/// batch with the index in the segment of each of its rows (counted from
/// the row groups' sizes, so batches need not line up with row groups).
pub(super) fn placed(
    segment: &SegmentEntry,
    groups: &[usize],
    rows: Vec<RecordBatch>,
) -> Vec<Placed> {
    let places = Places::of(&segment.row_group_rows, groups);
    let mut first = 0;
    rows.into_iter()
        .map(|batch| {
            let these = places.range(first, batch.num_rows());
            first += batch.num_rows();
            (batch, these)
        })
        .collect()
}

/// Where in a segment the rows read from some of its row groups (whole,
/// in order) are: the `n`th row read is its row [`at(n)`](Self::at).
#[derive(Debug)]
struct Places {
    /// For each row group read: the count of rows read before it, and its
    /// first row's index in the segment.
    runs: Vec<(usize, u64)>,
}

impl Places {
    /// Of row groups `groups` read, in a segment of row groups of
    /// `group_rows` rows.
    fn of(group_rows: &[u64], groups: &[usize]) -> Self {
        let mut starts = Vec::with_capacity(group_rows.len());
        let mut start = 0;
        for rows in group_rows {
            starts.push(start);
            start += rows;
        }
        let mut read = 0;
        let runs = groups
            .iter()
            .map(|&group| {
                let run = (read, starts.get(group).copied().unwrap_or(0));
                read += group_rows.get(group).copied().unwrap_or(0) as usize;
                run
            })
            .collect();
        Self { runs }
    }

    /// The index in the segment of the `n`th row read.
    fn at(&self, n: usize) -> u64 {
        let run = self.runs.partition_point(|&(first, _)| first <= n);
        match run.checked_sub(1).and_then(|run| self.runs.get(run)) {
            Some(&(first, start)) => start + (n - first) as u64,
            None => n as u64,
        }
    }

    /// [`at`](Self::at) of the `count` rows read from the `first`th on.
    fn range(&self, first: usize, count: usize) -> Vec<u64> {
        let mut out = Vec::with_capacity(count);
        let end = first + count;
        let mut n = first;
        while n < end {
            let next = self.runs.partition_point(|&(first, _)| first <= n);
            let stop = self
                .runs
                .get(next)
                .map_or(end, |&(first, _)| first.min(end));
            let from = self.at(n);
            out.extend(from..from + (stop - n) as u64);
            n = stop;
        }
        out
    }
}

/// Which of a segment's rows a reader wants (every row by default): what a
/// scan's filters let the store leave out before it looks for the rows
/// UPDATE and DELETE took out, so that a point read by key goes through
/// the one row it wants, not the thousands of its row group.
///
/// The filters' plain comparisons (see [`Comparison::of`]) are applied
/// here both ways: to the row groups' statistics, with a comparison of two
/// values per row group (DataFusion's `PruningPredicate` builds and
/// evaluates a record batch of statistics for the same answer: ~30 us a
/// call here, twice per UPDATE by key), and to the rows, one comparison at
/// a time over the rows the ones before it kept.
#[derive(Debug, Default)]
pub(super) struct Selection {
    compared: Vec<Comparison>,
    /// The statistics pruning of the other conjuncts, when there are any.
    groups: Option<PruningPredicate>,
}

/// `column op value`, a plain comparison of a selection.
#[derive(Debug)]
struct Comparison {
    /// The column compared, by index among the columns asked for.
    index: usize,
    /// The comparison over a batch of that column alone ([`Self::one`]):
    /// rows are selected one column at a time, not by taking whole rows.
    alone: Arc<dyn PhysicalExpr>,
    /// That batch's schema.
    one: SchemaRef,
    column: String,
    /// With the column on the left.
    op: Operator,
    value: ScalarValue,
}

impl Selection {
    /// The rows `predicate` (over `schema`, a hint that rows failing it may
    /// be left out) may accept.
    pub(super) fn of(schema: &SchemaRef, predicate: Option<&Arc<dyn PhysicalExpr>>) -> Self {
        let Some(predicate) = predicate else {
            return Self::default();
        };
        let conjuncts = split_conjunction(predicate);
        let mut compared: Vec<Comparison> = conjuncts
            .iter()
            .filter_map(|conjunct| Comparison::of(conjunct, schema))
            .collect();
        // Equalities keep least (a key's one row): the comparisons after
        // them look at what they kept.
        compared.sort_by_key(|c| !matches!(c.op, Operator::Eq | Operator::IsNotDistinctFrom));
        let others =
            conjuncts.len() > compared.len() || compared.iter().any(|c| !c.bounded_by_statistics());
        Self {
            groups: others
                .then(|| {
                    PruningPredicateBuilder::new()
                        .with_file_schema(Arc::clone(schema))
                        .try_build(Arc::clone(predicate))
                        .ok()
                })
                .flatten(),
            compared,
        }
    }

    /// Which row groups of `segment` may hold rows the selection accepts.
    fn row_groups(&self, segment: &SegmentEntry) -> Vec<bool> {
        let groups = segment.row_group_rows.len();
        let mut keep = match &self.groups {
            Some(pruning) => pruning
                .prune(segment)
                .unwrap_or_else(|_| vec![true; groups]),
            None => vec![true; groups],
        };
        for comparison in self.compared.iter().filter(|c| c.bounded_by_statistics()) {
            let column = datafusion::common::Column::new_unqualified(&comparison.column);
            let (Some(mins), Some(maxes)) =
                (segment.min_values(&column), segment.max_values(&column))
            else {
                continue;
            };
            for (group, keep) in keep.iter_mut().enumerate() {
                let bound = |values: &ArrayRef| ScalarValue::try_from_array(values, group).ok();
                if *keep && group < mins.len().min(maxes.len()) {
                    *keep = comparison.may_hold(bound(&mins), bound(&maxes));
                }
            }
        }
        keep
    }

    /// Which rows of `batch` (of the columns asked for) the selection
    /// accepts; `None` for all of them.
    fn rows(&self, batch: &RecordBatch) -> DFResult<Option<UInt32Array>> {
        let mut kept: Option<UInt32Array> = None;
        for comparison in &self.compared {
            let Some(column) = batch.columns().get(comparison.index) else {
                return Err(DataFusionError::Internal(format!(
                    "a selection compares column {} of a batch of {}",
                    comparison.index,
                    batch.num_columns()
                )));
            };
            let values = match &kept {
                Some(kept) => take(column.as_ref(), kept, None)?,
                None => Arc::clone(column),
            };
            if values.is_empty() {
                break;
            }
            let rows = RecordBatch::try_new(Arc::clone(&comparison.one), vec![values])?;
            let mask = comparison
                .alone
                .evaluate(&rows)?
                .into_array(rows.num_rows())?;
            let mask = mask.as_boolean_opt().ok_or_else(|| {
                DataFusionError::Internal(format!("{} is not boolean", comparison.alone))
            })?;
            let mask = match mask.null_count() {
                0 => mask.clone(),
                _ => prep_null_mask_filter(mask),
            };
            if mask.true_count() == rows.num_rows() {
                continue;
            }
            let at = mask.values().set_indices().map(|i| match &kept {
                Some(kept) => kept.value(i),
                None => i as u32,
            });
            kept = Some(at.collect());
        }
        Ok(kept)
    }

    /// The rows of `batch` the selection accepts.
    fn select(&self, batch: RecordBatch) -> DFResult<RecordBatch> {
        Ok(match self.rows(&batch)? {
            Some(kept) => take_record_batch(&batch, &kept)?,
            None => batch,
        })
    }
}

impl Comparison {
    /// `conjunct` if it compares a column with a literal of the column's
    /// own type, of a type whose comparison cannot fail (numbers, strings,
    /// binary, booleans, dates and times). Nothing else is evaluated by
    /// the store: a division, a cast or a function may fail on a row taken
    /// out, which the query would never have met.
    fn of(conjunct: &Arc<dyn PhysicalExpr>, schema: &Schema) -> Option<Self> {
        let binary = conjunct.downcast_ref::<BinaryExpr>()?;
        let (left, right) = (binary.left(), binary.right());
        let (column, literal, op) = match (
            left.downcast_ref::<Column>(),
            right.downcast_ref::<Literal>(),
        ) {
            (Some(column), Some(literal)) => (column, literal, *binary.op()),
            _ => (
                right.downcast_ref::<Column>()?,
                left.downcast_ref::<Literal>()?,
                binary.op().swap()?,
            ),
        };
        let comparison = matches!(
            op,
            Operator::Eq
                | Operator::NotEq
                | Operator::Lt
                | Operator::LtEq
                | Operator::Gt
                | Operator::GtEq
                | Operator::IsDistinctFrom
                | Operator::IsNotDistinctFrom
        );
        let field = schema.fields().get(column.index())?;
        let data_type = field.data_type();
        let plain = comparison
            && field.name() == column.name()
            && literal.value().data_type() == *data_type
            && (data_type.is_numeric()
                || matches!(
                    data_type,
                    DataType::Boolean
                        | DataType::Utf8
                        | DataType::LargeUtf8
                        | DataType::Utf8View
                        | DataType::Binary
                        | DataType::LargeBinary
                        | DataType::BinaryView
                        | DataType::Date32
                        | DataType::Date64
                        | DataType::Time32(_)
                        | DataType::Time64(_)
                        | DataType::Timestamp(_, _)
                ));
        plain.then(|| {
            let value = literal.value().clone();
            // Nullable whatever the table says: the batches compared come
            // from the store, which does not check NOT NULL on reads.
            let one = Schema::new(vec![Field::new(column.name(), data_type.clone(), true)]);
            Self {
                index: column.index(),
                alone: Arc::new(BinaryExpr::new(
                    Arc::new(Column::new(column.name(), 0)),
                    op,
                    Arc::new(Literal::new(value.clone())),
                )),
                one: Arc::new(one),
                column: column.name().to_string(),
                op,
                value,
            }
        })
    }

    /// Whether a row group's min and max bound every value this comparison
    /// can accept: not for floating point, whose statistics leave NaN out
    /// (it compares above every number); DataFusion's pruning knows how far
    /// to trust those.
    fn bounded_by_statistics(&self) -> bool {
        !self.value.data_type().is_floating()
    }

    /// Whether a row group whose values lie between `min` and `max` (not
    /// known: `None`) may hold a row this comparison accepts.
    fn may_hold(&self, min: Option<ScalarValue>, max: Option<ScalarValue>) -> bool {
        use std::cmp::Ordering::{Equal, Greater, Less};
        let (Some(min), Some(max)) = (min, max) else {
            return true;
        };
        if self.value.is_null() || min.is_null() || max.is_null() {
            return true;
        }
        let (Some(to_min), Some(to_max)) =
            (min.partial_cmp(&self.value), max.partial_cmp(&self.value))
        else {
            return true;
        };
        match self.op {
            Operator::Eq | Operator::IsNotDistinctFrom => to_min != Greater && to_max != Less,
            // Only a group of that one value, where no NULL is counted
            // (NULL is distinct from any value).
            Operator::NotEq => !(to_min == Equal && to_max == Equal),
            Operator::Lt => to_min == Less,
            Operator::LtEq => to_min != Greater,
            Operator::Gt => to_max == Greater,
            Operator::GtEq => to_max != Less,
            _ => true,
        }
    }
}

/// `batch` under `schema` (a segment's columns come back as Parquet stored
/// them: same types, possibly other field metadata).
fn conform(batch: RecordBatch, schema: &SchemaRef) -> DFResult<RecordBatch> {
    if batch.schema() == *schema {
        return Ok(batch);
    }
    let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    Ok(RecordBatch::try_new_with_options(
        Arc::clone(schema),
        batch.columns().to_vec(),
        &options,
    )?)
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::compute::filter_record_batch;
    use datafusion::physical_expr::conjunction;
    use datafusion::physical_expr::expressions::{CastExpr, col, lit};

    use super::*;

    fn compare(
        left: Arc<dyn PhysicalExpr>,
        op: Operator,
        right: Arc<dyn PhysicalExpr>,
    ) -> Arc<dyn PhysicalExpr> {
        Arc::new(BinaryExpr::new(left, op, right))
    }

    #[test]
    fn only_comparisons_that_cannot_fail_are_evaluated_by_the_store() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("body", DataType::Utf8View, true),
            Field::new("list", DataType::new_list(DataType::Int64, true), true),
        ]));
        let id = col("id", &schema).unwrap();
        let body = col("body", &schema).unwrap();
        let compared = |predicate: Arc<dyn PhysicalExpr>| {
            let selection = Selection::of(&schema, Some(&predicate));
            let compared: Vec<_> = selection
                .compared
                .iter()
                .map(|c| format!("{} {} {}", c.column, c.op, c.value))
                .collect();
            (compared, selection.groups.is_some())
        };
        let id_at_least = compare(Arc::clone(&id), Operator::GtEq, lit(5i64));
        // Literal first: taken with the column on the left.
        let body_is = compare(
            lit(ScalarValue::Utf8View(Some("x".into()))),
            Operator::Lt,
            Arc::clone(&body),
        );
        let divided = compare(
            compare(lit(1000i64), Operator::Divide, Arc::clone(&id)),
            Operator::Lt,
            lit(5i64),
        );
        let cast = compare(
            Arc::new(CastExpr::new(Arc::clone(&body), DataType::Int64, None)),
            Operator::Eq,
            lit(1i64),
        );
        // A literal of another type: comparing would need a cast.
        let other_type = compare(Arc::clone(&id), Operator::Eq, lit(1i32));
        let list = compare(
            col("list", &schema).unwrap(),
            Operator::Eq,
            lit(ScalarValue::List(ScalarValue::new_list_nullable(
                &[ScalarValue::Int64(Some(1))],
                &DataType::Int64,
            ))),
        );
        let plain = vec!["id >= 5".to_string(), "body > x".to_string()];
        assert_eq!(
            compared(conjunction([
                Arc::clone(&id_at_least),
                Arc::clone(&body_is)
            ])),
            (plain.clone(), false)
        );
        // The others are left to the scan's filter and to DataFusion's
        // pruning by statistics.
        let all = conjunction([
            id_at_least,
            Arc::clone(&divided),
            body_is,
            Arc::clone(&cast),
            Arc::clone(&other_type),
            Arc::clone(&list),
        ]);
        assert_eq!(compared(all), (plain, true));
        for alone in [divided, cast, other_type, list] {
            assert_eq!(compared(alone), (vec![], true));
        }
        // Under OR, a comparison no longer bounds the rows accepted.
        let either = compare(
            compare(Arc::clone(&id), Operator::Eq, lit(1i64)),
            Operator::Or,
            compare(id, Operator::Eq, lit(2i64)),
        );
        assert_eq!(compared(either), (vec![], true));
    }

    #[test]
    fn rows_read_from_some_row_groups_are_placed_by_the_groups_sizes() {
        // Groups of 3, 4, 5 and 2 rows; the first and third read, then an
        // empty one, then the last.
        let places = Places::of(&[3, 4, 5, 0, 2], &[0, 2, 3, 4]);
        let all: Vec<u64> = (0..10).map(|n| places.at(n)).collect();
        assert_eq!(all, [0, 1, 2, 7, 8, 9, 10, 11, 12, 13]);
        assert_eq!(places.range(0, 10), all);
        // Batches need not line up with row groups.
        assert_eq!(places.range(1, 4), [1, 2, 7, 8]);
        assert_eq!(places.range(7, 3), [11, 12, 13]);
        assert!(places.range(4, 0).is_empty());
    }

    #[test]
    fn rows_selected_column_by_column_are_those_the_predicate_accepts() {
        use datafusion::arrow::array::{Int64Array, StringArray};
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("body", DataType::Utf8, true),
        ]));
        let ids: Vec<Option<i64>> = (0..200).map(|i| (i % 7 != 3).then_some(i % 50)).collect();
        let bodies: Vec<Option<String>> = (0..200)
            .map(|i| (i % 11 != 5).then(|| format!("b{}", i % 4)))
            .collect();
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(Int64Array::from(ids)),
                Arc::new(StringArray::from(bodies)),
            ],
        )
        .unwrap();
        let id = || col("id", &schema).unwrap();
        let body = || col("body", &schema).unwrap();
        let text = |s: &str| lit(ScalarValue::Utf8(Some(s.into())));
        let predicates = [
            // The equality is met first whatever its place in the filter.
            vec![
                compare(id(), Operator::GtEq, lit(10i64)),
                compare(body(), Operator::Eq, text("b2")),
                compare(lit(40i64), Operator::Gt, id()),
            ],
            vec![compare(id(), Operator::Eq, lit(12i64))],
            vec![
                compare(body(), Operator::IsDistinctFrom, text("b1")),
                compare(id(), Operator::NotEq, lit(0i64)),
                compare(id(), Operator::LtEq, lit(30i64)),
            ],
            // Nothing left after the first: the rest are not evaluated.
            vec![
                compare(id(), Operator::Eq, lit(1000i64)),
                compare(body(), Operator::Lt, text("b3")),
            ],
        ];
        for conjuncts in predicates {
            let predicate = conjunction(conjuncts);
            let selection = Selection::of(&schema, Some(&predicate));
            assert!(!selection.compared.is_empty(), "{predicate}");
            let selected = selection.select(batch.clone()).unwrap();
            let mask = predicate.evaluate(&batch).unwrap().into_array(200).unwrap();
            let expected = filter_record_batch(&batch, mask.as_boolean()).unwrap();
            assert_eq!(selected, expected, "{predicate}");
        }
    }

    #[test]
    fn a_comparison_rules_out_only_row_groups_that_cannot_hold_its_rows() {
        let schema = Schema::new(vec![Field::new("id", DataType::Int64, false)]);
        let comparison = |op: Operator, value: i64| {
            let id = compare(col("id", &schema).unwrap(), op, lit(value));
            Comparison::of(&id, &schema).unwrap()
        };
        // A row group of the values 10 to 20.
        let holds = |op: Operator, value: i64| {
            comparison(op, value).may_hold(
                Some(ScalarValue::from(10i64)),
                Some(ScalarValue::from(20i64)),
            )
        };
        for (op, yes, no) in [
            (Operator::Eq, [10, 15, 20], [9, 21]),
            (Operator::IsNotDistinctFrom, [10, 15, 20], [9, 21]),
            (Operator::Lt, [11, 20, 21], [10, 9]),
            (Operator::LtEq, [10, 20, 21], [9, 8]),
            (Operator::Gt, [19, 10, 9], [20, 21]),
            (Operator::GtEq, [20, 10, 9], [21, 22]),
            (Operator::NotEq, [10, 15, 21], [15, 15]),
        ] {
            for value in yes {
                assert!(holds(op, value), "{op} {value}");
            }
            if op != Operator::NotEq {
                for value in no {
                    assert!(!holds(op, value), "{op} {value}");
                }
            }
        }
        // Only a group of one value is ruled out by `<>` that value.
        let one = |op: Operator| {
            comparison(op, 7).may_hold(Some(ScalarValue::from(7i64)), Some(ScalarValue::from(7i64)))
        };
        assert!(!one(Operator::NotEq));
        assert!(one(Operator::IsDistinctFrom), "NULLs are not counted");
        // Unknown or NULL bounds, or a NULL value: kept.
        assert!(comparison(Operator::Eq, 1).may_hold(None, Some(ScalarValue::from(2i64))));
        assert!(comparison(Operator::Eq, 1).may_hold(
            Some(ScalarValue::Int64(None)),
            Some(ScalarValue::from(0i64))
        ));
        let null = Comparison {
            value: ScalarValue::Int64(None),
            ..comparison(Operator::Eq, 0)
        };
        assert!(null.may_hold(Some(ScalarValue::from(1i64)), Some(ScalarValue::from(2i64))));
    }
}
