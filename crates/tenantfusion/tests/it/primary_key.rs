//! PRIMARY KEY: unique per user in a user table, across the table in a
//! shared one; checked on INSERT and UPDATE, in memory, after a flush and
//! after reopening.

use std::collections::BTreeMap;
use std::path::Path;

use proptest::prelude::*;
use tenantfusion::Engine;

use crate::common::{admin, engine, engine_on, error, error_code, rows, run, user};

/// The message of a statement that must fail with `code`.
async fn refused(session: &tenantfusion::TenantSession, sql: &str, code: &str) -> String {
    let err = error(session, sql).await;
    assert_eq!(err.code(), code, "{sql}: {err}");
    err.to_string()
}

#[tokio::test]
async fn keys_are_unique_per_user_in_memory() {
    let engine = engine().await;
    create(&engine).await;
    keys_are_unique_per_user(&engine, false).await;
}

#[tokio::test]
async fn keys_are_unique_per_user_after_flush_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = engine_on(crate::durable::on(dir.path())).await;
        create(&engine).await;
        keys_are_unique_per_user(&engine, true).await;
    }
    reopened_keeps_the_key(dir.path()).await;
}

async fn create(engine: &Engine) {
    run(
        &admin(engine),
        "CREATE TABLE app.kv (k BIGINT PRIMARY KEY, v TEXT) WITH (FLUSH_POLICY = 'none')",
    )
    .await;
}

async fn keys_are_unique_per_user(engine: &Engine, flush: bool) {
    let (alice, bob) = (user(engine, "alice"), user(engine, "bob"));
    run(&alice, "INSERT INTO app.kv VALUES (1, 'a'), (2, 'b')").await;
    // The same key in another user's rows is another row.
    run(&bob, "INSERT INTO app.kv VALUES (1, 'x')").await;
    if flush {
        run(&admin(engine), "FLUSH TABLE app.kv").await;
    }
    let all = "SELECT k, v FROM app.kv ORDER BY k";

    let message = refused(
        &alice,
        "INSERT INTO app.kv VALUES (1, 'again')",
        "PRIMARY_KEY_VIOLATION",
    )
    .await;
    assert!(message.contains("(k)=(1)"), "{message}");
    assert!(message.contains("app.kv"), "{message}");
    let message = refused(
        &alice,
        "INSERT INTO app.kv VALUES (3, 'c'), (3, 'd')",
        "PRIMARY_KEY_VIOLATION",
    )
    .await;
    assert!(message.contains("twice"), "{message}");
    assert_eq!(
        error_code(&alice, "INSERT INTO app.kv VALUES (NULL, 'n')").await,
        "NOT_NULL_VIOLATION"
    );
    // EXPLAIN checks nothing and stores nothing.
    run(&alice, "EXPLAIN INSERT INTO app.kv VALUES (1, 'z')").await;
    assert_eq!(rows(&alice, all).await, ["1 a", "2 b"]);

    // UPDATE: a key onto another row's clashes; moving every key does not.
    refused(
        &alice,
        "UPDATE app.kv SET k = 2 WHERE k = 1",
        "PRIMARY_KEY_VIOLATION",
    )
    .await;
    refused(&alice, "UPDATE app.kv SET k = 7", "PRIMARY_KEY_VIOLATION").await;
    run(&alice, "UPDATE app.kv SET k = k + 10").await;
    assert_eq!(rows(&alice, all).await, ["11 a", "12 b"]);
    run(&alice, "UPDATE app.kv SET v = 'kept' WHERE k = 11").await;
    // A key freed by DELETE can be used again.
    run(&alice, "DELETE FROM app.kv WHERE k = 12").await;
    run(&alice, "INSERT INTO app.kv VALUES (12, 'new')").await;

    // INSERT ... SELECT through a subquery of the same table.
    let copy = "INSERT INTO app.kv SELECT k + 100, v FROM app.kv \
                WHERE k IN (SELECT min(k) FROM app.kv)";
    run(&alice, copy).await;
    refused(&alice, copy, "PRIMARY_KEY_VIOLATION").await;
    assert_eq!(rows(&alice, all).await, ["11 kept", "12 new", "111 kept"]);

    // Bob's rows are his own, whatever alice's keys did.
    assert_eq!(rows(&bob, all).await, ["1 x"]);
    run(&bob, "INSERT INTO app.kv VALUES (11, 'bob')").await;
    refused(
        &bob,
        "UPDATE app.kv SET k = 11 WHERE k = 1",
        "PRIMARY_KEY_VIOLATION",
    )
    .await;
    assert_eq!(rows(&bob, all).await, ["1 x", "11 bob"]);

    // Writers racing for one key: exactly one wins.
    let racers: Vec<_> = (0..8)
        .map(|i| {
            let alice = alice.clone();
            tokio::spawn(async move {
                match alice
                    .sql(&format!("INSERT INTO app.kv VALUES (500, 'r{i}')"))
                    .await
                {
                    Ok(q) => q.collect().await.map(|_| ()),
                    Err(e) => Err(e),
                }
            })
        })
        .collect();
    let mut won = 0;
    for racer in racers {
        match racer.await.unwrap() {
            Ok(()) => won += 1,
            Err(e) => assert_eq!(e.code(), "PRIMARY_KEY_VIOLATION", "{e}"),
        }
    }
    assert_eq!(won, 1);
    assert_eq!(
        rows(&alice, "SELECT count(*) FROM app.kv WHERE k = 500").await,
        ["1"]
    );
}

