//! Stream tables and live queries: ingest from the generator, insert ->
//! notification latency, and many idle live queries.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use datafusion::arrow::array::{
    ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, TimestampNanosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::common::ScalarValue;
use hdrhistogram::Histogram;
use tenantfusion::{
    AccessLevel, ChangeEvent, Engine, EngineConfig, LiveQuery, Role, SystemClock, TableId,
    TenantSession, UserContext,
};
use tenantfusion_live::{LiveEvent, LivePool, PoolConfig, Request, SubscribeOptions};
use tenantfusion_tables::{Retention, StreamOrigin, StreamTableProvider};

use crate::live::{Received, WARM_UP, consume, generator, join_consumers, now_us, window};
use crate::{Measurement, Size, run_ours, run_prepared};

/// The generator's tick interval in the ingest scenario: every topic gets a
/// row each millisecond, so `n` topics offer `n * 1,000` rows/s.
const INGEST_INTERVAL: Duration = Duration::from_millis(1);

fn admin(engine: &Engine) -> TenantSession {
    engine.session(UserContext::new("admin", Role::Dba))
}

fn topic_names(n: usize) -> Vec<String> {
    (0..n).map(|t| format!("T{t:05}")).collect()
}

/// An engine with source `gen` (the generator ticking every `interval`)
/// and the stream table `m.ticks` holding `topics` from the start, with
/// room for every row of the run.
async fn ticks_engine(interval: Duration, topics: &[String]) -> Engine {
    let engine = Engine::new(EngineConfig::default()).expect("engine");
    let admin = admin(&engine);
    let declared = if topics.is_empty() {
        String::new()
    } else {
        format!(", TOPICS = '{}'", topics.join(","))
    };
    for sql in [
        "CREATE NAMESPACE m".to_string(),
        format!(
            "CREATE SOURCE gen TYPE generator WITH (INTERVAL_MS = {})",
            interval.as_millis()
        ),
        format!(
            "CREATE STREAM TABLE m.ticks \
             (symbol TEXT NOT NULL, seq BIGINT, price DOUBLE, volume BIGINT, ts TIMESTAMP) \
             WITH (SOURCE = 'gen', TOPIC_COLUMN = 'symbol', TTL_SECONDS = 3600, \
                   MAX_ROWS_PER_TOPIC = 1000000{declared})"
        ),
    ] {
        run_ours(&admin, &sql).await;
    }
    engine
}

async fn count_rows(session: &TenantSession) -> u64 {
    let batches = run_ours(session, "SELECT count(*) FROM m.ticks").await;
    batches
        .first()
        .and_then(|b| ScalarValue::try_from_array(b.column(0), 0).ok())
        .and_then(|v| match v {
            ScalarValue::Int64(Some(n)) => Some(n as u64),
            _ => None,
        })
        .unwrap_or(0)
}

/// Rows/s into a source-bound stream table from the generator (end to end:
/// pool, feeder, column mapping, rings), beside the same generator's rows
/// delivered by the pool to one plain subscriber; and rows/s appended to
/// the rings directly, one row per append as a 1 ms tick arrives, beside
/// pushing the same batches onto a `Vec` per topic under a mutex.
pub async fn stream_ingest(size: Size) -> Vec<Measurement> {
    let names = topic_names(size.stream_topics);
    let offered = size.stream_topics as f64 * 1e3 / INGEST_INTERVAL.as_millis() as f64;

    // Ours: generator -> pool -> stream table.
    let engine = ticks_engine(INGEST_INTERVAL, &names).await;
    let admin = admin(&engine);
    tokio::time::sleep(WARM_UP).await;
    let before = count_rows(&admin).await;
    let started = Instant::now();
    tokio::time::sleep(size.live_run).await;
    let ingested = count_rows(&admin).await.saturating_sub(before);
    let ours = ingested as f64 / started.elapsed().as_secs_f64();
    drop(admin);
    drop(engine);

    // Baseline: the pool's delivery of the same topics to one subscriber.
    let pool = LivePool::new(PoolConfig::default()).expect("pool");
    pool.add_source(generator("gen", None, INGEST_INTERVAL))
        .expect("source");
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut sub = pool
        .subscribe(
            &Request {
                topics: &refs,
                ..Request::default()
            },
            SubscribeOptions {
                queue_capacity: 1 << 20,
                // A baseline that never drops: unbounded in bytes too.
                queue_bytes: usize::MAX,
                ..SubscribeOptions::default()
            },
        )
        .expect("subscribe");
    let (from, deadline) = window(size.live_run);
    let mut received = Received::new(from);
    while let Ok(Ok(Some(event))) = tokio::time::timeout_at(deadline, sub.recv()).await {
        if let LiveEvent::Rows { batch, .. } = event {
            received.take(&batch);
        }
    }
    let pool_rate = received.rows as f64 / size.live_run.as_secs_f64();
    drop(sub);
    drop(pool);

    let (appended, pushed) = append_rates(size).await;
    vec![
        Measurement::figure(
            "stream_ingest",
            format!(
                "rows/s into a stream table from the generator, {} topics offering {offered:.0} rows/s (baseline: the pool's delivery to one subscriber)",
                size.stream_topics
            ),
            ours,
            pool_rate,
            "rows/s",
        ),
        Measurement::figure(
            "stream_ingest",
            format!(
                "rows/s appended to the rings, one row per append over {} topics (baseline: Vec per topic under a mutex)",
                size.stream_topics
            ),
            appended,
            pushed,
            "rows/s",
        ),
    ]
}

