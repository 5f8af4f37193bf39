//! Which topics a scan's filters pin: what lets a stream table fed by a
//! live source read (and subscribe upstream) only the topics a query asks
//! for.

use std::sync::Arc;

use datafusion::common::ScalarValue;
use datafusion::logical_expr::{Expr, Operator};

/// The topics a set of pushed-down filters allows, when one of them pins
/// `column` to literals (`= 'A'`, `IN ('A', 'B')`, or `OR`s of these);
/// `None` when they do not, so every topic is read.
pub fn topics_in(filters: &[Expr], column: &str) -> Option<Vec<Arc<str>>> {
    let mut allowed: Option<Vec<Arc<str>>> = None;
    for filter in filters {
        if let Some(topics) = pinned(filter, column) {
            allowed = Some(match allowed {
                None => topics,
                Some(before) => before.into_iter().filter(|t| topics.contains(t)).collect(),
            });
        }
    }
    allowed.map(|mut topics| {
        topics.sort();
        topics.dedup();
        topics
    })
}

fn pinned(expr: &Expr, column: &str) -> Option<Vec<Arc<str>>> {
    let is_column = |e: &Expr| matches!(e, Expr::Column(c) if c.name == column);
    let literal = |e: &Expr| match e {
        Expr::Literal(ScalarValue::Utf8(Some(s)), _)
        | Expr::Literal(ScalarValue::Utf8View(Some(s)), _)
        | Expr::Literal(ScalarValue::LargeUtf8(Some(s)), _) => Some(Arc::from(s.as_str())),
        _ => None,
    };
    match expr {
        Expr::BinaryExpr(b) if b.op == Operator::Eq => {
            if is_column(&b.left) {
                literal(&b.right).map(|t| vec![t])
            } else if is_column(&b.right) {
                literal(&b.left).map(|t| vec![t])
            } else {
                None
            }
        }
        Expr::BinaryExpr(b) if b.op == Operator::And => {
            match (pinned(&b.left, column), pinned(&b.right, column)) {
                (Some(left), Some(right)) => {
                    Some(left.into_iter().filter(|t| right.contains(t)).collect())
                }
                (one, other) => one.or(other),
            }
        }
        Expr::BinaryExpr(b) if b.op == Operator::Or => {
            let mut left = pinned(&b.left, column)?;
            left.extend(pinned(&b.right, column)?);
            Some(left)
        }
        Expr::InList(list) if !list.negated && is_column(&list.expr) => {
            list.list.iter().map(literal).collect()
        }
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
}
