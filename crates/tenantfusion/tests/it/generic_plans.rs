//! Prepared queries run from one generic plan: made once, given each run's
//! values in that run's copy. Every run must answer as if it had been
//! planned for its own values and its own caller.

use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::physical_plan::displayable;
use tenantfusion::{Engine, TenantSession};

use crate::common::{admin, engine, engine_on, error_code, lines, output_rows, rows, run, user};
use crate::durable::on;

/// `app.notes`: alice has ids 1..=20, bob 101..=120; each body is `b<id>`.
pub(crate) async fn notes(engine: &Engine) {
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

/// How a statement with values is sent: prepared and bound to them, or as
/// SQL text with them written in as literals (taken out again as
/// parameters, see `auto_parameters`). Both run from one generic plan.
#[derive(Debug, Clone, Copy)]
enum Form {
    Prepared,
    Text,
}

impl Form {
    const BOTH: [Form; 2] = [Form::Prepared, Form::Text];

    /// Runs `sql` (with `$1, $2, ...`) with `params` in this form: whether
    /// its plan came from the cache, and its rows.
    async fn run(
        self,
        session: &TenantSession,
        sql: &str,
        params: Vec<ScalarValue>,
    ) -> (bool, Vec<String>) {
        let query = self
            .query(session, sql, params)
            .await
            .unwrap_or_else(|e| panic!("{self:?} {sql}: {e}"));
        let from_cache = query.from_cache();
        (from_cache, lines(&query.collect().await.unwrap()))
    }

    /// The statement `sql` with `params` in this form, ready to run.
    async fn query(
        self,
        session: &TenantSession,
        sql: &str,
        params: Vec<ScalarValue>,
    ) -> tenantfusion::Result<tenantfusion::Query> {
        match self {
            Form::Prepared => session.prepare(sql).await?.execute(params).await,
            Form::Text => {
                let mut text = sql.to_string();
                // `$10` before `$1`.
                for (i, value) in params.iter().enumerate().rev() {
                    let literal = match value {
                        ScalarValue::Utf8(Some(s)) => format!("'{}'", s.replace('\'', "''")),
                        other => other.to_string(),
                    };
                    text = text.replace(&format!("${}", i + 1), &literal);
                }
                session.sql(&text).await
            }
        }
    }
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
    let sql = "SELECT id, body FROM app.notes WHERE id >= $1 AND id < $2 ORDER BY id";
    let mut tasks = Vec::new();
    for form in Form::BOTH {
        // Warm the generic plan so that every task below runs a copy of it.
        let warm = || vec![ScalarValue::from(0i64), ScalarValue::from(1i64)];
        for _ in 0..3 {
            form.run(&user(&engine, "alice"), sql, warm()).await;
        }
        for task in 0..8i64 {
            let (name, first) = if task % 2 == 0 {
                ("alice", 1)
            } else {
                ("bob", 101)
            };
            let session = user(&engine, name);
            tasks.push(tokio::spawn(async move {
                for i in 0..40i64 {
                    // Values inside and outside the caller's own ids.
                    let low = (task * 7 + i * 13) % 140;
                    let params = vec![ScalarValue::from(low), ScalarValue::from(low + 3)];
                    let (from_cache, got) = form.run(&session, sql, params).await;
                    assert!(from_cache, "{form:?}");
                    let expected: Vec<String> = (low..low + 3)
                        .filter(|id| (first..first + 20).contains(id))
                        .map(|id| format!("{id} b{id}"))
                        .collect();
                    assert_eq!(got, expected, "{form:?}: {name} asked for {low}");
                }
            }));
        }
    }
    for task in tasks {
        task.await.unwrap();
    }
    // One plan for the prepared statement, one for the text.
    assert_eq!(engine.plan_cache_stats().entries, 2);
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
    for (round, form) in (0..6).zip(Form::BOTH.into_iter().cycle()) {
        for value in [5i64, 15, 25, 35, 0] {
            let (_, got) = form.run(&alice, find, vec![ScalarValue::from(value)]).await;
            let expected = match value {
                1..=30 => vec![format!("{value} b{value}")],
                _ => vec![],
            };
            assert_eq!(got, expected, "round {round}, id {value}");
        }
        for (low, high, expected) in [(5i64, 15i64, "11"), (12, 28, "17"), (40, 50, "0")] {
            let params = vec![ScalarValue::from(low), ScalarValue::from(high)];
            let (_, got) = form.run(&alice, between, params).await;
            assert_eq!(got, [expected], "round {round}, {low}..{high}");
        }
    }
    // Bob reads the same plans and sees none of alice's rows.
    let bob = user(&engine, "bob");
    for form in Form::BOTH {
        let (from_cache, got) = form.run(&bob, find, vec![ScalarValue::from(5i64)]).await;
        assert!(from_cache, "{form:?}");
        assert!(got.is_empty(), "{form:?}: {got:?}");
    }
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
    // Each copy counts its own run: 4 rows out of the scan (which takes
    // the filter in a generic plan) and 4 out of the sort here, none in
    // the first.
    assert_eq!(output_rows(&plan), 4 + 4);
    assert_eq!(output_rows(&first_plan), 0);
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

/// What one UPDATE or DELETE run reports: the rows it changed.
async fn changed(query: tenantfusion::Query) -> String {
    lines(&query.collect().await.unwrap()).join(",")
}

#[tokio::test]
async fn updates_and_deletes_by_key_plan_once_and_touch_the_callers_rows_only() {
    let update = "UPDATE app.notes SET body = $1 WHERE id = $2";
    let first = engine().await;
    notes(&first).await;
    let types = user(&first, "alice").prepare(update).await.unwrap();
    assert_eq!(
        types.parameter_types(),
        [DataType::Utf8View, DataType::Int64]
    );
    for form in Form::BOTH {
        let engine = engine().await;
        notes(&engine).await;
        let alice = user(&engine, "alice");
        let bob = user(&engine, "bob");
        let set = |body: &str, id: i64| vec![ScalarValue::from(body), ScalarValue::from(id)];
        for (run, id) in (1..=10i64).enumerate() {
            let (from_cache, changed) = form.run(&alice, update, set("x", id)).await;
            // Bob's run of the same statement below is its second.
            assert_eq!(from_cache, run >= 1, "{form:?} run {run}");
            assert_eq!(changed, ["1"], "{form:?}: alice's id {id}");
            // Bob has no row with alice's ids, and his own change only his.
            let (from_cache, changed) = form.run(&bob, update, set("y", id)).await;
            assert_eq!(from_cache, run >= 1, "{form:?} run {run}");
            assert_eq!(changed, ["0"], "{form:?}");
            let (_, changed) = form.run(&bob, update, set("y", 100 + id)).await;
            assert_eq!(changed, ["1"], "{form:?}");
        }
        let delete = "DELETE FROM app.notes WHERE id = $1";
        for id in [2i64, 4, 6, 104, 999] {
            let (_, changed) = form.run(&alice, delete, vec![ScalarValue::from(id)]).await;
            assert_eq!(changed, [if id < 100 { "1" } else { "0" }], "{form:?}");
            let (_, changed) = form.run(&bob, delete, vec![ScalarValue::from(id)]).await;
            assert_eq!(changed, [if id == 104 { "1" } else { "0" }], "{form:?}");
        }
        // One plan per statement, whatever the values and users.
        assert_eq!(engine.plan_cache_stats().entries, 2, "{form:?}");
        let alice_rows = rows(&alice, "SELECT id, body FROM app.notes ORDER BY id").await;
        let expected: Vec<String> = (1..=20i64)
            .filter(|id| ![2, 4, 6].contains(id))
            .map(|id| match id {
                1..=10 => format!("{id} x"),
                _ => format!("{id} b{id}"),
            })
            .collect();
        assert_eq!(alice_rows, expected, "{form:?}");
        let bob_rows = rows(&bob, "SELECT id, body FROM app.notes ORDER BY id").await;
        let expected: Vec<String> = (101..=120i64)
            .filter(|id| *id != 104)
            .map(|id| match id {
                101..=110 => format!("{id} y"),
                _ => format!("{id} b{id}"),
            })
            .collect();
        assert_eq!(bob_rows, expected, "{form:?}");
    }
}

/// Runs the same UPDATE/DELETE workload on two durable engines, one through
/// prepared statements (generic plans) and one as SQL text, with a flush in
/// the middle; both must report the same changes and end with the same
/// rows, also after the prepared one is opened again.
#[tokio::test]
async fn prepared_changes_match_sql_text_on_flushed_durable_rows_and_survive_reopen() {
    let prepared_dir = tempfile::tempdir().unwrap();
    let text_dir = tempfile::tempdir().unwrap();
    let mut engines = Vec::new();
    // The text is planned as written: the reference.
    for (dir, auto) in [(&prepared_dir, true), (&text_dir, false)] {
        let engine = engine_on(on(dir.path()).with_auto_parameters(auto)).await;
        run(
            &admin(&engine),
            "CREATE USER TABLE app.notes (id BIGINT NOT NULL, body TEXT) WITH (FLUSH_POLICY = 'none')",
        )
        .await;
        for name in ["alice", "bob"] {
            let values: Vec<String> = (0..25).map(|id| format!("({id}, '{name}{id}')")).collect();
            let sql = format!("INSERT INTO app.notes VALUES {}", values.join(", "));
            run(&user(&engine, name), &sql).await;
        }
        run(&admin(&engine), "FLUSH TABLE app.notes").await;
        engines.push(engine);
    }
    let sessions: Vec<[TenantSession; 2]> = engines
        .iter()
        .map(|e| [user(e, "alice"), user(e, "bob")])
        .collect();
    let update = "UPDATE app.notes SET body = $1 WHERE id = $2";
    let delete = "DELETE FROM app.notes WHERE id = $1";
    let mut statements = Vec::new();
    for session in &sessions[0] {
        statements.push((
            session.prepare(update).await.unwrap(),
            session.prepare(delete).await.unwrap(),
        ));
    }
    for i in 0..60i64 {
        let who = (i % 2) as usize;
        let id = (i * 7) % 27;
        let (prepared, text) = if i % 3 == 0 {
            (
                statements[who]
                    .1
                    .execute(vec![ScalarValue::from(id)])
                    .await
                    .unwrap(),
                format!("DELETE FROM app.notes WHERE id = {id}"),
            )
        } else {
            let body = format!("v{i}");
            let params = vec![ScalarValue::from(body.as_str()), ScalarValue::from(id)];
            (
                statements[who].0.execute(params).await.unwrap(),
                format!("UPDATE app.notes SET body = '{body}' WHERE id = {id}"),
            )
        };
        let ours = changed(prepared).await;
        let theirs = lines(&run(&sessions[1][who], &text).await).join(",");
        assert_eq!(ours, theirs, "step {i}: {text}");
        if i == 30 {
            for engine in &engines {
                run(&admin(engine), "FLUSH TABLE app.notes").await;
            }
        }
    }
    let all = "SELECT id, body FROM app.notes ORDER BY id";
    let mut expected = Vec::new();
    for (who, (ours, theirs)) in sessions[0].iter().zip(&sessions[1]).enumerate() {
        let ours = rows(ours, all).await;
        assert_eq!(ours, rows(theirs, all).await, "user {who}");
        expected.push(ours);
    }
    drop(statements);
    drop(sessions);
    let first = engines.remove(0);
    drop(first);
    let reopened = Engine::new(on(prepared_dir.path())).unwrap();
    for (who, name) in ["alice", "bob"].into_iter().enumerate() {
        assert_eq!(
            rows(&user(&reopened, name), all).await,
            expected[who],
            "{name}"
        );
    }
}

#[tokio::test]
async fn a_revoked_privilege_stops_a_change_from_its_kept_plan() {
    for form in Form::BOTH {
        let engine = engine().await;
        let admin = admin(&engine);
        run(
            &admin,
            "CREATE SHARED TABLE app.ledger (k TEXT, v INT) WITH (ACCESS_LEVEL = 'restricted')",
        )
        .await;
        run(&admin, "INSERT INTO app.ledger VALUES ('a', 1), ('b', 2)").await;
        run(&admin, "GRANT SELECT, UPDATE ON app.ledger TO 'alice'").await;
        run(
            &admin,
            "CREATE VIEW app.ledger_view AS SELECT k, v FROM app.ledger",
        )
        .await;
        let alice = user(&engine, "alice");
        let bump = "UPDATE app.ledger SET v = v + $1 WHERE k = $2";
        let params = || vec![ScalarValue::from(10i32), ScalarValue::from("a")];
        let read = "SELECT v FROM app.ledger WHERE k = $1 AND v > $2";
        let read_params = || vec![ScalarValue::from("a"), ScalarValue::from(0i32)];
        // The view runs as its reader (security_invoker).
        let through_view = "SELECT v FROM app.ledger_view WHERE k = $1 AND v > $2";
        for run_number in 0..3 {
            let (from_cache, changed) = form.run(&alice, bump, params()).await;
            assert_eq!(from_cache, run_number == 2, "{form:?}");
            assert_eq!(changed, ["1"], "{form:?}");
            form.run(&alice, read, read_params()).await;
            let (from_cache, found) = form.run(&alice, through_view, read_params()).await;
            assert_eq!(from_cache, run_number == 2, "{form:?} view");
            assert_eq!(found, [(11 + 10 * run_number).to_string()], "{form:?} view");
        }
        assert_eq!(
            rows(&admin, "SELECT v FROM app.ledger WHERE k = 'a'").await,
            ["31"]
        );
        // Bob, never granted anything, gets nowhere with the kept plans, in
        // any wrapping.
        let bob = user(&engine, "bob");
        for sql in [bump, read, through_view] {
            let params = if sql == bump { params() } else { read_params() };
            let err = form.query(&bob, sql, params).await.map(drop).unwrap_err();
            assert_eq!(err.code(), "PERMISSION_DENIED", "{form:?} {sql}: {err}");
        }
        for sql in [
            "EXPLAIN SELECT v FROM app.ledger WHERE k = 'a' AND v > 0",
            "EXPLAIN ANALYZE SELECT v FROM app.ledger WHERE k = 'a' AND v > 0",
            "EXPLAIN ANALYZE UPDATE app.ledger SET v = v + 10 WHERE k = 'a'",
            "PREPARE peek(TEXT) AS SELECT v FROM app.ledger WHERE k = $1",
            "SELECT v FROM app.ledger_view WHERE k = 'a' AND v > 0",
            "WITH l AS (SELECT * FROM app.ledger) SELECT v FROM l WHERE k = 'a' AND v > 0",
            "SELECT 0 UNION SELECT v FROM app.ledger WHERE k = 'a'",
            "SELECT v FROM app.ledger WHERE k IN (SELECT k FROM app.ledger WHERE v > 0)",
            "EXECUTE AS USER 'bob' (UPDATE app.ledger SET v = v + 10 WHERE k = 'a')",
        ] {
            let code = error_code(
                if sql.starts_with("EXECUTE") {
                    &admin
                } else {
                    &bob
                },
                sql,
            )
            .await;
            assert_eq!(code, "PERMISSION_DENIED", "{sql}");
        }
        // A revoked privilege stops alice's next run of each kept plan.
        run(&admin, "REVOKE UPDATE ON app.ledger FROM 'alice'").await;
        let err = form
            .query(&alice, bump, params())
            .await
            .map(drop)
            .unwrap_err();
        assert_eq!(err.code(), "PERMISSION_DENIED", "{form:?}: {err}");
        run(&admin, "REVOKE SELECT ON app.ledger FROM 'alice'").await;
        for sql in [read, through_view] {
            let err = form
                .query(&alice, sql, read_params())
                .await
                .map(drop)
                .unwrap_err();
            assert_eq!(err.code(), "PERMISSION_DENIED", "{form:?} {sql}: {err}");
        }
        assert_eq!(
            rows(&admin, "SELECT k, v FROM app.ledger ORDER BY k").await,
            ["a 31", "b 2"]
        );
    }
}

#[tokio::test]
async fn one_text_prepared_with_other_declared_types_keeps_a_plan_per_types() {
    let engine = engine().await;
    notes(&engine).await;
    let alice = user(&engine, "alice");
    let text = "SELECT $1 AS v FROM app.notes WHERE id = $2";
    run(&alice, &format!("PREPARE narrow(INT, BIGINT) AS {text}")).await;
    run(&alice, &format!("PREPARE wide(BIGINT, BIGINT) AS {text}")).await;
    for round in 0..3 {
        for (name, expected) in [("narrow", DataType::Int32), ("wide", DataType::Int64)] {
            let query = alice.sql(&format!("EXECUTE {name}(7, 3)")).await.unwrap();
            assert_eq!(query.from_cache(), round == 2, "{name} round {round}");
            let batches = query.collect().await.unwrap();
            assert_eq!(
                batches[0].schema().field(0).data_type(),
                &expected,
                "{name}"
            );
            assert_eq!(lines(&batches), ["7"], "{name}");
        }
    }
    // A plan per declared types, not one for the text.
    assert_eq!(engine.plan_cache_stats().entries, 2);
}

#[tokio::test]
async fn a_filter_taken_into_the_scan_returns_the_columns_asked_for_with_each_runs_values() {
    let engine = engine().await;
    notes(&engine).await;
    let alice = user(&engine, "alice");
    let bob = user(&engine, "bob");
    // The filter's columns and the columns returned differ: the scan reads
    // both and returns only those asked for, in their order.
    let by_id = "SELECT body FROM app.notes WHERE id = $1";
    let both = "SELECT body, id FROM app.notes WHERE id > $1 AND body <> $2 ORDER BY id";
    for form in Form::BOTH {
        for (run, (session, first)) in [(&alice, 1i64), (&bob, 101), (&alice, 1), (&bob, 101)]
            .into_iter()
            .enumerate()
        {
            let id = first + 3 + run as i64;
            let (_, got) = form.run(session, by_id, vec![ScalarValue::from(id)]).await;
            assert_eq!(got, vec![format!("b{id}")], "{form:?} {id}");
            // Bob's ids are not alice's: nobody else's row is ever found.
            let other = if first == 1 { 101 } else { 1 };
            let (_, none) = form
                .run(session, by_id, vec![ScalarValue::from(other)])
                .await;
            assert!(none.is_empty(), "{form:?}: {none:?}");

            let skipped = format!("b{}", first + 17);
            let params = vec![
                ScalarValue::from(first + 15),
                ScalarValue::from(skipped.as_str()),
            ];
            let query = form.query(session, both, params).await.unwrap();
            assert_eq!(query.from_cache(), run >= 2, "{form:?} run {run}");
            let plan = Arc::clone(query.plan().unwrap());
            let got = lines(&query.collect().await.unwrap());
            let expected: Vec<String> = [16, 18, 19]
                .iter()
                .map(|d| format!("b{0} {0}", first + d))
                .collect();
            assert_eq!(got, expected, "{form:?} run {run}");
            if run >= 2 {
                let text = displayable(plan.as_ref()).indent(true).to_string();
                assert!(!text.contains("FilterExec"), "{text}");
                assert!(text.contains("PartitionScanExec"), "{text}");
            }
        }
    }
}

/// Which of a caller's ids in range a statement of a test case gives.
type Keeps = fn(i64) -> bool;

/// Filters taken into scans wherever a generic plan has them: under a
/// CTE, a derived table, an `IN` subquery, a view and `EXECUTE AS`, with
/// alice and bob taking turns on each kept plan and each asking for the
/// other's ids too.
#[tokio::test]
async fn filters_taken_into_scans_in_wrapped_forms_keep_each_callers_rows() {
    let engine = engine().await;
    notes(&engine).await;
    let admin = admin(&engine);
    run(
        &admin,
        "CREATE VIEW app.even AS SELECT id, body FROM app.notes WHERE id % 2 = 0",
    )
    .await;
    let (alice, bob) = (user(&engine, "alice"), user(&engine, "bob"));
    let shapes: [(&str, Keeps); 4] = [
        (
            "WITH mine AS (SELECT id, body FROM app.notes WHERE id >= $1) \
             SELECT body FROM mine WHERE id < $2 ORDER BY id",
            |_| true,
        ),
        (
            "SELECT body FROM (SELECT id, body FROM app.notes WHERE id >= $1) AS t \
             WHERE id < $2 ORDER BY id",
            |_| true,
        ),
        (
            "SELECT body FROM app.notes WHERE id < $2 \
             AND id IN (SELECT id FROM app.notes WHERE id >= $1) ORDER BY id",
            |_| true,
        ),
        (
            "SELECT body FROM app.even WHERE id >= $1 AND id < $2 ORDER BY id",
            |id| id % 2 == 0,
        ),
    ];
    for (sql, kept) in shapes {
        for form in Form::BOTH {
            for round in 0..3i64 {
                for (session, first, other) in [(&alice, 1i64, 101i64), (&bob, 101, 1)] {
                    let (low, high) = (first + round, first + round + 6);
                    let params = vec![ScalarValue::from(low), ScalarValue::from(high)];
                    let (from_cache, got) = form.run(session, sql, params).await;
                    // From the second round on, each prepared run is a
                    // copy of the one kept plan. SQL text is checked for
                    // its rows only: not every shape has its literals
                    // taken out (a CTE's are not).
                    if matches!(form, Form::Prepared) && round > 0 {
                        assert!(from_cache, "{sql}");
                    }
                    let expected: Vec<String> = (low..high)
                        .filter(|&id| kept(id))
                        .map(|id| format!("b{id}"))
                        .collect();
                    assert_eq!(got, expected, "{form:?} {sql} ({low}, {high})");
                    let params = vec![ScalarValue::from(other), ScalarValue::from(other + 20)];
                    let (_, none) = form.run(session, sql, params).await;
                    assert!(none.is_empty(), "{form:?} {sql}: {none:?}");
                }
            }
        }
    }
    // EXECUTE AS runs the statement as bob: his rows, whatever the values.
    for low in [103i64, 105, 107] {
        let sql = format!(
            "EXECUTE AS USER 'bob' (SELECT body FROM app.notes WHERE id >= {low} AND id < {} ORDER BY id)",
            low + 2
        );
        assert_eq!(
            rows(&admin, &sql).await,
            [format!("b{low}"), format!("b{}", low + 1)],
            "{sql}"
        );
        let theirs = format!(
            "EXECUTE AS USER 'bob' (SELECT body FROM app.notes WHERE id >= {} AND id < {})",
            low - 100,
            low - 98
        );
        assert!(rows(&admin, &theirs).await.is_empty(), "{theirs}");
    }
}
