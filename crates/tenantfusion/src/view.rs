//! Views: stored queries that run as whoever reads them (PostgreSQL's
//! `security_invoker`).
//!
//! A view is its `CREATE VIEW` statement, planned once (when created, and
//! again when a durable engine reopens), so its plan holds the engine's own
//! providers of the tables it reads. DataFusion puts that plan in place of
//! the view in every query over it, and those providers find the caller in
//! the task when they run, so a view over a user table gives every reader
//! their own rows. Who may read it is decided the same way: a reader needs
//! `SELECT` on every table the view reads (`authorize`), and the statement
//! over the view is checked as a whole as well (DataFusion writes a view's
//! plan into every plan that reads it, views inside views included, so the
//! check sees the tables themselves). A table a view reads cannot
//! be dropped while the view exists (PostgreSQL's `RESTRICT`); one replaced
//! since (`CREATE OR REPLACE TABLE`) makes the view fail with that reason
//! until it is created again, never read the old rows.
//!
//! Views are created and dropped by roles `dba` and `system`, in any
//! namespace but the engine's own. They are read-only.

use std::borrow::Cow;
use std::fmt;
use std::sync::{Arc, Weak};

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::streaming::StreamingTable;
use datafusion::catalog::view::ViewTable;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::TableType as DataFusionTableType;
use datafusion::error::Result as DFResult;
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::physical_plan::ExecutionPlan;
use tenantfusion_tables::{
    BoundCallerExec, PartitionedTable, SharedAccess, StreamPolicy, UserPartitions,
};

use crate::catalog::{is_reserved_namespace, resolve_table_name};
use crate::config::EngineConfig;
use crate::external_table::ExternalTable;
use tenantfusion_core::{
    Access, BaseTableProvider, ChangeListener, Result, SchemaCache, TableId, TableProviderCore,
    TableType, TenantError, UserContext, UserId, WatchGuard,
};

/// A view; see the module docs.
pub(crate) struct View {
    core: TableProviderCore,
    /// DataFusion's view over the plan: what plans and scans it.
    view: ViewTable,
    /// The engine's tables the plan reads (views among them), each as it
    /// was when the view was planned.
    reads: Vec<Arc<dyn BaseTableProvider>>,
    /// Where the view is: weak, as the cache holds the view.
    cache: Weak<SchemaCache>,
}

impl fmt::Debug for View {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("View")
            .field("view", &self.core.table_id)
            .field("definition", &self.view.definition())
            .finish_non_exhaustive()
    }
}

impl View {
    /// The view `definition` made, planned as `plan`, reading `reads`.
    pub(crate) fn new(
        id: TableId,
        plan: LogicalPlan,
        definition: String,
        reads: Vec<Arc<dyn BaseTableProvider>>,
        cache: &Arc<SchemaCache>,
    ) -> Self {
        let view = ViewTable::new(plan, Some(definition));
        let core = TableProviderCore::new(id, TableType::View, view.schema());
        Self {
            core,
            view,
            reads,
            cache: Arc::downgrade(cache),
        }
    }

    /// The tables this view reads itself (views among them).
    pub(crate) fn tables_read(&self) -> &[Arc<dyn BaseTableProvider>] {
        &self.reads
    }

    /// Whether this view reads `table` itself (not through another view).
    pub(crate) fn reads(&self, table: &Arc<dyn BaseTableProvider>) -> bool {
        self.reads.iter().any(|t| Arc::ptr_eq(t, table))
    }

    /// Each table it reads, if it is still the one its name means.
    fn check_current(&self) -> Result<()> {
        let cache = self.cache.upgrade().ok_or_else(|| {
            TenantError::Internal(format!("view '{}' outlived its engine", self.core.table_id))
        })?;
        for table in &self.reads {
            if !cache.is_current(table) {
                let id = table.table_id();
                return Err(TenantError::Plan(format!(
                    "view '{}' reads '{id}', which was replaced since the view was made; \
                     CREATE OR REPLACE VIEW to read the table there now",
                    self.core.table_id
                )));
            }
        }
        Ok(())
    }
}

