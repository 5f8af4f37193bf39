//! The STOMP source against a real RabbitMQ broker with its STOMP plugin,
//! started on 127.0.0.1 by `scripts/rabbitmq.sh` (which installs it where
//! it is missing) and stopped when the test ends.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tenantfusion_live::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{Received, SEQ, eventually};

const STOMP: &str = "127.0.0.1:61623";

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/rabbitmq.sh")
}

async fn rabbitmq(action: &'static str) {
    let status = tokio::task::spawn_blocking(move || Command::new(script()).arg(action).status())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "scripts/rabbitmq.sh {action} failed");
}

/// Stops the broker when the test ends, passed or not.
struct Broker;

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = Command::new(script()).arg("stop").status();
    }
}

/// A plain STOMP client that publishes rows.
struct Publisher(TcpStream);

impl Publisher {
    async fn connect() -> Self {
        let mut stream = TcpStream::connect(STOMP).await.unwrap();
        stream
            .write_all(b"CONNECT\naccept-version:1.2\nhost:/\nlogin:guest\npasscode:guest\n\n\0")
            .await
            .unwrap();
        let mut reply = Vec::new();
        while !reply.contains(&0) {
            let mut chunk = [0u8; 1024];
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the broker closed the publisher");
            reply.extend_from_slice(&chunk[..n]);
        }
        assert!(
            reply.starts_with(b"CONNECTED"),
            "{}",
            String::from_utf8_lossy(&reply)
        );
        Self(stream)
    }

    async fn send(&mut self, topic: &str, body: &str) {
        let frame = format!(
            "SEND\ndestination:/topic/{topic}\ncontent-type:application/json\ncontent-length:{}\n\n{body}\0",
            body.len()
        );
        self.0.write_all(frame.as_bytes()).await.unwrap();
    }

    async fn tick(&mut self, topic: &str, seq: u64) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros() as u64;
        let row = json!({"topic": topic, "seq": seq, "price": 10.0, "volume": 1, "ts": now});
        self.send(topic, &row.to_string()).await;
    }
}

/// A publisher and a subscription to the same topics.
struct Feed<'a> {
    publisher: Publisher,
    sub: Subscription,
    topics: &'a [&'a str],
    received: Received,
    seq: u64,
}

impl Feed<'_> {
    /// Publishes a new tick of every topic every 50 ms until each has been
    /// received with a number above those published before the call;
    /// panics after `limit`.
    async fn flowing(&mut self, limit: Duration) {
        let above = self.seq;
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let done = self.topics.iter().all(|t| {
                let last = self.received.seqs.get(*t).and_then(|s| s.last());
                last.is_some_and(|l| *l > above)
            });
            if done {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "nothing received within {limit:?}: {:?}",
                self.received.seqs
            );
            self.seq += 1;
            for topic in self.topics {
                self.publisher.tick(topic, self.seq).await;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            self.received.drain(&mut self.sub, SEQ);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_delivers_and_a_broker_restart_resubscribes_everything() {
    rabbitmq("start").await;
    let _broker = Broker;
    let pool = LivePool::new(PoolConfig {
        maintenance_interval: Duration::from_millis(100),
        backoff: Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
            multiplier: 2.0,
        },
        breaker: BreakerConfig {
            cool_down: Duration::from_millis(500),
            ..BreakerConfig::default()
        },
        ..PoolConfig::default()
    })
    .unwrap();
    let mut config = StompConfig::new("rabbit", STOMP, tick_schema());
    config.source.max_topics_per_connection = Some(2);
    config.source.sequence_column = Some("seq".into());
    config.source.timestamp_column = Some("ts".into());
    config.heartbeat = Duration::from_secs(1);
    pool.add_source(Arc::new(StompSource::new(config).unwrap()))
        .unwrap();
    let topics = ["ticks.A", "ticks.B", "ticks.C"];
    let request = Request {
        kind: Some(SourceKind::Stomp),
        topics: &topics,
        ..Request::default()
    };
    let sub = pool
        .subscribe(&request, SubscribeOptions::default())
        .unwrap();
    // Only ticks.B, for a second subscriber.
    let mut only_b = pool
        .subscribe(
            &Request {
                topics: &["ticks.B"],
                ..request.clone()
            },
            SubscribeOptions::default(),
        )
        .unwrap();

    let mut feed = Feed {
        publisher: Publisher::connect().await,
        sub,
        topics: &topics,
        received: Received::default(),
        seq: 0,
    };
    feed.flowing(Duration::from_secs(30)).await;
    let snapshot = pool.snapshot();
    assert_eq!(
        snapshot.source("rabbit").unwrap().connections,
        2,
        "3 topics at 2 per connection"
    );
    assert_eq!(snapshot.source("rabbit").unwrap().connects, 2);
    let Some(LiveEvent::Rows { topic, .. }) = only_b.recv().await.unwrap() else {
        panic!()
    };
    assert_eq!(&*topic, "ticks.B");

    // A message that is not rows is counted and skipped; the connection stays.
    feed.publisher.send("ticks.A", "not json").await;
    eventually("the malformed message is counted", || {
        pool.snapshot().source("rabbit").unwrap().malformed == 1
    })
    .await;
    feed.flowing(Duration::from_secs(30)).await;
    assert_eq!(pool.snapshot().source("rabbit").unwrap().lost, 0);

    // Restart the broker: both connections are lost, rebuilt, and every
    // topic is subscribed again without anyone asking.
    rabbitmq("stop").await;
    eventually("both connections lost", || {
        pool.snapshot().source("rabbit").unwrap().lost >= 2
    })
    .await;
    rabbitmq("start").await;
    feed.publisher = Publisher::connect().await;
    feed.flowing(Duration::from_secs(60)).await;
    let snapshot = pool.snapshot();
    let rabbit = snapshot.source("rabbit").unwrap();
    assert!(rabbit.connects >= 4, "{rabbit:?}");
    assert_eq!(rabbit.connections, 2);
    assert_eq!(
        snapshot.subscribers.len(),
        2,
        "every subscriber still subscribed"
    );
    assert_eq!(snapshot.topic("ticks.B").unwrap().subscribers, 2);
    // Ticks published while the broker was down were never seen: whatever
    // the subscriber missed of the numbering is in the reported gaps.
    feed.received.drain(&mut feed.sub, SEQ);
    for topic in topics {
        let seqs = &feed.received.seqs[topic];
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "{topic}: duplicated or out of order"
        );
        let missing = seqs.last().unwrap() - seqs.first().unwrap() + 1 - seqs.len() as u64;
        assert!(
            missing <= snapshot.topic(topic).unwrap().gaps,
            "{topic}: {missing} missing"
        );
    }
}
