//! The scan of one caller's partition.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::AsArray;
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::common::Statistics;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::config::ConfigOptions;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::utils::conjunction;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_expr_common::physical_expr::is_volatile;
use datafusion::physical_plan::coop::make_cooperative;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType, SchedulingType};
use datafusion::physical_plan::filter_pushdown::{
    ChildPushdownResult, FilterPushdownPhase, FilterPushdownPropagation, PushedDown,
};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::statistics::StatisticsArgs;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use futures::{StreamExt, TryStreamExt};
use tenantfusion_core::{TableId, UserId};

use crate::binding::IdentityBinding;
use crate::policy::PartitionPolicy;
use crate::store::{PartitionKey, PartitionStore, ReadRequest};
use crate::topic_filter::topics_pinned_by;

/// Reads the partition of whoever executes it, then applies the projection
/// and limit (and, for tables stored per topic, their filters). Other
/// filters stay in DataFusion's `FilterExec` above; those it offers the scan
/// go to the store as a hint (files and row groups that cannot match are
/// skipped).
///
/// The plan holds no user and no rows: the caller's partition is chosen in
/// [`ExecutionPlan::execute`], so one plan is safe to reuse for every user.
/// Only a scan made for one caller alone ([`ScanRequest::statistics`]) holds
/// that caller's statistics, and then runs for nobody else.
#[derive(Debug)]
pub struct PartitionScanExec {
    table_id: Arc<TableId>,
    store: Arc<dyn PartitionStore>,
    policy: Arc<dyn PartitionPolicy>,
    binding: IdentityBinding,
    /// What the store is asked for: the columns read, the predicate over them.
    read: ReadRequest,
    /// Over the columns read: what every row returned satisfies (see
    /// [`ScanRequest::predicate`]); part of the store's hint.
    exact: Option<Arc<dyn PhysicalExpr>>,
    /// Of the columns read, those returned (the predicate may need more).
    projection: Option<Vec<usize>>,
    limit: Option<usize>,
    topics: Option<Vec<Arc<str>>>,
    statistics: Option<CallerStatistics>,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

/// What [`PartitionScanExec`] reads: everything but the table itself.
#[derive(Debug, Clone, Default)]
pub struct ScanRequest {
    /// Columns read from the store, by index into the table schema,
    /// ascending (`None` = all).
    pub columns: Option<Vec<usize>>,
    /// Columns to return, by index into the columns read (`None` = all).
    pub projection: Option<Vec<usize>>,
    /// Over the columns read: the rows returned satisfy it (filters a
    /// table stored per topic takes exactly). The store gets it as a hint,
    /// with the filters DataFusion offers the physical plan.
    pub predicate: Option<Arc<dyn PhysicalExpr>>,
    /// At most this many rows, counted after the predicate.
    pub limit: Option<usize>,
    /// For tables stored per topic: the only topics the filters allow
    /// (`None`: every topic).
    pub topics: Option<Vec<Arc<str>>>,
    /// Only in a plan made for one caller alone (see [`PlannedFor`]).
    ///
    /// [`PlannedFor`]: crate::PlannedFor
    pub statistics: Option<CallerStatistics>,
}

/// Statistics of the columns a scan reads, in the partition of the one
/// caller its plan was made for; the scan runs for nobody else.
#[derive(Debug, Clone)]
pub struct CallerStatistics {
    /// Whose rows they describe.
    pub caller: UserId,
    /// Over the columns read.
    pub statistics: Arc<Statistics>,
}

impl PartitionScanExec {
    /// A scan of `table_id` whose partition `policy` picks for the bound
    /// caller. The store holds rows of `stored_schema`; the scan returns
    /// them as `declared_schema` (the same columns, NOT NULL where declared).
    pub fn try_new(
        table_id: Arc<TableId>,
        stored_schema: &SchemaRef,
        declared_schema: &SchemaRef,
        store: Arc<dyn PartitionStore>,
        policy: Arc<dyn PartitionPolicy>,
        binding: IdentityBinding,
        request: ScanRequest,
    ) -> Result<Self> {
        let read_schema = match &request.columns {
            Some(indices) => Arc::new(stored_schema.project(indices)?),
            None => Arc::clone(stored_schema),
        };
        let declared = match &request.columns {
            Some(indices) => Arc::new(declared_schema.project(indices)?),
            None => Arc::clone(declared_schema),
        };
        let schema = match &request.projection {
            Some(indices) => Arc::new(declared.project(indices)?),
            None => declared,
        };
        Ok(Self {
            table_id,
            store,
            policy,
            binding,
            read: ReadRequest {
                columns: request.columns,
                schema: read_schema,
                predicate: request.predicate.clone(),
            },
            exact: request.predicate,
            projection: request.projection,
            limit: request.limit,
            topics: request.topics,
            statistics: request.statistics,
            properties: leaf_properties(schema),
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }

    /// A copy with metrics of its own.
    fn fresh_copy(&self) -> Self {
        Self {
            table_id: Arc::clone(&self.table_id),
            store: Arc::clone(&self.store),
            policy: Arc::clone(&self.policy),
            binding: self.binding.clone(),
            read: self.read.clone(),
            exact: self.exact.clone(),
            projection: self.projection.clone(),
            limit: self.limit,
            topics: self.topics.clone(),
            statistics: self.statistics.clone(),
            properties: Arc::clone(&self.properties),
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }

    /// `filter`, over this scan's output, rewritten over the columns it reads.
    fn over_columns_read(&self, filter: Arc<dyn PhysicalExpr>) -> Result<Arc<dyn PhysicalExpr>> {
        let Some(projection) = &self.projection else {
            return Ok(filter);
        };
        filter
            .transform(|expr| match expr.downcast_ref::<Column>() {
                Some(column) => {
                    let read = projection.get(column.index()).ok_or_else(|| {
                        DataFusionError::Internal(format!(
                            "filter offered to the scan of {} names column {} of {}",
                            self.table_id,
                            column.index(),
                            projection.len()
                        ))
                    })?;
                    Ok(Transformed::yes(
                        Arc::new(Column::new(column.name(), *read)) as Arc<dyn PhysicalExpr>,
                    ))
                }
                None => Ok(Transformed::no(expr)),
            })
            .map(|t| t.data)
    }

    /// A copy with metrics of its own and `f` applied to its predicates
    /// (what the rows returned satisfy, and the store's hint). This is how
    /// a plan made with parameters gets one run's values; `f` must keep
    /// each predicate's meaning over the same columns.
    pub fn map_predicates<F>(&self, mut f: F) -> Result<Self>
    where
        F: FnMut(&Arc<dyn PhysicalExpr>) -> Result<Arc<dyn PhysicalExpr>>,
    {
        let mut copy = self.fresh_copy();
        copy.exact = copy.exact.as_ref().map(&mut f).transpose()?;
        copy.read.predicate = copy.read.predicate.as_ref().map(f).transpose()?;
        // A table stored per topic reads only the topics the predicate now
        // pins (rows of others would fail it anyway): a generic plan's scan
        // reads every topic until its run's value is put in.
        if copy.topics.is_none()
            && let (Some(column), Some(exact)) = (copy.policy.topic_column(), &copy.exact)
        {
            copy.topics = topics_pinned_by(exact, column);
        }
        Ok(copy)
    }

    /// This scan with a `FilterExec` above it taken in: `filter` (over this
    /// scan's output) then applied to every row returned, and `projection`
    /// (of this scan's output) to the columns returned. `None` when this
    /// scan has a limit, which counts rows before such a filter.
    ///
    /// A plan made with parameters takes its filters so: each run then
    /// puts its values into the scan alone (see `map_predicates`), where
    /// making a new `FilterExec` would compute its statistics, interval
    /// analysis and equivalences again. The filter joins the store's hint
    /// too (it is offered it when planned, as a hint only).
    pub fn with_filter(
        &self,
        filter: &Arc<dyn PhysicalExpr>,
        projection: Option<&[usize]>,
    ) -> Result<Option<Self>> {
        if self.limit.is_some() {
            return Ok(None);
        }
        let read_filter = self.over_columns_read(Arc::clone(filter))?;
        let mut copy = self.fresh_copy();
        copy.exact = Some(match copy.exact.take() {
            Some(exact) => conjunction([exact, read_filter]),
            None => read_filter,
        });
        if let Some(projection) = projection {
            let returned: Vec<usize> = match &self.projection {
                Some(current) => current.clone(),
                None => (0..self.read.schema.fields().len()).collect(),
            };
            let picked = projection
                .iter()
                .map(|&i| {
                    returned.get(i).copied().ok_or_else(|| {
                        DataFusionError::Internal(format!(
                            "a filter over the scan of {} returns column {i} of {}",
                            self.table_id,
                            returned.len()
                        ))
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            copy.projection = Some(picked);
            copy.properties = leaf_properties(Arc::new(self.schema().project(projection)?));
        }
        Ok(Some(copy))
    }

    /// The one caller this scan was planned for, when it carries that
    /// caller's statistics: such a plan must never be kept or shared.
    pub fn planned_for(&self) -> Option<&UserId> {
        self.statistics.as_ref().map(|s| &s.caller)
    }
}

impl DisplayAs for PartitionScanExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        match t {
            DisplayFormatType::Default | DisplayFormatType::Verbose => {
                write!(f, "PartitionScanExec: table={}", self.table_id)?;
                if self.read.columns.is_some() || self.projection.is_some() {
                    let schema = self.schema();
                    let names: Vec<_> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                    write!(f, ", projection=[{}]", names.join(", "))?;
                }
                if let Some(pred) = &self.read.predicate {
                    write!(f, ", predicate={pred}")?;
                }
                if let Some(topics) = &self.topics {
                    write!(f, ", topics=[{}]", topics.join(", "))?;
                }
                if let Some(limit) = self.limit {
                    write!(f, ", fetch={limit}")?;
                }
                Ok(())
            }
            DisplayFormatType::TreeRender => write!(f, "table={}", self.table_id),
        }
    }
}

impl ExecutionPlan for PartitionScanExec {
    fn name(&self) -> &str {
        "PartitionScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        // Both are evaluated: `exact` on every row returned, the hint by
        // the store.
        for predicate in self.exact.iter().chain(&self.read.predicate) {
            if f(predicate)? == TreeNodeRecursion::Stop {
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        leaf_with_new_children(self, children)
    }

    /// A copy with its own metrics: a plan reused for many users must not
    /// add up their row counts where any caller can read them.
    fn reset_state(self: Arc<Self>) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(self.fresh_copy()))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return Err(DataFusionError::Internal(format!(
                "PartitionScanExec has one partition, asked for {partition}"
            )));
        }
        let user = self.binding.resolve(&context)?;
        if let Some(planned) = &self.statistics
            && planned.caller != *user.user_id()
        {
            return Err(DataFusionError::Internal(format!(
                "a scan of {} planned for one caller cannot run for another",
                self.table_id
            )));
        }
        let key = self.policy.read_partition(&self.table_id, &user)?;
        let keys = if self.policy.topic_column().is_none() {
            vec![key]
        } else {
            match &self.topics {
                Some(topics) => topics
                    .iter()
                    .map(|t| PartitionKey::Topic(Arc::clone(t)))
                    .collect(),
                None => self.store.keys(),
            }
        };
        let store = Arc::clone(&self.store);
        let read = self.read.clone();
        let filter = RowFilter {
            predicate: self.exact.clone(),
            projection: self.projection.clone(),
            remaining: self.limit,
            schema: self.schema(),
        };
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        let rows = futures::stream::once(async move {
            let mut batches = Vec::new();
            for key in &keys {
                batches.extend(store.scan(key, &read).await?);
            }
            filter.apply(batches)
        })
        .map_ok(|batches| futures::stream::iter(batches.into_iter().map(Ok)))
        .try_flatten()
        .inspect_ok(move |batch| baseline.record_output(batch.num_rows()))
        .boxed();
        Ok(make_cooperative(Box::pin(RecordBatchStreamAdapter::new(
            self.schema(),
            rows,
        ))))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn fetch(&self) -> Option<usize> {
        self.limit
    }

    /// Static filters DataFusion offers (`FilterPushdownPhase::Pre`) join
    /// the store's hint; every one is reported not pushed down, so the
    /// `FilterExec` above still applies it exactly. Dynamic filters (from a
    /// join or TopK, `Post`) are not taken: the scan reads its partition
    /// before they are known.
    fn handle_child_pushdown_result(
        &self,
        phase: FilterPushdownPhase,
        child_pushdown_result: ChildPushdownResult,
        _config: &ConfigOptions,
    ) -> Result<FilterPushdownPropagation<Arc<dyn ExecutionPlan>>> {
        let offered: Vec<_> = child_pushdown_result
            .parent_filters
            .into_iter()
            .map(|f| f.filter)
            .collect();
        let not_pushed = FilterPushdownPropagation::with_parent_pushdown_result(vec![
            PushedDown::No;
            offered.len()
        ]);
        if phase != FilterPushdownPhase::Pre {
            return Ok(not_pushed);
        }
        let mut hints = Vec::new();
        for filter in offered.into_iter().filter(|f| !is_volatile(f)) {
            hints.push(self.over_columns_read(filter)?);
        }
        if hints.is_empty() {
            return Ok(not_pushed);
        }
        hints.extend(self.read.predicate.clone());
        let mut scan = self.fresh_copy();
        scan.read.predicate = Some(conjunction(hints));
        Ok(not_pushed.with_updated_node(Arc::new(scan) as Arc<dyn ExecutionPlan>))
    }

    /// Unknown, but in a plan made for one caller alone: then those of the
    /// caller's rows, counted when the plan was made.
    fn statistics_from_inputs(
        &self,
        _inputs: &[Arc<Statistics>],
        _args: &StatisticsArgs,
    ) -> Result<Arc<Statistics>> {
        let Some(read) = &self.statistics else {
            return Ok(Arc::new(Statistics::new_unknown(&self.schema())));
        };
        let read = read.statistics.as_ref().clone();
        let mut statistics = read.project(self.projection.as_ref());
        if self.exact.is_some() {
            // The predicate keeps some of the rows counted: how many is
            // not known before it runs.
            statistics = statistics.to_inexact();
        }
        Ok(Arc::new(statistics.with_fetch(self.limit, 0, 1)?))
    }
}

/// Plan properties of a bounded leaf with one output partition whose stream
/// takes its turns with the tokio scheduler itself (`make_cooperative`), so
/// DataFusion need not wrap it in a `CooperativeExec`.
pub(crate) fn leaf_properties(schema: SchemaRef) -> Arc<PlanProperties> {
    Arc::new(
        PlanProperties::new(
            EquivalenceProperties::new(schema),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        )
        .with_scheduling_type(SchedulingType::Cooperative),
    )
}

/// `ExecutionPlan::with_new_children` of a leaf: accepts no children.
pub(crate) fn leaf_with_new_children(
    plan: Arc<dyn ExecutionPlan>,
    children: Vec<Arc<dyn ExecutionPlan>>,
) -> Result<Arc<dyn ExecutionPlan>> {
    if children.is_empty() {
        Ok(plan)
    } else {
        Err(DataFusionError::Internal(format!(
            "{} is a leaf and takes no children",
            plan.name()
        )))
    }
}

struct RowFilter {
    predicate: Option<Arc<dyn PhysicalExpr>>,
    projection: Option<Vec<usize>>,
    remaining: Option<usize>,
    /// What the rows are returned as.
    schema: SchemaRef,
}

impl RowFilter {
    fn apply(mut self, batches: Vec<RecordBatch>) -> Result<Vec<RecordBatch>> {
        let mut out = Vec::with_capacity(batches.len());
        for batch in batches {
            if self.remaining == Some(0) {
                break;
            }
            let mut batch = match &self.predicate {
                Some(predicate) => {
                    let mask = predicate.evaluate(&batch)?.into_array(batch.num_rows())?;
                    let mask = mask.as_boolean_opt().ok_or_else(|| {
                        DataFusionError::Internal("scan predicate is not boolean".to_string())
                    })?;
                    filter_record_batch(&batch, mask)?
                }
                None => batch,
            };
            if let Some(remaining) = self.remaining.as_mut() {
                let take = batch.num_rows().min(*remaining);
                batch = batch.slice(0, take);
                *remaining -= take;
            }
            if let Some(indices) = &self.projection {
                batch = batch.project(indices)?;
            }
            if batch.num_rows() > 0 {
                // Checks that a NOT NULL column holds no NULL (the sink
                // refused any): a plan relying on it must never see one.
                let rows = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
                out.push(RecordBatch::try_new_with_options(
                    Arc::clone(&self.schema),
                    batch.columns().to_vec(),
                    &rows,
                )?);
            }
        }
        Ok(out)
    }
}
