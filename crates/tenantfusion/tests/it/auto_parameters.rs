//! SQL text whose literal values are taken out as parameters
//! (`EngineConfig::auto_parameters`): statements that differ only in their
//! values run from one generic plan. Every run must answer as the text
//! planned on its own would, for its own caller; random statements over
//! every column type run on two engines, one with the rewrite off, and must
//! agree statement by statement. (Many tasks interleaving values, values
//! that skip different segments, and changes by key run in both forms, text
//! and prepared, in `generic_plans`, as do access checks on kept plans.)

use std::sync::atomic::{AtomicUsize, Ordering};

use datafusion::physical_plan::displayable;
use proptest::prelude::*;
use tenantfusion::{Engine, EngineConfig, Query, TenantSession};

use crate::common::{
    admin, check_cases, engine, engine_on, error_code, fresh_durable_engines, lines, rows, run,
    user,
};
use crate::generic_plans::notes;

/// Runs `sql`: whether its plan came from the cache, and its rows.
async fn ran(session: &TenantSession, sql: &str) -> (bool, Vec<String>) {
    let query = session
        .sql(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let from_cache = query.from_cache();
    (from_cache, lines(&query.collect().await.unwrap()))
}

#[tokio::test]
async fn texts_differing_only_in_values_share_one_plan_and_answer_their_own_caller() {
    let engine = engine().await;
    notes(&engine).await;
    let alice = user(&engine, "alice");
    let bob = user(&engine, "bob");
    let find = |id: i64| format!("SELECT id, body FROM app.notes WHERE id = {id}");
    for (run, id) in (1..=40i64).enumerate() {
        let (from_cache, found) = ran(&alice, &find(id)).await;
        // Kept on the shape's second run (bob's, below), with any value.
        assert_eq!(from_cache, run >= 1, "run {run}");
        let expected = match id {
            1..=20 => vec![format!("{id} b{id}")],
            _ => vec![],
        };
        assert_eq!(found, expected, "alice, {id}");
        // The same plan gives bob his rows, never alice's.
        let (from_cache, found) = ran(&bob, &find(id)).await;
        assert_eq!(from_cache, run >= 1, "run {run}");
        assert!(found.is_empty(), "bob, {id}: {found:?}");
        let (_, found) = ran(&bob, &find(100 + id)).await;
        let expected = match id {
            1..=20 => vec![format!("{} b{}", 100 + id, 100 + id)],
            _ => vec![],
        };
        assert_eq!(found, expected, "bob, {}", 100 + id);
    }
    assert_eq!(engine.plan_cache_stats().entries, 1);
}

#[tokio::test]
async fn each_run_shows_its_own_values_only() {
    let engine = engine().await;
    notes(&engine).await;
    let alice = user(&engine, "alice");
    let sql = |low: i64| format!("SELECT id FROM app.notes WHERE id >= {low} AND body <> 'b{low}'");
    for low in [3, 5, 7] {
        let query = alice.sql(&sql(low)).await.unwrap();
        let plan = query.plan().expect("a plan").clone();
        let shown = displayable(plan.as_ref()).indent(true).to_string();
        assert!(shown.contains(&format!(">= {low}")), "{shown}");
        assert!(shown.contains(&format!("b{low}")), "{shown}");
        for other in [3, 5, 7].iter().filter(|o| **o != low) {
            assert!(!shown.contains(&format!("b{other}")), "{low}: {shown}");
        }
        assert!(!shown.contains("$1"), "{shown}");
        let found = lines(&query.collect().await.unwrap());
        assert_eq!(found.len(), (20 - low) as usize, "{low}");
    }
    // EXPLAIN is planned for its own text, values and all.
    let explained = rows(&alice, &format!("EXPLAIN {}", sql(11)))
        .await
        .join("\n");
    assert!(explained.contains(">= 11"), "{explained}");
}

#[tokio::test]
async fn a_text_sent_again_verbatim_binds_its_own_values_and_only_reads() {
    let engine = engine().await;
    notes(&engine).await;
    let admin = admin(&engine);
    let alice = user(&engine, "alice");
    let bob = user(&engine, "bob");
    // The same texts again and again, by two users, interleaved: each
    // text is found without parsing once its generic plan is kept.
    for round in 0..4 {
        for id in [3i64, 7, 103] {
            let sql = format!("SELECT id, body FROM app.notes WHERE id = {id}");
            for (session, owner) in [(&alice, id < 100), (&bob, id > 100)] {
                let (from_cache, found) = ran(session, &sql).await;
                assert!(from_cache || round == 0, "round {round}: {sql}");
                let expected = match owner {
                    true => vec![format!("{id} b{id}")],
                    false => vec![],
                };
                assert_eq!(found, expected, "round {round}: {sql}");
            }
        }
    }
    // A change's text is never found that way: a kept UPDATE plan of the
    // administrator's is no way for alice, who may only read, to write.
    run(
        &admin,
        "CREATE SHARED TABLE app.ledger (k TEXT, v INT) WITH (ACCESS_LEVEL = 'restricted')",
    )
    .await;
    run(&admin, "INSERT INTO app.ledger VALUES ('a', 1)").await;
    run(&admin, "GRANT SELECT ON app.ledger TO 'alice'").await;
    let update = "UPDATE app.ledger SET v = 5 WHERE k = 'a'";
    for _ in 0..3 {
        run(&admin, update).await;
    }
    for _ in 0..2 {
        assert_eq!(error_code(&alice, update).await, "PERMISSION_DENIED");
    }
    run(&admin, "UPDATE app.ledger SET v = 1 WHERE k = 'a'").await;
    assert_eq!(
        rows(&alice, "SELECT v FROM app.ledger WHERE k = 'a'").await,
        ["1"]
    );
}

#[tokio::test]
async fn off_plans_each_text_of_its_own() {
    let engine = engine_on(EngineConfig::default().with_auto_parameters(false)).await;
    notes(&engine).await;
    let alice = user(&engine, "alice");
    for id in 1..=10i64 {
        let (from_cache, found) = ran(
            &alice,
            &format!("SELECT body FROM app.notes WHERE id = {id}"),
        )
        .await;
        assert!(!from_cache, "{id}");
        assert_eq!(found, [format!("b{id}")]);
    }
    assert_eq!(engine.plan_cache_stats().entries, 0);
}

/// The table both engines hold: a column of each type a literal is often
/// compared with, and NULLs.
const TABLE: &str = "(k BIGINT NOT NULL, i32 INT, i64 BIGINT, u8 TINYINT UNSIGNED, \
    f32 REAL, f64 DOUBLE, dec DECIMAL(10, 2), s TEXT, d DATE, flag BOOLEAN)";

const COLUMNS: &[&str] = &[
    "k", "i32", "i64", "u8", "f32", "f64", "dec", "s", "d", "flag",
];

/// Literals of every kind: some are taken out and bind exactly, some
/// convert only inexactly (planned from the text), some are never taken
/// out, some fail on both engines.
const LITERALS: &[&str] = &[
    "0",
    "1",
    "3",
    "5",
    "-1",
    "255",
    "256",
    "300",
    "2147483648",
    "5000000000",
    "9007199254740993",
    "99999999999999999999",
    "1.5",
    "2.50",
    "'5'",
    "'05'",
    "'a'",
    "'b'",
    "''",
    "'2024-01-02'",
    "NULL",
    "TRUE",
];

const COMPARISONS: &[&str] = &["=", "<>", "<", "<=", ">", ">="];

/// One statement of a workload.
#[derive(Debug, Clone)]
enum Statement {
    Compare(usize, usize, usize),
    In(usize, Vec<usize>),
    Between(usize, usize, usize),
    Update(usize, usize, usize),
    Delete(usize, usize, usize),
    Flush,
}

impl Statement {
    fn sql(&self) -> String {
        let (c, l) = (COLUMNS, LITERALS);
        match self {
            Statement::Compare(col, op, lit) => format!(
                "SELECT k FROM app.t WHERE {} {} {} ORDER BY k",
                c[*col], COMPARISONS[*op], l[*lit]
            ),
            Statement::In(col, lits) => {
                let list: Vec<&str> = lits.iter().map(|i| l[*i]).collect();
                format!(
                    "SELECT k, {0} FROM app.t WHERE {0} IN ({1}) ORDER BY k",
                    c[*col],
                    list.join(", ")
                )
            }
            Statement::Between(col, low, high) => format!(
                "SELECT k FROM app.t WHERE {} BETWEEN {} AND {} ORDER BY k",
                c[*col], l[*low], l[*high]
            ),
            // Alice's keys are 0..6, bob's 100..106.
            Statement::Update(col, lit, key) => format!(
                "UPDATE app.t SET {} = {} WHERE k = {key} OR k = {}",
                c[*col],
                l[*lit],
                key + 100
            ),
            Statement::Delete(col, op, lit) => format!(
                "DELETE FROM app.t WHERE {} {} {}",
                c[*col], COMPARISONS[*op], l[*lit]
            ),
            Statement::Flush => "FLUSH TABLE app.t".to_string(),
        }
    }
}

fn statement() -> impl Strategy<Value = Statement> {
    let col = 0..COLUMNS.len();
    let lit = 0..LITERALS.len();
    let op = 0..COMPARISONS.len();
    prop_oneof![
        6 => (col.clone(), op.clone(), lit.clone()).prop_map(|(c, o, l)| Statement::Compare(c, o, l)),
        2 => (col.clone(), prop::collection::vec(lit.clone(), 1..4)).prop_map(|(c, l)| Statement::In(c, l)),
        2 => (col.clone(), lit.clone(), lit.clone()).prop_map(|(c, a, b)| Statement::Between(c, a, b)),
        2 => (col.clone(), lit.clone(), 0..6i64).prop_map(|(c, l, k)| Statement::Update(c, l, k as usize)),
        1 => (col, op, lit).prop_map(|(c, o, l)| Statement::Delete(c, o, l)),
        1 => Just(Statement::Flush),
    ]
}

/// What a statement gave: its rows, or its error's code and words.
async fn outcome(result: tenantfusion::Result<Query>) -> (String, bool) {
    match result {
        Ok(query) => {
            let from_cache = query.from_cache();
            match query.collect().await {
                Ok(batches) => (lines(&batches).join(";"), from_cache),
                Err(e) => (format!("{}: {e}", e.code()), from_cache),
            }
        }
        Err(e) => (format!("{}: {e}", e.code()), false),
    }
}

/// Two engines alike but for `auto_parameters`, each with the table and
/// the same rows for alice and bob.
async fn engines(config: impl Fn() -> EngineConfig) -> (Engine, Engine) {
    let mut made = Vec::new();
    for auto in [true, false] {
        let engine = engine_on(config().with_auto_parameters(auto)).await;
        run(&admin(&engine), &format!("CREATE TABLE app.t {TABLE}")).await;
        for (name, base) in [("alice", 0), ("bob", 100)] {
            let sql = format!(
                "INSERT INTO app.t VALUES \
                 ({0}, 5, 5, 5, 5, 5, 5, 'a', '2024-01-02', true), \
                 ({1}, 1, 5000000000, 255, 1.5, 2.5, 2.50, '05', '2024-01-03', false), \
                 ({2}, -1, -1, 0, -1, 9007199254740992, 0, 'b', '2023-12-31', NULL), \
                 ({3}, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL), \
                 ({4}, 3, 3, 3, 3, 3, 3.00, '', '2024-01-02', true), \
                 ({5}, 0, 0, 1, 0, 0, 1, 'a', '2024-01-01', false)",
                base,
                base + 1,
                base + 2,
                base + 3,
                base + 4,
                base + 5
            );
            run(&user(&engine, name), &sql).await;
        }
        made.push(engine);
    }
    let off = made.pop().unwrap();
    (made.pop().unwrap(), off)
}

/// Runs random workloads by alice and bob on both engines of `config` and
/// compares outcomes and both users' rows after each statement; returns
/// how many statements ran from a kept plan on the engine with the
/// rewrite.
fn differential(config: impl Fn() -> EngineConfig + Clone, cases: u32) -> usize {
    let reused = AtomicUsize::new(0);
    let workloads = prop::collection::vec(statement(), 1..40);
    check_cases(cases, &workloads, |statements| {
        let (config, reused) = (config.clone(), &reused);
        async move {
            let (auto, off) = engines(config).await;
            let sessions = [
                [user(&auto, "alice"), user(&off, "alice")],
                [user(&auto, "bob"), user(&off, "bob")],
            ];
            for (i, statement) in statements.iter().enumerate() {
                let sql = statement.sql();
                if let Statement::Flush = statement {
                    // Refused alike in memory.
                    let (flushed, _) = outcome(admin(&auto).sql(&sql).await).await;
                    let (expected, _) = outcome(admin(&off).sql(&sql).await).await;
                    prop_assert_eq!(flushed, expected);
                    continue;
                }
                let [ours, theirs] = &sessions[i % 2];
                let (first, _) = outcome(ours.sql(&sql).await).await;
                let (expected, _) = outcome(theirs.sql(&sql).await).await;
                prop_assert_eq!(&first, &expected, "{}", sql);
                if !matches!(statement, Statement::Update(..) | Statement::Delete(..)) {
                    // A query's text runs three times with the rewrite:
                    // the second run of a shape keeps its generic plan,
                    // the third runs from it. (A change runs once.)
                    for run in ["second", "third"] {
                        let (again, from_cache) = outcome(ours.sql(&sql).await).await;
                        prop_assert_eq!(&again, &expected, "{} run: {}", run, sql);
                        if from_cache {
                            reused.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                for [ours, theirs] in &sessions {
                    let all = "SELECT * FROM app.t ORDER BY k";
                    prop_assert_eq!(
                        rows(ours, all).await,
                        rows(theirs, all).await,
                        "after {}",
                        sql
                    );
                }
            }
            Ok(())
        }
    });
    reused.into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn literals_as_parameters_match_texts_planned_on_their_own_in_memory() {
    let reused = differential(EngineConfig::default, 32);
    assert!(
        reused > 100,
        "only {reused} statements ran from a kept plan"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn literals_as_parameters_match_texts_planned_on_their_own_in_durable_tables() {
    // Flushed segments are skipped by the bound values.
    let dir = tempfile::tempdir().unwrap();
    let reused = differential(fresh_durable_engines(dir.path()), 8);
    assert!(reused > 30, "only {reused} statements ran from a kept plan");
}
