//! Prepared queries run from one generic plan: made once, given each run's
//! values in that run's copy. Every run must answer as if it had been
//! planned for its own values and its own caller.

use std::sync::Arc;

use datafusion::common::ScalarValue;
use datafusion::physical_plan::displayable;
use tenantfusion::{Engine, TenantSession};

use crate::common::{admin, engine, engine_on, lines, output_rows, run, user};
use crate::durable::on;

/// `app.notes`: alice has ids 1..=20, bob 101..=120; each body is `b<id>`.
async fn notes(engine: &Engine) {
    run(
        &admin(engine),
        "CREATE USER TABLE app.notes (id BIGINT NOT NULL, body TEXT)",
    )
    .await;
    for (name, first) in [("alice", 1), ("bob", 101)] {
        let values: Vec<String> = (first..first + 20)
            .map(|id| format!("({id}, 'b{id}')"))
            .collect();
        let sql = format!("INSERT INTO app.notes VALUES {}", values.join(", "));
        run(&user(engine, name), &sql).await;
    }
}

/// Runs a prepared statement: whether its plan came from the cache, its rows.
async fn execute(
    session: &TenantSession,
    sql: &str,
    params: Vec<ScalarValue>,
) -> (bool, Vec<String>) {
    let prepared = session.prepare(sql).await.unwrap();
    let query = prepared.execute(params).await.unwrap();
    let from_cache = query.from_cache();
    (from_cache, lines(&query.collect().await.unwrap()))
}

fn ids(range: impl Iterator<Item = i64>) -> Vec<String> {
    range.map(|id| id.to_string()).collect()
}

const AT_LEAST: &str = "SELECT id FROM app.notes WHERE id >= $1 ORDER BY id";

