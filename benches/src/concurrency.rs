//! `concurrent_users`: 64 tasks, each a different user, alternating an INSERT
//! and a SELECT of their own rows; baseline: the same statements on one
//! DataFusion `MemTable` shared by everyone with a `user_id` column.

use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use tenantfusion::{Engine, EngineConfig, Role, StatementLimits, UserContext};

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
    drive_users(size, TASKS, statement).await
}

/// `tasks` tasks, task `t` running `statement(t, i)` for each `i`.
async fn drive_users<F, Fut>(size: Size, tasks: usize, statement: F) -> Run
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let statement = Arc::new(statement);
    let started = Instant::now();
    let mut handles = Vec::new();
    for task in 0..tasks {
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

/// Users whose statements are timed in `noisy_neighbour`.
pub const VICTIMS: usize = 16;

/// `noisy_neighbour`: 16 users each run a small aggregate over their own
/// 1,000 rows, first alone, then while one more user runs statements made to
/// exhaust memory (a cross join gathered into one array) and CPU (a cross
/// join of three tables, stopped by the statement timeout) without pause.
/// Both under the same [`StatementLimits`]; the figure is the victims' p99
/// with the attack beside their p99 without it.
pub async fn noisy_neighbour(size: Size) -> Vec<Measurement> {
    let limits = StatementLimits {
        memory: Some(8 << 20),
        per_user: Some(4),
        timeout: Some(Duration::from_millis(500)),
    };
    let engine = Arc::new(
        Engine::new(
            EngineConfig::default()
                .with_memory_limit(256 << 20)
                .with_statement_limits(limits),
        )
        .expect("engine"),
    );
    let admin = engine.session(UserContext::new("admin", Role::Dba));
    run_ours(&admin, "CREATE TABLE rows (seq BIGINT, note TEXT)").await;
    for user in (0..VICTIMS)
        .map(|i| format!("user{i}"))
        .chain(["mallory".into()])
    {
        let session = engine.session(UserContext::new(user, Role::User));
        run_ours(
            &session,
            "INSERT INTO rows SELECT value, 'note-' || value FROM generate_series(1, 1000)",
        )
        .await;
    }
    let victims = |engine: Arc<Engine>| {
        drive_users(size, VICTIMS, move |task, _| {
            let session = engine.session(UserContext::new(format!("user{task}"), Role::User));
            async move {
                run_ours(
                    &session,
                    "SELECT count(*), sum(seq) FROM rows WHERE seq % 7 = 0",
                )
                .await;
            }
        })
    };
    let quiet = victims(Arc::clone(&engine)).await;

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let attacker = {
        let engine = Arc::clone(&engine);
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            let mallory = engine.session(UserContext::new("mallory", Role::User));
            let attacks = [
                "SELECT array_agg(a.note || b.note) FROM rows a CROSS JOIN rows b",
                "SELECT count(*) FROM rows a CROSS JOIN rows b CROSS JOIN rows c",
            ];
            let mut refused = Vec::new();
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let outcome = match mallory.sql(attacks[i % 2]).await {
                    Ok(query) => query.collect().await.map(|_| ()),
                    Err(err) => Err(err),
                };
                refused.push(outcome.err().map(|e| e.code()));
                i += 1;
            }
            refused
        })
    };
    let attacked = victims(Arc::clone(&engine)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let outcomes = attacker.await.expect("attacker");
    let stopped = outcomes
        .iter()
        .filter(|code| matches!(code, Some("RESOURCES_EXHAUSTED" | "TIMEOUT")))
        .count();
    assert_eq!(
        stopped,
        outcomes.len(),
        "every attack is stopped by a limit: {outcomes:?}"
    );
    vec![
        Measurement::figure(
            "noisy_neighbour",
            format!(
                "{VICTIMS} users' p99 while one user runs {} memory/CPU attacks, vs no attack",
                outcomes.len()
            ),
            attacked.p99_ns,
            quiet.p99_ns,
            "ns",
        ),
        Measurement::figure(
            "noisy_neighbour",
            format!("{VICTIMS} users' statements/s under attack, vs no attack"),
            attacked.statements_per_sec,
            quiet.statements_per_sec,
            "statements/s",
        ),
    ]
}
