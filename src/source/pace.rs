//! Pacing a source at a fixed frame rate: by waiting ([`Pacer`], for a source that can wait,
//! like a file) or by discarding surplus frames ([`RateLimit`], for one that runs at its own
//! rate, like a child process).

use std::time::{Duration, Instant};

/// Sleeps so that successive [`Pacer::wait`] calls return at `fps` per second.
///
/// Deadlines advance by exactly `1/fps` from the first call, so the long-run rate is exact;
/// a caller that falls more than one period behind is re-anchored instead of bursting.
#[derive(Debug)]
pub struct Pacer {
    period: Option<Duration>,
    next: Option<Instant>,
}

impl Pacer {
    /// `fps <= 0` (or not finite) means no pacing: [`Pacer::wait`] returns at once.
    pub fn new(fps: f64) -> Self {
        let period = (fps.is_finite() && fps > 0.0).then(|| Duration::from_secs_f64(1.0 / fps));
        Pacer { period, next: None }
    }

    /// Blocks until the next frame is due.
    pub fn wait(&mut self) {
        let Some(period) = self.period else { return };
        let now = Instant::now();
        let due = *self.next.get_or_insert(now);
        if due > now {
            std::thread::sleep(due - now);
            self.next = Some(due + period);
        } else if now - due > period {
            self.next = Some(now + period);
        } else {
            self.next = Some(due + period);
        }
    }
}

/// Keeps at most `fps` frames per second of a stream that runs at its own (faster) rate, by
/// discarding the surplus; a pure function of the capture times it is given.
///
/// Rule ("next due time"): the first frame is kept and makes the next one due one period
/// (`1/fps`) later; a frame captured before that due time is discarded; a frame captured at
/// or after it is kept and moves the due time on by exactly one period, so the long-run rate
/// is `fps` without drift, however the source's rate and `fps` relate. A source that fell
/// more than a period behind (a gap, a source slower than `fps`) is re-anchored (due one
/// period after the kept frame) instead of bursting to catch up. Consequences: due times
/// only ever move forward by at least a period per kept frame, so from the first kept frame
/// at `t0` to a kept frame at `t`, at most `(t - t0) × fps + 1` frames are kept, and in any
/// window between two kept frames fewer than `elapsed × fps + 2`: two kept frames can be
/// closer than a period (the first one arrived late for its due time).
#[derive(Debug, Clone)]
pub struct RateLimit {
    period: Option<Duration>,
    next: Option<Instant>,
}

impl RateLimit {
    /// A limit of `fps` frames per second. `fps <= 0` (or not finite) means no limit: every
    /// frame is kept.
    pub fn new(fps: f64) -> Self {
        RateLimit {
            period: period_of(fps),
            next: None,
        }
    }

    /// Changes the limit to `fps` from the next frame on (`<= 0`: no limit). The frame due
    /// next is then due one *new* period after the last kept frame's slot, so a change
    /// neither bursts nor stalls for the rest of an old, longer period.
    pub fn set_fps(&mut self, fps: f64) {
        let new = period_of(fps);
        self.next = match (self.period, new, self.next) {
            (Some(old), Some(new), Some(next)) => next.checked_sub(old).map(|slot| slot + new),
            _ => None,
        };
        self.period = new;
    }

    /// Whether to keep a frame captured at `now` (`true`) or discard it as surplus. Call once
    /// per frame, with non-decreasing `now`.
    pub fn admit(&mut self, now: Instant) -> bool {
        let Some(period) = self.period else {
            return true;
        };
        match self.next {
            Some(due) if now < due => false,
            Some(due) if now - due < period => {
                self.next = Some(due + period);
                true
            }
            _ => {
                self.next = Some(now + period);
                true
            }
        }
    }
}

