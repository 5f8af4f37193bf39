//! INSERTs written without planning (`EngineConfig::direct_inserts`)
//! against the same INSERTs planned: random statements over every column
//! type, NULLs, defaults, column lists in any order, too many or too few
//! values, overflowing and uncastable literals, on two engines side by
//! side. Each statement must have the same outcome on both (rows written,
//! or the same error, code and words) and leave the same rows.

use std::sync::atomic::{AtomicUsize, Ordering};

use datafusion::common::ScalarValue;
use proptest::prelude::*;
use tenantfusion::{Engine, EngineConfig, Query, TenantSession};

use crate::common::{
    admin, check_cases, count, engine, error_code, fresh_durable_engines, rows, run, user,
};

/// The table both engines write: one column of every type the engine
/// stores, a NOT NULL primary key, two defaults.
const TABLE: &str = "(k BIGINT NOT NULL, b BOOLEAN, i8 TINYINT, i16 SMALLINT, i32 INT, \
    i64 BIGINT DEFAULT 7, u32 INT UNSIGNED, f32 REAL, f64 DOUBLE, dec DECIMAL(10, 2), \
    s TEXT DEFAULT 'none', v VARCHAR, bin BYTEA, d DATE, ts TIMESTAMP, PRIMARY KEY (k))";

/// Columns of [`TABLE`], values that write (literals, casts, NULL where
/// the column takes it), and values that fail or are not constants:
/// overflow, no cast, NULL for the key, arithmetic, functions, subqueries,
/// parameters (planned on both engines).
const COLUMNS: &[(&str, &[&str], &[&str])] = &[
    (
        "k",
        &["1", "2", "3", "4", "'5'", "-1"],
        &["NULL", "2.5", "1 + 1"],
    ),
    ("b", &["TRUE", "false", "'t'", "NULL"], &["'maybe'", "1"]),
    (
        "i8",
        &["127", "-128", "'7'", "NULL"],
        &["128", "1.5", "300"],
    ),
    (
        "i16",
        &["32767", "CAST(3 AS SMALLINT)", "-(4)", "NULL"],
        &["32768", "'x'"],
    ),
    (
        "i32",
        &["-5", "'12'", "NULL"],
        &["2147483648", "TRUE", "abs(-3)"],
    ),
    (
        "i64",
        &["9223372036854775807", "0", "NULL"],
        &["9223372036854775808", "random()"],
    ),
    ("u32", &["4294967295", "'3'", "NULL"], &["-1", "4294967296"]),
    ("f32", &["1.5", "'2.5'", "3", "'nan'", "NULL"], &["1e39"]),
    (
        "f64",
        &["-0.25", "1e308", "'inf'", "TRY_CAST('x' AS DOUBLE)"],
        &["'x'"],
    ),
    (
        "dec",
        &["12.345", "99999999.99", "'1.5'", "-3", "NULL"],
        &["123456789012"],
    ),
    (
        "s",
        &["'hello'", "''", "'it''s'", "42", "'é'", "CAST(1.5 AS TEXT)"],
        &["NULL"],
    ),
    ("v", &["'v'", "TRUE", "NULL"], &["(SELECT 'q')", "$1"]),
    ("bin", &["'abc'", "X'DEADBEEF'", "NULL"], &["1"]),
    (
        "d",
        &["'2024-02-29'", "DATE '2020-01-01'", "NULL", "20"],
        &["'2023-02-29'", "'x'"],
    ),
    (
        "ts",
        &[
            "'2024-01-01 12:00:00'",
            "TIMESTAMP '2020-01-01T00:00:00'",
            "NULL",
            "0",
        ],
        &["'bad'"],
    ),
];

/// A value of column `column`: `pick` indexes its values that write, then
/// (from their count on) the others.
fn value(column: usize, pick: usize) -> &'static str {
    let (_, good, bad) = COLUMNS[column];
    let all = good.len() + bad.len();
    match pick % all {
        i if i < good.len() => good[i],
        i => bad[i - good.len()],
    }
}

/// One INSERT: the columns it names (`None`: all, in order) and, per row,
/// which value of each named column's list it takes; `skew` adds or drops
/// a value in the last row.
#[derive(Debug, Clone)]
struct Insert {
    columns: Option<Vec<usize>>,
    rows: Vec<Vec<usize>>,
    skew: i8,
}

