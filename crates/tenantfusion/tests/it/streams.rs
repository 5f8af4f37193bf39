//! Stream tables fed by the live pool: one ring per topic shared by every
//! reader, topics held upstream on demand, live queries on topics, and an
//! end-to-end run against a real WebSocket upstream that drops connections.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::Int64Type;
use datafusion::catalog::TableProvider;
use datafusion::common::ScalarValue;
use tenantfusion::{
    ChangeEvent, Engine, EngineConfig, LiveQuery, Role, TenantSession, UserContext,
};
use tenantfusion_tables::{PartitionKey, StreamTableProvider};

use crate::common::{admin, column_values, count, eventually, run, user};
use tenantfusion_test_support::upstream::{Command, WsUpstream};

/// An engine whose upstream topics linger `linger` after their last live query.
async fn engine_with(linger: Duration) -> Engine {
    let engine = Engine::new(EngineConfig::default().with_stream_linger(linger)).unwrap();
    let admin = admin(&engine);
    for sql in [
        "CREATE NAMESPACE m",
        "CREATE USER 'alice'",
        "CREATE USER 'bob'",
    ] {
        run(&admin, sql).await;
    }
    engine
}

/// [`engine_with`] and its admin session, with source `gen`: the generator
/// ticking every 5 ms.
async fn with_generator(linger: Duration) -> (Engine, TenantSession) {
    let engine = engine_with(linger).await;
    let admin = admin(&engine);
    run(
        &admin,
        "CREATE SOURCE gen TYPE generator WITH (INTERVAL_MS = 5)",
    )
    .await;
    (engine, admin)
}

/// Topics the pool holds upstream now.
fn held(engine: &Engine) -> BTreeSet<String> {
    engine
        .live_pool()
        .map(|pool| {
            pool.snapshot()
                .topics
                .iter()
                .map(|t| t.topic.to_string())
                .collect()
        })
        .unwrap_or_default()
}

async fn next(live: &mut LiveQuery) -> ChangeEvent {
    tokio::time::timeout(Duration::from_secs(20), live.recv())
        .await
        .expect("an event within 20 s")
        .expect("no error")
        .expect("the query is running")
}

/// Waits until `session` reads rows of two topics of `m.ticks`.
async fn rows_of_both_topics(session: &TenantSession) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while count(session, "SELECT count(DISTINCT symbol) FROM m.ticks").await < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "rows of both topics within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

const TICKS: &str = "CREATE STREAM TABLE m.ticks \
    (symbol TEXT NOT NULL, seq BIGINT, price DOUBLE, volume BIGINT, ts TIMESTAMP) \
    WITH (SOURCE = 'gen', TOPIC_COLUMN = 'symbol', TTL_SECONDS = 60, MAX_ROWS_PER_TOPIC = 1000";

#[tokio::test]
async fn a_thousand_readers_share_one_ring_per_topic() {
    let (engine, admin) = with_generator(Duration::from_millis(100)).await;
    run(&admin, &format!("{TICKS}, TOPICS = 'AAPL,MSFT')")).await;
    assert_eq!(
        held(&engine),
        BTreeSet::from(["AAPL".into(), "MSFT".into()])
    );
    let alice = user(&engine, "alice");
    rows_of_both_topics(&alice).await;
    // A pinned topic reads only that topic's ring.
    let only = run(&alice, "SELECT symbol FROM m.ticks WHERE symbol = 'MSFT'").await;
    assert!(column_values(&only, "symbol").iter().all(|s| s == "MSFT"));

    let provider = engine.schema_cache().get_provider("m", "ticks").unwrap();
    let table = (provider.as_ref() as &dyn TableProvider)
        .downcast_ref::<StreamTableProvider>()
        .unwrap();
    let cache_before = engine.schema_cache().provider_count();
    // Freeze the rows so every reader sees the same ones, then let 1,000
    // users read them: still one ring per topic, and the batches they get
    // are the ring's own buffers, not copies.
    run(
        &admin,
        "ALTER STREAM TABLE m.ticks DROP TOPICS ('AAPL', 'MSFT')",
    )
    .await;
    eventually("topics released", || held(&engine).is_empty()).await;
    let mut buffers = BTreeSet::new();
    for n in 0..1000 {
        let reader = engine.session(UserContext::new(format!("reader{n}"), Role::User));
        let batches = run(&reader, "SELECT * FROM m.ticks WHERE symbol = 'AAPL'").await;
        assert!(!batches.is_empty());
        for batch in &batches {
            let seq = batch.column(1).as_primitive::<Int64Type>();
            buffers.insert(seq.values().as_ptr() as usize);
        }
    }
    assert_eq!(table.store().partition_count(), 2, "one ring per topic");
    assert_eq!(engine.schema_cache().provider_count(), cache_before);
    let aapl = PartitionKey::Topic("AAPL".into());
    let ring_batches = table.store().read(&aapl).await.unwrap();
    assert_eq!(
        buffers.len(),
        ring_batches.len(),
        "1,000 readers got the ring's {} batches, not copies",
        ring_batches.len()
    );
}

