//! Attacks by a hostile tenant, each once found by someone outside the
//! project: every one is tried bare and through the wrappers that once hid
//! it (EXPLAIN, EXPLAIN ANALYZE, PREPARE/EXECUTE, EXECUTE AS, CTEs,
//! subqueries), with a second user whose rows must stay out of reach.

use std::path::Path;

use crate::common::{admin, count, engine, error, error_code, rows, run, user};
use crate::durable::on;
use tenantfusion::{Engine, Role, UserContext};

/// `app.notes` with a row each for alice and bob, and `app.vault`, a
/// PRIVATE shared table with one secret.
async fn notes_and_vault() -> Engine {
    let engine = engine().await;
    let admin = admin(&engine);
    run(
        &admin,
        "CREATE TABLE app.notes (id BIGINT NOT NULL, body TEXT)",
    )
    .await;
    run(
        &admin,
        "CREATE SHARED TABLE app.vault (id BIGINT, secret TEXT) WITH (ACCESS_LEVEL = PRIVATE)",
    )
    .await;
    run(&admin, "INSERT INTO app.vault VALUES (7, 'vault-secret')").await;
    run(
        &user(&engine, "alice"),
        "INSERT INTO app.notes VALUES (1, 'alice-note')",
    )
    .await;
    run(
        &user(&engine, "bob"),
        "INSERT INTO app.notes VALUES (2, 'bob-note')",
    )
    .await;
    engine
}

fn copy_forms(target: &Path) -> Vec<String> {
    let target = target.display();
    let copy = format!("COPY (SELECT * FROM app.notes) TO '{target}' STORED AS CSV");
    vec![
        copy.clone(),
        format!("EXPLAIN ANALYZE {copy}"),
        format!("EXPLAIN {copy}"),
        format!("COPY app.notes TO '{target}' STORED AS CSV"),
        format!("EXPLAIN ANALYZE COPY app.notes TO '{target}' STORED AS CSV"),
        format!(
            "EXPLAIN ANALYZE COPY (WITH n AS (SELECT * FROM app.notes) \
             SELECT * FROM n WHERE id IN (SELECT id FROM app.notes)) TO '{target}' STORED AS CSV"
        ),
    ]
}

