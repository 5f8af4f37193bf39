//! Random multi-user workloads against a reference model: one plain row list
//! per user. Whatever the interleaving, every user's answers must equal what
//! the model says about that user's rows alone.

use std::collections::HashMap;

use proptest::prelude::*;
use tenantfusion::{Durability, Engine, EngineConfig, Storage};

use crate::common::{admin, error_code, rows, run, user};

#[derive(Debug, Clone)]
pub enum Op {
    /// `user` inserts these `(id, v)` rows in one statement.
    Insert { user: usize, rows: Vec<(i64, i64)> },
    /// `user` copies their own rows with `id > above` (INSERT ... SELECT with a subquery).
    CopyAbove { user: usize, above: i64 },
    /// `user` asks for count, sum and the top ids above a bound.
    Query { user: usize, above: i64 },
    /// The engine is closed and opened again on its directory (durable
    /// runs only; in memory this does nothing).
    Reopen,
    /// `user` adds `add` to `v` of their rows with `id > above`.
    Update { user: usize, above: i64, add: i64 },
    /// `user` deletes their rows with this id (through a subquery when
    /// the id is odd).
    Delete { user: usize, id: i64 },
    /// `FLUSH TABLE` of both tables (durable runs; in memory it is refused).
    Flush,
    /// `COMPACT TABLE t` (durable runs; in memory it is refused).
    Compact,
}

const USERS: usize = 3;

pub fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (
            0..USERS,
            prop::collection::vec((0i64..20, -50i64..50), 1..4)
        )
            .prop_map(|(user, rows)| Op::Insert { user, rows }),
        (0..USERS, 0i64..20).prop_map(|(user, above)| Op::CopyAbove { user, above }),
        (0..USERS, -1i64..20).prop_map(|(user, above)| Op::Query { user, above }),
        Just(Op::Reopen),
        (0..USERS, 0i64..20, -5i64..5).prop_map(|(user, above, add)| Op::Update {
            user,
            above,
            add
        }),
        (0..USERS, 0i64..20).prop_map(|(user, id)| Op::Delete { user, id }),
        Just(Op::Flush),
        Just(Op::Compact),
    ]
}

/// Runs `ops` in memory, or on a directory when `durable`.
async fn check(ops: Vec<Op>, durable: bool) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let config = if durable {
        EngineConfig::default().with_storage(Storage::Directory {
            path: dir.path().to_path_buf(),
            // Replay is what is checked here; kill -9 is durable.rs's.
            durability: Durability::Buffered,
        })
    } else {
        EngineConfig::default()
    };
    check_on(ops, config).await
}

