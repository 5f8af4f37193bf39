//! `POST /v1/sql` and `POST /v1/login` through hyper's client.

use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::arrow::ipc::reader::StreamReader;
use hyper::StatusCode;
use serde_json::json;
use tenantfusion::EngineConfig;
use tenantfusion_core::ManualClock;

use crate::harness::{TestServer, with_http};
use crate::web::{ALICE, Auth, BOB, login, request, rows, sql};

async fn notes_of_alice_and_bob() -> TestServer {
    let server = TestServer::start_with(with_http()).await;
    let addr = server.http.unwrap();
    for (auth, id, body) in [(ALICE, 1, "a1"), (ALICE, 2, "a2"), (BOB, 1, "b1")] {
        let answer = sql(
            addr,
            &auth,
            "INSERT INTO app.notes (id, body) VALUES ($1, $2)",
            json!([id, body]),
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
        assert_eq!(answer.json()["row_count"], 1);
        assert_eq!(answer.json()["columns"], json!([]));
    }
    server
}

#[tokio::test]
async fn each_user_reads_and_changes_only_their_rows() {
    let server = notes_of_alice_and_bob().await;
    let addr = server.http.unwrap();
    let answer = sql(
        addr,
        &ALICE,
        "SELECT id, body FROM app.notes ORDER BY id",
        json!([]),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.content_type, "application/json");
    let body = answer.json();
    assert_eq!(
        body["columns"],
        json!([{"name": "id", "type": "int8"}, {"name": "body", "type": "text"}])
    );
    assert_eq!(body["rows"], json!([[1, "a1"], [2, "a2"]]));
    assert_eq!(body["row_count"], 2);
    assert!(body["took_ms"].as_f64().unwrap() >= 0.0);
    assert_eq!(
        rows(addr, &BOB, "SELECT id, body FROM app.notes").await,
        vec![json!([1, "b1"])]
    );

    // The wrapped forms read the caller's rows only.
    for query in [
        "WITH n AS (SELECT body FROM app.notes) SELECT body FROM n",
        "SELECT body FROM (SELECT * FROM app.notes) AS s",
        "SELECT body FROM app.notes WHERE id IN (SELECT id FROM app.notes)",
        "SELECT body FROM app.notes UNION ALL SELECT body FROM app.notes WHERE false",
    ] {
        assert_eq!(
            rows(addr, &BOB, query).await,
            vec![json!(["b1"])],
            "{query}"
        );
    }
    let explained = sql(
        addr,
        &BOB,
        "EXPLAIN ANALYZE SELECT body FROM app.notes",
        json!([]),
    )
    .await;
    assert_eq!(explained.status, StatusCode::OK);
    let text = String::from_utf8_lossy(&explained.body);
    assert!(!text.contains("a1") && !text.contains("a2"), "{text}");
    // Running as someone else is for dba and system roles; wrapped, it is
    // not even read as a statement.
    let answer = sql(
        addr,
        &BOB,
        "EXECUTE AS USER 'alice' (SELECT body FROM app.notes)",
        json!([]),
    )
    .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN, "{:?}", answer.body);
    assert_eq!(answer.code(), "PERMISSION_DENIED");
    for query in [
        "EXPLAIN ANALYZE EXECUTE AS USER 'alice' (SELECT body FROM app.notes)",
        "EXPLAIN EXECUTE AS USER 'alice' (SELECT body FROM app.notes)",
    ] {
        let answer = sql(addr, &BOB, query, json!([])).await;
        assert!(
            answer.status.is_client_error(),
            "{query}: {:?}",
            answer.body
        );
        let text = String::from_utf8_lossy(&answer.body);
        assert!(!text.contains("a1") && !text.contains("a2"), "{text}");
    }

    // Changes: bob's UPDATE and DELETE touch his row only.
    let answer = sql(
        addr,
        &BOB,
        "UPDATE app.notes SET body = $1 WHERE id = $2",
        json!(["b1!", 1]),
    )
    .await;
    assert_eq!(answer.json()["row_count"], 1);
    let answer = sql(addr, &BOB, "DELETE FROM app.notes WHERE id = 2", json!([])).await;
    assert_eq!(answer.json()["row_count"], 0, "alice's id 2 is not bob's");
    assert_eq!(
        rows(addr, &ALICE, "SELECT body FROM app.notes ORDER BY id").await,
        vec![json!(["a1"]), json!(["a2"])]
    );
    // Same key twice: a conflict.
    let answer = sql(
        addr,
        &ALICE,
        "INSERT INTO app.notes VALUES (1, 'again')",
        json!([]),
    )
    .await;
    assert_eq!(answer.status, StatusCode::CONFLICT);
    assert_eq!(answer.code(), "PRIMARY_KEY_VIOLATION");
    server.stop().await;
}

