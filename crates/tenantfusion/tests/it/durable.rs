//! Durable storage: what an engine on a directory holds after it is closed,
//! killed or handed a damaged file.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use datafusion::common::ScalarValue;
use futures::StreamExt;
use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::prefix::PrefixStore;
use tenantfusion::{Durability, Engine, EngineConfig, Storage};

use crate::common::{admin, count, error, error_code, prepared_rows, rows, run, user};

/// A durable engine's configuration on `dir`, fsync per commit group.
pub fn on(dir: &Path) -> EngineConfig {
    EngineConfig::default().with_storage(Storage::Directory {
        path: dir.to_path_buf(),
        durability: Durability::Fsync,
    })
}

fn open(dir: &Path) -> Engine {
    Engine::new(on(dir)).unwrap()
}

#[tokio::test]
async fn rows_tables_users_and_grants_come_back_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = open(dir.path());
        let admin = admin(&engine);
        for sql in [
            "CREATE NAMESPACE app",
            "CREATE NAMESPACE gone",
            "DROP NAMESPACE gone",
            "CREATE USER 'alice'",
            "CREATE USER 'bob'",
            "CREATE USER 'carol'",
            "CREATE TABLE app.notes (id BIGINT NOT NULL, body TEXT, tag TEXT DEFAULT 'none')",
            "CREATE SHARED TABLE app.prices (sku TEXT, price DOUBLE) WITH (ACCESS_LEVEL = 'restricted')",
            "GRANT SELECT ON app.prices TO 'alice'",
            "INSERT INTO app.prices VALUES ('a', 1.5), ('b', 2.5)",
            "CREATE STREAM TABLE app.events (kind TEXT) WITH (TTL_SECONDS = 60)",
            "CREATE TABLE app.dropped (id BIGINT)",
            "CREATE TABLE app.replaced (id BIGINT)",
        ] {
            run(&admin, sql).await;
        }
        let alice = user(&engine, "alice");
        let bob = user(&engine, "bob");
        let carol = user(&engine, "carol");
        run(
            &alice,
            "INSERT INTO app.notes (id, body) VALUES (1, 'a1'), (2, 'a2')",
        )
        .await;
        run(&bob, "INSERT INTO app.notes VALUES (10, 'b10', 'x')").await;
        // A subquery reading the caller's own rows.
        run(
            &alice,
            "INSERT INTO app.notes (id, body) SELECT id + 100, body FROM app.notes \
             WHERE id IN (SELECT max(id) FROM app.notes)",
        )
        .await;
        run(&carol, "INSERT INTO app.notes (id, body) VALUES (7, 'c7')").await;
        run(&alice, "INSERT INTO app.dropped VALUES (1)").await;
        run(&alice, "INSERT INTO app.replaced VALUES (1)").await;
        run(&admin, "DROP USER 'carol'").await;
        run(&admin, "DROP TABLE app.dropped").await;
        run(&admin, "CREATE OR REPLACE TABLE app.replaced (name TEXT)").await;
        run(&admin, "REVOKE SELECT ON app.prices FROM 'bob'").await;
        // The same rows on a second engine in this process: refused.
        let err = Engine::new(on(dir.path())).unwrap_err();
        assert_eq!(err.code(), "STORAGE_ERROR", "{err}");
    }

    let engine = open(dir.path());
    let admin = admin(&engine);
    let alice = user(&engine, "alice");
    let bob = user(&engine, "bob");
    assert_eq!(
        rows(&alice, "SELECT id, body, tag FROM app.notes ORDER BY id").await,
        ["1 a1 none", "2 a2 none", "102 a2 none"]
    );
    assert_eq!(
        rows(&bob, "SELECT id, body, tag FROM app.notes ORDER BY id").await,
        ["10 b10 x"]
    );
    // Defaults, NOT NULL and ownership are rebuilt with the table.
    run(&bob, "INSERT INTO app.notes (id, body) VALUES (11, 'b11')").await;
    assert_eq!(
        rows(&bob, "SELECT tag FROM app.notes WHERE id = 11").await,
        ["none"]
    );
    assert_eq!(
        error_code(&bob, "INSERT INTO app.notes (id) VALUES (NULL)").await,
        "NOT_NULL_VIOLATION"
    );
    assert_eq!(count(&alice, "SELECT count(*) FROM app.notes").await, 3);
    // A join of one user's rows with a shared table after reopen.
    assert_eq!(
        rows(
            &alice,
            "SELECT n.id, p.price FROM app.notes n JOIN app.prices p ON p.sku = 'a' \
             WHERE n.id = 1"
        )
        .await,
        ["1 1.5"]
    );
    // The grant to alice is back; bob never had one.
    assert_eq!(count(&alice, "SELECT count(*) FROM app.prices").await, 2);
    assert_eq!(
        error_code(&bob, "SELECT * FROM app.prices").await,
        "PERMISSION_DENIED"
    );
    // carol is gone with her rows: a new carol starts empty.
    assert_eq!(
        error_code(&admin, "EXECUTE AS USER 'carol' (SELECT 1)").await,
        "USER_NOT_FOUND"
    );
    run(&admin, "CREATE USER 'carol'").await;
    assert_eq!(
        count(&user(&engine, "carol"), "SELECT count(*) FROM app.notes").await,
        0
    );
    assert_eq!(
        error_code(&alice, "SELECT * FROM app.dropped").await,
        "TABLE_NOT_FOUND"
    );
    assert_eq!(
        error_code(&admin, "CREATE TABLE gone.t (id BIGINT)").await,
        "NAMESPACE_NOT_FOUND"
    );
    assert_eq!(
        rows(&alice, "SELECT count(*) FROM app.replaced").await,
        ["0"]
    );
    assert_eq!(
        rows(
            &admin,
            "SELECT table_name, table_type FROM system.tables \
             WHERE namespace = 'app' ORDER BY table_name"
        )
        .await,
        [
            "events stream",
            "notes user",
            "prices shared",
            "replaced user"
        ]
    );
    // Only tables that exist keep a directory.
    let tables: BTreeSet<String> = std::fs::read_dir(dir.path().join("tables"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(tables.len(), 3, "{tables:?}");
    assert!(tables.iter().all(|t| !t.starts_with("app.dropped")));
}

/// Where a durable engine of these tests keeps its rows: a directory, or
/// a directory for the logs and an S3 bucket for the segments.
pub struct Backend {
    pub config: EngineConfig,
    /// Where the segments are, to check which files a flush wrote.
    objects: Arc<dyn ObjectStore>,
}

impl Backend {
    pub fn local(dir: &Path) -> Self {
        Self {
            config: on(dir),
            objects: Arc::new(LocalFileSystem::new_with_prefix(dir).unwrap()),
        }
    }

    /// Logs in `dir`, segments under `prefix` of the bucket at `endpoint`.
    pub fn s3(dir: &Path, endpoint: &str, bucket: &str, prefix: &str) -> Self {
        let options = [
            ("endpoint", endpoint),
            ("allow_http", "true"),
            ("access_key_id", "test"),
            ("secret_access_key", "test"),
            ("region", "us-east-1"),
        ];
        let mut storage = Storage::from_url(&format!("s3://{bucket}/{prefix}")).unwrap();
        let mut objects = AmazonS3Builder::new().with_bucket_name(bucket);
        for (key, value) in options {
            storage = storage.with_s3_option(key, value);
            objects = objects.with_config(key.parse().unwrap(), value);
        }
        let Storage::S3 { path, .. } = &mut storage else {
            unreachable!()
        };
        *path = dir.to_path_buf();
        Self {
            config: EngineConfig::default().with_storage(storage),
            objects: Arc::new(PrefixStore::new(objects.build().unwrap(), prefix)),
        }
    }

    pub fn open(&self) -> Engine {
        Engine::new(self.config.clone()).unwrap()
    }

    /// The Parquet segments of `user` in the table stored as `storage`.
    pub async fn segments(&self, storage: &str, user: &str) -> Vec<String> {
        let prefix = ObjectPath::from_iter(["tables", storage, "data", &format!("u-{user}")]);
        let mut names: Vec<String> = self
            .objects
            .list(Some(&prefix))
            .map(|object| object.unwrap().location.filename().unwrap().to_string())
            .filter(|name| std::future::ready(name.ends_with(".parquet")))
            .collect()
            .await;
        names.sort();
        names
    }
}

/// What every query below must answer for alice and bob, whether their
/// rows are in Parquet segments, in memory, or both.
async fn check_notes(engine: &Engine, alice_ids: i64) {
    let alice = user(engine, "alice");
    let bob = user(engine, "bob");
    assert_eq!(
        count(&alice, "SELECT count(*) FROM app.notes").await,
        alice_ids
    );
    assert_eq!(count(&bob, "SELECT count(*) FROM app.notes").await, 21);
    assert_eq!(
        rows(&bob, "SELECT sum(id) FROM app.notes").await,
        [(100..=120).sum::<i64>().to_string()]
    );
    assert_eq!(
        rows(&alice, "SELECT id FROM app.notes WHERE id > 47 ORDER BY id").await,
        (48..=alice_ids).map(|i| i.to_string()).collect::<Vec<_>>()
    );
    // Bob's ids are not alice's, even through a subquery of the same table.
    assert_eq!(
        count(
            &alice,
            "SELECT count(*) FROM app.notes WHERE id IN (SELECT id + 99 FROM app.notes WHERE id < 3)"
        )
        .await,
        0
    );
    assert_eq!(
        count(
            &bob,
            "SELECT count(*) FROM app.notes WHERE id IN (SELECT id + 1 FROM app.notes)"
        )
        .await,
        20
    );
    // A join of the caller's rows with a shared table.
    assert_eq!(
        rows(
            &alice,
            "SELECT n.body, p.price FROM app.notes n JOIN app.prices p ON p.id = n.id ORDER BY n.id"
        )
        .await,
        ["a1 1.5", "a2 2.5"]
    );
    assert_eq!(
        rows(
            &bob,
            "SELECT n.body, p.price FROM app.notes n JOIN app.prices p ON p.id = n.id - 100 \
             ORDER BY n.id"
        )
        .await,
        ["b101 1.5", "b102 2.5"]
    );
    let plan = rows(&alice, "EXPLAIN SELECT body FROM app.notes WHERE id = 3").await;
    assert!(
        plan.iter()
            .any(|line| line.contains("FilterExec: id@0 = 3, projection=[body@1]")
                // The filter stays above; the store gets it to skip segments.
                && line.contains("PartitionScanExec: table=app.notes, projection=[id, body], predicate=id@0 = 3")),
        "{plan:?}"
    );
}

#[tokio::test]
async fn flushed_rows_are_read_from_parquet_per_user_and_come_back_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    flush_suite(&Backend::local(dir.path())).await;
}

