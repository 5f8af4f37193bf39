//! Per-request sessions: the engine's shared state plus one caller.

mod ddl;
mod direct_insert;
mod mutation;
mod plan_access;
mod prepared;
mod subscribe;

pub use prepared::PreparedStatement;

use std::collections::{BTreeSet, HashMap};
use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::catalog::TableProvider;
use datafusion::common::TableReference;
use datafusion::config::ConfigField;
use datafusion::execution::FunctionRegistry;
use datafusion::execution::TaskContext;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::{DdlStatement, LogicalPlan, Statement};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::execution_plan::reset_plan_states;
use datafusion::sql::parser::{CopyToSource, Statement as DFStatement};
use datafusion::sql::planner::object_name_to_table_reference;
use datafusion::sql::sqlparser::ast::{
    FromTable, Ident, Insert, ObjectName, SetExpr, Statement as SqlStatement, TableFactor,
    TableObject, Visit, Visitor,
};
use datafusion::sql::sqlparser::dialect::dialect_from_str;
use futures::future::BoxFuture;
use parking_lot::{Mutex, RwLock};
use tenantfusion_core::{
    Access, BaseTableProvider, Result, TableProviderCore, TenantError, UserContext,
};
use tenantfusion_tables::PlannedFor;

use crate::catalog::{is_reserved_namespace, reserved_table_exists, resolve_table_name};
use crate::engine_state::EngineState;
use crate::external_table::ExternalTable;
use crate::generic_plan;
use crate::limits::StatementMemoryPool;
use crate::plan_cache::{CacheSlot, PlanKey, Tables, Verbatim, is_deterministic, is_reusable};
use crate::query::Query;
use crate::statement::{CreateTable, TenantStatement, parse_in};
use crate::view::View;
use mutation::as_mutation;
use prepared::Prepared;

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
    pub(crate) engine: Arc<EngineState>,
    pub(crate) user: Arc<UserContext>,
    /// This session's own planning state, made on its first `SET`; until
    /// then the engine's shared state is used and nothing is copied.
    pub(crate) settings: RwLock<Option<Arc<SessionSettings>>>,
    /// Statements of SQL `PREPARE`, by name; SQL `EXECUTE` runs them.
    pub(crate) prepared: Mutex<HashMap<String, Arc<Prepared>>>,
}

/// A session's own settings, made on its first `SET`.
#[derive(Debug)]
pub(crate) struct SessionSettings {
    state: SessionState,
    /// The settings that differ from the engine's, one `key=value` per line:
    /// part of every plan cache key, so plans made under other settings
    /// (e.g. another time zone) are not reused.
    key: Arc<str>,
}