#[tokio::test]
async fn logins_are_checked_and_answer_401() {
    let server = notes_of_alice_and_bob().await;
    let addr = server.http.unwrap();
    for auth in [
        Auth::None,
        Auth::Basic("alice", "wrong"),
        Auth::Basic("nobody", "alice-pw"),
        Auth::Bearer("not-a-token".into()),
    ] {
        let answer = sql(addr, &auth, "SELECT 1", json!([])).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{auth:?}");
        assert_eq!(answer.code(), "UNAUTHENTICATED");
    }
    // An unknown user and a wrong password read the same.
    let unknown = sql(addr, &Auth::Basic("nobody", "x"), "SELECT 1", json!([])).await;
    let wrong = sql(addr, &Auth::Basic("alice", "x"), "SELECT 1", json!([])).await;
    assert_eq!(
        unknown.json()["message"]
            .as_str()
            .unwrap()
            .replace("nobody", "?"),
        wrong.json()["message"]
            .as_str()
            .unwrap()
            .replace("alice", "?")
    );
    // A token works like the password; a token cannot log in again.
    let token = login(addr, &ALICE).await;
    assert_eq!(
        rows(
            addr,
            &Auth::Bearer(token.clone()),
            "SELECT body FROM app.notes ORDER BY id"
        )
        .await,
        vec![json!(["a1"]), json!(["a2"])]
    );
    let again = request(
        addr,
        "POST",
        "/v1/login",
        &Auth::Bearer(token),
        &[],
        Vec::new(),
    )
    .await
    .unwrap();
    assert_eq!(again.status, StatusCode::UNAUTHORIZED);
    server.stop().await;
}

#[tokio::test]
async fn tokens_expire_and_are_revoked_by_password_changes_and_drops() {
    let clock = Arc::new(ManualClock::new(1_800_000_000_000_000));
    let server = TestServer::start_with_engine(
        EngineConfig::default().with_clock(clock.clone()),
        with_http(),
    )
    .await;
    let addr = server.http.unwrap();
    let token = Auth::Bearer(login(addr, &ALICE).await);
    assert_eq!(
        sql(addr, &token, "SELECT 1", json!([])).await.status,
        StatusCode::OK
    );
    clock.advance(Duration::from_secs(3600));
    let expired = sql(addr, &token, "SELECT 1", json!([])).await;
    assert_eq!(expired.status, StatusCode::UNAUTHORIZED);
    assert!(
        expired.json()["message"]
            .as_str()
            .unwrap()
            .contains("expired")
    );

    let token = Auth::Bearer(login(addr, &ALICE).await);
    let admin = server.admin().await;
    admin
        .batch_execute("ALTER USER 'alice' WITH PASSWORD 'alice-pw'")
        .await
        .unwrap();
    let revoked = sql(addr, &token, "SELECT 1", json!([])).await;
    assert_eq!(revoked.status, StatusCode::UNAUTHORIZED);
    assert!(
        revoked.json()["message"]
            .as_str()
            .unwrap()
            .contains("revoked")
    );

    let token = Auth::Bearer(login(addr, &BOB).await);
    admin.batch_execute("DROP USER 'bob'").await.unwrap();
    admin
        .batch_execute("CREATE USER 'bob' WITH PASSWORD 'bob-pw'")
        .await
        .unwrap();
    let answer = sql(addr, &token, "SELECT 1", json!([])).await;
    assert_eq!(
        answer.status,
        StatusCode::UNAUTHORIZED,
        "a dropped user's token does not pass for a new user of the name"
    );
    server.stop().await;
}