/// Rows flushed to Parquet segments, read, changed, reopened and dropped
/// with their user; the same on every backend.
pub async fn flush_suite(backend: &Backend) {
    let storage = "app.notes.1";
    {
        let engine = backend.open();
        let admin = admin(&engine);
        for sql in [
            "CREATE NAMESPACE app",
            "CREATE USER 'alice'",
            "CREATE USER 'bob'",
            "CREATE TABLE app.notes (id BIGINT NOT NULL, body TEXT) WITH (FLUSH_POLICY = 'none')",
            "CREATE SHARED TABLE app.prices (id BIGINT, price DOUBLE)",
            "INSERT INTO app.prices VALUES (1, 1.5), (2, 2.5)",
        ] {
            run(&admin, sql).await;
        }
        let (alice, bob) = (user(&engine, "alice"), user(&engine, "bob"));
        for id in 1..=50 {
            run(
                &alice,
                &format!("INSERT INTO app.notes VALUES ({id}, 'a{id}')"),
            )
            .await;
        }
        let values: Vec<String> = (100..=120).map(|id| format!("({id}, 'b{id}')")).collect();
        run(
            &bob,
            &format!("INSERT INTO app.notes VALUES {}", values.join(", ")),
        )
        .await;
        check_notes(&engine, 50).await;

        assert_eq!(
            rows(&admin, "FLUSH TABLE app.notes").await,
            ["2 71"],
            "partitions and rows flushed"
        );
        assert_eq!(backend.segments(storage, "alice").await, ["seg-0.parquet"]);
        assert_eq!(backend.segments(storage, "bob").await, ["seg-0.parquet"]);
        check_notes(&engine, 50).await;
        // Some rows in a segment, one in memory.
        run(&alice, "INSERT INTO app.notes VALUES (51, 'a51')").await;
        check_notes(&engine, 51).await;
        // INSERT ... SELECT with a subquery reads the caller's segment rows.
        run(
            &alice,
            "INSERT INTO app.notes SELECT id + 1000, body FROM app.notes \
             WHERE id IN (SELECT max(id) - 1 FROM app.notes)",
        )
        .await;
        assert_eq!(
            rows(&alice, "SELECT body FROM app.notes WHERE id > 1000").await,
            ["a50"]
        );
        run(&alice, "INSERT INTO app.notes SELECT 52, 'a52'").await;
        run(&alice, "INSERT INTO app.notes VALUES (53, 'a53')").await;
    }
    let engine = backend.open();
    let admin = admin(&engine);
    assert_eq!(
        count(&user(&engine, "alice"), "SELECT count(*) FROM app.notes").await,
        54
    );
    assert_eq!(rows(&admin, "FLUSH TABLE app.notes").await, ["1 4"]);
    assert_eq!(
        backend.segments(storage, "alice").await,
        ["seg-0.parquet", "seg-1.parquet"]
    );
    // A plan made for alice alone knows her rows once her partition is
    // open: the segments', less what DELETE took out of them, plus the
    // rows not flushed.
    let alice = user(&engine, "alice");
    run(&alice, "DELETE FROM app.notes WHERE id = 1").await;
    run(
        &alice,
        "INSERT INTO app.notes VALUES (54, 'a54'), (55, 'a55')",
    )
    .await;
    let plan = rows(&alice, "EXPLAIN SELECT count(*) FROM app.notes").await;
    assert!(plan.join("\n").contains("55 as count(*)"), "{plan:?}");
    assert_eq!(count(&alice, "SELECT count(*) FROM app.notes").await, 55);
    // DROP USER takes bob's segments with his rows.
    run(&admin, "DROP USER 'bob'").await;
    assert!(backend.segments(storage, "bob").await.is_empty());
    run(&admin, "CREATE USER 'bob'").await;
    assert_eq!(
        count(&user(&engine, "bob"), "SELECT count(*) FROM app.notes").await,
        0
    );
}

