//! `INSERT ... VALUES` of constant rows, written without planning.
//!
//! Planning a one-row `INSERT INTO t VALUES (1, 'a')` costs far more than
//! writing the row: DataFusion plans the VALUES list, analyses, optimises
//! and physically plans it, for rows that are known the moment the
//! statement is parsed. So an INSERT whose rows are constants is turned into
//! an Arrow batch of the table's schema here, and the batch is handed to the
//! table's own `insert_into` plan: the same sink as a planned INSERT, so the
//! same access checks when it runs, NOT NULL and primary-key checks, log
//! record and change events.
//!
//! The batch is built the way DataFusion's planner builds the rows, step
//! for step (`SqlToRel::insert_to_plan` and `LogicalPlanBuilder::values_with_schema`,
//! then the optimizer's constant folding): each value is planned as an
//! expression with DataFusion's own SQL planner; `NULL` becomes a null of
//! the column's type; any other value is cast to the column's type with the
//! cast the planner adds and folded as the optimizer folds it (a literal's
//! cast with the same kernel and options as `CastExpr`, anything else with
//! DataFusion's `ExprSimplifier`, which is what folds `now()` to the
//! statement's start); an omitted column takes the table's default, or
//! NULL, the same way.
//!
//! A prepared INSERT (`TenantSession::prepare`, SQL `PREPARE`) takes the
//! same path on every execution: its placeholders are replaced by the bound
//! values (cast to the parameters' types first, as for a planned execution)
//! the way `LogicalPlan::with_param_values` replaces them, so binding new
//! values plans nothing either.
//!
//! Where this could part from the planner, nothing is guessed: the
//! statement is planned instead. That is any INSERT of another shape (a
//! column list naming a column twice, `INSERT ... SELECT`, a CTE,
//! `ORDER BY`, `RETURNING`, ...), any value that is not a constant (a column, a
//! subquery, a parameter of SQL text, a volatile function such as `random()`, any
//! function taking arguments, arithmetic), and every error: a value that
//! fails its cast, a NULL for a NOT NULL column. A failing statement costs a
//! planning; in exchange its error is the planner's own, word for word.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::TableProvider;
use datafusion::common::format::DEFAULT_CAST_OPTIONS;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::expr::{Cast, TryCast};
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::logical_expr::{ColumnarValue, Expr, ExprSchemable, Volatility};
use datafusion::optimizer::simplify_expressions::ExprSimplifier;
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::{
    Expr as SqlExpr, ExprWithAlias, Insert, ObjectName, Parens, Query as SqlQuery, SetExpr,
    Statement as SqlStatement, TableObject, Values,
};
use tenantfusion_core::{BaseTableProvider, Result};
use tenantfusion_tables::{SharedTableProvider, StreamTableProvider, UserTableProvider};

use super::{TenantSession, normalized_ident};
use crate::plan_cache::Tables;
use crate::query::Query;

impl TenantSession {
    /// The statement as a write ready to run, when it is an INSERT of
    /// constant rows into one of the engine's own tables (see the module
    /// docs); `None` sends it to the planner. `tables` are the statement's
    /// tables as `check_references` found (and authorised) them. `params`
    /// are the bound values of a prepared statement (`PREPARE` included),
    /// each already cast to its parameter's type; `None` for SQL text,
    /// where a parameter is not a constant.
    pub(super) async fn direct_insert(
        &self,
        statement: &DFStatement,
        tables: &Tables,
        params: Option<&[ScalarValue]>,
    ) -> Result<Option<Query>> {
        if !self.engine.config.direct_inserts {
            return Ok(None);
        }
        let DFStatement::Statement(statement) = statement else {
            return Ok(None);
        };
        let insert = match (statement.as_ref(), params) {
            (SqlStatement::Insert(insert), _) => insert,
            (SqlStatement::Prepare { statement, .. }, Some(_)) => match statement.as_ref() {
                SqlStatement::Insert(insert) => insert,
                _ => return Ok(None),
            },
            _ => return Ok(None),
        };
        // A constant VALUES list names no table but the target.
        let (Some((columns, rows)), [table]) = (constant_insert(insert), tables.as_slice()) else {
            return Ok(None);
        };
        if !takes_rows_directly(table.as_ref()) {
            return Ok(None);
        }
        // The guard cannot be held across an await: keep the Arc instead.
        let settings = self.settings.read().clone();
        let state = self.state_of(settings.as_deref());
        let builder = RowBuilder::new(state, table.as_ref(), params.unwrap_or_default());
        let Some(batch) = builder.build(columns, rows) else {
            return Ok(None);
        };
        let schema = batch.schema();
        let source = MemorySourceConfig::try_new_exec(&[vec![batch]], schema, None)?;
        let plan = table.insert_into(state, source, InsertOp::Append).await?;
        Ok(Some(Query::direct(plan, self.task_context(state)?)))
    }
}

