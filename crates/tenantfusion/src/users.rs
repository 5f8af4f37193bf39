//! Known users and their roles.

use chrono::{DateTime, Utc};
use dashmap::DashMap;
use tenantfusion_core::{Result, Role, TenantError, UserId};

/// A registered user.
#[derive(Debug, Clone)]
pub struct UserRecord {
    /// The user's name.
    pub user_id: UserId,
    /// The role their sessions run with.
    pub role: Role,
    /// When the user was created.
    pub created_at: DateTime<Utc>,
}

/// The users created with `CREATE USER` (or [`UserRegistry::create`]).
///
/// Sessions do not require registration (a host database authenticates its
/// own users); the registry is what `EXECUTE AS USER`, `GRANT` and
/// `system.users` consult.
#[derive(Debug, Default)]
pub struct UserRegistry {
    users: DashMap<UserId, UserRecord>,
}

impl UserRegistry {
    /// Registers a user; `USER_EXISTS` if the name is taken.
    pub fn create(&self, user_id: UserId, role: Role) -> Result<()> {
        match self.users.entry(user_id) {
            dashmap::Entry::Occupied(e) => Err(TenantError::UserExists(e.key().to_string())),
            dashmap::Entry::Vacant(e) => {
                let user_id = e.key().clone();
                e.insert(UserRecord {
                    user_id,
                    role,
                    created_at: Utc::now(),
                });
                Ok(())
            }
        }
    }

    /// Removes a user; `USER_NOT_FOUND` if there is none.
    pub fn drop_user(&self, user_id: &str) -> Result<UserRecord> {
        self.users
            .remove(user_id)
            .map(|(_, record)| record)
            .ok_or_else(|| TenantError::UserNotFound(user_id.to_string()))
    }

    /// A registered user.
    pub fn get(&self, user_id: &str) -> Option<UserRecord> {
        self.users.get(user_id).map(|r| r.value().clone())
    }

    /// Every registered user, sorted by name.
    pub fn list(&self) -> Vec<UserRecord> {
        let mut all: Vec<_> = self.users.iter().map(|r| r.value().clone()).collect();
        all.sort_by(|a, b| a.user_id.cmp(&b.user_id));
        all
    }
}
