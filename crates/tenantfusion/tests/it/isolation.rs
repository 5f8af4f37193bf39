//! Two users, one table definition: never each other's rows.

use std::sync::Arc;

use datafusion::execution::TaskContext;
use datafusion::logical_expr::dml::InsertOp;
use datafusion::physical_plan::collect;
use datafusion::prelude::{SessionConfig, SessionContext};
use tenantfusion::{Role, UserContext, attach_user};

use crate::common::{admin, count, engine, error_code, rows, run, user};

async fn notes_for_alice_and_bob() -> tenantfusion::Engine {
    let engine = engine().await;
    run(
        &admin(&engine),
        "CREATE USER TABLE app.notes (id BIGINT NOT NULL, body TEXT)",
    )
    .await;
    run(
        &user(&engine, "alice"),
        "INSERT INTO app.notes VALUES (1, 'a1'), (2, 'a2')",
    )
    .await;
    run(
        &user(&engine, "bob"),
        "INSERT INTO app.notes VALUES (1, 'b1')",
    )
    .await;
    engine
}

#[tokio::test]
async fn explain_is_the_same_plan_for_every_user() {
    let engine = notes_for_alice_and_bob().await;
    let sql = "EXPLAIN SELECT body FROM app.notes WHERE id > 1 ORDER BY id DESC LIMIT 5";
    let alice = rows(&user(&engine, "alice"), sql).await;
    let bob = rows(&user(&engine, "bob"), sql).await;
    assert_eq!(alice, bob, "plans must not depend on the caller");
    let text = alice.join("\n");
    assert!(
        text.contains("PartitionScanExec: table=app.notes"),
        "{text}"
    );
    for leak in ["alice", "bob", "a1", "b1"] {
        assert!(!text.contains(leak), "EXPLAIN shows '{leak}':\n{text}");
    }
}

#[tokio::test]
async fn explain_insert_and_explain_analyze() {
    let engine = notes_for_alice_and_bob().await;
    let alice = user(&engine, "alice");
    run(&alice, "EXPLAIN INSERT INTO app.notes VALUES (9, 'never')").await;
    assert_eq!(
        count(&alice, "SELECT count(*) FROM app.notes").await,
        2,
        "EXPLAIN must not write"
    );
    let analyzed = rows(
        &user(&engine, "bob"),
        "EXPLAIN ANALYZE SELECT * FROM app.notes",
    )
    .await
    .join("\n");
    assert!(
        analyzed.contains("output_rows=1"),
        "bob's scan reads bob's one row:\n{analyzed}"
    );
}

#[tokio::test]
async fn one_physical_plan_serves_every_user() {
    // A plan built without any user, executed for alice then bob, returns each
    // one's rows: the partition is chosen at execution, not at planning.
    let engine = notes_for_alice_and_bob().await;
    let ctx = SessionContext::new();
    engine.register_in(&ctx);
    let plan = ctx
        .sql("SELECT body FROM tenantfusion.app.notes ORDER BY body")
        .await
        .unwrap()
        .create_physical_plan()
        .await
        .unwrap();
    let mut seen = Vec::new();
    for name in ["alice", "bob"] {
        let mut config = SessionConfig::new();
        attach_user(&mut config, UserContext::new(name, Role::User));
        let task = Arc::new(TaskContext::default().with_session_config(config));
        let plan = datafusion::physical_plan::execution_plan::reset_plan_states(Arc::clone(&plan))
            .unwrap();
        let batches = collect(plan, task).await.unwrap();
        seen.push(batches.iter().map(|b| b.num_rows()).sum::<usize>());
    }
    assert_eq!(seen, vec![2, 1]);
}

