//! Live queries (SUBSCRIBE) on user and shared tables: snapshot, then
//! inserts, updates and deletes, each caller seeing only what they may read.

use std::time::Duration;

use tenantfusion::{ChangeEvent, LiveQuery};

use crate::common::{admin, column_values, count, engine, engine_on, error_code, rows, run, user};

/// The next event, with a bound against hanging.
async fn next(live: &mut LiveQuery) -> ChangeEvent {
    tokio::time::timeout(Duration::from_secs(20), live.recv())
        .await
        .expect("an event within 20 s")
        .expect("no error")
        .expect("the query is running")
}

async fn snapshot(live: &mut LiveQuery, column: &str) -> Vec<String> {
    match next(live).await {
        ChangeEvent::Snapshot(rows) => column_values(&rows, column),
        other => panic!("expected the snapshot first, got {other:?}"),
    }
}

async fn inserted(live: &mut LiveQuery, column: &str) -> Vec<String> {
    match next(live).await {
        ChangeEvent::Insert(rows) => column_values(&[rows], column),
        other => panic!("expected an insert, got {other:?}"),
    }
}

async fn deleted(live: &mut LiveQuery, column: &str) -> Vec<String> {
    match next(live).await {
        ChangeEvent::Delete(rows) => column_values(&[rows], column),
        other => panic!("expected a delete, got {other:?}"),
    }
}

/// No event is queued (after a moment for one to arrive).
async fn quiet(live: &mut LiveQuery) {
    tokio::time::sleep(Duration::from_millis(50)).await;
    if let Some(event) = live.try_recv().unwrap() {
        panic!("expected no event, got {event:?}");
    }
}

#[tokio::test]
async fn each_user_is_told_only_about_their_own_rows() {
    let engine = engine().await;
    let admin = admin(&engine);
    run(&admin, "CREATE USER TABLE app.notes (id BIGINT, body TEXT)").await;
    run(&admin, "CREATE USER TABLE app.src (id BIGINT, body TEXT)").await;
    let (alice, bob) = (user(&engine, "alice"), user(&engine, "bob"));
    run(&alice, "INSERT INTO app.notes VALUES (1, 'a-old')").await;
    run(&bob, "INSERT INTO app.notes VALUES (1, 'b-old')").await;

    let mut a = alice.subscribe("SUBSCRIBE TO app.notes").await.unwrap();
    let mut b = bob.subscribe("SUBSCRIBE TO app.notes").await.unwrap();
    assert_eq!(snapshot(&mut a, "body").await, ["a-old"]);
    assert_eq!(snapshot(&mut b, "body").await, ["b-old"]);

    run(&bob, "INSERT INTO app.notes VALUES (2, 'b-new')").await;
    run(&alice, "INSERT INTO app.notes VALUES (2, 'a-new')").await;
    assert_eq!(inserted(&mut a, "body").await, ["a-new"]);
    assert_eq!(inserted(&mut b, "body").await, ["b-new"]);

    // DML whose rows come from a subquery and a join: each caller's own.
    run(
        &alice,
        "INSERT INTO app.src VALUES (7, 'a-src'), (8, 'a-skip')",
    )
    .await;
    run(&bob, "INSERT INTO app.src VALUES (7, 'b-src')").await;
    let dml = "INSERT INTO app.notes SELECT s.id, s.body FROM app.src s \
               JOIN app.notes n ON n.id = 1 WHERE s.id IN (SELECT min(id) FROM app.src)";
    run(&alice, dml).await;
    run(&bob, dml).await;
    assert_eq!(inserted(&mut a, "body").await, ["a-src"]);
    assert_eq!(inserted(&mut b, "body").await, ["b-src"]);

    // A failed statement is not an event; nothing else is queued.
    assert_eq!(
        error_code(
            &alice,
            "INSERT INTO app.notes VALUES (3, 'ok'), (NULL, 'x', 1)"
        )
        .await,
        "SCHEMA_MISMATCH"
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(a.try_recv().unwrap().is_none());
    assert!(b.try_recv().unwrap().is_none());

    // EXPLAIN plans an insert without running it: no event.
    run(&alice, "EXPLAIN INSERT INTO app.notes VALUES (9, 'never')").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(a.try_recv().unwrap().is_none());

    // Each sees their own live queries; an admin sees both.
    let mine = "SELECT user_id, table_name FROM system.live_subscriptions";
    assert_eq!(rows(&alice, mine).await, ["alice app.notes"]);
    assert_eq!(rows(&bob, mine).await, ["bob app.notes"]);
    assert_eq!(
        count(&admin, "SELECT count(*) FROM system.live_subscriptions").await,
        2
    );
    drop(a);
    assert_eq!(rows(&alice, mine).await, Vec::<String>::new());
    assert_eq!(
        count(&admin, "SELECT count(*) FROM system.live_subscriptions").await,
        1
    );
}

#[tokio::test]
async fn updates_and_deletes_reach_only_their_owners_live_queries_in_memory() {
    updates_and_deletes_reach_their_owners(engine().await, false).await;
}

#[tokio::test]
async fn updates_and_deletes_reach_only_their_owners_live_queries_on_flushed_rows() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine_on(crate::durable::on(dir.path())).await;
    updates_and_deletes_reach_their_owners(engine, true).await;
}

