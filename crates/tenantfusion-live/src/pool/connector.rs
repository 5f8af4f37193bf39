//! One upstream connection's task: connect (backoff, the breaker, and
//! failover after repeated failures), carry what the assignment says, read
//! and deliver, and report a loss.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use tokio::sync::Notify;

use crate::assignment::ConnectionId;
use crate::error::{LiveError, Result};
use crate::metrics::Traffic;
use crate::source::{Connection, Topic, Upstream};

use super::PoolInner;
use super::source_entry::SourceEntry;

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
        let outcome = self.serve(&mut connection).await;
        self.connected.store(false, Ordering::SeqCst);
        // Best effort: the connection may be gone already.
        let _ = connection.close().await;
        if let Err(e) = outcome
            && !self.stopped()
        {
            *self.source.last_error.lock() = Some(e.to_string());
            self.pool.connection_lost(&self.source, self.id);
        }
    }

    /// `None` when stopped or when the topics went to another source.
    async fn connect(&self) -> Option<Box<dyn Connection>> {
        let mut attempt: u32 = 0;
        loop {
            if self.stopped() {
                return None;
            }
            if attempt > 0 || self.after_loss {
                let wait = self
                    .pool
                    .config
                    .backoff
                    .delay(attempt.saturating_sub(1), &mut rand::rng());
                tokio::time::sleep(wait).await;
                if self.stopped() {
                    return None;
                }
            }
            let allowed = self.source.breaker.lock().allow(Instant::now());
            if allowed {
                match self.source.source.connect().await {
                    Ok(connection) => {
                        self.source.breaker.lock().record_success(Instant::now());
                        self.source.connects.add(1);
                        return Some(connection);
                    }
                    Err(e) => {
                        self.source.breaker.lock().record_failure(Instant::now());
                        self.source.connect_failures.add(1);
                        *self.source.last_error.lock() = Some(e.to_string());
                    }
                }
            }
            attempt = attempt.saturating_add(1);
            if attempt >= self.pool.config.failover_after
                && self.pool.fail_over(&self.source, self.id)
            {
                return None;
            }
        }
    }

    /// Carries and reads until stopped (`Ok`) or the connection fails (`Err`).
    async fn serve(&self, connection: &mut Box<dyn Connection>) -> Result<()> {
        let mut carried: HashSet<Topic> = HashSet::new();
        loop {
            if self.stopped() {
                return Ok(());
            }
            let Some(desired) = self.pool.desired(self.source.name(), self.id) else {
                return Ok(());
            };
            let add: Vec<Topic> = desired.difference(&carried).cloned().collect();
            let remove: Vec<Topic> = carried.difference(&desired).cloned().collect();
            if !add.is_empty() {
                connection.subscribe(&add).await?;
                carried.extend(add);
            }
            if !remove.is_empty() {
                connection.unsubscribe(&remove).await?;
                for topic in &remove {
                    carried.remove(topic);
                }
            }
            loop {
                tokio::select! {
                    biased;
                    _ = self.wake.notified() => break,
                    event = connection.next_event() => match event? {
                        Upstream::Rows(batch) => self.pool.deliver(&self.source, &self.traffic, &batch),
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
