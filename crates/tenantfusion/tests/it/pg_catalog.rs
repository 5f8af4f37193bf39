//! `pg_catalog` lists to each caller what they may see, however the query
//! is wrapped and whoever ran the same plan before; its tables cannot be
//! written; its tables agree with each other.

use crate::common::{admin, engine, error_code, rows, run, user};

/// What psql's `\d` asks, trimmed to names.
const LISTING: &str = "SELECT n.nspname, c.relname, c.relkind \
     FROM pg_catalog.pg_class c \
     LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
     LEFT JOIN pg_catalog.pg_am am ON am.oid = c.relam \
     WHERE c.relkind IN ('r','p','v','m','S','f','') \
       AND n.nspname <> 'pg_catalog' AND n.nspname !~ '^pg_toast' \
       AND n.nspname <> 'information_schema' AND n.nspname <> 'system' \
       AND pg_catalog.pg_table_is_visible(c.oid) \
     ORDER BY 1, 2";

async fn tenants() -> tenantfusion::Engine {
    let engine = engine().await;
    let admin = admin(&engine);
    for sql in [
        "CREATE TABLE app.notes (id BIGINT NOT NULL, body TEXT)",
        "CREATE SHARED TABLE app.ledger (id BIGINT) WITH (ACCESS_LEVEL = PRIVATE)",
        "CREATE SHARED TABLE app.board (id BIGINT) WITH (ACCESS_LEVEL = RESTRICTED)",
        "GRANT SELECT ON app.board TO 'bob'",
        "CREATE NAMESPACE vault",
        "CREATE SHARED TABLE vault.keys (id BIGINT) WITH (ACCESS_LEVEL = PRIVATE)",
    ] {
        run(&admin, sql).await;
    }
    engine
}

#[tokio::test]
async fn each_caller_lists_only_what_they_may_see_whoever_planned_it_first() {
    let engine = tenants().await;
    let (admin, alice, bob) = (admin(&engine), user(&engine, "alice"), user(&engine, "bob"));
    let everything = ["app board r", "app ledger r", "app notes r", "vault keys r"];
    // The same text one after the other: the second and third runs reuse
    // the first's plan.
    assert_eq!(rows(&alice, LISTING).await, ["app notes r"]);
    assert_eq!(rows(&bob, LISTING).await, ["app board r", "app notes r"]);
    assert_eq!(rows(&admin, LISTING).await, everything);
    assert_eq!(rows(&alice, LISTING).await, ["app notes r"]);

    // Namespaces: alice does not learn that `vault` exists.
    let spaces = "SELECT nspname FROM pg_catalog.pg_namespace ORDER BY 1";
    assert_eq!(
        rows(&alice, spaces).await,
        ["app", "information_schema", "pg_catalog", "system"]
    );
    assert!(rows(&admin, spaces).await.contains(&"vault".to_string()));

    // Wrapped: a CTE, a subquery, a view the administrator made, a
    // prepared statement, EXECUTE AS: always the reader's listing.
    let names = "SELECT relname FROM pg_catalog.pg_class WHERE relkind = 'r' \
                 AND relnamespace <> 11 ORDER BY 1";
    let cte = format!("WITH l AS ({names}) SELECT * FROM l ORDER BY 1");
    let sub = "SELECT count(*) FROM pg_catalog.pg_class c \
               WHERE c.relnamespace IN (SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = 'vault')";
    let only_alice = [
        "live_connections",
        "live_sources",
        "live_subscriptions",
        "notes",
        "tables",
        "users",
    ];
    assert_eq!(rows(&alice, &cte).await, only_alice);
    assert_eq!(rows(&alice, sub).await, ["0"]);
    assert_eq!(rows(&admin, sub).await, ["1"]);
    run(&admin, &format!("CREATE VIEW app.listing AS {names}")).await;
    let via_view = rows(&alice, "SELECT * FROM app.listing ORDER BY 1").await;
    assert!(via_view.contains(&"notes".to_string()), "{via_view:?}");
    assert!(
        !via_view.iter().any(|n| n == "ledger" || n == "keys"),
        "{via_view:?}"
    );
    let prepared = alice.prepare(&cte).await.unwrap();
    let by_alice = crate::common::prepared_rows(&prepared, vec![]).await;
    assert_eq!(by_alice, only_alice);
    let as_alice = rows(&admin, &format!("EXECUTE AS USER 'alice' ({cte})")).await;
    assert_eq!(as_alice, only_alice);
    // SQL PREPARE/EXECUTE of the same text in two sessions: each its own.
    let prepare = format!("PREPARE listing AS {names}");
    run(&alice, &prepare).await;
    run(&bob, &prepare).await;
    assert_eq!(rows(&alice, "EXECUTE listing").await, only_alice);
    let by_bob = rows(&bob, "EXECUTE listing").await;
    assert!(by_bob.contains(&"board".to_string()), "{by_bob:?}");
    assert!(
        !by_bob.iter().any(|n| n == "ledger" || n == "keys"),
        "{by_bob:?}"
    );
    assert_eq!(rows(&alice, "EXECUTE listing").await, only_alice);
    // EXPLAIN shows the plan, not anybody's listing.
    let plain = rows(&alice, &format!("EXPLAIN {names}")).await.join("\n");
    assert!(
        !plain.contains("ledger") && !plain.contains("vault"),
        "{plain}"
    );
    let explained = rows(&alice, &format!("EXPLAIN ANALYZE {names}"))
        .await
        .join("\n");
    assert!(
        !explained.contains("ledger") && !explained.contains("vault"),
        "{explained}"
    );
}

