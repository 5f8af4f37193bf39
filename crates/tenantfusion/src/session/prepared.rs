//! Prepared statements: parsed, checked and planned once, run many times with
//! parameters `$1, $2, ...`.
//!
//! An `INSERT ... VALUES` is written without planning on every execution
//! (see `direct_insert`). A query's, `UPDATE`'s or `DELETE`'s plan is made
//! once for every value: its generic plan (see `generic_plan`), kept in the
//! engine's plan cache on the statement's second run and given each run's
//! values in a copy, so new values plan nothing. SQL text whose literal
//! values can be taken out as parameters (see `auto_parameters`) runs the
//! same way, from the generic plan of its rewritten text
//! (`TenantSession::run_parameterised`). A query whose generic plan would
//! hold a parameter where no value can be put is planned per value
//! instead: binding runs the optimiser and the physical planner again (not
//! the parser or the SQL planner), and a plan for values seen before comes
//! from the plan cache, kept on the second use of the same values so that
//! values used once do not push out plans that are reused.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::{DFSchema, ParamValues, ScalarValue};
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::logical_expr::{Execute, Expr, LogicalPlan, Statement};
use datafusion::optimizer::simplify_expressions::ExprSimplifier;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::Statement as SqlStatement;
use parking_lot::RwLock;
use tenantfusion_core::{Result, TenantError};

use super::mutation::as_mutation;
use super::{TenantSession, plan_may_be_kept, planning_error};
use crate::auto_parameters::parameterise;
use crate::generic_plan;
use crate::plan_cache::{
    CacheSlot, Lookup, PlanKey, Tables, Values, Verbatim, is_deterministic, is_reusable,
    same_providers,
};
use crate::query::Query;
use crate::statement::TenantStatement;

/// A statement prepared by [`TenantSession::prepare`]: run it with
/// [`execute`](Self::execute) and parameter values for `$1, $2, ...`.
///
/// It runs as the session's user with the session's settings at the time it
/// was prepared. Access is checked on every execution, so a `REVOKE` takes
/// effect on the next one; a table dropped and created again is planned anew.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use datafusion::common::ScalarValue;
/// use tenantfusion::{Engine, EngineConfig, Role, UserContext};
///
/// let engine = Engine::new(EngineConfig::default())?;
/// let admin = engine.session(UserContext::new("admin", Role::Dba));
/// admin.sql("CREATE TABLE notes (id BIGINT NOT NULL, body TEXT)").await?;
/// let alice = engine.session(UserContext::new("alice", Role::User));
/// let insert = alice.prepare("INSERT INTO notes VALUES ($1, $2)").await?;
/// insert.execute(vec![ScalarValue::from(1i64), ScalarValue::from("hi")]).await?.collect().await?;
/// let find = alice.prepare("SELECT body FROM notes WHERE id = $1").await?;
/// let rows = find.execute(vec![ScalarValue::from(1i64)]).await?.collect().await?;
/// assert_eq!(rows[0].num_rows(), 1);
/// # Ok::<_, tenantfusion::TenantError>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct PreparedStatement {
    session: TenantSession,
    prepared: Arc<Prepared>,
}

impl PreparedStatement {
    /// The types of `$1, $2, ...`: declared by `PREPARE name(types)`, or
    /// inferred from where each parameter is used.
    pub fn parameter_types(&self) -> &[DataType] {
        &self.prepared.types
    }

    /// The columns each execution returns (`count` for `INSERT`, `UPDATE`
    /// and `DELETE`), known before it runs: what a client's `Describe`
    /// asks for.
    pub fn schema(&self) -> SchemaRef {
        Arc::clone(self.prepared.planned.read().logical.schema().inner())
    }

    /// Runs the statement with `params` (one per parameter, cast to its
    /// type). Queries run when the returned [`Query`] is collected.
    pub async fn execute(&self, params: Vec<ScalarValue>) -> Result<Query> {
        let governor = self.session.engine.begin(&self.session.user).await?;
        crate::panics::guard(self.session.execute_prepared(&self.prepared, params))
            .await
            .map(|query| query.governed(governor))
    }
}

