//! A planned statement, ready to run.

use std::sync::Arc;

use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::{ExecutionPlan, collect, execute_stream};
use tenantfusion_core::Result;

/// What [`TenantSession::sql`](crate::TenantSession::sql) returns.
///
/// DDL and DCL (`CREATE`, `DROP`, `GRANT`, ...) have already run and yield no
/// rows. Queries and DML run when collected or streamed, as the session's user.
#[derive(Debug)]
pub struct Query {
    schema: SchemaRef,
    plan: Option<Arc<dyn ExecutionPlan>>,
    task: Arc<TaskContext>,
    from_cache: bool,
}

impl Query {
    pub(crate) fn planned(
        plan: Arc<dyn ExecutionPlan>,
        task: Arc<TaskContext>,
        from_cache: bool,
    ) -> Self {
        Self {
            schema: plan.schema(),
            plan: Some(plan),
            task,
            from_cache,
        }
    }

    /// A statement that has already run and answers with `batch`.
    pub(crate) fn rows(batch: RecordBatch, task: Arc<TaskContext>) -> Result<Self> {
        let schema = batch.schema();
        let plan = MemorySourceConfig::try_new_exec(&[vec![batch]], schema, None)?;
        Ok(Self::planned(plan, task, false))
    }

    pub(crate) fn done(task: Arc<TaskContext>) -> Self {
        Self {
            schema: Arc::new(Schema::empty()),
            plan: None,
            task,
            from_cache: false,
        }
    }

    /// Whether the plan came from the engine's plan cache (the statement
    /// was not planned again).
    pub fn from_cache(&self) -> bool {
        self.from_cache
    }

    /// The columns the statement returns (empty for DDL).
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// The physical plan, if the statement has one to run. It carries no
    /// user: the caller is supplied by the task context at execution.
    pub fn plan(&self) -> Option<&Arc<dyn ExecutionPlan>> {
        self.plan.as_ref()
    }

    /// Runs the statement and gathers every row.
    pub async fn collect(self) -> Result<Vec<RecordBatch>> {
        match self.plan {
            Some(plan) => Ok(collect(plan, self.task).await?),
            None => Ok(Vec::new()),
        }
    }

    /// Runs the statement as a stream of batches; errors inside the stream are
    /// DataFusion errors that convert with `TenantError::from`.
    pub fn execute_stream(self) -> Result<SendableRecordBatchStream> {
        match self.plan {
            Some(plan) => Ok(execute_stream(plan, self.task)?),
            None => Ok(execute_stream(
                Arc::new(datafusion::physical_plan::empty::EmptyExec::new(
                    self.schema,
                )),
                self.task,
            )?),
        }
    }
}
