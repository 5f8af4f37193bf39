//! Known users and their roles.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use dashmap::DashMap;
use parking_lot::Mutex;
use tenantfusion_core::{Result, Role, ScramVerifier, TenantError, UserId};

/// A registered user.
#[derive(Debug, Clone)]
pub struct UserRecord {
    /// The user's name.
    pub user_id: UserId,
    /// The role their sessions run with.
    pub role: Role,
    /// When the user was created.
    pub created_at: DateTime<Utc>,
    /// What their password is kept as; `None`: they have none, and cannot
    /// log in with one.
    pub verifier: Option<ScramVerifier>,
}

/// The users created with `CREATE USER` (or [`UserRegistry::create`]).
///
/// Sessions do not require registration (a host database authenticates its
/// own users); the registry is what `EXECUTE AS USER`, `GRANT` and
/// `system.users` consult.
///
/// A dropped user's name stays *being dropped* until every table has let go
/// of their rows (`DROP USER` logs the drop first, then empties the tables,
/// then logs that it is done; an engine reopened in between finishes the
/// job before it serves anyone). Until then the name cannot be created again.
#[derive(Debug, Default)]
pub struct UserRegistry {
    users: DashMap<UserId, UserRecord>,
    forgetting: Mutex<BTreeSet<String>>,
}

impl UserRegistry {
    /// Registers a user, with what their password is kept as if they have
    /// one; `USER_EXISTS` if the name is taken.
    pub fn create(
        &self,
        user_id: UserId,
        role: Role,
        verifier: Option<ScramVerifier>,
    ) -> Result<()> {
        // A log written before drops were finished in two steps has no
        // `UserForgotten`: its drop was complete when it was logged.
        self.forgetting.lock().remove(user_id.as_str());
        match self.users.entry(user_id) {
            dashmap::Entry::Occupied(e) => Err(TenantError::UserExists(e.key().to_string())),
            dashmap::Entry::Vacant(e) => {
                let user_id = e.key().clone();
                e.insert(UserRecord {
                    user_id,
                    role,
                    created_at: Utc::now(),
                    verifier,
                });
                Ok(())
            }
        }
    }

    /// Keeps `verifier` as `user_id`'s password from now on;
    /// `USER_NOT_FOUND` if there is no such user.
    pub fn set_verifier(&self, user_id: &str, verifier: ScramVerifier) -> Result<()> {
        let mut record = self
            .users
            .get_mut(user_id)
            .ok_or_else(|| TenantError::UserNotFound(user_id.to_string()))?;
        record.verifier = Some(verifier);
        Ok(())
    }

    /// Whether a user named `user_id` can be created now.
    pub fn check_create(&self, user_id: &str) -> Result<()> {
        if self.users.contains_key(user_id) {
            return Err(TenantError::UserExists(user_id.to_string()));
        }
        if self.is_forgetting(user_id) {
            return Err(TenantError::UserExists(format!(
                "{user_id} (still being dropped: run DROP USER '{user_id}' again to finish)"
            )));
        }
        Ok(())
    }

    /// Removes a user, whose rows are then being dropped; `USER_NOT_FOUND`
    /// if there is none.
    pub fn drop_user(&self, user_id: &str) -> Result<UserRecord> {
        let (_, record) = self
            .users
            .remove(user_id)
            .ok_or_else(|| TenantError::UserNotFound(user_id.to_string()))?;
        self.forgetting.lock().insert(user_id.to_string());
        Ok(record)
    }

    /// Every table has let go of the dropped user's rows.
    pub fn forgotten(&self, user_id: &str) {
        self.forgetting.lock().remove(user_id);
    }

    /// Whether `user_id` was dropped and their rows are not all gone yet.
    pub fn is_forgetting(&self, user_id: &str) -> bool {
        self.forgetting.lock().contains(user_id)
    }

    /// The dropped users whose rows are not all gone yet, sorted.
    pub fn forgetting(&self) -> Vec<String> {
        self.forgetting.lock().iter().cloned().collect()
    }

    /// Whether `user_id` is registered (without copying their record).
    pub fn exists(&self, user_id: &str) -> bool {
        self.users.contains_key(user_id)
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
