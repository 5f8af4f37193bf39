//! SQL fuzzing as a hostile tenant: statements generated from a grammar of
//! what reaches other users' rows (wrappers, subqueries, joins, CTEs,
//! DML, EXECUTE AS, settings), and statements of our `.slt` corpus mutated
//! token by token, all run as alice. Bob's rows, a PRIVATE table and a
//! RESTRICTED one carry a marker; no answer and no error alice gets may
//! hold it, and nothing may panic.
//!
//! Cases per run: `TENANTFUSION_FUZZ_CASES` (`scripts/fuzz.sh` runs many),
//! else what CI runs. `FUZZ_SHOW=1` prints each generated statement and
//! the first line of what it gave, to see what the grammar reaches.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use tenantfusion::{Engine, EngineConfig, TenantSession};
use tenantfusion_test_support::fuzz_cases;

use crate::common::{admin, engine_on, run, user};

/// In bob's rows and the tables alice may not read, nowhere else.
const MARK: &str = "zq7mark";

async fn planted() -> Engine {
    let engine = engine_on(EngineConfig::default()).await;
    let admin = admin(&engine);
    for sql in [
        "CREATE TABLE app.notes (id BIGINT NOT NULL, body TEXT, PRIMARY KEY (id))",
        "CREATE SHARED TABLE app.vault (id BIGINT, secret TEXT) WITH (ACCESS_LEVEL = PRIVATE)",
        "CREATE SHARED TABLE app.ledger (id BIGINT, secret TEXT) WITH (ACCESS_LEVEL = RESTRICTED)",
        "CREATE SHARED TABLE app.board (id BIGINT, body TEXT) WITH (ACCESS_LEVEL = PUBLIC)",
        "INSERT INTO app.vault VALUES (1, 'zq7mark-vault')",
        "INSERT INTO app.ledger VALUES (1, 'zq7mark-ledger')",
        "INSERT INTO app.board VALUES (1, 'board-1')",
        "GRANT INSERT ON app.ledger TO 'alice'",
    ] {
        run(&admin, sql).await;
    }
    run(
        &user(&engine, "alice"),
        "INSERT INTO app.notes VALUES (1, 'alice-1'), (2, 'alice-2')",
    )
    .await;
    run(
        &user(&engine, "bob"),
        "INSERT INTO app.notes SELECT value, 'zq7mark-' || value FROM generate_series(1, 50)",
    )
    .await;
    engine
}

/// Runs `sql` as `session` to its end; everything it showed, as text.
async fn outcome(session: &TenantSession, sql: &str) -> String {
    let query = match session.sql(sql).await {
        Ok(query) => query,
        Err(err) => return format!("error {err}"),
    };
    match query.collect().await {
        Ok(batches) => datafusion::arrow::util::pretty::pretty_format_batches(&batches)
            .map(|t| t.to_string())
            .unwrap_or_default(),
        Err(err) => format!("error {err}"),
    }
}

fn check(sql: &str, shown: &str) -> Result<(), TestCaseError> {
    prop_assert!(
        !shown.contains(MARK),
        "{sql}\nshowed another user's value:\n{shown}"
    );
    prop_assert!(!shown.contains("panicked"), "{sql}\npanicked:\n{shown}");
    Ok(())
}

fn one_of(items: &'static [&'static str]) -> impl Strategy<Value = String> {
    proptest::sample::select(items).prop_map(String::from)
}

/// Mostly tables alice may read (where a leak would show), the others
/// often enough to try every way in.
fn table() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => one_of(&["app.notes"]),
        2 => one_of(&["app.board", "generate_series(1, 3)"]),
        1 => one_of(&[
            "notes",
            "app.vault",
            "app.ledger",
            "app.\"Notes\"",
            "system.tables",
            "system.users",
        ]),
    ]
}

fn column() -> impl Strategy<Value = String> {
    one_of(&[
        "*",
        "id",
        "body",
        "secret",
        "count(*)",
        "max(body)",
        "min(secret)",
        "string_agg(body, ',')",
        "array_agg(id)",
        "length(body)",
        "upper(body)",
    ])
}

fn predicate() -> impl Strategy<Value = String> {
    prop_oneof![
        (0i64..60).prop_map(|n| format!("id > {n}")),
        one_of(&["body LIKE 'z%'", "body IS NOT NULL", "secret <> ''", "true"]),
        table().prop_map(|t| format!("id IN (SELECT id FROM {t})")),
        table().prop_map(|t| format!("EXISTS (SELECT 1 FROM {t})")),
        table().prop_map(|t| format!("id = (SELECT max(id) FROM {t})")),
    ]
}

fn query() -> impl Strategy<Value = String> {
    let simple = (column(), table(), proptest::option::of(predicate()), 0u8..4).prop_map(
        |(column, table, predicate, tail)| {
            let mut sql = format!("SELECT {column} FROM {table}");
            if let Some(p) = predicate {
                sql.push_str(&format!(" WHERE {p}"));
            }
            sql.push_str(match tail {
                0 => "",
                1 => " ORDER BY 1",
                2 => " LIMIT 3",
                _ => " GROUP BY 1",
            });
            sql
        },
    );
    simple.prop_recursive(2, 8, 2, |inner| {
        prop_oneof![
            (inner.clone(), table()).prop_map(|(q, t)| format!(
                "SELECT * FROM ({q}) s CROSS JOIN (SELECT count(*) FROM {t}) c"
            )),
            inner
                .clone()
                .prop_map(|q| format!("WITH c AS ({q}) SELECT * FROM c")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a} UNION ALL {b}")),
            (table(), table())
                .prop_map(|(a, b)| format!("SELECT a.*, b.* FROM {a} a JOIN {b} b ON a.id = b.id")),
        ]
    })
}

