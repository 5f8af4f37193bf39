//! Logins by SCRAM-SHA-256, one identity per connection.

use tokio_postgres::SimpleQueryMessage;

use crate::harness::{TestServer, message, sqlstate};

/// The ids `client` sees in app.notes, by the simple protocol.
async fn ids(client: &tokio_postgres::Client) -> Vec<String> {
    client
        .simple_query("SELECT id FROM app.notes ORDER BY id")
        .await
        .unwrap()
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_users_each_see_only_their_rows() {
    let server = TestServer::start().await;
    let alice = server.alice().await;
    let bob = server.bob().await;
    alice
        .simple_query("INSERT INTO app.notes VALUES (1, 'alice one'), (2, 'alice two')")
        .await
        .unwrap();
    bob.execute(
        "INSERT INTO app.notes VALUES ($1, $2)",
        &[&7i64, &"bob seven"],
    )
    .await
    .unwrap();
    assert_eq!(ids(&alice).await, ["1", "2"]);
    assert_eq!(ids(&bob).await, ["7"]);
    // The extended protocol sees the same.
    let rows = bob
        .query("SELECT id, body FROM app.notes WHERE id > $1", &[&0i64])
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<_, String>(1), "bob seven");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_unknown_user_and_other_database_are_refused() {
    let server = TestServer::start().await;
    let wrong = server.connect("alice", "bob-pw").await.unwrap_err();
    assert_eq!(sqlstate(&wrong), "28P01", "{wrong}");
    let unknown = server.connect("mallory", "x").await.unwrap_err();
    assert_eq!(sqlstate(&unknown), "28P01", "{unknown}");
    // The answer does not tell an unknown user from a wrong password.
    assert_eq!(
        message(&wrong).replace("alice", "?"),
        message(&unknown).replace("mallory", "?")
    );
    let mut config = server.config("alice", "alice-pw");
    config.dbname("postgres");
    let Err(err) = config.connect(tokio_postgres::NoTls).await else {
        panic!("connected to database postgres");
    };
    assert_eq!(sqlstate(&err), "3D000", "{err}");
    // A user created without a password cannot log in with any.
    server
        .admin_session()
        .sql("CREATE USER 'nopass'")
        .await
        .unwrap();
    let err = server.connect("nopass", "").await.unwrap_err();
    assert_eq!(sqlstate(&err), "28P01", "{err}");
    // The server still serves after all that.
    assert_eq!(ids(&server.alice().await).await, Vec::<String>::new());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_sent_after_login_changes_the_user() {
    let server = TestServer::start().await;
    let bob = server.bob().await;
    bob.simple_query("INSERT INTO app.notes VALUES (9, 'bob secret')")
        .await
        .unwrap();
    // Startup parameters naming another role or user are not consulted.
    let mut config = server.config("alice", "alice-pw");
    config.options("-c role=bob -c session_authorization=bob");
    config.application_name("bob");
    let (alice, connection) = config.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    for sql in [
        "SET ROLE bob",
        "SET SESSION AUTHORIZATION bob",
        "SET SESSION AUTHORIZATION 'bob'",
        "SET role = 'bob'",
        "SET session_authorization = 'bob'",
        "EXECUTE AS USER 'bob' SELECT body FROM app.notes",
        "EXECUTE AS USER 'bob' (SELECT body FROM app.notes)",
    ] {
        let result = alice.simple_query(sql).await;
        assert!(result.is_err(), "{sql} was accepted");
        assert_eq!(ids(&alice).await, Vec::<String>::new(), "after {sql}");
    }
    // Wrapped forms, by both protocols: each shows alice's own row and
    // never bob's.
    alice
        .simple_query("INSERT INTO app.notes VALUES (1, 'alice note')")
        .await
        .unwrap();
    server
        .admin()
        .await
        .batch_execute("CREATE VIEW app.every_note AS SELECT body FROM app.notes")
        .await
        .unwrap();
    alice
        .simple_query("PREPARE mine AS SELECT body FROM app.notes")
        .await
        .unwrap();
    for sql in [
        "WITH x AS (SELECT body FROM app.notes) SELECT * FROM x",
        "SELECT (SELECT max(body) FROM app.notes)",
        "SELECT body FROM app.every_note",
        "EXECUTE mine",
    ] {
        let messages = alice.simple_query(sql).await.unwrap();
        let seen: Vec<String> = messages
            .iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
                _ => None,
            })
            .collect();
        assert_eq!(seen, ["alice note"], "{sql}");
    }
    for sql in [
        "WITH x AS (SELECT body FROM app.notes) SELECT * FROM x",
        "SELECT body FROM app.every_note",
        "SELECT body FROM app.notes WHERE id IN (SELECT id FROM app.notes)",
    ] {
        let rows = alice.query(sql, &[]).await.unwrap();
        let seen: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        assert_eq!(seen, ["alice note"], "{sql} (extended)");
    }
    // EXPLAIN ANALYZE of EXECUTE AS is refused to a user however it comes.
    for sql in [
        "EXPLAIN ANALYZE EXECUTE AS USER 'bob' SELECT body FROM app.notes",
        "EXPLAIN EXECUTE AS USER 'bob' SELECT body FROM app.notes",
    ] {
        let err = alice.simple_query(sql).await.unwrap_err();
        assert!(!format!("{err:?}").contains("bob secret"), "{sql}");
        let err = alice.query(sql, &[]).await.unwrap_err();
        assert!(
            !format!("{err:?}").contains("bob secret"),
            "{sql} (extended)"
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_creates_users_who_then_log_in() {
    let server = TestServer::start().await;
    let admin = server.admin().await;
    admin
        .simple_query("CREATE USER 'carol' WITH PASSWORD 'it''s carol'")
        .await
        .unwrap();
    let carol = server.connect("carol", "it's carol").await.unwrap();
    carol
        .simple_query("INSERT INTO app.notes VALUES (3, 'carol')")
        .await
        .unwrap();
    assert_eq!(ids(&carol).await, ["3"]);
    // Only her own password is hers to change; the new one works at once.
    let err = carol
        .simple_query("ALTER USER 'alice' WITH PASSWORD 'taken'")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42501", "{err}");
    carol
        .simple_query("ALTER USER 'carol' WITH PASSWORD 'new'")
        .await
        .unwrap();
    assert_eq!(
        sqlstate(&server.connect("carol", "it's carol").await.unwrap_err()),
        "28P01"
    );
    server.connect("carol", "new").await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_dropped_while_connected_is_disconnected() {
    let server = TestServer::start().await;
    let alice = server.alice().await;
    let insert = alice
        .prepare("INSERT INTO app.notes VALUES ($1, 'x')")
        .await
        .unwrap();
    alice.execute(&insert, &[&1i64]).await.unwrap();
    let admin = server.admin().await;
    admin.batch_execute("DROP USER 'alice'").await.unwrap();
    // Neither a prepared statement nor a new one writes for her again.
    let err = alice.execute(&insert, &[&2i64]).await.unwrap_err();
    assert_eq!(sqlstate(&err), "28000", "{err}");
    assert!(alice.is_closed() || alice.simple_query("SELECT 1").await.is_err());
    assert_eq!(
        sqlstate(&server.connect("alice", "alice-pw").await.unwrap_err()),
        "28P01"
    );
    server.stop().await;
}
