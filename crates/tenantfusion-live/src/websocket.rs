//! The WebSocket JSON source: one WebSocket per connection, topics
//! subscribed with JSON messages, rows decoded from JSON into Arrow.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{LiveError, Result};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use futures::{FutureExt, SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig as Limits;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::json_rows::JsonRows;
use crate::source::{Connection, Source, SourceKind, SourceSettings, SourceSpec, Topic, Upstream};

/// Settings of a [`WebSocketSource`].
///
/// The upstream speaks JSON text frames. We send `subscribe_message` and
/// `unsubscribe_message` with `{topics}` replaced by a JSON array of topic
/// names. It sends rows as JSON objects whose keys are the schema's column
/// names (the topic column first): one object, several separated by
/// whitespace (NDJSON), or arrays of them; a message is all or nothing (one
/// row that does not fit the schema, and none of it is delivered), and
/// nesting deeper than 128 levels is refused before decoding. Row messages
/// already waiting on the socket are decoded together into one batch (up
/// to 256 or 1 MiB; each still all or nothing on its own). An object with an
/// `"op"` key is a control message and is not a row (`"op": "error"` is
/// counted as a malformed message). Anything else that does not decode is
/// counted and skipped; the connection stays up. A message (or frame) over
/// `max_message_bytes` is refused from its header, before its body is
/// buffered: it is counted as malformed and the connection is replaced
/// (the rest of the message cannot be skipped).
#[derive(Debug, Clone)]
pub struct WebSocketConfig {
    /// Name, balancing, limits and rows.
    pub source: SourceSettings,
    /// `ws://host:port/path` (`wss://` is not built in).
    pub url: String,
    /// The subscribe request; `{topics}` becomes a JSON array of names.
    pub subscribe_message: String,
    /// The unsubscribe request; `{topics}` as above.
    pub unsubscribe_message: String,
    /// Time between our pings; a connection silent for two of these is
    /// considered lost.
    pub ping_interval: Duration,
    /// The longest message taken from the upstream (8 MiB by default).
    pub max_message_bytes: usize,
}

/// Messages up to 8 MiB: far above a row message, far below a memory risk.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 8 << 20;

impl WebSocketConfig {
    /// A configuration with the default protocol messages
    /// (`{"op":"subscribe","topics":[...]}` and `{"op":"unsubscribe",...}`),
    /// a 15 s ping, messages up to [`DEFAULT_MAX_MESSAGE_BYTES`] and no caps.
    pub fn new(name: impl Into<String>, url: impl Into<String>, schema: SchemaRef) -> Self {
        Self {
            source: SourceSettings::new(name, schema),
            url: url.into(),
            subscribe_message: r#"{"op":"subscribe","topics":{topics}}"#.into(),
            unsubscribe_message: r#"{"op":"unsubscribe","topics":{topics}}"#.into(),
            ping_interval: Duration::from_secs(15),
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
        }
    }
}

/// An upstream reached over WebSocket with JSON messages.
///
/// ```
/// use tenantfusion_live::{Source, WebSocketConfig, WebSocketSource, tick_schema};
/// let mut config = WebSocketConfig::new("ticks", "ws://127.0.0.1:9001/feed", tick_schema());
/// config.source.max_topics_per_connection = Some(200);
/// let source = WebSocketSource::new(config).unwrap();
/// assert_eq!(source.spec().capabilities.max_topics_per_connection, Some(200));
/// assert!(WebSocketSource::new(WebSocketConfig::new("x", "http://nope", tick_schema())).is_err());
/// ```
#[derive(Debug)]
pub struct WebSocketSource {
    spec: SourceSpec,
    config: Arc<WebSocketConfig>,
}

