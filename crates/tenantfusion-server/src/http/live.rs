//! `GET /v1/live`: live queries over a WebSocket.
//!
//! The socket is authenticated at the upgrade (the `Authorization` header,
//! or `?token=` from `POST /v1/login`, since browsers cannot set headers on
//! a WebSocket) and is that user's for its life. Then, as JSON text
//! messages:
//!
//! ```text
//! -> {"op": "subscribe", "id": "q1", "sql": "SUBSCRIBE TO app.notes WHERE id > 10 OPTIONS (LAST_ROWS = 100)"}
//! <- {"id": "q1", "event": "snapshot", "columns": [{"name": "id", "type": "int8"}, ...], "rows": [[11, "hi"]]}
//! <- {"id": "q1", "event": "insert", "rows": [[12, "new"]]}
//! <- {"id": "q1", "event": "delete", "rows": [[11, "hi"]]}       (an UPDATE: delete, then insert)
//! <- {"id": "q1", "event": "lagged", "missed": 3}               (events dropped: the client read too slowly)
//! <- {"id": "q1", "event": "error", "code": "PERMISSION_DENIED", "message": "..."}  (the query has ended)
//! -> {"op": "unsubscribe", "id": "q1"}
//! <- {"id": "q1", "event": "unsubscribed"}
//! -> {"op": "ping"}
//! <- {"event": "pong"}
//! ```
//!
//! Many live queries share one socket; ids are the client's (at most 128
//! bytes), unique among the socket's running queries. A message the server cannot use gets an
//! `error` event (with the id when it had one) and the socket stays open;
//! a message over `max_ws_message_bytes` closes it (`1009`).
//!
//! # Slow sockets
//! Each live query has the engine's bounded queue and its `SLOW_CONSUMER`
//! policy (drop and say `lagged`, or end the query). Between the queries
//! and the socket is one queue of at most [`OUTGOING_BYTES`] of encoded
//! messages: when the client stops reading, the socket's writes stop, that
//! queue fills, the live queries stop being read, and their own queues
//! apply the policy. Nothing grows without bound and other sockets do not
//! wait. A write that cannot finish within `write_timeout_secs` (30)
//! closes the socket (see `deadline`): a client that keeps its connection
//! open and never reads does not hold the server's resources for ever.
//!
//! # Reconnecting
//! Events carry no sequence numbers, so a subscription cannot be resumed
//! where it stopped: after a reconnect, subscribe again, and the snapshot
//! gives the rows as they are now (the newest `LAST_ROWS` of them).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use futures::{SinkExt, StreamExt};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONNECTION, HeaderValue, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, UPGRADE};
use hyper::upgrade::OnUpgrade;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tenantfusion::{ChangeEvent, LiveQuery, TenantSession};
use tenantfusion_core::{TenantError, UserContext};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::{AbortHandle, JoinSet};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tracing::debug;

use super::auth::{self, Credentials};
use super::sql::{JsonRows, columns};
use super::{Answer, ApiError, Http, Upgrade};
use crate::config::HttpConfig;
use crate::figures::{Connected, Protocol};

/// Bytes of encoded messages waiting for the socket, across its live
/// queries.
pub(crate) const OUTGOING_BYTES: usize = 4 << 20;

/// How often a quiet socket is pinged, so that a client gone without a
/// word is noticed.
const PING_EVERY: Duration = Duration::from_secs(20);

/// The largest event message, about: a snapshot or batch over it is sent
/// as several messages of the same event.
const EVENT_BYTES: usize = 256 << 10;

/// A message for the socket, holding its share of [`OUTGOING_BYTES`].
type Outgoing = (Message, OwnedSemaphorePermit);

/// The longest id a client may give a live query (ids are kept while it
/// runs and repeated in each of its events).
const LONGEST_ID: usize = 128;

/// An upgrade accepted, waiting for the HTTP exchange to end.
pub(crate) struct Pending {
    on_upgrade: OnUpgrade,
    caller: UserContext,
}

