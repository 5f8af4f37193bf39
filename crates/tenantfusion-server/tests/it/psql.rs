//! psql, the client everybody has (installed by `scripts/psql.sh` when
//! missing), against the server: logins, rows per user, errors.

use std::path::PathBuf;
use std::process::{Command, Output};

use crate::harness::TestServer;

pub fn psql_path() -> PathBuf {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/psql.sh");
    let out = Command::new(script).output().expect("run scripts/psql.sh");
    assert!(out.status.success(), "scripts/psql.sh failed: {out:?}");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// Runs psql as `user` with `password` on `database`, the statements in
/// `sql` (each `-c`), unaligned, tuples only.
async fn psql(
    server: &TestServer,
    user: &str,
    password: &str,
    database: &str,
    sql: &[&str],
) -> Output {
    let conninfo = format!(
        "host={} port={} user={user} dbname={database}",
        server.addr.ip(),
        server.addr.port()
    );
    psql_on(&conninfo, password, sql).await
}

/// Runs psql on the connection string `conninfo` with `password`, the
/// statements in `sql` (each `-c`), unaligned, tuples only.
pub async fn psql_on(conninfo: &str, password: &str, sql: &[&str]) -> Output {
    let mut command = Command::new(psql_path());
    command
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "10")
        .arg("--no-psqlrc")
        .arg("-X")
        .arg("-A")
        .arg("-t")
        .arg("-v")
        .arg("ON_ERROR_STOP=1")
        .arg(conninfo);
    for statement in sql {
        command.arg("-c").arg(statement);
    }
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

pub fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "psql failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_users_see_their_own_rows() {
    let server = TestServer::start().await;
    let out = psql(
        &server,
        "alice",
        "alice-pw",
        "tenantfusion",
        &[
            "INSERT INTO app.notes VALUES (1, 'from psql')",
            "SELECT id, body FROM app.notes",
        ],
    )
    .await;
    assert_eq!(stdout(&out), "INSERT 0 1\n1|from psql\n");
    let out = psql(
        &server,
        "bob",
        "bob-pw",
        "tenantfusion",
        &["SELECT count(*) FROM app.notes"],
    )
    .await;
    assert_eq!(stdout(&out), "0\n");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_is_refused_a_wrong_password_and_another_database() {
    let server = TestServer::start().await;
    let out = psql(&server, "alice", "wrong", "tenantfusion", &["SELECT 1"]).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("password authentication failed for user \"alice\""),
        "{err}"
    );
    let out = psql(&server, "alice", "alice-pw", "postgres", &["SELECT 1"]).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("database \"postgres\" does not exist"),
        "{err}"
    );
    // An error in a statement names its code; psql stops there (ON_ERROR_STOP).
    let out = psql(
        &server,
        "alice",
        "alice-pw",
        "tenantfusion",
        &["SELECT * FROM app.missing", "SELECT 'not reached'"],
    )
    .await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("TABLE_NOT_FOUND"), "{err}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("not reached"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_backslash_d_lists_what_each_caller_may_see() {
    let server = TestServer::start().await;
    let admin = server.admin_session();
    for sql in [
        "CREATE SHARED TABLE app.ledger (id BIGINT) WITH (ACCESS_LEVEL = PRIVATE)",
        "CREATE NAMESPACE vault",
        "CREATE SHARED TABLE vault.keys (id BIGINT) WITH (ACCESS_LEVEL = PRIVATE)",
    ] {
        admin.sql(sql).await.unwrap().collect().await.unwrap();
    }
    let list = |user: &'static str, password: &'static str, command: &'static str| {
        let server = &server;
        async move { stdout(&psql(server, user, password, "tenantfusion", &[command]).await) }
    };
    for command in ["\\d", "\\dt"] {
        let alice = list("alice", "alice-pw", command).await;
        assert!(alice.contains("app|notes|table|tenantfusion\n"), "{alice}");
        assert!(
            !alice.contains("ledger") && !alice.contains("vault"),
            "{alice}"
        );
        let everything = list("admin", "admin-pw", command).await;
        for table in ["app|ledger|table", "app|notes|table", "vault|keys|table"] {
            assert!(everything.contains(table), "{everything}");
        }
    }
    assert_eq!(
        list("bob", "bob-pw", "\\dn").await,
        "app|tenantfusion\nsystem|tenantfusion\n"
    );
    assert!(
        list("admin", "admin-pw", "\\dn")
            .await
            .contains("vault|tenantfusion\n")
    );
    server.stop().await;
}