/// The session-independent part of a prepared statement.
#[derive(Debug)]
pub(crate) struct Prepared {
    /// What was prepared (a plain statement or SQL `PREPARE`), checked again
    /// before each execution and planned again when a table changed.
    source: DFStatement,
    /// The statement's normalised text, without the `PREPARE` name: the
    /// plan cache key together with the bound values.
    text: String,
    types: Vec<DataType>,
    is_query: bool,
    insert_into: Option<String>,
    planned: RwLock<Planned>,
}

/// A logical plan with placeholders and the providers it was made against.
#[derive(Debug)]
struct Planned {
    tables: Tables,
    logical: LogicalPlan,
}

impl TenantSession {
    /// Parses, checks and plans `sql` once for repeated execution. Queries,
    /// `INSERT`, `UPDATE` and `DELETE` can be prepared; parameters are
    /// `$1, $2, ...`.
    pub async fn prepare(&self, sql: &str) -> Result<PreparedStatement> {
        self.engine.finish_drops().await?;
        let TenantStatement::Sql(statement) = self.parse(sql)? else {
            return Err(not_preparable());
        };
        let (_, prepared) = crate::panics::guard(self.make_prepared(statement)).await?;
        Ok(PreparedStatement {
            session: self.clone(),
            prepared,
        })
    }

    /// The prepared statement, and its name if `source` is SQL `PREPARE`.
    async fn make_prepared(&self, source: DFStatement) -> Result<(Option<String>, Arc<Prepared>)> {
        let DFStatement::Statement(sql) = &source else {
            return Err(not_preparable());
        };
        let body = match sql.as_ref() {
            SqlStatement::Prepare { statement, .. } => statement.as_ref(),
            other => other,
        };
        let is_query = matches!(body, SqlStatement::Query(_));
        let insert_into = match body {
            SqlStatement::Insert(insert) => Some(insert.table.to_string()),
            SqlStatement::Query(_) | SqlStatement::Update(_) | SqlStatement::Delete(_) => None,
            _ => return Err(not_preparable()),
        };
        let text = body.to_string();
        let tables = self.check_references(&source)?;
        let (name, logical, types) = plan_source(&source, &self.planning_state()).await?;
        self.check_plan(&logical)?;
        let prepared = Prepared {
            source,
            text,
            types,
            is_query,
            insert_into,
            planned: RwLock::new(Planned { tables, logical }),
        };
        Ok((name, Arc::new(prepared)))
    }

    /// SQL `PREPARE name [(types)] AS statement`.
    pub(crate) async fn prepare_named(&self, source: DFStatement) -> Result<Query> {
        let (name, prepared) = self.make_prepared(source).await?;
        let name = name.ok_or_else(|| TenantError::Internal("PREPARE without a name".into()))?;
        let mut named = self.prepared.lock();
        if named.contains_key(&name) {
            return Err(TenantError::InvalidArgument(format!(
                "prepared statement '{name}' already exists; DEALLOCATE it first"
            )));
        }
        named.insert(name, prepared);
        drop(named);
        self.done()
    }

    /// SQL `EXECUTE name(values)`; the values must be constants.
    pub(crate) async fn execute_named(
        &self,
        execute: &Execute,
        state: &SessionState,
    ) -> Result<Query> {
        let prepared = self.prepared.lock().get(&execute.name).cloned();
        let prepared = prepared.ok_or_else(|| unknown(&execute.name))?;
        let context = SimplifyContext::builder()
            .with_schema(Arc::new(DFSchema::empty()))
            .with_config_options(Arc::clone(state.config().options()))
            .build();
        let simplifier = ExprSimplifier::new(context);
        let params = execute
            .parameters
            .iter()
            .map(|param| match simplifier.simplify(param.clone())? {
                Expr::Literal(value, _) => Ok(value),
                other => Err(TenantError::InvalidArgument(format!(
                    "EXECUTE takes constant values; '{other}' is not one"
                ))),
            })
            .collect::<Result<Vec<_>>>()?;
        self.execute_prepared(&prepared, params).await
    }