#[tokio::test]
async fn flush_statements_and_policies_refuse_what_does_not_apply() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    let admin = admin(&engine);
    run(&admin, "CREATE USER 'alice'").await;
    run(&admin, "CREATE TABLE notes (id BIGINT)").await;
    run(
        &admin,
        "CREATE STREAM TABLE events (kind TEXT) WITH (TTL_SECONDS = 60)",
    )
    .await;
    let alice = user(&engine, "alice");
    run(&alice, "INSERT INTO notes VALUES (1)").await;
    for (session, sql, code) in [
        (&alice, "FLUSH TABLE notes", "PERMISSION_DENIED"),
        (&admin, "FLUSH TABLE nope", "TABLE_NOT_FOUND"),
        (&admin, "FLUSH TABLE events", "NOT_SUPPORTED"),
        (&admin, "FLUSH notes", "SYNTAX_ERROR"),
        (
            &admin,
            "CREATE TABLE t1 (id BIGINT) WITH (FLUSH_POLICY = 'rows:x')",
            "INVALID_ARGUMENT",
        ),
        (
            &admin,
            "CREATE TABLE t2 (id BIGINT) WITH (FLUSH_POLICY = 'bytes:10')",
            "INVALID_ARGUMENT",
        ),
        (
            &admin,
            "CREATE STREAM TABLE t3 (id BIGINT) WITH (FLUSH_POLICY = 'rows:10')",
            "INVALID_ARGUMENT",
        ),
    ] {
        assert_eq!(error_code(session, sql).await, code, "{sql}");
    }
    // Nothing was flushed or created by the failures.
    assert!(
        Backend::local(dir.path())
            .segments("default.notes.1", "alice")
            .await
            .is_empty()
    );
    assert_eq!(
        error_code(&admin, "SELECT * FROM t1").await,
        "TABLE_NOT_FOUND"
    );
    // On an engine without durable storage there is nothing to flush to.
    let memory = crate::common::engine().await;
    run(
        &crate::common::admin(&memory),
        "CREATE TABLE notes (id BIGINT)",
    )
    .await;
    assert_eq!(
        error_code(&crate::common::admin(&memory), "FLUSH TABLE notes").await,
        "NOT_SUPPORTED"
    );
}

#[tokio::test]
async fn a_damaged_log_fails_only_its_table_and_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = open(dir.path());
        let admin = admin(&engine);
        run(&admin, "CREATE TABLE notes (id BIGINT)").await;
        run(&admin, "CREATE TABLE other (id BIGINT)").await;
        let alice = user(&engine, "alice");
        for id in 0..3 {
            run(&alice, &format!("INSERT INTO notes VALUES ({id})")).await;
        }
        run(&alice, "INSERT INTO other VALUES (7)").await;
    }
    let table = dir.path().join("tables").join("default.notes.1");
    let segment = std::fs::read_dir(table.join("wal"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    // A flipped byte inside the first record: later good records show the
    // damage is not a torn last write, so it is an error, not a cut.
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[30] ^= 0xff;
    std::fs::write(&segment, bytes).unwrap();
    let engine = open(dir.path());
    let alice = user(&engine, "alice");
    for sql in ["SELECT * FROM notes", "INSERT INTO notes VALUES (9)"] {
        let err = alice.sql(sql).await.unwrap().collect().await.unwrap_err();
        assert_eq!(err.code(), "DATA_CORRUPTED", "{sql}: {err}");
        assert!(
            err.to_string()
                .contains(&table.join("wal").display().to_string()),
            "{err}"
        );
    }
    // The other table, and the catalog, are unaffected.
    assert_eq!(rows(&alice, "SELECT id FROM other").await, ["7"]);
    run(&admin(&engine), "CREATE TABLE more (id BIGINT)").await;
}

/// How a flushed file of alice's is damaged.
#[derive(Debug, Clone, Copy)]
enum Damage {
    /// Her Parquet segment loses its footer's magic (as a torn upload).
    Segment,
    /// A byte inside her manifest is flipped.
    Manifest,
}

#[tokio::test]
async fn a_damaged_segment_or_manifest_fails_only_its_partition_and_loses_nothing() {
    for damage in [Damage::Segment, Damage::Manifest] {
        damaged_partition(damage).await;
    }
}

async fn damaged_partition(damage: Damage) {
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = open(dir.path());
        run(&admin(&engine), "CREATE TABLE notes (id BIGINT)").await;
        let (alice, bob) = (user(&engine, "alice"), user(&engine, "bob"));
        run(&alice, "INSERT INTO notes VALUES (1), (2), (3)").await;
        run(&bob, "INSERT INTO notes VALUES (10), (20)").await;
        run(&admin(&engine), "FLUSH TABLE notes").await;
        // Acknowledged after the flush: only in the log.
        run(&alice, "INSERT INTO notes VALUES (4)").await;
    }
    let partition = dir
        .path()
        .join("tables")
        .join("default.notes.1")
        .join("data")
        .join("u-alice");
    let file = match damage {
        Damage::Segment => partition.join("seg-0.parquet"),
        Damage::Manifest => partition.join("manifest"),
    };
    let whole = std::fs::read(&file).unwrap();
    let mut bytes = whole.clone();
    match damage {
        Damage::Segment => {
            let end = bytes.len();
            bytes[end - 4..].copy_from_slice(b"XXXX");
        }
        Damage::Manifest => bytes[whole.len() / 2] ^= 0xff,
    }
    std::fs::write(&file, bytes).unwrap();
    {
        let engine = open(dir.path());
        let (alice, bob) = (user(&engine, "alice"), user(&engine, "bob"));
        // Every query that needs the segment; one its statistics rule out
        // (id = 4) may still be answered.
        for sql in [
            "SELECT count(*) FROM notes",
            "SELECT id FROM notes WHERE id = 2",
        ] {
            let err = error(&alice, sql).await;
            assert_eq!(err.code(), "DATA_CORRUPTED", "{damage:?} {sql}: {err}");
            let name = file.file_name().unwrap().to_str().unwrap();
            assert!(
                err.to_string().contains(&format!("u-alice/{name}")),
                "{damage:?}: {err}"
            );
        }
        // Bob's partition, and the table's other statements, are unaffected.
        assert_eq!(
            rows(&bob, "SELECT id FROM notes ORDER BY id").await,
            ["10", "20"]
        );
        run(&bob, "INSERT INTO notes VALUES (30)").await;
        assert_eq!(count(&bob, "SELECT count(*) FROM notes").await, 3);
    }
    // The file put back, every acknowledged row is there: the damage cost
    // reads, not rows.
    std::fs::write(&file, whole).unwrap();
    let engine = open(dir.path());
    assert_eq!(
        rows(&user(&engine, "alice"), "SELECT id FROM notes ORDER BY id").await,
        ["1", "2", "3", "4"]
    );
    assert_eq!(
        rows(&user(&engine, "bob"), "SELECT id FROM notes ORDER BY id").await,
        ["10", "20", "30"]
    );
}

/// 300 rows of alice's flushed to one segment; bodies `body-<id>-x`.
fn flipped_segment_dir() -> (tempfile::TempDir, std::path::PathBuf, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let expected: Vec<String> = (1..=300).map(|i| format!("{i} body-{i}-x")).collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let engine = open(dir.path());
        run(&admin(&engine), "CREATE TABLE notes (id BIGINT, body TEXT)").await;
        run(
            &user(&engine, "alice"),
            "INSERT INTO notes SELECT value, 'body-' || value || '-x' FROM generate_series(1, 300)",
        )
        .await;
        run(&admin(&engine), "FLUSH TABLE notes").await;
    });
    let file = dir
        .path()
        .join("tables")
        .join("default.notes.1")
        .join("data")
        .join("u-alice")
        .join("seg-0.parquet");
    (dir, file, expected)
}

#[tokio::test]
async fn a_flipped_byte_anywhere_in_a_segment_is_reported_never_read_as_rows() {
    let (dir, file, expected) = tokio::task::spawn_blocking(flipped_segment_dir)
        .await
        .unwrap();
    let whole = std::fs::read(&file).unwrap();
    // 48 offsets over the whole file: data pages, page headers, footer.
    let offsets: Vec<usize> = (0..48).map(|i| i * (whole.len() - 1) / 47).collect();
    for at in offsets {
        let mut bytes = whole.clone();
        bytes[at] ^= 0x04;
        std::fs::write(&file, &bytes).unwrap();
        let engine = open(dir.path());
        let alice = user(&engine, "alice");
        let sql = "SELECT id, body FROM notes ORDER BY id";
        match alice.sql(sql).await.unwrap().collect().await {
            Ok(_) => panic!("byte {at} flipped: the damaged segment was read as rows"),
            Err(err) => {
                assert_eq!(err.code(), "DATA_CORRUPTED", "byte {at}: {err}");
                assert!(err.to_string().contains("u-alice/seg-0.parquet"), "{err}");
            }
        }
        drop(engine);
        assert_eq!(
            std::fs::read(&file).unwrap(),
            bytes,
            "the damaged file was changed"
        );
    }
    std::fs::write(&file, &whole).unwrap();
    let engine = open(dir.path());
    assert_eq!(
        rows(
            &user(&engine, "alice"),
            "SELECT id, body FROM notes ORDER BY id"
        )
        .await,
        expected
    );
}

