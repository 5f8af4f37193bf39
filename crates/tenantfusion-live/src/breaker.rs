//! A circuit breaker per source: stop sending work to an upstream that keeps
//! failing, and probe it again after a cool-down.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// When a [`CircuitBreaker`] opens and how it recovers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Failures within `window` that open the breaker.
    pub failure_threshold: usize,
    /// How far back failures count.
    pub window: Duration,
    /// How long the breaker stays open before it lets probes through.
    pub cool_down: Duration,
    /// Probes allowed at once while half-open.
    pub half_open_probes: usize,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            window: Duration::from_secs(30),
            cool_down: Duration::from_secs(10),
            half_open_probes: 1,
        }
    }
}

/// Where a breaker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Work flows.
    Closed,
    /// Work is refused until the cool-down ends.
    Open,
    /// A few probes may go; one success closes, one failure opens again.
    HalfOpen,
}

/// Closed -> open after `failure_threshold` failures within `window` ->
/// half-open after `cool_down` (at most `half_open_probes` attempts at once)
/// -> closed on a success, open again on a failure. Time is passed in, so the
/// pool and the tests decide what "now" is.
///
/// ```
/// use std::time::{Duration, Instant};
/// use tenantfusion_live::{BreakerConfig, BreakerState, CircuitBreaker};
/// let config = BreakerConfig { failure_threshold: 2, ..BreakerConfig::default() };
/// let mut breaker = CircuitBreaker::new(config);
/// let now = Instant::now();
/// breaker.record_failure(now);
/// breaker.record_failure(now);
/// assert_eq!(breaker.state(now), BreakerState::Open);
/// assert!(!breaker.allow(now));
/// ```
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    failures: VecDeque<Instant>,
    opened_at: Option<Instant>,
    probes: usize,
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            failures: VecDeque::new(),
            opened_at: None,
            probes: 0,
        }
    }

    /// The state at `now` (an open breaker turns half-open after its cool-down).
    pub fn state(&self, now: Instant) -> BreakerState {
        match self.opened_at {
            None => BreakerState::Closed,
            Some(at) if now.saturating_duration_since(at) >= self.config.cool_down => {
                BreakerState::HalfOpen
            }
            Some(_) => BreakerState::Open,
        }
    }

    /// Whether an attempt may go to the source now; while half-open, each
    /// `true` is a probe whose outcome must be recorded.
    pub fn allow(&mut self, now: Instant) -> bool {
        match self.state(now) {
            BreakerState::Closed => true,
            BreakerState::Open => false,
            BreakerState::HalfOpen if self.probes < self.config.half_open_probes => {
                self.probes += 1;
                true
            }
            BreakerState::HalfOpen => false,
        }
    }

    /// An attempt succeeded: a half-open breaker closes.
    pub fn record_success(&mut self, now: Instant) {
        if self.state(now) == BreakerState::HalfOpen {
            self.opened_at = None;
            self.failures.clear();
            self.probes = 0;
        }
    }

    /// An attempt failed: enough failures in the window open the breaker; a
    /// failed probe opens it again for another cool-down.
    pub fn record_failure(&mut self, now: Instant) {
        match self.state(now) {
            BreakerState::HalfOpen => self.open(now),
            BreakerState::Open => {}
            BreakerState::Closed => {
                self.failures.push_back(now);
                while self
                    .failures
                    .front()
                    .is_some_and(|t| now.saturating_duration_since(*t) > self.config.window)
                {
                    self.failures.pop_front();
                }
                if self.failures.len() >= self.config.failure_threshold {
                    self.open(now);
                }
            }
        }
    }

    fn open(&mut self, now: Instant) {
        self.opened_at = Some(now);
        self.failures.clear();
        self.probes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> CircuitBreaker {
        CircuitBreaker::new(BreakerConfig {
            failure_threshold: 3,
            window: Duration::from_secs(10),
            cool_down: Duration::from_secs(5),
            half_open_probes: 1,
        })
    }

    #[test]
    fn closed_open_half_open_closed() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut b = breaker();
        b.record_failure(at(0));
        b.record_failure(at(1));
        assert_eq!(b.state(at(1)), BreakerState::Closed);
        b.record_failure(at(2));
        assert_eq!(b.state(at(2)), BreakerState::Open);
        assert!(!b.allow(at(6)), "cool-down not over");
        assert_eq!(b.state(at(7)), BreakerState::HalfOpen);
        assert!(b.allow(at(7)), "one probe");
        assert!(!b.allow(at(7)), "only one probe at once");
        b.record_success(at(8));
        assert_eq!(b.state(at(8)), BreakerState::Closed);
        assert!(b.allow(at(8)));
    }

    #[test]
    fn a_failed_probe_opens_again_and_old_failures_expire() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut b = breaker();
        for s in 0..3 {
            b.record_failure(at(s));
        }
        assert!(b.allow(at(7)));
        b.record_failure(at(7));
        assert_eq!(b.state(at(8)), BreakerState::Open);
        assert_eq!(b.state(at(12)), BreakerState::HalfOpen);

        let mut b = breaker();
        b.record_failure(at(0));
        b.record_failure(at(1));
        // 20 s later those two are outside the window: one more does not open.
        b.record_failure(at(21));
        assert_eq!(b.state(at(21)), BreakerState::Closed);
    }
}
