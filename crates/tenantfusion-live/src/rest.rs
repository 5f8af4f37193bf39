//! The REST polling source: every `poll_interval`, one GET per batch of a
//! connection's topics, through a pooled HTTP/1.1 client shared by the
//! source, under a per-source rate limit.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use crate::error::{LiveError, Result};
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Empty, LengthLimitError, Limited};
use hyper::Uri;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use parking_lot::Mutex;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use tokio::time::Instant;

use crate::json_rows::JsonRows;
use crate::source::{Connection, Source, SourceKind, SourceSettings, SourceSpec, Topic, Upstream};

/// Settings of a [`RestSource`].
///
/// Topics are polled with `GET base_url + path`, where `{topics}` in `path`
/// becomes up to `topics_per_request` topic names joined by commas (use
/// `topics_per_request = 1` and a path like `/quote/{topics}` for one topic
/// per request). The response body is JSON rows as for the WebSocket
/// source. A non-2xx answer, an undecodable or oversized body, and a
/// request without an answer (refused, reset, timed out) are counted as
/// malformed, each batch on its own; a round in which no request was
/// answered fails the connection, which the pool rebuilds.
#[derive(Debug, Clone)]
pub struct RestConfig {
    /// Name, balancing, limits and rows.
    pub source: SourceSettings,
    /// `http://host:port` (`https` is not built in).
    pub base_url: String,
    /// The request path with `{topics}`.
    pub path: String,
    /// Topics named in one request.
    pub topics_per_request: usize,
    /// Time between two polls of a topic.
    pub poll_interval: Duration,
    /// Requests per second to this upstream, over all its connections
    /// (`None`: no limit).
    pub max_requests_per_second: Option<u32>,
    /// Idle keep-alive connections kept per host by the HTTP client.
    pub max_idle_connections: usize,
    /// How long one request may take.
    pub request_timeout: Duration,
    /// Requests of one poll round in flight at once. Each topic batch's
    /// answer is delivered, or counted as malformed, on its own: a slow or
    /// failing batch holds back and discards no other.
    pub concurrent_requests: usize,
    /// The largest answer body read; a longer one is dropped where it
    /// passes the limit and counted as malformed, instead of being
    /// collected whole.
    pub max_body_bytes: usize,
}

impl RestConfig {
    /// Polls `base_url + path` every second, 50 topics a request, no rate
    /// limit, 5 s per request, bodies of at most 16 MiB.
    pub fn new(
        name: impl Into<String>,
        base_url: impl Into<String>,
        path: impl Into<String>,
        schema: SchemaRef,
    ) -> Self {
        Self {
            source: SourceSettings::new(name, schema),
            base_url: base_url.into(),
            path: path.into(),
            topics_per_request: 50,
            poll_interval: Duration::from_secs(1),
            max_requests_per_second: None,
            max_idle_connections: 8,
            request_timeout: Duration::from_secs(5),
            max_body_bytes: 16 << 20,
            concurrent_requests: 8,
        }
    }
}