#[tokio::test]
async fn a_failed_flush_fails_the_statement_and_keeps_every_row() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir
        .path()
        .join("tables")
        .join("default.notes.1")
        .join("data");
    {
        let engine = open(dir.path());
        let admin = admin(&engine);
        run(
            &admin,
            "CREATE TABLE notes (id BIGINT) WITH (FLUSH_POLICY = 'none')",
        )
        .await;
        let (alice, bob) = (user(&engine, "alice"), user(&engine, "bob"));
        run(&alice, "INSERT INTO notes VALUES (1), (2)").await;
        run(&bob, "INSERT INTO notes VALUES (10)").await;
        // A file where alice's partition directory goes: her segment cannot
        // be written (as on a full or failing disk).
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join("u-alice"), b"in the way").unwrap();
        let err = error(&admin, "FLUSH TABLE notes").await;
        assert_eq!(err.code(), "STORAGE_ERROR", "{err}");
        assert!(err.to_string().contains("u-alice"), "{err}");
        // Nothing is lost and writing goes on.
        run(&alice, "INSERT INTO notes VALUES (3)").await;
        assert_eq!(
            rows(&alice, "SELECT id FROM notes ORDER BY id").await,
            ["1", "2", "3"]
        );
        assert_eq!(rows(&bob, "SELECT id FROM notes").await, ["10"]);
        std::fs::remove_file(data.join("u-alice")).unwrap();
        assert_eq!(rows(&admin, "FLUSH TABLE notes").await.len(), 1);
    }
    assert!(data.join("u-alice").join("seg-0.parquet").exists());
    let engine = open(dir.path());
    assert_eq!(
        rows(&user(&engine, "alice"), "SELECT id FROM notes ORDER BY id").await,
        ["1", "2", "3"]
    );
    assert_eq!(
        rows(&user(&engine, "bob"), "SELECT id FROM notes").await,
        ["10"]
    );
}

const CRASH_DIR: &str = "TENANTFUSION_CRASH_DIR";

/// What statement `n` of the crash writer does (by `n % 8`): inserts 3
/// rows of statement `n`, or sets `ver = 1` on those of an earlier one,
/// or deletes those of an earlier one (through a subquery). Statement `n`
/// runs as alice when even, bob when odd; `7` is bob's UPDATE of alice's
/// statement 6, which must change nothing.
fn crash_statement(n: i64) -> String {
    match n % 8 {
        3 => format!("UPDATE log SET ver = 1 WHERE id / 3 = {}", n - 2),
        7 => format!("UPDATE log SET ver = 1 WHERE id / 3 = {}", n - 1),
        5 => format!(
            "DELETE FROM log WHERE id IN (SELECT id FROM log WHERE id / 3 = {})",
            n - 4
        ),
        _ => format!(
            "INSERT INTO log VALUES ({a}, '{who}', 0), ({b}, '{who}', 0), ({c}, '{who}', 0)",
            a = n * 3,
            b = n * 3 + 1,
            c = n * 3 + 2,
            who = crash_user(n),
        ),
    }
}

fn crash_user(n: i64) -> &'static str {
    if n % 2 == 0 { "alice" } else { "bob" }
}

fn is_insert(n: i64) -> bool {
    !matches!(n % 8, 3 | 5 | 7)
}

/// Not a test on its own: the child process of
/// [`acknowledged_writes_survive_kill_9`], run by it with `CRASH_DIR` set.
/// It writes until killed, printing each statement once acknowledged.
#[tokio::test]
async fn crash_writer_child_process() {
    let Ok(dir) = std::env::var(CRASH_DIR) else {
        return;
    };
    let engine = open(Path::new(&dir));
    let admin = admin(&engine);
    // Flushed every few statements, so kills land in flushes too.
    run(
        &admin,
        "CREATE TABLE IF NOT EXISTS log (id BIGINT NOT NULL, who TEXT, ver BIGINT) \
         WITH (FLUSH_POLICY = 'rows:24')",
    )
    .await;
    for name in ["alice", "bob"] {
        run(&admin, &format!("CREATE USER IF NOT EXISTS '{name}'")).await;
    }
    let sessions = [user(&engine, "alice"), user(&engine, "bob")];
    // Continue after the last insert any user made (a change after it
    // may run again: each is idempotent).
    let mut next = 0;
    for session in &sessions {
        next = next.max(count(session, "SELECT coalesce(max(id) / 3 + 1, 0) FROM log").await);
    }
    println!("ready");
    loop {
        let session = &sessions[(next % 2) as usize];
        run(session, &crash_statement(next)).await;
        println!("ack {} {next}", crash_user(next));
        next += 1;
    }
}

/// The next of a xorshift sequence: the crash tests' kill points, the same
/// on every run.
fn next_seed(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

/// This test binary run as the crash child `test` on `dir`, and the lines
/// it prints.
fn crash_child(
    test: &str,
    dir: &Path,
) -> (
    std::process::Child,
    std::io::Lines<BufReader<std::process::ChildStdout>>,
) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            &format!("durable::{test}"),
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CRASH_DIR, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    (child, lines)
}

/// The statement number and user of an `ack {who} {n}` line.
fn ack(line: &str) -> Option<(i64, String)> {
    let (who, n) = line.strip_prefix("ack ")?.split_once(' ')?;
    Some((n.parse().ok()?, who.to_string()))
}

