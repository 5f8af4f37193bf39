//! Live queries over `GET /v1/live` (tokio-tungstenite as the client),
//! fed by changes made over pgwire.

use std::time::Duration;

use futures::SinkExt;
use hyper::StatusCode;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::harness::{TestServer, with_http};
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