fn tick_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("symbol", DataType::Utf8, false),
        Field::new("seq", DataType::Int64, true),
        Field::new("price", DataType::Float64, true),
        Field::new("volume", DataType::Int64, true),
        Field::new("ts", DataType::Timestamp(TimeUnit::Nanosecond, None), true),
    ]))
}

/// Rows/s of `StreamTableProvider::append_topic` and of the baseline.
async fn append_rates(size: Size) -> (f64, f64) {
    let schema = tick_schema();
    let names: Vec<Arc<str>> = topic_names(size.stream_topics)
        .into_iter()
        .map(Arc::from)
        .collect();
    let rows: Vec<RecordBatch> = names
        .iter()
        .enumerate()
        .map(|(n, topic)| {
            let columns: Vec<ArrayRef> = vec![
                Arc::new(StringArray::from(vec![topic.as_ref()])),
                Arc::new(Int64Array::from(vec![n as i64])),
                Arc::new(Float64Array::from(vec![100.0])),
                Arc::new(Int64Array::from(vec![10])),
                Arc::new(TimestampNanosecondArray::from(vec![0])),
            ];
            RecordBatch::try_new(Arc::clone(&schema), columns).expect("batch")
        })
        .collect();
    let appends = size.stream_appends;
    let table = StreamTableProvider::new_stream(
        TableId::new("m", "ticks"),
        Arc::clone(&schema),
        StreamOrigin::Source {
            source: "gen".into(),
            topic_column: "symbol".into(),
            access: AccessLevel::Public,
        },
        Retention {
            ttl: Some(Duration::from_secs(3600)),
            max_rows: Some(10_000),
        },
        Arc::new(SystemClock),
    )
    .expect("stream table");
    let started = Instant::now();
    for i in 0..appends {
        let k = i % names.len();
        table
            .append_topic(&names[k], rows[k].clone())
            .await
            .expect("append");
    }
    let ours = appends as f64 / started.elapsed().as_secs_f64();

    let plain: HashMap<Arc<str>, Mutex<VecDeque<RecordBatch>>> = names
        .iter()
        .map(|t| (Arc::clone(t), Mutex::new(VecDeque::new())))
        .collect();
    let started = Instant::now();
    for i in 0..appends {
        let k = i % names.len();
        if let Some(Ok(mut rows_of)) = plain.get(&names[k]).map(Mutex::lock) {
            if rows_of.len() == 10_000 {
                rows_of.pop_front();
            }
            rows_of.push_back(rows[k].clone());
        }
    }
    let baseline = appends as f64 / started.elapsed().as_secs_f64();
    std::hint::black_box(&plain);
    (ours, baseline)
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("constant bounds")
}