/// Answers a WebSocket upgrade request: `101` once the caller is known.
pub(super) async fn upgrade(
    http: &Http,
    mut request: Request<Incoming>,
    upgrade: &Upgrade,
) -> Result<Answer, ApiError> {
    let headers = request.headers();
    let has = |name, word: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|w| w.trim().eq_ignore_ascii_case(word)))
        })
    };
    if !has(UPGRADE, "websocket") || !has(CONNECTION, "upgrade") {
        return Err(ApiError::new(
            StatusCode::UPGRADE_REQUIRED,
            "INVALID_REQUEST",
            "GET /v1/live is a WebSocket: send Upgrade: websocket",
        ));
    }
    if headers
        .get("sec-websocket-version")
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        return Err(ApiError::bad_request(
            "INVALID_REQUEST",
            "only WebSocket version 13 is spoken",
        ));
    }
    let key = headers
        .get(SEC_WEBSOCKET_KEY)
        .ok_or_else(|| ApiError::bad_request("INVALID_REQUEST", "no Sec-WebSocket-Key"))?;
    let accept = derive_accept_key(key.as_bytes());
    let credentials = match auth::credentials(headers)? {
        Some(credentials) => Some(credentials),
        None => token_parameter(request.uri().query()).map(Credentials::Bearer),
    };
    let caller = match credentials {
        Some(credentials) => auth::caller(http, credentials).await?,
        None => auth::required(http, headers).await?,
    };
    let pending = Pending {
        on_upgrade: hyper::upgrade::on(&mut request),
        caller,
    };
    *upgrade.lock().unwrap_or_else(|e| e.into_inner()) = Some(pending);
    let mut answer = Response::new(Full::default());
    *answer.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let answer_headers = answer.headers_mut();
    answer_headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    answer_headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    answer_headers.insert(
        SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept)
            .map_err(|e| ApiError::from(TenantError::Internal(e.to_string())))?,
    );
    Ok(answer)
}

/// The `token` of a query string (`?token=...`), as sent: tokens are
/// base64url and dots, nothing that needs decoding.
fn token_parameter(query: Option<&str>) -> Option<String> {
    query?
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))
        .map(str::to_string)
}

/// What a client sends.
#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
enum Op {
    Subscribe { id: String, sql: String },
    Unsubscribe { id: String },
    Ping,
}

/// What the server sends: one event of one live query, or of the socket.
#[derive(Debug, Serialize)]
struct Event<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    event: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    missed: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a str>,
}

impl<'a> Event<'a> {
    fn new(id: Option<&'a str>, event: &'a str) -> Self {
        Self {
            id,
            event,
            missed: None,
            code: None,
            message: None,
        }
    }

    fn error(id: Option<&'a str>, code: &'a str, message: &'a str) -> Self {
        Self {
            code: Some(code),
            message: Some(message),
            ..Self::new(id, "error")
        }
    }

    fn message(&self) -> Message {
        Message::text(serde_json::to_string(self).unwrap_or_default())
    }
}

/// Serves the socket of `pending` until the client closes it or goes away.
pub(super) async fn run(http: &Http, pending: Pending, addr: SocketAddr) {
    let upgraded = match pending.on_upgrade.await {
        Ok(upgraded) => upgraded,
        Err(err) => {
            debug!(%addr, "WebSocket upgrade failed: {err}");
            return;
        }
    };
    // tungstenite's default read buffer is 128 KiB per socket, allocated at
    // once; a socket mostly waits, and clients send little.
    let config = WebSocketConfig::default()
        .read_buffer_size(8 << 10)
        .write_buffer_size(32 << 10)
        .max_message_size(Some(http.config.max_ws_message_bytes))
        .max_frame_size(Some(http.config.max_ws_message_bytes));
    let socket =
        WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config)).await;
    let _connected = Connected::new(Protocol::WebSocket);
    let user = pending.caller.user_id().to_string();
    debug!(%addr, user = %user, "WebSocket open");
    let session = http.shared.engine.session(pending.caller);
    Socket::new(session, &http.config).serve(socket).await;
    debug!(%addr, user = %user, "WebSocket closed");
}

/// One socket's live queries.
struct Socket {
    session: TenantSession,
    limit: usize,
    /// Running live queries by the client's id.
    running: HashMap<String, AbortHandle>,
    tasks: JoinSet<String>,
    /// Unbounded as a channel, bounded by `budget`: each message holds
    /// permits for its bytes until it is written.
    outgoing: mpsc::UnboundedSender<Outgoing>,
    queued: mpsc::UnboundedReceiver<Outgoing>,
    budget: Arc<Semaphore>,
}

impl Socket {
    fn new(session: TenantSession, config: &HttpConfig) -> Self {
        let (outgoing, queued) = mpsc::unbounded_channel();
        Self {
            session,
            limit: config.subscriptions_per_socket,
            running: HashMap::new(),
            tasks: JoinSet::new(),
            outgoing,
            queued,
            budget: Arc::new(Semaphore::new(OUTGOING_BYTES)),
        }
    }

