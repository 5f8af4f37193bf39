//! Where a table's rows live: partitions keyed by owner.
//!
//! The providers only talk to [`PartitionStore`]; durable storage implements
//! the same trait, so a user's scan keeps costing O(that user's rows).

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use dashmap::DashMap;
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::Statistics;
use datafusion::error::{DataFusionError, Result};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::common::compute_record_batch_statistics;
use parking_lot::RwLock;
use tenantfusion_core::UserId;

use crate::matching::{RowMatcher, rows_at};

/// One partition of a table: a user's rows, or the shared rows.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PartitionKey {
    /// The single partition of a shared table.
    Shared,
    /// A user's rows in a user table (or a user-fed stream table).
    User(UserId),
    /// One topic's rows in a source-bound stream table.
    Topic(Arc<str>),
}

/// What a scan reads from a partition.
#[derive(Debug, Clone)]
pub struct ReadRequest {
    /// Table columns to return, by index, ascending (`None`: all).
    pub columns: Option<Vec<usize>>,
    /// The schema of the batches returned: the table's, projected to `columns`.
    pub schema: SchemaRef,
    /// Over `schema`: rows that cannot satisfy it may be left out (stores
    /// with statistics skip whole files or row groups). Only a hint: the
    /// scan filters what it gets again.
    pub predicate: Option<Arc<dyn PhysicalExpr>>,
}

/// Rows of one table, stored per partition.
#[async_trait]
pub trait PartitionStore: Debug + Send + Sync {
    /// Appends `batches` to a partition, all or nothing; returns the rows added.
    /// Every batch has the table's schema.
    async fn append(&self, partition: &PartitionKey, batches: Vec<RecordBatch>) -> Result<u64>;

    /// The partition's current rows (empty if it has none). Costs O(rows of
    /// that partition), whatever other partitions hold.
    async fn read(&self, partition: &PartitionKey) -> Result<Vec<RecordBatch>>;

    /// The partition's rows that [`ReadRequest::predicate`] may accept,
    /// with only [`ReadRequest::columns`]. By default [`read`](Self::read)
    /// then projected.
    async fn scan(
        &self,
        partition: &PartitionKey,
        request: &ReadRequest,
    ) -> Result<Vec<RecordBatch>> {
        let batches = self.read(partition).await?;
        match &request.columns {
            Some(columns) => Ok(batches
                .iter()
                .map(|b| b.project(columns))
                .collect::<std::result::Result<_, _>>()?),
            None => Ok(batches),
        }
    }

    /// Whether [`replace`](Self::replace) is implemented: UPDATE and DELETE
    /// are refused when planned on a store without it, whether or not any
    /// row would match (the answer must not tell).
    fn supports_replace(&self) -> bool {
        false
    }

    /// UPDATE and DELETE: each row of `old` still in the partition is taken
    /// out (one stored row with equal values per row of `old`) and, when
    /// `new` is given, row `i` of `new` put in for row `i` of `old`. Rows of
    /// `old` no longer there (changed by a statement in between) are left
    /// out, with their `new` rows. All or nothing; returns the indices of
    /// the rows of `old` changed, ascending.
    async fn replace(
        &self,
        partition: &PartitionKey,
        old: RecordBatch,
        new: Option<RecordBatch>,
    ) -> Result<Vec<u32>> {
        let _ = (partition, old, new);
        Err(DataFusionError::NotImplemented(
            "the rows of this table cannot be updated or deleted".into(),
        ))
    }

    /// Removes a partition and its rows (DROP USER); returns the rows removed.
    async fn drop_partition(&self, partition: &PartitionKey) -> Result<u64>;

    /// Statistics of the partition's rows at `columns` of `schema` (the
    /// stored schema), where the store knows them without reading files:
    /// an in-memory store counts exactly. `None`: unknown (the default).
    fn statistics(
        &self,
        partition: &PartitionKey,
        schema: &Schema,
        columns: Option<&[usize]>,
    ) -> Option<Statistics> {
        let _ = (partition, schema, columns);
        None
    }

