//! tenantfusion: Apache DataFusion as a multi-tenant SQL engine.
//!
//! One [`Engine`] per process holds one provider per table (in the
//! [`SchemaCache`]); every request runs in a [`TenantSession`] that carries
//! the caller's [`UserContext`]. User tables return only the caller's rows;
//! shared tables are guarded by access levels and grants.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use tenantfusion::{Engine, EngineConfig, Role, UserContext};
//!
//! let engine = Engine::new(EngineConfig::default())?;
//! let admin = engine.session(UserContext::new("admin", Role::Dba));
//! admin.sql("CREATE NAMESPACE app").await?;
//! admin.sql("CREATE USER TABLE app.notes (id BIGINT NOT NULL, body TEXT)").await?;
//!
//! let alice = engine.session(UserContext::new("alice", Role::User));
//! alice.sql("INSERT INTO app.notes VALUES (1, 'hi')").await?.collect().await?;
//! let rows = alice.sql("SELECT count(*) FROM app.notes").await?.collect().await?;
//! assert_eq!(rows[0].num_rows(), 1);
//! # Ok::<_, tenantfusion::TenantError>(())
//! # }).unwrap();
//! ```
//!
//! # Embedding in a host's DataFusion context
//! A host that owns a `SessionContext` registers the catalog with
//! [`Engine::register_in`] and attaches the caller with [`attach_user`];
//! see `examples/host_context.rs`.

#![deny(missing_docs)]

mod auto_parameters;
mod catalog;
mod catalog_changes;
mod config;
mod engine;
mod engine_state;
mod external_table;
pub mod figures;
mod generic_plan;
mod information_schema;
mod limits;
mod live_query;
mod live_sources;
mod panics;
mod pg_catalog;
mod plan_cache;
mod query;
mod salvage;
mod server_files;
mod session;
mod statement;
mod system_tables;
mod table_options;
mod users;
mod view;

use datafusion::prelude::SessionConfig;

pub use catalog::{CATALOG_NAME, TenantCatalog};
pub use config::{EngineConfig, Storage};
pub use engine::Engine;
pub use figures::describe_metrics;
pub use information_schema::INFORMATION_SCHEMA_NAMESPACE;
pub use limits::{CancelHandle, StatementLimits};
pub use live_query::{ChangeEvent, LiveQuery, MAX_QUEUE_BYTES};
pub use pg_catalog::PG_CATALOG_NAMESPACE;
pub use plan_cache::{PlanCacheConfig, PlanCacheStats};
pub use query::Query;
pub use salvage::{SalvageReport, SalvagedTable, salvage};
pub use session::PreparedStatement;
pub use session::TenantSession;
pub use system_tables::SYSTEM_NAMESPACE;
pub use tenantfusion_core::{
    Access, AccessLevel, BaseTableProvider, Clock, ManualClock, NamespaceId, Result, Role,
    SchemaCache, ScramVerifier, SystemClock, TableId, TableName, TableType, TenantError,
    UserContext, UserId,
};
pub use tenantfusion_store::Durability;
pub use users::{UserRecord, UserRegistry};

/// Attaches the caller to a DataFusion session configuration (the one
/// documented way for a host database to say who is asking). The identity
/// is a typed extension: SQL (`SET`, ...) cannot read or change it.
///
/// ```
/// use datafusion::prelude::{SessionConfig, SessionContext};
/// use tenantfusion::{attach_user, Role, UserContext};
/// let mut config = SessionConfig::new();
/// attach_user(&mut config, UserContext::new("alice", Role::User));
/// let ctx = SessionContext::new_with_config(config);
/// # let _ = ctx;
/// ```
pub fn attach_user(config: &mut SessionConfig, user: UserContext) {
    user.attach_to(config);
}
