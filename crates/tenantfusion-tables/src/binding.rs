//! How a plan learns who it runs for.
//!
//! A plan made by DataFusion's `scan`/`insert_into` holds no identity: each
//! of its nodes reads the caller from the executing task, so one plan serves
//! every user and can be cached. A plan bound to one caller either says so
//! in each node ([`IdentityBinding::Bound`], for our own scans and sinks) or,
//! where the plan is DataFusion's and its nodes cannot be told (a view's
//! plan), runs under [`BoundCallerExec`], which gives everything beneath it
//! a task whose caller is fixed.

use std::fmt;
use std::sync::Arc;

use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use tenantfusion_core::{TenantError, UserContext};

/// Where a scan or write finds its caller.
///
/// Plans made by DataFusion's `scan`/`insert_into` use [`IdentityBinding::Task`]:
/// they hold no identity, so one plan serves every user and can be cached;
/// the caller is read from the executing task. `scan_user`/`insert_user` bind
/// an explicit caller.
#[derive(Debug, Clone)]
pub enum IdentityBinding {
    /// The user attached to the executing task's session config.
    Task,
    /// A caller fixed when the plan was built.
    Bound(Arc<UserContext>),
}

impl IdentityBinding {
    /// The caller for this execution; `NO_USER_CONTEXT` when there is none.
    pub fn resolve(&self, task: &TaskContext) -> Result<Arc<UserContext>, TenantError> {
        match self {
            IdentityBinding::Task => UserContext::from_task(task),
            IdentityBinding::Bound(user) => Ok(Arc::clone(user)),
        }
    }
}

/// The one caller a plan is being made for, in the planning session's
/// config: set only where the plan will be neither kept nor shared (a
/// statement's first run, `EXPLAIN`). Scans then describe that caller's
/// rows to DataFusion's optimizer ([`PartitionStore::statistics`]), as
/// DataFusion's own tables do, so a one-off query over a few rows is
/// planned for a few rows. A plan that is kept is made without it: the
/// statistics of one user's rows at one moment must not shape, or be
/// folded into, a plan another user runs (DESIGN.md, "plan cache").
///
/// It is not the executing caller ([`UserContext::from_task`] is): a scan
/// planned for one caller refuses to run for another.
///
/// [`PartitionStore::statistics`]: crate::PartitionStore::statistics
///
/// ```
/// # use std::sync::Arc;
/// # use datafusion::prelude::SessionConfig;
/// # use tenantfusion_core::{Role, UserContext};
/// # use tenantfusion_tables::PlannedFor;
/// let alice = Arc::new(UserContext::new("alice", Role::User));
/// let config = SessionConfig::new().with_extension(Arc::new(PlannedFor(alice)));
/// let planned = config.get_extension::<PlannedFor>().unwrap();
/// assert_eq!(planned.0.user_id().as_str(), "alice");
/// ```
#[derive(Debug, Clone)]
pub struct PlannedFor(pub Arc<UserContext>);

/// Runs its input as `caller`, whoever executes it: every node beneath it
/// sees a task whose caller is `caller` (the rest of the task — settings,
/// functions, memory pool — is the executing one's).
///
/// ```
/// # use std::sync::Arc;
/// # use datafusion::physical_plan::{ExecutionPlan, empty::EmptyExec};
/// # use datafusion::arrow::datatypes::Schema;
/// # use tenantfusion_core::{Role, UserContext};
/// # use tenantfusion_tables::BoundCallerExec;
/// let input = Arc::new(EmptyExec::new(Arc::new(Schema::empty())));
/// let bob = Arc::new(UserContext::new("bob", Role::User));
/// let plan = BoundCallerExec::new(input, bob);
/// assert_eq!(plan.caller().user_id().as_str(), "bob");
/// ```
#[derive(Debug)]
pub struct BoundCallerExec {
    input: Arc<dyn ExecutionPlan>,
    caller: Arc<UserContext>,
}

impl BoundCallerExec {
    /// `input`, run as `caller`.
    pub fn new(input: Arc<dyn ExecutionPlan>, caller: Arc<UserContext>) -> Self {
        Self { input, caller }
    }

    /// Whom the input runs as.
    pub fn caller(&self) -> &Arc<UserContext> {
        &self.caller
    }

    /// The executing task with its caller replaced.
    fn task_for_caller(&self, task: &TaskContext) -> TaskContext {
        let mut config = task.session_config().clone();
        config.set_extension(Arc::clone(&self.caller));
        TaskContext::new(
            task.task_id(),
            task.session_id(),
            config,
            task.scalar_functions().clone(),
            task.higher_order_functions().clone(),
            task.aggregate_functions().clone(),
            task.window_functions().clone(),
            task.runtime_env(),
        )
    }
}

impl DisplayAs for BoundCallerExec {
    fn fmt_as(&self, _format: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "BoundCallerExec: caller={}", self.caller.user_id())
    }
}

impl ExecutionPlan for BoundCallerExec {
    fn name(&self) -> &str {
        "BoundCallerExec"
    }

    /// The input's: this node changes who runs it, not what it yields.
    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match (children.pop(), children.is_empty()) {
            (Some(input), true) => Ok(Arc::new(Self::new(input, Arc::clone(&self.caller)))),
            _ => Err(DataFusionError::Internal(
                "BoundCallerExec has one input".into(),
            )),
        }
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let task = Arc::new(self.task_for_caller(&context));
        self.input.execute(partition, task)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::Schema;
    use datafusion::physical_plan::empty::EmptyExec;
    use tenantfusion_core::Role;

    #[test]
    fn the_input_runs_as_the_bound_caller_with_the_rest_of_the_task() {
        let mut config = datafusion::prelude::SessionConfig::new().with_batch_size(77);
        UserContext::new("alice", Role::User).attach_to(&mut config);
        let task = TaskContext::default()
            .with_session_config(config)
            .with_task_id("t1".into());
        let exec = BoundCallerExec::new(
            Arc::new(EmptyExec::new(Arc::new(Schema::empty()))),
            Arc::new(UserContext::new("bob", Role::User)),
        );
        let inner = exec.task_for_caller(&task);
        assert_eq!(
            UserContext::from_task(&inner).unwrap().user_id().as_str(),
            "bob"
        );
        assert_eq!(inner.session_config().batch_size(), 77);
        assert_eq!(inner.task_id().as_deref(), Some("t1"));
        assert_eq!(
            UserContext::from_task(&task).unwrap().user_id().as_str(),
            "alice"
        );
    }
}
