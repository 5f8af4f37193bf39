//! The classes of PostgreSQL row-level-security CVEs, one test each, in
//! the spirit of PostgreSQL's `rowsecurity.sql`: what went wrong there must
//! not go wrong here. Bob's rows carry marker values; every answer, plan
//! text and error alice gets is searched for them.

use tenantfusion::Engine;

use crate::common::{admin, engine, error, error_code, rows, run, user};

/// In bob's 500 rows (ids 7000..7499, bodies `bob-secret-<id>`) and in
/// nothing of alice's: counts over bob's rows (500, or 399 above 7100)
/// as `output_rows` of a plan.
const MARKERS: [&str; 5] = [
    "bob-secret",
    "7499",
    "output_rows=500",
    "output_rows=399",
    "Rows=Exact(500)",
];

/// `app.notes` with alice's three rows (bodies that cast to numbers) and
/// bob's 500 marked ones; RESTRICTED `app.accounts` holding a secret.
async fn tenants() -> Engine {
    let engine = engine().await;
    let admin = admin(&engine);
    for sql in [
        "CREATE TABLE app.notes (id BIGINT NOT NULL, body TEXT)",
        "CREATE SHARED TABLE app.accounts (id BIGINT NOT NULL, secret TEXT, PRIMARY KEY (id)) \
         WITH (ACCESS_LEVEL = RESTRICTED)",
        "INSERT INTO app.accounts VALUES (1, 'top-secret')",
    ] {
        run(&admin, sql).await;
    }
    run(
        &user(&engine, "alice"),
        "INSERT INTO app.notes VALUES (1, '1'), (2, '2'), (3, '3')",
    )
    .await;
    run(
        &user(&engine, "bob"),
        "INSERT INTO app.notes SELECT value, 'bob-secret-' || value \
         FROM generate_series(7000, 7499)",
    )
    .await;
    engine
}

fn assert_clean(what: &str, text: &str) {
    for marker in MARKERS {
        assert!(!shows(text, marker), "{what} shows {marker:?}: {text}");
    }
}

/// Whether `marker` occurs in `text` with no digit touching it: "7499" is
/// bob's id in `7499` or `Int64(7499)`, but not in a clock reading such as
/// `13:04:38.749909Z` (a timestamp's fraction has 3, 6 or 9 digits, so a
/// number that is not part of a longer one never comes from a clock).
fn shows(text: &str, marker: &str) -> bool {
    text.match_indices(marker).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + marker.len()..].chars().next();
        !before.is_some_and(|c| c.is_ascii_digit()) && !after.is_some_and(|c| c.is_ascii_digit())
    })
}

#[test]
fn a_marker_touched_by_digits_is_part_of_another_number() {
    assert!(shows("Max=Exact(Int64(7499))", "7499"));
    assert!(shows("7499", "7499"));
    assert!(shows("bob-secret-7000", "bob-secret"));
    assert!(!shows("2026-12-07T13:04:38.749909Z", "7499"));
    assert!(!shows("output_rows=5000", "output_rows=500"));
}

/// CVE-2016-2193 (a plan cached for one role reused for another without its
/// policies) and CVE-2023-2455 (policies of the wrong user after a user
/// change): every reuse of a plan is decided for the user running it.
#[tokio::test]
async fn cve_2016_2193_2023_2455_a_plan_made_for_one_user_answers_another_for_themselves() {
    let engine = tenants().await;
    let alice = user(&engine, "alice");
    let bob = user(&engine, "bob");
    let sql = "SELECT body FROM app.notes WHERE id < 7002 ORDER BY id";
    assert_eq!(rows(&alice, sql).await, ["1", "2", "3"]);
    assert_eq!(rows(&alice, sql).await, ["1", "2", "3"]);
    let cached = bob.sql(sql).await.unwrap();
    assert!(cached.from_cache(), "bob reuses alice's plan");
    let batches = cached.collect().await.unwrap();
    let bodies = crate::common::column_values(&batches, "body");
    assert_eq!(bodies, ["bob-secret-7000", "bob-secret-7001"]);
    assert_eq!(rows(&alice, sql).await, ["1", "2", "3"]);

    // A grant alice has is not lent to bob by her cached plan, and is gone
    // from her own the moment it is revoked.
    let admin = admin(&engine);
    run(&admin, "GRANT SELECT ON app.accounts TO 'alice'").await;
    let secret = "SELECT secret FROM app.accounts";
    assert_eq!(rows(&alice, secret).await, ["top-secret"]);
    let err = error(&bob, secret).await;
    assert_eq!(err.code(), "PERMISSION_DENIED");
    assert!(!err.to_string().contains("top-secret"), "{err}");
    run(&admin, "REVOKE SELECT ON app.accounts FROM 'alice'").await;
    assert_eq!(error_code(&alice, secret).await, "PERMISSION_DENIED");

    // The same plan under EXECUTE AS, one user after the other.
    let as_alice = "EXECUTE AS USER 'alice' (SELECT count(*) FROM app.notes)";
    let as_bob = "EXECUTE AS USER 'bob' (SELECT count(*) FROM app.notes)";
    assert_eq!(rows(&admin, as_alice).await, ["3"]);
    assert_eq!(rows(&admin, as_bob).await, ["500"]);
    assert_eq!(rows(&admin, as_alice).await, ["3"]);

    // Prepared statements of the same text, one per user.
    let by_alice = alice
        .prepare("SELECT count(*) FROM app.notes WHERE id > $1")
        .await
        .unwrap();
    let by_bob = bob
        .prepare("SELECT count(*) FROM app.notes WHERE id > $1")
        .await
        .unwrap();
    for (prepared, expected) in [(&by_alice, 3), (&by_bob, 500), (&by_alice, 3)] {
        let batches = prepared
            .execute(vec![datafusion::scalar::ScalarValue::Int64(Some(0))])
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let count = crate::common::column_values(&batches, "count(*)");
        assert_eq!(count, [expected.to_string()]);
    }
    // No statement changes who the session is.
    for sql in [
        "SET ROLE 'dba'",
        "SET SESSION AUTHORIZATION 'bob'",
        "SET datafusion.catalog.default_catalog = 'other'",
    ] {
        let err = error(&alice, sql).await;
        assert!(
            matches!(
                err.code(),
                "PERMISSION_DENIED" | "NOT_SUPPORTED" | "SYNTAX_ERROR"
            ),
            "{sql}: {err}"
        );
    }
    // DataFusion's information schema switch is accepted and changes
    // nothing: the engine's own, per caller, answers.
    run(&alice, "SET datafusion.catalog.information_schema = true").await;
    assert_eq!(rows(&alice, "SELECT count(*) FROM app.notes").await, ["3"]);
}

