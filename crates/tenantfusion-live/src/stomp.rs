//! The STOMP 1.2 source: a small frame codec on a tokio TCP stream,
//! heart-beats both ways, and receipts so a subscription is known to be in
//! place before `subscribe` returns.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{LiveError, Result};
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, Interval, MissedTickBehavior};

use crate::json_rows::JsonRows;
use crate::source::{Connection, Source, SourceKind, SourceSettings, SourceSpec, Topic, Upstream};

/// Settings of a [`StompSource`].
///
/// A topic `t` is the destination `destination_prefix + t` (RabbitMQ:
/// `/topic/t`). Message bodies are JSON rows as for the WebSocket source
/// (objects keyed by column name, topic first: one, several separated by
/// whitespace, or arrays of them).
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
    /// The largest frame (headers and body) taken from the broker; a
    /// larger one, or a `content-length` above it, fails the connection
    /// instead of growing the read buffer without end. It also bounds the
    /// messages held while a reply (CONNECTED, a RECEIPT) is awaited: more
    /// than this many bytes of them fail the connection.
    pub max_frame_bytes: usize,
}

/// Frames up to 8 MiB: far above a row message, far below a memory risk.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 8 << 20;

impl StompConfig {
    /// A configuration for `address` with RabbitMQ's defaults: `guest` /
    /// `guest`, virtual host `/`, destinations `/topic/<topic>`, 10 s
    /// heart-beats, 5 s for replies; frames up to 8 MiB.
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
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
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
            return Err(LiveError::InvalidArgument(format!(
                "source '{}': address '{}' must be host:port",
                config.source.name, config.address
            )));
        }
        if config.reply_timeout.is_zero() {
            return Err(LiveError::InvalidArgument(format!(
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
            LiveError::UpstreamUnavailable(format!(
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
                frames: FrameBuffer::new(config.max_frame_bytes),
                last_seen: Instant::now(),
            },
            pending: VecDeque::new(),
            pending_bytes: 0,
            rows: JsonRows::new(&config.source.schema)?,
            receipts: 0,
            send_beat: None,
            expect_beat: None,
            broken: None,
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
    /// Its bytes in memory: command, headers and body.
    fn size(&self) -> usize {
        let headers: usize = self.headers.iter().map(|(k, v)| k.len() + v.len()).sum();
        self.command.len() + headers + self.body.len()
    }

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
}

/// Bytes read from the broker and not yet taken as frames.
///
/// Each byte is looked at once: the search for the blank line that ends a
/// frame's headers, and for the NUL that ends a body without
/// `content-length`, goes on where the last read left it. The end of the
/// headers is the *first* empty line, whichever line ending it uses, so a
/// body holding `\n\n` does not end a CRLF frame's headers early.
#[derive(Debug)]
struct FrameBuffer {
    bytes: Vec<u8>,
    /// How far `bytes` has been searched (for the headers' end, or once
    /// `head` is known, for the body's NUL).
    searched: usize,
    /// The frame whose headers are parsed and whose body is incomplete.
    head: Option<Head>,
    max_frame: usize,
}

/// A frame's parsed headers and where its body starts.
#[derive(Debug)]
struct Head {
    frame: Frame,
    body_start: usize,
    content_length: Option<usize>,
}

impl FrameBuffer {
    fn new(max_frame: usize) -> Self {
        Self {
            bytes: Vec::new(),
            searched: 0,
            head: None,
            max_frame,
        }
    }

    fn extend(&mut self, chunk: &[u8]) {
        self.bytes.extend_from_slice(chunk);
    }

    /// The next whole frame, `None` until one is complete; an error for a
    /// frame that breaks the protocol or is over the size limit.
    fn next_frame(&mut self) -> std::result::Result<Option<Frame>, String> {
        if self.head.is_none() && !self.read_head()? {
            return Ok(None);
        }
        let Some(head) = &self.head else {
            return Ok(None);
        };
        let body_end = match head.content_length {
            Some(length) => {
                // `length` is at most `max_frame`: no overflow.
                let end = head.body_start + length;
                if self.bytes.len() <= end {
                    return Ok(None);
                }
                if self.bytes[end] != 0 {
                    return Err("frame body longer than its content-length".into());
                }
                end
            }
            None => match self.bytes[self.searched..].iter().position(|b| *b == 0) {
                Some(i) => {
                    // Whether the frame came in one read or many.
                    self.check_size(self.searched + i + 1)?;
                    self.searched + i
                }
                None => {
                    self.searched = self.bytes.len();
                    self.check_size(self.bytes.len())?;
                    return Ok(None);
                }
            },
        };
        let Some(Head {
            mut frame,
            body_start,
            ..
        }) = self.head.take()
        else {
            return Ok(None);
        };
        frame.body = self.bytes[body_start..body_end].to_vec();
        self.bytes.drain(..=body_end);
        self.searched = 0;
        Ok(Some(frame))
    }

    /// Parses the headers once the blank line ending them is in; `false`
    /// while it is not.
    fn read_head(&mut self) -> std::result::Result<bool, String> {
        // Heart-beats are bare EOLs between frames.
        let start = self
            .bytes
            .iter()
            .position(|b| *b != b'\n' && *b != b'\r')
            .unwrap_or(self.bytes.len());
        if start > 0 {
            self.bytes.drain(..start);
            self.searched = self.searched.saturating_sub(start);
        }
        let Some((head_end, body_start)) = self.head_end() else {
            // The last two bytes may start the blank line: look again.
            self.searched = self.bytes.len().saturating_sub(2);
            self.check_size(self.bytes.len())?;
            return Ok(false);
        };
        self.check_size(body_start)?;
        let head = std::str::from_utf8(&self.bytes[..head_end])
            .map_err(|_| "frame headers are not UTF-8".to_string())?;
        let mut lines = head.split('\n').map(|line| line.trim_end_matches('\r'));
        let mut frame = Frame::new(lines.next().unwrap_or_default());
        for line in lines {
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| format!("header without ':': {line:?}"))?;
            frame
                .headers
                .push((unescape_header(name)?, unescape_header(value)?));
        }
        let content_length = match frame.get("content-length") {
            Some(length) => {
                let length: usize = length
                    .parse()
                    .map_err(|_| format!("bad content-length {length:?}"))?;
                self.check_size(body_start.saturating_add(length))?;
                Some(length)
            }
            None => None,
        };
        self.searched = body_start;
        self.head = Some(Head {
            frame,
            body_start,
            content_length,
        });
        Ok(true)
    }

    /// `(end of the headers, start of the body)` at the first empty line.
    fn head_end(&self) -> Option<(usize, usize)> {
        let bytes = &self.bytes;
        (self.searched..bytes.len())
            .filter(|i| bytes[*i] == b'\n')
            .find_map(|i| match (bytes.get(i + 1), bytes.get(i + 2)) {
                (Some(b'\n'), _) => Some((i, i + 2)),
                (Some(b'\r'), Some(b'\n')) => Some((i, i + 3)),
                _ => None,
            })
    }

    fn check_size(&self, size: usize) -> std::result::Result<(), String> {
        if size > self.max_frame {
            return Err(format!(
                "a frame of more than {} bytes (max_frame_bytes)",
                self.max_frame
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
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

/// Why the wire gave no frame.
#[derive(Debug)]
enum WireError {
    /// The bytes break the protocol or the frame limit (counted as a
    /// malformed message; the connection cannot be read on).
    Bad(String),
    /// The socket failed or the broker closed it.
    Gone(String),
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::Bad(why) | WireError::Gone(why) => f.write_str(why),
        }
    }
}

/// The socket and what was read from it but not parsed yet.
struct Wire {
    stream: TcpStream,
    frames: FrameBuffer,
    last_seen: Instant,
}

impl Wire {
    /// The next frame. Cancel-safe: bytes are kept in `buffer` as soon as
    /// they are read.
    async fn read_frame(&mut self) -> std::result::Result<Frame, WireError> {
        loop {
            if let Some(frame) = self
                .frames
                .next_frame()
                .map_err(|why| WireError::Bad(format!("bad frame: {why}")))?
            {
                return Ok(frame);
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = self
                .stream
                .read(&mut chunk)
                .await
                .map_err(|e| WireError::Gone(format!("read: {e}")))?;
            if n == 0 {
                return Err(WireError::Gone("the broker closed the connection".into()));
            }
            self.last_seen = Instant::now();
            self.frames.extend(&chunk[..n]);
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
    /// Frames read while waiting for a reply, and their bytes.
    pending: VecDeque<Frame>,
    pending_bytes: usize,
    rows: JsonRows,
    receipts: u64,
    send_beat: Option<Interval>,
    expect_beat: Option<Duration>,
    /// Why the wire cannot be read on, once a bad frame was counted as
    /// malformed: the next read reports the connection lost.
    broken: Option<String>,
}

impl std::fmt::Debug for StompConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StompConnection")
            .field("source", &self.config.source.name)
            .finish_non_exhaustive()
    }
}

impl StompConnection {
    fn lost(&self, why: impl std::fmt::Display) -> LiveError {
        LiveError::UpstreamUnavailable(format!(
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
                "MESSAGE" => {
                    // A broker flooding while it holds the reply back
                    // must not grow this without end.
                    self.pending_bytes += frame.size();
                    if self.pending_bytes > self.config.max_frame_bytes {
                        return Err(self.lost(format!(
                            "over {} bytes of messages while waiting for a reply",
                            self.config.max_frame_bytes
                        )));
                    }
                    self.pending.push_back(frame);
                }
                _ => {}
            }
        }
    }

    fn error(&self, frame: &Frame) -> LiveError {
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
        if let Some(why) = self.broken.take() {
            return Err(self.lost(why));
        }
        loop {
            if let Some(frame) = self.pending.pop_front() {
                self.pending_bytes = self.pending_bytes.saturating_sub(frame.size());
                if let Some(event) = self.event(frame) {
                    return event;
                }
            }
            if !self.pending.is_empty() {
                continue;
            }
            tokio::select! {
                frame = self.wire.read_frame() => {
                    let frame = match frame {
                        Ok(frame) => frame,
                        Err(WireError::Bad(why)) => {
                            self.broken = Some(why.clone());
                            return Ok(Upstream::Malformed(why));
                        }
                        Err(gone) => return Err(self.lost(gone)),
                    };
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
                    // A broker that stopped reading must not hold the task
                    // in the write.
                    let beat = self.wire.stream.write_all(b"\n");
                    match tokio::time::timeout(self.config.reply_timeout, beat).await {
                        Ok(written) => written.map_err(|e| self.lost(format!("heart-beat: {e}")))?,
                        Err(_) => return Err(self.lost("a heart-beat not written within the reply timeout")),
                    }
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
    use proptest::prelude::*;

    use super::*;

    /// Every whole frame in `bytes`, fed `step` bytes at a time.
    fn frames(bytes: &[u8], step: usize) -> std::result::Result<Vec<Frame>, String> {
        let mut buffer = FrameBuffer::new(1 << 10);
        let mut out = Vec::new();
        for chunk in bytes.chunks(step) {
            buffer.extend(chunk);
            while let Some(frame) = buffer.next_frame()? {
                out.push(frame);
            }
        }
        Ok(out)
    }

    fn one(bytes: &[u8]) -> std::result::Result<Frame, String> {
        let mut all = frames(bytes, bytes.len().max(1))?;
        assert_eq!(all.len(), 1, "{all:?}");
        Ok(all.remove(0))
    }

    #[test]
    fn frames_round_trip_with_escapes_bodies_and_heartbeats() {
        let mut frame = Frame::new("SEND")
            .header("destination", "/topic/a:b")
            .header("note", "line\nbreak \\ slash");
        frame.body = b"{\"x\":1}\0inside".to_vec();
        let bytes = frame.encode();
        // Heart-beat EOLs before a frame are skipped.
        let mut stream = b"\n\r\n".to_vec();
        stream.extend_from_slice(&bytes);
        stream.extend_from_slice(b"\nMESSAGE\nsubscription:1\n\nplain body\0");
        // Whole, and a byte at a time: the same frames.
        for step in [stream.len(), 1, 7] {
            let parsed = frames(&stream, step).unwrap();
            assert_eq!(parsed.len(), 2, "step {step}");
            assert_eq!(parsed[0].command, "SEND");
            assert_eq!(parsed[0].get("destination"), Some("/topic/a:b"));
            assert_eq!(parsed[0].get("note"), Some("line\nbreak \\ slash"));
            assert_eq!(
                parsed[0].body, frame.body,
                "content-length carries a NUL in the body"
            );
            assert_eq!(
                (parsed[1].command.as_str(), parsed[1].body.as_slice()),
                ("MESSAGE", &b"plain body"[..])
            );
        }
        // Incomplete frames wait for more bytes.
        for cut in [3, 10, bytes.len() - 1] {
            assert!(frames(&bytes[..cut], 1).unwrap().is_empty());
        }
        // Broken ones are errors, not panics.
        assert!(one(b"MESSAGE\nno colon\n\n\0").is_err());
        assert!(one(b"MESSAGE\nx:\\q\n\n\0").is_err());
        assert!(one(b"MESSAGE\ncontent-length:2\n\nabc\0").is_err());
        assert!(one(b"MESSAGE\ncontent-length:zz\n\n\0").is_err());
        // CONNECT headers are sent as they are.
        let connect = Frame::new("CONNECT").header("passcode", "a:b").encode();
        assert!(find(&connect, b"passcode:a:b\n").is_some());
    }

    /// Bytes that look like STOMP often enough to reach past the first
    /// line: fragments of frames mixed with noise.
    fn wire_bytes() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just(b"MESSAGE\n".to_vec()),
            Just(b"CONNECTED\r\n".to_vec()),
            Just(b"content-length:".to_vec()),
            Just(b"destination:/topic/a\n".to_vec()),
            Just(b"\n\n".to_vec()),
            Just(b"\r\n\r\n".to_vec()),
            Just(b"\0".to_vec()),
            Just(b"\\c\\n\\q".to_vec()),
            (0u64..3_000).prop_map(|n| n.to_string().into_bytes()),
            proptest::collection::vec(any::<u8>(), 0..40),
        ];
        proptest::collection::vec(piece, 0..40).prop_map(|pieces| pieces.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(tenantfusion_test_support::fuzz_cases(256)))]

        /// Any bytes from the broker: no panic, and the same frames (or the
        /// same refusal) however the reads cut them.
        #[test]
        fn any_bytes_give_the_same_frames_however_they_arrive(
            bytes in wire_bytes(),
            step in 1usize..50,
        ) {
            let whole = frames(&bytes, bytes.len().max(1));
            let cut = frames(&bytes, step);
            prop_assert_eq!(whole.is_ok(), cut.is_ok());
            if let (Ok(whole), Ok(cut)) = (whole, cut) {
                prop_assert_eq!(whole, cut);
            }
        }

        /// A frame we encode comes back as it was, among heart-beats.
        #[test]
        fn encoded_frames_decode_to_themselves(
            headers in proptest::collection::vec(("[a-z:\\\\\n\r]{1,8}", ".{0,12}"), 0..4),
            body in proptest::collection::vec(any::<u8>(), 0..200),
            step in 1usize..50,
        ) {
            let mut frame = Frame::new("MESSAGE");
            for (name, value) in &headers {
                frame = frame.header(name, value);
            }
            frame.body = body;
            let mut bytes = b"\n\n".to_vec();
            bytes.extend_from_slice(&frame.encode());
            let mut parsed = frames(&bytes, step).unwrap();
            // The encoder adds content-length to a body.
            if !frame.body.is_empty() {
                let length = frame.body.len().to_string();
                frame = frame.header("content-length", &length);
            }
            prop_assert_eq!(parsed.len(), 1);
            prop_assert_eq!(parsed.remove(0), frame);
        }
    }

    #[test]
    fn a_crlf_frame_ends_its_headers_at_the_first_blank_line() {
        // The body holds "\n\n": the headers end at the CRLF blank line
        // before it, not inside the body.
        let frame = one(b"MESSAGE\r\ndestination:/topic/a\r\n\r\n{\"a\":\n\n1}\0").unwrap();
        assert_eq!(frame.get("destination"), Some("/topic/a"));
        assert_eq!(frame.body, b"{\"a\":\n\n1}");
        let frame = one(b"MESSAGE\r\nx:1\r\n\r\nbody\r\n\r\nmore\0").unwrap();
        assert_eq!(frame.headers, [("x".to_string(), "1".to_string())]);
        assert_eq!(frame.body, b"body\r\n\r\nmore");
    }

    #[test]
    fn an_upstream_cannot_make_a_frame_without_bound() {
        // A content-length that would overflow, or is over the limit.
        for length in ["18446744073709551615", "18446744073709551000", "2000"] {
            let bytes = format!("MESSAGE\ncontent-length:{length}\n\nx\0");
            let err = one(bytes.as_bytes()).unwrap_err();
            assert!(err.contains("max_frame_bytes"), "{length}: {err}");
        }
        // Headers that never end, and a body that never ends.
        let endless_head = [b"MESSAGE\n".as_slice(), &[b'a'; 2_000]].concat();
        assert!(frames(&endless_head, 100).is_err());
        let endless_body = [b"MESSAGE\n\n".as_slice(), &[b'a'; 2_000]].concat();
        assert!(frames(&endless_body, 100).is_err());
        // Just under the limit is taken.
        let body = vec![b'b'; 900];
        let bytes = [
            format!("MESSAGE\ncontent-length:{}\n\n", body.len()).as_bytes(),
            &body,
            b"\0",
        ]
        .concat();
        assert_eq!(one(&bytes).unwrap().body, body);
    }
}
