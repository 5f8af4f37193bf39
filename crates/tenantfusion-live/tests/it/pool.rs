//! The pool over generator sources: sharing, caps, failover, gaps, idle
//! connections, slow consumers, health and errors.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::AsArray;
use arrow::datatypes::UInt64Type;
use tenantfusion_live::*;

use crate::support::{Received, SEQ, eventually, flowing_again, receive_until, subscribe_all};

fn generator(name: &str, cap: Option<usize>, interval_ms: u64) -> Arc<GeneratorSource> {
    Arc::new(GeneratorSource::new(GeneratorConfig {
        name: name.into(),
        max_topics_per_connection: cap,
        interval: Duration::from_millis(interval_ms),
        seed: 1,
    }))
}

fn quick_config() -> PoolConfig {
    PoolConfig {
        maintenance_interval: Duration::from_millis(20),
        backoff: Backoff {
            initial: Duration::from_millis(20),
            max: Duration::from_millis(200),
            multiplier: 2.0,
        },
        ..PoolConfig::default()
    }
}

fn topics(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("T{i:04}")).collect()
}

fn request<'a>(topics: &'a [&'a str]) -> Request<'a> {
    Request {
        topics,
        ..Request::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_shared_and_packed_under_the_cap() {
    let pool = LivePool::new(quick_config()).unwrap();
    pool.add_source(generator("gen", Some(200), 20)).unwrap();
    let all = topics(1_000);
    let mut everything = subscribe_all(&pool, None, &all);
    // Two more subscribers on topics already carried: no new connection.
    let mut a = pool
        .subscribe(&request(&["T0001", "T0002"]), SubscribeOptions::default())
        .unwrap();
    let mut b = pool
        .subscribe(&request(&["T0002", "T0999"]), SubscribeOptions::default())
        .unwrap();
    let snapshot = pool.snapshot();
    assert_eq!(
        snapshot.source("gen").unwrap().connections,
        5,
        "ceil(1000 / 200)"
    );
    assert_eq!(snapshot.source("gen").unwrap().topics, 1_000);
    assert!(snapshot.connections.iter().all(|c| c.topics == 200));
    assert_eq!(snapshot.topic("T0002").unwrap().subscribers, 3);

    // Every topic flows to the subscriber of everything.
    let mut received = Received::default();
    receive_until(&mut everything, &mut received, |r| r.seqs.len() == 1_000).await;
    // a and b see only their topics; T0002's batch is the same memory for both.
    let mut seen_a = BTreeSet::new();
    let mut shared = None;
    while seen_a.len() < 2 {
        if let Some(LiveEvent::Rows { topic, batch }) = a.recv().await.unwrap() {
            if &*topic == "T0002" {
                shared = Some(batch.clone());
            }
            seen_a.insert(topic.to_string());
        }
    }
    assert_eq!(
        seen_a,
        BTreeSet::from(["T0001".to_string(), "T0002".to_string()])
    );
    let shared = shared.unwrap();
    let first_seq = shared.column(SEQ).as_primitive::<UInt64Type>().value(0);
    loop {
        let Some(LiveEvent::Rows { topic, batch }) = b.recv().await.unwrap() else {
            continue;
        };
        assert!(["T0002", "T0999"].contains(&&*topic));
        if &*topic == "T0002"
            && batch.column(SEQ).as_primitive::<UInt64Type>().value(0) == first_seq
        {
            assert!(
                std::ptr::eq(
                    batch.column(SEQ).to_data().buffers()[0].as_ptr(),
                    shared.column(SEQ).to_data().buffers()[0].as_ptr()
                ),
                "fan-out shares the batch, it does not copy it per subscriber"
            );
            break;
        }
        if &*topic == "T0002" && batch.column(SEQ).as_primitive::<UInt64Type>().value(0) > first_seq
        {
            panic!("b missed the batch a received");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_connections_are_rebuilt_and_every_missed_message_is_a_counted_gap() {
    let pool = LivePool::new(quick_config()).unwrap();
    let source = generator("gen", Some(10), 5);
    pool.add_source(source.clone()).unwrap();
    let names = topics(50);
    let mut sub = subscribe_all(&pool, None, &names);
    // One subscriber per topic as well: none may be forgotten.
    let mut singles: Vec<Subscription> = names
        .chunks(1)
        .map(|one| subscribe_all(&pool, None, one))
        .collect();
    let mut received = Received::default();
    receive_until(&mut sub, &mut received, |r| r.seqs.len() == 50).await;
    eventually("5 connections up", || {
        pool.snapshot()
            .connections
            .iter()
            .filter(|c| c.connected)
            .count()
            == 5
    })
    .await;

    assert_eq!(source.drop_connections(2), 2);
    eventually("both losses noticed", || {
        pool.snapshot().source("gen").unwrap().lost == 2
    })
    .await;
    // Everything flows again: every topic gets ticks newer than any seen so far.
    flowing_again(&mut sub, &mut received, 10).await;

    let snapshot = pool.snapshot();
    let stats = snapshot.source("gen").unwrap();
    assert_eq!(stats.connections, 5, "the lost connections were rebuilt");
    assert_eq!(stats.connects, 7);
    assert_eq!(snapshot.connections.len(), 5);
    assert!(
        snapshot
            .connections
            .iter()
            .all(|c| c.topics == 10 && c.connected)
    );
    let interrupted = snapshot
        .topics
        .iter()
        .filter(|t| t.interruptions == 1)
        .count();
    assert_eq!(interrupted, 20, "two connections of ten topics each");
    assert_eq!(snapshot.topics.len(), 50);
    assert!(
        snapshot.topics.iter().all(|t| t.subscribers == 2),
        "every subscriber is still subscribed"
    );
    // No message was lost outside the reported gaps, and none came twice:
    // per topic, the sequence numbers received plus the gap are exactly the
    // range from the first to the last.
    received.drain(&mut sub, SEQ);
    for topic in &snapshot.topics {
        let seqs = &received.seqs[&*topic.topic];
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "{}: out of order or duplicated",
            topic.topic
        );
        let span = seqs.last().unwrap() - seqs.first().unwrap() + 1;
        // The gap counter may already include ticks delivered after our drain.
        let gaps_in_span = span - seqs.len() as u64;
        assert!(
            gaps_in_span <= topic.gaps,
            "{}: {} missing, {} reported",
            topic.topic,
            gaps_in_span,
            topic.gaps
        );
        if topic.interruptions == 0 {
            assert_eq!(
                gaps_in_span, 0,
                "{}: gaps without an interruption",
                topic.topic
            );
        }
    }
    assert_eq!(received.lagged, 0);
    // The single-topic subscribers still receive, each only its topic.
    for single in &mut singles {
        let expected = single.topics()[0].clone();
        let Some(LiveEvent::Rows { topic, .. }) = single.recv().await.unwrap() else {
            panic!()
        };
        assert_eq!(topic, expected);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribing_releases_topics_and_idle_connections_close_above_the_minimum() {
    let pool = LivePool::new(PoolConfig {
        idle_timeout: Duration::from_millis(100),
        min_connections: 1,
        ..quick_config()
    })
    .unwrap();
    let source = generator("gen", Some(2), 10);
    pool.add_source(source.clone()).unwrap();
    eventually("the minimum connection is opened", || {
        source.open_connections() == 1
    })
    .await;
    let a = pool
        .subscribe(&request(&["A", "B", "C"]), SubscribeOptions::default())
        .unwrap();
    let b = pool
        .subscribe(&request(&["C", "D"]), SubscribeOptions::default())
        .unwrap();
    eventually("two connections", || source.open_connections() == 2).await;
    assert_eq!(pool.snapshot().source("gen").unwrap().topics, 4);
    drop(a);
    let snapshot = pool.snapshot();
    assert_eq!(snapshot.source("gen").unwrap().topics, 2, "C stays for b");
    assert!(snapshot.topic("A").is_none());
    assert_eq!(snapshot.topic("C").unwrap().subscribers, 1);
    drop(b);
    assert_eq!(pool.snapshot().source("gen").unwrap().topics, 0);
    eventually("idle connections close down to the minimum", || {
        source.open_connections() == 1
    })
    .await;
    assert_eq!(pool.snapshot().source("gen").unwrap().connections, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_subscriber_to_one_topic_of_a_wide_batch_keeps_only_its_rows_alive() {
    let pool = LivePool::new(quick_config()).unwrap();
    pool.add_source(generator("gen", None, 50)).unwrap();
    // 1,000 topics on one connection: every tick is one upstream batch of
    // 1,000 rows (about 40 KB), each topic's row a slice of it.
    let all = topics(1_000);
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    let mut everything = pool
        .subscribe(&request(&refs), SubscribeOptions::default())
        .unwrap();
    let stalled = pool
        .subscribe(
            &request(&["T0007"]),
            SubscribeOptions {
                queue_capacity: 64,
                ..SubscribeOptions::default()
            },
        )
        .unwrap();
    let Some(LiveEvent::Rows { batch, .. }) = everything.recv().await.unwrap() else {
        panic!("rows first")
    };
    let whole = batch.get_array_memory_size();
    assert!(whole > 20_000, "{whole}");
    eventually("the stalled queue fills", || stalled.stats().queued == 64).await;
    // Zero-copy slices of 64 batches would keep 64 x `whole` alive for 64
    // rows; the queue keeps PINNED_BATCHES of them and copied the rest out.
    let stats = stalled.stats();
    assert!(
        stats.queued_bytes <= PINNED_BATCHES * whole + 64 * 1024,
        "{stats:?}, batches of {whole}"
    );
    assert!(stats.queued_bytes * 4 < 64 * whole, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_subscriber_to_every_topic_of_a_wide_batch_is_not_copied_for() {
    let pool = LivePool::new(quick_config()).unwrap();
    pool.add_source(generator("gen", None, 5)).unwrap();
    let all = topics(1_000);
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    let mut reader = pool
        .subscribe(&request(&refs), SubscribeOptions::default())
        .unwrap();
    let stalled = pool
        .subscribe(
            &request(&refs),
            SubscribeOptions {
                queue_capacity: 40_000,
                ..SubscribeOptions::default()
            },
        )
        .unwrap();
    let Some(LiveEvent::Rows { batch, .. }) = reader.recv().await.unwrap() else {
        panic!("rows first")
    };
    let whole = batch.get_array_memory_size();
    eventually("the stalled queue holds 30 batches", || {
        stalled.stats().queued >= 30_000
    })
    .await;
    // Past PINNED_BATCHES, the first COPIES_PER_BATCH slices of each batch
    // are copied and the other 984 pin it, counted once. Copying all 1,000
    // (each a one-row batch of its own) would be done on the delivery path
    // every subscriber waits on, and hold far more than the batch.
    let stats = stalled.stats();
    let batches = stats.queued.div_ceil(1_000) + 1;
    assert!(
        stats.queued_bytes <= batches * (whole + COPIES_PER_BATCH * 2_048),
        "{stats:?}, batches of {whole} bytes"
    );
    drop(reader);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_subscriber_loses_its_oldest_messages_and_holds_no_one_back() {
    let pool = LivePool::new(quick_config()).unwrap();
    pool.add_source(generator("gen", None, 2)).unwrap();
    let options = SubscribeOptions {
        queue_capacity: 8,
        slow_consumer: SlowConsumer::DropOldest,
        ..SubscribeOptions::default()
    };
    let mut stalled = pool.subscribe(&request(&["X"]), options).unwrap();
    let mut disconnecting = pool
        .subscribe(
            &request(&["X"]),
            SubscribeOptions {
                queue_capacity: 8,
                slow_consumer: SlowConsumer::Disconnect,
                ..SubscribeOptions::default()
            },
        )
        .unwrap();
    // 99 readers that keep up, each in its own task, read 50 deliveries
    // while `stalled` reads nothing.
    let readers: Vec<_> = (0..99)
        .map(|_| {
            let mut reader = pool
                .subscribe(&request(&["X"]), SubscribeOptions::default())
                .unwrap();
            tokio::spawn(async move {
                let mut received = Received::default();
                receive_until(&mut reader, &mut received, |r| {
                    r.seqs.get("X").is_some_and(|s| s.len() >= 50)
                })
                .await;
                (received, reader)
            })
        })
        .collect();
    let mut kept = Vec::new();
    for reader in readers {
        let (received, subscription) = reader.await.unwrap();
        assert_eq!(received.lagged, 0, "a reader that keeps up loses nothing");
        let seqs = &received.seqs["X"];
        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "contiguous");
        kept.push(subscription);
    }
    let stats = stalled.stats();
    assert_eq!(stats.queued, 8, "the stalled queue is bounded");
    assert!(stats.dropped > 0);
    let Some(LiveEvent::Lagged { missed }) = stalled.recv().await.unwrap() else {
        panic!("the lag is reported first")
    };
    assert!(missed >= stats.dropped);
    assert!(matches!(
        stalled.recv().await.unwrap(),
        Some(LiveEvent::Rows { .. })
    ));
    // The disconnecting one was dropped from the pool, and says why.
    assert_eq!(
        disconnecting.recv().await.unwrap_err().code(),
        "SLOW_CONSUMER"
    );
    eventually("the disconnected subscriber is removed", || {
        pool.snapshot().topic("X").unwrap().subscribers == 100
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_that_refuses_hands_its_topics_to_another_of_its_kind_and_gets_them_back() {
    let fail_back_after = Duration::from_millis(500);
    let pool = LivePool::new(PoolConfig {
        strategy: Strategy::Priority,
        failover_after: 2,
        health_interval: Duration::from_millis(50),
        breaker: BreakerConfig {
            cool_down: Duration::from_millis(100),
            ..BreakerConfig::default()
        },
        fail_back_after: Some(fail_back_after),
        ..quick_config()
    })
    .unwrap();
    let primary = Arc::new(
        GeneratorSource::new(GeneratorConfig {
            name: "primary".into(),
            interval: Duration::from_millis(5),
            ..Default::default()
        })
        .with_balancing(1, 0),
    );
    let backup = Arc::new(
        GeneratorSource::new(GeneratorConfig {
            name: "backup".into(),
            interval: Duration::from_millis(5),
            ..Default::default()
        })
        .with_balancing(1, 1),
    );
    pool.add_source(primary.clone()).unwrap();
    pool.add_source(backup.clone()).unwrap();
    let wanted = Request {
        kind: Some(SourceKind::Generator),
        topics: &["A", "B"],
        ..Request::default()
    };
    let mut sub = pool
        .subscribe(&wanted, SubscribeOptions::default())
        .unwrap();
    assert_eq!(
        pool.snapshot().topic("A").unwrap().source,
        "primary",
        "priority 0 first"
    );
    let mut received = Received::default();
    receive_until(&mut sub, &mut received, |r| r.seqs.len() == 2).await;

    primary.refuse_connections(true);
    primary.drop_connections(usize::MAX);
    eventually("the topics moved to the backup", || {
        let s = pool.snapshot();
        s.topic("A").unwrap().source == "backup" && s.topic("B").unwrap().source == "backup"
    })
    .await;
    flowing_again(&mut sub, &mut received, 5).await;
    let snapshot = pool.snapshot();
    assert!(snapshot.source("primary").unwrap().connect_failures >= 2);
    assert_eq!(snapshot.source("primary").unwrap().topics, 0);
    assert_eq!(snapshot.source("backup").unwrap().topics, 2);

    // While the primary refuses (its health checks fail), they stay away.
    tokio::time::sleep(fail_back_after * 2).await;
    assert_eq!(pool.snapshot().source("backup").unwrap().topics, 2);
    // Healthy again: back once it has passed its checks for fail_back_after.
    let healed = std::time::Instant::now();
    primary.refuse_connections(false);
    eventually("the topics came back to the primary", || {
        let s = pool.snapshot();
        s.topic("A").unwrap().source == "primary" && s.topic("B").unwrap().source == "primary"
    })
    .await;
    assert!(
        healed.elapsed() >= fail_back_after,
        "not before fail_back_after"
    );
    flowing_again(&mut sub, &mut received, 5).await;
    let snapshot = pool.snapshot();
    assert_eq!(snapshot.source("backup").unwrap().topics, 0);
    assert!(snapshot.topic("A").unwrap().interruptions >= 2);
    for seqs in received.seqs.values() {
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "no row twice");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_source_hands_its_topics_over_or_is_kept() {
    let pool = LivePool::new(PoolConfig {
        strategy: Strategy::Priority,
        ..quick_config()
    })
    .unwrap();
    let first = Arc::new(
        GeneratorSource::new(GeneratorConfig {
            name: "first".into(),
            interval: Duration::from_millis(5),
            ..Default::default()
        })
        .with_balancing(1, 0),
    );
    pool.add_source(first.clone()).unwrap();
    pool.add_source(generator("second", None, 5)).unwrap();
    let names = topics(3);
    let mut sub = subscribe_all(&pool, None, &names);
    let mut received = Received::default();
    receive_until(&mut sub, &mut received, |r| r.seqs.len() == 3).await;
    assert_eq!(pool.snapshot().topic("T0000").unwrap().source, "first");

    pool.remove_source("first").unwrap();
    let snapshot = pool.snapshot();
    assert!(snapshot.source("first").is_none());
    assert!(snapshot.topics.iter().all(|t| t.source == "second"));
    flowing_again(&mut sub, &mut received, 5).await;
    eventually("the removed source's connection is closed", || {
        first.open_connections() == 0
    })
    .await;

    // The last source of its kind is kept while it carries topics.
    let err = pool.remove_source("second").unwrap_err();
    assert_eq!(err.code(), "INVALID_ARGUMENT");
    assert!(err.to_string().contains("3 topic(s)"), "{err}");
    flowing_again(&mut sub, &mut received, 5).await;
    assert_eq!(
        pool.remove_source("first").unwrap_err().code(),
        "PROVIDER_NOT_FOUND"
    );
    drop(sub);
    pool.remove_source("second").unwrap();
    assert!(pool.snapshot().sources.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_health_checks_open_the_breaker_and_requests_are_refused() {
    let pool = LivePool::new(PoolConfig {
        health_interval: Duration::from_millis(20),
        breaker: BreakerConfig {
            failure_threshold: 2,
            cool_down: Duration::from_secs(60),
            ..BreakerConfig::default()
        },
        ..quick_config()
    })
    .unwrap();
    let source = generator("gen", None, 10);
    pool.add_source(source.clone()).unwrap();
    eventually("a healthy check", || {
        pool.snapshot().source("gen").unwrap().health_checks >= 1
    })
    .await;
    let s = pool.snapshot();
    assert_eq!(s.source("gen").unwrap().breaker, BreakerState::Closed);
    assert!(s.source("gen").unwrap().last_check_latency.is_some());
    source.refuse_connections(true);
    eventually("the breaker opens", || {
        pool.snapshot().source("gen").unwrap().breaker == BreakerState::Open
    })
    .await;
    assert!(pool.snapshot().source("gen").unwrap().error_rate > 0.0);
    let err = pool
        .subscribe(&request(&["A"]), SubscribeOptions::default())
        .unwrap_err();
    assert_eq!(err.code(), "NO_HEALTHY_PROVIDER", "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_above_the_threshold_gives_topics_to_an_emptier_one() {
    let pool = LivePool::new(quick_config()).unwrap();
    pool.add_source(generator("gen", Some(10), 5)).unwrap();
    let names = topics(11);
    let mut sub = subscribe_all(&pool, None, &names);
    eventually("rebalanced to 8 + 3", || {
        let mut loads: Vec<usize> = pool
            .snapshot()
            .connections
            .iter()
            .map(|c| c.topics)
            .collect();
        loads.sort();
        loads == [3, 8]
    })
    .await;
    let mut received = Received::default();
    let start = 0;
    receive_until(&mut sub, &mut received, |r| {
        r.seqs.len() == 11 && r.seqs.values().all(|s| s.len() > 20 + start)
    })
    .await;
    received.drain(&mut sub, SEQ);
    for (topic, seqs) in &received.seqs {
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "{topic}: a moved topic is never delivered twice"
        );
    }
}

#[tokio::test]
async fn bad_requests_sources_and_settings_are_refused_with_codes() {
    let pool = LivePool::new(PoolConfig::default()).unwrap();
    pool.add_source(generator("gen", None, 10)).unwrap();
    let code = |r: Result<Subscription, tenantfusion_live::LiveError>| r.unwrap_err().code();
    assert_eq!(
        code(pool.subscribe(&request(&[]), SubscribeOptions::default())),
        "INVALID_ARGUMENT"
    );
    assert_eq!(
        code(pool.subscribe(&request(&[""]), SubscribeOptions::default())),
        "INVALID_ARGUMENT"
    );
    let named = Request {
        name: Some("nope"),
        topics: &["A"],
        ..Request::default()
    };
    let err = pool
        .subscribe(&named, SubscribeOptions::default())
        .unwrap_err();
    assert_eq!(err.code(), "PROVIDER_NOT_FOUND");
    assert!(
        err.to_string().contains("gen (generator)"),
        "names what exists: {err}"
    );
    let kind = Request {
        kind: Some(SourceKind::Stomp),
        topics: &["A"],
        ..Request::default()
    };
    assert_eq!(
        code(pool.subscribe(&kind, SubscribeOptions::default())),
        "PROVIDER_NOT_FOUND"
    );
    let batch = Request {
        topics: &["A"],
        batch_subscribe: true,
        ..Request::default()
    };
    assert!(pool.subscribe(&batch, SubscribeOptions::default()).is_ok());
    // A failed subscribe leaves nothing behind.
    assert_eq!(pool.snapshot().subscribers.len(), 0);

    assert_eq!(
        pool.add_source(generator("gen", None, 10))
            .unwrap_err()
            .code(),
        "INVALID_ARGUMENT"
    );
    for (key, config) in [
        (
            "rebalance_threshold",
            PoolConfig {
                rebalance_threshold: 1.5,
                ..PoolConfig::default()
            },
        ),
        (
            "min_connections",
            PoolConfig {
                min_connections: 3,
                max_connections: Some(2),
                ..PoolConfig::default()
            },
        ),
        (
            "idle_timeout",
            PoolConfig {
                idle_timeout: Duration::ZERO,
                ..PoolConfig::default()
            },
        ),
        (
            "connect_timeout",
            PoolConfig {
                connect_timeout: Duration::ZERO,
                ..PoolConfig::default()
            },
        ),
        (
            "request_timeout",
            PoolConfig {
                request_timeout: Duration::ZERO,
                ..PoolConfig::default()
            },
        ),
        (
            "sequence_window",
            PoolConfig {
                sequence_window: 0,
                ..PoolConfig::default()
            },
        ),
    ] {
        let err = LivePool::new(config).unwrap_err();
        assert_eq!(err.code(), "INVALID_CONFIG");
        assert!(err.to_string().contains(key), "{err}");
    }
    pool.shutdown();
    assert_eq!(
        code(pool.subscribe(&request(&["A"]), SubscribeOptions::default())),
        "INVALID_ARGUMENT"
    );
}

#[tokio::test]
async fn lenient_validation_settles_for_a_partial_match_and_says_so() {
    // A REST source polling one topic per request cannot batch subscribe.
    let mut one_by_one = RestConfig::new("r", "http://127.0.0.1:1", "/q/{topics}", tick_schema());
    one_by_one.topics_per_request = 1;
    let wants_batches = Request {
        topics: &["A", "B"],
        batch_subscribe: true,
        ..Request::default()
    };
    let strict = LivePool::new(PoolConfig::default()).unwrap();
    strict
        .add_source(Arc::new(RestSource::new(one_by_one.clone()).unwrap()))
        .unwrap();
    let err = strict
        .subscribe(&wants_batches, SubscribeOptions::default())
        .unwrap_err();
    assert_eq!(err.code(), "CAPABILITY_MISMATCH");
    assert!(err.to_string().contains("batch"), "{err}");

    let lenient = LivePool::new(PoolConfig {
        validation: Validation::Lenient,
        ..PoolConfig::default()
    })
    .unwrap();
    lenient
        .add_source(Arc::new(RestSource::new(one_by_one).unwrap()))
        .unwrap();
    let sub = lenient
        .subscribe(&wants_batches, SubscribeOptions::default())
        .unwrap();
    assert!(
        sub.warning().is_some_and(|w| w.contains("batch")),
        "{:?}",
        sub.warning()
    );
    // Topics already carried need no choice, hence no warning.
    let again = lenient
        .subscribe(
            &Request {
                topics: &["A"],
                ..wants_batches.clone()
            },
            SubscribeOptions::default(),
        )
        .unwrap();
    assert_eq!(again.warning(), None);
}

#[tokio::test]
async fn shutting_down_ends_subscriptions() {
    let pool = LivePool::new(PoolConfig::default()).unwrap();
    pool.add_source(generator("gen", None, 10)).unwrap();
    let mut sub = pool
        .subscribe(&request(&["A"]), SubscribeOptions::default())
        .unwrap();
    drop(pool);
    // Whatever was queued, then the end.
    while let Some(event) = sub.recv().await.unwrap() {
        assert!(matches!(event, LiveEvent::Rows { .. }));
    }
}