/// A writer process inserting, updating and deleting (and flushing on its
/// table's policy) is killed (SIGKILL) at random points, 20 times; after
/// each kill the directory is reopened and every acknowledged change is
/// there, for the user who made it, and no statement is there in part.
#[tokio::test]
async fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut acked: BTreeMap<i64, String> = BTreeMap::new();
    // Statements stored though their acknowledgement was never read: the
    // one in flight when a writer was killed.
    let mut unacked: BTreeSet<i64> = BTreeSet::new();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for round in 0..20 {
        let acks_before_kill = 1 + (next_seed(&mut seed) % 40) as usize;
        let (mut child, mut lines) = crash_child("crash_writer_child_process", dir.path());
        let mut seen = 0;
        let mut ready = false;
        while seen < acks_before_kill {
            let Some(line) = lines.next() else { break };
            let line = line.unwrap();
            // libtest prints the test name on the same line, without a newline.
            ready |= line.ends_with("ready");
            if let Some((n, who)) = ack(&line) {
                acked.insert(n, who);
                seen += 1;
            }
        }
        assert!(ready, "round {round}: the writer did not start");
        // Mid-statement, not just between them.
        std::thread::sleep(std::time::Duration::from_micros(seed % 3000));
        child.kill().unwrap();
        // Acknowledgements printed before the kill count too.
        for line in lines {
            let Ok(line) = line else { break };
            if let Some((n, who)) = ack(&line) {
                acked.insert(n, who);
            }
        }
        child.wait().unwrap();

        let engine = open(dir.path());
        // Statement -> (its rows' user, how many, their versions).
        let mut stored: BTreeMap<i64, (String, usize, BTreeSet<i64>)> = BTreeMap::new();
        for name in ["alice", "bob"] {
            for row in rows(&user(&engine, name), "SELECT id, who, ver FROM log").await {
                let mut cells = row.split(' ');
                let (id, who, ver) = (
                    cells.next().unwrap(),
                    cells.next().unwrap(),
                    cells.next().unwrap(),
                );
                assert_eq!(who, name, "round {round}: {name} sees a row of {who}");
                let statement = id.parse::<i64>().unwrap() / 3;
                let entry =
                    stored
                        .entry(statement)
                        .or_insert((who.to_string(), 0, BTreeSet::new()));
                entry.1 += 1;
                entry.2.insert(ver.parse().unwrap());
            }
        }
        let last_acked = acked.keys().next_back().copied().unwrap_or(-1);
        // A change may be stored without its acknowledgement only if it was
        // the one in flight: at most one past the last acknowledged.
        let may_be_applied = |n: i64| acked.contains_key(&n) || n <= last_acked + 1;
        for (n, who) in acked.iter().filter(|(n, _)| is_insert(**n)) {
            if *n % 8 == 1 && may_be_applied(n + 4) {
                continue; // deleted by statement n + 4
            }
            assert!(
                stored.get(n).is_some_and(|s| s.0 == *who && s.1 == 3),
                "round {round}: acknowledged statement {n} of {who} is not whole: {:?}",
                stored.get(n)
            );
        }
        let mut new_unacked = 0;
        for (n, (_, rows, versions)) in &stored {
            assert!(
                is_insert(*n),
                "round {round}: rows of statement {n}, which inserts none"
            );
            assert_eq!(*rows, 3, "round {round}: statement {n} is there in part");
            assert_eq!(
                versions.len(),
                1,
                "round {round}: statement {n} updated in part"
            );
            let ver = *versions.first().unwrap();
            if *n % 8 == 1 {
                assert!(
                    !acked.contains_key(&(n + 4)),
                    "round {round}: {n} was deleted"
                );
                if acked.contains_key(&(n + 2)) {
                    assert_eq!(ver, 1, "round {round}: the update of {n} is lost");
                } else {
                    assert!(
                        ver == 0 || may_be_applied(n + 2),
                        "round {round}: {n} at {ver}"
                    );
                }
            } else {
                assert_eq!(
                    ver, 0,
                    "round {round}: statement {n} changed by another user"
                );
            }
            if !acked.contains_key(n) && unacked.insert(*n) {
                new_unacked += 1;
            }
        }
        assert!(
            new_unacked <= 1,
            "round {round}: {new_unacked} statements stored without acknowledgement; \
             only the one in flight may be"
        );
    }
    assert!(acked.len() >= 20, "{} statements acknowledged", acked.len());
    // The rounds did update, delete and flush.
    assert!(acked.keys().any(|n| n % 8 == 3) && acked.keys().any(|n| n % 8 == 5));
    let flushed = Backend::local(dir.path())
        .segments("default.log.1", "alice")
        .await;
    assert!(!flushed.is_empty(), "no flush happened");
}

#[tokio::test]
async fn verify_reads_everything_and_reports_damage_changing_nothing() {
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = open(dir.path());
        let admin = admin(&engine);
        run(&admin, "CREATE TABLE notes (id BIGINT, body TEXT)").await;
        run(&admin, "CREATE TABLE other (id BIGINT)").await;
        let alice = user(&engine, "alice");
        run(
            &alice,
            "INSERT INTO notes SELECT value, 'n' FROM generate_series(1, 300)",
        )
        .await;
        run(&admin, "FLUSH TABLE notes").await;
        run(&alice, "INSERT INTO notes VALUES (301, 'logged')").await;
        run(&user(&engine, "bob"), "INSERT INTO notes VALUES (1, 'bob')").await;
        let report = rows(&admin, "VERIFY DATABASE").await;
        assert_eq!(report.len(), 3, "{report:?}");
        assert!(report.iter().all(|r| r.contains(" ok ")), "{report:?}");
        assert!(report[0].starts_with("catalog"), "{report:?}");
        let notes = rows(&admin, "VERIFY TABLE notes").await;
        assert_eq!(notes.len(), 1);
        assert!(
            notes[0].contains("1 partitions, 1 Parquet segments checked"),
            "{notes:?}"
        );
        assert_eq!(
            error_code(&alice, "VERIFY TABLE notes").await,
            "PERMISSION_DENIED"
        );
        assert_eq!(
            error_code(&alice, "VERIFY DATABASE").await,
            "PERMISSION_DENIED"
        );
        // Wrapped, it is refused too.
        run(&admin, "CREATE USER 'alice'").await;
        assert_eq!(
            error_code(&admin, "EXECUTE AS USER 'alice' (VERIFY DATABASE)").await,
            "PERMISSION_DENIED"
        );
        for sql in ["EXPLAIN VERIFY DATABASE", "PREPARE p AS VERIFY TABLE notes"] {
            let code = error_code(&alice, sql).await;
            assert!(
                matches!(code, "SYNTAX_ERROR" | "NOT_SUPPORTED"),
                "{sql}: {code}"
            );
        }
    }
    // A byte flipped in the segment, another in the first record of the
    // table's newest log segment (records follow it: damage, not a tear).
    let table = dir.path().join("tables").join("default.notes.1");
    let segment = table.join("data").join("u-alice").join("seg-0.parquet");
    let mut bytes = std::fs::read(&segment).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    std::fs::write(&segment, bytes).unwrap();
    let log = std::fs::read_dir(table.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .max()
        .unwrap();
    let mut bytes = std::fs::read(&log).unwrap();
    bytes[8 + 16 + 2] ^= 0x10;
    std::fs::write(&log, bytes).unwrap();
    let before = crate::catalog_changes::snapshot(dir.path());
    let engine = open(dir.path());
    let report = rows(&admin(&engine), "VERIFY DATABASE").await;
    let damaged: Vec<&String> = report.iter().filter(|r| r.contains(" damaged ")).collect();
    assert_eq!(damaged.len(), 2, "{report:?}");
    assert!(
        damaged.iter().any(|r| r.contains("u-alice/seg-0.parquet")),
        "{report:?}"
    );
    assert!(
        damaged
            .iter()
            .any(|r| r.contains(&log.display().to_string())),
        "{report:?}"
    );
    // The other table and the catalog are fine, and say so.
    assert_eq!(
        report.iter().filter(|r| r.contains(" ok ")).count(),
        2,
        "{report:?}"
    );
    drop(engine);
    assert!(
        crate::catalog_changes::snapshot(dir.path()) == before,
        "VERIFY changed a file"
    );
}

/// A data directory with flushed and logged rows of two users; each
/// table's and the catalog's last record is a sentinel no answer needs (a
/// damaged last record is indistinguishable from a torn write, and is cut).
fn damage_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let engine = open(dir.path());
        let admin = admin(&engine);
        run(&admin, "CREATE TABLE notes (id BIGINT, body TEXT)").await;
        for who in ["alice", "bob"] {
            run(
                &user(&engine, who),
                &format!(
                    "INSERT INTO notes SELECT value, '{who}-' || value FROM generate_series(1, 200)"
                ),
            )
            .await;
        }
        run(&admin, "FLUSH TABLE notes").await;
        for who in ["alice", "bob"] {
            let session = user(&engine, who);
            run(
                &session,
                &format!("INSERT INTO notes VALUES (201, '{who}-201')"),
            )
            .await;
            run(&session, "UPDATE notes SET body = body || '!' WHERE id = 7").await;
        }
        run(
            &user(&engine, "sentinel"),
            "INSERT INTO notes VALUES (0, 's')",
        )
        .await;
        run(&admin, "CREATE TABLE sentinel (id BIGINT)").await;
    });
    dir
}

fn expected_notes(who: &str) -> Vec<String> {
    (1..=201)
        .map(|i| {
            let mark = if i == 7 { "!" } else { "" };
            format!("{i} {who}-{i}{mark}")
        })
        .collect()
}

