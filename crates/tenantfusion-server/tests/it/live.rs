//! Live queries over the wire, read by psql as they happen
//! (`COPY (SUBSCRIBE ...) TO STDOUT`), and stopped by psql's cancel.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::harness::{TestServer, sqlstate};
use crate::psql::psql_path;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_reads_a_live_query_as_it_happens_and_cancels_it() {
    let server = TestServer::start().await;
    let alice = server.alice().await;
    let bob = server.bob().await;
    alice
        .execute("INSERT INTO app.notes VALUES (1, 'first')", &[])
        .await
        .unwrap();
    // psql writes COPY data through stdio, fully buffered into a pipe:
    // stdbuf makes it line-buffered, as on a terminal.
    let mut child = Command::new("stdbuf")
        .arg("-oL")
        .arg(psql_path())
        .env("PGPASSWORD", "alice-pw")
        .args([
            "-X",
            "-A",
            "-t",
            "-c",
            "COPY (SUBSCRIBE TO app.notes) TO STDOUT",
        ])
        .arg(format!(
            "host={} port={} user=alice dbname=tenantfusion",
            server.addr.ip(),
            server.addr.port()
        ))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines, received) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let next = || received.recv_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!(next(), "snapshot\t1\tfirst");
    // Bob's rows are not alice's to see; hers arrive as they are written.
    bob.execute("INSERT INTO app.notes VALUES (50, 'bob')", &[])
        .await
        .unwrap();
    alice
        .execute("INSERT INTO app.notes VALUES (2, 'tab\there')", &[])
        .await
        .unwrap();
    assert_eq!(next(), "insert\t2\ttab\\there");
    alice
        .execute("DELETE FROM app.notes WHERE id = 1", &[])
        .await
        .unwrap();
    assert_eq!(next(), "delete\t1\tfirst");

    // Ctrl-C: psql sends a CancelRequest, the server ends the live query.
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let output = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(!output.status.success());
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("cancel"), "{err}");
    // The live query is gone from the engine.
    let admin = server.admin().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rows = admin
            .query("SELECT count(*) FROM system.live_subscriptions", &[])
            .await
            .unwrap();
        if rows[0].get::<_, i64>(0) == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the live query outlived its cancel"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // COPY by the extended protocol is refused, with a reason (SUBSCRIBE
    // itself runs by both: see the psycopg test).
    let err = alice
        .query("COPY (SUBSCRIBE TO app.notes) TO STDOUT", &[])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "0A000", "{err}");
    // And a subscription to what alice may not read is refused as usual.
    let err = alice
        .simple_query("SUBSCRIBE TO system.users")
        .await
        .unwrap_err();
    assert!(!sqlstate(&err).starts_with("no SQLSTATE"), "{err}");
    server.stop().await;
}

/// The live queries running now.
async fn live_queries(server: &TestServer) -> i64 {
    let admin = server.admin().await;
    let rows = admin
        .query("SELECT count(*) FROM system.live_subscriptions", &[])
        .await
        .unwrap();
    rows[0].get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_gone_without_a_word_is_noticed_by_the_heartbeat() {
    let server = TestServer::start_with(tenantfusion_server::ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        live_heartbeat: Duration::from_millis(100),
        ..tenantfusion_server::ServerConfig::default()
    })
    .await;
    let mut child = Command::new(psql_path())
        .env("PGPASSWORD", "alice-pw")
        .args(["-X", "-A", "-t", "-c", "SUBSCRIBE TO app.notes"])
        .arg(format!(
            "host={} port={} user=alice dbname=tenantfusion",
            server.addr.ip(),
            server.addr.port()
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while live_queries(&server).await == 0 {
        assert!(Instant::now() < deadline, "the live query did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Killed: no cancel, no Terminate, and no event will come.
    child.kill().unwrap();
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while live_queries(&server).await != 0 {
        assert!(
            Instant::now() < deadline,
            "the live query of a client that went away still runs"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop().await;
}
