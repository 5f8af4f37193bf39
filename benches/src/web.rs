//! `http_sql` and `ws_live`: the server's HTTP API and WebSocket live
//! queries, each beside the same thing over pgwire, on one server (the
//! `pgwire` scenario's: a durable engine, `users` x 100 rows in `t`, the
//! server library on a runtime of its own with two workers).
//!
//! `http_sql`: `POST /v1/sql` (JSON, a bearer token, one keep-alive
//! connection per client, hyper's client) against the same statement as a
//! pgwire prepared statement (tokio-postgres): one client's latency, and
//! statements/s of 64 clients of different users.
//!
//! `ws_live`: an INSERT through pgwire until its row's event arrives on a
//! WebSocket of the same user, against the INSERT's own acknowledgement;
//! alone, and with `sockets` x `per_socket` other live queries open (one
//! socket per user); and the memory each idle live query of a socket
//! costs.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tenantfusion::{Role, UserContext};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::scan_scaling::latency;
use crate::wire::{CONNECTIONS, Ours, PASSWORD, login};
use crate::{Measurement, Size};

/// One keep-alive HTTP/1.1 connection with a user's token.
struct HttpClient {
    sender: SendRequest<Full<Bytes>>,
    token: String,
    host: String,
}

impl HttpClient {
    async fn connect(addr: SocketAddr, user: &str) -> Result<Self, String> {
        let mut client = Self::open(addr).await?;
        let basic = base64_basic(user, PASSWORD);
        let answer = client.post("/v1/login", &basic, Vec::new()).await?;
        client.token = answer["token"]
            .as_str()
            .ok_or_else(|| format!("no token for {user}: {answer}"))?
            .to_string();
        Ok(client)
    }

    async fn open(addr: SocketAddr) -> Result<Self, String> {
        let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        Ok(Self {
            sender,
            token: String::new(),
            host: addr.to_string(),
        })
    }

    async fn post(
        &mut self,
        path: &str,
        authorization: &str,
        body: Vec<u8>,
    ) -> Result<Value, String> {
        self.sender.ready().await.map_err(|e| e.to_string())?;
        let request = hyper::Request::post(path)
            .header("host", &self.host)
            .header("authorization", authorization)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let answer = self
            .sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = answer.status();
        let body = answer
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        let body: Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("{path}: {status} {body}"));
        }
        Ok(body)
    }

    /// Runs `sql` with `params`; the rows' count.
    async fn sql(&mut self, sql: &str, params: Value) -> usize {
        let body = json!({"sql": sql, "params": params})
            .to_string()
            .into_bytes();
        let bearer = format!("Bearer {}", self.token);
        let answer = self
            .post("/v1/sql", &bearer, body)
            .await
            .expect("POST /v1/sql");
        answer["row_count"].as_u64().unwrap_or(0) as usize
    }
}

fn base64_basic(user: &str, password: &str) -> String {
    format!("Basic {}", BASE64.encode(format!("{user}:{password}")))
}

const POINT: &str = "SELECT id, payload FROM t WHERE id = $1";

