//! Which partition a caller reads and writes, and whether they may at all.

use std::fmt::Debug;

use dashmap::DashMap;
use tenantfusion_core::{
    Access, AccessLevel, Role, TableId, TableType, TenantError, UserContext, UserId,
};

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

    /// The partition `user` changes with `access` (INSERT, UPDATE or
    /// DELETE), or why they may not.
    fn write_partition(
        &self,
        table: &TableId,
        user: &UserContext,
        access: Access,
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
        _access: Access,
    ) -> Result<PartitionKey, TenantError> {
        Self::own_partition(table, user)
    }

    fn owned_partition(&self, user: &UserId) -> Option<PartitionKey> {
        Some(PartitionKey::User(user.clone()))
    }

    fn forget_user(&self, _user: &UserId) {}
}

/// The accesses granted to one user, one bit each.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Grants(u8);

impl Grants {
    fn bit(access: Access) -> u8 {
        1 << (access as u8)
    }

    fn has(self, access: Access) -> bool {
        self.0 & Self::bit(access) != 0
    }
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

    /// Grants `access` on the table to `user` (meaningful for `RESTRICTED`
    /// tables only).
    pub fn grant(&self, user: UserId, access: Access) {
        self.grants.entry(user).or_default().0 |= Grants::bit(access);
    }

    /// Takes `access` back from `user`.
    pub fn revoke(&self, user: &UserId, access: Access) {
        if let Some(mut grants) = self.grants.get_mut(user) {
            grants.0 &= !Grants::bit(access);
        }
        self.grants.remove_if(user, |_, g| g.0 == 0);
    }

    /// Whether `user` was granted `access` explicitly.
    pub fn is_granted(&self, user: &UserId, access: Access) -> bool {
        self.grants.get(user).is_some_and(|g| g.has(access))
    }

    /// Whether `user` may perform `access` on the table:
    ///
    /// | level      | SELECT                      | INSERT, UPDATE, DELETE      |
    /// |------------|-----------------------------|-----------------------------|
    /// | PUBLIC     | everyone                    | service, dba, system        |
    /// | PRIVATE    | service, dba, system        | service, dba, system        |
    /// | RESTRICTED | dba, system, users granted SELECT | dba, system, users granted that access |
    pub fn allows(&self, user: &UserContext, access: Access) -> bool {
        let role = user.role();
        match (self.level, access) {
            (AccessLevel::Public, Access::Select) => true,
            (AccessLevel::Public, _) | (AccessLevel::Private, _) => role.is_trusted(),
            (AccessLevel::Restricted, _) => {
                role.is_admin() || self.is_granted(user.user_id(), access)
            }
        }
    }

    fn check(
        &self,
        table: &TableId,
        user: &UserContext,
        access: Access,
    ) -> Result<PartitionKey, TenantError> {
        if self.allows(user, access) {
            Ok(PartitionKey::Shared)
        } else {
            Err(TenantError::PermissionDenied(format!(
                "user '{}' (role {}) may not {} shared table '{table}'",
                user.user_id(),
                user.role(),
                access.phrase(),
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
        self.check(table, user, Access::Select)
    }

    fn write_partition(
        &self,
        table: &TableId,
        user: &UserContext,
        access: Access,
    ) -> Result<PartitionKey, TenantError> {
        self.check(table, user, access)
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
        let insert = Access::Insert;
        assert!(
            public
                .write_partition(&t, &who("a", Role::User), insert)
                .is_err()
        );
        assert!(
            public
                .write_partition(&t, &who("s", Role::Service), insert)
                .is_ok()
        );

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
        restricted.grant(UserId::new("alice"), Access::Select);
        assert!(restricted.read_partition(&t, &alice).is_ok());
        assert!(restricted.write_partition(&t, &alice, insert).is_err());
        restricted.revoke(&UserId::new("alice"), Access::Select);
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
        assert!(
            p.write_partition(&t, &who("x", Role::Anonymous), Access::Insert)
                .is_err()
        );
    }

    #[test]
    fn restricted_grants_are_per_access() {
        let t = TableId::new("app", "t");
        let table = SharedAccess::new(AccessLevel::Restricted);
        let alice = who("alice", Role::User);
        table.grant(UserId::new("alice"), Access::Insert);
        assert!(table.write_partition(&t, &alice, Access::Insert).is_ok());
        for access in [Access::Update, Access::Delete] {
            let err = table.write_partition(&t, &alice, access).unwrap_err();
            assert_eq!(err.code(), "PERMISSION_DENIED", "{access}");
        }
        assert!(table.read_partition(&t, &alice).is_err());
        table.grant(UserId::new("alice"), Access::Delete);
        assert!(table.write_partition(&t, &alice, Access::Delete).is_ok());
        assert!(table.write_partition(&t, &alice, Access::Update).is_err());
        table.revoke(&UserId::new("alice"), Access::Insert);
        table.revoke(&UserId::new("alice"), Access::Delete);
        assert!(!table.is_granted(&UserId::new("alice"), Access::Delete));
        assert!(table.grants.is_empty());
    }
}
