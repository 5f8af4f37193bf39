//! Per-request sessions: the engine's shared state plus one caller.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::common::TableReference;
use datafusion::config::ConfigField;
use datafusion::execution::FunctionRegistry;
use datafusion::execution::TaskContext;
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::{DdlStatement, LogicalPlan, Statement};
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::planner::object_name_to_table_reference;
use datafusion::sql::sqlparser::ast::{Insert, SetExpr, Statement as SqlStatement, TableObject};
use futures::future::BoxFuture;
use parking_lot::RwLock;
use tenantfusion_core::{Access, Result, TableProviderCore, TenantError, UserContext};

use crate::catalog::CATALOG_NAME;
use crate::engine::EngineInner;
use crate::query::Query;
use crate::statement::{TenantStatement, parse};
use crate::system_tables::{SYSTEM_NAMESPACE, SystemSchema};

/// One caller's handle on the engine: cheap to create (two reference-count
/// increments), cheap to clone, nothing retained after it is dropped.
///
/// Every statement runs as [`TenantSession::user`]; the identity travels as a
/// typed extension of the task's session config, which SQL cannot change.
///
/// ```
/// # tokio_test_block(async {
/// use tenantfusion::{Engine, EngineConfig, Role, UserContext};
/// let engine = Engine::new(EngineConfig::default()).unwrap();
/// let admin = engine.session(UserContext::new("admin", Role::Dba));
/// admin.sql("CREATE TABLE notes (id BIGINT, body TEXT)").await.unwrap();
/// let alice = engine.session(UserContext::new("alice", Role::User));
/// alice.sql("INSERT INTO notes VALUES (1, 'mine')").await.unwrap().collect().await.unwrap();
/// let bob = engine.session(UserContext::new("bob", Role::User));
/// let rows = bob.sql("SELECT * FROM notes").await.unwrap().collect().await.unwrap();
/// assert_eq!(rows.iter().map(|b| b.num_rows()).sum::<usize>(), 0);
/// # });
/// # fn tokio_test_block(f: impl std::future::Future<Output = ()>) {
/// #     tokio::runtime::Runtime::new().unwrap().block_on(f)
/// # }
/// ```
#[derive(Debug)]
pub struct TenantSession {
    pub(crate) engine: Arc<EngineInner>,
    pub(crate) user: Arc<UserContext>,
    /// This session's own planning state, made on its first `SET`; until
    /// then the engine's shared state is used and nothing is copied.
    pub(crate) settings: RwLock<Option<Arc<SessionState>>>,
}

impl Clone for TenantSession {
    /// A clone starts with the settings the original has now.
    fn clone(&self) -> Self {
        Self {
            engine: Arc::clone(&self.engine),
            user: Arc::clone(&self.user),
            settings: RwLock::new(self.settings.read().clone()),
        }
    }
}

impl TenantSession {
    /// The caller every statement of this session runs as.
    pub fn user(&self) -> &UserContext {
        &self.user
    }

    /// Parses, checks and plans one SQL statement. DDL/DCL runs now; queries
    /// and DML run when the returned [`Query`] is collected or streamed.
    pub async fn sql(&self, sql: &str) -> Result<Query> {
        self.run(sql.to_string()).await
    }

    pub(crate) fn new(engine: Arc<EngineInner>, user: UserContext) -> Self {
        Self {
            engine,
            user: Arc::new(user),
            settings: RwLock::new(None),
        }
    }

    /// A copy of the state with this session's settings: its own once it
    /// has run a `SET`, the engine's until then.
    fn copy_state(&self, own: Option<&SessionState>) -> SessionState {
        own.unwrap_or(&self.engine.state).clone()
    }

    /// The state one statement is planned with: the session's settings, and
    /// the statement's start time (what `now()` folds to). Copying it is what
    /// DataFusion's own `SessionContext::sql` does per statement; statements
    /// that plan nothing (users, grants, namespaces) do not pay for it.
    fn planning_state(&self) -> SessionState {
        let mut state = self.copy_state(self.settings.read().as_deref());
        state.mark_start_execution();
        state
    }

