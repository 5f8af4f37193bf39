//! Counters and state of every source, connection, topic and subscriber.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::assignment::Assignment;
use crate::metrics::{ConnectionStats, PoolSnapshot, SourceStats, SubscriberStats, TopicStats};

use super::source_entry::SourceEntry;
use super::{PoolInner, State};

impl PoolInner {
    pub(super) fn source_stats(&self) -> Vec<SourceStats> {
        let state = self.state.lock();
        let sources = self.sources.read();
        self.sources_of(&state, &sources, Instant::now())
    }

    fn sources_of(
        &self,
        state: &State,
        sources: &BTreeMap<String, Arc<SourceEntry>>,
        now: Instant,
    ) -> Vec<SourceStats> {
        let assignment = |name: &str| state.assignments.get(name);
        sources
            .values()
            .map(|e| {
                let health = e.health.lock();
                let failed = health.recent.iter().filter(|ok| !**ok).count();
                SourceStats {
                    name: e.name().to_string(),
                    kind: e.source.spec().kind,
                    breaker: e.breaker.lock().state(now),
                    connections: assignment(e.name()).map_or(0, Assignment::connection_count),
                    topics: assignment(e.name()).map_or(0, Assignment::topic_count),
                    connects: e.connects.get(),
                    connect_failures: e.connect_failures.get(),
                    lost: e.lost.get(),
                    malformed: e.malformed.get(),
                    foreign_rows: e.foreign_rows.get(),
                    messages: e.messages.get(),
                    rows: e.rows.get(),
                    gaps: e.gaps.get(),
                    last_error: e.last_error.lock().clone(),
                    health_checks: health.checks,
                    error_rate: if health.recent.is_empty() {
                        0.0
                    } else {
                        failed as f64 / health.recent.len() as f64
                    },
                    last_check_latency: health.last_latency,
                    latency: e.latency.lock().summary(),
                }
            })
            .collect()
    }

    pub(super) fn snapshot(&self) -> PoolSnapshot {
        let state = self.state.lock();
        let sources = self.sources.read();
        let routes = self.routes.read();
        let assignment = |name: &str| state.assignments.get(name);
        let now = Instant::now();
        PoolSnapshot {
            sources: self.sources_of(&state, &sources, now),
            connections: state
                .connections
                .iter()
                .map(|((source, id), h)| ConnectionStats {
                    source: source.clone(),
                    id: *id,
                    connected: h.connected.load(Ordering::SeqCst),
                    topics: assignment(source).map_or(0, |a| a.topics_of(*id).count()),
                    messages: h.traffic.messages.get(),
                    rows: h.traffic.rows.get(),
                    bytes: h.traffic.bytes.get(),
                    malformed: h.traffic.malformed.get(),
                })
                .collect(),
            topics: routes
                .values()
                .map(|r| {
                    let source = state.carriers.get(&r.topic).cloned().unwrap_or_default();
                    TopicStats {
                        topic: Arc::clone(&r.topic),
                        connection: assignment(&source).and_then(|a| a.connection_of(&r.topic)),
                        source,
                        subscribers: r.subscribers.read().len(),
                        messages: r.traffic.messages.get(),
                        rows: r.traffic.rows.get(),
                        gaps: r.gaps.get(),
                        interruptions: r.interruptions.get(),
                        duplicates: r.duplicates.get(),
                        jumps: r.jumps.get(),
                    }
                })
                .collect(),
            subscribers: state
                .subscribers
                .iter()
                .map(|(id, (queue, topics))| SubscriberStats {
                    id: *id,
                    topics: topics.len(),
                    queue: queue.stats(),
                })
                .collect(),
        }
    }
}
