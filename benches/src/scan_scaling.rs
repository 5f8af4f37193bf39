//! `user_scan_scaling`: one user's query as the number of users grows.
//!
//! Ours: a user table holding 100 rows for each of N users. Baselines, in the
//! same run: (a) a DataFusion `MemTable` holding every user's rows with a
//! `user_id` column, queried with `WHERE user_id = ...` (what one would write
//! without tenantfusion), and (b) a `MemTable` holding only that user's rows
//! (the floor: no other users exist at all).

use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray, StringViewArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::TableProvider;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use tenantfusion::{Engine, EngineConfig, PlanCacheConfig, Role, UserContext, UserId};
use tenantfusion_tables::{PartitionKey, PartitionStore, UserTableProvider};

use crate::{Measurement, Size, run_datafusion, run_ours};

/// Chart series of our figures planned every time (plan cache off).
pub const PLANNED: &str = "tenantfusion, planned every time";
/// Chart series of our figures with the plan cache (the default).
pub const CACHED: &str = "tenantfusion, plan cache on";

/// Rows per user.
pub const ROWS_PER_USER: usize = 100;

/// The two queries, as run by the user; the shared baseline adds its `WHERE`.
pub const QUERIES: [(&str, &str, &str); 2] = [
    (
        "count_sum",
        "SELECT count(*), sum(id) FROM t",
        "SELECT count(*), sum(id) FROM t WHERE user_id = '{u}'",
    ),
    (
        "topk",
        "SELECT id, payload FROM t ORDER BY id DESC LIMIT 10",
        "SELECT id, payload FROM t WHERE user_id = '{u}' ORDER BY id DESC LIMIT 10",
    ),
];

/// Median and 95th percentile of single-call latencies.
#[derive(Debug, Clone, Copy)]
pub struct Stats {
    /// Median, ns.
    pub median: f64,
    /// 95th percentile, ns.
    pub p95: f64,
}

/// Times single calls of `f` after two warm-up calls: at least
/// `size.samples`, then more until about `size.latency_budget` has passed
/// (at most 2,000).
pub async fn latency<F, Fut>(size: Size, mut f: F) -> Stats
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    f().await;
    f().await;
    let started = Instant::now();
    let mut samples = Vec::new();
    while samples.len() < size.samples
        || (started.elapsed() < size.latency_budget && samples.len() < 2_000)
    {
        let t = Instant::now();
        f().await;
        samples.push(t.elapsed().as_nanos() as f64);
    }
    samples.sort_by(f64::total_cmp);
    Stats {
        median: samples[samples.len() / 2],
        p95: samples[(samples.len() * 95 / 100).min(samples.len() - 1)],
    }
}

fn user_rows(schema: &Arc<Schema>) -> RecordBatch {
    let ids: Vec<i64> = (0..ROWS_PER_USER as i64).collect();
    let payloads: Vec<String> = ids.iter().map(|i| format!("payload-{i:04}")).collect();
    RecordBatch::try_new(
        Arc::clone(schema),
        vec![
            Arc::new(Int64Array::from(ids)) as ArrayRef,
            Arc::new(StringViewArray::from(payloads)),
        ],
    )
    .expect("user batch")
}

/// All users' rows with a `user_id` column, in batches of about 8,192 rows.
fn shared_table(users: usize, own: &RecordBatch) -> MemTable {
    let schema = Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Utf8, false),
        Field::new("id", DataType::Int64, false),
        Field::new("payload", DataType::Utf8View, true),
    ]));
    let per_batch = (8192 / ROWS_PER_USER).max(1);
    let mut batches = Vec::new();
    for first in (0..users).step_by(per_batch) {
        let last = (first + per_batch).min(users);
        let mut owners = Vec::new();
        let mut ids = Vec::new();
        let mut payloads = Vec::new();
        for u in first..last {
            owners.extend(std::iter::repeat_n(format!("u{u}"), ROWS_PER_USER));
            ids.extend_from_slice(
                own.column(0)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .expect("ids")
                    .values(),
            );
            let p = own
                .column(1)
                .as_any()
                .downcast_ref::<StringViewArray>()
                .expect("payloads");
            payloads.extend(p.iter().map(|s| s.unwrap_or_default().to_string()));
        }
        batches.push(
            RecordBatch::try_new(
                Arc::clone(&schema),
                vec![
                    Arc::new(StringArray::from(owners)) as ArrayRef,
                    Arc::new(Int64Array::from(ids)),
                    Arc::new(StringViewArray::from(payloads)),
                ],
            )
            .expect("shared batch"),
        );
    }
    MemTable::try_new(schema, vec![batches]).expect("shared memtable")
}

