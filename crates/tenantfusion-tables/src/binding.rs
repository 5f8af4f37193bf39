//! How a plan learns who it runs for.

use std::sync::Arc;

use datafusion::execution::TaskContext;
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
