//! Which partition a caller reads and writes, and whether they may at all.

use std::fmt::Debug;

use dashmap::DashMap;
use tenantfusion_core::{AccessLevel, Role, TableId, TableType, TenantError, UserContext, UserId};

use crate::store::PartitionKey;

/// Maps a caller to the partition they may read or write, per call.
pub trait PartitionPolicy: Debug + Send + Sync + 'static {
    /// The kind of table this policy serves.
    fn table_type(&self) -> TableType;

    /// The partition `user` reads, or why they may not.
    fn read_partition(
        &self,
        table: &TableId,
        user: &UserContext,
    ) -> Result<PartitionKey, TenantError>;

    /// The partition `user` writes, or why they may not.
    fn write_partition(
        &self,
        table: &TableId,
        user: &UserContext,
    ) -> Result<PartitionKey, TenantError>;

    /// The partition holding only `user`'s rows, if the table has one.
    fn owned_partition(&self, user: &UserId) -> Option<PartitionKey>;

    /// Drops whatever access state the policy keeps for `user`.
    fn forget_user(&self, user: &UserId);

    /// The column whose value names a row's partition, for tables stored
    /// per topic: a reader granted the table reads every topic partition,
    /// or the ones its filters pin.
    fn topic_column(&self) -> Option<&str> {
        None
    }

    /// The access level and grants, for tables guarded like shared tables.
    fn shared_access(&self) -> Option<&SharedAccess> {
        None
    }
}

/// User tables: every caller reads and writes their own partition only.
#[derive(Debug, Default, Clone, Copy)]
pub struct UserPartitions;

impl UserPartitions {
    fn own_partition(table: &TableId, user: &UserContext) -> Result<PartitionKey, TenantError> {
        if user.role() == Role::Anonymous {
            return Err(TenantError::PermissionDenied(format!(
                "anonymous callers have no rows in user table '{table}'"
            )));
        }
        Ok(PartitionKey::User(user.user_id().clone()))
    }
}

impl PartitionPolicy for UserPartitions {
    fn table_type(&self) -> TableType {
        TableType::User
    }

    fn read_partition(
        &self,
        table: &TableId,
        user: &UserContext,
    ) -> Result<PartitionKey, TenantError> {
        Self::own_partition(table, user)
    }

    fn write_partition(
        &self,
        table: &TableId,
        user: &UserContext,
    ) -> Result<PartitionKey, TenantError> {
        Self::own_partition(table, user)
    }

    fn owned_partition(&self, user: &UserId) -> Option<PartitionKey> {
        Some(PartitionKey::User(user.clone()))
    }

    fn forget_user(&self, _user: &UserId) {}
}

/// A privilege that can be granted on a restricted shared table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Privilege {
    /// Read rows.
    Select,
    /// Insert rows.
    Insert,
}

impl Privilege {
    /// The privilege's SQL spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Privilege::Select => "SELECT",
            Privilege::Insert => "INSERT",
        }
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Grants {
    select: bool,
    insert: bool,
}

/// Shared tables: one partition, guarded by an access level and, for
/// `RESTRICTED` tables, explicit grants.
#[derive(Debug)]
pub struct SharedAccess {
    level: AccessLevel,
    grants: DashMap<UserId, Grants>,
}

impl SharedAccess {
    /// Access at `level`, with no grants yet.
    pub fn new(level: AccessLevel) -> Self {
        Self {
            level,
            grants: DashMap::new(),
        }
    }

    /// The table's access level.
    pub fn level(&self) -> AccessLevel {
        self.level
    }

    /// Grants `privilege` to `user` (meaningful for `RESTRICTED` tables only).
    pub fn grant(&self, user: UserId, privilege: Privilege) {
        let mut grants = self.grants.entry(user).or_default();
        match privilege {
            Privilege::Select => grants.select = true,
            Privilege::Insert => grants.insert = true,
        }
    }

    /// Takes `privilege` back from `user`.
    pub fn revoke(&self, user: &UserId, privilege: Privilege) {
        if let Some(mut grants) = self.grants.get_mut(user) {
            match privilege {
                Privilege::Select => grants.select = false,
                Privilege::Insert => grants.insert = false,
            }
        }
        self.grants.remove_if(user, |_, g| !g.select && !g.insert);
    }

