//! The write of one caller's rows.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::datasource::sink::DataSink;
use datafusion::error::Result;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::{DisplayAs, DisplayFormatType};
use futures::TryStreamExt;
use tenantfusion_core::{Access, Mutation, TableId, TenantError};
use tokio::sync::MutexGuard;

use crate::binding::IdentityBinding;
use crate::change_listeners::ChangeListeners;
use crate::compact::compacted;
use crate::policy::PartitionPolicy;
use crate::primary_key::PrimaryKey;
use crate::store::{PartitionKey, PartitionStore};

/// Appends rows to the partition of whoever executes the plan.
///
/// Nothing is written while planning (so `EXPLAIN INSERT` changes nothing),
/// and a statement's rows are validated in full before any is stored: an
/// error leaves the table as it was.
#[derive(Debug)]
pub struct PartitionSink {
    table_id: Arc<TableId>,
    /// The declared schema, NOT NULL included: what rows are checked against.
    declared: SchemaRef,
    /// The schema rows are stored (and scanned) with.
    schema: SchemaRef,
    store: Arc<dyn PartitionStore>,
    listeners: Arc<ChangeListeners>,
    policy: Arc<dyn PartitionPolicy>,
    binding: IdentityBinding,
    primary_key: Option<Arc<PrimaryKey>>,
}

impl PartitionSink {
    /// A sink into `table_id`, whose partition `policy` picks for the bound
    /// caller; the live queries of `listeners` are told about the rows.
    pub fn new(
        table_id: Arc<TableId>,
        declared: SchemaRef,
        schema: SchemaRef,
        store: Arc<dyn PartitionStore>,
        listeners: Arc<ChangeListeners>,
        policy: Arc<dyn PartitionPolicy>,
        binding: IdentityBinding,
    ) -> Self {
        Self {
            table_id,
            declared,
            schema,
            store,
            listeners,
            policy,
            binding,
            primary_key: None,
        }
    }

    /// Checks `key` on every write (see [`PrimaryKey`]).
    pub fn with_primary_key(mut self, key: Option<Arc<PrimaryKey>>) -> Self {
        self.primary_key = key;
        self
    }

    /// With a primary key, holds off the partition's other writes and
    /// checks that storing `added` in place of the rows of `replaced` keeps
    /// every key once; keep the guard until the write is stored.
    async fn hold(
        &self,
        partition: &PartitionKey,
        added: &[RecordBatch],
        replaced: Option<&RecordBatch>,
    ) -> Result<Option<MutexGuard<'_, ()>>> {
        let (Some(key), [first, ..]) = (&self.primary_key, added) else {
            return Ok(None);
        };
        let added = concat_batches(&first.schema(), added)?;
        let store = self.store.as_ref();
        Ok(Some(
            key.admit(&self.table_id, store, partition, &added, replaced)
                .await?,
        ))
    }

    /// Re-labels a batch with the table's schema, enforcing column count,
    /// types and NOT NULL (DataFusion checks types but not nullability).
    pub(crate) fn conform(&self, batch: RecordBatch) -> Result<RecordBatch, TenantError> {
        let fields = self.declared.fields();
        if batch.num_columns() != fields.len() {
            return Err(TenantError::SchemaMismatch(format!(
                "table '{}' has {} columns, insert provided {}",
                self.table_id,
                fields.len(),
                batch.num_columns()
            )));
        }
        for (field, column) in fields.iter().zip(batch.columns()) {
            if column.data_type() != field.data_type() {
                return Err(TenantError::SchemaMismatch(format!(
                    "column '{}' of table '{}' is {}, insert provided {}",
                    field.name(),
                    self.table_id,
                    field.data_type(),
                    column.data_type()
                )));
            }
            if !field.is_nullable() && column.null_count() > 0 {
                return Err(TenantError::NotNullViolation {
                    table: self.table_id.to_string(),
                    column: field.name().clone(),
                });
            }
        }
        let batch = RecordBatch::try_new(Arc::clone(&self.schema), batch.columns().to_vec())
            .map_err(|e| TenantError::SchemaMismatch(e.to_string()))?;
        compacted(batch).map_err(|e| TenantError::Internal(e.to_string()))
    }
}