#[async_trait]
impl TableProvider for View {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.core.schema)
    }

    fn table_type(&self) -> DataFusionTableType {
        DataFusionTableType::View
    }

    fn get_table_definition(&self) -> Option<&str> {
        self.view.get_table_definition()
    }

    fn get_logical_plan(&'_ self) -> Option<Cow<'_, LogicalPlan>> {
        self.view.get_logical_plan()
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DFResult<Arc<dyn ExecutionPlan>> {
        self.check_current()?;
        self.view.scan(state, projection, filters, limit).await
    }
}

#[async_trait]
impl BaseTableProvider for View {
    fn core(&self) -> &TableProviderCore {
        &self.core
    }

    /// `SELECT` on every table the view reads; nothing else.
    fn authorize(&self, user: &UserContext, access: Access) -> Result<(), TenantError> {
        if access != Access::Select {
            return Err(TenantError::PermissionDenied(format!(
                "view '{}' is read-only",
                self.core.table_id
            )));
        }
        self.check_current()?;
        for table in &self.reads {
            table.authorize(user, Access::Select)?;
        }
        Ok(())
    }

    async fn forget_user(&self, _user: &UserId) -> Result<(), TenantError> {
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
        // The view's plan is DataFusion's, its scans reading the caller from
        // the task: bind the caller around the whole of it.
        let plan = self.scan(state, projection, filters, limit).await?;
        Ok(Arc::new(BoundCallerExec::new(plan, Arc::new(user.clone()))))
    }

    async fn insert_user(
        &self,
        user: &UserContext,
        _state: &dyn Session,
        _input: Arc<dyn ExecutionPlan>,
        _op: InsertOp,
    ) -> DFResult<Arc<dyn ExecutionPlan>> {
        Err(self
            .authorize(user, Access::Insert)
            .err()
            .unwrap_or_else(|| TenantError::Internal("a view authorized an insert".into())))?
    }

    async fn watch_user(
        &self,
        _user: &UserContext,
        _topics: Option<Vec<Arc<str>>>,
        _listener: Arc<dyn ChangeListener>,
    ) -> Result<WatchGuard, TenantError> {
        Err(TenantError::NotSupported(format!(
            "SUBSCRIBE to view '{}': subscribe to the tables it reads",
            self.core.table_id
        )))
    }
}

/// The engine's tables `plan` reads (subqueries included, views as
/// themselves), each the provider its name means now; `system` and
/// `information_schema` tables and what table functions make are left
/// out (they show each caller their own). A scan of a provider its name no
/// longer means fails.
pub(crate) fn tables_read(
    plan: &LogicalPlan,
    cache: &SchemaCache,
    config: &EngineConfig,
) -> Result<Vec<Arc<dyn BaseTableProvider>>> {
    use datafusion::common::tree_node::TreeNodeRecursion;
    use datafusion::datasource::source_as_provider;

    let mut found: Vec<Arc<dyn BaseTableProvider>> = Vec::new();
    let mut failed = None;
    plan.apply_with_subqueries(|node| {
        let LogicalPlan::TableScan(scan) = node else {
            return Ok(TreeNodeRecursion::Continue);
        };
        let provider = source_as_provider(&scan.source)?;
        let (namespace, table) = resolve_table_name(
            &scan.table_name,
            &config.catalog_name,
            &config.default_namespace,
        )?;
        if is_reserved_namespace(namespace) {
            // System tables and the information schema: rows per caller.
            return Ok(TreeNodeRecursion::Continue);
        }
        if let Some(current) = cache.get_provider(namespace, table)
            && std::ptr::addr_eq(Arc::as_ptr(&current), Arc::as_ptr(&provider))
        {
            if !found.iter().any(|t| Arc::ptr_eq(t, &current)) {
                found.push(current);
            }
        } else if is_engine_table(&provider) {
            failed = Some(TenantError::TableNotFound(format!(
                "{} (replaced while the view was planned; run it again)",
                scan.table_name
            )));
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    failed.map_or(Ok(found), Err)
}

/// Whether `provider` is one of the engine's own tables: a plan holding one
/// under a name the catalog no longer has (a table since dropped) must fail
/// closed even when the name is also a table function's.
pub(crate) fn is_engine_table(provider: &Arc<dyn TableProvider>) -> bool {
    provider.is::<PartitionedTable<UserPartitions>>()
        || provider.is::<PartitionedTable<SharedAccess>>()
        || provider.is::<PartitionedTable<StreamPolicy>>()
        || provider.is::<StreamingTable>()
        || provider.is::<ExternalTable>()
        || provider.is::<View>()
}