impl Clone for TenantSession {
    /// A clone starts with the settings the original has now.
    fn clone(&self) -> Self {
        Self {
            engine: Arc::clone(&self.engine),
            user: Arc::clone(&self.user),
            settings: RwLock::new(self.settings.read().clone()),
            prepared: Mutex::new(self.prepared.lock().clone()),
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
        let governor = self.engine.begin(&self.user).await?;
        let query = crate::panics::guard(self.run(sql.to_string())).await?;
        Ok(query.governed(governor))
    }

    pub(crate) fn new(engine: Arc<EngineState>, user: UserContext) -> Self {
        Self {
            engine,
            user: Arc::new(user),
            settings: RwLock::new(None),
            prepared: Mutex::new(HashMap::new()),
        }
    }

    /// The state with this session's settings: its own once it has run a
    /// `SET`, the engine's until then.
    fn state_of<'a>(&'a self, own: Option<&'a SessionSettings>) -> &'a SessionState {
        own.map_or(&self.engine.state, |own| &own.state)
    }

    /// Runs `f` with this session's current state, without copying it.
    pub(crate) fn with_state<R>(&self, f: impl FnOnce(&SessionState) -> R) -> R {
        f(self.state_of(self.settings.read().as_deref()))
    }

    /// The settings part of this session's plan cache keys.
    pub(crate) fn settings_key(&self) -> Arc<str> {
        match self.settings.read().as_ref() {
            Some(own) => Arc::clone(&own.key),
            None => Arc::clone(&self.engine.default_settings),
        }
    }

    /// The state one statement is planned with: the session's settings, and
    /// the statement's start time (what `now()` folds to). Copying it is what
    /// DataFusion's own `SessionContext::sql` does per statement; statements
    /// that plan nothing (users, grants, namespaces) do not pay for it.
    pub(crate) fn planning_state(&self) -> SessionState {
        let mut state = self.state_of(self.settings.read().as_deref()).clone();
        state.mark_start_execution();
        state
    }

    /// Where a statement's plan goes, and the state to plan it in: `slot`
    /// if the plan cache admits it now (a plan for every caller, made
    /// without statistics), else nowhere, and the plan is made for this
    /// session's caller alone.
    fn admitted(&self, slot: Option<CacheSlot>) -> (Option<CacheSlot>, SessionState) {
        let slot = slot.filter(|slot| self.engine.plans.admit(slot));
        let state = self.planning_state_for(slot.is_none());
        (slot, state)
    }

    /// [`planning_state`](Self::planning_state), for a plan that is either
    /// made for this session's caller alone (`alone`: neither kept nor
    /// shared, so scans may plan with the caller's statistics, see
    /// [`PlannedFor`]) or to be kept for every caller.
    fn planning_state_for(&self, alone: bool) -> SessionState {
        let mut state = self.planning_state();
        if alone {
            state
                .config_mut()
                .set_extension(Arc::new(PlannedFor(Arc::clone(&self.user))));
        }
        state
    }

    async fn run(&self, sql: String) -> Result<Query> {
        let verbatim = PlanKey {
            settings: self.settings_key(),
            text: sql,
        };
        if let Some(query) = self.run_verbatim(&verbatim)? {
            return Ok(query);
        }
        let statement = self.parse(&verbatim.text)?;
        self.run_statement(statement, Some(verbatim)).await
    }

    /// One statement, read in this session's SQL dialect.
    pub(crate) fn parse(&self, sql: &str) -> Result<TenantStatement> {
        let name = self.with_state(|state| state.config().options().sql_parser.dialect);
        let dialect = dialect_from_str(name).ok_or_else(|| {
            TenantError::InvalidArgument(format!("unsupported SQL dialect '{name}'"))
        })?;
        parse_in(sql, dialect.as_ref())
    }

    // Boxed: `EXECUTE AS USER` runs its inner statement through here again.
    fn run_statement(
        &self,
        statement: TenantStatement,
        verbatim: Option<PlanKey>,
    ) -> BoxFuture<'_, Result<Query>> {
        Box::pin(async move {
            match statement {
                TenantStatement::Sql(statement) => self.run_sql(statement, verbatim).await,
                TenantStatement::CreateTable(CreateTable {
                    kind,
                    options,
                    statement,
                }) => {
                    let tables = self.check_references(&statement)?;
                    self.open_external(&tables).await?;
                    let state = self.planning_state_for(true);
                    let plan = state.statement_to_plan(statement).await?;
                    self.check_plan(&plan)?;
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
                TenantStatement::CreateNamespace(create) => {
                    self.create_namespace(&create.name, create.if_not_exists)
                        .await
                }
                TenantStatement::DropNamespace(drop) => {
                    self.drop_namespace(&drop.name, drop.if_exists).await
                }
                TenantStatement::CreateUser(create) => self.create_user(create).await,
                TenantStatement::AlterUser(alter) => self.alter_user(alter).await,
                TenantStatement::DropUser(drop) => self.drop_user(&drop.name, drop.if_exists).await,
                TenantStatement::Grant(grant) => {
                    self.grant(&grant.privileges, grant.table, &grant.user, !grant.revoke)
                        .await
                }
                TenantStatement::CreateSource(create) => {
                    self.create_source(&create.name, &create.kind, &create.options)
                        .await
                }
                TenantStatement::DropSource(drop) => {
                    self.drop_source(&drop.name, drop.if_exists).await
                }
                TenantStatement::AlterTopics(alter) => {
                    self.alter_topics(alter.table, alter.add, &alter.topics)
                        .await
                }
                TenantStatement::FlushTable(flush) => {
                    self.flush_table(flush.table, flush.compact).await
                }
                TenantStatement::Verify(verify) => self.verify(verify.table).await,
                TenantStatement::Subscribe(_) => Err(TenantError::NotSupported(
                    "SUBSCRIBE returns a stream of changes, not rows: call TenantSession::subscribe"
                        .into(),
                )),
                TenantStatement::ExecuteAs(execute) => {
                    let target = self.impersonate(&execute.user)?;
                    // Parsed already: no text of its own to look up.
                    target.run_statement(*execute.statement, None).await
                }
            }
        })
    }

    /// Runs a statement DataFusion plans. Queries are looked up in the plan
    /// cache first: a hit skips parsing into a plan, optimising and physical
    /// planning, and still checks the caller's access to every table.
    async fn run_sql(&self, statement: DFStatement, verbatim: Option<PlanKey>) -> Result<Query> {
        if let DFStatement::Statement(sql) = &statement {
            match sql.as_ref() {
                SqlStatement::Prepare { .. } => return self.prepare_named(statement).await,
                SqlStatement::Execute { .. } | SqlStatement::Deallocate { .. } => {
                    // EXECUTE's values are planned: a subquery among them
                    // is checked like any other before anything is planned.
                    self.check_references(&statement)?;
                    return self.run_prepared_sql(statement).await;
                }
                _ => {}
            }
        }
        let tables = self.check_references(&statement)?;
        if let Some(query) = self.direct_insert(&statement, &tables, None).await? {
            return Ok(query);
        }
        self.open_external(&tables).await?;
        // Only a query's text is remembered verbatim: a hit on it checks
        // read access alone.
        let verbatim = verbatim.filter(|_| is_query(&statement));
        if let Some(query) = self
            .run_parameterised(&statement, &tables, verbatim.clone())
            .await?
        {
            return Ok(query);
        }
        let cache = &self.engine.plans;
        let keep = cache.enabled() && is_query(&statement) && plan_may_be_kept(&tables);
        let key = keep.then(|| PlanKey {
            settings: self.settings_key(),
            text: statement.to_string(),
        });
        let verbatim = verbatim.map(|text| Verbatim { text, values: None });
        if let Some(key) = &key
            && let Some(plan) = cache.get(key, &tables, verbatim.as_ref())
        {
            return self.run_cached(plan);
        }
        let insert_into = find_insert(&statement).map(|i| i.table.to_string());
        let (to_cache, state) = self.admitted(key.map(|key| CacheSlot {
            key,
            tables,
            verbatim,
        }));
        self.plan_sql(statement, &state, to_cache)
            .await
            .map_err(|err| planning_error(insert_into.as_deref(), err))?
    }

    /// Opens the files of the external tables among `tables` (after a
    /// restart they open when first used), so that DataFusion plans them
    /// knowing what their files' provider takes on (filters, statistics).
    async fn open_external(&self, tables: &Tables) -> Result<()> {
        for table in tables {
            let table = table.as_ref() as &dyn TableProvider;
            if let Some(external) = table.downcast_ref::<ExternalTable>() {
                external.rows(&self.engine.state).await?;
            }
        }
        Ok(())
    }

    /// SQL `EXECUTE` and `DEALLOCATE`, planned with the session's state as
    /// it is: they plan nothing themselves, so no copy is made.
    async fn run_prepared_sql(&self, statement: DFStatement) -> Result<Query> {
        // The guard cannot be held across an await: keep the Arc instead.
        let settings = self.settings.read().clone();
        let state = self.state_of(settings.as_deref());
        match state.statement_to_plan(statement).await? {
            LogicalPlan::Statement(Statement::Execute(execute)) => {
                self.execute_named(&execute, state).await
            }
            LogicalPlan::Statement(Statement::Deallocate(deallocate)) => {
                self.deallocate(&deallocate.name)
            }
            other => Err(TenantError::Internal(format!(
                "EXECUTE/DEALLOCATE planned as {}",
                other.display()
            ))),
        }
    }

    /// A statement sent before with exactly this text: its cached plan, if
    /// every table it reads still has the same provider and the caller may
    /// read it (the checks `check_references` makes, without parsing).
    /// `None` sends the statement down the full path.
    fn run_verbatim(&self, verbatim: &PlanKey) -> Result<Option<Query>> {
        let cache = &self.engine.plans;
        if !cache.enabled() {
            return Ok(None);
        }
        let Some((plan, tables, values)) = cache.get_verbatim(verbatim) else {
            return Ok(None);
        };
        for table in &tables {
            if !self.engine.cache.is_current(table) {
                return Ok(None);
            }
            // Only queries are remembered verbatim: every table is only read.
            table.authorize(&self.user, Access::Select)?;
        }
        let plan = match values {
            None => reset_plan_states(plan)?,
            Some(values) => match generic_plan::bind(plan, &values) {
                Ok(Some(bound)) => bound,
                Ok(None) => return Ok(None),
                Err(err) => return Err(planning_error(None, err)),
            },
        };
        cache.record_hit();
        self.run_bound(plan, true).map(Some)
    }

    /// A fresh copy of a cached plan, ready to run as this session's user.
    /// The cached plan itself never runs, so no execution's state (a join's
    /// build side, a TopK heap, metrics) is kept in the cache.
    pub(crate) fn run_cached(&self, plan: Arc<dyn ExecutionPlan>) -> Result<Query> {
        self.run_bound(reset_plan_states(plan)?, true)
    }

    /// A plan copied for this run alone (a generic plan given its values),
    /// ready to run as this session's user; `from_cache` unless the plan
    /// was made for this run.
    pub(crate) fn run_bound(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        from_cache: bool,
    ) -> Result<Query> {
        let task = self.with_state(|state| self.task_context(state))?;
        Ok(Query::planned(plan, task, from_cache))
    }

    /// Physical planning of a logical plan, keeping a pristine copy in the
    /// plan cache when `to_cache` says where and the plan is reusable.
    pub(crate) async fn plan_physical(
        &self,
        plan: &LogicalPlan,
        state: &SessionState,
        to_cache: Option<CacheSlot>,
    ) -> datafusion::error::Result<Query> {
        let physical = state.create_physical_plan(plan).await?;
        if let Some(slot) = to_cache
            && is_deterministic(plan)
            && is_reusable(&physical)
        {
            let template = reset_plan_states(Arc::clone(&physical))?;
            self.engine.plans.insert(slot, template);
        }
        Ok(Query::planned(physical, self.task_context(state)?, false))
    }

    /// Plans a statement; DDL runs here, so the outer result is planning
    /// (DataFusion errors), the inner one running DDL.
    async fn plan_sql(
        &self,
        statement: DFStatement,
        state: &SessionState,
        to_cache: Option<CacheSlot>,
    ) -> datafusion::error::Result<Result<Query>> {
        let plan = state.statement_to_plan(statement).await?;
        if let Err(denied) = self.check_plan(&plan) {
            return Ok(Err(denied));
        }
        if let Some((dml, mutation)) = as_mutation(&plan) {
            return Ok(self.run_mutation(dml, mutation, state).await);
        }
        Ok(match &plan {
            LogicalPlan::Explain(explain) => match as_mutation(&explain.plan) {
                Some((dml, mutation)) => self.explain_mutation(dml, mutation, state).await,
                None => Ok(self.plan_physical(&plan, state, to_cache).await?),
            },
            LogicalPlan::Analyze(analyze) if as_mutation(&analyze.input).is_some() => {
                Err(TenantError::NotSupported(
                    "EXPLAIN ANALYZE of UPDATE or DELETE would change rows; use EXPLAIN".into(),
                ))
            }
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
            _ => Ok(self.plan_physical(&plan, state, to_cache).await?),
        })
    }

    /// A task context carrying this session's user and, under a
    /// per-statement memory limit, a memory pool of the statement's own
    /// (see [`StatementMemoryPool`]). Function registries are left empty:
    /// physical plans hold their functions already, and copying the
    /// registries is most of what cloning a `SessionState` costs.
    pub(crate) fn task_context(&self, state: &SessionState) -> Result<Arc<TaskContext>> {
        let mut config = state.config().clone();
        config.set_extension(Arc::clone(&self.user));
        let engine = state.runtime_env();
        let runtime = match self.engine.config.statement_limits.memory {
            Some(limit) => {
                let pool = StatementMemoryPool::new(Arc::clone(&engine.memory_pool), limit);
                RuntimeEnvBuilder::from_runtime_env(engine)
                    .with_memory_pool(Arc::new(pool))
                    .build_arc()?
            }
            None => Arc::clone(engine),
        };
        Ok(Arc::new(TaskContext::new(
            None,
            state.session_id().to_string(),
            config,
            HashMap::new(),
            HashMap::new(),
            HashMap::new(),
            HashMap::new(),
            runtime,
        )))
    }

    /// `SET`/`RESET` of a per-session setting; see [`is_engine_wide`] for
    /// those a session cannot change.
    fn set_variable(&self, variable: &str, value: Option<&str>) -> Result<Query> {
        let key = variable.to_ascii_lowercase();
        if key == INFORMATION_SCHEMA_SETTING {
            // The engine's own information schema, per caller, is always
            // there; DataFusion's (every tenant's tables) never is. The
            // value is checked and changes nothing.
            if let Some(value) = value {
                value.parse::<bool>().map_err(|_| {
                    TenantError::InvalidArgument(format!(
                        "'{variable}' takes true or false, not '{value}'"
                    ))
                })?;
            }
            return self.done();
        }
        if is_engine_wide(&key) {
            return Err(TenantError::PermissionDenied(format!(
                "'{variable}' is an engine-wide setting and cannot be changed by a session"
            )));
        }
        let mut slot = self.settings.write();
        let mut state = self.state_of(slot.as_deref()).clone();
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
        let key = settings_key(&self.engine.state, &state);
        *slot = Some(Arc::new(SessionSettings { state, key }));
        drop(slot);
        self.done()
    }

    /// Checks, before planning, that every table the statement names exists
    /// and that the caller may use it: precise codes instead of DataFusion's
    /// generic "table not found", and no plan is built for a forbidden table.
    /// Plans check again when they execute.
    ///
    /// Returns the providers of the statement's tables, in the order the
    /// statement names them: what a cached plan must have been made against.
    pub(crate) fn check_references(&self, statement: &DFStatement) -> Result<Tables> {
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
        let calls = table_function_calls(statement, normalize)?;
        let mut tables = Vec::new();
        for reference in state.resolve_table_references(statement)? {
            if calls.contains(&reference) {
                // Planned as a table function (`generate_series(1, 3)`); any
                // table its plan reads is checked in `check_plan`.
                continue;
            }
            let is_target = target.as_ref() == Some(&reference);
            if is_target && target_access == TargetAccess::Create {
                continue;
            }
            let (namespace, table) = self.resolve_name(&reference)?;
            if is_reserved_namespace(namespace) {
                if !reserved_table_exists(namespace, table) {
                    return Err(self.not_found(namespace, table));
                }
                if is_target {
                    return Err(TenantError::PermissionDenied(format!(
                        "system table '{reference}' is read-only"
                    )));
                }
                continue;
            }
            let provider = self
                .engine
                .cache
                .lookup(namespace, table)
                .map_err(|err| match err {
                    TenantError::TableNotFound(_) => self.not_found(namespace, table),
                    other => other,
                })?;
            let access = match target_access {
                TargetAccess::Write(access) if is_target => access,
                _ => Access::Select,
            };
            provider.authorize(&self.user, access)?;
            if access == Access::Insert
                && let Some(insert) = find_insert(statement)
            {
                check_insert_shape(insert, provider.core(), normalize)?;
            }
            tables.push(provider);
        }
        Ok(tables)
    }

    /// `TABLE_NOT_FOUND` for a table a statement names, named in full as
    /// DataFusion names it (`table 'datafusion.public.t' not found`).
    fn not_found(&self, namespace: &str, table: &str) -> TenantError {
        let catalog = &self.engine.config.catalog_name;
        TenantError::TableNotFound(format!("{catalog}.{namespace}.{table}"))
    }

    /// `(namespace, table)` of a reference; other catalogs do not exist here.
    pub(crate) fn resolve_name<'a>(
        &'a self,
        reference: &'a TableReference,
    ) -> Result<(&'a str, &'a str)> {
        let config = &self.engine.config;
        resolve_table_name(reference, &config.catalog_name, &config.default_namespace)
    }
}