#[tokio::test]
async fn copy_to_a_server_file_is_refused_in_every_wrapper() {
    let engine = notes_and_vault().await;
    let dir = tempfile::tempdir().unwrap();
    // An absolute path, and a file that exists already (COPY would overwrite it).
    let target = dir.path().join("out.csv");
    std::fs::write(&target, "keep me").unwrap();
    let alice = user(&engine, "alice");
    for sql in copy_forms(&target) {
        let err = error(&alice, &sql).await;
        assert_eq!(err.code(), "PERMISSION_DENIED", "{sql}: {err}");
        // Administrators neither, on an engine that names no server file
        // directory (the default).
        let err = error(&admin(&engine), &sql).await;
        assert_eq!(err.code(), "PERMISSION_DENIED", "{sql}: {err}");
        assert!(err.to_string().contains("server_files"), "{sql}: {err}");
        let admin_as_alice = format!("EXECUTE AS USER 'alice' ({sql})");
        let err = error(&admin(&engine), &admin_as_alice).await;
        assert_eq!(err.code(), "PERMISSION_DENIED", "{admin_as_alice}: {err}");
        // Only queries and INSERT can be prepared; the file test below is
        // what shows nothing was written on the way to that answer.
        let prepared = format!("PREPARE p AS {sql}");
        let code = error_code(&alice, &prepared).await;
        assert!(
            matches!(code, "NOT_SUPPORTED" | "SYNTAX_ERROR" | "PERMISSION_DENIED"),
            "{prepared}: {code}"
        );
        let err = alice.prepare(&sql).await.map(drop).unwrap_err();
        assert_eq!(err.code(), "NOT_SUPPORTED", "prepare({sql}): {err}");
    }
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[tokio::test]
async fn name_normalisation_is_engine_wide() {
    let engine = notes_and_vault().await;
    let alice = user(&engine, "alice");
    for sql in [
        "SET datafusion.sql_parser.enable_ident_normalization = false",
        "SET DATAFUSION.SQL_PARSER.ENABLE_IDENT_NORMALIZATION = false",
        "RESET datafusion.sql_parser.enable_ident_normalization",
    ] {
        let err = error(&alice, sql).await;
        assert_eq!(err.code(), "PERMISSION_DENIED", "{sql}: {err}");
    }
    // Names that differ only in case are two tables, each reached only by
    // its own name, and DROP USER clears the caller's rows from both.
    let admin = admin(&engine);
    run(&admin, "CREATE USER 'carol'").await;
    run(&admin, "CREATE TABLE app.mixed (v TEXT)").await;
    run(&admin, "CREATE TABLE app.\"Mixed\" (v TEXT)").await;
    let carol = user(&engine, "carol");
    run(&carol, "INSERT INTO app.mixed VALUES ('lower-carol')").await;
    run(&carol, "INSERT INTO app.\"Mixed\" VALUES ('upper-carol')").await;
    assert_eq!(
        rows(&carol, "SELECT v FROM app.Mixed").await,
        ["lower-carol"]
    );
    assert_eq!(
        rows(&carol, "SELECT v FROM app.\"Mixed\"").await,
        ["upper-carol"]
    );
    run(&admin, "DROP USER 'carol'").await;
    run(&admin, "CREATE USER 'carol'").await;
    let new_carol = user(&engine, "carol");
    assert_eq!(count(&new_carol, "SELECT count(*) FROM app.mixed").await, 0);
    assert_eq!(
        count(&new_carol, "SELECT count(*) FROM app.\"Mixed\"").await,
        0
    );
    // A cached plan does not outlive its table.
    let sql = "SELECT count(*) FROM app.\"Mixed\"";
    assert_eq!(count(&new_carol, sql).await, 0);
    run(&admin, "DROP TABLE app.\"Mixed\"").await;
    assert_eq!(error_code(&new_carol, sql).await, "TABLE_NOT_FOUND");
    run(&admin, "CREATE TABLE app.\"Mixed\" (v TEXT)").await;
    run(&new_carol, "INSERT INTO app.\"Mixed\" VALUES ('again')").await;
    assert_eq!(count(&new_carol, sql).await, 1);
}

#[tokio::test]
async fn a_private_table_shows_nothing_through_explain_describe_or_parameters() {
    let engine = notes_and_vault().await;
    let alice = user(&engine, "alice");
    for sql in [
        "SELECT * FROM app.vault",
        "EXPLAIN SELECT * FROM app.vault",
        "EXPLAIN ANALYZE SELECT * FROM app.vault",
        "EXPLAIN VERBOSE SELECT secret FROM app.vault",
        "DESCRIBE app.vault",
        "WITH v AS (SELECT * FROM app.vault) SELECT count(*) FROM v",
        "SELECT body FROM app.notes WHERE id IN (SELECT id FROM app.vault)",
        "SELECT (SELECT max(secret) FROM app.vault)",
        "INSERT INTO app.notes SELECT id, secret FROM app.vault",
        "EXPLAIN ANALYZE INSERT INTO app.notes SELECT id, secret FROM app.vault",
        "EXECUTE AS USER 'bob' (SELECT 1)",
    ] {
        let err = error(&alice, sql).await;
        assert_eq!(err.code(), "PERMISSION_DENIED", "{sql}: {err}");
        assert!(!err.to_string().contains("vault-secret"), "{sql}: {err}");
    }
    // EXECUTE's values are checked before they are planned.
    run(
        &alice,
        "PREPARE p(BIGINT) AS SELECT body FROM app.notes WHERE id = $1",
    )
    .await;
    let err = error(&alice, "EXECUTE p((SELECT max(id) FROM app.vault))").await;
    assert_eq!(err.code(), "PERMISSION_DENIED", "{err}");
    assert_eq!(rows(&alice, "EXECUTE p(1)").await, ["alice-note"]);
    // Through an administrator's EXECUTE AS, the target's rights apply.
    let err = error(
        &admin(&engine),
        "EXECUTE AS USER 'alice' (EXPLAIN ANALYZE SELECT * FROM app.vault)",
    )
    .await;
    assert_eq!(err.code(), "PERMISSION_DENIED", "{err}");
    // Alice's own statements still work, and show only her row.
    assert_eq!(
        rows(&alice, "SELECT body FROM app.notes").await,
        ["alice-note"]
    );
}

#[tokio::test]
async fn each_privilege_on_a_restricted_table_is_granted_on_its_own() {
    let engine = engine().await;
    let admin = admin(&engine);
    run(
        &admin,
        "CREATE SHARED TABLE app.ledger (k TEXT, v BIGINT) WITH (ACCESS_LEVEL = RESTRICTED)",
    )
    .await;
    run(&admin, "INSERT INTO app.ledger VALUES ('a', 1), ('b', 2)").await;
    run(&admin, "GRANT INSERT ON app.ledger TO 'alice'").await;
    let alice = user(&engine, "alice");
    run(&alice, "INSERT INTO app.ledger VALUES ('c', 3)").await;
    let changes = [
        "UPDATE app.ledger SET v = 0",
        "DELETE FROM app.ledger",
        "DELETE FROM app.ledger WHERE k IN (SELECT k FROM app.ledger WHERE v > 1)",
        "EXPLAIN ANALYZE DELETE FROM app.ledger",
        "EXPLAIN UPDATE app.ledger SET v = 0 WHERE k = 'a'",
        "TRUNCATE app.ledger",
    ];
    for sql in changes {
        let err = error(&alice, sql).await;
        assert_eq!(err.code(), "PERMISSION_DENIED", "{sql}: {err}");
    }
    for sql in ["UPDATE app.ledger SET v = 0", "DELETE FROM app.ledger"] {
        let wrapped = format!("EXECUTE AS USER 'alice' ({sql})");
        assert_eq!(error_code(&admin, &wrapped).await, "PERMISSION_DENIED");
        let err = alice.prepare(sql).await.map(drop).unwrap_err();
        assert_eq!(err.code(), "PERMISSION_DENIED", "{err}");
    }
    assert_eq!(count(&admin, "SELECT sum(v) FROM app.ledger").await, 6);

    // DELETE (with SELECT, as it reads the rows it takes out) allows
    // DELETE and nothing more.
    run(&admin, "GRANT SELECT, DELETE ON app.ledger TO 'alice'").await;
    run(&alice, "DELETE FROM app.ledger WHERE k = 'a'").await;
    assert_eq!(
        error_code(&alice, "UPDATE app.ledger SET v = 0").await,
        "PERMISSION_DENIED"
    );
    run(&admin, "GRANT UPDATE ON app.ledger TO 'alice'").await;
    run(&alice, "UPDATE app.ledger SET v = 10 WHERE k = 'b'").await;
    assert_eq!(count(&admin, "SELECT sum(v) FROM app.ledger").await, 13);
    run(&admin, "REVOKE ALL ON app.ledger FROM 'alice'").await;
    for sql in [
        "SELECT * FROM app.ledger",
        "INSERT INTO app.ledger VALUES ('d', 4)",
    ] {
        assert_eq!(error_code(&alice, sql).await, "PERMISSION_DENIED", "{sql}");
    }
    // Bob, never granted anything, could do none of it.
    let bob = user(&engine, "bob");
    for sql in changes {
        assert_eq!(error_code(&bob, sql).await, "PERMISSION_DENIED", "{sql}");
    }
}

#[tokio::test]
async fn a_failed_create_or_replace_as_keeps_the_old_table_and_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = Engine::new(on(dir.path())).unwrap();
        let admin = admin(&engine);
        run(&admin, "CREATE NAMESPACE app").await;
        run(&admin, "CREATE USER 'alice'").await;
        run(&admin, "CREATE TABLE app.t (id BIGINT NOT NULL, v TEXT)").await;
        let alice = engine.session(UserContext::new("alice", Role::User));
        run(
            &alice,
            "INSERT INTO app.t VALUES (1, 'kept'), (2, 'kept too')",
        )
        .await;
        // The statement reads the creator's own rows.
        run(&admin, "INSERT INTO app.t VALUES (3, 'admin row')").await;
        for sql in [
            // Fails while rows are computed: a division by zero.
            "CREATE OR REPLACE TABLE app.t AS SELECT id / (id - id) AS id FROM app.t",
            // Fails while rows are stored: a NULL in a NOT NULL key.
            "CREATE OR REPLACE TABLE app.t (id BIGINT PRIMARY KEY) AS VALUES (1), (NULL)",
            "CREATE OR REPLACE TABLE app.t (id BIGINT PRIMARY KEY) AS VALUES (1), (1)",
        ] {
            let err = error(&admin, sql).await;
            assert_eq!(
                rows(&alice, "SELECT v FROM app.t ORDER BY id").await,
                ["kept", "kept too"],
                "after {sql}: {err}"
            );
        }
        assert_eq!(count(&admin, "SELECT count(*) FROM app.t").await, 1);
        // A failed plain CTAS leaves no table behind.
        let err = error(
            &admin,
            "CREATE TABLE app.u AS SELECT 1 / (id - id) FROM app.t",
        )
        .await;
        assert!(err.to_string().contains("Divide by zero"), "{err}");
        assert_eq!(
            error_code(&alice, "SELECT * FROM app.u").await,
            "TABLE_NOT_FOUND"
        );
    }
    // Nor do the failed statements come back on reopen.
    let engine = Engine::new(on(dir.path())).unwrap();
    let alice = engine.session(UserContext::new("alice", Role::User));
    assert_eq!(
        rows(&alice, "SELECT v FROM app.t ORDER BY id").await,
        ["kept", "kept too"]
    );
    assert_eq!(
        error_code(&alice, "SELECT * FROM app.u").await,
        "TABLE_NOT_FOUND"
    );
}