/// Tables whose `insert_into` is the engine's own sink. A view, an external
/// table (its own files' rules, or a host's provider) and anything else
/// are planned.
fn takes_rows_directly(table: &dyn BaseTableProvider) -> bool {
    let table = table as &dyn TableProvider;
    table.is::<UserTableProvider>()
        || table.is::<SharedTableProvider>()
        || table.is::<StreamTableProvider>()
}

/// One row of a `VALUES` list.
type Row = Parens<Vec<SqlExpr>>;

/// The column list and rows of `INSERT INTO t [(columns)] VALUES ...` with
/// nothing else to it; every clause DataFusion plans or refuses
/// (`OVERWRITE`, `ON CONFLICT`, `RETURNING`, a CTE, `ORDER BY`, ...) sends
/// the statement to the planner. The destructuring names every field, so a
/// clause a new sqlparser adds cannot be ignored here unnoticed.
fn constant_insert(insert: &Insert) -> Option<(&[ObjectName], &[Row])> {
    let Insert {
        insert_token: _,
        optimizer_hints,
        or,
        ignore,
        into: _,
        table,
        table_alias,
        columns,
        overwrite,
        source,
        assignments,
        partitioned,
        after_columns,
        has_table_keyword: _,
        on,
        returning,
        output,
        replace_into,
        priority,
        insert_alias,
        settings,
        format_clause,
        multi_table_insert_type,
        multi_table_into_clauses,
        multi_table_when_clauses,
        multi_table_else_clause,
    } = insert;
    let plain = optimizer_hints.is_empty()
        && or.is_none()
        && !ignore
        && matches!(table, TableObject::TableName(_))
        && table_alias.is_none()
        && !overwrite
        && assignments.is_empty()
        && partitioned.is_none()
        && after_columns.is_empty()
        && on.is_none()
        && returning.is_none()
        && output.is_none()
        && !replace_into
        && priority.is_none()
        && insert_alias.is_none()
        && settings.is_none()
        && format_clause.is_none()
        && multi_table_insert_type.is_none()
        && multi_table_into_clauses.is_empty()
        && multi_table_when_clauses.is_empty()
        && multi_table_else_clause.is_none();
    if !plain {
        return None;
    }
    let SqlQuery {
        with,
        body,
        order_by,
        limit_clause,
        fetch,
        locks,
        for_clause,
        settings,
        format_clause,
        pipe_operators,
    } = source.as_deref()?;
    let plain = with.is_none()
        && order_by.is_none()
        && limit_clause.is_none()
        && fetch.is_none()
        && locks.is_empty()
        && for_clause.is_none()
        && settings.is_none()
        && format_clause.is_none()
        && pipe_operators.is_empty();
    match body.as_ref() {
        SetExpr::Values(Values {
            explicit_row: _,
            value_keyword: false,
            rows,
        }) if plain && !rows.is_empty() => Some((columns, rows)),
        _ => None,
    }
}

/// Builds one statement's rows for one table, as the planner would.
struct RowBuilder<'a> {
    state: &'a SessionState,
    table: &'a dyn BaseTableProvider,
    schema: SchemaRef,
    /// What `now()` folds to: the statement's start, as in a planned one.
    start: DateTime<Utc>,
    /// Made when a value first needs folding (most never do).
    simplify: Option<SimplifyContext>,
    /// The values of `$1, $2, ...`, as `LogicalPlan::with_param_values`
    /// puts them in: literals of the parameters' types.
    params: &'a [ScalarValue],
}

impl<'a> RowBuilder<'a> {
    fn new(
        state: &'a SessionState,
        table: &'a dyn BaseTableProvider,
        params: &'a [ScalarValue],
    ) -> Self {
        Self {
            state,
            table,
            schema: TableProvider::schema(table),
            start: Utc::now(),
            simplify: None,
            params,
        }
    }

    /// The batch `rows` make, columns listed as `columns` (none: all, in
    /// order); `None` wherever the planner should decide.
    fn build(mut self, columns: &[ObjectName], rows: &[Row]) -> Option<RecordBatch> {
        let fields = self.schema.fields().clone();
        // Which value of a row each of the table's columns takes, if any.
        let sources: Vec<Option<usize>> = if columns.is_empty() {
            (0..fields.len()).map(Some).collect()
        } else {
            let normalize = self
                .state
                .config()
                .options()
                .sql_parser
                .enable_ident_normalization;
            let mut sources = vec![None; fields.len()];
            for (position, column) in columns.iter().enumerate() {
                let [part] = column.0.as_slice() else {
                    return None;
                };
                let name = normalized_ident(part.as_ident()?, normalize);
                let index = self.schema.index_of(&name).ok()?;
                if sources[index].replace(position).is_some() {
                    return None;
                }
            }
            sources
        };
        let width = sources.iter().flatten().count();
        if rows.iter().any(|row| row.content.len() != width) {
            return None;
        }
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(fields.len());
        for (field, source) in fields.iter().zip(sources) {
            let data_type = field.data_type();
            let array = match source {
                Some(position) => {
                    let values = rows
                        .iter()
                        .map(|row| self.value(&row.content[position], data_type))
                        .collect::<Option<Vec<_>>>()?;
                    ScalarValue::iter_to_array(values).ok()?
                }
                None => {
                    let default = self
                        .table
                        .get_column_default(field.name())
                        .cloned()
                        .unwrap_or(Expr::Literal(ScalarValue::Null, None));
                    let value = self.constant(default, data_type)?;
                    value.to_array_of_size(rows.len()).ok()?
                }
            };
            arrays.push(array);
        }
        // Refuses a NULL in a NOT NULL column: planned, that error is the
        // planner's (or the sink's) own.
        RecordBatch::try_new(Arc::clone(&self.schema), arrays).ok()
    }

