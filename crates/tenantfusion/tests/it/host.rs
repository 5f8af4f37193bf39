//! A host database's own SessionContext with the tenantfusion catalog.

use datafusion::prelude::{SessionConfig, SessionContext};
use tenantfusion::{Role, TenantError, UserContext, attach_user};

use crate::common::{admin, engine, run, user};

fn host(engine: &tenantfusion::Engine, who: Option<&str>) -> SessionContext {
    let mut config = SessionConfig::new();
    if let Some(name) = who {
        attach_user(&mut config, UserContext::new(name, Role::User));
    }
    let ctx = SessionContext::new_with_config(config);
    engine.register_in(&ctx);
    ctx
}

#[tokio::test]
async fn host_context_sees_the_attached_users_rows() {
    let engine = engine().await;
    run(
        &admin(&engine),
        "CREATE USER TABLE app.kv (k TEXT, v BIGINT)",
    )
    .await;
    run(
        &user(&engine, "alice"),
        "INSERT INTO app.kv VALUES ('a', 1)",
    )
    .await;
    run(
        &user(&engine, "bob"),
        "INSERT INTO app.kv VALUES ('b', 2), ('c', 3)",
    )
    .await;

    for (who, expected) in [("alice", 1), ("bob", 2)] {
        let ctx = host(&engine, Some(who));
        // A SET cannot reach the identity: it is a typed extension, not an option.
        assert!(ctx.sql("SET tenantfusion.user_id = 'alice'").await.is_err());
        let batches = ctx
            .sql("SELECT * FROM tenantfusion.app.kv")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        assert_eq!(
            batches.iter().map(|b| b.num_rows()).sum::<usize>(),
            expected,
            "{who}"
        );
    }
}

#[tokio::test]
async fn host_context_without_a_user_is_refused() {
    let engine = engine().await;
    run(&admin(&engine), "CREATE USER TABLE app.kv (k TEXT)").await;
    run(
        &user(&engine, "alice"),
        "INSERT INTO app.kv VALUES ('secret')",
    )
    .await;
    let ctx = host(&engine, None);
    let err = ctx
        .sql("SELECT * FROM tenantfusion.app.kv")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap_err();
    assert_eq!(TenantError::from_datafusion(err).code(), "NO_USER_CONTEXT");
    let err = ctx
        .sql("INSERT INTO tenantfusion.app.kv VALUES ('x')")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap_err();
    assert_eq!(TenantError::from_datafusion(err).code(), "NO_USER_CONTEXT");
    let err = ctx
        .sql("CREATE TABLE tenantfusion.app.other (x INT)")
        .await
        .unwrap_err();
    assert_eq!(TenantError::from_datafusion(err).code(), "NOT_SUPPORTED");
}

