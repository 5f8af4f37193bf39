//! Generic plans: a statement with parameters `$1, $2, ...` planned once,
//! and each run's copy of that plan given the run's values.
//!
//! DataFusion 55 optimises a logical plan that holds placeholders, but
//! cannot make a physical plan of one ("Placeholder '$1' was not provided a
//! value"); binding the values first means optimising and physical planning
//! again on every run, which is most of what planning costs. So, like
//! PostgreSQL's generic plans, a statement is optimised once with its
//! values unknown; each placeholder then becomes a [`Parameter`], a function
//! of no arguments that the physical planner plans like any other and that
//! refuses to be evaluated. [`bind`] copies the plan for one run and puts
//! the run's values in as literals. The plan that runs holds its values, as
//! a planned one would; the plan that is kept holds none.
//!
//! The optimiser never sees a value, so nothing in the plan depends on one:
//! nothing is folded, no partition is picked by value (a table stored per
//! topic reads every topic and keeps the rows the bound filter takes), no
//! limit comes from one. A value is put in only where the copy can be
//! rebuilt: filters, projections and the predicates of our scans (whose
//! hint to the store then skips files by the run's value). A filter
//! directly over one of our scans is taken into the scan when the plan is
//! made, so that a run makes a new scan, not a new `FilterExec` too. A
//! plan holding a parameter anywhere else (an aggregate, a join condition,
//! a sort key, a scan of files) is not generic ([`plan`] gives `None`), and
//! the statement is planned per value instead.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{ScalarValue, internal_err};
use datafusion::error::Result;
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::expr::{Placeholder, ScalarFunction};
use datafusion::logical_expr::{
    ColumnarValue, Expr, LogicalPlan, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};
use datafusion::physical_expr::expressions::{CastExpr, Literal, TryCastExpr};
use datafusion::physical_expr::{PhysicalExpr, ScalarFunctionExpr};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
use datafusion::physical_plan::filter::{FilterExec, FilterExecBuilder};
use datafusion::physical_plan::projection::{ProjectionExec, ProjectionExpr};
use tenantfusion_tables::PartitionScanExec;

use crate::auto_parameters::exact_value;

/// Where parameter `$n` stands in a generic plan until [`bind`] puts a
/// value there. Evaluating one is an error: a plan that still holds one
/// was not bound, and must not run as if it had a value.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct Parameter {
    /// `$n`, as the statement wrote it.
    name: String,
    /// `n - 1`: the position of its value.
    index: usize,
    data_type: DataType,
    signature: Signature,
}

impl ScalarUDFImpl for Parameter {
    fn name(&self) -> &str {
        &self.name
    }

    /// Stable, not volatile: a volatile filter is not offered to a scan,
    /// which would then not skip files by the bound value. Nothing folds it
    /// (the logical optimiser has run before parameters are put in).
    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(self.data_type.clone())
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        internal_err!("parameter {} was not given a value", self.name)
    }
}

/// The generic physical plan of `logical`, a query whose parameters
/// `$1, $2, ...` have `types`; `None` when a parameter ends up where
/// [`bind`] cannot put a value (see the module docs). Errors are the
/// planner's: the caller plans per value instead, and reports what that
/// gives.
pub(crate) async fn plan(
    logical: &LogicalPlan,
    types: &[DataType],
    state: &SessionState,
) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let typed = map_placeholders(logical.clone(), &mut |placeholder| {
        let index = index_of(&placeholder.id, types.len())?;
        let field = Field::new(&placeholder.id, types[index].clone(), true);
        Ok(Expr::Placeholder(Placeholder::new_with_field(
            placeholder.id.clone(),
            Some(Arc::new(field)),
        )))
    })?;
    let optimized = state.optimize(&typed)?;
    let with_parameters = map_placeholders(optimized, &mut |placeholder| {
        let index = index_of(&placeholder.id, types.len())?;
        let parameter = Parameter {
            name: placeholder.id.clone(),
            index,
            data_type: types[index].clone(),
            signature: Signature::nullary(Volatility::Stable),
        };
        let udf = Arc::new(ScalarUDF::new_from_impl(parameter));
        Ok(Expr::ScalarFunction(ScalarFunction::new_udf(udf, vec![])))
    })?;
    let physical = state
        .query_planner()
        .create_physical_plan(&with_parameters, state)
        .await?;
    let physical = filters_in_scans(physical)?;
    let stuck = physical.exists(|node| Ok(holds_parameter(node)? && !can_bind(node)))?;
    Ok((!stuck).then_some(physical))
}