#[tokio::test]
async fn create_table_as_stores_every_input_partition() {
    let engine = engine().await;
    let admin = admin(&engine);
    run(
        &admin,
        "CREATE TABLE app.d AS SELECT * FROM (VALUES (1)) UNION ALL SELECT * FROM (VALUES (2), (3))",
    )
    .await;
    assert_eq!(count(&admin, "SELECT count(*) FROM app.d").await, 3);
    // As a user, the rows are the creator's.
    let engine = crate::common::engine_on(
        tenantfusion::EngineConfig::default().with_users_may_create_user_tables(true),
    )
    .await;
    let alice = user(&engine, "alice");
    run(
        &alice,
        "CREATE TABLE app.e AS SELECT 1 AS x UNION ALL SELECT 2 UNION ALL SELECT 3",
    )
    .await;
    assert_eq!(count(&alice, "SELECT count(*) FROM app.e").await, 3);
    assert_eq!(
        count(&user(&engine, "bob"), "SELECT count(*) FROM app.e").await,
        0
    );
}

#[tokio::test]
async fn delete_on_a_stream_table_gives_one_answer_whether_rows_match_or_not() {
    let engine = engine().await;
    run(
        &admin(&engine),
        "CREATE STREAM TABLE app.events (body TEXT) WITH (TTL_SECONDS = 60)",
    )
    .await;
    let alice = user(&engine, "alice");
    run(&alice, "INSERT INTO app.events VALUES ('x')").await;
    let matching = error(&alice, "DELETE FROM app.events WHERE body = 'x'").await;
    let none = error(&alice, "DELETE FROM app.events WHERE body = 'nothing'").await;
    assert_eq!(matching.code(), "NOT_SUPPORTED", "{matching}");
    assert_eq!(matching.to_string(), none.to_string());
    assert_eq!(count(&alice, "SELECT count(*) FROM app.events").await, 1);
}

