//! Rate limits for warnings that one bad input can repeat without end (a corrupt stream, a
//! budget no frame can meet): the log stays readable and says how much it left out.
//!
//! Pure: the caller passes `now`, so the policy is tested without sleeping.

use std::time::{Duration, Instant};

/// Lets the first `burst` events of every `interval` through and suppresses the rest,
/// counting them; the next event let through carries that count.
///
/// ```
/// # use std::time::{Duration, Instant};
/// # use edgecam::throttle::Throttle;
/// let mut t = Throttle::new(2, Duration::from_secs(10));
/// let t0 = Instant::now();
/// assert_eq!(t.allow(t0), Some(0));
/// assert_eq!(t.allow(t0), Some(0));
/// assert_eq!(t.allow(t0), None); // suppressed, counted
/// assert_eq!(t.allow(t0 + Duration::from_secs(10)), Some(1));
/// ```
#[derive(Debug, Clone)]
pub struct Throttle {
    burst: u32,
    interval: Duration,
    window_start: Option<Instant>,
    in_window: u32,
    suppressed: u64,
}

/// The warning policy for per-frame problems: 5 lines, then at most 5 per minute.
pub const FRAME_WARNINGS: (u32, Duration) = (5, Duration::from_secs(60));

impl Throttle {
    /// At most `burst` (at least 1) events per `interval`.
    pub fn new(burst: u32, interval: Duration) -> Self {
        Throttle {
            burst: burst.max(1),
            interval,
            window_start: None,
            in_window: 0,
            suppressed: 0,
        }
    }

    /// The [`FRAME_WARNINGS`] policy.
    pub fn frames() -> Self {
        Self::new(FRAME_WARNINGS.0, FRAME_WARNINGS.1)
    }

    /// One event at `now`: `Some(n)` to log it, mentioning the `n` events suppressed since
    /// the last one logged; `None` to suppress it (counted).
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        let expired = self
            .window_start
            .is_none_or(|s| now.saturating_duration_since(s) >= self.interval);
        if expired {
            self.window_start = Some(now);
            self.in_window = 0;
        }
        if self.in_window < self.burst {
            self.in_window += 1;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }

    /// Events suppressed and not yet reported (for a last line at shutdown); resets it.
    pub fn take_suppressed(&mut self) -> u64 {
        std::mem::take(&mut self.suppressed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bursts_then_suppresses_then_reports_the_count() {
        let mut t = Throttle::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        let s = |n| t0 + Duration::from_secs(n);
        let got: Vec<Option<u64>> = (0..10).map(|i| t.allow(s(i))).collect();
        assert_eq!(got[..3], [Some(0), Some(0), Some(0)]);
        assert!(got[3..].iter().all(Option::is_none));
        assert_eq!(t.allow(s(60)), Some(7));
        assert_eq!(t.allow(s(61)), Some(0));
        assert_eq!(t.take_suppressed(), 0);
        t.allow(s(62));
        assert_eq!(t.allow(s(63)), None);
        assert_eq!(t.take_suppressed(), 1);
    }

    proptest! {
        /// Against a model: every event is either logged or counted exactly once, and no
        /// window of `interval` logs more than `burst`.
        #[test]
        fn every_event_is_logged_or_counted(gaps in prop::collection::vec(0u64..5_000, 1..300), burst in 1u32..6) {
            let interval = Duration::from_millis(10_000);
            let mut t = Throttle::new(burst, interval);
            let t0 = Instant::now();
            let mut now = t0;
            let mut logged = Vec::new();
            let mut reported = 0u64;
            for g in &gaps {
                now += Duration::from_millis(*g);
                if let Some(n) = t.allow(now) {
                    reported += n;
                    logged.push(now);
                }
            }
            let suppressed = t.take_suppressed();
            prop_assert_eq!(logged.len() as u64 + reported + suppressed, gaps.len() as u64);
            // At most `burst` per window, and windows are at least `interval` apart, so any
            // `2 * burst + 1` logged events touch three windows and span a whole interval.
            let n = 2 * burst as usize + 1;
            for w in logged.windows(n) {
                prop_assert!(w[n - 1] - w[0] >= interval);
            }
        }
    }
}
