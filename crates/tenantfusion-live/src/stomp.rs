//! The STOMP 1.2 source: a small frame codec on a tokio TCP stream,
//! heart-beats both ways, and receipts so a subscription is known to be in
//! place before `subscribe` returns.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use tenantfusion_core::{Result, TenantError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, Interval, MissedTickBehavior};

use crate::json_rows::JsonRows;
use crate::source::{Connection, Source, SourceKind, SourceSettings, SourceSpec, Topic, Upstream};

/// Settings of a [`StompSource`].
///
/// A topic `t` is the destination `destination_prefix + t` (RabbitMQ:
/// `/topic/t`). Message bodies are JSON rows as for the WebSocket source
/// (an object or an array of objects keyed by column name, topic first).
#[derive(Debug, Clone)]
pub struct StompConfig {
    /// Name, balancing, limits and rows.
    pub source: SourceSettings,
    /// `host:port` of the broker's STOMP listener.
    pub address: String,
    /// Login and passcode.
    pub login: String,
    /// Passcode.
    pub passcode: String,
    /// The `host` header (RabbitMQ: the virtual host).
    pub virtual_host: String,
    /// Prepended to a topic to make its destination.
    pub destination_prefix: String,
    /// Heart-beat period we offer and ask for; zero turns heart-beats off.
    pub heartbeat: Duration,
    /// How long to wait for CONNECTED and for a RECEIPT.
    pub reply_timeout: Duration,
}

impl StompConfig {
    /// A configuration for `address` with RabbitMQ's defaults: `guest` /
    /// `guest`, virtual host `/`, destinations `/topic/<topic>`, 10 s
    /// heart-beats, 5 s for replies.
    pub fn new(name: impl Into<String>, address: impl Into<String>, schema: SchemaRef) -> Self {
        Self {
            source: SourceSettings::new(name, schema),
            address: address.into(),
            login: "guest".into(),
            passcode: "guest".into(),
            virtual_host: "/".into(),
            destination_prefix: "/topic/".into(),
            heartbeat: Duration::from_secs(10),
            reply_timeout: Duration::from_secs(5),
        }
    }
}

/// A STOMP 1.2 broker (RabbitMQ's STOMP plugin, ActiveMQ, ...).
///
/// ```
/// use tenantfusion_live::{Source, StompConfig, StompSource, tick_schema};
/// let source = StompSource::new(StompConfig::new("broker", "127.0.0.1:61613", tick_schema())).unwrap();
/// assert_eq!(source.spec().kind.to_string(), "stomp");
/// ```
#[derive(Debug)]
pub struct StompSource {
    spec: SourceSpec,
    config: Arc<StompConfig>,
}

impl StompSource {
    /// A source for `config`; `INVALID_ARGUMENT` for an empty address or a
    /// zero reply timeout.
    pub fn new(config: StompConfig) -> Result<Self> {
        if config.address.is_empty() || !config.address.contains(':') {
            return Err(TenantError::InvalidArgument(format!(
                "source '{}': address '{}' must be host:port",
                config.source.name, config.address
            )));
        }
        if config.reply_timeout.is_zero() {
            return Err(TenantError::InvalidArgument(format!(
                "source '{}': reply_timeout must be longer than zero",
                config.source.name
            )));
        }
        let spec = config.source.spec(SourceKind::Stomp, true);
        Ok(Self {
            spec,
            config: Arc::new(config),
        })
    }
}

#[async_trait]
impl Source for StompSource {
    fn spec(&self) -> &SourceSpec {
        &self.spec
    }

