//! The `tenantfusion` binary stopped while clients write: by SIGTERM (a
//! graceful stop) and by SIGKILL. Restarted on the same data directory,
//! it holds every row whose INSERT was acknowledged.

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::harness::Process;

const USERS: i64 = 4;

async fn stopped_while_writing(signal: &str) {
    let data = tempfile::tempdir().unwrap();
    let mut server = Process::start(data.path());
    let port = server.port;
    let admin = server.connect("admin", "admin-pw").await;
    admin
        .batch_execute(
            "CREATE NAMESPACE app; CREATE USER TABLE app.notes (id BIGINT NOT NULL, body TEXT)",
        )
        .await
        .unwrap();
    for n in 0..USERS {
        admin
            .batch_execute(&format!("CREATE USER 'u{n}' WITH PASSWORD 'pw{n}'"))
            .await
            .unwrap();
    }
    let acknowledged: Arc<Mutex<Vec<BTreeSet<i64>>>> =
        Arc::new(Mutex::new(vec![BTreeSet::new(); USERS as usize]));
    let mut writers = Vec::new();
    for n in 0..USERS {
        let client = server.connect(&format!("u{n}"), &format!("pw{n}")).await;
        let acknowledged = Arc::clone(&acknowledged);
        writers.push(tokio::spawn(async move {
            let insert = client
                .prepare("INSERT INTO app.notes VALUES ($1, 'row')")
                .await
                .unwrap();
            for id in 0.. {
                if client.execute(&insert, &[&id]).await.is_err() {
                    break;
                }
                acknowledged.lock().unwrap()[n as usize].insert(id);
            }
        }));
    }
    // Let every writer get some rows acknowledged, then stop the server.
    let deadline = Instant::now() + Duration::from_secs(60);
    while acknowledged
        .lock()
        .unwrap()
        .iter()
        .any(|ids| ids.len() < 20)
    {
        assert!(Instant::now() < deadline, "writers made no progress");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(server.pid().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let exit = server.wait().await;
    if signal == "TERM" {
        assert!(exit.success(), "a graceful stop exits cleanly: {exit:?}");
    }
    for writer in writers {
        writer.await.unwrap();
    }
    let server = Process::start_on(data.path(), port);
    let acknowledged = acknowledged.lock().unwrap().clone();
    for n in 0..USERS {
        let client = server.connect(&format!("u{n}"), &format!("pw{n}")).await;
        let rows = client.query("SELECT id FROM app.notes", &[]).await.unwrap();
        let found: BTreeSet<i64> = rows.iter().map(|r| r.get(0)).collect();
        let lost: Vec<_> = acknowledged[n as usize].difference(&found).collect();
        assert!(
            lost.is_empty(),
            "u{n} lost acknowledged rows {lost:?} after SIG{signal}"
        );
        // At most the one insert in flight at the stop was written without
        // its acknowledgement reaching the client.
        assert!(found.len() <= acknowledged[n as usize].len() + 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_writing_keeps_every_acknowledged_row() {
    stopped_while_writing("TERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_writing_keeps_every_acknowledged_row() {
    stopped_while_writing("KILL").await;
}