/// DataFusion's switch for its own information schema (see
/// `information_schema`).
const INFORMATION_SCHEMA_SETTING: &str = "datafusion.catalog.information_schema";

/// Settings one value of which serves every session: those of the catalog
/// (e.g. `information_schema`, which would list every tenant's tables), of
/// the runtime (e.g. the memory limit), and identifier normalisation, which
/// decides what table a name means: the engine's checks, its plan cache and
/// DROP read names under the engine's setting, so a session planning under
/// another would reach tables none of them looked at.
fn is_engine_wide(key: &str) -> bool {
    key.starts_with("datafusion.catalog.")
        || key.starts_with("datafusion.runtime.")
        || key == "datafusion.sql_parser.enable_ident_normalization"
}

/// Names the statement uses only as table functions (`FROM range(1, 3)`),
/// never as plain relations: DataFusion's reference resolver lists both
/// alike. A name used both ways stays a table reference to check.
fn table_function_calls(
    statement: &DFStatement,
    normalize: bool,
) -> Result<BTreeSet<TableReference>> {
    #[derive(Default)]
    struct Relations {
        calls: Vec<ObjectName>,
        tables: Vec<ObjectName>,
    }
    impl Visitor for Relations {
        type Break = ();
        fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
            if let TableFactor::Table { name, args, .. } = factor {
                match args {
                    Some(_) => self.calls.push(name.clone()),
                    None => self.tables.push(name.clone()),
                }
            }
            ControlFlow::Continue(())
        }
    }
    fn visit(statement: &DFStatement, relations: &mut Relations) {
        match statement {
            DFStatement::Statement(s) => {
                let _ = s.visit(relations);
            }
            DFStatement::Explain(e) => visit(&e.statement, relations),
            DFStatement::CopyTo(copy) => {
                if let CopyToSource::Query(query) = &copy.source {
                    let _ = query.visit(relations);
                }
            }
            DFStatement::CreateExternalTable(_) | DFStatement::Reset(_) => {}
        }
    }
    let mut relations = Relations::default();
    visit(statement, &mut relations);
    if relations.calls.is_empty() {
        return Ok(BTreeSet::new());
    }
    let reference = |name: &ObjectName| object_name_to_table_reference(name.clone(), normalize);
    let tables = relations
        .tables
        .iter()
        .map(reference)
        .collect::<datafusion::error::Result<BTreeSet<_>>>()?;
    let mut calls = BTreeSet::new();
    for name in &relations.calls {
        let call = reference(name)?;
        if !tables.contains(&call) {
            calls.insert(call);
        }
    }
    Ok(calls)
}