/// After reopening, the key is still the table's and still enforced on
/// the rows read back.
async fn reopened_keeps_the_key(dir: &Path) {
    let engine = Engine::new(crate::durable::on(dir)).unwrap();
    let alice = user(&engine, "alice");
    refused(
        &alice,
        "INSERT INTO app.kv VALUES (11, 'after reopen')",
        "PRIMARY_KEY_VIOLATION",
    )
    .await;
    run(&alice, "INSERT INTO app.kv VALUES (13, 'after reopen')").await;
    assert_eq!(
        rows(&alice, "SELECT k FROM app.kv ORDER BY k").await,
        ["11", "12", "13", "111", "500"]
    );
}

#[tokio::test]
async fn a_shared_tables_key_is_unique_across_the_table() {
    let engine = engine().await;
    let admin = admin(&engine);
    run(
        &admin,
        "CREATE SHARED TABLE app.prices (sym TEXT, day INT, price DOUBLE, PRIMARY KEY (sym, day))",
    )
    .await;
    run(
        &admin,
        "INSERT INTO app.prices VALUES ('A', 1, 1.0), ('A', 2, 2.0), ('B', 1, 3.0)",
    )
    .await;
    let message = refused(
        &admin,
        "INSERT INTO app.prices VALUES ('B', 1, 9.0)",
        "PRIMARY_KEY_VIOLATION",
    )
    .await;
    assert!(message.contains("(sym, day)=(B, 1)"), "{message}");
    run(&admin, "INSERT INTO app.prices VALUES ('B', 2, 4.0)").await;
    assert_eq!(
        rows(&user(&engine, "alice"), "SELECT count(*) FROM app.prices").await,
        ["4"]
    );
}

#[tokio::test]
async fn keys_that_cannot_be_kept_are_refused_when_the_table_is_created() {
    let engine = engine().await;
    let admin = admin(&engine);
    for (sql, code) in [
        ("CREATE TABLE app.u (a INT UNIQUE)", "NOT_SUPPORTED"),
        (
            "CREATE STREAM TABLE app.s (a INT PRIMARY KEY) WITH (TTL_SECONDS = 60)",
            "NOT_SUPPORTED",
        ),
    ] {
        refused(&admin, sql, code).await;
    }
    // The key's columns are NOT NULL, as in SQL.
    run(&admin, "CREATE TABLE app.n (a INT, b INT, PRIMARY KEY (a))").await;
    assert_eq!(
        error_code(
            &user(&engine, "alice"),
            "INSERT INTO app.n VALUES (NULL, 1)"
        )
        .await,
        "NOT_NULL_VIOLATION"
    );
}

/// A step of the keyed model: each user's rows of `k (id PRIMARY KEY, v)`
/// against one map per user.
#[derive(Debug, Clone)]
enum KeyedOp {
    /// `user` inserts these rows in one statement.
    Insert { user: usize, rows: Vec<(i64, i64)> },
    /// `user` adds `by` to the ids of their rows with `id > above`.
    Shift { user: usize, above: i64, by: i64 },
    /// `user` sets `v` of their rows with `id >= from`, keys untouched
    /// (the key check is skipped then: it must not need to run).
    Set { user: usize, from: i64, v: i64 },
    /// `user` deletes the row with this id.
    Delete { user: usize, id: i64 },
    /// FLUSH TABLE (durable runs only).
    Flush,
    /// The engine closed and opened again (durable runs only).
    Reopen,
}

