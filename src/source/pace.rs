//! Pacing a source at a fixed frame rate.

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

#[cfg(test)]
mod tests {
    use super::*;

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
