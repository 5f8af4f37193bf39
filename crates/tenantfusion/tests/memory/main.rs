//! Memory-count tests: one provider per table, no allocation per lookup, and
//! nothing retained per finished session. A counting global allocator counts
//! per thread, and each test runs on a current-thread runtime, so tests
//! running in parallel do not disturb each other's counts.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;

use tenantfusion::{Engine, EngineConfig, Role, UserContext};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
    static LIVE_BYTES: Cell<i64> = const { Cell::new(0) };
}

fn note(allocations: u64, bytes: i64) {
    // `try_with`: the allocator also runs while thread-locals are torn down.
    let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + allocations));
    let _ = LIVE_BYTES.try_with(|c| c.set(c.get() + bytes));
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(1, layout.size() as i64);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note(0, -(layout.size() as i64));
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(1, new_size as i64 - layout.size() as i64);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

fn live_bytes() -> i64 {
    LIVE_BYTES.with(Cell::get)
}

async fn run(engine: &Engine, user: &UserContext, sql: &str) -> usize {
    let batches = engine
        .session(user.clone())
        .sql(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    batches.iter().map(|b| b.num_rows()).sum()
}

#[tokio::test(flavor = "current_thread")]
async fn hundred_users_ten_tables_ten_providers() {
    let engine = Engine::new(EngineConfig::default()).unwrap();
    let admin = UserContext::new("admin", Role::Dba);
    run(&engine, &admin, "CREATE NAMESPACE app").await;
    for t in 0..10 {
        run(
            &engine,
            &admin,
            &format!("CREATE TABLE app.t{t} (id BIGINT, owner TEXT)"),
        )
        .await;
    }
    let cache = Arc::clone(engine.schema_cache());
    let before: Vec<_> = (0..10)
        .map(|t| cache.get_provider("app", &format!("t{t}")).unwrap())
        .collect();

    for u in 0..100 {
        let user = UserContext::new(format!("user{u}"), Role::User);
        for t in 0..10 {
            run(
                &engine,
                &user,
                &format!("INSERT INTO app.t{t} VALUES ({u}, 'user{u}')"),
            )
            .await;
            assert_eq!(
                run(&engine, &user, &format!("SELECT * FROM app.t{t}")).await,
                1
            );
        }
    }
    assert_eq!(cache.provider_count(), 10);
    for (t, provider) in before.iter().enumerate() {
        let now = cache.get_provider("app", &format!("t{t}")).unwrap();
        assert!(Arc::ptr_eq(provider, &now), "t{t} got a second provider");
    }
    // Each user still sees exactly their own row.
    let user42 = UserContext::new("user42", Role::User);
    assert_eq!(
        run(
            &engine,
            &user42,
            "SELECT * FROM app.t3 WHERE owner = 'user42'"
        )
        .await,
        1
    );
    assert_eq!(
        run(
            &engine,
            &user42,
            "SELECT * FROM app.t3 WHERE owner <> 'user42'"
        )
        .await,
        0
    );
}

#[tokio::test(flavor = "current_thread")]
async fn provider_lookup_does_not_allocate() {
    let engine = Engine::new(EngineConfig::default()).unwrap();
    let admin = UserContext::new("admin", Role::Dba);
    run(&engine, &admin, "CREATE NAMESPACE app").await;
    for t in 0..100 {
        run(
            &engine,
            &admin,
            &format!("CREATE TABLE app.t{t} (id BIGINT)"),
        )
        .await;
    }
    let cache = engine.schema_cache();
    let names: Vec<String> = (0..100).map(|t| format!("t{t}")).collect();
    let before = allocations();
    let mut found = 0;
    for _ in 0..100 {
        for name in &names {
            found += cache.get_provider("app", name).is_some() as usize;
        }
    }
    let spent = allocations() - before;
    assert_eq!(found, 10_000);
    assert_eq!(spent, 0, "10,000 lookups allocated {spent} times");
    assert!(cache.get_provider("app", "missing").is_none());
    assert!(cache.get_provider("nope", "t1").is_none());
}

#[tokio::test(flavor = "current_thread")]
async fn finished_sessions_leave_nothing_behind() {
    let engine = Engine::new(EngineConfig::default()).unwrap();
    let admin = UserContext::new("admin", Role::Dba);
    run(&engine, &admin, "CREATE TABLE t (id BIGINT)").await;
    let query = "SELECT count(*) FROM t";
    // Warm up: lazily initialised statics of DataFusion and tokio.
    for u in 0..200 {
        run(
            &engine,
            &UserContext::new(format!("warm{u}"), Role::User),
            query,
        )
        .await;
    }

    const SESSIONS: i64 = 10_000;
    let before = live_bytes();
    for u in 0..SESSIONS {
        let user = UserContext::new(format!("user{u}"), Role::User);
        assert_eq!(run(&engine, &user, query).await, 1);
    }
    let growth = live_bytes() - before;
    let per_session = growth as f64 / SESSIONS as f64;
    println!(
        "live heap growth after {SESSIONS} sessions: {growth} bytes ({per_session:.2} per session)"
    );
    assert!(
        per_session < 1024.0,
        "each finished session keeps {per_session:.1} bytes"
    );
    // Nothing per user at all: 10,000 users must not cost even 1 byte each.
    assert!(
        growth < SESSIONS,
        "sessions retained {growth} bytes in total"
    );

    let before = allocations();
    let session = engine.session(UserContext::new("cheap", Role::User));
    let spent = allocations() - before;
    drop(session);
    assert!(spent <= 2, "creating a session allocated {spent} times");
}

#[tokio::test(flavor = "current_thread")]
async fn a_hundred_thousand_distinct_inserts_keep_no_plans_and_only_their_rows() {
    let engine = Engine::new(EngineConfig::default()).unwrap();
    let admin = UserContext::new("admin", Role::Dba);
    run(&engine, &admin, "CREATE TABLE t (id BIGINT, body TEXT)").await;
    let alice = UserContext::new("alice", Role::User);
    let session = engine.session(alice.clone());
    const INSERTS: i64 = 100_000;
    let insert = |i: i64| format!("INSERT INTO t VALUES ({i}, 'note {i}')");
    // Warm up: lazily initialised statics, the partition's first batch.
    for i in 0..100 {
        let query = session.sql(&insert(-i - 1)).await.unwrap();
        assert!(query.written_directly());
        query.collect().await.unwrap();
    }
    let before = live_bytes();
    for i in 0..INSERTS {
        session
            .sql(&insert(i))
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
    }
    let growth = live_bytes() - before;
    let per_insert = growth as f64 / INSERTS as f64;
    println!(
        "live heap growth after {INSERTS} single-row INSERTs: {growth} bytes ({per_insert:.0} per row)"
    );
    let stats = engine.plan_cache_stats();
    assert_eq!(stats.entries, 0, "{stats:?}");
    assert_eq!(stats.misses, 0, "INSERTs are not cached by text: {stats:?}");
    // What is kept is the rows themselves (about 22 bytes of values each:
    // an in-memory partition coalesces small batches), nothing per
    // statement.
    assert!(
        per_insert < 128.0,
        "each single-row INSERT keeps {per_insert:.0} bytes"
    );
    assert_eq!(
        run(&engine, &alice, "SELECT * FROM t WHERE id >= 0").await,
        INSERTS as usize
    );
}

#[tokio::test(flavor = "current_thread")]
async fn statements_differing_only_in_values_keep_one_plan_each() {
    let engine = Engine::new(EngineConfig::default()).unwrap();
    let admin = UserContext::new("admin", Role::Dba);
    run(&engine, &admin, "CREATE TABLE t (id BIGINT, body TEXT)").await;
    let alice = UserContext::new("alice", Role::User);
    run(
        &engine,
        &alice,
        "INSERT INTO t SELECT value, 'note' FROM generate_series(1, 100)",
    )
    .await;
    let select = |i: i64| format!("SELECT body FROM t WHERE id = {i}");
    let update = |i: i64| format!("UPDATE t SET body = 'n{i}' WHERE id = {}", i % 100);
    // Warm up: both shapes kept, lazily initialised statics.
    for i in 0..100 {
        run(&engine, &alice, &select(i)).await;
        run(&engine, &alice, &update(i)).await;
    }
    let kept = engine.plan_cache_stats();
    let before = live_bytes();
    const STATEMENTS: i64 = 20_000;
    for i in 0..STATEMENTS {
        assert_eq!(
            run(&engine, &alice, &select(i % 200)).await,
            usize::from(i % 200 <= 100 && i % 200 > 0)
        );
        run(&engine, &alice, &update(i)).await;
    }
    let growth = live_bytes() - before;
    println!(
        "live heap growth after {STATEMENTS} SELECTs and UPDATEs, each with its own values: {growth} bytes"
    );
    let stats = engine.plan_cache_stats();
    assert_eq!(stats.entries, 2, "{stats:?}");
    assert_eq!(stats.hits - kept.hits, 2 * STATEMENTS as u64, "{stats:?}");
    // Nothing is kept per statement (UPDATE rewrites rows of the same size).
    assert!(growth < 256 * 1024, "{growth} bytes kept");
}
