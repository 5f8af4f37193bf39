//! The caller's identity, carried per request as a typed session extension.
//!
//! A typed extension cannot be reached from SQL (`SET` only touches
//! `ConfigOptions`), so no statement can change who is asking.

use std::sync::Arc;

use datafusion::catalog::Session;
use datafusion::execution::TaskContext;
use datafusion::prelude::SessionConfig;

use crate::error::{Result, TenantError};
use crate::ids::UserId;
use crate::role::Role;

/// Who is asking: a user and their role, and who is impersonating them if
/// the request came through `EXECUTE AS USER`.
///
/// ```
/// use datafusion::prelude::SessionConfig;
/// use tenantfusion_core::{Role, UserContext};
///
/// let mut config = SessionConfig::new();
/// UserContext::new("alice", Role::User).attach_to(&mut config);
/// let found = UserContext::from_config(&config).unwrap();
/// assert_eq!(found.user_id().as_str(), "alice");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UserContext {
    user_id: UserId,
    role: Role,
    impersonated_by: Option<UserId>,
}

impl UserContext {
    /// A user acting as themselves.
    pub fn new(user_id: impl Into<UserId>, role: Role) -> Self {
        Self {
            user_id: user_id.into(),
            role,
            impersonated_by: None,
        }
    }

    /// `target` acting on behalf of `admin` (the `EXECUTE AS USER` case): the
    /// request has exactly the target's rows and role.
    pub fn impersonated(target: UserId, role: Role, admin: UserId) -> Self {
        Self {
            user_id: target,
            role,
            impersonated_by: Some(admin),
        }
    }

    /// The user whose rows are read and written.
    pub fn user_id(&self) -> &UserId {
        &self.user_id
    }

    /// The role the request runs with.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The administrator impersonating this user, if any.
    pub fn impersonated_by(&self) -> Option<&UserId> {
        self.impersonated_by.as_ref()
    }

    /// Attaches this identity to a session configuration; DataFusion copies it
    /// into every `TaskContext` made from that configuration.
    pub fn attach_to(self, config: &mut SessionConfig) {
        config.set_extension(Arc::new(self));
    }

    /// The identity attached to a session configuration.
    pub fn from_config(config: &SessionConfig) -> Result<Arc<UserContext>> {
        config
            .get_extension::<UserContext>()
            .ok_or(TenantError::NoUserContext)
    }

    /// The identity of the session a plan is being built in.
    pub fn from_session(session: &dyn Session) -> Result<Arc<UserContext>> {
        Self::from_config(session.config())
    }

    /// The identity of the task a plan is executing in.
    pub fn from_task(task: &TaskContext) -> Result<Arc<UserContext>> {
        Self::from_config(task.session_config())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_identity_is_an_error() {
        let err = UserContext::from_config(&SessionConfig::new()).unwrap_err();
        assert_eq!(err.code(), "NO_USER_CONTEXT");
    }

    #[test]
    fn identity_reaches_the_task() {
        let mut config = SessionConfig::new();
        UserContext::new("bob", Role::Service).attach_to(&mut config);
        let task = TaskContext::default().with_session_config(config);
        let user = UserContext::from_task(&task).unwrap();
        assert_eq!(user.user_id().as_str(), "bob");
        assert_eq!(user.role(), Role::Service);
    }
}