impl Insert {
    fn sql(&self, table: &str) -> String {
        let columns: Vec<usize> = self
            .columns
            .clone()
            .unwrap_or_else(|| (0..COLUMNS.len()).collect());
        let mut rows: Vec<Vec<&str>> = self
            .rows
            .iter()
            .map(|picks| {
                columns
                    .iter()
                    .zip(picks)
                    .map(|(&c, &pick)| value(c, pick))
                    .collect()
            })
            .collect();
        if let Some(last) = rows.last_mut() {
            match self.skew {
                1 => last.push("1"),
                -1 => {
                    last.pop();
                }
                _ => {}
            }
        }
        let values: Vec<String> = rows
            .iter()
            .map(|row| format!("({})", row.join(", ")))
            .collect();
        let list = match &self.columns {
            None => String::new(),
            Some(columns) => {
                let names: Vec<&str> = columns.iter().map(|&c| COLUMNS[c].0).collect();
                format!(" ({})", names.join(", "))
            }
        };
        format!("INSERT INTO {table}{list} VALUES {}", values.join(", "))
    }
}

fn insert() -> impl Strategy<Value = Insert> {
    let columns = prop_oneof![
        1 => Just(None),
        3 => Just((0..COLUMNS.len()).collect::<Vec<_>>())
            .prop_shuffle()
            .prop_flat_map(|all| (Just(all), 1..=COLUMNS.len(), prop::bool::weighted(0.9)))
            .prop_map(|(all, n, keyed)| {
                // Mostly with the NOT NULL key, which has no default.
                let mut columns = all[..n].to_vec();
                if keyed && !columns.contains(&0) {
                    columns.push(0);
                }
                Some(columns)
            }),
    ];
    (
        columns,
        1usize..4,
        prop_oneof![8 => Just(0i8), 1 => Just(1), 1 => Just(-1)],
    )
        .prop_flat_map(|(columns, rows, skew)| {
            let width = columns.as_ref().map_or(COLUMNS.len(), Vec::len);
            // Values that write are listed first: lean on them, so most
            // statements write and some fail.
            let pick = prop_oneof![40 => 0usize..3, 1 => 0usize..9];
            let rows = prop::collection::vec(prop::collection::vec(pick, width), rows);
            (Just(columns), rows, Just(skew))
        })
        .prop_map(|(columns, rows, skew)| Insert {
            columns,
            rows,
            skew,
        })
}

/// What a statement did: rows written, or its error as the caller sees
/// it (when planned or when run); and whether it was written directly.
async fn outcome(query: tenantfusion::Result<Query>) -> (String, bool) {
    let query = match query {
        Ok(query) => query,
        Err(err) => return (format!("{}: {err}", err.code()), false),
    };
    let direct = query.written_directly();
    let shown = match query.collect().await {
        Ok(batches) => {
            let written: Vec<String> = batches
                .iter()
                .map(|b| format!("{:?}", b.columns()))
                .collect();
            format!("ok {}", written.join(""))
        }
        Err(err) => format!("{}: {err}", err.code()),
    };
    (shown, direct)
}

/// Counts the statements of a differential run and those written directly.
#[derive(Default)]
struct Tally {
    all: AtomicUsize,
    direct: AtomicUsize,
}

impl Tally {
    fn count(&self, direct: bool) {
        self.all.fetch_add(1, Ordering::Relaxed);
        self.direct
            .fetch_add(usize::from(direct), Ordering::Relaxed);
    }

    /// Fails unless at least one in `every` statements was written directly:
    /// else the comparison compared the planner with itself.
    fn require_direct(self, every: usize) {
        let (direct, all) = (self.direct.into_inner(), self.all.into_inner());
        eprintln!("{direct} of {all} statements written directly");
        assert!(
            direct * every >= all,
            "only {direct} of {all} statements were written directly"
        );
    }
}

