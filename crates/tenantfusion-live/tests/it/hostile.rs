//! Hostile upstreams on 127.0.0.1: what one source sends cannot reach, or
//! silence, the topics another source carries.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tenantfusion_live::*;
use tenantfusion_test_support::upstream::{Command, WsUpstream};

use crate::support::{self, Received, eventually, flowing_again, receive_until};

fn source(name: &str, upstream: &WsUpstream) -> Arc<WebSocketSource> {
    let mut config = WebSocketConfig::new(name, upstream.url(), tick_schema());
    config.source.sequence_column = Some("seq".into());
    Arc::new(WebSocketSource::new(config).unwrap())
}

/// A subscription to `topics` on the source named `name`.
fn subscribe(pool: &LivePool, name: &str, topics: &[&str]) -> Subscription {
    let request = Request {
        name: Some(name),
        topics,
        ..Request::default()
    };
    let options = SubscribeOptions {
        queue_capacity: 1_000_000,
        ..Default::default()
    };
    pool.subscribe(&request, options).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_cannot_feed_or_silence_a_topic_another_source_carries() {
    let evil = WsUpstream::start(200).await;
    let good = WsUpstream::start(200).await;
    let pool = LivePool::new(PoolConfig {
        maintenance_interval: Duration::from_millis(50),
        ..PoolConfig::default()
    })
    .unwrap();
    pool.add_source(source("a-evil", &evil)).unwrap();
    pool.add_source(source("b-good", &good)).unwrap();
    let mut honest = subscribe(&pool, "b-good", &["HONEST"]);
    let _own = subscribe(&pool, "a-evil", &["EVIL"]);
    let mut received = Received::default();
    receive_until(&mut honest, &mut received, |r| {
        r.seqs.contains_key("HONEST")
    })
    .await;
    eventually("a-evil carries its topic", || {
        pool.snapshot()
            .topic("EVIL")
            .is_some_and(|t| t.messages > 0)
    })
    .await;

    // a-evil sends a row for HONEST with the largest number there is.
    evil.command(
        1,
        Command::Inject {
            topic: "HONEST",
            seq: u64::MAX,
        },
    );
    eventually("the foreign row is counted", || {
        pool.snapshot().source("a-evil").unwrap().foreign_rows == 1
    })
    .await;
    // HONEST goes on: its later rows are not taken for duplicates.
    flowing_again(&mut honest, &mut received, 5).await;
    let seqs = &received.seqs["HONEST"];
    assert!(!seqs.contains(&u64::MAX), "a-evil's row reached HONEST");
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    let topic = pool.snapshot().topic("HONEST").cloned().unwrap();
    assert_eq!((topic.duplicates, topic.jumps), (0, 0), "{topic:?}");

    // The carrier's own corrupt number: delivered and counted, and it
    // moves no mark either.
    good.command(
        1,
        Command::Inject {
            topic: "HONEST",
            seq: u64::MAX,
        },
    );
    eventually("the jump is counted", || {
        pool.snapshot().topic("HONEST").unwrap().jumps == 1
    })
    .await;
    receive_until(&mut honest, &mut received, |r| {
        r.seqs["HONEST"].contains(&u64::MAX)
    })
    .await;
    let seqs = &received.seqs["HONEST"];
    let at = seqs.iter().position(|s| *s == u64::MAX).unwrap();
    let before = seqs[..at].last().copied().unwrap_or(0);
    receive_until(&mut honest, &mut received, |r| {
        r.seqs["HONEST"]
            .last()
            .is_some_and(|l| *l != u64::MAX && *l > before + 5)
    })
    .await;
    assert_eq!(pool.snapshot().source("b-good").unwrap().foreign_rows, 0);
}

/// A pool that gives up on an upstream quickly: connects and requests
/// within `limit`, failover after two failed connects.
fn impatient(limit: Duration) -> LivePool {
    LivePool::new(PoolConfig {
        maintenance_interval: Duration::from_millis(50),
        connect_timeout: limit,
        request_timeout: limit,
        failover_after: 2,
        backoff: Backoff {
            initial: Duration::from_millis(20),
            max: Duration::from_millis(100),
            multiplier: 2.0,
        },
        ..PoolConfig::default()
    })
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_never_answers_the_handshake_fails_over_at_the_deadline() {
    // Accepts TCP and says nothing, ever.
    let mute = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/feed", mute.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut sockets = Vec::new();
        while let Ok((socket, _)) = mute.accept().await {
            sockets.push(socket);
        }
    });
    let good = WsUpstream::start(200).await;
    let pool = impatient(Duration::from_millis(200));
    let mut config = WebSocketConfig::new("a-mute", url, tick_schema());
    config.source.sequence_column = Some("seq".into());
    pool.add_source(Arc::new(WebSocketSource::new(config).unwrap()))
        .unwrap();
    pool.add_source(source("b-good", &good)).unwrap();
    let mut sub = subscribe(&pool, "a-mute", &["T1"]);
    let mut received = Received::default();
    receive_until(&mut sub, &mut received, |r| r.seqs.contains_key("T1")).await;
    let snapshot = pool.snapshot();
    let mute = snapshot.source("a-mute").unwrap();
    assert!(mute.connect_failures >= 2, "{mute:?}");
    support::assert_last_error(&pool, "a-mute", "no connection within");
    assert_eq!(snapshot.topic("T1").unwrap().source, "b-good");
    held.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_stops_reading_cannot_hold_a_subscribe_forever() {
    // Completes the handshake, then never reads: a subscribe bigger than
    // the sockets' buffers cannot be sent.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let deaf = socket.listen(16).unwrap();
    let url = format!("ws://{}/feed", deaf.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut streams = Vec::new();
        while let Ok((socket, _)) = deaf.accept().await {
            if let Ok(ws) = tokio_tungstenite::accept_async(socket).await {
                streams.push(ws);
            }
        }
    });
    let pool = impatient(Duration::from_millis(300));
    let config = WebSocketConfig::new("a-deaf", url, tick_schema());
    pool.add_source(Arc::new(WebSocketSource::new(config).unwrap()))
        .unwrap();
    // About 8 MB of topic names in one subscribe request.
    let names: Vec<String> = (0..120_000).map(|i| format!("{i:064}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let _sub = subscribe(&pool, "a-deaf", &refs);
    eventually("the stuck subscribe ends the connection", || {
        pool.snapshot().source("a-deaf").unwrap().lost >= 1
    })
    .await;
    support::assert_last_error(&pool, "a-deaf", "subscribe not done within");
    held.abort();
}

/// A WebSocket upstream that completes every handshake and closes at once.
async fn flapper() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/feed", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            if let Ok(mut ws) = tokio_tungstenite::accept_async(socket).await {
                let _ = ws.close(None).await;
            }
        }
    });
    (url, task)
}