#[tokio::test]
async fn a_topic_bound_to_a_generic_plan_reads_that_topic_alone() {
    let (engine, admin) = with_generator(Duration::from_millis(100)).await;
    run(&admin, &format!("{TICKS}, TOPICS = 'AAPL,MSFT')")).await;
    let alice = user(&engine, "alice");
    rows_of_both_topics(&alice).await;
    run(
        &admin,
        "ALTER STREAM TABLE m.ticks DROP TOPICS ('AAPL', 'MSFT')",
    )
    .await;
    eventually("topics released", || held(&engine).is_empty()).await;
    // The generic plan's scan reads every ring until a run's value is put
    // in; then it reads that topic's ring alone, as the planned query does.
    let find = alice
        .prepare("SELECT symbol, seq FROM m.ticks WHERE symbol = $1 ORDER BY seq")
        .await
        .unwrap();
    let text = |topic: &str| {
        format!("SELECT symbol, seq FROM m.ticks WHERE symbol = '{topic}' ORDER BY seq")
    };
    for (run_number, topic) in ["AAPL", "MSFT", "AAPL", "MSFT", "NONE", "AAPL"]
        .into_iter()
        .enumerate()
    {
        for query in [
            find.execute(vec![ScalarValue::from(topic)]).await.unwrap(),
            // The same as text: its literal is taken out as a parameter.
            alice.sql(&text(topic)).await.unwrap(),
        ] {
            assert_eq!(query.from_cache(), run_number >= 2, "run {run_number}");
            let plan = query.plan().expect("a plan").clone();
            let shown = datafusion::physical_plan::displayable(plan.as_ref())
                .indent(true)
                .to_string();
            assert!(shown.contains(&format!("topics=[{topic}]")), "{shown}");
            let got = query.collect().await.unwrap();
            // A cast keeps the literal in the text: planned for its value.
            let sql = format!(
                "SELECT symbol, seq FROM m.ticks WHERE symbol = CAST('{topic}' AS TEXT) ORDER BY seq"
            );
            let planned = run(&alice, &sql).await;
            assert_eq!(
                column_values(&got, "seq"),
                column_values(&planned, "seq"),
                "{topic}"
            );
            let symbols = column_values(&got, "symbol");
            assert!(symbols.iter().all(|s| s == topic), "{topic}: {symbols:?}");
            assert_eq!(symbols.is_empty(), topic == "NONE", "{topic}");
        }
    }
}