/// A copy of the generic plan `plan` for one run, with `values` (`$1`
/// first) in place of its parameters and every node's execution state
/// fresh, as
/// [`reset_plan_states`](datafusion::physical_plan::execution_plan::reset_plan_states)
/// gives it. `None` when a value is not of its parameter's type and does
/// not convert to it exactly (see [`exact_value`]): a prepared statement's
/// values are cast to their types before, a statement's own literals
/// (`auto_parameters`) are not, and one that would change meaning is
/// planned from the text instead.
pub(crate) fn bind(
    plan: Arc<dyn ExecutionPlan>,
    values: &[ScalarValue],
) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let mut inexact = false;
    let mut put = |expr: &Arc<dyn PhysicalExpr>| put_values(expr, values, &mut inexact);
    let bound = bind_node(&plan, &mut put)?;
    Ok((!inexact).then_some(bound))
}

/// An expression with a run's values in place of its parameters.
type PutValues<'a> = dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<Arc<dyn PhysicalExpr>> + 'a;

/// `node` and the nodes below it, copied with `put` applied to the
/// expressions that hold parameters. Each node is made once: DataFusion's
/// own walk (`transform_up`) would first give a node its new children,
/// computing its properties again, then this would make it anew.
fn bind_node(
    node: &Arc<dyn ExecutionPlan>,
    put: &mut PutValues<'_>,
) -> Result<Arc<dyn ExecutionPlan>> {
    let children = node
        .children()
        .into_iter()
        .map(|child| bind_node(child, put))
        .collect::<Result<Vec<_>>>()?;
    if !holds_parameter(node)? {
        // The properties computed for the generic plan still hold: a value
        // put below only narrows what the rows may be.
        let node = match children.is_empty() {
            true => Arc::clone(node),
            false => Arc::clone(node).replace_children(
                children,
                ReplaceChildrenOptions::new(ChildrenPropertiesMode::Keep),
            )?,
        };
        return node.reset_state();
    }
    // Filters and projections have one input; our scans none.
    let input = || match children.first() {
        Some(input) => Ok(Arc::clone(input)),
        None => internal_err!("{} has no input", node.name()),
    };
    let bound: Arc<dyn ExecutionPlan> = if let Some(filter) = node.downcast_ref::<FilterExec>() {
        let predicate = put(filter.predicate())?;
        Arc::new(
            FilterExecBuilder::from(filter)
                .with_input(input()?)
                .with_predicate(predicate)
                .build()?,
        )
    } else if let Some(projection) = node.downcast_ref::<ProjectionExec>() {
        let exprs = projection
            .expr()
            .iter()
            .map(|e| {
                Ok(ProjectionExpr {
                    expr: put(&e.expr)?,
                    alias: e.alias.clone(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Arc::new(ProjectionExec::try_new(exprs, input()?)?)
    } else if let Some(scan) = node.downcast_ref::<PartitionScanExec>() {
        Arc::new(scan.map_predicates(&mut *put)?)
    } else {
        return internal_err!("a generic plan holds a parameter in {}", node.name());
    };
    Ok(bound)
}

/// `plan` with each `FilterExec` directly over one of our scans taken into
/// the scan ([`PartitionScanExec::with_filter`]): binding a run's values
/// then makes a new scan only, not a new `FilterExec` (which computes its
/// statistics, interval analysis and equivalences again: ~35 us, a third
/// of binding an UPDATE by key). `EXPLAIN` never shows a generic plan (it
/// plans its statement itself), so this shape is the generic plans' own.
fn filters_in_scans(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    plan.transform_up(|node| {
        let Some(filter) = node.downcast_ref::<FilterExec>() else {
            return Ok(Transformed::no(node));
        };
        let Some(scan) = filter.input().downcast_ref::<PartitionScanExec>() else {
            return Ok(Transformed::no(node));
        };
        if filter.fetch().is_some() {
            return Ok(Transformed::no(node));
        }
        let projection = filter.projection().as_ref().map(|p| p.as_ref());
        Ok(match scan.with_filter(filter.predicate(), projection)? {
            Some(scan) => Transformed::yes(Arc::new(scan) as Arc<dyn ExecutionPlan>),
            None => Transformed::no(node),
        })
    })
    .map(|t| t.data)
}

/// Whether `plan` converts a parameter's value to another type (a cast the
/// planner's type coercion put there: `text_column BETWEEN 1.5 AND $1`
/// compares as floats). A value that does not convert fails such a plan
/// while it runs, where the same statement with the value written in fails
/// while it is planned, in other words.
pub(crate) fn converts_a_parameter(plan: &Arc<dyn ExecutionPlan>) -> Result<bool> {
    let converted = |e: &Arc<dyn PhysicalExpr>| {
        let inner = match (
            e.downcast_ref::<CastExpr>(),
            e.downcast_ref::<TryCastExpr>(),
        ) {
            (Some(cast), _) => cast.expr(),
            (_, Some(cast)) => cast.expr(),
            (None, None) => return Ok(false),
        };
        inner.exists(|i| Ok(parameter_index(i).is_some()))
    };
    plan.exists(|node| evaluates(node, &converted))
}

/// Whether [`bind`] can put values into `node`'s expressions.
fn can_bind(node: &Arc<dyn ExecutionPlan>) -> bool {
    node.downcast_ref::<FilterExec>().is_some()
        || node.downcast_ref::<ProjectionExec>().is_some()
        || node.downcast_ref::<PartitionScanExec>().is_some()
}

/// Whether an expression `node` evaluates holds a [`Parameter`].
fn holds_parameter(node: &Arc<dyn ExecutionPlan>) -> Result<bool> {
    evaluates(node, &|e| Ok(parameter_index(e).is_some()))
}

/// Whether an expression `node` evaluates holds one for which `found` holds.
fn evaluates(
    node: &Arc<dyn ExecutionPlan>,
    found: &dyn Fn(&Arc<dyn PhysicalExpr>) -> Result<bool>,
) -> Result<bool> {
    let mut any = false;
    node.apply_expressions(&mut |expr| {
        any = expr.exists(found)?;
        Ok(if any {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    })?;
    Ok(any)
}

fn parameter_index(expr: &Arc<dyn PhysicalExpr>) -> Option<usize> {
    parameter(expr).map(|p| p.index)
}

fn parameter(expr: &Arc<dyn PhysicalExpr>) -> Option<&Parameter> {
    let function = expr.downcast_ref::<ScalarFunctionExpr>()?;
    function.fun().inner().downcast_ref::<Parameter>()
}

/// `expr` with `values` in place of its parameters; sets `inexact` (and
/// leaves the parameter) where a value does not convert exactly.
fn put_values(
    expr: &Arc<dyn PhysicalExpr>,
    values: &[ScalarValue],
    inexact: &mut bool,
) -> Result<Arc<dyn PhysicalExpr>> {
    Arc::clone(expr)
        .transform_up(|e| {
            let Some(parameter) = parameter(&e) else {
                return Ok(Transformed::no(e));
            };
            let Some(value) = values.get(parameter.index) else {
                return internal_err!(
                    "a generic plan has parameter ${} but {} values were bound",
                    parameter.index + 1,
                    values.len()
                );
            };
            match exact_value(value, &parameter.data_type) {
                Some(value) => Ok(Transformed::yes(
                    Arc::new(Literal::new(value)) as Arc<dyn PhysicalExpr>
                )),
                None => {
                    *inexact = true;
                    Ok(Transformed::no(e))
                }
            }
        })
        .map(|t| t.data)
}

/// `plan` with `f` applied to every placeholder, in subqueries too.
fn map_placeholders(
    plan: LogicalPlan,
    f: &mut dyn FnMut(&Placeholder) -> Result<Expr>,
) -> Result<LogicalPlan> {
    plan.transform_up_with_subqueries(|node| {
        node.map_expressions(|expr| {
            expr.transform_up(|e| match &e {
                Expr::Placeholder(placeholder) => f(placeholder).map(Transformed::yes),
                _ => Ok(Transformed::no(e)),
            })
        })
    })
    .map(|t| t.data)
}

/// The position of `$n`'s value among `count`.
fn index_of(id: &str, count: usize) -> Result<usize> {
    match id.strip_prefix('$').and_then(|n| n.parse::<usize>().ok()) {
        Some(n) if (1..=count).contains(&n) => Ok(n - 1),
        _ => internal_err!("parameter '{id}' of a statement with {count} parameters"),
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::datatypes::Field;
    use datafusion::config::ConfigOptions;

    use super::*;

    #[test]
    fn a_parameter_left_unbound_fails_instead_of_giving_a_value() {
        let parameter = Parameter {
            name: "$1".into(),
            index: 0,
            data_type: DataType::Int64,
            signature: Signature::nullary(Volatility::Stable),
        };
        let args = ScalarFunctionArgs {
            args: vec![],
            arg_fields: vec![],
            number_rows: 1,
            return_field: Arc::new(Field::new("$1", DataType::Int64, true)),
            config_options: Arc::new(ConfigOptions::default()),
        };
        let err = parameter.invoke_with_args(args).unwrap_err();
        assert!(
            err.to_string().contains("$1 was not given a value"),
            "{err}"
        );
    }

    #[test]
    fn parameters_are_numbered_from_one() {
        assert_eq!(index_of("$1", 2).unwrap(), 0);
        assert_eq!(index_of("$2", 2).unwrap(), 1);
        for bad in ["$0", "$3", "1", "$x"] {
            assert!(index_of(bad, 2).is_err(), "{bad}");
        }
    }
}
