//! Noisy neighbours: one tenant's statement over its memory, time or
//! concurrency limits fails alone, and everybody else keeps working.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tenantfusion::{Engine, EngineConfig, ManualClock, StatementLimits, TenantError};

use crate::common::{admin, count, engine_on, error_code, run, user};

const MIB: usize = 1 << 20;

/// `app.big` with 3,000 rows of alice's and a few of bob's.
async fn big(limits: StatementLimits, engine_memory: usize) -> Engine {
    let engine = engine_on(
        EngineConfig::default()
            .with_memory_limit(engine_memory)
            .with_statement_limits(limits),
    )
    .await;
    run(
        &admin(&engine),
        "CREATE TABLE app.big (id BIGINT NOT NULL, body TEXT)",
    )
    .await;
    run(
        &user(&engine, "alice"),
        "INSERT INTO app.big SELECT value, 'body-' || value FROM generate_series(1, 3000)",
    )
    .await;
    run(
        &user(&engine, "bob"),
        "INSERT INTO app.big VALUES (1, 'b1'), (2, 'b2')",
    )
    .await;
    engine
}

/// Gathers every value of a 3,000 x 3,000 cross join into one array: about
/// 9 million strings, far over a few MiB, and not an operator that spills.
const HOG: &str = "SELECT array_agg(a.body || b.body) FROM app.big a CROSS JOIN app.big b";

/// Counts up for ever, one row a round: only a limit stops it.
const ENDLESS: &str =
    "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT n FROM r";

/// 9 million rows streamed, the 3,000 of one side held in memory meanwhile.
const LONG: &str = "SELECT a.id, b.id FROM app.big a CROSS JOIN app.big b";

/// Waits for the engine's pool to be empty again: a plan's tasks let go
/// of their memory as they stop, which can be just after its stream ended.
async fn freed(engine: &Engine, what: &str) {
    crate::common::eventually(what, || engine.memory_reserved() == 0).await;
}

