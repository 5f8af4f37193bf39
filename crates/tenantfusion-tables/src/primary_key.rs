//! PRIMARY KEY: no two rows of a partition have equal key values.
//!
//! A user table's key is unique per user (each user's rows are a table of
//! their own); a shared table's across the table. The check runs when the
//! write executes (never while planning), against the rows the partition
//! holds then, and the partition's other writes wait from the check until
//! the write is stored, so two statements cannot both add the same key.

use std::collections::HashSet;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{RowConverter, Rows, SortField};
use datafusion::arrow::util::display::array_value_to_string;
use datafusion::error::Result;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{col, lit};
use tenantfusion_core::{TableId, TenantError};
use tokio::sync::{Mutex, MutexGuard};

use crate::matching::{RowMatcher, between, rows_at, value_range};
use crate::store::{PartitionKey, PartitionStore, ReadRequest};

/// Partitions map onto this many locks: bounded memory however many users
/// write, at the price of an unrelated partition's write waiting now and
/// then.
const WRITE_LOCKS: usize = 64;

/// The key of a table and the locks that order the writes it checks.
///
/// ```
/// use std::sync::Arc;
/// use datafusion::arrow::datatypes::{DataType, Field, Schema};
/// use tenantfusion_tables::PrimaryKey;
///
/// let schema = Arc::new(Schema::new(vec![
///     Field::new("id", DataType::Int64, false),
///     Field::new("body", DataType::Utf8, true),
/// ]));
/// let key = PrimaryKey::new(&schema, vec![0]).unwrap();
/// assert_eq!(key.names(), ["id"]);
/// assert!(PrimaryKey::new(&schema, vec![1]).is_err(), "a nullable column");
/// ```
#[derive(Debug)]
pub struct PrimaryKey {
    /// Key columns by index into the table's schema, ascending.
    columns: Vec<usize>,
    names: Vec<String>,
    /// The stored schema (every column nullable) projected to the key
    /// columns: what a scan of the key columns returns.
    key_schema: SchemaRef,
    fields: Vec<SortField>,
    locks: Vec<Mutex<()>>,
    hasher: RandomState,
}

impl PrimaryKey {
    /// The key of columns `columns` of the declared `schema`, each NOT NULL.
    pub fn new(schema: &SchemaRef, mut columns: Vec<usize>) -> Result<Self, TenantError> {
        columns.sort_unstable();
        columns.dedup();
        if columns.is_empty() {
            return Err(TenantError::InvalidArgument(
                "a primary key needs at least one column".into(),
            ));
        }
        let mut names = Vec::with_capacity(columns.len());
        let mut fields = Vec::with_capacity(columns.len());
        for &index in &columns {
            let Some(field) = schema.fields().get(index) else {
                return Err(TenantError::InvalidArgument(format!(
                    "primary key column {index} is not a column of the table"
                )));
            };
            if field.is_nullable() {
                return Err(TenantError::InvalidArgument(format!(
                    "primary key column '{}' must be NOT NULL",
                    field.name()
                )));
            }
            names.push(field.name().clone());
            fields.push(SortField::new(field.data_type().clone()));
        }
        // Refused now, not on the first write.
        RowConverter::new(fields.clone()).map_err(|e| {
            TenantError::NotSupported(format!(
                "a primary key of columns ({}): {e}",
                names.join(", ")
            ))
        })?;
        let stored: Vec<_> = columns
            .iter()
            .map(|&i| schema.field(i).clone().with_nullable(true))
            .collect();
        Ok(Self {
            key_schema: Arc::new(Schema::new(stored)),
            columns,
            names,
            fields,
            locks: (0..WRITE_LOCKS).map(|_| Mutex::new(())).collect(),
            hasher: RandomState::new(),
        })
    }

    /// The key columns, by index, ascending.
    pub fn columns(&self) -> &[usize] {
        &self.columns
    }

