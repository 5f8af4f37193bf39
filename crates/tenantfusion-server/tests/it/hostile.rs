//! Hostile and broken clients against the `tenantfusion` binary: garbage,
//! impossible lengths, truncated messages, a 10 MB query, 1,000
//! connections at once, a client that stops reading a large result. Each
//! gets an error or a closed connection; the server stays up, other
//! sessions keep working, and its memory stays bounded.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_postgres::NoTls;

use crate::harness::{Process, sqlstate};

/// Sends `bytes` on a fresh connection and waits (up to 30 s) for the
/// server to close it; returns what it answered.
async fn send_raw(server: &Process, bytes: &[u8]) -> Vec<u8> {
    let mut socket = TcpStream::connect(("127.0.0.1", server.port))
        .await
        .unwrap();
    // The server may close before reading everything: a failed write is fine.
    let _ = socket.write_all(bytes).await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), socket.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the server kept a broken connection open");
    answer
}

/// A client socket whose reads can be stopped, as a client that stops
/// reading its result would.
struct Stallable {
    inner: TcpStream,
    stalled: Arc<AtomicBool>,
}

impl AsyncRead for Stallable {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.stalled.load(Ordering::SeqCst) {
            // Never woken: this client reads nothing more.
            return Poll::Pending;
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Stallable {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Alice over a socket whose reads the returned flag stops, with a second
/// handle on the same socket to write raw bytes to.
async fn stallable_alice(
    server: &Process,
) -> (
    tokio_postgres::Client,
    tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
    Arc<AtomicBool>,
    std::net::TcpStream,
) {
    let std_socket = std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    let raw = std_socket.try_clone().unwrap();
    std_socket.set_nonblocking(true).unwrap();
    let stalled = Arc::new(AtomicBool::new(false));
    let socket = Stallable {
        inner: TcpStream::from_std(std_socket).unwrap(),
        stalled: Arc::clone(&stalled),
    };
    let (client, connection) = server
        .config("alice", "alice-pw")
        .connect_raw(socket, NoTls)
        .await
        .unwrap();
    (client, tokio::spawn(connection), stalled, raw)
}

/// Whether a new session of alice works.
async fn still_serves(server: &Process) {
    let alice = server.connect("alice", "alice-pw").await;
    let rows = alice.query("SELECT 1 + 1", &[]).await.unwrap();
    assert_eq!(rows.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_and_hostile_clients_leave_the_server_up_and_bounded() {
    let data = tempfile::tempdir().unwrap();
    let server = Process::start(data.path());
    let admin = server.connect("admin", "admin-pw").await;
    admin
        .batch_execute("CREATE USER 'alice' WITH PASSWORD 'alice-pw'")
        .await
        .unwrap();
    still_serves(&server).await;
    let rss_before = server.rss();

    // Garbage where the startup packet belongs.
    let garbage: Vec<u8> = (0..4096u32).map(|i| (i * 7919 % 251) as u8).collect();
    send_raw(&server, &garbage).await;
    // A startup packet claiming 2^31 bytes, and a `Query` claiming i32::MAX.
    send_raw(&server, &[0x80, 0, 0, 0, 0, 3, 0, 0]).await;
    send_raw(&server, b"Q\x7f\xff\xff\xff SELECT 1").await;
    // A truncated startup packet, then the client goes away.
    {
        let mut socket = TcpStream::connect(("127.0.0.1", server.port))
            .await
            .unwrap();
        socket
            .write_all(&[0, 0, 0, 100, 0, 3, 0, 0, b'u'])
            .await
            .unwrap();
    }
    // A startup packet with a protocol the server does not speak (pgwire
    // closes without an ErrorResponse when it cannot decode the packet).
    let answer = send_raw(&server, &[0, 0, 0, 8, 0, 9, 0, 0]).await;
    assert!(answer.is_empty() || answer[0] == b'E', "{answer:?}");
    still_serves(&server).await;

    // After login: an impossible length ends the connection, not the server.
    let (client, connection, _, mut raw) = stallable_alice(&server).await;
    assert_eq!(client.query("SELECT 1", &[]).await.unwrap().len(), 1);
    std::io::Write::write_all(&mut raw, b"Q\x7f\xff\xff\xff").unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(30), connection).await;
    assert!(ended.is_ok(), "the connection survived a 2 GiB length");
    still_serves(&server).await;
    // A length pgwire alone would wait for (200 MiB < its 1 GiB) but over
    // the server's 64 MiB: the connection ends at once, before any body.
    let (client, connection, _, mut raw) = stallable_alice(&server).await;
    assert_eq!(client.query("SELECT 1", &[]).await.unwrap().len(), 1);
    let mut announce = vec![b'Q'];
    announce.extend_from_slice(&(200i32 << 20).to_be_bytes());
    announce.extend_from_slice(b"SELECT ");
    std::io::Write::write_all(&mut raw, &announce).unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(30), connection).await;
    assert!(ended.is_ok(), "the server waited for a 200 MiB query");
    still_serves(&server).await;

    // A 10 MB query is read and answered.
    let alice = server.connect("alice", "alice-pw").await;
    let long = "x".repeat(10 * 1024 * 1024);
    let rows = alice
        .simple_query(&format!("SELECT length('{long}') AS n"))
        .await
        .unwrap();
    let n = rows.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
        _ => None,
    });
    assert_eq!(n.as_deref(), Some("10485760"));
    drop(alice);