fn statement() -> impl Strategy<Value = String> {
    let wrapper = prop_oneof![
        6 => one_of(&[""]),
        1 => one_of(&[
            "EXPLAIN ",
            "EXPLAIN ANALYZE ",
            "EXPLAIN VERBOSE ",
            "EXECUTE AS USER 'bob' (",
            "PREPARE p AS ",
        ]),
    ];
    let body = prop_oneof![
        4 => query(),
        1 => (table(), query()).prop_map(|(t, q)| format!("INSERT INTO {t} {q}")),
        1 => (table(), predicate()).prop_map(|(t, p)| format!("UPDATE {t} SET body = 'x' WHERE {p}")),
        1 => (table(), predicate()).prop_map(|(t, p)| format!("DELETE FROM {t} WHERE {p}")),
        1 => (table(), query()).prop_map(|(t, q)| format!("CREATE TABLE app.t AS {q} -- {t}")),
        1 => one_of(&[
            "SET datafusion.sql_parser.enable_ident_normalization = false",
            "SET datafusion.explain.show_statistics = true",
            "SET datafusion.execution.target_partitions = 3",
            "SET datafusion.catalog.default_schema = 'app'",
            "DESCRIBE app.vault",
            "SHOW TABLES",
            "EXECUTE p",
        ]),
    ];
    (wrapper, body).prop_map(|(wrapper, body)| {
        if wrapper.ends_with('(') {
            format!("{wrapper}{body})")
        } else {
            format!("{wrapper}{body}")
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_statements_show_alice_nothing_of_anyone_else() {
    let engine = planted().await;
    let alice = user(&engine, "alice");
    let handle = tokio::runtime::Handle::current();
    let mut runner = TestRunner::new(Config {
        cases: fuzz_cases(96),
        failure_persistence: None,
        ..Config::default()
    });
    let result = tokio::task::block_in_place(|| {
        runner.run(&statement(), |sql| {
            let shown = handle.block_on(outcome(&alice, &sql));
            if std::env::var("FUZZ_SHOW").is_ok() {
                eprintln!("{sql}\n=> {}", shown.lines().next().unwrap_or(""));
            }
            check(&sql, &shown)
        })
    });
    result.unwrap();
    // Bob's rows are all still there, unchanged.
    let bob = user(&engine, "bob");
    assert_eq!(
        crate::common::count(
            &bob,
            "SELECT count(*) FROM app.notes WHERE body LIKE 'zq7mark-%'"
        )
        .await,
        50
    );
}

/// Every statement of the `.slt` corpus.
fn corpus() -> Vec<String> {
    tenantfusion_test_support::slt_corpus()
}

/// A token-level change to a statement.
#[derive(Debug, Clone)]
enum Mutation {
    Delete(usize),
    Duplicate(usize),
    Swap(usize),
    Replace(usize, &'static str),
    Wrap(&'static str),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let words: &'static [&'static str] = &[
        "app.notes",
        "app.vault",
        "app.ledger",
        "(SELECT secret FROM app.vault)",
        "EXPLAIN",
        "UNION ALL SELECT * FROM app.notes",
        "WHERE",
        "NULL",
        "'",
        ")",
        "(",
        "*",
        "JOIN app.ledger ON true",
        "AS",
        "-- ",
        "/*",
        "0",
        "-1",
        "9223372036854775807",
    ];
    prop_oneof![
        any::<usize>().prop_map(Mutation::Delete),
        any::<usize>().prop_map(Mutation::Duplicate),
        any::<usize>().prop_map(Mutation::Swap),
        (any::<usize>(), proptest::sample::select(words))
            .prop_map(|(i, w)| Mutation::Replace(i, w)),
        proptest::sample::select(
            &[
                "EXPLAIN ANALYZE ",
                "EXECUTE AS USER 'bob' (",
                "PREPARE q AS "
            ][..]
        )
        .prop_map(Mutation::Wrap),
    ]
}

fn mutate(sql: &str, mutations: &[Mutation]) -> String {
    let mut tokens: Vec<String> = sql.split_whitespace().map(String::from).collect();
    for m in mutations {
        if tokens.is_empty() {
            break;
        }
        let len = tokens.len();
        match m {
            Mutation::Delete(i) => {
                tokens.remove(i % len);
            }
            Mutation::Duplicate(i) => {
                let t = tokens[i % len].clone();
                tokens.insert(i % len, t);
            }
            Mutation::Swap(i) if len > 1 => tokens.swap(i % len, (i + 1) % len),
            Mutation::Swap(_) => {}
            Mutation::Replace(i, word) => tokens[i % len] = (*word).to_string(),
            Mutation::Wrap(wrapper) => {
                let inner = tokens.join(" ");
                let close = if wrapper.ends_with('(') { ")" } else { "" };
                tokens = vec![format!("{wrapper}{inner}{close}")];
            }
        }
    }
    tokens.join(" ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutated_corpus_statements_show_alice_nothing_of_anyone_else() {
    let corpus = corpus();
    assert!(corpus.len() > 100, "the corpus was found: {}", corpus.len());
    let engine = planted().await;
    let alice = user(&engine, "alice");
    let handle = tokio::runtime::Handle::current();
    let mut runner = TestRunner::new(Config {
        cases: fuzz_cases(128),
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (0..corpus.len(), proptest::collection::vec(mutation(), 0..4));
    let result = tokio::task::block_in_place(|| {
        runner.run(&strategy, |(index, mutations)| {
            let sql = mutate(&corpus[index], &mutations);
            let shown = handle.block_on(outcome(&alice, &sql));
            check(&sql, &shown)
        })
    });
    result.unwrap();
}