impl DisplayAs for PartitionSink {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "PartitionSink: table={}", self.table_id)
    }
}

#[async_trait]
impl DataSink for PartitionSink {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    async fn write_all(
        &self,
        data: SendableRecordBatchStream,
        context: &Arc<TaskContext>,
    ) -> Result<u64> {
        let user = self.binding.resolve(context)?;
        let key = self
            .policy
            .write_partition(&self.table_id, &user, Access::Insert)?;
        let batches: Vec<RecordBatch> = data
            .try_collect()
            .await
            .map_err(|e| TenantError::from_insert(&self.table_id.to_string(), e))?;
        let batches = batches
            .into_iter()
            .map(|b| self.conform(b))
            .collect::<Result<Vec<_>, _>>()?;
        let _held = self.hold(&key, &batches, None).await?;
        self.listeners
            .append(self.store.as_ref(), &key, batches)
            .await
    }
}

/// Applies an UPDATE or DELETE to the partition of whoever executes the
/// plan: its input yields the rows to change (see [`Mutation`]), and they
/// are changed in one step when the input is exhausted, so an error leaves
/// the table as it was and `EXPLAIN` changes nothing.
#[derive(Debug)]
pub struct MutationSink {
    rows: PartitionSink,
    mutation: Mutation,
    /// What the input yields (for UPDATE, twice the table's width).
    input: SchemaRef,
}

impl MutationSink {
    /// Applies `mutation` through `rows`' table, store and caller, to the
    /// rows of an input of schema `input`.
    pub fn new(rows: PartitionSink, mutation: Mutation, input: SchemaRef) -> Self {
        Self {
            rows,
            mutation,
            input,
        }
    }
}

impl DisplayAs for MutationSink {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "MutationSink: {} table={}",
            self.mutation, self.rows.table_id
        )
    }
}

#[async_trait]
impl DataSink for MutationSink {
    fn schema(&self) -> &SchemaRef {
        &self.input
    }

    async fn write_all(
        &self,
        data: SendableRecordBatchStream,
        context: &Arc<TaskContext>,
    ) -> Result<u64> {
        let rows = &self.rows;
        let user = rows.binding.resolve(context)?;
        let access = self.mutation.access();
        let key = rows.policy.write_partition(&rows.table_id, &user, access)?;
        let table = rows.table_id.to_string();
        let input: Vec<RecordBatch> = data
            .try_collect()
            .await
            .map_err(|e| TenantError::from_insert(&table, e))?;
        let Some(first) = input.first() else {
            return Ok(0);
        };
        let input = concat_batches(&first.schema(), &input)?;
        if input.num_rows() == 0 {
            return Ok(0);
        }
        let width = rows.schema.fields().len();
        let as_stored = |columns: &[ArrayRef]| {
            let old = RecordBatch::try_new(Arc::clone(&rows.schema), columns.to_vec())
                .map_err(|e| TenantError::SchemaMismatch(e.to_string()))?;
            // The store logs the rows it takes out.
            compacted(old).map_err(|e| TenantError::Internal(e.to_string()))
        };
        let (old, new) = match self.mutation {
            Mutation::Delete => (as_stored(input.columns())?, None),
            Mutation::Update => {
                if input.num_columns() != 2 * width {
                    return Err(TenantError::Internal(format!(
                        "UPDATE of '{table}' got {} columns, not {}",
                        input.num_columns(),
                        2 * width
                    ))
                    .into());
                }
                let (old, new) = input.columns().split_at(width);
                let new_schema = input
                    .schema()
                    .project(&(width..2 * width).collect::<Vec<_>>())?;
                let new = RecordBatch::try_new(Arc::new(new_schema), new.to_vec())?;
                (as_stored(old)?, Some(rows.conform(new)?))
            }
        };
        let _held = rows.hold(&key, new.as_slice(), Some(&old)).await?;
        rows.listeners
            .replace(rows.store.as_ref(), &key, old, new)
            .await
    }
}