fn flapping_pool() -> LivePool {
    LivePool::new(PoolConfig {
        maintenance_interval: Duration::from_millis(50),
        min_stable: Duration::from_secs(1),
        failover_after: 3,
        backoff: Backoff {
            initial: Duration::from_millis(50),
            max: Duration::from_secs(1),
            multiplier: 2.0,
        },
        ..PoolConfig::default()
    })
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_drops_every_connection_backs_off_and_fails_over() {
    let logs = support::logs();
    let (url, task) = flapper().await;
    let good = WsUpstream::start(200).await;
    let pool = flapping_pool();
    let config = WebSocketConfig::new("a-flap", url, tick_schema());
    pool.add_source(Arc::new(WebSocketSource::new(config).unwrap()))
        .unwrap();
    pool.add_source(source("b-good", &good)).unwrap();
    let mut sub = subscribe(&pool, "a-flap", &["T1"]);
    let mut received = Received::default();
    receive_until(&mut sub, &mut received, |r| r.seqs.contains_key("T1")).await;
    let snapshot = pool.snapshot();
    assert_eq!(snapshot.topic("T1").unwrap().source, "b-good");
    let flap = snapshot.source("a-flap").unwrap();
    // Three unstable connections (failover_after), then the topics moved;
    // not the dozens a second of before.
    assert!((3..=5).contains(&flap.connects), "{flap:?}");
    // Said in the log as it happened: losses, the breaker, the failover.
    let text = logs();
    let lines: Vec<&str> = text.lines().filter(|l| l.contains("a-flap")).collect();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("WARN") && l.contains("connection lost")),
        "{text}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("failing over") && l.contains("to=\"b-good\"")),
        "{text}"
    );
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_nowhere_to_go_a_dropping_upstream_is_retried_ever_more_slowly() {
    let (url, task) = flapper().await;
    let pool = flapping_pool();
    let config = WebSocketConfig::new("a-flap", url, tick_schema());
    pool.add_source(Arc::new(WebSocketSource::new(config).unwrap()))
        .unwrap();
    let _sub = subscribe(&pool, "a-flap", &["T1"]);
    eventually("the first losses", || {
        pool.snapshot().source("a-flap").unwrap().lost >= 2
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Backoff from 50 ms doubling to 1 s: a handful of connects in those
    // seconds, where each loss used to restart at the first attempt
    // (36-40 reconnects a second).
    let flap = pool.snapshot().source("a-flap").cloned().unwrap();
    assert!(flap.connects <= 10, "{flap:?}");
    assert_eq!(flap.topics, 1, "the topic stays wanted: {flap:?}");
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rest_answer_that_never_ends_is_cut_at_the_body_limit() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Announces 100 MB and sends 64 KiB every 10 ms, for ever.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = [0u8; 4096];
                if tcp.read(&mut request).await.unwrap_or(0) == 0 {
                    return;
                }
                let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                            Content-Length: 104857600\r\n\r\n[";
                if tcp.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = vec![b' '; 64 << 10];
                while tcp.write_all(&chunk).await.is_ok() {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            });
        }
    });
    let pool = LivePool::new(PoolConfig::default()).unwrap();
    let mut config = RestConfig::new("a-flood", url, "/quotes?symbols={topics}", tick_schema());
    config.poll_interval = Duration::from_millis(100);
    config.max_body_bytes = 1 << 20;
    pool.add_source(Arc::new(RestSource::new(config).unwrap()))
        .unwrap();
    let _sub = subscribe(&pool, "a-flood", &["T1"]);
    eventually("two answers cut and counted", || {
        pool.snapshot().source("a-flood").unwrap().malformed >= 2
    })
    .await;
    // Cut where they passed the limit, not collected until the request's
    // time ran out (which would have lost the connection).
    assert_eq!(pool.snapshot().source("a-flood").unwrap().lost, 0);
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_rest_topic_neither_holds_back_nor_discards_the_others() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // FAST is answered at once; SLOW's answer drips a byte a second.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let mut seq = 0u64;
        while let Ok((mut tcp, _)) = listener.accept().await {
            seq += 1;
            tokio::spawn(async move {
                loop {
                    let mut request = [0u8; 4096];
                    let n = tcp.read(&mut request).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    let head = String::from_utf8_lossy(&request[..n]).to_string();
                    if head.contains("SLOW") {
                        let start = "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n[";
                        let _ = tcp.write_all(start.as_bytes()).await;
                        while tcp.write_all(b" ").await.is_ok() {
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                        return;
                    }
                    seq += 1_000;
                    let body = format!(
                        r#"[{{"topic":"FAST","seq":{seq},"price":1.0,"volume":1,"ts":0}}]"#
                    );
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if tcp.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let pool = LivePool::new(PoolConfig::default()).unwrap();
    let mut config = RestConfig::new("quotes", url, "/q?s={topics}", tick_schema());
    config.source.sequence_column = Some("seq".into());
    config.topics_per_request = 1;
    config.poll_interval = Duration::from_millis(100);
    config.request_timeout = Duration::from_millis(300);
    pool.add_source(Arc::new(RestSource::new(config).unwrap()))
        .unwrap();
    let mut sub = subscribe(&pool, "quotes", &["FAST", "SLOW"]);
    let mut received = Received::default();
    receive_until(&mut sub, &mut received, |r| {
        r.seqs.get("FAST").is_some_and(|s| s.len() >= 3)
    })
    .await;
    let stats = pool.snapshot().source("quotes").cloned().unwrap();
    assert!(
        stats.malformed >= 1,
        "SLOW's missing answers are counted: {stats:?}"
    );
    assert_eq!(stats.lost, 0, "{stats:?}");
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stomp_broker_flooding_while_it_holds_a_receipt_back_is_dropped_at_the_bound() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Answers CONNECT, never sends a RECEIPT, and floods MESSAGE frames.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut read, mut write) = tcp.into_split();
                let mut connect = Vec::new();
                let mut byte = [0u8; 1];
                while read.read_exact(&mut byte).await.is_ok() && byte[0] != 0 {
                    connect.push(byte[0]);
                }
                let connected = b"CONNECTED\nversion:1.2\nheart-beat:0,0\n\n\0";
                if write.write_all(connected).await.is_err() {
                    return;
                }
                tokio::spawn(async move {
                    let mut sink = [0u8; 4096];
                    while read.read(&mut sink).await.is_ok_and(|n| n > 0) {}
                });
                let row = r#"[{"topic":"T1","seq":1,"price":1.0,"volume":1,"ts":0}]"#;
                let body = format!("{row}{}", " ".repeat(64 << 10));
                let frame = format!(
                    "MESSAGE\ndestination:/topic/T1\nsubscription:T1\nmessage-id:1\n\
                     content-length:{}\n\n{body}\0",
                    body.len()
                );
                while write.write_all(frame.as_bytes()).await.is_ok() {}
            });
        }
    });
    let pool = LivePool::new(PoolConfig::default()).unwrap();
    let mut config = StompConfig::new("a-flood", address, tick_schema());
    config.heartbeat = Duration::ZERO;
    config.reply_timeout = Duration::from_secs(10);
    config.max_frame_bytes = 1 << 20;
    pool.add_source(Arc::new(StompSource::new(config).unwrap()))
        .unwrap();
    let _sub = subscribe(&pool, "a-flood", &["T1"]);
    eventually("the connection is dropped at the bound", || {
        pool.snapshot().source("a-flood").unwrap().lost >= 1
    })
    .await;
    // Dropped at the bound, not at a timeout.
    support::assert_last_error(&pool, "a-flood", "while waiting for a reply");
    task.abort();
}