    /// SQL `DEALLOCATE [PREPARE] name`.
    pub(crate) fn deallocate(&self, name: &str) -> Result<Query> {
        match self.prepared.lock().remove(name) {
            Some(_) => self.done(),
            None => Err(unknown(name)),
        }
    }

    /// Checks access, binds `params` and runs: from the plan cache when
    /// these values were planned before, otherwise optimising the stored
    /// logical plan with the values in place.
    pub(crate) async fn execute_prepared(
        &self,
        prepared: &Prepared,
        params: Vec<ScalarValue>,
    ) -> Result<Query> {
        let tables = self.check_references(&prepared.source)?;
        let params = prepared.bind(params)?;
        if let Some(query) = self
            .direct_insert(&prepared.source, &tables, Some(&params))
            .await?
        {
            return Ok(query);
        }
        let cache = &self.engine.plans;
        let keep = cache.enabled() && plan_may_be_kept(&tables);
        // Queries, UPDATE and DELETE run from a generic plan (an INSERT that
        // is not written directly is planned per value).
        if keep
            && prepared.insert_into.is_none()
            && let Some(query) = self.run_generic(prepared, &tables, &params).await?
        {
            return Ok(query);
        }
        // Per value: a query's plan is kept on the second use of the same
        // values; a change's is made for each run.
        let key = (keep && prepared.is_query).then(|| PlanKey {
            settings: self.settings_key(),
            text: format!("{}\u{0}{params:?}", prepared.text),
        });
        if let Some(key) = &key
            && let Some(plan) = cache.get(key, &tables, None)
        {
            return self.run_cached(plan);
        }
        let (to_cache, state) = self.admitted(key.map(|key| CacheSlot {
            key,
            tables: tables.clone(),
            verbatim: None,
        }));
        let planning = |err| planning_error(prepared.insert_into.as_deref(), err);
        let logical = prepared
            .logical_plan(&tables, &state)
            .await
            .map_err(planning)?;
        self.check_plan(&logical)?;
        let bound = logical
            .with_param_values(ParamValues::from(params))
            .map_err(planning)?;
        if let Some((dml, mutation)) = as_mutation(&bound) {
            return self.run_mutation(dml, mutation, &state).await;
        }
        self.plan_physical(&bound, &state, to_cache)
            .await
            .map_err(planning)
    }
}

impl TenantSession {
    /// Runs a prepared query from its generic plan with `params` put in:
    /// the plan kept in the plan cache, or, when the cache admits it now,
    /// one made and kept. `None` when there is none to use (the statement's
    /// first run, or a query that is planned per value).
    async fn run_generic(
        &self,
        prepared: &Prepared,
        tables: &Tables,
        params: &[ScalarValue],
    ) -> Result<Option<Query>> {
        let cache = &self.engine.plans;
        let key = PlanKey {
            settings: self.settings_key(),
            // Declared types may differ for one text, and a parameter
            // shown in the result gives it its type.
            text: format!("{}\u{0}generic{:?}", prepared.text, prepared.types),
        };
        // The values were cast to the parameters' types: they bind exactly.
        let bound = |plan| match generic_plan::bind(plan, params) {
            Ok(Some(plan)) => Ok(plan),
            Ok(None) => Err(TenantError::Internal(
                "a prepared statement's value is not of its parameter's type".into(),
            )),
            Err(err) => Err(planning_error(None, err)),
        };
        let slot = match cache.get_or_admit(key, tables, None) {
            Lookup::Kept(plan) => return Ok(Some(self.run_bound(bound(plan)?, true)?)),
            Lookup::Admitted(slot) => slot,
            Lookup::NotYet | Lookup::PerValue => return Ok(None),
        };
        let state = self.planning_state_for(false);
        // Planning errors are left to planning per value, which reports them
        // with the statement's own words.
        let Ok(logical) = prepared.logical_plan(tables, &state).await else {
            return Ok(None);
        };
        self.check_plan(&logical)?;
        match self.generic_plan(&logical, &prepared.types, &state).await {
            Some(plan) => {
                cache.insert(slot, Arc::clone(&plan));
                Ok(Some(self.run_bound(bound(plan)?, false)?))
            }
            None => {
                cache.mark_per_value(&slot.key);
                Ok(None)
            }
        }
    }

