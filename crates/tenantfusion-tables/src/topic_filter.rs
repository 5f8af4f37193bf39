//! Which topics a scan's filters pin: what lets a stream table fed by a
//! live source read (and subscribe upstream) only the topics a query asks
//! for.

use std::sync::Arc;

use datafusion::common::ScalarValue;
use datafusion::logical_expr::{Expr, Operator};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{BinaryExpr, Column, InListExpr, Literal};

/// The topics a set of pushed-down filters allows, when one of them pins
/// `column` to literals (`= 'A'`, `IN ('A', 'B')`, or `OR`s of these);
/// `None` when they do not, so every topic is read.
pub fn topics_in(filters: &[Expr], column: &str) -> Option<Vec<Arc<str>>> {
    let mut allowed: Option<Vec<Arc<str>>> = None;
    for filter in filters {
        if let Some(topics) = pinned(filter, column, &logical) {
            allowed = Some(match allowed {
                None => topics,
                Some(before) => before.into_iter().filter(|t| topics.contains(t)).collect(),
            });
        }
    }
    allowed.map(sorted)
}

/// [`topics_in`] of a physical predicate: how a scan planned with a
/// parameter where its topic goes (a generic plan) reads only the topics
/// the value given to a run allows.
pub fn topics_pinned_by(predicate: &Arc<dyn PhysicalExpr>, column: &str) -> Option<Vec<Arc<str>>> {
    pinned(predicate, column, &physical).map(sorted)
}

fn sorted(mut topics: Vec<Arc<str>>) -> Vec<Arc<str>> {
    topics.sort();
    topics.dedup();
    topics
}

/// What [`pinned`] looks for in an expression, logical or physical alike.
enum Shape<'a, E> {
    Eq(&'a E, &'a E),
    And(&'a E, &'a E),
    Or(&'a E, &'a E),
    In(&'a E, Vec<&'a E>),
    Column(&'a str),
    Topic(Arc<str>),
    Other,
}

fn topic(value: &ScalarValue) -> Option<Arc<str>> {
    match value {
        ScalarValue::Utf8(Some(s))
        | ScalarValue::Utf8View(Some(s))
        | ScalarValue::LargeUtf8(Some(s)) => Some(Arc::from(s.as_str())),
        _ => None,
    }
}

fn logical(expr: &Expr) -> Shape<'_, Expr> {
    match expr {
        Expr::BinaryExpr(b) => match b.op {
            Operator::Eq => Shape::Eq(&b.left, &b.right),
            Operator::And => Shape::And(&b.left, &b.right),
            Operator::Or => Shape::Or(&b.left, &b.right),
            _ => Shape::Other,
        },
        Expr::InList(list) if !list.negated => Shape::In(&list.expr, list.list.iter().collect()),
        Expr::Column(c) => Shape::Column(&c.name),
        Expr::Literal(value, _) => topic(value).map_or(Shape::Other, Shape::Topic),
        _ => Shape::Other,
    }
}

fn physical(expr: &Arc<dyn PhysicalExpr>) -> Shape<'_, Arc<dyn PhysicalExpr>> {
    if let Some(b) = expr.downcast_ref::<BinaryExpr>() {
        match b.op() {
            Operator::Eq => Shape::Eq(b.left(), b.right()),
            Operator::And => Shape::And(b.left(), b.right()),
            Operator::Or => Shape::Or(b.left(), b.right()),
            _ => Shape::Other,
        }
    } else if let Some(list) = expr.downcast_ref::<InListExpr>() {
        match list.negated() {
            false => Shape::In(list.expr(), list.list().iter().collect()),
            true => Shape::Other,
        }
    } else if let Some(c) = expr.downcast_ref::<Column>() {
        Shape::Column(c.name())
    } else if let Some(l) = expr.downcast_ref::<Literal>() {
        topic(l.value()).map_or(Shape::Other, Shape::Topic)
    } else {
        Shape::Other
    }
}