    // Boxed: `EXECUTE AS USER` runs its inner statement through here again.
    fn run(&self, sql: String) -> BoxFuture<'_, Result<Query>> {
        Box::pin(async move {
            match parse(&sql)? {
                TenantStatement::Sql(statement) => {
                    self.run_sql(statement, &self.planning_state()).await
                }
                TenantStatement::CreateTable {
                    kind,
                    options,
                    statement,
                } => {
                    self.check_references(&statement)?;
                    let state = self.planning_state();
                    let plan = state.statement_to_plan(statement).await?;
                    match plan {
                        LogicalPlan::Ddl(DdlStatement::CreateMemoryTable(create)) => {
                            self.create_table(kind, &options, &create, &state).await
                        }
                        other => Err(TenantError::Internal(format!(
                            "CREATE TABLE planned as {}",
                            other.display()
                        ))),
                    }
                }
                TenantStatement::CreateNamespace {
                    name,
                    if_not_exists,
                } => self.create_namespace(&name, if_not_exists),
                TenantStatement::DropNamespace { name, if_exists } => {
                    self.drop_namespace(&name, if_exists)
                }
                TenantStatement::CreateUser {
                    name,
                    role,
                    if_not_exists,
                } => self.create_user(&name, role, if_not_exists),
                TenantStatement::DropUser { name, if_exists } => {
                    self.drop_user(&name, if_exists).await
                }
                TenantStatement::Grant {
                    privileges,
                    table,
                    user,
                } => self.grant(&privileges, table, &user, true),
                TenantStatement::Revoke {
                    privileges,
                    table,
                    user,
                } => self.grant(&privileges, table, &user, false),
                TenantStatement::ExecuteAs { user, sql } => {
                    let target = self.impersonate(&user)?;
                    target.run(sql).await
                }
            }
        })
    }

    async fn run_sql(&self, statement: DFStatement, state: &SessionState) -> Result<Query> {
        self.check_references(&statement)?;
        let insert_into = find_insert(&statement).map(|i| i.table.to_string());
        self.plan_sql(statement, state)
            .await
            .map_err(|err| match &insert_into {
                Some(table) => TenantError::from_insert(table, err),
                None => TenantError::from_datafusion(err),
            })?
    }

    /// Plans a statement; DDL runs here, so the outer result is planning
    /// (DataFusion errors), the inner one running DDL.
    async fn plan_sql(
        &self,
        statement: DFStatement,
        state: &SessionState,
    ) -> datafusion::error::Result<Result<Query>> {
        let plan = state.statement_to_plan(statement).await?;
        Ok(match &plan {
            LogicalPlan::Ddl(ddl) => self.run_ddl(ddl, state).await,
            LogicalPlan::Statement(Statement::SetVariable(set)) => {
                self.set_variable(&set.variable, Some(&set.value))
            }
            LogicalPlan::Statement(Statement::ResetVariable(reset)) => {
                self.set_variable(&reset.variable, None)
            }
            LogicalPlan::Statement(s) => Err(TenantError::NotSupported(format!(
                "{} statements are not supported",
                s.name()
            ))),
            LogicalPlan::Copy(_) => Err(TenantError::NotSupported(
                "COPY writes files on the server and is not available to tenants".into(),
            )),
            _ => {
                let physical = state.create_physical_plan(&plan).await?;
                Ok(Query::planned(physical, self.task_context(state)))
            }
        })
    }

    /// A task context carrying this session's user. Function registries are
    /// left empty: physical plans hold their functions already, and copying
    /// the registries is most of what cloning a `SessionState` costs.
    pub(crate) fn task_context(&self, state: &SessionState) -> Arc<TaskContext> {
        let mut config = state.config().clone();
        config.set_extension(Arc::clone(&self.user));
        Arc::new(TaskContext::new(
            None,
            state.session_id().to_string(),
            config,
            HashMap::new(),
            HashMap::new(),
            HashMap::new(),
            HashMap::new(),
            Arc::clone(state.runtime_env()),
        ))
    }

    /// `SET`/`RESET` of a per-session setting. Settings of the catalog
    /// (e.g. `information_schema`, which would list every tenant's tables) and
    /// of the runtime (e.g. the memory limit) are engine-wide.
    fn set_variable(&self, variable: &str, value: Option<&str>) -> Result<Query> {
        let key = variable.to_ascii_lowercase();
        if key.starts_with("datafusion.catalog.") || key.starts_with("datafusion.runtime.") {
            return Err(TenantError::PermissionDenied(format!(
                "'{variable}' is an engine-wide setting and cannot be changed by a session"
            )));
        }
        let mut slot = self.settings.write();
        let mut state = self.copy_state(slot.as_deref());
        // RESET returns to the engine's value, which may differ from DataFusion's default.
        let engine_value = || {
            let entries = self.engine.state.config().options().entries();
            entries
                .into_iter()
                .find(|e| e.key == key)
                .and_then(|e| e.value)
        };
        let value = value.map(str::to_string).or_else(engine_value);
        let options = state.config_mut().options_mut();
        match value {
            Some(value) => options.set(variable, &value)?,
            None => options.reset(variable)?,
        }
        // Functions that read settings (e.g. the time zone) are rebuilt, as
        // DataFusion's SessionContext does.
        let options = Arc::clone(state.config().options());
        let updated: Vec<_> = state
            .scalar_functions()
            .values()
            .filter_map(|udf| udf.inner().with_updated_config(&options).map(Arc::new))
            .collect();
        for udf in updated {
            state.register_udf(udf)?;
        }
        *slot = Some(Arc::new(state));
        self.done()
    }

    /// Checks, before planning, that every table the statement names exists
    /// and that the caller may use it: precise codes instead of DataFusion's
    /// generic "table not found", and no plan is built for a forbidden table.
    /// Plans check again when they execute.
    fn check_references(&self, statement: &DFStatement) -> Result<()> {
        let (target, target_access) = match statement_target(statement) {
            Some((name, access)) => (Some(name), access),
            None => (None, TargetAccess::Read),
        };
        let state = &self.engine.state;
        let normalize = state
            .config()
            .options()
            .sql_parser
            .enable_ident_normalization;
        let target = target
            .map(|name| object_name_to_table_reference(name, normalize))
            .transpose()?;
        for reference in state.resolve_table_references(statement)? {
            let is_target = target.as_ref() == Some(&reference);
            if is_target && target_access == TargetAccess::Create {
                continue;
            }
            let (namespace, table) = self.resolve_name(&reference)?;
            if namespace == SYSTEM_NAMESPACE {
                if !SystemSchema::has_table(table) {
                    return Err(TenantError::TableNotFound(reference.to_string()));
                }
                if is_target {
                    return Err(TenantError::PermissionDenied(format!(
                        "system table '{reference}' is read-only"
                    )));
                }
                continue;
            }
            let provider = self.engine.lookup(namespace, table)?;
            let access = if is_target && target_access == TargetAccess::Write {
                Access::Write
            } else {
                Access::Read
            };
            provider.authorize(&self.user, access)?;
            if access == Access::Write
                && let Some(insert) = find_insert(statement)
            {
                check_insert_shape(insert, provider.core(), normalize)?;
            }
        }
        Ok(())
    }

    /// `(namespace, table)` of a reference; other catalogs do not exist here.
    pub(crate) fn resolve_name<'a>(
        &'a self,
        reference: &'a TableReference,
    ) -> Result<(&'a str, &'a str)> {
        let default = self.engine.config.default_namespace.as_str();
        match reference {
            TableReference::Bare { table } => Ok((default, table)),
            TableReference::Partial { schema, table } => Ok((schema, table)),
            TableReference::Full {
                catalog,
                schema,
                table,
            } if catalog.as_ref() == CATALOG_NAME => Ok((schema, table)),
            TableReference::Full { .. } => Err(TenantError::TableNotFound(reference.to_string())),
        }
    }
}