async fn updates_and_deletes_reach_their_owners(engine: tenantfusion::Engine, flush: bool) {
    run(
        &admin(&engine),
        "CREATE USER TABLE app.notes (id BIGINT, body TEXT)",
    )
    .await;
    let (alice, bob) = (user(&engine, "alice"), user(&engine, "bob"));
    run(&alice, "INSERT INTO app.notes VALUES (1, 'a1'), (2, 'a2')").await;
    run(&bob, "INSERT INTO app.notes VALUES (1, 'b1'), (2, 'b2')").await;
    if flush {
        // The changed rows then sit in Parquet segments, not the hot set.
        run(&admin(&engine), "FLUSH TABLE app.notes").await;
    }
    let mut a = alice.subscribe("SUBSCRIBE TO app.notes").await.unwrap();
    let mut first = alice
        .subscribe("SUBSCRIBE TO app.notes WHERE id = 1")
        .await
        .unwrap();
    let mut b = bob.subscribe("SUBSCRIBE TO app.notes").await.unwrap();
    assert_eq!(snapshot(&mut a, "body").await, ["a1", "a2"]);
    assert_eq!(snapshot(&mut first, "body").await, ["a1"]);
    assert_eq!(snapshot(&mut b, "body").await, ["b1", "b2"]);

    // An UPDATE: the old values go, the new ones come; bob's row 1 is not
    // alice's.
    run(&alice, "UPDATE app.notes SET body = 'a1-new' WHERE id = 1").await;
    assert_eq!(deleted(&mut a, "body").await, ["a1"]);
    assert_eq!(inserted(&mut a, "body").await, ["a1-new"]);
    assert_eq!(deleted(&mut first, "body").await, ["a1"]);
    assert_eq!(inserted(&mut first, "body").await, ["a1-new"]);
    quiet(&mut b).await;

    // A DELETE through a subquery (it reaches the table with no filters).
    run(
        &bob,
        "DELETE FROM app.notes WHERE id IN (SELECT id FROM app.notes WHERE body = 'b2')",
    )
    .await;
    assert_eq!(deleted(&mut b, "body").await, ["b2"]);
    quiet(&mut a).await;
    quiet(&mut first).await;

    // A row updated out of a WHERE only leaves it.
    run(&alice, "UPDATE app.notes SET id = 3 WHERE id = 1").await;
    assert_eq!(deleted(&mut a, "id").await, ["1"]);
    assert_eq!(inserted(&mut a, "id").await, ["3"]);
    assert_eq!(deleted(&mut first, "id").await, ["1"]);
    quiet(&mut first).await;

    // Nothing changed, nothing told: no match, EXPLAIN, a failed statement.
    run(&alice, "DELETE FROM app.notes WHERE id = 99").await;
    run(&alice, "EXPLAIN DELETE FROM app.notes").await;
    run(&alice, "EXPLAIN UPDATE app.notes SET body = 'x'").await;
    assert_eq!(
        error_code(&alice, "UPDATE app.notes SET missing = 1").await,
        "PLAN_ERROR"
    );
    quiet(&mut a).await;
    assert_eq!(
        rows(&alice, "SELECT id, body FROM app.notes ORDER BY id").await,
        ["2 a2", "3 a1-new"]
    );
    assert_eq!(rows(&bob, "SELECT id, body FROM app.notes").await, ["1 b1"]);
    quiet(&mut b).await;
}

