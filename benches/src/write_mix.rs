//! `write_mix`: changes by key on one user's flushed, keyed, durable table
//! (fsync before each acknowledgement), with new values on every run: a
//! prepared `UPDATE ... WHERE id = $2`, the same as SQL text with its
//! literals (one generic plan, `EngineConfig::auto_parameters`) beside the
//! text planned every time, and a mix of INSERT, UPDATE, point SELECT and
//! DELETE; with `postgres`, the same prepared statements against
//! PostgreSQL (primary key `(user_id, id)`, row-level security,
//! `synchronous_commit = on`) in the same run.

use datafusion::arrow::array::{Array, UInt64Array};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::ScalarValue;
use tenantfusion::{Durability, Engine, PreparedStatement, Role, TenantSession, UserContext};

use crate::scan_scaling::{Stats, latency};
use crate::storage::{bench_dir, on_disk};
use crate::{Measurement, Size, run_ours, run_prepared};

/// What the keyed table holds before the timed runs: one user's rows,
/// flushed to Parquet, so every change finds its row in a segment.
const CREATE: &str = "CREATE TABLE kv (id BIGINT PRIMARY KEY, v BIGINT, body TEXT) \
                      WITH (FLUSH_POLICY = 'none')";

/// One engine's keyed table of `rows` flushed rows of alice's; her session.
async fn keyed_table(rows: usize, auto_parameters: bool) -> (tempfile::TempDir, TenantSession) {
    keyed_table_with(rows, auto_parameters, Durability::Fsync).await
}

/// [`keyed_table`] with its log acknowledged at `durability`.
async fn keyed_table_with(
    rows: usize,
    auto_parameters: bool,
    durability: Durability,
) -> (tempfile::TempDir, TenantSession) {
    let dir = bench_dir();
    let config = on_disk(&dir, durability).with_auto_parameters(auto_parameters);
    let engine = Engine::new(config).expect("engine");
    let admin = engine.session(UserContext::new("admin", Role::Dba));
    run_ours(&admin, CREATE).await;
    let alice = engine.session(UserContext::new("alice", Role::User));
    run_ours(
        &alice,
        &format!(
            "INSERT INTO kv SELECT value, 0, 'payload ' || value FROM generate_series(0, {})",
            rows - 1
        ),
    )
    .await;
    run_ours(&admin, "FLUSH TABLE kv").await;
    (dir, alice)
}

/// Runs a prepared statement of ours to its end: the rows a query gave, or
/// the rows a change wrote.
async fn execute(statement: &PreparedStatement, params: Vec<ScalarValue>, query: bool) -> u64 {
    let batches = run_prepared(statement, params).await;
    match query {
        true => batches.iter().map(|b| b.num_rows() as u64).sum(),
        false => changed(&batches),
    }
}

/// Times `update` (`UPDATE kv SET v = $1 WHERE id = $2`, prepared), run
/// `n` setting row `key(n)`'s `v` to `n`.
async fn timed_updates(size: Size, update: &PreparedStatement, key: impl Fn(i64) -> i64) -> Stats {
    let mut n = 0i64;
    latency(size, || {
        n += 1;
        let id = key(n);
        async move {
            let params = vec![ScalarValue::from(n), ScalarValue::from(id)];
            assert_eq!(execute(update, params, false).await, 1);
        }
    })
    .await
}

/// The count of rows an INSERT, UPDATE or DELETE answers.
fn changed(batches: &[RecordBatch]) -> u64 {
    batches[0]
        .column(0)
        .as_any()
        .downcast_ref::<UInt64Array>()
        .expect("a count")
        .value(0)
}

