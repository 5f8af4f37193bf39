//! A host database that owns its DataFusion `SessionContext` registers the
//! tenantfusion catalog in it and attaches the caller with `attach_user`.
//!
//! `cargo run -p tenantfusion-examples --example host_context`

use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::prelude::{SessionConfig, SessionContext};
use tenantfusion::{Engine, EngineConfig, Role, TenantError, UserContext, attach_user};

/// The host's own per-request context, with the caller attached.
fn host_context(engine: &Engine, user: Option<UserContext>) -> SessionContext {
    let mut config = SessionConfig::new();
    if let Some(user) = user {
        attach_user(&mut config, user);
    }
    let ctx = SessionContext::new_with_config(config);
    engine.register_in(&ctx);
    ctx
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let engine = Engine::new(EngineConfig::default())?;
    let admin = engine.session(UserContext::new("admin", Role::Dba));
    admin
        .sql("CREATE USER TABLE orders (id BIGINT, item TEXT)")
        .await?;
    for (user, item) in [("alice", "book"), ("bob", "lamp")] {
        engine
            .session(UserContext::new(user, Role::User))
            .sql(&format!("INSERT INTO orders VALUES (1, '{item}')"))
            .await?
            .collect()
            .await?;
    }

    for user in ["alice", "bob"] {
        let ctx = host_context(&engine, Some(UserContext::new(user, Role::User)));
        let batches = ctx
            .sql("SELECT * FROM tenantfusion.default.orders")
            .await?
            .collect()
            .await?;
        println!(
            "{user} through the host's context:\n{}\n",
            pretty_format_batches(&batches)?
        );
    }

    let anonymous = host_context(&engine, None);
    let err = anonymous
        .sql("SELECT * FROM tenantfusion.default.orders")
        .await?
        .collect()
        .await
        .unwrap_err();
    println!("without a user: {}", TenantError::from_datafusion(err));
    Ok(())
}
