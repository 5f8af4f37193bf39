//! The main job on the embedded default: a namespace, two users, a user table
//! and shared tables, and what each user sees.
//!
//! `cargo run -p tenantfusion-examples --example quickstart`

use datafusion::arrow::util::pretty::pretty_format_batches;
use tenantfusion::{Engine, EngineConfig, Role, TenantSession, UserContext};

async fn show(who: &str, session: &TenantSession, sql: &str) -> tenantfusion::Result<()> {
    match session.sql(sql).await {
        Ok(query) => {
            let batches = query.collect().await?;
            let table = pretty_format_batches(&batches)
                .map_err(|e| tenantfusion::TenantError::Internal(e.to_string()))?;
            println!("{who}> {sql}\n{table}\n");
        }
        Err(err) => println!("{who}> {sql}\n  error {}: {err}\n", err.code()),
    }
    Ok(())
}

#[tokio::main]
async fn main() -> tenantfusion::Result<()> {
    let engine = Engine::new(EngineConfig::default())?;
    let admin = engine.session(UserContext::new("admin", Role::Dba));
    for sql in [
        "CREATE NAMESPACE app",
        "CREATE USER 'alice'",
        "CREATE USER 'bob'",
        "CREATE USER TABLE app.notes (id BIGINT NOT NULL, body TEXT)",
        "CREATE SHARED TABLE app.news (id BIGINT, headline TEXT) WITH (ACCESS_LEVEL = 'public')",
        "CREATE SHARED TABLE app.payroll (user_id TEXT, salary BIGINT) WITH (ACCESS_LEVEL = 'restricted')",
        "INSERT INTO app.news VALUES (1, 'tenantfusion ships'), (2, 'one provider per table')",
        "INSERT INTO app.payroll VALUES ('alice', 100), ('bob', 90)",
        "GRANT SELECT ON app.payroll TO 'alice'",
    ] {
        admin.sql(sql).await?.collect().await?;
    }

    let alice = engine.session(UserContext::new("alice", Role::User));
    let bob = engine.session(UserContext::new("bob", Role::User));
    alice
        .sql("INSERT INTO app.notes VALUES (1, 'alice: buy milk'), (2, 'alice: call mom')")
        .await?
        .collect()
        .await?;
    bob.sql("INSERT INTO app.notes VALUES (1, 'bob: fix bike')")
        .await?
        .collect()
        .await?;

    for (who, session) in [("alice", &alice), ("bob", &bob)] {
        show(who, session, "SELECT id, body FROM app.notes ORDER BY id").await?;
        show(
            who,
            session,
            "SELECT n.body, s.headline FROM app.notes n JOIN app.news s ON n.id = s.id ORDER BY n.id",
        )
        .await?;
        show(who, session, "SELECT * FROM app.payroll ORDER BY user_id").await?;
        show(
            who,
            session,
            "SELECT namespace, table_name, table_type FROM system.tables ORDER BY table_name",
        )
        .await?;
    }
    show(
        "admin",
        &admin,
        "EXECUTE AS USER 'bob' (SELECT count(*) AS bobs_notes FROM app.notes)",
    )
    .await?;
    println!(
        "providers in the schema cache: {} (one per table, whatever the number of users)",
        engine.schema_cache().provider_count()
    );
    Ok(())
}