/// `http_sql`: see the module docs.
pub async fn http_sql(size: Size) -> Result<Vec<Measurement>, String> {
    let users = size.user_counts[size.user_counts.len().min(2) - 1];
    let logins = CONNECTIONS[1];
    let ours = Ours::start(users, logins).await?;
    let target = login(logins / 2, users);
    let mut out = Vec::new();

    let mut http = HttpClient::connect(ours.http, &target).await?;
    let wire = ours.client(&target).await?;
    let point = wire.prepare(POINT).await.map_err(|e| e.to_string())?;
    let floor = wire.prepare("SELECT 1").await.map_err(|e| e.to_string())?;
    if http.sql(POINT, json!([7])).await != 1 {
        return Err("the point lookup over HTTP found no row".into());
    }
    for (name, sql, statement, with_key) in [
        ("point lookup by key", POINT, &point, true),
        ("SELECT 1 (a round trip's floor)", "SELECT 1", &floor, false),
    ] {
        let mut n = 0i64;
        // Each call's future borrows the one connection; the lock is never
        // contended (the calls run one after another).
        let shared = tokio::sync::Mutex::new(&mut http);
        let over_http = latency(size, || {
            n += 1;
            let params = if with_key {
                json!([n % 100])
            } else {
                json!([])
            };
            let shared = &shared;
            async move {
                shared.lock().await.sql(sql, params).await;
            }
        })
        .await;
        let (wire, statement) = (&wire, statement);
        let over_wire = latency(size, || {
            n += 1;
            let key = n % 100;
            async move {
                if with_key {
                    wire.query(statement, &[&key]).await.expect("query");
                } else {
                    wire.query(statement, &[]).await.expect("query");
                }
            }
        })
        .await;
        out.push(Measurement::latency(
            "http_sql",
            format!(
                "{name}, {users} users: POST /v1/sql (JSON, bearer token, keep-alive) vs pgwire (prepared)"
            ),
            over_http,
            over_wire,
        ));
    }

    // Clients of different users, each running the point lookup.
    let connections = CONNECTIONS[1];
    let mut http_clients = Vec::new();
    let mut wire_clients = Vec::new();
    for i in 0..connections {
        let user = login(i, users);
        http_clients.push(HttpClient::connect(ours.http, &user).await?);
        let client = ours.client(&user).await?;
        let statement = client.prepare(POINT).await.map_err(|e| e.to_string())?;
        wire_clients.push((client, statement));
    }
    let run = size.wire_run;
    let http_rate = rate(run, http_clients, |mut client, deadline| async move {
        let mut n = 0u64;
        while Instant::now() < deadline {
            client.sql(POINT, json!([n % 100])).await;
            n += 1;
        }
        n
    })
    .await;
    let wire_rate = rate(
        run,
        wire_clients,
        |(client, statement), deadline| async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                let key = (n % 100) as i64;
                client.query(&statement, &[&key]).await.expect("query");
                n += 1;
            }
            n
        },
    )
    .await;
    out.push(Measurement::figure(
        "http_sql",
        format!(
            "{connections} keep-alive clients of {connections} users, point lookups: statements/s, HTTP vs pgwire"
        ),
        http_rate,
        wire_rate,
        "stmt/s",
    ));
    Ok(out)
}

/// Statements/s of `clients`, each run by `work` until the deadline.
async fn rate<C, F, Fut>(run: Duration, clients: Vec<C>, work: F) -> f64
where
    C: Send + 'static,
    F: Fn(C, Instant) -> Fut,
    Fut: std::future::Future<Output = u64> + Send + 'static,
{
    let started = Instant::now();
    let deadline = started + run;
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|client| tokio::spawn(work(client, deadline)))
        .collect();
    let mut total = 0;
    for task in tasks {
        total += task.await.expect("client task");
    }
    total as f64 / started.elapsed().as_secs_f64()
}

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A WebSocket of `user` (a token from `POST /v1/login`).
async fn websocket(http: SocketAddr, user: &str) -> Result<Socket, String> {
    let client = HttpClient::connect(http, user).await?;
    let url = format!("ws://{http}/v1/live?token={}", client.token);
    let (socket, _) = tokio_tungstenite::connect_async(url)
        .await
        .map_err(|e| e.to_string())?;
    Ok(socket)
}

/// Subscribes `socket` to `sql` as `id` and reads its snapshot.
async fn subscribe(socket: &mut Socket, id: &str, sql: &str) -> Result<(), String> {
    let message = json!({"op": "subscribe", "id": id, "sql": sql}).to_string();
    socket
        .send(Message::text(message))
        .await
        .map_err(|e| e.to_string())?;
    let event = next(socket).await?;
    if event["event"] != "snapshot" {
        return Err(format!("{sql}: {event}"));
    }
    Ok(())
}

/// The next JSON message of `socket` (within ten seconds).
async fn next(socket: &mut Socket) -> Result<Value, String> {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .map_err(|_| "no event within 10 s".to_string())?
            .ok_or("the socket closed")?
            .map_err(|e| e.to_string())?;
        if let Message::Text(text) = message {
            return serde_json::from_str(&text).map_err(|e| e.to_string());
        }
    }
}

