//! Pooled live data providers for tenantfusion, usable without SQL.
//!
//! Many consumers want live data from a few upstreams, and upstreams limit
//! what one connection may carry (say 200 topics). This crate keeps what
//! subscribers asked for apart from the connections that carry it:
//!
//! - [`Source`] / [`Connection`]: an upstream and one session to it; sources
//!   declare [`Capabilities`] such as `max_topics_per_connection`.
//!   [`GeneratorSource`] is the in-process, deterministic one.
//! - [`SubscriptionRegistry`]: topic -> reference-counted subscribers,
//!   independent of connections, so nothing asked for is forgotten when a
//!   connection dies.
//! - [`Assignment`]: topics -> connections under a source's cap, packed so
//!   that `n` topics use `ceil(n / cap)` connections, least loaded first,
//!   with redistribution when a connection is lost and rebalancing.
//! - [`Selector`]: picks a source by name, kind, strategy, capability and health.
//! - [`CircuitBreaker`]: closed -> open -> half-open -> closed, per source.
//!
//! ```
//! use tenantfusion_live::{Assignment, Placement};
//! let mut assignment = Assignment::new(Some(200), None);
//! let mut opened = 0;
//! for t in 0..10_000 {
//!     if let Placement::Open(_) = assignment.assign(&format!("T{t}")).unwrap() {
//!         opened += 1;
//!     }
//! }
//! assert_eq!(opened, 50);
//! ```

#![deny(missing_docs)]

mod assignment;
mod backoff;
mod breaker;
mod config;
mod delivery;
mod error;
mod generator;
mod json_rows;
mod metrics;
mod pool;
mod registry;
mod rest;
mod selection;
mod source;
mod stomp;
mod websocket;

pub use assignment::{Assignment, ConnectionId, Move, Placement};
pub use backoff::Backoff;
pub use breaker::{BreakerConfig, BreakerState, CircuitBreaker};
pub use config::LiveConfig;
pub use delivery::{
    COPIES_PER_BATCH, Delivery, DeliveryQueue, LiveEvent, PINNED_BATCHES, QueueStats, SlowConsumer,
    SubscribeOptions, Weight,
};
pub use error::{LiveError, Result};
pub use generator::{GeneratorConfig, GeneratorSource, tick_schema};
pub use metrics::{
    ConnectionStats, LatencySummary, PoolSnapshot, SourceStats, SubscriberStats, TopicStats,
};
pub use pool::{LivePool, PoolConfig, Subscription};
pub use registry::{SubscriberId, SubscriptionRegistry};
pub use rest::{RestConfig, RestSource};
pub use selection::{Candidate, Request, Selection, Selector, Strategy, Validation};
pub use source::{
    Capabilities, Connection, Source, SourceKind, SourceSettings, SourceSpec, Topic, Upstream,
};
pub use stomp::{StompConfig, StompSource};
pub use websocket::{DEFAULT_MAX_MESSAGE_BYTES, WebSocketConfig, WebSocketSource};
