//! TLS: psql verifying our certificate, clients that insist on TLS against
//! a server without it, and the hostile openings of a handshake (bytes in
//! the clear after `SSLRequest`, garbage instead of a handshake, bad
//! certificate files). The certificate is made by `scripts/test-cert.sh`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use tenantfusion::{Engine, EngineConfig};
use tenantfusion_server::{FileConfig, Server, ServerConfig, ServerError, TlsError, TlsFiles};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{Process, TestServer, local};
use crate::psql::{psql_on, stdout};

/// A fresh self-signed certificate for 127.0.0.1 in `dir`.
fn certificate(dir: &Path) -> TlsFiles {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/test-cert.sh");
    let out = Command::new(script).arg(dir).output().unwrap();
    assert!(out.status.success(), "scripts/test-cert.sh failed: {out:?}");
    TlsFiles::new(dir.join("cert.pem"), dir.join("key.pem"))
}

async fn tls_server(dir: &Path) -> (TestServer, TlsFiles) {
    let files = certificate(dir);
    let config = ServerConfig {
        tls: Some(files.clone()),
        ..local()
    };
    (TestServer::start_with(config).await, files)
}

fn conninfo(server: &TestServer, user: &str, ssl: &str) -> String {
    format!(
        "host=127.0.0.1 port={} user={user} dbname=tenantfusion {ssl}",
        server.addr.port()
    )
}

/// psql failed, saying `words`.
fn refused(out: &Output, words: &str) {
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(words),
        "{out:?}"
    );
}

/// The 8-byte `SSLRequest`.
fn ssl_request() -> Vec<u8> {
    let mut message = 8i32.to_be_bytes().to_vec();
    message.extend_from_slice(&80877103i32.to_be_bytes());
    message
}

