//! Changes to what exists are all-or-nothing across a failed log write and
//! a crash: a change the catalog log could not take is not applied, and a
//! `DROP USER` the process died in the middle of is finished on reopen.

use std::path::Path;

use tenantfusion::Engine;
use tenantfusion_store::{CatalogEvent, CatalogLog, WalOptions};

use crate::common::{admin, count, error, error_code, rows, run, user};
use crate::durable::on;

/// `app.notes` with two rows of alice's, restricted `app.prices`, users
/// alice and bob.
async fn setup(engine: &Engine) {
    let admin = admin(engine);
    for sql in [
        "CREATE NAMESPACE app",
        "CREATE USER 'alice'",
        "CREATE USER 'bob'",
        "CREATE TABLE app.notes (id BIGINT NOT NULL, body TEXT)",
        "CREATE SHARED TABLE app.prices (sku TEXT) WITH (ACCESS_LEVEL = 'restricted')",
        "INSERT INTO app.prices VALUES ('a')",
    ] {
        run(&admin, sql).await;
    }
    run(
        &user(engine, "alice"),
        "INSERT INTO app.notes VALUES (1, 'a1'), (2, 'a2')",
    )
    .await;
}

/// What `setup` made, unchanged.
async fn unchanged(engine: &Engine) {
    let alice = user(engine, "alice");
    assert_eq!(count(&alice, "SELECT count(*) FROM app.notes").await, 2);
    assert_eq!(
        rows(&alice, "SELECT body FROM app.notes ORDER BY id").await,
        ["a1", "a2"]
    );
    assert_eq!(
        error_code(&alice, "SELECT * FROM app.prices").await,
        "PERMISSION_DENIED"
    );
    assert!(engine.users().get("alice").is_some());
    assert!(engine.users().get("zed").is_none());
    let admin = admin(engine);
    assert_eq!(
        error_code(&admin, "SELECT * FROM app.more").await,
        "TABLE_NOT_FOUND"
    );
    assert_eq!(
        error_code(&admin, "CREATE TABLE extra.t (id BIGINT)").await,
        "NAMESPACE_NOT_FOUND"
    );
}

#[tokio::test]
async fn a_change_that_cannot_be_logged_is_not_applied() {
    for ddl in [
        "CREATE NAMESPACE extra",
        "CREATE TABLE app.more (id BIGINT)",
        "CREATE TABLE app.more AS SELECT 1 AS id",
        "DROP TABLE app.notes",
        "CREATE OR REPLACE TABLE app.notes (id BIGINT)",
        "CREATE OR REPLACE TABLE app.notes AS SELECT 9 AS id, 'x' AS body",
        "CREATE USER 'zed'",
        "DROP USER 'alice'",
        "GRANT SELECT ON app.prices TO 'alice'",
    ] {
        let dir = tempfile::tempdir().unwrap();
        {
            let engine = Engine::new(on(dir.path())).unwrap();
            setup(&engine).await;
            engine.fail_next_catalog_write();
            let err = error(&admin(&engine), ddl).await;
            assert_eq!(err.code(), "STORAGE_ERROR", "{ddl}: {err}");
            // Not applied here ...
            unchanged(&engine).await;
        }
        // ... nor after reopening, where the log takes changes again.
        let engine = Engine::new(on(dir.path())).unwrap();
        unchanged(&engine).await;
        run(&admin(&engine), "CREATE TABLE app.after (id BIGINT)").await;
    }
}

/// The catalog log's events, read with the engine closed.
fn catalog_events(dir: &Path) -> Vec<CatalogEvent> {
    let mut events = Vec::new();
    CatalogLog::open(dir.join("catalog"), WalOptions::default(), |event| {
        events.push(event);
        Ok(())
    })
    .unwrap();
    events
}

#[tokio::test]
async fn an_engine_opened_in_the_middle_of_drop_user_finishes_it() {
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = Engine::new(on(dir.path())).unwrap();
        setup(&engine).await;
        run(
            &user(&engine, "bob"),
            "INSERT INTO app.notes VALUES (3, 'b3')",
        )
        .await;
        run(&admin(&engine), "GRANT SELECT ON app.prices TO 'alice'").await;
    }
    // The process died right after logging the drop, before any table let
    // go of alice's rows: what the disk holds then.
    {
        let log = CatalogLog::open(
            dir.path().join("catalog"),
            WalOptions::default(),
            |_| Ok(()),
        )
        .unwrap();
        log.append(&CatalogEvent::DropUser {
            name: "alice".into(),
        })
        .await
        .unwrap();
    }
    {
        let engine = Engine::new(on(dir.path())).unwrap();
        assert!(engine.users().get("alice").is_none());
        // A new alice sees nothing of the old one's rows or grants.
        let alice = user(&engine, "alice");
        assert_eq!(count(&alice, "SELECT count(*) FROM app.notes").await, 0);
        assert_eq!(
            error_code(&alice, "SELECT * FROM app.prices").await,
            "PERMISSION_DENIED"
        );
        assert_eq!(
            rows(&user(&engine, "bob"), "SELECT body FROM app.notes").await,
            ["b3"]
        );
        run(&admin(&engine), "CREATE USER 'alice'").await;
    }
    let events = catalog_events(dir.path());
    let forgotten = events
        .iter()
        .position(|e| matches!(e, CatalogEvent::UserForgotten { name } if name == "alice"));
    let dropped = events
        .iter()
        .position(|e| matches!(e, CatalogEvent::DropUser { name } if name == "alice"));
    assert!(
        dropped < forgotten && forgotten.is_some(),
        "the finished drop is logged: {events:?}"
    );
    // And the rows stay gone.
    let engine = Engine::new(on(dir.path())).unwrap();
    assert_eq!(
        count(&user(&engine, "alice"), "SELECT count(*) FROM app.notes").await,
        0
    );
}

