//! What an upstream is and what one connection to it does.

use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::Result;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;

/// Now, in microseconds since the Unix epoch: the time base of event-time
/// columns (the generator's ticks, the pool's latency).
pub(crate) fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// A topic (symbol, channel, destination) as the upstream names it.
pub type Topic = Arc<str>;

/// The protocol family of a source; requests ask for a kind, not a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SourceKind {
    /// JSON over WebSocket.
    WebSocket,
    /// STOMP 1.2 over TCP.
    Stomp,
    /// HTTP polling.
    Rest,
    /// The in-process generator of synthetic ticks.
    Generator,
}

impl SourceKind {
    /// Every kind.
    pub const ALL: [SourceKind; 4] = [
        SourceKind::WebSocket,
        SourceKind::Stomp,
        SourceKind::Rest,
        SourceKind::Generator,
    ];
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SourceKind::WebSocket => "websocket",
            SourceKind::Stomp => "stomp",
            SourceKind::Rest => "rest",
            SourceKind::Generator => "generator",
        })
    }
}

/// What a source can do, declared by the source and matched by requests.
#[derive(Debug, Clone, PartialEq)]
pub struct Capabilities {
    /// Most topics one connection may carry; `None` for no limit.
    pub max_topics_per_connection: Option<usize>,
    /// Most connections the upstream accepts from us; `None` for no limit.
    pub max_connections: Option<usize>,
    /// Whether several topics can be subscribed in one request.
    pub batch_subscribe: bool,
    /// Topic prefixes served (`""` serves every topic).
    pub topic_prefixes: Vec<String>,
    /// The rows every message decodes to; the first column is the topic.
    pub schema: SchemaRef,
    /// A per-topic message number (`UInt64`/`Int64`) in `schema`, if the
    /// upstream numbers its messages: the pool then drops duplicates seen
    /// while a topic moves between connections and counts the numbers it
    /// never saw as the topic's gap.
    pub sequence_column: Option<String>,
    /// The upstream's event time (a `Timestamp` column) in `schema`, if
    /// any: the pool's latency histogram measures from it to delivery.
    pub timestamp_column: Option<String>,
}

impl Capabilities {
    /// Whether `topic` is served by this source.
    pub fn serves(&self, topic: &str) -> bool {
        self.topic_prefixes
            .iter()
            .any(|p| topic.starts_with(p.as_str()))
    }
}

/// What every configured upstream (WebSocket, STOMP, REST) declares: its
/// name, balancing weights, limits and the rows its messages decode to.
#[derive(Debug, Clone)]
pub struct SourceSettings {
    /// Source name.
    pub name: String,
    /// Weight for weighted round robin.
    pub weight: u32,
    /// Priority for the priority strategy (lower first).
    pub priority: u32,
    /// Topics one connection may carry (`None`: no limit).
    pub max_topics_per_connection: Option<usize>,
    /// Connections the upstream accepts from us (`None`: no limit).
    pub max_connections: Option<usize>,
    /// Topic prefixes served (`""`: every topic).
    pub topic_prefixes: Vec<String>,
    /// Rows of the messages; the first column is the topic, as `Utf8`.
    pub schema: SchemaRef,
    /// A per-topic message number column of `schema`, if the upstream has one.
    pub sequence_column: Option<String>,
    /// An event time column (`Timestamp`) of `schema`, if the upstream has one.
    pub timestamp_column: Option<String>,
}

impl SourceSettings {
    /// `name` with rows of `schema`: weight 1, priority 0, no limits, every
    /// topic served, no sequence or event-time column.
    pub fn new(name: impl Into<String>, schema: SchemaRef) -> Self {
        Self {
            name: name.into(),
            weight: 1,
            priority: 0,
            max_topics_per_connection: None,
            max_connections: None,
            topic_prefixes: vec![String::new()],
            schema,
            sequence_column: None,
            timestamp_column: None,
        }
    }

    /// The spec of a source of `kind` with these settings.
    pub(crate) fn spec(&self, kind: SourceKind, batch_subscribe: bool) -> SourceSpec {
        SourceSpec {
            name: self.name.clone(),
            kind,
            weight: self.weight,
            priority: self.priority,
            capabilities: Capabilities {
                max_topics_per_connection: self.max_topics_per_connection,
                max_connections: self.max_connections,
                batch_subscribe,
                topic_prefixes: self.topic_prefixes.clone(),
                schema: Arc::clone(&self.schema),
                sequence_column: self.sequence_column.clone(),
                timestamp_column: self.timestamp_column.clone(),
            },
        }
    }
}

/// A configured source: its name, kind, capabilities and balancing weights.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceSpec {
    /// Unique name, used to ask for this source explicitly.
    pub name: String,
    /// Protocol family.
    pub kind: SourceKind,
    /// Share of picks under weighted round robin (0 is never picked by it).
    pub weight: u32,
    /// Lower is preferred under the priority strategy.
    pub priority: u32,
    /// What the source can do.
    pub capabilities: Capabilities,
}

/// An upstream that connections can be opened to.
#[async_trait]
pub trait Source: Send + Sync + fmt::Debug {
    /// What this source is.
    fn spec(&self) -> &SourceSpec;

    /// Opens one upstream session.
    async fn connect(&self) -> Result<Box<dyn Connection>>;

    /// A health check: by default, open a session and close it again.
    /// Sources with a cheaper probe (a ping, a status URL) override it.
    async fn probe(&self) -> Result<()> {
        let mut connection = self.connect().await?;
        connection.close().await
    }
}

/// What a connection read from upstream.
#[derive(Debug, Clone)]
pub enum Upstream {
    /// Rows in the source's schema, topic in the first column.
    Rows(RecordBatch),
    /// A message that could not be decoded: counted and skipped, the
    /// connection stays up.
    Malformed(String),
    /// The upstream ended the session in an orderly way (or `close` was
    /// called).
    Closed,
}

/// One upstream session, shared by every subscriber of its topics.
///
/// The pool calls `subscribe`/`unsubscribe` only with changes (topics not
/// carried / carried), and drives `next_event` from one task; a
/// `next_event` future may be dropped before it completes (when the pool
/// has a subscription change to make), so it must not lose a message then.
#[async_trait]
pub trait Connection: Send + fmt::Debug {
    /// Starts the flow of `topics` (one request where the upstream batches).
    async fn subscribe(&mut self, topics: &[Topic]) -> Result<()>;

    /// Stops the flow of `topics`.
    async fn unsubscribe(&mut self, topics: &[Topic]) -> Result<()>;

    /// The next thing read from upstream. An error means the connection is
    /// lost: the pool moves its topics elsewhere and rebuilds it.
    async fn next_event(&mut self) -> Result<Upstream>;

    /// Ends the session.
    async fn close(&mut self) -> Result<()>;
}
