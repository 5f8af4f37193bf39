//! Shared tables by role, including the anonymous caller.

use tenantfusion::{Role, UserContext};

use crate::common::{admin, count, engine, error_code, run, user};

#[tokio::test]
async fn anonymous_reads_public_only() {
    let engine = engine().await;
    let admin = admin(&engine);
    run(&admin, "CREATE SHARED TABLE app.pub (v INT)").await;
    run(
        &admin,
        "CREATE SHARED TABLE app.priv (v INT) WITH (ACCESS_LEVEL = 'private')",
    )
    .await;
    run(&admin, "CREATE USER TABLE app.mine (v INT)").await;
    run(&admin, "INSERT INTO app.pub VALUES (1), (2)").await;
    let anon = engine.session(UserContext::new("visitor", Role::Anonymous));
    assert_eq!(count(&anon, "SELECT count(*) FROM app.pub").await, 2);
    for sql in [
        "SELECT * FROM app.priv",
        "SELECT * FROM app.mine",
        "INSERT INTO app.pub VALUES (3)",
        "INSERT INTO app.mine VALUES (3)",
    ] {
        assert_eq!(error_code(&anon, sql).await, "PERMISSION_DENIED", "{sql}");
    }
    assert_eq!(
        count(&user(&engine, "alice"), "SELECT count(*) FROM app.pub").await,
        2
    );
}

#[tokio::test]
async fn shared_rows_are_one_partition_for_all_writers() {
    let engine = engine().await;
    run(&admin(&engine), "CREATE SHARED TABLE app.log (msg TEXT)").await;
    let a = engine.session(UserContext::new("svc-a", Role::Service));
    let b = engine.session(UserContext::new("svc-b", Role::Service));
    run(&a, "INSERT INTO app.log VALUES ('from a')").await;
    run(&b, "INSERT INTO app.log VALUES ('from b')").await;
    assert_eq!(
        count(&user(&engine, "alice"), "SELECT count(*) FROM app.log").await,
        2
    );
}
