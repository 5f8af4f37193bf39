//! The pool's two background tasks: upkeep (idle connections closed,
//! the minimum opened, crowded connections rebalanced) and health checks
//! (probes that feed the breakers).

use std::sync::{Arc, Weak};
use std::time::Instant;

use super::PoolInner;
use super::State;
use super::source_entry::{HEALTH_WINDOW, SourceEntry};

impl PoolInner {
    /// Upkeep: close connections idle past the timeout (above the minimum),
    /// open up to the minimum, rebalance connections above the threshold,
    /// and move topics that failed over back to a source healthy again.
    pub(super) fn maintain(self: &Arc<Self>) {
        let now = Instant::now();
        let sources: Vec<Arc<SourceEntry>> = self.sources.read().values().cloned().collect();
        let mut state = self.state.lock();
        for source in &sources {
            let name = source.name().to_string();
            let State {
                assignments,
                connections,
                ..
            } = &mut *state;
            let assignment = self.assignment(assignments, source);
            for (id, load) in assignment.loads() {
                let key = (name.clone(), id);
                let Some(handle) = connections.get_mut(&key) else {
                    continue;
                };
                if load > 0 {
                    handle.idle_since = None;
                    continue;
                }
                let since = *handle.idle_since.get_or_insert(now);
                if now.saturating_duration_since(since) >= self.config.idle_timeout
                    && assignment.connection_count() > self.config.min_connections
                    && assignment.close_idle(id)
                {
                    handle.stop();
                    connections.remove(&key);
                }
            }
            let mut opened = Vec::new();
            while assignment.connection_count() < self.config.min_connections {
                match assignment.open_connection() {
                    Ok(id) => opened.push(id),
                    Err(_) => break,
                }
            }
            let moves = assignment.rebalance(self.config.rebalance_threshold);
            for id in opened {
                self.spawn_connection(&mut state, source, id, false);
            }
            for m in moves {
                for id in [m.to, m.from] {
                    if let Some(handle) = state.connections.get(&(name.clone(), id)) {
                        handle.wake.notify_one();
                    }
                }
            }
        }
        self.fail_back(&mut state, &sources, now);
    }
}

/// Upkeep every `maintenance_interval` until the pool is dropped.
pub(super) async fn upkeep(pool: Weak<PoolInner>) {
    loop {
        let interval = match pool.upgrade() {
            Some(pool) if !pool.is_stopped() => pool.config.maintenance_interval,
            _ => return,
        };
        tokio::time::sleep(interval).await;
        match pool.upgrade() {
            Some(pool) if !pool.is_stopped() => pool.maintain(),
            _ => return,
        }
    }
}

/// Probes every source every `health_interval`; results feed the breakers
/// (which decide where new work goes) and the reported error rate.
pub(super) async fn health_checks(pool: Weak<PoolInner>) {
    loop {
        let interval = match pool.upgrade() {
            Some(pool) if !pool.is_stopped() => pool.config.health_interval,
            _ => return,
        };
        tokio::time::sleep(interval).await;
        let sources: Vec<Arc<SourceEntry>> = match pool.upgrade() {
            Some(pool) if !pool.is_stopped() => pool.sources.read().values().cloned().collect(),
            _ => return,
        };
        for source in sources {
            if !source.breaker.lock().allow(Instant::now()) {
                continue;
            }
            let started = Instant::now();
            let ok = matches!(
                tokio::time::timeout(interval, source.source.probe()).await,
                Ok(Ok(()))
            );
            let done = Instant::now();
            {
                let mut breaker = source.breaker.lock();
                if ok {
                    breaker.record_success(done);
                } else {
                    breaker.record_failure(done);
                }
            }
            let mut health = source.health.lock();
            health.healthy_since = if ok {
                health.healthy_since.or(Some(done))
            } else {
                None
            };
            health.checks += 1;
            health.last_latency = Some(done - started);
            health.recent.push_back(ok);
            if health.recent.len() > HEALTH_WINDOW {
                health.recent.pop_front();
            }
        }
    }
}