/// Runs `ops` on an engine of `config`, reopened on `Op::Reopen` when its
/// storage is durable.
pub async fn check_on(ops: Vec<Op>, config: EngineConfig) -> Result<(), TestCaseError> {
    let durable = config.storage != Storage::Memory;
    let mut engine = Engine::new(config.clone()).unwrap();
    // Small enough that inserts flush on their own too, between FLUSHes.
    run(
        &admin(&engine),
        "CREATE TABLE t (id BIGINT NOT NULL, v BIGINT) WITH (FLUSH_POLICY = 'rows:5')",
    )
    .await;
    run(&admin(&engine), "CREATE TABLE marks (id BIGINT)").await;
    let mut model: HashMap<usize, Vec<(i64, i64)>> = HashMap::new();
    // Each user's rows in `marks`: the first id of each of their inserts.
    let mut marks: HashMap<usize, Vec<i64>> = HashMap::new();
    let name = |u: usize| format!("user{u}");
    for op in ops {
        match op {
            Op::Insert { user: u, rows: new } => {
                let values: Vec<String> =
                    new.iter().map(|(id, v)| format!("({id}, {v})")).collect();
                run(
                    &user(&engine, &name(u)),
                    &format!("INSERT INTO t VALUES {}", values.join(", ")),
                )
                .await;
                run(
                    &user(&engine, &name(u)),
                    &format!("INSERT INTO marks VALUES ({})", new[0].0),
                )
                .await;
                marks.entry(u).or_default().push(new[0].0);
                model.entry(u).or_default().extend(new);
            }
            Op::CopyAbove { user: u, above } => {
                let sql = format!(
                    "INSERT INTO t SELECT id, v FROM t WHERE id > {above} AND id IN (SELECT id FROM marks)"
                );
                run(&user(&engine, &name(u)), &sql).await;
                let own_marks = marks.get(&u).cloned().unwrap_or_default();
                let mine = model.entry(u).or_default();
                let copied: Vec<(i64, i64)> = mine
                    .iter()
                    .filter(|(id, _)| *id > above && own_marks.contains(id))
                    .copied()
                    .collect();
                mine.extend(copied);
            }
            Op::Query { user: u, above } => {
                let session = user(&engine, &name(u));
                let mine = model.get(&u).cloned().unwrap_or_default();
                let count = mine.iter().filter(|(id, _)| *id > above).count();
                let sum: i64 = mine
                    .iter()
                    .filter(|(id, _)| *id > above)
                    .map(|(_, v)| v)
                    .sum();
                let got = rows(
                    &session,
                    &format!("SELECT count(*), sum(v) FROM t WHERE id > {above}"),
                )
                .await;
                let expected_sum = if count == 0 {
                    "".to_string()
                } else {
                    sum.to_string()
                };
                prop_assert_eq!(&got, &vec![format!("{count} {expected_sum}")]);
                let mut ids: Vec<i64> = mine
                    .iter()
                    .map(|(id, _)| *id)
                    .filter(|id| *id > above)
                    .collect();
                ids.sort_unstable_by(|a, b| b.cmp(a));
                ids.truncate(3);
                let got = rows(
                    &session,
                    &format!("SELECT id FROM t WHERE id > {above} ORDER BY id DESC LIMIT 3"),
                )
                .await;
                let expected: Vec<String> = ids.iter().map(i64::to_string).collect();
                prop_assert_eq!(got, expected);
            }
            Op::Reopen if durable => {
                drop(engine);
                engine = Engine::new(config.clone()).unwrap();
            }
            Op::Reopen => {}
            Op::Flush if durable => {
                for table in ["t", "marks"] {
                    run(&admin(&engine), &format!("FLUSH TABLE {table}")).await;
                }
            }
            Op::Flush => {
                let code = error_code(&admin(&engine), "FLUSH TABLE t").await;
                prop_assert_eq!(code, "NOT_SUPPORTED");
            }
            Op::Update {
                user: u,
                above,
                add,
            } => {
                let sql = format!("UPDATE t SET v = v + {add} WHERE id > {above}");
                let changed = rows(&user(&engine, &name(u)), &sql).await;
                let mine = model.entry(u).or_default();
                let mut expected = 0;
                for (id, v) in mine.iter_mut().filter(|(id, _)| *id > above) {
                    let _ = id;
                    *v += add;
                    expected += 1;
                }
                prop_assert_eq!(changed, vec![expected.to_string()]);
            }
            Op::Delete { user: u, id } => {
                let sql = if id % 2 == 1 {
                    format!("DELETE FROM t WHERE id IN (SELECT id FROM t WHERE id = {id})")
                } else {
                    format!("DELETE FROM t WHERE id = {id}")
                };
                let changed = rows(&user(&engine, &name(u)), &sql).await;
                let mine = model.entry(u).or_default();
                let before = mine.len();
                mine.retain(|(row, _)| *row != id);
                prop_assert_eq!(changed, vec![(before - mine.len()).to_string()]);
            }
            Op::Compact if durable => {
                run(&admin(&engine), "COMPACT TABLE t").await;
            }
            Op::Compact => {
                let code = error_code(&admin(&engine), "COMPACT TABLE t").await;
                prop_assert_eq!(code, "NOT_SUPPORTED");
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn users_see_exactly_their_own_rows(ops in prop::collection::vec(op(), 1..16)) {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(check(ops, false))?;
    }

    #[test]
    fn users_see_exactly_their_own_rows_across_reopens(ops in prop::collection::vec(op(), 1..16)) {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(check(ops, true))?;
    }
}
