//! External tables: rows that live outside the engine, read as a shared
//! table. Two kinds:
//!
//! - **Files** on the engine's machine that DataFusion reads where they lie
//!   (`CREATE [UNBOUNDED] EXTERNAL TABLE ... STORED AS ... LOCATION ...`).
//! - **Host tables**: a provider the embedding program registers
//!   ([`Engine::register_host_table`](crate::Engine::register_host_table)),
//!   its own rows offered to the engine's users.
//!
//! The rows are the provider's to read: the table hands every scan and
//! insert to DataFusion's provider (a listing table, made by DataFusion's own
//! table factory for the statement) or to the host's, so formats, options,
//! partition columns, orderings and `EXPLAIN` read as in DataFusion. What is
//! ours is who may: the table is guarded like any shared table
//! (`ACCESS_LEVEL`; files are `PRIVATE` unless their `OPTIONS` say
//! `'access_level' 'public'` or `'restricted'`, since server files are
//! administrators' until one says otherwise), and file locations must lie in
//! the engine's server file directories, checked when the table is created
//! and again whenever it is opened.
//!
//! Durable engines log a file table's statement (with the schema it had).
//! On reopen the table is back at once, from the log alone; DataFusion's
//! provider is made again when a statement first uses the table, which
//! lists the files then, and a location no longer allowed, or files whose
//! schema changed, fail that statement with the reason instead of keeping
//! the engine from opening. Host tables are not logged: the host registers
//! them again after each open, so nothing logged may depend on one (DROP,
//! REPLACE and views over them are refused, and grants, as they are
//! RESTRICTED tables' only).

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{Constraints, Statistics};
use datafusion::datasource::TableType as DataFusionTableType;
use datafusion::error::Result as DFResult;
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::{CreateExternalTable, Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use tenantfusion_core::{
    Access, AccessLevel, BaseTableProvider, ChangeListener, Result, TableId, TableProviderCore,
    TableType, TenantError, UserContext, UserId, WatchGuard,
};
use tenantfusion_tables::{PartitionPolicy, SharedAccess};
use tokio::sync::OnceCell;

use crate::server_files::ServerFiles;

/// The `OPTIONS` key that sets an external table's access level; taken out
/// before DataFusion reads the options.
const ACCESS_LEVEL_OPTION: &str = "access_level";

/// An external table; see the module docs.
pub(crate) struct ExternalTable {
    core: TableProviderCore,
    access: SharedAccess,
    rows: Rows,
}

/// Where an external table's rows are.
enum Rows {
    Files {
        /// DataFusion's plan of the statement, without our own option.
        command: Box<CreateExternalTable>,
        server_files: Arc<ServerFiles>,
        /// DataFusion's provider for the files, once made.
        files: OnceCell<Arc<dyn TableProvider>>,
    },
    Host(Arc<dyn TableProvider>),
}

impl fmt::Debug for ExternalTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = f.debug_struct("ExternalTable");
        out.field("table", &self.core.table_id);
        match &self.rows {
            Rows::Files { command, .. } => out.field("locations", &command.locations),
            Rows::Host(_) => out.field("rows", &"the host's"),
        };
        out.finish_non_exhaustive()
    }
}

/// The access level a statement's `OPTIONS` ask for, and the statement
/// without that option (what DataFusion is given).
pub(crate) fn split_access_level(
    command: &CreateExternalTable,
) -> Result<(CreateExternalTable, AccessLevel)> {
    let mut command = command.clone();
    let key = command
        .options
        .keys()
        // DataFusion files options without a prefix under `format.`.
        .find(|k| {
            let k = k.to_ascii_lowercase();
            k.strip_prefix("format.").unwrap_or(&k) == ACCESS_LEVEL_OPTION
        })
        .cloned();
    let level = match key.and_then(|key| command.options.remove(&key)) {
        Some(level) => level.parse()?,
        None => AccessLevel::Private,
    };
    Ok((command, level))
}

