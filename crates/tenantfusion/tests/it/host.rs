//! A host database's own SessionContext with the tenantfusion catalog.

use datafusion::prelude::{SessionConfig, SessionContext};
use tenantfusion::{Role, TenantError, UserContext, attach_user};

use crate::common::{admin, engine, run, user};

fn host(engine: &tenantfusion::Engine, who: Option<&str>) -> SessionContext {
    let mut config = SessionConfig::new();
    if let Some(name) = who {
        attach_user(&mut config, UserContext::new(name, Role::User));
    }
    let ctx = SessionContext::new_with_config(config);
    engine.register_in(&ctx);
    ctx
}

#[tokio::test]
async fn host_context_sees_the_attached_users_rows() {
    let engine = engine().await;
    run(
        &admin(&engine),
        "CREATE USER TABLE app.kv (k TEXT, v BIGINT)",
    )
    .await;
    run(
        &user(&engine, "alice"),
        "INSERT INTO app.kv VALUES ('a', 1)",
    )
    .await;
    run(
        &user(&engine, "bob"),
        "INSERT INTO app.kv VALUES ('b', 2), ('c', 3)",
    )
    .await;

    for (who, expected) in [("alice", 1), ("bob", 2)] {
        let ctx = host(&engine, Some(who));
        // A SET cannot reach the identity: it is a typed extension, not an option.
        assert!(ctx.sql("SET tenantfusion.user_id = 'alice'").await.is_err());
        let batches = ctx
            .sql("SELECT * FROM tenantfusion.app.kv")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        assert_eq!(
            batches.iter().map(|b| b.num_rows()).sum::<usize>(),
            expected,
            "{who}"
        );
    }
}

#[tokio::test]
async fn host_context_without_a_user_is_refused() {
    let engine = engine().await;
    run(&admin(&engine), "CREATE USER TABLE app.kv (k TEXT)").await;
    run(
        &user(&engine, "alice"),
        "INSERT INTO app.kv VALUES ('secret')",
    )
    .await;
    let ctx = host(&engine, None);
    let err = ctx
        .sql("SELECT * FROM tenantfusion.app.kv")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap_err();
    assert_eq!(TenantError::from_datafusion(err).code(), "NO_USER_CONTEXT");
    let err = ctx
        .sql("INSERT INTO tenantfusion.app.kv VALUES ('x')")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap_err();
    assert_eq!(TenantError::from_datafusion(err).code(), "NO_USER_CONTEXT");
    let err = ctx
        .sql("CREATE TABLE tenantfusion.app.other (x INT)")
        .await
        .unwrap_err();
    assert_eq!(TenantError::from_datafusion(err).code(), "NOT_SUPPORTED");
}