/// A host table: the host's MemTable, one set of rows read by access level,
/// refused to every logged change, and its new rows seen by the next run of
/// a statement (its plans are not cached).
#[tokio::test]
async fn host_tables_are_read_by_access_level_and_not_changed_by_sql() {
    use std::sync::Arc;

    use datafusion::arrow::array::{Int64Array, RecordBatch};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::datasource::MemTable;
    use tenantfusion::AccessLevel;

    use crate::common::{count, error_code, rows};

    let engine = engine().await;
    run(&admin(&engine), "CREATE NAMESPACE host").await;
    let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
    let batch = |values: Vec<i64>| {
        RecordBatch::try_new(
            Arc::clone(&schema),
            vec![Arc::new(Int64Array::from(values))],
        )
        .unwrap()
    };
    let public =
        Arc::new(MemTable::try_new(Arc::clone(&schema), vec![vec![batch(vec![1, 2])]]).unwrap());
    let private =
        Arc::new(MemTable::try_new(Arc::clone(&schema), vec![vec![batch(vec![7])]]).unwrap());
    engine
        .register_host_table("host", "numbers", public, AccessLevel::Public)
        .await
        .unwrap();
    engine
        .register_host_table("host", "secrets", private.clone(), AccessLevel::Private)
        .await
        .unwrap();

    let (alice, bob) = (user(&engine, "alice"), user(&engine, "bob"));
    assert_eq!(count(&alice, "SELECT count(*) FROM host.numbers").await, 2);
    assert_eq!(count(&bob, "SELECT sum(n) FROM host.numbers").await, 3);
    assert_eq!(
        count(&admin(&engine), "SELECT n FROM host.secrets").await,
        7
    );
    for sql in [
        "SELECT * FROM host.secrets",
        "EXPLAIN SELECT * FROM host.secrets",
        "EXPLAIN ANALYZE SELECT * FROM host.secrets",
        "EXPLAIN ANALYZE INSERT INTO host.secrets VALUES (8)",
        "WITH s AS (SELECT * FROM host.secrets) SELECT * FROM s",
        "SELECT (SELECT max(n) FROM host.secrets)",
        "SELECT * FROM host.numbers WHERE n IN (SELECT n FROM host.secrets)",
        "INSERT INTO host.secrets VALUES (8)",
        "PREPARE q AS SELECT * FROM host.secrets WHERE n > $1",
        "COPY (SELECT * FROM host.numbers) TO '/tmp/host-numbers.csv' STORED AS CSV",
    ] {
        assert_eq!(error_code(&alice, sql).await, "PERMISSION_DENIED", "{sql}");
    }
    // A statement prepared over a table alice may read cannot be turned to
    // the private one; an administrator impersonating alice is alice.
    run(
        &alice,
        "PREPARE q AS SELECT count(*) FROM host.numbers WHERE n > $1",
    )
    .await;
    assert_eq!(count(&alice, "EXECUTE q(0)").await, 2);
    assert_eq!(
        error_code(
            &admin(&engine),
            "EXECUTE AS USER 'alice' (SELECT * FROM host.secrets)"
        )
        .await,
        "PERMISSION_DENIED"
    );
    assert_eq!(
        count(
            &admin(&engine),
            "EXECUTE AS USER 'alice' (SELECT count(*) FROM host.numbers)"
        )
        .await,
        2
    );

    // The host's own writes are read by the next run (no plan is kept).
    let sql = "SELECT count(*) FROM host.secrets";
    assert_eq!(count(&admin(&engine), sql).await, 1);
    assert_eq!(count(&admin(&engine), sql).await, 1);
    let ctx = SessionContext::new();
    ctx.register_table("s", private).unwrap();
    ctx.sql("INSERT INTO s VALUES (9)")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(count(&admin(&engine), sql).await, 2);

    // Nothing logged may depend on it.
    let dba = admin(&engine);
    for (sql, code) in [
        ("DROP TABLE host.numbers", "NOT_SUPPORTED"),
        ("DROP TABLE IF EXISTS host.numbers", "NOT_SUPPORTED"),
        (
            "CREATE OR REPLACE TABLE host.numbers (n BIGINT)",
            "NOT_SUPPORTED",
        ),
        ("CREATE TABLE host.numbers (n BIGINT)", "TABLE_EXISTS"),
        (
            "CREATE VIEW host.v AS SELECT n FROM host.numbers",
            "NOT_SUPPORTED",
        ),
        ("GRANT SELECT ON host.numbers TO alice", "INVALID_ARGUMENT"),
        ("DROP NAMESPACE host", "NAMESPACE_NOT_EMPTY"),
    ] {
        assert_eq!(error_code(&dba, sql).await, code, "{sql}");
    }
    assert_eq!(
        rows(&alice, "SELECT n FROM host.numbers ORDER BY n")
            .await
            .len(),
        2
    );
    // A copy is not a dependency.
    run(
        &dba,
        "CREATE TABLE host.copied AS SELECT n FROM host.numbers",
    )
    .await;
    assert_eq!(count(&dba, "SELECT count(*) FROM host.copied").await, 2);

    let again = Arc::new(MemTable::try_new(Arc::clone(&schema), vec![vec![]]).unwrap());
    let refused = |e: TenantError| e.code();
    for (namespace, table, level, code) in [
        ("host", "numbers", AccessLevel::Public, "TABLE_EXISTS"),
        ("nowhere", "t", AccessLevel::Public, "NAMESPACE_NOT_FOUND"),
        ("system", "t", AccessLevel::Public, "PERMISSION_DENIED"),
        ("host", "r", AccessLevel::Restricted, "INVALID_ARGUMENT"),
    ] {
        let err = engine
            .register_host_table(namespace, table, again.clone(), level)
            .await
            .unwrap_err();
        assert_eq!(refused(err), code, "{namespace}.{table}");
    }
}