impl WebSocketSource {
    /// A source for `config`; `INVALID_ARGUMENT` for a URL that is not
    /// `ws://` or a message template without `{topics}`.
    pub fn new(config: WebSocketConfig) -> Result<Self> {
        let invalid = |what: String| {
            Err(LiveError::InvalidArgument(format!(
                "source '{}': {what}",
                config.source.name
            )))
        };
        if !config.url.starts_with("ws://") {
            return invalid(format!(
                "url '{}' must start with ws:// (wss:// is not built in)",
                config.url
            ));
        }
        for (key, template) in [
            ("subscribe_message", &config.subscribe_message),
            ("unsubscribe_message", &config.unsubscribe_message),
        ] {
            if !template.contains("{topics}") {
                return invalid(format!("{key} must contain {{topics}}"));
            }
        }
        if config.max_message_bytes == 0 {
            return invalid("max_message_bytes must be more than zero".into());
        }
        if config.ping_interval.is_zero() {
            return invalid("ping_interval must be longer than zero".into());
        }
        let spec = config.source.spec(SourceKind::WebSocket, true);
        Ok(Self {
            spec,
            config: Arc::new(config),
        })
    }
}

#[async_trait]
impl Source for WebSocketSource {
    fn spec(&self) -> &SourceSpec {
        &self.spec
    }

    async fn connect(&self) -> Result<Box<dyn Connection>> {
        let limits = Limits::default()
            .max_message_size(Some(self.config.max_message_bytes))
            .max_frame_size(Some(self.config.max_message_bytes));
        let url = self.config.url.as_str();
        let (stream, _) = tokio_tungstenite::connect_async_with_config(url, Some(limits), false)
            .await
            .map_err(|e| {
                LiveError::UpstreamUnavailable(format!(
                    "source '{}': cannot connect to {}: {e}",
                    self.config.source.name, self.config.url
                ))
            })?;
        let mut ping = tokio::time::interval_at(
            Instant::now() + self.config.ping_interval,
            self.config.ping_interval,
        );
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Ok(Box::new(WebSocketConnection {
            rows: JsonRows::new(&self.config.source.schema)?,
            config: Arc::clone(&self.config),
            stream,
            ping,
            last_seen: Instant::now(),
            broken: None,
            held: None,
            ready: VecDeque::new(),
        }))
    }
}

struct WebSocketConnection {
    config: Arc<WebSocketConfig>,
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
    rows: JsonRows,
    ping: Interval,
    last_seen: Instant,
    /// Why the stream cannot be read on, once a message over the limit was
    /// counted as malformed: the next read reports the connection lost.
    broken: Option<String>,
    /// What the socket gave past the end of a burst, handled next.
    held: Option<Option<std::result::Result<Message, WsError>>>,
    /// Events of a burst not handed out yet.
    ready: VecDeque<Upstream>,
}

/// Text messages already waiting on the socket are decoded together, up to
/// this many or [`BURST_BYTES`] (one flush of the decoder for all of them:
/// a one-row message costs more to flush than to read).
const BURST_MESSAGES: usize = 256;
/// See [`BURST_MESSAGES`].
const BURST_BYTES: usize = 1 << 20;

/// Whether a message may be a control message (an object with an `"op"`
/// key): only those are parsed into values to look.
fn may_be_control(text: &[u8]) -> bool {
    memchr::memmem::find(text, br#""op""#).is_some()
}

impl std::fmt::Debug for WebSocketConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSocketConnection")
            .field("source", &self.config.source.name)
            .finish_non_exhaustive()
    }
}

impl WebSocketConnection {
    fn lost(&self, why: impl std::fmt::Display) -> LiveError {
        LiveError::UpstreamUnavailable(format!("source '{}': {why}", self.config.source.name))
    }

    async fn send(&mut self, template: &str, topics: &[Topic]) -> Result<()> {
        let names: Vec<&str> = topics.iter().map(|t| &**t).collect();
        let list = serde_json::to_string(&names).map_err(|e| LiveError::Internal(e.to_string()))?;
        let text = template.replace("{topics}", &list);
        let sent = self.stream.send(Message::text(text)).await;
        sent.map_err(|e| self.lost(format!("sending a request: {e}")))
    }

    /// Rows of one text message (none for a control message), or why it
    /// is not rows.
    fn decode(&mut self, text: &[u8]) -> Upstream {
        // Rows go straight to the decoder; only a message that may hold an
        // `"op"` key is parsed into values to look (control messages are
        // few, rows are many).
        if !may_be_control(text) {
            return self.rows.decode(text);
        }
        let value: Value = match serde_json::from_slice(text) {
            Ok(value) => value,
            Err(e) => return Upstream::Malformed(format!("not JSON: {e}")),
        };
        if let Value::Object(object) = &value
            && let Some(op) = object.get("op")
        {
            return match op.as_str() {
                Some("error") => Upstream::Malformed(format!("upstream error: {value}")),
                // Acknowledgements and the like carry no rows.
                _ => Upstream::Rows(RecordBatch::new_empty(Arc::clone(
                    &self.config.source.schema,
                ))),
            };
        }
        self.rows.decode_value(value)
    }
}

