//! Exponential backoff with jitter and a cap, for retrying the coordinator.

use rand::Rng;
use std::time::Duration;

/// Delays double from `initial` up to `cap`; each one is drawn uniformly from the upper half of
/// the current ceiling ("equal jitter"), so it is never zero and a fleet of pods that lost the
/// coordinator at the same moment does not come back in lock step.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    cap: Duration,
    ceiling: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, cap: Duration) -> Self {
        let initial = initial.max(Duration::from_millis(1));
        let cap = cap.max(initial);
        Self { initial, cap, ceiling: initial }
    }

    /// The delay before the next attempt; grows the ceiling for the one after.
    pub fn next_delay(&mut self) -> Duration {
        let low = self.ceiling / 2;
        let span = u64::try_from((self.ceiling - low).as_nanos()).unwrap_or(u64::MAX);
        let jitter = Duration::from_nanos(rand::rng().random_range(0..=span));
        self.ceiling = self.ceiling.saturating_mul(2).min(self.cap);
        low + jitter
    }

    /// [`Backoff::next_delay`], but at least what a saturated coordinator asked for with
    /// `Retry-After` (429/503), capped like every delay.
    pub fn next_delay_at_least(&mut self, asked: Duration) -> Duration {
        self.next_delay().max(asked.min(self.cap))
    }

    /// Back to the initial delay, after a success.
    pub fn reset(&mut self) {
        self.ceiling = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_within_bounds_and_stops_at_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let mut ceiling = Duration::from_millis(100);
        for _ in 0..20 {
            let d = b.next_delay();
            assert!(d >= ceiling / 2 && d <= ceiling, "{d:?} outside [{:?}, {ceiling:?}]", ceiling / 2);
            ceiling = (ceiling * 2).min(Duration::from_secs(2));
        }
        assert!(b.next_delay() <= Duration::from_secs(2));
    }

    #[test]
    fn retry_after_stretches_the_delay_up_to_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(10), Duration::from_secs(30));
        assert_eq!(b.next_delay_at_least(Duration::from_secs(5)), Duration::from_secs(5));
        assert!(b.next_delay_at_least(Duration::ZERO) <= Duration::from_millis(40));
        // a coordinator cannot park the pod beyond --backoff-max
        assert_eq!(b.next_delay_at_least(Duration::from_secs(3600)), Duration::from_secs(30));
    }

    #[test]
    fn reset_returns_to_the_initial_delay() {
        let mut b = Backoff::new(Duration::from_millis(10), Duration::from_secs(60));
        for _ in 0..10 {
            b.next_delay();
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(10));
    }

    #[test]
    fn jitter_spreads_the_delays() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..50 {
            seen.insert(Backoff::new(Duration::from_secs(1), Duration::from_secs(1)).next_delay());
        }
        assert!(seen.len() > 10, "delays are not jittered: {seen:?}");
    }

    #[test]
    fn degenerate_settings_never_panic_or_spin() {
        let mut b = Backoff::new(Duration::ZERO, Duration::ZERO);
        assert!(b.next_delay() <= Duration::from_millis(1));
        let mut b = Backoff::new(Duration::MAX, Duration::MAX);
        b.next_delay();
        b.next_delay();
    }
}
