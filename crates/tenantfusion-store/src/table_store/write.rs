//! Writes: each is logged (durable before it is acknowledged), then applied
//! to its partition in memory, under the partition's writer lock so that a
//! partition's writes apply in log order.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::AsArray;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::Result as DFResult;
use datafusion::physical_expr::PhysicalExpr;
use tenantfusion_tables::{PartitionKey, RowMatcher, bounds_of, rows_at};

use super::Inner;
use super::partition_state::{Place, Placed, TakenOut, keep_placed};
use super::records::{encode_append, encode_drop, encode_replace};
use super::scan::pruning_predicate;

impl Inner {
    /// Appends `batches` to partition `key`; the rows added.
    pub(super) async fn append(
        self: &Arc<Self>,
        key: &PartitionKey,
        batches: Vec<RecordBatch>,
    ) -> DFResult<u64> {
        let Some(first) = batches.iter().find(|b| b.num_rows() > 0) else {
            return Ok(0);
        };
        let record = encode_append(key, &first.schema(), &batches)?;
        let loaded = self.load().await?;
        let partition = self.partition(loaded, key).await?;
        let added = {
            let _writer = partition.writer.lock().await;
            let _applying = loaded.applying.read().await;
            let lsn = loaded.log(record).await?;
            partition.state.write().append(lsn, batches)?
        };
        self.flush_if_full(loaded, key, &partition).await;
        Ok(added)
    }

    /// Replaces the rows of `old` still in partition `key` by the rows of
    /// `new` at the same positions (an UPDATE), or removes them (a DELETE,
    /// `new` is `None`); the positions in `old` of the rows found.
    pub(super) async fn replace(
        self: &Arc<Self>,
        key: &PartitionKey,
        old: RecordBatch,
        new: Option<RecordBatch>,
    ) -> DFResult<Vec<u32>> {
        let loaded = self.load().await?;
        let partition = self.partition(loaded, key).await?;
        let _writer = partition.writer.lock().await;
        // Which rows of `old` are still here, looked for as the logged
        // change will take them: in memory first, then in the segments,
        // where each row found is placed (its segment and index there).
        let (manifest, hot, pending) = partition.state.read().snapshot();
        let mut wanted = RowMatcher::new(std::slice::from_ref(&old))?;
        for batch in &hot {
            wanted.take_from(batch)?;
        }
        let mut places: HashMap<u32, Place> = HashMap::new();
        if !wanted.is_done() && !manifest.segments.is_empty() {
            // Only row groups whose statistics can hold the rows of `old`
            // are read (an UPDATE by key reads the one holding its key).
            // Within them, only the rows inside those bounds are compared
            // (one comparison per column, instead of hashing every row).
            let bounds = bounds_of(&old)?;
            let pruning = bounds
                .clone()
                .and_then(|bounds| pruning_predicate(&old.schema(), bounds));
            let mut taken = TakenOut::new(&pending)?;
            for segment in &manifest.segments {
                let (rows, _) = self
                    .placed_live_rows(key, segment, &mut taken, None, pruning.as_ref())
                    .await?;
                for (batch, at) in rows {
                    let (batch, at) = match &bounds {
                        Some(bounds) => within(bounds, batch, at)?,
                        None => (batch, at),
                    };
                    let before = wanted.found_in_order().len();
                    let keep = wanted.take_from(&batch)?;
                    // The rows taken, in order, are the wanted rows found
                    // since `before`, in order.
                    let taken_at = (0..batch.num_rows()).filter(|&i| !keep.value(i));
                    for (row, &index) in taken_at.zip(&wanted.found_in_order()[before..]) {
                        places.insert(index, (segment.file.clone(), at[row]));
                    }
                }
                if wanted.is_done() {
                    break;
                }
            }
        }
        let found = wanted.found();
        if found.is_empty() {
            return Ok(found);
        }
        let removed = rows_at(&old, &found)?;
        let removed_places: Vec<Option<Place>> =
            found.iter().map(|index| places.remove(index)).collect();
        let added = new.map(|new| rows_at(&new, &found)).transpose()?;
        let record = encode_replace(key, &removed, added.as_ref())?;
        {
            let _applying = loaded.applying.read().await;
            let lsn = loaded.log(record).await?;
            partition
                .state
                .write()
                .replace(lsn, &removed, added, Some(&removed_places))?;
        }
        Ok(found)
    }

    /// Removes every row of partition `key`; how many there were.
    pub(super) async fn drop_partition(self: &Arc<Self>, key: &PartitionKey) -> DFResult<u64> {
        let loaded = self.load().await?;
        let partition = self.partition(loaded, key).await?;
        let _writer = partition.writer.lock().await;
        // Nothing to log for a user who never wrote here (DROP USER asks
        // every table).
        if !partition.state.read().has_rows() {
            return Ok(0);
        }
        let record = encode_drop(key);
        let old = Arc::clone(&partition.state.read().manifest);
        let (rows, free) = {
            // The emptied manifest is written before the log may be cut
            // past the drop.
            let _applying = loaded.applying.read().await;
            let lsn = loaded.log(record).await?;
            if !old.segments.is_empty() {
                self.write_manifest(key, &old.dropped(lsn)).await?;
            }
            drop(old);
            let mut state = partition.state.write();
            (state.drop_rows(lsn), state.unreferenced())
        };
        // The manifest no longer lists them; one a scan still reads goes
        // at the partition's next flush.
        self.delete_segments(key, &free).await?;
        Ok(rows)
    }
}

/// The rows of `batch` (each at its place in `at`) that `bounds` accepts.
fn within(bounds: &Arc<dyn PhysicalExpr>, batch: RecordBatch, at: Vec<u64>) -> DFResult<Placed> {
    let accepted = bounds.evaluate(&batch)?.into_array(batch.num_rows())?;
    let accepted = accepted.as_boolean();
    if accepted.true_count() == batch.num_rows() {
        return Ok((batch, at));
    }
    keep_placed((batch, at), accepted)
}