/// A view's plan is DataFusion's: `scan_user` on a view must bind the
/// caller around all of it, whoever then executes it.
#[tokio::test]
async fn scan_user_on_a_view_reads_the_bound_callers_rows() {
    let engine = notes_for_alice_and_bob().await;
    run(
        &admin(&engine),
        "CREATE VIEW app.note_bodies AS SELECT body FROM app.notes",
    )
    .await;
    let view = engine
        .schema_cache()
        .get_provider("app", "note_bodies")
        .unwrap();
    let state = SessionContext::new().state();
    let bob = UserContext::new("bob", Role::User);
    let scan = view.scan_user(&bob, &state, None, &[], None).await.unwrap();
    for runner in [None, Some("alice")] {
        let mut config = SessionConfig::new();
        if let Some(name) = runner {
            UserContext::new(name, Role::User).attach_to(&mut config);
        }
        let task = Arc::new(TaskContext::default().with_session_config(config));
        let plan = datafusion::physical_plan::execution_plan::reset_plan_states(Arc::clone(&scan))
            .unwrap();
        let batches = collect(plan, task).await.unwrap();
        let text = datafusion::arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string();
        assert!(
            text.contains("b1") && !text.contains("a1") && !text.contains("a2"),
            "run by {runner:?}: bob's rows only, got\n{text}"
        );
    }
    let carol = UserContext::new("carol", Role::User);
    run(
        &admin(&engine),
        "CREATE SHARED TABLE app.secrets (s TEXT) WITH (ACCESS_LEVEL = PRIVATE)",
    )
    .await;
    run(
        &admin(&engine),
        "CREATE VIEW app.secret_view AS SELECT s FROM app.secrets",
    )
    .await;
    let secret_view = engine
        .schema_cache()
        .get_provider("app", "secret_view")
        .unwrap();
    let refused = secret_view
        .scan_user(&carol, &state, None, &[], None)
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("PERMISSION_DENIED"),
        "{refused}"
    );
}

#[tokio::test]
async fn scan_user_and_insert_user_bind_an_explicit_caller() {
    let engine = notes_for_alice_and_bob().await;
    let provider = engine.schema_cache().get_provider("app", "notes").unwrap();
    let state = SessionContext::new().state();
    let bob = UserContext::new("bob", Role::User);
    let scan = provider
        .scan_user(&bob, &state, None, &[], None)
        .await
        .unwrap();
    let batches = collect(scan, Arc::new(TaskContext::default()))
        .await
        .unwrap();
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 1);

    let source = provider
        .scan_user(&bob, &state, None, &[], None)
        .await
        .unwrap();
    let alice = UserContext::new("alice", Role::User);
    let insert = provider
        .insert_user(&alice, &state, source, InsertOp::Append)
        .await
        .unwrap();
    collect(insert, Arc::new(TaskContext::default()))
        .await
        .unwrap();
    let alice_rows = rows(
        &user(&engine, "alice"),
        "SELECT body FROM app.notes ORDER BY body",
    )
    .await;
    assert_eq!(
        alice_rows,
        vec!["a1", "a2", "b1"],
        "bob's row copied into alice's partition only"
    );
    assert_eq!(
        count(&user(&engine, "bob"), "SELECT count(*) FROM app.notes").await,
        1
    );
}

#[tokio::test]
async fn the_same_user_id_with_another_role_sees_the_same_partition() {
    let engine = notes_for_alice_and_bob().await;
    let alice_as_service = engine.session(UserContext::new("alice", Role::Service));
    assert_eq!(
        count(&alice_as_service, "SELECT count(*) FROM app.notes").await,
        2
    );
    let anonymous = engine.session(UserContext::new("alice", Role::Anonymous));
    assert_eq!(
        error_code(&anonymous, "SELECT * FROM app.notes").await,
        "PERMISSION_DENIED"
    );
}