/// Runs the scenario; returns its rows.
pub async fn write_mix(size: Size, postgres: bool) -> Result<Vec<Measurement>, String> {
    let rows = size.segment_rows.max(100);
    // One engine per timed loop: each starts from the same flushed rows
    // (rows taken out of a segment are hidden from every later scan until
    // the next flush, so a loop run after another would pay for its rows).
    let (_dir, alice) = keyed_table(rows, true).await;
    let (_text_dir, alice_text) = keyed_table(rows, true).await;
    let (_off_dir, alice_off) = keyed_table(rows, false).await;
    // Run n changes row `key(n)`: rows spread over the segment, none
    // changed twice by one timed loop.
    let key = |n: i64| (n * 7919) % rows as i64;
    let update = alice
        .prepare("UPDATE kv SET v = $1 WHERE id = $2")
        .await
        .expect("prepare");
    let prepared = timed_updates(size, &update, key).await;
    // The same on a log acknowledged once written, before its fsync: what
    // an UPDATE costs besides the wait for the disk.
    let (_buffered_dir, alice_buffered) = keyed_table_with(rows, true, Durability::Buffered).await;
    let buffered_update = alice_buffered
        .prepare("UPDATE kv SET v = $1 WHERE id = $2")
        .await
        .expect("prepare");
    let buffered = timed_updates(size, &buffered_update, key).await;
    let text = |session: &TenantSession, n: i64| {
        let session = session.clone();
        let sql = format!("UPDATE kv SET v = {n} WHERE id = {}", key(n));
        async move {
            assert_eq!(changed(&run_ours(&session, &sql).await), 1, "{sql}");
        }
    };
    let mut n = 0i64;
    let auto = latency(size, || {
        n += 1;
        text(&alice_text, n)
    })
    .await;
    let mut n = 0i64;
    let planned = latency(size, || {
        n += 1;
        text(&alice_off, n)
    })
    .await;
    let label = format!("{rows} flushed keyed rows, fsync before ack");
    let mut out = vec![
        Measurement::latency(
            "write_mix",
            format!(
                "UPDATE by key, prepared, log written but not fsynced vs fsync before ack, {rows} flushed keyed rows"
            ),
            buffered,
            prepared,
        ),
        Measurement::latency(
            "write_mix",
            format!(
                "UPDATE by key as SQL text, literals as parameters vs planned every time, {label}"
            ),
            auto,
            planned,
        ),
        Measurement::latency(
            "write_mix",
            format!("UPDATE by key, SQL text with literals vs prepared, {label}"),
            auto,
            prepared,
        ),
    ];
    let mix = Mix::prepare(&alice).await;
    let mut step = 0i64;
    let ours_mix = latency(size, || {
        step += 1;
        let mix = &mix;
        async move { mix.run(step, rows as i64).await }
    })
    .await;
    if postgres {
        let server = crate::postgres::Server::start(1)?;
        let pg = crate::postgres::client("alice").await?;
        pg.execute(
            &format!(
                "INSERT INTO kv (id, v, body) SELECT g, 0, 'payload ' || g FROM generate_series(0, {}) g",
                rows - 1
            ),
            &[],
        )
        .await
        .map_err(|e| e.to_string())?;
        let pg_update = pg
            .prepare("UPDATE kv SET v = $1 WHERE id = $2")
            .await
            .map_err(|e| e.to_string())?;
        let mut n = 0i64;
        let theirs = latency(size, || {
            n += 1;
            let (pg, pg_update, id) = (&pg, &pg_update, key(n));
            async move {
                let changed = pg
                    .execute(pg_update, &[&n, &id])
                    .await
                    .expect("postgres update");
                assert_eq!(changed, 1);
            }
        })
        .await;
        out.push(Measurement::latency(
            "write_mix",
            format!("UPDATE by key, prepared, vs PostgreSQL (prepared, synchronous_commit = on, RLS), {label}"),
            prepared,
            theirs,
        ));
        let pg_mix = PgMix::prepare(&pg).await?;
        let mut step = 0i64;
        let theirs_mix = latency(size, || {
            step += 1;
            let (pg_mix, pg) = (&pg_mix, &pg);
            async move { pg_mix.run(pg, step, rows as i64).await }
        })
        .await;
        out.push(Measurement::latency(
            "write_mix",
            format!(
                "mix of INSERT, UPDATE and DELETE by key and point SELECT, prepared, vs PostgreSQL, {label}"
            ),
            ours_mix,
            theirs_mix,
        ));
        drop(server);
    } else {
        out.push(Measurement::latency(
            "write_mix",
            format!(
                "mix of INSERT, UPDATE and DELETE by key and point SELECT, prepared, vs UPDATE alone, {label}"
            ),
            ours_mix,
            prepared,
        ));
    }
    Ok(out)
}

/// One step of the mix: every fourth an INSERT of a new key, then an
/// UPDATE of it, a point SELECT of an old key, and a DELETE of the key
/// inserted, so the table keeps its size.
fn mix_op(step: i64) -> (usize, i64) {
    let round = (step - 1) / 4;
    ((step as usize - 1) % 4, round)
}

struct Mix {
    insert: PreparedStatement,
    update: PreparedStatement,
    select: PreparedStatement,
    delete: PreparedStatement,
}

impl Mix {
    async fn prepare(session: &TenantSession) -> Self {
        let p = |sql: &'static str| {
            let session = session.clone();
            async move { session.prepare(sql).await.expect("prepare") }
        };
        Self {
            insert: p("INSERT INTO kv VALUES ($1, $2, $3)").await,
            update: p("UPDATE kv SET v = $1 WHERE id = $2").await,
            select: p("SELECT v, body FROM kv WHERE id = $1").await,
            delete: p("DELETE FROM kv WHERE id = $1").await,
        }
    }

    async fn run(&self, step: i64, rows: i64) {
        let (op, round) = mix_op(step);
        let new_key = rows + round;
        let (statement, params, expected) = match op {
            0 => (
                &self.insert,
                vec![
                    ScalarValue::from(new_key),
                    ScalarValue::from(round),
                    ScalarValue::from("new"),
                ],
                1,
            ),
            1 => (
                &self.update,
                vec![ScalarValue::from(step), ScalarValue::from(new_key)],
                1,
            ),
            2 => (&self.select, vec![ScalarValue::from(round % rows)], 1),
            _ => (&self.delete, vec![ScalarValue::from(new_key)], 1),
        };
        assert_eq!(
            execute(statement, params, op == 2).await,
            expected,
            "step {step}"
        );
    }
}

struct PgMix {
    insert: tokio_postgres::Statement,
    update: tokio_postgres::Statement,
    select: tokio_postgres::Statement,
    delete: tokio_postgres::Statement,
}

impl PgMix {
    async fn prepare(pg: &tokio_postgres::Client) -> Result<Self, String> {
        let p = |sql: &'static str| async move { pg.prepare(sql).await.map_err(|e| e.to_string()) };
        Ok(Self {
            insert: p("INSERT INTO kv (id, v, body) VALUES ($1, $2, $3)").await?,
            update: p("UPDATE kv SET v = $1 WHERE id = $2").await?,
            select: p("SELECT v, body FROM kv WHERE id = $1").await?,
            delete: p("DELETE FROM kv WHERE id = $1").await?,
        })
    }

    async fn run(&self, pg: &tokio_postgres::Client, step: i64, rows: i64) {
        let (op, round) = mix_op(step);
        let new_key = rows + round;
        let found = match op {
            0 => pg.execute(&self.insert, &[&new_key, &round, &"new"]).await,
            1 => pg.execute(&self.update, &[&step, &new_key]).await,
            2 => pg
                .query(&self.select, &[&(round % rows)])
                .await
                .map(|r| r.len() as u64),
            _ => pg.execute(&self.delete, &[&new_key]).await,
        };
        assert_eq!(found.expect("postgres"), 1, "step {step}");
    }
}