    /// How many partitions hold rows.
    fn partition_count(&self) -> usize;

    /// The keys of the partitions that hold rows.
    fn keys(&self) -> Vec<PartitionKey>;
}

/// See [`append_coalesced`].
const COALESCE_ROWS: usize = 8192;

/// Appends `batches` to `rows`, merging small batches at its end the way a
/// binary counter carries: a batch is merged into the one before it while
/// it holds at least as many rows and both fit in 8,192. A partition
/// filled one row at a time is then scanned as full batches and at most
/// about 13 smaller ones, and each row is copied about log2(8,192) times in
/// its life. (Merging every new row into the last batch copied that batch
/// whole on every append: 8,191 rows copied for one INSERT.) Returns the
/// rows added.
pub fn append_coalesced(rows: &mut Vec<RecordBatch>, batches: Vec<RecordBatch>) -> Result<u64> {
    let mut added = 0;
    for batch in batches.into_iter().filter(|b| b.num_rows() > 0) {
        added += batch.num_rows() as u64;
        rows.push(batch);
        while let [.., before, last] = rows.as_slice()
            && before.num_rows() <= last.num_rows()
            && before.num_rows() + last.num_rows() <= COALESCE_ROWS
        {
            let merged = concat_batches(&last.schema(), [before, last])?;
            rows.truncate(rows.len() - 2);
            rows.push(merged);
        }
    }
    Ok(added)
}

/// The in-memory store: each partition is a list of batches behind its own lock.
#[derive(Debug, Default)]
pub struct MemoryPartitionStore {
    partitions: DashMap<PartitionKey, Arc<RwLock<Vec<RecordBatch>>>>,
}

impl MemoryPartitionStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// [`PartitionStore::append`] without waiting.
    pub fn append_now(&self, partition: &PartitionKey, batches: Vec<RecordBatch>) -> Result<u64> {
        if batches.iter().all(|b| b.num_rows() == 0) {
            return Ok(0);
        }
        let slot = Arc::clone(
            self.partitions
                .entry(partition.clone())
                .or_default()
                .value(),
        );
        let mut rows = slot.write();
        append_coalesced(&mut rows, batches)
    }

    /// [`PartitionStore::replace`] without waiting.
    pub fn replace_now(
        &self,
        partition: &PartitionKey,
        old: RecordBatch,
        new: Option<RecordBatch>,
    ) -> Result<Vec<u32>> {
        let Some(slot) = self.partitions.get(partition).map(|s| Arc::clone(&s)) else {
            return Ok(Vec::new());
        };
        let mut rows = slot.write();
        let mut wanted = RowMatcher::new(std::slice::from_ref(&old))?;
        let (kept, _) = wanted.take_all(rows.clone())?;
        let found = wanted.found();
        if found.is_empty() {
            return Ok(found);
        }
        *rows = kept;
        if let Some(new) = new {
            append_coalesced(&mut rows, vec![rows_at(&new, &found)?])?;
        }
        if rows.is_empty() {
            drop(rows);
            self.partitions.remove(partition);
        }
        Ok(found)
    }

    /// [`PartitionStore::drop_partition`] without waiting.
    pub fn drop_now(&self, partition: &PartitionKey) -> u64 {
        self.partitions
            .remove(partition)
            .map(|(_, slot)| slot.read().iter().map(|b| b.num_rows() as u64).sum())
            .unwrap_or(0)
    }

    /// Whether the partition holds rows (a partition exists only while it does).
    pub fn has_rows(&self, partition: &PartitionKey) -> bool {
        self.partitions.contains_key(partition)
    }

    /// [`PartitionStore::read`] without waiting.
    pub fn read_now(&self, partition: &PartitionKey) -> Vec<RecordBatch> {
        self.partitions
            .get(partition)
            .map(|slot| slot.read().clone())
            .unwrap_or_default()
    }
}

#[async_trait]
impl PartitionStore for MemoryPartitionStore {
    async fn append(&self, partition: &PartitionKey, batches: Vec<RecordBatch>) -> Result<u64> {
        self.append_now(partition, batches)
    }