#[test]
fn random_damage_anywhere_is_a_right_answer_or_data_corrupted() {
    use proptest::prelude::*;
    let pristine = damage_dir();
    let mut files: Vec<std::path::PathBuf> = crate::catalog_changes::snapshot(pristine.path())
        .into_iter()
        .map(|(path, _)| path)
        .collect();
    files.sort();
    let mut runner = proptest::test_runner::TestRunner::new(proptest::test_runner::Config {
        cases: tenantfusion_test_support::fuzz_cases(24),
        failure_persistence: None,
        ..Default::default()
    });
    let strategy = (
        0..files.len(),
        any::<usize>(),
        prop_oneof![
            (0u8..8).prop_map(|bit| Some(1u8 << bit)),
            Just(None), // cut the file here
        ],
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runner
        .run(&strategy, |(which, at, flip)| {
            let copy = tempfile::tempdir().unwrap();
            for (path, bytes) in crate::catalog_changes::snapshot(pristine.path()) {
                let to = copy
                    .path()
                    .join(path.strip_prefix(pristine.path()).unwrap());
                std::fs::create_dir_all(to.parent().unwrap()).unwrap();
                std::fs::write(to, bytes).unwrap();
            }
            let target = copy
                .path()
                .join(files[which].strip_prefix(pristine.path()).unwrap());
            let mut bytes = std::fs::read(&target).unwrap();
            if bytes.is_empty() {
                return Ok(());
            }
            let is_log = target.extension().is_some_and(|e| e == "wal");
            // A log's records are followed by zeros made ahead of them
            // (damage there is the store's own tests' concern): the damage
            // lands on what was written.
            let written = match is_log {
                true => bytes
                    .iter()
                    .rposition(|&b| b != 0)
                    .map_or(1, |last| last + 1),
                false => bytes.len(),
            };
            let at = at % written;
            match flip {
                Some(mask) => bytes[at] ^= mask,
                // A log cut at a record boundary is indistinguishable from
                // its end (see the module docs of the store's `segment`):
                // cuts are tried on manifests and segments, which know
                // their length.
                None if is_log => return Ok(()),
                None => bytes.truncate(at),
            }
            std::fs::write(&target, &bytes).unwrap();
            let what = format!("{} at {at} ({flip:?})", target.display());
            runtime.block_on(async {
                let engine = match Engine::new(on(copy.path())) {
                    Ok(engine) => engine,
                    Err(err) => {
                        prop_assert_eq!(err.code(), "DATA_CORRUPTED", "{}: {}", what, err);
                        return Ok(());
                    }
                };
                for who in ["alice", "bob"] {
                    let sql = "SELECT id, body FROM notes WHERE id > 0 ORDER BY id";
                    let answer = match user(&engine, who).sql(sql).await {
                        Ok(query) => query.collect().await,
                        Err(err) => Err(err),
                    };
                    match answer {
                        Ok(batches) => {
                            let mut got = Vec::new();
                            for batch in &batches {
                                for row in 0..batch.num_rows() {
                                    let id =
                                        datafusion::arrow::util::display::array_value_to_string(
                                            batch.column(0),
                                            row,
                                        )
                                        .unwrap();
                                    let body =
                                        datafusion::arrow::util::display::array_value_to_string(
                                            batch.column(1),
                                            row,
                                        )
                                        .unwrap();
                                    got.push(format!("{id} {body}"));
                                }
                            }
                            prop_assert_eq!(
                                got,
                                expected_notes(who),
                                "{}: a wrong answer for {}",
                                what,
                                who
                            );
                        }
                        Err(err) => {
                            prop_assert_eq!(err.code(), "DATA_CORRUPTED", "{}: {}", what, err);
                        }
                    }
                }
                Ok(())
            })
        })
        .unwrap();
}

#[tokio::test]
async fn a_log_cut_back_past_what_was_flushed_is_reported() {
    let dir = tokio::task::spawn_blocking(damage_dir).await.unwrap();
    let wal = dir
        .path()
        .join("tables")
        .join("default.notes.1")
        .join("wal");
    let segment = std::fs::read_dir(&wal)
        .unwrap()
        .map(|e| e.unwrap().path())
        .max()
        .unwrap();
    let whole = std::fs::read(&segment).unwrap();
    // Emptied, or cut to its header: what looked like a log just started.
    for len in [0, 8] {
        std::fs::write(&segment, &whole[..len]).unwrap();
        let engine = open(dir.path());
        for who in ["alice", "bob"] {
            let err = error(&user(&engine, who), "SELECT count(*) FROM notes").await;
            assert_eq!(err.code(), "DATA_CORRUPTED", "cut to {len}: {err}");
            assert!(
                err.to_string().contains("end of the log is missing"),
                "{err}"
            );
        }
        drop(engine);
        // Nothing of what was there is gone (an empty segment gets its
        // header written back, which loses nothing).
        let after = std::fs::read(&segment).unwrap();
        assert!(
            after.starts_with(&whole[..len]) && after.len() <= 8,
            "the log was changed"
        );
    }
    std::fs::write(&segment, &whole).unwrap();
    let engine = open(dir.path());
    assert_eq!(
        rows(
            &user(&engine, "alice"),
            "SELECT id, body FROM notes WHERE id > 0 ORDER BY id"
        )
        .await,
        expected_notes("alice")
    );
}

/// Byte offset of record `n` (from 1) in a log segment.
fn record_offset(segment: &[u8], n: usize) -> usize {
    let mut at = 8;
    for _ in 1..n {
        let len = u32::from_le_bytes(segment[at..at + 4].try_into().unwrap()) as usize;
        at += 16 + len;
    }
    at
}

#[tokio::test]
async fn salvage_gets_every_intact_row_out_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = open(dir.path());
        let admin = admin(&engine);
        run(&admin, "CREATE TABLE notes (id BIGINT, body TEXT)").await;
        run(&admin, "CREATE TABLE flushed (id BIGINT)").await;
        run(
            &admin,
            "CREATE SHARED TABLE board (id BIGINT) WITH (ACCESS_LEVEL = PUBLIC)",
        )
        .await;
        run(&admin, "INSERT INTO board VALUES (100), (101)").await;
        let alice = user(&engine, "alice");
        for id in 1..=6 {
            run(&alice, &format!("INSERT INTO notes VALUES ({id}, 'a{id}')")).await;
        }
        run(
            &user(&engine, "bob"),
            "INSERT INTO notes VALUES (10, 'b10'), (11, 'b11')",
        )
        .await;
        run(
            &alice,
            "INSERT INTO flushed SELECT value FROM generate_series(1, 50)",
        )
        .await;
        run(&admin, "FLUSH TABLE flushed").await;
        // Flushed rows changed after the flush: taken out by value.
        run(&admin, "CREATE TABLE edited (id BIGINT)").await;
        run(&alice, "INSERT INTO edited VALUES (1), (2), (3), (4), (5)").await;
        run(&admin, "FLUSH TABLE edited").await;
        run(&alice, "UPDATE edited SET id = 30 WHERE id = 3").await;
        run(&alice, "DELETE FROM edited WHERE id = 5").await;
    }
    // Alice's second insert damaged in the middle of the log, and the one
    // segment of `flushed`.
    let tables = dir.path().join("tables");
    let log = std::fs::read_dir(tables.join("default.notes.1").join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .max()
        .unwrap();
    let mut bytes = std::fs::read(&log).unwrap();
    let second = record_offset(&bytes, 2);
    bytes[second + 16 + 4] ^= 0x20;
    std::fs::write(&log, &bytes).unwrap();
    let segment = tables
        .join("default.flushed.2")
        .join("data")
        .join("u-alice")
        .join("seg-0.parquet");
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[40] ^= 0x20;
    std::fs::write(&segment, &bytes).unwrap();
    // The engine refuses what is damaged ...
    {
        let engine = open(dir.path());
        assert_eq!(
            error_code(&user(&engine, "alice"), "SELECT * FROM notes").await,
            "DATA_CORRUPTED"
        );
    }
    // ... and salvage reads past it, changing nothing.
    let before = crate::catalog_changes::snapshot(dir.path());
    let report = tenantfusion::salvage(&on(dir.path()).storage)
        .await
        .unwrap();
    assert!(
        crate::catalog_changes::snapshot(dir.path()) == before,
        "salvage wrote"
    );
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    let table = |name: &str| report.tables.iter().find(|t| t.table == name).unwrap();
    let ids = |rows: &[datafusion::arrow::record_batch::RecordBatch]| -> Vec<i64> {
        let mut ids: Vec<i64> = rows
            .iter()
            .flat_map(|b| {
                b.column(0)
                    .as_any()
                    .downcast_ref::<datafusion::arrow::array::Int64Array>()
                    .unwrap()
                    .values()
                    .to_vec()
            })
            .collect();
        ids.sort();
        ids
    };
    let notes = table("notes");
    let owners: BTreeMap<&str, Vec<i64>> = notes
        .partitions
        .iter()
        .map(|(owner, rows)| (owner.as_str(), ids(rows)))
        .collect();
    assert_eq!(
        owners["alice"],
        [1, 3, 4, 5, 6],
        "all but the damaged record"
    );
    assert_eq!(owners["bob"], [10, 11]);
    assert_eq!(notes.skipped.len(), 1, "{:?}", notes.skipped);
    assert!(
        notes.skipped[0].contains("records 2..2"),
        "{:?}",
        notes.skipped
    );
    assert!(notes.skipped[0].contains(&log.display().to_string()));
    let flushed = table("flushed");
    assert!(flushed.partitions.is_empty());
    assert!(
        flushed.skipped[0].contains("u-alice/seg-0.parquet"),
        "{:?}",
        flushed.skipped
    );
    let edited = table("edited");
    assert_eq!(ids(&edited.partitions[0].1), [1, 2, 4, 30]);
    assert!(edited.skipped.is_empty());
    let board = table("board");
    assert_eq!(board.partitions.len(), 1);
    assert_eq!(
        (board.partitions[0].0.as_str(), ids(&board.partitions[0].1)),
        ("", vec![100, 101])
    );
    // What was salvaged goes into a new directory, user by user.
    let fresh = tempfile::tempdir().unwrap();
    let engine = open(fresh.path());
    run(&admin(&engine), "CREATE TABLE notes (id BIGINT, body TEXT)").await;
    for (owner, rows) in &notes.partitions {
        let session = user(&engine, owner);
        for batch in rows {
            for row in 0..batch.num_rows() {
                let id =
                    datafusion::arrow::util::display::array_value_to_string(batch.column(0), row)
                        .unwrap();
                let body =
                    datafusion::arrow::util::display::array_value_to_string(batch.column(1), row)
                        .unwrap();
                run(
                    &session,
                    &format!("INSERT INTO notes VALUES ({id}, '{body}')"),
                )
                .await;
            }
        }
    }
    assert_eq!(
        count(&user(&engine, "alice"), "SELECT count(*) FROM notes").await,
        5
    );
    assert_eq!(
        count(&user(&engine, "bob"), "SELECT count(*) FROM notes").await,
        2
    );
    // A directory an engine holds is refused.
    let err = tenantfusion::salvage(&on(fresh.path()).storage)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "STORAGE_ERROR", "{err}");
}

