//! Helpers shared by the integration tests.

use std::sync::Arc;

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::array_value_to_string;
use datafusion::physical_plan::ExecutionPlan;
use tenantfusion::{Engine, EngineConfig, Role, TenantError, TenantSession, UserContext};

/// An engine with namespace `app` and users alice, bob (role user).
pub async fn engine() -> Engine {
    engine_on(EngineConfig::default()).await
}

/// [`engine`] with `config` (durable storage, say).
pub async fn engine_on(config: EngineConfig) -> Engine {
    let engine = Engine::new(config).unwrap();
    let admin = admin(&engine);
    for sql in [
        "CREATE NAMESPACE app",
        "CREATE USER 'alice'",
        "CREATE USER 'bob'",
    ] {
        admin.sql(sql).await.unwrap();
    }
    engine
}

pub fn admin(engine: &Engine) -> TenantSession {
    engine.session(UserContext::new("admin", Role::Dba))
}

pub fn user(engine: &Engine, name: &str) -> TenantSession {
    engine.session(UserContext::new(name, Role::User))
}

/// Runs a statement to completion, panicking on error.
pub async fn run(session: &TenantSession, sql: &str) -> Vec<RecordBatch> {
    match session.sql(sql).await {
        Ok(q) => q.collect().await.unwrap_or_else(|e| panic!("{sql}: {e}")),
        Err(e) => panic!("{sql}: {e}"),
    }
}

/// Rows rendered as space-separated strings.
pub async fn rows(session: &TenantSession, sql: &str) -> Vec<String> {
    lines(&run(session, sql).await)
}

/// The rows a prepared statement gives for `params`, rendered as
/// [`lines`]; panics on an error.
pub async fn prepared_rows(
    statement: &tenantfusion::PreparedStatement,
    params: Vec<datafusion::common::ScalarValue>,
) -> Vec<String> {
    let query = statement.execute(params).await.unwrap();
    lines(&query.collect().await.unwrap())
}

/// The rows of `batches` rendered as space-separated strings.
pub fn lines(batches: &[RecordBatch]) -> Vec<String> {
    let mut out = Vec::new();
    for batch in batches {
        for row in 0..batch.num_rows() {
            let cells: Vec<String> = batch
                .columns()
                .iter()
                .map(|c| array_value_to_string(c, row).unwrap())
                .collect();
            out.push(cells.join(" "));
        }
    }
    out
}

/// The error of a statement that must fail, at planning or execution.
pub async fn error(session: &TenantSession, sql: &str) -> TenantError {
    match session.sql(sql).await {
        Ok(q) => match q.collect().await {
            Ok(_) => panic!("{sql}: expected an error"),
            Err(e) => e,
        },
        Err(e) => e,
    }
}

/// The error code of a statement that must fail, at planning or execution.
pub async fn error_code(session: &TenantSession, sql: &str) -> &'static str {
    error(session, sql).await.code()
}

/// A single integer result.
pub async fn count(session: &TenantSession, sql: &str) -> i64 {
    rows(session, sql).await[0].parse().unwrap()
}

/// Polls `condition` every 10 ms until it holds; panics after 20 s with
/// `what`. A bound against hanging, not a speed check.
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// The values of column `column` (any type) of `batches`, rendered.
pub fn column_values(batches: &[RecordBatch], column: &str) -> Vec<String> {
    batches
        .iter()
        .flat_map(|b| {
            let array = b.column_by_name(column).expect("column").clone();
            (0..b.num_rows()).map(move |row| array_value_to_string(&array, row).unwrap())
        })
        .collect()
}

/// Rows output by every node of `plan`, added up: what one run counted.
pub fn output_rows(plan: &Arc<dyn ExecutionPlan>) -> usize {
    let own = plan
        .metrics()
        .and_then(|m| m.output_rows())
        .unwrap_or_default();
    own + plan.children().into_iter().map(output_rows).sum::<usize>()
}

/// Runs the async `test` on `cases` values drawn from `strategy`, from a
/// multi-threaded tokio test (no failure file: CI's seed is fixed, and
/// proptest prints the minimal failing value).
pub fn check_cases<S, F, Fut>(cases: u32, strategy: &S, test: F)
where
    S: proptest::strategy::Strategy,
    F: Fn(S::Value) -> Fut,
    Fut: std::future::Future<Output = Result<(), proptest::test_runner::TestCaseError>>,
{
    use proptest::test_runner::{Config, TestRunner};
    let handle = tokio::runtime::Handle::current();
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let result =
        tokio::task::block_in_place(|| runner.run(strategy, |value| handle.block_on(test(value))));
    result.unwrap();
}

/// Configurations of durable engines (buffered log) under `dir`, each call
/// a directory of its own: for tests that open a fresh engine per case.
pub fn fresh_durable_engines(dir: &std::path::Path) -> impl Fn() -> EngineConfig + Clone {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let path = dir.to_path_buf();
    move || {
        let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        EngineConfig::default().with_storage(tenantfusion::Storage::Directory {
            path: path.join(n.to_string()),
            durability: tenantfusion::Durability::Buffered,
        })
    }
}