    async fn connect(&self) -> Result<Box<dyn Connection>> {
        let config = &self.config;
        let unavailable = |why: String| {
            TenantError::UpstreamUnavailable(format!(
                "source '{}' ({}): {why}",
                config.source.name, config.address
            ))
        };
        let stream = TcpStream::connect(&config.address)
            .await
            .map_err(|e| unavailable(format!("cannot connect: {e}")))?;
        stream
            .set_nodelay(true)
            .map_err(|e| unavailable(e.to_string()))?;
        let beat = config.heartbeat.as_millis();
        let mut connection = StompConnection {
            config: Arc::clone(config),
            wire: Wire {
                stream,
                buffer: Vec::new(),
                last_seen: Instant::now(),
            },
            pending: VecDeque::new(),
            rows: JsonRows::new(&config.source.schema)?,
            receipts: 0,
            send_beat: None,
            expect_beat: None,
        };
        let connect = Frame::new("CONNECT")
            .header("accept-version", "1.2")
            .header("host", &config.virtual_host)
            .header("login", &config.login)
            .header("passcode", &config.passcode)
            .header("heart-beat", &format!("{beat},{beat}"));
        connection.write(&connect).await?;
        let reply = connection.reply(|f| f.command == "CONNECTED").await?;
        // Negotiation per the spec: each side's period is the larger of what
        // one offers and the other asks for; 0 on either side means none.
        let (server_send, server_wants) = reply
            .get("heart-beat")
            .and_then(|h| h.split_once(','))
            .map_or((0, 0), |(a, b)| {
                (
                    a.trim().parse::<u128>().unwrap_or(0),
                    b.trim().parse::<u128>().unwrap_or(0),
                )
            });
        if beat > 0 && server_wants > 0 {
            let mut interval =
                tokio::time::interval(Duration::from_millis(beat.max(server_wants) as u64));
            interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
            connection.send_beat = Some(interval);
        }
        if beat > 0 && server_send > 0 {
            connection.expect_beat = Some(Duration::from_millis(beat.max(server_send) as u64));
        }
        Ok(Box::new(connection))
    }
}

/// One STOMP frame.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Frame {
    command: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Frame {
    fn new(command: &str) -> Self {
        Self {
            command: command.into(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The first value of header `name` (the spec says the first wins).
    fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.body.len());
        out.extend_from_slice(self.command.as_bytes());
        out.push(b'\n');
        // CONNECT headers are not escaped (STOMP 1.2, "Value Encoding").
        let escape = self.command != "CONNECT";
        for (name, value) in &self.headers {
            for (i, text) in [name, value].into_iter().enumerate() {
                if i == 1 {
                    out.push(b':');
                }
                if escape {
                    out.extend_from_slice(escape_header(text).as_bytes());
                } else {
                    out.extend_from_slice(text.as_bytes());
                }
            }
            out.push(b'\n');
        }
        if !self.body.is_empty() {
            out.extend_from_slice(format!("content-length:{}\n", self.body.len()).as_bytes());
        }
        out.push(b'\n');
        out.extend_from_slice(&self.body);
        out.push(0);
        out
    }

    /// Parses one frame from the start of `buffer` (after any heart-beat
    /// EOLs): the frame and the bytes it used, `None` when incomplete.
    fn parse(buffer: &[u8]) -> std::result::Result<Option<(Frame, usize)>, String> {
        let start = buffer
            .iter()
            .position(|b| *b != b'\n' && *b != b'\r')
            .unwrap_or(buffer.len());
        let rest = &buffer[start..];
        let Some(head_end) = find(rest, b"\n\n")
            .map(|i| (i, 2))
            .or_else(|| find(rest, b"\r\n\r\n").map(|i| (i, 4)))
        else {
            return Ok(None);
        };
        let head = std::str::from_utf8(&rest[..head_end.0])
            .map_err(|_| "frame headers are not UTF-8".to_string())?;
        let mut lines = head.lines();
        let command = lines
            .next()
            .unwrap_or_default()
            .trim_end_matches('\r')
            .to_string();
        let mut frame = Frame::new(&command);
        for line in lines {
            let line = line.trim_end_matches('\r');
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| format!("header without ':': {line:?}"))?;
            frame
                .headers
                .push((unescape_header(name)?, unescape_header(value)?));
        }
        let body_start = head_end.0 + head_end.1;
        let body_end = match frame.get("content-length") {
            Some(length) => {
                let length: usize = length
                    .parse()
                    .map_err(|_| format!("bad content-length {length:?}"))?;
                if rest.len() < body_start + length + 1 {
                    return Ok(None);
                }
                if rest[body_start + length] != 0 {
                    return Err("frame body longer than its content-length".into());
                }
                body_start + length
            }
            None => match rest[body_start..].iter().position(|b| *b == 0) {
                Some(i) => body_start + i,
                None => return Ok(None),
            },
        };
        frame.body = rest[body_start..body_end].to_vec();
        Ok(Some((frame, start + body_end + 1)))
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn escape_header(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            ':' => out.push_str("\\c"),
            c => out.push(c),
        }
    }
    out
}