/// The host's scalar functions: every session may call them, over its own
/// rows; a volatile one is called again on each run (its plans are not
/// cached), an immutable one may be.
#[tokio::test]
async fn host_scalar_functions_serve_every_session() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicI64, Ordering};

    use datafusion::arrow::array::{ArrayRef, Int64Array};
    use datafusion::arrow::datatypes::DataType;
    use datafusion::common::cast::as_int64_array;
    use datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};
    use tenantfusion::{Engine, EngineConfig};

    use crate::common::{count, rows};

    let doubled = create_udf(
        "doubled",
        vec![DataType::Int64],
        DataType::Int64,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let values = ColumnarValue::values_to_arrays(args)?;
            let input = as_int64_array(&values[0])?;
            let out: Int64Array = input.iter().map(|v| v.map(|v| v * 2)).collect();
            Ok(ColumnarValue::Array(Arc::new(out) as ArrayRef))
        }),
    );
    let calls = Arc::new(AtomicI64::new(0));
    let counted = Arc::clone(&calls);
    let ticket = create_udf(
        "ticket",
        vec![],
        DataType::Int64,
        Volatility::Volatile,
        Arc::new(move |_: &[ColumnarValue]| {
            let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
            Ok(ColumnarValue::Scalar(n.into()))
        }),
    );
    let config = EngineConfig::default()
        .with_scalar_function(Arc::new(doubled))
        .with_scalar_function(Arc::new(ticket));
    let engine = Engine::new(config).unwrap();
    for sql in [
        "CREATE NAMESPACE app",
        "CREATE USER 'alice'",
        "CREATE USER 'bob'",
    ] {
        run(&admin(&engine), sql).await;
    }
    run(&admin(&engine), "CREATE USER TABLE app.kv (v BIGINT)").await;
    run(
        &user(&engine, "alice"),
        "INSERT INTO app.kv VALUES (1), (2)",
    )
    .await;
    run(&user(&engine, "bob"), "INSERT INTO app.kv VALUES (10)").await;

    let sql = "SELECT doubled(v) FROM app.kv ORDER BY 1";
    for _ in 0..2 {
        assert_eq!(rows(&user(&engine, "alice"), sql).await, vec!["2", "4"]);
        assert_eq!(rows(&user(&engine, "bob"), sql).await, vec!["20"]);
    }
    let alice = user(&engine, "alice");
    let first = count(&alice, "SELECT ticket()").await;
    let second = count(&alice, "SELECT ticket()").await;
    assert!(
        second > first,
        "a volatile function runs again: {first}, {second}"
    );
    assert_eq!(
        crate::common::error_code(&alice, "SELECT doubled('x')").await,
        "PLAN_ERROR"
    );
}

#[tokio::test]
async fn the_catalog_and_default_namespace_take_the_hosts_names() {
    let config = tenantfusion::EngineConfig::default()
        .with_catalog_name("datafusion")
        .with_default_namespace("public");
    let engine = crate::common::engine_on(config).await;
    run(&admin(&engine), "CREATE USER TABLE notes (id BIGINT)").await;
    let alice = user(&engine, "alice");
    let bob = user(&engine, "bob");
    run(
        &alice,
        "INSERT INTO datafusion.public.notes VALUES (1), (2)",
    )
    .await;
    run(&bob, "INSERT INTO public.notes VALUES (7)").await;
    // One table by every name; each user still reads only their rows.
    for sql in [
        "SELECT count(*) FROM notes",
        "SELECT count(*) FROM public.notes",
        "SELECT count(*) FROM datafusion.public.notes",
    ] {
        assert_eq!(crate::common::count(&alice, sql).await, 2, "{sql}");
        assert_eq!(crate::common::count(&bob, sql).await, 1, "{sql}");
    }
    // The default name means another catalog now, which does not exist.
    let err = alice
        .sql("SELECT * FROM tenantfusion.public.notes")
        .await
        .unwrap_err();
    assert_eq!(err.code(), "TABLE_NOT_FOUND");
    let err = alice.sql("SELECT * FROM ghost").await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "TABLE_NOT_FOUND: table 'datafusion.public.ghost' not found"
    );
    // information_schema names the catalog so, and lists only bob's view.
    assert_eq!(
        crate::common::rows(
            &bob,
            "SELECT table_catalog, table_schema, table_name FROM information_schema.tables \
             WHERE table_schema = 'public'"
        )
        .await,
        ["datafusion public notes"]
    );
    // A host registers it under that name.
    let ctx = host(&engine, Some("bob"));
    let found = ctx
        .sql("SELECT id FROM datafusion.public.notes")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(found.iter().map(|b| b.num_rows()).sum::<usize>(), 1);
}