#[tokio::test]
async fn execute_as_takes_a_trailing_comment() {
    let engine = notes_and_vault().await;
    let admin = admin(&engine);
    assert_eq!(
        rows(
            &admin,
            "EXECUTE AS USER 'bob' (SELECT body FROM app.notes) -- bob's view"
        )
        .await,
        ["bob-note"]
    );
    assert_eq!(
        rows(
            &admin,
            "EXECUTE AS USER 'alice' (SELECT body FROM app.notes WHERE body <> ')') /* ) */"
        )
        .await,
        ["alice-note"]
    );
}

/// One statement of `EXECUTE AS` nested 100,000 deep is a syntax error for
/// a user and for an administrator, refused before anything runs; the
/// engine keeps serving, and the second user's rows are as they were.
#[tokio::test]
async fn deeply_nested_execute_as_is_refused_not_a_crash() {
    let engine = notes_and_vault().await;
    let depth = 100_000;
    let open = "EXECUTE AS USER 'bob' (".repeat(depth);
    let nested = format!("{open}SELECT body FROM app.notes{}", ")".repeat(depth));
    for session in [user(&engine, "alice"), admin(&engine)] {
        assert_eq!(error_code(&session, &nested).await, "SYNTAX_ERROR");
    }
    let bob = user(&engine, "bob");
    assert_eq!(rows(&bob, "SELECT body FROM app.notes").await, ["bob-note"]);
}

