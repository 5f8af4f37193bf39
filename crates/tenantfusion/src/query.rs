//! A planned statement, ready to run.

use std::sync::Arc;

use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::sink::DataSinkExec;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{ExecutionPlan, collect, execute_stream};
use futures::{StreamExt, TryStreamExt};
use tenantfusion_core::{Result, TenantError};

use crate::limits::{CancelHandle, Governor};

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
    governor: Governor,
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
            governor: Governor::default(),
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
            governor: Governor::default(),
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

    /// The statement under `governor`'s limits.
    pub(crate) fn governed(mut self, governor: Governor) -> Self {
        self.governor = governor;
        self
    }

    /// A handle that cancels this query from anywhere, before or while it
    /// runs (see [`StatementLimits`](crate::StatementLimits) for what a
    /// cancelled write does).
    pub fn cancel_handle(&self) -> CancelHandle {
        self.governor.cancel.clone()
    }

    /// Runs the statement and gathers every row.
    pub async fn collect(self) -> Result<Vec<RecordBatch>> {
        if self.plan.is_none() {
            return Ok(Vec::new());
        }
        Ok(self.execute_stream()?.try_collect().await?)
    }

    /// Runs the statement as a stream of batches; errors inside the stream are
    /// DataFusion errors that convert with `TenantError::from`. Dropping the
    /// stream stops a query's work; a write runs to its end regardless.
    pub fn execute_stream(self) -> Result<SendableRecordBatchStream> {
        if let Some(err) = self.governor.stopped() {
            return Err(err);
        }
        let plan = match self.plan {
            Some(plan) => plan,
            None => Arc::new(datafusion::physical_plan::empty::EmptyExec::new(
                Arc::clone(&self.schema),
            )),
        };
        if writes(&plan) {
            return Ok(run_to_end(plan, self.task, self.governor));
        }
        Ok(self.governor.govern(execute_stream(plan, self.task)?))
    }
}

/// Whether `plan` changes rows (INSERT, UPDATE and DELETE end in a sink).
fn writes(plan: &Arc<dyn ExecutionPlan>) -> bool {
    plan.is::<DataSinkExec>() || plan.children().into_iter().any(writes)
}

/// Runs a write on a task of its own, which finishes whatever happens to
/// the stream handed back: a write cut between its log record and its
/// table would leave durable rows the engine does not show until reopened.
fn run_to_end(
    plan: Arc<dyn ExecutionPlan>,
    task: Arc<TaskContext>,
    governor: Governor,
) -> SendableRecordBatchStream {
    let schema = plan.schema();
    let write = tokio::spawn(async move {
        // Counted among its user's statements until it is done.
        let _governor = governor;
        collect(plan, task).await
    });
    let batches = futures::stream::once(async move {
        let batches = match write.await {
            Ok(batches) => batches,
            Err(err) => Err(datafusion::error::DataFusionError::External(Box::new(
                TenantError::Internal(format!("a write's task ended abnormally: {err}")),
            ))),
        };
        futures::stream::iter(match batches {
            Ok(batches) => batches.into_iter().map(Ok).collect(),
            Err(err) => vec![Err(err)],
        })
    })
    .flatten();
    Box::pin(RecordBatchStreamAdapter::new(schema, batches))
}
