//! Literal values taken out of SQL text as parameters, so that statements
//! that differ only in their values share one generic plan.
//!
//! `SELECT body FROM notes WHERE id = 7` and `... WHERE id = 8` are one
//! statement to the planner but two texts to the plan cache: each would be
//! planned, and kept, on its own. [`parameterise`] rewrites such a statement
//! as `... WHERE id = $1` with the value `7` beside it; the session then
//! runs it as it runs a prepared statement, from the generic plan of the
//! rewritten text (see `generic_plan`), which serves every value.
//!
//! The rewrite is deliberately narrow, since a literal and a parameter do
//! not always mean the same thing to DataFusion:
//!
//! - Only literals in the `WHERE` of a plain `SELECT` (a `WITH` before it is
//!   fine), of an `UPDATE` or of a `DELETE`, and the values an `UPDATE`
//!   assigns (`SET a = 5`), are taken out. `LIMIT`, `ORDER BY 1`,
//!   `GROUP BY 1`, projections, function arguments, `JOIN ... ON` and
//!   subqueries keep their literals: there a value decides the plan's
//!   shape, or a position, or the type of a result.
//! - In the `WHERE`, a literal is taken out only where it is compared with
//!   something that is not itself a literal: `x = 5`, `5 < x`, `x <> 'a'`,
//!   `x IN (1, 2, 3)`, `x BETWEEN 1 AND 9`, under `AND`, `OR`, `NOT` and
//!   parentheses. Its parameter then takes the type of what it is compared
//!   with, as DataFusion infers it.
//! - Only integers that fit `BIGINT` and single-quoted strings are taken
//!   out, and a value is used only where it converts to its parameter's type
//!   exactly ([`exact_value`]): an integer to any integer type it fits, or
//!   to a float or decimal that holds it exactly; a string to a string type.
//!   Otherwise (`int_column = 1.5`, `int_column = '5'`, an `INT` column
//!   compared with 5,000,000,000) the statement is planned from its text, as
//!   if nothing had been taken out.
//! - A statement that already holds a parameter is left alone.

use std::ops::ControlFlow;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::{
    BinaryOperator, Expr, SetExpr, Statement as SqlStatement, UnaryOperator, Value, Visit, Visitor,
};

/// A statement with literal values taken out as parameters `$1, $2, ...`,
/// and those values, `$1`'s first.
#[derive(Debug, Clone)]
pub(crate) struct Parameterised {
    /// The statement with `$n` where its values were.
    pub statement: DFStatement,
    /// The values, as the SQL planner makes them of the literals.
    pub values: Vec<ScalarValue>,
}

/// `statement` with the literals of its filters (and an UPDATE's assigned
/// values) taken out as parameters, as the module docs describe; `None` when
/// there are none to take out or the statement is of another kind.
pub(crate) fn parameterise(statement: &DFStatement) -> Option<Parameterised> {
    let DFStatement::Statement(sql) = statement else {
        return None;
    };
    if holds_parameter(sql) {
        return None;
    }
    let mut sql = sql.as_ref().clone();
    let mut values = Vec::new();
    match &mut sql {
        SqlStatement::Query(query) => {
            let SetExpr::Select(select) = query.body.as_mut() else {
                return None;
            };
            take_from_predicate(select.selection.as_mut(), &mut values);
        }
        SqlStatement::Update(update) => {
            for assignment in &mut update.assignments {
                take_literal(&mut assignment.value, &mut values);
            }
            take_from_predicate(update.selection.as_mut(), &mut values);
        }
        SqlStatement::Delete(delete) => {
            take_from_predicate(delete.selection.as_mut(), &mut values);
        }
        _ => return None,
    }
    (!values.is_empty()).then(|| Parameterised {
        statement: DFStatement::Statement(Box::new(sql)),
        values,
    })
}

/// `value` as a value of a parameter of type `ty` that means what the
/// literal `value` means where the parameter stands (see the module docs);
/// `None` when the two could differ.
pub(crate) fn exact_value(value: &ScalarValue, ty: &DataType) -> Option<ScalarValue> {
    let from = value.data_type();
    if &from == ty {
        return Some(value.clone());
    }
    let numeric = ty.is_integer() || ty.is_floating() || matches!(ty, DataType::Decimal128(..));
    let string =
        |t: &DataType| matches!(t, DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8);
    match from {
        // Integer casts fail on overflow (never wrap); a float or decimal
        // that does not hold the integer exactly reads back otherwise.
        DataType::Int64 if numeric => {
            let cast = value.cast_to(ty).ok()?;
            (cast.cast_to(&from).ok()? == *value).then_some(cast)
        }
        ref s if string(s) && string(ty) => value.cast_to(ty).ok(),
        _ => None,
    }
}

/// Whether the statement holds a parameter (`$1`, `?`) already.
fn holds_parameter(statement: &SqlStatement) -> bool {
    struct Finder;
    impl Visitor for Finder {
        type Break = ();
        fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
            match expr {
                Expr::Value(v) if matches!(v.value, Value::Placeholder(_)) => {
                    ControlFlow::Break(())
                }
                _ => ControlFlow::Continue(()),
            }
        }
    }
    statement.visit(&mut Finder).is_break()
}