#[tokio::test]
async fn table_functions_are_functions_not_table_names() {
    let engine = notes_and_vault().await;
    let alice = user(&engine, "alice");
    assert_eq!(
        count(&alice, "SELECT count(*) FROM generate_series(1, 3)").await,
        3
    );
    assert_eq!(count(&alice, "SELECT sum(value) FROM range(5)").await, 10);
    assert_eq!(
        rows(
            &alice,
            "SELECT n.body FROM app.notes n JOIN generate_series(1, 5) g ON n.id = g.value"
        )
        .await,
        ["alice-note"]
    );
    assert!(
        !rows(&alice, "EXPLAIN SELECT * FROM range(3)")
            .await
            .is_empty()
    );
    assert_eq!(
        count(
            &alice,
            "WITH g AS (SELECT value FROM generate_series(1, 4)) SELECT count(*) FROM g"
        )
        .await,
        4
    );
    assert_eq!(
        rows(
            &admin(&engine),
            "EXECUTE AS USER 'bob' (SELECT n.body FROM app.notes n JOIN range(0, 5) r ON n.id = r.value)"
        )
        .await,
        ["bob-note"]
    );
    let prepared = alice
        .prepare("SELECT count(*) FROM generate_series(1, 6) WHERE value > $1")
        .await
        .unwrap();
    let batches = prepared
        .execute(vec![datafusion::scalar::ScalarValue::Int64(Some(2))])
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(crate::common::column_values(&batches, "count(*)"), ["4"]);
    // Through a CTE, a private table beside the function is refused.
    assert_eq!(
        error_code(
            &alice,
            "WITH v AS (SELECT max(id) AS m FROM app.vault) SELECT * FROM v, generate_series(1, 2)"
        )
        .await,
        "PERMISSION_DENIED"
    );
    run(
        &alice,
        "INSERT INTO app.notes SELECT value, 'series' FROM generate_series(10, 12)",
    )
    .await;
    assert_eq!(
        count(
            &alice,
            "SELECT count(*) FROM app.notes WHERE body = 'series'"
        )
        .await,
        3
    );
    assert_eq!(
        count(&user(&engine, "bob"), "SELECT count(*) FROM app.notes").await,
        1
    );
    // A function's arguments are still checked: a private table inside them
    // is refused before planning shows anything of it.
    let err = error(
        &alice,
        "SELECT * FROM generate_series(1, (SELECT max(id) FROM app.vault))",
    )
    .await;
    assert_eq!(err.code(), "PERMISSION_DENIED", "{err}");
    assert!(!err.to_string().contains("secret"), "{err}");
    // An unknown function is not a table either.
    let err = error(&alice, "SELECT * FROM no_such_function(1)").await;
    assert!(
        !matches!(err.code(), "TABLE_NOT_FOUND"),
        "{}: {err}",
        err.code()
    );
}