#[tokio::test]
async fn errors_have_codes_and_statuses_and_bodies_are_bounded() {
    let server = notes_of_alice_and_bob().await;
    let addr = server.http.unwrap();
    for (query, status, code) in [
        (
            "CREATE NAMESPACE mine",
            StatusCode::FORBIDDEN,
            "PERMISSION_DENIED",
        ),
        (
            "SELECT * FROM app.nothing",
            StatusCode::NOT_FOUND,
            "TABLE_NOT_FOUND",
        ),
        ("SELEKT 1", StatusCode::BAD_REQUEST, "SYNTAX_ERROR"),
        (
            "SELECT 1; SELECT 2",
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
        ),
        (
            "SUBSCRIBE TO app.notes",
            StatusCode::BAD_REQUEST,
            "NOT_SUPPORTED",
        ),
        (
            "COPY app.notes TO '/tmp/x.csv'",
            StatusCode::FORBIDDEN,
            "PERMISSION_DENIED",
        ),
    ] {
        let answer = sql(addr, &ALICE, query, json!([])).await;
        assert_eq!(
            (answer.status, answer.code().as_str()),
            (status, code),
            "{query}: {:?}",
            answer.body
        );
    }
    for body in [
        &b"{not json"[..],
        br#"{"sql": 1}"#,
        br#"{"sql": "SELECT 1", "user": "bob"}"#,
    ] {
        let answer = request(addr, "POST", "/v1/sql", &ALICE, &[], body.to_vec())
            .await
            .unwrap();
        assert_eq!(answer.status, StatusCode::BAD_REQUEST);
        assert_eq!(answer.code(), "INVALID_REQUEST");
    }
    let answer = sql(
        addr,
        &ALICE,
        "SELECT id FROM app.notes WHERE id = $1",
        json!(["one"]),
    )
    .await;
    assert_eq!(
        (answer.status, answer.code().as_str()),
        (StatusCode::BAD_REQUEST, "INVALID_ARGUMENT")
    );
    let answer = request(addr, "GET", "/v1/sql", &ALICE, &[], Vec::new())
        .await
        .unwrap();
    assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
    let answer = request(addr, "GET", "/etc/passwd", &ALICE, &[], Vec::new())
        .await
        .unwrap();
    assert_eq!(answer.status, StatusCode::NOT_FOUND);

    // 20 MB: refused from its Content-Length, before it is read.
    let huge = format!(r#"{{"sql": "SELECT '{}'"}}"#, "x".repeat(20 << 20));
    match request(addr, "POST", "/v1/sql", &ALICE, &[], huge.into_bytes()).await {
        Ok(answer) => {
            assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
            assert_eq!(answer.code(), "BODY_TOO_LARGE");
        }
        // The client may still be writing when the server answers and closes.
        Err(err) => assert!(
            err.is_closed() || err.is_incomplete_message() || err.to_string().contains("reset"),
            "{err}"
        ),
    }
    // The server is fine after it.
    assert_eq!(rows(addr, &ALICE, "SELECT 1").await, vec![json!([1])]);
    server.stop().await;
}

#[tokio::test]
async fn an_arrow_answer_holds_the_same_rows_as_json() {
    let server = notes_of_alice_and_bob().await;
    let addr = server.http.unwrap();
    let query = "SELECT id, body FROM app.notes ORDER BY id";
    let body = json!({"sql": query}).to_string().into_bytes();
    let answer = request(
        addr,
        "POST",
        "/v1/sql",
        &ALICE,
        &[("accept", "application/vnd.apache.arrow.stream")],
        body,
    )
    .await
    .unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.content_type, "application/vnd.apache.arrow.stream");
    let reader = StreamReader::try_new(std::io::Cursor::new(answer.body.to_vec()), None).unwrap();
    let mut from_arrow = Vec::new();
    for batch in reader {
        let batch = batch.unwrap();
        let ids = batch.column(0).as_primitive::<Int64Type>();
        let bodies = cast(batch.column(1), &DataType::Utf8).unwrap();
        let bodies = bodies.as_string::<i32>();
        for row in 0..batch.num_rows() {
            from_arrow.push(json!([
                ids.value(row),
                (!bodies.is_null(row)).then(|| bodies.value(row))
            ]));
        }
    }
    assert_eq!(from_arrow, rows(addr, &ALICE, query).await);
    assert_eq!(from_arrow.len(), 2);
    server.stop().await;
}