    /// One value of a VALUES row, for a column of type `data_type`.
    fn value(&mut self, value: &SqlExpr, data_type: &DataType) -> Option<ScalarValue> {
        let value = ExprWithAlias {
            expr: value.clone(),
            alias: None,
        };
        let expr = self
            .state
            .create_logical_expr_from_sql_expr(value, &DFSchema::empty())
            .ok()?;
        let expr = match self.params {
            [] => expr,
            params => bind(expr, params)?,
        };
        self.constant(expr, data_type)
    }

    /// `expr` cast to `data_type` and folded, as planning folds it; `None`
    /// unless it is a constant that folds without error.
    fn constant(&mut self, expr: Expr, data_type: &DataType) -> Option<ScalarValue> {
        // `values_with_schema` types a bare NULL without a cast.
        if let Expr::Literal(ScalarValue::Null, _) = expr {
            return ScalarValue::try_from(data_type).ok();
        }
        if !is_constant(&expr) {
            return None;
        }
        let value = match expr.cast_to(data_type, &DFSchema::empty()).ok()? {
            Expr::Literal(value, _) => value,
            // What `CastExpr` evaluates a literal to, options and all.
            Expr::Cast(Cast { expr, field }) if matches!(*expr, Expr::Literal(..)) => {
                let Expr::Literal(value, _) = *expr else {
                    return None;
                };
                match ColumnarValue::Scalar(value)
                    .cast_to(field.data_type(), Some(&DEFAULT_CAST_OPTIONS))
                    .ok()?
                {
                    ColumnarValue::Scalar(value) => value,
                    ColumnarValue::Array(_) => return None,
                }
            }
            other => match self.simplifier().simplify(other).ok()? {
                Expr::Literal(value, _) => value,
                _ => return None,
            },
        };
        (value.data_type() == *data_type).then_some(value)
    }

    fn simplifier(&mut self) -> ExprSimplifier {
        let context = self.simplify.get_or_insert_with(|| {
            SimplifyContext::builder()
                .with_config_options(Arc::clone(self.state.config().options()))
                .with_query_execution_start_time(Some(self.start))
                .build()
        });
        ExprSimplifier::new(context.clone())
    }
}

/// `expr` with each placeholder `$n` replaced by the literal `params[n - 1]`,
/// as `LogicalPlan::with_param_values` replaces them; `None` for a
/// placeholder without a value (planned, that error is the planner's).
fn bind(expr: Expr, params: &[ScalarValue]) -> Option<Expr> {
    let mut unbound = false;
    let bound = expr
        .transform(|expr| match expr {
            Expr::Placeholder(placeholder) => {
                let value = placeholder
                    .id
                    .strip_prefix('$')
                    .and_then(|n| n.parse::<usize>().ok())
                    .and_then(|n| n.checked_sub(1))
                    .and_then(|n| params.get(n));
                match value {
                    Some(value) => Ok(Transformed::yes(Expr::Literal(value.clone(), None))),
                    None => {
                        unbound = true;
                        Ok(Transformed::no(Expr::Placeholder(placeholder)))
                    }
                }
            }
            other => Ok(Transformed::no(other)),
        })
        .ok()?
        .data;
    (!unbound).then_some(bound)
}

/// Whether `expr` is one of the constant forms folded here: a literal; a
/// cast, `TRY_CAST` or negation of one; a function of no arguments that is
/// not volatile (`now()`, `current_date`). Nothing here needs the type
/// coercion the planner runs before folding (arguments, operands), so
/// folding it alone folds it as a planned statement would.
fn is_constant(expr: &Expr) -> bool {
    match expr {
        Expr::Literal(..) => true,
        Expr::Cast(Cast { expr, .. }) | Expr::TryCast(TryCast { expr, .. }) => is_constant(expr),
        Expr::Negative(expr) => matches!(expr.as_ref(), Expr::Literal(..)),
        Expr::ScalarFunction(call) => {
            call.args.is_empty() && call.func.signature().volatility != Volatility::Volatile
        }
        _ => false,
    }
}
