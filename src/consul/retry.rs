//! Retry policy: which failures are retried, how long to back off, and never past a deadline.
//!
//! The delay sequence comes from the `backoff` crate; it is kept behind this module so it can be
//! swapped (it is unmaintained) without touching the protocol code.

use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use backoff::backoff::Backoff as _;
use tokio::time::Instant;

use crate::error::Result;

/// A jittered exponential delay sequence.
pub(crate) struct Backoff(backoff::ExponentialBackoff);

impl Backoff {
    /// Delays start near `initial`, grow ×2 up to `max`, each jittered by ±50 %.
    pub(crate) fn new(initial: Duration, max: Duration) -> Self {
        Backoff(backoff::ExponentialBackoff {
            initial_interval: initial,
            current_interval: initial,
            randomization_factor: 0.5,
            multiplier: 2.0,
            max_interval: max,
            max_elapsed_time: None,
            ..Default::default()
        })
    }

    /// The policy for failed requests: 50 ms, 100 ms, … up to 1 s.
    pub(crate) fn requests() -> Self {
        Self::new(Duration::from_millis(50), Duration::from_secs(1))
    }

    pub(crate) fn next_delay(&mut self) -> Duration {
        // With max_elapsed_time = None the sequence never ends; the fallback is for safety only.
        self.0.next_backoff().unwrap_or(self.0.max_interval)
    }
}

/// Run `op` until it succeeds, fails with a non-retryable error, or the next attempt would start
/// after `deadline`. At least one attempt is made. Returns the last error.
pub(crate) async fn until<T, F, Fut>(deadline: Instant, mut op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut backoff = Backoff::requests();
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if e.is_retryable() => {
                let delay = backoff.next_delay();
                if Instant::now() + delay >= deadline {
                    return Err(e);
                }
                tracing::debug!(error = %e, ?delay, "retrying");
                tokio::time::sleep(delay).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// A random number, good enough for jitter (no cryptographic use). Avoids a `rand` dependency.
pub(crate) fn random_u64() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    h.finish()
}

/// `d` shortened by a random fraction of up to `fraction` (0.0..=1.0).
pub(crate) fn jitter_down(d: Duration, fraction: f64) -> Duration {
    let r = (random_u64() % 10_000) as f64 / 10_000.0;
    d.mul_f64(1.0 - fraction.clamp(0.0, 1.0) * r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    #[test]
    fn backoff_grows_and_is_capped() {
        let mut b = Backoff::new(Duration::from_millis(10), Duration::from_millis(100));
        let delays: Vec<_> = (0..10).map(|_| b.next_delay()).collect();
        assert!(delays[0] <= Duration::from_millis(15));
        assert!(delays.iter().all(|d| *d <= Duration::from_millis(150)), "{delays:?}");
        assert!(delays[9] >= Duration::from_millis(50), "{delays:?}");
    }

    #[test]
    fn jitter_stays_in_range() {
        for _ in 0..1000 {
            let d = jitter_down(Duration::from_secs(10), 0.1);
            assert!(d <= Duration::from_secs(10) && d >= Duration::from_secs(9), "{d:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn until_stops_at_deadline_and_not_on_permanent_errors() {
        let mut calls = 0;
        let deadline = Instant::now() + Duration::from_secs(2);
        let r: Result<()> = until(deadline, || {
            calls += 1;
            async { Err(Error::transport("a", "refused", false)) }
        })
        .await;
        assert!(r.is_err());
        assert!(calls > 2 && Instant::now() <= deadline, "calls={calls}");

        let mut calls = 0;
        let r: Result<()> = until(deadline + Duration::from_secs(60), || {
            calls += 1;
            async { Err(Error::InvalidConfig("x".into())) }
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls, 1);
    }
}