    /// The generic plan of `logical`, a statement whose parameters have
    /// `types`, if it has one that may be kept: `None` for one that is not
    /// deterministic, holds a parameter where no value can be put, or fails
    /// to plan where values would not (`LIMIT $1`). Such a statement is
    /// planned per value.
    async fn generic_plan(
        &self,
        logical: &LogicalPlan,
        types: &[DataType],
        state: &SessionState,
    ) -> Option<Arc<dyn ExecutionPlan>> {
        if !is_deterministic(logical) {
            return None;
        }
        let generic = match as_mutation(logical) {
            Some((dml, mutation)) => {
                self.generic_mutation_plan(dml, mutation, types, state)
                    .await
            }
            None => generic_plan::plan(logical, types, state)
                .await
                .map_err(TenantError::from_datafusion),
        };
        generic.ok().flatten().filter(is_reusable)
    }

    /// Runs a statement given as SQL text from the generic plan of its text
    /// with its literal values taken out (see `auto_parameters`), kept in
    /// the plan cache on the second run of that text with any values.
    /// `None` sends the statement down the text's own path: the rewrite is
    /// off or finds nothing to take out, the statement's first run, one
    /// with no generic plan, or a value that does not bind exactly.
    pub(crate) async fn run_parameterised(
        &self,
        statement: &DFStatement,
        tables: &Tables,
        verbatim: Option<PlanKey>,
    ) -> Result<Option<Query>> {
        let cache = &self.engine.plans;
        if !self.engine.config.auto_parameters || !cache.enabled() || !plan_may_be_kept(tables) {
            return Ok(None);
        }
        let Some(rewritten) = parameterise(statement) else {
            return Ok(None);
        };
        let key = PlanKey {
            settings: self.settings_key(),
            // The parameters' types are inferred from the text (not from
            // the values, which are converted to them exactly, or not used).
            text: format!("{}\u{0}literals", rewritten.statement),
        };
        let values: Values = rewritten.values.into();
        let bind =
            |plan| generic_plan::bind(plan, &values).map_err(|err| planning_error(None, err));
        // The text sent again is bound to the same values without parsing.
        let verbatim = verbatim.map(|text| Verbatim {
            text,
            values: Some(Arc::clone(&values)),
        });
        let slot = match cache.get_or_admit(key, tables, verbatim) {
            Lookup::Kept(plan) => {
                return bind(plan)?
                    .map(|plan| self.run_bound(plan, true))
                    .transpose();
            }
            Lookup::Admitted(slot) => slot,
            Lookup::NotYet | Lookup::PerValue => return Ok(None),
        };
        let state = self.planning_state_for(false);
        let generic = match plan_source(&rewritten.statement, &state).await {
            Ok((_, logical, types)) => {
                self.check_plan(&logical)?;
                self.generic_plan(&logical, &types, &state).await
            }
            // A parameter whose type cannot be inferred, say: the text's
            // own path plans it, and reports its errors in its own words.
            Err(_) => None,
        };
        // A value converted while the plan runs could fail there, where the
        // text fails while it is planned: the text's own path keeps its
        // errors.
        let generic =
            generic.filter(|plan| !generic_plan::converts_a_parameter(plan).unwrap_or(true));
        let Some(plan) = generic else {
            cache.mark_per_value(&slot.key);
            return Ok(None);
        };
        cache.insert(slot, Arc::clone(&plan));
        bind(plan)?
            .map(|plan| self.run_bound(plan, false))
            .transpose()
    }
}

