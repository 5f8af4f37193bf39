//! The plan cache: one plan reused by every user, each execution seeing only
//! the caller's rows, and never a stale or forbidden plan.

use std::sync::Arc;

use datafusion::common::ScalarValue;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::collect;
use tenantfusion::{Engine, EngineConfig, PlanCacheConfig, TenantSession};

use crate::common::{admin, count, engine, error_code, output_rows, rows, run, user};

/// `app.notes` with 3 rows for alice (ids 1..3) and 2 for bob (ids 10, 20).
async fn notes() -> Engine {
    let engine = engine().await;
    run(
        &admin(&engine),
        "CREATE USER TABLE app.notes (id BIGINT NOT NULL, body TEXT)",
    )
    .await;
    let alice = user(&engine, "alice");
    let bob = user(&engine, "bob");
    run(
        &alice,
        "INSERT INTO app.notes VALUES (1, 'a1'), (2, 'a2'), (3, 'a3')",
    )
    .await;
    run(&bob, "INSERT INTO app.notes VALUES (10, 'b1'), (20, 'b2')").await;
    engine
}

/// Runs `sql` and says whether its plan came from the cache, with its rows.
async fn cached_rows(session: &TenantSession, sql: &str) -> (bool, Vec<String>) {
    let from_cache = session.sql(sql).await.unwrap().from_cache();
    (from_cache, rows(session, sql).await)
}

/// A restricted shared table `app.payroll (v INT)`, and the admin session.
async fn payroll() -> (Engine, TenantSession) {
    let engine = engine().await;
    let admin = admin(&engine);
    run(
        &admin,
        "CREATE SHARED TABLE app.payroll (v INT) WITH (ACCESS_LEVEL = 'restricted')",
    )
    .await;
    (engine, admin)
}

const TOP: &str = "SELECT id, body FROM app.notes ORDER BY id DESC LIMIT 2";

#[tokio::test]
async fn one_cached_plan_serves_every_user_with_their_own_rows() {
    let engine = notes().await;
    let alice = user(&engine, "alice");
    let bob = user(&engine, "bob");
    let first = alice.sql(TOP).await.unwrap();
    assert!(!first.from_cache(), "the first run plans, for alice alone");
    drop(first);
    let second = alice.sql(TOP).await.unwrap();
    assert!(!second.from_cache(), "the second plans the plan kept");
    drop(second);
    // Interleaved: alice, bob, alice, bob, each from the cache after the first.
    for _ in 0..3 {
        let (hit, found) = cached_rows(&alice, TOP).await;
        assert!(hit);
        assert_eq!(found, ["3 a3", "2 a2"]);
        let (hit, found) = cached_rows(&bob, TOP).await;
        assert!(hit);
        assert_eq!(found, ["20 b2", "10 b1"]);
    }
    // A hundred more users add no plan: the cache grows with statements, not users.
    for u in 0..100 {
        let (hit, found) = cached_rows(&user(&engine, &format!("user{u}")), TOP).await;
        assert!(hit && found.is_empty());
    }
    let stats = engine.plan_cache_stats();
    assert!(stats.hits >= 212, "{stats:?}");
    assert_eq!(stats.entries, 1, "one plan for every user: {stats:?}");
}

