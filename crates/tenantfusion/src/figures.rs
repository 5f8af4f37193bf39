//! The engine's figures through the `metrics` facade.
//!
//! Two kinds. What happens (write-ahead log commits and their latency,
//! flushes, compactions, segments written) is recorded where it happens,
//! by the store. What *is* (the plan cache's counters and size, the memory
//! pool's use, each live source's connections, topics, traffic, breaker
//! state and delivery latency) is kept by the engine anyway and published
//! by [`Engine::publish_metrics`] when asked, typically right before a
//! scrape renders: nothing is done on the statement path for them.
//!
//! Without a recorder installed every call is a no-op. A host installs its
//! own (the server installs Prometheus's) before opening the engine, then
//! calls [`describe_metrics`] once for the help texts.
//!
//! ```
//! use tenantfusion::{Engine, EngineConfig, describe_metrics};
//!
//! // metrics::set_global_recorder(my_recorder) first, in a real host.
//! describe_metrics();
//! let engine = Engine::new(EngineConfig::default()).unwrap();
//! engine.publish_metrics();
//! ```

use metrics::{Unit, counter, describe_counter, describe_gauge, gauge};
use tenantfusion_live::BreakerState;

use crate::Engine;

const PLAN_HITS: &str = "tenantfusion_plan_cache_hits_total";
const PLAN_MISSES: &str = "tenantfusion_plan_cache_misses_total";
const PLAN_EVICTIONS: &str = "tenantfusion_plan_cache_evictions_total";
const PLAN_INVALIDATIONS: &str = "tenantfusion_plan_cache_invalidations_total";
const PLAN_ENTRIES: &str = "tenantfusion_plan_cache_entries";
const PLAN_BYTES: &str = "tenantfusion_plan_cache_bytes";
const MEMORY_RESERVED: &str = "tenantfusion_memory_reserved_bytes";
const LIVE_CONNECTIONS: &str = "tenantfusion_live_connections";
const LIVE_TOPICS: &str = "tenantfusion_live_topics";
const LIVE_MESSAGES: &str = "tenantfusion_live_messages_total";
const LIVE_ROWS: &str = "tenantfusion_live_rows_total";
const LIVE_GAPS: &str = "tenantfusion_live_gaps_total";
const LIVE_CONNECTS: &str = "tenantfusion_live_connects_total";
const LIVE_CONNECT_FAILURES: &str = "tenantfusion_live_connect_failures_total";
const LIVE_LOST: &str = "tenantfusion_live_connections_lost_total";
const LIVE_MALFORMED: &str = "tenantfusion_live_malformed_total";
const LIVE_FOREIGN_ROWS: &str = "tenantfusion_live_foreign_rows_total";
const LIVE_BREAKER: &str = "tenantfusion_live_breaker_state";
const LIVE_LATENCY: &str = "tenantfusion_live_delivery_latency_seconds";

/// Gives the installed recorder the help text and unit of every figure
/// the engine and its store record.
pub fn describe_metrics() {
    tenantfusion_store::figures::describe();
    describe_counter!(PLAN_HITS, "Statements answered with a cached plan");
    describe_counter!(PLAN_MISSES, "Cacheable statements that had to be planned");
    describe_counter!(
        PLAN_EVICTIONS,
        "Cached plans dropped to stay within the bounds"
    );
    describe_counter!(
        PLAN_INVALIDATIONS,
        "Cached plans dropped because a table they use changed"
    );
    describe_gauge!(PLAN_ENTRIES, "Plans cached now");
    describe_gauge!(
        PLAN_BYTES,
        Unit::Bytes,
        "Estimated bytes the plan cache holds"
    );
    describe_gauge!(
        MEMORY_RESERVED,
        Unit::Bytes,
        "Bytes reserved in the memory pool all queries draw on"
    );
    describe_gauge!(LIVE_CONNECTIONS, "Upstream connections of a live source");
    describe_gauge!(LIVE_TOPICS, "Topics a live source carries");
    describe_counter!(LIVE_MESSAGES, "Batches read from a live source");
    describe_counter!(LIVE_ROWS, "Rows read from a live source");
    describe_counter!(
        LIVE_GAPS,
        "Messages of a live source known to be missed (sequence numbers never seen)"
    );
    describe_counter!(LIVE_CONNECTS, "Successful connects to a live source");
    describe_counter!(
        LIVE_CONNECT_FAILURES,
        "Failed connects to a live source (and connections lost before they were stable)"
    );
    describe_counter!(
        LIVE_LOST,
        "Connections to a live source lost after they were up"
    );
    describe_counter!(
        LIVE_MALFORMED,
        "Messages of a live source that could not be read"
    );
    describe_counter!(
        LIVE_FOREIGN_ROWS,
        "Rows a live source sent for topics its connection does not carry (dropped)"
    );
    describe_gauge!(
        LIVE_BREAKER,
        "A live source's circuit breaker: 1 for its current state, 0 for the others"
    );
    describe_gauge!(
        LIVE_LATENCY,
        Unit::Seconds,
        "A live source's event time to delivery, by quantile"
    );
}

impl Engine {
    /// Publishes the figures the engine keeps as state (see
    /// [`figures`](crate::figures)) to the installed `metrics` recorder.
    /// Cheap: it reads counters and walks the live sources, not their
    /// topics.
    pub fn publish_metrics(&self) {
        let plans = self.plan_cache_stats();
        counter!(PLAN_HITS).absolute(plans.hits);
        counter!(PLAN_MISSES).absolute(plans.misses);
        counter!(PLAN_EVICTIONS).absolute(plans.evictions);
        counter!(PLAN_INVALIDATIONS).absolute(plans.invalidations);
        gauge!(PLAN_ENTRIES).set(plans.entries as f64);
        gauge!(PLAN_BYTES).set(plans.bytes as f64);
        gauge!(MEMORY_RESERVED).set(self.memory_reserved() as f64);
        let Some(pool) = self.live_pool() else {
            return;
        };
        for source in pool.sources() {
            let labels = [("source", source.name.clone())];
            gauge!(LIVE_CONNECTIONS, &labels).set(source.connections as f64);
            gauge!(LIVE_TOPICS, &labels).set(source.topics as f64);
            counter!(LIVE_MESSAGES, &labels).absolute(source.messages);
            counter!(LIVE_ROWS, &labels).absolute(source.rows);
            counter!(LIVE_GAPS, &labels).absolute(source.gaps);
            counter!(LIVE_CONNECTS, &labels).absolute(source.connects);
            counter!(LIVE_CONNECT_FAILURES, &labels).absolute(source.connect_failures);
            counter!(LIVE_LOST, &labels).absolute(source.lost);
            counter!(LIVE_MALFORMED, &labels).absolute(source.malformed);
            counter!(LIVE_FOREIGN_ROWS, &labels).absolute(source.foreign_rows);
            for (state, name) in [
                (BreakerState::Closed, "closed"),
                (BreakerState::Open, "open"),
                (BreakerState::HalfOpen, "half_open"),
            ] {
                let labels = [("source", source.name.clone()), ("state", name.to_string())];
                gauge!(LIVE_BREAKER, &labels).set(f64::from(u8::from(source.breaker == state)));
            }
            if source.latency.count > 0 {
                for (quantile, value) in [("0.5", source.latency.p50), ("0.99", source.latency.p99)]
                {
                    let labels = [
                        ("source", source.name.clone()),
                        ("quantile", quantile.to_string()),
                    ];
                    gauge!(LIVE_LATENCY, &labels).set(value.as_secs_f64());
                }
            }
        }
    }
}