    async fn serve<S>(mut self, socket: WebSocketStream<S>)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let (mut sink, mut incoming) = socket.split();
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.tick().await;
        loop {
            tokio::select! {
                message = incoming.next() => {
                    let text = match message {
                        Some(Ok(Message::Text(text))) => text,
                        Some(Ok(Message::Binary(_))) => {
                            let event = Event::error(None, "INVALID_REQUEST", "send JSON as text messages");
                            if sink.send(event.message()).await.is_err() {
                                break;
                            }
                            continue;
                        }
                        // Pings are answered by tungstenite as it reads.
                        Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                        Some(Ok(Message::Close(_))) | None => break,
                        Some(Err(err)) => {
                            // Over the size limit, or not a WebSocket any more.
                            debug!("WebSocket read failed: {err}");
                            break;
                        }
                    };
                    if let Some(reply) = self.on_message(&text).await
                        && sink.send(reply).await.is_err()
                    {
                        break;
                    }
                }
                Some((message, permit)) = self.queued.recv() => {
                    // Feed what is queued, then flush once; each message's
                    // bytes are free again once it is written.
                    let mut sent = sink.feed(message).await.is_ok();
                    drop(permit);
                    while sent {
                        match self.queued.try_recv() {
                            Ok((more, permit)) => {
                                sent = sink.feed(more).await.is_ok();
                                drop(permit);
                            }
                            Err(_) => break,
                        }
                    }
                    if !sent || sink.flush().await.is_err() {
                        break;
                    }
                }
                Some(ended) = self.tasks.join_next() => {
                    if let Ok(id) = ended {
                        self.running.remove(&id);
                    }
                }
                _ = ping.tick() => {
                    if sink.send(Message::Ping(Default::default())).await.is_err() {
                        break;
                    }
                }
            }
        }
        self.tasks.abort_all();
    }

    /// Acts on one client message; what to answer at once, if anything.
    async fn on_message(&mut self, text: &str) -> Option<Message> {
        let op: Op = match serde_json::from_str(text) {
            Ok(op) => op,
            Err(err) => {
                let message = format!(
                    "not a message of this socket ({{\"op\": \"subscribe\"|\"unsubscribe\"|\"ping\", ...}}): {err}"
                );
                return Some(Event::error(None, "INVALID_REQUEST", &message).message());
            }
        };
        match op {
            Op::Ping => Some(Event::new(None, "pong").message()),
            Op::Unsubscribe { id } => match self.running.remove(&id) {
                Some(task) => {
                    task.abort();
                    Some(Event::new(Some(&id), "unsubscribed").message())
                }
                None => Some(
                    Event::error(Some(&id), "INVALID_REQUEST", "no live query has this id")
                        .message(),
                ),
            },
            Op::Subscribe { id, sql } => {
                if id.len() > LONGEST_ID {
                    let message = format!("an id has at most {LONGEST_ID} bytes");
                    return Some(Event::error(None, "INVALID_REQUEST", &message).message());
                }
                if self.running.contains_key(&id) {
                    let message = "a live query with this id is running";
                    return Some(Event::error(Some(&id), "INVALID_REQUEST", message).message());
                }
                if self.running.len() >= self.limit {
                    let message = format!(
                        "{} live queries run on this socket already (subscriptions_per_socket)",
                        self.limit
                    );
                    return Some(
                        Event::error(Some(&id), "RESOURCES_EXHAUSTED", &message).message(),
                    );
                }
                if crate::live::request(&sql).is_none_or(|request| request.copy) {
                    let message = "sql must be SUBSCRIBE TO ...";
                    return Some(Event::error(Some(&id), "INVALID_REQUEST", message).message());
                }
                match self.session.subscribe(&sql).await {
                    Ok(query) => {
                        let outgoing = self.outgoing.clone();
                        let budget = Arc::clone(&self.budget);
                        let task = self
                            .tasks
                            .spawn(forward(id.clone(), query, outgoing, budget));
                        self.running.insert(id, task);
                        None
                    }
                    Err(err) => {
                        Some(Event::error(Some(&id), err.code(), &err.to_string()).message())
                    }
                }
            }
        }
    }
}

/// Sends `query`'s events as messages of `id` until it ends or the socket
/// goes, each once `budget` has room for it; gives back `id`.
async fn forward(
    id: String,
    mut query: LiveQuery,
    outgoing: mpsc::UnboundedSender<Outgoing>,
    budget: Arc<Semaphore>,
) -> String {
    let schema = Arc::clone(query.schema());
    loop {
        let messages = match query.recv().await {
            Ok(Some(ChangeEvent::Snapshot(batches))) => {
                rows_messages(&id, "snapshot", Some(&schema), &batches)
            }
            Ok(Some(ChangeEvent::Insert(rows))) => {
                rows_messages(&id, "insert", None, std::slice::from_ref(&rows))
            }
            Ok(Some(ChangeEvent::Delete(rows))) => {
                rows_messages(&id, "delete", None, std::slice::from_ref(&rows))
            }
            Ok(Some(ChangeEvent::Lagged { missed })) => {
                let event = Event {
                    missed: Some(missed),
                    ..Event::new(Some(&id), "lagged")
                };
                Ok(vec![event.message()])
            }
            Ok(None) => Err(TenantError::Cancelled("the live query ended".into())),
            Err(err) => Err(err),
        };
        let (messages, ended) = match messages {
            Ok(messages) => (messages, false),
            Err(err) => {
                let message = err.to_string();
                let event = Event::error(Some(&id), err.code(), &message);
                (vec![event.message()], true)
            }
        };
        for message in messages {
            // A message larger than the whole budget waits for all of it.
            let weight = message.len().clamp(1, OUTGOING_BYTES) as u32;
            let Ok(permit) = Arc::clone(&budget).acquire_many_owned(weight).await else {
                return id;
            };
            if outgoing.send((message, permit)).is_err() {
                return id;
            }
        }
        if ended {
            return id;
        }
    }
}

