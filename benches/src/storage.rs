//! Durable storage: what acknowledging a write only once it is fsynced
//! costs, beside DataFusion's `MemTable` (no durability) as the ceiling;
//! one user's scan of flushed rows as users grow; and scans of Parquet
//! segments beside DataFusion's own Parquet reader on the same files.

use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{
    Float64Array, Int64Array, RecordBatch, StringViewArray, UInt64Array,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::ScalarValue;
use datafusion::datasource::MemTable;
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use tenantfusion::{
    Durability, Engine, EngineConfig, PlanCacheConfig, Role, Storage, UserContext, UserId,
};
use tenantfusion_store::{Wal, WalOptions};
use tenantfusion_tables::PartitionKey;

use crate::scan_scaling::{QUERIES, ROWS_PER_USER, Stats, user_table_store};
use crate::{Measurement, Size, latency, loaded_engine, run_datafusion, run_ours, run_prepared};

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

/// A directory for an engine, removed when dropped. In the workspace's
/// target/ rather than /tmp: on a tmpfs fsync is free.
pub(crate) fn bench_dir() -> tempfile::TempDir {
    let parent = concat!(env!("CARGO_MANIFEST_DIR"), "/../target");
    std::fs::create_dir_all(parent).expect("target dir");
    tempfile::tempdir_in(parent).expect("temp dir")
}

/// An engine configuration on `dir`.
pub(crate) fn on_disk(dir: &tempfile::TempDir, durability: Durability) -> EngineConfig {
    EngineConfig::default().with_storage(Storage::Directory {
        path: dir.path().to_path_buf(),
        durability,
    })
}

/// Rows/s of [`WRITERS`] tasks each running `statements` single-row
/// INSERTs, the `i`th of task `w` by `writer(w)(i)`.
async fn concurrent_rows_per_second<W, R, Fut>(statements: usize, writer: W) -> f64
where
    W: Fn(usize) -> R,
    R: Fn(usize) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let started = Instant::now();
    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| {
            let run = writer(w);
            tokio::spawn(async move {
                for i in 0..statements {
                    run(i).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("writer");
    }
    (WRITERS * statements) as f64 / started.elapsed().as_secs_f64()
}

/// The SQL text of the `i`th single-row INSERT.
fn insert_text(i: usize) -> String {
    format!("INSERT INTO notes VALUES {}", values(i, 1))
}

/// The values of the `i`th single-row INSERT, for `INSERT_PREPARED`.
fn insert_params(i: usize) -> Vec<ScalarValue> {
    vec![(i as i64).into(), format!("note {i}").into()]
}

/// The prepared single-row INSERT, as PostgreSQL runs it too.
const INSERT_PREPARED: &str = "INSERT INTO notes (id, body) VALUES ($1, $2)";

/// Single-row INSERT latency, rows/s of `WRITERS` users inserting single
/// rows at once (their fsyncs shared by group commit), and rows/s of
/// batched INSERTs; each on an engine whose directory is fsynced before a
/// statement is acknowledged, beside the same statements into a `MemTable`;
/// single-row INSERTs in memory beside the same planned and a `MemTable`'s;
/// and with `postgres`, single-row INSERTs (one client, then `WRITERS`),
/// as SQL text and prepared, beside PostgreSQL's with its defaults (fsync,
/// `synchronous_commit = on`) through prepared statements, under row-level
/// security.
pub async fn durable_insert(size: Size, postgres: bool) -> Result<Vec<Measurement>, String> {
    // The ceiling of every single-row figure: DataFusion's own INSERT.
    let ctx = memtable_notes();
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
    let mut rows = memory_insert(size, baseline).await;
    let dir = bench_dir();
    let engine = Engine::new(on_disk(&dir, Durability::Fsync)).expect("engine");
    let admin = engine.session(UserContext::new("admin", Role::Dba));
    run_ours(&admin, "CREATE TABLE notes (id BIGINT, body TEXT)").await;

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
    let insert = alice.prepare(INSERT_PREPARED).await.expect("prepare");
    let prepared = latency(size, || {
        next += 1;
        let (insert, params) = (&insert, insert_params(next));
        async move {
            run_prepared(insert, params).await;
        }
    })
    .await;
    // One row per call, warm-up calls included.
    let single_rows = next;
    rows.push(Measurement::latency(
        "durable_insert",
        "single-row INSERT, fsync before ack, vs MemTable INSERT".into(),
        ours,
        baseline,
    ));
    // Where the durable INSERT's time goes: the table store's append of
    // the row (log, then apply) without SQL, its log append alone, and the
    // append's write and fdatasync on the caller's own thread.
    let (stored, append, sync) = log_floor(size).await;
    rows.push(Measurement::latency(
        "durable_insert",
        "single-row INSERT, fsync before ack, vs the table store's append of the row (no SQL)"
            .into(),
        ours,
        stored,
    ));
    rows.push(Measurement::latency(
        "durable_insert",
        "table store append of one row (encode, log, apply) vs its log append alone".into(),
        stored,
        append,
    ));
    rows.push(Measurement::latency(
        "durable_insert",
        "log append of one record (committer thread, fdatasync) vs write + fdatasync inline".into(),
        append,
        sync,
    ));
    let server = match postgres {
        true => Some(crate::postgres::Server::start(1)?),
        false => None,
    };
    if server.is_some() {
        let client = crate::postgres::client("alice").await?;
        let insert = client
            .prepare("INSERT INTO notes (id, body) VALUES ($1, $2)")
            .await
            .map_err(|e| e.to_string())?;
        let mut next = 0i64;
        let pg = latency(size, || {
            next += 1;
            let body = format!("note {next}");
            let (client, insert) = (&client, &insert);
            async move {
                client
                    .execute(insert, &[&next, &body])
                    .await
                    .expect("postgres insert");
            }
        })
        .await;
        rows.push(Measurement::latency(
            "durable_insert",
            "single-row INSERT, fsync before ack, vs PostgreSQL (prepared, synchronous_commit = on, RLS)"
                .into(),
            ours,
            pg,
        ));
        rows.push(Measurement::latency(
            "durable_insert",
            "prepared single-row INSERT, fsync before ack, vs PostgreSQL (prepared, synchronous_commit = on, RLS)"
                .into(),
            prepared,
            pg,
        ));
    }

    let statements = size.statements_per_task;
    let ours = concurrent_rows_per_second(statements, |w| {
        let session = engine.session(UserContext::new(format!("writer{w}"), Role::User));
        move |i| {
            let session = session.clone();
            async move {
                run_ours(&session, &insert_text(i)).await;
            }
        }
    })
    .await;
    let mut inserts = Vec::new();
    for w in 0..WRITERS {
        let session = engine.session(UserContext::new(format!("writer{w}"), Role::User));
        inserts.push(session.prepare(INSERT_PREPARED).await.expect("prepare"));
    }
    let ours_prepared = concurrent_rows_per_second(statements, |w| {
        let insert = inserts[w].clone();
        move |i| {
            let insert = insert.clone();
            async move {
                run_prepared(&insert, insert_params(i)).await;
            }
        }
    })
    .await;
    let baseline = concurrent_rows_per_second(statements, |_| {
        let ctx = ctx.clone();
        move |i| {
            let ctx = ctx.clone();
            async move {
                run_datafusion(&ctx, &insert_text(i)).await;
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
    if server.is_some() {
        let pg = postgres_rows_per_second(statements).await?;
        rows.push(Measurement::figure(
            "durable_insert",
            format!(
                "{WRITERS} users inserting single rows at once vs {WRITERS} PostgreSQL clients"
            ),
            ours,
            pg,
            "rows/s",
        ));
        rows.push(Measurement::figure(
            "durable_insert",
            format!(
                "{WRITERS} users running a prepared single-row INSERT at once vs {WRITERS} PostgreSQL clients"
            ),
            ours_prepared,
            pg,
            "rows/s",
        ));
    }

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
    drop(server);
    Ok(rows)
}

/// Latencies of appending one 200-byte record to a [`Wal`] with
/// [`Durability::Fsync`] (the record goes to the log's committer thread,
/// which writes and fdatasyncs it), and of the same write and fdatasync on
/// the caller's thread, to a file growing in the same directory.
async fn log_floor(size: Size) -> (Stats, Stats, Stats) {
    use tenantfusion_store::{FlushPolicy, StorageRoot};
    use tenantfusion_tables::PartitionStore;

    let dir = bench_dir();
    let root = StorageRoot::open(dir.path().join("root"), WalOptions::default()).expect("root");
    let store = root
        .table_store("app.notes.1", FlushPolicy::default())
        .expect("table store");
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("body", DataType::Utf8View, true),
    ]));
    let alice = PartitionKey::User(UserId::new("alice"));
    let mut next = 0i64;
    let stored = latency(size, || {
        next += 1;
        let row = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(Int64Array::from(vec![next])),
                Arc::new(StringViewArray::from(vec![format!("note {next}")])),
            ],
        )
        .expect("row");
        let (store, alice) = (&store, &alice);
        async move {
            store.append(alice, vec![row]).await.expect("append");
        }
    })
    .await;
    let wal = Wal::open(dir.path().join("wal"), WalOptions::default(), |_, _| Ok(())).expect("wal");
    let record = vec![7u8; 200];
    let append = latency(size, || {
        let (wal, record) = (&wal, record.clone());
        async move {
            wal.append(record).await.expect("append");
        }
    })
    .await;
    let mut file = std::fs::File::create(dir.path().join("inline")).expect("file");
    let sync = latency(size, || {
        file.write_all(&record)
            .and_then(|()| file.sync_data())
            .expect("write and fdatasync");
        async {}
    })
    .await;
    (stored, append, sync)
}

/// Rows/s of [`WRITERS`] PostgreSQL clients, each its own user, each
/// running `statements` prepared single-row INSERTs.
async fn postgres_rows_per_second(statements: usize) -> Result<f64, String> {
    let mut clients = Vec::new();
    for w in 0..WRITERS {
        let client = crate::postgres::client(&format!("writer{w}")).await?;
        let insert = client
            .prepare("INSERT INTO notes (id, body) VALUES ($1, $2)")
            .await
            .map_err(|e| e.to_string())?;
        clients.push((client, insert));
    }
    let started = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|(client, insert)| {
            tokio::spawn(async move {
                for i in 0..statements as i64 {
                    let body = format!("note {i}");
                    client
                        .execute(&insert, &[&i, &body])
                        .await
                        .expect("postgres insert");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.map_err(|e| e.to_string())?;
    }
    Ok((WRITERS * statements) as f64 / started.elapsed().as_secs_f64())
}

/// A DataFusion session with an empty `MemTable` named `notes`.
fn memtable_notes() -> SessionContext {
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
    ctx
}

/// Single-row INSERTs into an in-memory user table, as SQL text and as a
/// prepared statement bound to new values: written directly
/// (`EngineConfig::direct_inserts`) beside the same planned, and beside
/// `memtable`, DataFusion's `MemTable` INSERT (planned, as DataFusion
/// always does).
async fn memory_insert(size: Size, memtable: Stats) -> Vec<Measurement> {
    let (mut single, mut prepared) = (Vec::new(), Vec::new());
    for direct in [true, false] {
        let engine =
            Engine::new(EngineConfig::default().with_direct_inserts(direct)).expect("engine");
        let admin = engine.session(UserContext::new("admin", Role::Dba));
        run_ours(&admin, "CREATE TABLE notes (id BIGINT, body TEXT)").await;
        let alice = engine.session(UserContext::new("alice", Role::User));
        let mut next = 0;
        single.push(
            latency(size, || {
                next += 1;
                let sql = format!("INSERT INTO notes VALUES {}", values(next, 1));
                let alice = &alice;
                async move {
                    let query = alice.sql(&sql).await.expect("insert");
                    assert_eq!(query.written_directly(), direct, "{sql}");
                    query.collect().await.expect("insert");
                }
            })
            .await,
        );
        let insert = alice
            .prepare("INSERT INTO notes VALUES ($1, $2)")
            .await
            .expect("prepare");
        // Ids after the text INSERTs': every value is new.
        let mut next = next as i64;
        prepared.push(
            latency(size, || {
                next += 1;
                let params = vec![next.into(), format!("note {next}").into()];
                let insert = &insert;
                async move {
                    let query = insert.execute(params).await.expect("insert");
                    assert_eq!(query.written_directly(), direct);
                    query.collect().await.expect("insert");
                }
            })
            .await,
        );
    }
    vec![
        Measurement::latency(
            "durable_insert",
            "single-row INSERT in memory, written directly vs planned".into(),
            single[0],
            single[1],
        ),
        Measurement::latency(
            "durable_insert",
            "single-row INSERT in memory, written directly vs MemTable INSERT".into(),
            single[0],
            memtable,
        ),
        Measurement::latency(
            "durable_insert",
            "prepared single-row INSERT in memory, new values each run, written directly vs planned"
                .into(),
            prepared[0],
            prepared[1],
        ),
    ]
}

/// `storage_scan_scaling`: one user's queries over their 100 rows, all
/// flushed to Parquet, in a table of `size.storage_users` users beside the
/// same with 10 users. Flat means the ratio stays near 1.
pub async fn storage_scan_scaling(size: Size) -> Vec<Measurement> {
    let mut by_users = Vec::new();
    for users in [10, size.storage_users] {
        let dir = bench_dir();
        // Loading is not timed; the log need not be synced for it.
        let config = on_disk(&dir, Durability::Buffered).with_plan_cache(PlanCacheConfig::DISABLED);
        let (engine, own) = loaded_engine(users, config).await;
        let admin = engine.session(UserContext::new("admin", Role::Dba));
        let flushed = run_ours(&admin, "FLUSH TABLE t").await;
        assert_eq!(first_u64(&flushed, 1), (users * own.num_rows()) as u64);
        let session = engine.session(UserContext::new(format!("u{}", users / 2), Role::User));
        let answer = run_ours(&session, QUERIES[0].1).await;
        let mut stats = Vec::new();
        for (_, sql, _) in QUERIES {
            stats.push(
                latency(size, || {
                    let session = &session;
                    async move {
                        run_ours(session, sql).await;
                    }
                })
                .await,
            );
        }
        by_users.push((users, answer, stats));
    }
    let (small, small_answer, small_stats) = &by_users[0];
    let (big, big_answer, big_stats) = &by_users[1];
    assert_eq!(
        big_answer, small_answer,
        "one user's rows, whoever else exists"
    );
    QUERIES
        .iter()
        .enumerate()
        .map(|(i, (name, _, _))| {
            Measurement::latency(
                "storage_scan_scaling",
                format!(
                    "{name}: one user's {ROWS_PER_USER} rows in Parquet, {big} users vs {small} users"
                ),
                big_stats[i],
                small_stats[i],
            )
        })
        .collect()
}

/// `parquet_scan_200k`: one user's 20 Parquet segments of
/// `size.segment_rows` rows (200,000 in the full run): a full scan, an
/// aggregate and a lookup of one id, beside DataFusion's own Parquet reader
/// (a listing table) over the very same files.
pub async fn parquet_scan_200k(size: Size) -> Vec<Measurement> {
    const SEGMENTS: usize = 20;
    let dir = bench_dir();
    let engine = Engine::new(on_disk(&dir, Durability::Buffered)).expect("engine");
    let rows = size.segment_rows;
    let ctx = flushed_segments(
        &engine,
        &dir,
        "CREATE TABLE t (id BIGINT NOT NULL, v DOUBLE, payload TEXT) WITH (FLUSH_POLICY = 'none')",
        SEGMENTS,
        rows,
    )
    .await;
    let session = engine.session(UserContext::new("alice", Role::User));
    let total = SEGMENTS * rows;
    let queries = [
        ("full scan", "SELECT * FROM t".to_string()),
        (
            "aggregate",
            "SELECT count(*), sum(v), avg(v), max(payload) FROM t".to_string(),
        ),
        (
            "lookup of one id",
            format!("SELECT * FROM t WHERE id = {}", total / 2 + 7),
        ),
    ];
    let mut out = Vec::new();
    for (name, sql) in &queries {
        let ours_rows = run_ours(&session, sql).await;
        let theirs_rows = run_datafusion(&ctx, sql).await;
        assert_eq!(
            row_count(&ours_rows),
            row_count(&theirs_rows),
            "{sql}: both read the same segments"
        );
        let ours = latency(size, || {
            let session = &session;
            async move {
                run_ours(session, sql).await;
            }
        })
        .await;
        let theirs = latency(size, || {
            let ctx = &ctx;
            async move {
                run_datafusion(ctx, sql).await;
            }
        })
        .await;
        out.push(Measurement::latency(
            "parquet_scan_200k",
            format!("{name}, {total} rows in {SEGMENTS} segments, vs DataFusion's Parquet reader"),
            ours,
            theirs,
        ));
    }
    assert_eq!(
        row_count(&run_ours(&session, &queries[0].1).await),
        total,
        "every row"
    );
    out
}

/// Creates table `t` by `create` (columns `id BIGINT, v DOUBLE, payload
/// TEXT`) and gives alice `segments` flushed Parquet segments of `rows`
/// rows each, ids ascending from 0 (loaded past SQL: the load is not what
/// is measured). Returns a DataFusion context with those very files as its
/// Parquet table `t`.
async fn flushed_segments(
    engine: &Engine,
    dir: &tempfile::TempDir,
    create: &str,
    segments: usize,
    rows: usize,
) -> SessionContext {
    let admin = engine.session(UserContext::new("admin", Role::Dba));
    run_ours(&admin, create).await;
    let (schema, store) = user_table_store(engine, "t");
    let alice = PartitionKey::User(UserId::new("alice"));
    for segment in 0..segments {
        let ids: Vec<i64> = (segment * rows..(segment + 1) * rows)
            .map(|i| i as i64)
            .collect();
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(Int64Array::from(ids.clone())),
                Arc::new(Float64Array::from_iter_values(
                    ids.iter().map(|i| *i as f64 * 0.5),
                )),
                Arc::new(StringViewArray::from_iter_values(
                    ids.iter().map(|i| format!("payload {i}")),
                )),
            ],
        )
        .expect("batch");
        store.append(&alice, vec![batch]).await.expect("append");
        run_ours(&admin, "FLUSH TABLE t").await;
    }
    let files = dir
        .path()
        .join("tables")
        .join("default.t.1")
        .join("data")
        .join("u-alice");
    let ctx = SessionContext::new();
    ctx.register_parquet(
        "t",
        files.to_str().expect("a UTF-8 path"),
        ParquetReadOptions::default(),
    )
    .await
    .expect("listing table");
    ctx
}

/// `point_lookup`: one row by PRIMARY KEY from one user's 10 flushed
/// segments of `size.segment_rows` rows, beside DataFusion's Parquet reader
/// on the same files; and what checking the key costs a single-row INSERT,
/// beside the same INSERT into the same rows without a key.
pub async fn point_lookup(size: Size) -> Vec<Measurement> {
    const SEGMENTS: usize = 10;
    let rows = size.segment_rows;
    let total = SEGMENTS * rows;
    let mut tables = Vec::new();
    for key in ["PRIMARY KEY", "NOT NULL"] {
        let dir = bench_dir();
        // Buffered: an fsync would bury what the key check costs.
        let engine = Engine::new(on_disk(&dir, Durability::Buffered)).expect("engine");
        let create = format!(
            "CREATE TABLE t (id BIGINT {key}, v DOUBLE, payload TEXT) WITH (FLUSH_POLICY = 'none')"
        );
        let ctx = flushed_segments(&engine, &dir, &create, SEGMENTS, rows).await;
        tables.push((dir, engine, ctx));
    }
    let (_, keyed, ctx) = &tables[0];
    let alice = keyed.session(UserContext::new("alice", Role::User));
    let sql = format!("SELECT * FROM t WHERE id = {}", total / 2 + 7);
    assert_eq!(row_count(&run_ours(&alice, &sql).await), 1);
    assert_eq!(row_count(&run_datafusion(ctx, &sql).await), 1);
    let ours = latency(size, || {
        let (alice, sql) = (&alice, &sql);
        async move {
            run_ours(alice, sql).await;
        }
    })
    .await;
    let theirs = latency(size, || {
        let sql = &sql;
        async move {
            run_datafusion(ctx, sql).await;
        }
    })
    .await;
    let mut out = vec![Measurement::latency(
        "point_lookup",
        format!(
            "lookup by primary key, {total} rows in {SEGMENTS} segments, vs DataFusion's Parquet reader"
        ),
        ours,
        theirs,
    )];
    let mut inserts = Vec::new();
    for (_, engine, _) in &tables {
        let alice = engine.session(UserContext::new("alice", Role::User));
        let mut next = total;
        inserts.push(
            latency(size, || {
                next += 1;
                let sql = format!("INSERT INTO t VALUES ({next}, 0.5, 'new')");
                let alice = &alice;
                async move {
                    run_ours(alice, &sql).await;
                }
            })
            .await,
        );
    }
    let duplicate = format!("INSERT INTO t VALUES ({}, 0.5, 'again')", total / 2);
    let refused = match alice.sql(&duplicate).await {
        Ok(query) => query.collect().await.map(|_| ()),
        Err(err) => Err(err),
    };
    assert_eq!(
        refused.map_err(|e| e.code()),
        Err("PRIMARY_KEY_VIOLATION"),
        "a key in a flushed segment is found"
    );
    out.push(Measurement::latency(
        "point_lookup",
        format!(
            "single-row INSERT, buffered log, key checked against {total} flushed rows, vs no key"
        ),
        inserts[0],
        inserts[1],
    ));
    out
}

fn row_count(batches: &[RecordBatch]) -> usize {
    batches.iter().map(RecordBatch::num_rows).sum()
}

/// Column `column` of the first row, as u64.
fn first_u64(batches: &[RecordBatch], column: usize) -> u64 {
    batches[0]
        .column(column)
        .as_any()
        .downcast_ref::<UInt64Array>()
        .expect("a UInt64 column")
        .value(0)
}

/// Rows/s of [`WRITERS`] tasks appending single rows to `size.log_tables`
/// durable tables of one storage root round-robin (each append to the next
/// table, so nearly every commit group is another table's), beside the
/// same on 10 tables (where appends to one table share a group); the big
/// side again with four committers, beside the default; and the
/// committer threads the root's logs took at that many tables, beside one
/// per table (what each log took before they were shared).
pub async fn many_durable_tables(size: Size) -> Vec<Measurement> {
    use tenantfusion_store::Committers;

    let appends = size.statements_per_task * 5;
    let default = Committers::DEFAULT_THREADS;
    let (many, threads) = round_robin(size.log_tables, appends, default).await;
    let (few, _) = round_robin(10, appends, default).await;
    let (narrow, _) = round_robin(size.log_tables, appends, 4).await;
    let tables = size.log_tables;
    vec![
        Measurement::figure(
            "many_durable_tables",
            format!(
                "{WRITERS} writers, single-row appends round-robin over {tables} durable tables vs 10 tables"
            ),
            many,
            few,
            "rows/s",
        ),
        Measurement::figure(
            "many_durable_tables",
            format!("the same over {tables} tables, {default} log committers (the default) vs 4"),
            many,
            narrow,
            "rows/s",
        ),
        Measurement::figure(
            "many_durable_tables",
            format!("log committer threads for {tables} durable tables vs one per table"),
            threads as f64,
            tables as f64,
            "threads",
        ),
    ]
}

/// Threads of this process named as log committers.
fn committer_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|tasks| {
            tasks
                .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
                .filter(|name| name.starts_with("tf-wal-"))
                .count()
        })
        .unwrap_or(0)
}

/// [`many_durable_tables`] at `tables` with `committers`: rows/s, and the
/// committer threads counted.
async fn round_robin(tables: usize, appends: usize, committers: usize) -> (f64, usize) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tenantfusion_store::{DurablePartitionStore, FlushPolicy, StorageRoot};
    use tenantfusion_tables::PartitionStore;

    let dir = bench_dir();
    let before = committer_threads();
    let options = WalOptions {
        committers,
        ..WalOptions::default()
    };
    let root = StorageRoot::open(dir.path(), options).expect("storage root");
    let stores: Arc<Vec<Arc<DurablePartitionStore>>> = Arc::new(
        (0..tables)
            .map(|t| {
                root.table_store(&format!("bench.t{t}.{t}"), FlushPolicy::MANUAL)
                    .expect("table store")
            })
            .collect(),
    );
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("body", DataType::Utf8, true),
    ]));
    let row = move |id: usize| {
        RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(Int64Array::from(vec![id as i64])),
                Arc::new(datafusion::arrow::array::StringArray::from(vec![format!(
                    "note {id}"
                )])),
            ],
        )
        .expect("row")
    };
    // Every table opened (its log created) and written once, untimed.
    let next = Arc::new(AtomicUsize::new(0));
    let write = |count: usize| {
        let tasks: Vec<_> = (0..WRITERS)
            .map(|w| {
                let (stores, next, row) = (Arc::clone(&stores), Arc::clone(&next), row.clone());
                tokio::spawn(async move {
                    let key = PartitionKey::User(UserId::new(format!("writer{w}")));
                    for _ in 0..count {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        stores[n % stores.len()]
                            .append(&key, vec![row(n)])
                            .await
                            .expect("append");
                    }
                })
            })
            .collect();
        async move {
            for task in tasks {
                task.await.expect("writer");
            }
        }
    };
    write(tables.div_ceil(WRITERS)).await;
    let threads = committer_threads().saturating_sub(before);
    let started = Instant::now();
    write(appends).await;
    let rate = (WRITERS * appends) as f64 / started.elapsed().as_secs_f64();
    let logged: u64 = stores.iter().map(|s| s.stats().wal.appends).sum();
    assert_eq!(
        logged as usize,
        WRITERS * (appends + tables.div_ceil(WRITERS)),
        "every append logged"
    );
    (rate, threads)
}