fn period_of(fps: f64) -> Option<Duration> {
    (fps.is_finite() && fps > 0.0).then(|| Duration::from_secs_f64(1.0 / fps))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Frames every `every_ms` from a fixed origin: which are kept at `fps`.
    fn kept(fps: f64, every_ms: u64, frames: u64) -> Vec<u64> {
        let t0 = Instant::now();
        let mut r = RateLimit::new(fps);
        (0..frames)
            .filter(|i| r.admit(t0 + Duration::from_millis(i * every_ms)))
            .collect()
    }

    #[test]
    fn zero_or_invalid_fps_keeps_every_frame() {
        for fps in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert_eq!(kept(fps, 1, 100).len(), 100, "fps {fps}");
        }
    }

    #[test]
    fn keeps_one_frame_per_period_of_a_faster_stream() {
        // 100 frames/s at 10 fps: every 10th frame, starting with the first.
        let k = kept(10.0, 10, 100);
        assert_eq!(k, (0..10).map(|i| i * 10).collect::<Vec<_>>());
        // About 30 frames/s at 7 fps for 30 s: 7 per second, no drift (a "1/fps since the
        // last kept frame" rule would keep every 5th frame: 180, 6 per second).
        // Frames every 33 ms, the last at 899 × 33 = 29,667 ms: due times k × 1/7 s up to
        // it, floor(29.667 × 7) = 207, plus the first.
        let k = kept(7.0, 33, 900);
        assert_eq!(k.len(), 208);
    }

    #[test]
    fn a_slower_stream_is_not_thinned_and_a_gap_does_not_burst() {
        assert_eq!(kept(10.0, 150, 20).len(), 20);
        let t0 = Instant::now();
        let ms = |m: u64| t0 + Duration::from_millis(m);
        let mut r = RateLimit::new(10.0);
        assert!(r.admit(ms(0)));
        // A 1 s gap, then frames every 10 ms: one kept at once, the next a period later.
        assert!(r.admit(ms(1000)));
        let after: Vec<u64> = (1..=20)
            .map(|i| 1000 + i * 10)
            .filter(|&m| r.admit(ms(m)))
            .collect();
        assert_eq!(after, [1100, 1200]);
    }

    #[test]
    fn a_live_change_applies_from_the_last_kept_frame() {
        let t0 = Instant::now();
        let ms = |m: u64| t0 + Duration::from_millis(m);
        let mut r = RateLimit::new(1.0);
        assert!(r.admit(ms(0)));
        assert!(!r.admit(ms(100)));
        // 1 fps -> 10 fps: due 100 ms after the last kept frame, not at 1000 ms.
        r.set_fps(10.0);
        let k: Vec<u64> = (11..=35)
            .map(|i| i * 10)
            .filter(|&m| r.admit(ms(m)))
            .collect();
        assert_eq!(k, [110, 200, 300]);
        // 10 fps -> 2 fps: the next one 500 ms after the slot of the one at 300.
        r.set_fps(2.0);
        let k: Vec<u64> = (36..=130)
            .map(|i| i * 10)
            .filter(|&m| r.admit(ms(m)))
            .collect();
        assert_eq!(k, [800, 1300]);
        // -> 0: no limit; -> 5 again: the first frame after the change is kept.
        r.set_fps(0.0);
        assert!(r.admit(ms(1301)) && r.admit(ms(1302)));
        r.set_fps(5.0);
        assert!(r.admit(ms(1303)));
        assert!(!r.admit(ms(1304)));
        assert!(r.admit(ms(1503)));
    }

    proptest! {
        /// Whatever the arrival times and fps, and however fps changes on the way: from the
        /// very first kept frame, kept <= elapsed × fps + 1; within each later stretch of one
        /// fps, from its first kept frame, kept < elapsed × fps + 2.
        #[test]
        fn never_keeps_more_than_the_rate_allows(
            gaps_us in prop::collection::vec(0u64..300_000, 1..400),
            fps_list in prop::collection::vec(0.5f64..60.0, 1..4),
        ) {
            let mut r = RateLimit::new(fps_list[0]);
            let stretch = gaps_us.len().div_ceil(fps_list.len());
            let mut t = Instant::now();
            let mut first: Option<Instant> = None;
            let mut n = 0u64;
            for (i, g) in gaps_us.iter().enumerate() {
                let fps = fps_list[i / stretch];
                if i > 0 && i % stretch == 0 {
                    r.set_fps(fps);
                    first = None;
                    n = 0;
                }
                t += Duration::from_micros(*g);
                if r.admit(t) {
                    n += 1;
                    let elapsed = (t - *first.get_or_insert(t)).as_secs_f64();
                    if i < stretch {
                        prop_assert!(n as f64 <= elapsed * fps + 1.0 + 1e-9, "{} kept in {} s at {} fps", n, elapsed, fps);
                    } else {
                        prop_assert!((n as f64) < elapsed * fps + 2.0, "{} kept in {} s at {} fps after a change", n, elapsed, fps);
                    }
                }
            }
        }
    }

    #[test]
    fn zero_or_invalid_fps_never_sleeps() {
        for fps in [0.0, -5.0, f64::NAN, f64::INFINITY] {
            let mut p = Pacer::new(fps);
            let t = Instant::now();
            for _ in 0..1000 {
                p.wait();
            }
            assert!(t.elapsed() < Duration::from_millis(500), "fps {fps}");
        }
    }

    #[test]
    fn paces_at_the_requested_rate() {
        let mut p = Pacer::new(100.0);
        let t = Instant::now();
        for _ in 0..11 {
            p.wait();
        }
        // The first wait returns at once, then 10 periods of 10 ms.
        let dt = t.elapsed();
        assert!(dt >= Duration::from_millis(99), "{dt:?}");
        assert!(dt < Duration::from_millis(2000), "{dt:?}");
    }

    #[test]
    fn a_late_caller_is_reanchored_instead_of_bursting() {
        let mut p = Pacer::new(100.0);
        p.wait();
        std::thread::sleep(Duration::from_millis(60));
        // Six periods late: the next wait returns at once, the one after waits a period.
        let t = Instant::now();
        p.wait();
        p.wait();
        let dt = t.elapsed();
        assert!(dt >= Duration::from_millis(9), "{dt:?}");
    }
}