/// An external table comes back from the catalog log alone; its files are
/// read again when first used, with the checks made at creation made again.
#[tokio::test]
async fn external_tables_come_back_after_reopen_and_are_checked_again() {
    let dir = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let csv = files.path().join("prices.csv");
    std::fs::write(&csv, "sym,px\nA,10\nB,20\n").unwrap();
    let config = || on(dir.path()).with_server_files_dir(files.path());
    {
        let engine = Engine::new(config()).unwrap();
        let admin = admin(&engine);
        run(&admin, "CREATE USER 'alice'").await;
        let create = format!(
            "CREATE EXTERNAL TABLE prices STORED AS CSV LOCATION '{}' \
             OPTIONS ('format.has_header' 'true', 'access_level' 'private')",
            csv.display()
        );
        run(&admin, &create).await;
        assert_eq!(count(&admin, "SELECT count(*) FROM prices").await, 2);
    }
    {
        let engine = Engine::new(config()).unwrap();
        let admin = admin(&engine);
        assert_eq!(
            rows(&admin, "SELECT sym, px FROM prices WHERE px > 15").await,
            ["B 20"]
        );
        // Still PRIVATE, as logged.
        let alice = user(&engine, "alice");
        assert_eq!(
            error_code(&alice, "SELECT * FROM prices").await,
            "PERMISSION_DENIED"
        );
    }
    // Files that changed their columns: the statement fails, with why; the
    // engine opens and every other table works.
    std::fs::write(&csv, "other\nx\n").unwrap();
    {
        let engine = Engine::new(config()).unwrap();
        let admin = admin(&engine);
        let err = error(&admin, "SELECT * FROM prices").await;
        assert_eq!(err.code(), "SCHEMA_MISMATCH", "{err}");
        assert!(err.to_string().contains("prices"), "{err}");
        run(&admin, "DROP TABLE prices").await;
    }
    // A directory no longer configured: refused when the table is opened.
    std::fs::write(&csv, "sym,px\nA,10\n").unwrap();
    {
        let engine = Engine::new(config()).unwrap();
        let create = format!(
            "CREATE EXTERNAL TABLE again STORED AS CSV LOCATION '{}' \
             OPTIONS ('format.has_header' 'true')",
            csv.display()
        );
        run(&admin(&engine), &create).await;
    }
    let engine = Engine::new(on(dir.path())).unwrap();
    let err = error(&admin(&engine), "SELECT * FROM again").await;
    assert_eq!(err.code(), "PERMISSION_DENIED", "{err}");
    assert!(err.to_string().contains("server_files"), "{err}");
}

/// A view comes back from the catalog log, planned again over the tables
/// there, and still runs as its reader.
#[tokio::test]
async fn views_come_back_after_reopen_and_run_as_their_reader() {
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = open(dir.path());
        let admin = admin(&engine);
        for sql in [
            "CREATE USER 'alice'",
            "CREATE USER 'bob'",
            "CREATE TABLE notes (id BIGINT, body TEXT)",
            "CREATE SHARED TABLE vault (secret TEXT) WITH (ACCESS_LEVEL = PRIVATE)",
            "CREATE VIEW recent AS SELECT id FROM notes WHERE id > 1",
            "CREATE VIEW secrets AS SELECT secret FROM vault",
            "CREATE VIEW gone AS SELECT 1 AS one",
            "DROP VIEW gone",
        ] {
            run(&admin, sql).await;
        }
        run(
            &user(&engine, "alice"),
            "INSERT INTO notes VALUES (1, 'a'), (2, 'b')",
        )
        .await;
        run(&user(&engine, "bob"), "INSERT INTO notes VALUES (3, 'c')").await;
    }
    let engine = open(dir.path());
    let alice = user(&engine, "alice");
    assert_eq!(rows(&alice, "SELECT id FROM recent").await, ["2"]);
    assert_eq!(
        rows(&user(&engine, "bob"), "SELECT id FROM recent").await,
        ["3"]
    );
    assert_eq!(
        error_code(&alice, "SELECT * FROM secrets").await,
        "PERMISSION_DENIED"
    );
    assert_eq!(
        error_code(&alice, "SELECT * FROM gone").await,
        "TABLE_NOT_FOUND"
    );
    let err = error(&admin(&engine), "DROP TABLE notes").await;
    assert!(err.to_string().contains("view 'default.recent'"), "{err}");
}

/// Tables the many-table crash writer writes at once, one task each.
const CRASH_TABLES: i64 = 12;