#[tokio::test]
async fn where_and_last_rows_narrow_the_snapshot_and_the_events() {
    let engine = engine().await;
    run(
        &admin(&engine),
        "CREATE USER TABLE app.m (n BIGINT, tag TEXT)",
    )
    .await;
    let alice = user(&engine, "alice");
    run(
        &alice,
        "INSERT INTO app.m VALUES (1, 'x'), (2, 'y'), (3, 'x'), (4, 'x'), (5, 'x')",
    )
    .await;
    let mut live = alice
        .subscribe("SUBSCRIBE TO app.m WHERE tag = 'x' AND n > 1 OPTIONS (LAST_ROWS = 2)")
        .await
        .unwrap();
    assert_eq!(snapshot(&mut live, "n").await, ["4", "5"]);
    run(
        &alice,
        "INSERT INTO app.m VALUES (6, 'y'), (7, 'x'), (0, 'x')",
    )
    .await;
    assert_eq!(inserted(&mut live, "n").await, ["7"]);
    let mut none = alice
        .subscribe("SUBSCRIBE TO app.m OPTIONS (LAST_ROWS = 0)")
        .await
        .unwrap();
    assert_eq!(snapshot(&mut none, "n").await, Vec::<String>::new());
}

#[tokio::test]
async fn shared_tables_by_access_level_and_a_revoke_ends_the_query() {
    let engine = engine().await;
    let admin = admin(&engine);
    run(&admin, "CREATE SHARED TABLE app.news (v INT)").await;
    run(
        &admin,
        "CREATE SHARED TABLE app.secret (v INT) WITH (ACCESS_LEVEL = 'private')",
    )
    .await;
    run(
        &admin,
        "CREATE SHARED TABLE app.club (v INT) WITH (ACCESS_LEVEL = 'restricted')",
    )
    .await;
    let (alice, bob) = (user(&engine, "alice"), user(&engine, "bob"));

    let mut news = alice.subscribe("SUBSCRIBE TO app.news").await.unwrap();
    assert!(snapshot(&mut news, "v").await.is_empty());
    run(&admin, "INSERT INTO app.news VALUES (1)").await;
    assert_eq!(inserted(&mut news, "v").await, ["1"]);

    for sql in ["SUBSCRIBE TO app.secret", "SUBSCRIBE TO app.club"] {
        assert_eq!(
            alice.subscribe(sql).await.unwrap_err().code(),
            "PERMISSION_DENIED",
            "{sql}"
        );
    }
    run(&admin, "GRANT SELECT ON app.club TO alice").await;
    let mut club = alice.subscribe("SUBSCRIBE TO app.club").await.unwrap();
    assert!(snapshot(&mut club, "v").await.is_empty());
    run(&admin, "INSERT INTO app.club VALUES (1)").await;
    assert_eq!(inserted(&mut club, "v").await, ["1"]);
    assert_eq!(
        bob.subscribe("SUBSCRIBE TO app.club")
            .await
            .unwrap_err()
            .code(),
        "PERMISSION_DENIED"
    );

    // Taken away while it runs: the next write ends it, with the reason.
    run(&admin, "REVOKE SELECT ON app.club FROM alice").await;
    run(&admin, "INSERT INTO app.club VALUES (2)").await;
    let err = tokio::time::timeout(Duration::from_secs(20), club.recv())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code(), "PERMISSION_DENIED");
    assert!(club.recv().await.unwrap().is_none());
}

#[tokio::test]
async fn a_slow_reader_is_told_what_it_missed_or_disconnected() {
    let engine = engine().await;
    run(&admin(&engine), "CREATE USER TABLE app.t (v INT)").await;
    let alice = user(&engine, "alice");
    let mut lagging = alice
        .subscribe("SUBSCRIBE TO app.t OPTIONS (QUEUE_CAPACITY = 2)")
        .await
        .unwrap();
    let mut strict = alice
        .subscribe("SUBSCRIBE TO app.t OPTIONS (QUEUE_CAPACITY = 2, SLOW_CONSUMER = 'disconnect')")
        .await
        .unwrap();
    assert!(snapshot(&mut lagging, "v").await.is_empty());
    assert!(snapshot(&mut strict, "v").await.is_empty());
    for v in 1..=5 {
        run(&alice, &format!("INSERT INTO app.t VALUES ({v})")).await;
    }
    assert!(matches!(
        next(&mut lagging).await,
        ChangeEvent::Lagged { missed: 3 }
    ));
    assert_eq!(inserted(&mut lagging, "v").await, ["4"]);
    assert_eq!(inserted(&mut lagging, "v").await, ["5"]);
    let err = strict.recv().await.unwrap_err();
    assert_eq!(err.code(), "SLOW_CONSUMER");
    // The others go on; the disconnected one is forgotten by the table.
    run(&alice, "INSERT INTO app.t VALUES (6)").await;
    assert_eq!(inserted(&mut lagging, "v").await, ["6"]);
}

