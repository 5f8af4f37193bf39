//! UPDATE and DELETE, planned by the engine rather than through
//! `TableProvider::update` / `delete_from`.
//!
//! DataFusion hands those hooks the statement's `WHERE` as a list of
//! filters, and loses it when the optimizer turns an `IN`/`EXISTS`
//! subquery into a join (apache/datafusion#24654): the provider then sees
//! "no filters", which reads as "every row". Here the statement's input
//! plan, the query that picks the rows to change, is planned and run as any
//! query (subqueries, joins and all, each table read as the caller), and
//! its rows are handed to the table's [`BaseTableProvider::mutate`] plan,
//! which changes them in the caller's partition when it runs, never while
//! planning (so `EXPLAIN UPDATE` changes nothing, unlike DataFusion's
//! `MemTable`: apache/datafusion#24656).

use std::sync::Arc;

use datafusion::arrow::array::StringArray;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::Column;
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::dml::WriteOp;
use datafusion::logical_expr::{DmlStatement, Expr, LogicalPlan, LogicalPlanBuilder};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties, displayable};
use tenantfusion_core::{BaseTableProvider, Mutation, Result, TenantError};

use super::TenantSession;
use crate::generic_plan;
use crate::query::Query;

/// The UPDATE or DELETE `plan` is, if it is one.
pub(crate) fn as_mutation(plan: &LogicalPlan) -> Option<(&DmlStatement, Mutation)> {
    match plan {
        LogicalPlan::Dml(dml) => match dml.op {
            WriteOp::Delete => Some((dml, Mutation::Delete)),
            WriteOp::Update => Some((dml, Mutation::Update)),
            _ => None,
        },
        _ => None,
    }
}

impl TenantSession {
    /// The plan of an UPDATE or DELETE: the rows to change, then the change.
    async fn mutation_plan(
        &self,
        dml: &DmlStatement,
        mutation: Mutation,
        state: &SessionState,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let (provider, rows) = self.rows_to_change(dml, mutation)?;
        let input = state
            .create_physical_plan(&rows)
            .await
            .map_err(|e| TenantError::from_insert(&dml.table_name.to_string(), e))?;
        change(provider, input, mutation)
    }

    /// The generic plan (see `generic_plan`) of a prepared UPDATE or DELETE
    /// whose parameters have `types`; `None` if a parameter would sit where
    /// no value can be put.
    pub(crate) async fn generic_mutation_plan(
        &self,
        dml: &DmlStatement,
        mutation: Mutation,
        types: &[DataType],
        state: &SessionState,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        let (provider, rows) = self.rows_to_change(dml, mutation)?;
        let input = generic_plan::plan(&rows, types, state)
            .await
            .map_err(|e| TenantError::from_insert(&dml.table_name.to_string(), e))?;
        input
            .map(|input| change(provider, input, mutation))
            .transpose()
    }

    /// The table an UPDATE or DELETE changes, and the query of the rows it
    /// changes (for UPDATE, each row's old values then its new ones).
    fn rows_to_change(
        &self,
        dml: &DmlStatement,
        mutation: Mutation,
    ) -> Result<(Arc<dyn BaseTableProvider>, LogicalPlan)> {
        let (namespace, table) = self.resolve_name(&dml.table_name)?;
        let provider = self.engine.cache.lookup(namespace, table)?;
        let rows = match mutation {
            Mutation::Delete => dml.input.as_ref().clone(),
            Mutation::Update => old_and_new(&dml.input, provider.schema().fields().len())?,
        };
        Ok((provider, rows))
    }

    /// Runs an UPDATE or DELETE: a plan that answers with the rows changed.
    pub(crate) async fn run_mutation(
        &self,
        dml: &DmlStatement,
        mutation: Mutation,
        state: &SessionState,
    ) -> Result<Query> {
        let plan = self.mutation_plan(dml, mutation, state).await?;
        Ok(Query::planned(plan, self.task_context(state)?, false))
    }

    /// `EXPLAIN` of an UPDATE or DELETE: its plans as text, nothing run.
    pub(crate) async fn explain_mutation(
        &self,
        dml: &DmlStatement,
        mutation: Mutation,
        state: &SessionState,
    ) -> Result<Query> {
        let plan = self.mutation_plan(dml, mutation, state).await?;
        let logical = LogicalPlan::Dml(dml.clone()).display_indent().to_string();
        let physical = displayable(plan.as_ref()).indent(false).to_string();
        let schema = Arc::new(Schema::new(vec![
            Field::new("plan_type", DataType::Utf8, false),
            Field::new("plan", DataType::Utf8, false),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec!["logical_plan", "physical_plan"])),
                Arc::new(StringArray::from(vec![logical, physical])),
            ],
        )
        .map_err(|e| TenantError::Internal(e.to_string()))?;
        Query::rows(batch, self.task_context(state)?)
    }
}

/// The plan applying `mutation` to the rows `input` yields.
fn change(
    provider: Arc<dyn BaseTableProvider>,
    mut input: Arc<dyn ExecutionPlan>,
    mutation: Mutation,
) -> Result<Arc<dyn ExecutionPlan>> {
    // The change is applied once, to all the rows: one stream of them.
    if input.output_partitioning().partition_count() > 1 {
        input = Arc::new(CoalescePartitionsExec::new(input));
    }
    provider.mutate(input, mutation)
}

/// An UPDATE's input as DataFusion plans it is a projection of each column's
/// new value over the rows to change (the target table's columns first,
/// then those of any `FROM` tables). This makes it yield each row's current
/// values next to its new ones.
fn old_and_new(input: &LogicalPlan, width: usize) -> Result<LogicalPlan> {
    let LogicalPlan::Projection(projection) = input else {
        return Err(TenantError::Internal(format!(
            "UPDATE planned without a projection of new values: {}",
            input.display()
        )));
    };
    let source = projection.input.as_ref();
    if projection.expr.len() != width || source.schema().fields().len() < width {
        return Err(TenantError::Internal(format!(
            "UPDATE of {width} columns planned as {}",
            input.display()
        )));
    }
    let old = source
        .schema()
        .iter()
        .take(width)
        .enumerate()
        .map(|(i, (qualifier, field))| {
            Expr::Column(Column::from((qualifier, field))).alias(format!("__old_{i}"))
        });
    let new = projection
        .expr
        .iter()
        .enumerate()
        .map(|(i, expr)| expr.clone().unalias().alias(format!("__new_{i}")));
    Ok(LogicalPlanBuilder::from(source.clone())
        .project(old.chain(new))?
        .build()?)
}