/// What the statement does to its target table, if it has one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TargetAccess {
    Read,
    Write,
    Create,
}

fn find_insert(statement: &DFStatement) -> Option<&Insert> {
    fn in_sql(statement: &SqlStatement) -> Option<&Insert> {
        match statement {
            SqlStatement::Insert(insert) => Some(insert),
            SqlStatement::Explain { statement, .. } => in_sql(statement),
            _ => None,
        }
    }
    match statement {
        DFStatement::Statement(s) => in_sql(s),
        DFStatement::Explain(e) => find_insert(&e.statement),
        _ => None,
    }
}

/// Column list and `VALUES` width of an INSERT against the table's columns:
/// DataFusion reports these as generic planning errors.
fn check_insert_shape(insert: &Insert, core: &TableProviderCore, normalize: bool) -> Result<()> {
    let table = &core.table_id;
    let schema = &core.schema;
    for column in &insert.columns {
        let Some(ident) = column.0.last().and_then(|part| part.as_ident()) else {
            continue;
        };
        let name = if normalize && ident.quote_style.is_none() {
            ident.value.to_lowercase()
        } else {
            ident.value.clone()
        };
        if schema.index_of(&name).is_err() {
            return Err(TenantError::SchemaMismatch(format!(
                "table '{table}' has no column '{name}'"
            )));
        }
    }
    let width = if insert.columns.is_empty() {
        schema.fields().len()
    } else {
        insert.columns.len()
    };
    if let Some(source) = &insert.source
        && let SetExpr::Values(values) = source.body.as_ref()
        && let Some(row) = values.rows.iter().find(|row| row.content.len() != width)
    {
        return Err(TenantError::SchemaMismatch(format!(
            "INSERT into '{table}' gives {} values per row where {width} are expected",
            row.content.len()
        )));
    }
    Ok(())
}

fn statement_target(
    statement: &DFStatement,
) -> Option<(datafusion::sql::sqlparser::ast::ObjectName, TargetAccess)> {
    match statement {
        DFStatement::Statement(s) => sql_target(s),
        DFStatement::Explain(e) => statement_target(&e.statement),
        _ => None,
    }
}

fn sql_target(
    statement: &SqlStatement,
) -> Option<(datafusion::sql::sqlparser::ast::ObjectName, TargetAccess)> {
    match statement {
        SqlStatement::Insert(insert) => match &insert.table {
            TableObject::TableName(name) => Some((name.clone(), TargetAccess::Write)),
            TableObject::TableFunction(_) | TableObject::TableQuery(_) => None,
        },
        SqlStatement::CreateTable(create) => Some((create.name.clone(), TargetAccess::Create)),
        SqlStatement::Explain { statement, .. } => sql_target(statement),
        _ => None,
    }
}
