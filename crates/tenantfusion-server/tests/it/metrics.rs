//! `GET /metrics` of the binary (which installs the Prometheus recorder),
//! read by a Prometheus text parser.

use std::ffi::OsStr;
use std::net::SocketAddr;

use hyper::StatusCode;
use prometheus_parse::{Scrape, Value};
use serde_json::json;

use crate::harness::{Process, free_port, sqlstate};
use crate::web::{Auth, request, sql};

const ALICE: Auth = Auth::Basic("alice", "alice-pw");

async fn scrape(addr: SocketAddr) -> Scrape {
    let answer = request(addr, "GET", "/metrics", &Auth::None, &[], Vec::new())
        .await
        .unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    assert!(
        answer.content_type.starts_with("text/plain"),
        "{}",
        answer.content_type
    );
    let text = String::from_utf8(answer.body.to_vec()).unwrap();
    Scrape::parse(text.lines().map(|line| Ok(line.to_string()))).unwrap()
}

/// The value of `metric` with exactly these labels (0 when absent):
/// a counter's or gauge's value, a histogram's count.
fn value(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(buckets) => buckets.last().map_or(0.0, |b| b.count),
            Value::Summary(_) => 0.0,
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_prometheus_text_and_move_with_statements() {
    let dir = tempfile::tempdir().unwrap();
    let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let listen = http.to_string();
    let server = Process::start_with_args(dir.path(), &[OsStr::new("--http"), OsStr::new(&listen)]);
    let admin = server.connect("admin", "admin-pw").await;
    admin
        .batch_execute(
            "CREATE USER 'alice' WITH PASSWORD 'alice-pw'; CREATE NAMESPACE app; \
             CREATE USER TABLE app.notes (id BIGINT NOT NULL, body TEXT, PRIMARY KEY (id))",
        )
        .await
        .unwrap();
    let before = scrape(http).await;
    let insert_ok = [
        ("protocol", "pgwire"),
        ("kind", "insert"),
        ("outcome", "ok"),
    ];
    let conflict = [
        ("protocol", "pgwire"),
        ("kind", "insert"),
        ("outcome", "PRIMARY_KEY_VIOLATION"),
    ];
    let http_select = [("protocol", "http"), ("kind", "select"), ("outcome", "ok")];

    let alice = server.connect("alice", "alice-pw").await;
    for id in 1..=3 {
        alice
            .execute("INSERT INTO app.notes VALUES ($1, 'x')", &[&(id as i64)])
            .await
            .unwrap();
    }
    let err = alice
        .batch_execute("INSERT INTO app.notes VALUES (1, 'again')")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "23505");
    for _ in 0..3 {
        let answer = sql(http, &ALICE, "SELECT count(*) FROM app.notes", json!([])).await;
        assert_eq!(answer.json()["rows"], json!([[3]]));
    }

    let after = scrape(http).await;
    let moved = |metric: &str, labels: &[(&str, &str)]| {
        value(&after, metric, labels) - value(&before, metric, labels)
    };
    assert_eq!(moved("tenantfusion_statements_total", &insert_ok), 3.0);
    assert_eq!(moved("tenantfusion_statements_total", &conflict), 1.0);
    assert_eq!(moved("tenantfusion_statements_total", &http_select), 3.0);
    assert_eq!(
        moved(
            "tenantfusion_statement_duration_seconds",
            &[("protocol", "pgwire"), ("kind", "insert")]
        ),
        4.0
    );
    // Durable writes: each one commit group, fsynced, at least.
    assert!(moved("tenantfusion_wal_commits_total", &[]) >= 3.0);
    assert!(moved("tenantfusion_wal_records_total", &[]) >= 3.0);
    assert!(value(&after, "tenantfusion_wal_commit_seconds", &[]) >= 3.0);
    // Plans are kept on their second sighting: the third of three
    // identical queries is answered from the cache.
    assert!(moved("tenantfusion_plan_cache_misses_total", &[]) >= 1.0);
    assert!(moved("tenantfusion_plan_cache_hits_total", &[]) >= 1.0);
    assert!(
        value(
            &after,
            "tenantfusion_connections",
            &[("protocol", "pgwire")]
        ) >= 2.0
    );
    assert!(after.docs.contains_key("tenantfusion_statements_total"));
    assert!(
        after
            .docs
            .contains_key("tenantfusion_memory_reserved_bytes")
    );
    // No label holds what a client wrote.
    let garbage = alice.batch_execute("FROBNICATE 'secret words'").await;
    assert!(garbage.is_err());
    let text = String::from_utf8(
        request(http, "GET", "/metrics", &Auth::None, &[], Vec::new())
            .await
            .unwrap()
            .body
            .to_vec(),
    )
    .unwrap();
    assert!(!text.contains("secret") && !text.contains("FROBNICATE"));
}