#[tokio::test]
async fn a_slow_readers_queue_is_bounded_in_bytes_too() {
    let engine = engine().await;
    run(&admin(&engine), "CREATE USER TABLE app.t (v TEXT)").await;
    let alice = user(&engine, "alice");
    // Room for 1,024 deliveries by count, but only ~2 of these by bytes.
    let mut live = alice
        .subscribe("SUBSCRIBE TO app.t OPTIONS (QUEUE_BYTES = 250000)")
        .await
        .unwrap();
    assert!(snapshot(&mut live, "v").await.is_empty());
    let row = format!("('{}')", "x".repeat(1000));
    let values = vec![row; 100].join(", ");
    for _ in 0..10 {
        run(&alice, &format!("INSERT INTO app.t VALUES {values}")).await;
        let stats = live.stats();
        assert!(
            stats.queued_bytes <= 250_000 || stats.queued == 1,
            "{stats:?}"
        );
    }
    let stats = live.stats();
    assert!(stats.queued <= 2, "{stats:?}");
    assert_eq!(stats.dropped, 10 - stats.queued as u64, "{stats:?}");
    match next(&mut live).await {
        ChangeEvent::Lagged { missed } => assert_eq!(missed, stats.dropped),
        other => panic!("expected Lagged, got {other:?}"),
    }
    for _ in 0..stats.queued {
        assert_eq!(inserted(&mut live, "v").await.len(), 100);
    }
    quiet(&mut live).await;
    assert_eq!(live.stats().queued_bytes, 0);
}

#[tokio::test]
async fn rows_written_while_subscribing_arrive_exactly_once() {
    let engine = engine().await;
    run(&admin(&engine), "CREATE USER TABLE app.t (v BIGINT)").await;
    let alice = user(&engine, "alice");
    let writer = {
        let alice = alice.clone();
        tokio::spawn(async move {
            for v in 0..200 {
                run(&alice, &format!("INSERT INTO app.t VALUES ({v})")).await;
            }
        })
    };
    // Subscribe somewhere in the middle of the writes.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut live = alice.subscribe("SUBSCRIBE TO app.t").await.unwrap();
    writer.await.unwrap();
    let mut seen: Vec<i64> = Vec::new();
    let mut parse =
        |values: Vec<String>| seen.extend(values.iter().map(|v| v.parse::<i64>().unwrap()));
    parse(snapshot(&mut live, "v").await);
    while let Some(event) = live.try_recv().unwrap() {
        match event {
            ChangeEvent::Insert(rows) => parse(column_values(&[rows], "v")),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(seen, (0..200).collect::<Vec<_>>());
}

#[tokio::test]
async fn bad_subscriptions_get_clear_errors() {
    let engine = engine().await;
    run(&admin(&engine), "CREATE USER TABLE app.t (v INT)").await;
    let alice = user(&engine, "alice");
    for (sql, code) in [
        ("SUBSCRIBE TO app.nope", "TABLE_NOT_FOUND"),
        ("SUBSCRIBE TO nope.t", "NAMESPACE_NOT_FOUND"),
        ("SUBSCRIBE TO app.t WHERE missing = 1", "PLAN_ERROR"),
        (
            "SUBSCRIBE TO app.t OPTIONS (LAST_ROWS = -1)",
            "INVALID_ARGUMENT",
        ),
        (
            "SUBSCRIBE TO app.t OPTIONS (QUEUE_CAPACITY = 0)",
            "INVALID_ARGUMENT",
        ),
        (
            "SUBSCRIBE TO app.t OPTIONS (QUEUE_BYTES = 0)",
            "INVALID_ARGUMENT",
        ),
        (
            "SUBSCRIBE TO app.t OPTIONS (QUEUE_BYTES = 268435457)",
            "INVALID_ARGUMENT",
        ),
        (
            "SUBSCRIBE TO app.t OPTIONS (SLOW_CONSUMER = 'wait')",
            "INVALID_ARGUMENT",
        ),
        ("SUBSCRIBE TO app.t OPTIONS (EVERY = 1)", "INVALID_ARGUMENT"),
        ("SUBSCRIBE app.t", "SYNTAX_ERROR"),
        ("SELECT * FROM app.t", "INVALID_ARGUMENT"),
    ] {
        let err = alice.subscribe(sql).await.unwrap_err();
        assert_eq!(err.code(), code, "{sql}: {err}");
    }
    assert_eq!(
        alice.sql("SUBSCRIBE TO app.t").await.unwrap_err().code(),
        "NOT_SUPPORTED"
    );
    let anon = engine.session(tenantfusion::UserContext::new(
        "v",
        tenantfusion::Role::Anonymous,
    ));
    assert_eq!(
        anon.subscribe("SUBSCRIBE TO app.t")
            .await
            .unwrap_err()
            .code(),
        "PERMISSION_DENIED"
    );
}