/// What a topic name keeps unencoded in a URL: RFC 3986's unreserved set.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A token bucket: `rate` requests a second, bursts of at most `rate`.
#[derive(Debug)]
struct RateLimit {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl RateLimit {
    /// Takes a token; the wait before the request may go.
    fn take(&mut self, now: Instant) -> Duration {
        self.tokens = (self.tokens
            + now.saturating_duration_since(self.at).as_secs_f64() * self.rate)
            .min(self.rate);
        self.at = now;
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

/// What the pollers of one source share: the HTTP client (and its pool of
/// keep-alive connections) and the rate limit.
#[derive(Debug)]
struct Shared {
    config: RestConfig,
    client: Client<HttpConnector, Empty<Bytes>>,
    limit: Option<Mutex<RateLimit>>,
}

impl Shared {
    fn unavailable(&self, why: impl std::fmt::Display) -> LiveError {
        LiveError::UpstreamUnavailable(format!(
            "source '{}' ({}): {why}",
            self.config.source.name, self.config.base_url
        ))
    }

    /// One GET; `Ok(Err(why))` for an answer that is not a 2xx, `Err` when
    /// no answer came.
    async fn get(&self, uri: Uri) -> Result<std::result::Result<Bytes, String>> {
        if let Some(limit) = &self.limit {
            let wait = limit.lock().take(Instant::now());
            tokio::time::sleep(wait).await;
        }
        let request = async {
            let response = self
                .client
                .get(uri.clone())
                .await
                .map_err(|e| self.unavailable(format!("GET {uri}: {e}")))?;
            let status = response.status();
            let limit = self.config.max_body_bytes;
            let body = match Limited::new(response.into_body(), limit).collect().await {
                Ok(body) => body,
                Err(e) if e.is::<LengthLimitError>() => {
                    return Ok(Err(format!("GET {uri}: a body over {limit} bytes")));
                }
                Err(e) => return Err(self.unavailable(format!("GET {uri}: {e}"))),
            };
            Ok(if status.is_success() {
                Ok(body.to_bytes())
            } else {
                Err(format!("GET {uri}: HTTP {status}"))
            })
        };
        match tokio::time::timeout(self.config.request_timeout, request).await {
            Ok(answer) => answer,
            Err(_) => Err(self.unavailable(format!(
                "GET {uri}: no answer within {:?}",
                self.config.request_timeout
            ))),
        }
    }

    /// The request URI for `topics`: each name percent-encoded (all but
    /// RFC 3986's unreserved characters), so any topic — a space, a comma,
    /// a `/` or a `?` in it — makes a valid request for just that topic.
    fn uri(&self, topics: &[&Topic]) -> Result<Uri> {
        let names: Vec<&str> = topics.iter().map(|t| &***t).collect();
        let encoded: Vec<String> = names
            .iter()
            .map(|name| utf8_percent_encode(name, COMPONENT).to_string())
            .collect();
        let path = self.config.path.replace("{topics}", &encoded.join(","));
        format!("{}{path}", self.config.base_url)
            .parse()
            .map_err(|e| {
                LiveError::InvalidArgument(format!(
                    "source '{}': topics {names:?} make no valid URL: {e}",
                    self.config.source.name
                ))
            })
    }
}

/// An upstream polled over HTTP.
///
/// ```
/// use tenantfusion_live::{RestConfig, RestSource, Source, tick_schema};
/// let config = RestConfig::new("quotes", "http://127.0.0.1:8080", "/quotes?symbols={topics}", tick_schema());
/// let source = RestSource::new(config).unwrap();
/// assert_eq!(source.spec().kind.to_string(), "rest");
/// let bad = RestConfig::new("quotes", "http://127.0.0.1:8080", "/quotes", tick_schema());
/// assert_eq!(RestSource::new(bad).unwrap_err().code(), "INVALID_ARGUMENT");
/// ```
#[derive(Debug)]
pub struct RestSource {
    spec: SourceSpec,
    shared: Arc<Shared>,
}

impl RestSource {
    /// A source for `config`; `INVALID_ARGUMENT` (naming the setting) for a
    /// URL that is not `http://`, a path without `{topics}`, or zero sizes
    /// and intervals.
    pub fn new(config: RestConfig) -> Result<Self> {
        let invalid = |why: String| {
            Err(LiveError::InvalidArgument(format!(
                "source '{}': {why}",
                config.source.name
            )))
        };
        if !config.base_url.starts_with("http://") || config.base_url.parse::<Uri>().is_err() {
            return invalid(format!(
                "base_url '{}' must be an http:// URL (https is not built in)",
                config.base_url
            ));
        }
        if !config.path.contains("{topics}") {
            return invalid("path must contain {topics}".into());
        }
        if config.topics_per_request == 0 {
            return invalid("topics_per_request must be at least 1".into());
        }
        if config.poll_interval.is_zero() || config.request_timeout.is_zero() {
            return invalid("poll_interval and request_timeout must be longer than zero".into());
        }
        if config.max_requests_per_second == Some(0) {
            return invalid("max_requests_per_second must be at least 1".into());
        }
        let spec = config
            .source
            .spec(SourceKind::Rest, config.topics_per_request > 1);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(config.max_idle_connections)
            .build_http();
        let limit = config.max_requests_per_second.map(|rate| {
            Mutex::new(RateLimit {
                rate: f64::from(rate),
                tokens: f64::from(rate),
                at: Instant::now(),
            })
        });
        Ok(Self {
            spec,
            shared: Arc::new(Shared {
                config,
                client,
                limit,
            }),
        })
    }
}

#[async_trait]
impl Source for RestSource {
    fn spec(&self) -> &SourceSpec {
        &self.spec
    }

    /// Checks that the upstream answers (any HTTP status will do) before
    /// a poller starts.
    async fn connect(&self) -> Result<Box<dyn Connection>> {
        let uri = self.shared.uri(&[])?;
        // Any status shows the upstream is there; only no answer fails.
        let _status = self.shared.get(uri).await?;
        Ok(Box::new(RestPoller {
            shared: Arc::clone(&self.shared),
            topics: BTreeSet::new(),
            next_poll: Instant::now(),
            ready: VecDeque::new(),
            rows: JsonRows::new(&self.shared.config.source.schema)?,
            closed: false,
        }))
    }
}

/// One "connection": a poller of some topics.
#[derive(Debug)]
struct RestPoller {
    shared: Arc<Shared>,
    topics: BTreeSet<Topic>,
    next_poll: Instant,
    /// Answers of the current round not handed out yet.
    ready: VecDeque<Upstream>,
    rows: JsonRows,
    closed: bool,
}

#[async_trait]
impl Connection for RestPoller {
    async fn subscribe(&mut self, topics: &[Topic]) -> Result<()> {
        self.topics.extend(topics.iter().cloned());
        // New topics are polled at once rather than a whole interval later.
        self.next_poll = Instant::now();
        Ok(())
    }

    async fn unsubscribe(&mut self, topics: &[Topic]) -> Result<()> {
        for topic in topics {
            self.topics.remove(topic);
        }
        Ok(())
    }

    async fn next_event(&mut self) -> Result<Upstream> {
        loop {
            if self.closed {
                return Ok(Upstream::Closed);
            }
            if let Some(event) = self.ready.pop_front() {
                return Ok(event);
            }
            tokio::time::sleep_until(self.next_poll).await;
            self.next_poll = Instant::now() + self.shared.config.poll_interval;
            let topics: Vec<&Topic> = self.topics.iter().collect();
            let uris = topics
                .chunks(self.shared.config.topics_per_request)
                .map(|chunk| self.shared.uri(chunk))
                .collect::<Result<Vec<Uri>>>()?;
            let shared = Arc::clone(&self.shared);
            let mut answers = futures::stream::iter(uris)
                .map(|uri| shared.get(uri))
                .buffer_unordered(self.shared.config.concurrent_requests.max(1));
            // Answers are kept as they come, so a round cut short (the pool
            // dropping this call) loses only the requests in flight; the
            // next round asks again. A batch without an answer is counted
            // on its own; only a round where none was answered (the
            // upstream is gone) fails the connection.
            let (mut answered, mut gone) = (false, None);
            while let Some(answer) = answers.next().await {
                let event = match answer {
                    Ok(answer) => {
                        answered = true;
                        match answer {
                            Ok(body) => self.rows.decode(&body),
                            Err(why) => Upstream::Malformed(why),
                        }
                    }
                    Err(e) => {
                        let event = Upstream::Malformed(e.to_string());
                        gone = Some(e);
                        event
                    }
                };
                self.ready.push_back(event);
            }
            if !answered && let Some(e) = gone {
                self.ready.clear();
                return Err(e);
            }
        }
    }

    async fn close(&mut self) -> Result<()> {
        self.closed = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_topic_name_makes_a_valid_request_for_just_itself() {
        let config = RestConfig::new(
            "quotes",
            "http://127.0.0.1:9",
            "/quotes?symbols={topics}",
            crate::tick_schema(),
        );
        let source = RestSource::new(config).unwrap();
        let topics: Vec<Topic> = ["BRK A", "a,b", "x/y?z=1#f", "ümlaut", "plain-1.2_~"]
            .into_iter()
            .map(Topic::from)
            .collect();
        let refs: Vec<&Topic> = topics.iter().collect();
        let uri = source.shared.uri(&refs).unwrap();
        assert_eq!(
            uri.to_string(),
            "http://127.0.0.1:9/quotes?symbols=BRK%20A,a%2Cb,x%2Fy%3Fz%3D1%23f,%C3%BCmlaut,plain-1.2_~"
        );
        // Each name decodes back to itself.
        let query = uri.query().unwrap().strip_prefix("symbols=").unwrap();
        let decoded: Vec<String> = query
            .split(',')
            .map(|part| {
                percent_encoding::percent_decode_str(part)
                    .decode_utf8()
                    .unwrap()
                    .into_owned()
            })
            .collect();
        let expected: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
        assert_eq!(decoded, expected);
    }

    #[test]
    fn the_rate_limit_spaces_requests_after_a_burst() {
        let t0 = Instant::now();
        let mut limit = RateLimit {
            rate: 10.0,
            tokens: 10.0,
            at: t0,
        };
        // A burst of ten goes at once; the eleventh waits a tenth of a second.
        for _ in 0..10 {
            assert_eq!(limit.take(t0), Duration::ZERO);
        }
        let wait = limit.take(t0);
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-9, "{wait:?}");
        // A second later the bucket is full again, never fuller.
        let later = t0 + Duration::from_secs(5);
        for _ in 0..10 {
            assert_eq!(limit.take(later), Duration::ZERO);
        }
        assert!(limit.take(later) > Duration::ZERO);
    }
}