#[test]
fn a_bad_catalog_or_default_namespace_name_is_refused_at_open() {
    use tenantfusion::EngineConfig;
    let refused = |config: EngineConfig| match tenantfusion::Engine::new(config) {
        Ok(_) => panic!("opened"),
        Err(err) => err,
    };
    for name in ["", "a.b"] {
        let err = refused(EngineConfig::default().with_catalog_name(name));
        assert_eq!(err.code(), "INVALID_ARGUMENT", "{err}");
        let err = refused(EngineConfig::default().with_default_namespace(name));
        assert_eq!(err.code(), "INVALID_ARGUMENT", "{err}");
    }
    // Reserved, as CREATE NAMESPACE system is.
    let err = refused(EngineConfig::default().with_default_namespace("system"));
    assert_eq!(err.code(), "PERMISSION_DENIED", "{err}");
    let long = "c".repeat(100_000);
    assert!(tenantfusion::Engine::new(EngineConfig::default().with_catalog_name(long)).is_ok());
}

/// A host function that panics fails only the statement using it, with
/// INTERNAL and the panic's message, whether it panics while the statement
/// is planned (a constant argument is folded then), run, or prepared and
/// executed; the session, its user's other statements and other users go
/// on, and a write that panicked stored nothing.
#[tokio::test]
async fn a_panicking_function_fails_its_statement_only() {
    use std::sync::Arc;

    use datafusion::arrow::datatypes::DataType;
    use datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};
    use tenantfusion::{Engine, EngineConfig};

    use crate::common::{count, error, rows};

    let boom = create_udf(
        "boom",
        vec![DataType::Int64],
        DataType::Int64,
        Volatility::Immutable,
        Arc::new(|_: &[ColumnarValue]| panic!("boom went the host function")),
    );
    let engine = Engine::new(EngineConfig::default().with_scalar_function(Arc::new(boom))).unwrap();
    let admin = admin(&engine);
    run(&admin, "CREATE NAMESPACE app").await;
    run(&admin, "CREATE USER TABLE app.kv (v BIGINT)").await;
    let alice = user(&engine, "alice");
    run(&alice, "INSERT INTO app.kv VALUES (1), (2)").await;
    for sql in [
        "SELECT boom(1)",
        "SELECT boom(v) FROM app.kv",
        "INSERT INTO app.kv SELECT boom(v) FROM app.kv",
        "EXPLAIN ANALYZE SELECT boom(v) FROM app.kv",
    ] {
        let err = error(&alice, sql).await;
        assert_eq!(err.code(), "INTERNAL", "{sql}: {err}");
        assert!(
            err.to_string().contains("boom went the host function"),
            "{sql}: {err}"
        );
    }
    let prepared = alice
        .prepare("SELECT boom(v + $1) FROM app.kv")
        .await
        .unwrap();
    let err = match prepared.execute(vec![1i64.into()]).await {
        Ok(query) => query.collect().await.unwrap_err(),
        Err(err) => err,
    };
    assert_eq!(err.code(), "INTERNAL", "{err}");
    assert_eq!(count(&alice, "SELECT count(*) FROM app.kv").await, 2);
    assert_eq!(
        rows(&alice, "SELECT v FROM app.kv ORDER BY v").await,
        ["1", "2"]
    );
    run(&user(&engine, "bob"), "INSERT INTO app.kv VALUES (3)").await;
    assert_eq!(
        count(&user(&engine, "bob"), "SELECT count(*) FROM app.kv").await,
        1
    );
}
