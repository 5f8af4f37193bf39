//! The live pool: fan-out to many subscribers, failover under caps, memory.
//! The upstream is the in-process generator, so the figures are the pool's.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::{
    DataType, TimeUnit, TimestampMicrosecondType, TimestampNanosecondType, UInt64Type,
};
use datafusion::arrow::record_batch::RecordBatch;
use hdrhistogram::Histogram;
use tenantfusion_live::{
    Backoff, GeneratorConfig, GeneratorSource, LiveEvent, LivePool, PoolConfig, Request, Source,
    SubscribeOptions, Subscription, Upstream,
};
use tokio::task::JoinHandle;

use crate::{Measurement, Size};

/// Topics in the fan-out scenario; each subscriber takes `PER_SUBSCRIBER`.
const FANOUT_TOPICS: usize = 100;
const PER_SUBSCRIBER: usize = 5;
const FANOUT_INTERVAL: Duration = Duration::from_millis(20);
const SEQ: usize = 1;
const TS: usize = 4;

pub(crate) fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// User + system CPU time of this process (Linux `/proc/self/stat`, in
/// clock ticks of 10 ms); zero where it cannot be read.
pub(crate) fn cpu_time() -> Duration {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return Duration::ZERO;
    };
    // Fields after the command name (which may hold spaces) start at ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i).and_then(|f| f.parse::<u64>().ok()))
        .sum();
    Duration::from_millis(ticks * 10)
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("constant bounds")
}

/// Rows received and event-time -> receipt latencies of one consumer,
/// counting only rows due from `from` (microseconds since the epoch) on, so
/// that setting up subscribers is not measured.
pub(crate) struct Received {
    from: i64,
    pub(crate) rows: u64,
    pub(crate) latency: Histogram<u64>,
}

impl Received {
    pub(crate) fn new(from: i64) -> Self {
        Self {
            from,
            rows: 0,
            latency: histogram(),
        }
    }

    /// Counts `batch`, whose column 4 is the event time in micro- (the
    /// generator's) or nanoseconds (a SQL `TIMESTAMP`).
    pub(crate) fn take(&mut self, batch: &RecordBatch) {
        let ts = batch.column(TS);
        let first = match ts.data_type() {
            DataType::Timestamp(TimeUnit::Nanosecond, _) => ts
                .as_primitive::<TimestampNanosecondType>()
                .values()
                .first()
                .map(|ns| ns / 1_000),
            _ => ts
                .as_primitive::<TimestampMicrosecondType>()
                .values()
                .first()
                .copied(),
        };
        let Some(first) = first.filter(|t| *t >= self.from) else {
            return;
        };
        self.rows += batch.num_rows() as u64;
        let micros = (now_us() - first).max(1) as u64;
        self.latency.saturating_record(micros);
    }
}

/// How long subscribers are set up and warmed before rows count.
pub(crate) const WARM_UP: Duration = Duration::from_millis(500);

/// Event time from which rows count, and when consumers stop.
pub(crate) fn window(run: Duration) -> (i64, tokio::time::Instant) {
    let from = now_us() + WARM_UP.as_micros() as i64;
    (from, tokio::time::Instant::now() + WARM_UP + run)
}

fn fanout_topics(subscriber: usize) -> Vec<String> {
    (0..PER_SUBSCRIBER)
        .map(|k| {
            format!(
                "S{:03}",
                (subscriber + k * (FANOUT_TOPICS / PER_SUBSCRIBER)) % FANOUT_TOPICS
            )
        })
        .collect()
}

pub(crate) fn generator(
    name: &str,
    cap: Option<usize>,
    interval: Duration,
) -> Arc<GeneratorSource> {
    Arc::new(GeneratorSource::new(GeneratorConfig {
        name: name.into(),
        max_topics_per_connection: cap,
        interval,
        seed: 7,
    }))
}

/// Waits for every consumer task and adds up what they received.
pub(crate) async fn join_consumers(tasks: Vec<JoinHandle<Received>>) -> Received {
    let mut all = Received::new(0);
    for task in tasks {
        let part = task.await.expect("consumer");
        all.rows += part.rows;
        let _ = all.latency.add(&part.latency);
    }
    all
}

