//! Reads: a partition's segments (row groups the filters rule out skipped,
//! only the columns asked for decoded), less the rows UPDATE and DELETE
//! took out, then its rows in memory.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::error::{DataFusionError, Result as DFResult};
use datafusion::physical_expr::PhysicalExpr;
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
            let pruning = request
                .predicate
                .as_ref()
                .and_then(|predicate| pruning_predicate(&request.schema, Arc::clone(predicate)));
            let mut taken = TakenOut::new(&pending)?;
            for segment in &manifest.segments {
                let (rows, _) = self
                    .live_rows(key, segment, &mut taken, columns, pruning.as_ref())
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
    /// take out, `columns` of them (all when `None`), in the row groups
    /// `pruning` cannot rule out; and whether `taken` took any out.
    pub(super) async fn live_rows(
        &self,
        key: &PartitionKey,
        segment: &SegmentEntry,
        taken: &mut TakenOut,
        columns: Option<&[usize]>,
        pruning: Option<&PruningPredicate>,
    ) -> Result<(Vec<RecordBatch>, bool)> {
        if !taken.touches(&segment.file) {
            let (rows, _) = self.read_segment(key, segment, columns, pruning).await?;
            return Ok((rows, false));
        }
        let (rows, changed) = self
            .placed_live_rows(key, segment, taken, columns, pruning)
            .await?;
        Ok((rows.into_iter().map(|(batch, _)| batch).collect(), changed))
    }

    /// [`live_rows`](Self::live_rows), each batch with the index in the
    /// segment of each of its rows.
    ///
    /// Rows taken out by value are matched on every column, so while some
    /// are still to be met the segment is read whole and projected
    /// afterwards. Pruning still holds: a taken-out row in a skipped row
    /// group fails the predicate, so if it matches an equal row elsewhere
    /// instead, that row fails it too and the scan's own filter drops it
    /// either way.
    pub(super) async fn placed_live_rows(
        &self,
        key: &PartitionKey,
        segment: &SegmentEntry,
        taken: &mut TakenOut,
        columns: Option<&[usize]>,
        pruning: Option<&PruningPredicate>,
    ) -> Result<(Vec<Placed>, bool)> {
        let whole = taken.needs_values();
        let read = if whole { None } else { columns };
        let (rows, groups) = self.read_segment(key, segment, read, pruning).await?;
        let rows = placed(segment, &groups, rows);
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
    /// the row groups `pruning` cannot rule out; and which row groups
    /// those are, ascending.
    pub(super) async fn read_segment(
        &self,
        key: &PartitionKey,
        segment: &SegmentEntry,
        columns: Option<&[usize]>,
        pruning: Option<&PruningPredicate>,
    ) -> Result<(Vec<RecordBatch>, Vec<usize>)> {
        let groups = segment.row_group_rows.len();
        let keep = match pruning {
            Some(pruning) => pruning
                .prune(segment)
                .unwrap_or_else(|_| vec![true; groups]),
            None => vec![true; groups],
        };
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
    let mut start = 0;
    let mut starts = Vec::with_capacity(segment.row_group_rows.len());
    for rows in &segment.row_group_rows {
        starts.push(start);
        start += rows;
    }
    let mut places = Vec::with_capacity(rows.iter().map(RecordBatch::num_rows).sum());
    for &group in groups {
        let start = starts.get(group).copied().unwrap_or(0);
        let rows = segment.row_group_rows.get(group).copied().unwrap_or(0);
        places.extend(start..start + rows);
    }
    let mut places = places.into_iter();
    rows.into_iter()
        .map(|batch| {
            let these = places.by_ref().take(batch.num_rows()).collect();
            (batch, these)
        })
        .collect()
}

/// `predicate` (over `schema`) as segment statistics can answer it; `None`
/// when they cannot serve it: such a predicate prunes nothing.
pub(super) fn pruning_predicate(
    schema: &SchemaRef,
    predicate: Arc<dyn PhysicalExpr>,
) -> Option<PruningPredicate> {
    PruningPredicateBuilder::new()
        .with_file_schema(Arc::clone(schema))
        .try_build(predicate)
        .ok()
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
