//! What every table provider shares: its definition and the per-call user API.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::error::Result as DFResult;
use datafusion::logical_expr::Expr;
use datafusion::logical_expr::dml::InsertOp;
use datafusion::physical_plan::ExecutionPlan;

use crate::change::{ChangeListener, WatchGuard};
use crate::error::TenantError;
use crate::ids::{NamespaceId, StorageId, TableId, TableName, UserId};
use crate::user::UserContext;

/// The three kinds of tenantfusion tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TableType {
    /// One definition, rows partitioned by owner.
    User,
    /// One partition for everybody, guarded by an [`AccessLevel`].
    Shared,
    /// Bounded, ephemeral rows.
    Stream,
    /// A stored query, run as whoever reads it.
    View,
}

impl TableType {
    /// The kind's SQL spelling, as shown in `system.tables`.
    pub fn as_str(self) -> &'static str {
        match self {
            TableType::User => "user",
            TableType::Shared => "shared",
            TableType::Stream => "stream",
            TableType::View => "view",
        }
    }
}

impl fmt::Display for TableType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who may use a shared table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum AccessLevel {
    /// Everyone reads; `Service`, `Dba` and `System` write.
    #[default]
    Public,
    /// Only `Service`, `Dba` and `System`.
    Private,
    /// Readers and writers granted explicitly (`Dba` and `System` always).
    Restricted,
}

impl AccessLevel {
    /// The level's SQL spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            AccessLevel::Public => "public",
            AccessLevel::Private => "private",
            AccessLevel::Restricted => "restricted",
        }
    }
}

impl fmt::Display for AccessLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AccessLevel {
    type Err = TenantError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "public" => Ok(AccessLevel::Public),
            "private" => Ok(AccessLevel::Private),
            "restricted" => Ok(AccessLevel::Restricted),
            _ => Err(TenantError::InvalidArgument(format!(
                "unknown access level '{s}' (expected PUBLIC, PRIVATE or RESTRICTED)"
            ))),
        }
    }
}

/// What a statement does to a table: the operation a plan performs, and
/// the privilege a `GRANT` gives on a `RESTRICTED` table (the same word for
/// both, as in SQL).
///
/// ```
/// use tenantfusion_core::Access;
/// assert_eq!("delete".parse::<Access>().unwrap(), Access::Delete);
/// assert_eq!(Access::Update.as_str(), "UPDATE");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    /// Read rows: SELECT, and every table a statement reads from
    /// (UPDATE and DELETE read the rows they change).
    Select,
    /// Add rows.
    Insert,
    /// Change rows.
    Update,
    /// Remove rows.
    Delete,
}

impl Access {
    /// Every kind of access, in SQL's order (what `GRANT ALL` gives).
    pub const ALL: [Access; 4] = [
        Access::Select,
        Access::Insert,
        Access::Update,
        Access::Delete,
    ];

    /// The SQL keyword.
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Select => "SELECT",
            Access::Insert => "INSERT",
            Access::Update => "UPDATE",
            Access::Delete => "DELETE",
        }
    }

    /// "SELECT from", "INSERT into", "UPDATE", "DELETE from": how an error
    /// message names the operation on a table.
    pub fn phrase(self) -> &'static str {
        match self {
            Access::Select => "SELECT from",
            Access::Insert => "INSERT into",
            Access::Update => "UPDATE",
            Access::Delete => "DELETE from",
        }
    }

    /// Whether the access changes rows.
    pub fn is_write(self) -> bool {
        self != Access::Select
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Access {
    type Err = TenantError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Access::ALL
            .into_iter()
            .find(|a| a.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                TenantError::InvalidArgument(format!(
                    "unknown privilege '{s}' (expected SELECT, INSERT, UPDATE, DELETE or ALL)"
                ))
            })
    }
}

/// The definition every provider carries, created once when the table is
/// registered and shared by every request.
#[derive(Debug, Clone)]
pub struct TableProviderCore {
    /// The table's identity.
    pub table_id: Arc<TableId>,
    /// User, shared or stream.
    pub table_type: TableType,
    /// The columns users see.
    pub schema: SchemaRef,
    /// When the table was created.
    pub created_at: DateTime<Utc>,
    /// Where its durable data lives, if anywhere.
    pub storage_id: Option<StorageId>,
}