    async fn read(&self, partition: &PartitionKey) -> Result<Vec<RecordBatch>> {
        Ok(self.read_now(partition))
    }

    fn supports_replace(&self) -> bool {
        true
    }

    async fn replace(
        &self,
        partition: &PartitionKey,
        old: RecordBatch,
        new: Option<RecordBatch>,
    ) -> Result<Vec<u32>> {
        self.replace_now(partition, old, new)
    }

    async fn drop_partition(&self, partition: &PartitionKey) -> Result<u64> {
        Ok(self.drop_now(partition))
    }

    fn statistics(
        &self,
        partition: &PartitionKey,
        schema: &Schema,
        columns: Option<&[usize]>,
    ) -> Option<Statistics> {
        let columns = columns.map(<[usize]>::to_vec);
        Some(match self.partitions.get(partition) {
            Some(slot) => compute_record_batch_statistics(
                std::slice::from_ref(&*slot.read()),
                schema,
                columns,
            ),
            None => compute_record_batch_statistics(&[], schema, columns),
        })
    }

    fn partition_count(&self) -> usize {
        self.partitions.len()
    }

    fn keys(&self) -> Vec<PartitionKey> {
        self.partitions.iter().map(|e| e.key().clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Array, Int64Array};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    fn batch(values: &[i64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(values.to_vec()))]).unwrap()
    }

    #[tokio::test]
    async fn partitions_are_separate_and_small_inserts_coalesce() {
        let store = MemoryPartitionStore::new();
        let alice = PartitionKey::User(UserId::new("alice"));
        let bob = PartitionKey::User(UserId::new("bob"));
        for i in 0..100 {
            store.append(&alice, vec![batch(&[i])]).await.unwrap();
        }
        store.append(&bob, vec![batch(&[7, 8])]).await.unwrap();

        let rows = store.read(&alice).await.unwrap();
        let sizes: Vec<usize> = rows.iter().map(RecordBatch::num_rows).collect();
        assert_eq!(
            sizes,
            [64, 32, 4],
            "100 one-row inserts, as a binary counter"
        );
        let bob_rows = store.read(&bob).await.unwrap();
        assert_eq!(bob_rows[0].column(0).len(), 2);
        assert!(store.read(&PartitionKey::Shared).await.unwrap().is_empty());
        assert!(store.has_rows(&alice) && !store.has_rows(&PartitionKey::Shared));
        assert_eq!(store.partition_count(), 2);
        assert_eq!(store.drop_partition(&alice).await.unwrap(), 100);
        assert!(store.read(&alice).await.unwrap().is_empty());
        assert!(!store.has_rows(&alice));
        assert_eq!(store.read(&bob).await.unwrap()[0].num_rows(), 2);
    }

    #[test]
    fn one_row_appends_make_full_batches_and_a_short_tail_in_order() {
        let mut rows = Vec::new();
        for i in 0..20_000 {
            append_coalesced(&mut rows, vec![batch(&[i])]).unwrap();
        }
        let sizes: Vec<usize> = rows.iter().map(RecordBatch::num_rows).collect();
        // 20,000 = 2 x 8,192 + 3,616, the rest in batches of falling
        // powers of two (3,616 = 2,048 + 1,024 + 512 + 32).
        assert_eq!(sizes, [8192, 8192, 2048, 1024, 512, 32]);
        let values: Vec<i64> = rows
            .iter()
            .flat_map(|b| {
                let column = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
                column.values().to_vec()
            })
            .collect();
        assert_eq!(values, (0..20_000).collect::<Vec<_>>());

        // A big batch is not copied to take in a small one after it.
        let mut rows = vec![batch(&[0; 5000])];
        append_coalesced(&mut rows, vec![batch(&[1]), batch(&[2; 3000])]).unwrap();
        let sizes: Vec<usize> = rows.iter().map(RecordBatch::num_rows).collect();
        assert_eq!(sizes, [5000, 3001]);
    }
}