#[tokio::test]
async fn concurrent_executions_of_one_plan_stay_isolated() {
    let engine = notes().await;
    let queries = [
        "SELECT count(*), sum(id) FROM app.notes",
        TOP,
        "SELECT n.id FROM app.notes n JOIN app.notes m ON n.id = m.id ORDER BY n.id",
        "SELECT id FROM app.notes WHERE id IN (SELECT max(id) FROM app.notes)",
    ];
    let expected = |name: &str, q: usize| -> Vec<&'static str> {
        match (name, q) {
            ("alice", 0) => vec!["3 6"],
            ("bob", 0) => vec!["2 30"],
            ("alice", 1) => vec!["3 a3", "2 a2"],
            ("bob", 1) => vec!["20 b2", "10 b1"],
            ("alice", 2) => vec!["1", "2", "3"],
            ("bob", 2) => vec!["10", "20"],
            ("alice", 3) => vec!["3"],
            _ => vec!["20"],
        }
    };
    let mut tasks = Vec::new();
    for task in 0..32 {
        let name = if task % 2 == 0 { "alice" } else { "bob" };
        let session = user(&engine, name);
        tasks.push(tokio::spawn(async move {
            for round in 0..10 {
                let q = (task + round) % queries.len();
                assert_eq!(
                    rows(&session, queries[q]).await,
                    expected(name, q),
                    "{name}: {}",
                    queries[q]
                );
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert!(engine.plan_cache_stats().hits > 0);
}

#[tokio::test]
async fn revoke_refuses_a_cached_plan_and_a_refusal_is_not_cached() {
    let (engine, admin) = payroll().await;
    run(&admin, "INSERT INTO app.payroll VALUES (7)").await;
    let alice = user(&engine, "alice");
    let sql = "SELECT sum(v) FROM app.payroll";
    assert_eq!(error_code(&alice, sql).await, "PERMISSION_DENIED");
    run(&admin, "GRANT SELECT ON app.payroll TO 'alice'").await;
    assert_eq!(count(&alice, sql).await, 7, "the refusal was not cached");
    assert_eq!(count(&alice, sql).await, 7);
    assert!(alice.sql(sql).await.unwrap().from_cache());
    run(&admin, "REVOKE SELECT ON app.payroll FROM 'alice'").await;
    assert_eq!(error_code(&alice, sql).await, "PERMISSION_DENIED");
    // The plan itself refuses too, when run directly by a host.
    let plan = admin.sql(sql).await.unwrap();
    assert!(plan.from_cache());
    let plan = Arc::clone(plan.plan().unwrap());
    let mut config = datafusion::prelude::SessionConfig::new();
    tenantfusion::attach_user(
        &mut config,
        tenantfusion::UserContext::new("alice", tenantfusion::Role::User),
    );
    let task = TaskContext::default().with_session_config(config);
    let err = collect(plan, Arc::new(task)).await.unwrap_err();
    assert_eq!(
        tenantfusion::TenantError::from_datafusion(err).code(),
        "PERMISSION_DENIED"
    );
}

#[tokio::test]
async fn a_cached_plan_without_a_user_fails_with_no_user_context() {
    let engine = notes().await;
    let alice = user(&engine, "alice");
    run(&alice, TOP).await;
    run(&alice, TOP).await;
    let query = alice.sql(TOP).await.unwrap();
    assert!(query.from_cache());
    let plan = Arc::clone(query.plan().unwrap());
    let err = collect(plan, Arc::new(TaskContext::default()))
        .await
        .unwrap_err();
    assert_eq!(
        tenantfusion::TenantError::from_datafusion(err).code(),
        "NO_USER_CONTEXT"
    );
}

#[tokio::test]
async fn drop_and_create_with_another_schema_plans_again() {
    let engine = notes().await;
    let admin = admin(&engine);
    let alice = user(&engine, "alice");
    let sql = "SELECT * FROM app.notes ORDER BY 1";
    assert_eq!(rows(&alice, sql).await.len(), 3);
    assert_eq!(rows(&alice, sql).await.len(), 3);
    assert!(alice.sql(sql).await.unwrap().from_cache());
    run(&admin, "DROP TABLE app.notes").await;
    assert_eq!(error_code(&alice, sql).await, "TABLE_NOT_FOUND");
    run(
        &admin,
        "CREATE USER TABLE app.notes (tag TEXT, n INT, extra BOOLEAN)",
    )
    .await;
    run(&alice, "INSERT INTO app.notes VALUES ('x', 1, true)").await;
    let query = alice.sql(sql).await.unwrap();
    assert!(!query.from_cache(), "the new table is planned anew");
    assert_eq!(query.schema().fields().len(), 3);
    assert_eq!(rows(&alice, sql).await, ["x 1 true"]);
    assert!(engine.plan_cache_stats().invalidations >= 1);
}

#[tokio::test]
async fn new_rows_are_seen_by_a_repeated_statement() {
    let engine = notes().await;
    let alice = user(&engine, "alice");
    let sql = "SELECT count(*) FROM app.notes";
    assert_eq!(count(&alice, sql).await, 3);
    assert_eq!(count(&alice, sql).await, 3);
    run(&alice, "INSERT INTO app.notes VALUES (4, 'a4')").await;
    assert!(alice.sql(sql).await.unwrap().from_cache());
    assert_eq!(count(&alice, sql).await, 4);
    assert_eq!(count(&user(&engine, "bob"), sql).await, 2);
}

#[tokio::test]
async fn time_dependent_and_shared_state_plans_are_not_cached() {
    let engine = notes().await;
    let alice = user(&engine, "alice");
    let bob = user(&engine, "bob");
    // now() is folded into the plan when it is made.
    for sql in [
        "SELECT now()",
        "SELECT count(*) FROM app.notes WHERE id < random() * 1000",
    ] {
        run(&alice, sql).await;
        assert!(!alice.sql(sql).await.unwrap().from_cache(), "{sql}");
    }
    // A scalar subquery's results live in the plan: never shared.
    let sql = "SELECT id FROM app.notes WHERE id = (SELECT max(id) FROM app.notes)";
    assert_eq!(rows(&alice, sql).await, ["3"]);
    assert_eq!(rows(&bob, sql).await, ["20"]);
    assert!(!alice.sql(sql).await.unwrap().from_cache());
    // EXPLAIN is planned each time.
    run(&alice, "EXPLAIN SELECT * FROM app.notes").await;
    assert!(
        !alice
            .sql("EXPLAIN SELECT * FROM app.notes")
            .await
            .unwrap()
            .from_cache()
    );
}

#[tokio::test]
async fn settings_are_part_of_the_key() {
    let engine = notes().await;
    let alice = user(&engine, "alice");
    let bob = user(&engine, "bob");
    let sql = "SELECT CAST(TIMESTAMP '2026-01-01T00:00:00Z' AS TEXT) AS t";
    run(&alice, sql).await;
    run(&alice, sql).await;
    assert!(bob.sql(sql).await.unwrap().from_cache());
    run(&bob, "SET datafusion.execution.time_zone = '+05:00'").await;
    assert!(
        !bob.sql(sql).await.unwrap().from_cache(),
        "other settings, other plan"
    );
    run(&bob, "RESET datafusion.execution.time_zone").await;
    assert!(
        bob.sql(sql).await.unwrap().from_cache(),
        "back to the engine's plans"
    );
}

#[tokio::test]
async fn one_user_partition_is_not_split_round_robin_unless_asked() {
    let engine = notes().await;
    let alice = user(&engine, "alice");
    let sql = "SELECT count(*), sum(id) FROM app.notes";
    // The kept plan, made without statistics: a partition of any size.
    let kept_plan = async |session: &TenantSession| {
        run(session, sql).await;
        run(session, sql).await;
        let query = session.sql(sql).await.unwrap();
        assert!(query.from_cache());
        let plan = datafusion::physical_plan::displayable(query.plan().unwrap().as_ref());
        plan.indent(false).to_string()
    };
    let plan = kept_plan(&alice).await;
    assert!(!plan.contains("RoundRobinBatch"), "{plan}");
    run(
        &alice,
        "SET datafusion.optimizer.enable_round_robin_repartition = true",
    )
    .await;
    let plan = kept_plan(&alice).await;
    assert!(plan.contains("RoundRobinBatch"), "{plan}");
    assert_eq!(rows(&alice, sql).await, ["3 6"]);
    // Made for alice alone (EXPLAIN), knowing her 3 rows: no split either way.
    let explained = rows(&alice, &format!("EXPLAIN {sql}")).await.join("\n");
    assert!(!explained.contains("RoundRobinBatch"), "{explained}");
}

#[tokio::test]
async fn a_reused_plan_does_not_carry_another_users_metrics() {
    let engine = notes().await;
    let alice = user(&engine, "alice");
    let bob = user(&engine, "bob");
    run(&alice, TOP).await;
    run(&alice, TOP).await;
    let query = bob.sql(TOP).await.unwrap();
    assert!(query.from_cache());
    assert_eq!(output_rows(query.plan().unwrap()), 0);
}

#[tokio::test]
async fn bounded_by_entries_and_off_when_disabled() {
    let config = EngineConfig::default().with_plan_cache(PlanCacheConfig {
        max_entries: 2,
        ..PlanCacheConfig::default()
    });
    let engine = Engine::new(config).unwrap();
    let alice = user(&engine, "alice");
    for v in 1..=3 {
        // Kept on the second run.
        run(&alice, &format!("SELECT {v}")).await;
        run(&alice, &format!("SELECT {v}")).await;
    }
    let stats = engine.plan_cache_stats();
    assert_eq!((stats.entries, stats.evictions), (2, 1), "{stats:?}");
    assert!(
        !alice.sql("SELECT 1").await.unwrap().from_cache(),
        "evicted first"
    );
    assert!(alice.sql("SELECT 3").await.unwrap().from_cache());

    let off =
        Engine::new(EngineConfig::default().with_plan_cache(PlanCacheConfig::DISABLED)).unwrap();
    let alice = user(&off, "alice");
    run(&alice, "SELECT 1").await;
    run(&alice, "SELECT 1").await;
    assert!(!alice.sql("SELECT 1").await.unwrap().from_cache());
    assert_eq!(off.plan_cache_stats().entries, 0);
}

#[tokio::test]
async fn text_is_normalised_by_the_parser() {
    let engine = notes().await;
    let alice = user(&engine, "alice");
    run(&alice, "SELECT count(*) FROM app.notes").await;
    run(&alice, "SELECT count(*) FROM app.notes").await;
    // Keyword case, spaces and line breaks do not matter.
    let query = alice
        .sql("select   count(*)\n FROM app.notes")
        .await
        .unwrap();
    assert!(query.from_cache());
    // Quoted identifiers and literals are not folded.
    assert_eq!(
        error_code(&alice, "SELECT \"ID\" FROM app.notes").await,
        "PLAN_ERROR"
    );
}

#[tokio::test]
async fn prepared_statements_bind_parameters_per_user() {
    let engine = notes().await;
    let alice = user(&engine, "alice");
    let bob = user(&engine, "bob");
    let find = alice
        .prepare("SELECT body FROM app.notes WHERE id >= $1 ORDER BY id")
        .await
        .unwrap();
    assert_eq!(
        find.parameter_types(),
        [datafusion::arrow::datatypes::DataType::Int64]
    );
    let bob_find = bob
        .prepare("SELECT body FROM app.notes WHERE id >= $1 ORDER BY id")
        .await
        .unwrap();
    for round in 0..3 {
        let q = find
            .execute(vec![ScalarValue::Int64(Some(2))])
            .await
            .unwrap();
        // Bob's run of the same text (in round 0) is the statement's second:
        // its generic plan is kept then and serves alice from round 1.
        assert_eq!(q.from_cache(), round > 0, "round {round}");
        assert_eq!(strings(q.collect().await.unwrap()), ["a2", "a3"]);
        let q = bob_find
            .execute(vec![ScalarValue::Int32(Some(15))])
            .await
            .unwrap();
        assert_eq!(strings(q.collect().await.unwrap()), ["b2"]);
    }
    // Wrong arity and values that do not convert are clear errors.
    let err = find.execute(vec![]).await.unwrap_err();
    assert_eq!(err.code(), "INVALID_ARGUMENT");
    let err = find
        .execute(vec![ScalarValue::from("x")])
        .await
        .unwrap_err();
    assert_eq!(err.code(), "INVALID_ARGUMENT", "{err}");
    // INSERT prepared once, rows land in the caller's partition only.
    let insert = bob
        .prepare("INSERT INTO app.notes VALUES ($1, $2)")
        .await
        .unwrap();
    for id in [30i64, 40] {
        let q = insert
            .execute(vec![ScalarValue::from(id), ScalarValue::from("bn")])
            .await
            .unwrap();
        q.collect().await.unwrap();
    }
    assert_eq!(count(&bob, "SELECT count(*) FROM app.notes").await, 4);
    assert_eq!(count(&alice, "SELECT count(*) FROM app.notes").await, 3);
    // Only queries and INSERT can be prepared.
    let err = alice.prepare("CREATE NAMESPACE x").await.unwrap_err();
    assert_eq!(err.code(), "NOT_SUPPORTED");
}

#[tokio::test]
async fn prepared_statements_are_checked_on_every_execution() {
    let (engine, admin) = payroll().await;
    run(&admin, "INSERT INTO app.payroll VALUES (7), (8)").await;
    run(&admin, "GRANT SELECT ON app.payroll TO 'alice'").await;
    let alice = user(&engine, "alice");
    let q = alice
        .prepare("SELECT v FROM app.payroll WHERE v = $1")
        .await
        .unwrap();
    let params = || vec![ScalarValue::Int32(Some(7))];
    for _ in 0..3 {
        let found = q.execute(params()).await.unwrap().collect().await.unwrap();
        assert_eq!(strings(found), ["7"]);
    }
    run(&admin, "REVOKE SELECT ON app.payroll FROM 'alice'").await;
    assert_eq!(
        q.execute(params()).await.unwrap_err().code(),
        "PERMISSION_DENIED"
    );
    // A table dropped and created again is planned again; new parameter
    // types are refused rather than guessed.
    run(&admin, "DROP TABLE app.payroll").await;
    run(&admin, "CREATE SHARED TABLE app.payroll (v TEXT)").await;
    run(&admin, "INSERT INTO app.payroll VALUES ('7')").await;
    assert_eq!(
        q.execute(params()).await.unwrap_err().code(),
        "SCHEMA_MISMATCH"
    );
    run(&admin, "DROP TABLE app.payroll").await;
    run(&admin, "CREATE SHARED TABLE app.payroll (v INT, w INT)").await;
    run(&admin, "INSERT INTO app.payroll VALUES (7, 1), (9, 2)").await;
    let found = q.execute(params()).await.unwrap().collect().await.unwrap();
    assert_eq!(strings(found), ["7"]);
}

#[tokio::test]
async fn sql_prepare_execute_and_deallocate_are_per_session() {
    let engine = notes().await;
    let alice = user(&engine, "alice");
    let bob = user(&engine, "bob");
    run(
        &alice,
        "PREPARE top(BIGINT) AS SELECT id FROM app.notes WHERE id > $1 ORDER BY id",
    )
    .await;
    assert_eq!(rows(&alice, "EXECUTE top(1)").await, ["2", "3"]);
    assert_eq!(rows(&alice, "EXECUTE top(-5 + 7)").await, ["3"]);
    assert_eq!(error_code(&bob, "EXECUTE top(1)").await, "INVALID_ARGUMENT");
    assert_eq!(
        error_code(&alice, "PREPARE top(INT) AS SELECT $1").await,
        "INVALID_ARGUMENT",
        "the name is taken"
    );
    assert_eq!(
        error_code(&alice, "EXECUTE top(1, 2)").await,
        "INVALID_ARGUMENT"
    );
    assert_eq!(error_code(&alice, "EXECUTE top(id)").await, "PLAN_ERROR");
    run(
        &bob,
        "PREPARE top(BIGINT) AS SELECT id FROM app.notes WHERE id > $1 ORDER BY id",
    )
    .await;
    assert_eq!(rows(&bob, "EXECUTE top(1)").await, ["10", "20"]);
    run(&alice, "DEALLOCATE top").await;
    assert_eq!(
        error_code(&alice, "EXECUTE top(1)").await,
        "INVALID_ARGUMENT"
    );
    assert_eq!(
        error_code(&alice, "DEALLOCATE top").await,
        "INVALID_ARGUMENT"
    );
    assert_eq!(rows(&bob, "EXECUTE top(15)").await, ["20"]);
    // A prepared statement may not name a table the caller cannot use.
    run(
        &admin(&engine),
        "CREATE SHARED TABLE app.secret (v INT) WITH (ACCESS_LEVEL = 'private')",
    )
    .await;
    assert_eq!(
        error_code(&alice, "PREPARE s AS SELECT * FROM app.secret").await,
        "PERMISSION_DENIED"
    );
}

fn strings(batches: Vec<datafusion::arrow::record_batch::RecordBatch>) -> Vec<String> {
    let mut out = Vec::new();
    for batch in &batches {
        for row in 0..batch.num_rows() {
            out.push(
                datafusion::arrow::util::display::array_value_to_string(batch.column(0), row)
                    .unwrap(),
            );
        }
    }
    out
}

#[tokio::test]
async fn a_plan_made_for_one_caller_knows_their_rows_and_is_never_shared() {
    let engine = notes().await;
    let alice = user(&engine, "alice");
    let bob = user(&engine, "bob");
    let sql = "SELECT count(*) FROM app.notes";
    let explain =
        async |session: &TenantSession| rows(session, &format!("EXPLAIN {sql}")).await.join("\n");
    // EXPLAIN is made for its caller alone: DataFusion answers count(*)
    // from that caller's statistics, as for its own tables.
    let plan = explain(&alice).await;
    assert!(plan.contains("3 as count(*)"), "{plan}");
    let plan = explain(&bob).await;
    assert!(plan.contains("2 as count(*)"), "{plan}");
    // The first run is made for alice alone; the second, kept for everyone,
    // is made without statistics, so bob's run from it counts his rows.
    assert_eq!(count(&alice, sql).await, 3);
    assert_eq!(count(&alice, sql).await, 3);
    let query = bob.sql(sql).await.unwrap();
    assert!(query.from_cache());
    let kept = datafusion::physical_plan::displayable(query.plan().unwrap().as_ref())
        .indent(false)
        .to_string();
    assert!(kept.contains("PartitionScanExec"), "{kept}");
    assert_eq!(count(&bob, sql).await, 2);
    // Statistics are counted when the plan is made, so they follow writes.
    run(&alice, "INSERT INTO app.notes VALUES (4, 'a4')").await;
    let plan = explain(&alice).await;
    assert!(plan.contains("4 as count(*)"), "{plan}");
    // A scan planned for alice refuses to run for bob.
    let one_off = alice.sql("SELECT id FROM app.notes").await.unwrap();
    assert!(!one_off.from_cache());
    let mut config = datafusion::prelude::SessionConfig::new();
    tenantfusion::attach_user(
        &mut config,
        tenantfusion::UserContext::new("bob", tenantfusion::Role::User),
    );
    let task = TaskContext::default().with_session_config(config);
    let err = collect(Arc::clone(one_off.plan().unwrap()), Arc::new(task))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("planned for one caller"), "{err}");
}

#[tokio::test]
async fn wrapped_forms_plan_with_their_own_callers_rows_only() {
    let engine = notes().await;
    let alice = user(&engine, "alice");
    let bob = user(&engine, "bob");
    let admin = crate::common::admin(&engine);
    run(
        &admin,
        "CREATE VIEW app.note_count AS SELECT count(*) AS n FROM app.notes",
    )
    .await;
    let forms = [
        "EXPLAIN SELECT count(*) FROM app.notes",
        "EXPLAIN ANALYZE SELECT count(*) FROM app.notes",
        "EXPLAIN WITH c AS (SELECT count(*) FROM app.notes) SELECT * FROM c",
        "EXPLAIN SELECT * FROM (SELECT count(*) FROM app.notes) AS s",
        "EXPLAIN SELECT n FROM app.note_count",
    ];
    // Interleaved, each user twice: a plan made for one never carries the
    // other's row count (alice has 3 rows, bob 2).
    for _ in 0..2 {
        for (session, mine, theirs) in [(&alice, "3", "2"), (&bob, "2", "3")] {
            for sql in forms {
                let plan = rows(session, sql).await.join("\n");
                assert!(plan.contains(&format!("{mine} as ")), "{sql}: {plan}");
                assert!(!plan.contains(&format!("{theirs} as ")), "{sql}: {plan}");
            }
        }
    }
    // EXECUTE AS plans for the target; PREPARE/EXECUTE for the caller.
    let plan = rows(
        &admin,
        "EXECUTE AS USER 'bob' (EXPLAIN SELECT count(*) FROM app.notes)",
    )
    .await
    .join("\n");
    assert!(plan.contains("2 as count(*)"), "{plan}");
    for (session, mine) in [(&alice, 3), (&bob, 2), (&alice, 3), (&bob, 2)] {
        run(
            session,
            "PREPARE c AS SELECT count(*) FROM app.notes WHERE id > $1",
        )
        .await;
        assert_eq!(count(session, "EXECUTE c(0)").await, mine);
        run(session, "DEALLOCATE c").await;
    }
}