#[tokio::test]
async fn live_queries_hold_their_topics_upstream_until_they_leave() {
    let linger = Duration::from_millis(300);
    let (engine, admin) = with_generator(linger).await;
    run(&admin, &format!("{TICKS})")).await;
    assert!(
        held(&engine).is_empty(),
        "nothing is held before it is needed"
    );

    let (alice, bob) = (user(&engine, "alice"), user(&engine, "bob"));
    let mut a = alice
        .subscribe("SUBSCRIBE TO m.ticks WHERE symbol = 'IBM' AND price > 0")
        .await
        .unwrap();
    let mut b = bob
        .subscribe("SUBSCRIBE TO m.ticks WHERE symbol IN ('IBM', 'SAP')")
        .await
        .unwrap();
    assert_eq!(held(&engine), BTreeSet::from(["IBM".into(), "SAP".into()]));
    assert!(matches!(next(&mut a).await, ChangeEvent::Snapshot(_)));
    assert!(matches!(next(&mut b).await, ChangeEvent::Snapshot(_)));
    let mut seen_a = BTreeSet::new();
    let mut seen_b = BTreeSet::new();
    while seen_b.len() < 2 || seen_a.is_empty() {
        for (live, seen) in [(&mut a, &mut seen_a), (&mut b, &mut seen_b)] {
            if let Ok(Some(ChangeEvent::Insert(rows))) = live.try_recv() {
                seen.extend(column_values(&[rows], "symbol"));
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(seen_a, BTreeSet::from(["IBM".to_string()]));
    assert_eq!(
        seen_b,
        BTreeSet::from(["IBM".to_string(), "SAP".to_string()])
    );
    assert_eq!(
        column_values(
            &run(
                &admin,
                "SELECT topics FROM system.live_subscriptions ORDER BY id"
            )
            .await,
            "topics"
        ),
        ["IBM", "IBM,SAP"]
    );

    // SAP's only reader leaves: it lingers, then goes; IBM stays for alice.
    drop(b);
    assert!(
        held(&engine).contains("SAP"),
        "released at once, not after the linger"
    );
    eventually("SAP released after the linger", || {
        held(&engine) == BTreeSet::from(["IBM".into()])
    })
    .await;
    // Back within the linger: the topic is kept, not resubscribed.
    drop(a);
    let connects = || engine.live_pool().unwrap().snapshot().sources[0].connects;
    let before = connects();
    let mut again = alice
        .subscribe("SUBSCRIBE TO m.ticks WHERE symbol = 'IBM'")
        .await
        .unwrap();
    tokio::time::sleep(linger * 2).await;
    assert!(held(&engine).contains("IBM"));
    assert_eq!(connects(), before);
    assert!(matches!(next(&mut again).await, ChangeEvent::Snapshot(rows) if !rows.is_empty()));
    drop(again);
    eventually("IBM released", || held(&engine).is_empty()).await;
    // Dropping the table releases declared topics too.
    run(&admin, "ALTER STREAM TABLE m.ticks ADD TOPICS ('X')").await;
    assert!(held(&engine).contains("X"));
    run(&admin, "DROP TABLE m.ticks").await;
    eventually("X released with its table", || held(&engine).is_empty()).await;
}

#[tokio::test]
async fn a_private_stream_table_refuses_users_and_user_fed_streams_stay_per_user() {
    let (engine, admin) = with_generator(Duration::from_millis(50)).await;
    run(&admin, &format!("{TICKS}, ACCESS_LEVEL = 'private')")).await;
    let alice = user(&engine, "alice");
    let err = alice
        .subscribe("SUBSCRIBE TO m.ticks WHERE symbol = 'IBM'")
        .await
        .unwrap_err();
    assert_eq!(err.code(), "PERMISSION_DENIED");
    assert!(
        held(&engine).is_empty(),
        "a refused query holds nothing upstream"
    );

    run(
        &admin,
        "CREATE STREAM TABLE m.events (body TEXT) WITH (MAX_ROWS_PER_USER = 2)",
    )
    .await;
    let bob = user(&engine, "bob");
    let mut a = alice.subscribe("SUBSCRIBE TO m.events").await.unwrap();
    let mut b = bob.subscribe("SUBSCRIBE TO m.events").await.unwrap();
    assert!(matches!(next(&mut a).await, ChangeEvent::Snapshot(r) if r.is_empty()));
    assert!(matches!(next(&mut b).await, ChangeEvent::Snapshot(r) if r.is_empty()));
    run(&alice, "INSERT INTO m.events VALUES ('a1')").await;
    run(&bob, "INSERT INTO m.events VALUES ('b1')").await;
    match next(&mut a).await {
        ChangeEvent::Insert(rows) => assert_eq!(column_values(&[rows], "body"), ["a1"]),
        other => panic!("{other:?}"),
    }
    match next(&mut b).await {
        ChangeEvent::Insert(rows) => assert_eq!(column_values(&[rows], "body"), ["b1"]),
        other => panic!("{other:?}"),
    }
    assert!(a.try_recv().unwrap().is_none());
}

#[tokio::test]
async fn websocket_upstream_to_sql_and_a_live_query_through_a_dropped_connection() {
    let upstream = WsUpstream::start(200).await;
    let engine = engine_with(Duration::from_millis(100)).await;
    let admin = admin(&engine);
    run(
        &admin,
        &format!(
            "CREATE SOURCE feed TYPE websocket WITH (URL = '{}', SCHEMA = 'ticks', SEQUENCE_COLUMN = 'seq')",
            upstream.url()
        ),
    )
    .await;
    run(
        &admin,
        "CREATE STREAM TABLE m.quotes (symbol TEXT NOT NULL, seq BIGINT, price DOUBLE, ts TIMESTAMP) \
         WITH (SOURCE = 'feed', TOPIC_COLUMN = 'symbol', TTL_SECONDS = 60)",
    )
    .await;
    let alice = user(&engine, "alice");
    let mut live = alice
        .subscribe("SUBSCRIBE TO m.quotes WHERE symbol = 'AAPL'")
        .await
        .unwrap();
    assert!(matches!(next(&mut live).await, ChangeEvent::Snapshot(_)));
    let mut last_seq = 0;
    let mut receive = async |live: &mut LiveQuery, until: i64| {
        while last_seq < until {
            if let ChangeEvent::Insert(rows) = next(live).await {
                assert!(
                    column_values(std::slice::from_ref(&rows), "symbol")
                        .iter()
                        .all(|s| s == "AAPL")
                );
                let seq = rows.column(1).as_primitive::<Int64Type>();
                last_seq = last_seq.max(seq.values().iter().copied().max().unwrap_or(0));
            }
        }
        last_seq
    };
    let first = receive(&mut live, 1).await;
    assert_eq!(upstream.carried().keys().collect::<Vec<_>>(), ["AAPL"]);
    assert!(
        count(
            &alice,
            "SELECT count(*) FROM m.quotes WHERE symbol = 'AAPL'"
        )
        .await
            > 0
    );
    assert_eq!(
        column_values(
            &run(&alice, "SELECT DISTINCT symbol FROM m.quotes").await,
            "symbol"
        ),
        ["AAPL"]
    );

    // The upstream drops the connection: the pool reconnects and the live
    // query keeps receiving, 40 ticks (200 ms) past where it was.
    upstream.command(1, Command::Drop);
    eventually("a second connection", || {
        upstream
            .state
            .accepted
            .load(std::sync::atomic::Ordering::SeqCst)
            >= 2
    })
    .await;
    let after = receive(&mut live, first + 40).await;
    assert!(after >= first + 40);
    let interruptions = engine
        .live_pool()
        .unwrap()
        .snapshot()
        .topic("AAPL")
        .unwrap()
        .interruptions;
    assert!(interruptions >= 1, "the pool saw the loss");

    drop(live);
    eventually("AAPL unsubscribed upstream", || {
        upstream.carried().is_empty()
    })
    .await;
    let _ = Arc::clone(&engine.live_pool().unwrap());
}

#[tokio::test]
async fn rows_that_do_not_fit_the_table_are_counted_not_stored() {
    let (_engine, admin) = with_generator(Duration::from_millis(50)).await;
    // Tick numbers do not fit a TINYINT: the cast gives NULL, which the
    // NOT NULL column refuses.
    run(
        &admin,
        "CREATE STREAM TABLE m.tiny (symbol TEXT NOT NULL, seq TINYINT NOT NULL) \
         WITH (SOURCE = 'gen', TOPIC_COLUMN = 'symbol', TOPICS = 'IBM')",
    )
    .await;
    let rejected = async || {
        let batches = run(
            &admin,
            "SELECT rows_rejected FROM system.live_sources WHERE name = 'gen'",
        )
        .await;
        column_values(&batches, "rows_rejected")[0]
            .parse::<u64>()
            .unwrap()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while rejected().await == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no rejection counted"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(count(&admin, "SELECT count(*) FROM m.tiny").await, 0);
    // The generator speaks only for the topics it carries.
    let foreign = run(
        &admin,
        "SELECT foreign_rows FROM system.live_sources WHERE name = 'gen'",
    )
    .await;
    assert_eq!(column_values(&foreign, "foreign_rows"), ["0"]);
}