#[tokio::test]
async fn new_values_reuse_one_plan_kept_on_the_second_run() {
    let engine = engine().await;
    notes(&engine).await;
    let alice = user(&engine, "alice");
    let find = alice.prepare(AT_LEAST).await.unwrap();
    for (run, value) in (1..=200i64).enumerate() {
        let query = find.execute(vec![ScalarValue::from(value)]).await.unwrap();
        assert_eq!(query.from_cache(), run >= 2, "run {run}");
        let expected = ids(value.max(1)..=20);
        assert_eq!(lines(&query.collect().await.unwrap()), expected, "{value}");
    }
    // 200 distinct values, one plan: values are not part of what is kept.
    assert_eq!(engine.plan_cache_stats().entries, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_users_interleaving_one_plan_get_exactly_their_own_answers() {
    let engine = engine().await;
    notes(&engine).await;
    // Warm the generic plan so that every task below runs a copy of it.
    let sql = "SELECT id, CAST($1 AS BIGINT) AS asked FROM app.notes WHERE id >= $1 ORDER BY id";
    for _ in 0..3 {
        execute(&user(&engine, "alice"), sql, vec![ScalarValue::from(0i64)]).await;
    }
    let mut tasks = Vec::new();
    for task in 0..16i64 {
        let (name, first) = if task % 2 == 0 {
            ("alice", 1)
        } else {
            ("bob", 101)
        };
        let session = user(&engine, name);
        tasks.push(tokio::spawn(async move {
            let find = session.prepare(sql).await.unwrap();
            for i in 0..40i64 {
                let value = first - 3 + (task * 7 + i * 13) % 26;
                let query = find.execute(vec![ScalarValue::from(value)]).await.unwrap();
                assert!(query.from_cache());
                let got = lines(&query.collect().await.unwrap());
                let expected: Vec<String> = (value.max(first)..first + 20)
                    .map(|id| format!("{id} {value}"))
                    .collect();
                assert_eq!(got, expected, "{name} asked for {value}");
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(engine.plan_cache_stats().entries, 1);
}

#[tokio::test]
async fn values_that_skip_different_segments_find_their_own_rows() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine_on(on(dir.path())).await;
    let admin = admin(&engine);
    run(
        &admin,
        "CREATE USER TABLE app.notes (id BIGINT NOT NULL, body TEXT) WITH (FLUSH_POLICY = 'none')",
    )
    .await;
    let alice = user(&engine, "alice");
    // Two flushed segments with disjoint ids, and rows still in memory.
    for first in [1, 11, 21] {
        let values: Vec<String> = (first..first + 10)
            .map(|id| format!("({id}, 'b{id}')"))
            .collect();
        let sql = format!("INSERT INTO app.notes VALUES {}", values.join(", "));
        run(&alice, &sql).await;
        if first < 21 {
            run(&admin, "FLUSH TABLE app.notes").await;
        }
    }
    let find = "SELECT id, body FROM app.notes WHERE id = $1";
    let between = "SELECT count(*) FROM app.notes WHERE id BETWEEN $1 AND $2";
    for round in 0..3 {
        for value in [5i64, 15, 25, 35, 0] {
            let (_, got) = execute(&alice, find, vec![ScalarValue::from(value)]).await;
            let expected = match value {
                1..=30 => vec![format!("{value} b{value}")],
                _ => vec![],
            };
            assert_eq!(got, expected, "round {round}, id {value}");
        }
        for (low, high, expected) in [(5i64, 15i64, "11"), (12, 28, "17"), (40, 50, "0")] {
            let params = vec![ScalarValue::from(low), ScalarValue::from(high)];
            let (_, got) = execute(&alice, between, params).await;
            assert_eq!(got, [expected], "round {round}, {low}..{high}");
        }
    }
    // Bob reads the same plans and sees none of alice's rows.
    let bob = user(&engine, "bob");
    let (from_cache, got) = execute(&bob, find, vec![ScalarValue::from(5i64)]).await;
    assert!(from_cache);
    assert!(got.is_empty(), "{got:?}");
}

#[tokio::test]
async fn a_run_shows_its_own_values_and_metrics_and_no_other_runs() {
    let engine = engine().await;
    notes(&engine).await;
    let alice = user(&engine, "alice");
    let find = alice.prepare(AT_LEAST).await.unwrap();
    for value in [1i64, 2] {
        find.execute(vec![ScalarValue::from(value)])
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
    }
    let first = find
        .execute(vec![ScalarValue::from(424242i64)])
        .await
        .unwrap();
    let first_plan = Arc::clone(first.plan().unwrap());
    assert!(
        first
            .collect()
            .await
            .unwrap()
            .iter()
            .all(|b| b.num_rows() == 0)
    );
    let second = find.execute(vec![ScalarValue::from(17i64)]).await.unwrap();
    assert!(second.from_cache());
    let plan = Arc::clone(second.plan().unwrap());
    let text = displayable(plan.as_ref()).indent(true).to_string();
    assert!(text.contains("17"), "{text}");
    assert!(!text.contains("424242"), "{text}");
    assert!(
        !text.contains("$1"),
        "a run's plan holds values only: {text}"
    );
    assert_eq!(output_rows(&plan), 0, "nothing counted before it runs");
    assert_eq!(lines(&second.collect().await.unwrap()), ids(17..=20));
    // Each copy counts its own run: 20 rows scanned, then 4 out of the
    // filter and of the sort here, none in the first.
    assert_eq!(output_rows(&plan), 20 + 4 + 4);
    assert_eq!(output_rows(&first_plan), 20);
}

/// The rows a statement of a test case must give for a value.
type Expected = fn(i64) -> Vec<String>;

#[tokio::test]
async fn a_parameter_where_no_value_can_be_put_is_planned_per_value() {
    let engine = engine().await;
    notes(&engine).await;
    let alice = user(&engine, "alice");
    let cases: [(&str, Expected); 3] = [
        // In an aggregate's filter: the aggregate cannot be given a value.
        (
            "SELECT count(*) FILTER (WHERE id > $1) FROM app.notes",
            |v| vec![(20 - v.clamp(0, 20)).to_string()],
        ),
        // A LIMIT: DataFusion plans only literal ones.
        ("SELECT id FROM app.notes ORDER BY id LIMIT $1", |v| {
            ids(1..=v.min(20))
        }),
        // In a sort key.
        (
            "SELECT id FROM app.notes ORDER BY id % $1, id LIMIT 3",
            |v| {
                let mut all: Vec<i64> = (1..=20).collect();
                all.sort_by_key(|id| (id % v, *id));
                ids(all.into_iter().take(3))
            },
        ),
    ];
    for (i, (sql, expected)) in cases.into_iter().enumerate() {
        run(&alice, &format!("PREPARE q{i}(BIGINT) AS {sql}")).await;
        for (run, value) in [3i64, 7, 4, 9, 5, 11].into_iter().enumerate() {
            let query = alice.sql(&format!("EXECUTE q{i}({value})")).await.unwrap();
            assert!(!query.from_cache(), "{sql}: run {run}, new values plan");
            let got = lines(&query.collect().await.unwrap());
            assert_eq!(got, expected(value), "{sql} with {value}");
        }
    }
    assert_eq!(engine.plan_cache_stats().entries, 0);
}

#[tokio::test]
async fn a_value_in_the_output_may_be_null_or_not() {
    let engine = engine().await;
    notes(&engine).await;
    let bob = user(&engine, "bob");
    run(
        &bob,
        "PREPARE labelled(BIGINT, TEXT) AS \
         SELECT id, $2 AS label FROM app.notes WHERE id >= $1 ORDER BY id",
    )
    .await;
    for (run, label) in [Some("'x'"), None, Some("'y'"), None, Some("'z'")]
        .into_iter()
        .enumerate()
    {
        let sql = format!("EXECUTE labelled(119, {})", label.unwrap_or("NULL"));
        let query = bob.sql(&sql).await.unwrap();
        assert_eq!(query.from_cache(), run >= 2, "run {run}");
        let batches = query.collect().await.unwrap();
        let shown = label.map_or("", |l| l.trim_matches('\''));
        assert_eq!(
            lines(&batches),
            [format!("119 {shown}"), format!("120 {shown}")]
        );
        let column = batches[0].column(1);
        assert_eq!(column.null_count(), if label.is_some() { 0 } else { 2 });
    }
}

#[tokio::test]
async fn sql_execute_of_two_users_shares_the_plan_not_the_rows() {
    let engine = engine().await;
    notes(&engine).await;
    let alice = user(&engine, "alice");
    let bob = user(&engine, "bob");
    for session in [&alice, &bob] {
        run(
            session,
            "PREPARE at_least(BIGINT) AS SELECT id FROM app.notes WHERE id >= $1 ORDER BY id",
        )
        .await;
    }
    for value in [18i64, 119, 19, 120, 20] {
        let got = lines(&run(&alice, &format!("EXECUTE at_least({value})")).await);
        assert_eq!(got, ids(value.max(1)..=20), "alice, {value}");
        let got = lines(&run(&bob, &format!("EXECUTE at_least({value})")).await);
        assert_eq!(got, ids(value.max(101)..=120), "bob, {value}");
    }
    assert_eq!(engine.plan_cache_stats().entries, 1);
}