/// An engine with `config` whose user table `t` holds 100 rows for each of
/// `users` users (`u0`, `u1`, ...), and one user's rows.
pub async fn loaded_engine(users: usize, config: EngineConfig) -> (Engine, RecordBatch) {
    let engine = Engine::new(config).expect("engine");
    let admin = engine.session(UserContext::new("admin", Role::Dba));
    admin
        .sql("CREATE TABLE t (id BIGINT NOT NULL, payload TEXT)")
        .await
        .expect("create");
    let own = load_users(&engine, "t", users).await;
    (engine, own)
}

/// Puts 100 rows for each of `users` users (`u0`, `u1`, ...) into the user
/// table `default.{table}` (`id BIGINT, payload TEXT`) through its store,
/// 64 appends at a time (a durable store's group commit shares their
/// fsyncs); returns one user's rows. Loading 10 million rows with SQL
/// INSERTs would measure the loader, not what is loaded.
pub(crate) async fn load_users(engine: &Engine, table: &str, users: usize) -> RecordBatch {
    let (schema, store) = user_table_store(engine, table);
    let own = user_rows(&schema);
    let mut pending = tokio::task::JoinSet::new();
    for u in 0..users {
        if pending.len() == 64 {
            pending.join_next().await.expect("a task").expect("append");
        }
        let (store, rows) = (Arc::clone(&store), own.clone());
        pending.spawn(async move {
            let key = PartitionKey::User(UserId::new(format!("u{u}")));
            store.append(&key, vec![rows]).await.expect("append");
        });
    }
    while let Some(done) = pending.join_next().await {
        done.expect("append");
    }
    own
}

/// The schema and the rows' store of the user table `default.{table}`,
/// for loading rows without SQL.
pub fn user_table_store(engine: &Engine, table: &str) -> (SchemaRef, Arc<dyn PartitionStore>) {
    let provider = engine
        .schema_cache()
        .get_provider("default", table)
        .expect("the table");
    let user_table = (provider.as_ref() as &dyn TableProvider)
        .downcast_ref::<UserTableProvider>()
        .expect("a user table");
    (provider.schema(), Arc::clone(user_table.store()))
}

/// Runs the scenario; returns its rows.
pub async fn user_scan_scaling(size: Size) -> Vec<Measurement> {
    let mut out = Vec::new();
    let mut ours_by_users: Vec<(usize, [f64; 2])> = Vec::new();
    for &users in size.user_counts {
        // Planned every time, as the baselines are: this scenario is about
        // the scan; `plan_cache` measures what reusing plans adds.
        let config = EngineConfig::default().with_plan_cache(PlanCacheConfig::DISABLED);
        let (engine, own) = loaded_engine(users, config).await;
        let target = format!("u{}", users / 2);
        let shared = SessionContext::new();
        shared
            .register_table("t", Arc::new(shared_table(users, &own)))
            .expect("register");
        let floor = SessionContext::new();
        let floor_schema = own.schema();
        floor
            .register_table(
                "t",
                Arc::new(MemTable::try_new(floor_schema, vec![vec![own.clone()]]).expect("floor")),
            )
            .expect("register");
        let session = engine.session(UserContext::new(target.as_str(), Role::User));

        let mut ours_here = [0.0; 2];
        for (i, (name, sql, shared_sql)) in QUERIES.iter().enumerate() {
            let shared_sql = shared_sql.replace("{u}", &target);
            let ours = latency(size, || async {
                let batches = run_ours(&session, sql).await;
                assert!(!batches.is_empty());
            })
            .await;
            let base = latency(size, || async {
                run_datafusion(&shared, &shared_sql).await;
            })
            .await;
            let floor_stats = latency(size, || async {
                run_datafusion(&floor, sql).await;
            })
            .await;
            ours_here[i] = ours.median;
            let chart = format!("{name}: one user's query vs number of users");
            for (baseline, stats) in [
                ("MemTable of all users + WHERE", base),
                ("MemTable of own rows (floor)", floor_stats),
            ] {
                let row = Measurement::latency(
                    "user_scan_scaling",
                    format!("{name}, {users} users, vs {baseline}"),
                    ours,
                    stats,
                );
                out.push(row.on_curve(&chart, "users", users, PLANNED, baseline));
            }
        }
        ours_by_users.push((users, ours_here));
    }
    if let (Some(first), Some(last)) = (ours_by_users.first(), ours_by_users.last())
        && ours_by_users.len() > 1
    {
        for (i, (name, _, _)) in QUERIES.iter().enumerate() {
            out.push(Measurement {
                scenario: "user_scan_scaling".into(),
                metric: format!(
                    "{name}: ours at {} users vs ours at {} users",
                    last.0, first.0
                ),
                ours: last.1[i],
                baseline: first.1[i],
                unit: "ns".into(),
                p95: None,
                curve: None,
            });
        }
    }
    out
}
