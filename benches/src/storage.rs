//! Durable storage: what acknowledging a write only once it is fsynced
//! costs, beside DataFusion's `MemTable` (no durability) as the ceiling.

use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use tenantfusion::{Durability, Engine, EngineConfig, Role, Storage, UserContext};

use crate::{Measurement, Size, latency, run_datafusion, run_ours};

/// Concurrent writers in the group-commit figure.
const WRITERS: usize = 16;
/// Rows per statement in the batched figure.
const BATCH_ROWS: usize = 1_000;

fn values(first: usize, rows: usize) -> String {
    (first..first + rows)
        .map(|i| format!("({i}, 'note {i}')"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Rows/s of [`WRITERS`] tasks each running `statements` single-row
/// INSERTs through the runner `writer(task)` makes.
async fn concurrent_rows_per_second<W, R, Fut>(statements: usize, writer: W) -> f64
where
    W: Fn(usize) -> R,
    R: Fn(String) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let started = Instant::now();
    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| {
            let run = writer(w);
            tokio::spawn(async move {
                for i in 0..statements {
                    run(format!("INSERT INTO notes VALUES {}", values(i, 1))).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("writer");
    }
    (WRITERS * statements) as f64 / started.elapsed().as_secs_f64()
}

/// Single-row INSERT latency, rows/s of `WRITERS` users inserting single
/// rows at once (their fsyncs shared by group commit), and rows/s of
/// batched INSERTs; each on an engine whose directory is fsynced before a
/// statement is acknowledged, beside the same statements into a `MemTable`.
pub async fn durable_insert(size: Size) -> Vec<Measurement> {
    // In the workspace's target/ rather than /tmp: on a tmpfs fsync is free.
    let parent = concat!(env!("CARGO_MANIFEST_DIR"), "/../target");
    std::fs::create_dir_all(parent).expect("target dir");
    let dir = tempfile::tempdir_in(parent).expect("temp dir");
    let engine = Engine::new(EngineConfig::default().with_storage(Storage::Directory {
        path: dir.path().to_path_buf(),
        durability: Durability::Fsync,
    }))
    .expect("engine");
    let admin = engine.session(UserContext::new("admin", Role::Dba));
    run_ours(&admin, "CREATE TABLE notes (id BIGINT, body TEXT)").await;
    let ctx = SessionContext::new();
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("body", DataType::Utf8, true),
    ]));
    ctx.register_table(
        "notes",
        Arc::new(MemTable::try_new(schema, vec![vec![]]).expect("memtable")),
    )
    .expect("register");

    let alice = engine.session(UserContext::new("alice", Role::User));
    let mut next = 0;
    let ours = latency(size, || {
        next += 1;
        let sql = format!("INSERT INTO notes VALUES {}", values(next, 1));
        let alice = &alice;
        async move {
            run_ours(alice, &sql).await;
        }
    })
    .await;
    // One row per call, warm-up calls included.
    let single_rows = next;
    let mut next = 0;
    let baseline = latency(size, || {
        next += 1;
        let sql = format!("INSERT INTO notes VALUES {}", values(next, 1));
        let ctx = &ctx;
        async move {
            run_datafusion(ctx, &sql).await;
        }
    })
    .await;
    let mut rows = vec![Measurement::latency(
        "durable_insert",
        "single-row INSERT, fsync before ack, vs MemTable INSERT".into(),
        ours,
        baseline,
    )];

    let statements = size.statements_per_task;
    let ours = concurrent_rows_per_second(statements, |w| {
        let session = engine.session(UserContext::new(format!("writer{w}"), Role::User));
        move |sql: String| {
            let session = session.clone();
            async move {
                run_ours(&session, &sql).await;
            }
        }
    })
    .await;
    let baseline = concurrent_rows_per_second(statements, |_| {
        let ctx = ctx.clone();
        move |sql: String| {
            let ctx = ctx.clone();
            async move {
                run_datafusion(&ctx, &sql).await;
            }
        }
    })
    .await;
    rows.push(Measurement::figure(
        "durable_insert",
        format!("{WRITERS} users inserting single rows at once (group commit) vs MemTable"),
        ours,
        baseline,
        "rows/s",
    ));

    let batch = values(0, BATCH_ROWS);
    let sql = format!("INSERT INTO notes VALUES {batch}");
    let timed = |run: usize| run.max(2);
    let started = Instant::now();
    for _ in 0..timed(statements) {
        run_ours(&alice, &sql).await;
    }
    let ours = (timed(statements) * BATCH_ROWS) as f64 / started.elapsed().as_secs_f64();
    let started = Instant::now();
    for _ in 0..timed(statements) {
        run_datafusion(&ctx, &sql).await;
    }
    let baseline = (timed(statements) * BATCH_ROWS) as f64 / started.elapsed().as_secs_f64();
    rows.push(Measurement::figure(
        "durable_insert",
        format!("INSERT of {BATCH_ROWS} rows per statement, fsync, vs MemTable"),
        ours,
        baseline,
        "rows/s",
    ));
    let stored = run_ours(&alice, "SELECT count(*) FROM notes").await;
    let stored = datafusion::common::ScalarValue::try_from_array(stored[0].column(0), 0);
    let expected = single_rows + timed(statements) * BATCH_ROWS;
    assert_eq!(
        stored.ok(),
        Some(datafusion::common::ScalarValue::Int64(Some(
            expected as i64
        ))),
        "alice's rows"
    );
    rows
}