/// Two engines alike but for `direct_inserts`, each with the table.
async fn engines(config: impl Fn() -> EngineConfig, shared: bool) -> (Engine, Engine) {
    let (kind, with) = match shared {
        true => ("SHARED TABLE", " WITH (ACCESS_LEVEL = 'restricted')"),
        false => ("TABLE", ""),
    };
    let mut made = Vec::new();
    for direct in [true, false] {
        let engine = Engine::new(config().with_direct_inserts(direct)).unwrap();
        let admin = admin(&engine);
        run(&admin, "CREATE NAMESPACE app").await;
        run(&admin, "CREATE USER 'alice'").await;
        run(&admin, &format!("CREATE {kind} app.d {TABLE}{with}")).await;
        if shared {
            run(&admin, "GRANT INSERT, SELECT ON app.d TO 'alice'").await;
        }
        made.push(engine);
    }
    let planned = made.pop().unwrap();
    (made.pop().unwrap(), planned)
}

/// Runs random INSERTs by alice into both engines of `config` and
/// compares outcomes and rows after each statement.
fn differential(config: impl Fn() -> EngineConfig + Clone, shared: bool, cases: u32) {
    let tally = Tally::default();
    check_cases(
        cases,
        &prop::collection::vec(insert(), 1..8),
        |statements| {
            let (config, tally) = (config.clone(), &tally);
            async move {
                let (direct, planned) = engines(config, shared).await;
                let (alice_direct, alice_planned) =
                    (user(&direct, "alice"), user(&planned, "alice"));
                for statement in &statements {
                    let sql = statement.sql("app.d");
                    let (ours, took_direct) = outcome(alice_direct.sql(&sql).await).await;
                    let (theirs, took_planned) = outcome(alice_planned.sql(&sql).await).await;
                    prop_assert!(
                        !took_planned,
                        "{sql}: the reference engine plans every INSERT"
                    );
                    prop_assert_eq!(&ours, &theirs, "{}", sql);
                    tally.count(took_direct);
                    let select = "SELECT * FROM app.d ORDER BY k, i8, s";
                    prop_assert_eq!(
                        rows(&alice_direct, select).await,
                        rows(&alice_planned, select).await,
                        "after {}",
                        sql
                    );
                }
                Ok(())
            }
        },
    );
    // Most statements here are constants of the right width.
    tally.require_direct(2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_inserts_match_planned_ones_in_a_user_table_in_memory() {
    differential(EngineConfig::default, false, 48);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_inserts_match_planned_ones_in_a_shared_table_in_memory() {
    differential(EngineConfig::default, true, 24);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_inserts_match_planned_ones_in_durable_tables() {
    let dir = tempfile::tempdir().unwrap();
    let config = fresh_durable_engines(dir.path());
    differential(config.clone(), false, 16);
    differential(config, true, 8);
}

/// Whether `sql`, run by `session`, was written directly; runs it.
async fn direct(session: &TenantSession, sql: &str) -> bool {
    let query = session
        .sql(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let direct = query.written_directly();
    query
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    direct
}

#[tokio::test]
async fn constant_rows_are_written_directly_and_everything_else_is_planned() {
    let engine = engine().await;
    run(
        &admin(&engine),
        "CREATE TABLE app.t (id BIGINT, at TIMESTAMP DEFAULT now(), body TEXT)",
    )
    .await;
    let alice = user(&engine, "alice");
    for sql in [
        "INSERT INTO app.t VALUES (1, NULL, 'a')",
        "INSERT INTO app.t (body, id) VALUES ('b', 2), ('c', '3')",
        "INSERT INTO app.t VALUES (-(4), TIMESTAMP '2020-01-01 00:00:00', CAST(4 AS TEXT))",
        "INSERT INTO app.t (id) VALUES (5)",
    ] {
        assert!(direct(&alice, sql).await, "{sql}");
    }
    for sql in [
        "INSERT INTO app.t SELECT 6, now(), 'f'",
        "INSERT INTO app.t (id) VALUES (abs(-7))",
        "INSERT INTO app.t (id) VALUES (1 + 7)",
        "INSERT INTO app.t (id) VALUES (CAST(random() * 0 AS BIGINT) + 10)",
        "INSERT INTO app.t (id) VALUES (11) LIMIT 1",
        "EXPLAIN INSERT INTO app.t (id) VALUES (12)",
    ] {
        assert!(!direct(&alice, sql).await, "{sql}");
    }
    // The planned ones wrote too (EXPLAIN aside).
    assert_eq!(
        rows(&alice, "SELECT id FROM app.t ORDER BY id").await,
        ["-4", "1", "2", "3", "5", "6", "7", "8", "10", "11"]
    );
    assert_eq!(
        count(&user(&engine, "bob"), "SELECT count(*) FROM app.t").await,
        0
    );
}

#[tokio::test]
async fn now_is_the_statements_start_once_for_all_its_rows() {
    let engine = engine().await;
    run(
        &admin(&engine),
        "CREATE TABLE app.t (id BIGINT, at TIMESTAMP DEFAULT now(), seen TIMESTAMP)",
    )
    .await;
    let alice = user(&engine, "alice");
    let before = chrono::Utc::now().timestamp_micros() * 1000;
    assert!(
        direct(
            &alice,
            "INSERT INTO app.t (id, seen) VALUES (1, now()), (2, now())"
        )
        .await
    );
    let after = (chrono::Utc::now().timestamp_micros() + 1) * 1000;
    let times = rows(
        &alice,
        "SELECT DISTINCT CAST(at AS BIGINT), at = seen FROM app.t",
    )
    .await;
    assert_eq!(times.len(), 1, "one now() for the statement: {times:?}");
    let (at, same) = times[0].split_once(' ').unwrap();
    let at: i64 = at.parse().unwrap();
    assert!(
        (before..=after).contains(&at),
        "{before} <= {at} <= {after}"
    );
    assert_eq!(same, "true");
}

#[tokio::test]
async fn a_direct_insert_is_checked_like_a_planned_one() {
    let engine = engine().await;
    let admin = admin(&engine);
    run(
        &admin,
        "CREATE TABLE app.notes (id BIGINT PRIMARY KEY, body TEXT NOT NULL)",
    )
    .await;
    run(
        &admin,
        "CREATE SHARED TABLE app.vault (secret TEXT) WITH (ACCESS_LEVEL = 'private')",
    )
    .await;
    let (alice, bob) = (user(&engine, "alice"), user(&engine, "bob"));
    assert_eq!(
        error_code(&alice, "INSERT INTO app.vault VALUES ('x')").await,
        "PERMISSION_DENIED"
    );
    assert_eq!(
        error_code(&alice, "INSERT INTO app.notes VALUES (1, NULL)").await,
        "NOT_NULL_VIOLATION"
    );
    assert!(direct(&alice, "INSERT INTO app.notes VALUES (1, 'a')").await);
    assert_eq!(
        error_code(&alice, "INSERT INTO app.notes VALUES (1, 'again')").await,
        "PRIMARY_KEY_VIOLATION"
    );
    // The key is per user: bob's 1 is his own.
    assert!(direct(&bob, "INSERT INTO app.notes VALUES (1, 'b')").await);
    // As another user, the rows are that user's.
    assert!(
        direct(
            &admin,
            "EXECUTE AS USER 'bob' (INSERT INTO app.notes VALUES (2, 'b2'))"
        )
        .await
    );
    assert_eq!(rows(&alice, "SELECT body FROM app.notes").await, ["a"]);
    assert_eq!(
        rows(&bob, "SELECT body FROM app.notes ORDER BY id").await,
        ["b", "b2"]
    );
    // A statement that is never collected writes nothing, as a planned one.
    drop(
        alice
            .sql("INSERT INTO app.notes VALUES (9, 'never')")
            .await
            .unwrap(),
    );
    assert_eq!(count(&alice, "SELECT count(*) FROM app.notes").await, 1);
}

/// Values for the parameters of the prepared INSERT below: some convert to
/// the columns' types, some do not, some overflow.
fn param() -> impl Strategy<Value = ScalarValue> {
    prop_oneof![
        16 => (-3i64..6).prop_map(ScalarValue::from),
        1 => Just(ScalarValue::from(40_000i64)),
        1 => Just(ScalarValue::Null),
        2 => prop::sample::select(vec!["7", "x", "2024-02-29", "12.5", ""]).prop_map(ScalarValue::from),
        1 => Just(ScalarValue::Float64(Some(1.5))),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_inserts_bound_to_new_values_match_planned_ones() {
    let tally = Tally::default();
    let sql = "INSERT INTO app.d (k, i16, s, d, dec) VALUES ($1, $2, $3, $4, $5)";
    let executions = prop::collection::vec(prop::collection::vec(param(), 5), 1..6);
    check_cases(32, &executions, |executions| {
        let tally = &tally;
        async move {
            let (direct, planned) = engines(EngineConfig::default, false).await;
            let ours = user(&direct, "alice").prepare(sql).await.unwrap();
            let theirs = user(&planned, "alice").prepare(sql).await.unwrap();
            for params in &executions {
                let (ours_shown, took_direct) = outcome(ours.execute(params.clone()).await).await;
                let (theirs_shown, took_planned) =
                    outcome(theirs.execute(params.clone()).await).await;
                prop_assert!(!took_planned);
                prop_assert_eq!(&ours_shown, &theirs_shown, "{:?}", params);
                tally.count(took_direct);
                let select = "SELECT * FROM app.d ORDER BY k";
                prop_assert_eq!(
                    rows(&user(&direct, "alice"), select).await,
                    rows(&user(&planned, "alice"), select).await
                );
            }
            Ok(())
        }
    });
    tally.require_direct(3);
}

#[tokio::test]
async fn sql_prepare_and_execute_of_an_insert_write_directly() {
    let engine = engine().await;
    run(
        &admin(&engine),
        "CREATE TABLE app.t (id BIGINT NOT NULL, body TEXT)",
    )
    .await;
    let alice = user(&engine, "alice");
    run(
        &alice,
        "PREPARE ins(BIGINT, TEXT) AS INSERT INTO app.t VALUES ($1, $2)",
    )
    .await;
    assert!(direct(&alice, "EXECUTE ins(1, 'one')").await);
    assert!(direct(&alice, "EXECUTE ins('2', 'two')").await);
    // A value the column refuses is planned, and fails as planned.
    assert_eq!(
        error_code(&alice, "EXECUTE ins(NULL, 'three')").await,
        "NOT_NULL_VIOLATION"
    );
    assert_eq!(
        rows(&alice, "SELECT id, body FROM app.t ORDER BY id").await,
        ["1 one", "2 two"]
    );
    assert_eq!(
        count(&user(&engine, "bob"), "SELECT count(*) FROM app.t").await,
        0
    );
}

#[tokio::test]
async fn wrapped_and_indirect_inserts_are_refused_alike_on_both_paths() {
    let mut engines = Vec::new();
    for direct in [true, false] {
        let engine =
            crate::common::engine_on(EngineConfig::default().with_direct_inserts(direct)).await;
        let admin = admin(&engine);
        run(&admin, "CREATE TABLE app.notes (id BIGINT, body TEXT)").await;
        run(
            &admin,
            "CREATE SHARED TABLE app.vault (secret TEXT) WITH (ACCESS_LEVEL = 'private')",
        )
        .await;
        run(
            &admin,
            "CREATE VIEW app.mine AS SELECT id, body FROM app.notes",
        )
        .await;
        engines.push(engine);
    }
    for sql in [
        "INSERT INTO app.vault VALUES ('x')",
        "EXPLAIN ANALYZE INSERT INTO app.vault VALUES ('x')",
        "EXECUTE AS USER 'bob' (INSERT INTO app.vault VALUES ('x'))",
        "INSERT INTO app.mine VALUES (1, 'through a view')",
        "INSERT INTO app.notes VALUES ((SELECT secret FROM app.vault))",
    ] {
        let mut shown = Vec::new();
        for engine in &engines {
            let (outcome, direct) = outcome(user(engine, "alice").sql(sql).await).await;
            assert!(!direct, "{sql}");
            shown.push(outcome);
        }
        assert_eq!(shown[0], shown[1], "{sql}");
        assert!(!shown[0].starts_with("ok"), "{sql}: {}", shown[0]);
    }
    for engine in &engines {
        assert_eq!(
            count(&admin(engine), "SELECT count(*) FROM app.vault").await,
            0
        );
        assert_eq!(
            count(&user(engine, "alice"), "SELECT count(*) FROM app.notes").await,
            0
        );
        assert_eq!(
            count(&user(engine, "bob"), "SELECT count(*) FROM app.notes").await,
            0
        );
    }
}