fn unescape_header(text: &str) -> std::result::Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('c') => out.push(':'),
            other => {
                return Err(format!(
                    "undefined escape \\{}",
                    other.map_or(String::new(), String::from)
                ));
            }
        }
    }
    Ok(out)
}

/// The socket and what was read from it but not parsed yet.
struct Wire {
    stream: TcpStream,
    buffer: Vec<u8>,
    last_seen: Instant,
}

impl Wire {
    /// The next frame. Cancel-safe: bytes are kept in `buffer` as soon as
    /// they are read.
    async fn read_frame(&mut self) -> std::result::Result<Frame, String> {
        loop {
            if let Some((frame, used)) =
                Frame::parse(&self.buffer).map_err(|why| format!("bad frame: {why}"))?
            {
                self.buffer.drain(..used);
                return Ok(frame);
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = self
                .stream
                .read(&mut chunk)
                .await
                .map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("the broker closed the connection".into());
            }
            self.last_seen = Instant::now();
            self.buffer.extend_from_slice(&chunk[..n]);
        }
    }
}

async fn tick(interval: &mut Option<Interval>) {
    match interval {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending::<()>().await,
    }
}

struct StompConnection {
    config: Arc<StompConfig>,
    wire: Wire,
    /// Frames read while waiting for a reply.
    pending: VecDeque<Frame>,
    rows: JsonRows,
    receipts: u64,
    send_beat: Option<Interval>,
    expect_beat: Option<Duration>,
}

impl std::fmt::Debug for StompConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StompConnection")
            .field("source", &self.config.source.name)
            .finish_non_exhaustive()
    }
}

impl StompConnection {
    fn lost(&self, why: impl std::fmt::Display) -> TenantError {
        TenantError::UpstreamUnavailable(format!(
            "source '{}' ({}): {why}",
            self.config.source.name, self.config.address
        ))
    }

    async fn write(&mut self, frame: &Frame) -> Result<()> {
        let bytes = frame.encode();
        let written = self.wire.stream.write_all(&bytes).await;
        written.map_err(|e| self.lost(format!("write: {e}")))
    }

    async fn read_frame(&mut self) -> Result<Frame> {
        let frame = self.wire.read_frame().await;
        frame.map_err(|why| self.lost(why))
    }

    /// Reads until a frame `is_reply` accepts, keeping MESSAGE frames for
    /// `next_event`; an ERROR frame or the timeout fails the connection.
    async fn reply(&mut self, is_reply: impl Fn(&Frame) -> bool) -> Result<Frame> {
        let deadline = Instant::now() + self.config.reply_timeout;
        loop {
            let frame = match tokio::time::timeout_at(deadline, self.read_frame()).await {
                Ok(frame) => frame?,
                Err(_) => {
                    return Err(
                        self.lost(format!("no reply within {:?}", self.config.reply_timeout))
                    );
                }
            };
            if is_reply(&frame) {
                return Ok(frame);
            }
            match frame.command.as_str() {
                "ERROR" => return Err(self.error(&frame)),
                "MESSAGE" => self.pending.push_back(frame),
                _ => {}
            }
        }
    }

    fn error(&self, frame: &Frame) -> TenantError {
        let body = String::from_utf8_lossy(&frame.body);
        self.lost(format!(
            "ERROR frame: {} {}",
            frame.get("message").unwrap_or_default(),
            body.trim()
        ))
    }

    /// Sends `frames`, the last with a receipt, and waits for the receipt.
    async fn with_receipt(&mut self, mut frames: Vec<Frame>) -> Result<()> {
        let Some(last) = frames.pop() else {
            return Ok(());
        };
        self.receipts += 1;
        let id = format!("r-{}", self.receipts);
        frames.push(last.header("receipt", &id));
        let mut bytes = Vec::new();
        for frame in &frames {
            bytes.extend_from_slice(&frame.encode());
        }
        let written = self.wire.stream.write_all(&bytes).await;
        written.map_err(|e| self.lost(format!("write: {e}")))?;
        self.reply(|f| f.command == "RECEIPT" && f.get("receipt-id") == Some(&id))
            .await?;
        Ok(())
    }