/// What the statement does to its target table, if it has one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TargetAccess {
    Read,
    Write(Access),
    Create,
}

fn find_insert(statement: &DFStatement) -> Option<&Insert> {
    fn in_sql(statement: &SqlStatement) -> Option<&Insert> {
        match statement {
            SqlStatement::Insert(insert) => Some(insert),
            SqlStatement::Explain { statement, .. } | SqlStatement::Prepare { statement, .. } => {
                in_sql(statement)
            }
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
        let name = normalized_ident(ident, normalize);
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

/// The name an identifier stands for, as DataFusion's planner reads it:
/// unquoted ones in ASCII lower case when `normalize` (the engine's
/// `enable_ident_normalization`), all others as written.
pub(crate) fn normalized_ident(ident: &Ident, normalize: bool) -> String {
    if normalize && ident.quote_style.is_none() {
        ident.value.to_ascii_lowercase()
    } else {
        ident.value.clone()
    }
}

fn statement_target(
    statement: &DFStatement,
) -> Option<(datafusion::sql::sqlparser::ast::ObjectName, TargetAccess)> {
    match statement {
        DFStatement::Statement(s) => sql_target(s),
        DFStatement::Explain(e) => statement_target(&e.statement),
        DFStatement::CreateExternalTable(create) => {
            Some((create.name.clone(), TargetAccess::Create))
        }
        _ => None,
    }
}

fn sql_target(
    statement: &SqlStatement,
) -> Option<(datafusion::sql::sqlparser::ast::ObjectName, TargetAccess)> {
    match statement {
        SqlStatement::Insert(insert) => match &insert.table {
            TableObject::TableName(name) => {
                Some((name.clone(), TargetAccess::Write(Access::Insert)))
            }
            TableObject::TableFunction(_) | TableObject::TableQuery(_) => None,
        },
        SqlStatement::CreateTable(create) => Some((create.name.clone(), TargetAccess::Create)),
        SqlStatement::CreateView(create) => Some((create.name.clone(), TargetAccess::Create)),
        SqlStatement::Delete(delete) => {
            let (FromTable::WithFromKeyword(tables) | FromTable::WithoutKeyword(tables)) =
                &delete.from;
            match &tables.first()?.relation {
                TableFactor::Table { name, .. } => {
                    Some((name.clone(), TargetAccess::Write(Access::Delete)))
                }
                _ => None,
            }
        }
        SqlStatement::Update(update) => match &update.table.relation {
            TableFactor::Table { name, .. } => {
                Some((name.clone(), TargetAccess::Write(Access::Update)))
            }
            _ => None,
        },
        SqlStatement::Explain { statement, .. } | SqlStatement::Prepare { statement, .. } => {
            sql_target(statement)
        }
        _ => None,
    }
}

/// Statements whose plans are cached by their text: queries (`SELECT`,
/// `WITH`, `VALUES`). DML is cached through prepared statements only, where
/// parameters make the same plan reusable; `EXPLAIN` (and `EXPLAIN ANALYZE`,
/// whose plan collects metrics) never.
fn is_query(statement: &DFStatement) -> bool {
    matches!(statement, DFStatement::Statement(s) if matches!(s.as_ref(), SqlStatement::Query(_)))
}

/// The settings of `state` that differ from `engine`'s, one `key=value` per
/// line (empty when there are none), in the order DataFusion lists them.
fn settings_key(engine: &SessionState, state: &SessionState) -> Arc<str> {
    let defaults = engine.config().options().entries();
    let mut key = String::new();
    for (entry, default) in state.config().options().entries().iter().zip(&defaults) {
        if entry.key != default.key || entry.value != default.value {
            key.push_str(&entry.key);
            key.push('=');
            key.push_str(entry.value.as_deref().unwrap_or(""));
            key.push('\n');
        }
    }
    Arc::from(key)
}

/// Whether a plan reading `tables` may be kept for later runs: not when one
/// of them, or a table one of the views among them reads, is an external
/// table. Its rows change without the engine (files added to a directory,
/// a host's own writes), and DataFusion's plan of them holds what was true
/// when it was made: the files listed then, statistics folded into answers.
fn plan_may_be_kept(tables: &[Arc<dyn BaseTableProvider>]) -> bool {
    !tables.iter().any(|table| {
        let table = table.as_ref() as &dyn TableProvider;
        table.is::<ExternalTable>()
            || table
                .downcast_ref::<View>()
                .is_some_and(|view| !plan_may_be_kept(view.tables_read()))
    })
}

/// A DataFusion error from planning a statement, as our error: an INSERT's
/// cast failures name the target table (`SCHEMA_MISMATCH`).
pub(crate) fn planning_error(
    insert_into: Option<&str>,
    err: datafusion::error::DataFusionError,
) -> TenantError {
    match insert_into {
        Some(table) => TenantError::from_insert(table, err),
        None => TenantError::from_datafusion(err),
    }
}