impl ExternalTable {
    /// The table `command` creates, its files opened now (so a bad location,
    /// format or option fails the statement).
    pub(crate) async fn create(
        id: TableId,
        level: AccessLevel,
        command: CreateExternalTable,
        server_files: Arc<ServerFiles>,
        state: &SessionState,
    ) -> Result<Self> {
        let files = open_files(&command, &server_files, state).await?;
        let core = TableProviderCore::new(id, TableType::Shared, files.schema());
        Ok(Self {
            core,
            access: SharedAccess::new(level),
            rows: Rows::Files {
                command: Box::new(command),
                server_files,
                files: OnceCell::new_with(Some(files)),
            },
        })
    }

    /// The host's `provider` as table `id`, read at `level` (PUBLIC or
    /// PRIVATE: grants would be logged, and a host table is not).
    pub(crate) fn host(
        id: TableId,
        level: AccessLevel,
        provider: Arc<dyn TableProvider>,
    ) -> Result<Self> {
        if level == AccessLevel::Restricted {
            return Err(TenantError::InvalidArgument(format!(
                "host table '{id}' may be PUBLIC or PRIVATE: grants are logged, a host \
                 table is registered anew after each open"
            )));
        }
        Ok(Self {
            core: TableProviderCore::new(id, TableType::Shared, provider.schema()),
            access: SharedAccess::new(level),
            rows: Rows::Host(provider),
        })
    }

    /// Whether the rows are the host's (the table is not logged).
    pub(crate) fn is_host(&self) -> bool {
        matches!(self.rows, Rows::Host(_))
    }

    /// The table as logged: its files are opened when first used.
    pub(crate) fn reopen(
        id: TableId,
        level: AccessLevel,
        schema: SchemaRef,
        command: CreateExternalTable,
        server_files: Arc<ServerFiles>,
    ) -> Self {
        Self {
            core: TableProviderCore::new(id, TableType::Shared, schema),
            access: SharedAccess::new(level),
            rows: Rows::Files {
                command: Box::new(command),
                server_files,
                files: OnceCell::new(),
            },
        }
    }

    /// The table's access level and grants.
    pub(crate) fn shared_access(&self) -> &SharedAccess {
        &self.access
    }

    /// The provider of the rows if it is made.
    fn opened(&self) -> Option<&Arc<dyn TableProvider>> {
        match &self.rows {
            Rows::Files { files, .. } => files.get(),
            Rows::Host(provider) => Some(provider),
        }
    }

    /// The provider of the rows, now: the host's, or DataFusion's for the
    /// files, made now if not yet.
    pub(crate) async fn rows(&self, state: &dyn Session) -> Result<&Arc<dyn TableProvider>> {
        let (command, server_files, files) = match &self.rows {
            Rows::Host(provider) => return Ok(provider),
            Rows::Files {
                command,
                server_files,
                files,
            } => (command, server_files, files),
        };
        files
            .get_or_try_init(|| async {
                let state = state
                    .as_any()
                    .downcast_ref::<SessionState>()
                    .ok_or_else(|| {
                        TenantError::Internal(
                            "external tables are planned by a SessionState".into(),
                        )
                    })?;
                let files = open_files(command, server_files, state).await?;
                if files.schema() != self.core.schema {
                    return Err(TenantError::SchemaMismatch(format!(
                        "the files of external table '{}' no longer have the columns it was \
                         created with: {:?} now, {:?} then",
                        self.core.table_id,
                        files.schema().fields(),
                        self.core.schema.fields()
                    )));
                }
                Ok(files)
            })
            .await
    }
}

/// Whether `provider` is a host table (see the module docs).
pub(crate) fn is_host_table(provider: &Arc<dyn BaseTableProvider>) -> bool {
    (provider.as_ref() as &dyn TableProvider)
        .downcast_ref::<ExternalTable>()
        .is_some_and(ExternalTable::is_host)
}

