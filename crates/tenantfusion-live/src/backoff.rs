//! How long to wait before reconnecting: exponential, with full jitter so
//! that connections lost together do not all come back at the same instant.

use std::time::Duration;

use rand::Rng;

/// Exponential backoff with "full jitter": attempt `n` waits a uniformly
/// random time in `[0, min(max, initial * multiplier^n)]`. Spreading the
/// waits over the whole range is what keeps a herd of reconnects from
/// hitting an upstream that just recovered at once.
///
/// ```
/// use std::time::Duration;
/// use tenantfusion_live::Backoff;
/// let backoff = Backoff::default();
/// assert_eq!(backoff.ceiling(0), Duration::from_millis(50));
/// assert_eq!(backoff.ceiling(3), Duration::from_millis(400));
/// assert_eq!(backoff.ceiling(30), Duration::from_secs(5));
/// let wait = backoff.delay(3, &mut rand::rng());
/// assert!(wait <= Duration::from_millis(400));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Ceiling of the first wait.
    pub initial: Duration,
    /// Ceiling of every wait.
    pub max: Duration,
    /// Growth of the ceiling per attempt (at least 1).
    pub multiplier: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(50),
            max: Duration::from_secs(5),
            multiplier: 2.0,
        }
    }
}

impl Backoff {
    /// The longest wait before attempt `attempt` (0-based).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let growth = self.multiplier.max(1.0).powi(attempt.min(64) as i32);
        let secs = self.initial.as_secs_f64() * growth;
        if secs.is_finite() && secs < self.max.as_secs_f64() {
            Duration::from_secs_f64(secs)
        } else {
            self.max
        }
    }

    /// A random wait before attempt `attempt`, in `[0, ceiling(attempt)]`.
    pub fn delay(&self, attempt: u32, rng: &mut impl Rng) -> Duration {
        let ceiling = self.ceiling(attempt).as_micros() as u64;
        Duration::from_micros(rng.random_range(0..=ceiling))
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    #[test]
    fn waits_grow_to_the_cap_and_are_spread_over_their_range() {
        let backoff = Backoff::default();
        let ceilings: Vec<u128> = (0..10).map(|a| backoff.ceiling(a).as_millis()).collect();
        assert_eq!(
            ceilings,
            [50, 100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]
        );
        let mut rng = StdRng::seed_from_u64(9);
        // 1,000 connections lost at once: their first reconnects are spread
        // over the whole first window, not bunched.
        let waits: Vec<Duration> = (0..1_000).map(|_| backoff.delay(0, &mut rng)).collect();
        assert!(waits.iter().all(|w| *w <= backoff.initial));
        let mut buckets = [0usize; 10];
        for w in &waits {
            let b = (w.as_micros() * 10 / (backoff.initial.as_micros() + 1)) as usize;
            buckets[b] += 1;
        }
        // Uniform: each tenth of the window gets about 100 of them.
        assert!(
            buckets.iter().all(|n| (50..=150).contains(n)),
            "{buckets:?}"
        );
        // A multiplier below 1 does not shrink the waits.
        let flat = Backoff {
            multiplier: 0.5,
            ..backoff
        };
        assert_eq!(flat.ceiling(5), flat.initial);
    }
}
