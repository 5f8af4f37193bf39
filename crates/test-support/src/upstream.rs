//! A WebSocket upstream written for the tests (tokio-tungstenite): JSON
//! ticks for subscribed topics every 5 ms, a per-connection topic cap, and
//! commands to drop, stall or garble connections or inject a row.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::{SinkExt, StreamExt};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;

/// Tick period of the upstream, in microseconds.
pub const TICK_US: u64 = 5_000;

#[derive(Debug, Default)]
struct Conn {
    topics: BTreeSet<String>,
    command: Option<Command>,
}

/// What a test tells live connections to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Drop the TCP connection without a close frame.
    Drop,
    /// Stop reading and writing (no pongs) but keep the socket open.
    Stall,
    /// Send five undecodable messages (not JSON, a row that does not fit,
    /// an upstream error, two nested 100,000 deep), then carry on.
    Garble,
    /// Send one row for `topic` numbered `seq`, whether or not this
    /// connection carries it, then carry on.
    Inject {
        /// The row's topic.
        topic: &'static str,
        /// Its sequence number.
        seq: u64,
    },
    /// Send one text message of about `bytes` bytes (a row padded with
    /// spaces), then carry on.
    Huge {
        /// The message's length.
        bytes: usize,
    },
}

/// The upstream's connections and counters, shared with its tasks.
#[derive(Debug, Default)]
pub struct UpstreamState {
    conns: Mutex<BTreeMap<u64, Conn>>,
    wake: Notify,
    /// WebSocket connections accepted.
    pub accepted: AtomicU64,
    /// SUBSCRIBE requests refused for going over the cap.
    pub refused: AtomicU64,
    next: AtomicU64,
}

/// The running upstream.
pub struct WsUpstream {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its connections and counters.
    pub state: Arc<UpstreamState>,
    cap: usize,
}

impl WsUpstream {
    /// Listens on 127.0.0.1 (a free port) with `cap` topics per connection.
    pub async fn start(cap: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(UpstreamState::default());
        let shared = Arc::clone(&state);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let state = Arc::clone(&shared);
                tokio::spawn(async move {
                    if let Ok(ws) = tokio_tungstenite::accept_async(tcp).await {
                        serve(ws, state, cap).await;
                    }
                });
            }
        });
        Self { addr, state, cap }
    }

    /// The `ws://` URL to configure a source with.
    pub fn url(&self) -> String {
        format!("ws://{}/feed", self.addr)
    }

    /// Topics per live connection, in connection order.
    pub fn loads(&self) -> Vec<usize> {
        self.state
            .conns
            .lock()
            .values()
            .map(|c| c.topics.len())
            .collect()
    }

    /// Every topic carried by some connection, and how many connections carry it.
    pub fn carried(&self) -> BTreeMap<String, usize> {
        let mut carried = BTreeMap::new();
        for conn in self.state.conns.lock().values() {
            for topic in &conn.topics {
                *carried.entry(topic.clone()).or_insert(0) += 1;
            }
        }
        carried
    }

    /// Sends `command` to the first `count` live connections.
    pub fn command(&self, count: usize, command: Command) {
        for conn in self.state.conns.lock().values_mut().take(count) {
            conn.command = Some(command);
        }
        self.state.wake.notify_waiters();
    }

    /// Topics one connection may carry.
    pub fn cap(&self) -> usize {
        self.cap
    }
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