/// DataFusion's provider for the files of `command`, once every location
/// is known to be allowed.
async fn open_files(
    command: &CreateExternalTable,
    server_files: &ServerFiles,
    state: &SessionState,
) -> Result<Arc<dyn TableProvider>> {
    for location in &command.locations {
        server_files.confine(location, "CREATE EXTERNAL TABLE")?;
    }
    let format = command.file_type.to_ascii_uppercase();
    let factory = state.table_factories().get(&format).ok_or_else(|| {
        TenantError::NotSupported(format!(
            "external tables STORED AS {} (offered: {})",
            command.file_type,
            offered_formats(state)
        ))
    })?;
    Ok(factory.create(state, command).await?)
}

fn offered_formats(state: &SessionState) -> String {
    let mut formats: Vec<_> = state.table_factories().keys().cloned().collect();
    formats.sort();
    formats.join(", ")
}

#[async_trait]
impl TableProvider for ExternalTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.core.schema)
    }

    fn constraints(&self) -> Option<&Constraints> {
        match &self.rows {
            Rows::Files { command, .. } => Some(&command.constraints),
            Rows::Host(provider) => provider.constraints(),
        }
    }

    fn table_type(&self) -> DataFusionTableType {
        DataFusionTableType::Base
    }

    fn get_column_default(&self, column: &str) -> Option<&Expr> {
        match &self.rows {
            Rows::Files { command, .. } => command.column_defaults.get(column),
            Rows::Host(provider) => provider.get_column_default(column),
        }
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DFResult<Vec<TableProviderFilterPushDown>> {
        // Statements open the files before they are planned (see
        // `TenantSession::open_external`); until then nothing is pushed.
        match self.opened() {
            Some(rows) => rows.supports_filters_pushdown(filters),
            None => Ok(vec![
                TableProviderFilterPushDown::Unsupported;
                filters.len()
            ]),
        }
    }

    fn statistics(&self) -> Option<Statistics> {
        self.opened().and_then(|rows| rows.statistics())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DFResult<Arc<dyn ExecutionPlan>> {
        let rows = self.rows(state).await?;
        rows.scan(state, projection, filters, limit).await
    }

    async fn insert_into(
        &self,
        state: &dyn Session,
        input: Arc<dyn ExecutionPlan>,
        op: InsertOp,
    ) -> DFResult<Arc<dyn ExecutionPlan>> {
        let rows = self.rows(state).await?;
        rows.insert_into(state, input, op).await
    }
}

#[async_trait]
impl BaseTableProvider for ExternalTable {
    fn core(&self) -> &TableProviderCore {
        &self.core
    }

    fn authorize(&self, user: &UserContext, access: Access) -> Result<(), TenantError> {
        let id = &self.core.table_id;
        match access {
            Access::Select => self.access.read_partition(id, user).map(|_| ()),
            write => self.access.write_partition(id, user, write).map(|_| ()),
        }
    }

    async fn forget_user(&self, user: &UserId) -> Result<(), TenantError> {
        PartitionPolicy::forget_user(&self.access, user);
        Ok(())
    }

    async fn scan_user(
        &self,
        user: &UserContext,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DFResult<Arc<dyn ExecutionPlan>> {
        self.authorize(user, Access::Select)?;
        self.scan(state, projection, filters, limit).await
    }

    async fn insert_user(
        &self,
        user: &UserContext,
        state: &dyn Session,
        input: Arc<dyn ExecutionPlan>,
        op: InsertOp,
    ) -> DFResult<Arc<dyn ExecutionPlan>> {
        self.authorize(user, Access::Insert)?;
        self.insert_into(state, input, op).await
    }

    async fn watch_user(
        &self,
        _user: &UserContext,
        _topics: Option<Vec<Arc<str>>>,
        _listener: Arc<dyn ChangeListener>,
    ) -> Result<WatchGuard, TenantError> {
        Err(TenantError::NotSupported(format!(
            "SUBSCRIBE to external table '{}': its rows change without the engine",
            self.core.table_id
        )))
    }
}