/// Insert -> notification latency: on a user table (a live query of the
/// inserting user; beside the same INSERT's acknowledgement with nobody
/// subscribed), and on a stream table with `size.live_subscribers` live
/// queries of one topic (event time -> delivery; beside the pool delivering
/// that topic to as many plain subscribers).
pub async fn live_query_latency(size: Size) -> Vec<Measurement> {
    let engine = Engine::new(EngineConfig::default()).expect("engine");
    let admin = admin(&engine);
    for sql in [
        "CREATE NAMESPACE app",
        "CREATE USER TABLE app.watched (at BIGINT NOT NULL, body TEXT)",
        "CREATE USER TABLE app.quiet (at BIGINT NOT NULL, body TEXT)",
    ] {
        run_ours(&admin, sql).await;
    }
    let alice = engine.session(UserContext::new("alice", Role::User));
    let bob = engine.session(UserContext::new("bob", Role::User));
    let mut live = alice
        .subscribe("SUBSCRIBE TO app.watched")
        .await
        .expect("subscribe");
    // bob watches too: his query must stay quiet while alice inserts.
    let mut other = bob
        .subscribe("SUBSCRIBE TO app.watched")
        .await
        .expect("subscribe");
    assert!(matches!(
        live.recv().await,
        Ok(Some(ChangeEvent::Snapshot(_)))
    ));
    assert!(matches!(
        other.recv().await,
        Ok(Some(ChangeEvent::Snapshot(_)))
    ));
    let inserts = size.samples * 20;
    let receiver = tokio::spawn(async move {
        let mut latency = histogram();
        while (latency.len() as usize) < inserts {
            match live.recv().await {
                Ok(Some(ChangeEvent::Insert(batch))) => {
                    let at = batch
                        .column(0)
                        .as_any()
                        .downcast_ref::<Int64Array>()
                        .map_or(0, |a| a.value(0));
                    latency.saturating_record((now_us() - at).max(1) as u64);
                }
                Ok(Some(_)) => {}
                _ => break,
            }
        }
        latency
    });
    // Alternating, so both sides see the same warm-up and machine load.
    let watched = alice
        .prepare("INSERT INTO app.watched VALUES ($1, 'x')")
        .await
        .expect("prepare");
    let quiet = alice
        .prepare("INSERT INTO app.quiet VALUES ($1, 'x')")
        .await
        .expect("prepare");
    let mut acked = histogram();
    for _ in 0..inserts {
        for (statement, record) in [(&watched, false), (&quiet, true)] {
            let at = now_us();
            run_prepared(statement, vec![ScalarValue::Int64(Some(at))]).await;
            if record {
                acked.saturating_record((now_us() - at).max(1) as u64);
            }
        }
    }
    let notified = receiver.await.expect("receiver");
    assert!(
        matches!(other.try_recv(), Ok(None)),
        "bob's live query saw alice's rows"
    );

    let (stream, pool) = stream_fanout(size).await;
    let at = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64;
    let row = |metric: String, ours: f64, baseline: f64| {
        Measurement::figure("live_query_latency", metric, ours, baseline, "us")
    };
    let subscribers = size.live_subscribers;
    vec![
        row(
            format!(
                "user table, INSERT -> live query notified, p50 of {inserts} (baseline: INSERT acknowledged, nobody subscribed)"
            ),
            at(&notified, 0.5),
            at(&acked, 0.5),
        ),
        row(
            "user table, INSERT -> live query notified, p99 (baseline: INSERT acknowledged)".into(),
            at(&notified, 0.99),
            at(&acked, 0.99),
        ),
        row(
            format!(
                "stream table, {subscribers} live queries of one topic, event time -> delivered, p50 (baseline: pool to {subscribers} plain subscribers)"
            ),
            at(&stream.latency, 0.5),
            at(&pool.latency, 0.5),
        ),
        row(
            format!(
                "stream table, {subscribers} live queries of one topic, event time -> delivered, p99 (baseline: pool to {subscribers} plain subscribers)"
            ),
            at(&stream.latency, 0.99),
            at(&pool.latency, 0.99),
        ),
    ]
}