#[tokio::test]
async fn concurrent_users_stay_isolated() {
    let engine = engine().await;
    run(
        &admin(&engine),
        "CREATE USER TABLE app.events (seq BIGINT, owner TEXT)",
    )
    .await;
    let mut tasks = Vec::new();
    for u in 0..32 {
        let engine = engine.clone();
        tasks.push(tokio::spawn(async move {
            let name = format!("user{u}");
            let session = user(&engine, &name);
            for i in 0..=u {
                run(
                    &session,
                    &format!("INSERT INTO app.events VALUES ({i}, '{name}')"),
                )
                .await;
            }
            let seen = rows(&session, "SELECT DISTINCT owner FROM app.events").await;
            assert_eq!(seen, vec![name.clone()]);
            assert_eq!(
                count(&session, "SELECT count(*) FROM app.events").await,
                u + 1
            );
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(engine.schema_cache().provider_count(), 1);
}

/// Each user's rows of `app.notes`, as `id body` lines in order.
async fn notes_of(engine: &tenantfusion::Engine, name: &str) -> Vec<String> {
    rows(
        &user(engine, name),
        "SELECT id, body FROM app.notes ORDER BY id, body",
    )
    .await
}

#[tokio::test]
async fn update_and_delete_change_only_the_callers_rows() {
    let engine = notes_for_alice_and_bob().await;
    let admin = admin(&engine);
    run(&admin, "CREATE SHARED TABLE app.tags (id BIGINT, tag TEXT)").await;
    run(
        &admin,
        "INSERT INTO app.tags VALUES (1, 'one'), (2, 'drop')",
    )
    .await;
    let (alice, bob) = (user(&engine, "alice"), user(&engine, "bob"));
    run(&alice, "INSERT INTO app.notes VALUES (3, 'a3'), (3, 'a3')").await;
    run(&bob, "INSERT INTO app.notes VALUES (2, 'b2'), (3, 'b3')").await;

    // A plain WHERE: alice's row 1 only, bob's row 1 untouched.
    assert_eq!(
        rows(
            &alice,
            "UPDATE app.notes SET body = body || '!' WHERE id = 1"
        )
        .await,
        ["1"]
    );
    assert_eq!(
        notes_of(&engine, "alice").await,
        ["1 a1!", "2 a2", "3 a3", "3 a3"]
    );
    assert_eq!(notes_of(&engine, "bob").await, ["1 b1", "2 b2", "3 b3"]);

    // EXPLAIN plans the change and makes none.
    let plan = rows(&bob, "EXPLAIN DELETE FROM app.notes").await;
    assert!(
        plan.iter()
            .any(|l| l.contains("MutationSink: DELETE table=app.notes")),
        "{plan:?}"
    );
    let plan = rows(&bob, "EXPLAIN UPDATE app.notes SET body = 'x'").await;
    assert!(
        plan.iter().any(|l| l.contains("UPDATE table=app.notes")),
        "{plan:?}"
    );
    assert_eq!(notes_of(&engine, "bob").await, ["1 b1", "2 b2", "3 b3"]);
    assert_eq!(
        error_code(&bob, "EXPLAIN ANALYZE DELETE FROM app.notes").await,
        "NOT_SUPPORTED"
    );

    // A subquery over the same table (DataFusion turns it into a join and
    // would hand a provider no filter): the caller's matching rows only.
    assert_eq!(
        rows(
            &alice,
            "DELETE FROM app.notes WHERE id IN (SELECT id FROM app.notes WHERE body = 'a2')"
        )
        .await,
        ["1"]
    );
    assert_eq!(notes_of(&engine, "alice").await, ["1 a1!", "3 a3", "3 a3"]);
    assert_eq!(notes_of(&engine, "bob").await, ["1 b1", "2 b2", "3 b3"]);
    // A subquery over a shared table, and EXISTS.
    assert_eq!(
        rows(
            &bob,
            "DELETE FROM app.notes WHERE id IN (SELECT id FROM app.tags WHERE tag = 'drop')"
        )
        .await,
        ["1"]
    );
    assert_eq!(
        rows(
            &bob,
            "UPDATE app.notes SET body = 'tagged' WHERE EXISTS \
             (SELECT 1 FROM app.tags t WHERE t.id = app.notes.id)"
        )
        .await,
        ["1"]
    );
    assert_eq!(notes_of(&engine, "bob").await, ["1 tagged", "3 b3"]);
    assert_eq!(notes_of(&engine, "alice").await, ["1 a1!", "3 a3", "3 a3"]);
    // New values from a correlated subquery over a shared table (a join).
    assert_eq!(
        rows(
            &alice,
            "UPDATE app.notes SET body = (SELECT max(tag) FROM app.tags t WHERE t.id = app.notes.id) \
             WHERE id < 3"
        )
        .await,
        ["1"]
    );
    assert_eq!(notes_of(&engine, "alice").await, ["1 one", "3 a3", "3 a3"]);
    // Equal rows are all changed.
    assert_eq!(
        rows(&alice, "DELETE FROM app.notes WHERE id = 3").await,
        ["2"]
    );
    assert_eq!(notes_of(&engine, "alice").await, ["1 one"]);

    // Errors change nothing.
    for (sql, code) in [
        ("UPDATE app.notes SET id = NULL", "NOT_NULL_VIOLATION"),
        ("UPDATE app.notes SET nope = 1", "PLAN_ERROR"),
        ("UPDATE app.notes SET id = 'x'", "SCHEMA_MISMATCH"),
        ("DELETE FROM system.users", "PERMISSION_DENIED"),
        ("DELETE FROM app.tags", "PERMISSION_DENIED"),
        ("DELETE FROM app.nope", "TABLE_NOT_FOUND"),
        (
            "UPDATE app.notes SET body = t.tag FROM app.tags t WHERE app.notes.id = t.id",
            "NOT_SUPPORTED",
        ),
    ] {
        assert_eq!(error_code(&alice, sql).await, code, "{sql}");
    }
    assert_eq!(notes_of(&engine, "alice").await, ["1 one"]);
    assert_eq!(count(&admin, "SELECT count(*) FROM app.tags").await, 2);
    run(
        &admin,
        "CREATE STREAM TABLE app.events (kind TEXT) WITH (TTL_SECONDS = 60)",
    )
    .await;
    run(&alice, "INSERT INTO app.events VALUES ('x')").await;
    assert_eq!(
        error_code(&alice, "DELETE FROM app.events").await,
        "NOT_SUPPORTED"
    );
    // An admin may change a shared table; nobody else's user rows move.
    assert_eq!(
        rows(&admin, "DELETE FROM app.tags WHERE id = 2").await,
        ["1"]
    );
    assert_eq!(count(&admin, "SELECT count(*) FROM app.tags").await, 1);
    // No WHERE: every row of the caller, none of anybody else's.
    assert_eq!(rows(&bob, "DELETE FROM app.notes").await, ["2"]);
    assert!(notes_of(&engine, "bob").await.is_empty());
    assert_eq!(notes_of(&engine, "alice").await, ["1 one"]);
}

/// A borrowing lookup hands out the one shared provider without touching
/// its reference count, and finds nothing for a missing table.
#[tokio::test]
async fn a_borrowing_lookup_leaves_the_providers_reference_count_alone() {
    let engine = notes_for_alice_and_bob().await;
    let cache = engine.schema_cache();
    let shared = cache.get_provider("app", "notes").unwrap();
    let before = Arc::strong_count(&shared);
    let (same, during) = cache
        .with_provider("app", "notes", |p| {
            (Arc::ptr_eq(p, &shared), Arc::strong_count(p))
        })
        .unwrap();
    assert!(same);
    assert_eq!(during, before);
    assert_eq!(Arc::strong_count(&shared), before);
    assert!(cache.with_provider("app", "missing", |_| ()).is_none());
    assert!(cache.with_provider("nowhere", "notes", |_| ()).is_none());
}
