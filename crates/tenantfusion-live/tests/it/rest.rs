//! The REST polling source against an HTTP/1.1 server written in the test
//! (keep-alive, a JSON quote endpoint, injectable failures).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;
use tenantfusion_live::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::{Received, eventually, flowing_again, receive_until, subscribe_all};

/// Tick of the quotes, in microseconds.
const TICK_US: u64 = 10_000;

#[derive(Default)]
struct HttpState {
    connections: AtomicU64,
    requests: AtomicU64,
    /// Answers still to fail with a 500.
    fail: AtomicU64,
}

async fn serve_http() -> (String, Arc<HttpState>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let state = Arc::new(HttpState::default());
    let shared = Arc::clone(&state);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            shared.connections.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(keep_alive(tcp, Arc::clone(&shared)));
        }
    });
    (url, state)
}

/// Answers requests on one connection until the client closes it.
async fn keep_alive(mut tcp: TcpStream, state: Arc<HttpState>) {
    let mut buffer = Vec::new();
    loop {
        let end = loop {
            if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break end;
            }
            let mut chunk = [0u8; 4096];
            match tcp.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buffer[..end]).to_string();
        buffer.drain(..end + 4);
        state.requests.fetch_add(1, Ordering::SeqCst);
        let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
        let failing = state
            .fail
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        let (status, body) = if failing {
            ("500 Internal Server Error", "oops".to_string())
        } else {
            ("200 OK", quotes(&path))
        };
        let response = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if tcp.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// `/quotes?symbols=A,B`: the current tick of each symbol.
fn quotes(path: &str) -> String {
    let symbols = path.split_once("symbols=").map_or("", |(_, s)| s);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64;
    let tick = now / TICK_US;
    let rows: Vec<_> = symbols
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| json!({"topic": s, "seq": tick, "price": 1.5, "volume": 3, "ts": tick * TICK_US}))
        .collect();
    serde_json::Value::Array(rows).to_string()
}

fn source(url: &str, rate: Option<u32>) -> Arc<RestSource> {
    let mut config = RestConfig::new("quotes", url, "/quotes?symbols={topics}", tick_schema());
    config.poll_interval = Duration::from_millis(20);
    config.topics_per_request = 50;
    config.max_requests_per_second = rate;
    config.source.sequence_column = Some("seq".into());
    config.source.timestamp_column = Some("ts".into());
    Arc::new(RestSource::new(config).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_batches_topics_over_kept_alive_connections() {
    let (url, http) = serve_http().await;
    let pool = LivePool::new(PoolConfig::default()).unwrap();
    pool.add_source(source(&url, None)).unwrap();
    let topics: Vec<String> = (0..120).map(|i| format!("Q{i:03}")).collect();
    let mut sub = subscribe_all(&pool, Some(SourceKind::Rest), &topics);
    let mut received = Received::default();
    receive_until(&mut sub, &mut received, |r| {
        r.seqs.len() == 120 && r.seqs.values().all(|s| s.len() >= 3)
    })
    .await;
    // 120 topics at 50 a request: 3 requests a round, over few connections.
    let requests = http.requests.load(Ordering::SeqCst);
    let connections = http.connections.load(Ordering::SeqCst);
    assert!(requests >= 9, "{requests}");
    assert!(
        connections <= 3,
        "keep-alive reuses connections: {connections} for {requests} requests"
    );
    // Polling faster than the quotes change would repeat them: repeats are dropped.
    received.drain(&mut sub, crate::support::SEQ);
    for (topic, seqs) in &received.seqs {
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "{topic}: a quote delivered twice"
        );
    }

    // Failing answers are counted and skipped; polling goes on.
    http.fail.store(3, Ordering::SeqCst);
    eventually("three failed answers counted", || {
        pool.snapshot().source("quotes").unwrap().malformed == 3
    })
    .await;
    flowing_again(&mut sub, &mut received, 2).await;
    assert_eq!(pool.snapshot().source("quotes").unwrap().lost, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_holds_however_many_topics_are_polled() {
    let (url, http) = serve_http().await;
    let pool = LivePool::new(PoolConfig::default()).unwrap();
    // 500 topics at 50 a request every 20 ms would be 500 requests a second.
    pool.add_source(source(&url, Some(40))).unwrap();
    let topics: Vec<String> = (0..500).map(|i| format!("R{i:03}")).collect();
    let started = tokio::time::Instant::now();
    let mut sub = subscribe_all(&pool, Some(SourceKind::Rest), &topics);
    let mut received = Received::default();
    receive_until(&mut sub, &mut received, |r| r.seqs.len() == 500).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let elapsed = started.elapsed().as_secs_f64();
    let requests = http.requests.load(Ordering::SeqCst);
    // A burst of 40, then 40 a second (+1 for the connect probe).
    let most = 40.0 + 40.0 * elapsed + 1.0;
    assert!(
        (requests as f64) <= most,
        "{requests} requests in {elapsed:.2} s"
    );
    assert!(requests >= 10, "{requests}");
}

#[tokio::test]
async fn bad_rest_settings_and_dead_upstreams_are_reported() {
    let mut config = RestConfig::new("q", "https://example.com", "/x/{topics}", tick_schema());
    assert!(
        RestSource::new(config.clone())
            .unwrap_err()
            .to_string()
            .contains("base_url")
    );
    config.base_url = "http://127.0.0.1:1".into();
    config.topics_per_request = 0;
    assert!(
        RestSource::new(config.clone())
            .unwrap_err()
            .to_string()
            .contains("topics_per_request")
    );
    config.topics_per_request = 5;
    config.request_timeout = Duration::from_secs(2);
    let source = RestSource::new(config).unwrap();
    assert_eq!(
        source.connect().await.unwrap_err().code(),
        "UPSTREAM_UNAVAILABLE"
    );
}