async fn fails_with(session: &tenantfusion::TenantSession, sql: &str) -> TenantError {
    let query = match session.sql(sql).await {
        Ok(query) => query,
        Err(err) => return err,
    };
    let mut stream = match query.execute_stream() {
        Ok(stream) => stream,
        Err(err) => return err,
    };
    while let Some(batch) = stream.next().await {
        if let Err(err) = batch {
            return TenantError::from(err);
        }
    }
    panic!("{sql}: expected an error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_over_its_memory_limit_fails_alone_and_frees_what_it_held() {
    let limits = StatementLimits {
        memory: Some(MIB),
        ..StatementLimits::default()
    };
    let engine = Arc::new(big(limits, 64 * MIB).await);
    let attacker = {
        let engine = Arc::clone(&engine);
        tokio::spawn(async move {
            let alice = user(&engine, "alice");
            let mut codes = Vec::new();
            for _ in 0..5 {
                codes.push(fails_with(&alice, HOG).await.code());
            }
            codes
        })
    };
    // Bob's statements run while alice's fail, and all succeed.
    let bob = user(&engine, "bob");
    for _ in 0..50 {
        assert_eq!(count(&bob, "SELECT count(*) FROM app.big").await, 2);
    }
    let codes = attacker.await.unwrap();
    assert_eq!(codes, ["RESOURCES_EXHAUSTED"; 5]);
    freed(&engine, "nothing held after the failures").await;
    // The same statement within the engine's pool but without a statement
    // limit fails on the engine's limit, and alice's small ones still run.
    let engine = big(StatementLimits::default(), 2 * MIB).await;
    let alice = user(&engine, "alice");
    assert_eq!(fails_with(&alice, HOG).await.code(), "RESOURCES_EXHAUSTED");
    assert_eq!(count(&alice, "SELECT count(*) FROM app.big").await, 3000);
    freed(&engine, "the statement ended").await;
}

#[tokio::test]
async fn a_user_may_have_so_many_statements_running_and_no_more() {
    let limits = StatementLimits {
        per_user: Some(2),
        ..StatementLimits::default()
    };
    let engine = big(limits, 64 * MIB).await;
    let alice = user(&engine, "alice");
    // A query counts from its handing in to its last row (or its drop).
    let first = alice.sql("SELECT count(*) FROM app.big").await.unwrap();
    let second = alice.sql("SELECT count(*) FROM app.big").await.unwrap();
    let err = alice.sql("SELECT 1").await.unwrap_err();
    assert_eq!(err.code(), "RESOURCES_EXHAUSTED", "{err}");
    assert!(err.to_string().contains("alice"), "{err}");
    // Others are not held back by alice's statements.
    assert_eq!(
        count(&user(&engine, "bob"), "SELECT count(*) FROM app.big").await,
        2
    );
    drop(first);
    assert_eq!(count(&alice, "SELECT count(*) FROM app.big").await, 3000);
    let rows = second.collect().await.unwrap();
    assert_eq!(rows[0].num_rows(), 1);
    // Both places are free again.
    let a = alice.sql("SELECT 1").await.unwrap();
    let b = alice.sql("SELECT 2").await.unwrap();
    drop((a, b));
    // DDL counts too, while it runs.
    assert_eq!(count(&alice, "SELECT count(*) FROM app.big").await, 3000);
}

#[tokio::test]
async fn a_query_past_its_time_limit_ends_with_timeout() {
    let limits = StatementLimits {
        timeout: Some(Duration::from_millis(300)),
        ..StatementLimits::default()
    };
    // A statement that waited past its limit before running ends at once
    // (on the engine's clock, moved here rather than waited for).
    let clock = Arc::new(ManualClock::new(1_000_000));
    let engine = engine_on(
        EngineConfig::default()
            .with_clock(Arc::clone(&clock) as Arc<dyn tenantfusion::Clock>)
            .with_statement_limits(limits),
    )
    .await;
    let alice = user(&engine, "alice");
    let query = alice.sql("SELECT 1").await.unwrap();
    clock.advance(Duration::from_millis(299));
    let running = alice.sql("SELECT 2").await.unwrap();
    clock.advance(Duration::from_millis(2));
    assert_eq!(query.collect().await.unwrap_err().code(), "TIMEOUT");
    assert_eq!(running.collect().await.unwrap()[0].num_rows(), 1);
    // One that runs past it is stopped while it streams (system clock).
    let engine = big(limits, 256 * MIB).await;
    let alice = user(&engine, "alice");
    let started = std::time::Instant::now();
    let err = fails_with(&alice, ENDLESS).await;
    assert_eq!(err.code(), "TIMEOUT", "{err}");
    // The query never ends on its own; the bound only keeps a broken
    // limit from hanging the suite.
    assert!(started.elapsed() < Duration::from_secs(60));
    freed(&engine, "the statement ended").await;
    // Short statements are untouched by the limit.
    assert_eq!(count(&alice, "SELECT count(*) FROM app.big").await, 3000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_or_dropped_query_stops_and_frees_its_memory() {
    let engine = Arc::new(big(StatementLimits::default(), 256 * MIB).await);
    let alice = user(&engine, "alice");
    // Cancelled from another task while it streams.
    let query = alice.sql(LONG).await.unwrap();
    let cancel = query.cancel_handle();
    let mut stream = query.execute_stream().unwrap();
    assert!(stream.next().await.unwrap().is_ok(), "it runs");
    assert!(
        engine.memory_reserved() > 0,
        "the cross join holds its build side"
    );
    tokio::spawn(async move { cancel.cancel() }).await.unwrap();
    let mut err = None;
    while let Some(batch) = stream.next().await {
        if let Err(e) = batch {
            err = Some(TenantError::from(e));
            break;
        }
    }
    assert_eq!(err.unwrap().code(), "CANCELLED");
    assert!(stream.next().await.is_none(), "nothing after the end");
    freed(&engine, "its work was dropped").await;
    drop(stream);
    // Dropped half way through.
    let mut stream = alice.sql(LONG).await.unwrap().execute_stream().unwrap();
    for _ in 0..3 {
        stream.next().await.unwrap().unwrap();
    }
    assert!(engine.memory_reserved() > 0);
    drop(stream);
    freed(&engine, "the statement ended").await;
    // A write planned and never run writes nothing; one whose stream was
    // made runs to its end though its caller is gone.
    drop(
        alice
            .sql("INSERT INTO app.big VALUES (-1, 'never')")
            .await
            .unwrap(),
    );
    let insert = alice
        .sql("INSERT INTO app.big SELECT value + 10000, 'late' FROM generate_series(1, 500)")
        .await
        .unwrap();
    drop(insert.execute_stream().unwrap());
    let mut late = 0;
    for _ in 0..2_000 {
        late = count(&alice, "SELECT count(*) FROM app.big WHERE body = 'late'").await;
        if late == 500 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(late, 500, "the write finished");
    assert_eq!(
        count(&alice, "SELECT count(*) FROM app.big WHERE body = 'never'").await,
        0
    );
    assert_eq!(
        error_code(&user(&engine, "bob"), "SELECT * FROM app.nothing").await,
        "TABLE_NOT_FOUND"
    );
}
