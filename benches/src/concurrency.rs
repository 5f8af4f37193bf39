//! `concurrent_users`: 64 tasks, each a different user, alternating an INSERT
//! and a SELECT of their own rows; baseline: the same statements on one
//! DataFusion `MemTable` shared by everyone with a `user_id` column.

use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use tenantfusion::{Engine, EngineConfig, Role, UserContext};

use crate::{Measurement, Size, run_datafusion, run_ours};

/// Tasks (and users).
pub const TASKS: usize = 64;

struct Run {
    statements_per_sec: f64,
    p99_ns: f64,
}

async fn drive<F, Fut>(size: Size, statement: F) -> Run
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let statement = Arc::new(statement);
    let started = Instant::now();
    let mut handles = Vec::new();
    for task in 0..TASKS {
        let statement = Arc::clone(&statement);
        let per_task = size.statements_per_task;
        handles.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(per_task);
            for i in 0..per_task {
                let t = Instant::now();
                statement(task, i).await;
                latencies.push(t.elapsed());
            }
            latencies
        }));
    }
    let mut all: Vec<Duration> = Vec::new();
    for h in handles {
        all.extend(h.await.expect("task"));
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort();
    Run {
        statements_per_sec: all.len() as f64 / elapsed,
        p99_ns: all[(all.len() * 99 / 100).min(all.len() - 1)].as_nanos() as f64,
    }
}

/// Runs the scenario; returns its rows.
pub async fn concurrent_users(size: Size) -> Vec<Measurement> {
    let engine = Engine::new(EngineConfig::default()).expect("engine");
    engine
        .session(UserContext::new("admin", Role::Dba))
        .sql("CREATE TABLE events (seq BIGINT, note TEXT)")
        .await
        .expect("create");
    let ours = drive(size, move |task, i| {
        let session = engine.session(UserContext::new(format!("user{task}"), Role::User));
        async move {
            let sql = if i % 2 == 0 {
                format!("INSERT INTO events VALUES ({i}, 'n')")
            } else {
                "SELECT count(*) FROM events".to_string()
            };
            run_ours(&session, &sql).await;
        }
    })
    .await;

    let schema = Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Utf8, false),
        Field::new("seq", DataType::Int64, true),
        Field::new("note", DataType::Utf8, true),
    ]));
    let ctx = SessionContext::new();
    ctx.register_table(
        "events",
        Arc::new(MemTable::try_new(schema, vec![vec![]]).expect("memtable")),
    )
    .expect("register");
    let base = drive(size, move |task, i| {
        let ctx = ctx.clone();
        async move {
            let sql = if i % 2 == 0 {
                format!("INSERT INTO events VALUES ('user{task}', {i}, 'n')")
            } else {
                format!("SELECT count(*) FROM events WHERE user_id = 'user{task}'")
            };
            run_datafusion(&ctx, &sql).await;
        }
    })
    .await;
    vec![
        Measurement::figure(
            "concurrent_users",
            format!("{TASKS} users, INSERT/SELECT mix, vs shared MemTable"),
            ours.statements_per_sec,
            base.statements_per_sec,
            "statements/s",
        ),
        Measurement::figure(
            "concurrent_users",
            format!("{TASKS} users, p99 statement latency, vs shared MemTable"),
            ours.p99_ns,
            base.p99_ns,
            "ns",
        ),
    ]
}