/// CVE-2019-10130 (a leaky operator's statistics showing rows a policy
/// hides) and CVE-2025-8713 (optimizer statistics exposing sampled rows):
/// nothing computed over bob's rows reaches alice, not through plan
/// statistics, metrics, errors of expressions, nor system tables.
#[tokio::test]
async fn cve_2019_10130_2025_8713_statistics_and_selectivity_show_nothing_of_other_rows() {
    let engine = tenants().await;
    let alice = user(&engine, "alice");
    run(&alice, "SET datafusion.explain.show_statistics = true").await;
    for sql in [
        "EXPLAIN SELECT * FROM app.notes WHERE id > 7100",
        "EXPLAIN VERBOSE SELECT * FROM app.notes WHERE id > 7100",
        "EXPLAIN ANALYZE SELECT * FROM app.notes WHERE id > 7100",
        "EXPLAIN ANALYZE SELECT count(*), max(id), min(body) FROM app.notes",
        "SELECT * FROM system.tables",
        "SELECT count(*), max(id), min(body) FROM app.notes",
    ] {
        let text = rows(&alice, sql).await.join("\n");
        assert_clean(sql, &text);
    }
    // An expression that fails on bob's rows (their bodies are not
    // numbers) never sees them: alice's rows are the only ones evaluated,
    // whatever the plan puts first.
    for sql in [
        "SELECT id FROM app.notes WHERE CAST(body AS BIGINT) > 0 ORDER BY id",
        "SELECT n.id FROM app.notes n JOIN app.notes m ON CAST(n.body AS BIGINT) = m.id ORDER BY 1",
        "SELECT id FROM app.notes WHERE id IN (SELECT CAST(body AS BIGINT) FROM app.notes) ORDER BY id",
        "WITH c AS (SELECT CAST(body AS BIGINT) AS v FROM app.notes) SELECT v FROM c ORDER BY v",
    ] {
        assert_eq!(rows(&alice, sql).await, ["1", "2", "3"], "{sql}");
    }
    // A failing expression over alice's own rows names only her values.
    run(&alice, "INSERT INTO app.notes VALUES (4, 'x')").await;
    let err = error(&alice, "SELECT CAST(body AS BIGINT) FROM app.notes").await;
    assert_clean("a cast error", &err.to_string());
}

/// CVE-2017-15099 (INSERT ... ON CONFLICT disclosing rows the inserter may
/// not read): a user who may insert but not read learns nothing from a key
/// clash beyond the key they sent, and no upsert goes around the checks.
#[tokio::test]
async fn cve_2017_15099_a_key_clash_discloses_nothing_of_the_row_it_meets() {
    let engine = tenants().await;
    run(&admin(&engine), "GRANT INSERT ON app.accounts TO 'bob'").await;
    let bob = user(&engine, "bob");
    run(&bob, "INSERT INTO app.accounts VALUES (2, 'mine')").await;
    for sql in [
        "INSERT INTO app.accounts VALUES (1, 'mine')",
        "INSERT INTO app.accounts SELECT 1, 'mine'",
        "INSERT INTO app.accounts VALUES (3, 'a'), (1, 'b')",
    ] {
        let err = error(&bob, sql).await;
        assert_eq!(err.code(), "PRIMARY_KEY_VIOLATION", "{sql}: {err}");
        assert!(!err.to_string().contains("top-secret"), "{sql}: {err}");
    }
    for sql in [
        "INSERT INTO app.accounts VALUES (1, 'x') ON CONFLICT (id) DO UPDATE SET secret = 'x'",
        "INSERT INTO app.accounts VALUES (1, 'x') ON CONFLICT DO NOTHING",
        "INSERT INTO app.accounts SELECT id + 100, secret FROM app.accounts",
        "UPDATE app.accounts SET secret = 'x' WHERE secret LIKE 't%'",
    ] {
        let err = error(&bob, sql).await;
        assert_ne!(err.code(), "PRIMARY_KEY_VIOLATION", "{sql}: {err}");
        assert!(!err.to_string().contains("top-secret"), "{sql}: {err}");
    }
    // The row is as it was.
    assert_eq!(
        rows(
            &admin(&engine),
            "SELECT secret FROM app.accounts ORDER BY id"
        )
        .await,
        ["top-secret", "mine"]
    );
}
