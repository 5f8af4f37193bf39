//! `tenantfusion serve --demo`: something to look at within a minute of
//! cloning. A `demo` namespace with a generator source ticking prices for
//! three symbols into the stream table `demo.ticks` (readable by everyone),
//! a user table `demo.notes` (each user's own rows), and a user `demo`
//! (password `demo`) to log in as, in the console or with psql.

use tenantfusion::Engine;
use tenantfusion_core::{Role, TenantError, UserContext};

/// The demo user's name and password: a known password, so the demo is
/// for loopback and trying things, which `--demo` says when it starts.
pub const DEMO_USER: &str = "demo";

/// Creates the demo objects unless namespace `demo` exists already (a data
/// directory that had the demo before keeps what it holds). Returns
/// whether it created them.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use tenantfusion::{Engine, EngineConfig};
/// use tenantfusion_server::create_demo;
///
/// let engine = Engine::new(EngineConfig::default()).unwrap();
/// assert!(create_demo(&engine).await.unwrap());
/// assert!(!create_demo(&engine).await.unwrap());
/// # });
/// ```
pub async fn create_demo(engine: &Engine) -> Result<bool, TenantError> {
    let system = engine.session(UserContext::new("system", Role::System));
    let exists = system
        .sql("SELECT 1 FROM information_schema.schemata WHERE schema_name = 'demo'")
        .await?
        .collect()
        .await?
        .iter()
        .any(|batch| batch.num_rows() > 0);
    if exists {
        return Ok(false);
    }
    for sql in [
        "CREATE NAMESPACE demo",
        "CREATE SOURCE demo_prices TYPE generator WITH (INTERVAL_MS = 500)",
        "CREATE STREAM TABLE demo.ticks \
            (symbol TEXT NOT NULL, price DOUBLE, volume BIGINT, ts TIMESTAMP) \
            WITH (SOURCE = 'demo_prices', TOPIC_COLUMN = 'symbol', TTL_SECONDS = 600, \
                  MAX_ROWS_PER_TOPIC = 2000, TOPICS = 'AAPL,MSFT,NVDA', ACCESS_LEVEL = PUBLIC)",
        "CREATE USER TABLE demo.notes (id BIGINT NOT NULL, body TEXT, PRIMARY KEY (id))",
    ] {
        system.sql(sql).await?.collect().await?;
    }
    if !engine.users().exists(DEMO_USER) {
        system
            .sql(&format!(
                "CREATE USER '{DEMO_USER}' WITH PASSWORD '{DEMO_USER}'"
            ))
            .await?
            .collect()
            .await?;
    }
    Ok(true)
}