impl TableProviderCore {
    /// A definition created now, without durable storage.
    pub fn new(table_id: TableId, table_type: TableType, schema: SchemaRef) -> Self {
        Self {
            table_id: Arc::new(table_id),
            table_type,
            schema,
            created_at: Utc::now(),
            storage_id: None,
        }
    }

    /// The table's namespace.
    pub fn namespace(&self) -> &NamespaceId {
        self.table_id.namespace_id()
    }

    /// The table's name.
    pub fn table_name(&self) -> &TableName {
        self.table_id.table_name()
    }

    /// The error for a `mutation` this table does not take.
    pub fn refuses(&self, mutation: Mutation) -> TenantError {
        TenantError::NotSupported(format!(
            "{mutation} is not supported on {} table '{}'",
            self.table_type, self.table_id
        ))
    }
}

/// What an UPDATE or DELETE does with the rows its input plan yields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutation {
    /// Each input row (the table's columns) is a row to remove.
    Delete,
    /// Each input row holds the table's columns twice: a row's current
    /// values, then the values it gets.
    Update,
}

impl Mutation {
    /// The access the mutation needs.
    pub fn access(self) -> Access {
        match self {
            Mutation::Delete => Access::Delete,
            Mutation::Update => Access::Update,
        }
    }
}

impl fmt::Display for Mutation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.access().as_str())
    }
}

/// A tenantfusion table: one instance per table, shared by all users; the
/// caller is passed to every call.
///
/// DataFusion's `TableProvider::scan` and `insert_into` cannot take a user, so
/// implementations build plans that find the caller in the executing task's
/// session config ([`UserContext::from_task`]); `scan_user` and `insert_user`
/// build the same plans bound to an explicit caller instead.
#[async_trait]
pub trait BaseTableProvider: TableProvider + Send + Sync {
    /// The table's definition.
    fn core(&self) -> &TableProviderCore;

    /// The table's identity (shared, never copied per request).
    fn table_id(&self) -> &Arc<TableId> {
        &self.core().table_id
    }

    /// Whether `user` may perform `access` on this table at all; the same
    /// decision the table's plans make again when they execute.
    fn authorize(&self, user: &UserContext, access: Access) -> Result<(), TenantError>;

    /// Removes everything this table holds for `user` (their rows, their
    /// grants), so a later user of the same name starts empty (DROP USER).
    async fn forget_user(&self, user: &UserId) -> Result<(), TenantError>;

    /// A scan of the rows `user` may see.
    async fn scan_user(
        &self,
        user: &UserContext,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DFResult<Arc<dyn ExecutionPlan>>;

    /// A plan that writes `input` as `user`.
    async fn insert_user(
        &self,
        user: &UserContext,
        state: &dyn Session,
        input: Arc<dyn ExecutionPlan>,
        op: InsertOp,
    ) -> DFResult<Arc<dyn ExecutionPlan>>;

    /// A plan applying `mutation` to the rows `input` yields, in the
    /// partition of whoever executes it. The input is a query over this
    /// table (so any `WHERE`, subqueries and joins included, has been
    /// answered by it); nothing changes until the plan runs.
    fn mutate(
        &self,
        input: Arc<dyn ExecutionPlan>,
        mutation: Mutation,
    ) -> Result<Arc<dyn ExecutionPlan>, TenantError> {
        let _ = input;
        Err(self.core().refuses(mutation))
    }

    /// Registers a live query of `user`: `listener` gets the rows `user`
    /// may read now, then every row added to them, until the guard is
    /// dropped. `topics` narrows a table stored per topic to those topics
    /// (`None`: all); other tables ignore it. Checks read access first.
    async fn watch_user(
        &self,
        user: &UserContext,
        topics: Option<Vec<Arc<str>>>,
        listener: Arc<dyn ChangeListener>,
    ) -> Result<WatchGuard, TenantError>;
}
