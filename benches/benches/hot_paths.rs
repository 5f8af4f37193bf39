//! Criterion micro-benchmarks of the per-request hot paths: provider lookup,
//! session creation, reading the caller in a scan, and re-running a cached
//! plan. `cargo bench -p tenantfusion-bench` measures; `cargo test --benches`
//! runs each once (CI keeps them compiling and working).

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use datafusion::execution::TaskContext;
use datafusion::prelude::SessionConfig;
use tenantfusion::{Role, UserContext, attach_user};
use tenantfusion_bench::{engine_with_tables, run_ours};

fn hot_paths(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let engine = runtime.block_on(engine_with_tables(1_000));
    let cache = Arc::clone(engine.schema_cache());
    c.bench_function("provider_lookup/1000_tables", |b| {
        b.iter(|| black_box(cache.get_provider(black_box("app"), black_box("t421"))))
    });
    c.bench_function("session_per_request", |b| {
        b.iter(|| black_box(engine.session(UserContext::new("alice", Role::User))))
    });
    let mut config = SessionConfig::new();
    attach_user(&mut config, UserContext::new("alice", Role::User));
    let task = TaskContext::default().with_session_config(config);
    c.bench_function("user_context_from_task", |b| {
        b.iter(|| black_box(UserContext::from_task(black_box(&task)).expect("user")))
    });
    let alice = engine.session(UserContext::new("alice", Role::User));
    let sql = "SELECT id, payload FROM app.t7 ORDER BY id DESC LIMIT 10";
    runtime.block_on(async {
        run_ours(&alice, "INSERT INTO app.t7 VALUES (1, 'a'), (2, 'b')").await;
        run_ours(&alice, sql).await;
    });
    c.bench_function("cached_plan_query", |b| {
        b.iter(|| runtime.block_on(run_ours(&alice, sql)))
    });
}

criterion_group!(benches, hot_paths);
criterion_main!(benches);
