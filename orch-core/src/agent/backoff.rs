//! Exponential back-off, as the kubelet's: a container that keeps exiting is restarted at
//! once the first time, then after the initial delay, doubling each time up to the maximum
//! (10 s doubling to 5 min by default). A container that ran for twice the maximum before it
//! exited starts again from no delay (the kubelet forgets a back-off entry untouched for
//! twice the maximum).

/// The delays of a back-off, in ms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The first delay (after the immediate first retry).
    pub initial_ms: i64,
    /// The longest delay.
    pub max_ms: i64,
}

impl Backoff {
    /// The kubelet's container restart back-off: 10 s doubling to 5 min.
    pub const RESTART: Backoff = Backoff { initial_ms: 10_000, max_ms: 300_000 };
}

impl Default for Backoff {
    fn default() -> Self {
        Self::RESTART
    }
}

/// One thing's place in its back-off: the delay its next failure waits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Delay {
    /// The delay before the next retry; 0 until the first failure.
    next_ms: i64,
}

impl Delay {
    /// The delay before retrying what just failed after running `ran_ms`, and the back-off
    /// moved on: 0 the first time (or after a run of twice the maximum), then the initial
    /// delay, doubling up to the maximum.
    pub fn fail(&mut self, backoff: Backoff, ran_ms: i64) -> i64 {
        let (initial, max) = (backoff.initial_ms.max(0), backoff.max_ms.max(backoff.initial_ms.max(0)));
        if ran_ms >= max.saturating_mul(2) {
            self.next_ms = 0;
        }
        let delay = self.next_ms;
        self.next_ms = if delay == 0 { initial } else { delay.saturating_mul(2).min(max) };
        delay
    }

    /// Forgets the failures (what failed now works).
    pub fn reset(&mut self) {
        self.next_ms = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_retry_is_immediate_then_the_delay_doubles_to_the_maximum() {
        let mut d = Delay::default();
        let delays: Vec<i64> = (0..8).map(|_| d.fail(Backoff::RESTART, 0)).collect();
        assert_eq!(delays, [0, 10_000, 20_000, 40_000, 80_000, 160_000, 300_000, 300_000]);
    }

    #[test]
    fn a_long_run_starts_the_back_off_again() {
        let mut d = Delay::default();
        for _ in 0..4 {
            d.fail(Backoff::RESTART, 1_000);
        }
        // A run just short of 10 min keeps the back-off; one of 10 min resets it.
        assert_eq!(d.fail(Backoff::RESTART, 599_999), 80_000);
        assert_eq!(d.fail(Backoff::RESTART, 600_000), 0);
        assert_eq!(d.fail(Backoff::RESTART, 0), 10_000);
    }

    #[test]
    fn settings_out_of_order_do_not_go_negative_or_overflow() {
        let mut d = Delay::default();
        let odd = Backoff { initial_ms: -5, max_ms: -9 };
        assert!((0..70).all(|_| d.fail(odd, 0) == 0));
        let huge = Backoff { initial_ms: i64::MAX / 2, max_ms: i64::MAX };
        let mut d = Delay::default();
        assert!((0..70).all(|_| d.fail(huge, 0) >= 0));
    }
}