#[tokio::test]
async fn a_finished_drop_frees_the_name() {
    let engine = crate::common::engine().await;
    let admin = admin(&engine);
    run(&admin, "CREATE USER 'carol'").await;
    run(&admin, "DROP USER 'carol'").await;
    // Finished: the name is free again.
    run(&admin, "CREATE USER 'carol'").await;
    assert_eq!(
        error_code(&admin, "CREATE USER 'carol'").await,
        "USER_EXISTS"
    );
    assert_eq!(
        error_code(&admin, "DROP USER 'nobody'").await,
        "USER_NOT_FOUND"
    );
    run(&admin, "DROP USER IF EXISTS 'nobody'").await;
}

/// Every file under `dir` with its bytes.
pub fn snapshot(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if path.file_name().is_some_and(|n| n != "LOCK") {
                files.push((path.clone(), std::fs::read(&path).unwrap()));
            }
        }
    }
    files.sort();
    files
}

#[tokio::test]
async fn a_damaged_catalog_fails_the_open_and_nothing_is_cut_or_deleted() {
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = Engine::new(on(dir.path())).unwrap();
        run(&admin(&engine), "CREATE NAMESPACE app").await;
        for n in 0..5 {
            run(
                &admin(&engine),
                &format!("CREATE TABLE app.t{n} (id BIGINT)"),
            )
            .await;
            run(
                &user(&engine, "alice"),
                &format!("INSERT INTO app.t{n} VALUES ({n})"),
            )
            .await;
        }
    }
    let catalog = dir.path().join("catalog");
    let segment = std::fs::read_dir(&catalog)
        .unwrap()
        .map(|e| e.unwrap().path())
        .max()
        .unwrap();
    let good = std::fs::read(&segment).unwrap();
    // Record 2's length field: after the 8-byte magic and record 1
    // (a 16-byte header and its payload).
    let first = u32::from_le_bytes(good[8..12].try_into().unwrap()) as usize;
    let second = 8 + 16 + first;
    for bit in [0, 3, 9, 20, 31] {
        let mut bytes = good.clone();
        bytes[second + bit / 8] ^= 1 << (bit % 8);
        std::fs::write(&segment, &bytes).unwrap();
        let before = snapshot(dir.path());
        let err = Engine::new(on(dir.path())).map(drop).unwrap_err();
        assert_eq!(err.code(), "DATA_CORRUPTED", "bit {bit}: {err}");
        assert!(
            err.to_string().contains(&segment.display().to_string()),
            "{err}"
        );
        // Not a byte changed, not a table directory removed.
        assert!(
            snapshot(dir.path()) == before,
            "bit {bit}: the directory changed"
        );
    }
    std::fs::write(&segment, &good).unwrap();
    let engine = Engine::new(on(dir.path())).unwrap();
    for n in 0..5 {
        assert_eq!(
            count(
                &user(&engine, "alice"),
                &format!("SELECT count(*) FROM app.t{n}")
            )
            .await,
            1
        );
    }
}

#[tokio::test]
async fn a_change_whose_caller_goes_away_is_logged_and_applied_together() {
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = Engine::new(on(dir.path())).unwrap();
        let admin = admin(&engine);
        run(&admin, "CREATE NAMESPACE app").await;
        for n in 0..10 {
            let sql = format!("CREATE TABLE app.c{n} (id BIGINT)");
            let mut create = Box::pin(admin.sql(&sql));
            // Started (waiting for its log record to be durable), then dropped.
            let _ = futures::poll!(create.as_mut());
            drop(create);
        }
        // Each is there or not, consistently in the process and the log:
        // IF NOT EXISTS adds only those not made.
        for n in 0..10 {
            run(
                &admin,
                &format!("CREATE TABLE IF NOT EXISTS app.c{n} (id BIGINT)"),
            )
            .await;
        }
    }
    // The log replays: no table is created twice in it.
    let engine = Engine::new(on(dir.path())).unwrap();
    for n in 0..10 {
        assert_eq!(
            count(&admin(&engine), &format!("SELECT count(*) FROM app.c{n}")).await,
            0
        );
    }
}