fn keyed_op() -> impl Strategy<Value = KeyedOp> {
    prop_oneof![
        4 => (0..2usize, prop::collection::vec((0i64..12, -9i64..9), 1..4))
            .prop_map(|(user, rows)| KeyedOp::Insert { user, rows }),
        2 => (0..2usize, 0i64..12, -3i64..4)
            .prop_map(|(user, above, by)| KeyedOp::Shift { user, above, by }),
        2 => (0..2usize, 0i64..12, -9i64..9).prop_map(|(user, from, v)| KeyedOp::Set { user, from, v }),
        1 => (0..2usize, 0i64..12).prop_map(|(user, id)| KeyedOp::Delete { user, id }),
        1 => Just(KeyedOp::Flush),
        1 => Just(KeyedOp::Reopen),
    ]
}

/// Runs `ops`, checking after each that every user's rows are their map's
/// and that a statement is refused exactly when the model says a key would
/// clash.
async fn keyed_model(ops: Vec<KeyedOp>, durable: bool) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let config = match durable {
        true => crate::durable::on(dir.path()),
        false => tenantfusion::EngineConfig::default(),
    };
    let mut engine = Engine::new(config.clone()).unwrap();
    run(
        &admin(&engine),
        "CREATE TABLE k (id BIGINT PRIMARY KEY, v BIGINT) WITH (FLUSH_POLICY = 'rows:4')",
    )
    .await;
    let mut model: [BTreeMap<i64, i64>; 2] = Default::default();
    let name = |u: usize| format!("user{u}");
    for op in ops {
        let (u, sql, after) = match op {
            KeyedOp::Insert { user: u, rows } => {
                let mut after = model[u].clone();
                let fits = rows.iter().all(|(id, v)| after.insert(*id, *v).is_none());
                let values: Vec<String> = rows.iter().map(|(i, v)| format!("({i}, {v})")).collect();
                let sql = format!("INSERT INTO k VALUES {}", values.join(", "));
                (u, sql, fits.then_some(after))
            }
            KeyedOp::Shift { user: u, above, by } => {
                let (moved, kept): (Vec<_>, Vec<_>) =
                    model[u].iter().partition(|(id, _)| **id > above);
                let mut after: BTreeMap<i64, i64> =
                    kept.into_iter().map(|(i, v)| (*i, *v)).collect();
                let fits = moved
                    .into_iter()
                    .all(|(id, v)| after.insert(id + by, *v).is_none());
                let sql = format!("UPDATE k SET id = id + {by} WHERE id > {above}");
                (u, sql, fits.then_some(after))
            }
            KeyedOp::Set { user: u, from, v } => {
                let mut after = model[u].clone();
                after.range_mut(from..).for_each(|(_, value)| *value = v);
                let sql = format!("UPDATE k SET v = {v}, id = id WHERE id >= {from}");
                (u, sql, Some(after))
            }
            KeyedOp::Delete { user: u, id } => {
                let mut after = model[u].clone();
                after.remove(&id);
                let sql = format!("DELETE FROM k WHERE id IN (SELECT id FROM k WHERE id = {id})");
                (u, sql, Some(after))
            }
            KeyedOp::Flush if durable => {
                run(&admin(&engine), "FLUSH TABLE k").await;
                continue;
            }
            KeyedOp::Reopen if durable => {
                drop(engine);
                engine = Engine::new(config.clone()).unwrap();
                continue;
            }
            KeyedOp::Flush | KeyedOp::Reopen => continue,
        };
        let session = user(&engine, &name(u));
        match after {
            Some(after) => {
                run(&session, &sql).await;
                model[u] = after;
            }
            None => {
                let code = error(&session, &sql).await.code();
                prop_assert_eq!(code, "PRIMARY_KEY_VIOLATION", "{}", sql);
            }
        }
        for (u, mine) in model.iter().enumerate() {
            let expected: Vec<String> = mine.iter().map(|(i, v)| format!("{i} {v}")).collect();
            let got = rows(&user(&engine, &name(u)), "SELECT id, v FROM k ORDER BY id").await;
            prop_assert_eq!(got, expected, "user{} after {}", u, sql);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn keyed_rows_match_a_map_per_user(ops in prop::collection::vec(keyed_op(), 1..14)) {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(keyed_model(ops, false))?;
    }

    #[test]
    fn keyed_rows_match_a_map_per_user_across_flushes_and_reopens(
        ops in prop::collection::vec(keyed_op(), 1..14)
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(keyed_model(ops, true))?;
    }
}
