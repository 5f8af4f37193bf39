//! Live queries over `GET /v1/live` (tokio-tungstenite as the client),
//! fed by changes made over pgwire.

use std::net::SocketAddr;
use std::time::Duration;

use futures::SinkExt;
use hyper::StatusCode;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::harness::{Process, TestServer, free_port, with_http};
use crate::web::{ALICE, Auth, BOB, event, login, next_event, request, send, websocket};

/// Long enough for an event that would come to have come.
const QUIET: Duration = Duration::from_millis(500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_gets_its_users_changes_only_until_unsubscribed() {
    let server = TestServer::start_with(with_http()).await;
    let addr = server.http.unwrap();
    let alice = server.alice().await;
    let bob = server.bob().await;
    alice
        .batch_execute("INSERT INTO app.notes VALUES (1, 'first')")
        .await
        .unwrap();
    let mut socket = websocket(addr, &ALICE).await.unwrap();
    send(
        &mut socket,
        json!({"op": "subscribe", "id": "q1", "sql": "SUBSCRIBE TO app.notes"}),
    )
    .await;
    let snapshot = event(&mut socket).await;
    assert_eq!(
        snapshot,
        json!({"id": "q1", "event": "snapshot",
            "columns": [{"name": "id", "type": "int8"}, {"name": "body", "type": "text"}],
            "rows": [[1, "first"]]})
    );
    bob.batch_execute("INSERT INTO app.notes VALUES (50, 'bob')")
        .await
        .unwrap();
    alice
        .batch_execute("INSERT INTO app.notes VALUES (2, 'second')")
        .await
        .unwrap();
    assert_eq!(
        event(&mut socket).await,
        json!({"id": "q1", "event": "insert", "rows": [[2, "second"]]}),
        "bob's row is not alice's"
    );
    alice
        .batch_execute("UPDATE app.notes SET body = 'changed' WHERE id = 2")
        .await
        .unwrap();
    assert_eq!(
        event(&mut socket).await,
        json!({"id": "q1", "event": "delete", "rows": [[2, "second"]]})
    );
    assert_eq!(
        event(&mut socket).await,
        json!({"id": "q1", "event": "insert", "rows": [[2, "changed"]]})
    );
    alice
        .batch_execute("DELETE FROM app.notes WHERE id = 1")
        .await
        .unwrap();
    assert_eq!(
        event(&mut socket).await,
        json!({"id": "q1", "event": "delete", "rows": [[1, "first"]]})
    );
    bob.batch_execute("DELETE FROM app.notes").await.unwrap();
    assert_eq!(next_event(&mut socket, QUIET).await, None);

    // A second query on the same socket, with a filter.
    send(
        &mut socket,
        json!({"op": "subscribe", "id": "big", "sql": "SUBSCRIBE TO app.notes WHERE id >= 100"}),
    )
    .await;
    assert_eq!(event(&mut socket).await["event"], "snapshot");
    alice
        .batch_execute("INSERT INTO app.notes VALUES (100, 'both')")
        .await
        .unwrap();
    let mut got = [event(&mut socket).await, event(&mut socket).await];
    got.sort_by_key(|e| e["id"].as_str().unwrap().to_string());
    assert_eq!(got[0]["id"], "big");
    assert_eq!(got[1]["id"], "q1");

    send(&mut socket, json!({"op": "unsubscribe", "id": "q1"})).await;
    assert_eq!(
        event(&mut socket).await,
        json!({"id": "q1", "event": "unsubscribed"})
    );
    alice
        .batch_execute("INSERT INTO app.notes VALUES (3, 'unseen')")
        .await
        .unwrap();
    assert_eq!(next_event(&mut socket, QUIET).await, None);
    send(&mut socket, json!({"op": "ping"})).await;
    assert_eq!(event(&mut socket).await, json!({"event": "pong"}));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_messages_get_errors_and_the_socket_stays() {
    let server = TestServer::start_with(with_http()).await;
    let addr = server.http.unwrap();
    server
        .admin()
        .await
        .batch_execute("CREATE SHARED TABLE app.ledger (id BIGINT) WITH (ACCESS_LEVEL = PRIVATE)")
        .await
        .unwrap();
    let mut socket = websocket(addr, &ALICE).await.unwrap();
    for (message, code) in [
        (
            json!({"op": "subscribe", "id": "x", "sql": "SUBSCRIBE TO app.ledger"}),
            "PERMISSION_DENIED",
        ),
        (
            json!({"op": "subscribe", "id": "x", "sql": "SUBSCRIBE TO app.nothing"}),
            "TABLE_NOT_FOUND",
        ),
        (
            json!({"op": "subscribe", "id": "x", "sql": "SELECT 1"}),
            "INVALID_REQUEST",
        ),
        (
            json!({"op": "subscribe", "id": "x", "sql": "COPY (SUBSCRIBE TO app.notes) TO STDOUT"}),
            "INVALID_REQUEST",
        ),
        (json!({"op": "dance"}), "INVALID_REQUEST"),
        (
            json!({"op": "unsubscribe", "id": "never"}),
            "INVALID_REQUEST",
        ),
        (json!({"op": "subscribe", "id": "x"}), "INVALID_REQUEST"),
        (
            json!({"op": "subscribe", "id": "i".repeat(129), "sql": "SUBSCRIBE TO app.notes"}),
            "INVALID_REQUEST",
        ),
        (json!([1, 2]), "INVALID_REQUEST"),
    ] {
        send(&mut socket, message.clone()).await;
        let answer = event(&mut socket).await;
        assert_eq!(answer["event"], "error", "{message}");
        assert_eq!(answer["code"], code, "{message}: {answer}");
    }
    socket.send(Message::text("{not json")).await.unwrap();
    assert_eq!(event(&mut socket).await["code"], "INVALID_REQUEST");
    // One id, one query.
    let subscribe = json!({"op": "subscribe", "id": "q", "sql": "SUBSCRIBE TO app.notes"});
    send(&mut socket, subscribe.clone()).await;
    assert_eq!(event(&mut socket).await["event"], "snapshot");
    send(&mut socket, subscribe).await;
    assert_eq!(event(&mut socket).await["event"], "error");
    send(&mut socket, json!({"op": "ping"})).await;
    assert_eq!(event(&mut socket).await, json!({"event": "pong"}));

    // Over the message size limit (256 KiB): the socket is closed.
    let huge =
        json!({"op": "subscribe", "id": "x".repeat(300 << 10), "sql": "SUBSCRIBE TO app.notes"});
    let _ = socket.send(Message::text(huge.to_string())).await;
    assert_eq!(next_event(&mut socket, Duration::from_secs(5)).await, None);
    // The server goes on.
    let mut again = websocket(addr, &ALICE).await.unwrap();
    send(&mut again, json!({"op": "ping"})).await;
    assert_eq!(event(&mut again).await, json!({"event": "pong"}));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upgrade_is_authenticated() {
    let server = TestServer::start_with(with_http()).await;
    let addr = server.http.unwrap();
    for auth in [
        Auth::None,
        Auth::Basic("alice", "wrong"),
        Auth::Bearer("x".into()),
    ] {
        match websocket(addr, &auth).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(answer)) => {
                assert_eq!(answer.status(), StatusCode::UNAUTHORIZED, "{auth:?}");
            }
            other => panic!("{auth:?}: {:?}", other.map(|_| ())),
        }
    }
    // A token in the query string, as a browser sends it.
    let token = login(addr, &BOB).await;
    let (mut socket, _) =
        tokio_tungstenite::connect_async(format!("ws://{addr}/v1/live?token={token}"))
            .await
            .unwrap();
    send(
        &mut socket,
        json!({"op": "subscribe", "id": "q", "sql": "SUBSCRIBE TO app.notes"}),
    )
    .await;
    assert_eq!(event(&mut socket).await["event"], "snapshot");
    server
        .bob()
        .await
        .batch_execute("INSERT INTO app.notes VALUES (7, 'by bob')")
        .await
        .unwrap();
    assert_eq!(event(&mut socket).await["rows"], json!([[7, "by bob"]]));
    // A plain GET is told to upgrade.
    let plain = request(addr, "GET", "/v1/live", &ALICE, &[], Vec::new())
        .await
        .unwrap();
    assert_eq!(plain.status, StatusCode::UPGRADE_REQUIRED);
    server.stop().await;
}

/// A server process with HTTP, user alice and `app.notes`; its HTTP address.
async fn process_with_http(dir: &std::path::Path, http_settings: &str) -> (Process, SocketAddr) {
    let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = dir.join("tenantfusion.toml");
    std::fs::write(
        &config,
        format!("[http]\nlisten = \"{http}\"\n{http_settings}"),
    )
    .unwrap();
    let server = Process::start_logged(&dir.join("data"), &config, &dir.join("server.log"));
    let admin = server.connect("admin", "admin-pw").await;
    admin
        .batch_execute(
            "CREATE USER 'alice' WITH PASSWORD 'alice-pw'; CREATE USER 'bob' WITH PASSWORD 'bob-pw'; \
             CREATE NAMESPACE app; \
             CREATE USER TABLE app.notes (id BIGINT NOT NULL, body TEXT, PRIMARY KEY (id))",
        )
        .await
        .unwrap();
    (server, http)
}

/// Writes 40 MB of alice's rows (40 statements of 500 rows of 2 KB); the
/// server's growth in resident memory across them, and, when bob follows
/// his own rows, how long his next row takes to reach him.
async fn flood(stuck_alice: bool) -> (i64, Option<Duration>) {
    let dir = tempfile::tempdir().unwrap();
    let (server, http) = process_with_http(dir.path(), "write_timeout_secs = 2\n").await;
    let alice = server.connect("alice", "alice-pw").await;
    let mut sockets = Vec::new();
    let mut bob_socket = None;
    if stuck_alice {
        // Subscribes, then never reads again.
        let mut socket = websocket(http, &ALICE).await.unwrap();
        send(
            &mut socket,
            json!({"op": "subscribe", "id": "all", "sql": "SUBSCRIBE TO app.notes"}),
        )
        .await;
        assert_eq!(event(&mut socket).await["event"], "snapshot");
        sockets.push(socket);
        let mut bob = websocket(http, &BOB).await.unwrap();
        send(
            &mut bob,
            json!({"op": "subscribe", "id": "mine", "sql": "SUBSCRIBE TO app.notes"}),
        )
        .await;
        assert_eq!(event(&mut bob).await["event"], "snapshot");
        bob_socket = Some(bob);
    }
    let before = server.rss() as i64;
    for k in 0..40 {
        alice
            .batch_execute(&format!(
                "INSERT INTO app.notes SELECT value, repeat('x', 2000) FROM generate_series({}, {})",
                k * 500,
                k * 500 + 499
            ))
            .await
            .unwrap();
    }
    // What the server can push is pushed by now.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let grown = server.rss() as i64 - before;
    let latency = match &mut bob_socket {
        Some(bob) => {
            let started = std::time::Instant::now();
            server
                .connect("bob", "bob-pw")
                .await
                .batch_execute("INSERT INTO app.notes VALUES (1, 'bob')")
                .await
                .unwrap();
            let got = next_event(bob, Duration::from_secs(10))
                .await
                .expect("bob's row never came");
            assert_eq!(got["rows"], json!([[1, "bob"]]));
            Some(started.elapsed())
        }
        None => None,
    };
    if stuck_alice {
        // Alice's socket has not been read for longer than the write
        // timeout: the server closed it, and bob's stays.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while websockets_open(http).await != 1.0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the stuck socket stayed open"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let bob = bob_socket.as_mut().unwrap();
        send(bob, json!({"op": "ping"})).await;
        assert_eq!(event(bob).await, json!({"event": "pong"}));
    }
    drop(sockets);
    (grown, latency)
}

/// The server's open WebSockets, by its `/metrics`.
async fn websockets_open(http: SocketAddr) -> f64 {
    let answer = request(http, "GET", "/metrics", &Auth::None, &[], Vec::new())
        .await
        .unwrap();
    let text = String::from_utf8(answer.body.to_vec()).unwrap();
    let scrape =
        prometheus_parse::Scrape::parse(text.lines().map(|line| Ok(line.to_string()))).unwrap();
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == "tenantfusion_connections")
        .filter(|s| s.labels.get("protocol") == Some("websocket"))
        .map(|s| match s.value {
            prometheus_parse::Value::Gauge(v) => v,
            _ => 0.0,
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_that_stops_reading_holds_bounded_memory_and_others_keep_up() {
    let (alone, _) = flood(false).await;
    let (stuck, bob) = flood(true).await;
    let extra = stuck - alone;
    eprintln!(
        "40 MB written: server grew {} MiB with nobody following, {} MiB with a socket \
         that stopped reading; bob's row reached him in {:?}",
        alone >> 20,
        stuck >> 20,
        bob.unwrap()
    );
    // The socket's queue holds 4 MiB of messages; the engine's live query
    // queue holds the table's own batches (shared, not copied).
    assert!(
        extra < 24 << 20,
        "the stuck socket cost {} MiB",
        extra >> 20
    );
    assert!(bob.unwrap() < Duration::from_secs(5), "{bob:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_sockets_at_once_each_follow_their_live_query() {
    let dir = tempfile::tempdir().unwrap();
    let (server, http) = process_with_http(dir.path(), "max_connections = 1100\n").await;
    let token = login(http, &ALICE).await;
    let url = format!("ws://{http}/v1/live?token={token}");
    let before = server.rss() as i64;
    let opened = futures::future::join_all((0..1000).map(|i| {
        let url = url.clone();
        async move {
            let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
            send(
                &mut socket,
                json!({"op": "subscribe", "id": format!("q{i}"), "sql": "SUBSCRIBE TO app.notes"}),
            )
            .await;
            assert_eq!(event(&mut socket).await["event"], "snapshot");
            socket
        }
    }))
    .await;
    let per_socket = (server.rss() as i64 - before) / 1000;
    eprintln!(
        "1,000 WebSockets with one live query each: {per_socket} bytes of server memory each"
    );
    server
        .connect("alice", "alice-pw")
        .await
        .batch_execute("INSERT INTO app.notes VALUES (1, 'to all')")
        .await
        .unwrap();
    let reached = futures::future::join_all(opened.into_iter().map(|mut socket| async move {
        event(&mut socket).await["rows"] == json!([[1, "to all"]])
    }))
    .await;
    assert!(reached.iter().all(|ok| *ok));
    assert!(per_socket < 64 << 10, "{per_socket} bytes per socket");
}
