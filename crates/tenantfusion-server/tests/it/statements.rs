//! Statements over both protocols: several per simple query, prepared
//! statements planned once, types, errors as SQLSTATEs.

use tokio_postgres::SimpleQueryMessage;

use crate::harness::{TestServer, sqlstate};

fn tags(messages: &[SimpleQueryMessage]) -> Vec<u64> {
    messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::CommandComplete(n) => Some(*n),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_statements_run_in_order_and_an_error_stops_the_rest() {
    let server = TestServer::start().await;
    let alice = server.alice().await;
    let messages = alice
        .simple_query(
            "INSERT INTO app.notes VALUES (1, 'a;b'); \
             UPDATE app.notes SET body = 'c' WHERE id = 1; \
             SELECT body FROM app.notes; ;",
        )
        .await
        .unwrap();
    // INSERT 0 1, UPDATE 1, SELECT 1: the SELECT saw the UPDATE.
    assert_eq!(tags(&messages), [1, 1, 1]);
    let body = messages.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
        _ => None,
    });
    assert_eq!(body.as_deref(), Some("c"));
    let err = alice
        .simple_query(
            "INSERT INTO app.notes VALUES (2, 'x'); SELECT * FROM app.missing; \
             INSERT INTO app.notes VALUES (3, 'never')",
        )
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42P01", "{err}");
    let rows = alice
        .query("SELECT id FROM app.notes ORDER BY id", &[])
        .await
        .unwrap();
    let ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(ids, [1, 2], "the statement after the error did not run");
    // An empty query is answered (EmptyQueryResponse, which tokio-postgres
    // reports as a completion of 0 rows), not an error.
    for empty in ["", " ; ;"] {
        let messages = alice.simple_query(empty).await.unwrap();
        assert_eq!(tags(&messages), [0], "{empty:?}: {messages:?}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_carry_the_sqlstate_of_their_code() {
    let server = TestServer::start().await;
    let alice = server.alice().await;
    alice
        .execute("INSERT INTO app.notes VALUES (1, 'x')", &[])
        .await
        .unwrap();
    for (sql, state) in [
        ("SELECT * FROM app.missing", "42P01"),
        ("INSERT INTO app.notes VALUES (1, 'again')", "23505"),
        ("INSERT INTO app.notes VALUES (NULL, 'x')", "23502"),
        ("SELEC 1", "42601"),
        ("CREATE NAMESPACE mine", "42501"),
    ] {
        let simple = alice.simple_query(sql).await.unwrap_err();
        assert_eq!(sqlstate(&simple), state, "{sql}: {simple}");
        let db = simple.as_db_error().unwrap();
        assert!(
            db.message()
                .split(':')
                .next()
                .unwrap()
                .chars()
                .all(|c| c.is_ascii_uppercase() || c == '_'),
            "our code leads the message: {}",
            db.message()
        );
        let extended = alice.execute(sql, &[]).await.unwrap_err();
        assert_eq!(sqlstate(&extended), state, "{sql} (extended): {extended}");
    }
    // The connection is still good.
    assert_eq!(alice.query("SELECT 1", &[]).await.unwrap().len(), 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepared_statement_is_planned_once() {
    let server = TestServer::start().await;
    let alice = server.alice().await;
    for id in 0..20i64 {
        alice
            .execute("INSERT INTO app.notes VALUES ($1, 'n')", &[&id])
            .await
            .unwrap();
    }
    let find = alice
        .prepare("SELECT body FROM app.notes WHERE id = $1")
        .await
        .unwrap();
    // The engine keeps a statement's generic plan on its second run; from
    // then on no run plans anything.
    for i in 0..10i64 {
        assert_eq!(alice.query(&find, &[&i]).await.unwrap().len(), 1);
    }
    let before = server.engine.plan_cache_stats();
    for i in 0..1000i64 {
        let rows = alice.query(&find, &[&(i % 20)]).await.unwrap();
        assert_eq!(rows.len(), 1);
    }
    let after = server.engine.plan_cache_stats();
    assert_eq!(
        after.misses, before.misses,
        "planned again: {before:?} -> {after:?}"
    );
    assert_eq!(after.hits - before.hits, 1000, "{before:?} -> {after:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_are_answered_and_rollback_warns() {
    let server = TestServer::start().await;
    let alice = server.alice().await;
    alice.simple_query("BEGIN").await.unwrap();
    alice
        .simple_query("INSERT INTO app.notes VALUES (1, 'kept')")
        .await
        .unwrap();
    alice.simple_query("ROLLBACK").await.unwrap();
    // Each statement commits when it completes: the row stays.
    assert_eq!(
        alice
            .query("SELECT id FROM app.notes", &[])
            .await
            .unwrap()
            .len(),
        1
    );
    // A driver's transaction runs its statements.
    let mut alice = alice;
    let tx = alice.transaction().await.unwrap();
    tx.execute("INSERT INTO app.notes VALUES ($1, 'tx')", &[&2i64])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        alice
            .query("SELECT id FROM app.notes", &[])
            .await
            .unwrap()
            .len(),
        2
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_users_at_once_each_see_only_their_rows() {
    let server = std::sync::Arc::new(TestServer::start().await);
    let admin = server.admin_session();
    for n in 0..32 {
        admin
            .sql(&format!("CREATE USER 'u{n}' WITH PASSWORD 'pw{n}'"))
            .await
            .unwrap();
    }
    let mut tasks = Vec::new();
    for n in 0..32i64 {
        let server = std::sync::Arc::clone(&server);
        tasks.push(tokio::spawn(async move {
            let client = server
                .connect(&format!("u{n}"), &format!("pw{n}"))
                .await
                .unwrap();
            let insert = client
                .prepare("INSERT INTO app.notes VALUES ($1, $2)")
                .await
                .unwrap();
            for i in 0..10i64 {
                client
                    .execute(&insert, &[&(n * 100 + i), &format!("u{n}")])
                    .await
                    .unwrap();
            }
            let rows = client
                .query("SELECT id, body FROM app.notes", &[])
                .await
                .unwrap();
            assert_eq!(rows.len(), 10, "u{n}");
            for row in rows {
                assert_eq!(row.get::<_, i64>(0) / 100, n);
                assert_eq!(row.get::<_, String>(1), format!("u{n}"));
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_and_explain_are_described_for_the_extended_protocol() {
    let server = TestServer::start().await;
    let alice = server.alice().await;
    alice
        .execute("INSERT INTO app.notes VALUES (1, 'a')", &[])
        .await
        .unwrap();
    // tokio-postgres's query() prepares (Parse, Describe), then binds
    // with binary results: the rows must have been described.
    let rows = alice
        .query("SHOW datafusion.execution.batch_size", &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    let name: &str = rows[0].get(0);
    let value: &str = rows[0].get(1);
    assert_eq!((name, value), ("datafusion.execution.batch_size", "8192"));
    let plan = alice
        .query("EXPLAIN SELECT id FROM app.notes WHERE id > 0", &[])
        .await
        .unwrap();
    let text: Vec<String> = plan.iter().map(|row| row.get::<_, String>(1)).collect();
    assert!(text.join("\n").contains("notes"), "{text:?}");
    let analyzed = alice
        .query("EXPLAIN ANALYZE SELECT count(*) FROM app.notes", &[])
        .await
        .unwrap();
    assert!(!analyzed.is_empty());
    // Planned at Parse for its columns, run once at Execute: EXPLAIN
    // ANALYZE of a change writes its row once, not twice.
    let before = alice
        .query_one("SELECT count(*) FROM app.notes", &[])
        .await
        .unwrap()
        .get::<_, i64>(0);
    alice
        .query(
            "EXPLAIN ANALYZE INSERT INTO app.notes VALUES (5, 'once')",
            &[],
        )
        .await
        .unwrap();
    let after = alice
        .query_one("SELECT count(*) FROM app.notes", &[])
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(after, before + 1);
    // Described as the statement's own columns.
    let statement = alice.prepare("SHOW TABLES").await.unwrap();
    let columns: Vec<&str> = statement.columns().iter().map(|c| c.name()).collect();
    assert!(columns.contains(&"table_name"), "{columns:?}");
    // A statement that fails to plan fails at Parse, with its code.
    let err = alice
        .prepare("EXPLAIN SELECT * FROM app.nowhere")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42P01", "{err}");
    // Statements without rows are still described as none.
    let set = alice
        .prepare("SET datafusion.execution.batch_size = 1024")
        .await
        .unwrap();
    assert!(set.columns().is_empty());
    server.stop().await;
}
