//! Writes: each is logged (durable before it is acknowledged), then applied
//! to its partition in memory, under the partition's writer lock so that a
//! partition's writes apply in log order.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::BooleanArray;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::{DataFusionError, Result as DFResult};
use tenantfusion_tables::{PartitionKey, RowMatcher, bounds_of, rows_at};

use super::Inner;
use super::partition_state::{Found, Located, TakenOut, TakenRows};
use super::records::{encode_append, encode_drop, encode_replace};
use super::scan::Selection;
use crate::manifest::Manifest;

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
        let record = encode_append(&self.rows, key, &first.schema(), &batches)?;
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
        let mut wanted = RowMatcher::new(std::slice::from_ref(&old))?;
        let mut places: HashMap<u32, Found> = HashMap::new();
        // The snapshot's taken-out rows are let go before the change
        // applies (they are then changed in place, not copied); its rows in
        // memory are kept: the change takes rows out at positions in them.
        let hot = {
            let (manifest, hot, pending) = partition.state.read().snapshot();
            for (at, batch) in hot.iter().enumerate() {
                let before = wanted.found_in_order().len();
                let keep = wanted.take_from(batch)?;
                for (row, index) in taken_since(&wanted, &keep, before) {
                    places.insert(index, Found::Hot { batch: at, row });
                }
            }
            if !wanted.is_done() && !manifest.segments.is_empty() {
                self.place(key, &manifest, &pending, &old, &mut wanted, &mut places)
                    .await?;
            }
            hot
        };
        let found = wanted.found();
        if found.is_empty() {
            return Ok(found);
        }
        let removed = rows_at(&old, &found)?;
        let rows = found
            .iter()
            .map(|index| {
                places
                    .remove(index)
                    .ok_or_else(|| DataFusionError::Internal(format!("row {index} found nowhere")))
            })
            .collect::<DFResult<Vec<Found>>>()?;
        let added = new.map(|new| rows_at(&new, &found)).transpose()?;
        let record = encode_replace(&self.rows, key, &removed, added.as_ref())?;
        {
            let _applying = loaded.applying.read().await;
            let lsn = loaded.log(record).await?;
            partition
                .state
                .write()
                .replace(lsn, &removed, added, Some(Located { hot, rows }))?;
        }
        Ok(found)
    }

    /// Finds the rows of `old` that `wanted` still wants in the segments of
    /// `manifest` (less those `pending` took out), recording in `places`
    /// the segment and index of each, by its index among the wanted rows.
    ///
    /// Only row groups whose statistics can hold the wanted rows are read
    /// (an UPDATE by key reads the one holding its key), and within them
    /// only the rows inside the wanted rows' bounds (`bounds_of`) are
    /// hashed and compared: an UPDATE by key compares one row, not 8,192.
    async fn place(
        &self,
        key: &PartitionKey,
        manifest: &Manifest,
        pending: &Arc<TakenRows>,
        old: &RecordBatch,
        wanted: &mut RowMatcher,
        places: &mut HashMap<u32, Found>,
    ) -> DFResult<()> {
        let selection = Selection::of(&old.schema(), bounds_of(old)?.as_ref());
        let mut taken = TakenOut::new(pending)?;
        for segment in &manifest.segments {
            let (rows, _) = self
                .placed_live_rows(key, segment, &mut taken, None, &selection)
                .await?;
            for (batch, at) in rows {
                let before = wanted.found_in_order().len();
                let keep = wanted.take_from(&batch)?;
                for (row, index) in taken_since(wanted, &keep, before) {
                    places.insert(index, Found::Segment((segment.file.clone(), at[row])));
                }
            }
            if wanted.is_done() {
                break;
            }
        }
        Ok(())
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

/// The rows a [`RowMatcher::take_from`] that returned `keep` took, each
/// with the index of the wanted row it is: the rows taken, in order, are
/// the wanted rows found since `before` (the count found until then), in
/// order.
fn taken_since<'a>(
    wanted: &'a RowMatcher,
    keep: &'a BooleanArray,
    before: usize,
) -> impl Iterator<Item = (usize, u32)> + 'a {
    let taken_at = (0..keep.len()).filter(|&i| !keep.value(i));
    taken_at.zip(wanted.found_in_order()[before..].iter().copied())
}