/// The topics `expr` pins `column` to, read through `shape`.
fn pinned<'a, E>(
    expr: &'a E,
    column: &str,
    shape: &dyn Fn(&'a E) -> Shape<'a, E>,
) -> Option<Vec<Arc<str>>> {
    let is_column = |e: &'a E| matches!(shape(e), Shape::Column(c) if c == column);
    let literal = |e: &'a E| match shape(e) {
        Shape::Topic(t) => Some(t),
        _ => None,
    };
    match shape(expr) {
        Shape::Eq(left, right) => {
            if is_column(left) {
                literal(right).map(|t| vec![t])
            } else if is_column(right) {
                literal(left).map(|t| vec![t])
            } else {
                None
            }
        }
        Shape::And(left, right) => {
            match (pinned(left, column, shape), pinned(right, column, shape)) {
                (Some(left), Some(right)) => {
                    Some(left.into_iter().filter(|t| right.contains(t)).collect())
                }
                (one, other) => one.or(other),
            }
        }
        Shape::Or(left, right) => {
            let mut left = pinned(left, column, shape)?;
            left.extend(pinned(right, column, shape)?);
            Some(left)
        }
        Shape::In(e, list) if is_column(e) => list.into_iter().map(literal).collect(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::logical_expr::{col, lit};

    #[test]
    fn topic_filters_are_recognised() {
        let t = |v: &[&str]| Some(v.iter().map(|s| Arc::from(*s)).collect::<Vec<Arc<str>>>());
        assert_eq!(
            topics_in(&[col("symbol").eq(lit("A"))], "symbol"),
            t(&["A"])
        );
        assert_eq!(
            topics_in(
                &[col("symbol").in_list(vec![lit("B"), lit("A")], false)],
                "symbol"
            ),
            t(&["A", "B"])
        );
        assert_eq!(
            topics_in(
                &[
                    lit("A").eq(col("symbol")).or(col("symbol").eq(lit("C"))),
                    col("symbol").in_list(vec![lit("C"), lit("D")], false),
                ],
                "symbol"
            ),
            t(&["C"])
        );
        // One filter holding a conjunction, as a live query's WHERE arrives.
        assert_eq!(
            topics_in(
                &[col("price")
                    .gt(lit(1))
                    .and(col("symbol").in_list(vec![lit("A"), lit("B")], false))
                    .and(col("symbol").eq(lit("B")))],
                "symbol"
            ),
            t(&["B"])
        );
        // Not pinned: every topic is read.
        assert_eq!(topics_in(&[col("symbol").gt(lit("A"))], "symbol"), None);
        assert_eq!(
            topics_in(
                &[col("symbol").eq(lit("A")).or(col("price").gt(lit(1)))],
                "symbol"
            ),
            None
        );
        assert_eq!(topics_in(&[col("other").eq(lit("A"))], "symbol"), None);
    }

    #[test]
    fn physical_predicates_pin_topics_as_logical_filters_do() {
        use datafusion::arrow::datatypes::{DataType, Field, Schema};
        use datafusion::common::DFSchema;
        use datafusion::prelude::SessionContext;

        let schema = Schema::new(vec![
            Field::new("symbol", DataType::Utf8, false),
            Field::new("price", DataType::Int64, true),
        ]);
        let schema = DFSchema::try_from(schema).unwrap();
        let state = SessionContext::new().state();
        let physical = |e: Expr| state.create_physical_expr(e, &schema).unwrap();
        for filter in [
            col("symbol").eq(lit("A")),
            col("price")
                .gt(lit(1))
                .and(col("symbol").in_list(vec![lit("B"), lit("A")], false)),
            lit("A").eq(col("symbol")).or(col("symbol").eq(lit("C"))),
            col("symbol").gt(lit("A")),
            col("symbol").eq(lit("A")).or(col("price").gt(lit(1))),
            col("symbol").in_list(vec![lit("A")], true),
        ] {
            assert_eq!(
                topics_pinned_by(&physical(filter.clone()), "symbol"),
                topics_in(std::slice::from_ref(&filter), "symbol"),
                "{filter}"
            );
        }
    }
}
