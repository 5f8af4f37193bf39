//! One upstream connection's task: connect (backoff, the breaker, and
//! failover after repeated failures), carry what the assignment says, read
//! and deliver, and report a loss.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::assignment::ConnectionId;
use crate::breaker::BreakerState;
use crate::error::{LiveError, Result};
use crate::metrics::Traffic;
use crate::source::{Connection, Topic, Upstream};

use super::PoolInner;
use super::source_entry::SourceEntry;

/// How one connect attempt ended.
enum Attempt {
    Connected(Box<dyn Connection>),
    /// The connection was stopped (closed as idle, failed over, the pool
    /// shut down) before or while it waited.
    Stopped,
    /// The source refused, or its breaker is open.
    Failed,
}

/// Drives one upstream connection: connect (with backoff and the breaker),
/// carry what the assignment says, read and deliver; report a loss.
pub(super) struct ConnectionTask {
    pub(super) pool: Arc<PoolInner>,
    pub(super) source: Arc<SourceEntry>,
    pub(super) id: ConnectionId,
    pub(super) wake: Arc<Notify>,
    pub(super) stop: Arc<AtomicBool>,
    pub(super) connected: Arc<AtomicBool>,
    pub(super) traffic: Arc<Traffic>,
    /// A rebuilt connection waits a jittered backoff before its first
    /// attempt, so connections lost together do not reconnect together.
    pub(super) after_loss: bool,
}