/// `ws_live`: see the module docs. `live_bytes` reads the process's
/// allocated bytes.
pub async fn ws_live(size: Size, live_bytes: fn() -> i64) -> Result<Vec<Measurement>, String> {
    let (sockets, per_socket) = (size.ws_sockets, size.ws_subscriptions_per_socket);
    let ours = Ours::start(size.user_counts[0], CONNECTIONS[1]).await?;
    let admin = ours.engine.session(UserContext::new("admin", Role::Dba));
    for i in 0..sockets {
        admin
            .sql(&format!("CREATE USER 'w{i}' WITH PASSWORD '{PASSWORD}'"))
            .await
            .map_err(|e| e.to_string())?;
    }
    let target = login(0, size.user_counts[0]);
    let writer = ours.client(&target).await?;
    let insert = writer
        .prepare("INSERT INTO notes (id, body) VALUES ($1, 'x')")
        .await
        .map_err(|e| e.to_string())?;
    let mut watch = websocket(ours.http, &target).await?;
    subscribe(&mut watch, "mine", "SUBSCRIBE TO notes").await?;
    let inserts = size.iterations.clamp(20, 2_000);
    let mut next_id = 0i64;

    // INSERT -> event, and INSERT -> acknowledged, in turns.
    let mut measure =
        async |watch: &mut Socket| -> Result<(Histogram<u64>, Histogram<u64>), String> {
            let mut notified = Histogram::<u64>::new(3).map_err(|e| e.to_string())?;
            let mut acked = Histogram::<u64>::new(3).map_err(|e| e.to_string())?;
            for _ in 0..inserts {
                next_id += 1;
                let started = Instant::now();
                writer
                    .execute(&insert, &[&next_id])
                    .await
                    .map_err(|e| e.to_string())?;
                acked.saturating_record(started.elapsed().as_micros().max(1) as u64);
                let event = next(watch).await?;
                if event["rows"][0][0] != json!(next_id) {
                    return Err(format!("expected row {next_id}, got {event}"));
                }
                notified.saturating_record(started.elapsed().as_micros().max(1) as u64);
            }
            Ok((notified, acked))
        };
    let (alone, acked_alone) = measure(&mut watch).await?;

    // Other users' sockets, each with live queries of its own rows.
    let before = live_bytes();
    let mut others = Vec::new();
    for i in 0..sockets {
        let mut socket = websocket(ours.http, &format!("w{i}")).await?;
        subscribe(&mut socket, "q0", "SUBSCRIBE TO notes").await?;
        others.push(socket);
    }
    let one_each = live_bytes();
    for (i, socket) in others.iter_mut().enumerate() {
        for q in 1..per_socket {
            let sql = format!(
                "SUBSCRIBE TO notes WHERE id > {}",
                (i * per_socket + q) % 1000
            );
            subscribe(socket, &format!("q{q}"), &sql).await?;
        }
    }
    let all = live_bytes();
    let (crowded, acked_crowded) = measure(&mut watch).await?;
    let total = sockets * per_socket;
    let per_query = (all - one_each) as f64 / (sockets * (per_socket - 1)).max(1) as f64;
    let per_socket_bytes = (one_each - before) as f64 / sockets.max(1) as f64;
    drop(others);

    let at = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64;
    let row = |metric: String, ours: f64, baseline: f64| {
        Measurement::figure("ws_live", metric, ours, baseline, "us")
    };
    Ok(vec![
        row(
            format!(
                "INSERT (pgwire) -> event on the user's WebSocket, p50 of {inserts} (baseline: INSERT acknowledged)"
            ),
            at(&alone, 0.5),
            at(&acked_alone, 0.5),
        ),
        row(
            "INSERT (pgwire) -> event on the user's WebSocket, p99 (baseline: INSERT acknowledged)"
                .into(),
            at(&alone, 0.99),
            at(&acked_alone, 0.99),
        ),
        row(
            format!(
                "the same, p50, with {total} live queries open on {sockets} other users' sockets"
            ),
            at(&crowded, 0.5),
            at(&acked_crowded, 0.5),
        ),
        row(
            format!(
                "the same, p99, with {total} live queries open on {sockets} other users' sockets"
            ),
            at(&crowded, 0.99),
            at(&acked_crowded, 0.99),
        ),
        Measurement::figure(
            "ws_live",
            format!(
                "memory per idle live query on an open socket ({total} open; baseline: per socket with its first query, client side included)"
            ),
            per_query,
            per_socket_bytes,
            "bytes",
        ),
    ])
}
