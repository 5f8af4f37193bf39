//! An engine on a directory: each run adds a note per user and shows that
//! the notes of earlier runs are still there, each user seeing their own.
//!
//! `cargo run -p tenantfusion-examples --example durable -- [storage URL]`
//! (default `data/`; `file:///path` or a path).

use tenantfusion::{Engine, EngineConfig, Role, Storage, UserContext};

#[tokio::main]
async fn main() -> tenantfusion::Result<()> {
    let url = std::env::args().nth(1).unwrap_or_else(|| "data/".into());
    let engine = Engine::new(EngineConfig::default().with_storage(Storage::from_url(&url)?))?;
    let admin = engine.session(UserContext::new("admin", Role::Dba));
    for sql in [
        "CREATE NAMESPACE IF NOT EXISTS app",
        "CREATE USER IF NOT EXISTS 'alice'",
        "CREATE USER IF NOT EXISTS 'bob'",
        "CREATE TABLE IF NOT EXISTS app.notes (run BIGINT NOT NULL, body TEXT)",
    ] {
        admin.sql(sql).await?.collect().await?;
    }
    for name in ["alice", "bob"] {
        let session = engine.session(UserContext::new(name, Role::User));
        // One more than the runs this user has seen: earlier runs' rows are
        // read back from the directory's logs.
        session
            .sql(&format!(
                "INSERT INTO app.notes SELECT coalesce(max(run), 0) + 1, '{name} was here' \
                 FROM app.notes"
            ))
            .await?
            .collect()
            .await?;
        let batches = session
            .sql("SELECT count(*) AS runs FROM app.notes")
            .await?
            .collect()
            .await?;
        let runs = datafusion::arrow::util::display::array_value_to_string(batches[0].column(0), 0)
            .map_err(|e| tenantfusion::TenantError::Internal(e.to_string()))?;
        println!("{name}: {runs} note(s) in {url}");
    }
    Ok(())
}
