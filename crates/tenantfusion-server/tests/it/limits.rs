//! Limits over the wire: the query memory pool (53200), a user's
//! concurrent statements (53200), the statement timeout and cancel
//! requests (57014), the idle-session timeout. The server stays up and
//! other sessions keep working.

use std::time::{Duration, Instant};

use tenantfusion::{EngineConfig, StatementLimits};
use tenantfusion_server::ServerConfig;
use tokio_postgres::NoTls;

use crate::harness::{TestServer, local, message, sqlstate};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_over_the_memory_pool_fails_alone() {
    let engine = EngineConfig::default().with_memory_limit(16 << 20);
    let server = TestServer::start_with_engine(engine, local()).await;
    let alice = server.alice().await;
    let err = alice
        .simple_query("SELECT array_agg(value) FROM generate_series(1, 20000000)")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "53200", "{err}");
    assert!(message(&err).contains("RESOURCES_EXHAUSTED"), "{err:?}");
    assert_eq!(alice.query("SELECT 1", &[]).await.unwrap().len(), 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_past_its_time_limit_ends() {
    let engine = EngineConfig::default().with_statement_limits(StatementLimits {
        timeout: Some(Duration::from_millis(200)),
        ..StatementLimits::default()
    });
    let server = TestServer::start_with_engine(engine, local()).await;
    let alice = server.alice().await;
    let started = Instant::now();
    let err = alice
        .simple_query("SELECT count(*) FROM generate_series(1, 100000000000)")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "57014", "{err}");
    assert!(message(&err).contains("TIMEOUT"), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(alice.query("SELECT 1", &[]).await.unwrap().len(), 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_statement_per_user_at_once_and_a_cancel_request_stops_it() {
    let engine = EngineConfig::default().with_statement_limits(StatementLimits {
        per_user: Some(1),
        ..StatementLimits::default()
    });
    let server = TestServer::start_with_engine(engine, local()).await;
    let busy = server.alice().await;
    let cancel = busy.cancel_token();
    let long = tokio::spawn(async move {
        busy.simple_query("SELECT count(*) FROM generate_series(1, 100000000000)")
            .await
    });
    // While it runs, alice's next statement is refused; bob's is not.
    let alice = server.alice().await;
    let bob = server.bob().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match alice.simple_query("SELECT 1").await {
            Err(err) => {
                assert_eq!(sqlstate(&err), "53200", "{err}");
                break;
            }
            Ok(_) => assert!(Instant::now() < deadline, "the long query never ran"),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(bob.query("SELECT 1", &[]).await.unwrap().len(), 1);
    cancel.cancel_query(NoTls).await.unwrap();
    let err = tokio::time::timeout(Duration::from_secs(30), long)
        .await
        .expect("the cancelled query went on")
        .unwrap()
        .unwrap_err();
    assert_eq!(sqlstate(&err), "57014", "{err}");
    // Alice's slot is free again.
    assert_eq!(alice.query("SELECT 1", &[]).await.unwrap().len(), 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_session_is_closed_and_a_busy_one_is_not() {
    let server = TestServer::start_with(ServerConfig {
        idle_session_timeout: Some(Duration::from_millis(300)),
        ..local()
    })
    .await;
    let idle = server.alice().await;
    let active = server.bob().await;
    let until = Instant::now() + Duration::from_millis(900);
    while Instant::now() < until {
        active.query("SELECT 1", &[]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        idle.query("SELECT 1", &[]).await.is_err(),
        "the idle session was kept"
    );
    assert!(idle.is_closed());
    assert_eq!(active.query("SELECT 1", &[]).await.unwrap().len(), 1);
    server.stop().await;
}

/// Reads until the server closes `socket`; how long that took, or `None`
/// if it is still open after 10 s.
async fn closed_within(socket: &mut tokio::net::TcpStream) -> Option<Duration> {
    use tokio::io::AsyncReadExt;
    let started = Instant::now();
    let mut sink = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut sink))
        .await
        .ok()
        .map(|_| started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_never_log_in_are_closed_at_the_startup_deadline() {
    use tokio::io::AsyncWriteExt;
    let config = ServerConfig {
        startup_timeout: Duration::from_millis(500),
        ..local()
    };
    let server = TestServer::start_with(config).await;
    // Silent from the start.
    let mut silent = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    // A startup packet, then nothing: the server waits for SCRAM's first
    // message, which never comes.
    let mut halfway = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let mut startup = 196608i32.to_be_bytes().to_vec();
    startup.extend_from_slice(b"user\0alice\0database\0tenantfusion\0\0");
    let mut packet = ((startup.len() + 4) as i32).to_be_bytes().to_vec();
    packet.extend_from_slice(&startup);
    halfway.write_all(&packet).await.unwrap();
    // Half a length field.
    let mut partial = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    partial.write_all(&[0, 0]).await.unwrap();
    for socket in [&mut silent, &mut halfway, &mut partial] {
        let took = closed_within(socket).await.expect("closed");
        assert!(took < Duration::from_secs(5), "{took:?}");
    }
    // A client that logs in within the deadline stays, past it.
    let alice = server.alice().await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(alice.query("SELECT 1", &[]).await.unwrap().len(), 1);
    server.stop().await;
}
