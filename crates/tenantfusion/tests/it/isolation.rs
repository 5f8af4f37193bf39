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

#[tokio::test]
async fn delete_and_update_are_refused_without_touching_rows() {
    // UPDATE/DELETE arrive with the storage work; until then they must fail
    // cleanly, including the subquery form that reaches providers unfiltered.
    let engine = notes_for_alice_and_bob().await;
    let alice = user(&engine, "alice");
    for sql in [
        "DELETE FROM app.notes WHERE id IN (SELECT id FROM app.notes WHERE id = 1)",
        "DELETE FROM app.notes",
        "UPDATE app.notes SET body = 'x' WHERE id = 1",
    ] {
        assert_eq!(error_code(&alice, sql).await, "NOT_SUPPORTED", "{sql}");
    }
    assert_eq!(count(&alice, "SELECT count(*) FROM app.notes").await, 2);
    assert_eq!(
        count(&user(&engine, "bob"), "SELECT count(*) FROM app.notes").await,
        1
    );
}