/// `batches` as messages of event `event`: one, or several when the rows
/// are many (each under about [`EVENT_BYTES`]); the first of a snapshot
/// carries the columns, and a snapshot always sends at least one.
fn rows_messages(
    id: &str,
    event: &str,
    schema: Option<&SchemaRef>,
    batches: &[RecordBatch],
) -> Result<Vec<Message>, TenantError> {
    let mut messages = Vec::new();
    let mut rows = JsonRows::new(usize::MAX);
    // `{"id":..,"event":..[,"columns":[..]],"rows":[..]}`, the rows as
    // `JsonRows` wrote them.
    let flush = |rows: &mut JsonRows, messages: &mut Vec<Message>| {
        let mut out = Vec::with_capacity(rows.out.len() + 128);
        out.extend_from_slice(b"{\"id\":");
        push_json(&mut out, id)?;
        out.extend_from_slice(b",\"event\":");
        push_json(&mut out, event)?;
        if let (Some(schema), true) = (schema, messages.is_empty()) {
            out.extend_from_slice(b",\"columns\":");
            push_json(&mut out, &columns(schema))?;
        }
        out.extend_from_slice(b",\"rows\":[");
        out.append(&mut rows.out);
        out.extend_from_slice(b"]}");
        let text = String::from_utf8(out).map_err(|e| TenantError::Internal(e.to_string()))?;
        messages.push(Message::text(text));
        *rows = JsonRows::new(usize::MAX);
        Ok::<_, TenantError>(())
    };
    for batch in batches {
        let mut offset = 0;
        while offset < batch.num_rows() {
            // A few rows at a time, so a big batch splits near the size.
            let length = (batch.num_rows() - offset).min(64);
            rows.push(&batch.slice(offset, length))
                .map_err(|e| TenantError::Internal(e.message))?;
            offset += length;
            if rows.out.len() >= EVENT_BYTES {
                flush(&mut rows, &mut messages)?;
            }
        }
    }
    if rows.count > 0 || (schema.is_some() && messages.is_empty()) {
        flush(&mut rows, &mut messages)?;
    }
    Ok(messages)
}

/// `value` as JSON at the end of `out`.
fn push_json<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) -> Result<(), TenantError> {
    serde_json::to_writer(out, value).map_err(|e| TenantError::Internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    #[test]
    fn events_are_json_with_rows_as_arrays() {
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![Arc::new(Int64Array::from(vec![1, 2]))],
        )
        .unwrap();
        let messages = rows_messages(
            "q1",
            "snapshot",
            Some(&schema),
            std::slice::from_ref(&batch),
        )
        .unwrap();
        assert_eq!(messages.len(), 1);
        let parsed: serde_json::Value =
            serde_json::from_str(messages[0].to_text().unwrap()).unwrap();
        assert_eq!(
            parsed,
            serde_json::json!({"id": "q1", "event": "snapshot",
                "columns": [{"name": "id", "type": "int8"}], "rows": [[1], [2]]})
        );
        let empty = rows_messages("q1", "snapshot", Some(&schema), &[]).unwrap();
        assert_eq!(empty.len(), 1, "an empty snapshot is still said");
        let big = RecordBatch::try_new(
            schema,
            vec![Arc::new(Int64Array::from_iter_values(0..300_000))],
        )
        .unwrap();
        let split = rows_messages("q1", "insert", None, &[big]).unwrap();
        assert!(split.len() > 1, "{} messages", split.len());
        let total: usize = split
            .iter()
            .map(|m| {
                let v: serde_json::Value = serde_json::from_str(m.to_text().unwrap()).unwrap();
                v["rows"].as_array().unwrap().len()
            })
            .sum();
        assert_eq!(total, 300_000);
    }

    #[test]
    fn the_token_comes_from_the_query_string() {
        assert_eq!(token_parameter(Some("a=1&token=x.y")), Some("x.y".into()));
        assert_eq!(token_parameter(Some("tokens=1")), None);
        assert_eq!(token_parameter(None), None);
    }
}