/// A task taking the rows `sub` delivers until `deadline`.
pub(crate) fn consume(
    mut sub: Subscription,
    from: i64,
    deadline: tokio::time::Instant,
) -> JoinHandle<Received> {
    tokio::spawn(async move {
        let mut received = Received::new(from);
        while let Ok(Ok(Some(event))) = tokio::time::timeout_at(deadline, sub.recv()).await {
            if let LiveEvent::Rows { batch, .. } = event {
                received.take(&batch);
            }
        }
        received
    })
}

/// `size.live_subscribers` subscribers of 5 topics each out of 100, fed by
/// the generator every 20 ms, for `size.live_run`: through the pool (one
/// shared connection) vs one upstream connection per subscriber.
pub async fn live_fanout(size: Size) -> Vec<Measurement> {
    let subscribers = size.live_subscribers;
    let run = size.live_run;

    // Ours: one pool, one connection, fan-out per topic.
    let pool = LivePool::new(PoolConfig::default()).expect("pool");
    pool.add_source(generator("gen", None, FANOUT_INTERVAL))
        .expect("source");
    let (from, deadline) = window(run);
    let tasks: Vec<_> = (0..subscribers)
        .map(|s| {
            let topics = fanout_topics(s);
            let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
            let request = Request {
                topics: &refs,
                ..Request::default()
            };
            let sub = pool
                .subscribe(&request, SubscribeOptions::default())
                .expect("subscribe");
            consume(sub, from, deadline)
        })
        .collect();
    tokio::time::sleep(WARM_UP).await;
    let cpu = cpu_time();
    let ours = join_consumers(tasks).await;
    let ours_cpu = cpu_time().saturating_sub(cpu);
    let ours_connections = pool.snapshot().connections.len();
    drop(pool);

    // Baseline: every subscriber opens its own upstream connection.
    let source = generator("gen", None, FANOUT_INTERVAL);
    let (from, deadline) = window(run);
    let mut tasks = Vec::new();
    for s in 0..subscribers {
        let mut connection = source.connect().await.expect("connect");
        let topics: Vec<_> = fanout_topics(s).into_iter().map(Into::into).collect();
        connection.subscribe(&topics).await.expect("subscribe");
        tasks.push(tokio::spawn(async move {
            let mut received = Received::new(from);
            while let Ok(Ok(Upstream::Rows(batch))) =
                tokio::time::timeout_at(deadline, connection.next_event()).await
            {
                received.take(&batch);
            }
            received
        }));
    }
    tokio::time::sleep(WARM_UP).await;
    let cpu = cpu_time();
    let base = join_consumers(tasks).await;
    let base_cpu = cpu_time().saturating_sub(cpu);

    let secs = run.as_secs_f64();
    let per_million =
        |cpu: Duration, rows: u64| cpu.as_secs_f64() * 1e3 / (rows.max(1) as f64 / 1e6);
    let at = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64;
    let what = format!(
        "{subscribers} subscribers x {PER_SUBSCRIBER} of {FANOUT_TOPICS} topics, ticks every 20 ms (baseline: one upstream connection per subscriber)"
    );
    let row = |metric: &str, ours: f64, baseline: f64, unit: &str| {
        Measurement::figure(
            "live_fanout",
            format!("{metric}, {what}"),
            ours,
            baseline,
            unit,
        )
    };
    vec![
        row(
            "rows delivered per second",
            ours.rows as f64 / secs,
            base.rows as f64 / secs,
            "rows/s",
        ),
        row(
            "CPU per million rows delivered",
            per_million(ours_cpu, ours.rows),
            per_million(base_cpu, base.rows),
            "ms",
        ),
        row(
            "latency p50, event time -> subscriber",
            at(&ours.latency, 0.5),
            at(&base.latency, 0.5),
            "us",
        ),
        row(
            "latency p99, event time -> subscriber",
            at(&ours.latency, 0.99),
            at(&base.latency, 0.99),
            "us",
        ),
        row(
            "upstream connections",
            ours_connections as f64,
            subscribers as f64,
            "connections",
        ),
    ]
}