    /// The key columns' names, in [`columns`](Self::columns) order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Holds off the other writes of `partition`, then checks that storing
    /// `added` (rows of the table's schema) in place of the rows of
    /// `replaced` still there leaves every key once. Keep the guard until
    /// the write is stored.
    pub(crate) async fn admit(
        &self,
        table: &TableId,
        store: &dyn PartitionStore,
        partition: &PartitionKey,
        added: &RecordBatch,
        replaced: Option<&RecordBatch>,
    ) -> Result<MutexGuard<'_, ()>> {
        let lock = &self.locks[self.hasher.hash_one(partition) as usize % WRITE_LOCKS];
        let guard = lock.lock().await;
        let keys_kept = match replaced {
            Some(old) => self.same_keys(old, added)?,
            None => false,
        };
        if added.num_rows() > 0 && !keys_kept {
            self.check(table, store, partition, added, replaced).await?;
        }
        Ok(guard)
    }

    /// Whether row `i` of `added` has the key of row `i` of `old`, for
    /// every row (both of the table's width). Then the change cannot break
    /// the key: the stored keys are distinct, each replaced row's key is
    /// put back with its new row, and a row of `old` gone already takes
    /// its new row with it. An UPDATE that leaves the key columns alone
    /// needs no read of the stored keys.
    fn same_keys(&self, old: &RecordBatch, added: &RecordBatch) -> Result<bool> {
        if old.num_rows() != added.num_rows() {
            return Ok(false);
        }
        let converter = RowConverter::new(self.fields.clone())?;
        let before = converter.convert_columns(&self.key_columns(old, true))?;
        let after = converter.convert_columns(&self.key_columns(added, true))?;
        Ok(before.iter().zip(after.iter()).all(|(a, b)| a == b))
    }

    async fn check(
        &self,
        table: &TableId,
        store: &dyn PartitionStore,
        partition: &PartitionKey,
        added: &RecordBatch,
        replaced: Option<&RecordBatch>,
    ) -> Result<()> {
        let converter = RowConverter::new(self.fields.clone())?;
        // Only stored rows within the new keys' range can clash; rows being
        // replaced are matched on every column, so those are read whole.
        let (columns, schema) = match replaced {
            None => (Some(self.columns.clone()), Arc::clone(&self.key_schema)),
            Some(old) => (None, old.schema()),
        };
        let mut bounds = vec![added.column(self.columns[0]).clone()];
        bounds.extend(replaced.map(|old| old.column(self.columns[0]).clone()));
        let range = self.range(&schema, &bounds)?;
        let request = ReadRequest {
            columns,
            schema,
            predicate: Some(Arc::clone(&range)),
        };
        let mut stored = Vec::new();
        for batch in store.scan(partition, &request).await? {
            let within = range.evaluate(&batch)?.into_array(batch.num_rows())?;
            let batch = filter_record_batch(&batch, within.as_boolean())?;
            if batch.num_rows() > 0 {
                stored.push(batch);
            }
        }
        // Rows of `replaced` gone already (changed by a statement before
        // this one held the partition) are not replaced: their new rows
        // are not written either (see `PartitionStore::replace`).
        let (added, stored) = match replaced {
            None => (added.clone(), stored),
            Some(old) => {
                let mut present = RowMatcher::new(std::slice::from_ref(old))?;
                let (kept, _) = present.take_all(stored)?;
                (rows_at(added, &present.found())?, kept)
            }
        };
        let full_width = replaced.is_some();
        let new_keys = converter.convert_columns(&self.key_columns(&added, true))?;
        let mut seen = HashSet::with_capacity(new_keys.num_rows());
        for (row, key) in new_keys.iter().enumerate() {
            if !seen.insert(key) {
                return Err(self.violation(table, &added, row, true, "twice in the statement"));
            }
        }
        for batch in &stored {
            let keys: Rows = converter.convert_columns(&self.key_columns(batch, full_width))?;
            if let Some(row) = keys.iter().position(|key| seen.contains(&key)) {
                return Err(self.violation(table, batch, row, full_width, "already present"));
            }
        }
        Ok(())
    }

    /// `first key column BETWEEN min AND max` of the values of `bounds`,
    /// over `schema`.
    fn range(&self, schema: &Schema, bounds: &[ArrayRef]) -> Result<Arc<dyn PhysicalExpr>> {
        match value_range(bounds)? {
            Some((low, high)) => Ok(between(col(&self.names[0], schema)?, low, high)),
            None => Ok(lit(false)),
        }
    }

    /// The key columns of `batch`: of the table's width (`full_width`), or
    /// the key columns alone.
    fn key_columns(&self, batch: &RecordBatch, full_width: bool) -> Vec<ArrayRef> {
        if full_width {
            self.columns
                .iter()
                .map(|&i| Arc::clone(batch.column(i)))
                .collect()
        } else {
            batch.columns().to_vec()
        }
    }

    fn violation(
        &self,
        table: &TableId,
        batch: &RecordBatch,
        row: usize,
        full_width: bool,
        how: &str,
    ) -> datafusion::error::DataFusionError {
        let values: Vec<String> = self
            .key_columns(batch, full_width)
            .iter()
            .map(|column| array_value_to_string(column, row).unwrap_or_else(|e| e.to_string()))
            .collect();
        TenantError::PrimaryKeyViolation {
            table: table.to_string(),
            key: format!("({})=({})", self.names.join(", "), values.join(", ")),
            detail: how.to_string(),
        }
        .into()
    }
}
