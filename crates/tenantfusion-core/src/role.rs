//! Roles of principals, from least to most privileged.

use std::fmt;
use std::str::FromStr;

use crate::error::TenantError;

/// What a principal may do, independent of any single table.
///
/// ```
/// use tenantfusion_core::Role;
/// assert_eq!("dba".parse::<Role>().unwrap(), Role::Dba);
/// assert!(Role::System.is_admin());
/// assert!(!Role::Service.is_admin());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Not authenticated: may read `PUBLIC` shared tables only.
    Anonymous,
    /// An ordinary user: owns rows in user tables.
    User,
    /// A trusted service: may write `PUBLIC` and use `PRIVATE` shared tables.
    Service,
    /// A database administrator: DDL, users, grants, `EXECUTE AS USER`.
    Dba,
    /// The engine itself.
    System,
}

impl Role {
    /// The role's SQL spelling, as shown in `system.users`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Anonymous => "anonymous",
            Role::User => "user",
            Role::Service => "service",
            Role::Dba => "dba",
            Role::System => "system",
        }
    }

    /// `Dba` or `System`: may run DDL, manage users and impersonate.
    pub fn is_admin(self) -> bool {
        matches!(self, Role::Dba | Role::System)
    }

    /// `Service`, `Dba` or `System`: trusted with non-public shared data.
    pub fn is_trusted(self) -> bool {
        matches!(self, Role::Service | Role::Dba | Role::System)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = TenantError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "anonymous" => Ok(Role::Anonymous),
            "user" => Ok(Role::User),
            "service" => Ok(Role::Service),
            "dba" => Ok(Role::Dba),
            "system" => Ok(Role::System),
            _ => Err(TenantError::InvalidArgument(format!(
                "unknown role '{s}' (expected anonymous, user, service, dba or system)"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_round_trips_and_rejects_unknown() {
        for role in [
            Role::Anonymous,
            Role::User,
            Role::Service,
            Role::Dba,
            Role::System,
        ] {
            assert_eq!(role.as_str().parse::<Role>().unwrap(), role);
        }
        let err = "root".parse::<Role>().unwrap_err();
        assert_eq!(err.code(), "INVALID_ARGUMENT");
    }
}
