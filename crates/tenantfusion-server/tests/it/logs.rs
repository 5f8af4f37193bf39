//! What the server logs: logins, failed logins and slow statements, with
//! users and times; never a statement's text, where passwords travel.

use std::time::Duration;

use crate::harness::Process;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_failures_and_slow_statements_are_logged_and_passwords_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("tenantfusion.toml");
    let log = dir.path().join("server.log");
    std::fs::write(&config, "[server]\nslow_statement_ms = 1\n").unwrap();
    let server = Process::start_logged(&data, &config, &log);
    let admin = server.connect("admin", "admin-pw").await;
    admin
        .batch_execute("CREATE USER 'alice' WITH PASSWORD 'first-sekrit'")
        .await
        .unwrap();
    admin
        .batch_execute("ALTER USER 'alice' WITH PASSWORD 'second-sekrit'")
        .await
        .unwrap();
    let _ = server
        .config("alice", "first-sekrit")
        .connect(tokio_postgres::NoTls)
        .await
        .err()
        .expect("the old password was accepted");
    let alice = server.connect("alice", "second-sekrit").await;
    alice
        .simple_query("SELECT count(*) FROM generate_series(1, 3000000)")
        .await
        .unwrap();
    // The log is written as it happens; give the last line a moment.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("logged in") && text.contains("user=alice"),
        "{text}"
    );
    assert!(text.contains("login failed"), "{text}");
    assert!(text.contains("slow statement"), "{text}");
    assert!(
        !text.contains("sekrit"),
        "a password reached the log:\n{text}"
    );
    assert!(
        !text.contains("generate_series"),
        "a statement's text reached the log:\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tenantfusion.toml");
    let log = dir.path().join("server.log");
    std::fs::write(&config, "").unwrap();
    let server = Process::start_logged_with(
        &dir.path().join("data"),
        &config,
        &log,
        &[
            std::ffi::OsStr::new("--log-format"),
            std::ffi::OsStr::new("json"),
        ],
    );
    let admin = server.connect("admin", "admin-pw").await;
    admin.batch_execute("SELECT 1").await.unwrap();
    let refused = server
        .config("admin", "wrong")
        .connect(tokio_postgres::NoTls)
        .await;
    assert!(refused.is_err(), "a wrong password was accepted");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    let said = |words: &str| {
        lines
            .iter()
            .find(|l| {
                l["fields"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains(words))
            })
            .cloned()
    };
    let login = said("logged in").unwrap_or_else(|| panic!("{text}"));
    assert_eq!(login["level"], "INFO");
    assert_eq!(login["fields"]["user"], "admin");
    assert!(login["timestamp"].is_string());
    let failed = said("login failed").unwrap_or_else(|| panic!("{text}"));
    assert_eq!(failed["level"], "WARN");
}