#[async_trait]
impl Connection for WebSocketConnection {
    async fn subscribe(&mut self, topics: &[Topic]) -> Result<()> {
        let template = self.config.subscribe_message.clone();
        self.send(&template, topics).await
    }

    async fn unsubscribe(&mut self, topics: &[Topic]) -> Result<()> {
        let template = self.config.unsubscribe_message.clone();
        self.send(&template, topics).await
    }

    async fn next_event(&mut self) -> Result<Upstream> {
        // Cancel-safe: `next()` on the stream and `tick()` lose nothing when
        // dropped; a ping interrupted half-sent stays buffered in the socket.
        loop {
            if let Some(event) = self.ready.pop_front() {
                if matches!(&event, Upstream::Rows(b) if b.num_rows() == 0) {
                    continue;
                }
                return Ok(event);
            }
            if let Some(why) = self.broken.take() {
                return Err(self.lost(why));
            }
            let message = match self.held.take() {
                Some(message) => message,
                None => tokio::select! {
                    message = self.stream.next() => message,
                    _ = self.ping.tick() => {
                        self.ping().await?;
                        continue;
                    }
                },
            };
            let message = match message {
                None => return Ok(Upstream::Closed),
                Some(Err(WsError::Capacity(e))) => {
                    let why = format!("a message over max_message_bytes: {e}");
                    self.broken = Some(why.clone());
                    return Ok(Upstream::Malformed(why));
                }
                Some(Err(e)) => return Err(self.lost(e)),
                Some(Ok(message)) => message,
            };
            self.last_seen = Instant::now();
            match message {
                Message::Text(text) => {
                    let burst = self.burst(text);
                    self.ready.extend(burst);
                }
                Message::Binary(_) => return Ok(Upstream::Malformed("binary frame".into())),
                Message::Close(_) => return Ok(Upstream::Closed),
                // Pongs are answered by the library; pings and pongs count as life.
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            }
        }
    }

    async fn close(&mut self) -> Result<()> {
        self.stream
            .close(None)
            .await
            .map_err(|e| self.lost(format!("close: {e}")))
    }
}

impl WebSocketConnection {
    /// The events of `first` and of the row messages already waiting behind
    /// it, decoded together; what the socket gives that ends the burst (a
    /// control message, a ping, an error, the end) is held for the next
    /// read. Nothing is awaited: a dropped `next_event` loses nothing.
    fn burst(&mut self, first: Utf8Bytes) -> Vec<Upstream> {
        if may_be_control(first.as_bytes()) {
            return vec![self.decode(first.as_bytes())];
        }
        let mut texts = vec![first];
        let mut bytes = texts[0].len();
        while texts.len() < BURST_MESSAGES && bytes < BURST_BYTES {
            match self.stream.next().now_or_never() {
                None => break,
                Some(Some(Ok(Message::Text(text)))) if !may_be_control(text.as_bytes()) => {
                    bytes += text.len();
                    texts.push(text);
                }
                Some(other) => {
                    self.held = Some(other);
                    break;
                }
            }
        }
        let messages: Vec<&[u8]> = texts.iter().map(|t| t.as_bytes()).collect();
        self.rows.decode_each(&messages)
    }

    /// Sends our ping, or finds the connection silent for two intervals.
    async fn ping(&mut self) -> Result<()> {
        if self.last_seen.elapsed() > self.config.ping_interval * 2 {
            return Err(self.lost("no frame for two ping intervals"));
        }
        // An upstream that stopped reading must not hold the task in the
        // send: a ping not out within an interval is a lost connection.
        let ping = self.stream.send(Message::Ping(Default::default()));
        match tokio::time::timeout(self.config.ping_interval, ping).await {
            Ok(sent) => sent.map_err(|e| self.lost(format!("ping: {e}"))),
            Err(_) => Err(self.lost("a ping not sent within a ping interval")),
        }
    }
}