/// A STOMP broker that answers CONNECT and each SUBSCRIBE's receipt, then
/// sends `head` and streams spaces after it for as long as it is read.
/// Counts the bytes it got out.
async fn endless_frame(
    head: &'static str,
) -> (String, Arc<AtomicU64>, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let written = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&written);
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let written = Arc::clone(&counter);
            tokio::spawn(async move {
                let (mut read, mut write) = tcp.into_split();
                loop {
                    let mut frame = Vec::new();
                    let mut byte = [0u8; 1];
                    while read.read_exact(&mut byte).await.is_ok() && byte[0] != 0 {
                        frame.push(byte[0]);
                    }
                    let frame = String::from_utf8_lossy(&frame).trim_start().to_string();
                    let reply = if frame.starts_with("CONNECT") {
                        "CONNECTED\nversion:1.2\nheart-beat:0,0\n\n\0".to_string()
                    } else if let Some(id) = frame.lines().find_map(|l| l.strip_prefix("receipt:"))
                    {
                        format!("RECEIPT\nreceipt-id:{id}\n\n\0")
                    } else {
                        return;
                    };
                    if write.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                    if frame.starts_with("SUBSCRIBE") {
                        break;
                    }
                }
                tokio::spawn(async move {
                    let mut sink = [0u8; 4096];
                    while read.read(&mut sink).await.is_ok_and(|n| n > 0) {}
                });
                if write.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let spaces = vec![b' '; 64 << 10];
                while write.write_all(&spaces).await.is_ok() {
                    written.fetch_add(spaces.len() as u64, Ordering::Relaxed);
                }
            });
        }
    });
    (address, written, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stomp_frame_without_end_is_refused_at_the_bound_and_counted() {
    for (name, head) in [
        (
            "a-huge-length",
            "MESSAGE\ndestination:/topic/T1\nsubscription:T1\nmessage-id:1\n\
             content-length:9223372036854775808\n\n",
        ),
        (
            "a-no-nul",
            "MESSAGE\ndestination:/topic/T1\nsubscription:T1\nmessage-id:1\n\n",
        ),
    ] {
        let (address, written, task) = endless_frame(head).await;
        let pool = LivePool::new(PoolConfig::default()).unwrap();
        let mut config = StompConfig::new(name, address, tick_schema());
        config.heartbeat = Duration::ZERO;
        config.max_frame_bytes = 1 << 20;
        pool.add_source(Arc::new(StompSource::new(config).unwrap()))
            .unwrap();
        let _sub = subscribe(&pool, name, &["T1"]);
        eventually("the frame is counted and its connection dropped", || {
            let source = pool.snapshot().source(name).cloned().unwrap();
            source.malformed >= 1 && source.lost >= 1
        })
        .await;
        support::assert_last_error(&pool, name, "bad frame");
        let source = pool.snapshot().source(name).cloned().unwrap();
        // What the broker got out before we hung up: the bound and the
        // sockets' buffers, not the endless frame (before, every byte was
        // kept).
        let per_connect = written.load(Ordering::Relaxed) / source.connects.max(1);
        assert!(
            per_connect < 16 << 20,
            "{name}: {per_connect} bytes a connection"
        );
        drop(pool);
        task.abort();
    }
}
