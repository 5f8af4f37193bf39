//! What the pool is told: connection limits, timings, failover and how sources are picked.

use std::time::Duration;

use crate::backoff::Backoff;
use crate::breaker::BreakerConfig;
use crate::error::{LiveError, Result};
use crate::selection::{Strategy, Validation};

/// How the pool manages connections. Every field has a default.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    /// Connections kept open per source even with no topics.
    pub min_connections: usize,
    /// Most connections per source (also bounded by the source's own
    /// `max_connections`).
    pub max_connections: Option<usize>,
    /// A connection with no topics for this long is closed.
    pub idle_timeout: Duration,
    /// Time between two health checks of a source.
    pub health_interval: Duration,
    /// Time between two rounds of upkeep: closing idle connections,
    /// opening the minimum, rebalancing.
    pub maintenance_interval: Duration,
    /// A connection carrying more than this share of its source's cap gives
    /// topics to emptier connections.
    pub rebalance_threshold: f64,
    /// Waits between reconnect attempts.
    pub backoff: Backoff,
    /// When a source's breaker opens and how it recovers.
    pub breaker: BreakerConfig,
    /// How long one connect (TCP, TLS, handshake, login) may take; past it
    /// the attempt fails like a refused one.
    pub connect_timeout: Duration,
    /// How long a subscribe or unsubscribe (its send, and the upstream's
    /// receipt where the protocol has one) and the close of a connection
    /// may take; past it the connection is lost and rebuilt.
    pub request_timeout: Duration,
    /// A connection lost sooner than this after it connected counts as a
    /// failed connect: the next attempt backs off further, the breaker
    /// hears of it, and after `failover_after` such losses in a row the
    /// topics move to another source. An upstream that accepts and drops
    /// every connection would otherwise be reconnected many times a second.
    pub min_stable: Duration,
    /// Failed connect attempts after which a connection's topics move to
    /// another healthy source of the same kind (if there is one).
    pub failover_after: u32,
    /// Topics that failed over go back to the source they left once it has
    /// passed every health check and refused no connect for this long
    /// (`None`: they stay where they went). Long enough that a source which
    /// answers probes but drops connections does not pull its topics back
    /// and forth often.
    pub fail_back_after: Option<Duration>,
    /// How sources are picked among those of a kind.
    pub strategy: Strategy,
    /// How strictly requests' capabilities are matched.
    pub validation: Validation,
    /// The source used when a request names neither source nor kind.
    pub default_source: Option<String>,
    /// How far a topic's sequence number may move from the highest seen
    /// (ahead, or back for a duplicate) and still count as the same
    /// numbering; a row beyond is delivered without moving the mark (see
    /// `route`).
    pub sequence_window: u64,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            min_connections: 0,
            max_connections: None,
            idle_timeout: Duration::from_secs(30),
            health_interval: Duration::from_secs(5),
            maintenance_interval: Duration::from_secs(1),
            rebalance_threshold: 0.8,
            backoff: Backoff::default(),
            breaker: BreakerConfig::default(),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            min_stable: Duration::from_secs(10),
            failover_after: 3,
            fail_back_after: Some(Duration::from_secs(300)),
            strategy: Strategy::RoundRobin,
            validation: Validation::Strict,
            default_source: None,
            sequence_window: 1_000_000,
        }
    }
}

impl PoolConfig {
    /// Checks the values; `INVALID_CONFIG` names the offending field.
    pub fn validate(&self) -> Result<()> {
        let bad = |key: &str, why: &str| {
            Err(LiveError::InvalidConfig {
                key: key.into(),
                message: why.into(),
            })
        };
        if !(self.rebalance_threshold > 0.0 && self.rebalance_threshold <= 1.0) {
            return bad("rebalance_threshold", "must be in (0, 1]");
        }
        if self.max_connections == Some(0) {
            return bad("max_connections", "must be at least 1");
        }
        if let Some(max) = self.max_connections
            && self.min_connections > max
        {
            return bad("min_connections", "must not exceed max_connections");
        }
        for (key, d) in [
            ("idle_timeout", self.idle_timeout),
            ("health_interval", self.health_interval),
            ("maintenance_interval", self.maintenance_interval),
            ("connect_timeout", self.connect_timeout),
            ("request_timeout", self.request_timeout),
            ("backoff.max", self.backoff.max),
            ("breaker.cool_down", self.breaker.cool_down),
            (
                "fail_back_after",
                self.fail_back_after.unwrap_or(Duration::MAX),
            ),
        ] {
            if d.is_zero() {
                return bad(key, "must be longer than zero");
            }
        }
        if self.breaker.failure_threshold == 0 {
            return bad("breaker.failure_threshold", "must be at least 1");
        }
        if self.failover_after == 0 {
            return bad("failover_after", "must be at least 1");
        }
        if self.sequence_window == 0 {
            return bad("sequence_window", "must be at least 1");
        }
        Ok(())
    }
}