    fn event(&mut self, frame: Frame) -> Option<Result<Upstream>> {
        match frame.command.as_str() {
            "MESSAGE" => Some(Ok(self.rows.decode(&frame.body))),
            "ERROR" => Some(Err(self.error(&frame))),
            // RECEIPTs of past requests and the like carry no rows.
            _ => None,
        }
    }
}

#[async_trait]
impl Connection for StompConnection {
    async fn subscribe(&mut self, topics: &[Topic]) -> Result<()> {
        let frames = topics
            .iter()
            .map(|t| {
                Frame::new("SUBSCRIBE")
                    .header("id", t)
                    .header(
                        "destination",
                        &format!("{}{t}", self.config.destination_prefix),
                    )
                    .header("ack", "auto")
            })
            .collect();
        self.with_receipt(frames).await
    }

    async fn unsubscribe(&mut self, topics: &[Topic]) -> Result<()> {
        let frames = topics
            .iter()
            .map(|t| Frame::new("UNSUBSCRIBE").header("id", t))
            .collect();
        self.with_receipt(frames).await
    }

    async fn next_event(&mut self) -> Result<Upstream> {
        loop {
            if let Some(frame) = self.pending.pop_front()
                && let Some(event) = self.event(frame)
            {
                return event;
            }
            if !self.pending.is_empty() {
                continue;
            }
            tokio::select! {
                frame = self.wire.read_frame() => {
                    let frame = frame.map_err(|why| self.lost(why))?;
                    if let Some(event) = self.event(frame) {
                        return event;
                    }
                }
                () = tick(&mut self.send_beat) => {
                    if let Some(expected) = self.expect_beat
                        && self.wire.last_seen.elapsed() > expected * 2
                    {
                        return Err(self.lost("no heart-beat from the broker for two periods"));
                    }
                    let beat = self.wire.stream.write_all(b"\n").await;
                    beat.map_err(|e| self.lost(format!("heart-beat: {e}")))?;
                }
            }
        }
    }

    async fn close(&mut self) -> Result<()> {
        // A DISCONNECT with a receipt makes sure the broker saw everything
        // sent before; a broker already gone is not an error worth raising.
        let _ = tokio::time::timeout(
            self.config.reply_timeout,
            self.with_receipt(vec![Frame::new("DISCONNECT")]),
        )
        .await;
        let _ = self.wire.stream.shutdown().await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_with_escapes_bodies_and_heartbeats() {
        let frame = Frame::new("SEND")
            .header("destination", "/topic/a:b")
            .header("note", "line\nbreak \\ slash");
        let mut frame = frame;
        frame.body = b"{\"x\":1}\0inside".to_vec();
        let bytes = frame.encode();
        // Heart-beat EOLs before a frame are skipped.
        let mut stream = b"\n\r\n".to_vec();
        stream.extend_from_slice(&bytes);
        stream.extend_from_slice(b"MESSAGE\nsubscription:1\n\nplain body\0");
        let (parsed, used) = Frame::parse(&stream).unwrap().unwrap();
        assert_eq!(parsed.command, "SEND");
        assert_eq!(parsed.get("destination"), Some("/topic/a:b"));
        assert_eq!(parsed.get("note"), Some("line\nbreak \\ slash"));
        assert_eq!(
            parsed.body, frame.body,
            "content-length carries a NUL in the body"
        );
        let (next, rest) = Frame::parse(&stream[used..]).unwrap().unwrap();
        assert_eq!(
            (next.command.as_str(), next.body.as_slice()),
            ("MESSAGE", &b"plain body"[..])
        );
        assert_eq!(used + rest, stream.len());
        // Incomplete frames wait for more bytes.
        for cut in [3, 10, bytes.len() - 1] {
            assert_eq!(Frame::parse(&bytes[..cut]).unwrap(), None);
        }
        // Broken ones are errors, not panics.
        assert!(Frame::parse(b"MESSAGE\nno colon\n\n\0").is_err());
        assert!(Frame::parse(b"MESSAGE\nx:\\q\n\n\0").is_err());
        assert!(Frame::parse(b"MESSAGE\ncontent-length:2\n\nabc\0").is_err());
        assert!(Frame::parse(b"MESSAGE\ncontent-length:zz\n\n\0").is_err());
        // CONNECT headers are sent as they are.
        let connect = Frame::new("CONNECT").header("passcode", "a:b").encode();
        assert!(find(&connect, b"passcode:a:b\n").is_some());
    }
}
