//! `tenantfusion shell`, fed by a pipe: on a data directory of its own and
//! on a server.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use crate::harness::TestServer;

fn shell(args: &[&str], env: &[(&str, &str)], input: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tenantfusion"))
        .arg("shell")
        .args(args)
        .envs(env.iter().copied())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "shell failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

#[test]
fn the_shell_on_a_data_directory() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_str().unwrap();
    let admin = shell(
        &["--data-dir", dir, "--user", "admin"],
        &[("TENANTFUSION_ADMIN_PASSWORD", "pw")],
        "CREATE NAMESPACE app;\n\
         CREATE USER TABLE app.notes (id BIGINT NOT NULL, body TEXT);\n\
         CREATE USER 'carol' WITH PASSWORD 'carol-pw';\n\
         \\du\n\
         \\dt\n\
         \\q\n\
         SELECT 'after quit';\n",
    );
    let out = stdout(&admin);
    assert!(out.contains(" carol   | user "), "{out}");
    assert!(out.contains(" app       | notes "), "{out}");
    assert!(!out.contains("after quit"), "{out}");

    let carol = shell(
        &["--data-dir", dir, "--user", "carol"],
        &[],
        "INSERT INTO app.notes\n  VALUES (1, 'two\n lines');\n\
         \\timing on\n\
         SELECT id, body FROM app.notes;\n\
         \\timing off\n\
         SELECT * FROM app.missing;\n\
         \\d app.notes\n\
         \\nonsense\n\
         SELECT 2 AS unfinished",
    );
    let out = stdout(&carol);
    assert!(out.starts_with("INSERT 0 1\n"), "{out}");
    assert!(out.contains("Timing is on."), "{out}");
    assert!(out.contains(" id | body "), "{out}");
    assert!(out.contains(" 1  | two\n lines "), "{out}");
    assert!(out.contains("(1 row)\nTime: "), "{out}");
    assert!(out.contains("ERROR:  TABLE_NOT_FOUND"), "{out}");
    assert!(out.contains("body"), "{out}");
    assert!(out.contains("invalid command \\nonsense"), "{out}");
    // What was left without its ';' runs at the end of the input.
    assert!(out.contains(" unfinished "), "{out}");

    let nobody = shell(&["--data-dir", dir, "--user", "nobody"], &[], "");
    assert!(!nobody.status.success());
    assert!(String::from_utf8_lossy(&nobody.stderr).contains("no user 'nobody'"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shell_on_a_server() {
    let server = TestServer::start().await;
    let url = format!(
        "postgres://alice@{}:{}/tenantfusion",
        server.addr.ip(),
        server.addr.port()
    );
    let output = tokio::task::spawn_blocking(move || {
        shell(
            &["--connect", &url],
            &[("PGPASSWORD", "alice-pw")],
            "INSERT INTO app.notes VALUES (5, 'over the wire');\n\
             SELECT id, body FROM app.notes;\n",
        )
    })
    .await
    .unwrap();
    let out = stdout(&output);
    assert!(out.starts_with("INSERT 0 1\n"), "{out}");
    assert!(out.contains(" 5  | over the wire "), "{out}");
    assert!(out.contains("(1 row)"), "{out}");
    let bob = server.bob().await;
    assert!(
        bob.query("SELECT * FROM app.notes", &[])
            .await
            .unwrap()
            .is_empty()
    );
    server.stop().await;
}