#[tokio::test]
async fn answers_over_the_result_bound_fail_instead_of_filling_memory() {
    let mut config = with_http();
    if let Some(http) = &mut config.http {
        http.max_result_bytes = 64 << 10;
    }
    let server = TestServer::start_with(config).await;
    let addr = server.http.unwrap();
    let query = "SELECT repeat('x', 100) AS v FROM generate_series(1, 10000)";
    let answer = sql(addr, &ALICE, query, json!([])).await;
    assert_eq!(
        answer.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{:?}",
        answer.body
    );
    assert_eq!(answer.code(), "RESOURCES_EXHAUSTED");
    assert!(answer.body.len() < 1024);
    let small = rows(
        addr,
        &ALICE,
        "SELECT repeat('x', 100) FROM generate_series(1, 100)",
    )
    .await;
    assert_eq!(small.len(), 100);
    server.stop().await;
}

#[tokio::test]
async fn a_trickled_body_is_cut_at_the_idle_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut config = with_http();
    if let Some(http) = &mut config.http {
        http.idle_timeout = Duration::from_secs(1);
    }
    let server = TestServer::start_with(config).await;
    let addr = server.http.unwrap();
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    let basic = "YWxpY2U6YWxpY2UtcHc="; // alice:alice-pw
    socket
        .write_all(
            format!(
                "POST /v1/sql HTTP/1.1\r\nhost: x\r\nauthorization: Basic {basic}\r\n\
                 content-length: 100\r\n\r\n{{\"sql\": \"SEL"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    // The rest never comes; the answer does, within the timeout and a bit.
    let mut answer = vec![0; 4096];
    let read = tokio::time::timeout(Duration::from_secs(10), socket.read(&mut answer))
        .await
        .expect("no answer to a trickled body")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..read]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("REQUEST_TIMEOUT"), "{answer}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_its_answer_is_cut_at_the_write_timeout() {
    use tokio::io::AsyncWriteExt;
    let mut config = with_http();
    if let Some(http) = &mut config.http {
        http.max_connections = 1;
        http.write_timeout = Duration::from_secs(1);
    }
    let server = TestServer::start_with(config).await;
    let addr = server.http.unwrap();
    // 20 MB of answer, asked for and never read: the connection's one slot
    // is taken while the server waits to write.
    let mut stuck = tokio::net::TcpStream::connect(addr).await.unwrap();
    let body = r#"{"sql": "SELECT repeat('x', 1000) FROM generate_series(1, 20000)"}"#;
    stuck
        .write_all(
            format!(
                "POST /v1/sql HTTP/1.1\r\nhost: x\r\nauthorization: Basic YWxpY2U6YWxpY2UtcHc=\r\n\
                 content-length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let refused = sql(addr, &ALICE, "SELECT 1", json!([])).await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    // Past the write timeout the stuck connection is closed and its slot
    // serves again.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let answer = sql(addr, &ALICE, "SELECT 1", json!([])).await;
        if answer.status == StatusCode::OK {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the stuck client kept its slot"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(stuck);
    server.stop().await;
}