impl Prepared {
    /// `params` cast to the parameter types, with clear errors for a wrong
    /// count or a value that does not convert.
    fn bind(&self, params: Vec<ScalarValue>) -> Result<Vec<ScalarValue>> {
        if params.len() != self.types.len() {
            return Err(TenantError::InvalidArgument(format!(
                "the prepared statement takes {} parameters, {} were given",
                self.types.len(),
                params.len()
            )));
        }
        params
            .into_iter()
            .zip(&self.types)
            .enumerate()
            .map(|(i, (value, ty))| {
                if &value.data_type() == ty {
                    return Ok(value);
                }
                value.cast_to(ty).map_err(|_| {
                    TenantError::InvalidArgument(format!(
                        "parameter ${} is {ty}; {value} ({}) does not convert",
                        i + 1,
                        value.data_type()
                    ))
                })
            })
            .collect()
    }

    /// The logical plan, planned again when a table it uses was dropped and
    /// created since (the stored plan refers to the old provider).
    async fn logical_plan(
        &self,
        tables: &Tables,
        state: &SessionState,
    ) -> datafusion::error::Result<LogicalPlan> {
        {
            let planned = self.planned.read();
            if same_providers(&planned.tables, tables) {
                return Ok(planned.logical.clone());
            }
        }
        let (_, logical, types) = plan_source(&self.source, state)
            .await
            .map_err(|err| datafusion::error::DataFusionError::External(Box::new(err)))?;
        if types != self.types {
            return Err(datafusion::error::DataFusionError::External(Box::new(
                TenantError::SchemaMismatch(format!(
                    "a table of the prepared statement changed the types of its parameters \
                     from {:?} to {types:?}; prepare it again",
                    self.types
                )),
            )));
        }
        *self.planned.write() = Planned {
            tables: tables.to_vec(),
            logical: logical.clone(),
        };
        Ok(logical)
    }
}

/// The name given by SQL `PREPARE`, the logical plan of a prepared statement
/// (without its `PREPARE` wrapper) and its parameter types: declared, or
/// inferred from use.
async fn plan_source(
    source: &DFStatement,
    state: &SessionState,
) -> Result<(Option<String>, LogicalPlan, Vec<DataType>)> {
    let plan = state.statement_to_plan(source.clone()).await?;
    let (name, logical, declared) = match plan {
        LogicalPlan::Statement(Statement::Prepare(prepare)) => {
            let declared: Vec<DataType> = prepare
                .fields
                .iter()
                .map(|f| f.data_type().clone())
                .collect();
            (
                Some(prepare.name),
                Arc::unwrap_or_clone(prepare.input),
                declared,
            )
        }
        other => (None, other, Vec::new()),
    };
    let mut found: Vec<(usize, Option<DataType>)> = Vec::new();
    for (name, ty) in logical.get_parameter_types()? {
        let index = name
            .strip_prefix('$')
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| *n > 0)
            .ok_or_else(|| {
                TenantError::NotSupported(format!(
                    "parameter '{name}': only positional parameters $1, $2, ... are supported"
                ))
            })?;
        found.push((index, ty));
    }
    found.sort_by_key(|(index, _)| *index);
    if let Some(gap) = found.iter().enumerate().find(|(i, (n, _))| *n != i + 1) {
        return Err(TenantError::InvalidArgument(format!(
            "parameters must be numbered $1 to ${}; ${} is missing",
            found.len(),
            gap.0 + 1
        )));
    }
    if !declared.is_empty() {
        if declared.len() != found.len() {
            return Err(TenantError::InvalidArgument(format!(
                "PREPARE declares {} parameter types but the statement uses {} parameters",
                declared.len(),
                found.len()
            )));
        }
        return Ok((name, logical, declared));
    }
    let types = found
        .into_iter()
        .map(|(index, ty)| {
            ty.ok_or_else(|| {
                TenantError::InvalidArgument(format!(
                    "the type of parameter ${index} cannot be inferred; \
                     declare it with PREPARE name(type, ...) AS ..."
                ))
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((name, logical, types))
}

fn not_preparable() -> TenantError {
    TenantError::NotSupported("only queries, INSERT, UPDATE and DELETE can be prepared".into())
}

fn unknown(name: &str) -> TenantError {
    TenantError::InvalidArgument(format!("prepared statement '{name}' does not exist"))
}