impl ConnectionTask {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst) || self.pool.is_stopped()
    }

    pub(super) async fn run(self) {
        let Some(mut connection) = self.connect().await else {
            return;
        };
        self.connected.store(true, Ordering::SeqCst);
        let connected_at = Instant::now();
        let outcome = self.serve(&mut connection, connected_at).await;
        self.connected.store(false, Ordering::SeqCst);
        // Best effort: the connection may be gone already, or not answer.
        let _ = tokio::time::timeout(self.pool.config.request_timeout, connection.close()).await;
        if let Err(e) = outcome
            && !self.stopped()
        {
            *self.source.last_error.lock() = Some(e.to_string());
            tracing::warn!(
                source = self.source.name(),
                connection = self.id.0,
                "connection lost, rebuilding it: {e}"
            );
            if connected_at.elapsed() < self.pool.config.min_stable {
                // Lost before it proved stable: a failed connect.
                self.record_failure();
                self.source.connect_failures.add(1);
                let unstable = self.source.unstable.fetch_add(1, Ordering::SeqCst) + 1;
                if unstable >= self.pool.config.failover_after
                    && self.pool.fail_over(&self.source, self.id)
                {
                    return;
                }
            }
            self.pool.connection_lost(&self.source, self.id);
        }
    }

    /// Attempts until one connects; `None` when stopped, or when the pool
    /// moved the topics to another source after `failover_after` failed
    /// attempts in a row (asked again after each further failure).
    async fn connect(&self) -> Option<Box<dyn Connection>> {
        // Connections lost unstable before this one count as its failures.
        let mut failures: u32 = self.source.unstable.load(Ordering::SeqCst);
        loop {
            let wait = failures > 0 || self.after_loss;
            match self.attempt(failures, wait).await {
                Attempt::Connected(connection) => return Some(connection),
                Attempt::Stopped => return None,
                Attempt::Failed => {}
            }
            failures = failures.saturating_add(1);
            if failures >= self.pool.config.failover_after
                && self.pool.fail_over(&self.source, self.id)
            {
                return None;
            }
        }
    }

    /// One connect attempt after `failures` failed ones: first the backoff
    /// (when `wait`), then the breaker's leave, then the source; the
    /// source's counters and last error record the outcome.
    async fn attempt(&self, failures: u32, wait: bool) -> Attempt {
        if self.stopped() {
            return Attempt::Stopped;
        }
        if wait {
            let delay = self
                .pool
                .config
                .backoff
                .delay(failures.saturating_sub(1), &mut rand::rng());
            tokio::time::sleep(delay).await;
            if self.stopped() {
                return Attempt::Stopped;
            }
        }
        // An open breaker refuses the attempt: it counts as a failure.
        if !self.source.breaker.lock().allow(Instant::now()) {
            return Attempt::Failed;
        }
        let limit = self.pool.config.connect_timeout;
        let connected = self
            .within(limit, "no connection", self.source.source.connect())
            .await;
        match connected {
            Ok(connection) => {
                let now = Instant::now();
                let mut breaker = self.source.breaker.lock();
                let before = breaker.state(now);
                breaker.record_success(now);
                if before != BreakerState::Closed {
                    tracing::info!(
                        source = self.source.name(),
                        "circuit breaker closed: the source answers again"
                    );
                }
                drop(breaker);
                self.source.connects.add(1);
                tracing::debug!(
                    source = self.source.name(),
                    connection = self.id.0,
                    attempt = failures + 1,
                    "connected"
                );
                Attempt::Connected(connection)
            }
            Err(e) => {
                self.record_failure();
                self.source.connect_failures.add(1);
                tracing::warn!(
                    source = self.source.name(),
                    connection = self.id.0,
                    attempt = failures + 1,
                    "connect failed: {e}"
                );
                *self.source.last_error.lock() = Some(e.to_string());
                Attempt::Failed
            }
        }
    }

    /// Tells the source's breaker of a failure, and the log when that opens it.
    fn record_failure(&self) {
        // A source that fails is not one to fail back to yet.
        self.source.health.lock().healthy_since = None;
        let now = Instant::now();
        let mut breaker = self.source.breaker.lock();
        let before = breaker.state(now);
        breaker.record_failure(now);
        if before != BreakerState::Open && breaker.state(now) == BreakerState::Open {
            tracing::warn!(
                source = self.source.name(),
                "circuit breaker opened: connects to the source are held back"
            );
        }
    }

    /// Awaits `work` for at most `limit`; past it, `UPSTREAM_UNAVAILABLE`
    /// saying `what` within `limit`.
    async fn within<T>(
        &self,
        limit: Duration,
        what: &str,
        work: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        tokio::time::timeout(limit, work).await.unwrap_or_else(|_| {
            Err(LiveError::UpstreamUnavailable(format!(
                "source '{}': {what} within {limit:?}",
                self.source.name()
            )))
        })
    }

    /// Carries and reads until stopped (`Ok`) or the connection fails (`Err`).
    async fn serve(
        &self,
        connection: &mut Box<dyn Connection>,
        connected_at: Instant,
    ) -> Result<()> {
        let mut carried: HashSet<Topic> = HashSet::new();
        let proven = connected_at + self.pool.config.min_stable;
        let stable = tokio::time::sleep_until(proven.into());
        tokio::pin!(stable);
        let mut proved = false;
        loop {
            if self.stopped() {
                return Ok(());
            }
            let Some(desired) = self.pool.desired(self.source.name(), self.id) else {
                return Ok(());
            };
            let add: Vec<Topic> = desired.difference(&carried).cloned().collect();
            let remove: Vec<Topic> = carried.difference(&desired).cloned().collect();
            let limit = self.pool.config.request_timeout;
            if !add.is_empty() {
                self.within(limit, "subscribe not done", connection.subscribe(&add))
                    .await?;
                carried.extend(add);
            }
            if !remove.is_empty() {
                self.within(
                    limit,
                    "unsubscribe not done",
                    connection.unsubscribe(&remove),
                )
                .await?;
                for topic in &remove {
                    carried.remove(topic);
                }
            }
            loop {
                tokio::select! {
                    biased;
                    _ = self.wake.notified() => break,
                    () = &mut stable, if !proved => {
                        // Up for min_stable: the streak of unstable losses ends.
                        proved = true;
                        self.source.unstable.store(0, Ordering::SeqCst);
                    }
                    event = connection.next_event() => match event? {
                        Upstream::Rows(batch) => {
                            self.pool.deliver(&self.source, &carried, &self.traffic, &batch);
                        }
                        Upstream::Malformed(_) => {
                            self.traffic.malformed.add(1);
                            self.source.malformed.add(1);
                        }
                        Upstream::Closed => {
                            return Err(LiveError::UpstreamUnavailable(format!(
                                "source '{}' closed the connection",
                                self.source.name()
                            )));
                        }
                    },
                }
            }
        }
    }
}