#[tokio::test]
async fn pg_catalog_is_read_only_and_reserved() {
    let engine = tenants().await;
    let (admin, alice) = (admin(&engine), user(&engine, "alice"));
    for sql in [
        "INSERT INTO pg_catalog.pg_am VALUES (1, 'heap', 't')",
        "EXPLAIN ANALYZE INSERT INTO pg_catalog.pg_am VALUES (1, 'heap', 't')",
        "DELETE FROM pg_catalog.pg_class",
    ] {
        assert_eq!(error_code(&alice, sql).await, "PERMISSION_DENIED", "{sql}");
        assert_eq!(error_code(&admin, sql).await, "PERMISSION_DENIED", "{sql}");
    }
    for sql in [
        "CREATE NAMESPACE pg_catalog",
        "CREATE TABLE pg_catalog.pg_foo (id BIGINT)",
        "CREATE VIEW pg_catalog.pg_class2 AS SELECT 1",
    ] {
        assert_eq!(error_code(&admin, sql).await, "PERMISSION_DENIED", "{sql}");
    }
    assert_eq!(
        error_code(&alice, "SELECT * FROM pg_catalog.pg_authid").await,
        "TABLE_NOT_FOUND"
    );
}

#[tokio::test]
async fn the_tables_agree_within_and_across_statements() {
    let engine = tenants().await;
    let admin = admin(&engine);
    let joined = "SELECT n.nspname, c.relname FROM pg_catalog.pg_class c \
                  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                  WHERE n.nspname = 'app' ORDER BY 2";
    assert_eq!(
        rows(&admin, joined).await,
        ["app board", "app ledger", "app notes"]
    );
    let oid = "SELECT oid FROM pg_catalog.pg_class WHERE relname = 'notes'";
    let first = rows(&admin, oid).await;
    run(&admin, "CREATE TABLE app.later (id BIGINT)").await;
    assert_eq!(rows(&admin, oid).await, first, "an OID does not move");
    // Every class's namespace is listed.
    let orphans = "SELECT count(*) FROM pg_catalog.pg_class c \
                   LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                   WHERE n.oid IS NULL";
    assert_eq!(rows(&admin, orphans).await, ["0"]);
    assert_eq!(rows(&user(&engine, "alice"), orphans).await, ["0"]);
    assert_eq!(
        rows(
            &admin,
            "SELECT pg_catalog.pg_get_userbyid(10), pg_table_is_visible(1)"
        )
        .await,
        ["tenantfusion true"]
    );
}
