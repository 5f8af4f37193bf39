//! Core types of tenantfusion: identifiers, roles, the per-request
//! [`UserContext`], the error type with stable codes, the
//! [`BaseTableProvider`] trait every table implements, and the
//! [`SchemaCache`] that holds one provider per table.
//!
//! How the crates fit together, how a statement flows and how identity
//! travels: `docs/architecture.md` in the repository.

#![deny(missing_docs)]

mod change;
mod clock;
mod error;
mod ids;
mod role;
mod schema_cache;
pub mod scram;
mod table;
mod user;

pub use change::{ChangeListener, WatchGuard};
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{Result, TenantError};
pub use ids::{NamespaceId, StorageId, TableId, TableName, UserId};
pub use role::Role;
pub use schema_cache::SchemaCache;
pub use scram::ScramVerifier;
pub use table::{Access, AccessLevel, BaseTableProvider, Mutation, TableProviderCore, TableType};
pub use user::UserContext;