/// Not a test on its own: the child process of
/// [`acknowledged_writes_to_many_tables_survive_kill_9`], run by it with
/// `CRASH_DIR` set. One task per table, each as its own user, inserts rows
/// numbered 0, 1, 2, ... one statement at a time (so the tables' logs are
/// committed by the root's shared committers at once), printing each once
/// acknowledged, until killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_many_tables_child_process() {
    let Ok(dir) = std::env::var(CRASH_DIR) else {
        return;
    };
    let engine = Arc::new(open(Path::new(&dir)));
    let admin = admin(&engine);
    for t in 0..CRASH_TABLES {
        run(
            &admin,
            &format!("CREATE TABLE IF NOT EXISTS t{t} (id BIGINT NOT NULL, who TEXT)"),
        )
        .await;
        run(&admin, &format!("CREATE USER IF NOT EXISTS 'writer{t}'")).await;
    }
    let mut writers = Vec::new();
    for t in 0..CRASH_TABLES {
        let engine = Arc::clone(&engine);
        writers.push(tokio::spawn(async move {
            let who = format!("writer{t}");
            let session = user(&engine, &who);
            let mut next = count(&session, &format!("SELECT count(*) FROM t{t}")).await;
            loop {
                run(
                    &session,
                    &format!("INSERT INTO t{t} VALUES ({next}, '{who}')"),
                )
                .await;
                println!("ack {t} {next}");
                next += 1;
            }
        }));
    }
    println!("ready");
    // The writers go on until the process is killed; one failing ends it.
    let (failed, _, _) = futures::future::select_all(writers).await;
    panic!("a writer stopped: {failed:?}");
}

/// Twelve writers, each inserting into its own durable table (twelve logs
/// on the root's few committer threads), are killed (SIGKILL) at random
/// points, 8 times; after each kill every acknowledged row of every table
/// is there, each table holds exactly rows 0..n (nothing lost before an
/// acknowledged row), and at most the one row in flight per table is
/// there without its acknowledgement.
#[tokio::test]
async fn acknowledged_writes_to_many_tables_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    // Per table: the highest row acknowledged.
    let mut acked: BTreeMap<i64, i64> = BTreeMap::new();
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    for round in 0..8 {
        let acks_before_kill = 20 + (next_seed(&mut seed) % 100) as usize;
        let (mut child, mut lines) = crash_child("crash_many_tables_child_process", dir.path());
        let mut seen = 0;
        let note = |line: &str, acked: &mut BTreeMap<i64, i64>| {
            let Some((t, n)) = line
                .strip_prefix("ack ")
                .and_then(|rest| rest.split_once(' '))
                .and_then(|(t, n)| Some((t.parse::<i64>().ok()?, n.parse::<i64>().ok()?)))
            else {
                return false;
            };
            let highest = acked.entry(t).or_insert(n);
            *highest = (*highest).max(n);
            true
        };
        while seen < acks_before_kill {
            let Some(line) = lines.next() else { break };
            if note(&line.unwrap(), &mut acked) {
                seen += 1;
            }
        }
        assert_eq!(seen, acks_before_kill, "round {round}: the writer stopped");
        std::thread::sleep(std::time::Duration::from_micros(seed % 3000));
        child.kill().unwrap();
        for line in lines {
            let Ok(line) = line else { break };
            note(&line, &mut acked);
        }
        child.wait().unwrap();

        let engine = open(dir.path());
        for t in 0..CRASH_TABLES {
            let who = format!("writer{t}");
            let stored: Vec<i64> = rows(
                &user(&engine, &who),
                &format!("SELECT id FROM t{t} ORDER BY id"),
            )
            .await
            .iter()
            .map(|id| id.parse().unwrap())
            .collect();
            let expected: Vec<i64> = (0..stored.len() as i64).collect();
            assert_eq!(stored, expected, "round {round}: table t{t} has a gap");
            let highest = acked.get(&t).copied().unwrap_or(-1);
            let held = stored.len() as i64 - 1;
            assert!(
                held >= highest,
                "round {round}: t{t} holds rows up to {held}, {highest} was acknowledged"
            );
            assert!(
                held <= highest + 1,
                "round {round}: t{t} holds rows up to {held}, only {highest} was acknowledged"
            );
            // The row in flight counts from now on: the next writer goes on after it.
            acked.insert(t, held);
        }
        drop(engine);
    }
    assert!(
        acked.values().filter(|n| **n >= 0).count() > 1,
        "more than one table was written: {acked:?}"
    );
}

/// With one log committer for the whole engine, twenty tables written at
/// once by twenty users all get every row, in order, and keep them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_log_committer_writes_every_table() {
    let dir = tempfile::tempdir().unwrap();
    let config = || on(dir.path()).with_log_committers(1);
    {
        let engine = Arc::new(Engine::new(config()).unwrap());
        let admin = admin(&engine);
        for t in 0..20 {
            run(&admin, &format!("CREATE TABLE t{t} (id BIGINT, who TEXT)")).await;
        }
        let writers: Vec<_> = (0..20)
            .map(|t| {
                let engine = Arc::clone(&engine);
                tokio::spawn(async move {
                    let session = user(&engine, &format!("u{t}"));
                    for id in 0..10 {
                        run(&session, &format!("INSERT INTO t{t} VALUES ({id}, 'u{t}')")).await;
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.await.unwrap();
        }
    }
    let engine = Engine::new(config()).unwrap();
    for t in 0..20 {
        let who = format!("u{t}");
        let ids = rows(
            &user(&engine, &who),
            &format!("SELECT id FROM t{t} ORDER BY id"),
        )
        .await;
        let expected: Vec<String> = (0..10).map(|id| id.to_string()).collect();
        assert_eq!(ids, expected, "t{t}");
        assert!(
            rows(&user(&engine, "other"), &format!("SELECT id FROM t{t}"))
                .await
                .is_empty()
        );
    }
}

/// Bytes of every table's log under `dir`.
fn log_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(at) = pending.pop() {
        for entry in std::fs::read_dir(&at).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                pending.push(path);
            } else if path.components().any(|c| c.as_os_str() == "wal") {
                total += entry.metadata().unwrap().len();
            }
        }
    }
    total
}

#[tokio::test]
async fn a_change_by_key_of_a_flushed_row_logs_that_row_not_its_row_group() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    run(&admin(&engine), "CREATE NAMESPACE app").await;
    run(
        &admin(&engine),
        "CREATE TABLE app.kv (id BIGINT PRIMARY KEY, v BIGINT, body TEXT) \
         WITH (FLUSH_POLICY = 'none')",
    )
    .await;
    let alice = user(&engine, "alice");
    // 4,000 bodies of ~60 bytes: ~240 KB of strings in one row group.
    run(
        &alice,
        "INSERT INTO app.kv SELECT value, 0, \
         'a body long enough to be kept in a data buffer, row ' || value \
         FROM generate_series(0, 3999)",
    )
    .await;
    run(&admin(&engine), "FLUSH TABLE app.kv").await;
    let update = alice
        .prepare("UPDATE app.kv SET v = $1 WHERE id = $2")
        .await
        .unwrap();
    let delete = alice
        .prepare("DELETE FROM app.kv WHERE id = $1")
        .await
        .unwrap();
    let before = log_bytes(dir.path());
    // Runs from the second on are bound into the kept generic plan, whose
    // scan selects the row out of the decoded row group.
    for n in 0..20i64 {
        let params = vec![ScalarValue::from(n), ScalarValue::from(n * 97)];
        assert_eq!(prepared_rows(&update, params).await, ["1"]);
        let params = vec![ScalarValue::from(n * 101 + 1)];
        assert_eq!(prepared_rows(&delete, params).await, ["1"]);
    }
    let logged = log_bytes(dir.path()) - before;
    // 40 records of a row or two each: a few KB apiece with their IPC
    // schemas, never the row group's 240 KB of strings.
    assert!(logged < 40 * 8 * 1024, "40 changes logged {logged} bytes");
    assert_eq!(count(&alice, "SELECT count(*) FROM app.kv").await, 3_980);
    let changed = rows(&alice, "SELECT v, body FROM app.kv WHERE id = 97 * 19").await;
    assert_eq!(
        changed,
        ["19 a body long enough to be kept in a data buffer, row 1843"]
    );
}