    // 1,000 connections at once: at most max_connections (100) get in, the
    // rest are refused with 53300 (or, past the listen backlog, not
    // accepted at all); then everyone leaves and the server serves again.
    let mut attempts = Vec::new();
    for _ in 0..1000 {
        let config = server.config("alice", "alice-pw");
        attempts.push(tokio::spawn(async move {
            match config.connect(NoTls).await {
                Ok((client, connection)) => {
                    tokio::spawn(connection);
                    Ok(client)
                }
                Err(err) => Err(sqlstate(&err)),
            }
        }));
    }
    let mut admitted = Vec::new();
    let mut refused = 0;
    for attempt in attempts {
        match attempt.await.unwrap() {
            Ok(client) => admitted.push(client),
            Err(state) if state == "53300" => refused += 1,
            Err(_) => {}
        }
    }
    assert!(admitted.len() <= 100, "{} admitted", admitted.len());
    assert!(refused > 0, "no connection was refused with 53300");
    drop(admitted);
    still_serves(&server).await;

    // A client that stops reading a large result holds the query, not the
    // server's memory.
    let (client, connection, stalled, _) = stallable_alice(&server).await;
    stalled.store(true, Ordering::SeqCst);
    let reader = tokio::spawn(async move {
        let _ = client
            .simple_query("SELECT value, repeat('y', 100) FROM generate_series(1, 100000000)")
            .await;
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_stalled = server.rss();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_stalled_later = server.rss();
    still_serves(&server).await;
    reader.abort();
    connection.abort();

    tokio::time::sleep(Duration::from_millis(500)).await;
    still_serves(&server).await;
    let rss_after = server.rss();
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!(
        "server RSS: before {:.1} MiB, stalled reader {:.1} then {:.1} MiB, after {:.1} MiB",
        mib(rss_before),
        mib(rss_stalled),
        mib(rss_stalled_later),
        mib(rss_after)
    );
    // The stalled query does not grow: its rows wait in one batch and the
    // connection's buffers, not in memory without end.
    assert!(
        rss_stalled_later < rss_stalled + 32 * 1024 * 1024,
        "RSS grew while the client read nothing: {rss_stalled} -> {rss_stalled_later}"
    );
    assert!(
        rss_after < rss_before + 256 * 1024 * 1024,
        "RSS {rss_before} -> {rss_after}"
    );
}
