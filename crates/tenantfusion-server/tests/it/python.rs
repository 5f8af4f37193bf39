//! A third-party driver in another language: Python's psycopg 3 (installed
//! into a venv by `scripts/python-driver.sh`), running
//! `tests/python/driver.py` against the server.

use std::path::PathBuf;
use std::process::Command;

use crate::harness::TestServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_drives_the_server() {
    let server = TestServer::start().await;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let setup = Command::new(root.join("../../scripts/python-driver.sh"))
        .output()
        .unwrap();
    assert!(setup.status.success(), "{setup:?}");
    let python = String::from_utf8(setup.stdout).unwrap().trim().to_string();
    let mut command = Command::new(python);
    command
        .arg(root.join("tests/python/driver.py"))
        .arg(server.addr.ip().to_string())
        .arg(server.addr.port().to_string());
    let output = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "driver.py failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for check in [
        "scram login",
        "parameterised insert/select",
        "sqlstate",
        "wrong password refused",
        "driver transaction",
        "subscribe by copy",
        "subscribe by stream",
    ] {
        assert!(
            stdout.contains(&format!("{check}: ok")),
            "{check} missing:\n{stdout}"
        );
    }
    server.stop().await;
}