/// Per topic: first and last sequence number received, and rows received.
#[derive(Default, Clone, Copy)]
struct Seen {
    first: u64,
    last: u64,
    rows: u64,
}

/// `size.live_topics` topics at 200 per connection from the generator
/// every 50 ms: connections used, time until every topic flows again after
/// 20% of the connections are dropped (beside the cold start of all
/// topics), and rows lost outside the reported gaps.
pub async fn live_failover(size: Size) -> Vec<Measurement> {
    const CAP: usize = 200;
    let interval = Duration::from_millis(50);
    let topics = size.live_topics;
    let pool = LivePool::new(PoolConfig {
        maintenance_interval: Duration::from_millis(100),
        backoff: Backoff {
            initial: Duration::from_millis(50),
            max: Duration::from_secs(1),
            multiplier: 2.0,
        },
        ..PoolConfig::default()
    })
    .expect("pool");
    let source = generator("gen", Some(CAP), interval);
    pool.add_source(source.clone()).expect("source");
    let names: Vec<String> = (0..topics).map(|t| format!("F{t:05}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let started = Instant::now();
    let mut sub = pool
        .subscribe(
            &Request {
                topics: &refs,
                ..Request::default()
            },
            SubscribeOptions {
                queue_capacity: 10_000_000,
                // A baseline that never drops: unbounded in bytes too.
                queue_bytes: usize::MAX,
                ..SubscribeOptions::default()
            },
        )
        .expect("subscribe");
    let mut seen: HashMap<String, Seen> = HashMap::with_capacity(topics);
    let take = |event: LiveEvent, seen: &mut HashMap<String, Seen>| {
        if let LiveEvent::Rows { topic, batch } = event {
            let seqs = batch.column(SEQ).as_primitive::<UInt64Type>();
            let entry = seen.entry(topic.to_string()).or_insert(Seen {
                first: seqs.value(0),
                ..Seen::default()
            });
            entry.last = seqs.value(seqs.len() - 1);
            entry.rows += seqs.len() as u64;
        }
    };
    // Cold start: until every topic has delivered.
    while seen.len() < topics {
        let event = sub.recv().await.expect("recv").expect("open");
        take(event, &mut seen);
    }
    let cold = started.elapsed();
    let connections = pool.snapshot().connections.len();

    // Drop 20% of the connections (at least one); wait until every topic has a tick due
    // after the drop.
    let dropped = source.drop_connections(connections.div_ceil(5));
    let killed_at = Instant::now();
    let tick_at_kill = (now_us() as u64) / interval.as_micros() as u64;
    while seen.values().any(|s| s.last <= tick_at_kill + 1) {
        let event = sub.recv().await.expect("recv").expect("open");
        take(event, &mut seen);
    }
    let recovery = killed_at.elapsed();

    // Let it run on, stop the upstream, then compare what arrived with the gaps.
    tokio::time::sleep(Duration::from_millis(500)).await;
    pool.shutdown();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let snapshot = pool.snapshot();
    while let Ok(Some(event)) = sub.try_recv() {
        take(event, &mut seen);
    }
    let mut lost = 0;
    let mut gaps = 0;
    let mut received = 0;
    for topic in &snapshot.topics {
        let s = seen.get(&*topic.topic).copied().unwrap_or_default();
        let missing = (s.last - s.first + 1).saturating_sub(s.rows);
        lost += missing.saturating_sub(topic.gaps);
        gaps += topic.gaps;
        received += s.rows;
    }
    let row = |metric: String, ours: f64, baseline: f64, unit: &str| {
        Measurement::figure("live_failover", metric, ours, baseline, unit)
    };
    vec![
        row(
            format!(
                "connections for {topics} topics at {CAP} per connection (baseline: ceil(topics / cap))"
            ),
            connections as f64,
            topics.div_ceil(CAP) as f64,
            "connections",
        ),
        row(
            format!(
                "time until all {topics} topics flow again after dropping {dropped} of {connections} connections (baseline: cold start of all topics)"
            ),
            recovery.as_secs_f64() * 1e3,
            cold.as_secs_f64() * 1e3,
            "ms",
        ),
        row(
            "rows lost outside the reported gaps (baseline: rows received)".into(),
            lost as f64,
            received as f64,
            "rows",
        ),
        row(
            "rows reported as gaps during the failover (baseline: rows received)".into(),
            gaps as f64,
            received as f64,
            "rows",
        ),
    ]
}

/// A subscription of `topics` from `pool` (panics on refusal).
fn subscribe_to(pool: &LivePool, topics: &[&str], options: SubscribeOptions) -> Subscription {
    let request = Request {
        topics,
        ..Request::default()
    };
    pool.subscribe(&request, options).expect("subscribe")
}

/// Heap bytes per subscriber (of a topic already carried) and per topic,
/// read from the process's allocation counter `live_bytes`, beside a tokio
/// mpsc channel of the same capacity per subscriber and a broadcast channel
/// per topic; and the time of one subscribe call of very many topics.
pub async fn live_memory(size: Size, live_bytes: fn() -> i64) -> Vec<Measurement> {
    let n = size.live_subscribers.max(10);
    // An interval of an hour: nothing flows while memory is read.
    let pool = LivePool::new(PoolConfig::default()).expect("pool");
    pool.add_source(generator("gen", Some(200), Duration::from_secs(3600)))
        .expect("source");
    let options = SubscribeOptions::default();
    let first = subscribe_to(&pool, &["M"], options);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = live_bytes();
    let subs: Vec<_> = (0..n)
        .map(|_| subscribe_to(&pool, &["M"], options))
        .collect();
    let per_subscriber = (live_bytes() - before) as f64 / n as f64;
    drop(subs);
    drop(first);

    let before = live_bytes();
    let channels: Vec<_> = (0..n)
        .map(|_| tokio::sync::mpsc::channel::<(Arc<str>, RecordBatch)>(options.queue_capacity))
        .collect();
    let mpsc = (live_bytes() - before) as f64 / n as f64;
    drop(channels);

    let topics = size.live_topics;
    let names: Vec<String> = (0..topics).map(|t| format!("P{t:05}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let before = live_bytes();
    let all = subscribe_to(&pool, &refs, options);
    // The connection tasks subscribe upstream in the background.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let per_topic = (live_bytes() - before) as f64 / topics as f64;
    drop(all);

    let before = live_bytes();
    let broadcasts: Vec<_> = (0..topics)
        .map(|_| tokio::sync::broadcast::channel::<RecordBatch>(16))
        .collect();
    let broadcast = (live_bytes() - before) as f64 / topics as f64;
    drop(broadcasts);

    // One call with very many topics: how long it takes, beside putting
    // their names in a set (the least a pool does with them), and the
    // memory per topic at that size.
    let many = size.subscribe_topics;
    let names: Vec<String> = (0..many).map(|t| format!("S{t:07}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let before = live_bytes();
    let started = Instant::now();
    let all = subscribe_to(&pool, &refs, options);
    let subscribing = started.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let per_topic_many = (live_bytes() - before) as f64 / many as f64;
    drop(all);
    let started = Instant::now();
    let set: HashSet<Arc<str>> = refs.iter().map(|t| Arc::from(*t)).collect();
    let collecting = started.elapsed();
    drop(set);

    let row = |metric: String, ours: f64, baseline: f64| {
        Measurement::figure("live_memory", metric, ours, baseline, "bytes")
    };
    vec![
        Measurement::figure(
            "live_memory",
            format!("subscribe {many} topics in one call (baseline: their names into a HashSet)"),
            subscribing.as_secs_f64() * 1e3,
            collecting.as_secs_f64() * 1e3,
            "ms",
        ),
        row(
            format!(
                "heap per topic carried, {many} topics in one subscription (baseline: {topics})"
            ),
            per_topic_many,
            per_topic,
        ),
        row(
            format!(
                "heap per subscriber of a carried topic, {n} subscribers (baseline: tokio mpsc channel of {} per subscriber)",
                options.queue_capacity
            ),
            per_subscriber,
            mpsc,
        ),
        row(
            format!(
                "heap per topic carried, {topics} topics incl. registry, route, assignment and upstream state (baseline: tokio broadcast channel of 16 per topic)"
            ),
            per_topic,
            broadcast,
        ),
    ]
}

/// Messages of `rows` tick rows each: one object when `rows` is 1, else an
/// array of objects.
fn tick_messages(messages: usize, rows: usize) -> Vec<String> {
    let tick = |n: usize| {
        format!(
            r#"{{"topic":"S{:03}","seq":{n},"price":{}.25,"volume":{},"ts":{}}}"#,
            n % FANOUT_TOPICS,
            100 + n % 50,
            1 + n % 9,
            1_796_000_000_000_000u64 + n as u64
        )
    };
    (0..messages)
        .map(|m| {
            let first = m * rows;
            if rows == 1 {
                tick(first)
            } else {
                let all: Vec<String> = (first..first + rows).map(tick).collect();
                format!("[{}]", all.join(","))
            }
        })
        .collect()
}

/// A WebSocket upstream on 127.0.0.1 that sends `messages` to each
/// connection it accepts, as fast as the socket takes them, then closes.
async fn blasting_upstream(messages: Arc<Vec<String>>) -> (String, JoinHandle<()>) {
    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("ws://{}", listener.local_addr().expect("address"));
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                continue;
            };
            for text in messages.iter() {
                if ws.feed(Message::text(text.as_str())).await.is_err() {
                    break;
                }
            }
            let _ = ws.close(None).await;
        }
    });
    (url, task)
}

/// Messages/s and rows/s through the WebSocket source (arrow-json's decoder
/// reading each message's bytes) beside the same messages read from the
/// same kind of socket and decoded as the source did before: parsed into a
/// `serde_json::Value`, looked at for an `"op"` key, serialised into
/// arrow-json's decoder.
pub async fn ws_decode(size: Size) -> Vec<Measurement> {
    use datafusion::arrow::json::ReaderBuilder;
    use futures::StreamExt;
    use tenantfusion_live::{WebSocketConfig, WebSocketSource, tick_schema};
    use tokio_tungstenite::tungstenite::Message;

    let mut figures = Vec::new();
    for (rows, shape) in [(1, "one-row objects"), (100, "100-row arrays")] {
        let count = (size.ws_messages / rows).max(1);
        let messages = Arc::new(tick_messages(count, rows));
        let (url, server) = blasting_upstream(Arc::clone(&messages)).await;

        let source = WebSocketSource::new(WebSocketConfig::new("bench", &url, tick_schema()))
            .expect("source");
        let started = Instant::now();
        let mut connection = source.connect().await.expect("connect");
        let mut ours = 0;
        loop {
            match connection.next_event().await.expect("next event") {
                Upstream::Rows(batch) => ours += batch.num_rows(),
                Upstream::Closed => break,
                other => panic!("the bench's messages are rows: {other:?}"),
            }
        }
        let ours_secs = started.elapsed().as_secs_f64();

        let started = Instant::now();
        let (mut socket, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .expect("connect");
        let mut decoder = ReaderBuilder::new(tick_schema())
            .build_decoder()
            .expect("decoder");
        let mut base = 0;
        while let Some(Ok(message)) = socket.next().await {
            let Message::Text(text) = message else {
                continue;
            };
            let value: serde_json::Value = serde_json::from_slice(text.as_bytes()).expect("json");
            if value.get("op").is_some() {
                continue;
            }
            let values = match value {
                serde_json::Value::Array(values) => values,
                one => vec![one],
            };
            decoder.serialize(&values).expect("serialize");
            base += decoder.flush().expect("flush").map_or(0, |b| b.num_rows());
        }
        let base_secs = started.elapsed().as_secs_f64();
        server.abort();
        assert_eq!(
            (ours, base),
            (count * rows, count * rows),
            "every row, both ways"
        );

        let what = format!(
            "{count} messages of {shape} over a WebSocket on 127.0.0.1 (baseline: each parsed into a serde_json::Value first)"
        );
        figures.push(Measurement::figure(
            "ws_decode",
            format!("messages per second, {what}"),
            count as f64 / ours_secs,
            count as f64 / base_secs,
            "msg/s",
        ));
    }
    figures
}
