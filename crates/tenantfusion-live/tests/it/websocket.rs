//! The WebSocket source against a real WebSocket upstream in the test.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tenantfusion_live::*;

use crate::support::{
    Received, assert_last_error, eventually, flowing_again, receive_until, subscribe_all,
};
use tenantfusion_test_support::upstream::{Command, WsUpstream};

fn source(upstream: &WsUpstream, ping: Duration) -> Arc<WebSocketSource> {
    let mut config = WebSocketConfig::new("feed", upstream.url(), tick_schema());
    config.source.max_topics_per_connection = Some(upstream.cap());
    config.source.sequence_column = Some("seq".into());
    config.source.timestamp_column = Some("ts".into());
    config.ping_interval = ping;
    Arc::new(WebSocketSource::new(config).unwrap())
}

fn pool() -> LivePool {
    LivePool::new(PoolConfig {
        maintenance_interval: Duration::from_millis(50),
        backoff: Backoff {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(500),
            multiplier: 2.0,
        },
        ..PoolConfig::default()
    })
    .unwrap()
}

fn names(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("T{i:04}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_topics_use_five_capped_connections_and_survive_losing_two() {
    let upstream = WsUpstream::start(200).await;
    let pool = pool();
    pool.add_source(source(&upstream, Duration::from_secs(15)))
        .unwrap();
    let all = names(0..1_000);
    let mut everything = subscribe_all(&pool, Some(SourceKind::WebSocket), &all);
    // Ten more subscribers of 100 topics each.
    let tenths: Vec<Subscription> = all
        .chunks(100)
        .map(|c| subscribe_all(&pool, Some(SourceKind::WebSocket), c))
        .collect();
    let mut received = Received::default();
    receive_until(&mut everything, &mut received, |r| r.seqs.len() == 1_000).await;
    assert_eq!(
        upstream.loads(),
        [200; 5],
        "ceil(1000 / 200) connections, each at the cap"
    );
    assert_eq!(
        upstream.state.refused.load(Ordering::SeqCst),
        0,
        "the cap was never exceeded"
    );

    upstream.command(2, Command::Drop);
    eventually("both losses noticed", || {
        pool.snapshot().source("feed").unwrap().lost == 2
    })
    .await;
    flowing_again(&mut everything, &mut received, 5).await;

    eventually("five connections at the upstream again", || {
        upstream.loads().len() == 5
    })
    .await;
    let stats = pool.snapshot().source("feed").cloned().unwrap();
    assert_eq!(stats.connects, 7, "two rebuilt: {stats:?}");
    // Health checks open (and close) connections of their own.
    assert_eq!(
        upstream.state.accepted.load(Ordering::SeqCst),
        7 + stats.health_checks
    );
    let carried = upstream.carried();
    assert_eq!(carried.len(), 1_000, "every topic carried upstream");
    assert!(upstream.loads().iter().all(|n| *n <= 200));
    let snapshot = pool.snapshot();
    assert_eq!(
        snapshot.subscribers.len(),
        11,
        "every subscriber still subscribed"
    );
    assert!(snapshot.topics.iter().all(|t| t.subscribers == 2));
    assert_eq!(
        snapshot
            .topics
            .iter()
            .filter(|t| t.interruptions == 1)
            .count(),
        400
    );
    received.drain(&mut everything, crate::support::SEQ);
    for topic in &snapshot.topics {
        let seqs = &received.seqs[&*topic.topic];
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "{}: duplicated or out of order",
            topic.topic
        );
        let missing = seqs.last().unwrap() - seqs.first().unwrap() + 1 - seqs.len() as u64;
        assert!(
            missing <= topic.gaps,
            "{}: {missing} missed, {} reported",
            topic.topic,
            topic.gaps
        );
    }
    let latency = snapshot.source("feed").unwrap().latency;
    assert!(latency.count > 0 && latency.p50 <= latency.p99 && latency.p99 <= latency.max);
    drop(tenths);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_are_counted_and_skipped_and_the_connection_stays() {
    let upstream = WsUpstream::start(200).await;
    let pool = pool();
    pool.add_source(source(&upstream, Duration::from_secs(15)))
        .unwrap();
    let topics = names(0..3);
    let mut sub = subscribe_all(&pool, Some(SourceKind::WebSocket), &topics);
    let mut received = Received::default();
    receive_until(&mut sub, &mut received, |r| r.seqs.len() == 3).await;
    upstream.command(1, Command::Garble);
    eventually("five malformed messages counted", || {
        pool.snapshot().source("feed").unwrap().malformed == 5
    })
    .await;
    flowing_again(&mut sub, &mut received, 5).await;
    let stats = pool.snapshot();
    assert_eq!(
        stats.source("feed").unwrap().connects,
        1,
        "the connection stayed up"
    );
    assert_eq!(stats.connections[0].malformed, 5);
    assert_eq!(stats.source("feed").unwrap().lost, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_limit_is_counted_and_its_connection_replaced() {
    let upstream = WsUpstream::start(200).await;
    let pool = pool();
    let mut config = WebSocketConfig::new("feed", upstream.url(), tick_schema());
    config.source.sequence_column = Some("seq".into());
    config.max_message_bytes = 1 << 20;
    pool.add_source(Arc::new(WebSocketSource::new(config).unwrap()))
        .unwrap();
    let topics = names(0..3);
    let mut sub = subscribe_all(&pool, Some(SourceKind::WebSocket), &topics);
    let mut received = Received::default();
    receive_until(&mut sub, &mut received, |r| r.seqs.len() == 3).await;
    // 4 MiB in one message: refused from its header (tungstenite checks
    // the announced length before it buffers the payload).
    upstream.command(1, Command::Huge { bytes: 4 << 20 });
    eventually("counted as malformed and the connection replaced", || {
        let source = pool.snapshot().source("feed").cloned().unwrap();
        source.malformed == 1 && source.connects == 2
    })
    .await;
    flowing_again(&mut sub, &mut received, 5).await;
    assert_last_error(&pool, "feed", "max_message_bytes");
    // Half the limit is a message like any other.
    upstream.command(1, Command::Huge { bytes: 1 << 19 });
    flowing_again(&mut sub, &mut received, 5).await;
    let after = pool.snapshot().source("feed").cloned().unwrap();
    assert_eq!((after.malformed, after.connects), (1, 2), "{after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_upstream_is_noticed_by_ping_and_replaced() {
    let upstream = WsUpstream::start(200).await;
    let pool = pool();
    pool.add_source(source(&upstream, Duration::from_millis(100)))
        .unwrap();
    let topics = names(0..2);
    let mut sub = subscribe_all(&pool, Some(SourceKind::WebSocket), &topics);
    let mut received = Received::default();
    receive_until(&mut sub, &mut received, |r| r.seqs.len() == 2).await;
    // The upstream keeps the socket open but stops answering, pongs included.
    upstream.command(1, Command::Stall);
    eventually("the silent connection is declared lost", || {
        pool.snapshot().source("feed").unwrap().lost == 1
    })
    .await;
    flowing_again(&mut sub, &mut received, 5).await;
    let stats = pool.snapshot().source("feed").cloned().unwrap();
    assert_eq!(stats.connects, 2);
    assert_last_error(&pool, "feed", "no frame for two ping intervals");
    assert_eq!(
        upstream.state.accepted.load(Ordering::SeqCst),
        2 + stats.health_checks
    );
}

#[tokio::test]
async fn bad_websocket_settings_name_what_is_wrong() {
    let bad_url = WebSocketSource::new(WebSocketConfig::new(
        "w",
        "http://127.0.0.1:1",
        tick_schema(),
    ))
    .unwrap_err();
    assert_eq!(bad_url.code(), "INVALID_ARGUMENT");
    assert!(bad_url.to_string().contains("ws://"));
    let mut config = WebSocketConfig::new("w", "ws://127.0.0.1:1", tick_schema());
    config.subscribe_message = r#"{"op":"sub"}"#.into();
    let err = WebSocketSource::new(config).unwrap_err();
    assert!(err.to_string().contains("subscribe_message"), "{err}");
    // Nothing listens on port 1: connecting fails with a clear code.
    let source =
        WebSocketSource::new(WebSocketConfig::new("w", "ws://127.0.0.1:1", tick_schema())).unwrap();
    assert_eq!(
        source.connect().await.unwrap_err().code(),
        "UPSTREAM_UNAVAILABLE"
    );
    assert_eq!(
        source.probe().await.unwrap_err().code(),
        "UPSTREAM_UNAVAILABLE"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_waiting_together_are_decoded_together_and_each_keeps_its_fate() {
    use arrow::array::AsArray;
    use arrow::datatypes::UInt64Type;
    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::Message;

    let tick = |seq: u64| format!(r#"{{"topic":"A","seq":{seq},"price":1.5,"volume":2,"ts":10}}"#);
    let mut messages = vec![
        tick(1),
        tick(2),
        tick(3),
        r#"{"topic":"A","seq":"not a number"}"#.to_string(),
        tick(4),
        r#"{"op":"subscribed"}"#.to_string(),
    ];
    // Then more waiting than one burst takes.
    messages.extend((5..=1_000).map(tick));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let (sent, all_sent) = tokio::sync::oneshot::channel();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        for text in messages {
            ws.feed(Message::text(text)).await.unwrap();
        }
        ws.flush().await.unwrap();
        let _ = sent.send(());
        // Closed once the client has read everything.
        let _ = ws.close(None).await;
    });
    let source = WebSocketSource::new(WebSocketConfig::new("feed", url, tick_schema())).unwrap();
    let mut connection = source.connect().await.unwrap();
    // Everything is waiting on the socket before the first read.
    all_sent.await.unwrap();
    let mut events = Vec::new();
    loop {
        match connection.next_event().await.unwrap() {
            Upstream::Closed => break,
            Upstream::Rows(batch) => events.push(Some(
                batch
                    .column(1)
                    .as_primitive::<UInt64Type>()
                    .values()
                    .to_vec(),
            )),
            Upstream::Malformed(_) => events.push(None),
        }
    }
    server.await.unwrap();
    // 1-4 waited together with a row that does not fit: each message on
    // its own, the bad one malformed. The control message ended the burst
    // and carries no rows; 5-1,000 came in batches of at most 256 messages.
    assert_eq!(
        events[..5],
        [
            Some(vec![1]),
            Some(vec![2]),
            Some(vec![3]),
            None,
            Some(vec![4]),
        ]
    );
    let rest: Vec<Vec<u64>> = events[5..].iter().map(|e| e.clone().unwrap()).collect();
    assert!(
        rest.iter().all(|b| b.len() <= 256),
        "{:?}",
        rest.iter().map(Vec::len).collect::<Vec<_>>()
    );
    // All of them were waiting: four bursts (256 x 3 + 228), give or take
    // how the socket hands the bytes over, not one event per message.
    assert!((4..=8).contains(&rest.len()), "{} events", rest.len());
    assert_eq!(rest.concat(), (5..=1_000).collect::<Vec<u64>>());
}