async fn serve(
    ws: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    state: Arc<UpstreamState>,
    cap: usize,
) {
    let id = state.next.fetch_add(1, Ordering::SeqCst);
    state.accepted.fetch_add(1, Ordering::SeqCst);
    state.conns.lock().insert(id, Conn::default());
    let (mut tx, mut rx) = ws.split();
    let mut ticker = tokio::time::interval(Duration::from_micros(TICK_US));
    let mut next_tick = now_us() / TICK_US + 1;
    loop {
        let command = state
            .conns
            .lock()
            .get_mut(&id)
            .and_then(|c| c.command.take());
        match command {
            Some(Command::Drop) => break,
            Some(Command::Stall) => {
                state.conns.lock().remove(&id);
                // Hold the socket open, answer nothing, until the client gives up.
                let _ =
                    tokio::time::timeout(Duration::from_secs(30), futures::future::pending::<()>())
                        .await;
                return;
            }
            Some(Command::Garble) => {
                let _ = tx.send(Message::text("this is not json")).await;
                let _ = tx
                    .send(Message::text(r#"[{"topic":"T0000","seq":"not a number"}]"#))
                    .await;
                let _ = tx
                    .send(Message::text(
                        r#"{"op":"error","message":"upstream hiccup"}"#,
                    ))
                    .await;
                // Nested 100,000 deep, as rows and as a control message: a
                // parser that recurses per level overflows the stack.
                let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
                let _ = tx.send(Message::text(deep.clone())).await;
                let _ = tx.send(Message::text(format!(r#"{{"op":{deep}}}"#))).await;
            }
            Some(Command::Inject { topic, seq }) => {
                let row = json!([{"topic": topic, "seq": seq, "price": 66.6, "volume": 6, "ts": now_us()}]);
                if tx.send(Message::text(row.to_string())).await.is_err() {
                    break;
                }
            }
            Some(Command::Huge { bytes }) => {
                let row = json!([{"topic": "T0000", "seq": 1, "price": 1.0, "volume": 1, "ts": now_us()}]);
                let text = format!("{row}{}", " ".repeat(bytes));
                if tx.send(Message::text(text)).await.is_err() {
                    break;
                }
            }
            None => {}
        }
        tokio::select! {
            _ = state.wake.notified() => {}
            message = rx.next() => {
                let Some(Ok(message)) = message else { break };
                let Message::Text(text) = message else { continue };
                let Ok(request) = serde_json::from_str::<Value>(&text) else { continue };
                let topics: Vec<String> = request["topics"].as_array().into_iter().flatten()
                    .filter_map(|t| t.as_str().map(String::from)).collect();
                let reply = {
                    let mut conns = state.conns.lock();
                    let Some(conn) = conns.get_mut(&id) else { break };
                    match request["op"].as_str() {
                        Some("subscribe") => {
                            let new = topics.iter().filter(|t| !conn.topics.contains(*t)).count();
                            if conn.topics.len() + new > cap {
                                state.refused.fetch_add(1, Ordering::SeqCst);
                                Some(json!({"op": "error", "message": format!("at most {cap} topics per connection")}))
                            } else {
                                conn.topics.extend(topics);
                                Some(json!({"op": "subscribed"}))
                            }
                        }
                        Some("unsubscribe") => {
                            for t in &topics {
                                conn.topics.remove(t);
                            }
                            None
                        }
                        _ => None,
                    }
                };
                if let Some(reply) = reply
                    && tx.send(Message::text(reply.to_string())).await.is_err()
                {
                    break;
                }
            }
            _ = ticker.tick() => {
                let last = now_us() / TICK_US;
                let topics: Vec<String> = match state.conns.lock().get(&id) {
                    Some(conn) => conn.topics.iter().cloned().collect(),
                    None => break,
                };
                // A late upstream skips what it could not send (at most 20
                // ticks a message), as real feeds do; the pool counts the gap.
                let mut rows = Vec::new();
                for tick in next_tick.max(last.saturating_sub(19))..=last {
                    for topic in &topics {
                        rows.push(json!({"topic": topic, "seq": tick, "price": 100.5, "volume": 7, "ts": tick * TICK_US}));
                    }
                }
                next_tick = last + 1;
                if !rows.is_empty() && tx.send(Message::text(Value::Array(rows).to_string())).await.is_err() {
                    break;
                }
            }
        }
    }
    state.conns.lock().remove(&id);
}
