//! The one retry backoff of the workspace: exponential, capped, optionally
//! jittered, and reset after a success or a quiet period.
//!
//! Every retry loop (list-watch, lease keep-alive, watches, campaigns,
//! observers, controller requeues) holds a [`Backoff`] and asks it for the
//! next wait instead of doubling a `Duration` by hand. The delay sequence
//! comes from `backon`'s exponential builder; this type adds what a
//! long-running loop needs on top of an iterator: a reset, a quiet-period
//! reset, and a failure count for logs and metrics.
//!
//! Time is tokio's, so paused-time tests see exact, deterministic delays
//! (jitter off, or a fixed seed).
//!
//! ```
//! use std::time::Duration;
//! use drover_store::backoff::{Backoff, BackoffPolicy};
//!
//! let mut backoff = Backoff::new(BackoffPolicy::new(Duration::from_millis(100), Duration::from_secs(1)));
//! assert_eq!(backoff.next_delay(), Duration::from_millis(100));
//! assert_eq!(backoff.next_delay(), Duration::from_millis(200));
//! backoff.reset();
//! assert_eq!(backoff.next_delay(), Duration::from_millis(100));
//! ```

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use tokio::time::Instant;

/// How a [`Backoff`] grows. `Copy`, so configs can embed it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BackoffPolicy {
    /// The wait after the first failure.
    pub initial: Duration,
    /// The wait never exceeds this, jitter included.
    pub max: Duration,
    /// Growth per failure; at least 1.
    pub factor: f32,
    /// Add a random fraction of the current delay (up to doubling it, then
    /// capped at `max`), so many clients that failed together do not retry
    /// together.
    pub jitter: bool,
    /// Forget earlier failures when this long passed since the last one.
    /// `None`: only [`Backoff::reset`] forgets them.
    pub quiet_reset: Option<Duration>,
}

impl BackoffPolicy {
    /// Doubling from `initial` to `max`, no jitter, no quiet-period reset.
    pub const fn new(initial: Duration, max: Duration) -> Self {
        BackoffPolicy {
            initial,
            max,
            factor: 2.0,
            jitter: false,
            quiet_reset: None,
        }
    }

    /// The same policy with jitter on.
    pub const fn with_jitter(mut self) -> Self {
        self.jitter = true;
        self
    }

    /// The same policy, forgetting failures after `quiet` without one.
    pub const fn with_quiet_reset(mut self, quiet: Duration) -> Self {
        self.quiet_reset = Some(quiet);
        self
    }

    /// The same policy with another growth factor (clamped to at least 1).
    pub const fn with_factor(mut self, factor: f32) -> Self {
        self.factor = if factor < 1.0 { 1.0 } else { factor };
        self
    }

    /// The wait after the `failures`-th failure in a row (1-based), without
    /// jitter: what [`Backoff::next_delay`] returns when jitter is off.
    pub fn delay_after(&self, failures: u32) -> Duration {
        let mut backoff = Backoff::new(BackoffPolicy {
            jitter: false,
            ..*self
        });
        let mut delay = Duration::ZERO;
        for _ in 0..failures.max(1) {
            delay = backoff.next_delay();
            if delay >= self.max {
                break;
            }
        }
        delay
    }

    fn build(&self, seed: Option<u64>) -> ExponentialBackoff {
        let mut builder = ExponentialBuilder::new()
            .with_min_delay(self.initial)
            .with_max_delay(self.max)
            .with_factor(self.factor.max(1.0))
            .without_max_times();
        if self.jitter {
            builder = builder.with_jitter();
            if let Some(seed) = seed {
                builder = builder.with_jitter_seed(seed);
            }
        }
        builder.build()
    }
}

/// A retry loop's backoff state. See the [module docs](self).
#[derive(Debug)]
pub struct Backoff {
    policy: BackoffPolicy,
    seed: Option<u64>,
    delays: ExponentialBackoff,
    failures: u32,
    last_failure: Option<Instant>,
}

impl Backoff {
    /// A fresh backoff: the next delay is `policy.initial`.
    pub fn new(policy: BackoffPolicy) -> Self {
        Backoff {
            policy,
            seed: None,
            delays: policy.build(None),
            failures: 0,
            last_failure: None,
        }
    }

    /// A backoff whose jitter is reproducible (tests, seeded simulations).
    pub fn with_seed(policy: BackoffPolicy, seed: u64) -> Self {
        Backoff {
            seed: Some(seed),
            delays: policy.build(Some(seed)),
            ..Backoff::new(policy)
        }
    }

