//! Hostile upstreams on 127.0.0.1: what one source sends cannot reach, or
//! silence, the topics another source carries.

use std::sync::Arc;
use std::time::Duration;

use tenantfusion_live::*;
use tenantfusion_test_support::upstream::{Command, WsUpstream};

use crate::support::{Received, eventually, flowing_again, receive_until};

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