/// Reads until the server closes the connection; what it sent, or `None`
/// if it is still open after 10 s.
async fn until_closed(socket: &mut TcpStream) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut got)).await;
    match read {
        Ok(_) => Some(got),
        Err(_) => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_verifies_the_certificate_and_each_user_sees_their_rows_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let (server, files) = tls_server(dir.path()).await;
    let verify = format!("sslmode=verify-full sslrootcert={}", files.cert.display());
    let out = psql_on(
        &conninfo(&server, "alice", &verify),
        "alice-pw",
        &[
            "\\conninfo",
            "INSERT INTO app.notes VALUES (1, 'sealed')",
            "SELECT id, body FROM app.notes",
        ],
    )
    .await;
    let text = stdout(&out);
    assert!(
        text.contains("SSL connection (protocol: TLSv1.3"),
        "not over TLS: {text}"
    );
    assert!(text.ends_with("INSERT 0 1\n1|sealed\n"), "{text}");
    let out = psql_on(
        &conninfo(&server, "bob", &verify),
        "bob-pw",
        &["SELECT count(*) FROM app.notes"],
    )
    .await;
    assert_eq!(stdout(&out), "0\n");
    // TLS is offered, not required: a client that does not ask connects in
    // the clear, and SCRAM still keeps the password off the wire.
    let out = psql_on(
        &conninfo(&server, "alice", "sslmode=disable"),
        "alice-pw",
        &["SELECT body FROM app.notes"],
    )
    .await;
    assert_eq!(stdout(&out), "sealed\n");
    // A wrong password over TLS is refused as in the clear.
    let out = psql_on(&conninfo(&server, "alice", &verify), "wrong", &["SELECT 1"]).await;
    refused(&out, "password authentication failed");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_requiring_tls_is_told_no_by_a_server_without_it() {
    let server = TestServer::start().await;
    let out = psql_on(
        &conninfo(&server, "alice", "sslmode=require"),
        "alice-pw",
        &["SELECT 1"],
    )
    .await;
    refused(&out, "server does not support SSL");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_sent_in_the_clear_after_sslrequest_are_refused_not_carried_into_tls() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _) = tls_server(dir.path()).await;
    // SSLRequest and, in the same write, a startup packet that someone on
    // the path could have injected: the server says `S`, then must close
    // rather than read the packet as if it came through TLS.
    let mut startup = Vec::new();
    startup.extend_from_slice(&196608i32.to_be_bytes());
    startup.extend_from_slice(b"user\0alice\0database\0tenantfusion\0\0");
    let mut packet = ((startup.len() + 4) as i32).to_be_bytes().to_vec();
    packet.extend_from_slice(&startup);
    let mut socket = TcpStream::connect(server.addr).await.unwrap();
    let mut both = ssl_request();
    both.extend_from_slice(&packet);
    socket.write_all(&both).await.unwrap();
    let answer = until_closed(&mut socket).await.expect("the server closes");
    assert_eq!(answer, b"S", "nothing but the TLS answer");

    // Garbage where the handshake should be: that connection ends, the
    // server goes on.
    let mut socket = TcpStream::connect(server.addr).await.unwrap();
    socket.write_all(&ssl_request()).await.unwrap();
    let mut answer = [0u8; 1];
    socket.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"S");
    let _ = socket.write_all(&vec![0x42; 64 << 10]).await;
    assert!(until_closed(&mut socket).await.is_some(), "closed");

    let alice = server.alice().await;
    alice.simple_query("SELECT 1").await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_certificate_files_fail_at_start_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let files = certificate(dir.path());
    let bind = |tls: TlsFiles| async move {
        let config = ServerConfig {
            tls: Some(tls),
            ..local()
        };
        Server::bind(Engine::new(EngineConfig::default()).unwrap(), config).await
    };
    let missing = dir.path().join("missing.pem");
    let err = bind(TlsFiles::new(&missing, &files.key)).await.unwrap_err();
    assert!(
        matches!(err, ServerError::Tls(TlsError { ref path, .. }) if path == &missing),
        "{err}"
    );
    // The key file holds no certificate, the certificate file no key.
    let err = bind(TlsFiles::new(&files.key, &files.key))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no certificate"), "{err}");
    let err = bind(TlsFiles::new(&files.cert, &files.cert))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ServerError::Tls(TlsError { ref path, .. }) if path == &files.cert),
        "{err}"
    );
    // A key that is not the certificate's.
    let other = tempfile::tempdir().unwrap();
    let stranger = certificate(other.path());
    let err = bind(TlsFiles::new(&files.cert, &stranger.key))
        .await
        .unwrap_err();
    assert!(matches!(err, ServerError::Tls(_)), "{err}");
    assert!(bind(files).await.is_ok());

    // The settings file: both or neither, relative to the file.
    let err = FileConfig::from_toml("[server]\ntls_cert = \"a.pem\"").unwrap_err();
    assert_eq!(err.code(), "INVALID_CONFIG");
    let path = dir.path().join("tenantfusion.toml");
    std::fs::write(
        &path,
        "[server]\ntls_cert = \"cert.pem\"\ntls_key = \"key.pem\"\n",
    )
    .unwrap();
    let loaded = FileConfig::load(&path).unwrap();
    assert_eq!(
        loaded.server.tls,
        Some(TlsFiles::new(
            dir.path().join("cert.pem"),
            dir.path().join("key.pem")
        ))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_tls_with_its_flags() {
    let dir = tempfile::tempdir().unwrap();
    let files = certificate(dir.path());
    let data = dir.path().join("data");
    let server = Process::start_with_args(
        &data,
        &[
            "--tls-cert".as_ref(),
            files.cert.as_os_str(),
            "--tls-key".as_ref(),
            files.key.as_os_str(),
        ],
    );
    // Ready once a plain login works.
    server.connect("admin", "admin-pw").await;
    let out = psql_on(
        &format!(
            "host=127.0.0.1 port={} user=admin dbname=tenantfusion sslmode=verify-full sslrootcert={}",
            server.port(),
            files.cert.display()
        ),
        "admin-pw",
        &["\\conninfo"],
    )
    .await;
    assert!(stdout(&out).contains("SSL connection (protocol: TLSv1.3"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_asks_for_tls_and_goes_quiet_is_closed_at_the_startup_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let config = ServerConfig {
        tls: Some(certificate(dir.path())),
        startup_timeout: Duration::from_millis(500),
        ..local()
    };
    let server = TestServer::start_with(config).await;
    let mut socket = TcpStream::connect(server.addr).await.unwrap();
    socket.write_all(&ssl_request()).await.unwrap();
    let started = std::time::Instant::now();
    assert_eq!(until_closed(&mut socket).await.expect("closed"), b"S");
    assert!(started.elapsed() < Duration::from_secs(5));
    server.stop().await;
}