    /// The policy this backoff follows.
    pub fn policy(&self) -> &BackoffPolicy {
        &self.policy
    }

    /// Records a failure and returns how long to wait before the next try.
    pub fn next_delay(&mut self) -> Duration {
        let now = Instant::now();
        if let (Some(quiet), Some(last)) = (self.policy.quiet_reset, self.last_failure)
            && now.saturating_duration_since(last) >= quiet
        {
            self.reset();
        }
        self.failures = self.failures.saturating_add(1);
        self.last_failure = Some(now);
        let delay = self.delays.next().unwrap_or(self.policy.max);
        whole_micros(delay).min(self.policy.max)
    }

    /// Records a failure and sleeps for the next delay (tokio time).
    pub async fn wait(&mut self) {
        let delay = self.next_delay();
        tokio::time::sleep(delay).await;
    }

    /// Forgets every failure: the next delay is `policy.initial` again. Call
    /// it after a success.
    pub fn reset(&mut self) {
        self.delays = self.policy.build(self.seed);
        self.failures = 0;
        self.last_failure = None;
    }

    /// Failures since the last reset.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

/// backon grows delays with `f32` arithmetic (200 ms comes out as
/// 200.000003 ms); whole microseconds keep the sequence exact and readable.
fn whole_micros(delay: Duration) -> Duration {
    let micros = (delay.as_nanos() + 500) / 1000;
    Duration::from_micros(u64::try_from(micros).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn doubles_up_to_the_cap() {
        let mut b = Backoff::new(BackoffPolicy::new(ms(100), ms(500)));
        let waits: Vec<_> = (0..6).map(|_| b.next_delay()).collect();
        assert_eq!(
            waits,
            [ms(100), ms(200), ms(400), ms(500), ms(500), ms(500)]
        );
        assert_eq!(b.failures(), 6);
    }

    #[test]
    fn reset_starts_over() {
        let mut b = Backoff::new(BackoffPolicy::new(ms(50), ms(1000)));
        b.next_delay();
        b.next_delay();
        b.reset();
        assert_eq!(b.failures(), 0);
        assert_eq!(b.next_delay(), ms(50));
    }

    #[test]
    fn delay_after_matches_the_sequence() {
        let policy = BackoffPolicy::new(ms(100), ms(500));
        assert_eq!(policy.delay_after(1), ms(100));
        assert_eq!(policy.delay_after(3), ms(400));
        assert_eq!(policy.delay_after(u32::MAX), ms(500));
    }

    #[test]
    fn jitter_stays_within_the_delay_and_the_cap() {
        let policy = BackoffPolicy::new(ms(100), ms(1000)).with_jitter();
        let mut b = Backoff::with_seed(policy, 7);
        let mut base = ms(100);
        for _ in 0..8 {
            let d = b.next_delay();
            assert!(
                d >= base.min(ms(1000)) && d <= ms(1000),
                "{d:?} vs base {base:?}"
            );
            base = (base * 2).min(ms(1000));
        }
    }

    #[test]
    fn seeded_jitter_is_reproducible() {
        let policy = BackoffPolicy::new(ms(100), ms(10_000)).with_jitter();
        let a: Vec<_> = {
            let mut b = Backoff::with_seed(policy, 42);
            (0..5).map(|_| b.next_delay()).collect()
        };
        let b: Vec<_> = {
            let mut b = Backoff::with_seed(policy, 42);
            (0..5).map(|_| b.next_delay()).collect()
        };
        assert_eq!(a, b);
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_period_resets() {
        let mut b = Backoff::new(BackoffPolicy::new(ms(100), ms(1000)).with_quiet_reset(ms(5000)));
        assert_eq!(b.next_delay(), ms(100));
        assert_eq!(b.next_delay(), ms(200));
        tokio::time::advance(ms(4999)).await;
        assert_eq!(b.next_delay(), ms(400), "not quiet long enough");
        tokio::time::advance(ms(5000)).await;
        assert_eq!(b.next_delay(), ms(100), "quiet period passed");
        assert_eq!(b.failures(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn wait_sleeps_on_tokio_time() {
        let mut b = Backoff::new(BackoffPolicy::new(ms(300), ms(1000)));
        let start = Instant::now();
        b.wait().await;
        assert_eq!(start.elapsed(), ms(300));
    }
}