/// What `size.live_subscribers` consumers of topic `HOT`, ticking every
/// 10 ms, received: through live queries on a stream table, and through
/// plain pool subscriptions.
async fn stream_fanout(size: Size) -> (Received, Received) {
    let interval = Duration::from_millis(10);
    let engine = ticks_engine(interval, &[]).await;
    let mut queries = Vec::with_capacity(size.live_subscribers);
    for n in 0..size.live_subscribers {
        let reader = engine.session(UserContext::new(format!("reader{n}"), Role::User));
        queries.push(
            reader
                .subscribe("SUBSCRIBE TO m.ticks WHERE symbol = 'HOT'")
                .await
                .expect("subscribe"),
        );
    }
    let (from, deadline) = window(size.live_run);
    let tasks: Vec<_> = queries
        .into_iter()
        .map(|mut live: LiveQuery| {
            tokio::spawn(async move {
                let mut received = Received::new(from);
                while let Ok(Ok(Some(event))) = tokio::time::timeout_at(deadline, live.recv()).await
                {
                    if let ChangeEvent::Insert(batch) = event {
                        received.take(&batch);
                    }
                }
                received
            })
        })
        .collect();
    let ours = join_consumers(tasks).await;
    drop(engine);

    let pool = LivePool::new(PoolConfig::default()).expect("pool");
    pool.add_source(generator("gen", None, interval))
        .expect("source");
    let (from, deadline) = window(size.live_run);
    let tasks: Vec<_> = (0..size.live_subscribers)
        .map(|_| {
            let sub = pool
                .subscribe(
                    &Request {
                        topics: &["HOT"],
                        ..Request::default()
                    },
                    SubscribeOptions::default(),
                )
                .expect("subscribe");
            consume(sub, from, deadline)
        })
        .collect();
    (ours, join_consumers(tasks).await)
}

/// `size.idle_queries` live queries across `size.idle_users` users (one per
/// user per table of ten user tables), registered with their (empty)
/// snapshots read: time to register them all and heap per query, read from
/// `live_bytes`; beside a tokio mpsc channel of the same capacity per query
/// kept in a map by user and table.
pub async fn idle_subscriptions(size: Size, live_bytes: fn() -> i64) -> Vec<Measurement> {
    const TABLES: usize = 10;
    let users = size.idle_users;
    let per_user = size.idle_queries.div_ceil(users).min(TABLES);
    let total = users * per_user;
    let engine = Engine::new(EngineConfig::default()).expect("engine");
    let admin = admin(&engine);
    run_ours(&admin, "CREATE NAMESPACE app").await;
    for t in 0..TABLES {
        run_ours(&admin, &format!("CREATE USER TABLE app.t{t} (v BIGINT)")).await;
    }
    let sessions: Vec<TenantSession> = (0..users)
        .map(|u| engine.session(UserContext::new(format!("user{u}"), Role::User)))
        .collect();
    let statements: Vec<String> = (0..per_user)
        .map(|t| format!("SUBSCRIBE TO app.t{t}"))
        .collect();

    let bytes = live_bytes();
    let started = Instant::now();
    let mut queries: Vec<LiveQuery> = Vec::with_capacity(total);
    for session in &sessions {
        for sql in &statements {
            let mut live = session.subscribe(sql).await.expect("subscribe");
            assert!(matches!(
                live.try_recv(),
                Ok(Some(ChangeEvent::Snapshot(_)))
            ));
            queries.push(live);
        }
    }
    let register = started.elapsed();
    let per_query = (live_bytes() - bytes) as f64 / total as f64;

    // Idle, not dead: one user's insert reaches only that user's query.
    run_ours(&sessions[0], "INSERT INTO app.t0 VALUES (1)").await;
    assert!(matches!(
        queries[0].try_recv(),
        Ok(Some(ChangeEvent::Insert(_)))
    ));
    if let Some(another) = queries.get_mut(per_user) {
        assert!(matches!(another.try_recv(), Ok(None)));
    }

    let capacity = SubscribeOptions::default().queue_capacity;
    let bytes = live_bytes();
    let started = Instant::now();
    type Channels = HashMap<(String, usize), tokio::sync::mpsc::Sender<RecordBatch>>;
    let mut channels: Channels = HashMap::with_capacity(total);
    let mut receivers = Vec::with_capacity(total);
    for u in 0..users {
        for t in 0..per_user {
            let (tx, rx) = tokio::sync::mpsc::channel(capacity);
            channels.insert((format!("user{u}"), t), tx);
            receivers.push(rx);
        }
    }
    let baseline = started.elapsed();
    let baseline_bytes = (live_bytes() - bytes) as f64 / total as f64;
    std::hint::black_box((&channels, &receivers));
    let what = format!("{total} idle live queries of {users} users");
    vec![
        Measurement::figure(
            "idle_subscriptions",
            format!(
                "{what}: time to register all (baseline: an mpsc channel of {capacity} each, in a map)"
            ),
            register.as_secs_f64() * 1e3,
            baseline.as_secs_f64() * 1e3,
            "ms",
        ),
        Measurement::figure(
            "idle_subscriptions",
            format!(
                "{what}: heap per live query (baseline: an mpsc channel of {capacity} and its map entry)"
            ),
            per_query,
            baseline_bytes,
            "bytes",
        ),
    ]
}