    /// Whether `user` holds `privilege` explicitly.
    pub fn is_granted(&self, user: &UserId, privilege: Privilege) -> bool {
        self.grants.get(user).is_some_and(|g| match privilege {
            Privilege::Select => g.select,
            Privilege::Insert => g.insert,
        })
    }

    /// Whether `user` may use the table for `privilege`.
    pub fn allows(&self, user: &UserContext, privilege: Privilege) -> bool {
        let role = user.role();
        match (self.level, privilege) {
            (AccessLevel::Public, Privilege::Select) => true,
            (AccessLevel::Public, Privilege::Insert) | (AccessLevel::Private, _) => {
                role.is_trusted()
            }
            (AccessLevel::Restricted, _) => {
                role.is_admin() || self.is_granted(user.user_id(), privilege)
            }
        }
    }

    fn check(
        &self,
        table: &TableId,
        user: &UserContext,
        privilege: Privilege,
    ) -> Result<PartitionKey, TenantError> {
        if self.allows(user, privilege) {
            Ok(PartitionKey::Shared)
        } else {
            Err(TenantError::PermissionDenied(format!(
                "user '{}' (role {}) may not {} {} shared table '{table}'",
                user.user_id(),
                user.role(),
                privilege.as_str(),
                match privilege {
                    Privilege::Select => "from",
                    Privilege::Insert => "into",
                },
            )))
        }
    }
}

impl PartitionPolicy for SharedAccess {
    fn table_type(&self) -> TableType {
        TableType::Shared
    }

    fn read_partition(
        &self,
        table: &TableId,
        user: &UserContext,
    ) -> Result<PartitionKey, TenantError> {
        self.check(table, user, Privilege::Select)
    }

    fn write_partition(
        &self,
        table: &TableId,
        user: &UserContext,
    ) -> Result<PartitionKey, TenantError> {
        self.check(table, user, Privilege::Insert)
    }

    fn owned_partition(&self, _user: &UserId) -> Option<PartitionKey> {
        None
    }

    fn forget_user(&self, user: &UserId) {
        self.grants.remove(user);
    }

    fn shared_access(&self) -> Option<&SharedAccess> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(name: &str, role: Role) -> UserContext {
        UserContext::new(name, role)
    }

    #[test]
    fn access_levels_by_role() {
        let t = TableId::new("app", "t");
        let public = SharedAccess::new(AccessLevel::Public);
        assert!(
            public
                .read_partition(&t, &who("a", Role::Anonymous))
                .is_ok()
        );
        assert!(public.write_partition(&t, &who("a", Role::User)).is_err());
        assert!(public.write_partition(&t, &who("s", Role::Service)).is_ok());

        let private = SharedAccess::new(AccessLevel::Private);
        assert!(private.read_partition(&t, &who("a", Role::User)).is_err());
        assert!(private.read_partition(&t, &who("s", Role::Service)).is_ok());

        let restricted = SharedAccess::new(AccessLevel::Restricted);
        let alice = who("alice", Role::User);
        assert!(restricted.read_partition(&t, &alice).is_err());
        assert!(
            restricted
                .read_partition(&t, &who("s", Role::Service))
                .is_err()
        );
        assert!(restricted.read_partition(&t, &who("d", Role::Dba)).is_ok());
        restricted.grant(UserId::new("alice"), Privilege::Select);
        assert!(restricted.read_partition(&t, &alice).is_ok());
        assert!(restricted.write_partition(&t, &alice).is_err());
        restricted.revoke(&UserId::new("alice"), Privilege::Select);
        let err = restricted.read_partition(&t, &alice).unwrap_err();
        assert_eq!(err.code(), "PERMISSION_DENIED");
    }

    #[test]
    fn user_tables_partition_by_caller() {
        let t = TableId::new("app", "t");
        let p = UserPartitions;
        assert_eq!(
            p.read_partition(&t, &who("alice", Role::Dba)).unwrap(),
            PartitionKey::User(UserId::new("alice"))
        );
        assert!(p.write_partition(&t, &who("x", Role::Anonymous)).is_err());
    }
}