/// Takes the literals out of the comparisons of a filter.
fn take_from_predicate(predicate: Option<&mut Expr>, values: &mut Vec<ScalarValue>) {
    let Some(predicate) = predicate else {
        return;
    };
    match predicate {
        Expr::BinaryOp { left, op, right } => match op {
            BinaryOperator::And | BinaryOperator::Or => {
                take_from_predicate(Some(left), values);
                take_from_predicate(Some(right), values);
            }
            BinaryOperator::Eq
            | BinaryOperator::NotEq
            | BinaryOperator::Lt
            | BinaryOperator::LtEq
            | BinaryOperator::Gt
            | BinaryOperator::GtEq => {
                if !is_literal(left) {
                    take_literal(right, values);
                } else if !is_literal(right) {
                    take_literal(left, values);
                }
            }
            _ => {}
        },
        Expr::UnaryOp {
            op: UnaryOperator::Not,
            expr,
        }
        | Expr::Nested(expr) => take_from_predicate(Some(expr), values),
        Expr::InList { expr, list, .. } if !is_literal(expr) => {
            for item in list {
                take_literal(item, values);
            }
        }
        Expr::Between {
            expr, low, high, ..
        } if !is_literal(expr) => {
            take_literal(low, values);
            take_literal(high, values);
        }
        _ => {}
    }
}

fn is_literal(expr: &Expr) -> bool {
    matches!(expr, Expr::Value(_))
}

/// Replaces `expr` with the next parameter if it is a literal taken out:
/// an integer that fits `BIGINT` or a single-quoted string.
fn take_literal(expr: &mut Expr, values: &mut Vec<ScalarValue>) {
    let Expr::Value(literal) = expr else {
        return;
    };
    let value = match &literal.value {
        Value::Number(digits, false) => match digits.parse::<i64>() {
            Ok(n) => ScalarValue::Int64(Some(n)),
            Err(_) => return,
        },
        Value::SingleQuotedString(s) => ScalarValue::Utf8(Some(s.clone())),
        _ => return,
    };
    values.push(value);
    *expr = Expr::Value(Value::Placeholder(format!("${}", values.len())).with_empty_span());
}

#[cfg(test)]
mod tests {
    use datafusion::sql::parser::DFParser;

    use super::*;

    fn rewrite(sql: &str) -> Option<(String, Vec<ScalarValue>)> {
        let statement = DFParser::parse_sql(sql).unwrap().pop_front().unwrap();
        parameterise(&statement).map(|p| (p.statement.to_string(), p.values))
    }

    #[test]
    fn filters_and_assigned_values_are_taken_out() {
        let (text, values) =
            rewrite("SELECT a FROM t WHERE a = 5 AND (b > 'x' OR NOT c IN (1, 2)) LIMIT 10")
                .unwrap();
        assert_eq!(
            text,
            "SELECT a FROM t WHERE a = $1 AND (b > $2 OR NOT c IN ($3, $4)) LIMIT 10"
        );
        assert_eq!(
            values,
            [
                ScalarValue::Int64(Some(5)),
                ScalarValue::from("x"),
                ScalarValue::Int64(Some(1)),
                ScalarValue::Int64(Some(2))
            ]
        );
        let (text, _) = rewrite("UPDATE t SET a = 'y', b = b + 1 WHERE id = 7").unwrap();
        assert_eq!(text, "UPDATE t SET a = $1, b = b + 1 WHERE id = $2");
        let (text, _) = rewrite("DELETE FROM t WHERE 3 <= id AND id BETWEEN 1 AND 9").unwrap();
        assert_eq!(
            text,
            "DELETE FROM t WHERE $1 <= id AND id BETWEEN $2 AND $3"
        );
    }

    #[test]
    fn literals_that_shape_the_plan_or_are_not_compared_stay() {
        for sql in [
            "SELECT a FROM t LIMIT 5",
            "SELECT a, 1 FROM t ORDER BY 1",
            "SELECT a FROM t GROUP BY 1",
            "SELECT a FROM t WHERE 1 = 1",
            "SELECT a FROM t WHERE a = 1.5",
            "SELECT a FROM t WHERE a = -1",
            "SELECT a FROM t WHERE a = 99999999999999999999",
            "SELECT a FROM t WHERE a = DATE '2024-01-01'",
            "SELECT a FROM t WHERE a = $1 AND b = 2",
            "SELECT a FROM t WHERE f(a, 3)",
            "SELECT a FROM t JOIN u ON t.a = 1",
            "SELECT a FROM t WHERE a IN (SELECT b FROM u WHERE b = 2)",
            "SELECT a FROM t UNION SELECT a FROM u WHERE a = 1",
            "INSERT INTO t VALUES (1)",
            "EXPLAIN SELECT a FROM t WHERE a = 1",
        ] {
            assert!(rewrite(sql).is_none(), "{sql}");
        }
    }

    #[test]
    fn a_value_is_used_only_where_it_converts_exactly() {
        let five = ScalarValue::Int64(Some(5));
        assert_eq!(
            exact_value(&five, &DataType::Int32),
            Some(ScalarValue::Int32(Some(5)))
        );
        assert_eq!(
            exact_value(&five, &DataType::Float64),
            Some(ScalarValue::Float64(Some(5.0)))
        );
        assert!(exact_value(&five, &DataType::Decimal128(10, 2)).is_some());
        let big = ScalarValue::Int64(Some(5_000_000_000));
        assert_eq!(exact_value(&big, &DataType::Int32), None);
        assert_eq!(
            exact_value(&ScalarValue::Int64(Some(-1)), &DataType::UInt8),
            None
        );
        let huge = ScalarValue::Int64(Some((1 << 53) + 1));
        assert_eq!(exact_value(&huge, &DataType::Float64), None);
        assert_eq!(exact_value(&five, &DataType::Utf8), None);
        assert_eq!(exact_value(&ScalarValue::from("5"), &DataType::Int64), None);
        assert_eq!(
            exact_value(&ScalarValue::from("x"), &DataType::Utf8View),
            Some(ScalarValue::Utf8View(Some("x".into())))
        );
        assert_eq!(
            exact_value(&ScalarValue::from("2024-01-01"), &DataType::Date32),
            None
        );
    }
}
