//! An HTTP client for the tests: hyper's own, one connection per request,
//! and a WebSocket client (tokio-tungstenite).

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How a request proves who it is for.
#[derive(Debug, Clone)]
pub enum Auth {
    None,
    Basic(&'static str, &'static str),
    Bearer(String),
}

impl Auth {
    fn header(&self) -> Option<String> {
        match self {
            Auth::None => None,
            Auth::Basic(user, password) => Some(format!(
                "Basic {}",
                BASE64.encode(format!("{user}:{password}"))
            )),
            Auth::Bearer(token) => Some(format!("Bearer {token}")),
        }
    }
}

pub const ALICE: Auth = Auth::Basic("alice", "alice-pw");
pub const BOB: Auth = Auth::Basic("bob", "bob-pw");

/// An answer: status, content type and body.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub content_type: String,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    /// The error code of a failed request.
    pub fn code(&self) -> String {
        self.json()["code"].as_str().unwrap_or("").to_string()
    }
}

/// Sends one request on a new connection.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    auth: &Auth,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Result<Answer, hyper::Error> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    if let Some(value) = auth.header() {
        builder = builder.header("authorization", value);
    }
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let request = builder.body(Full::new(Bytes::from(body))).unwrap();
    let answer = sender.send_request(request).await?;
    let status = answer.status();
    let content_type = answer
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = answer.into_body().collect().await?.to_bytes();
    Ok(Answer {
        status,
        content_type,
        body,
    })
}

/// `POST /v1/sql` of `sql` with `params`.
pub async fn sql(addr: SocketAddr, auth: &Auth, sql: &str, params: Value) -> Answer {
    let body = json!({"sql": sql, "params": params})
        .to_string()
        .into_bytes();
    request(addr, "POST", "/v1/sql", auth, &[], body)
        .await
        .unwrap()
}

/// The rows of a successful `POST /v1/sql`.
pub async fn rows(addr: SocketAddr, auth: &Auth, query: &str) -> Vec<Value> {
    let answer = sql(addr, auth, query, json!([])).await;
    assert_eq!(answer.status, StatusCode::OK, "{query}: {:?}", answer.body);
    answer.json()["rows"].as_array().unwrap().clone()
}

/// A token from `POST /v1/login`.
pub async fn login(addr: SocketAddr, auth: &Auth) -> String {
    let answer = request(addr, "POST", "/v1/login", auth, &[], Vec::new())
        .await
        .unwrap();
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    answer.json()["token"].as_str().unwrap().to_string()
}

pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A WebSocket to `/v1/live` with `auth` in the Authorization header.
pub async fn websocket(
    addr: SocketAddr,
    auth: &Auth,
) -> Result<Socket, tokio_tungstenite::tungstenite::Error> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://{addr}/v1/live")
        .into_client_request()
        .unwrap();
    if let Some(value) = auth.header() {
        request
            .headers_mut()
            .insert("authorization", value.parse().unwrap());
    }
    let (socket, _) = tokio_tungstenite::connect_async(request).await?;
    Ok(socket)
}

/// Sends one JSON message.
pub async fn send(socket: &mut Socket, message: Value) {
    socket
        .send(Message::text(message.to_string()))
        .await
        .unwrap();
}

/// The next JSON message, within `wait` (`None`: none came).
pub async fn next_event(socket: &mut Socket, wait: Duration) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let message = tokio::time::timeout_at(deadline, socket.next())
            .await
            .ok()??;
        match message.ok()? {
            Message::Text(text) => return Some(serde_json::from_str(&text).unwrap()),
            Message::Close(_) => return None,
            _ => continue,
        }
    }
}

/// The next event, which must come within ten seconds.
pub async fn event(socket: &mut Socket) -> Value {
    next_event(socket, Duration::from_secs(10))
        .await
        .expect("no event within ten seconds")
}
